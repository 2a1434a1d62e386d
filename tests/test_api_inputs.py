"""The Python API with the inputs users pass by mistake: each gives a correct result or an edgeseg error
that names the thing and the fix (never a numpy/onnxruntime traceback, a hang, a silent wrong answer or
a huge allocation). Shipped ``shapes`` bundles on ONNX Runtime, one thread, tiny inputs."""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

import edgeseg
from edgeseg.errors import BundleError, InputError
from edgeseg.structures import (ImageShape, InstanceResult, PanopticResult, Segment, SemanticResult, TrackResult,
                                rle_area, rle_decode, rle_encode)


def _load(name: str):
    return edgeseg.load(f"edgeseg/zoo/{name}.edgeseg", backend="onnxruntime", precision="fp32", threads=1)


@pytest.fixture(scope="module")
def semantic():
    with _load("shapes") as p:
        yield p


@pytest.fixture(scope="module")
def instance():
    with _load("shapes-instance") as p:
        yield p


@pytest.fixture(scope="module")
def panoptic():
    with _load("shapes-panoptic") as p:
        yield p


def _img(h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- images given to predictor(...) --------------------------------------------------------------------
IMG = _img()


@pytest.mark.parametrize("image,message,fix", [
    (IMG / 255.0, "got float64", r"values are 0..1: (img * 255).round().astype(np.uint8)"),
    (IMG.astype(np.float32), "got float32", "already 0..255: img.round().astype(np.uint8)"),
    (IMG.astype(np.uint16) * 257, "got uint16", "a 16-bit image: (img // 257).astype(np.uint8)"),
    (IMG.astype(np.int16), "got int16", "already 0..255: img.astype(np.uint8)"),
    (IMG > 128, "got bool", "a mask is not an image"),
    (np.full((4, 4, 3), np.nan), "got float64", "NaN or infinite"),
    (IMG[..., :1], "shape [12, 16, 1]", "np.repeat(img, 3, axis=2)"),
    (np.ascontiguousarray(IMG.transpose(2, 0, 1)), "shape [3, 12, 16]", "img.transpose(1, 2, 0)"),
    (IMG[None], "shape [1, 12, 16, 3]", "one image per call"),
    (IMG.tolist(), "got list", "np.asarray(img, np.uint8)"),
])
def test_wrong_images_name_the_conversion_that_keeps_the_picture(semantic, image, message, fix):
    with pytest.raises(InputError) as e:
        semantic(image)
    assert message in str(e.value) and fix in e.value.fix


def test_following_the_fix_for_floats_gives_the_uint8_answer(semantic):
    """Before: every dtype got '(img * 255)...', which saturates a 0..255 float image to white."""
    want = semantic(IMG).labels
    for image in (IMG / 255.0, IMG.astype(np.float32)):
        with pytest.raises(InputError) as e:
            semantic(image)
        fixed = (image * 255).round().astype(np.uint8) if "0..1" in e.value.fix else image.round().astype(np.uint8)
        assert np.array_equal(semantic(fixed).labels, want)


def test_an_opencv_frame_is_said_to_be_bgr_and_gives_the_rgb_answer(semantic, instance):
    """An audit: OpenCV's BGR frames passed as RGB ran silently (road agreed with the RGB result on 40 % of the
    pixels) and nothing offered to say what they are. ``bgr=True`` converts; None (a failed ``cap.read()``) and an
    empty crop now name their fix."""
    bgr = np.ascontiguousarray(IMG[..., ::-1])
    assert semantic(bgr, bgr=True) == semantic(IMG) and instance(bgr, bgr=True) == instance(IMG)
    with pytest.raises(InputError, match="got NoneType") as e:
        semantic(None, bgr=True)
    assert "cap.read()" in e.value.fix
    with pytest.raises(InputError, match="empty") as e:
        semantic(IMG[:0])
    assert "skip empty images" in e.value.fix


def test_pil_and_torch_images_get_their_conversion(semantic):
    pil = pytest.importorskip("PIL.Image")
    with pytest.raises(InputError, match="got Image") as e:
        semantic(pil.fromarray(IMG))
    assert e.value.fix.startswith("np.asarray(ImageOps.exif_transpose(img).convert('RGB'))")  # a phone photo's EXIF
    from PIL import ImageOps  # orientation applied, as edgeseg reads files (session 50: the fix dropped it)

    assert np.array_equal(semantic(np.asarray(ImageOps.exif_transpose(pil.fromarray(IMG)).convert("RGB"))).labels,
                          semantic(IMG).labels)
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match="got Tensor") as e:
        semantic(torch.from_numpy(IMG))
    assert "permute(1, 2, 0)" in e.value.fix


def test_views_and_thin_images_equal_a_contiguous_copy(semantic, instance, panoptic):
    """Correct before and now: negative strides, steps, Fortran order, 1-pixel sides."""
    img = _img(24, 32, seed=3)
    for p in (semantic, instance, panoptic):
        for view in (img[:, ::-1], img[::2, ::3], img[..., ::-1], np.asfortranarray(img), img[:1], img[:, :1]):
            a, b = p(view), p(np.ascontiguousarray(view))
            assert a == b, (p.manifest.task, view.shape)


# ---- edgeseg.load(...) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"bundle": None}, "expected a bundle path or name, got NoneType"),
    ({"bundle": 3}, "got int"),
    ({"bundle": b"edgeseg/zoo/shapes.edgeseg"}, "got bytes"),
    ({"bundle": ""}, "the bundle name is empty"),
    ({"backend": None}, "backend must be a string, got None"),
    ({"precision": None}, "precision must be a string, got None"),
    ({"device": "gpu"}, "unknown device 'gpu'"),
    ({"device": "cuda:1"}, "unknown device 'cuda:1'"),
    ({"device": 0}, "unknown device 0"),
    ({"threads": 1.5}, "threads must be an integer >= 0.*got 1.5"),
    ({"threads": "2"}, "got '2'"),
    ({"threads": None}, "got None"),
    ({"threads": True}, "got True"),
    ({"threads": -1}, "got -1"),
    ({"threads": 10**6}, "threads=1000000 on .* usable cores"),
])
def test_load_refuses_arguments_that_cannot_mean_anything(kwargs, match):
    """Before: TypeErrors from pathlib or '<'; device 'gpu'/'cuda:1' silently ran on the CPU; threads 1.5
    and True were taken as 1; 10**6 threads hung ONNX Runtime (> 30 s on 2 cores starting them)."""
    args = {"bundle": "edgeseg/zoo/shapes.edgeseg", "backend": "onnxruntime", "precision": "fp32", "threads": 1, **kwargs}
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=match):
        edgeseg.load(args.pop("bundle"), **args)
    assert time.perf_counter() - t0 < 2


def test_load_of_a_predictor_says_it_is_loaded_already(semantic):
    with pytest.raises(InputError, match="got Predictor") as e:
        edgeseg.load(semantic)
    assert "call it" in e.value.fix


# ---- predictor.set_options(...) ------------------------------------------------------------------------
def test_unknown_options_name_the_close_one_or_the_task_they_belong_to(semantic, instance):
    with pytest.raises(InputError, match="score_thresh: did you mean score_threshold?"):
        instance.set_options(score_thresh=0.5)
    with pytest.raises(InputError, match="upsample is an option of the semantic decoder"):
        instance.set_options(upsample="labels")
    with pytest.raises(InputError, match="score_threshold is an option of the instance decoder"):
        semantic.set_options(score_threshold=0.5)


@pytest.mark.parametrize("name,value,match", [
    ("score_threshold", "0.5", "score_threshold must be a number, got '0.5'"),
    ("score_threshold", "high", "must be a number, got 'high'"),
    ("score_threshold", [0.5], r"must be a number, got \[0.5\]"),
    ("score_threshold", True, "must be a number, got True"),
    ("class_agnostic", "no", "class_agnostic must be true or false, got 'no'"),
    ("max_detections", 10.0, "max_detections must be a positive integer, got 10.0"),
])
def test_options_of_the_wrong_type_are_refused_and_leave_the_predictor_as_it_was(instance, name, value, match):
    """Before: '0.5' was stored and failed at the next frame as a numpy UFuncTypeError; 'high' and [0.5]
    as ValueError/TypeError; True was a threshold of 1; class_agnostic='no' switched class-agnostic NMS on."""
    before = instance.options
    with pytest.raises(InputError, match=match):
        instance.set_options(**{name: value})
    assert instance.options is before


def test_semantic_bool_option_given_as_a_string_is_refused(semantic):
    with pytest.raises(InputError, match="confidence must be true or false, got 'no'"):
        semantic.set_options(confidence="no")  # before: 'no' is true, confidence was computed


def test_numpy_numbers_are_taken_as_numbers(instance, semantic):
    """Before: np.int64(10) was refused as 'not a positive integer'; np.float32 thresholds were kept as
    numpy scalars; a numpy class_bias was refused."""
    base = instance.options
    try:
        o = instance.set_options(score_threshold=np.float32(0.5), max_detections=np.int64(10)).options
        assert (o.score_threshold, o.max_detections) == (0.5, 10)
        assert type(o.score_threshold) is float and type(o.max_detections) is int
        assert len(instance(IMG)) <= 10
    finally:
        instance.options = base
    base = semantic.options
    try:
        assert semantic.set_options(class_bias=np.zeros(6)).options.class_bias == (0.0,) * 6
        assert np.array_equal(semantic(IMG).labels, semantic.set_options(class_bias=[0] * 6)(IMG).labels)
    finally:
        semantic.options = base


def test_class_score_thresholds_on_a_plain_panoptic_bundle_are_refused(panoptic):
    """Only the fused decoder reads them: before, {'circle': 0.9} on 'shapes-panoptic' changed nothing, silently."""
    with pytest.raises(InputError, match="class_score_thresholds apply to fused bundles") as e:
        panoptic.set_options(class_score_thresholds={"circle": 0.9})
    assert "center_threshold" in e.value.fix


def test_a_score_threshold_on_a_panoptic_deeplab_is_its_centre_threshold(panoptic, capsys):
    """A Panoptic-DeepLab scores its things by their centre peak: --score-threshold (predict, run) set the unread
    score_threshold field and changed nothing. It sets center_threshold now, on the predictor and in the stream."""
    from edgeseg.data.synthetic_panoptic import SyntheticPanoptic
    from edgeseg.stream.stages import predictor_stages

    frame = SyntheticPanoptic(1, panoptic.manifest.input.size, seed=4)[0].preloaded
    base = panoptic.options
    try:
        scores = [s.score for s in panoptic(frame).segments if s.isthing]
        cut = 0.96  # (centre peaks are regressed, not probabilities: some score above 1)
        assert sum(x > cut for x in scores) >= 2 and sum(x <= cut for x in scores) >= 2, scores  # not vacuous
        o = panoptic.set_options(score_threshold=cut).options
        assert (o.center_threshold, o.score_threshold) == (cut, base.score_threshold)
        kept = [s.score for s in panoptic(frame).segments if s.isthing]
        assert kept == [s for s in scores if s > cut]
        panoptic.options = base
        decode = predictor_stages(panoptic, score_threshold=cut)[2]
        assert decode._fn.keywords["options"].center_threshold == cut
        # a centre threshold given with it wins; out of range, the user's option is named, not the field
        assert panoptic.set_options(score_threshold=0.5, center_threshold=0.2).options.center_threshold == 0.2
        from edgeseg.cli import main

        capsys.readouterr()
        assert main(["predict", "shapes-panoptic", "x.png", "--json", "x.json", "--score-threshold", "1.5"]) == 2
        assert "--score-threshold must be within 0..1" in capsys.readouterr().err
        assert main(["run", "--bundle", "shapes-panoptic", "--source", "test://ball?frames=1", "--json-out", "x.jsonl",
                     "--score-threshold", "1.5"]) == 2
        assert "stream option score_threshold must be a score from 0 to 1" in capsys.readouterr().err
    finally:
        panoptic.options = base


# ---- COCO RLE ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rle,match", [
    ({"size": [2, 2], "counts": 4}, "'counts' must be a string .* or a list of integers, got 4"),
    ({"size": [2, 2], "counts": None}, "got None"),
    ({"size": [2, 2], "counts": {"a": 1}}, "got {'a': 1}"),
    ({"size": [2, 2], "counts": [1.9, 2.1]}, r"got \[1.9, 2.1\]"),
    ({"size": [2, 2], "counts": [-1, 5]}, r"a negative run length \(-1\)"),
    ({"size": [2, 2], "counts": [1, 5]}, r"runs sum to 6, expected 2\*2=4"),
    ({"size": [2, 2], "counts": b"\xff"}, "bytes are not ASCII"),
    ({"size": "22", "counts": [4]}, "'size' must be \\[H, W\\]"),
    ({"size": [-2, -2], "counts": [4]}, "two integers >= 0, got \\[-2, -2\\]"),
    ({"size": [2.7, 2], "counts": [4]}, "got \\[2.7, 2\\]"),
    ({"size": [2, 2, 1], "counts": [4]}, "got \\[2, 2, 1\\]"),
    ({"counts": [4]}, "not a COCO RLE dict"),
    (None, "not a COCO RLE dict"),
])
def test_malformed_rle_is_named(rle, match):
    """Before: TypeError/ValueError/UnicodeDecodeError from the parser or a numpy reshape; [-1, 5] said
    'runs sum to 4, expected 4'; size '22' decoded as [2, 2]; [1.9, 2.1] truncated silently."""
    with pytest.raises(InputError, match=match):
        rle_decode(rle)
    with pytest.raises(InputError, match=match):
        rle_area(rle)


def test_a_huge_declared_size_is_refused_before_allocating():
    """Before: size [100000, 100000] with counts [10**10] allocated 9.3 GiB (MemoryError or the OOM killer)."""
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="10,000,000,000 pixels"):
        rle_decode({"size": [100000, 100000], "counts": [10**10]})
    assert time.perf_counter() - t0 < 0.5


def test_rle_area_reads_pycocotools_bytes():
    """pycocotools gives ``counts`` as bytes: before, rle_area summed their ASCII codes (51 for b'13')."""
    mask = np.zeros((5, 7), bool)
    mask[1:4, 2:6] = True  # 12 pixels
    mask[0, 0] = True
    rle = rle_encode(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    assert rle_area(as_bytes) == rle_area(rle) == 13
    assert np.array_equal(rle_decode(as_bytes), mask)
    assert rle_area({"size": [2, 2], "counts": b"13"}) == 3


def test_rle_encode_refuses_label_maps_and_probabilities():
    """Before: anything non-zero counted, so a label map or probabilities became one mask without a word."""
    with pytest.raises(InputError, match="looks like a label map") as e:
        rle_encode(np.array([[0, 2], [3, 0]]))
    assert "rle_encode_labels" in e.value.fix
    with pytest.raises(InputError, match="looks like probabilities") as e:
        rle_encode(np.array([[0.0, 0.3], [0.7, 0.0]]))
    assert "mask > 0.5" in e.value.fix
    with pytest.raises(InputError, match="probabilities"):
        rle_encode(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(InputError, match=r"bounds must be \(x0, y0, x1, y1\)"):
        rle_encode(np.ones((3, 3), bool), (1, 0))
    want = rle_encode(np.array([[False, True], [True, False]]))  # 0/1 and 0/255 masks as before
    for m in (np.array([[0, 1], [1, 0]], np.uint8), np.array([[0, 255], [255, 0]], np.uint8), np.array([[0, 1.0], [1, 0]])):
        assert rle_encode(m) == want == {"size": [2, 2], "counts": "121"}
    for empty in (np.zeros((0, 0), bool), np.zeros((0, 3), np.uint8), np.zeros((3, 4), bool)):
        assert np.array_equal(rle_decode(rle_encode(empty)), empty) and rle_area(rle_encode(empty)) == 0


# ---- results -------------------------------------------------------------------------------------------
def _empties():
    shape = ImageShape(4, 5)
    full = InstanceResult.empty(shape)
    return {"full": full, "box-only": InstanceResult.empty(shape, with_masks=False), "compact": full.compact()}


@pytest.mark.parametrize("kind", ["full", "box-only", "compact"])
def test_results_with_zero_instances_work_everywhere(kind):
    """Before: r[[]] raised numpy's 'arrays used as indices must be of integer (or boolean) type', and a
    decoded wire result compared to the original raised 'truth value of an empty array is ambiguous'."""
    from edgeseg.stream.overlay import Renderer
    from edgeseg.structures.records import instance_record
    from edgeseg.wire import decode_result, encode_result

    r = _empties()[kind]
    for index in ([], np.zeros(0, bool), np.zeros(0, int), r.scores > 0.5, slice(0, 3)):
        assert len(r[index]) == 0 and r[index].has_masks == r.has_masks
    assert list(r) == [] and list(r.iter_mask_crops()) == [] and len(r.compact()) == 0
    assert Renderer(classes=("a", "b"))(np.zeros((4, 5, 3), np.uint8), r).shape == (4, 5, 3)
    assert json.loads(json.dumps(instance_record(r))) == {"task": "instance", "segments": []}
    back = decode_result(json.loads(json.dumps(encode_result(r))))
    assert back == r and not (back != r)


def _instances(n=3):
    masks = np.zeros((n, 4, 5), bool)
    for i in range(n):
        masks[i, i % 4, i % 5] = True
    return InstanceResult(boxes=np.arange(4 * n, dtype=np.float32).reshape(n, 4),
                          scores=np.linspace(0.1, 0.9, n, dtype=np.float32), classes=np.arange(n, dtype=np.int32),
                          image_shape=ImageShape(4, 5), masks=masks)


def test_instance_indexing_mistakes_are_named():
    r = _instances(3)
    with pytest.raises(InputError, match=r"one value per instance \(3\), got shape \[2\]"):
        r[np.array([True, False])]
    with pytest.raises(InputError, match=r"one value per instance \(3\)"):
        r.compact()[[True, False, True, False]]
    for bad in (0.5, "scores", None, np.zeros((1, 2), int)):
        with pytest.raises(InputError, match="indexed by integers, a boolean mask or a slice"):
            r[bad]
    with pytest.raises(IndexError):  # kept: it also ends `for inst in result`
        r[3]
    assert [len(x) for x in r] == [1, 1, 1] and r[[True, False, True]].classes.tolist() == [0, 2]
    assert r[np.int64(1)].scores.tolist() == [np.float32(0.5)]


def test_results_compare_by_value():
    """Before: `==` of two equal results (e.g. one decoded from the wire) raised numpy's 'truth value of
    an array ... is ambiguous'."""
    a, b = _instances(3), _instances(3)
    assert a == b and a.compact() == b.compact() and not (a != b)
    assert a != a[:2] and a != a.replace(scores=a.scores + 1)
    assert a != a.replace(classes=a.classes.astype(np.int64))  # dtypes are part of the contract
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert SemanticResult(labels, ("x",)) == SemanticResult(labels.copy(), ("x",))
    assert SemanticResult(labels) != SemanticResult(labels + 1) and SemanticResult(labels) != "labels"
    ids = np.array([[1, 2], [0, 2]], np.int32)
    segs = (Segment(1, 5, False), Segment(2, 7, True))
    assert PanopticResult(ids, segs) == PanopticResult(ids.copy(), list(segs))
    t = TrackResult(np.ones((1, 2, 2), bool), np.array([4]))
    assert t == TrackResult(np.ones((1, 2, 2), bool), np.array([4])) != TrackResult(np.zeros((1, 2, 2), bool), np.array([4]))


def test_results_refuse_lists_and_bare_tuples():
    """Before: AttributeError ('list' object has no attribute 'shape'), or scores kept as a list / a
    [1, 1] array and failing later."""
    z4, one, cls = np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int32)
    s = ImageShape(4, 5)
    for kwargs, match in [({"boxes": [[0, 0, 1, 1]]}, "boxes must be a numpy array, got list"),
                          ({"scores": [0.5]}, "scores must be a numpy array, got list"),
                          ({"scores": np.ones((1, 1), np.float32)}, r"scores must be \[N\], got \[1, 1\]"),
                          ({"image_shape": (4, 5)}, r"image_shape must be an ImageShape, got \(4, 5\)"),
                          ({"masks": [np.zeros((4, 5), bool)]}, "masks must be a numpy array, got list")]:
        with pytest.raises(InputError, match=match):
            InstanceResult(**{"boxes": z4, "scores": one, "classes": cls, "image_shape": s, **kwargs})
    with pytest.raises(InputError, match="confidence must be a numpy array"):
        SemanticResult(np.zeros((1, 2), np.uint8), confidence=[[0.1, 0.2]])
    with pytest.raises(InputError, match="segment_ids must be an integer array, got float32"):
        PanopticResult(np.zeros((2, 2), np.float32))
    with pytest.raises(InputError, match="segments must be Segment objects"):
        PanopticResult(np.zeros((2, 2), np.int32), [{"id": 1}])
    with pytest.raises(InputError, match="object_ids must be a numpy array, got list"):
        TrackResult(np.zeros((1, 4, 5), bool), [1])


def test_panoptic_semantic_with_huge_and_negative_ids():
    """Before: an id of 2**40 asked numpy for a 4 TiB table; a pixel of -1 read the table from its end and
    took the category of the largest segment id."""
    ids = np.array([[2**40, 3], [-1, 0]], np.int64)
    r = PanopticResult(ids, (Segment(2**40, 7, True), Segment(3, 2, False)))
    assert r.semantic().tolist() == [[7, 2], [255, 255]]
    small = PanopticResult(np.array([[-1, 1], [0, 1]], np.int32), (Segment(1, 4, False),))
    assert small.semantic(void=9).tolist() == [[9, 4], [9, 4]]
    assert PanopticResult(np.array([[5]], np.int64) << 40).semantic().tolist() == [[255]]


# ---- edgeseg.stream(...) -------------------------------------------------------------------------------
SRC = "synthetic://?seed=0&size=32x24&frames=3"


@pytest.mark.parametrize("source,match,fix", [
    (None, "no source", "--source"),
    (97, "camera /dev/video97 does not exist", "camera"),  # a number is a camera, as in OpenCV and the CLI
    (IMG, r"got an image array \[12, 16, 3\]", "edgeseg.load(bundle)(image)"),
    ([IMG, IMG], "got an image array", "call the predictor"),
    ({"source": SRC}, "got dict", "synthetic://"),
])
def test_stream_names_sources_that_are_not_sources(semantic, source, match, fix):
    """Before: 'video file [[[0 0 0] ... does not exist' (the array printed as a path), or 'video file None'."""
    with pytest.raises(InputError, match=match) as e:
        list(edgeseg.stream(source, semantic))
    assert fix in e.value.fix


@pytest.mark.parametrize("option,value,match", [
    ("max_frames", 0, "max_frames must be an integer >= 1"),
    ("max_frames", -1, "max_frames must be an integer >= 1"),
    ("max_frames", 1.5, "got 1.5"),
    ("queue_size", 0, "queue_size must be an integer >= 1"),
    ("alpha", 2, "alpha must be a number from 0"),
    ("fps", 0, "fps must be a number > 0"),
    ("source_backend", "ffmpeg", "source_backend must be auto or gstreamer or opencv"),
    ("rtsp_port", "8554x", "rtsp_port must be a port number"),
    ("sink", 5, "sink must be a path"),
    ("batch_timeout_ms", float("inf"), "batch_timeout_ms must be a number of milliseconds"),  # hung a thread
    ("scor_threshold", 0.5, "scor_threshold: did you mean score_threshold?"),
])
def test_stream_options_that_cannot_mean_anything_fail_before_the_source_opens(semantic, option, value, match):
    """Before: max_frames 0 and -1 stopped after one frame, 1.5 after two; queue_size 0 (Python's 'unbounded')
    was silently 1; alpha 2, fps 0 and source_backend 'ffmpeg' were taken; '8554x' and 5 raised
    ValueError/TypeError."""
    with pytest.raises(InputError, match=match):  # at the call itself, not at the loop's first next()
        edgeseg.stream(SRC, semantic, threads=1, **{option: value})


def test_stream_with_good_options_still_runs(semantic):
    frames = edgeseg.stream(SRC, semantic, threads=1, max_frames=2, queue_size=1, alpha=1.0)
    got = [(f.index, r.labels.shape) for f, r in frames]
    assert got == [(0, (24, 32)), (1, (24, 32))]


def test_backend_and_precision_in_any_case_and_targets_the_bundle_lacks(caplog):
    """"ONNXRuntime"/"FP32" were unknown names; a target the bundle has no INT8 model for was ignored
    silently unless precision was int8 (a typo ran the automatic choice)."""
    p = edgeseg.load("shapes", backend="ONNXRuntime", precision="FP32", threads=1)
    assert p.backend == "onnxruntime" and p.runner.precision == "fp32"
    for target in ("nope", "openvino"):  # auto: said, then chosen among the others (scripts over many bundles)
        with caplog.at_level(logging.WARNING, logger="edgeseg"):
            edgeseg.load("shapes", target=target, threads=1)
        assert f"has no INT8 model for target '{target}' (it has: cpu, tensorrt)" in caplog.text
        caplog.clear()
    with pytest.raises(BundleError, match="has no int8/nope model"):  # int8 asks for that very model
        edgeseg.load("shapes", backend="onnxruntime", precision="int8", target="nope", threads=1)
    assert edgeseg.load("shapes", precision="fp32", target="nope", threads=1).runner.precision == "fp32"  # fp32: no INT8 target


def test_an_unknown_precision_is_named_with_the_ones_there_are():
    """before: precision='fp8' gave `BundleError: bundle has no fp8 model` with no fix."""
    import edgeseg

    with pytest.raises(InputError, match="unknown precision 'fp8'") as e:
        edgeseg.load("shapes", backend="onnxruntime", precision="fp8")
    assert "auto, fp32, bf16, fp16, int8" in e.value.fix
