"""PQ against the reference implementation on the same saved files.

The reference is the Cityscapes benchmark's ``evalPanopticSemanticLabeling`` (cityscapesScripts
2.3), panopticapi's ``pq_compute`` ported line for line. Predictions are made by perturbing ground
truth (dropped, merged, shifted and relabelled segments, false things on void, crowd regions, an
empty prediction, a void-only image), written with :mod:`edgeseg.eval.panoptic_io`, and scored by
the reference's ``pq_compute_single_core`` + ``average_pq`` (and ``evaluatePanoptic``, on several
processes) from the files, and by :class:`PanopticMetric` from the same results in memory and
(:func:`score_saved`) from the files.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from edgeseg.data import CocoPanoptic, SceneGenerator
from edgeseg.data.coco_panoptic import Category
from edgeseg.data.synthetic import CLASSES, STUFF_CLASSES
from edgeseg.eval import PanopticMetric
from edgeseg.eval.panoptic_io import MAX_ID, PanopticWriter, prediction_paths, score_saved, segments_info
from edgeseg.structures import ImageShape, PanopticResult, Segment

ref = pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling")


# ---- the reference on files ------------------------------------------------------------------
def reference_stat(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path, image_ids=None):
    """``pq_compute_single_core`` on the ground-truth annotations of ``image_ids`` (all when None),
    each paired with its prediction by image id as ``evaluatePanoptic`` pairs them: (PQStat, categories)."""
    gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    categories = {c["id"]: c for c in gt["categories"]}
    by_id = {a["image_id"]: a for a in pred["annotations"]}
    pairs = [(a, by_id[a["image_id"]]) for a in gt["annotations"] if image_ids is None or a["image_id"] in image_ids]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = ref.pq_compute_single_core(0, pairs, str(gt_dir), str(pred_dir), categories)
    return stat, categories


def run_reference(*args, **kw):
    """:func:`reference_stat` and its ``average_pq``: (results, PQStat, categories)."""
    stat, categories = reference_stat(*args, **kw)
    return ref.average_pq(stat, categories), stat, categories


def assert_same(ours, results, stat, categories, exact: bool = True) -> None:
    """Every number equal to the reference's: within 1e-12, and to the last bit when ``exact``."""
    def same(a, b):
        assert abs(a - b) <= 1e-12 and (not exact or a == b), (a, b)

    for name, group in (("All", ours.all), ("Things", ours.things), ("Stuff", ours.stuff)):
        assert group.n == results[name]["n"]
        for k in ("pq", "sq", "rq"):
            same(getattr(group, k), results[name][k])
    per = {c.category_id: c for c in ours.per_class}
    assert set(per) <= set(categories)
    for cat, info in categories.items():
        s = stat[cat]
        if s.tp + s.fp + s.fn == 0:  # the reference lists it with zeros, we leave it out
            assert cat not in per and results["per_class"][cat] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        c = per[cat]
        assert (c.tp, c.fp, c.fn) == (s.tp, s.fp, s.fn), cat
        assert c.isthing == (info["isthing"] == 1) and c.name == info["name"]
        for k in ("pq", "sq", "rq"):
            same(getattr(c, k), results["per_class"][cat][k])


# ---- perturbing ground truth -----------------------------------------------------------------
@dataclass
class Draft:
    """A prediction being made from ground truth: an id map and its segments, edited in place."""

    ids: np.ndarray
    segs: dict[int, Segment]

    @classmethod
    def of(cls, r: PanopticResult) -> "Draft":
        return cls(r.segment_ids.astype(np.int32).copy(), {s.id: s for s in r.segments})

    def result(self) -> PanopticResult:
        return PanopticResult(self.ids, tuple(self.segs.values()))

    def things(self, category_id: int | None = None) -> list[int]:
        """Thing segment ids with pixels, largest first."""
        out = [s.id for s in self.segs.values() if s.isthing and (category_id is None or s.category_id == category_id)]
        return sorted((i for i in out if (self.ids == i).any()), key=lambda i: -int((self.ids == i).sum()))

    def of_category(self, category_id: int) -> int:
        return next(s.id for s in self.segs.values() if s.category_id == category_id)

    def drop(self, sid: int) -> None:
        self.ids[self.ids == sid] = 0
        del self.segs[sid]

    def merge(self, keep: int, gone: int) -> None:
        self.ids[self.ids == gone] = keep
        del self.segs[gone]

    def shift(self, sid: int, dy: int, dx: int) -> None:
        mask = self.ids == sid
        self.ids[mask] = 0
        self.ids[np.roll(mask, (dy, dx), axis=(0, 1))] = sid

    def relabel(self, sid: int, category_id: int) -> None:
        self.segs[sid] = replace(self.segs[sid], category_id=category_id)

    def paint(self, mask: np.ndarray, category_id: int, isthing: bool) -> int:
        sid = max([*self.segs, int(self.ids.max())]) + 1
        self.ids[mask] = sid
        self.segs[sid] = Segment(sid, category_id, isthing)
        return sid

    def add_empty(self, category_id: int) -> None:
        """A segment listed without pixels (the writer leaves it out, the metric skips it)."""
        sid = max([*self.segs, int(self.ids.max())]) + 1
        self.segs[sid] = Segment(sid, category_id, False)


def box(shape, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def save_predictions(out: Path, gt_json: Path, samples, preds, categories) -> tuple[Path, Path]:
    pred_json, pred_dir = prediction_paths(out, gt_json)
    with PanopticWriter(pred_json, pred_dir, categories=categories) as w:
        for s, p in zip(samples, preds):
            w.add(s.image_id, s.file_name, p)
    return pred_json, pred_dir


def metric_of(categories, samples, preds) -> PanopticMetric:
    m = PanopticMetric({c.id: c.isthing for c in categories.values()}, {c.id: c.name for c in categories.values()})
    for s, p in zip(samples, preds):
        m.update(p, s.panoptic, s.crowd_ids, name=s.name)
    return m


# ---- Cityscapes (real data) ------------------------------------------------------------------
def cityscapes_predictions(samples) -> list[PanopticResult]:
    """One perturbation per image of tubingen 1, 2, 3, 4, 6, 8, 9 (val annotations 0..6)."""
    preds = []
    for k, s in enumerate(samples):
        d, shape = Draft.of(s.panoptic), s.panoptic.segment_ids.shape
        void = s.panoptic.segment_ids == 0
        if k == 0:  # the car crowd kept as a car (ignored), a false car ring around it, a false person over it
            (crowd,) = s.crowd_ids
            ys, xs = np.nonzero(s.panoptic.segment_ids == crowd)
            around = box(shape, ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3)
            d.paint(around & ~(s.panoptic.segment_ids == crowd), 26, True)
            d.paint(box(shape, ys.min(), ys.max() + 1, xs.min(), (xs.min() + xs.max()) // 2 + 1), 24, True)
        elif k == 1:  # the two largest cars merged, then the next two
            cars = d.things(26)
            d.merge(cars[0], cars[1])
            d.merge(cars[2], cars[3])
        elif k == 2:  # persons shifted by (2, 3), the largest car by 12 columns
            for p in d.things(24):
                d.shift(p, 2, 3)
            d.shift(d.things(26)[0], 0, 12)
        elif k == 3:  # stuff relabelled: road called sidewalk, vegetation called terrain
            d.relabel(d.of_category(7), 8)
            d.relabel(d.of_category(21), 22)
        elif k == 4:  # false riders: one mostly on void, one mostly off it
            ys, xs = np.nonzero(void)
            y, x = int(np.median(ys)), int(np.median(xs))
            d.paint(box(shape, y - 6, y + 6, x - 6, x + 6) & (void | (d.ids == 0)), 25, True)
            d.paint(box(shape, 20, 60, 20, 60), 25, True)
        elif k == 5:  # two cars and the sky dropped, a segment listed without pixels
            for c in d.things(26)[:2]:
                d.drop(c)
            d.drop(d.of_category(23))
            d.add_empty(7)
        else:  # nothing predicted at all
            d = Draft(np.zeros(shape, np.int32), {})
        preds.append(d.result())
    return preds


@pytest.mark.data
def test_cityscapes_against_reference(data_root, tmp_path):
    root = data_root / "cityscapes_panoptic"
    gt_json = root / "panoptic_val.json"
    dataset = CocoPanoptic(gt_json)
    samples = [dataset[i] for i in range(7)]
    assert [s.image_id for s in samples] == [1, 2, 3, 4, 5, 6, 7]
    annotations = json.loads(gt_json.read_text())["annotations"][:7]
    for s, ann in zip(samples, annotations):  # the reference reads GT areas from the JSON, we count pixels:
        assert segments_info(s.panoptic, s.crowd_ids) == ann["segments_info"]  # the same (and our bbox is COCO's)
    preds = cityscapes_predictions(samples)
    pred_json, pred_dir = save_predictions(tmp_path, gt_json, samples, preds, dataset.categories)
    assert pred_json.name == "panoptic_val_pred.json" and len(list(pred_dir.glob("*.png"))) == 7

    results, stat, categories = run_reference(gt_json, root / "panoptic_val", pred_json, pred_dir, {1, 2, 3, 4, 5, 6, 7})
    ours = metric_of(dataset.categories, samples, preds).compute()
    assert ours.num_images == 7
    assert_same(ours, results, stat, categories)
    # the perturbations did what they say: misses and false positives in the classes they touched
    per = {c.category_id: c for c in ours.per_class}
    assert per[26].fn > 0 and per[26].fp > 0 and per[8].fp == 1 and per[22].fp == 1 and per[25].fp >= 1
    assert 0.3 < ours.pq < 0.95

    sub = CocoPanoptic(_subset_json(gt_json, tmp_path / "panoptic_val7.json", 7), root / "panoptic_val")
    assert_same(score_saved(sub, pred_json), results, stat, categories)  # our reading of the saved files


def _subset_json(src: Path, dst: Path, n: int) -> Path:
    data = json.loads(src.read_text())
    data["annotations"] = data["annotations"][:n]
    data["images"] = data["images"][:n]
    dst.write_text(json.dumps(data))
    return dst


# ---- synthetic scenes (no data needed) -------------------------------------------------------
SYNTH_CATEGORIES = {i: Category(i, name, name not in STUFF_CLASSES) for i, name in enumerate(CLASSES)}


def synthetic_ground_truth(tmp_path: Path) -> tuple[Path, list]:
    """Five 72x96 frames written as a COCO-panoptic ground truth: frame 0 with a void band (rows
    0..7), frame 1 with its largest thing a crowd region, frame 2 void only, frames 3 and 4 as they are."""
    gen = SceneGenerator(ImageShape(72, 96), seed=2)
    frames = [gen.render(t).panoptic for t in (0, 15, 30, 45, 60)]
    gt_json = tmp_path / "panoptic_val.json"
    with PanopticWriter(gt_json, categories=SYNTH_CATEGORIES) as w:
        for k, f in enumerate(frames):
            ids, crowd = f.segment_ids.copy(), ()
            if k == 0:
                ids[:8] = 0
            elif k == 1:
                crowd = Draft.of(f).things()[:1]
            elif k == 2:
                ids[:] = 0
            w.add(k + 1, f"frame{k}.png", PanopticResult(ids, f.segments), crowd, image_file_name=f"frame{k}.jpg")
    return gt_json, frames


def synthetic_predictions(frames, samples) -> list[PanopticResult]:
    shape = frames[0].segment_ids.shape
    preds = []
    for k, (f, s) in enumerate(zip(frames, samples)):
        d = Draft.of(f)  # from the frame itself: on frame 0 and 2 it covers what the truth made void
        if k == 0:
            d.drop(d.things()[0])
            d.paint(box(shape, 2, 14, 40, 52), 3, True)  # 6 of 12 rows on void: exactly half, a false positive
            d.paint(box(shape, 0, 10, 60, 70), 4, True)  # 8 of 10 rows on void: ignored
        elif k == 1:  # the crowd region kept as its category (ignored); its left half called another thing
            (crowd,) = s.crowd_ids
            cat = next(g.category_id for g in s.panoptic.segments if g.id == crowd)
            mask = s.panoptic.segment_ids == crowd
            xs = np.nonzero(mask)[1]
            d.paint(mask & box(shape, 0, shape[0], 0, (xs.min() + xs.max()) // 2 + 1), 3 + (cat - 2) % 3, True)
        elif k == 3:
            d = Draft(np.zeros(shape, np.int32), {})
        elif k == 4:
            things = d.things()
            d.merge(things[0], things[1])
            for t in d.things():
                d.shift(t, 3, -4)
            d.relabel(d.of_category(1), 2)  # ground called road
            d.add_empty(0)
        preds.append(d.result())
    return preds


def _big_ids(r: PanopticResult) -> PanopticResult:
    """The same segmentation with thing ids beyond what a PNG holds (the writer renumbers them)."""
    k = 20011  # thing ids 1000+ -> above 256^3 - 1
    return PanopticResult((r.segment_ids.astype(np.int64) * k).astype(np.int32),
                          tuple(replace(s, id=s.id * k) for s in r.segments))


def test_synthetic_against_reference(tmp_path):
    gt_json, frames = synthetic_ground_truth(tmp_path)
    dataset = CocoPanoptic(gt_json)
    samples = list(dataset)
    assert samples[2].panoptic.segments == () and not samples[2].panoptic.segment_ids.any()
    assert len(samples[1].crowd_ids) == 1
    preds = synthetic_predictions(frames, samples)
    preds[4] = _big_ids(preds[4])
    assert preds[4].segment_ids.max() > MAX_ID
    pred_json, pred_dir = save_predictions(tmp_path / "out", gt_json, samples, preds, dataset.categories)

    results, stat, categories = run_reference(gt_json, tmp_path / "panoptic_val", pred_json, pred_dir)
    ours = metric_of(dataset.categories, samples, preds).compute()
    assert_same(ours, results, stat, categories)
    assert_same(score_saved(dataset, pred_json), results, stat, categories)
    assert ours.things.n == 3 and ours.stuff.n == 3 and 0.2 < ours.pq < 0.9

    # evaluatePanoptic: the benchmark's entry point, its images split over processes (sums may differ in the last bits)
    with contextlib.redirect_stdout(io.StringIO()):
        full = ref.evaluatePanoptic(str(gt_json), str(tmp_path / "panoptic_val"), str(pred_json), str(pred_dir),
                                    str(tmp_path / "results.json"))
    assert_same(ours, full, stat, categories, exact=False)


def test_synthetic_void_and_crowd_rules_against_reference(tmp_path):
    """Frame 0 alone: a false thing exactly half on void counts, one mostly on void does not; frame 1
    alone: a segment over the crowd region of its category is ignored; frame 2: all on void."""
    gt_json, frames = synthetic_ground_truth(tmp_path)
    dataset = CocoPanoptic(gt_json)
    samples = list(dataset)
    preds = synthetic_predictions(frames, samples)
    pred_json, pred_dir = save_predictions(tmp_path / "out", gt_json, samples, preds, dataset.categories)
    for k, s in enumerate(samples[:2]):
        results, stat, categories = run_reference(gt_json, tmp_path / "panoptic_val", pred_json, pred_dir, {s.image_id})
        ours = metric_of(dataset.categories, [s], [preds[k]]).compute()
        assert_same(ours, results, stat, categories)
        fp = {c.category_id: c.fp for c in ours.per_class}
        if k == 0:
            assert fp[3] == 1 and fp.get(4, 0) == 0
        else:  # on the crowd: of its own category ignored, of another a false positive
            cat = next(g.category_id for g in s.panoptic.segments if g.id in s.crowd_ids)
            assert fp[cat] == 0 and fp[3 + (cat - 2) % 3] == 1
    # void-only truth (frame 2): every predicted segment lies on void, nothing counts; the reference
    # then divides by zero categories, we report 0 with n = 0 (module doc)
    stat, categories = reference_stat(gt_json, tmp_path / "panoptic_val", pred_json, pred_dir, {3})
    assert all(stat[c].tp + stat[c].fp + stat[c].fn == 0 for c in categories)
    with pytest.raises(ZeroDivisionError):
        ref.average_pq(stat, categories)
    ours = metric_of(dataset.categories, [samples[2]], [preds[2]]).compute()
    assert ours.per_class == () and (ours.all.n, ours.all.pq, ours.things.n, ours.stuff.n) == (0, 0.0, 0, 0)


def test_saved_files_round_trip(tmp_path):
    """The PNGs hold the ids, the JSON area and bbox the pixels, and empty segments are left out."""
    gt_json, frames = synthetic_ground_truth(tmp_path)
    dataset = CocoPanoptic(gt_json)
    samples = list(dataset)
    preds = synthetic_predictions(frames, samples)
    pred_json, pred_dir = save_predictions(tmp_path / "out", gt_json, samples, preds, dataset.categories)
    data = json.loads(pred_json.read_text())
    assert [a["image_id"] for a in data["annotations"]] == [1, 2, 3, 4, 5]
    assert [c["id"] for c in data["categories"]] == list(range(6))
    from edgeseg.eval.panoptic_io import read_panoptic_results

    back = read_panoptic_results(pred_json, categories=dataset.categories)
    for ann, p in zip(data["annotations"], preds):
        got = back[ann["image_id"]]
        np.testing.assert_array_equal(got.segment_ids, p.segment_ids)
        with_pixels = [s for s in p.segments if (p.segment_ids == s.id).any()]
        assert [s["id"] for s in ann["segments_info"]] == [s.id for s in with_pixels]
        for info in ann["segments_info"]:
            ys, xs = np.nonzero(p.segment_ids == info["id"])
            assert info["area"] == len(ys) and info["iscrowd"] == 0
            assert info["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert not list((tmp_path / "out").rglob("*.tmp"))
