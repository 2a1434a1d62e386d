"""Deformable convolution, DCN v1 and v2 (modulated).

Papers: Dai et al., "Deformable Convolutional Networks" (ICCV 2017, DCNv1) and Zhu et al.,
"Deformable ConvNets v2: More Deformable, Better Results" (CVPR 2019, DCNv2).

Semantics are those of ONNX ``DeformConv`` (opset 19) and ``torchvision.ops.deform_conv2d``:

* ``offset`` is ``[N, 2 * offset_groups * kh * kw, H_out, W_out]``; for offset group ``g`` and
  kernel tap ``k = i * kw + j`` the pair ``(dy, dx)`` sits at channels ``2 * (g * kh * kw + k)``
  and ``+ 1``.
* ``mask`` (DCNv2) is ``[N, offset_groups * kh * kw, H_out, W_out]``; ``None`` means DCNv1.
* A tap of output ``(y, x)`` samples the input at ``(y * stride - pad + i * dilation + dy,
  x * stride - pad + j * dilation + dx)`` by bilinear interpolation in which every corner
  outside the image reads zero (``GridSample`` with zero padding).

``deform_conv2d`` is the custom op ``edgeseg::deform_conv2d``: a vectorised pure-PyTorch
reference (autograd through the same code), CUDA kernels for CUDA tensors (``edgeseg/ops/cuda``),
and an ONNX translation (``edgeseg.ops.onnx_translation_table``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import InputError
from ._common import expect_rank, expect_same_dtype_device, pair

__all__ = ["deform_conv2d", "deform_conv2d_reference", "deform_conv_output_size"]


def deform_conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The output length of one spatial axis (the usual convolution arithmetic)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _bilinear_zero(flat: Tensor, height: int, width: int, y: Tensor, x: Tensor) -> Tensor:
    """Bilinear samples of ``flat [B, G, C, H*W]`` at ``y, x [B, G, P]``; corners outside read 0.

    Returns ``[B, G, C, P]``.
    """
    y0 = torch.floor(y)
    x0 = torch.floor(x)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    y0i, x0i = y0.long(), x0.long()
    out = None
    for dy, wy in ((0, hy), (1, ly)):
        for dx, wx in ((0, hx), (1, lx)):
            yi, xi = y0i + dy, x0i + dx
            valid = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
            idx = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).unsqueeze(2)
            vals = torch.gather(flat, 3, idx.expand(-1, -1, flat.shape[2], -1))
            term = vals * (wy * wx * valid.to(flat.dtype)).unsqueeze(2)
            out = term if out is None else out + term
    return out


def deform_conv2d_reference(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    mask: Optional[Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    offset_groups: int,
) -> Tensor:
    """The exact, differentiable reference (plain PyTorch ops, any device, any float dtype)."""
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    taps, og = kh * kw, offset_groups
    dev, dt = input.device, input.dtype
    rows = torch.arange(ho, device=dev, dtype=dt) * stride[0] - padding[0]
    cols = torch.arange(wo, device=dev, dtype=dt) * stride[1] - padding[1]
    ky = (torch.arange(kh, device=dev, dtype=dt) * dilation[0]).repeat_interleave(kw)
    kx = (torch.arange(kw, device=dev, dtype=dt) * dilation[1]).repeat(kh)
    off = offset.reshape(n, og, taps, 2, ho, wo)
    y = off[:, :, :, 0] + (ky[:, None, None] + rows[None, :, None])  # [N, G, K, Ho, Wo]
    x = off[:, :, :, 1] + (kx[:, None, None] + cols[None, None, :])
    flat = input.reshape(n, og, c // og, h * w)
    vals = _bilinear_zero(flat, h, w, y.reshape(n, og, -1), x.reshape(n, og, -1))
    vals = vals.reshape(n, og, c // og, taps, ho * wo)
    if mask is not None:
        vals = vals * mask.reshape(n, og, 1, taps, ho * wo)
    columns = vals.reshape(n, groups, cg * taps, ho * wo)
    out = torch.einsum("gok,ngkp->ngop", weight.reshape(groups, o // groups, cg * taps), columns)
    out = out.reshape(n, o, ho, wo)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out


@torch.library.custom_op("edgeseg::deform_conv2d", mutates_args=())
def _deform_conv2d_op(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    mask: Optional[Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    offset_groups: int,
) -> Tensor:
    args = (input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups)
    if input.is_cuda:
        from . import _cuda

        if _cuda.kernels_usable(input):
            return _cuda.deform_conv2d_forward(*args)
    with torch.no_grad():
        return deform_conv2d_reference(*args)


@_deform_conv2d_op.register_fake
def _deform_conv2d_fake(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups):
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:5])
    ctx.conf = tuple(inputs[5:])


def _backward(ctx, grad: Tensor):
    tensors = ctx.saved_tensors
    needs = ctx.needs_input_grad[:5]
    if grad.is_cuda:
        from . import _cuda

        if _cuda.kernels_usable(grad):
            grads = _cuda.deform_conv2d_backward(grad, *tensors, *ctx.conf)
            return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None, None)
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(bool(need)) if t is not None else None for t, need in zip(tensors, needs)]
        out = deform_conv2d_reference(*leaves, *ctx.conf)
        wanted = [leaf for leaf in leaves if leaf is not None and leaf.requires_grad]
        found = iter(torch.autograd.grad(out, wanted, grad)) if wanted else iter(())
    grads = [next(found) if leaf is not None and leaf.requires_grad else None for leaf in leaves]
    return (*grads, None, None, None, None, None)


_deform_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _check(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups) -> None:
    expect_rank(input, 4, "input", "[N, C, H, W]")
    expect_rank(offset, 4, "offset", "[N, 2*offset_groups*kh*kw, H_out, W_out]")
    expect_rank(weight, 4, "weight", "[C_out, C_in/groups, kh, kw]")
    expect_same_dtype_device(input, {"offset": offset, "weight": weight, "bias": bias, "mask": mask}, "deform_conv2d")
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    if groups < 1 or offset_groups < 1 or c % groups or o % groups or c % offset_groups or cg * groups != c:
        raise InputError(
            f"deform_conv2d: input has {c} channels, weight {tuple(weight.shape)}, groups={groups}, "
            f"offset_groups={offset_groups}: channels must split evenly",
            fix="weight must be [C_out, C_in/groups, kh, kw] with C_in and C_out divisible by groups "
            "and C_in divisible by offset_groups",
        )
    ho = deform_conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = deform_conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    want = (n, 2 * offset_groups * kh * kw, ho, wo)
    if tuple(offset.shape) != want:
        raise InputError(f"deform_conv2d: offset has shape {tuple(offset.shape)}, expected {want}",
                         fix="offset is [N, 2*offset_groups*kh*kw, H_out, W_out] as (dy, dx) pairs")
    if mask is not None and tuple(mask.shape) != (n, offset_groups * kh * kw, ho, wo):
        raise InputError(f"deform_conv2d: mask has shape {tuple(mask.shape)}, "
                         f"expected {(n, offset_groups * kh * kw, ho, wo)}",
                         fix="mask is [N, offset_groups*kh*kw, H_out, W_out]")
    if bias is not None and tuple(bias.shape) != (o,):
        raise InputError(f"deform_conv2d: bias has shape {tuple(bias.shape)}, expected ({o},)")


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    offset_groups: int = 1,
) -> Tensor:
    """Deformable 2-D convolution: DCNv1 when ``mask`` is None, DCNv2 (modulated) otherwise.

    Args:
        input: ``[N, C_in, H, W]``.
        offset: ``[N, 2*offset_groups*kh*kw, H_out, W_out]``, (dy, dx) pairs per tap.
        weight: ``[C_out, C_in/groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        mask: ``[N, offset_groups*kh*kw, H_out, W_out]`` modulation scalars or None.
        stride, padding, dilation: int or (height, width).
    Returns:
        ``[N, C_out, H_out, W_out]``.
    """
    stride_, padding_, dilation_ = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    args = (input, offset, weight, bias, mask, stride_, padding_, dilation_, int(groups), int(offset_groups))
    if not torch.compiler.is_compiling():
        _check(*args)
    return _deform_conv2d_op(*args)
