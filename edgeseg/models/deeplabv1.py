"""DeepLab v1 (DeepLab-LargeFOV) — Chen, Papandreou, Kokkinos, Murphy & Yuille, "Semantic Image
Segmentation with Deep Convolutional Nets and Fully Connected CRFs" (ICLR 2015).

VGG-16 turned into a dense feature extractor with the "hole" (atrous) algorithm, as in the
reference Caffe ``DeepLab-LargeFOV/train.prototxt``: every max pool is 3x3 with padding 1; pools 1-3
keep stride 2, pool4 and pool5 have stride 1, and conv5_1-conv5_3 are dilated by 2, so the output
stride is 8. A 3x3 stride-1 average pool (``pool5a``) follows, then the LargeFOV head: fc6 is a 3x3
conv with dilation 12 and 1024 channels, fc7 a 1x1 conv with 1024 channels (each followed by ReLU
and dropout 0.5), fc8 a 1x1 conv to the class scores. The stride-8 scores are upsampled x8
bilinearly to the input size (:class:`~edgeseg.models.base.SemanticModel`). With 21 classes the
network has 20,505,429 parameters, the 20.5M of the paper's Table 2.

The fully connected CRF of the paper is post-processing, not part of the network: it is a decode
option (``edgeseg/decode/crf.py``) applied to these logits.

Deviations from the reference:

- Pooling rounds down (PyTorch and ONNX default) where Caffe rounds up. At the sizes the reference
  is built for (32k - 31, e.g. 321 or 513) both give the same grid (321 -> 161 -> 81 -> 41); at
  even sizes Caffe adds one row/column made of padding, ours keeps ``ceil(H / 8)``, the grid of
  every other encoder in the package.
- ``deeplabv1_vgg16_bn`` is not in the paper: batch norm after every conv (fc6 and fc7 included,
  their biases dropped as redundant), which trains from scratch without ImageNet weights.
- Weights are He-initialised (the reference starts from ImageNet VGG-16 with fc6/fc7 subsampled
  from the fully connected layers); fc8 is N(0, 0.01) with zero bias, as in the prototxt.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SemanticModel
from .encoders import Encoder
from .encoders.vgg import TINY_CFG, VGG16_CFG, vgg_stage
from .layers import ConvBNAct, init_weights
from .registry import register_model

POOL_STRIDES = (2, 2, 2, 1, 1)  # pool1-pool5 of the reference prototxt (all 3x3, padding 1)
TINY_BN_CFG = ((4, 4), (8, 8), (8, 8), (16, 16), (16, 16))


class AtrousVGG(Encoder):
    """VGG with DeepLab's stride-8 pooling: stage ``i`` is followed by a 3x3 max pool with stride
    ``POOL_STRIDES[i]`` and padding 1; a stage after a stride-1 pool is dilated by 2 more (conv5 at
    rate 2). ``forward`` returns every stage's pooled output (reductions 2, 4, 8, 8, 8)."""

    def __init__(self, cfg=VGG16_CFG, batch_norm: bool = False, in_channels: int = 3):
        super().__init__()
        if len(cfg) != len(POOL_STRIDES):
            raise ValueError(f"AtrousVGG needs {len(POOL_STRIDES)} stages, got a cfg of {len(cfg)}")
        self.stages = nn.ModuleList()
        cin, reduction, dilation, reductions, dilations = in_channels, 1, 1, [], []
        for i, widths in enumerate(cfg):
            self.stages.append(vgg_stage(cin, tuple(widths), batch_norm, dilation))
            dilations.append(dilation)
            reduction *= POOL_STRIDES[i]
            reductions.append(reduction)
            if POOL_STRIDES[i] == 1 and i + 1 < len(cfg):
                dilation *= 2  # the stride the pool gave up, recovered by atrous convolution
            cin = widths[-1]
        self.dilations = tuple(dilations)
        self.out_channels = tuple(w[-1] for w in cfg)
        self.reductions = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage, stride in zip(self.stages, POOL_STRIDES):
            x = F.max_pool2d(stage(x), 3, stride, 1)
            feats.append(x)
        return feats


class LargeFOVHead(nn.Sequential):
    """pool5a (3x3 average, stride 1) -> fc6 (3x3, rate 12) -> fc7 (1x1) -> fc8 (1x1 to classes);
    ReLU and dropout after fc6 and fc7; with ``batch_norm`` fc6/fc7 are conv-BN-ReLU."""

    def __init__(self, cin: int, num_classes: int, channels: int = 1024, rate: int = 12, dropout: float = 0.5,
                 batch_norm: bool = False):
        fc6: list[nn.Module]
        fc7: list[nn.Module]
        if batch_norm:
            fc6 = [ConvBNAct(cin, channels, 3, dilation=rate)]
            fc7 = [ConvBNAct(channels, channels, 1)]
        else:
            fc6 = [nn.Conv2d(cin, channels, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True)]
            fc7 = [nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True)]
        super().__init__(
            nn.AvgPool2d(3, stride=1, padding=1),
            *fc6, nn.Dropout(dropout),
            *fc7, nn.Dropout(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )


class DeepLabV1(SemanticModel):
    """DeepLab-LargeFOV: :class:`AtrousVGG` (output stride 8) -> :class:`LargeFOVHead`."""

    def __init__(self, encoder: AtrousVGG, num_classes: int, channels: int = 1024, rate: int = 12,
                 dropout: float = 0.5, batch_norm: bool = False):
        super().__init__(num_classes)
        self.encoder = encoder
        self.head = LargeFOVHead(encoder.out_channels[-1], num_classes, channels, rate, dropout, batch_norm)
        init_weights(self.encoder, self.head)
        fc8 = self.head[-1]
        nn.init.normal_(fc8.weight, std=0.01)  # the prototxt's gaussian filler for fc8
        nn.init.zeros_(fc8.bias)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images)[-1])


def _dlv1(cfg, num_classes: int, batch_norm: bool, channels: int = 1024, rate: int = 12,
          dropout: float = 0.5) -> DeepLabV1:
    return DeepLabV1(AtrousVGG(cfg, batch_norm), num_classes, channels, rate, dropout, batch_norm)


@register_model(arch="deeplabv1", encoder="vgg16")
def deeplabv1_vgg16(num_classes: int = 21, **kw) -> DeepLabV1:
    """DeepLab-LargeFOV on atrous VGG-16 (output stride 8), as in the paper."""
    return _dlv1(VGG16_CFG, num_classes, batch_norm=False, **kw)


@register_model(arch="deeplabv1", encoder="vgg16_bn")
def deeplabv1_vgg16_bn(num_classes: int = 21, **kw) -> DeepLabV1:
    """DeepLab-LargeFOV on atrous VGG-16 with batch norm after every conv (trains from scratch)."""
    return _dlv1(VGG16_CFG, num_classes, batch_norm=True, **kw)


@register_model(arch="deeplabv1", encoder="test_vgg")
def test_deeplabv1(num_classes: int = 5, **kw) -> DeepLabV1:
    """Tiny DeepLab-LargeFOV (paper strides, dilations and rate; a few channels) for tests."""
    return _dlv1(TINY_CFG, num_classes, batch_norm=False, channels=8, **kw)


@register_model(arch="deeplabv1", encoder="test_vgg_bn")
def test_deeplabv1_bn(num_classes: int = 5, **kw) -> DeepLabV1:
    """Tiny DeepLab-LargeFOV with batch norm, so the shared tester exercises Conv-BN folding."""
    return _dlv1(TINY_BN_CFG, num_classes, batch_norm=True, channels=8, **kw)
