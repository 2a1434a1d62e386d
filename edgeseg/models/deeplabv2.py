"""DeepLab v2 — Chen, Papandreou, Kokkinos, Murphy & Yuille, "DeepLab: Semantic Image Segmentation
with Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs" (TPAMI 2018).

A dilated ResNet (the paper's ResNet-101; ResNet-50/18 and MobileNetV2 here too) at output stride
8 — layer3 dilated by 2, layer4 by 4 — feeds **ASPP-L**: four parallel 3x3 atrous convolutions
with rates 6, 12, 18 and 24 that each map the features straight to class scores; the four score
maps are summed (the reference prototxt's ``fc1_voc12_c0..c3`` and an ``Eltwise SUM``). Unlike
DeepLabV3's ASPP (:mod:`edgeseg.models.deeplabv3`) there is no batch norm, no 1x1 branch, no
image pooling and no projection: the head has ``4 * (C_in * 9 * K + K)`` parameters for ``K``
classes (1,548,372 on ResNet-101 with 21 classes; 44,048,532 in all). The stride-8 scores are
upsampled x8 bilinearly to the input size (:class:`~edgeseg.models.base.SemanticModel`).

The fully connected CRF of the paper is post-processing, not part of the network: it is a decode
option (``edgeseg/decode/crf.py``) applied to these logits.

Deviations from the paper:

- Multi-scale input training (MSC: the image at scales 1, 0.75 and 0.5 through shared weights,
  fused by max) is left out: it is a training/inference-time ensemble, not an architecture, and it
  would triple the deployed cost.
- The backbone is the package's dilated ResNet (:mod:`edgeseg.models.encoders.resnet`): the
  stride sits in the 3x3 conv of a bottleneck rather than the 1x1 (same parameters), and the
  first block of a dilated stage keeps the previous stage's rate (torchvision's scheme), where the
  Caffe model dilates the whole stage.
- ASPP-L weights are N(0, 0.01) with zero bias, as in the reference, but the backbone starts from
  He initialisation, not ImageNet/COCO weights.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .registry import register_model

ASPP_L_RATES = (6, 12, 18, 24)  # the paper's ASPP-L, at output stride 8


class ASPPL(nn.Module):
    """DeepLab v2's atrous spatial pyramid: ``sum_i conv3x3_{rate_i}(x)``, each conv from ``cin``
    channels straight to ``num_classes`` scores (with bias), 'same' padding (``padding = rate``)."""

    def __init__(self, cin: int, num_classes: int, rates: tuple[int, ...] = ASPP_L_RATES):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            nn.Conv2d(cin, num_classes, 3, padding=r, dilation=r) for r in self.rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(SemanticModel):
    """A dilated encoder (output stride 8) -> :class:`ASPPL` on its deepest features."""

    def __init__(self, encoder: Encoder, num_classes: int, rates: tuple[int, ...] = ASPP_L_RATES):
        super().__init__(num_classes)
        self.encoder = encoder
        self.aspp = ASPPL(encoder.out_channels[-1], num_classes, rates)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.encoder(images)[-1])


def _dlv2(encoder: str, num_classes: int, output_stride: int = 8, rates: tuple[int, ...] = ASPP_L_RATES,
          **kw) -> DeepLabV2:
    return DeepLabV2(create_encoder(encoder, output_stride=output_stride, **kw), num_classes, rates)


@register_model(arch="deeplabv2", encoder="resnet101")
def deeplabv2_resnet101(num_classes: int = 21, **kw) -> DeepLabV2:
    """DeepLab v2 (ASPP-L) on dilated ResNet-101, output stride 8, as in the paper."""
    return _dlv2("resnet101", num_classes, **kw)


@register_model(arch="deeplabv2", encoder="resnet50")
def deeplabv2_resnet50(num_classes: int = 21, **kw) -> DeepLabV2:
    """DeepLab v2 (ASPP-L) on dilated ResNet-50, output stride 8."""
    return _dlv2("resnet50", num_classes, **kw)


@register_model(arch="deeplabv2", encoder="resnet18")
def deeplabv2_resnet18(num_classes: int = 21, **kw) -> DeepLabV2:
    """DeepLab v2 (ASPP-L) on dilated ResNet-18, output stride 8."""
    return _dlv2("resnet18", num_classes, **kw)


@register_model(arch="deeplabv2", encoder="mobilenetv2")
def deeplabv2_mobilenetv2(num_classes: int = 21, **kw) -> DeepLabV2:
    """DeepLab v2 (ASPP-L) on dilated MobileNetV2, output stride 8."""
    return _dlv2("mobilenetv2", num_classes, **kw)


@register_model(arch="deeplabv2", encoder="test_resnet")
def test_deeplabv2(num_classes: int = 5, **kw) -> DeepLabV2:
    """Tiny DeepLab v2 (basic-block ResNet, output stride 8, paper rates) for tests."""
    return _dlv2("test_resnet", num_classes, **kw)
