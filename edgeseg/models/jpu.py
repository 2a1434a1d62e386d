"""FastFCN's Joint Pyramid Upsampling — Wu, Zhang, Huang, Liang & Yu, "FastFCN: Rethinking Dilated
Convolution in the Backbone for Semantic Segmentation" (arXiv 1903.11816, 2019).

Instead of a dilated backbone (output stride 8), a plain one (output stride 32) and the JPU module
recover stride-8 features: the stride-8, -16 and -32 encoder features each go through a 3x3
conv-BN-ReLU to C channels (512 in the paper), are bilinearly upsampled to stride 8 and
concatenated (3C); four parallel depthwise-separable 3x3 convs with dilation 1, 2, 4 and 8 (each
depthwise conv -> BN -> pointwise conv -> BN -> ReLU, as in the reference code) map them to C
channels each, and their concatenation (4C) goes to the head. The head here is DeepLabV3's ASPP
(:class:`edgeseg.models.deeplabv3.ASPP`, rates 12/24/36 for stride 8) and a 1x1 classifier — the
paper's "DeepLabV3 + JPU"; logits are upsampled x8.

Deviations: upsampling uses ``align_corners=False`` (the reference code uses ``True``), edgeseg's
convention for every resize (both export to ONNX ``Resize`` and run on TensorRT); the ASPP is
edgeseg's (1x1 projection and dropout, no extra 3x3 conv as in PyTorch-Encoding's DeepLabV3Head);
the auxiliary FCN head used in training is omitted. ResNet-18 uses C = 128.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .deeplabv3 import ASPP, aspp_rates
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, init_weights, resize_to
from .registry import register_model


class JPUSeparableConv(nn.Sequential):
    """FastFCN's separable conv: depthwise 3x3 (dilated) -> BN -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int):
        super().__init__(
            ConvBNAct(cin, cin, 3, dilation=dilation, groups=cin, act="none"),
            ConvBNAct(cin, cout, 1),
        )


class JointPyramidUpsampling(nn.Module):
    """Features at strides (8, 16, 32) with ``in_channels`` -> ``4 * width`` channels at stride 8."""

    def __init__(self, in_channels: tuple[int, int, int], width: int = 512, dilations=(1, 2, 4, 8)):
        super().__init__()
        self.reduce = nn.ModuleList(ConvBNAct(c, width, 3) for c in in_channels)
        self.dilated = nn.ModuleList(JPUSeparableConv(len(in_channels) * width, width, d) for d in dilations)
        self.out_channels = width * len(dilations)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = torch.cat([resize_to(conv(f), size) for conv, f in zip(self.reduce, feats)], dim=1)
        return torch.cat([branch(x) for branch in self.dilated], dim=1)


class FastFCN(SemanticModel):
    """A plain (stride-32) encoder, JPU on its last three stages, ASPP head at stride 8."""

    def __init__(self, encoder: Encoder, num_classes: int, width: int = 512, channels: int = 256):
        super().__init__(num_classes)
        if tuple(encoder.reductions[-3:]) != (8, 16, 32):
            raise ModelError(
                f"FastFCN/JPU needs encoder stages at strides 8, 16, 32, got reductions {encoder.reductions}",
                fix="build the encoder with output_stride=32 (JPU replaces the dilated backbone)",
            )
        self.encoder = encoder
        self.jpu = JointPyramidUpsampling(tuple(encoder.out_channels[-3:]), width)
        self.aspp = ASPP(self.jpu.out_channels, channels, aspp_rates(8))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_weights(self.jpu, self.aspp, self.classifier)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aspp(self.jpu(self.encoder(images)[-3:])))


def _jpu(encoder: str, num_classes: int, width: int = 512, channels: int = 256, **kw) -> FastFCN:
    return FastFCN(create_encoder(encoder, output_stride=32, **kw), num_classes, width, channels)


@register_model(arch="jpu", encoder="resnet50")
def jpu_resnet50(num_classes: int = 21, **kw) -> FastFCN:
    """DeepLabV3 + JPU on a plain ResNet-50 (C = 512), as in FastFCN."""
    return _jpu("resnet50", num_classes, **kw)


@register_model(arch="jpu", encoder="resnet18")
def jpu_resnet18(num_classes: int = 21, **kw) -> FastFCN:
    """DeepLabV3 + JPU on a plain ResNet-18 (C = 128)."""
    return _jpu("resnet18", num_classes, width=128, **kw)


@register_model(arch="jpu", encoder="test_resnet")
def test_jpu(num_classes: int = 5, **kw) -> FastFCN:
    """Tiny DeepLabV3 + JPU for tests."""
    return _jpu("test_resnet", num_classes, width=4, channels=8, **kw)
