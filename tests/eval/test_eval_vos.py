"""J&F as the DAVIS evaluation computes it: hand-computed cases, the reference's special cases,
an independent brute-force F, the statistics, and the copy-first-mask reference number on real data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.eval.vos import (
    Statistics, VOSMetric, bound_pixels, boundary_measure, disk, evaluate_sequence, region_similarity, seg2bmap,
)


def square(shape, top, left, side):
    m = np.zeros(shape, bool)
    m[top : top + side, left : left + side] = True
    return m


def test_disk_is_skimage_disk():
    assert disk(0).tolist() == [[1]]
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert disk(3).tolist() == [
        [0, 0, 0, 1, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 0, 0, 0],
    ]
    assert disk(8.0).shape == (17, 17) and disk(8.0).dtype == np.uint8  # the official code passes a float (np.ceil)
    assert disk(8).sum() == 197  # lattice points with dy^2 + dx^2 <= 64


def test_bound_pixels():
    assert bound_pixels((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert bound_pixels((100, 100)) == 2  # ceil(0.008 * 141.4)
    assert bound_pixels((100, 100), bound_th=3) == 3  # >= 1 means pixels


def test_seg2bmap_hand_made():
    seg = np.zeros((5, 6), bool)
    seg[1:3, 2:4] = True
    # a pixel is boundary when it differs from its right, lower or lower-right neighbour
    expected = np.array([
        [0, 1, 1, 1, 0, 0],
        [0, 1, 0, 1, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ], bool)
    assert np.array_equal(seg2bmap(seg), expected)
    # last row / column compare only along themselves; the bottom-right pixel never is boundary
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True
    assert seg2bmap(corner).astype(int).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0]]
    assert not seg2bmap(np.ones((4, 4), bool)).any()
    assert not seg2bmap(np.zeros((4, 4), bool)).any()


@pytest.mark.parametrize("side", [6, 10, 20])
def test_square_ring_has_4a_pixels(side):
    m = square((40, 40), 8, 9, side)
    b = seg2bmap(m)
    # the ring of the box [top-1, bottom] x [left-1, right]
    ring = square((40, 40), 7, 8, side + 1) & ~square((40, 40), 8, 9, side - 1)
    assert b.sum() == 4 * side and np.array_equal(b, ring)


@pytest.mark.parametrize("side,shift", [(20, 3), (12, 3), (30, 3), (20, 1), (20, 2)])
def test_shifted_square_by_hand(side, shift):
    """100x100 frames: tolerance ceil(0.008 * 141.4) = 2 px (disk of radius 2).

    J = a(a-k) / (2a^2 - a(a-k)). Boundaries are the 4a-pixel rings of the two boxes; shifted by k = 3
    along x, the matched pixels of either ring are its two horizontal sides except the one end pixel
    3 px away (2a), plus 2 + 2 pixels of one vertical side near the corners: P = R = (2a + 4) / 4a.
    With k <= 2 every ring pixel is within the tolerance: F = 1.
    """
    gt = square((100, 100), 30, 30, side)
    pred = square((100, 100), 30, 30 + shift, side)
    inter = side * (side - shift)
    assert region_similarity(gt, pred) == pytest.approx(inter / (2 * side * side - inter), rel=1e-12)
    expected_f = 1.0 if shift <= 2 else (2 * side + 4) / (4 * side)
    assert boundary_measure(gt, pred) == pytest.approx(expected_f, rel=1e-12)
    assert boundary_measure(pred, gt) == pytest.approx(expected_f, rel=1e-12)


def test_empty_masks_follow_the_reference():
    empty, obj = np.zeros((50, 60), bool), square((50, 60), 10, 10, 8)
    assert region_similarity(empty, empty) == 1.0 and boundary_measure(empty, empty) == 1.0
    assert region_similarity(obj, empty) == 0.0 and boundary_measure(obj, empty) == 0.0  # P = 1, R = 0
    assert region_similarity(empty, obj) == 0.0 and boundary_measure(empty, obj) == 0.0  # P = 0, R = 1
    with pytest.raises(InputError, match="one size"):
        region_similarity(empty, np.zeros((5, 5), bool))


def brute_f(gt, pred, r):
    """Independent F: boundary pixels matched by an explicit distance test (no dilation)."""
    bg, bp = seg2bmap(gt), seg2bmap(pred)
    G, P = np.argwhere(bg), np.argwhere(bp)
    if len(G) == 0 or len(P) == 0:
        return 1.0 if len(G) == len(P) else 0.0
    d2 = ((P[:, None, :] - G[None, :, :]) ** 2).sum(-1)
    prec = (d2.min(1) <= r * r).mean()
    rec = (d2.min(0) <= r * r).mean()
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("seed", range(4))
def test_f_agrees_with_brute_force_and_properties(seed):
    import cv2

    rng = np.random.default_rng(seed)
    gt = cv2.resize((rng.random((6, 8)) > 0.5).astype(np.uint8), (80, 60), interpolation=cv2.INTER_NEAREST) > 0
    pred = gt.copy()
    flip = cv2.resize((rng.random((12, 16)) > 0.8).astype(np.uint8), (80, 60), interpolation=cv2.INTER_NEAREST) > 0
    pred ^= flip
    r = bound_pixels(gt.shape)
    f = boundary_measure(gt, pred)
    assert f == pytest.approx(brute_f(gt, pred, r), rel=1e-12)
    assert 0.0 <= f <= 1.0 and f == pytest.approx(boundary_measure(pred, gt), rel=1e-12)
    assert region_similarity(gt, pred) == pytest.approx(region_similarity(pred, gt), rel=1e-12)
    assert boundary_measure(gt, gt) == 1.0 and region_similarity(gt, gt) == 1.0


def test_statistics_by_hand():
    v = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    s = Statistics.of(v)
    # bins edges round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7: first v[0:3], last v[5:8]
    assert s.mean == pytest.approx(0.65)
    assert s.recall == pytest.approx(5 / 8)  # > 0.5 strictly
    assert s.decay == pytest.approx(0.9 - 0.4)
    assert math.isnan(Statistics.of([]).mean)
    assert Statistics.of([0.2, float("nan"), 0.8]).mean == pytest.approx(0.5)


def test_sequence_leaves_out_first_and_last_frame():
    gt = [np.zeros((20, 20), np.uint8) for _ in range(5)]
    for g in gt:
        g[5:10, 5:10] = 1
        g[12:18, 12:18] = 2
    pred = [g.copy() for g in gt]
    pred[0][:] = 0
    pred[4][:] = 0  # wrong on the first and last frames only
    pred[2][pred[2] == 2] = 0  # object 2 missing on one scored frame
    scores = evaluate_sequence("seq", gt, pred)
    assert [s.object_id for s in scores] == [1, 2] and [s.name for s in scores] == ["seq_1", "seq_2"]
    assert scores[0].frames == ("00001", "00002", "00003")
    assert scores[0].j.tolist() == [1.0, 1.0, 1.0] and scores[0].f.tolist() == [1.0, 1.0, 1.0]
    assert scores[1].j.tolist() == [1.0, 0.0, 1.0] and scores[1].f.tolist() == [1.0, 0.0, 1.0]
    m = VOSMetric()
    m.extend(scores)
    s = m.compute()
    assert s.j_mean == pytest.approx((1 + 2 / 3) / 2) and s.jf == pytest.approx((1 + 2 / 3) / 2)
    assert s.summary()["J-Recall"] == pytest.approx((1 + 2 / 3) / 2)
    d = s.to_dict()
    assert d["num_objects"] == 2 and d["per_object"][1]["sequence"] == "seq" and d["per_object"][1]["object"] == 2


def test_sequence_errors():
    gt = [np.ones((4, 4), np.uint8)] * 3
    with pytest.raises(InputError, match="3 annotated frames but 2"):
        evaluate_sequence("s", gt, gt[:2])
    with pytest.raises(InputError, match="object id 2"):
        evaluate_sequence("s", gt, [np.full((4, 4), 2, np.uint8)] * 3)
    with pytest.raises(InputError, match="integer"):
        evaluate_sequence("s", gt, [np.ones((4, 4), np.float32)] * 3)


@pytest.mark.data
def test_copy_first_mask_reproduces_the_reference(data_root):
    """Issue 13: copying the first mask scores J&F 36.7 on the three DAVIS-2016 sequences."""
    from edgeseg.data.davis import Davis

    davis = Davis(data_root / "davis2016")
    m = VOSMetric()
    for seq in davis:
        gt = seq.masks()
        m.update(seq.name, gt, [gt[0]] * len(gt), seq.frame_names)
    s = m.compute()
    assert len(s.objects) == 3
    assert 100 * s.jf == pytest.approx(36.7, abs=0.05)
    assert 100 * s.j_mean == pytest.approx(43.19, abs=0.01) and 100 * s.f_mean == pytest.approx(30.13, abs=0.01)
