"""The panoptic decoder against hand-computed cases and straightforward references: Panoptic-DeepLab
grouping (which pixels go where, classes by vote, the stuff area rule), in-graph grouping outputs
against host grouping, LPSNet box paste (order, overlap, discard), fusion against a per-instance
re-implementation of panopticapi's loop, the letterbox geometry, options, layouts that do not fit,
and a round trip of perfect outputs built from synthetic scenes scored with PQ."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.bundle import Manifest
from edgeseg.data import SceneGenerator
from edgeseg.decode import decode, decode_panoptic, fuse_panoptic
from edgeseg.decode.panoptic import find_centers, grid_map
from edgeseg.errors import BundleError, InputError, UnsupportedError
from edgeseg.eval import PanopticMetric
from edgeseg.structures import ImageShape, InputSpec, InstanceResult, PanopticOptions, decoder_options

CLASSES = ("road", "sky", "car", "person")
THINGS = (2, 3)
PLAIN = InputSpec(size=ImageShape(32, 48))  # an 8x12 image at x4: the stride-4 grid is the image


def manifest(layout: str = "center", spec: InputSpec = PLAIN, classes=CLASSES, **opts) -> Manifest:
    opts.setdefault("thing_classes", THINGS)
    return Manifest(name="t", task="panoptic", classes=tuple(classes), input=spec, outputs=(),
                    decoder=PanopticOptions(layout=layout, **opts).to_dict())


def meta_for(h: int, w: int, spec: InputSpec = PLAIN):
    return spec.preprocess(np.zeros((h, w, 3), np.uint8))[1]


def one_hot(labels: np.ndarray, c: int) -> np.ndarray:
    return np.where(np.arange(c)[:, None, None] == labels[None], 5.0, -5.0).astype(np.float32)[None]


def pos(i, j, stride=4):
    """Network position of grid cell (i, j): the model's ``s i + (s - 1) / 2``."""
    return i * stride + (stride - 1) / 2, j * stride + (stride - 1) / 2


def segs(r):
    return [(s.id, s.category_id, s.isthing, s.area, round(s.score, 6)) for s in r.segments]


# ---- the hand-made two-centre case -----------------------------------------------------------------
def two_centre_case():
    """8x12 grid: sky rows 0-1 (24 px), road elsewhere (40 px), a car block (rows 3-6, cols 1-4)
    and a mixed block (rows 3-6, cols 7-10: 10 person, 6 car). Centres A (4, 2) 0.9 and B (4, 8)
    0.7; D (0, 6) 0.5 gets no pixel; (4, 3) 0.85 is suppressed by A; (7, 11) 0.08 is below the
    threshold. Every thing pixel points at its block's centre except the car pixel (6, 4): at B."""
    lab = np.zeros((8, 12), np.int64)
    lab[:2] = 1
    lab[3:7, 1:5] = 2
    lab[3:7, 7:11] = 3
    lab[3:5, 9:11] = 2
    lab[6, 7:9] = 2
    heat = np.zeros((8, 12), np.float32)
    heat[4, 2], heat[4, 3], heat[4, 8], heat[0, 6], heat[7, 11] = 0.9, 0.85, 0.7, 0.5, 0.08
    off = np.random.default_rng(0).normal(0, 30, (2, 8, 12)).astype(np.float32)  # garbage on stuff
    for (r0, r1, c0, c1), (ci, cj) in (((3, 7, 1, 5), (4, 2)), ((3, 7, 7, 11), (4, 8))):
        for i in range(r0, r1):
            for j in range(c0, c1):
                off[:, i, j] = np.subtract(pos(ci, cj), pos(i, j))
    off[:, 6, 4] = np.subtract(pos(4, 8), pos(6, 4)) + (1.0, -1.5)  # near B, not on it
    return {"semantic": one_hot(lab, 4), "center": heat[None, None], "offset": off[None]}


EXPECTED_IDS = np.array([
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
    [3, 1, 1, 1, 1, 3, 3, 2, 2, 2, 2, 3],
    [3, 1, 1, 1, 1, 3, 3, 2, 2, 2, 2, 3],
    [3, 1, 1, 1, 1, 3, 3, 2, 2, 2, 2, 3],
    [3, 1, 1, 1, 2, 3, 3, 2, 2, 2, 2, 3],
    [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
], np.int32)


def test_find_centers_nms_threshold_top_k():
    heat = two_centre_case()["center"][0, 0]
    scores, yx = find_centers(heat, 0.1, 7, 100)
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.5])
    assert yx.tolist() == [[4, 2], [4, 8], [0, 6]]  # (4, 3) lies in A's window; (7, 11) is below 0.1
    assert find_centers(heat, 0.1, 1, 100)[1].tolist() == [[4, 2], [4, 3], [4, 8], [0, 6]]  # no NMS
    assert find_centers(heat, 0.1, 7, 2)[1].tolist() == [[4, 2], [4, 8]]
    assert find_centers(heat, 0.9, 7, 100)[1].tolist() == []  # strictly above the threshold


def test_two_centre_grouping_by_hand():
    out = two_centre_case()
    r = decode(out, meta_for(8, 12), manifest(stuff_area=30))
    np.testing.assert_array_equal(r.segment_ids, EXPECTED_IDS)
    # A: 15 car pixels; B: 10 person + 7 car (incl. the pixel (6, 4)) -> person by vote; D: no pixel;
    # road 40 px; sky 24 px < stuff_area 30 -> void
    assert segs(r) == [(1, 2, True, 15, 0.9), (2, 3, True, 17, 0.7), (3, 0, False, 40, 1.0)]
    assert r.class_names == CLASSES
    r0 = decode(out, meta_for(8, 12), manifest(stuff_area=0))
    assert segs(r0)[2:] == [(3, 0, False, 40, 1.0), (4, 1, False, 24, 1.0)]
    np.testing.assert_array_equal(r0.segment_ids[:2], 4)
    # dataset category ids per class
    rc = decode(out, meta_for(8, 12), manifest(stuff_area=30, category_ids=[7, 23, 26, 24]))
    assert [(s.category_id, s.isthing) for s in rc.segments] == [(26, True), (24, True), (7, False)]
    # the centre threshold above B: B's pixels find A, the only centre left
    r2 = decode_panoptic(out, meta_for(8, 12), manifest(stuff_area=30), center_threshold=0.8)
    assert segs(r2) == [(1, 2, True, 32, 0.9), (2, 0, False, 40, 1.0)]  # 22 car + 10 person -> car
    # an integer labels output (an in-graph argmax) instead of logits: the same
    labels = {**out, "semantic": out["semantic"][0].argmax(0)[None].astype(np.int64)}
    assert segs(decode(labels, meta_for(8, 12), manifest(stuff_area=30))) == segs(r)


def test_vote_ties_take_the_lower_class():
    out = two_centre_case()
    lab = out["semantic"][0].argmax(0)
    lab[3:5, 7:11], lab[5:7, 7:11] = 2, 3  # B's block: 8 car, 8 person
    lab[6, 4] = 0  # the pixel A lent B is road now: B has the tie, 8 against 8 -> car (class 2)
    out["semantic"] = one_hot(lab, 4)
    r = decode(out, meta_for(8, 12), manifest(stuff_area=0))
    assert [(s.category_id, s.area) for s in r.segments[:2]] == [(2, 15), (2, 16)]
    lab[3, 7] = 3  # 7 car, 9 person -> person
    out["semantic"] = one_hot(lab, 4)
    r = decode(out, meta_for(8, 12), manifest(stuff_area=0))
    assert [(s.category_id, s.area) for s in r.segments[:2]] == [(2, 15), (3, 16)]


# ---- in-graph grouping ---------------------------------------------------------------------------------
def reference_graph_outputs(out, threshold=0.1, order=(2, 4, 0, 3, 1)):
    """``centers``/``instance`` as a graph gives them, by a plain loop: the peaks (A, B, D, plus the
    sub-threshold C and a zero-score pad) in a shuffled order; each cell's nearest valid centre."""
    peaks = [(0.9, *pos(4, 2)), (0.7, *pos(4, 8)), (0.5, *pos(0, 6)), (0.08, *pos(7, 11)), (0.0, 0.0, 0.0)]
    centers = np.array([peaks[k] for k in order], np.float32)
    off = out["offset"][0]
    inst = np.zeros((8, 12), np.int64)
    for i in range(8):
        for j in range(12):
            y, x = pos(i, j)
            d = [((y + off[0, i, j] - cy) ** 2 + (x + off[1, i, j] - cx) ** 2) if s > threshold else np.inf
                 for s, cy, cx in centers]
            inst[i, j] = int(np.argmin(d))
    return {**out, "centers": centers[None], "instance": inst[None]}


def test_graph_outputs_equal_host_grouping():
    out = two_centre_case()
    man = manifest(stuff_area=30)
    host = decode(out, meta_for(8, 12), man)
    graph = reference_graph_outputs(out)
    only = {k: graph[k] for k in ("semantic", "centers", "instance")}  # center/offset not needed
    r = decode(only, meta_for(8, 12), man)
    np.testing.assert_array_equal(r.segment_ids, host.segment_ids)
    assert segs(r) == segs(host)
    # top_k = 1: only A keeps its pixels (no reassignment in the graph), B's become void
    r1 = decode_panoptic(only, meta_for(8, 12), man, top_k=1)
    assert segs(r1) == [(1, 2, True, 15, 0.9), (2, 0, False, 40, 1.0)]
    assert (r1.segment_ids == 0).sum() == 24 + 17


def test_graph_grouping_of_the_model_equals_host():
    torch = pytest.importorskip("torch")
    from edgeseg.models.panoptic_deeplab import group_centers

    rng = np.random.default_rng(3)
    h, w = 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    heat = np.zeros((h, w), np.float32)
    for cy, cx in rng.uniform((0, 0), (h, w), (9, 2)):
        heat = np.maximum(heat, rng.uniform(0.05, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6))
    off = rng.normal(0, 12, (1, 2, h, w)).astype(np.float32)
    lab = rng.integers(0, 4, (h, w))
    centers, instance = group_centers(torch.from_numpy(heat[None, None]), torch.from_numpy(off), top_k=20,
                                      threshold=0.1, nms_kernel=7)
    spec = InputSpec(size=ImageShape(4 * h, 4 * w))
    man = manifest(spec=spec, stuff_area=0, top_k=20)
    meta = meta_for(2 * h, 2 * w, spec)
    out = {"semantic": one_hot(lab, 4), "center": heat[None, None], "offset": off}
    host = decode(out, meta, man)
    graph = decode({**out, "centers": centers.numpy(), "instance": instance.numpy()}, meta, man)
    assert sum(s.isthing for s in host.segments) >= 3
    np.testing.assert_array_equal(graph.segment_ids, host.segment_ids)
    assert segs(graph) == segs(host)


# ---- geometry ------------------------------------------------------------------------------------------
def test_letterbox_ids_land_on_the_right_image_pixels():
    spec = InputSpec(size=ImageShape(64, 64), resize="letterbox")
    meta = meta_for(32, 64, spec)  # content 32x64 at top 16: grid rows 4..11 are the image
    lab = np.zeros((16, 16), np.int64)
    lab[:4] = lab[12:] = 1  # "sky" in the padding only: never reaches the image
    lab[6:8, 3:5] = 2
    heat = np.zeros((16, 16), np.float32)
    heat[6, 3] = 1.0
    off = np.zeros((2, 16, 16), np.float32)
    for i, j in [(6, 4), (7, 3), (7, 4)]:
        off[:, i, j] = np.subtract(pos(6, 3), pos(i, j))
    r = decode({"semantic": one_hot(lab, 4), "center": heat[None, None], "offset": off[None]}, meta,
               manifest(spec=spec, stuff_area=0))
    want = np.full((32, 64), 2, np.int32)
    want[8:16, 12:20] = 1  # grid rows 6-7 -> network rows 24-32 -> image rows 8-16; cols 3-4 -> 12-20
    np.testing.assert_array_equal(r.segment_ids, want)
    assert segs(r) == [(1, 2, True, 64, 1.0), (2, 0, False, 32 * 64 - 64, 1.0)]


def test_grid_map_non_integer_scale():
    spec = InputSpec(size=ImageShape(64, 64), resize="letterbox")
    meta = meta_for(50, 100, spec)  # scale 0.64: content 32x64 at top 16
    gm = grid_map(meta, ImageShape(16, 16))
    assert gm.window == (4, 12, 0, 16)
    y, x = np.arange(50), np.arange(100)
    np.testing.assert_array_equal(gm.rows + 4, np.floor(((y + 0.5) * 0.64 + 16) / 4))
    np.testing.assert_array_equal(gm.cols, np.floor((x + 0.5) * 0.64 / 4))
    assert gm.weights.sum() == 50 * 100
    np.testing.assert_array_equal(gm.weights.sum(1), np.bincount(gm.rows) * 100)
    grid = np.arange(8 * 16).reshape(8, 16)
    np.testing.assert_array_equal(gm.to_image(grid), grid[gm.rows][:, gm.cols])


# ---- paste -----------------------------------------------------------------------------------------
def paste_case():
    lab = np.zeros((8, 12), np.int64)
    lab[2:8, 0:8] = 2  # car, 48 px
    lab[0:4, 9:12] = 3  # person, 12 px
    cells = lambda r0, r1, c0, c1: [4 * c0, 4 * r0, 4 * c1, 4 * r1]  # noqa: E731  (box over those cells)
    boxes = [cells(2, 6, 0, 4), cells(2, 6, 2, 6), cells(2, 8, 1, 5), cells(6, 8, 0, 4), cells(6, 8, 4, 8),
             cells(0, 8, 0, 12), cells(0, 4, 9, 12)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.2, 0.95, 0.5]
    classes = [2, 2, 2, 3, 2, 0, 3]
    return {"semantic": one_hot(lab, 4), "boxes": np.array(boxes, np.float32)[None],
            "scores": np.array(scores, np.float32)[None], "classes": np.array(classes, np.int64)[None]}


def test_paste_order_overlap_and_discard_by_hand():
    out = paste_case()
    r = decode(out, meta_for(8, 12), manifest("paste", stuff_area=0))
    # box 0 (0.9): 16 car px. box 1 (0.8): 16 candidates, 8 taken = 0.5, not above 0.5 -> its 8 free px.
    # box 2 (0.7): 24 candidates, 16 taken (0.67) -> dropped. box 3: no person pixel in it -> dropped.
    # box 4 (0.2): below the score threshold. box 5: a stuff class. box 6 (0.5): 12 person px.
    # Car pixels no box claimed (24) are void; road (36 px) fills the rest.
    assert segs(r) == [(1, 2, True, 16, 0.9), (2, 2, True, 8, 0.8), (3, 3, True, 12, 0.5), (4, 0, False, 36, 1.0)]
    want = np.full((8, 12), 4, np.int32)
    want[2:8, 0:8] = 0
    want[2:6, 0:4] = 1
    want[2:6, 4:6] = 2
    want[0:4, 9:12] = 3
    np.testing.assert_array_equal(r.segment_ids, want)
    # a stricter overlap threshold drops box 1 too (0.5 > 0.4); box 2 then has 12 of 24 taken (0.5) -> dropped
    r2 = decode_panoptic(out, meta_for(8, 12), manifest("paste", stuff_area=0), overlap_threshold=0.4)
    assert segs(r2)[:2] == [(1, 2, True, 16, 0.9), (2, 3, True, 12, 0.5)]
    # a looser one keeps box 2 with its 8 free pixels (rows 6-7, cols 1-4)
    r3 = decode_panoptic(out, meta_for(8, 12), manifest("paste", stuff_area=0), overlap_threshold=0.7)
    assert segs(r3)[2] == (3, 2, True, 8, 0.7)
    assert (r3.segment_ids[6:8, 1:5] == 3).all()


def test_paste_with_box_masks():
    out = paste_case()
    masks = np.ones((7, 2, 2), np.float32)
    masks[0, :, 1] = 0  # box 0: its left half only (bilinear at the 4 cell centres: 0.75, 0.75, 0.25, 0)
    r = decode({**out, "masks": masks[None]}, meta_for(8, 12), manifest("paste", stuff_area=0))
    assert segs(r)[:2] == [(1, 2, True, 8, 0.9), (2, 2, True, 16, 0.8)]
    assert (r.segment_ids[2:6, 0:2] == 1).all() and (r.segment_ids[2:6, 2:6] == 2).all()


# ---- fusion ------------------------------------------------------------------------------------------------
def reference_fusion(labels, masks, scores, classes, stuff_map, thing_map, conf, overlap, stuff_area):
    """panopticapi's combine_to_panoptic_single_core, one instance at a time on full-frame masks."""
    pan = np.zeros(labels.shape, np.int32)
    used = None
    segments = []
    order = sorted((i for i in range(len(scores)) if scores[i] >= conf and classes[i] in thing_map),
                   key=lambda i: -scores[i])
    for i in order:
        m = masks[i]
        area = m.sum()
        if area == 0:
            continue
        intersect = 0 if used is None else (used & m).sum()
        if intersect / area > overlap:
            continue
        used = m.copy() if used is None else (used | m)
        if intersect != 0:
            m = m & (pan == 0)
        sid = len(segments) + 1
        pan[m] = sid
        segments.append((sid, thing_map[classes[i]], True, int(m.sum()), round(float(scores[i]), 6)))
    for cat in sorted(set(stuff_map.values())):
        mask = np.isin(labels, [c for c, v in stuff_map.items() if v == cat])
        left = mask & (pan == 0)
        if left.sum() < stuff_area:
            continue
        sid = len(segments) + 1
        pan[left] = sid
        segments.append((sid, cat, False, int(left.sum()), 1.0))
    return pan, segments


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fusion_equals_panopticapi_loop(seed):
    rng = np.random.default_rng(seed)
    h, w, n = 40, 50, 14
    labels = rng.integers(-1, 6, (h // 5, w // 5)).repeat(5, 0).repeat(5, 1)
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((n, h, w), bool)
    for k in range(n):
        cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 12), rng.uniform(2, 15)
        ellipse = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        masks[k] = ellipse if k % 2 else (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
    masks[3] = False  # an empty mask
    scores = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)  # ties on purpose
    classes = rng.integers(0, 4, n).astype(np.int32)
    stuff_map, thing_map = {0: 17, 1: 17, 2: 21, 4: 30}, {0: 1, 1: 2, 2: 3}  # class 3 instances are dropped
    boxes = np.zeros((n, 4), np.float32)
    inst = InstanceResult(boxes, scores, classes, ImageShape(h, w), masks)
    got = fuse_panoptic(labels, inst, stuff_map=stuff_map, thing_map=thing_map, score_threshold=0.3,
                        overlap_threshold=0.5, stuff_area=20)
    pan, want = reference_fusion(labels, masks, scores, classes, stuff_map, thing_map, 0.3, 0.5, 20)
    assert sum(s[2] for s in want) >= 4 and any(not s[2] for s in want)
    np.testing.assert_array_equal(got.segment_ids, pan)
    assert segs(got) == want
    # with decoder-style mask bounds: the same
    bounds = np.array([inst.mask_bounds(i) for i in range(n)], np.int32)
    got2 = fuse_panoptic(labels.astype(np.int16), InstanceResult(boxes, scores, classes, ImageShape(h, w), masks,
                                                                  mask_boxes=bounds),
                         stuff_map=stuff_map, thing_map=thing_map, score_threshold=0.3, overlap_threshold=0.5,
                         stuff_area=20)
    np.testing.assert_array_equal(got2.segment_ids, pan)
    # uint8 labels with 255 as void (the table look-up path): the same
    got3 = fuse_panoptic(np.where(labels < 0, 255, labels).astype(np.uint8), inst, stuff_map=stuff_map,
                         thing_map=thing_map, score_threshold=0.3, overlap_threshold=0.5, stuff_area=20)
    np.testing.assert_array_equal(got3.segment_ids, pan)
    assert segs(got3) == want
    # compact instances (as the decoders give them): the same, and the full masks are never pasted
    compact = inst.compact()
    assert compact.is_compact
    got4 = fuse_panoptic(labels, compact, stuff_map=stuff_map, thing_map=thing_map, score_threshold=0.3,
                         overlap_threshold=0.5, stuff_area=20)
    np.testing.assert_array_equal(got4.segment_ids, pan)
    assert segs(got4) == want and compact.is_compact
    # per-class thresholds: the reference on the instances each class's threshold keeps
    need = {0: 0.6, 2: 0.1}
    keep = np.array([s >= need.get(int(c), 0.3) for s, c in zip(scores, classes)])
    got5 = fuse_panoptic(labels, inst, stuff_map=stuff_map, thing_map=thing_map, score_threshold=0.3,
                         overlap_threshold=0.5, stuff_area=20, class_score_thresholds=need)
    pan5, want5 = reference_fusion(labels, masks[keep], scores[keep], classes[keep], stuff_map, thing_map, 0.0, 0.5, 20)
    np.testing.assert_array_equal(got5.segment_ids, pan5)
    assert segs(got5) == want5


def test_fusion_errors():
    inst = InstanceResult(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int32), ImageShape(4, 4))
    with pytest.raises(InputError, match="no masks"):
        fuse_panoptic(np.zeros((4, 4), np.int32), inst, stuff_map={}, thing_map={0: 1})
    with pytest.raises(InputError, match="image"):
        fuse_panoptic(np.zeros((4, 5), np.int32), inst, stuff_map={}, thing_map={0: 1})


# ---- options and layouts that do not fit -----------------------------------------------------------------
def test_options_from_json_and_validation():
    o = decoder_options("panoptic", {"thing_classes": [11, 12], "category_ids": list(range(19)), "top_k": 50})
    assert isinstance(o, PanopticOptions) and o.thing_classes == (11, 12) and o.category_ids == tuple(range(19))
    assert PanopticOptions.from_dict(o.to_dict()) == o
    for bad, key in [({"nms_kernel": 4}, "nms_kernel"), ({"center_threshold": 1.5}, "center_threshold"),
                     ({"top_k": 0}, "top_k"), ({"stuff_area": -1}, "stuff_area"), ({"layout": "grid"}, "layout"),
                     ({"thing_classes": [1, "a"]}, "thing_classes"), ({"thing_classes": 3}, "thing_classes"),
                     ({"category_ids": [1, 1]}, "category_ids"), ({"overlap_threshold": -0.1}, "overlap_threshold"),
                     ({"thing_classes": [-1]}, "thing_classes"), ({"nms_kernel": True}, "nms_kernel")]:
        with pytest.raises(InputError, match=key):
            decoder_options("panoptic", bad)
    with pytest.raises(InputError, match="unknown panoptic decoder option.*center_thresh"):
        decoder_options("panoptic", {"center_thresh": 0.2})
    with pytest.raises(BundleError, match="nms_kernel"):
        Manifest(name="t", task="panoptic", classes=CLASSES, input=PLAIN, outputs=(), decoder={"nms_kernel": 2})


def test_options_against_the_classes():
    out = two_centre_case()
    with pytest.raises(InputError, match="thing_classes \\[7\\] out of range for 4 classes"):
        decode(out, meta_for(8, 12), manifest(thing_classes=(2, 7)))
    with pytest.raises(InputError, match="category_ids has 3 ids for 4 classes"):
        decode(out, meta_for(8, 12), manifest(category_ids=(1, 2, 3)))


def test_layouts_that_do_not_fit():
    out = two_centre_case()
    with pytest.raises(UnsupportedError, match=r"no 'offset' output.*offset \[1, 2, h, w\].*center \[1, 1, 8, 12\]"):
        decode({k: out[k] for k in ("semantic", "center")}, meta_for(8, 12), manifest())
    with pytest.raises(UnsupportedError, match="semantic has 3 channels for 4 classes"):
        decode({**out, "semantic": out["semantic"][:, :3]}, meta_for(8, 12), manifest())
    with pytest.raises(UnsupportedError, match="center must be"):
        decode({**out, "offset": out["offset"][:, :1]}, meta_for(8, 12), manifest())
    with pytest.raises(UnsupportedError, match="no 'boxes' output.*paste layout"):
        decode(out, meta_for(8, 12), manifest("paste"))
    p = paste_case()
    with pytest.raises(UnsupportedError, match="agree on K"):
        decode({**p, "scores": p["scores"][:, :3]}, meta_for(8, 12), manifest("paste"))
    g = reference_graph_outputs(out)
    with pytest.raises(UnsupportedError, match="outside the 5 centres"):
        decode({**g, "instance": g["instance"] + 4}, meta_for(8, 12), manifest())
    with pytest.raises(UnsupportedError, match="batch of 2"):
        decode({**out, "center": np.concatenate([out["center"]] * 2)}, meta_for(8, 12), manifest())
    sem = Manifest(name="s", task="semantic", classes=CLASSES, input=PLAIN, outputs=())
    with pytest.raises(UnsupportedError, match="not a panoptic one"):
        decode_panoptic(out, meta_for(8, 12), sem)


# ---- round trip: perfect outputs of synthetic scenes -------------------------------------------------
def perfect_outputs(ids: np.ndarray, segments, num_classes: int, stride: int = 4) -> dict[str, np.ndarray]:
    """A perfect Panoptic-DeepLab output on a grid of panoptic ``ids``: one-hot logits, a Gaussian
    (sigma 2 cells) at the cell nearest to each instance's centre of mass, exact offsets to it."""
    h, w = ids.shape
    cat = {s.id: s.category_id for s in segments}
    labels = np.vectorize(cat.get)(ids)
    yy, xx = np.mgrid[0:h, 0:w]
    py, px = pos(yy, xx, stride)
    heat = np.zeros((h, w), np.float32)
    off = np.zeros((2, h, w), np.float32)
    for s in segments:
        m = ids == s.id
        if not s.isthing or not m.any():
            continue
        cy, cx = py[m].mean(), px[m].mean()
        off[0][m], off[1][m] = cy - py[m], cx - px[m]
        ry, rx = round((cy - (stride - 1) / 2) / stride), round((cx - (stride - 1) / 2) / stride)
        heat = np.maximum(heat, np.exp(-((yy - ry) ** 2 + (xx - rx) ** 2) / 8.0))
    return {"semantic": one_hot(labels, num_classes), "center": heat[None, None], "offset": off[None]}


def synthetic_manifest(spec: InputSpec) -> Manifest:
    return manifest(spec=spec, classes=SceneGenerator.classes, thing_classes=SceneGenerator.thing_class_ids,
                    stuff_area=0)


def test_round_trip_perfect_outputs_give_pq_one():
    gen = SceneGenerator(ImageShape(72, 96), seed=2)
    spec = InputSpec(size=ImageShape(288, 384))  # stride-4 grid = the 72x96 image: nothing lost to resolution
    man = synthetic_manifest(spec)
    metric = PanopticMetric()
    things = 0
    for t in (0, 9, 17, 30):
        f = gen.render(t)
        out = perfect_outputs(f.panoptic.segment_ids, f.panoptic.segments, 6)
        r = decode(out, man.input.preprocess(f.image)[1], man)
        metric.update(r, f.panoptic)
        things += sum(s.isthing for s in r.segments)
    scores = metric.compute()
    assert things >= 8
    assert scores.pq == 1.0 and scores.things.n == 3 and scores.stuff.n == 3


def test_round_trip_at_stride_4_is_the_truth_at_grid_resolution():
    """With the image at the network size, the grid has one cell per 4x4 image pixels: the decoded map
    is the truth sampled at the cells (pixel (4i+2, 4j+2)) and blown up to 4x4 blocks, segment for
    segment; PQ then measures only that resolution loss: every segment is found (RQ 1) but the
    boundaries move by up to 2 pixels, which costs objects of 5-11 pixels radius much IoU (SQ 0.79)."""
    gen = SceneGenerator(ImageShape(72, 96), seed=2)
    man = synthetic_manifest(InputSpec(size=ImageShape(72, 96)))
    metric, blocks_metric = PanopticMetric(), PanopticMetric()
    for t in (0, 17):
        f = gen.render(t)
        grid_ids = f.panoptic.segment_ids[2::4, 2::4]
        r = decode(perfect_outputs(grid_ids, f.panoptic.segments, 6), man.input.preprocess(f.image)[1], man)
        blocks = grid_ids.repeat(4, 0).repeat(4, 1)
        pairs = set(zip(r.segment_ids.ravel().tolist(), blocks.ravel().tolist()))
        assert len(pairs) == len({p for p, _ in pairs}) == len({b for _, b in pairs})  # a bijection of ids
        truth_cat = {s.id: s.category_id for s in f.panoptic.segments}
        assert all(truth_cat[b] == next(s.category_id for s in r.segments if s.id == p) for p, b in pairs)
        metric.update(r, f.panoptic)
        blocks_metric.update(type(r)(blocks, f.panoptic.segments), f.panoptic)
    scores = metric.compute()
    assert scores.pq == pytest.approx(blocks_metric.compute().pq, abs=1e-12)
    assert scores.all.rq == 1.0 and 0.75 < scores.pq < 0.8
