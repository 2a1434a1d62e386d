"""DeepLabV3+ — Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with Atrous Separable
Convolution for Semantic Image Segmentation" (ECCV 2018).

DeepLabV3's encoder (output stride 16, ASPP with image pooling) with **depthwise-separable**
atrous convs, plus a simple decoder: low-level features at stride 4 are reduced to 48 channels by a
1x1 conv, the ASPP output is bilinearly upsampled x4 and concatenated with them, two 3x3
depthwise-separable conv-BN-ReLU (256) refine, a 1x1 conv classifies, and logits are upsampled x4.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SemanticModel
from .deeplabv3 import ASPP, aspp_rates
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, SeparableConvBNAct, init_weights, resize_to
from .registry import register_model


class DeepLabV3Plus(SemanticModel):
    def __init__(self, encoder: Encoder, num_classes: int, channels: int = 256, low_channels: int = 48):
        super().__init__(num_classes)
        self.encoder = encoder
        self.low_index = encoder.reductions.index(4)
        self.aspp = ASPP(encoder.out_channels[-1], channels, aspp_rates(encoder.output_stride), separable=True)
        self.low = ConvBNAct(encoder.out_channels[self.low_index], low_channels, 1)
        self.decoder = nn.Sequential(
            SeparableConvBNAct(channels + low_channels, channels, 3),
            SeparableConvBNAct(channels, channels, 3),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_weights(self.aspp, self.low, self.decoder, self.classifier)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)
        low = self.low(feats[self.low_index])
        x = resize_to(self.aspp(feats[-1]), low.shape[-2:])
        return self.classifier(self.decoder(torch.cat([x, low], dim=1)))


def _dlv3p(encoder: str, num_classes: int, output_stride: int = 16, channels: int = 256, low_channels: int = 48,
           **kw) -> DeepLabV3Plus:
    return DeepLabV3Plus(create_encoder(encoder, output_stride=output_stride, **kw), num_classes, channels, low_channels)


@register_model(arch="deeplabv3plus", encoder="resnet18")
def deeplabv3plus_resnet18(num_classes: int = 21, **kw) -> DeepLabV3Plus:
    """DeepLabV3+ on ResNet-18, output stride 16."""
    return _dlv3p("resnet18", num_classes, **kw)


@register_model(arch="deeplabv3plus", encoder="resnet50")
def deeplabv3plus_resnet50(num_classes: int = 21, **kw) -> DeepLabV3Plus:
    """DeepLabV3+ on ResNet-50, output stride 16."""
    return _dlv3p("resnet50", num_classes, **kw)


@register_model(arch="deeplabv3plus", encoder="mobilenetv2")
def deeplabv3plus_mobilenetv2(num_classes: int = 21, **kw) -> DeepLabV3Plus:
    """DeepLabV3+ on MobileNetV2, output stride 16."""
    return _dlv3p("mobilenetv2", num_classes, **kw)


@register_model(arch="deeplabv3plus", encoder="mobilenetv3_large")
def deeplabv3plus_mobilenetv3_large(num_classes: int = 21, **kw) -> DeepLabV3Plus:
    """DeepLabV3+ on MobileNetV3-Large, output stride 16."""
    return _dlv3p("mobilenetv3_large", num_classes, **kw)


@register_model(arch="deeplabv3plus", encoder="mobilenetv3_small")
def deeplabv3plus_mobilenetv3_small(num_classes: int = 21, **kw) -> DeepLabV3Plus:
    """DeepLabV3+ on MobileNetV3-Small, output stride 16 (128-channel ASPP/decoder)."""
    return _dlv3p("mobilenetv3_small", num_classes, channels=128, **kw)


@register_model(arch="deeplabv3plus", encoder="test_mobilenetv3")
def test_deeplabv3plus(num_classes: int = 5, **kw) -> DeepLabV3Plus:
    """Tiny DeepLabV3+ on a MobileNetV3 layout for tests."""
    return _dlv3p("test_mobilenetv3", num_classes, channels=8, low_channels=4, **kw)


@register_model(arch="deeplabv3plus", encoder="test_resnet")
def test_deeplabv3plus_resnet(num_classes: int = 5, **kw) -> DeepLabV3Plus:
    """Tiny DeepLabV3+ on a basic-block ResNet for tests."""
    return _dlv3p("test_resnet", num_classes, channels=8, low_channels=4, **kw)
