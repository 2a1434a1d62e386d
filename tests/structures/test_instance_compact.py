"""The compact form of InstanceResult (per-instance mask crops over ``mask_boxes``): it agrees with the
full-size masks it stands for, indexing keeps it compact, and the JSON record (COCO RLE), the instance
PNG and the overlay drawn from it equal those drawn from the same masks at full size, without ever
materialising ``N x H x W``."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.stream.overlay import _draw_crops, _draw_masks, instance_colours, render_instance
from edgeseg.stream.sinks import label_image
from edgeseg.structures.records import instance_record
from edgeseg.structures import ImageShape, InstanceResult, rle_decode, rle_encode
from edgeseg.structures.rle import rle_encode_crops

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 0], [0, 0, 100]], np.uint8)


def hand_masks(h: int = 20, w: int = 30) -> np.ndarray:
    """Overlapping masks, a hole, an empty mask, one filling the image, masks on every border."""
    m = np.zeros((7, h, w), bool)
    m[0, 2:9, 3:17] = True
    m[0, 4:6, 6:9] = False  # a hole
    m[1, 5:15, 10:25] = True  # overlaps mask 0
    # mask 2 empty
    m[3] = True  # the whole image
    m[4, :, 0] = True  # the left column, top to bottom
    m[4, 0, :] = True  # and the top row
    m[5, h - 3:, w - 4:] = True  # bottom-right corner
    m[6, ::3, ::2] = True  # a lattice: many runs
    return m


def full_result(masks: np.ndarray, mask_boxes: np.ndarray | None = None, track_ids=None) -> InstanceResult:
    n, h, w = masks.shape
    return InstanceResult(boxes=np.arange(4 * n, dtype=np.float32).reshape(n, 4), scores=np.linspace(0.9, 0.3, n, dtype=np.float32),
                          classes=(np.arange(n) % 3 + 1).astype(np.int32), image_shape=ImageShape(h, w), masks=masks,
                          class_names=("bg", "person", "car", "bike"), track_ids=track_ids, mask_boxes=mask_boxes)


def loose_bounds(masks: np.ndarray, rng) -> np.ndarray:
    """Bounds that contain each mask but are not tight (as the prototype and roi decoders give)."""
    n, h, w = masks.shape
    out = np.zeros((n, 4), np.int32)
    for i, m in enumerate(masks):
        ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if not len(ys):
            continue
        out[i] = (max(0, xs[0] - rng.integers(0, 3)), max(0, ys[0] - rng.integers(0, 3)),
                  min(w, xs[-1] + 1 + rng.integers(0, 3)), min(h, ys[-1] + 1 + rng.integers(0, 3)))
    return out


def compact_of(masks: np.ndarray, bounds: np.ndarray, **kw) -> InstanceResult:
    """The same masks as crops, built by hand (not by ``compact()``)."""
    crops = [m[y0:y1, x0:x1].copy() for m, (x0, y0, x1, y1) in zip(masks, bounds.tolist())]
    full = full_result(masks, **kw)
    return InstanceResult(boxes=full.boxes, scores=full.scores, classes=full.classes, image_shape=full.image_shape,
                          class_names=full.class_names, track_ids=full.track_ids, mask_boxes=bounds, mask_crops=crops)


# ---- (a) the compact and the materialised form agree ----------------------------------------------
def test_materialised_masks_equal_the_crops_pasted():
    masks = hand_masks()
    bounds = loose_bounds(masks, np.random.default_rng(0))
    r = compact_of(masks, bounds)
    assert r.is_compact and r.has_masks and r._masks_cache is None
    for i in range(len(r)):  # mask_crop reads the crops, never the full masks
        x0, y0, x1, y1, crop = r.mask_crop(i)
        assert (x0, y0, x1, y1) == tuple(bounds[i]) == r.mask_bounds(i) and crop is r.mask_crops[i]
    assert r._masks_cache is None
    got = r.masks
    assert got.dtype == np.bool_ and got.shape == masks.shape and np.array_equal(got, masks)
    assert r.masks is got and not r.is_compact  # materialised once, then kept
    # compact() of a full result gives the same masks, with tight bounds when none were given
    c = full_result(masks).compact()
    assert c.is_compact and np.array_equal(c.masks, masks)
    for i, m in enumerate(masks):
        assert c.mask_bounds(i) == full_result(masks).mask_bounds(i)
    assert InstanceResult.empty(ImageShape(4, 5)).compact().masks.shape == (0, 4, 5)


def test_full_results_work_as_before_and_crops_are_views():
    masks = hand_masks()
    r = full_result(masks)
    assert r.masks is masks and r.has_masks and not r.is_compact and r.mask_crops is None
    x0, y0, x1, y1, crop = r.mask_crop(1)
    assert (x0, y0, x1, y1) == (10, 5, 25, 15) and crop.base is not None and crop.all()
    boxes_only = dataclasses.replace(r, masks=None)
    assert boxes_only.masks is None and not boxes_only.has_masks
    with pytest.raises(InputError, match="no masks"):
        boxes_only.mask_crop(0)


def test_crops_are_checked():
    masks = hand_masks()
    bounds = loose_bounds(masks, np.random.default_rng(1))
    r = compact_of(masks, bounds)
    with pytest.raises(InputError, match="needs mask_boxes"):
        dataclasses.replace(r, mask_boxes=None, masks=None)
    bad = list(r.mask_crops)
    bad[0] = bad[0][:-1]
    with pytest.raises(InputError, match="mask_crops"):
        InstanceResult(r.boxes, r.scores, r.classes, r.image_shape, mask_boxes=bounds, mask_crops=bad)
    with pytest.raises(InputError, match="bool"):
        InstanceResult(r.boxes, r.scores, r.classes, r.image_shape, mask_boxes=bounds,
                       mask_crops=[c.astype(np.uint8) for c in r.mask_crops])
    with pytest.raises(InputError, match="crops"):
        InstanceResult(r.boxes, r.scores, r.classes, r.image_shape, mask_boxes=bounds, mask_crops=r.mask_crops[:-1])
    outside = bounds.copy()
    outside[3] = (1, 0, 31, 20)  # one column past the image
    with pytest.raises(InputError, match="inside the image"):
        InstanceResult(r.boxes, r.scores, r.classes, r.image_shape, mask_boxes=outside,
                       mask_crops=[*r.mask_crops[:3], np.zeros((20, 30), bool), *r.mask_crops[4:]])


def test_replace_keeps_the_masks():
    masks = hand_masks()
    r = compact_of(masks, loose_bounds(masks, np.random.default_rng(2)))
    ids = np.arange(1, 8, dtype=np.int64)
    kept = r.replace(track_ids=ids)  # compact stays compact
    assert kept.is_compact and kept.track_ids is ids and np.array_equal(kept.masks, masks)
    plain = dataclasses.replace(r, track_ids=ids)  # reads r.masks: full-size, still the same masks
    assert np.array_equal(plain.masks, masks) and plain.track_ids is ids
    other = r.replace(masks=masks[::-1].copy(), mask_boxes=None)  # new masks win over the old crops
    assert other.mask_crops is None and np.array_equal(other.masks, masks[::-1])
    assert r == r and kept.masks is kept.masks


# ---- (b) indexing keeps crops and bounds consistent ---------------------------------------------
@pytest.mark.parametrize("index", [np.array([True, False, True, True, False, True, False]), 3, -1, slice(1, 6, 2),
                                   np.array([6, 0, 0, 2]), np.array([], np.int64), np.int64(4)])
def test_indexing_keeps_crops_compact_and_consistent(index):
    masks = hand_masks()
    bounds = loose_bounds(masks, np.random.default_rng(3))
    full = full_result(masks, mask_boxes=bounds, track_ids=np.arange(7, dtype=np.int64) + 10)
    r = compact_of(masks, bounds, track_ids=full.track_ids)
    sub, ref = r[index], full[index]
    assert sub.is_compact and len(sub) == len(ref) == len(sub.mask_crops) and r._masks_cache is None
    np.testing.assert_array_equal(sub.mask_boxes, ref.mask_boxes)
    np.testing.assert_array_equal(sub.track_ids, ref.track_ids)
    np.testing.assert_array_equal(sub.scores, ref.scores)
    for i in range(len(sub)):
        x0, y0, x1, y1, crop = sub.mask_crop(i)
        assert crop.shape == (y1 - y0, x1 - x0)
        np.testing.assert_array_equal(crop, ref.masks[i, y0:y1, x0:x1])
    np.testing.assert_array_equal(sub.masks, ref.masks)


# ---- (c) records, PNGs and overlays from crops equal those from full masks --------------------------
def _results(seed: int):
    masks = hand_masks()
    rng = np.random.default_rng(seed)
    bounds = loose_bounds(masks, rng)
    ids = np.arange(7, dtype=np.int64) * 3 + 1
    return full_result(masks, track_ids=ids), compact_of(masks, bounds, track_ids=ids), masks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_record_from_crops_equals_full_masks(seed):
    full, compact, masks = _results(seed)
    got, want = instance_record(compact), instance_record(full)
    assert got == want and compact._masks_cache is None
    for s, m in zip(got["segments"], masks):  # and both are the masks themselves
        assert s["rle"] == rle_encode(m) and s["area"] == int(m.sum())
        np.testing.assert_array_equal(rle_decode(s["rle"]), m)
    assert [s["track_id"] for s in got["segments"]] == full.track_ids.tolist()


def test_json_record_matches_pycocotools_on_random_crops():
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(5)
    for _ in range(60):
        h, w = int(rng.integers(1, 24)), int(rng.integers(1, 24))
        n = int(rng.integers(0, 6))
        masks = np.zeros((n, h, w), bool)
        for i in range(n):
            x0, x1 = sorted(rng.integers(0, w + 1, 2))
            y0, y1 = sorted(rng.integers(0, h + 1, 2))
            if rng.random() < 0.2:
                x0, y0, x1, y1 = 0, 0, w, h
            masks[i, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.choice([0.2, 0.7, 1.0])
        r = full_result(masks).compact()
        rec = instance_record(r)
        assert r._masks_cache is None
        for s, m in zip(rec["segments"], masks):
            ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            assert s["rle"]["counts"] == ref["counts"].decode() and s["area"] == int(mask_util.area(ref))


def test_rle_encode_crops_edge_cases():
    assert rle_encode_crops([], (3, 4)) == ([], pytest.approx(np.zeros(0)))
    rles, areas = rle_encode_crops([(0, 0, 0, 0, np.zeros((0, 0), bool)), (0, 0, 4, 3, np.ones((3, 4), bool)),
                                    (1, 1, 3, 2, np.zeros((1, 2), bool))], (3, 4))
    assert [r["counts"] for r in rles] == [rle_encode(np.zeros((3, 4), bool))["counts"],
                                           rle_encode(np.ones((3, 4), bool))["counts"],
                                           rle_encode(np.zeros((3, 4), bool))["counts"]]
    assert areas.tolist() == [0, 12, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_instance_png_from_crops_equals_full_masks(seed):
    full, compact, masks = _results(seed)
    got = label_image(compact)
    np.testing.assert_array_equal(got, label_image(full))
    want = np.zeros(masks.shape[1:], np.uint16)
    for i, m in enumerate(masks):  # later instances on top
        want[m] = i + 1
    np.testing.assert_array_equal(got, want)
    assert compact._masks_cache is None


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_overlay_from_crops_equals_full_masks(alpha):
    full, compact, masks = _results(4)
    rng = np.random.default_rng(7)
    img = rng.integers(0, 255, (*masks.shape[1:], 3), dtype=np.uint8)
    got = render_instance(img, compact, palette=PALETTE, alpha=alpha)
    np.testing.assert_array_equal(got, render_instance(img, full, palette=PALETTE, alpha=alpha))
    # the mask layer alone: from the crops (loose bounds) as from the full masks with bounds computed
    colours = instance_colours(PALETTE, full.classes, full.track_ids)
    layer = _draw_crops(img.copy(), compact.iter_mask_crops(), colours, alpha)
    np.testing.assert_array_equal(layer, _draw_masks(img.copy(), masks, colours, alpha))
    assert (layer != img).any() and compact._masks_cache is None
