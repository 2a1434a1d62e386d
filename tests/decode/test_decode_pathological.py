"""Decoders on pathological model outputs of the right shapes (a broken export, fp16 overflow, a wrong
class count): NaN/inf scores, boxes, logits, heatmaps and offsets, inverted and huge boxes, class ids
out of range, flat heatmaps, labels far outside the classes. Each gives a well-formed result (the bad
detection dropped, boxes finite and inside the image, class ids in range) or an edgeseg error naming
the output and the fix: never a numpy/OpenCV traceback, a MemoryError or NaN in the result."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgeseg.bundle import Manifest, OutputSpec
from edgeseg.decode import decode, decode_semantic, fuse_panoptic
from edgeseg.decode.panoptic import find_centers
from edgeseg.errors import UnsupportedError
from edgeseg.structures import (ImageShape, InputSpec, InstanceOptions, InstanceResult, PanopticOptions,
                                PreprocessMeta)

LETTERBOX = InputSpec(size=ImageShape(64, 64), resize="letterbox", pad_value=114, mean=(0, 0, 0), std=(1, 1, 1))
RESIZE = InputSpec(size=ImageShape(64, 64), mean=(0, 0, 0), std=(1, 1, 1))
NC, NM = 3, 2
PROTOS = np.full((1, NM, 16, 16), 1.0, np.float32)  # mask logit 2 everywhere: the mask is the box


def meta_for(h: int, w: int, spec: InputSpec = LETTERBOX) -> PreprocessMeta:
    return spec.preprocess(np.zeros((h, w, 3), np.uint8))[1]


def imanifest(layout: str, spec: InputSpec = LETTERBOX, **opts) -> Manifest:
    kinds = {"prototype": ("detections", "prototypes"), "dense": ("scores", "classes", "masks"),
             "roi": ("boxes", "scores", "classes", "masks")}[layout]
    if layout == "prototype":
        opts.setdefault("num_masks", NM)
    return Manifest(name="t", task="instance", classes=tuple(f"c{i}" for i in range(NC)), input=spec,
                    outputs=tuple(OutputSpec(k, k, "float32", (1,)) for k in kinds),
                    decoder=InstanceOptions(layout=layout, **opts).to_dict())


def assert_well_formed(r: InstanceResult) -> None:
    h, w = r.image_shape.hw
    b = r.boxes
    assert np.isfinite(b).all() and np.isfinite(r.scores).all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
    assert ((r.classes >= 0) & (r.classes < NC)).all()
    assert r.masks.shape == (len(r), h, w)


def v8(cx, cy, w, h, scores, coeff=(1.0, 1.0)):
    return [cx, cy, w, h, *scores, *coeff]


def yolo(*rows):
    return {"detections": np.asarray(rows, np.float32).T[None], "prototypes": PROTOS}


GOOD = v8(32, 32, 20, 12, [0.9, 0, 0])  # 96x48 letterboxed at top 16, x1.5: image box (33, 15, 63, 33)


# ---- prototype layout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, bad", [
    ("yolov8", v8(40, 30, 10, 10, [0.1, np.inf, 0])),        # +inf class score
    ("yolov8", v8(np.nan, 30, 10, 10, [0, 0.8, 0])),         # NaN box centre
    ("yolov8", v8(40, 30, np.nan, 10, [0, 0.8, 0])),         # NaN width
    ("yolov8", v8(40, 30, np.inf, 10, [0, 0.8, 0])),         # +inf width: was a full-width box
    ("yolov8", v8(40, -np.inf, 10, 10, [0, 0.8, 0])),        # -inf centre
    ("yolov8", v8(40, 30, -10, 10, [0, 0.8, 0])),            # negative width: was an inverted box
    ("yolov8", v8(40, 30, 10, 0, [0, 0.8, 0])),              # zero height
    ("yolov5", [40, 30, 10, 10, np.inf, 0, 0.8, 0, 1, 1]),   # +inf objectness
    ("yolov5", [40, np.nan, 10, 10, 0.9, 0, 0.8, 0, 1, 1]),  # NaN box
])
def test_prototype_broken_rows_are_not_detections(fmt, bad):
    good = GOOD if fmt == "yolov8" else [32, 32, 20, 12, 1.0, 0.9, 0, 0, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a RuntimeWarning per frame
        r = decode(yolo(good, bad), meta_for(48, 96), imanifest("prototype", prototype_format=fmt))
    assert len(r) == 1 and r.classes.tolist() == [0] and r.scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(r.boxes, [[33, 15, 63, 33]], atol=1e-4)
    assert r.masks[0].sum() == 30 * 18
    assert_well_formed(r)


def test_nms_is_not_disturbed_by_a_huge_box():
    # one box of 2e30 px in class 0 made the per-class offsets 2e30 apart: the two class-1 duplicates
    # (IoU 0.95) collapsed to 0-wide boxes and both stayed; a 1e25 box's area overflowed to inf
    m = meta_for(48, 96)
    dup = [v8(30, 30, 20, 20, [0, 0.9, 0]), v8(30.5, 30, 20, 20, [0, 0.8, 0])]
    r = decode(yolo(*dup, v8(0, 30, 2e30, 10, [0.7, 0, 0])), m, imanifest("prototype"))
    assert r.scores.tolist() == pytest.approx([0.9, 0.7]) and r.classes.tolist() == [1, 0]
    np.testing.assert_allclose(r.boxes[1], [0, 13.5, 96, 28.5])  # clipped to the image
    r = decode(yolo(*dup, v8(30, 30, 1e25, 1e25, [0, 0.7, 0])), m, imanifest("prototype"))
    assert r.scores.tolist() == pytest.approx([0.9, 0.7])  # the duplicate suppressed, the huge box the image
    np.testing.assert_allclose(r.boxes[1], [0, 0, 96, 48])
    assert_well_formed(r)


def e2e(*rows):
    return {"detections": np.asarray(rows, np.float32)[None], "prototypes": PROTOS}


E2E_GOOD = [8, 20, 40, 40, 0.9, 1, 1, 1]  # image box (12, 6, 60, 36)


@pytest.mark.parametrize("bad", [
    [np.nan, 20, 40, 40, 0.8, 2, 1, 1],    # NaN box: OpenCV raised on its mask size
    [40, 20, 8, 40, 0.8, 2, 1, 1],         # x2 < x1: was returned inverted
    [8, 20, 40, 40, np.inf, 2, 1, 1],      # +inf score
    [8, 20, 40, 40, 0.8, np.nan, 1, 1],    # NaN class id: was "class id -2147483648" for the whole frame
])
def test_end2end_broken_rows_are_not_detections(bad):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = decode(e2e(E2E_GOOD, bad), meta_for(48, 96), imanifest("prototype", prototype_format="end2end"))
    assert len(r) == 1 and r.classes.tolist() == [1] and r.scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(r.boxes, [[12, 6, 60, 36]], atol=1e-4)
    assert_well_formed(r)


def test_end2end_class_id_outside_the_classes_is_an_error_naming_it():
    man = imanifest("prototype", prototype_format="end2end")
    with pytest.raises(UnsupportedError, match=r"detections \[1, 2, 8\].*class id 1e\+30 is not one of the model's "
                                               r"3 classes(.|\n)*fix: re-import"):
        decode(e2e(E2E_GOOD, [8, 20, 40, 40, 0.8, 1e30, 1, 1]), meta_for(48, 96), man)
    with pytest.raises(UnsupportedError, match="class id 999 is not one"):
        decode(e2e(E2E_GOOD, [8, 20, 40, 40, 0.8, 999, 1, 1]), meta_for(48, 96), man)


# ---- dense and roi layouts ---------------------------------------------------------------------------
def dense(scores, classes, masks):
    return {"scores": np.asarray(scores, np.float32)[None], "classes": np.asarray(classes)[None],
            "masks": np.asarray(masks, np.float32)[None]}


def test_dense_infinite_scores_and_unusable_class_ids_are_dropped():
    spec = InputSpec(size=ImageShape(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    m = meta_for(64, 128, spec)
    maps = np.zeros((4, 16, 16), np.float32)
    maps[:, 4:8, 2:6] = 1
    classes = np.array([1, 0, np.nan, 1e30], np.float32)  # float class ids: NaN and 1e30 wrapped in the cast
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = decode(dense([0.9, np.inf, 0.8, 0.7], classes, maps), m, imanifest("dense", spec))
    assert r.scores.tolist() == pytest.approx([0.9]) and r.classes.tolist() == [1]
    assert_well_formed(r)


def roi(boxes, scores, classes):
    return {"boxes": np.asarray(boxes, np.float32)[None], "scores": np.asarray(scores, np.float32)[None],
            "classes": np.asarray(classes)[None], "masks": np.ones((1, len(scores), 28, 28), np.float32)}


def test_roi_broken_boxes_and_scores_are_not_detections():
    good = [10, 20, 30, 50]
    boxes = [[np.nan, 20, 30, 50], [-np.inf, 0, np.inf, 64], [30, 20, 10, 50], good, good]
    scores = [0.99, 0.98, 0.97, np.inf, 0.9]
    r = decode(roi(boxes, scores, [0, 0, 0, 0, 2]), meta_for(64, 64, RESIZE), imanifest("roi", RESIZE))
    assert len(r) == 1 and r.scores.tolist() == pytest.approx([0.9]) and r.classes.tolist() == [2]
    np.testing.assert_allclose(r.boxes, [good])
    assert r.masks[0].sum() == 20 * 30
    assert_well_formed(r)


# ---- tiny and extreme frames, zero and many detections (correct before: guarded) ------------------------
@pytest.mark.parametrize("hw", [(1, 1), (1, 4000), (4000, 1)])
@pytest.mark.parametrize("spec", [LETTERBOX, RESIZE], ids=["letterbox", "resize"])
def test_instance_layouts_on_extreme_frames_are_well_formed(hw, spec):
    m = meta_for(*hw, spec)
    full = [0, 0, 64, 64]
    results = [decode(yolo(GOOD, v8(32, 32, 64, 64, [0, 0.8, 0])), m, imanifest("prototype", spec)),
               decode(roi([[10, 20, 30, 50], full], [0.9, 0.8], [0, 1]), m, imanifest("roi", spec)),
               decode(dense([0.9], [1], np.ones((1, 16, 16))), m, imanifest("dense", spec))]
    for r in results:
        assert r.image_shape == ImageShape(*hw) and len(r) >= 1
        assert_well_formed(r)
    assert results[0].masks[1].all() and results[1].masks[-1].all() and results[2].masks[0].all()
    # the roi box [10, 20, 30, 50] lies wholly in the padding beside a one-pixel-wide letterboxed frame: no detection
    assert len(results[1]) == (1 if spec is LETTERBOX and hw == (4000, 1) else 2)


def test_zero_and_all_above_threshold_detections_are_well_formed():
    rng = np.random.default_rng(0)
    n = 8400
    rows = np.concatenate([rng.uniform(0, 64, (n, 2)), rng.uniform(1, 64, (n, 2)), rng.uniform(0.5, 1, (n, NC)),
                           rng.normal(size=(n, NM))], 1)
    r = decode(yolo(*rows), meta_for(48, 96), imanifest("prototype"))
    assert len(r) == 100 and np.all(np.diff(r.scores) <= 0)
    assert_well_formed(r)
    zero = {"detections": np.zeros((1, 4 + NC + NM, 0), np.float32), "prototypes": PROTOS}
    r = decode(zero, meta_for(48, 96), imanifest("prototype"))
    assert len(r) == 0 and r.masks.shape == (0, 48, 96)


# ---- semantic ------------------------------------------------------------------------------------------
def smanifest(nc=3, labels=False, **decoder) -> Manifest:
    out = OutputSpec("labels", "labels", "int64", (1, "h", "w")) if labels else \
        OutputSpec("out0", "logits", "float32", (1, nc, "h", "w"))
    return Manifest(name="m", task="semantic", classes=tuple(f"c{i}" for i in range(nc)),
                    input=InputSpec(size_rule="any"), outputs=(out,), decoder=decoder)


def smeta(original, network=(8, 12)):
    return PreprocessMeta(ImageShape(*original), ImageShape(*network), ImageShape(*network), 0, 0)


UP, SAME, DOWN = (64, 96), (8, 12), (4, 6)  # resized bilinearly, as is, argmax then nearest


@pytest.mark.parametrize("size", [UP, SAME, DOWN])
@pytest.mark.parametrize("kw", [{}, {"confidence": True}, {"upsample": "labels"}])
@pytest.mark.parametrize("nhwc", [False, True])
def test_semantic_nan_logits_are_an_error_naming_the_output(size, kw, nhwc):
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 12)).astype(np.float32)
    x[0, 2, 5, 7] = np.nan  # channel 2: the running maximum of channels 0, 1 hid it before
    man = smanifest(logits_layout="NHWC") if nhwc else smanifest()
    if nhwc:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with pytest.raises(UnsupportedError, match=r"'out0' output holds NaN \(1 of its 288 values\)(.|\n)*fix: .*fp32"):
        decode_semantic({"out0": x}, smeta(size), man, **kw)


@pytest.mark.parametrize("size", [UP, SAME, DOWN])
def test_semantic_infinite_logits_give_labels_and_finite_confidence(size):
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 12)).astype(np.float32)
    x[0, 1] = np.inf  # class 1 overflowed everywhere (fp16): it is the argmax, with probability 1
    r = decode_semantic({"out0": x}, smeta(size), smanifest(), confidence=True)
    assert r.labels.shape == size and (r.labels == 1).all()
    np.testing.assert_allclose(r.confidence, 1.0)
    r = decode_semantic({"out0": np.full_like(x, -np.inf)}, smeta(size), smanifest(), confidence=True)
    assert (r.labels == 0).all()  # a tie of all classes: the lower id
    np.testing.assert_allclose(r.confidence, 1 / 3, rtol=1e-6)
    x[0, 1] = -np.inf  # one class at -inf: never chosen, probability 0
    r = decode_semantic({"out0": x}, smeta(size), smanifest(), confidence=True)
    assert (r.labels != 1).all() and np.isfinite(r.confidence).all() and (r.confidence >= 0.5 - 1e-6).all()


@pytest.mark.parametrize("value, dtype", [(999, np.int64), (-1, np.int64)])
def test_semantic_labels_a_label_map_cannot_hold_are_an_error(value, dtype):
    # before: cast to uint8, 999 became class 231 and -1 class 255 of a 3-class bundle
    lab = np.zeros((1, 8, 12), dtype)
    lab[0, 3, 4] = value
    with pytest.raises(UnsupportedError, match=rf"'labels' output holds labels {min(0, value)}\.\.{max(0, value)}, "
                                               r"which uint8 label maps(.|\n)*--classes"):
        decode({"labels": lab}, smeta(UP), smanifest(labels=True))
    lab[0, 3, 4] = 2
    assert decode({"labels": lab}, smeta(UP), smanifest(labels=True)).labels.max() == 2


def test_semantic_labels_void_ids_pass_as_before():
    """A model's own ignore id (255) beyond the classes passes as void, as it did (the overlay draws it black):
    only ids a label map cannot hold are refused."""
    lab = np.zeros((1, 8, 12), np.uint8)
    lab[0, 3, 4] = 255
    assert decode({"labels": lab}, smeta(UP), smanifest(labels=True)).labels.max() == 255


# ---- panoptic ------------------------------------------------------------------------------------------
CLASSES = ("road", "sky", "car", "person")
PLAIN = InputSpec(size=ImageShape(32, 48))  # an 8x12 image: the stride-4 grid is the image


def pmanifest(layout="center", **opts) -> Manifest:
    opts.setdefault("thing_classes", (2, 3))
    opts.setdefault("stuff_area", 0)
    return Manifest(name="t", task="panoptic", classes=CLASSES, input=PLAIN, outputs=(),
                    decoder=PanopticOptions(layout=layout, **opts).to_dict())


def one_hot(labels: np.ndarray, c: int = 4) -> np.ndarray:
    return np.where(np.arange(c)[:, None, None] == labels[None], 5.0, -5.0).astype(np.float32)[None]


def two_cars():
    """8x12 grid, road everywhere but two 4x4 car blocks (cols 1-4 and 7-10), centres (4, 2) 0.9 and
    (4, 8) 0.7, zero offsets: block A joins the left centre, block B the right one."""
    lab = np.zeros((8, 12), np.int64)
    lab[3:7, 1:5] = lab[3:7, 7:11] = 2
    heat = np.zeros((8, 12), np.float32)
    heat[4, 2], heat[4, 8] = 0.9, 0.7
    return lab, heat, np.zeros((2, 8, 12), np.float32)


def center_outputs(lab, heat, off):
    return {"semantic": one_hot(lab), "center": heat[None, None], "offset": off[None]}


def things(r):
    return [(s.category_id, s.area, round(s.score, 6)) for s in r.segments if s.isthing]


def test_center_nan_semantic_logits_are_an_error():
    lab, heat, off = two_cars()
    out = center_outputs(lab, heat, off)
    out["semantic"][0, 3, 2, 2] = np.nan
    with pytest.raises(UnsupportedError, match=r"'semantic' output holds NaN \(1 of its 384 values\)"):
        decode(out, meta_for(8, 12, PLAIN), pmanifest())


def test_centre_heatmap_nan_and_inf_are_no_centres_and_hide_none():
    lab, heat, off = two_cars()
    h = heat.copy()
    h[4, 3] = np.nan  # next to A: the max-pool spread the NaN and A was lost
    scores, yx = find_centers(h, 0.1, 7, 100)
    assert scores.tolist() == pytest.approx([0.9, 0.7]) and yx.tolist() == [[4, 2], [4, 8]]
    h = heat.copy()
    h[4, 2] = np.inf  # A overflowed: no centre (was a segment scoring inf)
    r = decode(center_outputs(lab, h, off), meta_for(8, 12, PLAIN), pmanifest())
    assert things(r) == [(2, 32, 0.7)]  # both blocks join B
    assert all(np.isfinite(s.score) for s in r.segments)


def test_flat_heatmap_has_no_centres_beyond_top_k():
    # 1600 cells tied at 0.5 for 100 places: none can be ranked (was: the first 100 in raster order)
    assert len(find_centers(np.full((40, 40), 0.5, np.float32), 0.1, 3, 100)[0]) == 0
    heat = np.zeros((40, 40), np.float32)
    heat[5, 5], heat[5, 15], heat[5, 25], heat[25, 5] = 0.9, 0.6, 0.6, 0.3
    assert find_centers(heat, 0.1, 3, 1)[1].tolist() == [[5, 5]]          # distinct at the cut: kept
    assert find_centers(heat, 0.1, 3, 2)[1].tolist() == [[5, 5]]          # 0.6 tied at the cut: both go
    assert find_centers(heat, 0.1, 3, 3)[1].tolist() == [[5, 5], [5, 15], [5, 25]]  # ties inside: raster order
    assert len(find_centers(np.full((8, 8), 0.5, np.float32), 0.1, 3, 100)[0]) == 64  # fewer than top_k: all


def test_nan_offsets_leave_pixels_void_and_huge_ones_point_far():
    lab, heat, off = two_cars()
    o = off.copy()
    o[:, 3:7, 7:11] = np.nan  # block B's offsets: it went to centre 0 (A)
    r = decode(center_outputs(lab, heat, o), meta_for(8, 12, PLAIN), pmanifest())
    assert things(r) == [(2, 16, 0.9)] and (r.segment_ids[3:7, 7:11] == 0).all()
    o = off.copy()
    o[1, 3:7, 1:5] = 1e30  # block A points far to the right: B is nearer there (was: all squares inf, A)
    r = decode(center_outputs(lab, heat, o), meta_for(8, 12, PLAIN), pmanifest())
    assert things(r) == [(2, 32, 0.7)]


def test_graph_centres_with_infinite_scores_are_no_centres():
    lab, _, _ = two_cars()
    inst = np.zeros((8, 12), np.int64)
    inst[:, 6:] = 1
    out = {"semantic": one_hot(lab), "centers": np.array([[[np.inf, 17.5, 9.5], [0.7, 17.5, 33.5]]], np.float32),
           "instance": inst[None]}
    r = decode(out, meta_for(8, 12, PLAIN), pmanifest())
    assert things(r) == [(2, 16, 0.7)] and all(np.isfinite(s.score) for s in r.segments)


def test_paste_broken_boxes_scores_and_classes_are_no_detection():
    lab, _, _ = two_cars()
    good = [4, 12, 20, 28]  # block A's cells
    boxes = np.array([[np.nan, 12, 20, 28], [-np.inf, 0, np.inf, 32], good, good, good], np.float32)
    out = {"semantic": one_hot(lab), "boxes": boxes[None], "scores": np.array([[0.99, 0.98, np.inf, 0.95, 0.9]], np.float32),
           "classes": np.array([[2, 2, 2, np.nan, 2]], np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = decode(out, meta_for(8, 12, PLAIN), pmanifest("paste"))  # NaN/inf boxes raised ValueError/OverflowError
    assert things(r) == [(2, 16, 0.9)]


def test_fusion_labels_far_outside_the_stuff_classes_are_void():
    masks = np.zeros((1, 8, 12), bool)
    masks[0, 2:5, 2:5] = True
    inst = InstanceResult(np.array([[2, 2, 5, 5]], np.float32), np.array([0.9], np.float32), np.array([2], np.int32),
                          ImageShape(8, 12), masks)
    labels = np.zeros((8, 12), np.int64)
    labels[:, 6:] = 2 ** 40  # a table from 0 to 2**40 needed 4 TiB (MemoryError)
    labels[0, :] = -2 ** 40
    r = fuse_panoptic(labels, inst, stuff_map={0: 0, 1: 1}, thing_map={2: 2}, stuff_area=1)
    assert [(s.category_id, s.isthing, s.area) for s in r.segments] == [(2, True, 9), (0, False, 7 * 6 - 9)]
    assert (r.segment_ids[:, 6:] == 0).all() and (r.segment_ids[0] == 0).all()
