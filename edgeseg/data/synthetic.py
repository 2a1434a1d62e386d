"""Synthetic scenes with exact semantic, instance and panoptic ground truth, frame after frame.

A scene is a static textured background with three *stuff* regions (a gradient sky with clouds
above a wavy horizon, textured ground below it, a road wedge on the ground) and up to
``max_objects`` textured *things* (circles, rectangles, triangles) that move with constant
velocities (rectangles and triangles also spin), occlude each other by depth (``z``: larger is
nearer), enter the frame from an edge and leave it on the other side; a new object follows after
a short gap. Image pixels and label pixels come from the same rasterisation (no anti-aliasing), so
the ground truth is exact. Everything is a pure function of ``(seed, t)``: ``render(t)`` gives the
same frame whatever was rendered before.

Ids: semantic class ids index :data:`CLASSES` (stuff first); instance ids are positive, stable for
an object's life and never reused; a panoptic segment id is ``stuff class id + 1`` for stuff and
``THING_ID_OFFSET + instance id`` for things (0 is never used: every pixel is labelled).
"""
from __future__ import annotations

import colorsys
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from ..errors import DataError, InputError
from ..structures import ImageShape, InstanceResult, PanopticResult, Segment
from .base import DATASETS, Sample, SegmentationDataset, check_options

STUFF_CLASSES = ("sky", "ground", "road")
THING_CLASSES = ("circle", "rectangle", "triangle")
CLASSES = STUFF_CLASSES + THING_CLASSES
THING_ID_OFFSET = 1000
PALETTE = np.array([[70, 130, 180], [107, 142, 35], [128, 64, 128], [220, 20, 60], [0, 0, 230], [250, 170, 30]], np.uint8)
_THING_HUES = {"circle": 10.0, "rectangle": 290.0, "triangle": 55.0}  # degrees; jittered per object
_SHIFT = 4  # sub-pixel bits for cv2 rasterisation
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class ObjectState:
    """An object as it is on one frame. ``center_xy``/``velocity_xy`` in pixels (per frame)."""

    instance_id: int
    class_id: int
    z: float
    center_xy: tuple[float, float]
    velocity_xy: tuple[float, float]
    angle: float
    visible_area: int
    amodal_area: int


@dataclass(frozen=True)
class SyntheticFrame:
    """One rendered frame and its exact ground truth.

    image:        ``uint8 [H, W, 3]`` RGB.
    labels:       ``uint8 [H, W]`` semantic class ids (index into ``CLASSES``; no void).
    instance_ids: ``int32 [H, W]`` 0 on stuff, else the visible object's instance id.
    panoptic:     segment ids per the module docstring, with one :class:`Segment` per visible segment.
    instances:    visible objects, ordered by instance id: tight ``xyxy`` boxes (``x2 = last column + 1``),
                  scores 1, semantic class ids, bool masks of the visible pixels, ``track_ids`` = instance ids.
    objects:      every object alive on the frame (also fully occluded or still outside), back to front.
    index:        the frame number ``t``.
    """

    image: np.ndarray
    labels: np.ndarray
    instance_ids: np.ndarray
    panoptic: PanopticResult
    instances: InstanceResult
    objects: tuple[ObjectState, ...]
    index: int


@dataclass(frozen=True)
class _Object:
    """One object's whole life (internal). Position at frame t: start + velocity * (t - birth)."""

    instance_id: int
    class_id: int
    z: float
    birth: float
    death: float
    start: tuple[float, float]
    velocity: tuple[float, float]
    angle0: float
    omega: float
    radius: float
    shape: tuple[float, ...]  # circle: (r,); rectangle: (half_w, half_h); triangle: 3 vertex angles
    texture_seed: int

    def alive(self, t: float) -> bool:
        return self.birth <= t < self.death

    def center(self, t: float) -> tuple[float, float]:
        dt = t - self.birth
        return self.start[0] + self.velocity[0] * dt, self.start[1] + self.velocity[1] * dt

    def angle(self, t: float) -> float:
        return self.angle0 + self.omega * (t - self.birth)

    @property
    def pad(self) -> int:
        return int(math.ceil(self.radius)) + 2

    def local_mask(self, t: float, frac: tuple[float, float]) -> np.ndarray:
        """``uint8 [S, S]`` (S = 2*pad+1) mask with the object's centre at (pad+fx, pad+fy)."""
        import cv2

        p = self.pad
        size = 2 * p + 1
        m = np.zeros((size, size), np.uint8)
        cx, cy = p + frac[0], p + frac[1]
        name = CLASSES[self.class_id]
        if name == "circle":
            c = (int(round(cx * _ONE)), int(round(cy * _ONE)))
            cv2.circle(m, c, int(round(self.shape[0] * _ONE)), 1, thickness=-1, lineType=cv2.LINE_8, shift=_SHIFT)
            return m
        a = self.angle(t)
        if name == "rectangle":
            hw, hh = self.shape
            local = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        else:
            local = np.array([[math.cos(v), math.sin(v)] for v in self.shape]) * self.radius
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        pts = local @ rot.T + (cx, cy)
        cv2.fillPoly(m, [np.round(pts * _ONE).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        return m


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)) * 255.0


def _noise(rng: np.random.Generator, shape: ImageShape, cell: int, octaves: int = 2) -> np.ndarray:
    """Smooth value noise in [0, 1], ``float32 [H, W]`` (upsampled random grids, summed octaves)."""
    import cv2

    out = np.zeros(shape.hw, np.float32)
    total = 0.0
    for o in range(octaves):
        c = max(2, cell >> o)
        grid = rng.random((shape.height // c + 2, shape.width // c + 2), dtype=np.float32)
        w = 0.5**o
        out += w * cv2.resize(grid, shape.wh, interpolation=cv2.INTER_LINEAR)
        total += w
    return np.clip(out / total, 0.0, 1.0)


def _texture(seed: int, class_id: int, size: int) -> np.ndarray:
    """``uint8 [size, size, 3]`` two-tone patterned texture; hue tied loosely to the class."""
    rng = np.random.default_rng(seed)
    hue = _THING_HUES[CLASSES[class_id]] + rng.uniform(-25, 25)
    c1 = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    c2 = c1 * rng.uniform(0.35, 0.7)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = int(rng.integers(0, 4))
    period = float(rng.uniform(5, 14))
    if kind == 0:  # stripes
        th = rng.uniform(0, math.pi)
        pat = np.sin(2 * math.pi * (xx * math.cos(th) + yy * math.sin(th)) / period) > 0
    elif kind == 1:  # checker
        pat = ((xx // period + yy // period) % 2) == 0
    elif kind == 2:  # dots
        pat = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 3.2) ** 2
    else:  # blotches
        pat = _noise(rng, ImageShape(size, size), max(3, int(period))) > 0.5
    tex = np.where(pat[..., None], c1, c2) + rng.normal(0, 6, (size, size, 3))
    return np.clip(tex, 0, 255).astype(np.uint8)


class SceneGenerator:
    """Renders a moving scene with exact ground truth; deterministic in ``(seed, t)``.

    size:        frame size. seed: an int or a sequence of ints (numpy ``SeedSequence`` entropy).
    max_objects: how many objects can be alive at once (each slot spawns its next object after a gap).
    speed:       object speed range, as a fraction of the frame width per frame.
    object_size: object radius range, as a fraction of ``min(height, width)``.
    """

    classes = CLASSES
    stuff_classes = STUFF_CLASSES
    thing_classes = THING_CLASSES
    thing_class_ids = tuple(range(len(STUFF_CLASSES), len(CLASSES)))
    palette = PALETTE

    def __init__(
        self,
        size: ImageShape = ImageShape(360, 480),
        seed: int | Sequence[int] = 0,
        max_objects: int = 6,
        *,
        speed: tuple[float, float] = (0.004, 0.012),
        object_size: tuple[float, float] = (0.07, 0.16),
        max_gap: int = 30,
    ):
        if not isinstance(size, ImageShape):
            raise InputError(f"SceneGenerator size must be an ImageShape, got {size!r}", fix="ImageShape(height, width)")
        if max_objects < 0:
            raise InputError(f"max_objects must be >= 0, got {max_objects}")
        self.size = size
        self.seed = (int(seed),) if isinstance(seed, (int, np.integer)) else tuple(int(s) for s in seed)
        self.max_objects = int(max_objects)
        self.speed, self.object_size, self.max_gap = speed, object_size, int(max_gap)
        self._chains: list[list[_Object]] = [[] for _ in range(self.max_objects)]
        self._slot_rngs = [np.random.default_rng((*self.seed, 1, s)) for s in range(self.max_objects)]
        self._textures: dict[int, np.ndarray] = {}
        self.background, self.background_labels = self._background(np.random.default_rng((*self.seed, 0)))

    # ---- background ---------------------------------------------------------------------------
    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        h, w = self.size.hw
        xs = np.arange(w, dtype=np.float32)
        horizon = h * rng.uniform(0.35, 0.55) + sum(
            h * rng.uniform(0.0, 0.03) * np.sin(2 * math.pi * rng.uniform(0.5, 3.0) * xs / w + rng.uniform(0, 6.3))
            for _ in range(2)
        )
        yy = np.arange(h, dtype=np.float32)[:, None]
        labels = np.where(yy < horizon[None, :], 0, 1).astype(np.uint8)
        # sky: vertical gradient plus clouds; ground: earthy texture; road: a wedge from the bottom
        # edge to a vanishing point on the horizon. Built per channel on contiguous float32 planes.
        top = _hsv(rng.uniform(195, 230), rng.uniform(0.4, 0.8), rng.uniform(0.55, 0.85))
        bottom = _hsv(rng.uniform(190, 220), rng.uniform(0.1, 0.3), rng.uniform(0.85, 1.0))
        g = np.clip(yy / max(1.0, float(horizon.max())), 0, 1)
        cloud = np.clip((_noise(rng, self.size, max(8, w // 6), 3) - 0.55) * 4, 0, 1)
        ground_c = _hsv(rng.uniform(30, 110), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.6))
        ground_tex = 0.7 + 0.6 * _noise(rng, self.size, max(4, w // 40), 3)
        vx = w * rng.uniform(0.3, 0.7)
        vy = float(np.interp(vx, xs, horizon))
        half = w * rng.uniform(0.25, 0.5)
        poly = np.array([[vx - 2, vy], [vx + 2, vy], [vx + half + w * 0.1, h + 1], [vx - half - w * 0.1, h + 1]])
        road = np.zeros((h, w), np.uint8)
        cv2.fillPoly(road, [np.round(poly * _ONE).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        road = (road > 0) & (labels == 1)
        asphalt = np.float32(rng.uniform(70, 110)) * (0.85 + 0.3 * _noise(rng, self.size, 3, 1))
        sky_m = labels == 0
        img = np.empty((h, w, 3), np.uint8)
        for c in range(3):
            grad = (top[c] * (1 - g) + bottom[c] * g).astype(np.float32)
            plane = np.where(sky_m, grad + cloud * (245.0 - grad), ground_c[c] * ground_tex)
            plane[road] = asphalt[road]
            img[..., c] = np.clip(plane, 0, 255)
        labels[road] = 2
        return img, labels

    # ---- object timelines ----------------------------------------------------------------------
    def _spawn(self, slot: int, k: int, birth: float) -> _Object:
        rng = self._slot_rngs[slot]
        h, w = self.size.hw
        class_id = int(rng.choice(self.thing_class_ids))
        r = float(rng.uniform(*self.object_size)) * min(h, w)
        name = CLASSES[class_id]
        if name == "circle":
            shape: tuple[float, ...] = (r,)
        elif name == "rectangle":
            aspect = rng.uniform(0.5, 1.0)
            shape = (r * math.cos(math.atan(aspect)), r * math.sin(math.atan(aspect)))
        else:
            base = rng.uniform(0, 2 * math.pi)
            shape = tuple(base + i * 2 * math.pi / 3 + rng.uniform(-0.35, 0.35) for i in range(3))
        edge = int(rng.choice(4, p=[0.4, 0.4, 0.1, 0.1]))  # left, right, top, bottom
        inward = (0.0, math.pi, math.pi / 2, -math.pi / 2)[edge]
        heading = inward + rng.uniform(-0.5, 0.5)
        spd = float(rng.uniform(*self.speed)) * w
        vel = (spd * math.cos(heading), spd * math.sin(heading))
        along = (rng.uniform(0.15, 0.9) * h, rng.uniform(0.15, 0.85) * w)
        start = ((-r, along[0]), (w + r, along[0]), (along[1], -r), (along[1], h + r))[edge]
        life = min(self._exit_time(start[0], vel[0], w, r), self._exit_time(start[1], vel[1], h, r))
        return _Object(
            instance_id=slot + 1 + k * max(1, self.max_objects),
            class_id=class_id,
            z=float(rng.random()),
            birth=birth,
            death=birth + life,
            start=start,
            velocity=vel,
            angle0=float(rng.uniform(0, 2 * math.pi)),
            omega=0.0 if name == "circle" else float(rng.uniform(-0.03, 0.03)),
            radius=r,
            shape=shape,
            texture_seed=int(rng.integers(0, 2**31)),
        )

    @staticmethod
    def _exit_time(x0: float, v: float, extent: int, r: float) -> float:
        """Frames until a body of radius r at x0 moving at v is wholly past the far side."""
        if v > 1e-9:
            return (extent + r - x0) / v
        if v < -1e-9:
            return (-r - x0) / v
        return math.inf

    def _object_at(self, slot: int, t: float) -> _Object | None:
        chain = self._chains[slot]
        if not chain:
            first = self._spawn(slot, 0, 0.0)
            phase = float(self._slot_rngs[slot].uniform(0.0, 0.8)) * (first.death - first.birth)
            chain.append(_shift(first, -phase))
        while chain[-1].death <= t:
            gap = float(self._slot_rngs[slot].integers(0, self.max_gap + 1))
            chain.append(self._spawn(slot, len(chain), chain[-1].death + gap))
        for obj in reversed(chain):
            if obj.alive(t):
                return obj
            if obj.death <= t:
                return None
        return None

    def _texture_of(self, obj: _Object) -> np.ndarray:
        tex = self._textures.get(obj.instance_id)
        if tex is None:
            if len(self._textures) > 4 * max(1, self.max_objects):
                self._textures.clear()
            tex = self._textures[obj.instance_id] = _texture(obj.texture_seed, obj.class_id, 2 * obj.pad + 1)
        return tex

    def alive(self, t: int) -> list[_Object]:
        """Objects alive at frame t, back to front (increasing z)."""
        objs = [o for o in (self._object_at(s, t) for s in range(self.max_objects)) if o is not None]
        return sorted(objs, key=lambda o: o.z)

    # ---- rendering -----------------------------------------------------------------------------
    def _paint(self, obj: _Object, t: int, image: np.ndarray, labels: np.ndarray, ids: np.ndarray | None) -> np.ndarray | None:
        """Paint obj over the buffers; returns the amodal local mask window in frame coords, or None."""
        cx, cy = obj.center(t)
        ix, iy = int(math.floor(cx)), int(math.floor(cy))
        p = obj.pad
        x0, y0 = ix - p, iy - p
        h, w = self.size.hw
        fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + 2 * p + 1), min(h, y0 + 2 * p + 1)
        if fx0 >= fx1 or fy0 >= fy1:
            return None
        local = obj.local_mask(t, (cx - ix, cy - iy))
        sl = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
        m = local[sl].astype(bool)
        roi = (slice(fy0, fy1), slice(fx0, fx1))
        image[roi][m] = self._texture_of(obj)[sl][m]
        labels[roi][m] = obj.class_id
        if ids is not None:
            ids[roi][m] = obj.instance_id
        return m

    def render_semantic(self, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The fast path for training: ``(image uint8 [H,W,3], labels uint8 [H,W])`` of frame t."""
        image, labels = self.background.copy(), self.background_labels.copy()
        for obj in self.alive(t):
            self._paint(obj, t, image, labels, None)
        return image, labels

    def render(self, t: int = 0) -> SyntheticFrame:
        """Frame t with semantic, instance and panoptic ground truth."""
        image, labels = self.background.copy(), self.background_labels.copy()
        ids = np.zeros(self.size.hw, np.int32)
        objs = self.alive(t)
        amodal = {o.instance_id: int(m.sum()) if (m := self._paint(o, t, image, labels, ids)) is not None else 0 for o in objs}
        counts = np.bincount(ids.ravel(), minlength=max((o.instance_id for o in objs), default=0) + 1)
        states = tuple(
            ObjectState(
                o.instance_id, o.class_id, o.z, o.center(t), o.velocity, o.angle(t), int(counts[o.instance_id]), amodal[o.instance_id]
            )
            for o in objs
        )
        visible = sorted((s for s in states if s.visible_area > 0), key=lambda s: s.instance_id)
        return SyntheticFrame(
            image=image,
            labels=labels,
            instance_ids=ids,
            panoptic=self._panoptic(labels, ids, visible),
            instances=self._instances(ids, visible),
            objects=states,
            index=int(t),
        )

    def amodal_mask(self, instance_id: int, t: int) -> np.ndarray:
        """``bool [H, W]``: the whole (unoccluded) extent of an alive object inside the frame at t."""
        for obj in self.alive(t):
            if obj.instance_id == instance_id:
                img = np.zeros((*self.size.hw, 3), np.uint8)
                lab = np.zeros(self.size.hw, np.uint8)
                ids = np.zeros(self.size.hw, np.int32)
                self._paint(obj, t, img, lab, ids)
                return ids == instance_id
        raise InputError(f"no object with instance id {instance_id} is alive at frame {t}")

    def _instances(self, ids: np.ndarray, visible: list[ObjectState]) -> InstanceResult:
        n = len(visible)
        iid = np.array([s.instance_id for s in visible], np.int64)
        masks = ids[None] == iid[:, None, None] if n else np.zeros((0, *self.size.hw), bool)
        boxes = np.zeros((n, 4), np.float32)
        for i in range(n):
            ys, xs = np.flatnonzero(masks[i].any(1)), np.flatnonzero(masks[i].any(0))
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return InstanceResult(
            boxes=boxes,
            scores=np.ones(n, np.float32),
            classes=np.array([s.class_id for s in visible], np.int32),
            image_shape=self.size,
            masks=masks,
            class_names=CLASSES,
            track_ids=iid,
        )

    def _panoptic(self, labels: np.ndarray, ids: np.ndarray, visible: list[ObjectState]) -> PanopticResult:
        seg = np.where(ids > 0, ids + THING_ID_OFFSET, labels.astype(np.int32) + 1).astype(np.int32)
        stuff_area = np.bincount(labels[ids == 0], minlength=len(CLASSES))
        segments = [Segment(c + 1, c, False, int(stuff_area[c])) for c in range(len(STUFF_CLASSES)) if stuff_area[c] > 0]
        segments += [Segment(THING_ID_OFFSET + s.instance_id, s.class_id, True, s.visible_area) for s in visible]
        return PanopticResult(seg, tuple(segments), CLASSES)

    def frames(self, count: int | None = None, start: int = 0) -> Iterator[SyntheticFrame]:
        """Frames ``start, start+1, ...`` (``count`` of them, or forever)."""
        t = start
        while count is None or t < start + count:
            yield self.render(t)
            t += 1


def _shift(obj: _Object, dt: float) -> _Object:
    """The same trajectory with birth moved by dt (the object is dt frames further along)."""
    return replace(obj, birth=obj.birth + dt, death=obj.death + dt)


class SyntheticDataset(SegmentationDataset):
    """``n`` independent synthetic scenes as a dataset of :class:`Sample` (semantic labels, no void).

    Sample i is frame ``t`` (drawn in 0..``max_t``) of the scene seeded ``(seed, stream, i)``;
    ``stream`` separates splits so train and val never share a scene.
    """

    classes = CLASSES
    palette = PALETTE

    def __init__(
        self, n: int, size: ImageShape = ImageShape(360, 480), seed: int = 0, *, stream: int = 0, max_objects: int = 6, max_t: int = 60
    ):
        if n < 0:
            raise InputError(f"SyntheticDataset size must be >= 0, got {n}")
        self.n, self.size, self.seed, self.stream = int(n), size, int(seed), int(stream)
        self.max_objects, self.max_t = max_objects, max_t

    def __len__(self) -> int:
        return self.n

    def _load(self, index: int) -> Sample:
        gen = SceneGenerator(self.size, (self.seed, self.stream, index), self.max_objects)
        t = int(np.random.default_rng((self.seed, self.stream, index, 7)).integers(0, self.max_t + 1))
        image, labels = gen.render_semantic(t)
        return Sample(image, labels, f"synthetic_{self.seed}_{self.stream}_{index:06d}")


def split_stream(split: str) -> int:
    """A stable stream number per split name (train 0, val 1, test 2, others by CRC32)."""
    return {"train": 0, "val": 1, "test": 2}.get(split, zlib.crc32(split.encode()) & 0x7FFFFFFF)


def scene_spec(kind: str, args: list[str], options: dict[str, str],
               default_size: ImageShape) -> tuple[int, ImageShape, int, int]:
    """``(scenes, size, seed, max_objects)`` of a ``KIND:N[,seed=S][,size=WxH][,max_objects=K]`` spec
    (``synthetic:``, ``synthetic-instance:``, ``synthetic-panoptic:``), or a :class:`DataError`."""
    check_options(kind, options, ("seed", "size", "max_objects"))
    if len(args) != 1 or not args[0].isdigit():
        raise DataError(f"{kind} spec takes the number of scenes", fix=f"write {kind}:N[,seed=S,size=WxH]")
    size = ImageShape.parse(options["size"]) if "size" in options else default_size
    try:
        seed, k = int(options.get("seed", 0)), int(options.get("max_objects", 6))
    except ValueError as e:
        raise DataError(f"{kind} dataset: seed and max_objects must be integers ({e})") from None
    return int(args[0]), size, seed, k


def held_out_frame(size: ImageShape, seed: int, stream: int, index: int, max_objects: int, max_t: int) -> SyntheticFrame:
    """Scene ``index`` of a split's stream, seeded ``(seed, stream, index)``, at a time drawn in
    ``0..max_t``: the frames of the ``synthetic-instance:`` and ``synthetic-panoptic:`` datasets."""
    gen = SceneGenerator(size, (seed, stream, index), max_objects)
    t = int(np.random.default_rng((seed, stream, index, 7)).integers(0, max_t + 1))
    return gen.render(t)


@DATASETS.register("synthetic")
def _open_synthetic(args: list[str], options: dict[str, str], split: str) -> SyntheticDataset:
    n, size, seed, k = scene_spec("synthetic", args, options, ImageShape(360, 480))
    return SyntheticDataset(n, size, seed, stream=split_stream(split), max_objects=k)


__all__ = [
    "CLASSES", "STUFF_CLASSES", "THING_CLASSES", "THING_ID_OFFSET", "PALETTE", "SceneGenerator", "SyntheticFrame",
    "SyntheticDataset", "ObjectState", "split_stream", "scene_spec", "held_out_frame",
]
