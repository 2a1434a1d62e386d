"""Panoptic quality PQ = SQ x RQ (Kirillov et al., "Panoptic Segmentation", CVPR 2019), exactly as
the COCO panopticapi's ``pq_compute`` computes it.

Per image: segment areas are pixel counts of the id maps (id 0 = void). A ground-truth and a
predicted segment of the same category match when ``IoU > 0.5``, where the union leaves out the
predicted segment's pixels on void ground truth; crowd ground-truth segments never match. Unmatched
non-crowd ground-truth segments are false negatives. An unmatched predicted segment is a false
positive unless more than half of it lies on void or on a crowd region of its own category (with
several crowd regions of one category in an image, the last one listed, as panopticapi does).
Per category, over all images: ``PQ = sum(IoU of TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``
(0 without TP), ``RQ = TP / (TP + FP/2 + FN/2)``. Averages (all / things / stuff) are over the
categories with ``TP + FP + FN > 0``.

Reference: panopticapi's ``panopticapi/evaluation.py`` (cocodataset/panopticapi: ``PQStat``,
``pq_compute_single_core``, ``pq_compute``) and the Cityscapes benchmark's
``cityscapesscripts/evaluation/evalPanopticSemanticLabeling.py`` (cityscapesScripts 2.3, a port of
it: ``evaluatePanoptic``, ``average_pq``) are the same algorithm line for line; they differ only in
I/O (progress printed every 100 vs 30 images; ``evaluatePanoptic`` also writes a results file and
prints per-class rows; a missing folder raises vs exits). Here pixel pairs are enumerated in the
same (ground-truth id, prediction id) order and the averages add the classes in the dataset's
order, so every sum is formed in the same order and the scores equal ``pq_compute_single_core`` +
``average_pq``'s to the last bit (its multi-core sum may differ in the last bits);
``tests/eval/test_eval_panoptic_reference.py`` checks this on Cityscapes and synthetic scenes.

Where this module departs from them, on inputs they do not accept or do not define:

* ground-truth areas are pixel counts of the ground-truth id map; panopticapi reads them from the
  JSON's ``area`` field (the same number whenever the JSON describes its PNGs, as COCO's and
  Cityscapes' do; when they differ, a warning names the first segment and ``stale_areas`` counts them);
* a predicted id in the map without a :class:`~edgeseg.structures.Segment` raises
  :class:`InputError` naming the id and the image (panopticapi: ``KeyError``);
* with ``categories`` given (the dataset's), a predicted segment with pixels whose category the
  dataset does not list raises :class:`InputError` naming the category and the image (panopticapi:
  ``KeyError``), and scores are reported only for the dataset's categories; without ``categories``
  any category id counts and ``isthing`` comes from the segments;
* a predicted segment without pixels is skipped (panopticapi refuses the file with ``KeyError``;
  :mod:`edgeseg.eval.panoptic_io` never writes one);
* ``per_class`` lists the categories with ``TP + FP + FN > 0`` (panopticapi also lists the others,
  as zeros); an average over no category is 0 with ``n = 0`` (panopticapi divides by zero).

    metric = PanopticMetric({c.id: c.isthing for c in dataset.categories.values()})
    for sample in dataset:
        metric.update(predictor(sample.image()), sample.panoptic, sample.crowd_ids, name=sample.name)
    scores = metric.compute()       # scores.pq, scores.things.sq, scores.per_class[i].tp, ...
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..structures import PanopticResult

log = logging.getLogger("edgeseg.eval")

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
    name: str = ""


@dataclass(frozen=True)
class PQGroup:
    """Averages over ``n`` categories."""

    pq: float
    sq: float
    rq: float
    n: int


@dataclass(frozen=True)
class PanopticScores:
    """PQ/SQ/RQ (fractions in [0, 1]) of ``num_images`` images: averages and one :class:`PQClass`
    per category with ``TP + FP + FN > 0``, by category id."""

    all: PQGroup
    things: PQGroup
    stuff: PQGroup
    per_class: tuple[PQClass, ...]
    num_images: int = 0

    @property
    def pq(self) -> float:
        return self.all.pq

    def to_dict(self) -> dict[str, Any]:
        group = lambda g: {"pq": g.pq, "sq": g.sq, "rq": g.rq, "n": g.n}  # noqa: E731
        return {
            "all": group(self.all), "things": group(self.things), "stuff": group(self.stuff),
            "num_images": self.num_images,
            "per_class": {str(c.category_id): {"name": c.name, "isthing": c.isthing, "pq": c.pq, "sq": c.sq, "rq": c.rq,
                                               "tp": c.tp, "fp": c.fp, "fn": c.fn}
                          for c in self.per_class},
        }


class PanopticMetric:
    """Accumulates PQ statistics. ``categories`` maps category id -> isthing (the dataset's; else
    taken from the segments), ``names`` category id -> name (for the report)."""

    def __init__(self, categories: Mapping[int, bool] | None = None, names: Mapping[int, str] | None = None):
        self.categories = {int(k): bool(v) for k, v in (categories or {}).items()}
        self.names = {int(k): str(v) for k, v in (names or {}).items()}
        self.reset()

    def reset(self) -> None:
        self._iou: dict[int, float] = defaultdict(float)
        self._tp: dict[int, int] = defaultdict(int)
        self._fp: dict[int, int] = defaultdict(int)
        self._fn: dict[int, int] = defaultdict(int)
        self._isthing: dict[int, bool] = dict(self.categories)
        self._images = 0
        self.stale_areas = 0  # ground-truth segments whose JSON ``area`` is not their pixel count

    def update(self, pred: PanopticResult, gt: PanopticResult, gt_crowd_ids: Iterable[int] = (), *,
               name: str = "") -> None:
        """Add one image; ``name`` names it in error messages."""
        where = f" of {name}" if name else ""
        for what, r in (("prediction", pred), ("ground truth", gt)):
            if not isinstance(r, PanopticResult):
                raise InputError(f"PanopticMetric.update: the {what}{where} must be a PanopticResult, got "
                                 f"{type(r).__name__}", fix="PanopticResult(segment_ids, segments) (an id map alone "
                                 "does not say each segment's category)")
        if isinstance(gt_crowd_ids, (str, bytes)) or not isinstance(gt_crowd_ids, Iterable):
            raise InputError(f"PanopticMetric.update: gt_crowd_ids{where} must be a collection of segment ids, got "
                             f"{gt_crowd_ids!r}", fix="e.g. gt_crowd_ids=[12] or a set of ids")
        if pred.segment_ids.shape != gt.segment_ids.shape:
            raise InputError(f"panoptic prediction{where} is {list(pred.segment_ids.shape)} and its ground truth "
                             f"{list(gt.segment_ids.shape)}: they differ in size",
                             fix="predict at the ground truth's size (the image's own size)")
        gt_cat, pred_cat = _categories(gt), _categories(pred)
        crowd = set(int(i) for i in gt_crowd_ids)
        packed = gt.segment_ids.astype(np.int64).ravel() * _OFFSET + pred.segment_ids.astype(np.int64).ravel()
        pairs, counts = np.unique(packed, return_counts=True)
        inter = {(int(p // _OFFSET), int(p % _OFFSET)): int(n) for p, n in zip(pairs, counts)}
        gt_area, pred_area = defaultdict(int), defaultdict(int)
        for (g, p), n in inter.items():
            gt_area[g] += n
            pred_area[p] += n
        _check_ids(pred_area, pred_cat, f"panoptic prediction{where}")
        self._check_areas(gt, gt_area, where)
        self._check_categories(pred, pred_area, where)
        for seg in (*gt.segments, *pred.segments):
            self._isthing.setdefault(seg.category_id, seg.isthing)
        self._images += 1
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

    def _check_areas(self, gt: PanopticResult, gt_area: Mapping[int, int], where: str) -> None:
        """Warn (once) when the ground truth's ``area`` fields are not its pixel counts (PNGs resized
        without their JSON, for one): PQ here counts pixels, panopticapi would use the stale areas."""
        stale = [s for s in gt.segments if s.area and s.area != gt_area.get(int(s.id), 0)]
        if stale and not self.stale_areas:
            s = stale[0]
            log.warning("ground truth%s: segment %d has area %d in the JSON but %d pixels in its PNG: PQ counts the "
                        "pixels, panopticapi's pq_compute would use the JSON's areas and score differently; were "
                        "the PNGs resized without the JSON?", where, s.id, s.area, gt_area.get(int(s.id), 0))
        self.stale_areas += len(stale)

    def _check_categories(self, pred: PanopticResult, pred_area: Mapping[int, int], where: str) -> None:
        if not self.categories:
            return
        for s in pred.segments:
            if pred_area.get(int(s.id), 0) and int(s.category_id) not in self.categories:
                raise InputError(
                    f"panoptic prediction{where}: segment {s.id} has category {s.category_id}, which the dataset's "
                    f"categories ({', '.join(map(str, sorted(self.categories)))}) do not list",
                    fix="predict the dataset's category ids (the panoptic decoder's category_ids option maps "
                        "model classes to them)",
                )

    def compute(self) -> PanopticScores:
        """Scores so far. Averages add the classes in the order ``categories`` lists them (the
        dataset JSON's, as panopticapi does), then any others by id; ``per_class`` is by id."""
        seen = set(self._tp) | set(self._fp) | set(self._fn)
        per = []
        for cat in [c for c in self.categories if c in seen] + sorted(seen - set(self.categories)):
            tp, fp, fn = self._tp[cat], self._fp[cat], self._fn[cat]
            if tp + fp + fn == 0 or (self.categories and cat not in self.categories):
                continue
            iou = self._iou[cat]
            denom = tp + 0.5 * fp + 0.5 * fn
            per.append(PQClass(cat, self._isthing.get(cat, False), iou / denom, iou / tp if tp else 0.0, tp / denom,
                               tp, fp, fn, self.names.get(cat, "")))
        return PanopticScores(
            _group(per), _group([c for c in per if c.isthing]), _group([c for c in per if not c.isthing]),
            tuple(sorted(per, key=lambda c: c.category_id)), self._images,
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
        raise InputError(f"{what}: the id map has segment id(s) {unknown[:5]} with no Segment entry",
                         fix="describe every non-zero id of segment_ids in segments (0 is void)")


def category_ids_by_name(classes: Sequence[str], categories: Mapping[int, Any]) -> tuple[int, ...] | None:
    """The dataset category id of each class, matched by name (case aside), for a bundle that has no
    ids of its own (an imported model): None unless every class name is a category and neither the
    class names nor the category names repeat. Set it with ``predictor.set_options(category_ids=...)``."""
    by_name = {c.name.lower(): c.id for c in categories.values()}
    named = [n.lower() for n in classes]
    if len(by_name) != len(categories) or len(set(named)) != len(named) or not all(n in by_name for n in named):
        return None
    return tuple(by_name[n] for n in named)


#: what a class map sends a class to when its segments are to be void (neither scored nor false positives)
VOID = "void"


def panoptic_class_map(classes: Sequence[str], own_ids: Sequence[int], categories: Mapping[int, Any],
                       pairs: Mapping[str, str]) -> dict[int, int | None]:
    """The category id a model writes for each class (``own_ids``, else the class index) -> the dataset category
    id its segments are scored as (None: void), from ``pairs`` (model class -> dataset category name, or
    :data:`VOID`), the classes left out matching categories of the same name (case aside). Names that are no class
    or category, and classes left unmatched, raise :class:`InputError` naming them and the fix."""
    by_name = {c.name.lower(): c.id for c in categories.values()}
    lower = {n.lower(): n for n in classes}
    listed = ", ".join(c.name for c in categories.values())
    unknown = [m for m in pairs if m.lower() not in lower]
    if unknown:
        raise InputError(f"--class-map names {', '.join(map(repr, unknown))}, which the model's classes "
                         f"({', '.join(classes)}) do not include", fix="write MODEL_CLASS=DATASET_CATEGORY with the "
                                                                       "bundle's class names (edgeseg info BUNDLE)")
    wanted = {lower[m.lower()]: d for m, d in pairs.items()}
    bad = [d for d in wanted.values() if d.lower() != VOID and d.lower() not in by_name]
    if bad:
        raise InputError(f"--class-map maps to {', '.join(map(repr, bad))}, which the dataset's categories do not "
                         f"include", fix=f"map each class to one of: {listed}; or to {VOID} to leave its segments out")
    out: dict[int, int | None] = {}
    unmatched = []
    for k, name in enumerate(classes):
        target = wanted.get(name, name)
        written = int(own_ids[k]) if own_ids else k
        if target.lower() == VOID:
            out[written] = None
        elif target.lower() in by_name:
            out[written] = by_name[target.lower()]
        else:
            unmatched.append(name)
    if unmatched:
        raise InputError(f"model classes with no dataset category of their name: {', '.join(unmatched)}",
                         fix=f"add them to --class-map as CLASS=CATEGORY (one of: {listed}) or CLASS={VOID} "
                             f"(e.g. --class-map '{unmatched[0]}={VOID}')")
    return out


def remap_categories(result: PanopticResult, lut: Mapping[int, int | None],
                     isthing: Mapping[int, bool]) -> PanopticResult:
    """``result`` with each segment's category sent through ``lut`` (written id -> dataset id, None: void): a
    voided segment's pixels become 0, and the segments of one stuff category (two classes mapped onto it) become
    one, as a panoptic prediction has one segment per stuff category; ``isthing`` is the dataset's. Categories
    ``lut`` does not list are kept as they are."""
    ids = np.asarray(result.segment_ids)
    old, new, segments = [], [], []
    stuff_seen: dict[int, int] = {}
    areas: dict[int, int] = {}
    for seg in result.segments:
        cat = lut.get(int(seg.category_id), int(seg.category_id))
        if cat is None:
            old.append(seg.id), new.append(0)
            continue
        thing = bool(isthing.get(cat, seg.isthing))
        if not thing and cat in stuff_seen:
            old.append(seg.id), new.append(stuff_seen[cat])
            areas[stuff_seen[cat]] += int(seg.area)
            continue
        if not thing:
            stuff_seen[cat] = seg.id
        areas[seg.id] = int(seg.area)
        segments.append(seg)
        old.append(seg.id), new.append(seg.id)
    out = ids
    if any(o != n for o, n in zip(old, new)):
        order = np.argsort(old)
        keys, values = np.asarray(old, ids.dtype)[order], np.asarray(new, ids.dtype)[order]
        pos = np.clip(np.searchsorted(keys, ids), 0, len(keys) - 1)
        out = np.where(keys[pos] == ids, values[pos], ids).astype(ids.dtype)
    kept = tuple(replace(s, category_id=lut.get(int(s.category_id), int(s.category_id)),
                         isthing=bool(isthing.get(lut.get(int(s.category_id), int(s.category_id)), s.isthing)),
                         area=areas[s.id]) for s in segments)
    return replace(result, segment_ids=out, segments=kept)


def evaluate_panoptic(
    predictor: Callable[[np.ndarray], Any],
    dataset: Sequence,
    *,
    progress: bool = True,
    limit: int | None = None,
    on_prediction: Callable[[Any, PanopticResult], None] | None = None,
    skipped: list | None = None,
) -> PanopticScores:
    """PQ of ``predictor`` (RGB ``uint8 [H, W, 3]`` -> :class:`PanopticResult` at the image's size,
    segments carrying the dataset's category ids) on a panoptic dataset (``PanopticSample``s with
    ``name``, ``image()``, ``panoptic``, ``crowd_ids``; ``categories`` id -> object with ``id``,
    ``name``, ``isthing``). ``limit`` scores the first N images; ``on_prediction(sample, result)`` is
    called for each scored image (to save it). The tqdm bar shows when ``progress`` and stderr is a
    terminal. ``skipped``: as :func:`~edgeseg.eval.evaluate.evaluate`'s (an image that cannot be read is left out,
    its truth with it)."""
    from .evaluate import readable_samples

    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    cats = list(getattr(dataset, "categories", {}).values())
    metric = PanopticMetric({c.id: c.isthing for c in cats}, {c.id: c.name for c in cats})
    total = len(dataset) if limit is None else min(limit, len(dataset))
    for sample, image in readable_samples(dataset, total, progress, skipped):
        result = predictor(image)
        if not isinstance(result, PanopticResult):
            raise InputError(f"prediction for {sample.name!r} is a {type(result).__name__}, not a PanopticResult",
                             fix="PQ needs a panoptic bundle (manifest task 'panoptic')")
        metric.update(result, sample.panoptic, sample.crowd_ids, name=repr(sample.name))
        if on_prediction is not None:
            on_prediction(sample, result)
    if skipped and len(skipped) == total:  # nothing could be read: the first reason, with its own fix
        raise skipped[0]["exception"]
    return metric.compute()
