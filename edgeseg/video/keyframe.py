"""Keyframe acceleration: the heavy segmenter on keyframes only, its result carried to the frames between
by optical flow.

    kf = Keyframes(segment, KeyframeConfig(interval=4, motion=0.08))   # segment(rgb) -> any result
    for rgb in frames:
        result = kf(rgb)          # SemanticResult / InstanceResult / PanopticResult, like segment's
        kf.last_key               # whether the segmenter ran on this frame
    kf.reset()                    # discontinuity: the next frame is a keyframe

:class:`Keyframes` is two halves in one call: :class:`KeyframePlanner` (which frames are keyframes,
the flow; the frames alone) and :class:`KeyframeCarrier` (the results). A stream runs them as
separate stages, the planner ahead of the segmenter (:mod:`edgeseg.stream.keyframe_stage`).

**When to run the segmenter.** On the first frame, after :meth:`Keyframes.reset`, when ``interval``
frames have passed since the last keyframe, and (``motion`` set) when the flow no longer explains the
frame: after warping the previous grey frame onto the current one with the backward flow, the fraction
of pixels whose grey level still differs by more than ``residual`` exceeds ``motion``. Such pixels are
what propagation cannot know: newly uncovered background, objects entering, a scene cut, motion the
flow missed, lighting changes. That fraction is the propagation's own uncertainty, measured on every
frame at the flow's resolution for a fraction of a millisecond; a cut or a fast pan triggers a
keyframe at once, a static scene runs up to ``interval`` frames on one inference. A small object the
flow cannot follow (one moving faster than DIS's patches reach) leaves a compact cluster of such pixels
(where it is now and where it was) that never makes ``motion`` of the whole frame; with ``local`` set,
the same pixels are also counted in a sliding square window about the size of a small object (side
``window`` of the frame's size) and the frame is a keyframe when any window is more than ``local``
unexplained: the object's carried mask would lag it, and the tracker would give it a new id at the next
keyframe. The frames alone decide (the planner runs ahead of the segmenter in a stream, before the
keyframe's objects are known), at the cost of one box filter on the flow's grid.

**How results are carried.** The flow is measured frame to frame (consecutive frames give it
small, reliable displacements): DIS (:class:`KeyframeFlow`, preset ``ultrafast`` at half size by
default, its finest pyramid level chosen so the flow has at least ``flow_cells`` cells across the
frame) from the current frame back to the previous one. The flows are composed into one
displacement from the current frame back to the keyframe (:func:`compose_flow`, in floating point, on
the grid of DIS's finest level, where DIS estimates the flow and where :class:`KeyframeFlow` runs it),
upsampled to the frame's size, and the *keyframe's* result is warped backward through it (no holes):
each output pixel takes the label of the keyframe pixel it came from (nearest), once, so rounding
does not accumulate from frame to frame (``compose=False``: the previous frame's result is warped
again on every frame, as before). Semantic labels and
confidence, instance masks (each inside its box grown by the largest displacement, so cost follows
object size; boxes are re-measured from the warped masks, an instance whose mask vanished is
dropped; scores, classes and track ids are kept) and panoptic segment-id maps (areas re-counted,
segments that left the frame dropped) are all warped the same way; box-only instances, which are not
resampled, are moved frame to frame by the flow at their centres.

Measured on the dash-cam video and on the synthetic generator's video (exact truth): ``tools/bench/keyframe.py``
and docs/video.md. State is explicit and bounded: the previous grey frame (small), the previous and
the keyframe's results, the displacement back to the keyframe (flow-sized) and two full-size map
buffers reused from frame to frame; one :class:`Keyframes` per source.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import InputError, StreamError
from ..structures import InstanceResult, PanopticResult, SemanticResult
from .flow import PRESETS, BackwardFlow, to_flow_scale


@dataclass(frozen=True)
class KeyframeConfig:
    """When :class:`Keyframes` runs the segmenter, and how it measures motion.

    interval: at most this many frames from one keyframe to the next (1: every frame is a keyframe).
    motion:   keyframe as soon as this fraction of the frame is not explained by the flow (None: only
              ``interval`` decides).
    local:    keyframe as soon as this fraction of any square window of side ``window`` is not explained by
              the flow: a small object the flow lost (None: off; needs no ``motion``).
    window:   the side of ``local``'s window, a fraction of the frame's size (the side of a square of the
              frame's area), at least 3 cells of the flow's grid.
    residual: grey-level difference (0-255) above which a warped pixel counts as not explained.
    flow_scale, preset: the DIS flow's resolution (fraction of the frame) and preset.
    flow_cells: the least number of flow cells across the frame, counted as the side of a square of
              the same number of cells (the geometric mean of the cells across and down). DIS
              estimates the flow on a pyramid, down to a finest level (``ultrafast``: level 2, a quarter
              of the flow's resolution) where it matches patches every 4 pixels; the flow resolves
              motion no finer than that grid. Keyframes use the coarsest level, at most the preset's,
              whose grid has ``flow_cells`` cells (0: the preset's level whatever the size). With the
              defaults 960x540 and 1280x720 keep the preset's level (30 x 17 and 40 x 22 cells of 32
              pixels), 640x360 and 320x240 go one level finer (40 x 22 and 20 x 15 cells of 16 pixels;
              at the preset's level small objects' motion bled into the static background around
              them: 2.07 points of mIoU lost at 640x360, N = 5, against 1.30 one level finer).
    compose:  carry a coordinate map from the current frame back to the keyframe (each frame's backward
              flow composed with the previous frame's map, at the flow's resolution) and sample the
              keyframe's result once per frame through it; False: warp the previous frame's result
              (resampled again on every frame, so rounding drift accumulates and thin parts erode).
    """

    interval: int = 4
    motion: float | None = 0.08
    residual: float = 24.0
    local: float | None = 0.4
    window: float = 0.12
    flow_scale: float = 0.5
    preset: str = "ultrafast"
    compose: bool = True
    flow_cells: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or isinstance(self.interval, bool) or self.interval < 1:
            raise InputError(f"keyframe interval must be an integer >= 1, got {self.interval!r}",
                             fix="use 1 (every frame) or more, e.g. --keyframe-interval 4")
        if self.motion is not None and not 0.0 < float(self.motion) <= 1.0:
            raise InputError(f"keyframe motion threshold must be in (0, 1] (or 0: off), got {self.motion!r}",
                             fix="a fraction of the frame, e.g. 0.08, or 0 for keyframes by interval only")
        if self.local is not None and not 0.0 < float(self.local) <= 1.0:
            raise InputError(f"keyframe local motion threshold must be in (0, 1] (or 0: off), got {self.local!r}",
                             fix="a fraction of a window, e.g. 0.5, or 0 to leave small objects to the whole-frame check")
        if not 0.0 < float(self.window) <= 1.0:
            raise InputError(f"keyframe local window must be in (0, 1] of the frame's size, got {self.window!r}",
                             fix="e.g. 0.12: windows an eighth of the frame across")
        if not 0.0 < float(self.residual) < 255.0:
            raise InputError(f"keyframe residual must be a grey level in (0, 255), got {self.residual!r}")
        if not 0.05 <= float(self.flow_scale) <= 1.0:
            raise InputError(f"keyframe flow_scale must be in [0.05, 1], got {self.flow_scale!r}")
        if not isinstance(self.flow_cells, int) or isinstance(self.flow_cells, bool) or self.flow_cells < 0:
            raise InputError(f"keyframe flow_cells must be an integer >= 0, got {self.flow_cells!r}",
                             fix="e.g. 20 flow cells across the frame; 0 keeps the preset's pyramid")
        if self.preset not in PRESETS:
            raise InputError(f"keyframe flow preset {self.preset!r} is unknown", fix=f"one of {', '.join(PRESETS)}")


@dataclass
class KeyframeStats:
    """Counts over a :class:`Keyframes`' life: frames, keyframes and why each ran."""

    frames: int = 0
    keyframes: int = 0
    by_interval: int = 0
    by_motion: int = 0
    by_local: int = 0
    unexplained: float = 0.0  # the last propagated frame's unexplained fraction
    local: float = 0.0  # the last propagated frame's largest unexplained fraction of a window

    @property
    def key_fraction(self) -> float:
        return self.keyframes / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class KeyPlan:
    """What :class:`KeyframePlanner` decided for one frame, from the frames alone (no result needed).

    index:     the frame's number in this planner's life (0-based; resets do not restart it).
    key:       run the segmenter on this frame.
    key_index: the index of the keyframe this frame's result comes from (its own when ``key``).
    flow:      ``float32 [h, w, 2]`` backward flow to the previous frame on the grid of DIS's finest level
               (:class:`KeyframeFlow`), vectors in that grid's pixels; None on keyframes.
    to_key:    the flows composed back to the keyframe (None on keyframes, or without ``compose``).
    """

    index: int
    key: bool
    key_index: int
    flow: np.ndarray | None = None
    to_key: np.ndarray | None = None


class KeyframePlanner:
    """The half of keyframing that needs only the frames: which frames are keyframes (first frame, after
    :meth:`reset` or :meth:`force_key`, every ``interval``, unexplained motion), the frame-to-frame flow
    and its composition back to the keyframe. A stream runs it in its own thread, ahead of inference
    (:mod:`edgeseg.stream.keyframe_stage`), so the flow of the frames after a keyframe is computed while
    the segmenter still runs on it."""

    def __init__(self, config: KeyframeConfig | None = None):
        self.config = config or KeyframeConfig()
        self._flow = (KeyframeFlow(self.config.preset, self.config.flow_scale, self.config.flow_cells)
                      if self.config.interval > 1 else None)
        self.stats = KeyframeStats()
        self._prev_small: np.ndarray | None = None
        self._to_key: np.ndarray | None = None
        self._index = -1
        self._key_index = -1
        self._since_key = 0
        self._force = False

    def reset(self) -> None:
        """Forget the previous frame (a discontinuity): the next frame is a keyframe."""
        self._prev_small = self._to_key = None
        self._since_key = 0

    def force_key(self) -> None:
        """Make the next frame a keyframe (the last keyframe's result was lost: nothing to carry)."""
        self._force = True

    def __call__(self, rgb: np.ndarray) -> KeyPlan:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"keyframes take uint8 RGB frames [H, W, 3], got {rgb.dtype} {rgb.shape}")
        self.stats.frames += 1
        self._index += 1
        if self._flow is None:  # interval 1: nothing to propagate
            return self._key()
        small = self._flow.frame(rgb)
        prev, self._prev_small = self._prev_small, small
        force, self._force = self._force, False
        if force or prev is None or prev.shape != small.shape:
            return self._key()
        if self._since_key + 1 >= self.config.interval:
            self.stats.by_interval += 1
            return self._key()
        flow = self._flow(small, prev, rgb.shape[:2]).small
        cfg = self.config
        if cfg.motion is not None or cfg.local is not None:
            bad = unexplained_mask(small, prev, flow, cfg.residual)
            if cfg.motion is not None:
                self.stats.unexplained = float(np.count_nonzero(bad)) / bad.size
                if self.stats.unexplained > cfg.motion:
                    self.stats.by_motion += 1
                    return self._key()
            if cfg.local is not None:
                self.stats.local = local_unexplained(bad, cfg.window)
                if self.stats.local > cfg.local:
                    self.stats.by_local += 1
                    return self._key()
        if self.config.compose:
            self._to_key = flow if self._to_key is None else compose_flow(flow, self._to_key)
        self._since_key += 1
        return KeyPlan(self._index, False, self._key_index, flow, self._to_key)

    def _key(self) -> KeyPlan:
        self.stats.keyframes += 1
        self._key_index = self._index
        self._to_key = None
        self._since_key = 0
        return KeyPlan(self._index, True, self._index)


class KeyframeCarrier:
    """The half of keyframing that needs the results: keeps the keyframe's (and the previous frame's)
    result and carries it to each propagated frame along the planner's flow."""

    def __init__(self):
        self._maps = _Buffers()
        self._key_result: Any = None
        self._prev_result: Any = None
        self._key_index = -1
        self._last_index = -1

    def reset(self) -> None:
        self._key_result = self._prev_result = None
        self._key_index = self._last_index = -1

    def ready(self, shape: tuple[int, int]) -> bool:
        """Whether a result of a frame of ``shape`` is there to carry."""
        return self._prev_result is not None and _shape_of(self._prev_result) == tuple(shape)

    def keyframe(self, plan: KeyPlan, result: Any) -> None:
        """The segmenter's ``result`` on keyframe ``plan``."""
        self._key_result = self._prev_result = result
        self._key_index = self._last_index = plan.index

    def carry(self, plan: KeyPlan, shape: tuple[int, int]) -> Any:
        """The result of the propagated frame ``plan`` (of ``shape``): the keyframe's result warped through
        the composed flow, or (box-only instances, ``compose`` off) the previous frame's through the flow.
        Raises :class:`~edgeseg.errors.StreamError` when the result it would come from is missing (its
        keyframe failed, a frame between was lost)."""
        shape = tuple(int(v) for v in shape)
        if plan.key_index != self._key_index or plan.index != self._last_index + 1 or not self.ready(shape):
            raise StreamError(f"keyframe {plan.key_index}'s result is missing (the segmenter failed on it, or a frame "
                              f"between was lost): frame {plan.index} has nothing to carry",
                              fix="the next keyframe restores the results; see the error of that keyframe")
        if plan.to_key is not None and _resampled(self._key_result):
            result = warp_result(self._key_result, full_maps(plan.to_key, shape, self._maps(shape)),
                                 flow_reach(plan.to_key, shape))
        else:
            result = warp_result(self._prev_result, full_maps(plan.flow, shape, self._maps(shape)),
                                 flow_reach(plan.flow, shape))
        self._prev_result, self._last_index = result, plan.index
        return result


class Keyframes:
    """Runs ``segment(rgb) -> result`` on keyframes and warps its result to the frames in between: a
    :class:`KeyframePlanner` and a :class:`KeyframeCarrier` in one call, for one thread."""

    def __init__(self, segment: Callable[[np.ndarray], Any], config: KeyframeConfig | None = None):
        self.segment = segment
        self.planner = KeyframePlanner(config)
        self.carrier = KeyframeCarrier()
        self.last_key = False

    @property
    def config(self) -> KeyframeConfig:
        return self.planner.config

    @property
    def stats(self) -> KeyframeStats:
        return self.planner.stats

    def reset(self) -> None:
        """Forget the previous frame (a discontinuity): the next frame is a keyframe."""
        self.planner.reset()
        self.carrier.reset()

    def __call__(self, rgb: np.ndarray) -> Any:
        rgb = np.asarray(rgb)
        if rgb.ndim == 3 and not self.carrier.ready(rgb.shape[:2]):
            self.planner.force_key()  # nothing to carry from (first frame, another size)
        plan = self.planner(rgb)
        self.last_key = plan.key
        if not plan.key:
            return self.carrier.carry(plan, rgb.shape[:2])
        try:
            result = self.segment(rgb)
        except BaseException:
            self.planner.force_key()  # try again on the next frame rather than carry nothing
            raise
        self.carrier.keyframe(plan, result)
        return result


class KeyframeFlow(BackwardFlow):
    """:class:`~edgeseg.video.flow.BackwardFlow` on the grid of DIS's finest pyramid level, chosen per size so
    that the flow has at least ``cells`` patch cells across the frame (:attr:`KeyframeConfig.flow_cells`).

    DIS estimates the flow at its finest level (``1 / 2**level`` of its input, resized there with
    ``INTER_AREA``) and returns it upsampled bilinearly to its input's size; it still builds that
    input's gradients and buffers at full size. Keyframes need the estimate only: :meth:`small_gray`
    resizes the frame to the finest level's grid itself (as DIS does) and DIS runs there at level 0, so
    the flow comes out on that grid, vectors in its pixels, without the levels DIS would never
    estimate (at 960x540: 1.7 instead of 2.8 ms, resize included, one thread)."""

    def __init__(self, preset: str, scale: float, cells: int = 0):
        super().__init__(preset, scale)
        self.cells = int(cells)
        self.preset_level = self._dis.getFinestScale()
        self._dis.setFinestScale(0)
        self.level = self.preset_level  # of the last frame's size: DIS's finest level on the flow-scale frame
        self._shape: tuple[int, int] | None = None  # the flow-scale size self.level was chosen for

    def frame(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB frame as the flow sees it: grey, on the finest level's grid. The colour frame is shrunk to
        the flow's scale first and converted there (at half size the same pixels as converting the whole
        frame and then shrinking it, in 0.48 instead of 0.76 ms at 960x540)."""
        import cv2

        rgb = to_flow_scale(rgb, self.scale)  # the flow's scale, or up to DIS's smallest frame
        return self._to_grid(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))

    def small_gray(self, gray: np.ndarray) -> np.ndarray:
        """The grey frame on the flow's grid: at the flow's scale, then down to the finest level's grid
        (``w >> level`` by ``h >> level``, ``INTER_AREA`` like DIS's own pyramid)."""
        return self._to_grid(super().small_gray(gray))

    def _to_grid(self, small: np.ndarray) -> np.ndarray:
        import cv2

        h, w = small.shape
        if (h, w) != self._shape:  # the level is chosen once per frame size
            self._shape = (h, w)
            self.level = (finest_level(w, h, self._dis.getPatchStride(), self.cells, self.preset_level) if self.cells
                          else self.preset_level)
            while self.level and min(h >> self.level, w >> self.level) < self._dis.getPatchSize():
                self.level -= 1  # DIS's own limit: a level smaller than one patch is not estimated
        if not self.level:
            return small
        return cv2.resize(small, (w >> self.level, h >> self.level), interpolation=cv2.INTER_AREA)


def finest_level(width: int, height: int, stride: int, cells: int, coarsest: int) -> int:
    """The coarsest pyramid level, at most ``coarsest``, at which patches every ``stride`` pixels give at
    least ``cells`` cells across a ``width`` x ``height`` image, counted as the side of a square of as
    many cells, ``sqrt(across * down)`` (each level halves both); 0 when even the flow's own resolution
    gives fewer."""
    level = 0
    while level < coarsest and (width * height) ** 0.5 / 2 ** (level + 1) / stride >= cells:
        level += 1
    return level


@functools.lru_cache(maxsize=8)
def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` float32 ``[h, w]`` pixel coordinates, made once per size (read-only: every frame reuses them)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


@functools.lru_cache(maxsize=8)
def pixel_grid2(h: int, w: int) -> np.ndarray:
    """``float32 [h, w, 2]`` pixel coordinates ``(x, y)`` (:func:`pixel_grid` interleaved, read-only)."""
    g = np.ascontiguousarray(np.stack(pixel_grid(h, w), -1))
    g.flags.writeable = False
    return g


def unexplained_fraction(cur: np.ndarray, prev: np.ndarray, flow: np.ndarray, residual: float) -> float:
    """The fraction of ``cur``'s pixels (grey, on the flow's grid) whose value differs by more than ``residual``
    from ``prev`` sampled where the backward ``flow`` (same size) says they came from (replicated borders)."""
    bad = unexplained_mask(cur, prev, flow, residual)
    return float(np.count_nonzero(bad)) / bad.size


def unexplained_mask(cur: np.ndarray, prev: np.ndarray, flow: np.ndarray, residual: float) -> np.ndarray:
    """``uint8 [h, w]``, 1 where ``cur``'s pixel is not explained by ``prev`` warped through ``flow``
    (:func:`unexplained_fraction`'s pixels)."""
    import cv2

    if flow.shape[:2] != cur.shape or prev.shape != cur.shape:
        raise InputError(f"the motion check takes frames and a flow of one size, got {cur.shape}, {prev.shape} "
                         f"and a flow of {flow.shape[:2]}")
    where = cv2.add(flow, pixel_grid2(*cur.shape))
    warped = cv2.remap(prev, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    _, bad = cv2.threshold(cv2.absdiff(cur, warped), residual, 1, cv2.THRESH_BINARY)
    return bad


def local_unexplained(bad: np.ndarray, window: float) -> float:
    """The largest fraction of unexplained pixels (``bad``: :func:`unexplained_mask`) in a square window of side
    ``window`` of the frame's size (the side of a square of its area; at least 3 pixels of the grid), over
    every position of the window inside the grid (the whole-frame fraction when the window does not fit). A band
    half a window wide along the frame's edges is left out: content a pan brings in there is never explained by the
    flow (the whole-frame ``motion`` check counts it), and at 640x360 a pan of 24 px a frame filled a window there
    (the session 54 review)."""
    import cv2

    h, w = bad.shape
    k = max(3, int(round(window * (h * w) ** 0.5)))
    if k >= min(h, w):
        return float(np.count_nonzero(bad)) / bad.size
    m = (k + 1) // 2
    if 2 * m + k <= min(h, w):
        bad = bad[m:h - m, m:w - m]
    # sums over every k x k window inside the grid: the integral image's four corners
    ii = cv2.integral(bad)
    sums = ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]
    return float(sums.max()) / (k * k)


def compose_flow(flow: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """The backward displacement from the current frame to an earlier one, ``float32 [h, w, 2]``: pixel ``x``
    was at ``x + flow(x)`` in the previous frame, which was at ``p + earlier(p)`` in the earlier one, so
    ``x + flow(x) + earlier(x + flow(x))`` (``earlier`` sampled bilinearly, replicated past the border:
    the motion of the nearest pixel inside). Composing keeps coordinates in floating point: sampling a
    result once through the composed field rounds once, where warping it frame after frame rounds
    (and loses one-pixel structures) on every frame."""
    import cv2

    where = cv2.add(flow, pixel_grid2(*flow.shape[:2]))  # one two-channel map: x + flow(x)
    back = cv2.remap(earlier, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.add(back, flow, dst=back)


def full_maps(small_flow: np.ndarray, full: tuple[int, int],
              out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(map_x, map_y)`` float32 ``[H, W]``: where each full-resolution pixel of the current frame was in the
    previous one, from a backward flow computed at a smaller size (vectors rescaled to full pixels).
    ``out``: two float32 ``[H, W]`` arrays to write the maps into (a caller that warps every frame reuses
    them: fresh full-size arrays each frame cost page faults that, at 960x540, outweigh the arithmetic)."""
    import cv2

    H, W = full
    h, w = small_flow.shape[:2]
    if out is None:
        out = (np.empty((H, W), np.float32), np.empty((H, W), np.float32))
    gx, gy = pixel_grid(H, W)
    for c, (dst, grid, scale) in enumerate(((out[0], gx, W / w), (out[1], gy, H / h))):
        f = np.ascontiguousarray(small_flow[..., c])
        if (h, w) != (H, W):
            f = cv2.resize(f, (W, H), dst=dst, interpolation=cv2.INTER_LINEAR)
        cv2.scaleAdd(f, scale, grid, dst=dst)  # one fused multiply-add, in place
    return out


def flow_reach(small_flow: np.ndarray, full: tuple[int, int]) -> float:
    """An upper bound of the largest displacement, in full-resolution pixels per axis, in the maps
    :func:`full_maps` makes from ``small_flow``: each full-size vector is a bilinear (convex) mix of small
    ones times the scale, so no component exceeds the small flow's largest one times it. Reading the
    small flow costs a fraction of scanning the two full-size maps (~1 ms at 960x540)."""
    h, w = small_flow.shape[:2]
    if small_flow.size == 0:
        return 0.0
    return max(float(np.abs(small_flow[..., 0]).max()) * full[1] / w, float(np.abs(small_flow[..., 1]).max()) * full[0] / h)


class _Buffers:
    """Full-size map buffers reused from frame to frame (one pair per frame size)."""

    def __init__(self):
        self.maps: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, full: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if self.maps is None or self.maps[0].shape != tuple(full):
            self.maps = (np.empty(full, np.float32), np.empty(full, np.float32))
        return self.maps


def _shape_of(result: Any) -> tuple[int, int] | None:
    if isinstance(result, SemanticResult):
        return tuple(result.labels.shape)
    if isinstance(result, InstanceResult):
        return (result.image_shape.height, result.image_shape.width)
    if isinstance(result, PanopticResult):
        return tuple(result.segment_ids.shape)
    return None


def _resampled(result: Any) -> bool:
    """Whether carrying ``result`` resamples a raster (labels, masks, segment ids), which composing the
    maps keeps to one resampling; box-only instances are moved by the flow at their centres instead,
    frame to frame, which follows them wherever they go (no rounding either)."""
    return not isinstance(result, InstanceResult) or result.has_masks


def warp_result(result: Any, maps: tuple[np.ndarray, np.ndarray], reach: float | None = None) -> Any:
    """``result`` (of the previous frame) carried to the current frame by ``maps`` (:func:`full_maps`).
    ``reach``: a bound of the maps' largest displacement (:func:`flow_reach`), else measured on them."""
    if isinstance(result, SemanticResult):
        return warp_semantic(result, maps)
    if isinstance(result, InstanceResult):
        return warp_instances(result, maps, reach)
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


def warp_instances(result: InstanceResult, maps: tuple[np.ndarray, np.ndarray], reach: float | None = None) -> InstanceResult:
    """Each mask warped inside a box around it (its bounds grown by the largest displacement in the frame,
    ``reach`` where the caller knows a bound of it, else measured over the whole maps);
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
    # the largest displacement anywhere bounds how far any object can have moved: a pixel takes its
    # value from at most that far away (measured over the whole frame, not around each box: composed
    # over several frames, an object can have moved further than its own size plus any fixed margin)
    if reach is None:
        reach = max(float(np.abs(mx - np.arange(W, dtype=np.float32)).max(initial=0.0)),
                    float(np.abs(my - np.arange(H, dtype=np.float32)[:, None]).max(initial=0.0))) if n else 0.0
    m = int(np.ceil(reach)) + 2
    for i, (sx0, sy0, _, _, src) in enumerate(result.iter_mask_crops()):
        ys, xs = np.nonzero(src.any(1))[0], np.nonzero(src.any(0))[0]
        if len(ys) == 0:
            continue
        x0, x1, y0, y1 = sx0 + int(xs[0]), sx0 + int(xs[-1]) + 1, sy0 + int(ys[0]), sy0 + int(ys[-1]) + 1
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
