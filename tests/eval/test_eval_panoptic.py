"""PQ / SQ / RQ as the COCO panopticapi defines them: GT vs GT, and perturbed predictions by hand."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgeseg.data import CocoPanoptic, SceneGenerator
from edgeseg.eval import PanopticMetric
from edgeseg.structures import ImageShape, PanopticResult, Segment


@pytest.fixture(scope="module")
def coco(data_root):
    root = data_root / "panoptic_coco"
    return CocoPanoptic(root / "panoptic_examples.json", root / "panoptic_examples", root / "input_images")


@pytest.mark.data
def test_coco_ground_truth_against_itself(coco):
    assert len(coco) == 2
    m = PanopticMetric({c.id: c.isthing for c in coco.categories.values()})
    n_segments = 0
    for s in coco:
        for seg in s.panoptic.segments:  # areas in the JSON equal the PNG's pixel counts
            assert seg.area == int((s.panoptic.segment_ids == seg.id).sum())
        m.update(s.panoptic, s.panoptic, s.crowd_ids)
        n_segments += len(s.panoptic.segments) - len(s.crowd_ids)
    r = m.compute()
    assert r.pq == r.all.sq == r.all.rq == 1.0 and r.things.pq == 1.0 and r.stuff.pq == 1.0
    assert sum(c.tp for c in r.per_class) == n_segments and all(c.fp == c.fn == 0 for c in r.per_class)
    assert coco[0].image().shape == coco[0].panoptic.segment_ids.shape + (3,)


@pytest.mark.data
def test_coco_perturbed_prediction_by_hand(coco):
    s = coco[0]  # 000000142238: 13 persons + a person crowd, a sports ball (37), stuff 184, 187, 193
    assert s.name == "000000142238" and s.crowd_ids == {3153362}
    ids = s.panoptic.segment_ids.copy()
    segs = {seg.id: seg for seg in s.panoptic.segments}
    ids[ids == 4917453] = 0  # (a) a person deleted -> FN
    del segs[4917453]
    segs[11829830] = replace(segs[11829830], category_id=193)  # (b) stuff 187 called 193 -> FN 187, FP 193
    ys, xs = np.nonzero(ids == 2035955)  # (c) half of a person (2301 px) set to void: IoU 1151/2301 > 0.5
    ids[ys[:1150], xs[:1150]] = 0
    pred = PanopticResult(ids, tuple(segs.values()))
    m = PanopticMetric({c.id: c.isthing for c in coco.categories.values()})
    m.update(pred, s.panoptic, s.crowd_ids)
    r = {c.category_id: c for c in m.compute().per_class}
    person_iou = 11 + 1151 / 2301
    assert (r[1].tp, r[1].fp, r[1].fn) == (12, 0, 1)
    assert r[1].pq == pytest.approx(person_iou / 12.5, rel=1e-12)
    assert r[1].sq == pytest.approx(person_iou / 12, rel=1e-12) and r[1].rq == 12 / 12.5
    assert (r[187].tp, r[187].fp, r[187].fn, r[187].pq, r[187].sq) == (0, 0, 1, 0.0, 0.0)
    assert (r[193].tp, r[193].fp, r[193].fn) == (1, 1, 0) and r[193].pq == pytest.approx(2 / 3)
    assert r[37].pq == r[184].pq == 1.0
    out = m.compute()
    assert out.things.n == 2 and out.things.pq == pytest.approx((person_iou / 12.5 + 1) / 2, rel=1e-12)
    assert out.stuff.n == 3 and out.stuff.pq == pytest.approx((1 + 0 + 2 / 3) / 3, rel=1e-12)
    assert out.all.pq == pytest.approx((person_iou / 12.5 + 1 + 1 + 0 + 2 / 3) / 5, rel=1e-12)


def test_void_and_crowd_rules_tiny():
    gt_ids = np.array([[1, 1, 1, 1], [2, 2, 0, 0], [3, 3, 3, 3]], np.int32)
    gt = PanopticResult(gt_ids, (Segment(1, 5, True), Segment(2, 5, True), Segment(3, 9, False)))
    pred_ids = np.array([[7, 7, 7, 8], [8, 8, 8, 8], [3, 3, 3, 3]], np.int32)
    pred = PanopticResult(pred_ids, (Segment(7, 5, True), Segment(8, 5, True), Segment(3, 9, False)))
    m = PanopticMetric()
    m.update(pred, gt, gt_crowd_ids={2})
    r = {c.category_id: c for c in m.compute().per_class}
    # seg 7 vs gt 1: inter 3, union 3+4-3-0 = 4 -> IoU 0.75 TP. Pred 8 (5 px): 1 on gt 1, 2 on crowd 2,
    # 2 on void -> 4/5 on void+crowd of its class -> not FP. Crowd gt 2 is never a FN.
    assert (r[5].tp, r[5].fp, r[5].fn) == (1, 0, 0) and r[5].pq == 0.75
    assert (r[9].tp, r[9].pq) == (1, 1.0)


def test_synthetic_panoptic_truth_scores_one():
    gen = SceneGenerator(ImageShape(72, 96), seed=2)
    m = PanopticMetric()
    for t in (0, 25, 50):
        p = gen.render(t).panoptic
        m.update(p, p)
    r = m.compute()
    assert r.pq == 1.0 and r.things.n == 3 and r.stuff.n == 3
