"""Semantic segmentation metrics: mIoU, mAcc, pixel accuracy, per-class IoU, boundary F1.

Definitions follow cityscapesScripts (``evalPixelLevelSemanticLabeling.py``): a confusion matrix
over pixels whose ground truth is not void; for class c, ``TP = C[c, c]``, ``FN = row c - TP``,
``FP = column c - TP`` and ``IoU = TP / (TP + FP + FN)``; a class absent from both ground truth and
prediction has IoU NaN and is left out of the mean. Per-class accuracy is ``TP / (TP + FN)``
(NaN without ground truth); pixel accuracy is ``trace / valid pixels``.

Scores are over the dataset's own ``num_classes`` classes: a prediction outside
``[0, num_classes)`` (a model's extra void class, say) is kept in an extra confusion column, so it
counts as a miss (FN) for the ground-truth class and as nobody's TP or FP.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError, InputError
from .boundary import DEFAULT_TOLERANCE, image_boundary_f1, tolerance_px


@dataclass(frozen=True)
class SemanticScores:
    """Scores of a set of images. Fractions in [0, 1]; NaN where undefined.

    confusion: ``int64 [K, K+1]``, rows = ground truth, columns = prediction, column K = predictions
    outside the K classes. boundary_f1 is NaN when boundary scoring was off or saw no boundary.
    """

    miou: float
    macc: float
    pixel_acc: float
    per_class_iou: tuple[float, ...]
    per_class_acc: tuple[float, ...]
    boundary_f1: float
    per_class_boundary_f1: tuple[float, ...]
    confusion: np.ndarray = field(repr=False, compare=False)
    classes: tuple[str, ...] = ()
    num_images: int = 0
    boundary_tolerance_px: float | None = None

    @property
    def num_classes(self) -> int:
        return len(self.per_class_iou)

    def class_names(self) -> tuple[str, ...]:
        return self.classes or tuple(str(i) for i in range(self.num_classes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None; per-class values keyed by class name."""
        names = self.class_names()
        return {
            "miou": _num(self.miou),
            "macc": _num(self.macc),
            "pixel_acc": _num(self.pixel_acc),
            "boundary_f1": _num(self.boundary_f1),
            "num_images": self.num_images,
            "boundary_tolerance_px": self.boundary_tolerance_px,
            "per_class": {
                n: {"iou": _num(i), "acc": _num(a), "boundary_f1": _num(b)}
                for n, i, a, b in zip(names, self.per_class_iou, self.per_class_acc, self.per_class_boundary_f1)
            },
            "confusion": self.confusion.tolist(),
        }


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _labels_of(x: Any, what: str) -> np.ndarray:
    arr = getattr(x, "labels", x)
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{what} must be a label array or a SemanticResult, got {type(x).__name__}")
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} must be an integer [H, W] label map, got {arr.dtype} {list(arr.shape)}")
    return arr


class SemanticMetric:
    """Accumulates a confusion matrix (and per-image boundary F1) over ``update`` calls.

    ``boundary_tolerance`` is a fraction of each image's diagonal; ``boundary_tolerance_px``, when
    given, is a fixed pixel tolerance instead. ``boundary=False`` skips boundary F1 (it is the
    slow part: two distance transforms per class per image).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        boundary: bool = True,
        *,
        boundary_tolerance: float = DEFAULT_TOLERANCE,
        boundary_tolerance_px: float | None = None,
        classes: tuple[str, ...] = (),
    ):
        def integer(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        if not integer(num_classes) or num_classes < 1:
            raise InputError(f"SemanticMetric needs a whole number of classes, at least one, got {num_classes!r}",
                             fix="SemanticMetric(len(classes))")
        if not integer(ignore_index):
            raise InputError(f"SemanticMetric ignore_index must be an integer label, got {ignore_index!r}",
                             fix="e.g. 255 (the default) or -1; a label no class has when nothing is ignored")
        for what, v in (("boundary_tolerance", boundary_tolerance), ("boundary_tolerance_px", boundary_tolerance_px)):
            if v is None and what.endswith("px"):
                continue
            if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise InputError(f"SemanticMetric {what} must be a finite number >= 0, got {v!r}",
                                 fix="boundary_tolerance: a fraction of the image diagonal (0.0075, the default); "
                                     "boundary_tolerance_px: pixels")
        if classes and len(classes) != num_classes:
            raise InputError(f"SemanticMetric got {len(classes)} class names for {num_classes} classes")
        self.num_classes, self.ignore_index, self.boundary = int(num_classes), int(ignore_index), boundary
        self.boundary_tolerance, self.boundary_tolerance_px = boundary_tolerance, boundary_tolerance_px
        self.classes = tuple(classes)
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self._confusion = np.zeros((k, k + 1), np.int64)
        self._bf_images: list[float] = []
        self._bf_sum = np.zeros(k, np.float64)
        self._bf_count = np.zeros(k, np.int64)
        self._images = 0
        self._last_theta: float | None = None

    @property
    def images_scored(self) -> int:
        """The images :meth:`update` has taken so far."""
        return self._images

    def update(self, pred: Any, gt: Any) -> None:
        """Add one image: ``pred`` and ``gt`` integer ``[H, W]`` (or SemanticResult / Sample-like)."""
        p, g = _labels_of(pred, "prediction"), _labels_of(gt, "ground truth")
        if p.shape != g.shape:
            raise InputError(f"prediction {list(p.shape)} and ground truth {list(g.shape)} differ in size")
        k = self.num_classes
        valid = g != self.ignore_index
        gv = g[valid].astype(np.int64)
        if gv.size and (gv.min() < 0 or gv.max() >= k):
            bad = np.unique(gv[(gv < 0) | (gv >= k)])[:5].tolist()
            raise DataError(
                f"ground truth has class ids {bad} outside 0..{k - 1} (ignore index {self.ignore_index})",
                fix="check num_classes and the dataset's void mapping",
            )
        pv = p[valid].astype(np.int64)
        pv = np.where((pv >= 0) & (pv < k), pv, k)
        self._confusion += np.bincount(gv * (k + 1) + pv, minlength=k * (k + 1)).reshape(k, k + 1)
        self._images += 1
        if self.boundary:
            self._update_boundary(p, g)

    def _update_boundary(self, p: np.ndarray, g: np.ndarray) -> None:
        theta = self.boundary_tolerance_px
        if theta is None:
            theta = tolerance_px(g.shape, self.boundary_tolerance)
        self._last_theta = theta
        per_class = image_boundary_f1(p, g, self.num_classes, self.ignore_index, theta)
        if per_class:
            self._bf_images.append(float(np.mean(list(per_class.values()))))
            for c, f in per_class.items():
                self._bf_sum[c] += f
                self._bf_count[c] += 1

    @property
    def confusion(self) -> np.ndarray:
        return self._confusion.copy()

    def compute(self) -> SemanticScores:
        c = self._confusion.astype(np.float64)
        k = self.num_classes
        tp = np.diag(c[:, :k])
        gt_total = c.sum(1)
        fn = gt_total - tp
        fp = c[:, :k].sum(0) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
            acc = np.where(gt_total > 0, tp / gt_total, np.nan)
            bf = np.where(self._bf_count > 0, self._bf_sum / np.maximum(self._bf_count, 1), np.nan)
        total = c.sum()
        return SemanticScores(
            miou=_nanmean(iou),
            macc=_nanmean(acc),
            pixel_acc=float(tp.sum() / total) if total > 0 else math.nan,
            per_class_iou=tuple(float(x) for x in iou),
            per_class_acc=tuple(float(x) for x in acc),
            boundary_f1=float(np.mean(self._bf_images)) if self._bf_images else math.nan,
            per_class_boundary_f1=tuple(float(x) for x in bf),
            confusion=self._confusion.copy(),
            classes=self.classes,
            num_images=self._images,
            boundary_tolerance_px=self._last_theta if self.boundary_tolerance_px is None else self.boundary_tolerance_px,
        )


def _nanmean(x: np.ndarray) -> float:
    """Mean of the non-NaN values, summed left to right as cityscapesScripts' getScoreAverage does."""
    vals = [float(v) for v in x if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan
