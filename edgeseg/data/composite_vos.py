"""Composite video-object-segmentation sequences with exact masks, for choosing VOS settings on
footage that is not the benchmark's.

DAVIS-2016 in ``../shared`` holds three sequences; settings chosen on them and scored on them say
little about other footage. This module makes more sequences, in DAVIS's layout, from real pixels:
a real object cut out along its annotated mask (a Cityscapes person, rider or car) moves over real
moving backgrounds (a dash-cam clip: forward camera motion; or a street frame panned: sideways
camera motion), with what makes DAVIS hard:

* the object translates, scales and rotates (smooth random trajectories, bounced off the frame's
  inner 50-60 %), at 2-12 px a frame at 854x480;
* it deforms: a smooth elastic field moves its parts relative to each other (amplitude 3-14 px),
  and people swing their legs (the lower body bent about the hips, the two halves in opposite
  directions, up to 28 degrees): parts that a warp by the object's median motion loses;
* a second cut-out (a distractor, unlabelled) crosses the object's path, in front of it (an
  occlusion: the truth loses those pixels) or behind it.

Every sequence is a pure function of ``(seed, index)`` and the sources; the truth is exact: a
pixel is the object's when the object's rendered coverage there is above 0.5 and no distractor in
front covers it above 0.5. What composites lack (and real footage has): lighting that matches,
motion blur, shadows, self-occlusion in depth. They test propagation, not appearance realism;
figures on them are a second opinion beside DAVIS, not a substitute.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import DataError, InputError

#: DAVIS-2016's 480p frame size (width, height)
FRAME_SIZE = (854, 480)
#: Cityscapes thing classes used as objects; people get swinging legs
OBJECT_CLASSES = ("person", "rider", "car")
ARTICULATED = ("person", "rider")


@dataclass(frozen=True)
class Cutout:
    """An object cut out of a real image: ``rgb uint8 [h, w, 3]``, ``alpha float32 [h, w]`` (1 inside
    its annotated mask), its class name and whether it swings its legs."""

    rgb: np.ndarray
    alpha: np.ndarray
    name: str
    articulated: bool

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


@dataclass(frozen=True)
class Motion:
    """One object's trajectory in output pixels: centre, scale, rotation, deformation over time ``t``."""

    start: tuple[float, float]
    velocity: tuple[float, float]
    bounds: tuple[float, float, float, float]  # x0, y0, x1, y1 the centre is bounced inside
    scale: float
    scale_amp: float
    rot_amp: float  # radians
    elastic_px: float
    elastic_wave: float  # wavelength as a fraction of the cut-out's larger side
    swing: float  # leg swing amplitude, radians (0: none)
    freq: tuple[float, float, float, float]  # scale, rotation, elastic, swing (radians per frame)
    phase: tuple[float, float, float, float]

    def centre(self, t: int) -> tuple[float, float]:
        """Position at frame ``t``: straight lines reflected off ``bounds`` (a triangle wave per axis)."""
        out = []
        for p0, v, lo, hi in ((self.start[0], self.velocity[0], self.bounds[0], self.bounds[2]),
                              (self.start[1], self.velocity[1], self.bounds[1], self.bounds[3])):
            span = max(hi - lo, 1e-6)
            q = (p0 - lo + v * t) % (2 * span)
            out.append(lo + (q if q <= span else 2 * span - q))
        return out[0], out[1]


def draw_motion(rng: np.random.Generator, cutout: Cutout, frame: tuple[int, int], *,
                height_frac: tuple[float, float] = (0.35, 0.7), speed: tuple[float, float] = (2.0, 12.0)) -> Motion:
    """A random trajectory for ``cutout`` in a frame of ``frame`` = (width, height)."""
    fw, fh = frame
    cw, ch = cutout.size
    scale = rng.uniform(*height_frac) * fh / ch
    scale = min(scale, 0.6 * fw / cw)  # wide objects (cars) stay narrower than the frame
    angle = rng.uniform(0, 2 * math.pi)
    v = rng.uniform(*speed)
    bounds = (0.2 * fw, 0.3 * fh, 0.8 * fw, 0.7 * fh)
    start = (rng.uniform(bounds[0], bounds[2]), rng.uniform(bounds[1], bounds[3]))
    return Motion(start=start, velocity=(v * math.cos(angle), 0.5 * v * math.sin(angle)), bounds=bounds,
                  scale=float(scale), scale_amp=float(rng.uniform(0.0, 0.2)), rot_amp=float(rng.uniform(0.0, 0.25)),
                  elastic_px=float(rng.uniform(3.0, 14.0)), elastic_wave=float(rng.uniform(0.6, 1.2)),
                  swing=float(rng.uniform(0.2, 0.5)) if cutout.articulated else 0.0,
                  freq=tuple(float(f) for f in rng.uniform((0.03, 0.03, 0.1, 0.15), (0.1, 0.1, 0.3, 0.4))),
                  phase=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, 4)))


def render(cutout: Cutout, motion: Motion, t: int,
           frame: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """The cut-out at frame ``t``: ``((x0, y0), rgb float32 [h, w, 3], coverage float32 [h, w])`` for the
    box of the frame it may cover (clipped to the frame; empty arrays when it is outside).

    The motion is defined as the map from output pixels back into the cut-out (so every output pixel
    has exactly one source, and the truth is the rendered coverage itself): undo translation, rotation
    and scale; undo the elastic displacement; for people, undo the legs' swing about the hips."""
    import cv2

    fw, fh = frame
    cw, ch = cutout.size
    cx, cy = motion.centre(t)
    fs, fr, fe, fsw = motion.freq
    ps, pr, pe, psw = motion.phase
    s = motion.scale * (1.0 + motion.scale_amp * math.sin(fs * t + ps))
    r = motion.rot_amp * math.sin(fr * t + pr)
    reach = 0.5 * math.hypot(cw, ch) * s * 1.35 + motion.elastic_px + 2
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    x1, y1 = min(fw, int(math.ceil(cx + reach))), min(fh, int(math.ceil(cy + reach)))
    if x1 <= x0 or y1 <= y0:
        return (0, 0), np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32)
    # continuous coordinates, pixel centres at index + 0.5 in both images: cut-out pixel j lands on output
    # pixel j + cx - w/2 (whole when that is whole)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5 - cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - cy)
    c, sn = math.cos(r), math.sin(r)
    u = (c * dx + sn * dy) / s  # rotate by -r, unscale: cut-out pixels from its centre
    v = (-sn * dx + c * dy) / s
    k = 2 * math.pi / (motion.elastic_wave * max(cw, ch))
    a = motion.elastic_px / s
    u, v = u - a * np.sin(k * v + fe * t + pe), v - a * np.sin(k * u + fe * t + pe + 1.3)
    if motion.swing:
        hip = 0.05 * ch  # just below the box centre
        bend = np.clip((v - hip) / (0.12 * ch), 0.0, 1.0) * np.tanh(u / (0.03 * cw + 1e-6))
        theta = motion.swing * math.sin(fsw * t + psw) * bend
        ct, st = np.cos(theta), np.sin(theta)
        du, dv = u, v - hip
        u, v = ct * du + st * dv, -st * du + ct * dv + hip
    mx = (u + 0.5 * cw - 0.5).astype(np.float32)
    my = (v + 0.5 * ch - 0.5).astype(np.float32)
    rgb = cv2.remap(cutout.rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT).astype(np.float32)
    cover = cv2.remap(cutout.alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return (x0, y0), rgb, cover


def _paste(canvas: np.ndarray, origin: tuple[int, int], rgb: np.ndarray, cover: np.ndarray) -> None:
    x0, y0 = origin
    h, w = cover.shape
    if not h or not w:
        return
    region = canvas[y0:y0 + h, x0:x0 + w]
    a = cover[..., None]
    region *= 1.0 - a
    region += a * rgb


def _coverage(origin: tuple[int, int], cover: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    out = np.zeros((frame[1], frame[0]), bool)
    x0, y0 = origin
    h, w = cover.shape
    out[y0:y0 + h, x0:x0 + w] = cover > 0.5
    return out


def composite_sequence(backgrounds: Sequence[np.ndarray], target: Cutout, distractor: Cutout | None,
                       rng: np.random.Generator, *, distractor_in_front: bool = True
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rgb uint8 [H, W, 3], mask bool [H, W])`` per background frame: ``target`` moving over the
    backgrounds (all of one size), ``distractor`` crossing its path (in front of it, hiding part of
    the truth, or behind it)."""
    if not backgrounds:
        raise InputError("composite sequence: no background frames", fix="pass at least one frame")
    h, w = backgrounds[0].shape[:2]
    frame = (w, h)
    motion = draw_motion(rng, target, frame)
    other = None
    if distractor is not None:
        # starts on the far side of the frame and heads for where the target will be mid-sequence
        other = draw_motion(rng, distractor, frame, height_frac=(0.25, 0.55))
        n = len(backgrounds)
        mid = motion.centre(n // 2)
        sx = 0.1 * w if mid[0] > 0.5 * w else 0.9 * w
        sy = float(rng.uniform(0.35, 0.65)) * h
        vx, vy = (mid[0] - sx) / max(n // 2, 1), (mid[1] - sy) / max(n // 2, 1)
        other = Motion(start=(sx, sy), velocity=(vx, vy), bounds=(0.0, 0.0, float(w), float(h)), scale=other.scale,
                       scale_amp=other.scale_amp, rot_amp=other.rot_amp, elastic_px=other.elastic_px,
                       elastic_wave=other.elastic_wave, swing=other.swing, freq=other.freq, phase=other.phase)
    for t, bg in enumerate(backgrounds):
        if bg.shape[:2] != (h, w):
            raise InputError(f"composite sequence: background frame {t} is {bg.shape[1]}x{bg.shape[0]}, "
                             f"the first is {w}x{h}", fix="resize every background frame to one size")
        canvas = bg.astype(np.float32)
        o_t, rgb_t, cov_t = render(target, motion, t, frame)
        truth = _coverage(o_t, cov_t, frame)
        layers = [(o_t, rgb_t, cov_t)]
        if other is not None:
            o_d, rgb_d, cov_d = render(distractor, other, t, frame)
            if distractor_in_front:
                layers.append((o_d, rgb_d, cov_d))
                truth &= ~_coverage(o_d, cov_d, frame)
            else:
                layers.insert(0, (o_d, rgb_d, cov_d))
        for layer in layers:
            _paste(canvas, *layer)
        yield np.clip(canvas + 0.5, 0, 255).astype(np.uint8), truth


# ---- sources ------------------------------------------------------------------------------------
def cutouts_from_instances(json_path: str | Path, *, classes: Sequence[str] = OBJECT_CLASSES, min_height: int = 60,
                           count: int = 40, seed: int = 0, progress: bool = False) -> list[Cutout]:
    """Up to ``count`` objects of ``classes`` cut out of a COCO instance dataset's images (random
    images of stream ``seed``): whole (not touching the image border), not crowds, at least
    ``min_height`` px tall, their box's largest connected part being most of the mask."""
    import cv2
    from tqdm import tqdm

    from .coco_instances import CocoInstances
    from .base import coco_image_dir

    path = Path(json_path)
    ds = CocoInstances(path, coco_image_dir("coco-instance", "instances", path, {}))
    wanted = {i for i, name in enumerate(ds.classes) if name in classes}
    if not wanted:
        raise DataError(f"{path}: none of the classes {', '.join(classes)} (it has {', '.join(ds.classes)})",
                        fix="pass an instance dataset with people or cars, or other classes=")
    out: list[Cutout] = []
    order = np.random.default_rng(seed).permutation(len(ds))
    for i in tqdm(order, desc="cut-outs", unit="image", disable=not progress, leave=False):
        sample = ds[int(i)]
        tr = sample.truth
        img = None
        for k in range(len(tr)):
            if tr.iscrowd[k] or int(tr.classes[k]) not in wanted:
                continue
            x0, y0, x1, y1 = (int(round(float(c))) for c in tr.boxes[k])
            H, W = tr.masks.shape[1:]
            if y1 - y0 < min_height or x0 <= 1 or y0 <= 1 or x1 >= W - 1 or y1 >= H - 1:
                continue
            m = tr.masks[k, y0:y1, x0:x1].astype(np.uint8)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            if n < 2 or stats[1:, cv2.CC_STAT_AREA].max() < 0.9 * m.sum():
                continue  # split by an occluder: not one whole object
            img = sample.image() if img is None else img
            name = ds.classes[int(tr.classes[k])]
            pad = 2  # a transparent border so the remap's edge is the mask's, not the crop's
            rgb = cv2.copyMakeBorder(img[y0:y1, x0:x1], pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            alpha = cv2.copyMakeBorder(m.astype(np.float32), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
            out.append(Cutout(np.ascontiguousarray(rgb), alpha, name, name in ARTICULATED))
            if len(out) >= count:
                return out
    if not out:
        raise DataError(f"{path}: no whole object of {', '.join(classes)} at least {min_height} px tall",
                        fix="lower min_height")
    return out


def video_backgrounds(path: str | Path, start: int, count: int,
                      frame: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """``count`` consecutive frames of a video from frame ``start``, resized to ``frame`` (forward
    camera motion, as a dash-cam gives it)."""
    import cv2

    from .video import read_video

    out = []
    for f in read_video(path):
        if f.index >= start:
            out.append(cv2.resize(f.image, frame, interpolation=cv2.INTER_AREA))
            if len(out) == count:
                break
    if len(out) < count:
        raise DataError(f"{path}: {len(out)} frames from frame {start}, {count} wanted",
                        fix="start earlier or ask for fewer frames")
    return out


def panned_backgrounds(image: np.ndarray, count: int, rng: np.random.Generator,
                       frame: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """A still street frame seen by a panning camera: a ``frame``-sized window sliding over the image
    enlarged by 20-35 % (sub-pixel steps, bilinear)."""
    import cv2

    fw, fh = frame
    grow = rng.uniform(1.2, 1.35)
    big = cv2.resize(image, (int(fw * grow), int(fw * grow * image.shape[0] / image.shape[1])),
                     interpolation=cv2.INTER_LINEAR)
    if big.shape[0] < fh:
        big = cv2.resize(big, (int(big.shape[1] * fh / big.shape[0]) + 1, fh))
    room_x, room_y = big.shape[1] - fw, big.shape[0] - fh
    x_from, x_to = (0.0, room_x) if rng.random() < 0.5 else (room_x, 0.0)
    y_from, y_to = rng.uniform(0, room_y, 2)
    out = []
    for t in range(count):
        a = t / max(count - 1, 1)
        m = np.float32([[1, 0, -(x_from + a * (x_to - x_from))], [0, 1, -(y_from + a * (y_to - y_from))]])
        out.append(cv2.warpAffine(big, m, frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return out


def write_davis_sequence(root: str | Path, name: str, frames: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                         resolution: str = "480p", quality: int = 90) -> Path:
    """Write one sequence in DAVIS-2016's layout (JPEG frames, 0/255 PNG masks, 5-digit names)."""
    import cv2

    from .io import write_label

    root = Path(root)
    img_dir = root / "JPEGImages" / resolution / name
    ann_dir = root / "Annotations" / resolution / name
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i, (rgb, m) in enumerate(zip(frames, masks)):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise DataError(f"could not encode frame {i} of {name} as JPEG")
        (img_dir / f"{i:05d}.jpg").write_bytes(buf.tobytes())
        write_label(ann_dir / f"{i:05d}.png", m.astype(np.uint8) * 255)
    return root


def make_composite_davis(out: str | Path, *, cutouts: Sequence[Cutout], video: str | Path | None,
                         stills: Sequence[np.ndarray] | Callable[[int], np.ndarray], sequences: int = 12,
                         frames: int = 50, seed: int = 0, video_frames: int | None = None,
                         progress: bool = False) -> list[str]:
    """Write ``sequences`` composite sequences of ``frames`` frames under ``out`` (DAVIS layout);
    half over the video's frames (when given), half over panned stills. Returns their names."""
    from tqdm import tqdm

    if len(cutouts) < 2:
        raise InputError(f"composite sequences need at least 2 cut-outs, got {len(cutouts)}",
                         fix="cut out more objects")
    names = []
    for i in tqdm(range(int(sequences)), desc="composite sequences", unit="seq", disable=not progress):
        rng = np.random.default_rng([int(seed), i])
        pick = rng.choice(len(cutouts), 2, replace=False)
        target = cutouts[int(pick[0])]
        distractor = cutouts[int(pick[1])] if rng.random() < 0.75 else None
        if video is not None and i % 2 == 0:
            last = (video_frames or frames) - frames
            bgs = video_backgrounds(video, int(rng.integers(0, max(last, 0) + 1)), frames)
            kind = "drive"
        else:
            still = stills(int(rng.integers(1 << 30))) if callable(stills) else stills[int(rng.integers(len(stills)))]
            bgs = panned_backgrounds(still, frames, rng)
            kind = "pan"
        name = f"comp{i:02d}-{kind}-{target.name}" + ("" if distractor is None else "-occl")
        in_front = rng.random() < 0.6
        if distractor is not None and not in_front:
            name = name.replace("-occl", "-behind")
        pairs = list(composite_sequence(bgs, target, distractor, rng, distractor_in_front=in_front))
        write_davis_sequence(out, name, [p[0] for p in pairs], [p[1] for p in pairs])
        names.append(name)
    return names
