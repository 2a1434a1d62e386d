"""Dice for volumetric segmentation (V-Net's metric, Milletari et al. 2016, eq. 1 on hard labels).

Per volume and foreground class ``c``: ``D = 2 |P_c & G_c| / (|P_c| + |G_c|)`` over the voxels,
1 when both are empty (nothing to find, nothing found). :func:`dice_score` averages over the
foreground classes ``1 .. C-1`` present in the ground truth or the prediction of each volume, then
over volumes, in percent (the figure the INT8 gate compares).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def dice_per_volume(pred: np.ndarray, truth: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """``float64 [N]``: each volume's mean foreground Dice (0-1) of integer labels ``pred`` and
    ``truth`` (``[N, D, H, W]`` or one ``[D, H, W]``)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise InputError(f"Dice: predicted labels {pred.shape} and truth {truth.shape} differ",
                         fix="score labels of the same volume size (argmax the logits over the class axis)")
    if pred.ndim == 3:
        pred, truth = pred[None], truth[None]
    if pred.ndim != 4:
        raise InputError(f"Dice takes [N, D, H, W] or [D, H, W] labels, got {pred.ndim} axes")
    out = np.empty(len(pred))
    for i, (p, g) in enumerate(zip(pred, truth)):
        scores = []
        for c in range(1, int(num_classes)):
            pc, gc = p == c, g == c
            n = int(pc.sum()) + int(gc.sum())
            scores.append(1.0 if n == 0 else 2.0 * int((pc & gc).sum()) / n)
        out[i] = float(np.mean(scores)) if scores else 1.0
    return out


def dice_score(pred: np.ndarray, truth: np.ndarray, num_classes: int = 2) -> float:
    """Mean foreground Dice over the volumes, in percent (:func:`dice_per_volume`)."""
    return 100.0 * float(np.mean(dice_per_volume(pred, truth, num_classes)))
