"""DCNv3, the deformable operator of InternImage.

Paper: Wang, Dai, Chen, Huang, Li, Zhu, Hu, Lu, Lu, Li, Wang & Qiao, "InternImage: Exploring
Large-Scale Vision Foundation Models with Deformable Convolutions" (CVPR 2023).

DCNv3 differs from DCNv2 (:mod:`edgeseg.ops.deform_conv`) in three ways: the sampling points are
shared by *groups* of channels (each group has its own offsets and modulation), the modulation
scalars of a group are **softmax**-normalised over its ``K = kh * kw`` points (DCNv2: an independent
sigmoid per point), and there is no per-point weight: the core is a weighted sum of the sampled
values, and channels are mixed by the linear projections around it (the "separable" design of the
paper, a depthwise deformable aggregation between two pointwise layers).

Layout: **channels last (NHWC)**, as InternImage computes internally:

* ``input`` is ``[N, H, W, C]`` with ``C = groups * group_channels``; channel ``g * Cg + c`` is
  channel ``c`` of group ``g``.
* ``offset`` is ``[N, H_out, W_out, groups * K * 2]``; for group ``g`` and point ``p`` the pair
  ``(dx, dy)`` (**x first**, unlike DCNv2's ``(dy, dx)``) sits at channels ``2 * (g * K + p)`` and
  ``+ 1``. Points are ordered **column-major**: ``p = j * kh + i`` for kernel row ``i`` and column
  ``j`` (DCNv2: ``k = i * kw + j``).
* ``mask`` is ``[N, H_out, W_out, groups * K]`` in the same point order. The core takes it as given
  (already normalised); the :class:`DCNv3` layer applies the softmax.
* The output is ``[N, H_out, W_out, C]``, with ``H_out = (H + 2 * pad - dilation * (kh - 1) - 1)
  // stride + 1`` (the usual convolution arithmetic, as InternImage).

Point ``p = (i, j)`` of output ``(y, x)`` samples, with ``c_h = (dilation_h * (kh - 1)) // 2``
(the kernel's centre offset) and ``s = offset_scale``::

    row = y * stride_h - pad_h + c_h + s * (i * dilation_h - c_h + dy)
    col = x * stride_w - pad_w + c_w + s * (j * dilation_w - c_w + dx)

i.e. the regular grid is centred on the kernel centre and ``offset_scale`` scales the whole
displacement from that centre, grid and learned offset alike (InternImage's CUDA kernel and
``dcnv3_core_pytorch``). With ``s = 1`` this is DCNv2's ``y * stride - pad + i * dilation + dy``.
Bilinear sampling reads zero for every corner outside the image (``GridSample`` with zero padding,
the same rule as :func:`edgeseg.ops.deform_conv2d`).

Implementation and export: :func:`dcnv3_core` is plain vectorised PyTorch around one
``torch.nn.functional.grid_sample`` for all groups and points at once (the groups folded into the
batch), so autograd, CUDA and export come from PyTorch itself: the dynamo exporter writes the op as
standard ONNX (``GridSample`` bilinear/zeros, ``Mul``, ``ReduceSum``, ``Reshape``/``Transpose``) with
no custom translation. ONNX Runtime runs it on the CPU; TensorRT imports ``GridSample`` from 8.5
(``edgeseg.quant.trt_ops``), FP16 at most (a Q/DQ pair around it is not fused). The :class:`DCNv3`
layer adds ``LayerNormalization`` (opset >= 17: TensorRT >= 8.6; at opset 16 the exporter
decomposes it and TensorRT 8.5 takes the whole layer) and GELU (``Erf`` below opset 20).

Deviations from InternImage, and why:

* The core is not a registered custom op with its own CUDA kernel (DCN v1/v2 are): the
  ``grid_sample`` formulation is exact, has CUDA and autograd in PyTorch, and exports to standard
  ops without an entry in :func:`edgeseg.ops.onnx_translation_table`. InternImage ships a fused
  CUDA kernel for speed; a kernel here would be an optimisation with the same semantics.
* Padding is applied as ``pad_h`` to the rows and ``pad_w`` to the columns, as InternImage's CUDA
  kernel does (its ``dcnv3_core_pytorch`` swaps the two in ``F.pad``; they agree for square pads,
  which is all InternImage uses).
* The layer's ``dilation`` is honoured (InternImage's layer stores ``dilation = 1`` whatever it is
  given), and the layer keeps the output at the input size: it requires ``stride = 1`` and
  ``padding = dilation * (kernel - 1) / 2``, because the offsets are predicted at the input
  resolution (InternImage only builds it so). The core op has no such limit.
* InternImage-H's ``center_feature_scale`` branch and the later ``remove_center`` option (DCNv4) are
  not implemented: the models of the paper up to InternImage-XL do not use them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ._common import expect_rank, expect_same_dtype_device, pair
from .deform_conv import deform_conv_output_size

__all__ = ["DCNv3", "dcnv3_core", "dcnv3_point_grid"]


def dcnv3_point_grid(kernel_size: Sequence[int], dilation: Sequence[int], *, dtype: torch.dtype = torch.float32,
                     device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """The regular grid relative to the kernel centre, ``(dy [K], dx [K])`` in DCNv3's point order
    ``p = j * kh + i``: ``dy[p] = i * dilation_h - c_h``, ``dx[p] = j * dilation_w - c_w``."""
    kh, kw = int(kernel_size[0]), int(kernel_size[1])
    c_h, c_w = (dilation[0] * (kh - 1)) // 2, (dilation[1] * (kw - 1)) // 2
    rows = torch.arange(kh, dtype=dtype, device=device) * dilation[0] - c_h
    cols = torch.arange(kw, dtype=dtype, device=device) * dilation[1] - c_w
    return rows.repeat(kw), cols.repeat_interleave(kh)


def _check(input: Tensor, offset: Tensor, mask: Tensor, kernel: list[int], stride: list[int], padding: list[int],
           dilation: list[int], groups: int) -> None:
    expect_rank(input, 4, "input", "[N, H, W, C] (channels last)")
    expect_rank(offset, 4, "offset", "[N, H_out, W_out, groups*kh*kw*2]")
    expect_rank(mask, 4, "mask", "[N, H_out, W_out, groups*kh*kw]")
    expect_same_dtype_device(input, {"offset": offset, "mask": mask}, "dcnv3_core")
    n, h, w, c = input.shape
    if groups < 1 or c % groups:
        raise InputError(f"dcnv3_core: input has {c} channels (last axis), not divisible by groups={groups}",
                         fix="input is channels last [N, H, W, C] with C a multiple of groups")
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise InputError(f"dcnv3_core: kernel_size={kernel}, stride={stride}, dilation={dilation} must be >= 1 "
                         f"and padding={padding} >= 0")
    ho = deform_conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = deform_conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    points = kernel[0] * kernel[1]
    if tuple(offset.shape) != (n, ho, wo, groups * points * 2):
        want = (n, ho, wo, groups * points * 2)
        raise InputError(f"dcnv3_core: offset has shape {tuple(offset.shape)}, expected {want}",
                         fix="offset is channels last [N, H_out, W_out, groups*kh*kw*2] as (dx, dy) pairs")
    if tuple(mask.shape) != (n, ho, wo, groups * points):
        raise InputError(f"dcnv3_core: mask has shape {tuple(mask.shape)}, expected {(n, ho, wo, groups * points)}",
                         fix="mask is channels last [N, H_out, W_out, groups*kh*kw]")


def dcnv3_core(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    kernel_size: int | tuple[int, int] = 3,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    offset_scale: float = 1.0,
) -> Tensor:
    """The DCNv3 core: per group, a ``mask``-weighted sum of ``K`` bilinear samples.

    Args:
        input: ``[N, H, W, C]`` (channels last), ``C = groups * group_channels``.
        offset: ``[N, H_out, W_out, groups*kh*kw*2]``, ``(dx, dy)`` per point, points ``p = j*kh + i``.
        mask: ``[N, H_out, W_out, groups*kh*kw]`` modulation scalars (softmax-normalised by the layer).
        kernel_size, stride, padding, dilation: int or (height, width).
        groups: channel groups; the channels of a group share offsets and mask.
        offset_scale: scales the displacement from the kernel centre (grid and offset).
    Returns:
        ``[N, H_out, W_out, C]``; see the module docstring for the exact sampling positions.
    """
    kernel, stride_, pad, dil = (pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(padding, "padding"),
                                 pair(dilation, "dilation"))
    groups = int(groups)
    if not torch.compiler.is_compiling():
        _check(input, offset, mask, kernel, stride_, pad, dil, groups)
    n, h, w, c = input.shape
    ho, wo = offset.shape[1], offset.shape[2]
    points, cg = kernel[0] * kernel[1], c // groups
    dt, dev = input.dtype, input.device
    s = float(offset_scale)
    ty, tx = dcnv3_point_grid(kernel, dil, dtype=dt, device=dev)
    c_h, c_w = (dil[0] * (kernel[0] - 1)) // 2, (dil[1] * (kernel[1] - 1)) // 2
    rows = torch.arange(ho, dtype=dt, device=dev) * stride_[0] + (c_h - pad[0])
    cols = torch.arange(wo, dtype=dt, device=dev) * stride_[1] + (c_w - pad[1])
    off = offset.reshape(n, ho, wo, groups, points, 2)
    x = cols[None, None, :, None, None] + (off[..., 0] + tx) * s  # [N, Ho, Wo, G, K] pixel columns
    y = rows[None, :, None, None, None] + (off[..., 1] + ty) * s
    # GridSample's align_corners=False normalisation: pixel centre v maps to (2v + 1) / size - 1
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * groups, ho * wo, points, 2)
    planes = input.permute(0, 3, 1, 2).reshape(n * groups, cg, h, w)
    sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = mask.reshape(n, ho * wo, groups, points).permute(0, 2, 1, 3).reshape(n * groups, 1, ho * wo, points)
    out = (sampled * weights).sum(-1)  # [N*G, Cg, Ho*Wo]
    return out.reshape(n, groups, cg, ho, wo).permute(0, 3, 4, 1, 2).reshape(n, ho, wo, c)


class DCNv3(nn.Module):
    """The DCNv3 layer of InternImage (channels last): ``forward(x [N, H, W, C]) -> [N, H, W, C]``.

    ``x -> input_proj (Linear)`` gives the values; ``x -> depthwise kxk conv -> LayerNorm -> GELU``
    gives the features from which two Linear layers predict the offsets (``groups*K*2``) and the mask
    logits (``groups*K``, softmax over the K points of each group); :func:`dcnv3_core` aggregates and
    ``output_proj`` (Linear) mixes the channels. The offset and mask predictors start at zero, so a
    fresh layer averages a kxk neighbourhood of the projected input (zero outside the image).
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None,
                 dilation: int = 1, groups: int = 4, offset_scale: float = 1.0, dw_kernel_size: int | None = None,
                 norm_eps: float = 1e-6):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2 if padding is None else padding
        if channels < 1 or groups < 1 or channels % groups:
            raise InputError(f"DCNv3: channels={channels} must be a positive multiple of groups={groups}")
        if stride != 1 or 2 * padding != dilation * (kernel_size - 1):
            raise InputError(
                f"DCNv3 layer: kernel_size={kernel_size}, stride={stride}, padding={padding}, dilation={dilation} "
                "change the spatial size, but the offsets are predicted at the input size",
                fix="use stride=1 and padding=dilation*(kernel_size-1)/2 (odd kernel), or call dcnv3_core directly")
        dw = kernel_size if dw_kernel_size is None else dw_kernel_size
        self.channels, self.kernel_size, self.stride, self.padding = channels, kernel_size, stride, padding
        self.dilation, self.groups, self.offset_scale = dilation, groups, float(offset_scale)
        points = kernel_size * kernel_size
        self.input_proj = nn.Linear(channels, channels)
        self.dw_conv = nn.Conv2d(channels, channels, dw, padding=(dw - 1) // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=norm_eps)
        self.act = nn.GELU()
        self.offset = nn.Linear(channels, groups * points * 2)
        self.mask = nn.Linear(channels, groups * points)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """InternImage's initialisation: zero offset/mask predictors, Xavier-uniform projections with
        zero bias; the depthwise conv keeps ``nn.Conv2d``'s default."""
        for layer in (self.offset, self.mask):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def points(self) -> int:
        return self.kernel_size * self.kernel_size

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(offset [N, H, W, G*K*2], mask [N, H, W, G*K])`` predicted from ``x [N, H, W, C]``; the
        mask is softmax-normalised over the K points of each group."""
        n, h, w, _ = x.shape
        feat = self.act(self.norm(self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))
        logits = self.mask(feat).reshape(n, h, w, self.groups, self.points)
        return self.offset(feat), torch.softmax(logits, dim=-1).reshape(n, h, w, self.groups * self.points)

    def forward(self, x: Tensor) -> Tensor:
        expect_rank(x, 4, "DCNv3 input", "[N, H, W, C] (channels last)")
        if x.shape[-1] != self.channels:
            raise InputError(f"DCNv3: input has {x.shape[-1]} channels on its last axis, the layer {self.channels}",
                             fix="DCNv3 is channels last: pass x.permute(0, 2, 3, 1) for an NCHW tensor")
        offset, mask = self.offsets_and_mask(x)
        out = dcnv3_core(self.input_proj(x), offset, mask, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.offset_scale)
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return (f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, offset_scale={self.offset_scale}")
