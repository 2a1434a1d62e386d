"""Panoptic decoding: raw outputs -> :class:`PanopticResult` at the original image size.

Three output layouts (:class:`~edgeseg.structures.PanopticOptions` ``layout``) and one fusion:

* ``center`` (Panoptic-DeepLab: Cheng et al., "Panoptic-DeepLab: A Simple, Strong, and Fast
  Baseline for Bottom-Up Panoptic Segmentation", CVPR 2020). Outputs ``semantic [1, C, h, w]``
  logits, ``center [1, 1, h, w]`` heatmap, ``offset [1, 2, h, w]`` (dy, dx in network-input
  pixels). Centres: the heatmap's local maxima under a ``nms_kernel`` max-pool (``cv2.dilate``)
  scoring above ``center_threshold``, the best ``top_k``. Every thing pixel (semantic argmax in
  ``thing_classes``) joins the centre nearest to its position + offset; an instance's class is the
  majority vote of its pixels' semantic labels (ties: the lower class index) and its score the
  centre's heatmap value (not also times the class's mean probability: PQ does not use scores,
  and the softmax would cost more than the grouping). Each stuff class present is one segment.
  When the graph did the grouping (``centers [1, K, 3]`` score/y/x and ``instance`` int64
  ``[1, h, w]``: the nearest centre's index) those are used instead; pixels whose centre scores
  at or below ``center_threshold`` are void, and only the ``top_k`` best centres keep pixels.
* ``paste`` (LPSNet: Hong et al., "LPSNet: A lightweight solution for fast panoptic segmentation",
  CVPR 2021). Outputs ``semantic`` logits, ``boxes [1, K, 4]`` (xyxy network pixels), ``scores
  [1, K]``, ``classes [1, K]`` (thing class indices; boxes of other classes are ignored). Boxes
  scoring above ``score_threshold`` are pasted best first: a box claims the pixels inside it whose
  semantic label is its class and that no better box took; it is dropped when nothing of it is
  left or when more than ``overlap_threshold`` of its (box AND class) grid cells are taken.
  Optional ``masks [1, K, M, M]`` probabilities covering each box (as Mask R-CNN's) narrow the box
  to ``mask > mask_threshold``. Thing pixels no box claims are void; the stuff classes fill the
  remaining pixels.
* ``query`` (mask classification: MaskFormer, Mask2Former). Outputs ``class_logits
  [1, Q, C+1]`` and ``mask_logits [1, Q, h, w]``; decoded by :mod:`edgeseg.decode.panoptic_query`.
* :func:`fuse_panoptic`: a semantic model's labels and an instance model's masks, both at image
  size, combined as COCO panopticapi's ``combine_semantic_and_instance_predictions`` does (Kirillov
  et al., "Panoptic Segmentation", CVPR 2019, section 7): instances by score, best first, those
  scoring at least ``score_threshold``; one is skipped when more than ``overlap_threshold`` of its
  own area is taken, else it gets its untaken pixels; then each stuff category gets its untaken
  pixels when they number at least ``stuff_area``.

``semantic`` may also be an integer ``[1, h, w]`` labels output (an in-graph argmax).
Segment ids are ``1..n`` in creation order (things by score, best first, then stuff by class
index), 0 is void; ``Segment.area`` counts original-image pixels; stuff segments smaller than
``stuff_area`` image pixels become void, as do segments left without pixels.

Resolution: both layouts group on the stride-4 output grid and map the id map to the image with
nearest sampling through the letterbox/resize geometry (:func:`grid_map`; each image pixel takes
the grid cell under its centre). Positions of grid cells follow the model's convention: cell
``(i, j)`` of a stride-``s`` grid is at network pixel ``(s i + (s - 1) / 2, s j + (s - 1) / 2)``
(``4 i + 1.5`` at stride 4); boxes are continuous xyxy and cover the cells whose centres they
contain. Grouping at full resolution (bilinear logits/heatmap/offsets, then the same steps) is
Panoptic-DeepLab's reference inference; ``tools/bench/panoptic_decode.py`` measures both at 640x320
(19 classes, one thread): the grid path takes 1-3 ms (20 or 100 instances) against 35-50 ms, and
loses 3-5 PQ points to boundaries blocky by up to half a cell (92.4 against 95.4 PQ with 20 objects,
84.2 against 89.4 with 100 smaller ones). Only the grid path fits the budget of post-processing
(15% of a 60 ms frame), so it is the one used.

Broken outputs: semantic logits holding NaN are an error naming the output (``+/-inf`` are clamped,
as :mod:`edgeseg.decode.semantic` does); NaN/inf heatmap cells and in-graph centre scores are no
centres; a thing pixel whose offset is NaN/inf is void, a huge offset is clamped (it points far away,
not at centre 0); paste boxes or scores holding NaN/inf and class ids that are no class index are no
detection. A heatmap with more than ``top_k`` peaks tied at the cut keeps none of the tied ones
(:func:`find_centers`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ..errors import InputError, UnsupportedError
from ..structures import ImageShape, InstanceResult, PanopticOptions, PanopticResult, Segment
from . import DECODERS
from .geometry import image_affine
from .instance import _pixel_span, paste_roi_mask
from .semantic import _argmax_chw, finite_logits

if TYPE_CHECKING:
    from ..structures import PreprocessMeta
    from ..structures.manifest import Manifest

LAYOUT_OUTPUTS = {
    "center": {"semantic": "[1, C, h, w]", "center": "[1, 1, h, w]", "offset": "[1, 2, h, w]"},
    "paste": {"semantic": "[1, C, h, w]", "boxes": "[1, K, 4]", "scores": "[1, K]", "classes": "[1, K]"},
    "query": {"class_logits": "[1, Q, C+1]", "mask_logits": "[1, Q, h, w]"},
}
GRAPH_OUTPUTS = {"centers": "[1, K, 3]", "instance": "[1, h, w]"}
_ALIASES = {"semantic": ("semantic", "logits")}
_CHUNK = 1 << 17  # distance-matrix elements per chunk of the nearest-centre search
#: offset targets are clamped to ``+/-OFFSET_LIMIT`` times the network input's longer side: beyond it
#: every centre is about as far, and float32 squares of 1e20 px overflow to inf (all centres tie)
OFFSET_LIMIT = 4.0


# ---- grid <-> image ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridMap:
    """Where an output grid lands in the original image, by nearest sampling.

    window: ``(y0, y1, x0, x1)`` grid cells the image covers (the letterbox padding left out).
    rows, cols: ``int [H]``, ``int [W]`` window cell under each image row / column centre.
    weights: ``int64 [y1-y0, x1-x0]`` image pixels each window cell becomes.
    stride: ``(ky, kx)`` network pixels per grid cell.
    """

    window: tuple[int, int, int, int]
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    stride: tuple[float, float]

    def positions(self, yx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network-pixel positions ``(y, x)`` float32 of (whole-grid) cells ``yx [N, 2]``: ``s i + (s-1)/2``."""
        (ky, kx), yx = self.stride, np.asarray(yx).reshape(-1, 2)
        return ((yx[:, 0] + 0.5) * ky - 0.5).astype(np.float32), ((yx[:, 1] + 0.5) * kx - 0.5).astype(np.float32)

    def to_image(self, grid: np.ndarray) -> np.ndarray:
        """A window-sized map -> the image-sized map (nearest)."""
        return np.take(np.take(grid, self.rows, axis=0), self.cols, axis=1)


def _axis(size_out: int, scale: float, shift: float, size_grid: int) -> np.ndarray:
    """Grid index under each image pixel centre: ``floor((p + 0.5 - shift) / scale)``, clipped."""
    return np.clip(np.floor((np.arange(size_out) + 0.5 - shift) / scale), 0, size_grid - 1).astype(np.intp)


def grid_map(meta: "PreprocessMeta", grid: ImageShape) -> GridMap:
    """The nearest-sampling map between an output grid spanning the network input and the image."""
    sx, sy, tx, ty = image_affine(meta, grid)
    rows = _axis(meta.original.height, sy, ty, grid.height)
    cols = _axis(meta.original.width, sx, tx, grid.width)
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    rows, cols = rows - y0, cols - x0
    weights = np.outer(np.bincount(rows, minlength=y1 - y0), np.bincount(cols, minlength=x1 - x0))
    stride = (meta.network.height / grid.height, meta.network.width / grid.width)
    return GridMap((y0, y1, x0, x1), rows, cols, weights, stride)


# ---- outputs -------------------------------------------------------------------------------------
def _layout_error(manifest: "Manifest", outputs: Mapping[str, np.ndarray], layout: str, why: str) -> UnsupportedError:
    want = ", ".join(f"{k} {v}" for k, v in LAYOUT_OUTPUTS[layout].items())
    if layout == "center":
        graph = " and ".join(f"{k} {v}" for k, v in GRAPH_OUTPUTS.items())
        want += f" (optionally {graph} from in-graph grouping)"
    got = ", ".join(f"{k} {list(np.shape(v))}" for k, v in outputs.items()) or "none"
    return UnsupportedError(f"bundle {manifest.name!r}: {why}; the panoptic {layout} layout needs {want} "
                            f"(got {got})",
                            fix="export the model with those outputs, or set the manifest's decoder layout and "
                                "output kinds to match it")


def _find(outputs: Mapping[str, np.ndarray], manifest: "Manifest", kind: str) -> np.ndarray | None:
    names = _ALIASES.get(kind, (kind,))
    for spec in manifest.outputs:
        if spec.kind in names and spec.name in outputs:
            return np.asarray(outputs[spec.name])
    for name in names:
        if name in outputs:
            return np.asarray(outputs[name])
    return None


def _get(outputs, manifest, layout: str, kind: str, ndim: int, required: bool = True) -> np.ndarray | None:
    """Output ``kind`` without its batch axis (``ndim`` axes left), or a layout error."""
    arr = _find(outputs, manifest, kind)
    if arr is None:
        if required:
            raise _layout_error(manifest, outputs, layout, f"no {kind!r} output")
        return None
    if arr.ndim == ndim + 1:
        if arr.shape[0] != 1:
            raise _layout_error(manifest, outputs, layout,
                                f"{kind} has a batch of {arr.shape[0]} (one image at a time)")
        arr = arr[0]
    if arr.ndim != ndim:
        raise _layout_error(manifest, outputs, layout, f"{kind} has shape {list(arr.shape)}")
    return arr


def _semantic_labels(outputs, manifest: "Manifest", layout: str) -> np.ndarray:
    """``int [h, w]`` semantic labels on the output grid: the argmax of ``[1, C, h, w]`` logits, or
    an integer ``[1, h, w]`` labels output (an in-graph argmax)."""
    arr = _find(outputs, manifest, "semantic")
    if arr is not None and np.issubdtype(arr.dtype, np.integer) and arr.ndim in (2, 3):
        labels = _get(outputs, manifest, layout, "semantic", 2).astype(np.int32, copy=False)
        if labels.size and (labels.min() < 0 or labels.max() >= manifest.num_classes):
            raise _layout_error(manifest, outputs, layout, f"semantic labels {labels.min()}..{labels.max()} are not "
                                                           f"all class indices 0..{manifest.num_classes - 1}")
        return labels
    logits = _get(outputs, manifest, layout, "semantic", 3)
    if logits.shape[0] != manifest.num_classes:
        raise _layout_error(manifest, outputs, layout,
                            f"semantic has {logits.shape[0]} channels for {manifest.num_classes} classes")
    labels, best = _argmax_chw(logits, np.dtype(np.int32))
    if not np.isfinite(best).all():  # NaN and +inf reach the running maximum: an error, or clamped
        labels = _argmax_chw(finite_logits(logits, manifest, "semantic"), np.dtype(np.int32))[0]
    return labels


def _class_tables(manifest: "Manifest", opts: PanopticOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``is_thing bool [C]``, stuff slot per class ``int [C]`` (1.. for stuff, 0 for things), stuff
    classes ``int [S]``), checked against the manifest's classes."""
    c = manifest.num_classes
    bad = [t for t in opts.thing_classes if t >= c]
    if bad:
        raise InputError(f"bundle {manifest.name!r}: decoder option thing_classes {bad} out of range for {c} classes",
                         fix=f"thing_classes are indices into the manifest's classes (0..{c - 1})")
    if opts.category_ids and len(opts.category_ids) != c:
        raise InputError(f"bundle {manifest.name!r}: decoder option category_ids has {len(opts.category_ids)} ids "
                         f"for {c} classes", fix="give one dataset category id per class, or none")
    is_thing = np.zeros(c, bool)
    is_thing[list(opts.thing_classes)] = True
    stuff = np.flatnonzero(~is_thing)
    slot = np.zeros(c, np.int32)
    slot[stuff] = np.arange(1, len(stuff) + 1)
    return is_thing, slot, stuff


# ---- shared final step ---------------------------------------------------------------------------
def _finish(temp: np.ndarray, gm: GridMap, things: Sequence[tuple[int, float]], stuff: np.ndarray,
            opts: PanopticOptions, names: Sequence[str]) -> PanopticResult:
    """Window map of provisional ids (0 void, ``1..n`` the ``things`` (class, score) in order,
    ``n+1..n+S`` the ``stuff`` classes) -> the final result (:func:`finish_segments`)."""
    segs = [(int(c), float(s), True) for c, s in things] + [(int(c), 1.0, False) for c in stuff]
    return finish_segments(temp, gm, segs, opts, names)


def finish_segments(temp: np.ndarray, gm: GridMap, segs: Sequence[tuple[int, float, bool]], opts: PanopticOptions,
                    names: Sequence[str]) -> PanopticResult:
    """Window map of provisional ids (0 void, ``t`` the segment ``segs[t - 1]`` = (class, score, is_thing))
    -> the final result: image areas from the grid weights, small stuff and empty segments to void, ids
    renumbered ``1..`` in provisional order, the map sampled to the image."""
    total = len(segs) + 1
    areas = np.rint(np.bincount(temp.ravel(), weights=gm.weights.ravel(), minlength=total)).astype(np.int64)
    cats = opts.category_ids
    lut = np.zeros(total, np.int32)
    segments: list[Segment] = []
    for t in range(1, total):
        cls, score, is_thing = segs[t - 1]
        if areas[t] == 0 or (not is_thing and areas[t] < opts.stuff_area):
            continue
        lut[t] = len(segments) + 1
        segments.append(Segment(len(segments) + 1, int(cats[cls]) if cats else int(cls), bool(is_thing),
                                int(areas[t]), float(score)))
    return PanopticResult(gm.to_image(lut[temp]), tuple(segments), tuple(names), tuple(opts.category_ids))


def _with_stuff(temp: np.ndarray, labels: np.ndarray, is_thing: np.ndarray, slot: np.ndarray, n: int) -> np.ndarray:
    """Stuff pixels not yet taken get provisional id ``n + slot(class)``."""
    free = (temp == 0) & ~is_thing[labels]
    temp[free] = slot[labels[free]] + n
    return temp


# ---- center layout -------------------------------------------------------------------------------
def find_centers(heatmap: np.ndarray, threshold: float, kernel: int, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre peaks of a ``[h, w]`` heatmap: pixels equal to the ``kernel x kernel`` max around them
    and above ``threshold`` (plateaus keep every pixel, as max-pool NMS does), the ``top_k`` best.
    When more than ``top_k`` peaks qualify, those tied with the first one left out go too (they cannot
    be ranked; Panoptic-DeepLab's reference keeps the scores strictly above its ``top_k``-th): a flat
    heatmap larger than ``top_k`` cells has no centre, not ``top_k`` arbitrary ones. NaN and ``+/-inf``
    cells (a broken export) are no centres and hide no neighbour.
    Returns (``scores float32 [K]`` best first, raster order on ties; ``yx int [K, 2]`` grid cells)."""
    import cv2

    heat = np.ascontiguousarray(heatmap, np.float32)
    if not np.isfinite(heat).all():  # the grid only: cheap
        heat = np.where(np.isfinite(heat), heat, np.float32(-np.inf))
    pooled = cv2.dilate(heat, np.ones((kernel, kernel), np.uint8))  # max-pool; the border never wins
    idx = np.flatnonzero((heat == pooled) & (heat > threshold))
    scores = heat.ravel()[idx]
    order = np.argsort(-scores, kind="stable")
    if len(order) > top_k:
        cut = scores[order[top_k]]
        order = order[:top_k]
        order = order[scores[order] > cut]
    idx = idx[order]
    return scores[order], np.stack(np.divmod(idx, heat.shape[1]), axis=1)


def nearest_center(ty: np.ndarray, tx: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
    """Index of the centre ``(cy, cx)`` [K] nearest to each target ``(ty, tx)`` [N] (squared
    Euclidean distance in float32, the lower index on ties), in chunks of targets."""
    out = np.empty(len(ty), np.intp)
    if len(cy) == 1:
        out[:] = 0
        return out
    step = max(1, _CHUNK // max(1, len(cy)))
    cy, cx = cy[None].astype(np.float32), cx[None].astype(np.float32)
    for s in range(0, len(ty), step):
        dy = ty[s:s + step, None] - cy
        dx = tx[s:s + step, None] - cx
        np.multiply(dy, dy, out=dy)
        dy += dx * dx
        out[s:s + step] = dy.argmin(axis=1)
    return out


def _vote(labels: np.ndarray, member: np.ndarray, n: int, c: int) -> np.ndarray:
    """Majority class of each instance ``0..n-1`` over its pixels (``member`` -1: no instance)."""
    ok = member >= 0
    votes = np.bincount(member[ok] * c + labels[ok], minlength=n * c).reshape(n, c)
    return votes.argmax(axis=1)


def _group_host(outputs, manifest, opts: PanopticOptions, gm: GridMap,
                thing_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre index per thing pixel, -1 for none; centre scores best first) by host grouping.
    ``thing_px``: flat indices of the thing pixels in the window."""
    y0, y1, x0, x1 = gm.window
    heat = _get(outputs, manifest, "center", "center", 3)
    offset = _get(outputs, manifest, "center", "offset", 3)
    if heat.shape[0] != 1 or offset.shape[0] != 2 or heat.shape[1:] != offset.shape[1:]:
        raise _layout_error(manifest, outputs, "center", "center must be [1, 1, h, w] and offset [1, 2, h, w]")
    scores, yx = find_centers(heat[0], opts.center_threshold, opts.nms_kernel, opts.top_k)
    if not len(scores):
        return np.full(len(thing_px), -1, np.intp), scores
    r, c = np.divmod(thing_px, x1 - x0)
    ty, tx = gm.positions(np.stack([r + y0, c + x0], axis=1))
    ty += offset[0, y0:y1, x0:x1].ravel()[thing_px]
    tx += offset[1, y0:y1, x0:x1].ravel()[thing_px]
    lost = ~(np.isfinite(ty) & np.isfinite(tx))  # a NaN/inf offset points nowhere: the pixel is void
    if lost.any():
        ty[lost] = tx[lost] = 0
    # a 1e30 offset points far away, not at centre 0: clamp so that the squared distances stay finite
    lim = OFFSET_LIMIT * max(gm.stride[0] * heat.shape[1], gm.stride[1] * heat.shape[2])
    np.clip(ty, -lim, lim, out=ty)
    np.clip(tx, -lim, lim, out=tx)
    member = nearest_center(ty, tx, *gm.positions(yx))
    if lost.any():
        member[lost] = -1
    return member, scores


def _group_graph(outputs, manifest, opts: PanopticOptions, gm: GridMap, grid: ImageShape, thing_px: np.ndarray,
                 centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same from the graph's ``centers [K, 3]`` and ``instance [h, w]`` outputs."""
    y0, y1, x0, x1 = gm.window
    instance = _get(outputs, manifest, "center", "instance", 2)
    if instance.shape != grid.hw:
        raise _layout_error(manifest, outputs, "center", f"instance has shape {list(instance.shape)}")
    if centers.shape[1] != 3 or len(centers) == 0:
        raise _layout_error(manifest, outputs, "center", f"centers has shape {list(centers.shape)}, not [1, K, 3]")
    member = instance[y0:y1, x0:x1].ravel()[thing_px].astype(np.intp)
    if len(member) and (member.min() < 0 or member.max() >= len(centers)):
        raise _layout_error(manifest, outputs, "center",
                            f"instance holds indices {member.min()}..{member.max()} outside the {len(centers)} centres")
    scores = centers[:, 0].astype(np.float32)
    valid = np.flatnonzero((scores > opts.center_threshold) & np.isfinite(scores))  # NaN/inf: no centre
    order = valid[np.argsort(-scores[valid], kind="stable")][: opts.top_k]
    rank = np.full(len(centers), -1, np.intp)
    rank[order] = np.arange(len(order))
    return rank[member], scores[order]


def decode_center(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                  opts: PanopticOptions) -> PanopticResult:
    labels_full = _semantic_labels(outputs, manifest, "center")
    is_thing, slot, stuff = _class_tables(manifest, opts)
    grid = ImageShape(*labels_full.shape)
    heat = _find(outputs, manifest, "center")
    if heat is not None and tuple(heat.shape[-2:]) != grid.hw:
        raise _layout_error(manifest, outputs, "center", "semantic and center differ in size")
    gm = grid_map(meta, grid)
    y0, y1, x0, x1 = gm.window
    labels = labels_full[y0:y1, x0:x1]
    thing_px = np.flatnonzero(is_thing[labels])
    centers = _get(outputs, manifest, "center", "centers", 2, required=False)
    if centers is not None:
        member, scores = _group_graph(outputs, manifest, opts, gm, grid, thing_px, centers)
    else:
        member, scores = _group_host(outputs, manifest, opts, gm, thing_px)
    n = len(scores)
    classes = _vote(labels.ravel()[thing_px], member, n, manifest.num_classes)
    temp = np.zeros(labels.shape, np.int32)
    temp.ravel()[thing_px] = member + 1
    _with_stuff(temp, labels, is_thing, slot, n)
    return _finish(temp, gm, list(zip(classes.tolist(), scores.tolist())), stuff, opts, manifest.classes)


# ---- paste layout --------------------------------------------------------------------------------
def _box_cells(box: np.ndarray, gm: GridMap) -> tuple[tuple[int, int], tuple[int, int]]:
    """Window rows and columns whose cell centres ``(i + 0.5) * s`` lie in the xyxy network box."""
    (ky, kx), (y0, y1, x0, x1) = gm.stride, gm.window
    rows = _pixel_span(box[1] / ky - 0.5 - y0, box[3] / ky - 0.5 - y0, y1 - y0)
    cols = _pixel_span(box[0] / kx - 0.5 - x0, box[2] / kx - 0.5 - x0, x1 - x0)
    return rows, cols


def _box_mask(mask: np.ndarray, box: np.ndarray, gm: GridMap, rows: tuple[int, int], cols: tuple[int, int],
              threshold: float) -> np.ndarray:
    """A box's ``[M, M]`` probabilities sampled bilinearly at the cells ``rows x cols``, thresholded."""
    (ky, kx), (y0, _, x0, _) = gm.stride, gm.window
    cells = np.array([box[0] / kx - x0, box[1] / ky - y0, box[2] / kx - x0, box[3] / ky - y0], np.float32)
    vals, (r0, r1), (c0, c1) = paste_roi_mask(np.asarray(mask, np.float32), cells, ImageShape(rows[1], cols[1]))
    out = np.zeros((rows[1] - rows[0], cols[1] - cols[0]), bool)
    a, b, c, d = max(r0, rows[0]), min(r1, rows[1]), max(c0, cols[0]), min(c1, cols[1])
    if vals.size and b > a and d > c:
        out[a - rows[0]:b - rows[0], c - cols[0]:d - cols[0]] = vals[a - r0:b - r0, c - c0:d - c0] > threshold
    return out


def decode_paste(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                 opts: PanopticOptions) -> PanopticResult:
    labels_full = _semantic_labels(outputs, manifest, "paste")
    is_thing, slot, stuff = _class_tables(manifest, opts)
    boxes = _get(outputs, manifest, "paste", "boxes", 2).astype(np.float32, copy=False)
    scores = _get(outputs, manifest, "paste", "scores", 1).astype(np.float32, copy=False)
    classes = _get(outputs, manifest, "paste", "classes", 1)
    if not np.issubdtype(classes.dtype, np.integer):  # NaN, inf or 1e30 would wrap in the cast: -1, dropped
        classes = np.where(np.isfinite(classes) & (np.abs(classes) < 2 ** 31), classes, -1)
    classes = classes.astype(np.int64, copy=False)
    masks = _get(outputs, manifest, "paste", "masks", 3, required=False)
    if boxes.shape[1:] != (4,) or not (len(boxes) == len(scores) == len(classes)) \
            or (masks is not None and len(masks) != len(boxes)):
        raise _layout_error(manifest, outputs, "paste", "boxes, scores, classes (and masks) must agree on K")
    gm = grid_map(meta, ImageShape(*labels_full.shape))
    y0, y1, x0, x1 = gm.window
    labels = labels_full[y0:y1, x0:x1]
    ok = (scores > opts.score_threshold) & (classes >= 0) & (classes < manifest.num_classes) & np.isfinite(scores)
    ok &= np.isfinite(boxes).all(axis=1)  # a NaN/inf box (a broken export) is no detection
    ok[ok] = is_thing[classes[ok]]
    order = np.flatnonzero(ok)
    order = order[np.argsort(-scores[order], kind="stable")]
    temp = np.zeros(labels.shape, np.int32)
    things: list[tuple[int, float]] = []
    for k in order:
        (r0, r1), (c0, c1) = rows, cols = _box_cells(boxes[k], gm)
        if r1 <= r0 or c1 <= c0:
            continue
        cand = labels[r0:r1, c0:c1] == classes[k]
        if masks is not None:
            cand &= _box_mask(masks[k], boxes[k], gm, rows, cols, opts.mask_threshold)
        area = np.count_nonzero(cand)
        region = temp[r0:r1, c0:c1]
        free = region == 0
        new = cand & free
        kept = np.count_nonzero(new)
        if area == 0 or kept == 0 or (area - kept) / area > opts.overlap_threshold:
            continue
        things.append((int(classes[k]), float(scores[k])))
        region[new] = len(things)
    _with_stuff(temp, labels, is_thing, slot, len(things))
    return _finish(temp, gm, things, stuff, opts, manifest.classes)


# ---- fusion of a semantic and an instance model ------------------------------------------------------
def fuse_panoptic(semantic_labels: np.ndarray, instances: InstanceResult, *, stuff_map: Mapping[int, int],
                  thing_map: Mapping[int, int], score_threshold: float = 0.3, overlap_threshold: float = 0.5,
                  stuff_area: int = 128, class_names: Sequence[str] = (),
                  class_score_thresholds: Mapping[int, float] | None = None) -> PanopticResult:
    """panopticapi's semantic + instance combination (module doc), at the image size.

    semantic_labels: ``int [H, W]`` classes of the semantic model (void: -1 or any class not in
    ``stuff_map``). instances: with ``masks [N, H, W]`` (``mask_boxes``, when given, bound the work).
    stuff_map: semantic class -> panoptic category id of the stuff categories (classes absent are
    void). thing_map: instance class -> panoptic category id (instances of classes absent are dropped).
    Instances scoring at least ``score_threshold`` count; one is dropped when more than
    ``overlap_threshold`` of its area is taken (or nothing of it is left); stuff segments need
    ``stuff_area`` pixels. Stuff segments come in increasing category id order. ``class_names``
    goes into the result. ``class_score_thresholds``: instance class -> the score its instances need
    instead of ``score_threshold``."""
    labels = np.asarray(semantic_labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"fuse_panoptic: semantic_labels must be an integer [H, W] map, got "
                         f"{labels.dtype} {list(labels.shape)}")
    image = ImageShape.of(labels)
    if instances.image_shape != image:
        raise InputError(f"fuse_panoptic: instances are for a {instances.image_shape} image, the labels {image}",
                         fix="decode both models for the same image (both results are at the original image size)")
    if len(instances) and not instances.has_masks:
        raise InputError("fuse_panoptic: the instances have no masks (a box-only detector)",
                         fix="fuse the output of an instance segmentation model")
    pan = np.zeros(image.hw, np.int32)
    segments: list[Segment] = []
    scores = np.asarray(instances.scores, np.float32)
    need = class_score_thresholds or {}
    order = [i for i in np.argsort(-scores, kind="stable") if int(instances.classes[i]) in thing_map
             and scores[i] >= need.get(int(instances.classes[i]), score_threshold)]
    for i in order:
        x0, y0, x1, y1, mask = instances.mask_crop(int(i))  # compact results are never pasted full-size
        area = np.count_nonzero(mask)
        if area == 0:
            continue
        region = pan[y0:y1, x0:x1]
        new = region == 0
        new &= mask
        kept = np.count_nonzero(new)
        if kept == 0 or (area - kept) / area > overlap_threshold:
            continue
        np.copyto(region, len(segments) + 1, where=new)
        segments.append(Segment(len(segments) + 1, int(thing_map[int(instances.classes[i])]), True, int(kept),
                                float(scores[i])))
    _fuse_stuff(pan, labels, stuff_map, stuff_area, segments)
    return PanopticResult(pan, tuple(segments), tuple(class_names))


def _fuse_stuff(pan: np.ndarray, labels: np.ndarray, stuff_map: Mapping[int, int], stuff_area: int,
                segments: list[Segment]) -> None:
    """Each stuff category's untaken pixels become one segment when there are ``stuff_area`` of them.
    Full-frame table look-ups and counts (OpenCV's for uint8 labels): several times faster than
    boolean compaction and numpy's fancy indexing of a megapixel map."""
    if not stuff_map:
        return
    cats = sorted(set(int(v) for v in stuff_map.values()))
    lo = min(0, int(labels.min(initial=0)), min(stuff_map))
    hi = max(int(labels.max(initial=0)), max(stuff_map))
    if hi - lo > 4 * (max(stuff_map) - min(0, min(stuff_map))) + 1024:  # labels far outside the stuff classes
        # (2**40, -2**40: a table that long would not fit in memory): they are void, as any class not in
        # stuff_map; clip them to one slot beyond each end of the stuff classes' range
        lo, hi = min(0, min(stuff_map)) - 1, max(stuff_map) + 1
        labels = np.clip(labels, lo, hi)
    slot = np.zeros(hi - lo + 1, np.int32)  # semantic class - lo -> 1 + index of its category in cats
    for cls, cat in stuff_map.items():
        slot[int(cls) - lo] = cats.index(int(cat)) + 1
    fast = labels.dtype == np.uint8 and lo == 0 and len(cats) < 255 and labels.size < (1 << 24)
    where = _lookup(slot.astype(np.uint8) if fast else slot, labels if fast else labels - lo)
    where[pan != 0] = 0
    if fast:
        import cv2

        areas = cv2.calcHist([where], [0], None, [256], [0, 256]).ravel().astype(np.int64)  # exact below 2^24
    else:
        areas = np.bincount(where.ravel(), minlength=len(cats) + 1)
    ids = np.zeros(len(cats) + 1, np.int32)
    for j, cat in enumerate(cats, start=1):
        if areas[j] >= max(1, stuff_area):
            ids[j] = len(segments) + 1
            segments.append(Segment(len(segments) + 1, cat, False, int(areas[j]), 1.0))
    pan += _lookup(ids, where)


def _lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]``; by :func:`cv2.LUT` for uint8 indices into at most 256 entries."""
    if index.dtype != np.uint8 or len(table) > 256:
        return table[index]
    import cv2

    full = np.zeros(256, table.dtype)
    full[:len(table)] = table
    return cv2.LUT(np.ascontiguousarray(index), full)


def _decode_fusion(outputs, meta, manifest, opts):
    from .panoptic_fusion import decode_fusion

    return decode_fusion(outputs, meta, manifest, opts)


def _decode_query(outputs, meta, manifest, opts):
    from .panoptic_query import decode_query

    return decode_query(outputs, meta, manifest, opts)


_LAYOUTS = {"center": decode_center, "paste": decode_paste, "query": _decode_query, "fusion": _decode_fusion}


@DECODERS.register("panoptic")
def decode_panoptic(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                    options: PanopticOptions | None = None, **overrides) -> PanopticResult:
    """Model outputs for one image -> :class:`PanopticResult` at ``meta.original`` (module doc).
    ``options`` replaces the bundle's options; keyword ``overrides`` change single fields
    (``stuff_area=2048``)."""
    opts = options or manifest.decoder_options
    if not isinstance(opts, PanopticOptions):
        raise UnsupportedError(f"bundle {manifest.name!r} is a {manifest.task} bundle, not a panoptic one")
    opts = opts.replace(**overrides)
    return _LAYOUTS[opts.layout](outputs, meta, manifest, opts)
