"""COCO mask AP (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014), numerically
equal to pycocotools' ``COCOeval(iouType="segm")`` (its 12 ``stats`` and per-class AP), in numpy.

Per image and category (categories are the dataset's ids, evaluated in sorted order):

* detections are sorted by score (``argsort(-score, kind="mergesort")``: ties keep input order)
  and cut to the best 100;
* mask IoU = intersection / union, or intersection / detection area for a crowd ground truth
  (0 when they do not intersect); intersections are counted only for pairs whose boxes overlap;
* for each area range (all, small < 32^2 <= medium <= 96^2 < large, on the ground truth's ``area``
  field and the detection's mask area, or box area with ``prediction_area="box"``; both bounds
  inclusive) a ground truth is *ignored* when it
  is a crowd or outside the range. Ground truths are ordered ignored-last; at each IoU threshold
  .50:.05:.95, each detection in score order takes, among the ground truths still free (a crowd is
  always free) with IoU >= the threshold, the one of highest IoU (the last of equals) that is not
  ignored, else the best ignored one; a detection matched to an ignored ground truth is ignored,
  and so is an unmatched detection outside the area range.

Over all images (ordered by image id), for each category, area range and max detections (1, 10,
100 per image and category): detections are merged by score (mergesort again), cumulated into
recall ``tp / npos`` and precision ``tp / (tp + fp + eps)``, precision is made monotone from the
right and read at the 101 recall points .00:.01:1 (0 past the last recall). -1 marks settings
without non-ignored ground truth; every average skips -1. AP = mean precision, AR = mean final
recall. The one thing not reproduced is a pycocotools bug: COCOeval stores a match as the ground
truth's annotation id, 0 meaning none, so a detection matched to an annotation with id 0 counts as
a false positive there (annotation ids start at 1 in COCO files; here ids play no part).

Class ids: predictions carry class indices (:class:`~edgeseg.structures.InstanceResult`);
``class_to_category`` says which category id each one is (a sequence index -> id, or a mapping;
-1 or a missing entry drops the class). Ground truth carries category ids
(:class:`~edgeseg.data.coco_instances.InstanceTruth`, or COCO annotation dicts).

    acc = MaskAPAccumulator(dataset.categories, class_to_category=[24, 26, -1])
    for sample in dataset:
        acc.add(sample.image_id, predictor(sample.image()), sample.truth)
    scores = acc.compute()          # scores.stats: the 12 numbers of COCOeval.stats
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import ImageShape, InstanceResult
from ..structures.rle import rle_encode_crops

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_NAMES = ("all", "small", "medium", "large")
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# ---- mask IoU ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Masks:
    """Masks ``bool [N, H, W]`` with their pixel extents ``int64 [N, 4]`` (x0, y0, x1, y1; x1, y1
    exclusive; zeros when empty) and pixel counts ``int64 [N]``, computed once per image."""

    masks: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray

    @classmethod
    def of(cls, masks: np.ndarray) -> "_Masks":
        n, h, w = masks.shape
        if n == 0 or h == 0 or w == 0:
            return cls(masks, np.zeros((n, 4), np.int64), np.zeros(n, np.int64))
        u8 = np.ascontiguousarray(masks).view(np.uint8)  # max over uint8 is faster than any() over bool
        rows, cols = u8.max(axis=2) > 0, u8.max(axis=1) > 0
        boxes = np.stack([cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)], 1)
        boxes[~rows.any(1)] = 0
        areas = np.array([np.count_nonzero(m) for m in masks], np.int64)  # per mask: the fast whole-array count
        return cls(masks, boxes.astype(np.int64), areas)


def _intersections(a: _Masks, ia: np.ndarray, b: _Masks, ib: np.ndarray) -> np.ndarray:
    """``int64 [len(ia), len(ib)]`` pixel counts of ``a[ia[i]] & b[ib[j]]``. Only pairs whose boxes
    overlap are counted (pycocotools prefilters by box too), each column in one call over its box."""
    out = np.zeros((len(ia), len(ib)), np.int64)
    ba, bb = a.boxes[ia], b.boxes[ib]
    overlap = ((np.minimum(ba[:, None, 2], bb[None, :, 2]) > np.maximum(ba[:, None, 0], bb[None, :, 0]))
               & (np.minimum(ba[:, None, 3], bb[None, :, 3]) > np.maximum(ba[:, None, 1], bb[None, :, 1])))
    for j in np.flatnonzero(overlap.any(0)):
        i = np.flatnonzero(overlap[:, j])
        x0, y0, x1, y1 = bb[j].tolist()
        out[i, j] = np.count_nonzero(a.masks[ia[i], y0:y1, x0:x1] & b.masks[ib[j], y0:y1, x0:x1], axis=(1, 2))
    return out


def _iou(dt: _Masks, di: np.ndarray, gt: _Masks, gi: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    inter = _intersections(dt, di, gt, gi)
    da, ga = dt.areas[di][:, None], gt.areas[gi][None, :]
    union = np.where(crowd[None, :], da, da + ga - inter)
    return inter / np.where(inter == 0, 1, union)


def mask_iou(dt: np.ndarray, gt: np.ndarray, gt_crowd: np.ndarray | None = None) -> np.ndarray:
    """``float64 [D, G]`` IoU of ``bool [D, H, W]`` and ``bool [G, H, W]`` masks as pycocotools'
    ``maskUtils.iou(dt, gt, iscrowd)``: intersection over union, over the detection's area for a
    crowd ground truth, 0 where they do not intersect."""
    dt, gt = np.asarray(dt, bool), np.asarray(gt, bool)
    if dt.ndim != 3 or gt.ndim != 3 or dt.shape[1:] != gt.shape[1:]:
        raise InputError(f"mask IoU needs [N, H, W] masks of one size, got {list(dt.shape)} and {list(gt.shape)}")
    crowd = np.zeros(len(gt), bool) if gt_crowd is None else np.asarray(gt_crowd, bool)
    return _iou(_Masks.of(dt), np.arange(len(dt)), _Masks.of(gt), np.arange(len(gt)), crowd)


def box_iou(dt: np.ndarray, gt: np.ndarray, gt_crowd: np.ndarray | None = None) -> np.ndarray:
    """``float64 [D, G]`` IoU of ``[D, 4]`` and ``[G, 4]`` boxes in COCO's ``x, y, w, h``, as pycocotools'
    ``maskUtils.iou`` computes it for boxes (``bbIou``): the same operations in the same order, so equal to
    the bit; over the detection's area for a crowd ground truth, 0 where they do not overlap."""
    d, g = np.asarray(dt, np.float64).reshape(-1, 4), np.asarray(gt, np.float64).reshape(-1, 4)
    crowd = np.zeros(len(g), bool) if gt_crowd is None else np.asarray(gt_crowd, bool)
    w = np.minimum(d[:, None, 2] + d[:, None, 0], g[None, :, 2] + g[None, :, 0]) - np.maximum(d[:, None, 0], g[None, :, 0])
    h = np.minimum(d[:, None, 3] + d[:, None, 1], g[None, :, 3] + g[None, :, 1]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = w * h
    da, ga = (d[:, 2] * d[:, 3])[:, None], (g[:, 2] * g[:, 3])[None, :]
    union = np.where(crowd[None, :], da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), inter / union, 0.0)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` corners -> COCO ``x, y, w, h`` in float64, as :func:`coco_results` writes them."""
    b = np.asarray(boxes).astype(np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


# ---- per image -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageEval:
    """One (image, category, area range): detections best first (at most 100)."""

    image_id: int
    scores: np.ndarray  # float64 [D]
    matched: np.ndarray  # bool [T, D]
    ignored: np.ndarray  # bool [T, D]
    npos: int  # ground truths not ignored


def _last_best(ok: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Per threshold row of ``ok [T, G]``: the last index of the highest ``iou`` among ok ones, -1 if none."""
    vals = np.where(ok, iou[None, :], -1.0)
    j = vals.shape[1] - 1 - np.argmax(vals[:, ::-1], axis=1)
    return np.where(vals[np.arange(len(vals)), j] >= 0, j, -1)


def _match(ious: np.ndarray, ignore: np.ndarray, crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg's greedy matching; ground truths ordered ignored-last. Returns the
    matched ground truth per (threshold, detection) (-1: none) and whether it is ignored."""
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    T, (D, G) = len(thr), ious.shape
    gt_of = np.full((T, D), -1, np.int64)
    if D == 0 or G == 0:
        return gt_of, np.zeros((T, D), bool)
    taken = np.zeros((T, G), bool)
    lowest = thr.min()
    for d in range(D):
        row = ious[d]
        if row.max() < lowest:
            continue
        ok = (~taken | crowd[None, :]) & (row[None, :] >= thr[:, None])
        m = _last_best(ok & ~ignore[None, :], row)
        m = np.where(m >= 0, m, _last_best(ok & ignore[None, :], row))
        hit = np.flatnonzero(m >= 0)
        gt_of[hit, d] = m[hit]
        taken[hit, m[hit]] = True
    return gt_of, np.where(gt_of >= 0, ignore[np.maximum(gt_of, 0)], False)


def _evaluate_image(image_id: int, ious: np.ndarray, scores: np.ndarray, dt_area: np.ndarray,
                    gt_area: np.ndarray, crowd: np.ndarray) -> list[_ImageEval]:
    """All area ranges of one (image, category); detections already sorted and cut, ``ious [D, G]``."""
    out, cache = [], {}
    for lo, hi in AREA_RANGES:
        ignore = crowd | (gt_area < lo) | (gt_area > hi)
        order = np.argsort(ignore, kind="mergesort")
        key = order.tobytes() + ignore.tobytes()
        if key not in cache:
            cache[key] = _match(ious[:, order], ignore[order], crowd[order])
        gt_of, dt_ignored = cache[key]
        matched = gt_of >= 0
        outside = (dt_area < lo) | (dt_area > hi)
        out.append(_ImageEval(image_id, scores, matched, dt_ignored | (~matched & outside[None, :]), int((~ignore).sum())))
    return out


# ---- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassAP:
    """Per category (area all, 100 detections): AP over .50:.95 and AP at .50; -1 without ground truth."""

    category_id: int
    name: str
    ap: float
    ap50: float
    num_gt: int  # non-crowd ground-truth instances


@dataclass(frozen=True, eq=False)
class MaskAPScores:
    """COCO mask AP. ``stats``: the 12 numbers of ``COCOeval.stats`` in :data:`STAT_NAMES` order
    (-1 where no ground truth qualifies). ``precision``: ``float64 [T=10, R=101, K, A=4, M=3]`` and
    ``recall``: ``float64 [T, K, A, M]`` exactly as ``COCOeval.eval``; K in sorted category id order."""

    stats: tuple[float, ...]
    per_class: tuple[ClassAP, ...]
    num_images: int
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    #: box AP of the same detections (``COCOeval(iouType="bbox")``), when it was computed beside the mask AP
    box: "MaskAPScores | None" = None

    @property
    def ap(self) -> float:
        return self.stats[0]

    @property
    def ap50(self) -> float:
        return self.stats[1]

    @property
    def ap75(self) -> float:
        return self.stats[2]

    def named(self) -> dict[str, float]:
        return dict(zip(STAT_NAMES, self.stats))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "stats": self.named(),
            "per_class": {c.name: {"category_id": c.category_id, "ap": c.ap, "ap50": c.ap50, "num_gt": c.num_gt}
                          for c in self.per_class},
            "num_images": self.num_images,
        }
        if self.box is not None:
            out["box"] = {k: v for k, v in self.box.to_dict().items() if k != "num_images"}
        return out


def _mean_valid(s: np.ndarray) -> float:
    v = s[s > -1]
    return -1.0 if len(v) == 0 else float(np.mean(v))


def _summarize(precision: np.ndarray, recall: np.ndarray) -> tuple[float, ...]:
    """``COCOeval.summarize()`` for segm/bbox: the 12 stats."""

    def one(ap: bool, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        a, m = [AREA_NAMES.index(area)], [MAX_DETS.index(max_dets)]
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        return _mean_valid(s[:, :, :, a, m] if ap else s[:, :, a, m])

    return (
        one(True), one(True, 0.5), one(True, 0.75), one(True, area="small"), one(True, area="medium"),
        one(True, area="large"), one(False, max_dets=1), one(False, max_dets=10), one(False),
        one(False, area="small"), one(False, area="medium"), one(False, area="large"),
    )


def _accumulate(evals: list[_ImageEval], max_det: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``COCOeval.accumulate`` for one (category, area, max detections): ``(precision [T, R], recall [T])``."""
    npos = sum(e.npos for e in evals)
    if not evals or npos == 0:
        return None
    scores = np.concatenate([e.scores[:max_det] for e in evals])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e.matched[:, :max_det] for e in evals], axis=1)[:, order]
    ignored = np.concatenate([e.ignored[:, :max_det] for e in evals], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    nd = tp.shape[1]
    rc = tp / npos
    pr = tp / (fp + tp + np.spacing(1))
    recall = rc[:, -1] if nd else np.zeros(len(tp))
    precision = np.zeros((len(tp), len(RECALL_THRESHOLDS)))
    if nd:
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        for t in range(len(tp)):
            idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
            ok = idx < nd
            precision[t, ok] = pr[t, idx[ok]]
    return precision, recall


# ---- the accumulator --------------------------------------------------------------------------


def _lut(class_to_category: Sequence[int] | Mapping[int, int] | None) -> Mapping[int, int] | None:
    if class_to_category is None:
        return None
    if isinstance(class_to_category, Mapping):
        return {int(k): int(v) for k, v in class_to_category.items()}
    return {i: int(v) for i, v in enumerate(class_to_category)}


class MaskAPAccumulator:
    """Streaming COCO mask AP: :meth:`add` one image at a time (only match results are kept, not
    masks), :meth:`compute` at the end.

    categories: the evaluated category ids (or id -> name), as COCOeval's ``catIds``: ground truth
        and detections of other categories are left out; a category without ground truth scores -1.
    class_to_category: prediction class index -> category id (sequence or mapping; -1 or missing
        drops the class); None: prediction classes *are* category ids.
    prediction_area: ``"mask"`` (default, as detectron2 evaluates mask AP) or ``"box"``: the
        detection area that decides small/medium/large. pycocotools' ``loadRes`` uses the box
        ``w * h`` when the results carry ``bbox``, the mask area when they do not.
    iou_type: ``"segm"`` (mask AP, default) or ``"bbox"``: box AP, equal to ``COCOeval(iouType="bbox")``
        on the same detections saved by :func:`coco_results`: box IoU (:func:`box_iou`) of the detections'
        boxes and the annotations' ``bbox`` (``InstanceTruth.xywh``, else its ``boxes``), the detection area
        ``w * h``; predictions need no masks.
    """

    def __init__(self, categories: Mapping[int, str] | Iterable[int], *,
                 class_to_category: Sequence[int] | Mapping[int, int] | None = None, prediction_area: str = "mask",
                 iou_type: str = "segm"):
        names = dict(categories) if isinstance(categories, Mapping) else {int(c): str(c) for c in categories}
        self.category_ids = tuple(sorted(int(c) for c in names))
        if not self.category_ids:
            raise InputError("MaskAPAccumulator needs at least one category id")
        self.names = {int(c): str(n) for c, n in names.items()}
        self._k = {c: k for k, c in enumerate(self.category_ids)}
        self._lut = _lut(class_to_category)
        if prediction_area not in ("mask", "box"):
            raise InputError(f"prediction_area must be 'mask' or 'box', got {prediction_area!r}")
        if iou_type not in ("segm", "bbox"):
            raise InputError(f"iou_type must be 'segm' (mask AP) or 'bbox' (box AP), got {iou_type!r}")
        self.prediction_area = "box" if iou_type == "bbox" else prediction_area
        self.iou_type = iou_type
        self.reset()

    def reset(self) -> None:
        self._evals: dict[tuple[int, int], list[_ImageEval]] = defaultdict(list)
        self._images: set[int] = set()
        self._num_gt = np.zeros(len(self.category_ids), np.int64)

    def categories_of(self, classes: np.ndarray) -> np.ndarray:
        """Prediction class indices -> category ids (-1: dropped)."""
        classes = np.asarray(classes, np.int64)
        if self._lut is None:
            return classes
        return np.array([self._lut.get(int(c), -1) for c in classes.tolist()], np.int64)

    def add(self, image_id: int, prediction: InstanceResult | None, truth: Any,
            image_shape: ImageShape | None = None) -> None:
        """Score one image. ``truth``: an ``InstanceTruth`` (``masks``, ``category_ids``, ``iscrowd``,
        ``area``) or a list of COCO annotation dicts (``image_shape`` or the prediction's gives their size)."""
        image_id = int(image_id)
        if image_id in self._images:
            raise InputError(f"image {image_id} was added twice to the mask AP accumulator")
        shape = image_shape or (prediction.image_shape if prediction is not None else None)
        g_masks, g_cats, g_crowd, g_area, g_boxes = _truth_arrays(truth, shape, image_id)
        if self.iou_type == "bbox":
            self._add_boxes(image_id, prediction, g_cats, g_crowd, g_area, g_boxes)
            return
        d_masks, d_cats, d_scores, d_area = self._prediction_arrays(prediction, image_id)
        if d_masks is not None and g_masks.shape[1:] != d_masks.shape[1:]:
            raise InputError(
                f"image {image_id}: prediction masks are {list(d_masks.shape[1:])}, ground truth {list(g_masks.shape[1:])}",
                fix="predict at the image's own size",
            )
        self._images.add(image_id)
        keep = np.isin(g_cats, self.category_ids)
        gts = _Masks.of(g_masks[keep]) if not keep.all() else _Masks.of(g_masks)
        g_cats, g_crowd, g_area = g_cats[keep], g_crowd[keep], g_area[keep]
        dts = _Masks.of(d_masks) if d_masks is not None else None
        if d_area is None:  # the masks' own pixel counts (_Masks.of counts them once)
            d_area = dts.areas.astype(np.float64)
        self._score(image_id, lambda d, g: _iou(dts, d, gts, g, g_crowd[g]), g_cats, g_crowd, g_area, d_cats, d_scores,
                    d_area)

    def _score(self, image_id: int, iou, g_cats, g_crowd, g_area, d_cats, d_scores, d_area) -> None:
        """Per category of one image: its best 100 detections by score, their IoU with the ground truth
        (``iou(detection indices, truth indices)``) and COCOeval's matching for every area range."""
        for cat in sorted(set(g_cats.tolist()) | set(d_cats.tolist())):
            k = self._k.get(cat)
            if k is None:
                continue
            g, d = np.flatnonzero(g_cats == cat), np.flatnonzero(d_cats == cat)
            d = d[np.argsort(-d_scores[d], kind="mergesort")][: MAX_DETS[-1]]
            ious = iou(d, g) if len(d) and len(g) else np.zeros((len(d), len(g)))
            self._num_gt[k] += int((~g_crowd[g]).sum())
            for a, e in enumerate(_evaluate_image(image_id, ious, d_scores[d], d_area[d], g_area[g], g_crowd[g])):
                self._evals[k, a].append(e)

    def _add_boxes(self, image_id: int, pred: InstanceResult | None, g_cats: np.ndarray, g_crowd: np.ndarray,
                   g_area: np.ndarray, g_boxes: np.ndarray) -> None:
        """Box AP of one image: as :meth:`add` with box IoU and ``w * h`` detection areas."""
        if pred is None or len(pred) == 0:
            d_boxes, d_cats, d_scores = np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
        else:
            d_scores = np.asarray(pred.scores, np.float64)
            if not np.isfinite(d_scores).all():
                raise InputError(f"image {image_id}: prediction scores must be finite")
            d_boxes, d_cats = xyxy_to_xywh(pred.boxes), self.categories_of(pred.classes)
        self._images.add(image_id)
        self._score(image_id, lambda d, g: box_iou(d_boxes[d], g_boxes[g], g_crowd[g]), g_cats, g_crowd, g_area,
                    d_cats, d_scores, d_boxes[:, 2] * d_boxes[:, 3])

    def _prediction_arrays(self, pred: InstanceResult | None, image_id: int):
        if pred is None or len(pred) == 0:
            z = np.zeros(0)
            return None, np.zeros(0, np.int64), z, z
        if pred.masks is None:
            raise InputError(f"image {image_id}: the prediction has no masks", fix="mask AP needs an instance-mask model")
        scores = np.asarray(pred.scores, np.float64)
        if not np.isfinite(scores).all():
            raise InputError(f"image {image_id}: prediction scores must be finite")
        if self.prediction_area == "mask":  # counted by _Masks.of in add (a batch audit: counting them here as well,
            area = None  # with count_nonzero's slow axis form, was 18 % of an instance eval)
        else:
            b = pred.boxes.astype(np.float64)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return pred.masks, self.categories_of(pred.classes), scores, area

    def compute(self) -> MaskAPScores:
        T, R, K, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(self.category_ids), len(AREA_RANGES), len(MAX_DETS)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        for (k, a), evals in self._evals.items():
            evals = sorted(evals, key=lambda e: e.image_id)  # COCOeval walks images in id order
            for m, max_det in enumerate(MAX_DETS):
                got = _accumulate(evals, max_det)
                if got is not None:
                    precision[:, :, k, a, m], recall[:, k, a, m] = got
        per_class = tuple(
            ClassAP(c, self.names.get(c, str(c)), _mean_valid(precision[:, :, k, 0, -1]),
                    _mean_valid(precision[0, :, k, 0, -1]), int(self._num_gt[k]))
            for k, c in enumerate(self.category_ids)
        )
        return MaskAPScores(_summarize(precision, recall), per_class, len(self._images), precision, recall)


def _truth_arrays(truth: Any, shape: ImageShape | None, image_id: int):
    """``(masks bool [G, H, W], category ids, iscrowd, area, boxes float64 [G, 4] x, y, w, h)`` from an
    InstanceTruth or COCO annotation dicts (boxes: the annotation's ``bbox``, else the mask's extent)."""
    if isinstance(truth, (list, tuple)):
        from ..data.coco_instances import segmentation_to_mask

        if truth and shape is None:
            raise InputError(f"image {image_id}: annotation dicts need the image size", fix="pass image_shape=")
        h, w = (shape.height, shape.width) if shape is not None else (1, 1)
        masks = np.zeros((len(truth), h, w), bool)
        for i, ann in enumerate(truth):
            masks[i] = segmentation_to_mask(ann["segmentation"], h, w)
        boxes = np.array([[float(v) for v in a["bbox"]] if "bbox" in a else _extent(m) for a, m in zip(truth, masks)],
                         np.float64).reshape(-1, 4)
        return (masks, np.array([int(a["category_id"]) for a in truth], np.int64),
                np.array([bool(a.get("iscrowd", 0)) for a in truth], bool),
                np.array([float(a["area"]) if "area" in a else float(m.sum()) for a, m in zip(truth, masks)]), boxes)
    try:
        masks = np.asarray(truth.masks, bool)
        cats = np.asarray(truth.category_ids, np.int64)
    except AttributeError:
        raise InputError(f"image {image_id}: ground truth must be an InstanceTruth or a list of COCO annotations, "
                         f"got {type(truth).__name__}") from None
    crowd = getattr(truth, "iscrowd", None)
    area = getattr(truth, "area", None)
    crowd = np.zeros(len(cats), bool) if crowd is None else np.asarray(crowd, bool)
    area = np.array([np.count_nonzero(m) for m in masks], np.float64) if area is None else np.asarray(area, np.float64)
    xywh = getattr(truth, "xywh", None)
    if xywh is None:
        boxes = getattr(truth, "boxes", None)
        xywh = xyxy_to_xywh(boxes) if boxes is not None else np.array([_extent(m) for m in masks]).reshape(-1, 4)
    return masks, cats, crowd, area, np.asarray(xywh, np.float64).reshape(-1, 4)


def _extent(mask: np.ndarray) -> list[float]:
    """A mask's pixel extent as ``x, y, w, h`` (zeros when empty)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def mask_ap(predictions: Mapping[int, InstanceResult | None], truths: Mapping[int, Any],
            categories: Mapping[int, str] | Iterable[int], *,
            class_to_category: Sequence[int] | Mapping[int, int] | None = None, prediction_area: str = "mask",
            iou_type: str = "segm") -> MaskAPScores:
    """COCO mask AP (``iou_type="bbox"``: box AP) of ``{image_id: prediction}`` against ``{image_id: truth}``
    in one call (images in either; a missing prediction is no detections, a missing truth no objects)."""
    acc = MaskAPAccumulator(categories, class_to_category=class_to_category, prediction_area=prediction_area,
                            iou_type=iou_type)
    for image_id in sorted(set(predictions) | set(truths)):
        pred = predictions.get(image_id)
        acc.add(image_id, pred, truths.get(image_id, []))
    return acc.compute()


def coco_results(image_id: int, prediction: InstanceResult, class_to_category: Sequence[int] | Mapping[int, int] | None = None
                 ) -> list[dict]:
    """One image's detections as COCO result records (``image_id``, ``category_id``, ``segmentation``
    compressed RLE, ``score``, ``bbox`` xywh), the file format pycocotools' ``loadRes`` reads.
    Classes that map to no category are left out. For mask AP with mask areas (as
    :class:`MaskAPAccumulator` by default), drop ``bbox`` before ``loadRes``, as detectron2 does."""
    if not prediction.has_masks:
        raise InputError(f"image {image_id}: the prediction has no masks to save")
    lut = _lut(class_to_category)
    rles = rle_encode_crops(prediction.iter_mask_crops(), prediction.image_shape.hw)[0]  # compact: no full masks
    out = []
    for i in range(len(prediction)):
        c = int(prediction.classes[i])
        cat = c if lut is None else lut.get(c, -1)
        if lut is not None and cat < 0:
            continue
        x1, y1, x2, y2 = (float(v) for v in prediction.boxes[i])
        out.append({"image_id": int(image_id), "category_id": int(cat), "segmentation": rles[i],
                    "score": float(prediction.scores[i]), "bbox": [x1, y1, x2 - x1, y2 - y1]})
    return out


# ---- model classes -> dataset categories ------------------------------------------------------


@dataclass(frozen=True)
class CategoryMap:
    """Model class index -> dataset category id, for :class:`MaskAPAccumulator` and :func:`coco_results`.

    to_category: per model class, its category id or -1 (dropped: the class is not scored).
    by: ``"name"`` (names compared case-insensitively, plus any explicit pairs) or ``"index"``
    (no name is shared: model class i -> the i-th category in id order).
    pairs: ``(model class, category name or None)`` per model class. dropped: unmatched model classes.
    missing: dataset categories no model class maps to (their instances are all misses).
    """

    to_category: tuple[int, ...]
    by: str
    pairs: tuple[tuple[str, str | None], ...]
    dropped: tuple[str, ...]
    missing: tuple[str, ...] = ()


def _key(name: str) -> str:
    return str(name).strip().casefold()


def category_map(model_classes: Sequence[str], categories: Mapping[int, str],
                 explicit: Mapping[str, str] | None = None) -> CategoryMap:
    """Map model classes onto dataset categories: ``explicit`` pairs first (model class name ->
    category name; several model classes may share a category), the rest by equal name; when no
    name matches at all and nothing is explicit, by index if the counts are equal (else an
    :class:`InputError` naming both lists). Unmatched model classes are dropped; categories no class maps to
    are ``missing``."""
    model = tuple(str(c) for c in model_classes)
    ids = sorted(int(c) for c in categories)
    by_name: dict[str, int] = {}
    for c in ids:
        by_name.setdefault(_key(categories[c]), c)
    chosen: dict[int, int] = {}
    for src, dst in (explicit or {}).items():
        idx = [i for i, n in enumerate(model) if _key(n) == _key(src)]
        if not idx:
            raise InputError(f"class map: the model has no class {src!r}", fix=f"model classes: {', '.join(model)}")
        if _key(dst) not in by_name:
            raise InputError(f"class map: the dataset has no category {dst!r}",
                             fix=f"dataset categories: {', '.join(categories[c] for c in ids)}")
        for i in idx:
            chosen[i] = by_name[_key(dst)]
    matched = {i: by_name[_key(n)] for i, n in enumerate(model) if i not in chosen and _key(n) in by_name}
    by = "name"
    if not matched and not chosen:
        if len(model) != len(ids):  # by index a 80-class model's 'bicycle' was scored as an 8-class set's 'rider'
            show = lambda names: ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")  # noqa: E731
            raise InputError(f"no class name is shared between the model ({len(model)} classes: {show(list(model))}) "
                             f"and the dataset ({len(ids)} categories: {show([categories[c] for c in ids])}), and "
                             "their counts differ: matching them by position would score one class as another",
                             fix="name the pairs with --class-map MODEL=DATASET,... (e.g. person=pedestrian), or "
                                 "import the model with the dataset's names (--names)")
        by, matched = "index", {i: ids[i] for i in range(len(model))}
    chosen.update(matched)
    lut = tuple(chosen.get(i, -1) for i in range(len(model)))
    used = set(lut)
    return CategoryMap(
        to_category=lut,
        by=by,
        pairs=tuple((n, categories[c] if c >= 0 else None) for n, c in zip(model, lut)),
        dropped=tuple(n for n, c in zip(model, lut) if c < 0),
        missing=tuple(categories[c] for c in ids if c not in used),
    )
