"""Boundary F1: a hand-checked case, a brute-force reference, tolerance and void handling."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgeseg.eval import SemanticMetric, boundary, class_boundary_f1, image_boundary_f1, tolerance_px


def brute_boundary(mask, valid):
    """Mask pixels with an in-image, valid 4-neighbour outside the mask."""
    h, w = mask.shape
    out = np.zeros_like(mask, bool)
    for y, x in itertools.product(range(h), range(w)):
        if mask[y, x]:
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and valid[yy, xx] and not mask[yy, xx]:
                    out[y, x] = True
    return out


def brute_f1(pm, gm, theta, valid):
    bp, bg = brute_boundary(pm, valid), brute_boundary(gm, valid)
    P, G = np.argwhere(bp), np.argwhere(bg)
    if len(P) == 0 and len(G) == 0:
        return None
    if len(P) == 0 or len(G) == 0:
        return 0.0
    d = np.sqrt(((P[:, None, :] - G[None, :, :]) ** 2).sum(-1))
    prec = (d.min(1) <= theta).mean()
    rec = (d.min(0) <= theta).mean()
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def test_hand_checked_staircase():
    gt = np.zeros((6, 6), np.uint8)
    gt[:, 3:] = 1
    pred = gt.copy()
    pred[3:, 3:5] = 0  # lower half of the edge moved two pixels right
    # class 0 predicted boundary: (0..2,2), (3,3), (3..5,4): 7 px, 4 within 1 px of GT column 2;
    # GT boundary column 2: rows 0..3 within 1 px of a predicted one -> P 4/7, R 4/6, F1 8/13.
    # class 1 is the mirror image: (0..2,3), (2,4), (3..5,5) -> also 8/13.
    assert class_boundary_f1(pred == 0, gt == 0, 1.0) == pytest.approx(8 / 13, rel=1e-12)
    assert class_boundary_f1(pred == 1, gt == 1, 1.0) == pytest.approx(8 / 13, rel=1e-12)
    assert boundary(pred == 1).sum() == 7
    m = SemanticMetric(2, boundary_tolerance_px=1.0)
    m.update(pred, gt)
    s = m.compute()
    assert s.boundary_f1 == pytest.approx(8 / 13, rel=1e-12)
    assert s.per_class_boundary_f1 == pytest.approx((8 / 13, 8 / 13), rel=1e-12)
    # with 2 px tolerance every boundary pixel is matched
    assert class_boundary_f1(pred == 0, gt == 0, 2.0) == 1.0
    # with 0.5 px only exact hits: P 3/7, R 3/6 -> F1 = 2*(3/7)(1/2)/(3/7+1/2) = 6/13
    assert class_boundary_f1(pred == 0, gt == 0, 0.5) == pytest.approx(6 / 13, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    import cv2

    gt = cv2.resize(rng.integers(0, 3, (4, 5)).astype(np.uint8), (20, 16), interpolation=cv2.INTER_NEAREST)
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.15
    pred[noise] = rng.integers(0, 3, int(noise.sum()))
    gt[5:9, 3:12] = 255  # a void patch
    valid = gt != 255
    checked = 0
    for theta in (1.0, 1.5, 3.0):
        for c in range(3):
            ref = brute_f1((pred == c) & valid, gt == c, theta, valid)
            got = class_boundary_f1((pred == c) & valid, gt == c, theta, valid)
            assert (got is None and ref is None) or got == pytest.approx(ref, rel=1e-12)
            checked += ref is not None and 0 < ref < 1
    assert checked >= 3


def test_void_and_absent_classes():
    gt = np.zeros((8, 8), np.uint8)
    gt[:, 4:] = 255  # right half is void
    pred = np.zeros((8, 8), np.uint8)
    pred[2:5, 5:7] = 1  # a blob of class 1 entirely inside the void: not counted at all
    # class 0 fills the valid half: its only edge is against void, which is no boundary
    assert image_boundary_f1(pred, gt, 2, 255, 1.0) == {}
    pred[0:2, 0:2] = 1  # a false class-1 blob in the corner: boundaries (0..1,1), (1,0) and for class 0
    per = image_boundary_f1(pred, gt, 2, 255, 1.0)  # (0..1,2), (2,0..1); GT has none -> both score 0
    assert per == {0: 0.0, 1: 0.0}
    gt[0:2, 0:2] = 1  # now the truth has the blob too: perfect
    assert image_boundary_f1(pred, gt, 2, 255, 1.0) == {0: 1.0, 1: 1.0}
    # a class that fills the whole image has no boundary: nothing to score
    assert image_boundary_f1(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), 2, 255, 1.0) == {}


def test_default_tolerance():
    assert tolerance_px((360, 480)) == pytest.approx(4.5)  # 0.75 % of the 600 px diagonal
    gt = np.zeros((360, 480), np.uint8)
    gt[:, 240:] = 1
    pred = np.roll(gt, 4, axis=1)  # edge 4 px off: within 4.5 px
    pred[:, :4] = 0
    m = SemanticMetric(2)
    m.update(pred, gt)
    assert m.compute().boundary_f1 == 1.0 and m.compute().boundary_tolerance_px == pytest.approx(4.5)
    m = SemanticMetric(2)
    m.update(np.roll(pred, 1, axis=1), gt)  # 5 px off: nothing matches
    assert m.compute().boundary_f1 == 0.0
    assert math.isnan(SemanticMetric(2, boundary=False).compute().boundary_f1)


@pytest.mark.parametrize("theta", [0.0, 0.5, 2.0, 2.9, 4.5, 12.0, 20.0, 21.5, -1.0])
def test_the_disk_dilation_matches_what_the_distance_transform_matches(theta):
    """A batch audit: the exact distance transform was 62 % of boundary F1; a dilation with the disk of radius theta
    matches the same pixels (integer offsets compared exactly), and past DISK_MAX_RADIUS the transform is used."""
    import importlib

    import cv2

    bf = importlib.import_module("edgeseg.eval.boundary")  # the module (edgeseg.eval.boundary is also the function)
    rng = np.random.default_rng(1)
    lab = cv2.resize(rng.integers(0, 4, (9, 13)).astype(np.uint8), (130, 90), interpolation=cv2.INTER_NEAREST)
    b = bf.boundary(lab == 2)
    got = bf._within(b, theta)
    ys, xs = np.nonzero(b)
    yy, xx = np.mgrid[:90, :130]
    d2 = ((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1)  # brute force, integer squared distances
    np.testing.assert_array_equal(got, d2 <= theta * theta if theta >= 0 else np.zeros_like(b))
