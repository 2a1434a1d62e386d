"""Attention as plain ``MatMul -> Softmax -> MatMul``, shared by the context heads (DANet's position
attention, OCR's pixel-region relation).

Written with ``torch.matmul`` and ``torch.softmax`` on fixed-rank tensors, so it exports to ONNX as
two MatMul and one Softmax (no fused attention op, no data-dependent shapes): TensorRT 8.5 and 10
parse it, and INT8 profiles that quantize MatMul put Q/DQ on both inputs of both products.
"""
from __future__ import annotations

import torch


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``softmax(scale * query @ key, dim=-1) @ value``.

    query ``[N, L, D]``, key ``[N, D, S]`` (already transposed: keys are columns), value
    ``[N, S, E]`` -> ``[N, L, E]``: each of the ``L`` queries takes a convex combination of the
    ``S`` values, weighted by the softmax of its dot products with the ``S`` keys."""
    energy = torch.matmul(query, key)
    if scale != 1.0:
        energy = energy * scale
    return torch.matmul(torch.softmax(energy, dim=-1), value)
