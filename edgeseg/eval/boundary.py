"""Boundary F1 ("BF score"), after Csurka, Larlus and Perronnin, "What is a good evaluation measure
for semantic segmentation?", BMVC 2013 (the measure MATLAB's ``bfscore`` implements).

What is computed, exactly, for one image:

1. Pixels whose ground truth is void are set aside: ``valid = gt != ignore``.
2. For each class c, the binary masks ``G = (gt == c)`` and ``P = (pred == c) & valid``.
3. A mask's boundary is its pixels with a 4-neighbour that is valid and outside the mask. Edges
   against void pixels and the image border are therefore no boundaries, in either map: where the
   truth is unknown, no boundary can be judged (without void this is the usual inner boundary).
4. With ``theta`` the tolerance in pixels (default 0.75 % of the image diagonal), a boundary pixel
   is matched when the Euclidean distance to the nearest boundary pixel of the other map is
   ``<= theta``. Precision = matched predicted boundary pixels / predicted boundary pixels;
   recall = matched ground-truth boundary pixels / ground-truth boundary pixels;
   ``F1 = 2PR / (P + R)`` (0 when P + R = 0, and when only one of the two boundaries is empty).
5. Classes with no boundary in either map are skipped. The image's score is the mean of F1 over
   the remaining classes; an image with none contributes nothing.

:class:`~edgeseg.eval.SemanticMetric` averages image scores over the images (and, per class, the
class's F1 over the images where it was scored).
"""
from __future__ import annotations

import functools
import math

import numpy as np

DEFAULT_TOLERANCE = 0.0075  # fraction of the image diagonal


def tolerance_px(shape: tuple[int, int], fraction: float = DEFAULT_TOLERANCE) -> float:
    """The BF tolerance in pixels for an image of ``(height, width)``."""
    return fraction * math.hypot(shape[0], shape[1])


def boundary(mask: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``bool [H, W]``: mask pixels with a 4-neighbour that is valid and outside the mask."""
    import cv2

    m = np.asarray(mask, bool)
    outside = ~m if valid is None else (~m & valid)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    near_outside = cv2.dilate(outside.astype(np.uint8), cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return m & (near_outside > 0)


def _within(b: np.ndarray, theta: float) -> np.ndarray:
    """``bool``: the pixels at Euclidean distance ``<= theta`` from a True pixel of ``b``: ``b`` dilated by the
    disk ``dx^2 + dy^2 <= theta^2`` (a batch audit: the exact distance transform, two per class and image, was 62 %
    of boundary F1 and boundary F1 38 % of a CamVid eval; the dilation is 6x cheaper, with integer offsets compared
    exactly where the transform's float32 distances could round at a tie). Past :data:`DISK_MAX_RADIUS` the
    transform is cheaper again."""
    import cv2

    if theta < 0:
        return np.zeros(b.shape, bool)
    if theta > DISK_MAX_RADIUS:
        return cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= theta
    return cv2.dilate(b.astype(np.uint8), _disk(float(theta)), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


#: the largest tolerance (px) matched by dilation with a disk (``tools/bench/boundary_f1.py`` on CamVid's and the
#: street frames' label maps, this EPYC: the disk 0.06x the transform's time at 4.5 px, 0.33-0.37x at 12, 0.62-0.71x at
#: 16.5, 2.5-2.8x at 33); the default tolerance is 4.5 px at 480x360, 5.4 at 640x320, 16.5 at 1080p, 33 at 4K
DISK_MAX_RADIUS = 20


@functools.lru_cache(maxsize=32)
def _disk(theta: float) -> np.ndarray:
    r = int(math.floor(theta))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= theta * theta).astype(np.uint8)


def class_boundary_f1(
    pred_mask: np.ndarray, gt_mask: np.ndarray, theta: float, valid: np.ndarray | None = None
) -> float | None:
    """F1 of two binary masks' boundaries at tolerance ``theta`` px; None when neither has a boundary.

    ``valid`` (bool [H, W]) marks the non-void pixels; ``pred_mask`` must already be limited to them.
    """
    bp, bg = boundary(pred_mask, valid), boundary(gt_mask, valid)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return None
    if n_p == 0 or n_g == 0:
        return 0.0
    # all boundary pixels lie in their bounding box, so distances computed inside it are exact
    both = bp | bg
    rows, cols = np.flatnonzero(both.any(1)), np.flatnonzero(both.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    bp, bg = bp[box], bg[box]
    precision = float(np.count_nonzero(_within(bg, theta)[bp])) / n_p
    recall = float(np.count_nonzero(_within(bp, theta)[bg])) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def image_boundary_f1(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int, theta: float
) -> dict[int, float]:
    """Per-class boundary F1 of one image (classes with no boundary anywhere are absent)."""
    valid = gt != ignore_index
    present = np.union1d(np.unique(gt[valid]), np.unique(pred[valid]))
    out: dict[int, float] = {}
    for c in present:
        c = int(c)
        if not 0 <= c < num_classes:
            continue
        f = class_boundary_f1((pred == c) & valid, gt == c, theta, valid)
        if f is not None:
            out[c] = f
    return out
