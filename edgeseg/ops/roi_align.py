"""RoIAlign, single- and multi-level.

Paper: He et al., "Mask R-CNN" (ICCV 2017); FPN level assignment from Lin et al., "Feature
Pyramid Networks for Object Detection" (CVPR 2017), eq. (1).

Semantics are those of ONNX ``RoiAlign`` (opset 16), which for ``mode="avg"`` equal
``torchvision.ops.roi_align``:

* ``boxes`` is ``[K, 5]``: ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, scaled by
  ``spatial_scale`` onto the feature map.
* ``aligned=True`` shifts box corners by -0.5 pixel (ONNX ``half_pixel``); ``aligned=False`` does
  not and forces boxes to be at least 1x1 (ONNX ``output_half_pixel``).
* Each output bin averages (``avg``) a ``gh x gw`` grid of bilinear samples;
  ``sampling_ratio <= 0`` means ``ceil(box size / output size)`` per box. A sample outside
  ``[-1, H] x [-1, W]`` contributes 0; inside, coordinates are clamped to the border.
* ``mode="max"`` is ONNX's definition: each sample is ``max_i(w_i * v_i)`` over its four
  bilinear corners (weights applied before the max), and the bin takes the max over samples.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ._common import expect_rank, expect_same_dtype_device, pair

__all__ = ["roi_align", "roi_align_reference", "multi_scale_roi_align", "assign_fpn_levels"]

MODES = ("avg", "max")


def _axis_samples(start: Tensor, bin_size: Tensor, bins: int, grid: int, limit: int):
    """Sample positions along one axis for ``k`` boxes and ONNX's clamping.

    Returns ``(low, high, frac, inside)`` each ``[k, bins * grid]``.
    """
    dev, dt = start.device, start.dtype
    p = torch.arange(bins, device=dev, dtype=dt).repeat_interleave(grid)
    i = torch.arange(grid, device=dev, dtype=dt).repeat(bins)
    pos = start[:, None] + p * bin_size[:, None] + (i + 0.5) * bin_size[:, None] / grid
    inside = (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp(0, limit - 1)
    low = torch.floor(pos)
    frac = pos - low
    low_i = low.long()
    high_i = torch.clamp(low_i + 1, max=limit - 1)
    return low_i, high_i, frac, inside


def _pool_group(pixels: Tensor, base: Tensor, ys, xs, grid: tuple[int, int], mode: str, width: int) -> Tensor:
    """Pool ``k`` boxes that share one ``gh x gw`` sampling grid.

    ``pixels`` is the input as ``[N*H*W, C]``, ``base [k]`` each box's first row in it, ``ys`` and
    ``xs`` the outputs of :func:`_axis_samples`. Returns ``[k, C, out_h, out_w]``.
    """
    yl, yh, ly, yin = ys
    xl, xh, lx, xin = xs
    k, c = base.shape[0], pixels.shape[1]
    acc = None
    for yi, wy in ((yl, 1 - ly), (yh, ly)):
        for xi, wx in ((xl, 1 - lx), (xh, lx)):
            idx = base[:, None, None] + yi[:, :, None] * width + xi[:, None, :]
            term = pixels[idx] * (wy[:, :, None] * wx[:, None, :]).unsqueeze(-1)
            if acc is None:
                acc = term
            else:
                acc = acc + term if mode == "avg" else torch.maximum(acc, term)
    valid = (yin[:, :, None] & xin[:, None, :]).unsqueeze(-1)
    acc = torch.where(valid, acc, torch.zeros((), dtype=acc.dtype, device=acc.device))
    gh, gw = grid
    acc = acc.reshape(k, -1, gh, acc.shape[2] // gw, gw, c)
    pooled = acc.sum((2, 4)) / (gh * gw) if mode == "avg" else acc.amax((2, 4))
    return pooled.permute(0, 3, 1, 2)


def _grid_sizes(extent: Tensor, bins: int, sampling_ratio: int) -> Tensor:
    if sampling_ratio > 0:
        return torch.full_like(extent, sampling_ratio, dtype=torch.long)
    return torch.ceil(extent / bins).long().clamp(min=0)


def roi_align_reference(
    input: Tensor,
    boxes: Tensor,
    output_size: list[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    mode: str,
) -> Tensor:
    """The exact, differentiable (w.r.t. ``input``) reference in plain PyTorch ops.

    Boxes are grouped by their sampling-grid size, and each group is pooled in one vectorised step.
    """
    n, c, h, w = input.shape
    ph, pw = output_size
    k = boxes.shape[0]
    out = input.new_zeros((k, c, ph, pw))
    if k == 0:
        return out
    shift = 0.5 if aligned else 0.0
    coords = boxes[:, 1:5].to(input.dtype) * spatial_scale - shift
    x1, y1, x2, y2 = coords.unbind(1)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bh, bw = rh / ph, rw / pw
    gh_all, gw_all = _grid_sizes(rh, ph, sampling_ratio), _grid_sizes(rw, pw, sampling_ratio)
    pixels = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    base = boxes[:, 0].long() * (h * w)
    keys = gh_all * (1 << 20) + gw_all
    for key in torch.unique(keys).tolist():
        gh, gw = key >> 20, key & ((1 << 20) - 1)
        if gh == 0 or gw == 0:
            continue  # no samples: the bin is 0, as in ONNX
        sel = torch.nonzero(keys == key).flatten()
        ys = _axis_samples(y1[sel], bh[sel], ph, gh, h)
        xs = _axis_samples(x1[sel], bw[sel], pw, gw, w)
        out = out.index_copy(0, sel, _pool_group(pixels, base[sel], ys, xs, (gh, gw), mode, w))
    return out


@torch.library.custom_op("edgeseg::roi_align", mutates_args=())
def _roi_align_op(
    input: Tensor,
    boxes: Tensor,
    output_size: list[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    mode: str,
) -> Tensor:
    args = (input, boxes, output_size, spatial_scale, sampling_ratio, aligned, mode)
    if input.is_cuda:
        from . import _cuda

        if _cuda.kernels_usable(input):
            return _cuda.roi_align_forward(*args)
    with torch.no_grad():
        return roi_align_reference(*args)


@_roi_align_op.register_fake
def _roi_align_fake(input, boxes, output_size, spatial_scale, sampling_ratio, aligned, mode):
    return input.new_empty((boxes.shape[0], input.shape[1], output_size[0], output_size[1]))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.conf = tuple(inputs[2:])


def _backward(ctx, grad: Tensor):
    input, boxes = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        with torch.enable_grad():
            leaf = input.detach().requires_grad_(True)
            out = roi_align_reference(leaf, boxes, *ctx.conf)
            if out.requires_grad:  # False when no box has a sample (e.g. an empty box list)
                (grad_input,) = torch.autograd.grad(out, [leaf], grad, allow_unused=True)
        if grad_input is None:
            grad_input = torch.zeros_like(input)
    return grad_input, None, None, None, None, None, None


_roi_align_op.register_autograd(_backward, setup_context=_setup_context)


def _check_roi_args(input: Tensor, boxes: Tensor, mode: str) -> None:
    expect_rank(input, 4, "input", "[N, C, H, W]")
    expect_same_dtype_device(input, {"boxes": boxes}, "roi_align")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise InputError(f"roi_align: boxes must be [K, 5] (batch_index, x1, y1, x2, y2), got {tuple(boxes.shape)}",
                         fix="prepend the batch index column: torch.cat([idx[:, None], xyxy], 1)")
    if mode not in MODES:
        raise InputError(f"roi_align: mode must be one of {MODES}, got {mode!r}")
    if boxes.shape[0] and boxes.device.type == "cpu":
        b = boxes[:, 0]
        if bool((b < 0).any() | (b >= input.shape[0]).any() | (b != torch.floor(b)).any()):
            raise InputError(f"roi_align: box batch indices must be integers in [0, {input.shape[0]}), "
                             f"got values in [{float(b.min())}, {float(b.max())}]")


def roi_align(
    input: Tensor,
    boxes: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
    mode: str = "avg",
) -> Tensor:
    """RoIAlign of ``boxes [K, 5]`` (batch_index, x1, y1, x2, y2) from ``input [N, C, H, W]``.

    Returns ``[K, C, out_h, out_w]``; ``output_size`` is an int or (height, width).
    """
    size = pair(output_size, "output_size")
    if not torch.compiler.is_compiling():
        _check_roi_args(input, boxes, mode)
    return _roi_align_op(input, boxes, size, float(spatial_scale), int(sampling_ratio), bool(aligned), mode)


def _level_of_scale(scale: float) -> int:
    level = -math.log2(scale)
    if abs(level - round(level)) > 1e-6:
        raise InputError(f"multi_scale_roi_align: feature scale {scale} is not a power of 2",
                         fix="pass scales such as (1/4, 1/8, 1/16, 1/32)")
    return int(round(level))


def assign_fpn_levels(xyxy: Tensor, k_min: int, k_max: int, canonical_scale: float = 224.0,
                      canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """FPN level of each box: ``floor(k0 + log2(sqrt(area) / s0) + eps)`` clamped to ``[k_min, k_max]``.

    Same as torchvision's ``LevelMapper``. ``xyxy [K, 4]``; returns int64 ``[K]`` of levels
    (``k_min`` is level 0 of the feature list).
    """
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    size = torch.sqrt(area)
    target = torch.floor(canonical_level + torch.log2(size / canonical_scale) + eps)
    return target.clamp(min=k_min, max=k_max).to(torch.int64) - k_min


def multi_scale_roi_align(
    features: Sequence[Tensor],
    boxes: Tensor,
    output_size: int | tuple[int, int],
    scales: Sequence[float],
    sampling_ratio: int = 2,
    aligned: bool = True,
    mode: str = "avg",
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> Tensor:
    """RoIAlign over an FPN: each box is pooled from the level its area selects (Mask R-CNN).

    ``features`` are ``[N, C, H_l, W_l]`` from fine to coarse, with ``scales`` (e.g.
    ``1/4 .. 1/32``). Returns ``[K, C, out_h, out_w]`` in the order of ``boxes``.
    """
    if len(features) != len(scales) or not features:
        raise InputError(f"multi_scale_roi_align: {len(features)} feature maps but {len(scales)} scales",
                         fix="pass one scale per feature map, fine to coarse")
    levels_of = [_level_of_scale(s) for s in scales]
    k_min, k_max = levels_of[0], levels_of[-1]
    if levels_of != list(range(k_min, k_max + 1)):
        raise InputError(f"multi_scale_roi_align: scales {list(scales)} are not consecutive FPN levels")
    levels = assign_fpn_levels(boxes[:, 1:5], k_min, k_max, canonical_scale, canonical_level)
    first = features[0]
    size = pair(output_size, "output_size")
    out = first.new_zeros((boxes.shape[0], first.shape[1], size[0], size[1]))
    for index, (feat, scale) in enumerate(zip(features, scales)):
        sel = torch.nonzero(levels == index).flatten()
        pooled = roi_align(feat, boxes[sel], size, scale, sampling_ratio, aligned, mode)
        out = out.index_put((sel,), pooled)
    return out
