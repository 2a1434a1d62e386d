"""Keyframe acceleration: the heavy segmenter on keyframes only, its result carried to the frames between
by optical flow.

    kf = Keyframes(segment, KeyframeConfig(interval=4, motion=0.08))   # segment(rgb) -> any result
    for rgb in frames:
        result = kf(rgb)          # SemanticResult / InstanceResult / PanopticResult, like segment's
        kf.last_key               # whether the segmenter ran on this frame
    kf.reset()                    # discontinuity: the next frame is a keyframe

**When to run the segmenter.** On the first frame, after :meth:`Keyframes.reset`, when ``interval``
frames have passed since the last keyframe, and (``motion`` set) when the flow no longer explains the
frame: after warping the previous grey frame onto the current one with the backward flow, the fraction
of pixels whose grey level still differs by more than ``residual`` exceeds ``motion``. Such pixels are
what propagation cannot know: newly uncovered background, objects entering, a scene cut, motion the
flow missed, lighting changes. That fraction is the propagation's own uncertainty, measured on every
frame at the flow's resolution for a fraction of a millisecond; a cut or a fast pan triggers a
keyframe at once, a static scene runs up to ``interval`` frames on one inference.

**How results are carried.** Frame to frame (not keyframe to frame: consecutive frames give the
flow small, reliable displacements), by backward warping (no holes): DIS flow
(:class:`~edgeseg.video.flow.BackwardFlow`, preset ``ultrafast`` at half size by default) from the
current frame to the previous one, upsampled to the frame's size; each output pixel takes the label of
the pixel it came from (nearest). Semantic labels and confidence, instance masks (each inside a box
around it, so cost follows object size; boxes are re-measured from the warped masks, an instance
whose mask vanished is dropped; scores, classes and track ids are kept) and panoptic segment-id maps
(areas re-counted, segments that left the frame dropped) are all warped the same way.

Measured on the dash-cam video and on the synthetic generator's video (exact truth): ``tools/bench/keyframe.py``
and docs/video.md. State is explicit and bounded: the previous grey frame (small) and the previous
result; one :class:`Keyframes` per source.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..structures import InstanceResult, PanopticResult, SemanticResult
from .flow import PRESETS, BackwardFlow


@dataclass(frozen=True)
class KeyframeConfig:
    """When :class:`Keyframes` runs the segmenter, and how it measures motion.

    interval: at most this many frames from one keyframe to the next (1: every frame is a keyframe).
    motion:   keyframe as soon as this fraction of the frame is not explained by the flow (None: only
              ``interval`` decides).
    residual: grey-level difference (0-255) above which a warped pixel counts as not explained.
    flow_scale, preset: the DIS flow's resolution (fraction of the frame) and preset.
    """

    interval: int = 4
    motion: float | None = 0.08
    residual: float = 24.0
    flow_scale: float = 0.5
    preset: str = "ultrafast"

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or isinstance(self.interval, bool) or self.interval < 1:
            raise InputError(f"keyframe interval must be an integer >= 1, got {self.interval!r}",
                             fix="use 1 (every frame) or more, e.g. --keyframe-interval 4")
        if self.motion is not None and not 0.0 < float(self.motion) <= 1.0:
            raise InputError(f"keyframe motion threshold must be in (0, 1], got {self.motion!r}",
                             fix="a fraction of the frame, e.g. 0.08, or leave it unset")
        if not 0.0 < float(self.residual) < 255.0:
            raise InputError(f"keyframe residual must be a grey level in (0, 255), got {self.residual!r}")
        if not 0.05 <= float(self.flow_scale) <= 1.0:
            raise InputError(f"keyframe flow_scale must be in [0.05, 1], got {self.flow_scale!r}")
        if self.preset not in PRESETS:
            raise InputError(f"keyframe flow preset {self.preset!r} is unknown", fix=f"one of {', '.join(PRESETS)}")


@dataclass
class KeyframeStats:
    """Counts over a :class:`Keyframes`' life: frames, keyframes and why each ran."""

    frames: int = 0
    keyframes: int = 0
    by_interval: int = 0
    by_motion: int = 0
    unexplained: float = 0.0  # the last propagated frame's unexplained fraction

    @property
    def key_fraction(self) -> float:
        return self.keyframes / self.frames if self.frames else 0.0


class Keyframes:
    """Runs ``segment(rgb) -> result`` on keyframes and warps its result to the frames in between."""

    def __init__(self, segment: Callable[[np.ndarray], Any], config: KeyframeConfig | None = None):
        self.segment = segment
        self.config = config or KeyframeConfig()
        self._flow = BackwardFlow(self.config.preset, self.config.flow_scale) if self.config.interval > 1 else None
        self.stats = KeyframeStats()
        self.last_key = False
        self._prev_small: np.ndarray | None = None
        self._prev_result: Any = None
        self._since_key = 0

    def reset(self) -> None:
        """Forget the previous frame (a discontinuity): the next frame is a keyframe."""
        self._prev_small = self._prev_result = None
        self._since_key = 0

    def __call__(self, rgb: np.ndarray) -> Any:
        import cv2

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"keyframes take uint8 RGB frames [H, W, 3], got {rgb.dtype} {rgb.shape}")
        self.stats.frames += 1
        if self._flow is None:  # interval 1: nothing to propagate
            return self._key(rgb, None)
        small = self._flow.small_gray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        prev, prev_result = self._prev_small, self._prev_result
        if prev is None or prev.shape != small.shape or _shape_of(prev_result) != rgb.shape[:2]:
            return self._key(rgb, small)
        if self._since_key + 1 >= self.config.interval:
            self.stats.by_interval += 1
            return self._key(rgb, small)
        flow = self._flow(small, prev, rgb.shape[:2]).small
        if self.config.motion is not None:
            self.stats.unexplained = unexplained_fraction(small, prev, flow, self.config.residual)
            if self.stats.unexplained > self.config.motion:
                self.stats.by_motion += 1
                return self._key(rgb, small)
        maps = full_maps(flow, rgb.shape[:2])
        result = warp_result(prev_result, maps)
        self._prev_small, self._prev_result = small, result
        self._since_key += 1
        self.last_key = False
        return result

    def _key(self, rgb: np.ndarray, small: np.ndarray | None) -> Any:
        result = self.segment(rgb)
        self.stats.keyframes += 1
        self._prev_small, self._prev_result = small, result
        self._since_key = 0
        self.last_key = True
        return result


@functools.lru_cache(maxsize=8)
def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` float32 ``[h, w]`` pixel coordinates, made once per size (read-only: every frame reuses them)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def unexplained_fraction(cur: np.ndarray, prev: np.ndarray, flow: np.ndarray, residual: float) -> float:
    """The fraction of ``cur``'s pixels (grey, small) whose value differs by more than ``residual`` from
    ``prev`` sampled where the backward ``flow`` says they came from (replicated borders)."""
    import cv2

    gx, gy = pixel_grid(*cur.shape)
    warped = cv2.remap(prev, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = cv2.absdiff(cur, warped)
    return float(np.count_nonzero(diff > residual)) / diff.size


def full_maps(small_flow: np.ndarray, full: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(map_x, map_y)`` float32 ``[H, W]``: where each full-resolution pixel of the current frame was in the
    previous one, from a backward flow computed at a smaller size (vectors rescaled to full pixels)."""
    import cv2

    H, W = full
    h, w = small_flow.shape[:2]
    f = small_flow if (h, w) == (H, W) else cv2.resize(small_flow, (W, H), interpolation=cv2.INTER_LINEAR)
    gx, gy = pixel_grid(H, W)
    return gx + f[..., 0] * (W / w), gy + f[..., 1] * (H / h)


def _shape_of(result: Any) -> tuple[int, int] | None:
    if isinstance(result, SemanticResult):
        return tuple(result.labels.shape)
    if isinstance(result, InstanceResult):
        return (result.image_shape.height, result.image_shape.width)
    if isinstance(result, PanopticResult):
        return tuple(result.segment_ids.shape)
    return None


def warp_result(result: Any, maps: tuple[np.ndarray, np.ndarray]) -> Any:
    """``result`` (of the previous frame) carried to the current frame by ``maps`` (:func:`full_maps`)."""
    if isinstance(result, SemanticResult):
        return warp_semantic(result, maps)
    if isinstance(result, InstanceResult):
        return warp_instances(result, maps)
    if isinstance(result, PanopticResult):
        return warp_panoptic(result, maps)
    raise InputError(f"keyframe propagation carries semantic, instance and panoptic results, not {type(result).__name__}",
                     fix="use keyframes with a semantic, instance or panoptic bundle")


def _remap_nearest(a: np.ndarray, mx: np.ndarray, my: np.ndarray, border: int = 0) -> np.ndarray:
    import cv2

    return cv2.remap(a, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def _remap_ids(ids: np.ndarray, mx: np.ndarray, my: np.ndarray, border: int) -> np.ndarray:
    """Nearest remap of an integer map of any width (OpenCV remaps 8/16-bit integers and floats)."""
    top = int(ids.max(initial=0))
    if ids.dtype == np.uint8 or (top < 256 and ids.min(initial=0) >= 0 and border < 256):
        return _remap_nearest(ids.astype(np.uint8, copy=False), mx, my, border).astype(ids.dtype, copy=False)
    if top < 65536 and ids.min(initial=0) >= 0 and border < 65536:
        return _remap_nearest(ids.astype(np.uint16), mx, my, border).astype(ids.dtype)
    return _remap_nearest(ids.astype(np.float32), mx, my, border).astype(ids.dtype)  # exact below 2**24


def warp_semantic(result: SemanticResult, maps: tuple[np.ndarray, np.ndarray]) -> SemanticResult:
    """Labels (nearest) and confidence (bilinear) warped; pixels that came from outside the frame take the
    label of the nearest border pixel (a label, unlike an instance, does not leave the frame)."""
    import cv2

    mx, my = maps
    labels = cv2.remap(result.labels if result.labels.dtype == np.uint8 else result.labels.astype(np.float32),
                       mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE).astype(result.labels.dtype)
    conf = None
    if result.confidence is not None:
        conf = cv2.remap(result.confidence, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return dataclasses.replace(result, labels=labels, confidence=conf)


def warp_instances(result: InstanceResult, maps: tuple[np.ndarray, np.ndarray]) -> InstanceResult:
    """Each mask warped inside a box around it (its bounds grown by the largest displacement there);
    boxes re-measured from the warped masks; instances whose mask vanished are dropped. Works on the
    masks' crops and returns a compact result (no ``[N, H, W]`` array is built). A box-only result
    has its boxes moved by the mean displacement at their centres."""
    mx, my = maps
    H, W = mx.shape
    n = len(result.scores)
    if not result.has_masks:
        return _shift_boxes(result, maps)
    crops: list[np.ndarray] = []
    keep = np.zeros(n, bool)
    boxes = np.zeros((n, 4), np.float32)
    mask_boxes = np.zeros((n, 4), np.int32)
    gx = np.arange(W, dtype=np.float32)
    gy = np.arange(H, dtype=np.float32)
    for i, (sx0, sy0, _, _, src) in enumerate(result.iter_mask_crops()):
        ys, xs = np.nonzero(src.any(1))[0], np.nonzero(src.any(0))[0]
        if len(ys) == 0:
            continue
        x0, x1, y0, y1 = sx0 + int(xs[0]), sx0 + int(xs[-1]) + 1, sy0 + int(ys[0]), sy0 + int(ys[-1]) + 1
        # the largest displacement around the box bounds how far the object can have moved
        ex0, ey0, ex1, ey1 = max(0, x0 - 16), max(0, y0 - 16), min(W, x1 + 16), min(H, y1 + 16)
        dx = np.abs(mx[ey0:ey1, ex0:ex1] - gx[ex0:ex1]).max()
        dy = np.abs(my[ey0:ey1, ex0:ex1] - gy[ey0:ey1, None]).max()
        m = int(np.ceil(max(dx, dy))) + 2
        bx0, by0, bx1, by1 = max(0, x0 - m), max(0, y0 - m), min(W, x1 + m), min(H, y1 + m)
        # sample the crop (the mask is false outside it: the constant border) at the maps shifted by
        # its corner; an integer shift of float32 coordinates is exact, so this equals the full mask
        warped = _remap_nearest(np.ascontiguousarray(src).view(np.uint8), mx[by0:by1, bx0:bx1] - np.float32(sx0),
                                my[by0:by1, bx0:bx1] - np.float32(sy0)).astype(bool)
        cy, cx = np.nonzero(warped.any(1))[0], np.nonzero(warped.any(0))[0]
        if len(cy) == 0:
            continue
        keep[i] = True
        mask_boxes[i] = (bx0 + cx[0], by0 + cy[0], bx0 + cx[-1] + 1, by0 + cy[-1] + 1)
        boxes[i] = mask_boxes[i]
        crops.append(warped[cy[0]:cy[-1] + 1, cx[0]:cx[-1] + 1])
    track_ids = result.track_ids[keep] if result.track_ids is not None else None
    return InstanceResult(boxes=boxes[keep], scores=result.scores[keep], classes=result.classes[keep],
                          image_shape=result.image_shape, class_names=result.class_names, track_ids=track_ids,
                          mask_boxes=mask_boxes[keep], mask_crops=tuple(crops))


def _shift_boxes(result: InstanceResult, maps: tuple[np.ndarray, np.ndarray]) -> InstanceResult:
    mx, my = maps
    H, W = mx.shape
    boxes = result.boxes.copy()
    for i, (x0, y0, x1, y1) in enumerate(result.boxes):
        cx, cy = int(np.clip((x0 + x1) / 2, 0, W - 1)), int(np.clip((y0 + y1) / 2, 0, H - 1))
        # backward maps give where the pixel was: the object moved by (pixel - where it was)
        boxes[i, [0, 2]] -= mx[cy, cx] - cx
        boxes[i, [1, 3]] -= my[cy, cx] - cy
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
    return dataclasses.replace(result, boxes=boxes)


def warp_panoptic(result: PanopticResult, maps: tuple[np.ndarray, np.ndarray]) -> PanopticResult:
    """The segment-id map warped (nearest; pixels from outside the frame are void); areas re-counted,
    segments that left the frame dropped."""
    ids = _remap_ids(result.segment_ids, maps[0], maps[1], 0).astype(np.int32, copy=False)
    areas = np.bincount(ids.ravel(), minlength=max((s.id for s in result.segments), default=0) + 1)
    segments = tuple(dataclasses.replace(s, area=int(areas[s.id])) for s in result.segments if areas[s.id] > 0)
    return dataclasses.replace(result, segment_ids=ids, segments=segments)
