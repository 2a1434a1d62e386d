"""Instance segmentation decoding: raw outputs -> :class:`InstanceResult` in original-image pixels.

Three output layouts (:class:`~edgeseg.structures.InstanceOptions` ``layout``):

* ``prototype`` (YOLACT, Ultralytics YOLOv5/v8/v11-seg): a detection output of ``F = 4 + nc + nm``
  features per anchor (``yolov5``: ``5 + nc + nm``, an objectness after the box), as ``[1, F, N]``
  or ``[1, N, F]``, and prototypes ``[1, nm, h, w]``. Each anchor takes its best class (score =
  class score, times objectness for yolov5); scores at or below ``score_threshold`` go; the best
  ``pre_nms_top_k`` remain; greedy NMS per class (all classes with ``class_agnostic``); the best
  ``max_detections`` remain. A mask is ``coefficients @ prototypes`` (logits), sampled bilinearly
  at the original image's pixel centres, thresholded at ``logit(mask_threshold)`` and cropped to
  the box (pixels ``x1 <= x < x2``, ``y1 <= y < y2``, as Ultralytics crops). ``end2end`` (YOLO26's
  default export, and ``nms=True`` exports): ``[1, K, 6 + nm]`` rows ``x1, y1, x2, y2, score, class
  id, coefficients`` whose duplicates the graph already removed; as Ultralytics' predictor does for
  them, only the score threshold and the ``max_detections`` cap apply (no NMS), masks as above.
* ``dense`` (SOLO): ``scores [1, K]``, ``classes [1, K]``, ``masks [1, K, h, w]`` probabilities
  over the whole network input (or a 1/2, 1/4, 1/8 map of it); NMS ran in the graph. Boxes are the
  masks' tight boxes, or the model's own when it has a ``boxes [1, K, 4]`` output (imported
  RTMDet-Ins, CondInst and torchvision models) and they are boxes: MMDeploy's SOLO writes the whole
  frame and SOLOv2 zeros, which fall back to the masks' boxes. An instance whose mask is empty is
  dropped.
* ``roi`` (Mask R-CNN): ``boxes [1, K, 4]`` (network pixels), ``scores``, ``classes`` and
  ``masks [1, K, M, M]`` probabilities covering each box, pasted as Detectron2 does (bilinear,
  zero outside the box, half-pixel centres).

Speed: masks are sampled only inside each instance's region (a bilinear resample of the low
resolution map's sub-window: :func:`cv2.resize` by the integer scale and a slice where the geometry
allows, an affine :func:`cv2.warpAffine` otherwise), never as full-frame upsampled planes, and the
result is compact: one boolean crop per instance over its ``mask_boxes`` (``InstanceResult.mask_crops``;
``bool [N, H, W]`` is pasted only when something reads ``result.masks``), so decoding costs what the
instances cover, not ``N x H x W``. The per-instance geometry (pixel spans, source windows, affine
maps) is computed for all instances at once; the loop does the window product, the warp and the
threshold.

Broken outputs (a faulty export, fp16 overflow): a detection whose score or box holds NaN or
``+/-inf``, or whose box has no positive width and height (``x2 <= x1``), is treated as not detected
(before the top-k, NMS and the cap); class ids that are no class index (NaN, 999, -1 in the dense and
roi layouts; NaN in ``end2end``) drop their detection, while a finite ``end2end`` class id outside the
classes is an error naming the outputs (the bundle's class count is wrong). Boxes are clamped to
:data:`BOX_LIMIT` network sizes before NMS, so a 1e30 box neither overflows the IoU nor disturbs the
per-class offsets; every box is clipped to the image, and a box-and-mask (``roi``) detection whose box,
clipped, covers no pixel of the image (it lies wholly in the letterbox padding or off the frame) is dropped.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..errors import UnsupportedError
from ..structures import ImageShape, InstanceOptions, InstanceResult
from . import DECODERS
from .geometry import boxes_to_image, image_affine

log = logging.getLogger("edgeseg.decode")

if TYPE_CHECKING:
    from ..structures import PreprocessMeta
    from ..structures.manifest import Manifest


# ---- NMS ---------------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[len(a), len(b)]`` of xyxy boxes (continuous coordinates, area = w * h). Per coordinate
    column, not a reduction over a length-2 axis (which is 5x slower for 100 boxes)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0, out=w) * np.maximum(h, 0, out=h)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, classes: np.ndarray | None = None,
        max_out: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices of kept boxes, best score first (stable on ties).
    With ``classes`` only boxes of the same class suppress each other (boxes are offset per class
    by more than the whole coordinate range, as torchvision's ``batched_nms`` does). Up to
    :data:`NMS_MATRIX_MAX` candidates the IoU matrix is computed at once and the greedy pass is one
    boolean row operation per kept box; beyond, one IoU row per kept box."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if classes is not None:
        span = float(np.abs(boxes).max()) * 2 + 1
        boxes = boxes + (np.asarray(classes, np.float32) * span)[:, None]
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    b = boxes[order]
    limit = len(b) if max_out is None else max_out
    keep: list[int] = []
    if len(b) <= NMS_MATRIX_MAX:
        # a box only suppresses later ones; boxes that overlap no later box cannot change the
        # outcome, so the greedy pass visits only the others (the same keep list, and the first
        # ``limit`` kept are what stopping at ``limit`` gives: later boxes never change earlier ones)
        over = np.triu(box_iou(b, b) > iou_threshold, 1)
        removed = np.zeros(len(b), bool)
        for i in np.flatnonzero(over.any(axis=1)).tolist():
            if not removed[i]:
                removed |= over[i]
        return order[np.flatnonzero(~removed)[:limit]]
    area = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    alive = np.ones(len(b), bool)
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if len(rest) == 0:
            break
        lt = np.maximum(b[i, :2], b[rest, :2])
        rb = np.minimum(b[i, 2:], b[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        alive[rest[iou > iou_threshold]] = False
    return order[np.asarray(keep, np.int64)]


NMS_MATRIX_MAX = 2048


# ---- mask sampling -----------------------------------------------------------------------------
def _pixel_span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Pixel indices ``i`` with ``lo <= i < hi`` inside ``[0, size)``, as ``(start, stop)``."""
    start = max(0, min(size, math.ceil(lo)))
    stop = max(start, min(size, math.ceil(hi)))
    return start, stop


def _cv2():
    import cv2

    return cv2


def _warp_window(src: np.ndarray, m: np.ndarray, size_wh: tuple[int, int], border: int) -> np.ndarray:
    import cv2

    return cv2.warpAffine(np.ascontiguousarray(src, np.float32), m, size_wh,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=0.0)


class _Resampler:
    """``cv2.warpAffine(src_i, m_i, size_i, INTER_LINEAR | WARP_INVERSE_MAP, BORDER_REPLICATE)`` for many
    axis-aligned maps ``m [N, 2, 3]`` of the map decoders, planned for all of them at once. Where both
    scales ``f`` (output px per source px) are at least 1 and a window's output starts on the resize
    grid (``cv2.resize(src, None, fx, fy)`` samples ``u = (X + 0.5) / f - 0.5``: the start ``f * (m02
    + 0.5) - 0.5`` is an integer), it is one ``cv2.resize`` and a slice: integer scales (a 640x360,
    1280x720 or 1920x1080 frame letterboxed into 640x640, stride-4 prototypes) and rational ones whose
    windows :func:`_map_windows` aligned (640x360 resized to 640x384, stride 4: 3.75 = 15/4). About 2x
    faster per instance at street-object sizes than the warp (which also rounds positions to 1/32
    px), the same values to float rounding (both within 1e-5 of a float64 bilinear reference,
    ``tests/decode/test_instance_decode.py``)."""

    def __init__(self, m: np.ndarray, windows: np.ndarray, sizes_wh: np.ndarray):
        self.m = m
        m = np.asarray(m, np.float64).reshape(-1, 2, 3)
        n = len(m)
        self.fast = np.zeros(n, bool)
        self.f = (1.0, 1.0)
        self._fast, self._start = [False] * n, [(0, 0)] * n
        if n == 0 or np.any(m[:, 0, 1] != 0) or np.any(m[:, 1, 0] != 0):
            return
        f = 1.0 / m[:, [0, 1], [0, 1]]  # [N, 2]: output px per source px, per axis
        # downscales stay warps (cv2.resize samples an exact 2x downscale by area, not bilinearly)
        if np.any(f < 1.0 - 1e-9) or np.any(np.abs(f - f[:1]) > 1e-9 * f[:1]):
            return
        start = f * (m[:, [0, 1], [2, 2]] + 0.5) - 0.5  # output pixel 0 in the resized window
        s = np.round(start)
        src_wh = np.stack([windows[:, 3] - windows[:, 2], windows[:, 1] - windows[:, 0]], 1)
        dst_wh = np.floor(src_wh * f[:1] + 1e-9)  # cv2 rounds src * f; floor never overshoots it
        self.fast = np.all((np.abs(start - s) < 1e-6) & (s >= 0) & (s + sizes_wh <= dst_wh), axis=1)
        self.f = (float(f[0, 0]), float(f[0, 1]))
        self._fast, self._start = self.fast.tolist(), s.astype(np.int64).tolist()  # per-instance lookups, no numpy scalars

    def __call__(self, i: int, src: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
        import cv2

        if not self._fast[i]:
            return _warp_window(src, self.m[i], size_wh, cv2.BORDER_REPLICATE)
        (fx, fy), (sx, sy), (w, h) = self.f, self._start[i], size_wh
        if src.dtype != np.float32 or not src.flags.c_contiguous:
            src = np.ascontiguousarray(src, np.float32)
        big = cv2.resize(src, None, fx=fx, fy=fy, interpolation=cv2.INTER_LINEAR)
        return big[sy:sy + h, sx:sx + w]


GRID_MAX_PERIOD = 8


def _grid_phase(scale: float, offset: float) -> tuple[int, int] | None:
    """Window starts ``sc0`` for which ``offset + scale * sc0`` is an integer (so that a resize of the
    window by ``scale`` puts image pixels on its grid: :class:`_Resampler`), as ``(q, r)``: ``sc0 = r
    (mod q)``. None when ``scale`` is not a fraction with a denominator up to :data:`GRID_MAX_PERIOD`
    (aligning would widen windows by up to ``q - 1`` source pixels) or no start fits."""
    for q in range(1, GRID_MAX_PERIOD + 1):
        if abs(scale * q - round(scale * q)) < 1e-9 * max(1.0, scale * q):
            for r in range(q):
                v = offset + scale * r
                if abs(v - round(v)) < 1e-6:
                    return q, r
            return None
    return None


def paste_roi_mask(mask: np.ndarray, box: np.ndarray, image: ImageShape) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """An ``[M, M]`` probability map covering ``box`` (xyxy, image pixels) sampled at the image
    pixels the box touches (zero outside the box): ``(values, rows, cols)``."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box)
    rows = (max(0, math.floor(y1)), min(image.height, math.ceil(y2)))
    cols = (max(0, math.floor(x1)), min(image.width, math.ceil(x2)))
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        return np.zeros((0, 0), np.float32), rows, cols
    mh, mw = mask.shape
    kx, ky = mw / max(x2 - x1, 1e-6), mh / max(y2 - y1, 1e-6)
    m = np.array([[kx, 0.0, (cols[0] + 0.5 - x1) * kx - 0.5], [0.0, ky, (rows[0] + 0.5 - y1) * ky - 0.5]], np.float64)
    return _warp_window(mask, m, (cols[1] - cols[0], rows[1] - rows[0]), cv2.BORDER_CONSTANT), rows, cols


def _pixel_spans(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_pixel_span` of many ``(lo, hi)`` at once: ``(start, stop)`` int64 arrays."""
    start = np.clip(np.ceil(lo), 0, size).astype(np.int64)
    stop = np.maximum(start, np.minimum(size, np.ceil(hi)).astype(np.int64))
    return start, stop


def _map_windows(map_shape: ImageShape, meta: "PreprocessMeta", rows: tuple[np.ndarray, np.ndarray],
                 cols: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear sampling (half-pixel centres) of a map spanning the whole network input at the image
    pixels ``rows x cols`` of many spans: the source windows ``int64 [N, 4]`` ``(sr0, sr1, sc0, sc1)``
    holding the source pixels each span needs (only those are computed) and the inverse affine maps
    ``float64 [N, 2, 3]`` from each image span to its window, for :class:`_Resampler`."""
    (r0, r1), (c0, c1) = rows, cols
    sx, sy, tx, ty = image_affine(meta, map_shape)
    u0, u1 = (c0 + 0.5 - tx) / sx - 0.5, (c1 - 0.5 - tx) / sx - 0.5
    v0, v1 = (r0 + 0.5 - ty) / sy - 0.5, (r1 - 0.5 - ty) / sy - 0.5
    sc0 = np.clip(np.floor(u0), 0, map_shape.width - 1).astype(np.int64)
    sc1 = np.maximum(sc0 + 1, np.minimum(map_shape.width, np.floor(u1) + 2).astype(np.int64))
    sr0 = np.clip(np.floor(v0), 0, map_shape.height - 1).astype(np.int64)
    sr1 = np.maximum(sr0 + 1, np.minimum(map_shape.height, np.floor(v1) + 2).astype(np.int64))
    # widen each window down to a start on the resize grid where the scale is a small fraction:
    # more source pixels, the same samples (see _Resampler)
    for start, scale, offset in ((sc0, sx, tx), (sr0, sy, ty)):
        phase = _grid_phase(scale, offset) if scale > 1 else None
        if phase is not None:
            q, r = phase
            aligned = start - (start - r) % q
            np.copyto(start, aligned, where=aligned >= 0)
    m = np.zeros((len(r0), 2, 3), np.float64)
    m[:, 0, 0], m[:, 1, 1] = 1.0 / sx, 1.0 / sy
    m[:, 0, 2], m[:, 1, 2] = u0 - sc0, v0 - sr0
    return np.stack([sr0, sr1, sc0, sc1], 1), m


def _roi_geometry(boxes: np.ndarray, mask_hw: tuple[int, int], image: ImageShape):
    """What :func:`paste_roi_mask` computes per box, for many boxes at once (the same float64
    arithmetic): rows, cols (``(start, stop)`` int64 arrays) and the inverse affine maps."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    r0 = np.maximum(0, np.floor(y1)).astype(np.int64)
    r1 = np.minimum(image.height, np.ceil(y2)).astype(np.int64)
    c0 = np.maximum(0, np.floor(x1)).astype(np.int64)
    c1 = np.minimum(image.width, np.ceil(x2)).astype(np.int64)
    mh, mw = mask_hw
    kx, ky = mw / np.maximum(x2 - x1, 1e-6), mh / np.maximum(y2 - y1, 1e-6)
    m = np.zeros((len(b), 2, 3), np.float64)
    m[:, 0, 0], m[:, 1, 1] = kx, ky
    m[:, 0, 2] = (c0 + 0.5 - x1) * kx - 0.5
    m[:, 1, 2] = (r0 + 0.5 - y1) * ky - 0.5
    return (r0, r1), (c0, c1), m


class _Crops:
    """Per-instance boolean mask crops with their pixel bounds (``InstanceResult.mask_crops`` over
    ``mask_boxes``): nothing is allocated at image size. An instance left without a region has the
    empty crop ``[0, 0]`` at ``(0, 0, 0, 0)``."""

    _EMPTY = np.zeros((0, 0), bool)

    def __init__(self, n: int):
        self.crops: list[np.ndarray] = [self._EMPTY] * n
        self.bounds = np.zeros((n, 4), np.int32)

    def put(self, i: int, region: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], tight: bool = True) -> None:
        """Mask ``i`` is ``region`` at ``rows x cols``; its bounds are the region's (``tight=False``,
        cheaper: they contain the mask, which is all ``mask_boxes`` promises) or its true pixels'
        tight box (the crop is then that part of ``region``)."""
        if not tight:
            self.crops[i] = region
            self.bounds[i] = (cols[0], rows[0], cols[1], rows[1])
            return
        ys, xs = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        if not len(ys):
            return
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        self.crops[i] = region[y0:y1, x0:x1]
        self.bounds[i] = (cols[0] + x0, rows[0] + y0, cols[0] + x1, rows[0] + y1)

    def nonempty(self) -> np.ndarray:
        return (self.bounds[:, 2] > self.bounds[:, 0]) & (self.bounds[:, 3] > self.bounds[:, 1])


# ---- outputs -----------------------------------------------------------------------------------
def _named(outputs: Mapping[str, np.ndarray], manifest: "Manifest", kind: str, ndim: int | None = None,
           required: bool = True) -> np.ndarray | None:
    """The output of ``kind``: by the manifest's output specs, then by name, then (``ndim``) the only
    output of that rank."""
    for spec in manifest.outputs:
        if spec.kind == kind and spec.name in outputs:
            return np.asarray(outputs[spec.name])
    if kind in outputs:
        return np.asarray(outputs[kind])
    if ndim is not None:
        same = [np.asarray(v) for v in outputs.values() if np.asarray(v).ndim == ndim]
        if len(same) == 1:
            return same[0]
    if required:
        raise UnsupportedError(
            f"bundle {manifest.name!r}: no {kind!r} output among "
            f"{', '.join(f'{k} {list(np.shape(v))}' for k, v in outputs.items())}",
            fix=f"the manifest's outputs must give the {kind} output (kind {kind!r})")
    return None


def _one(arr: np.ndarray, name: str, ndim: int) -> np.ndarray:
    if arr.ndim == ndim + 1:
        if arr.shape[0] != 1:
            raise UnsupportedError(f"instance outputs decode one image at a time; {name} has a batch of {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim != ndim:
        raise UnsupportedError(f"instance output {name} must have {ndim + 1} axes [1, ...], got shape {list(arr.shape)}")
    return arr


def _layout_error(manifest: "Manifest", outputs: Mapping[str, np.ndarray], why: str) -> UnsupportedError:
    shapes = ", ".join(f"{k} {list(np.shape(v))}" for k, v in outputs.items())
    return UnsupportedError(f"bundle {manifest.name!r}: outputs ({shapes}) do not fit the {why}",
                            fix="re-import the model with the right --task/--classes, or fix the manifest's decoder layout")


def prototype_candidates(det: np.ndarray, nc: int, nm: int, fmt: str,
                         threshold: float = -1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``[F, N]`` or ``[N, F]`` detections -> the anchors whose best class score is above
    ``threshold``: (cxcywh boxes ``[K, 4]``, best-class scores ``[K]``, classes ``[K]``, coefficients
    ``[K, nm]``). The best score is taken over the class block in its stored layout (contiguous rows
    for ``[F, N]``), before any gather. Raises ValueError when neither axis is ``F``."""
    head = 5 if fmt == "yolov5" else 4
    f = head + nc + nm
    if det.shape[0] == f and det.shape[1] != f:
        features_first = True
    elif det.shape[1] == f:
        features_first = False
    else:
        raise ValueError(f"expected {f} = {head} + {nc} classes + {nm} mask coefficients features per anchor")
    cls = det[head:head + nc] if features_first else det[:, head:head + nc]
    best = cls.max(axis=0 if features_first else 1)
    if fmt == "yolov5":
        best = best * (det[4] if features_first else det[:, 4])
    keep = np.flatnonzero(best > threshold)
    rows = det[:, keep].T if features_first else det[keep]
    rows = np.asarray(rows, np.float32)
    classes = rows[:, head:head + nc].argmax(axis=1).astype(np.int32)
    return rows[:, :4], best[keep].astype(np.float32), classes, rows[:, head + nc:]


def end2end_candidates(det: np.ndarray, nc: int, nm: int,
                       threshold: float = -1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``[K, 6 + nm]`` (or ``[6 + nm, K]``) end-to-end rows -> those scoring above ``threshold``:
    (xyxy boxes ``[K', 4]``, scores, class ids ``int32``, coefficients ``[K', nm]``). Raises
    ValueError when no axis is ``6 + nm`` or a kept row's class id is not one of the ``nc`` classes."""
    f = 6 + nm
    if det.shape[1] == f:
        rows = det
    elif det.shape[0] == f:
        rows = det.T
    else:
        raise ValueError(f"expected {f} = 4 box + score + class + {nm} mask coefficients values per detection")
    rows = np.asarray(rows[rows[:, 4] > threshold], np.float32)
    rows = rows[np.isfinite(rows[:, 5])]  # a NaN/inf class id (a broken row) is no detection, as a NaN score
    ids = np.rint(rows[:, 5])
    bad = (ids < 0) | (ids >= nc)
    if bad.any():
        raise ValueError(f"class id {rows[bad, 5][0]:g} is not one of the model's {nc} classes")
    return rows[:, :4], rows[:, 4].copy(), ids.astype(np.int32), rows[:, 6:]


class _WindowProducts:
    """``coefficients @ prototypes`` over each instance's prototype window ``(sr0, sr1, sc0, sc1)``.
    Two ways, chosen per frame by what they cost: copying each ``nm x h x w`` window (strided, about
    12 ns a pixel with the product), or copying the windows' union once channels-last (``cv2.merge``,
    about 20 ns a pixel) so that each window is a strided ``[h, w, nm]`` view and its product a
    matrix-vector product without a copy (about 8 ns a pixel cheaper than copy + product). The
    union copy pays when the windows cover the union about :data:`TRANSPOSE_COVER` times or more:
    crowded frames (100 street-size instances at 640x360: 0.7 ms less); a few instances keep the
    per-window copy. Both give the same sums to float rounding."""

    def __init__(self, protos: np.ndarray, win: np.ndarray, valid: np.ndarray, transpose: bool | None = None):
        self.protos = protos
        self.hwc = None
        nm = protos.shape[0]
        if not valid.any() or nm > 512 or transpose is False:  # cv2.merge takes up to 512 channels
            return
        w = win[valid]
        a, b, c, d = int(w[:, 0].min()), int(w[:, 1].max()), int(w[:, 2].min()), int(w[:, 3].max())
        covered = int(((w[:, 1] - w[:, 0]) * (w[:, 3] - w[:, 2])).sum())
        if transpose or covered >= TRANSPOSE_COVER * (b - a) * (d - c):
            import cv2

            hwc = cv2.merge([p[a:b, c:d] for p in protos])  # strided views: no copy first
            self.hwc, self.origin = hwc.reshape(b - a, d - c, nm), (a, c)

    def __call__(self, window: tuple[int, int, int, int], coeff: np.ndarray) -> np.ndarray:
        """The product over ``window`` (one of the planned windows, ``(sr0, sr1, sc0, sc1)``)."""
        a, b, c, d = window
        if self.hwc is None:
            nm = self.protos.shape[0]
            return (coeff @ np.ascontiguousarray(self.protos[:, a:b, c:d]).reshape(nm, -1)).reshape(b - a, d - c)
        oa, oc = self.origin
        return self.hwc[a - oa:b - oa, c - oc:d - oc] @ coeff


TRANSPOSE_COVER = 3.0


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b, dtype=np.float32)
    out[:, :2] = b[:, :2] - b[:, 2:] / 2
    out[:, 2:] = b[:, :2] + b[:, 2:] / 2
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


#: network-pixel coordinates are clamped to ``[-BOX_LIMIT, BOX_LIMIT]`` times the network's longer side
#: before NMS: every final box is clipped to the image anyway (a clamped side lies outside it, so the
#: image boxes do not change), and NMS then neither overflows (a 1e25-px box's area is inf) nor loses
#: the precision of the per-class offsets (one 1e30 box made them 2e30 apart: 20-px boxes all 0-wide)
BOX_LIMIT = 4.0


def _usable(xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``bool [K]``: the detections (xyxy network pixels) that are ones: finite box and score, positive
    width and height. NaN/inf come from broken exports or fp16 overflow, ``x2 <= x1`` from broken box
    heads; those rows are treated as not detected. (A valid box off the frame stays, clipped to the
    image, as Ultralytics clips it.) ``K`` floats: cheap."""
    ok = np.isfinite(scores) & np.isfinite(xyxy).all(axis=1)
    ok &= (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])  # False for NaN
    return ok


def _clamped(xyxy: np.ndarray, meta: "PreprocessMeta") -> np.ndarray:
    lim = BOX_LIMIT * max(meta.network.height, meta.network.width)
    return np.clip(xyxy, -lim, lim).astype(np.float32, copy=False)


def decode_prototype(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                     opts: InstanceOptions, transpose: bool | None = None) -> InstanceResult:
    """The prototype layout (module doc). ``transpose`` forces (True) or forbids (False) the
    channels-last prototype copy :class:`_WindowProducts` otherwise makes when it pays."""
    det = _one(_named(outputs, manifest, "detections", ndim=3), "detections", 2)
    protos = _one(_named(outputs, manifest, "prototypes", ndim=4), "prototypes", 3)
    nm = protos.shape[0]
    try:
        if opts.prototype_format == "end2end":
            xyxy, scores, classes, coeffs = end2end_candidates(det, manifest.num_classes, nm, opts.score_threshold)
        else:
            boxes, scores, classes, coeffs = prototype_candidates(det, manifest.num_classes, nm,
                                                                  opts.prototype_format, opts.score_threshold)
    except ValueError as e:
        raise _layout_error(manifest, outputs, f"prototype layout ({opts.prototype_format}): {e}") from None
    if opts.prototype_format != "end2end":
        xyxy = _cxcywh_to_xyxy(boxes)
    ok = _usable(xyxy, scores)
    if not ok.all():
        xyxy, scores, classes, coeffs = xyxy[ok], scores[ok], classes[ok], coeffs[ok]
    xyxy = _clamped(xyxy, meta)
    if opts.prototype_format == "end2end":  # the graph removed duplicates: best first, capped, no NMS
        keep = np.argsort(-scores, kind="stable")[: opts.max_detections]
    else:
        if len(scores) > opts.pre_nms_top_k:
            top = np.argsort(-scores, kind="stable")[: opts.pre_nms_top_k]
            xyxy, scores, classes, coeffs = xyxy[top], scores[top], classes[top], coeffs[top]
        keep = nms(xyxy, scores, opts.iou_threshold, None if opts.class_agnostic else classes,
                   max_out=opts.max_detections)
    image = meta.original
    img_boxes = boxes_to_image(xyxy[keep], meta)
    out = _Crops(len(keep))
    proto_shape = ImageShape(protos.shape[1], protos.shape[2])
    thr = _logit(opts.mask_threshold)
    protos = np.ascontiguousarray(protos, np.float32)  # cv2.merge and the window views need rows in memory order
    # per instance: the image pixels of its box, the prototype window they sample (computed for all
    # instances at once), the window's coefficient product, one warp, one threshold
    r0, r1 = _pixel_spans(img_boxes[:, 1], img_boxes[:, 3], image.height)
    c0, c1 = _pixel_spans(img_boxes[:, 0], img_boxes[:, 2], image.width)
    win, aff = _map_windows(proto_shape, meta, (r0, r1), (c0, c1))
    resample = _Resampler(aff, win, np.stack([c1 - c0, r1 - r0], 1))
    valid = (r1 > r0) & (c1 > c0)
    product = _WindowProducts(protos, win, valid, transpose)
    out.bounds[valid] = np.stack([c0, r0, c1, r1], 1)[valid]  # each crop is its box's pixels (_Crops.put, tight=False)
    kept_coeffs = coeffs[keep]
    for i, (ok, w, y0, y1, x0, x1) in enumerate(zip(valid.tolist(), win.tolist(), r0.tolist(), r1.tolist(),
                                                    c0.tolist(), c1.tolist())):
        if ok:
            out.crops[i] = resample(i, product(w, kept_coeffs[i]), (x1 - x0, y1 - y0)) > thr
    return InstanceResult(boxes=img_boxes, scores=scores[keep], classes=classes[keep], image_shape=image,
                          class_names=tuple(manifest.classes), mask_boxes=out.bounds, mask_crops=out.crops)


def _class_ids(raw: np.ndarray, num_classes: int) -> np.ndarray:
    """``int32`` class ids, -1 where ``raw`` is no class index ``0..num_classes-1`` (NaN, inf, 1e30 or
    999 included: checked before the cast, which would wrap them)."""
    if not np.issubdtype(raw.dtype, np.floating):
        raw = raw.astype(np.int64, copy=False)
    ok = (raw >= 0) & (raw < num_classes)  # False for NaN
    return np.where(ok, raw, -1).astype(np.int32)


_UNLISTED_SAID: set[tuple[str, int]] = set()


def _say_unlisted(raw: np.ndarray, dropped: np.ndarray, manifest) -> None:
    """Detections scoring above the threshold whose class id the manifest does not list (its classes shortened by
    hand, a model of more classes) are dropped, as ids out of range must be: said once per bundle (they went
    silently: 4 instances of 6 on a frame)."""
    if (manifest.name, manifest.num_classes) in _UNLISTED_SAID or not dropped.any():
        return
    ids = np.asarray(raw)[dropped]
    ids = ids[np.isfinite(ids)] if np.issubdtype(ids.dtype, np.floating) else ids
    ids = sorted({int(v) for v in ids.tolist() if v >= manifest.num_classes})
    if not ids:
        return
    _UNLISTED_SAID.add((manifest.name, manifest.num_classes))  # a copy shortened by hand keeps the name
    log.warning("bundle %r: the model detects class id(s) %s, but its manifest lists %d classes (ids 0..%d): those "
                "detections are dropped; the manifest's classes must name every class the model detects (restore it "
                "from a copy, or re-import the model with --classes/--names)", manifest.name,
                ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else ""), manifest.num_classes,
                manifest.num_classes - 1)


def _dense_common(outputs, manifest, opts, boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = _one(_named(outputs, manifest, "scores"), "scores", 1).astype(np.float32)
    raw = _one(_named(outputs, manifest, "classes"), "classes", 1)
    classes = _class_ids(raw, max(1, manifest.num_classes))
    masks = _one(_named(outputs, manifest, "masks"), "masks", 3)
    if len(scores) == len(classes):
        _say_unlisted(raw, (scores > opts.score_threshold) & (classes < 0), manifest)
    if not (len(scores) == len(classes) == len(masks)) or (boxes is not None and len(boxes) != len(scores)):
        raise _layout_error(manifest, outputs, "dense/roi layout: scores, classes, masks (and boxes) must have the same K")
    cand = (scores > opts.score_threshold) & (classes >= 0)
    if boxes is not None:  # roi: NaN/inf and inverted boxes are no detection
        at = np.flatnonzero(cand)
        cand[at] = _usable(np.asarray(boxes[at], np.float32), scores[at])
    else:
        cand &= np.isfinite(scores)
    keep = np.flatnonzero(cand)
    keep = keep[np.argsort(-scores[keep], kind="stable")][: opts.max_detections]
    return keep, scores, classes


def decode_dense(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                 opts: InstanceOptions) -> InstanceResult:
    given = _named(outputs, manifest, "boxes", required=False)  # imported RTMDet-Ins/torchvision models have boxes
    if given is not None:
        given = _one(given, "boxes", 2)
        if given.shape[1:] != (4,):
            raise _layout_error(manifest, outputs, "dense layout: boxes must be [1, K, 4]")
    keep, scores, classes = _dense_common(outputs, manifest, opts)  # boxes may be placeholders: not a filter
    if given is not None and len(given) != len(scores):
        raise _layout_error(manifest, outputs, "dense layout: boxes, scores, classes and masks must have the same K")
    maps = _one(_named(outputs, manifest, "masks"), "masks", 3)
    map_shape = ImageShape(maps.shape[1], maps.shape[2])
    image = meta.original
    sx, sy, tx, ty = image_affine(meta, map_shape)
    out = _Crops(len(keep))
    # the low-resolution mask's rows and columns above the threshold, for all instances at once
    if 2 * len(keep) >= len(maps):  # most maps kept: threshold them all (no float gather), pick the kept rows
        low = maps > opts.mask_threshold
        rows_on, cols_on = low.any(axis=2)[keep], low.any(axis=1)[keep]
    else:
        low = maps[keep] > opts.mask_threshold
        rows_on, cols_on = low.any(axis=2), low.any(axis=1)
    has = rows_on.any(axis=1)
    ys0, ys1 = rows_on.argmax(axis=1), rows_on.shape[1] - 1 - rows_on[:, ::-1].argmax(axis=1)
    xs0, xs1 = cols_on.argmax(axis=1), cols_on.shape[1] - 1 - cols_on[:, ::-1].argmax(axis=1)
    # the image pixels whose sample can exceed the threshold: one map pixel of margin
    r0, r1 = _pixel_spans((ys0 - 1) * sy + ty, (ys1 + 2) * sy + ty, image.height)
    c0, c1 = _pixel_spans((xs0 - 1) * sx + tx, (xs1 + 2) * sx + tx, image.width)
    win, aff = _map_windows(map_shape, meta, (r0, r1), (c0, c1))
    resample = _Resampler(aff, win, np.stack([c1 - c0, r1 - r0], 1))
    cv2 = _cv2()
    for i, (k, ok, (a, b, c, d), (y0, y1, x0, x1)) in enumerate(zip(keep.tolist(), has.tolist(), win.tolist(),
                                                                  zip(r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist()))):
        if not ok or y1 <= y0 or x1 <= x0:
            continue
        region = resample(i, maps[k, a:b, c:d], (x1 - x0, y1 - y0)) > opts.mask_threshold
        x, y, w, h = cv2.boundingRect(region.view(np.uint8))  # the true pixels' tight box
        if w and h:
            out.crops[i] = region[y:y + h, x:x + w]
            out.bounds[i] = (x0 + x, y0 + y, x0 + x + w, y0 + y + h)
    ok = out.nonempty()  # SOLO boxes are the masks' tight boxes: an empty mask is no detection
    boxes = out.bounds.astype(np.float32)
    if given is not None:  # the model's boxes where they are boxes (MMDeploy's SOLO writes the whole frame, SOLOv2 zeros)
        b = np.asarray(given[keep], np.float32)
        net = meta.network
        real = np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & \
            ~((b[:, 0] <= 0) & (b[:, 1] <= 0) & (b[:, 2] >= net.width) & (b[:, 3] >= net.height))
        if real.any():
            boxes[real] = boxes_to_image(_clamped(b[real], meta), meta)
    return InstanceResult(boxes=boxes[ok], scores=scores[keep][ok], classes=classes[keep][ok],
                          image_shape=image, class_names=tuple(manifest.classes), mask_boxes=out.bounds[ok],
                          mask_crops=[c for c, o in zip(out.crops, ok.tolist()) if o])


def decode_roi(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
               opts: InstanceOptions) -> InstanceResult:
    boxes = _one(_named(outputs, manifest, "boxes"), "boxes", 2)
    if boxes.shape[1:] != (4,):
        raise _layout_error(manifest, outputs, "roi layout: boxes must be [1, K, 4]")
    keep, scores, classes = _dense_common(outputs, manifest, opts, boxes)
    roi = _one(_named(outputs, manifest, "masks"), "masks", 3)
    image = meta.original
    img_boxes = boxes_to_image(_clamped(np.asarray(boxes[keep], np.float32), meta), meta)
    on_image = (img_boxes[:, 2] > img_boxes[:, 0]) & (img_boxes[:, 3] > img_boxes[:, 1])
    if not on_image.all():  # wholly in the letterbox padding or off the frame: clipped to a line, it covers no pixel
        keep, img_boxes = keep[on_image], img_boxes[on_image]
    out = _Crops(len(keep))
    (r0, r1), (c0, c1), aff = _roi_geometry(img_boxes, roi.shape[1:], image)  # paste_roi_mask's, for all at once
    cv2 = _cv2()
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for i, (k, y0, y1, x0, x1) in enumerate(zip(keep.tolist(), r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist())):
        if y1 <= y0 or x1 <= x0:
            continue
        vals = cv2.warpAffine(np.ascontiguousarray(roi[k], np.float32), aff[i], (x1 - x0, y1 - y0), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        out.put(i, vals > opts.mask_threshold, (y0, y1), (x0, x1), tight=False)
    return InstanceResult(boxes=img_boxes, scores=scores[keep], classes=classes[keep], image_shape=image,
                          class_names=tuple(manifest.classes), mask_boxes=out.bounds, mask_crops=out.crops)


def across_classes(result: InstanceResult, iou_threshold: float) -> InstanceResult:
    """``class_agnostic`` for the layouts whose NMS ran per class inside the graph (SOLO's Matrix NMS, Mask R-CNN's):
    a detection whose mask overlaps a better-scoring one's, of any class, by more than ``iou_threshold`` (mask IoU;
    box IoU without masks) is dropped (an audit: street-instance gave one car as car 0.34, bus 0.28 and truck 0.25,
    one mask, and the option was silently ignored)."""
    n = len(result)
    if n < 2:
        return result
    order = np.argsort(-result.scores, kind="stable").tolist()
    if result.mask_crops is None or result.mask_boxes is None:
        keep = nms(result.boxes, result.scores, iou_threshold, None, max_out=n)
        return result[np.sort(keep)]
    bounds, crops = result.mask_boxes.tolist(), result.mask_crops
    areas = [int(c.sum()) for c in crops]
    kept: list[int] = []
    for i in order:
        x0, y0, x1, y1 = bounds[i]
        for j in kept:
            u0, v0, u1, v1 = bounds[j]
            a0, b0, a1, b1 = max(x0, u0), max(y0, v0), min(x1, u1), min(y1, v1)
            if a1 <= a0 or b1 <= b0:
                continue
            inter = int(np.count_nonzero(crops[i][b0 - y0:b1 - y0, a0 - x0:a1 - x0]
                                         & crops[j][b0 - v0:b1 - v0, a0 - u0:a1 - u0]))
            union = areas[i] + areas[j] - inter
            if union and inter > iou_threshold * union:
                break
        else:
            kept.append(i)
    return result if len(kept) == n else result[np.sort(np.asarray(kept, np.int64))]


_LAYOUTS = {"prototype": decode_prototype, "dense": decode_dense, "roi": decode_roi}


@DECODERS.register("instance")
def decode_instance(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                    options: InstanceOptions | None = None, **overrides) -> InstanceResult:
    """Model outputs for one image -> :class:`InstanceResult` at ``meta.original`` (module doc).
    ``options`` replaces the bundle's options; keyword ``overrides`` change single fields
    (``score_threshold=0.5``)."""
    opts = options or manifest.decoder_options
    if not isinstance(opts, InstanceOptions):
        raise UnsupportedError(f"bundle {manifest.name!r} is a {manifest.task} bundle, not an instance one")
    opts = opts.replace(**overrides)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf outputs are dropped on purpose, not warned per frame
        result = _LAYOUTS[opts.layout](outputs, meta, manifest, opts)
    if opts.class_agnostic and (opts.layout != "prototype" or opts.prototype_format == "end2end"):  # (the prototype
        # layout's own NMS took it; an end-to-end export's graph ran its NMS per class)
        result = across_classes(result, opts.iou_threshold)
    return result
