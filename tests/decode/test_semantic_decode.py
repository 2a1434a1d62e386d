"""decode_semantic on hand-computed cases: argmax, letterbox undo, resizing, NHWC, labels, confidence."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from edgeseg.bundle import Manifest, OutputSpec
from edgeseg.decode import DECODERS, decode, decode_semantic
from edgeseg.errors import UnsupportedError
from edgeseg.structures import ImageShape, InputSpec, PreprocessMeta

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


def test_extra_output_channels_keep_their_ids():
    # a model with a void class (4 channels) in a 3-class bundle: channel 3 wins where it is largest
    logits = np.zeros((1, 4, 1, 2), np.float32)
    logits[0, 3, 0, 1] = 5
    r = decode_semantic({"logits": logits}, meta((1, 2)), manifest())
    assert r.labels.tolist() == [[0, 3]]


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
