"""DeepLabV3 — Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic
Image Segmentation" (2017).

A dilated backbone (output stride 16, or 8) whose last ResNet stage uses **multi-grid** unit
rates (1, 2, 4) times the stage's dilation, and **ASPP**: a 1x1 conv, three 3x3 atrous convs
(rates 6, 12, 18 at stride 16, doubled at stride 8) and **image-level pooling** (global average
-> 1x1 conv -> broadcast back), all with 256 channels and batch norm, concatenated, projected by a
1x1 conv-BN-ReLU and classified by a final 1x1 conv; logits are bilinearly upsampled.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, SeparableConvBNAct, init_weights
from .registry import register_model


class ImagePooling(nn.Module):
    """Global average pooling -> 1x1 conv-BN-ReLU -> broadcast to the feature size."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNAct(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3), keepdim=True))
        return y.expand(-1, -1, int(x.shape[-2]), int(x.shape[-1]))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling. ``separable`` uses depthwise-separable atrous convs (V3+)."""

    def __init__(self, cin: int, channels: int = 256, rates=(6, 12, 18), separable: bool = False, dropout: float = 0.1):
        super().__init__()
        atrous = SeparableConvBNAct if separable else ConvBNAct
        branches: list[nn.Module] = [ConvBNAct(cin, channels, 1)]
        branches += [atrous(cin, channels, 3, dilation=r) for r in rates]
        branches.append(ImagePooling(cin, channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNAct(channels * len(branches), channels, 1), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


def aspp_rates(output_stride: int, base=(6, 12, 18)) -> tuple[int, ...]:
    """The paper's rates are for output stride 16; at 8 they double."""
    return tuple(r * 16 // output_stride for r in base)


class DeepLabV3(SemanticModel):
    def __init__(self, encoder: Encoder, num_classes: int, channels: int = 256):
        super().__init__(num_classes)
        self.encoder = encoder
        self.aspp = ASPP(encoder.out_channels[-1], channels, aspp_rates(encoder.output_stride))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_weights(self.aspp, self.classifier)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aspp(self.encoder(images)[-1]))


def _dlv3(encoder: str, num_classes: int, output_stride: int = 16, channels: int = 256, **kw) -> DeepLabV3:
    if encoder.startswith(("resnet", "test_resnet")):
        kw.setdefault("multi_grid", (1, 2, 4))
    return DeepLabV3(create_encoder(encoder, output_stride=output_stride, **kw), num_classes, channels)


@register_model(arch="deeplabv3", encoder="resnet50")
def deeplabv3_resnet50(num_classes: int = 21, **kw) -> DeepLabV3:
    """DeepLabV3 on ResNet-50, output stride 16, multi-grid (1, 2, 4)."""
    return _dlv3("resnet50", num_classes, **kw)


@register_model(arch="deeplabv3", encoder="resnet18")
def deeplabv3_resnet18(num_classes: int = 21, **kw) -> DeepLabV3:
    """DeepLabV3 on ResNet-18, output stride 16, multi-grid (1, 2, 4)."""
    return _dlv3("resnet18", num_classes, **kw)


@register_model(arch="deeplabv3", encoder="mobilenetv3_large")
def deeplabv3_mobilenetv3_large(num_classes: int = 21, **kw) -> DeepLabV3:
    """DeepLabV3 on MobileNetV3-Large, output stride 16."""
    return _dlv3("mobilenetv3_large", num_classes, **kw)


@register_model(arch="deeplabv3", encoder="test_resnet_bottleneck")
def test_deeplabv3(num_classes: int = 5, **kw) -> DeepLabV3:
    """Tiny DeepLabV3 (bottleneck ResNet, multi-grid) for tests."""
    return _dlv3("test_resnet_bottleneck", num_classes, channels=8, **kw)
