"""``nn.Module`` wrappers of the custom ops.

``ModulatedDeformConv2d`` is the DCNv2 layer of Zhu et al., "Deformable ConvNets v2" (CVPR 2019):
it predicts its own offsets and modulation mask with a plain convolution that starts at zero, so a
freshly built layer is an ordinary convolution scaled by sigmoid(0) = 0.5 and learns to deform.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from ._common import pair
from .deform_conv import deform_conv2d
from .roi_align import MODES, multi_scale_roi_align, roi_align

__all__ = ["DeformConv2d", "ModulatedDeformConv2d", "RoIAlign", "MultiScaleRoIAlign"]


class DeformConv2d(nn.Module):
    """Deformable convolution whose offsets (and optional mask) come from the caller.

    ``forward(x [N, C_in, H, W], offset [N, 2*og*kh*kw, Ho, Wo], mask=None) -> [N, C_out, Ho, Wo]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, offset_groups: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = tuple(pair(kernel_size, "kernel_size"))
        self.stride = tuple(pair(stride, "stride"))
        self.padding = tuple(pair(padding, "padding"))
        self.dilation = tuple(pair(dilation, "dilation"))
        self.groups, self.offset_groups = groups, offset_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def offset_channels(self) -> int:
        return 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]

    def forward(self, x: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, mask, self.stride, self.padding, self.dilation,
                             self.groups, self.offset_groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"offset_groups={self.offset_groups}, bias={self.bias is not None}")


class ModulatedDeformConv2d(DeformConv2d):
    """DCNv2 layer: a zero-initialised conv predicts offsets and mask logits from the input.

    ``forward(x [N, C_in, H, W]) -> [N, C_out, Ho, Wo]``. The predictor has the layer's kernel,
    stride, padding and dilation and ``3 * offset_groups * kh * kw`` outputs: offsets first
    (``(dy, dx)`` pairs per tap), then the mask logits (through a sigmoid).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, offset_groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, offset_groups,
                         bias)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.offset_conv = nn.Conv2d(in_channels, 3 * offset_groups * taps, self.kernel_size, self.stride,
                                     self.padding, self.dilation, bias=True)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        predicted = self.offset_conv(x)
        split = self.offset_channels
        offset, mask = predicted[:, :split], torch.sigmoid(predicted[:, split:])
        return super().forward(x, offset, mask)


class RoIAlign(nn.Module):
    """``forward(input [N, C, H, W], boxes [K, 5]) -> [K, C, out_h, out_w]``; see :func:`roi_align`."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, sampling_ratio: int = -1,
                 aligned: bool = True, mode: str = "avg"):
        super().__init__()
        if mode not in MODES:
            from ..errors import InputError

            raise InputError(f"RoIAlign: mode must be one of {MODES}, got {mode!r}")
        self.output_size = tuple(pair(output_size, "output_size"))
        self.spatial_scale, self.sampling_ratio = float(spatial_scale), int(sampling_ratio)
        self.aligned, self.mode = bool(aligned), mode

    def forward(self, input: Tensor, boxes: Tensor) -> Tensor:
        return roi_align(input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned,
                         self.mode)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, mode={self.mode!r}")


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over FPN levels (fine to coarse, ``scales`` such as 1/4..1/32), boxes assigned by area.

    ``forward(features: list of [N, C, H_l, W_l], boxes [K, 5]) -> [K, C, out_h, out_w]``.
    """

    def __init__(self, output_size: int | tuple[int, int], scales: Sequence[float], sampling_ratio: int = 2,
                 aligned: bool = True, mode: str = "avg", canonical_scale: float = 224.0, canonical_level: int = 4):
        super().__init__()
        self.output_size = tuple(pair(output_size, "output_size"))
        self.scales = tuple(float(s) for s in scales)
        self.sampling_ratio, self.aligned, self.mode = int(sampling_ratio), bool(aligned), mode
        self.canonical_scale, self.canonical_level = float(canonical_scale), int(canonical_level)

    def forward(self, features: Sequence[Tensor], boxes: Tensor) -> Tensor:
        return multi_scale_roi_align(features, boxes, self.output_size, self.scales, self.sampling_ratio,
                                     self.aligned, self.mode, self.canonical_scale, self.canonical_level)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, scales={self.scales}, sampling_ratio={self.sampling_ratio}"
