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
from typing import Iterable

import numpy as np

from .._registry import Registry
from ..errors import InputError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassStats:
    """Per-class pixel counts and, per class, the labelled-pixel count of the images containing it."""

    pixels: np.ndarray  # int64 [C]
    image_pixels: np.ndarray  # int64 [C]


def class_stats(labels: Iterable[np.ndarray], num_classes: int, ignore_index: int = IGNORE_INDEX) -> ClassStats:
    """Count pixels per class over label maps (``uint8 [H, W]``)."""
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for lab in labels:
        counts = label_counts(lab, num_classes, ignore_index)
        pixels += counts
        image_pixels[counts > 0] += int(counts.sum())
    return ClassStats(pixels, image_pixels)


def label_counts(labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixels per class of one label map, ``int64 [num_classes]`` (``ignore_index`` not counted)."""
    flat = np.asarray(labels).reshape(-1)
    flat = flat[flat != ignore_index]
    if flat.size and int(flat.max()) >= num_classes:
        raise InputError(f"label {int(flat.max())} in a training label map >= the number of classes {num_classes}",
                         fix="check the dataset's label values, or give --num-classes")
    return np.bincount(flat, minlength=num_classes)[:num_classes].astype(np.int64)


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
    count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    stats = class_stats((dataset[i].labels for i in range(count)), n, getattr(dataset, "ignore_index", IGNORE_INDEX))
    return tuple(float(v) for v in WEIGHTINGS.get(method)(stats))
