"""Panoptic quality PQ = SQ x RQ (Kirillov et al., "Panoptic Segmentation", CVPR 2019), exactly as
the COCO panopticapi's ``pq_compute`` computes it.

Per image: segment areas are pixel counts of the id maps (id 0 = void). A ground-truth and a
predicted segment of the same category match when ``IoU > 0.5``, where the union leaves out the
predicted segment's pixels on void ground truth; crowd ground-truth segments never match. Unmatched
non-crowd ground-truth segments are false negatives. An unmatched predicted segment is a false
positive unless more than half of it lies on void or on a crowd region of its own category.
Per category, over all images: ``PQ = sum(IoU of TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``
(0 without TP), ``RQ = TP / (TP + FP/2 + FN/2)``. Averages (all / things / stuff) are over the
categories with ``TP + FP + FN > 0``.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import PanopticResult

_OFFSET = 1 << 32  # pairs (gt id, pred id) packed into one int64


@dataclass(frozen=True)
class PQClass:
    category_id: int
    isthing: bool
    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class PQGroup:
    """Averages over ``n`` categories."""

    pq: float
    sq: float
    rq: float
    n: int


@dataclass(frozen=True)
class PanopticScores:
    all: PQGroup
    things: PQGroup
    stuff: PQGroup
    per_class: tuple[PQClass, ...]

    @property
    def pq(self) -> float:
        return self.all.pq

    def to_dict(self) -> dict[str, Any]:
        group = lambda g: {"pq": g.pq, "sq": g.sq, "rq": g.rq, "n": g.n}  # noqa: E731
        return {
            "all": group(self.all), "things": group(self.things), "stuff": group(self.stuff),
            "per_class": {str(c.category_id): {"pq": c.pq, "sq": c.sq, "rq": c.rq, "tp": c.tp, "fp": c.fp, "fn": c.fn}
                          for c in self.per_class},
        }


class PanopticMetric:
    """Accumulates PQ statistics. ``categories`` maps category id -> isthing (else taken from segments)."""

    def __init__(self, categories: Mapping[int, bool] | None = None):
        self.categories = dict(categories or {})
        self.reset()

    def reset(self) -> None:
        self._iou: dict[int, float] = defaultdict(float)
        self._tp: dict[int, int] = defaultdict(int)
        self._fp: dict[int, int] = defaultdict(int)
        self._fn: dict[int, int] = defaultdict(int)
        self._isthing: dict[int, bool] = dict(self.categories)

    def update(self, pred: PanopticResult, gt: PanopticResult, gt_crowd_ids: Iterable[int] = ()) -> None:
        if pred.segment_ids.shape != gt.segment_ids.shape:
            raise InputError(f"panoptic prediction {list(pred.segment_ids.shape)} and ground truth "
                             f"{list(gt.segment_ids.shape)} differ in size")
        gt_cat, pred_cat = _categories(gt), _categories(pred)
        for seg in (*gt.segments, *pred.segments):
            self._isthing.setdefault(seg.category_id, seg.isthing)
        crowd = set(int(i) for i in gt_crowd_ids)
        pairs, counts = np.unique(
            gt.segment_ids.astype(np.int64).ravel() * _OFFSET + pred.segment_ids.astype(np.int64).ravel(), return_counts=True
        )
        inter = {(int(p // _OFFSET), int(p % _OFFSET)): int(n) for p, n in zip(pairs, counts)}
        gt_area, pred_area = defaultdict(int), defaultdict(int)
        for (g, p), n in inter.items():
            gt_area[g] += n
            pred_area[p] += n
        _check_ids(pred_area, pred_cat, "prediction")
        matched_gt, matched_pred = set(), set()
        for (g, p), n in inter.items():
            if g not in gt_cat or p not in pred_cat or g in crowd or gt_cat[g] != pred_cat[p]:
                continue
            union = pred_area[p] + gt_area[g] - n - inter.get((0, p), 0)
            iou = n / union
            if iou > 0.5:
                self._tp[gt_cat[g]] += 1
                self._iou[gt_cat[g]] += iou
                matched_gt.add(g), matched_pred.add(p)
        crowd_by_cat: dict[int, int] = {}
        for g, cat in gt_cat.items():
            if g in matched_gt:
                continue
            if g in crowd:
                crowd_by_cat[cat] = g
            else:
                self._fn[cat] += 1
        for p, cat in pred_cat.items():
            if p in matched_pred or pred_area[p] == 0:  # panopticapi refuses empty segments; we skip them
                continue
            covered = inter.get((0, p), 0) + (inter.get((crowd_by_cat[cat], p), 0) if cat in crowd_by_cat else 0)
            if covered / pred_area[p] > 0.5:
                continue
            self._fp[cat] += 1

    def compute(self) -> PanopticScores:
        per = []
        for cat in sorted(set(self._tp) | set(self._fp) | set(self._fn)):
            tp, fp, fn = self._tp[cat], self._fp[cat], self._fn[cat]
            if tp + fp + fn == 0:
                continue
            iou = self._iou[cat]
            denom = tp + 0.5 * fp + 0.5 * fn
            per.append(PQClass(cat, self._isthing.get(cat, False), iou / denom, iou / tp if tp else 0.0, tp / denom, tp, fp, fn))
        return PanopticScores(
            _group(per), _group([c for c in per if c.isthing]), _group([c for c in per if not c.isthing]), tuple(per)
        )


def _group(classes: list[PQClass]) -> PQGroup:
    n = len(classes)
    if n == 0:
        return PQGroup(0.0, 0.0, 0.0, 0)
    return PQGroup(sum(c.pq for c in classes) / n, sum(c.sq for c in classes) / n, sum(c.rq for c in classes) / n, n)


def _categories(r: PanopticResult) -> dict[int, int]:
    return {int(s.id): int(s.category_id) for s in r.segments}


def _check_ids(areas: Mapping[int, int], segments: Mapping[int, int], what: str) -> None:
    unknown = sorted(i for i in areas if i != 0 and i not in segments)
    if unknown:
        raise InputError(f"{what} id map has segment ids {unknown[:5]} with no Segment entry")
