"""VGG-16 encoder — Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition" (ICLR 2015), configuration D, optionally with batch norm after every conv (as SegNet
uses it).

Five stages of 3x3 convs, each followed by 2x2 max pooling. ``stages`` holds the conv blocks
without the pooling, so SegNet can pool with indices; ``forward`` returns the pooled output of
every stage (reductions 2, 4, 8, 16, 32; pooling is skipped once ``output_stride`` is reached).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ENCODERS, Encoder

VGG16_CFG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
TINY_CFG = ((4,), (8,), (8,), (16,), (16,))


def vgg_stage(cin: int, widths: tuple[int, ...], batch_norm: bool, dilation: int) -> nn.Sequential:
    """One VGG stage: 3x3 convolutions of ``widths`` (Conv-BN-ReLU with ``batch_norm``, else
    Conv-ReLU), dilated by ``dilation``; the pooling between stages is the caller's (DeepLab v1
    changes it)."""
    from ..layers import ConvBNAct

    layers: list[nn.Module] = []
    for w in widths:
        if batch_norm:
            layers.append(ConvBNAct(cin, w, 3, dilation=dilation))
        else:
            layers += [nn.Conv2d(cin, w, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers)


class VGGEncoder(Encoder):
    def __init__(self, cfg=VGG16_CFG, batch_norm: bool = False, output_stride: int = 32, in_channels: int = 3):
        super().__init__()
        self.stages = nn.ModuleList()
        self.pool_flags: list[bool] = []
        cin, reduction, dilation, reductions = in_channels, 1, 1, []
        for widths in cfg:
            self.stages.append(vgg_stage(cin, tuple(widths), batch_norm, dilation))
            pool = reduction * 2 <= output_stride
            self.pool_flags.append(pool)
            if pool:
                reduction *= 2
            else:
                dilation *= 2
            reductions.append(reduction)
            cin = widths[-1]
        self.cfg = tuple(tuple(w) for w in cfg)
        self.out_channels = tuple(w[-1] for w in cfg)
        self.reductions = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage, pool in zip(self.stages, self.pool_flags):
            x = stage(x)
            if pool:
                x = F.max_pool2d(x, 2, 2)
            feats.append(x)
        return feats


@ENCODERS.register("vgg16")
def vgg16(**kw) -> VGGEncoder:
    return VGGEncoder(VGG16_CFG, batch_norm=False, **kw)


@ENCODERS.register("vgg16_bn")
def vgg16_bn(**kw) -> VGGEncoder:
    return VGGEncoder(VGG16_CFG, batch_norm=True, **kw)


@ENCODERS.register("test_vgg")
def test_vgg(**kw) -> VGGEncoder:
    return VGGEncoder(TINY_CFG, batch_norm=False, **kw)


@ENCODERS.register("test_vgg_bn")
def test_vgg_bn(**kw) -> VGGEncoder:
    return VGGEncoder(((4, 4), (8, 8), (8, 8), (16, 16), (16, 16)), batch_norm=True, **kw)
