"""HRNetV2 for semantic segmentation — Sun, Xiao, Liu & Wang, "Deep High-Resolution Representation
Learning for Human Pose Estimation" (CVPR 2019); Wang et al., "Deep High-Resolution Representation
Learning for Visual Recognition" (TPAMI 2020), whose *HRNetV2* head is implemented here.

The encoder (:mod:`edgeseg.models.encoders.hrnet`) ends with four parallel branches at strides 4,
8, 16 and 32 (C, 2C, 4C, 8C channels). The head bilinearly upsamples the three lower-resolution
branches to the stride-4 one, concatenates all four (15C channels), mixes them with a 1x1
conv-BN-ReLU (15C) and classifies with a 1x1 conv; logits are upsampled x4 to the input.

Deviation: the official code gives the 1x1 mixing conv a bias before its batch norm; ours is
bias-free (the bias is redundant before BN; 15C parameters fewer). Parameter counts match the
published ones (HRNet-Semantic-Segmentation README, Cityscapes: W48 65.9M, W18-Small-v2 3.9M).

HRNet is also an encoder like any other; :func:`fpn_hrnetv2_w18_small` puts the FPN decoder on it.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .fpn import FPN
from .layers import ConvBNAct, init_weights, resize_to
from .registry import register_model


class HRNetV2(SemanticModel):
    """HRNetV2 segmentation: the encoder features at reductions 4..32, upsampled to 1/4 and
    concatenated, then a 1x1 conv-BN-ReLU and a 1x1 classifier (logits at stride 4)."""

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__(num_classes)
        self.encoder = encoder
        self.first = encoder.reductions.index(4)
        channels = sum(encoder.out_channels[self.first:])
        self.head = nn.Sequential(ConvBNAct(channels, channels, 1), nn.Conv2d(channels, num_classes, 1))
        init_weights(self.head)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)[self.first:]
        size = feats[0].shape[-2:]
        return self.head(torch.cat([feats[0]] + [resize_to(f, size) for f in feats[1:]], dim=1))


def _hrnet(encoder: str, num_classes: int, **kw) -> HRNetV2:
    return HRNetV2(create_encoder(encoder, output_stride=32, **kw), num_classes)


@register_model(arch="hrnetv2", encoder="hrnetv2_w18_small")
def hrnetv2_w18_small(num_classes: int = 19, **kw) -> HRNetV2:
    """HRNetV2-W18-Small-v2 (3.9M parameters with 19 classes)."""
    return _hrnet("hrnetv2_w18_small", num_classes, **kw)


@register_model(arch="hrnetv2", encoder="hrnetv2_w18")
def hrnetv2_w18(num_classes: int = 19, **kw) -> HRNetV2:
    """HRNetV2-W18."""
    return _hrnet("hrnetv2_w18", num_classes, **kw)


@register_model(arch="hrnetv2", encoder="hrnetv2_w48")
def hrnetv2_w48(num_classes: int = 19, **kw) -> HRNetV2:
    """HRNetV2-W48 (65.9M parameters with 19 classes)."""
    return _hrnet("hrnetv2_w48", num_classes, **kw)


@register_model(arch="hrnetv2", encoder="test_hrnet")
def test_hrnetv2(num_classes: int = 5, **kw) -> HRNetV2:
    """Tiny HRNetV2 for tests."""
    return _hrnet("test_hrnet", num_classes, **kw)


@register_model(arch="fpn", encoder="hrnetv2_w18_small")
def fpn_hrnetv2_w18_small(num_classes: int = 19, **kw) -> FPN:
    """The FPN decoder on the HRNetV2-W18-Small-v2 encoder (HRNet as an encoder for any decoder)."""
    return FPN(create_encoder("hrnetv2_w18_small", output_stride=32, **kw), num_classes)
