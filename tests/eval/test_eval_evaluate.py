"""evaluate(): a plain callable predictor over real readers, hand-checked scores."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data import FolderDataset, SyntheticDataset, write_image, write_label
from edgeseg.errors import InputError
from edgeseg.eval import SemanticScores, evaluate
from edgeseg.structures import ImageShape, SemanticResult


@pytest.fixture
def tiny(tmp_path):
    """Two 2x4 images whose red channel encodes the label (label * 60), so a predictor can read it."""
    imgs, masks = tmp_path / "i", tmp_path / "m"
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    for name in ("x", "y"):
        img = np.zeros((2, 4, 3), np.uint8)
        img[..., 0] = gt * 60
        write_image(imgs / f"{name}.png", img)
        write_label(masks / f"{name}.png", gt)
    return FolderDataset(imgs, masks, classes=("background", "thing"))


def read_labels(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] // 60).astype(np.uint8)


def shifted(image: np.ndarray) -> SemanticResult:
    """Ground truth moved one column right, column 0 filled with class 0."""
    lab = read_labels(image)
    out = np.zeros_like(lab)
    out[:, 1:] = lab[:, :-1]
    return SemanticResult(out, ("background", "thing"))


def test_perfect_predictor(tiny):
    s = evaluate(lambda img: SemanticResult(read_labels(img)), tiny, progress=False)
    assert isinstance(s, SemanticScores)
    assert (s.miou, s.macc, s.pixel_acc, s.num_images) == (1.0, 1.0, 1.0, 2)
    assert s.classes == ("background", "thing")


def test_shifted_predictor_hand_checked(tiny):
    s = evaluate(shifted, tiny, progress=False, boundary=False)
    # per image: class 0 TP 4, FP 2, FN 0 -> 4/6; class 1 TP 2, FP 0, FN 2 -> 2/4
    assert s.per_class_iou == (4 / 6, 2 / 4)
    assert s.miou == (4 / 6 + 2 / 4) / 2
    assert s.per_class_acc == (1.0, 0.5) and s.macc == 0.75
    assert s.pixel_acc == 12 / 16
    assert s.confusion.tolist() == [[8, 0, 0], [4, 4, 0]]


def test_limit_and_extra_class_counts_as_miss(tiny):
    def with_void(img):  # predicts a model-only class 2 ("void") on the thing pixels
        lab = read_labels(img)
        return np.where(lab == 1, 2, lab).astype(np.uint8)

    s = evaluate(with_void, tiny, progress=False, limit=1)
    assert s.num_images == 1
    assert s.per_class_iou == (1.0, 0.0) and s.pixel_acc == 0.5 and s.confusion[1].tolist() == [0, 0, 4]


def test_perfect_on_synthetic_with_boundary():
    ds = SyntheticDataset(3, ImageShape(48, 64), seed=2)
    truth = {s.image.tobytes(): s.labels for s in ds}
    s = evaluate(lambda img: SemanticResult(truth[img.tobytes()]), ds, progress=False)
    assert s.miou == 1.0 and s.pixel_acc == 1.0 and s.boundary_f1 == 1.0 and s.num_images == 3


def test_wrong_size_prediction(tiny):
    with pytest.raises(InputError, match=r"prediction for 'x' is \[1, 1\], the image is \[2, 4\]"):
        evaluate(lambda img: np.zeros((1, 1), np.uint8), tiny, progress=False)
