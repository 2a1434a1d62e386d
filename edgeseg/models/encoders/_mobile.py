"""What MobileNetV2 and V3 share: the inverted residual block and a stage-tapping encoder."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ConvBNAct, SqueezeExcite, make_divisible
from .base import Encoder


@dataclass(frozen=True)
class BlockCfg:
    """One inverted residual: kernel, expanded channels, output channels, SE, activation, stride."""

    kernel: int
    expanded: int
    out: int
    se: bool
    act: str
    stride: int


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise kxk (stride, dilation) -> [squeeze-excite] -> project 1x1 (linear)."""

    def __init__(self, cin: int, cfg: BlockCfg, expanded: int, out: int, stride: int, dilation: int):
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=cfg.act))
        layers.append(ConvBNAct(expanded, expanded, cfg.kernel, stride, dilation=dilation, groups=expanded, act=cfg.act))
        if cfg.se:
            layers.append(SqueezeExcite(expanded))
        layers.append(ConvBNAct(expanded, out, 1, act="none"))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileEncoder(Encoder):
    """Stem conv, inverted residual blocks, optional last 1x1 conv; returns the last feature map at
    each nominal reduction 2, 4, 8, 16, 32. Past ``output_stride`` strides turn into dilation."""

    def __init__(self, blocks: tuple[BlockCfg, ...], *, stem: int, stem_act: str, last: int | None, last_act: str,
                 width_mult: float = 1.0, output_stride: int = 32, in_channels: int = 3):
        super().__init__()
        c = make_divisible(stem * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_channels, c, 3, 2, act=stem_act)]
        nominal, actual, dilation = [2], 2, 1
        for cfg in blocks:
            stride, previous = cfg.stride, dilation
            if actual * stride > output_stride:
                dilation, stride = dilation * stride, 1
                block_dilation = previous
            else:
                actual *= stride
                block_dilation = dilation
            out = make_divisible(cfg.out * width_mult)
            layers.append(InvertedResidual(c, cfg, make_divisible(cfg.expanded * width_mult), out, stride, block_dilation))
            nominal.append(nominal[-1] * cfg.stride)
            c = out
        if last is not None:
            lc = make_divisible(last * width_mult) if width_mult < 1 else last
            layers.append(ConvBNAct(c, lc, 1, act=last_act))
            nominal.append(nominal[-1])
            c = lc
        self.features = nn.Sequential(*layers)
        self.taps = tuple(max(i for i, r in enumerate(nominal) if r == want) for want in (2, 4, 8, 16, 32))
        widths = []
        for i in self.taps:
            m = self.features[i]
            widths.append(_out_channels(m))
        self.out_channels = tuple(widths)
        self.reductions = tuple(min(r, output_stride) for r in (2, 4, 8, 16, 32))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, taps = [], set(self.taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                feats.append(x)
        return feats


def _out_channels(m: nn.Module) -> int:
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    return convs[-1].out_channels
