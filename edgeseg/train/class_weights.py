"""Class weights from label frequencies, for the class-weighted cross-entropy (``wce``).

* ``enet``:   ``w_c = 1 / ln(c + p_c)`` with ``c = 1.02`` and ``p_c`` the class's share of all
              labelled pixels (Paszke et al., "ENet", 2016).
* ``median``: median frequency balancing ``w_c = median(f) / f_c`` where ``f_c`` is the pixel count
              of class ``c`` divided by the pixel count of the images that contain ``c``
              (Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels", 2015).

A class absent from the data gets weight 0 (it contributes nothing anyway).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .._registry import Registry
from ..errors import InputError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassStats:
    """Per-class pixel counts and, per class, the labelled-pixel count of the images containing it."""

    pixels: np.ndarray  # int64 [C]
    image_pixels: np.ndarray  # int64 [C]

    @classmethod
    def from_frame_pixels(cls, frame_pixels: np.ndarray) -> "ClassStats":
        """From per-frame class pixel counts ``int64 [N, C]`` (:func:`frame_class_pixels`)."""
        frame_pixels = np.asarray(frame_pixels, np.int64)
        labelled = frame_pixels.sum(axis=1, keepdims=True)
        return cls(frame_pixels.sum(axis=0), np.where(frame_pixels > 0, labelled, 0).sum(axis=0))


def label_counts(labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixels per class of one label map, ``int64 [num_classes]`` (``ignore_index`` not counted)."""
    flat = np.asarray(labels).reshape(-1)
    flat = flat[flat != ignore_index]
    if flat.size and int(flat.max()) >= num_classes:
        raise InputError(f"label {int(flat.max())} in a training label map >= the number of classes {num_classes}",
                         fix="check the dataset's label values, or give --num-classes")
    return np.bincount(flat, minlength=num_classes)[:num_classes].astype(np.int64)


def frame_class_pixels(dataset: Sequence, num_classes: int, ignore_index: int | None = None,
                       max_samples: int | None = None) -> np.ndarray:
    """Per-frame class pixel counts of a dataset (a sequence of ``Sample``), ``int64 [N, num_classes]``: the one
    pass over the training labels that class weights, rare-class sampling and copy-paste read. ``ignore_index``
    defaults to the dataset's (else 255)."""
    ignore = getattr(dataset, "ignore_index", IGNORE_INDEX) if ignore_index is None else ignore_index
    count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    out = np.zeros((count, num_classes), np.int64)
    for i in range(count):
        out[i] = label_counts(dataset[i].labels, num_classes, ignore)
    return out


def class_shares(pixels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked per-frame counts ``int64 [N, C]`` (:func:`frame_class_pixels`), each class's share of all
    labelled pixels ``float64 [C]``, and of each frame's labelled pixels ``float64 [N, C]``; ``what``
    (e.g. "copy-paste") names the user in errors."""
    pixels = np.asarray(pixels, np.int64)
    if pixels.ndim != 2 or pixels.shape[0] == 0:
        raise InputError(f"{what} needs per-frame class counts [N, C] with N > 0, got {pixels.shape}")
    total = pixels.sum(axis=0).astype(np.float64)
    if total.sum() <= 0:
        raise InputError(f"{what}: the training labels hold no labelled pixel", fix="check the dataset's label maps (all void?)")
    return pixels, total / total.sum(), pixels / np.maximum(pixels.sum(axis=1, keepdims=True), 1)


def class_stats(labels: Iterable[np.ndarray], num_classes: int, ignore_index: int = IGNORE_INDEX) -> ClassStats:
    """Count pixels per class over label maps (``uint8 [H, W]``)."""
    counts = [label_counts(lab, num_classes, ignore_index) for lab in labels]
    return ClassStats.from_frame_pixels(np.array(counts, np.int64).reshape(-1, num_classes))


WEIGHTINGS: Registry = Registry("class weighting", InputError)
"""Method name -> ``(ClassStats) -> float64 [C]`` weights."""


@WEIGHTINGS.register("enet")
def enet_weights(stats: ClassStats, c: float = 1.02) -> np.ndarray:
    p = stats.pixels / max(1, int(stats.pixels.sum()))
    w = 1.0 / np.log(c + p)
    return np.where(stats.pixels > 0, w, 0.0)


@WEIGHTINGS.register("median")
def median_frequency_weights(stats: ClassStats) -> np.ndarray:
    present = stats.pixels > 0
    freq = np.zeros(len(stats.pixels), np.float64)
    freq[present] = stats.pixels[present] / stats.image_pixels[present]
    if not present.any():
        return freq
    med = float(np.median(freq[present]))
    return np.where(present, med / np.where(present, freq, 1.0), 0.0)


def class_weights(dataset, method: str = "enet", num_classes: int | None = None, max_samples: int | None = None) -> tuple[float, ...]:
    """Class weights of a dataset (a sequence of ``Sample``) by ``method`` (``enet`` or ``median``)."""
    n = num_classes if num_classes is not None else len(dataset.classes)
    return weights_of(ClassStats.from_frame_pixels(frame_class_pixels(dataset, n, max_samples=max_samples)), method)


def weights_of(stats: ClassStats, method: str = "enet") -> tuple[float, ...]:
    """Class weights by ``method`` from counts already taken."""
    return tuple(float(v) for v in WEIGHTINGS.get(method)(stats))
