"""PSPNet — Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network" (CVPR 2017).

A dilated backbone (output stride 8) feeds the pyramid pooling module: the feature map is
average-pooled to 1x1, 2x2, 3x3 and 6x6 bins, each reduced by a 1x1 conv-BN-ReLU to 1/4 of the
channels, bilinearly upsampled back and concatenated with the features; a 3x3 conv-BN-ReLU,
dropout and a 1x1 classifier follow. The auxiliary training head of the paper is left to the
trainer. The bin pooling is :func:`~edgeseg.models.layers.adaptive_avg_pool2d_static` — exact
adaptive average pooling as constant matrix products — so ONNX exports are correct at every input
size (480x360, 500x333, ...), not only sizes the bins divide.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, adaptive_avg_pool2d_static, init_weights, resize_to
from .registry import register_model


class PyramidPooling(nn.Module):
    def __init__(self, cin: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        self.reduce = nn.ModuleList(ConvBNAct(cin, cin // len(bins), 1) for _ in bins)
        self.out_channels = cin + (cin // len(bins)) * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pyramid = [x]
        for bins, conv in zip(self.bins, self.reduce):
            y = conv(adaptive_avg_pool2d_static(x, bins))
            pyramid.append(y.expand(-1, -1, *size) if bins == 1 else resize_to(y, size))
        return torch.cat(pyramid, dim=1)


class PSPNet(SemanticModel):
    def __init__(self, encoder: Encoder, num_classes: int, bins=(1, 2, 3, 6), channels: int = 512,
                 dropout: float = 0.1):
        super().__init__(num_classes)
        self.encoder = encoder
        self.ppm = PyramidPooling(encoder.out_channels[-1], bins)
        self.head = nn.Sequential(
            ConvBNAct(self.ppm.out_channels, channels, 3), nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1)
        )
        init_weights(self.ppm, self.head)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.ppm(self.encoder(images)[-1]))


def _psp(encoder: str, num_classes: int, output_stride: int = 8, **kw) -> PSPNet:
    return PSPNet(create_encoder(encoder, output_stride=output_stride), num_classes, **kw)


@register_model(arch="pspnet", encoder="resnet50")
def pspnet_resnet50(num_classes: int = 21, **kw) -> PSPNet:
    """PSPNet on dilated ResNet-50 (output stride 8), as in the paper."""
    return _psp("resnet50", num_classes, **kw)


@register_model(arch="pspnet", encoder="resnet18")
def pspnet_resnet18(num_classes: int = 21, **kw) -> PSPNet:
    """PSPNet on dilated ResNet-18 (output stride 8)."""
    return _psp("resnet18", num_classes, channels=256, **kw)


@register_model(arch="pspnet", encoder="mobilenetv2")
def pspnet_mobilenetv2(num_classes: int = 21, **kw) -> PSPNet:
    """PSPNet on dilated MobileNetV2 (output stride 8)."""
    return _psp("mobilenetv2", num_classes, channels=128, **kw)


@register_model(arch="pspnet", encoder="test_resnet")
def test_pspnet(num_classes: int = 5, **kw) -> PSPNet:
    """Tiny PSPNet for tests."""
    return _psp("test_resnet", num_classes, channels=8, **kw)


@register_model(arch="pspnet", encoder="test_mobilenetv2")
def test_pspnet_mobilenetv2(num_classes: int = 5, **kw) -> PSPNet:
    """Tiny PSPNet on a MobileNetV2 layout for tests."""
    return _psp("test_mobilenetv2", num_classes, channels=8, **kw)
