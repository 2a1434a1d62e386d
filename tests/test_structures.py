"""Structures against hand computations and references (pycocotools for RLE)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.structures import ImageShape, InputSpec, InstanceResult, SemanticResult, rle_area, rle_decode, rle_encode


# ---- ImageShape -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,hw", [("480x360", (360, 480)), (" 640 X 480 ", (480, 640)), ("32*16", (16, 32)), ("7,5", (5, 7))])
def test_image_shape_parse_is_width_first(text, hw):
    s = ImageShape.parse(text)
    assert s.hw == hw and s.wh == hw[::-1] and str(s) == f"{hw[1]}x{hw[0]}"


@pytest.mark.parametrize("bad", ["480", "x360", "480x", "-4x3", "axb", ""])
def test_image_shape_parse_rejects(bad):
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        ImageShape.parse(bad)


def test_image_shape_validates_and_of():
    with pytest.raises(InputError, match="must be a positive integer, got 0") as err:
        ImageShape(0, 3)
    assert "WIDTHxHEIGHT" in err.value.fix
    with pytest.raises(InputError):
        ImageShape(2.5, 3)
    assert ImageShape.of(np.zeros((5, 7, 3))) == ImageShape(5, 7)
    assert ImageShape(5, 7).area == 35


# ---- InputSpec.preprocess vs numpy by hand --------------------------------------------------------
def _img(h=6, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_preprocess_nchw_rgb_matches_numpy():
    img = _img()
    spec = InputSpec(size=ImageShape(6, 10), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x, meta = spec.preprocess(img)
    ref = ((img / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])).transpose(2, 0, 1)[None]
    assert x.shape == (1, 3, 6, 10) and x.dtype == np.float32
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    assert meta.original == meta.network == meta.content == ImageShape(6, 10) and (meta.pad_top, meta.pad_left) == (0, 0)


@pytest.mark.parametrize("color,dtype", [("RGB", "float32"), ("BGR", "float32"), ("RGB", "float16")])
def test_nchw_planes_equal_normalize_then_transpose_bit_for_bit(color, dtype):
    """The NCHW path normalises plane by plane; it must equal normalize() + transpose exactly (the
    trainer feeds crops through normalize(), the runtime through preprocess(): one arithmetic)."""
    img = np.random.default_rng(4).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    spec = InputSpec(size_rule="any", color=color, dtype=dtype, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x, _ = spec.preprocess(img)
    ref = spec.normalize(img).astype(dtype).transpose(2, 0, 1)[None]
    assert x.dtype == np.dtype(dtype) and x.shape == (1, 3, 37, 53) and x.flags.c_contiguous
    assert np.array_equal(x.view(np.uint16 if dtype == "float16" else np.uint32),
                          np.ascontiguousarray(ref).view(np.uint16 if dtype == "float16" else np.uint32))


def test_preprocess_nhwc_bgr_255_means_matches_numpy():
    img = _img()
    spec = InputSpec(layout="NHWC", color="BGR", size_rule="any", mean=(103.5, 116.3, 123.7), std=(1, 1, 1), scale=1.0)
    x, _ = spec.preprocess(img)
    ref = img[..., ::-1].astype(np.float64) - np.array([103.5, 116.3, 123.7])
    assert x.shape == (1, 6, 10, 3)
    np.testing.assert_allclose(x[0], ref, rtol=1e-6, atol=1e-4)


def test_preprocess_uint8_nhwc_is_raw_pixels():
    img = _img()
    x, _ = InputSpec(layout="NHWC", dtype="uint8", size_rule="any").preprocess(img)
    assert x.dtype == np.uint8 and np.array_equal(x[0], img)


def test_preprocess_letterbox_geometry_and_padding():
    img = np.full((4, 8, 3), 200, np.uint8)  # 2:1 image into an 8x8 square
    spec = InputSpec(size=ImageShape(8, 8), resize="letterbox", pad_value=0, mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    x, meta = spec.preprocess(img)
    assert meta.content == ImageShape(4, 8) and (meta.pad_top, meta.pad_left) == (2, 0)
    assert np.all(x[0, :, :2] == 0) and np.all(x[0, :, 6:] == 0) and np.all(x[0, :, 2:6] == 200)


def _mmdeploy_letterbox(img: np.ndarray, h: int, w: int, pad) -> np.ndarray:
    """MMDeploy's SDK ``Resize`` (``keep_ratio``: MMCV's long/short edge rule, ``int(x * scale + 0.5)``) then
    ``Pad`` to ``[h, w]`` (``padding = {0, 0, w - width, h - height}``: below and to the right), as its
    ``resize.cpp`` and ``pad.cpp`` do, for a frame whose long side lies along the canvas's."""
    import cv2

    ih, iw = img.shape[:2]
    long_edge, short_edge = max(h, w), min(h, w)
    s = min(long_edge / max(ih, iw), short_edge / min(ih, iw))
    dh, dw = int(ih * s + 0.5), int(iw * s + 0.5)
    out = np.empty((h, w, 3), np.uint8)
    out[...] = pad
    out[:dh, :dw] = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
    return out


@pytest.mark.parametrize("hw", [(1080, 1920), (375, 500), (333, 1000), (480, 640), (101, 303)])
def test_preprocess_top_left_letterbox_is_mmdeploys(hw):
    """``anchor="top-left"``: the image where MMDetection's and MMDeploy's ``Pad`` leaves it, sized as their
    ``Resize`` sizes it (rounded half up: 333x1000 into 640x640 is 213.12 -> 213; 101x303 is 213.33),
    the padding the given RGB levels."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (*hw, 3), np.uint8)
    for net in ((640, 640), (512, 1024)):
        spec = InputSpec(size=ImageShape(*net), resize="letterbox", anchor="top-left", pad_value=(124, 116, 104),
                         color="RGB", dtype="uint8", layout="NHWC")
        x, meta = spec.preprocess(img)
        ref = _mmdeploy_letterbox(img, *net, (124, 116, 104))
        assert np.array_equal(x[0], ref), (hw, net)
        assert (meta.pad_top, meta.pad_left) == (0, 0)
        assert ref[meta.content.height:, :].size == 0 or (ref[meta.content.height:, :] == (124, 116, 104)).all()
    # the half-up rounding differs from the centred letterbox's half-to-even: 2.5 -> 3 against 2
    spec = InputSpec(size=ImageShape(8, 8), resize="letterbox", anchor="top-left", mean=(0, 0, 0), std=(1, 1, 1))
    centred = InputSpec(size=ImageShape(8, 8), resize="letterbox", mean=(0, 0, 0), std=(1, 1, 1))
    tall = ImageShape(16, 5)  # scale 0.5: 2.5 columns
    assert spec.letterbox_box(tall, ImageShape(8, 8)) == (ImageShape(8, 3), 0, 0)
    assert centred.letterbox_box(tall, ImageShape(8, 8)) == (ImageShape(8, 2), 0, 3)


def test_letterbox_anchor_and_pad_value_round_trip_and_validation():
    spec = InputSpec(size=ImageShape(64, 64), resize="letterbox", anchor="top-left", pad_value=[124, 116, 104])
    assert spec.pad_value == (124, 116, 104)
    d = spec.to_dict()
    assert d["anchor"] == "top-left" and d["pad_value"] == [124, 116, 104]
    assert InputSpec.from_dict(d) == spec
    plain = InputSpec(size=ImageShape(64, 64), resize="letterbox", pad_value=(114, 114, 114))
    assert "anchor" not in plain.to_dict() and plain.pad_value == 114  # a manifest older readers read unchanged
    assert InputSpec.from_dict({**plain.to_dict()}).anchor == "center"
    for bad in ((1, 2), 256, -1, 1.5, "grey", (0, 0, 300)):
        with pytest.raises(InputError, match="pad value"):
            InputSpec(size_rule="any", pad_value=bad)
    with pytest.raises(InputError, match="anchor must be center or top-left"):
        InputSpec(size_rule="any", anchor="bottom")


def test_fit_rule_round_trip_and_validation():
    spec = InputSpec(size=ImageShape(800, 1333), size_rule="fit", multiple=32, resize="letterbox", anchor="top-left")
    assert InputSpec.from_dict(spec.to_dict()) == spec
    # either way round: a portrait frame's long side is bounded by the longer side of the size
    assert spec.network_shape(ImageShape(1920, 1080)) == ImageShape(1344, 768)
    assert spec.network_shape(ImageShape(1080, 1920)) == ImageShape(768, 1344)
    with pytest.raises(InputError, match="a fit-size input spec needs a size"):
        InputSpec(size_rule="fit")
    with pytest.raises(InputError, match="size multiple must be a positive integer"):
        InputSpec(size=ImageShape(8, 8), size_rule="fit", multiple=0)


def test_preprocess_multiple_rule_rounds_to_multiple():
    spec = InputSpec(size_rule="multiple", multiple=32)
    assert spec.network_shape(ImageShape(360, 480)) == ImageShape(352, 480)
    assert spec.tensor_shape(ImageShape(10, 10)) == (1, 3, 32, 32)


def test_preprocess_rejects_bad_images():
    spec = InputSpec(size_rule="any")
    with pytest.raises(InputError, match="uint8"):
        spec.preprocess(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        spec.preprocess(np.zeros((4, 4), np.uint8))


def test_input_spec_round_trip_and_validation():
    spec = InputSpec(layout="NHWC", color="BGR", size=ImageShape(360, 480), mean=(1, 2, 3), std=(4, 5, 6), scale=1.0)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(InputError, match="layout"):
        InputSpec(layout="CHW", size_rule="any")
    with pytest.raises(InputError, match="unknown input spec field"):
        InputSpec.from_dict({"bogus": 1})


def test_input_spec_refuses_a_0_255_mean_with_the_0_1_scale():
    """(pixel/255 - 103.94)/1 would feed values near -100: refused, with the fix."""
    caffe = (103.94, 116.78, 123.68)
    with pytest.raises(InputError, match=r"mean \(103\.94, 116\.78, 123\.68\) is in 0-255 units but scale is 0\.00392") as e:
        InputSpec(size_rule="any", mean=caffe, std=(1, 1, 1))
    assert "pass --scale 1 (mean/std in 0-255 units" in str(e.value)
    with pytest.raises(InputError, match="0-255 units"):
        InputSpec.from_dict({"size_rule": "any", "mean": list(caffe), "scale": 0.05})
    ok = InputSpec(size_rule="any", mean=caffe, std=(58.4, 57.1, 57.4), scale=1.0)
    px = np.array([[[200, 100, 50]]], np.uint8)
    np.testing.assert_allclose(ok.preprocess(px)[0][0, :, 0, 0], (np.array([200, 100, 50]) - caffe) / (58.4, 57.1, 57.4),
                               rtol=1e-5)
    # the boundary: 0-1 means (even a little above 1) and scales >= 0.1 are fine
    assert InputSpec(size_rule="any", mean=(1.5, 0.5, 0.5)).mean == (1.5, 0.5, 0.5)
    assert InputSpec(size_rule="any", mean=(127.5,) * 3, std=(127.5,) * 3, scale=0.1).scale == 0.1


def test_affine_is_cached_per_normalisation_and_read_only():
    a, b = InputSpec(size=ImageShape(4, 4)), InputSpec(size=ImageShape(8, 8))
    mul, add = a._affine()
    assert mul is b._affine()[0] and add is b._affine()[1]  # same (mean, std, scale): computed once
    np.testing.assert_allclose(mul, np.float32(1 / 255) / np.float32([0.229, 0.224, 0.225]), rtol=1e-7)
    np.testing.assert_allclose(add, -np.float32([0.485, 0.456, 0.406]) / np.float32([0.229, 0.224, 0.225]), rtol=1e-7)
    assert not mul.flags.writeable
    c = InputSpec(size=ImageShape(4, 4), mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    assert c._affine()[0].tolist() == [1.0, 1.0, 1.0] and c._affine()[1].tolist() == [0.0, 0.0, 0.0]


# ---- RLE vs pycocotools -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_rle_matches_pycocotools(seed):
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, 2)
    mask = rng.random((h, w)) < rng.random()
    ours = rle_encode(mask)
    ref = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["size"] == list(ref["size"]) and ours["counts"] == ref["counts"].decode("ascii")
    assert np.array_equal(rle_decode(ours), mask)
    assert np.array_equal(rle_decode(ref), mask)
    assert rle_area(ours) == int(mask_util.area(ref)) == int(mask.sum())


@pytest.mark.parametrize("seed", range(3))
def test_rle_encode_labels_matches_pycocotools_per_class(seed):
    from edgeseg.structures.rle import rle_encode_labels

    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 60, 2)
    labels = rng.integers(0, 5, (h // 3 + 1, w // 3 + 1)).astype(np.uint8).repeat(3, 0).repeat(3, 1)[:h, :w]
    labels[rng.random((h, w)) < 0.1] = 7  # scattered single pixels, class 7
    classes = np.arange(9)  # 5, 6 and 8 absent: one run of 0s
    got = rle_encode_labels(labels, classes)
    assert set(rle_encode_labels(labels)) == set(np.unique(labels).tolist())
    for c in classes:
        ref = mask_util.encode(np.asfortranarray((labels == c).astype(np.uint8)))
        assert got[c] == {"size": [int(h), int(w)], "counts": ref["counts"].decode("ascii")}, c


def test_rle_counts_needing_many_groups_and_empty_masks():
    mask_util = pytest.importorskip("pycocotools.mask")
    big = np.zeros((3000, 4000), bool)  # runs of ~12e6: five and six 5-bit groups
    big[0, 0] = big[-1, -1] = big[1500, 2000] = True
    for m in (big, np.zeros((0, 5), bool), np.zeros((4, 0), bool), np.ones((1, 1), bool)):
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode("ascii")
        assert rle_encode(m)["counts"] == ref
    assert np.array_equal(rle_decode(rle_encode(big)), big)


def test_rle_edge_cases():
    full = np.ones((3, 4), bool)
    assert np.array_equal(rle_decode(rle_encode(full)), full)
    assert rle_decode({"size": [2, 2], "counts": [1, 2, 1]}).tolist() == [[False, True], [True, False]]
    with pytest.raises(InputError, match="corrupt"):
        rle_decode({"size": [2, 2], "counts": [1, 1]})


# ---- results ------------------------------------------------------------------------------------------
def test_instance_result_boolean_indexing():
    shape = ImageShape(4, 5)
    masks = np.zeros((3, 4, 5), bool)
    masks[1, 1:3, 1:4] = True
    r = InstanceResult(boxes=np.arange(12, dtype=np.float32).reshape(3, 4), scores=np.array([0.2, 0.9, 0.6], np.float32),
                       classes=np.array([1, 2, 3], np.int32), image_shape=shape, masks=masks)
    keep = r[r.scores > 0.5]
    assert len(keep) == 2 and keep.classes.tolist() == [2, 3]
    assert keep.boxes.tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]] and keep.masks[0].sum() == 6
    one = r[1]
    assert len(one) == 1 and one.scores[0] == np.float32(0.9)
    assert len(InstanceResult.empty(shape)) == 0
    with pytest.raises(InputError, match="boxes"):
        InstanceResult(boxes=np.zeros((2, 4), np.float32), scores=np.zeros(3, np.float32),
                       classes=np.zeros(3, np.int32), image_shape=shape)


def test_semantic_result_checks():
    r = SemanticResult(labels=np.zeros((3, 4), np.uint8), classes=("a",))
    assert r.shape == ImageShape(3, 4)
    with pytest.raises(InputError):
        SemanticResult(labels=np.zeros((3, 4), np.float32))


def test_a_hand_built_semantic_result_with_negative_ids_is_refused_where_it_is_made(tmp_path):
    """-1 for void (a common convention) used to reach the JSON-lines sink, which failed there with numpy's
    "'list' argument must have no negative elements", far from the code that made it; the PNG sink wrapped
    -1 to 255 silently. Now the result names the id and the fix; non-negative signed labels still work."""
    from edgeseg.structures.records import semantic_record

    labels = np.zeros((3, 4), np.int32)
    labels[1, 2] = -1
    with pytest.raises(InputError, match=r"negative class id \(-1\)") as e:
        SemanticResult(labels, classes=("a", "b"))
    assert "255" in e.value.fix
    labels[1, 2] = 1
    segs = semantic_record(SemanticResult(labels, classes=("a", "b")))["segments"]
    assert [(s["class"], s["area"]) for s in segs] == [("a", 11), ("b", 1)]
    assert SemanticResult(np.zeros((0, 4), np.int64)).labels.size == 0  # empty: no pass, no error


def test_rle_encode_with_bounds_equals_pycocotools():
    """Encoding only the columns inside known bounds gives pycocotools' bytes for the whole mask."""
    from pycocotools import mask as coco_mask

    from edgeseg.structures import rle_encode

    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = np.zeros((h, w), bool)
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = int(rng.integers(x0, w + 1)), int(rng.integers(y0, h + 1))
        m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.5
        ref = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
        assert rle_encode(m, (x0, y0, x1, y1)) == {"size": [h, w], "counts": ref["counts"].decode()}


@pytest.mark.parametrize("shape,dtype", [((37, 53), np.uint8), ((20, 31), np.int32), ((9,), np.int64),
                                         ((2, 5, 7), np.uint16), ((0, 12), np.int32), ((12, 0), np.uint8)])
def test_lookup_colours_equals_fancy_indexing(shape, dtype):
    from edgeseg.structures.palette import colorize, default_palette, lookup_colours

    rng = np.random.default_rng(len(shape))
    table = rng.integers(0, 256, (300, 3), dtype=np.uint8)
    index = rng.integers(0, 256 if dtype == np.uint8 else 300, shape).astype(dtype)
    got = lookup_colours(table, index)
    assert got.dtype == np.uint8 and got.shape == (*shape, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, table[index])
    if len(shape) == 2:  # colorize: out-of-palette labels (and negatives) as before the packed gather
        labels = index.astype(np.int32) - 5
        pal = default_palette(11)
        lut = np.zeros((max(int(labels.max(initial=0)) + 1, 11), 3), np.uint8)
        lut[:11] = pal
        np.testing.assert_array_equal(colorize(labels, pal), lut[np.clip(labels, 0, len(lut) - 1)])


def test_every_result_type_has_to_dict_the_json_lines_record_with_masks_pycocotools_decodes():
    """before: results had no to_dict(); an application had to import the stream's sink module to serialise one."""
    import json

    from pycocotools import mask as coco_mask

    from edgeseg.structures import PanopticResult, PromptedResult, Segment, TrackResult

    labels = np.zeros((6, 7), np.uint8)
    labels[2:5, 1:4] = 2
    sem = json.loads(json.dumps(SemanticResult(labels, classes=("sky", "road", "car")).to_dict()))
    assert sem["task"] == "semantic" and [(s["class"], s["area"]) for s in sem["segments"]] == [("sky", 33), ("car", 9)]
    car = sem["segments"][1]["rle"]
    assert np.array_equal(coco_mask.decode({"size": car["size"], "counts": car["counts"].encode()}), labels == 2)

    masks = np.zeros((2, 6, 7), bool)
    masks[0, 0:2, 0:3] = True
    masks[1, 3:6, 5:7] = True
    inst = InstanceResult(boxes=np.array([[0, 0, 3, 2], [5, 3, 7, 6]], np.float32), scores=np.array([0.9, 0.5], np.float32),
                          classes=np.array([1, 0]), image_shape=ImageShape(6, 7), masks=masks,
                          class_names=("person", "car"))
    d = json.loads(json.dumps(inst.to_dict()))
    assert [(s["class"], s["area"], s["box"]) for s in d["segments"]] == [("car", 6, [0, 0, 3, 2]), ("person", 6, [5, 3, 7, 6])]
    assert d["segments"][0]["score"] == pytest.approx(0.9)
    for s, m in zip(d["segments"], masks):
        assert np.array_equal(coco_mask.decode({"size": s["rle"]["size"], "counts": s["rle"]["counts"].encode()}), m)

    ids = np.zeros((6, 7), np.int32)
    ids[:3] = 1
    ids[4:, 2:5] = 2
    pan = PanopticResult(ids, (Segment(1, 0, False), Segment(2, 1, True, 0.8)), class_names=("road", "car"))
    d = json.loads(json.dumps(pan.to_dict()))
    assert [(s["id"], s["class"], s["isthing"], s["area"]) for s in d["segments"]] == [(1, "road", False, 21), (2, "car", True, 6)]

    track = TrackResult(masks[:1], np.array([7]), np.array([0.75], np.float32))
    assert track.to_dict() == {"task": "vos", "segments": [
        {"object_id": 7, "score": 0.75, "area": 6, "rle": rle_encode(masks[0])}]}
    prompted = PromptedResult(pan, track).to_dict()
    assert prompted["task"] == "panoptic" and prompted["objects"] == track.to_dict()["segments"]
    assert InstanceResult.empty(ImageShape(6, 7)).to_dict() == {"task": "instance", "segments": []}


def test_results_compare_by_value_and_say_they_are_unhashable():
    """before: hash(result) raised numpy's 'unhashable type: numpy.ndarray' (a hash generated over array fields)."""
    from edgeseg.structures import PanopticResult, TrackResult

    a, b = SemanticResult(np.zeros((2, 3), np.uint8)), SemanticResult(np.zeros((2, 3), np.uint8))
    assert a == b and a != SemanticResult(np.ones((2, 3), np.uint8))
    for r in (a, InstanceResult.empty(ImageShape(2, 3)), PanopticResult(np.zeros((2, 3), np.int32)),
              TrackResult(np.zeros((0, 2, 3), bool), np.zeros(0, np.int64))):
        with pytest.raises(TypeError, match=f"unhashable type: '{type(r).__name__}'"):
            hash(r)


def test_masks_pasted_from_crops_are_read_only_and_pickled_as_crops():
    """An audit: ``r.masks[0] = False`` on a decoder's (compact) result was kept, yet ``to_dict()`` and ``mask_crop``
    still read the crops (area 2431 after the mask was emptied); a pickled result carried both forms (1.87 MB instead
    of 23 KB for 9 instances at 640x320). Now the pasted masks refuse writes, the documented edit works, and a pickle
    holds the crops only."""
    import dataclasses
    import pickle

    crops = tuple(np.ones((20, 30), bool) for _ in range(9))
    bounds = np.array([[10 * i, 5, 10 * i + 30, 25] for i in range(9)], np.int32)
    r = InstanceResult(boxes=bounds.astype(np.float32), scores=np.full(9, 0.9, np.float32), classes=np.zeros(9, np.int32),
                       image_shape=ImageShape(320, 640), mask_boxes=bounds, mask_crops=crops)
    assert r.masks[0].sum() == 600 and not r.masks.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        r.masks[0] = False
    assert r.to_dict()["segments"][0]["area"] == 600
    edited = r.masks.copy()
    edited[0, :, :25] = False
    e = dataclasses.replace(r, masks=edited, mask_boxes=None)
    assert e.to_dict()["segments"][0]["area"] == 100 and e.mask_crop(0)[4].sum() == 100  # 20 rows x 5 columns
    wire = pickle.dumps(r)
    assert len(wire) < 20_000 < 9 * 320 * 640 // 8  # the crops (5.4 KB of bools), not 1.8 MB of masks
    back = pickle.loads(wire)
    assert back.is_compact and back == r and (back.masks == r.masks).all()


def test_label_counts_equal_bincount_past_the_histograms_float32_exactness(monkeypatch):
    """predict's class pixels of a 12000x12000 photo cast every label to an 8-byte index (1.15 GB); OpenCV's histogram
    counts in float32, exact to 2**24 a bin, so it goes by bands: 17 million pixels of one class still count exactly."""
    from edgeseg.structures.results import label_counts

    big = np.zeros((4100, 4100), np.uint8)  # 16,810,000 pixels of class 0: more than float32 counts exactly
    big[:3, :7] = 9
    assert label_counts(big).tolist() == np.bincount(big.ravel()).tolist()
    assert label_counts(big, minlength=12).tolist() == np.bincount(big.ravel(), minlength=12).tolist()
    small = np.random.default_rng(0).integers(0, 250, (37, 53)).astype(np.uint8)
    assert label_counts(small[:, ::2], minlength=300).tolist() == np.bincount(small[:, ::2].ravel(), minlength=300).tolist()
    assert label_counts(np.zeros((0, 5), np.uint8)).tolist() == np.bincount(np.zeros(0, np.uint8)).tolist()
    wide = small.astype(np.int32) * 300
    assert label_counts(wide).tolist() == np.bincount(wide.ravel()).tolist()


def test_very_wide_rows_are_counted_and_coloured_exactly():
    """The review: a row wider than the colour lookup's band recursed for ever; one wider than 2**24 was counted in one
    float32 band, inexact (20,000,001 as 20,000,000)."""
    from edgeseg.structures.palette import lookup_colours
    from edgeseg.structures.results import label_counts

    row = np.zeros((1, 5_000_000), np.uint8)
    row[0, :7] = 1
    table = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    colours = lookup_colours(table, row)
    assert colours.shape == (1, 5_000_000, 3) and colours[0, 0].tolist() == [4, 5, 6] and colours[0, -1].tolist() == [1, 2, 3]
    wide = np.zeros((1, (1 << 24) + 5), np.uint8)
    assert label_counts(wide).tolist() == [(1 << 24) + 5]
