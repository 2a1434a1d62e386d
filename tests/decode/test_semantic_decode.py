"""decode_semantic on hand-computed cases: argmax, letterbox undo, resizing, NHWC, labels, confidence."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeseg.bundle import Manifest, OutputSpec
from edgeseg.decode import DECODERS, decode, decode_semantic
from edgeseg.errors import UnsupportedError
from edgeseg.structures import ImageShape, InputSpec, PreprocessMeta

REPO_ZOO = Path(__file__).resolve().parents[2] / "edgeseg" / "zoo"

LOGITS = OutputSpec("logits", "logits", "float32", (1, 3, "h", "w"))
LABELS = OutputSpec("labels", "labels", "uint8", (1, "h", "w"))


def manifest(num_classes=3, outputs=(LOGITS,), **decoder) -> Manifest:
    return Manifest(name="m", task="semantic", classes=tuple(f"c{i}" for i in range(num_classes)),
                    input=InputSpec(size_rule="any"), outputs=outputs, decoder=decoder)


def meta(original, network=None, content=None, top=0, left=0) -> PreprocessMeta:
    network = network or original
    return PreprocessMeta(ImageShape(*original), ImageShape(*network), ImageShape(*(content or network)), top, left)


def bilinear_half_pixel(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Reference ``[C, h, w]`` -> ``[C, H, W]`` resize (align_corners=False, edge clamped)."""
    c, h, w = src.shape

    def axis(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, pos - i0

    y0, y1, fy = axis(out_h, h)
    x0, x1, fx = axis(out_w, w)
    top = src[:, y0][:, :, x0] * (1 - fx) + src[:, y0][:, :, x1] * fx
    bot = src[:, y1][:, :, x0] * (1 - fx) + src[:, y1][:, :, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def test_argmax_same_size():
    logits = np.array([[[1, 0], [0, 0]], [[0, 2], [0, 0]], [[0, 0], [3, -1]]], np.float32)[None]
    r = decode_semantic({"logits": logits}, meta((2, 2)), manifest())
    assert r.labels.dtype == np.uint8 and r.labels.tolist() == [[0, 1], [2, 0]]
    assert r.classes == ("c0", "c1", "c2") and r.confidence is None


def test_letterbox_is_cropped():
    # a 2x4 image letterboxed into 4x4: content rows 1..2; padding rows say class 2
    logits = np.zeros((1, 3, 4, 4), np.float32)
    logits[0, 2, [0, 3]] = 9
    logits[0, 0, 1, :2] = logits[0, 1, 1, 2:] = 1
    logits[0, 1, 2, :] = 1
    r = decode_semantic({"logits": logits}, meta((2, 4), (4, 4), (2, 4), top=1), manifest())
    assert r.labels.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_letterbox_then_downscaled_image():
    # a 4x8 image letterboxed into 4x4 (content 2x4 at top 1), mapped back to 4x8: nearest-exact x2
    logits = np.zeros((1, 3, 4, 4), np.float32)
    logits[0, 1, 1, 1] = logits[0, 2, 2, 3] = 1
    r = decode_semantic({"logits": logits}, meta((4, 8), (4, 4), (2, 4), top=1), manifest(upsample="labels"))
    want = np.repeat(np.repeat(np.array([[0, 1, 0, 0], [0, 0, 0, 2]]), 2, 0), 2, 1)
    assert np.array_equal(r.labels, want)


def test_small_logits_are_upsampled_bilinearly_before_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 3, 3, 5)).astype(np.float32)  # stride-2 output of a 6x10 network input
    r = decode_semantic({"logits": logits}, meta((6, 10)), manifest(), confidence=True)
    ref = bilinear_half_pixel(logits[0].astype(np.float64), 6, 10)
    assert np.array_equal(r.labels, ref.argmax(0))
    p = np.exp(ref - ref.max(0)) / np.exp(ref - ref.max(0)).sum(0)
    np.testing.assert_allclose(r.confidence, p.max(0), rtol=1e-4)


def test_upsample_labels_option_is_nearest():
    logits = np.random.default_rng(1).normal(size=(1, 3, 3, 5)).astype(np.float32)
    r = decode_semantic({"logits": logits}, meta((6, 10)), manifest(upsample="labels"))
    assert np.array_equal(r.labels, np.repeat(np.repeat(logits[0].argmax(0), 2, 0), 2, 1))


def test_nearest_exact_downscale_picks_pixel_centres():
    labels = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    r = decode_semantic({"labels": labels}, meta((2, 2), (4, 4)), manifest(16, (LABELS,)))
    # out pixel i covers source centre floor((i + 0.5) * 2) = 1, 3
    assert r.labels.tolist() == [[5, 7], [13, 15]]


def test_nhwc_logits():
    logits = np.random.default_rng(2).normal(size=(1, 4, 5, 3)).astype(np.float32)
    r = decode_semantic({"logits": logits}, meta((4, 5)), manifest())
    assert np.array_equal(r.labels, logits[0].argmax(-1))
    forced = decode_semantic({"logits": logits.transpose(0, 3, 1, 2)}, meta((4, 5)), manifest(logits_layout="NCHW"))
    assert np.array_equal(forced.labels, r.labels)


def test_extra_output_channels_keep_their_ids(caplog):
    # a model with a void class (4 channels) in a 3-class bundle: channel 3 wins where it is largest; said once (an
    # audit: a class name removed from a manifest by hand was reported by number without a word)
    logits = np.zeros((1, 4, 1, 2), np.float32)
    logits[0, 3, 0, 1] = 5
    with caplog.at_level("WARNING", logger="edgeseg.decode"):
        for _ in range(3):
            r = decode_semantic({"logits": logits}, meta((1, 2)), replace(manifest(), name="extra-channel"))
    assert r.labels.tolist() == [[0, 3]]
    said = [rec.getMessage() for rec in caplog.records if "extra-channel" in rec.getMessage()]
    assert len(said) == 1 and "scores 4 classes" in said[0] and "lists 3" in said[0] and "by number" in said[0]


def test_labels_output_int64_with_letterbox():
    labels = np.array([[[9, 9, 9], [1, 2, 0], [9, 9, 9]]], np.int64)
    r = decode_semantic({"labels": labels}, meta((2, 6), (3, 3), (1, 3), top=1), manifest(10, (LABELS,)))
    assert r.labels.dtype == np.uint8
    assert r.labels.tolist() == [[1, 1, 2, 2, 0, 0]] * 2


def test_confidence_is_softmax_max():
    logits = np.array([[[[0.0]], [[math.log(3)]]]], np.float32)  # probs 1/4, 3/4
    r = decode_semantic({"logits": logits}, meta((1, 1)), manifest(2), confidence=True)
    assert r.labels[0, 0] == 1 and r.confidence.dtype == np.float32
    np.testing.assert_allclose(r.confidence, [[0.75]], rtol=1e-6)


def test_output_lookup():
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 2] = 1
    m = manifest(outputs=(replace(LOGITS, name="out0"),))
    assert decode_semantic({"out0": logits, "aux": logits * 0}, meta((2, 2)), m).labels.max() == 2
    assert decode_semantic({"logits": logits}, meta((2, 2)), m).labels.max() == 2  # the torch backend's name
    assert decode_semantic({"whatever": logits}, meta((2, 2)), m).labels.max() == 2  # the only output
    with pytest.raises(UnsupportedError, match=r"no semantic output among \['a', 'b'\]"):
        decode_semantic({"a": logits, "b": logits}, meta((2, 2)), m)


def test_registry_dispatch():
    assert DECODERS.get("semantic") is decode_semantic
    logits = np.ones((1, 3, 1, 1), np.float32)
    assert decode({"logits": logits}, meta((1, 1)), manifest()).labels.tolist() == [[0]]
    with pytest.raises(UnsupportedError, match="unknown decoder"):
        DECODERS.get("nope")


def test_many_classes_use_int32_and_chunked_resize():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1, 600, 2, 2)).astype(np.float32)
    r = decode_semantic({"logits": logits}, meta((4, 4)), manifest(600))
    ref = bilinear_half_pixel(logits[0].astype(np.float64), 4, 4)
    assert r.labels.dtype == np.int32 and np.array_equal(r.labels, ref.argmax(0))


@pytest.mark.parametrize("shape,out", [((6, 30, 40), (135, 240)), ((19, 17, 23), (100, 61)), ((3, 8, 8), (8, 30))])
def test_per_class_plane_resize_equals_one_multichannel_resize_and_the_float64_reference(shape, out):
    import cv2

    rng = np.random.default_rng(7)
    logits = rng.normal(size=(1, *shape)).astype(np.float32) * 4
    r = decode_semantic({"logits": logits}, meta(out), manifest(shape[0]))
    hwc = cv2.resize(np.ascontiguousarray(logits[0].transpose(1, 2, 0)), (out[1], out[0]), interpolation=cv2.INTER_LINEAR)
    hwc = hwc[..., None] if hwc.ndim == 2 else hwc
    assert np.array_equal(r.labels, hwc.argmax(axis=2))  # the previous implementation's result
    ref = bilinear_half_pixel(logits[0].astype(np.float64), *out).argmax(0)
    assert (r.labels == ref).mean() == 1.0


def test_upsample_argument_overrides_the_bundle_and_is_checked():
    from edgeseg.errors import InputError

    logits = np.random.default_rng(1).normal(size=(1, 3, 3, 5)).astype(np.float32)
    fast = decode_semantic({"logits": logits}, meta((6, 10)), manifest(), upsample="labels")
    assert np.array_equal(fast.labels, np.repeat(np.repeat(logits[0].argmax(0), 2, 0), 2, 1))
    accurate = decode_semantic({"logits": logits}, meta((6, 10)), manifest(upsample="labels"), upsample="logits")
    assert np.array_equal(accurate.labels, bilinear_half_pixel(logits[0].astype(np.float64), 6, 10).argmax(0))
    with pytest.raises(InputError, match="upsample must be one of logits, labels"):
        decode_semantic({"logits": logits}, meta((6, 10)), manifest(), upsample="bicubic")


def _blocky_logits(rng, c, h, w, cells=(5, 6)):
    """Logits whose argmax is piecewise constant (as a network's is) with noise: boundaries are a
    minority of the pixels, the case the boundary-only upsampling is for."""
    regions = rng.integers(0, c, size=cells)
    idx = regions[np.arange(h) * cells[0] // h][:, np.arange(w) * cells[1] // w]
    logits = rng.normal(size=(c, h, w)).astype(np.float32)
    np.put_along_axis(logits, idx[None], 4.0, axis=0)
    return logits[None]


@pytest.mark.parametrize("shape,out", [((11, 180, 240), (270, 480)), ((19, 150, 200), (305, 500)), ((5, 200, 80), (150, 250))])
def test_boundary_only_upsampling_equals_resizing_every_plane(shape, out):
    # the stream's default path (no confidence) interpolates only where the four source pixels disagree;
    # it must give the labels of resizing every class plane and of the float64 reference
    import cv2

    from edgeseg.decode.semantic import _upsampled_argmax

    logits = _blocky_logits(np.random.default_rng(11), *shape)
    assert _upsampled_argmax(logits[0], ImageShape(*out), np.dtype(np.uint8)) is not None  # that path ran
    r = decode_semantic({"logits": logits}, meta(out), manifest(shape[0]))
    planes = np.stack([cv2.resize(p, (out[1], out[0]), interpolation=cv2.INTER_LINEAR) for p in logits[0]])
    assert np.array_equal(r.labels, planes.argmax(0))
    assert np.array_equal(r.labels, bilinear_half_pixel(logits[0].astype(np.float64), *out).argmax(0))
    with_conf = decode_semantic({"logits": logits}, meta(out), manifest(shape[0]), confidence=True)
    assert np.array_equal(with_conf.labels, r.labels)  # the confidence path resizes every plane


def test_a_noisy_label_map_resizes_every_plane_instead():
    """A random-weight model's logits put nearly every pixel on a boundary: interpolating them one by one
    took 210 ms at 960x540 where resizing every plane takes 23 ms. Above MAX_BOUNDARY_SHARE the decoder
    resizes every plane, with the same labels as the float64 reference."""
    import cv2

    from edgeseg.decode.semantic import _upsampled_argmax

    logits = np.random.default_rng(3).normal(size=(1, 11, 60, 80)).astype(np.float32)
    assert _upsampled_argmax(logits[0], ImageShape(90, 160), np.dtype(np.uint8)) is None
    r = decode_semantic({"logits": logits}, meta((90, 160)), manifest(11))
    planes = np.stack([cv2.resize(p, (160, 90), interpolation=cv2.INTER_LINEAR) for p in logits[0]])
    assert np.array_equal(r.labels, planes.argmax(0))
    assert np.array_equal(r.labels, bilinear_half_pixel(logits[0].astype(np.float64), 90, 160).argmax(0))


def test_a_huge_noisy_frame_takes_its_labels_one_plane_at_a_time(monkeypatch):
    """An audit: an 8000x6000 frame of a noisy map (11 classes) resized every plane at once: +2.4 GB of RSS (on this
    CPU, road: 3.6 s, +2476 MB; plane by plane 1.3 s, +645 MB, the same labels). Above PLANES_BUDGET_BYTES the
    labels come plane by plane, equal to every plane's argmax, ties to the first class."""
    import cv2

    from edgeseg.decode import semantic

    logits = np.random.default_rng(4).normal(size=(1, 11, 60, 80)).astype(np.float32)
    logits[0, 3, :10] = logits[0, 2, :10]  # exact ties: class 2 wins them, as argmax
    monkeypatch.setattr(semantic, "PLANES_BUDGET_BYTES", 11 * 90 * 160 * 4 - 1)
    called, every_plane = [], semantic._resize_planes
    monkeypatch.setattr(semantic, "_resize_planes", lambda *a: called.append(a) or every_plane(*a))
    r = decode_semantic({"logits": logits}, meta((90, 160)), manifest(11))
    planes = np.stack([cv2.resize(p, (160, 90), interpolation=cv2.INTER_LINEAR) for p in logits[0]])
    assert np.array_equal(r.labels, planes.argmax(0)) and not called and (r.labels == 2).any()


def test_boundary_only_upsampling_breaks_exact_ties_like_the_reference():
    # small integers at an exact 2x scale (weights 1/4, 3/4): interpolated values are exact, so ties
    # are real ties, and the lower class id must win them as argmax does
    logits = np.random.default_rng(5).integers(0, 3, size=(1, 4, 6, 7)).astype(np.float32)
    r = decode_semantic({"logits": logits}, meta((12, 14)), manifest(4))
    assert np.array_equal(r.labels, bilinear_half_pixel(logits[0].astype(np.float64), 12, 14).argmax(0))


def test_a_third_class_can_win_between_two_others():
    # neither source pixel has class 2 as its argmax, yet it wins halfway: boundaries are interpolated
    logits = np.array([[[10.0, 0.0]], [[0.0, 10.0]], [[9.0, 9.0]]], np.float32)[None]  # 3 classes, 1x2
    r = decode_semantic({"logits": logits}, meta((1, 4)), manifest())
    ref = bilinear_half_pixel(logits[0].astype(np.float64), 1, 4).argmax(0)
    assert r.labels.tolist() == ref.tolist() == [[0, 2, 2, 1]]


def test_a_full_uint8_range_of_classes_resizes_every_plane():
    # 256 classes leave no spare uint8 value to mark boundaries: the every-plane path, same labels
    logits = _blocky_logits(np.random.default_rng(2), 256, 6, 8, cells=(2, 2))
    r = decode_semantic({"logits": logits}, meta((9, 16)), manifest(256))
    assert r.labels.dtype == np.uint8
    assert np.array_equal(r.labels, bilinear_half_pixel(logits[0].astype(np.float64), 9, 16).argmax(0))


def test_class_bias_moves_the_argmax_by_hand():
    # pixel (0, 0): c0 1.0 against c1 0.6; a bias of +0.5 on c1 gives it to c1 (1.1 > 1.0); (0, 1) stays c2
    logits = np.array([[[1.0, 0.0]], [[0.6, 0.0]], [[0.0, 2.0]]], np.float32)[None]
    plain = decode_semantic({"logits": logits}, meta((1, 2)), manifest())
    biased = decode_semantic({"logits": logits}, meta((1, 2)), manifest(class_bias=[0, 0.5, 0]), confidence=True)
    assert plain.labels.tolist() == [[0, 2]] and biased.labels.tolist() == [[1, 2]]
    # the confidence is the softmax of the biased logits: e^1.1 / (e^1 + e^1.1 + e^0)
    np.testing.assert_allclose(biased.confidence[0, 0], math.exp(1.1) / (math.e + math.exp(1.1) + 1), rtol=1e-5)
    nhwc = decode_semantic({"logits": logits.transpose(0, 2, 3, 1)}, meta((1, 2)), manifest(class_bias=[0, 0.5, 0]))
    assert nhwc.labels.tolist() == [[1, 2]]
    # upsampled (bilinear logits, then argmax): the same as biasing the resized logits
    small = np.random.default_rng(3).normal(size=(1, 3, 3, 4)).astype(np.float32)
    b = np.array([0.3, -0.2, 0.1], np.float32)
    up = decode_semantic({"logits": small}, meta((9, 12), (3, 4)), manifest(class_bias=b.tolist()))
    want = (bilinear_half_pixel(small[0], 9, 12) + b[:, None, None]).argmax(0)
    assert (up.labels == want).mean() > 0.99  # exact up to float ties at label boundaries
    assert logits[0, 1, 0, 0] == np.float32(0.6)  # the runtime's output is not changed in place


def test_class_bias_errors():
    from edgeseg.errors import InputError
    from edgeseg.structures import SemanticOptions

    with pytest.raises(InputError, match="class_bias has 2 values for 3 classes"):
        decode_semantic({"logits": np.zeros((1, 3, 1, 1), np.float32)}, meta((1, 1)), manifest(class_bias=[0, 1]))
    for bad in ("0.5", [0.1, "x"], [True], [float("nan")], 3):
        with pytest.raises(InputError, match="class_bias must be a list of finite numbers"):
            SemanticOptions.from_dict({"class_bias": bad})
    assert SemanticOptions.from_dict({"class_bias": [1, -0.5]}).class_bias == (1.0, -0.5)
    # labels outputs (argmax in the graph) have no logits to bias: the option does nothing there
    r = decode_semantic({"labels": np.array([[[1, 0]]], np.uint8)}, meta((1, 2)), manifest(outputs=(LABELS,), class_bias=[0, 9, 0]))
    assert r.labels.tolist() == [[1, 0]]


def test_a_bundles_class_bias_reaches_every_precision(tmp_path):
    """The bias stored in a bundle's manifest (as tools/bench/class_bias.py --write does) decodes FP32
    and INT8 alike: a large bias on one class paints every pixel with it."""
    import shutil

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.data import SceneGenerator

    shutil.copytree(REPO_ZOO / "shapes.edgeseg", tmp_path / "shapes.edgeseg")
    b = Bundle.open(tmp_path / "shapes.edgeseg")
    road = b.manifest.classes.index("road")
    bias = [0.0] * b.manifest.num_classes
    bias[road] = 1000.0
    b.update(decoder=b.manifest.decoder_options.replace(class_bias=tuple(bias)).to_dict())
    img = SceneGenerator(ImageShape(120, 160), seed=1).render(0).image
    for precision in ("fp32", "int8"):
        with edgeseg.load(tmp_path / "shapes.edgeseg", backend="onnxruntime", precision=precision) as p:
            assert p.options.class_bias[road] == 1000.0
            assert (p(img).labels == road).all(), precision
            p.set_options(class_bias=())
            assert (p(img).labels != road).any(), precision


def test_class_bias_tool_undoes_a_known_prior_by_hand():
    """tools/bench/class_bias.py's coordinate ascent: frames whose truth is class 1 where the logits
    favour class 0 by 0.3 (and class 2 elsewhere, clearly): a bias of at least +0.3 on class 1 (or -0.3
    on class 0) makes every pixel right, and the search finds such a bias from zero."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
    from class_bias import choose_bias  # tools/bench/class_bias.py

    labels = np.zeros((4, 6), np.uint8)
    labels[:, :3] = 1
    labels[:, 3:] = 2
    labels[0, 0] = 255  # void: not scored
    lp = np.full((3, 4, 6), -5.0, np.float32)
    lp[0, :, :3], lp[1, :, :3] = -0.5, -0.8  # class 0 ahead of the true class 1 by 0.3
    lp[2, :, 3:] = -0.1
    # at zero: class 1 all wrong (IoU 0), class 0 all false positives (IoU 0), class 2 right (IoU 1)
    bias, start, best = choose_bias([(lp, labels)], 3, [-1, -0.5, -0.25, 0.25, 0.5, 1], log=lambda s: None)
    assert start == pytest.approx(100 / 3) and best == pytest.approx(100.0)
    assert bias[1] - bias[0] > 0.3 and ((lp + bias[:, None, None]).argmax(0) == labels)[labels != 255].all()
    # each offset of a round is tried from the class's value at the round's start (not from the last accepted)
    two = np.full((2, 1, 6), -5.0, np.float32)  # all class 1; class 0 ahead by 0.1 (left) and 0.35 (right)
    two[0], two[1, :, :3], two[1, :, 3:] = -0.5, -0.6, -0.85
    bias, _, best = choose_bias([(two, np.ones((1, 6), np.uint8))], 2, [0.2, 0.4], rounds=1, log=lambda s: None)
    assert best == pytest.approx(100.0) and bias.tolist() == pytest.approx([0.0, 0.4])  # not 0.2 + 0.4


def test_rescoring_a_report_after_a_bias(tmp_path):
    """tools/bench/class_bias.py --write re-measures what the report records: the FP32 accuracy and each
    INT8 gate's scores with the bias (here a bias that wrecks one class, so every figure moves), keeping
    the gate's own measurements under ``rescored.before`` and judging the budget again."""
    import shutil
    import sys

    from edgeseg.bundle import Bundle

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
    from class_bias import rescore_report  # tools/bench/class_bias.py

    shutil.copytree(REPO_ZOO / "shapes.edgeseg", tmp_path / "shapes.edgeseg")
    b = Bundle.open(tmp_path / "shapes.edgeseg")
    before = b.report
    bias = [0.0] * b.manifest.num_classes
    bias[b.manifest.classes.index("circle")] = -50.0  # no pixel is ever a circle
    b.update(decoder={"class_bias": bias})
    rows = rescore_report(b, threads=1)
    after = Bundle.open(tmp_path / "shapes.edgeseg").report  # verifies the files' checksums too
    assert after["accuracy"]["fp32"]["miou"] < before["accuracy"]["fp32"]["miou"] - 0.05
    assert after["accuracy"]["fp32"]["per_class_iou"]["circle"] == 0.0
    for target, rec in after["int8"].items():
        old = before["int8"][target]
        assert rec["rescored"]["before"]["int8"] == old["int8"] and rec["int8"] < old["int8"] - 5
        assert rec["fp32"] == pytest.approx(100 * after["accuracy"]["fp32"]["miou"], abs=1e-6)
        assert rec["met_budget"] == (rec["fp32"] - rec["int8"] <= rec["max_drop"])
        assert rec["rescored"]["device"]["cpu"] and rec["latency_ms"] == old["latency_ms"]  # the gate's own kept
    assert [r["record"] for r in rows] == ["accuracy fp32", "int8 cpu (onnxruntime)", "int8 tensorrt (onnxruntime)"]


def test_a_photo_too_large_for_two_planes_interpolates_in_chunks(monkeypatch):
    """A batch audit: an 8000x8000 photo's decode peaked at 680 MB above its labels (every boundary pixel's float64
    work arrays at once; a noisy map's two full-size planes: 9 bytes a pixel). Above the budget for two planes the
    labels are interpolated pixel by pixel in chunks: the float64 reference's, exact ties to the lower class; a noisy
    map (boundary share above LARGE_BOUNDARY_SHARE) goes plane by plane, 10x faster (the review)."""
    from edgeseg.decode import semantic

    logits = _blocky_logits(np.random.default_rng(4), 11, 60, 80)
    logits[0, 3, :10] = logits[0, 2, :10]
    monkeypatch.setattr(semantic, "PLANES_BUDGET_BYTES", 90 * 160 * 9 - 1)
    real, shares = semantic._upsampled_argmax, []

    def upsampled(chw, size, dtype, max_share=None):  # past the frame-size path's share: the large photo's path
        shares.append(max_share)
        return None if max_share is None else real(chw, size, dtype, max_share=max_share)

    monkeypatch.setattr(semantic, "_upsampled_argmax", upsampled)
    monkeypatch.setattr(semantic, "INTERPOLATED_CHUNK", 100)
    chunks = []
    whole, planes = semantic._interpolated_argmax, semantic._resized_argmax
    monkeypatch.setattr(semantic, "_interpolated_argmax", lambda chw, at, *a: chunks.append(at.size) or whole(chw, at, *a))
    monkeypatch.setattr(semantic, "_resized_argmax", None)  # not taken
    r = decode_semantic({"logits": logits}, meta((90, 160)), manifest(11))
    assert np.array_equal(r.labels, bilinear_half_pixel(logits[0].astype(np.float64), 90, 160).argmax(0))
    assert shares == [None, semantic.LARGE_BOUNDARY_SHARE] and max(chunks) == 100 and sum(chunks) > 300
    assert (r.labels == 2).any()
    noisy = np.random.default_rng(5).normal(size=(1, 11, 60, 80)).astype(np.float32)
    taken = []
    monkeypatch.setattr(semantic, "_resized_argmax", lambda *a: taken.append(1) or planes(*a))
    r = decode_semantic({"logits": noisy}, meta((90, 160)), manifest(11))
    assert taken and np.array_equal(r.labels, bilinear_half_pixel(noisy[0].astype(np.float64), 90, 160).argmax(0))


def test_boundary_pixels_interpolated_in_chunks_give_the_same_labels(monkeypatch):
    from edgeseg.decode import semantic

    logits = _blocky_logits(np.random.default_rng(12), 11, 180, 240)
    whole = decode_semantic({"logits": logits}, meta((270, 480)), manifest(11)).labels
    monkeypatch.setattr(semantic, "INTERPOLATED_CHUNK", 37)
    assert np.array_equal(decode_semantic({"logits": logits}, meta((270, 480)), manifest(11)).labels, whole)
