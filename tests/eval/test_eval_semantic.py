"""SemanticMetric against an independent cityscapesScripts-style reference and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg.errors import DataError, InputError
from edgeseg.eval import SemanticMetric
from edgeseg.structures import SemanticResult

IGNORE = 255


def reference_scores(preds, gts, num_classes, ignore=IGNORE):
    """cityscapesScripts style: per class TP/FP/FN counted with masks image by image, in Python ints."""
    tp, fp, fn = [0] * num_classes, [0] * num_classes, [0] * num_classes
    correct = total = 0
    for pred, gt in zip(preds, gts):
        valid = gt != ignore
        for c in range(num_classes):
            is_gt, is_pred = (gt == c) & valid, (pred == c) & valid
            tp[c] += int((is_gt & is_pred).sum())
            fp[c] += int((~is_gt & is_pred).sum())  # predicted c on a (non-void) pixel of another class
            fn[c] += int((is_gt & ~is_pred).sum())  # a c pixel predicted as anything else, out-of-range included
        correct += int(((pred == gt) & valid).sum())
        total += int(valid.sum())
    iou, acc = [], []
    for c in range(num_classes):
        denom = tp[c] + fp[c] + fn[c]
        iou.append(float("nan") if denom == 0 else tp[c] / denom)
        acc.append(float("nan") if tp[c] + fn[c] == 0 else tp[c] / (tp[c] + fn[c]))
    good = [x for x in iou if not math.isnan(x)]
    good_acc = [x for x in acc if not math.isnan(x)]
    return {
        "iou": iou, "acc": acc, "miou": sum(good) / len(good), "macc": sum(good_acc) / len(good_acc),
        "pixel_acc": correct / total,
    }


def _same(a, b):
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_exactly_with_reference(seed):
    rng = np.random.default_rng(seed)
    k = 11
    preds, gts = [], []
    metric = SemanticMetric(k, boundary=False)
    for _ in range(4):
        gt = rng.integers(0, k, (37, 53)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = IGNORE
        gt[gt == 7] = 3  # class 7 never in the ground truth ...
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, k + 2, gt.shape)).astype(np.uint8)
        pred[pred == IGNORE] = 0
        pred[rng.random(gt.shape) < 0.03] = 200  # ... and predictions outside the classes
        pred[pred == 9] = 4  # class 9 in the GT but never predicted
        preds.append(pred), gts.append(gt)
        metric.update(pred, gt)
    s, ref = metric.compute(), reference_scores(preds, gts, k)
    assert _same(s.per_class_iou, ref["iou"]) and _same(s.per_class_acc, ref["acc"])
    assert s.miou == ref["miou"] and s.macc == ref["macc"] and s.pixel_acc == ref["pixel_acc"]
    assert s.per_class_iou[9] == 0.0 and s.per_class_acc[7] != s.per_class_acc[7]  # NaN: no GT of class 7
    assert s.confusion.shape == (k, k + 1) and s.confusion.sum() == sum(int((g != IGNORE).sum()) for g in gts)


def test_hand_computed_tiny_case():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 5, 0, 0]], np.uint8)  # 5 is a model's extra class
    m = SemanticMetric(4, boundary=False, classes=("a", "b", "c", "d"))
    m.update(SemanticResult(pred), gt)
    s = m.compute()
    # class 0: TP 1, FN 1 (->1), FP 1 (gt 1 -> 0; the void pixel does not count)  IoU 1/3
    # class 1: TP 2, FN 1, FP 1                                                   IoU 2/4
    # class 2: TP 1, FN 1 (-> 5, a miss), FP 0                                     IoU 1/2
    # class 3: absent everywhere                                                   NaN
    assert s.per_class_iou[:3] == (1 / 3, 2 / 4, 1 / 2) and math.isnan(s.per_class_iou[3])
    assert s.miou == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3, abs=0, rel=1e-15)
    assert s.per_class_acc[:3] == (1 / 2, 2 / 3, 1 / 2)
    assert s.pixel_acc == 4 / 7
    assert s.confusion[2, 4] == 1  # the out-of-range column
    d = s.to_dict()
    assert d["per_class"]["b"]["iou"] == 0.5 and d["per_class"]["d"]["iou"] is None and d["num_images"] == 1


def test_accumulates_over_images_not_per_image_mean():
    m = SemanticMetric(2, boundary=False)
    m.update(np.array([[0, 0]]), np.array([[0, 0]]))  # perfect on image 1
    m.update(np.array([[1, 1, 1]]), np.array([[0, 0, 1]]))  # class 0: FN 2, class 1: FP 2
    s = m.compute()
    assert s.per_class_iou == (2 / 4, 1 / 3) and s.pixel_acc == 3 / 5 and s.num_images == 2
    m.reset()
    assert m.compute().num_images == 0 and math.isnan(m.compute().miou)


def test_errors():
    m = SemanticMetric(3)
    with pytest.raises(InputError, match="differ in size"):
        m.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(DataError, match=r"class ids \[3, 7\] outside 0..2"):
        m.update(np.zeros((1, 3), np.uint8), np.array([[3, 7, 255]], np.uint8))
    with pytest.raises(InputError, match="integer"):
        m.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(InputError, match="class names"):
        SemanticMetric(3, classes=("a",))
