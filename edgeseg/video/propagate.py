"""Classical video object mask propagation: a first-frame prompt carried through a video on the CPU.

    prop = Propagator()                          # PropagatorConfig() defaults; explicit per-source state
    first = prop.start(frame0, prompt_ids)       # ids 1..K (0 background); TrackResult of frame 0
    for frame in frames:
        result = prop.step(frame)                # TrackResult: masks bool [N, H, W], object_ids, scores
        prop.last_info                           # StepInfo: cut detected, objects lost / re-detected
    prop.add_prompt(frame, ids)                  # mid-stream: new objects, or replace some
    prop.reset()                                 # discontinuity (seek, new file): forget everything

Frames are processed at a working size near ``work_long_side`` (an integer downscale: 854x480 is
processed at 427x240) and the masks are returned at the frames' size (soft masks upsampled); the
pixel settings of :class:`PropagatorConfig` are at the working size. Optionally (off by default:
it did not hold on held-out composites), when every prompted object is small (under
``small_object_frac`` of the frame) the working size is doubled, and the flow is
computed at that size only on a crop around each object (coarse elsewhere:
:func:`~edgeseg.video.flow.refined_flow`). Per frame and object (each
component measured on DAVIS by ``tools/bench/vos.py --ablate``):

1. **Flow**: DIS backward flow (:mod:`edgeseg.video.flow`), preset medium, 2 refinement iterations.
2. **Object motion**: the object's soft mask is warped with its *own* motion (interior flow spread
   outwards), not with the raw flow, which drags background along trailing edges.
3. **Motion veto**: pixels that move like the camera (a RANSAC homography of the background
   flow) while the object moves otherwise lose evidence, inside the mask too (``veto_interior``:
   the object's motion there is that of its pixels that move unlike the camera, so background
   taken in on earlier frames is dropped instead of kept for good).
3b. **Growth where moving** (``grow_moving``): within ``grow_px`` of the warped mask, pixels that
   move unlike the camera get colour evidence, and the warp's evidence against them is weakened by
   how reliable that motion cue is around this object (``1 - 2 x`` the share of the ring just
   outside it that moves unlike the camera, measured on the first frame after the prompt): parts
   the warp lost (fast thin limbs) come back; around water or a moving shadow nothing changes.
4. **Colour**, in a band of ``band_px`` around the warped boundary (and wherever the warp is unsure,
   and where an object at the border enters the frame): a bilateral grid of the previous frame
   (local colours) and the prompt's colour model (the re-anchor), the latter weighted by its
   per-tile reliability (:mod:`edgeseg.video.appearance`).
5. **Refinement**: evidence fused as log-odds, a guided filter on the grey frame, components not
   supported by the warped mask dropped, small holes filled (:mod:`edgeseg.video.refine`).

Everything is done inside a box around each object, so cost follows object size. State is bounded
(one soft mask and final mask per object, the previous frame): memory stays flat over any length.
An object whose mask vanishes (it left the frame, or is hidden), or whose mask no longer has the
prompt's colours (a mask left behind on the background), is *lost*: its prompt colour model is kept
and each later frame is searched for a blob that matches it in colour and size (re-detection). A
scene cut (the frame's colour histogram changes abruptly) is flagged in :attr:`Propagator.last_info`;
every object is then lost and searched for on the new shot.

A prompt must hold at least one object pixel (:class:`~edgeseg.errors.InputError` otherwise); a
prompt of another size than the frames is rescaled, with a warning, when its aspect ratio is the
frames' (within 1 %), and refused otherwise (:func:`~edgeseg.video.prompt.prompt_ids`).
"""
from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import ImageShape, TrackResult
from .appearance import GlobalColour, colour_index, local_colour, logit, reliability
from .flow import (
    PRESETS, BackwardFlow, FlowField, background_homography, homography_flow, independent_flow, motion_reliability,
    motion_veto, object_flow, photometric, refined_flow,
)
from .prompt import frame_image, prompt_ids
from .refine import boundary_band, disk_kernel, fill_holes, guided_filter, keep_supported


_WARP_FLOOR = float(logit(np.zeros(1, np.float32))[0])  # log-odds of a pixel the warped mask does not reach


@dataclass(frozen=True)
class PropagatorConfig:
    """Settings of :class:`Propagator`; each boolean switches one component (for ablations)."""

    work_long_side: int = 432            # frames are processed at about this longer side (0: full size); px below are at it
    small_object_frac: float = 0.0       # every object prompted on less of the frame: work at twice that size, with
    #                                      the flow at full detail around the objects and coarse elsewhere. Off (0):
    #                                      0.03 gained 3.3 J&F on the composites it was chosen on, lost 0.5 on fresh ones
    fine_margin_px: int = 48             # the fine flow's crop: each object's box plus this each way
    flow_preset: str = "medium"          # DIS preset: ultrafast | fast | medium
    flow_scale: float = 1.0              # flow resolution / working resolution
    flow_refinement_iterations: int = 2  # DIS variational refinement (the presets use 5 at medium)
    object_flow: bool = True             # warp with the object's own motion (else the raw flow)
    interior_erode_px: int = 2           # the object's interior: the warped mask eroded by this
    object_flow_sigma: float = 5.0       # px, how far interior motion is spread outwards
    motion_veto: bool = True             # background-like motion counts against the object
    motion_sigma_px: float = 1.0
    motion_cap: float = 3.0              # most negative log-odds the veto adds
    veto_interior: bool = True           # the veto also inside the mask: against the object's independently moving part
    camera_tol_px: float = 1.0           # flow px (at the flow's resolution) within which a pixel moves like the camera
    grow_moving: bool = True             # colour evidence also near the mask where pixels move unlike the camera
    grow_px: int = 24                    # how far from the warped mask (its outer half: where reliability is measured)
    grow_reliability: bool = True        # there, the warp's evidence against the object weakened as far as motion is reliable
    grow_rel_fixed: bool = True          # reliability measured once per object, on its first frame after the prompt
    photometric: bool = False            # which motion (object's, camera's) explains each pixel's brightness
    photo_sigma: float = 10.0            # grey levels
    photo_cap: float = 3.0               # log-odds bounds of that evidence (against, for the object)
    photo_pos_cap: float = 3.0
    band_px: int = 4                     # colour evidence within this distance of the warped boundary
    local_colour: bool = True
    local_cell_px: int = 8
    local_bits: int = 2
    colour_stride: int = 1               # colour evidence on every n-th pixel (each way) of the band
    global_colour: bool = True           # the prompt's colours too (the re-anchor; weighted by reliability)
    global_bits: int = 4
    global_weight: float = 1.0
    reliability_gamma: float = 2.0
    refine: bool = True                  # guided filter on the fused probability
    guided_radius: int = 2
    guided_eps: float = 1e-3
    guided_subsample: int = 1            # > 1: the fast guided filter (coefficients at 1/n resolution)
    components: bool = True              # drop components the warped mask does not support
    fill_holes: float = 0.0              # fill holes smaller than this fraction of the object (0: off)
    margin_px: int = 16                  # work box = last box moved by the flow + margin (+10 % of size)
    min_area_px: int = 4                 # a smaller mask means the object is lost
    cut_threshold: float = 0.5           # Bhattacharyya distance of frame colour histograms = a cut
    presence_min_similarity: float = 0.6 # below: the mask's colours are not the object's any more, it is lost
    presence_min_area_px: int = 256      # (a smaller mask's colour histogram is too noisy to judge)
    redetect: bool = True
    redetect_min_posterior: float = 0.7  # mean prompt-colour posterior of a re-detected blob
    redetect_min_similarity: float = 0.6 # Bhattacharyya coefficient with the prompt's colours
    redetect_min_area_px: int = 64       # smaller blobs are not trusted to be the object
    redetect_reach: float | None = None  # set: an object lost inside the frame is searched for near where it
    #   was going: within its last box's diagonal x (1 + reach x frames since it was seen) of its last centre
    #   moved on by its velocity (None: anywhere; after a cut, or lost at the border, always anywhere). Off by
    #   default: it keeps a look-alike far away from being taken, but on the composites the mask had
    #   usually drifted before it was lost, so the gate searched in the wrong place (docs/video.md)

    def __post_init__(self) -> None:
        if self.flow_preset not in PRESETS:
            raise InputError(f"PropagatorConfig.flow_preset {self.flow_preset!r} is not one of {', '.join(PRESETS)}")
        if not 0.05 <= self.flow_scale <= 1.0:
            raise InputError(f"PropagatorConfig.flow_scale must be in [0.05, 1], got {self.flow_scale}")
        for name in ("band_px", "local_cell_px", "guided_radius", "margin_px", "interior_erode_px", "colour_stride"):
            if getattr(self, name) < 1:
                raise InputError(f"PropagatorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.local_bits <= 6 or not 1 <= self.global_bits <= 6:
            raise InputError("PropagatorConfig colour bits must be in 1..6")


@dataclass(frozen=True)
class StepInfo:
    """What happened on the last frame besides the masks."""

    index: int                           # frame number since start() (the prompt frame is 0)
    cut: bool = False                    # a scene cut was detected before this frame
    lost: tuple[int, ...] = ()           # ids lost on this frame (mask vanished, or the cut)
    redetected: tuple[int, ...] = ()     # ids found again on this frame
    missing: tuple[int, ...] = ()        # ids without a mask on this frame


@dataclass
class _Object:
    """Per-object state: bounded, whatever the video length."""

    id: int
    colour: GlobalColour
    prob: np.ndarray                     # float32 [H, W] soft mask on the last frame
    mask: np.ndarray                     # bool [H, W] final mask on the last frame
    area: int = 0
    last_area: int = 0                   # area when last seen whole (re-detection expects a similar size)
    prompt_area: int = 0                 # area on the prompt (the other size re-detection accepts)
    score: float = 1.0
    lost: bool = False
    box: tuple[int, int, int, int] | None = field(default=None)
    motion_rel: float | None = None      # how reliable independent motion is around the object (measured after the prompt)
    seen_box: tuple[int, int, int, int] | None = None  # box on the last frame it was seen (None: place unknown)
    seen_at: int = 0                     # that frame's index
    velocity: tuple[float, float] = (0.0, 0.0)  # its box centre's motion per frame (smoothed)


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _grow(box: tuple[float, float, float, float], margin: float, shape: ImageShape) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (max(0, int(math.floor(x0 - margin))), max(0, int(math.floor(y0 - margin))),
            min(shape.width, int(math.ceil(x1 + margin))), min(shape.height, int(math.ceil(y1 + margin))))


def working_shape(shape: ImageShape, long_side: int) -> ImageShape:
    """The size a frame is processed at: its size divided by the integer ``n`` that brings the longer
    side nearest ``long_side`` (854x480 -> 427x240; 1920x1080 -> 480x270; 0: the frame's own size).
    An integer factor makes the area downscale exact and fast."""
    n = max(1, round(max(shape.height, shape.width) / long_side)) if long_side else 1
    if n == 1:
        return shape
    return ImageShape(max(8, shape.height // n), max(8, shape.width // n))


def _frame_histogram(ycc: np.ndarray) -> np.ndarray:
    """Normalised 512-bin colour histogram of the frame (sampled on a ~64x48 grid), for cut detection."""
    sy, sx = max(1, ycc.shape[0] // 48), max(1, ycc.shape[1] // 64)
    h = np.bincount(colour_index(ycc[sy // 2::sy, sx // 2::sx], 3).ravel(), minlength=512).astype(np.float64)
    return h / h.sum()


class Propagator:
    """Propagates prompt masks through a video. One instance per video source (it holds that source's state)."""

    def __init__(self, config: PropagatorConfig | None = None):
        self.config = config or PropagatorConfig()
        self.reset()

    # -- public API --------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every object and the previous frame (call it on a seek, a reconnect, a new file)."""
        self._objects: dict[int, _Object] = {}
        self._frame_shape: ImageShape | None = None  # the frames' size (results are at this size)
        self._shape: ImageShape | None = None  # the working size (all state is at this size)
        self._prev_small: np.ndarray | None = None
        self._prev_ycc: np.ndarray | None = None
        self._prev_hist: np.ndarray | None = None
        self._flow: BackwardFlow | None = None
        self._coarse: BackwardFlow | None = None  # set when small objects made the working size finer
        self._index = -1
        self.last_info: StepInfo | None = None

    @property
    def started(self) -> bool:
        return self._shape is not None

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._objects))

    def start(self, frame: Any, prompt: Any) -> TrackResult:
        """Begin on ``frame`` with ``prompt`` (object ids, see :func:`~edgeseg.video.prompt.prompt_ids`);
        returns the prompt frame's result: the prompt itself, pixel for pixel (an object too small to track
        keeps its pixels here, and is lost on the next frame)."""
        import cv2

        self.reset()
        rgb = frame_image(frame)
        cfg = self.config
        self._frame_shape = ImageShape.of(rgb)
        self._shape = working_shape(self._frame_shape, cfg.work_long_side)
        ids = prompt_ids(prompt, self._frame_shape)
        self._flow = BackwardFlow(cfg.flow_preset, cfg.flow_scale, cfg.flow_refinement_iterations)
        self._coarse = None
        finer = working_shape(self._frame_shape, 2 * cfg.work_long_side) if cfg.work_long_side else self._shape
        areas = np.bincount(ids.ravel())[1:]
        if finer != self._shape and areas.max() < cfg.small_object_frac * ids.size:
            # only small objects: twice the working size, the flow fine around them (refined_flow), coarse
            # elsewhere (not with a large object too: at twice the size it is slower and less accurate)
            self._coarse = BackwardFlow(cfg.flow_preset, cfg.flow_scale * self._shape.width / finer.width,
                                        cfg.flow_refinement_iterations)
            self._shape = finer
        self._index = 0
        rgb = self._to_work(rgb)
        ycc = self._add_objects(rgb, ids)
        self._remember(ycc, self._flow.small_gray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)))
        self.last_info = StepInfo(0)
        return self._prompted(self.result(), ids)

    def add_prompt(self, frame: Any, prompt: Any) -> TrackResult:
        """Prompt objects on ``frame`` mid-stream: an id already tracked is replaced, a new id is added;
        the other objects are propagated onto ``frame`` as by :meth:`step`. Before :meth:`start`, it starts."""
        if not self.started:
            return self.start(frame, prompt)
        rgb = self._check(frame)
        full = prompt_ids(prompt, self._frame_shape)
        ids = self._ids_to_work(full)
        keep = [k for k in self._objects if k not in set(np.unique(ids).tolist())]
        info, ycc, small = self._propagate(rgb, only=keep)
        self._add_objects(rgb, ids, ycc)
        covered = []
        for k in keep:  # prompted pixels belong to the prompted objects
            o = self._objects[k]
            if o.lost:
                continue
            o.mask &= ids == 0
            o.prob = np.where(ids == 0, o.prob, 0.0).astype(np.float32)
            self._update_area(o)
            if o.box is None or o.area < max(1, self.config.min_area_px):  # drawn over by the new prompt: lost
                self._lose(o)  # (left live without a box, it crashed the next frame's tracking)
                covered.append(o.id)
        if covered:
            info = dataclasses.replace(info, lost=tuple(sorted({*info.lost, *covered})),
                                       missing=tuple(sorted({*info.missing, *covered})))
        self._remember(ycc, small)
        self.last_info = info
        return self._prompted(self.result(), full)

    def _prompted(self, result: TrackResult, ids: np.ndarray) -> TrackResult:
        """``result`` with each prompted object's mask the prompt's own pixels at the frame's size (the working
        size's mask, upsampled, moved its edges by a pixel or two: the first frame a user reuses was not their
        prompt), and the prompted pixels taken from every other object."""
        prompted = ids > 0
        masks = result.masks.copy()
        for i, k in enumerate(result.object_ids.tolist()):
            mine = ids == k
            masks[i] = mine if mine.any() else masks[i] & ~prompted
        return TrackResult(masks=masks, object_ids=result.object_ids, scores=result.scores)

    def step(self, frame: Any) -> TrackResult:
        """Propagate every object onto the next ``frame`` and return its masks."""
        if not self.started:
            raise InputError("Propagator.step() before start()", fix="call start(first_frame, prompt_ids) first")
        rgb = self._check(frame)
        self.last_info, ycc, small = self._propagate(rgb, only=list(self._objects))
        self._remember(ycc, small)
        return self.result()

    def result(self) -> TrackResult:
        """The masks of the last frame at the frames' size, in object id order (a lost object has an
        empty mask and score 0). From a reduced working size, each soft mask is upsampled bilinearly
        and a pixel goes to the most probable object above 0.5."""
        import cv2

        ids = self.object_ids
        fs = self._frame_shape
        h, w = (fs.height, fs.width) if fs else (0, 0)
        masks = np.zeros((len(ids), h, w), bool)
        scores = np.zeros(len(ids), np.float32)
        up = fs is not None and fs != self._shape
        probs = []
        # an integer scale (1920x1080 from 480x270): each soft mask is upsampled only around where it is not
        # zero (2 working px of zeros each way; outside, bilinear interpolation of zeros gives 0 and no pixel
        # can pass 0.5), the same values as the whole frame's resize
        n = w // self._shape.width if up else 1
        crop = up and n * self._shape.width == w and n * self._shape.height == h
        for i, k in enumerate(ids):
            o = self._objects[k]
            scores[i] = 0.0 if o.lost else o.score
            if not up:
                masks[i] = o.mask
            elif o.area:  # the soft mask, made consistent with the final mask at 0.5, upsampled
                soft = np.where(o.mask, np.maximum(o.prob, 0.501), np.minimum(o.prob, 0.499)).astype(np.float32)
                if crop:
                    b = _box(soft > 0)
                    if b is None:
                        continue
                    sh, sw = soft.shape
                    x0, y0, x1, y1 = max(0, b[0] - 2), max(0, b[1] - 2), min(sw, b[2] + 2), min(sh, b[3] + 2)
                    up_ = cv2.resize(soft[y0:y1, x0:x1], ((x1 - x0) * n, (y1 - y0) * n), interpolation=cv2.INTER_LINEAR)
                    probs.append((i, up_, (x0 * n, y0 * n, x1 * n, y1 * n)))
                else:
                    probs.append((i, cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0, w, h)))
        if not probs:
            return TrackResult(masks=masks, object_ids=np.asarray(ids, np.int64), scores=scores)
        ux0, uy0 = min(p[2][0] for p in probs), min(p[2][1] for p in probs)
        ux1, uy1 = max(p[2][2] for p in probs), max(p[2][3] for p in probs)
        full = []
        for i, p, (x0, y0, x1, y1) in probs:  # each on the union of the boxes (zero outside its own)
            if (x0, y0, x1, y1) != (ux0, uy0, ux1, uy1):
                q = np.zeros((uy1 - uy0, ux1 - ux0), np.float32)
                q[y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] = p
                p = q
            full.append((i, p))
        if len(full) == 1:
            masks[full[0][0], uy0:uy1, ux0:ux1] = full[0][1] > 0.5
            return TrackResult(masks=masks, object_ids=np.asarray(ids, np.int64), scores=scores)
        # the first most probable object (argmax's rule) by a running maximum: an argmax along the first axis
        # of a [K, H, W] stack is a strided reduction, 100 ms a 4K frame
        top = full[0][1].copy()
        owner = np.zeros(top.shape, np.uint8 if len(full) <= 256 else np.uint16)
        for j in range(1, len(full)):
            p = full[j][1]
            np.copyto(owner, j, where=p > top)
            np.maximum(top, p, out=top)
        for j, (i, p) in enumerate(full):
            np.logical_and(owner == j, p > 0.5, out=masks[i, uy0:uy1, ux0:ux1])
        return TrackResult(masks=masks, object_ids=np.asarray(ids, np.int64), scores=scores)

    # -- frame bookkeeping -------------------------------------------------------------------------------------
    def _check(self, frame: Any) -> np.ndarray:
        """The frame at the working size (an InputError if its size is not the video's)."""
        rgb = frame_image(frame)
        fs = self._frame_shape
        if ImageShape.of(rgb) != fs:
            raise InputError(f"frame is {rgb.shape[1]}x{rgb.shape[0]} but this video started at "
                             f"{fs.width}x{fs.height}", fix="call reset() and start() for a new source")
        return self._to_work(rgb)

    def _to_work(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        if ImageShape.of(rgb) == self._shape:
            return rgb
        return cv2.resize(rgb, (self._shape.width, self._shape.height), interpolation=cv2.INTER_AREA)

    def _ids_to_work(self, ids: np.ndarray) -> np.ndarray:
        """Object ids at the working size; an object too small to survive nearest-neighbour keeps one pixel."""
        import cv2

        if ImageShape.of(ids) == self._shape:
            return ids
        work = cv2.resize(ids.astype(np.float32), (self._shape.width, self._shape.height),
                          interpolation=cv2.INTER_NEAREST).astype(np.int32)
        for k in set(np.unique(ids).tolist()) - set(np.unique(work).tolist()):
            ys, xs = np.nonzero(ids == k)
            work[min(int(ys.mean() * self._shape.height / ids.shape[0]), self._shape.height - 1),
                 min(int(xs.mean() * self._shape.width / ids.shape[1]), self._shape.width - 1)] = k
        return work

    def _remember(self, ycc: np.ndarray, small: np.ndarray) -> None:
        self._prev_small = small
        self._prev_ycc = ycc
        self._prev_hist = _frame_histogram(ycc)

    def _add_objects(self, rgb: np.ndarray, ids: np.ndarray, ycc: np.ndarray | None = None) -> np.ndarray:
        """New objects from an id map (frame size or working size) on the working-size frame ``rgb``."""
        import cv2

        ids = self._ids_to_work(ids)
        ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb) if ycc is None else ycc
        for k in np.unique(ids):
            if k == 0:
                continue
            m = ids == k
            o = _Object(int(k), GlobalColour(ycc, m, self.config.global_bits), m.astype(np.float32), m)
            self._update_area(o)
            o.last_area = o.prompt_area = o.area
            self._objects[int(k)] = o
        return ycc

    def _update_area(self, o: _Object) -> None:
        o.area = int(np.count_nonzero(o.mask))
        o.box = _box(o.mask)
        if o.box is not None and self._inside(o.box):
            o.last_area = o.area
        self._seen(o)

    def _seen(self, o: _Object) -> None:
        """Remember where the object was seen on this frame, and how fast its centre moves."""
        if o.box is None:
            return
        if o.seen_box is not None and o.seen_at == self._index - 1:
            (px, py), (cx, cy) = _centre(o.seen_box), _centre(o.box)
            o.velocity = (0.5 * o.velocity[0] + 0.5 * (cx - px), 0.5 * o.velocity[1] + 0.5 * (cy - py))
        elif o.seen_at != self._index:
            o.velocity = (0.0, 0.0)
        o.seen_box, o.seen_at = o.box, self._index

    # -- one frame ---------------------------------------------------------------------------------------------
    def _propagate(self, rgb: np.ndarray, only: list[int]) -> tuple[StepInfo, np.ndarray, np.ndarray]:
        """Move the objects ``only`` onto ``rgb``; returns what happened, the frame in YCrCb and its
        grey image at the flow's resolution."""
        import cv2

        self._index += 1
        cfg = self.config
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
        small = self._flow.small_gray(gray)
        hist = _frame_histogram(ycc)
        cut = 1.0 - float(np.sqrt(hist * self._prev_hist).sum()) > cfg.cut_threshold
        lost, found = [], []
        tracked = [self._objects[k] for k in only if not self._objects[k].lost]
        if cut:
            for o in tracked:
                self._lose(o)
                lost.append(o.id)
            for k in only:  # a new shot: where each object was says nothing about where it is
                self._objects[k].seen_box = None
        elif tracked:
            flow, camera_flow = self._frame_flow(small, tracked)
            homography = self._camera(flow, camera_flow, tracked) if cfg.motion_veto or cfg.photometric else None
            guide = gray.astype(np.float32) * (1.0 / 255.0)
            for o in tracked:
                self._track(o, flow, homography, guide, ycc)
                gone = o.area >= cfg.presence_min_area_px and self._presence(o, ycc) < cfg.presence_min_similarity
                if o.area < cfg.min_area_px or gone:
                    self._lose(o)
                    lost.append(o.id)
        if cfg.redetect:  # not an object that just vanished without a cut: it is not back yet
            for k in only:
                o = self._objects[k]
                if o.lost and (cut or o.id not in lost) and self._redetect(o, ycc, gray):
                    found.append(o.id)
        for o in self._resolve_overlaps([self._objects[k] for k in only]):
            if o.id in found:  # re-detected on top of a better object: still lost
                found.remove(o.id)
            elif o.id not in lost:
                lost.append(o.id)
        missing = tuple(k for k in sorted(only) if self._objects[k].lost)
        return StepInfo(self._index, cut, tuple(sorted(lost)), tuple(sorted(found)), missing), ycc, small

    def _frame_flow(self, small: np.ndarray, tracked: list[_Object]):
        """This frame's backward flow (:class:`~edgeseg.video.flow.FlowField`): DIS on the whole frame, or
        with small objects, fine on a crop around each and coarse elsewhere. Returns (the flow, the flow to
        fit the camera's motion on: the same, or the coarse one, where a homography fit is cheaper)."""
        shape = (self._shape.height, self._shape.width)
        if self._coarse is None:
            flow = self._flow(small, self._prev_small, shape)
            return flow, flow
        sh, sw = small.shape
        fx, fy = sw / self._shape.width, sh / self._shape.height
        boxes = []
        for o in tracked:
            if o.box is None:
                continue
            x0, y0, x1, y1 = o.box
            m = self.config.fine_margin_px
            boxes.append((max(0, int((x0 - m) * fx)), max(0, int((y0 - m) * fy)),
                          min(sw, int(np.ceil((x1 + m) * fx))), min(sh, int(np.ceil((y1 + m) * fy)))))
        f, coarse = refined_flow(self._coarse, self._flow, small, self._prev_small, boxes)
        return FlowField(f.small, shape), FlowField(coarse.small, shape)

    def _presence(self, o: _Object, ycc: np.ndarray) -> float:
        """How much the mask's colours still look like the prompt's (Bhattacharyya coefficient, 2 bits per
        channel): a mask left on the background after its object has gone scores low."""
        x0, y0, x1, y1 = o.box
        pixels = ycc[y0:y1, x0:x1][o.mask[y0:y1, x0:x1]]
        return o.colour.similarity(pixels[:: max(1, len(pixels) // 4096)])

    def _lose(self, o: _Object) -> None:
        o.lost = True
        o.motion_rel = None  # measured again after re-detection (the surroundings may differ)
        o.mask = np.zeros_like(o.mask)
        o.prob = np.zeros_like(o.prob)
        o.area, o.box, o.score = 0, None, 0.0

    def _camera(self, flow, fit, tracked: list[_Object]) -> np.ndarray | None:
        """The camera's motion as a homography on ``flow``'s grid, fitted on ``fit``'s (the same flow, or a
        coarser one of the same frame pair: pixel centres map as ``x_fine = s * x_coarse + (s - 1) / 2``)."""
        H = self._fit_camera(fit, tracked)
        if H is None or fit.small.shape == flow.small.shape:
            return H
        sx, sy = flow.small.shape[1] / fit.small.shape[1], flow.small.shape[0] / fit.small.shape[0]
        t = np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])
        return t @ H @ np.linalg.inv(t)

    def _fit_camera(self, flow, tracked: list[_Object]) -> np.ndarray | None:
        import cv2

        sh, sw = flow.small.shape[:2]
        objects = np.zeros((sh, sw), np.uint8)
        for o in tracked:
            objects |= cv2.resize(o.mask.view(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST)
        objects = cv2.dilate(objects, disk_kernel(max(2, round(self.config.margin_px * flow.scale / 2))))
        return background_homography(flow.small, objects > 0)

    def _track(self, o: _Object, flow, homography: np.ndarray | None, guide: np.ndarray, ycc: np.ndarray) -> None:
        """Move object ``o`` from the previous frame onto this one (updates its prob, mask, area, box, score)."""
        import cv2

        cfg = self.config
        box = self._work_box(o, flow)
        bx0, by0, bx1, by1 = box
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            self._set(o, box, np.zeros((by1 - by0, bx1 - bx0), bool), None)
            return
        xs = np.arange(bx0, bx1, dtype=np.float32)[None, :]
        ys = np.arange(by0, by1, dtype=np.float32)[:, None]
        own, veto, background, moving = self._motion(o, flow, homography, box)
        mx, my = xs + own[..., 0], ys + own[..., 1]
        warped = cv2.remap(o.prob, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        support = warped > 0.5
        evidence = logit(warped)
        extra = None
        if cfg.grow_moving and moving is not None and support.any():
            # near the warped mask, moving unlike the camera: colour evidence there too, and (as far as
            # independent motion has proved reliable around this object) a weaker warp prior against it
            near = cv2.dilate(support.view(np.uint8), disk_kernel(cfg.grow_px)) > 0
            extra = moving & near & ~support
            if cfg.grow_reliability:
                if o.motion_rel is None or not cfg.grow_rel_fixed:  # the outer half of the reach
                    inner = cv2.dilate(support.view(np.uint8), disk_kernel(max(1, cfg.grow_px // 2))) > 0
                    o.motion_rel = motion_reliability(moving, near & ~inner)
                if extra.any():
                    evidence[extra] = np.maximum(evidence[extra], (1.0 - o.motion_rel) * _WARP_FLOOR)
        if veto is not None:
            evidence += veto
        if cfg.photometric and background is not None:
            evidence += photometric(ycc[by0:by1, bx0:bx1, 0], self._prev_ycc[..., 0], (mx, my),
                                    (xs + background[..., 0], ys + background[..., 1]), cfg.photo_sigma,
                                    cfg.photo_cap, cfg.photo_pos_cap)
        if (cfg.local_colour or cfg.global_colour) and support.any():
            self._colour_evidence(o, evidence, warped, mx, my, ycc[by0:by1, bx0:bx1], extra)
        prob = 1.0 / (1.0 + np.exp(-evidence))
        if cfg.refine:
            prob = np.clip(guided_filter(guide[by0:by1, bx0:bx1], prob, cfg.guided_radius, cfg.guided_eps,
                                         cfg.guided_subsample), 0.0, 1.0)
        mask = prob > 0.5
        if cfg.components:
            mask = keep_supported(mask, support)
        if cfg.fill_holes > 0 and mask.any():
            mask, holes = fill_holes(mask, cfg.fill_holes)
            prob = np.where(holes, np.maximum(prob, 0.75), prob)
        o.score = float(prob[mask].mean()) if mask.any() else 0.0
        self._set(o, box, mask, prob * (cv2.dilate(mask.view(np.uint8), np.ones((5, 5), np.uint8)) > 0))

    def _work_box(self, o: _Object, flow) -> tuple[int, int, int, int]:
        """Where to look for ``o`` on this frame: its last box moved by its mean flow, plus a margin."""
        shape = self._shape
        x0, y0, x1, y1 = o.box
        step = max(1, min(x1 - x0, y1 - y0) // 16)
        py, px = np.nonzero(o.mask[y0:y1:step, x0:x1:step])
        if not len(py):  # scattered pixels the sampling grid misses (their mean flow was NaN: a crash): every one
            step = 1
            py, px = np.nonzero(o.mask[y0:y1, x0:x1])
        if not len(py):
            return _grow((x0, y0, x1, y1), self.config.margin_px + 0.1 * max(x1 - x0, y1 - y0), shape)
        sh, sw = flow.small.shape[:2]
        sy, sx = sh / shape.height, sw / shape.width
        shift = flow.small[np.minimum(((py * step + y0) * sy).astype(int), sh - 1),
                           np.minimum(((px * step + x0) * sx).astype(int), sw - 1)].mean(0) / np.array([sx, sy])
        margin = self.config.margin_px + 0.1 * max(x1 - x0, y1 - y0)
        return _grow((x0 - shift[0], y0 - shift[1], x1 - shift[0], y1 - shift[1]), margin, shape)

    def _set(self, o: _Object, box: tuple[int, int, int, int], mask: np.ndarray, prob: np.ndarray | None) -> None:
        """The object's new mask (and soft mask) given inside ``box``; zero elsewhere."""
        x0, y0, x1, y1 = box
        o.mask = np.zeros_like(o.mask)
        o.mask[y0:y1, x0:x1] = mask
        o.prob = np.zeros_like(o.prob)
        if prob is not None:
            o.prob[y0:y1, x0:x1] = prob
        o.area = int(np.count_nonzero(mask))
        inner = _box(mask)
        o.box = None if inner is None else (inner[0] + x0, inner[1] + y0, inner[2] + x0, inner[3] + y0)
        if o.box is not None and self._inside(o.box):
            o.last_area = o.area
        self._seen(o)

    def _inside(self, box: tuple[int, int, int, int]) -> bool:
        """Whether ``box`` does not touch the frame's border (the object is seen whole)."""
        return box[0] > 0 and box[1] > 0 and box[2] < self._shape.width and box[3] < self._shape.height

    def _motion(self, o: _Object, flow, homography: np.ndarray | None, box: tuple[int, int, int, int]):
        """The object's motion on the full-resolution ``box``, computed at the flow's resolution.

        Returns (own flow ``[h, w, 2]`` full-resolution px, motion-veto log-odds ``[h, w]`` or None,
        camera flow ``[h, w, 2]`` or None (only when the photometric test needs it), bool ``[h, w]``
        "moves unlike the camera" or None (only for ``grow_moving``)).
        """
        import cv2

        cfg = self.config
        sbox = flow.small_box(box)
        sx0, sy0, sx1, sy1 = sbox
        f = flow.small[sy0:sy1, sx0:sx1]
        sh, sw = flow.small.shape[:2]
        ax, ay = self._shape.width / sw, self._shape.height / sh  # full px per small px
        need_interior = cfg.object_flow or cfg.motion_veto
        own, veto, background, moving = f, None, None, None
        interior = None
        if need_interior:
            # where each small pixel was, in full-resolution coordinates, and the object there
            px = ((np.arange(sx0, sx1, dtype=np.float32) + 0.5) * ax - 0.5)[None, :] + f[..., 0] * ax
            py = ((np.arange(sy0, sy1, dtype=np.float32) + 0.5) * ay - 0.5)[:, None] + f[..., 1] * ay
            first = cv2.remap(o.prob, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            radius = max(1, round(cfg.interior_erode_px / ax))
            interior = cv2.erode((first > 0.5).astype(np.uint8), disk_kernel(radius)) > 0
            if cfg.object_flow and interior.any():
                own = object_flow(f, interior, cfg.object_flow_sigma / ax, factor=2)
        if homography is not None and interior is not None and interior.any():
            bg = homography_flow(homography, sbox, 1.0)
            if cfg.motion_veto:
                if cfg.veto_interior:
                    mine = independent_flow(f, interior, bg, cfg.camera_tol_px, cfg.object_flow_sigma / ax)
                else:
                    mine = own if cfg.object_flow else object_flow(f, interior, cfg.object_flow_sigma / ax, factor=2)
                veto = flow.to_full(motion_veto(f, mine, bg, cfg.motion_sigma_px / ax, cfg.motion_cap), sbox, box)
            if cfg.grow_moving:
                d = f - bg
                unlike = (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] > cfg.camera_tol_px ** 2).astype(np.float32)
                moving = flow.to_full(unlike, sbox, box) > 0.5
            if cfg.photometric:
                background = flow.full_units(flow.to_full(bg, sbox, box))
        return flow.full_units(flow.to_full(np.ascontiguousarray(own), sbox, box)), veto, background, moving

    def _colour_evidence(self, o: _Object, evidence: np.ndarray, warped: np.ndarray, mx: np.ndarray,
                         my: np.ndarray, ycc_box: np.ndarray, extra: np.ndarray | None = None) -> None:
        """Add colour log-odds to ``evidence`` in the band around the warped boundary (in place)."""
        cfg, shape = self.config, self._shape
        support = warped > 0.5
        band = boundary_band(support, cfg.band_px) | ((warped > 0.2) & (warped < 0.8))  # and where the warp is unsure
        if o.box is not None and not self._inside(o.box):  # touching the border: what enters the frame
            outside = (mx < 0) | (my < 0) | (mx > shape.width - 1) | (my > shape.height - 1)
            band |= boundary_band(support, 4 * cfg.band_px) & outside
        if extra is not None:  # near the mask and moving unlike the camera
            band |= extra
        st = cfg.colour_stride  # evidence on every st-th pixel of the band, spread to its st x st block
        bys, bxs = np.nonzero(band[::st, ::st])
        if len(bys) == 0:
            return
        by, bx = bys * st, bxs * st
        sx, sy = mx[by, bx], my[by, bx]
        cur = ycc_box[by, bx]
        p_global = o.colour(cur)
        add = np.zeros(len(by), np.float32)
        # the previous frame's region these pixels come from
        cell = cfg.local_cell_px
        src = _grow((float(sx.min()), float(sy.min()), float(sx.max()) + 1, float(sy.max()) + 1), cell, shape)
        if cfg.local_colour and src[2] > src[0] and src[3] > src[1]:
            p_local = local_colour(self._prev_ycc, o.mask, src, sx, sy, cur, p_global, cell, cfg.local_bits, stride=st)
            add += logit(p_local)
        if cfg.global_colour and src[2] > src[0] and src[3] > src[1]:
            px0, py0, px1, py1 = src
            prev_mask = o.mask[py0:py1, px0:px1]
            tile = 32
            rel = reliability(o.colour, self._prev_ycc[py0:py1:st, px0:px1:st], prev_mask[::st, ::st],
                              boundary_band(prev_mask, cfg.band_px)[::st, ::st], tile // st, cfg.reliability_gamma)
            ty = np.clip((sy - py0).astype(np.int32) // tile, 0, rel.shape[0] - 1)
            tx = np.clip((sx - px0).astype(np.int32) // tile, 0, rel.shape[1] - 1)
            add += cfg.global_weight * rel[ty, tx] * logit(p_global)
        if st == 1:
            evidence[by, bx] += add
            return
        coarse = np.zeros(band[::st, ::st].shape, np.float32)
        coarse[bys, bxs] = add
        fine = np.repeat(np.repeat(coarse, st, 0), st, 1)[: band.shape[0], : band.shape[1]]
        evidence[band] += fine[band]

    def _redetect(self, o: _Object, ycc: np.ndarray, gray: np.ndarray) -> bool:
        """Search the frame for a blob with the lost object's prompt colours and a similar size."""
        import cv2

        cfg, shape = self.config, self._shape
        f = 4
        small = cv2.resize(ycc, (max(1, shape.width // f), max(1, shape.height // f)), interpolation=cv2.INTER_AREA)
        post = o.colour(small)
        n, labels, stats, _ = cv2.connectedComponentsWithStats((post > 0.5).astype(np.uint8), connectivity=8)
        wants = [max(a, cfg.min_area_px) / (f * f) for a in (o.last_area, o.prompt_area)]
        best, best_score = 0, 0.0
        sw, sh = small.shape[1], small.shape[0]
        near = self._search_region(o)
        for k in range(1, n):
            area = stats[k, cv2.CC_STAT_AREA]
            x, y, bw, bh = stats[k, :4]
            partial = x == 0 or y == 0 or x + bw == sw or y + bh == sh  # entering the frame: part of it shows
            low = 0.05 if partial else 0.25
            if not any(low * want <= area <= 4.0 * want for want in wants) or area * f * f < cfg.redetect_min_area_px:
                continue
            if near is not None:
                (cx, cy), r = near
                bx, by = (x + bw / 2) * f, (y + bh / 2) * f
                if (bx - cx) ** 2 + (by - cy) ** 2 > r * r:
                    continue
            comp = labels == k
            mean_post = float(post[comp].mean())
            if mean_post >= cfg.redetect_min_posterior and mean_post > best_score:
                if o.colour.similarity(small[comp]) >= cfg.redetect_min_similarity:
                    best, best_score = k, mean_post
        if best == 0:
            return False
        x, y, bw, bh = stats[best, :4]
        box = _grow((x * f, y * f, (x + bw) * f, (y + bh) * f), 2 * f, shape)
        bx0, by0, bx1, by1 = box
        blob = cv2.resize((labels == best).astype(np.float32), (shape.width, shape.height),
                          interpolation=cv2.INTER_LINEAR)[by0:by1, bx0:bx1]
        evidence = logit(cv2.GaussianBlur(blob, (0, 0), f)) + logit(o.colour(ycc[by0:by1, bx0:bx1]))
        prob = 1.0 / (1.0 + np.exp(-evidence))
        prob = np.clip(guided_filter(gray[by0:by1, bx0:bx1].astype(np.float32) / 255.0, prob, cfg.guided_radius,
                                     cfg.guided_eps), 0.0, 1.0)
        mask = prob > 0.5
        if self.config.components:
            mask = keep_supported(mask, blob > 0.5)
        self._set(o, box, mask, (prob * mask).astype(np.float32))
        o.lost, o.score = False, best_score
        if o.area < cfg.min_area_px:
            self._lose(o)
            return False
        return True

    def _search_region(self, o: _Object) -> tuple[tuple[float, float], float] | None:
        """Where a lost object may be now: (centre, radius) at the working size, or None (anywhere).

        An object that vanished inside the frame (hidden by another, or its mask failed) reappears
        near its path: the search is centred on its last centre moved on by its velocity, within its
        last box's diagonal times ``1 + redetect_reach * frames since``. One that was last seen at the
        border (it left the frame), or whose place a cut made unknown, may come back anywhere."""
        reach = self.config.redetect_reach
        if reach is None or o.seen_box is None or not self._inside(o.seen_box):
            return None
        dt = self._index - o.seen_at
        (cx, cy), (vx, vy) = _centre(o.seen_box), o.velocity
        x0, y0, x1, y1 = o.seen_box
        return (cx + vx * dt, cy + vy * dt), math.hypot(x1 - x0, y1 - y0) * (1.0 + reach * dt)

    def _resolve_overlaps(self, objects: list[_Object]) -> list[_Object]:
        """A pixel claimed by several objects goes to the one with the highest probability. Returns the objects
        this left with fewer than ``min_area_px`` pixels: lost (a live object without a box crashed the next
        frame's tracking: a lost object re-detected on top of another one, which kept the pixels)."""
        live = [o for o in objects if not o.lost and o.area]
        if len(live) < 2:
            return []
        claims = np.sum([o.mask for o in live], axis=0)
        if claims.max() < 2:
            return []
        contested = claims > 1
        best = np.argmax(np.stack([np.where(o.mask, o.prob, -1.0)[contested] for o in live]), axis=0)
        for i, o in enumerate(live):
            lose = np.zeros_like(o.mask)
            lose[contested] = best != i
            o.mask &= ~lose
            o.prob = np.where(lose, np.minimum(o.prob, 0.49), o.prob).astype(np.float32)
            self._update_area(o)
        gone = [o for o in live if o.box is None or o.area < max(1, self.config.min_area_px)]
        for o in gone:
            self._lose(o)
        return gone
