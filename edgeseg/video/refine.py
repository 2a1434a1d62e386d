"""Mask clean-up for propagation: the uncertain band, edge-aware smoothing, component and hole rules."""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def disk_kernel(radius: int) -> np.ndarray:
    """A disk structuring element (made once per radius: the propagator asks for the same ones every
    frame; read-only)."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    k.setflags(write=False)
    return k


def boundary_band(mask: np.ndarray, radius: int) -> np.ndarray:
    """``bool``: pixels within ``radius`` px of the boundary of ``mask`` (inside or outside)."""
    import cv2

    m = mask.astype(np.uint8)
    k = disk_kernel(radius)
    return (cv2.dilate(m, k) > 0) & ~(cv2.erode(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0)


def guided_filter(guide: np.ndarray, p: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """He, Sun and Tang, "Guided Image Filtering" (ECCV 2010), grey guide: edge-aware smoothing of ``p``.

    guide: ``float32 [h, w]`` in [0, 1]; p: ``float32 [h, w]``; box windows of ``2 * radius + 1``.
    subsample > 1: the fast guided filter (He and Sun, arXiv 2015): the linear coefficients are found
    at 1/subsample resolution and upsampled, the output keeps the guide's full-resolution edges.
    """
    import cv2

    h, w = p.shape
    s = max(1, int(subsample))
    if s > 1 and min(h, w) >= 4 * s:
        small = (max(1, w // s), max(1, h // s))
        I, q = cv2.resize(guide, small, interpolation=cv2.INTER_AREA), cv2.resize(p, small, interpolation=cv2.INTER_AREA)
        r = max(1, radius // s)
    else:
        I, q, r, s = guide, p, radius, 1
    size = (2 * r + 1, 2 * r + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)

    m_i, m_p = mean(I), mean(q)
    cov = mean(I * q) - m_i * m_p
    var = mean(I * I) - m_i * m_i
    a = cov / (var + eps)
    b = m_p - a * m_i
    ma, mb = mean(a), mean(b)
    if s > 1:
        ma = cv2.resize(ma, (w, h), interpolation=cv2.INTER_LINEAR)
        mb = cv2.resize(mb, (w, h), interpolation=cv2.INTER_LINEAR)
    return ma * guide + mb


def keep_supported(mask: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Keep only the 8-connected components of ``mask`` that touch ``support`` (bool, same size);
    ``mask`` unchanged when none does (so an object is not dropped on a bad frame)."""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    touched = np.bincount(labels[support & mask], minlength=n) > 0
    touched[0] = False
    return touched[labels] if touched.any() else mask


def fill_holes(mask: np.ndarray, max_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Fill the background holes of ``mask`` smaller than ``max_fraction`` of its area (holes touching
    the border are no holes). Returns (filled mask, the filled pixels)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    if n <= 2:
        return mask, np.zeros_like(mask)
    small = stats[:, cv2.CC_STAT_AREA] < max_fraction * int(mask.sum())
    small[0] = False  # label 0 is the mask itself
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small[border] = False
    if not small.any():
        return mask, np.zeros_like(mask)
    holes = small[labels]
    return mask | holes, holes
