"""ResNet encoders — He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016);
dilated ("atrous") variants for output stride 8/16 and DeepLabV3's multi-grid follow Chen et al.,
"Rethinking Atrous Convolution for Semantic Image Segmentation" (2017).

Stages: stem (7x7/2 conv, reduction 2), then max pool + layer1 (4), layer2 (8), layer3 (16),
layer4 (32). Strides beyond ``output_stride`` become dilation. ``multi_grid`` (e.g. (1, 2, 4))
multiplies the dilation of the blocks of the last stage, as in DeepLabV3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBNAct
from .base import ENCODERS, Encoder


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dilation: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = ConvBNAct(cin, width, 3, stride, dilation=dilation)
        self.conv2 = ConvBNAct(width, cout, 3, dilation=dilation, act="none")
        self.shortcut = ConvBNAct(cin, cout, 1, stride, act="none") if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = ConvBNAct(cin, width, 1)
        self.conv2 = ConvBNAct(width, width, 3, stride, dilation=dilation)
        self.conv3 = ConvBNAct(width, cout, 1, act="none")
        self.shortcut = ConvBNAct(cin, cout, 1, stride, act="none") if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetEncoder(Encoder):
    def __init__(self, block: str = "basic", layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem: int = 64,
                 output_stride: int = 32, multi_grid: tuple[int, ...] | None = None, in_channels: int = 3):
        super().__init__()
        blk = BLOCKS[block]
        self.stem = ConvBNAct(in_channels, stem, 7, stride=2)
        cin, reduction, dilation = stem, 4, 1  # after the stem (2) and the max pool (2)
        stages, reductions = [], [2]
        for i, (n, width) in enumerate(zip(layers, widths)):
            stride, previous = (1 if i == 0 else 2), dilation
            if reduction * stride > output_stride:
                dilation, stride = dilation * stride, 1
            else:
                reduction *= stride
            grid = tuple(multi_grid) if (multi_grid and i == len(layers) - 1) else None
            blocks = []
            for j in range(n):
                d = dilation * grid[j % len(grid)] if grid else (previous if j == 0 else dilation)
                blocks.append(blk(cin, width, stride if j == 0 else 1, d))
                cin = width * blk.expansion
            stages.append(nn.Sequential(*blocks))
            reductions.append(reduction)
        self.layers = nn.ModuleList(stages)
        self.out_channels = (stem,) + tuple(w * blk.expansion for w in widths)
        self.reductions = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = [x]
        x = F.max_pool2d(x, 3, 2, 1)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


def _resnet(**defaults):
    def build(**kw) -> ResNetEncoder:
        return ResNetEncoder(**{**defaults, **kw})

    return build


ENCODERS.add("resnet18", _resnet(block="basic", layers=(2, 2, 2, 2)))
ENCODERS.add("resnet34", _resnet(block="basic", layers=(3, 4, 6, 3)))
ENCODERS.add("resnet50", _resnet(block="bottleneck", layers=(3, 4, 6, 3)))
ENCODERS.add("resnet101", _resnet(block="bottleneck", layers=(3, 4, 23, 3)))
ENCODERS.add("test_resnet", _resnet(block="basic", layers=(1, 1, 1, 1), widths=(4, 8, 8, 16), stem=4))
ENCODERS.add("test_resnet_bottleneck", _resnet(block="bottleneck", layers=(1, 1, 1, 3), widths=(2, 4, 4, 4), stem=4))
