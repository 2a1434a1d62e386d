"""Matrix NMS — Wang, Zhang, Kong, Li & Shen, "SOLOv2: Dynamic and Fast Instance Segmentation"
(NeurIPS 2020), section 4.

Instead of removing masks one after another, every mask's score is decayed in one parallel step by
how much it overlaps the masks ranked above it, compensated by how much those were themselves
suppressed::

    decay_j = min over i ranked above j (same class) of  f(iou_ij) / f(max_iou_i)
    max_iou_i = max over k ranked above i (same class) of iou_ki
    gaussian: f(x) = exp(-sigma * x^2)      linear: f(x) = 1 - x

The Gaussian form is the authors' reference code (``exp(-sigma * iou^2)`` with ``sigma = 2.0``).

Here the IoUs of the binarised masks come from one batched matrix product, and "ranked above" is
an order matrix built from the scores (higher score first, the lower index first on ties), so the
candidates need not be sorted and nothing is gathered: the graph is MatMul, comparisons and
reductions with static shapes, and exports to ONNX as is.
"""
from __future__ import annotations

import torch

from ..errors import InputError

KERNELS = ("gaussian", "linear")


def rank_above(scores: torch.Tensor) -> torch.Tensor:
    """``bool [B, P, P]``: entry ``[b, i, j]`` is True when candidate i ranks above candidate j
    (higher score, or an equal score and a lower index)."""
    p = scores.shape[-1]
    si, sj = scores.unsqueeze(-1), scores.unsqueeze(-2)
    idx = torch.arange(p, device=scores.device)
    lower_index = (idx.unsqueeze(-1) < idx.unsqueeze(-2)).unsqueeze(0)
    return (si > sj) | ((si == sj) & lower_index)


def mask_iou_matrix(masks: torch.Tensor, areas: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of every pair of binary masks: ``masks`` float ``[B, P, HW]`` (0/1) -> ``[B, P, P]``.
    Two empty masks have IoU 0."""
    inter = torch.matmul(masks, masks.transpose(1, 2))
    if areas is None:
        areas = masks.sum(-1)
    union = areas.unsqueeze(-1) + areas.unsqueeze(-2) - inter
    return inter / union.clamp(min=1.0)


def matrix_nms(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, *, kernel: str = "gaussian",
               sigma: float = 2.0, areas: torch.Tensor | None = None) -> torch.Tensor:
    """Decayed scores ``[B, P]`` (same order as the input) for candidates ``masks`` float
    ``[B, P, HW]`` (binary), ``labels`` int ``[B, P]``, ``scores`` float ``[B, P]``. Class-aware:
    only masks of the same label suppress each other. ``areas`` ``[B, P]`` (pixel counts) may be
    passed when already known."""
    if kernel not in KERNELS:
        raise InputError(f"matrix_nms: kernel must be one of {KERNELS}, got {kernel!r}")
    iou = mask_iou_matrix(masks, areas)
    same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    # iou[b, i, j] only where i ranks above j and both have the same class
    decay_iou = torch.where(rank_above(scores) & same, iou, torch.zeros_like(iou))
    # amax/amin, not max(dim).values: the latter carries an ArgMax that stops the exporter's 18 -> 17 conversion
    compensate = decay_iou.amax(dim=1).unsqueeze(-1)  # [B, P(i), 1]: max IoU of i with masks above it
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * (decay_iou ** 2 - compensate ** 2))
    else:
        ratio = (1.0 - decay_iou) / (1.0 - compensate).clamp(min=1e-6)
    # pairs where i is not a suppressor of j give 1 / f(compensate_i) >= 1, as in the reference;
    # the top-ranked candidate has compensate 0, so the minimum is at most 1
    decay = ratio.amin(dim=1)
    return scores * decay
