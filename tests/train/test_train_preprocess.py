"""Training feeds exactly what inference feeds: TrainSet/EvalSet tensors against InputSpec.preprocess
and a float64 hand computation, for a BGR spec with 0-255 means (a Caffe-style convention)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgeseg.structures import ImageShape, InputSpec
from edgeseg.train.augment import AugmentConfig
from edgeseg.train.data import EvalSet, TrainSet

SIZE = ImageShape(12, 16)
MEAN, STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)  # B, G, R order, 0-255 units
BGR = InputSpec(size=SIZE, color="BGR", mean=MEAN, std=STD, scale=1.0)


def _reference(rgb: np.ndarray) -> np.ndarray:
    """float64 ``(bgr_pixel - mean) / std``, CHW."""
    bgr = rgb[..., ::-1].astype(np.float64)
    return ((bgr - np.asarray(MEAN)) / np.asarray(STD)).transpose(2, 0, 1)


def _dataset(images, labels):
    return [SimpleNamespace(image=i, labels=l, name=str(k)) for k, (i, l) in enumerate(zip(images, labels))]


def test_normalize_is_the_pixel_step_of_preprocess():
    rgb = np.array([[[255, 0, 10], [0, 128, 255]]], np.uint8)  # 1x2 image
    got = BGR.normalize(rgb)
    assert got.dtype == np.float32 and got.shape == (1, 2, 3)
    # first pixel in BGR is (10, 0, 255): ((10 - 103.53) / 57.375, (0 - 116.28) / 57.12, (255 - 123.675) / 58.395)
    np.testing.assert_allclose(got[0, 0], [-1.630153, -2.035714, 2.248909], atol=1e-5)
    np.testing.assert_allclose(got.transpose(2, 0, 1), _reference(rgb), atol=1e-5)
    rgb_spec = InputSpec(size=ImageShape(1, 2))  # ImageNet mean/std in 0-1 units, RGB
    np.testing.assert_allclose(rgb_spec.normalize(rgb)[0, 1], [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224,
                                                              (1 - 0.406) / 0.225], atol=1e-5)
    x, _ = InputSpec(size=ImageShape(1, 2), color="BGR", mean=MEAN, std=STD, scale=1.0).preprocess(rgb)
    np.testing.assert_array_equal(x[0], BGR.normalize(rgb).transpose(2, 0, 1))


def test_train_tensors_equal_preprocess_output():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*SIZE.hw, 3), dtype=np.uint8) for _ in range(3)]
    labels = [rng.integers(0, 4, SIZE.hw, dtype=np.uint8) for _ in range(3)]
    still = AugmentConfig(SIZE, scale=(1.0, 1.0), hflip=False, brightness=0.0, contrast=0.0, saturation=0.0)
    ts = TrainSet(_dataset(images, labels), still, BGR, seed=1)
    for k, img in enumerate(images):
        x, y = ts[k]
        want, _ = BGR.preprocess(img)
        assert x.dtype == np.float32 and x.shape == (3, *SIZE.hw)
        np.testing.assert_array_equal(x, want[0])  # bit for bit what inference feeds
        np.testing.assert_allclose(x, _reference(img), atol=1e-5)
        np.testing.assert_array_equal(y, labels[k].astype(np.int64))


def test_eval_set_resizes_like_preprocess_and_keeps_labels():
    import cv2

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    lab = rng.integers(0, 4, (30, 40), dtype=np.uint8)
    ev = EvalSet(_dataset([img], [lab]), SIZE, BGR)
    x, y = ev[0]
    want, meta = BGR.preprocess(img)
    assert meta.network == SIZE and x.shape == (3, *SIZE.hw)
    np.testing.assert_array_equal(x, want[0])
    np.testing.assert_allclose(x, _reference(cv2.resize(img, SIZE.wh, interpolation=cv2.INTER_LINEAR)), atol=1e-5)
    assert y is lab  # original size, untouched
    x_own, _ = EvalSet(_dataset([img], [lab]), None, BGR)[0]  # no size: the image at its own size
    np.testing.assert_allclose(x_own, _reference(img), atol=1e-5)


@pytest.mark.parametrize("layout,dtype", [("NHWC", "float16"), ("NCHW", "uint8")])
def test_eval_set_feeds_the_training_model_float32_nchw(layout, dtype):
    img = np.full((6, 8, 3), (10, 20, 30), np.uint8)
    spec = InputSpec(size=ImageShape(6, 8), layout=layout, dtype=dtype, color="BGR", mean=MEAN, std=STD, scale=1.0)
    x, _ = EvalSet(_dataset([img], [np.zeros((6, 8), np.uint8)]), ImageShape(6, 8), spec)[0]
    assert x.dtype == np.float32 and x.shape == (3, 6, 8)
    np.testing.assert_allclose(x[:, 0, 0], [(30 - MEAN[0]) / STD[0], (20 - MEAN[1]) / STD[1], (10 - MEAN[2]) / STD[2]],
                               atol=1e-5)
