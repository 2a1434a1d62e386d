"""HRNetV2 encoders — Sun, Xiao, Liu & Wang, "Deep High-Resolution Representation Learning for
Human Pose Estimation" (CVPR 2019), and Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang,
Liu & Xiao, "Deep High-Resolution Representation Learning for Visual Recognition" (TPAMI 2020).

The network keeps a high-resolution branch from start to end and adds lower-resolution branches in
parallel, exchanging information between them again and again:

* stem: two 3x3 stride-2 conv-BN-ReLU (64 channels), reduction 4;
* stage 1: bottleneck residual blocks (width 64, 256 channels out);
* a transition to two branches (3x3 conv to C; 3x3 stride-2 conv to 2C), stage 2 (1 module);
* a transition adding a 4C branch (3x3 stride-2 conv from the lowest branch), stage 3 (4 modules);
* a transition adding an 8C branch, stage 4 (3 modules).

Each *module* runs basic blocks on every branch (4 per branch) and then fuses: output branch i is
``ReLU(sum_j f_ij(x_j))`` with ``f_ii`` the identity, ``f_ij`` for a lower-resolution ``j`` a 1x1
conv-BN then bilinear upsampling, and for a higher-resolution ``j`` a chain of ``i - j`` 3x3 stride-2
conv-BNs (ReLU between them, not after the last). Widths and depths follow the official
HRNet-Semantic-Segmentation configurations (``seg_hrnet_w18``, ``seg_hrnet_w48``,
``seg_hrnet_w18_small_v2``: stage 1 with 2 bottlenecks, 2 blocks per branch, modules 1/3/2).

In edgeseg's encoder contract (:mod:`.base`) the features are the stem's first (stride-2, 64
channels) map, then the four branches after stage 4: reductions ``(2, 4, 8, 16, 32)``, channels
``(64, C, 2C, 4C, 8C)``.

Deviations: upsampling in the fusion resizes to the target branch's exact size (bilinear,
``align_corners=False``, as the segmentation code does) so odd input sizes work; every stride-2 conv
has padding 1, so branch sizes are ``ceil(h / 2)`` chains and down-paths always land on the target's
size. **Output stride is fixed at 32**: HRNet has no stride to trade for dilation — its strides are
the branches themselves, and dropping the 1/32 branch would no longer be HRNet — so any other
``output_stride`` raises :class:`~edgeseg.errors.ModelError`. Decoders that read ``reductions``
(DeepLabV3+, FPN, ...) run on it at output stride 32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ModelError
from ..layers import ConvBNAct, resize_to
from .base import ENCODERS, Encoder
from .resnet import BasicBlock, Bottleneck


@dataclass(frozen=True)
class HRNetConfig:
    """One HRNet layout. Branch widths are ``width * (1, 2, 4, 8)``; ``modules`` counts the
    high-resolution modules of stages 2, 3 and 4; ``blocks`` is the number of basic blocks per branch
    per module; stage 1 has ``stage1_blocks`` bottlenecks of width ``stage1_width`` (4x out)."""

    width: int
    stage1_blocks: int = 4
    blocks: int = 4
    modules: tuple[int, int, int] = (1, 4, 3)
    stem: int = 64
    stage1_width: int = 64

    @property
    def widths(self) -> tuple[int, int, int, int]:
        return (self.width, 2 * self.width, 4 * self.width, 8 * self.width)


class FuseLayer(nn.Module):
    """``f_ij`` of the multi-resolution fusion: from branch ``j`` (width ``cin``) to branch ``i``
    (width ``cout``). ``steps = i - j``: positive steps are strided 3x3 convs down, negative a 1x1
    conv-BN then a bilinear resize up to the target's size."""

    def __init__(self, cin: int, cout: int, steps: int):
        super().__init__()
        self.up = steps < 0
        if self.up:
            self.conv: nn.Module = ConvBNAct(cin, cout, 1, act="none")
        else:
            last = steps - 1
            self.conv = nn.Sequential(*(
                ConvBNAct(cin, cout if k == last else cin, 3, stride=2, act="none" if k == last else "relu")
                for k in range(steps)
            ))

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return resize_to(y, target.shape[-2:]) if self.up else y


class HighResolutionModule(nn.Module):
    """Basic blocks on each parallel branch, then every branch receives the sum of all of them."""

    def __init__(self, widths: tuple[int, ...], blocks: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c, 1, 1) for _ in range(blocks))) for c in widths
        )
        n = len(widths)
        self.fuse = nn.ModuleList(
            nn.ModuleList(nn.Identity() if i == j else FuseLayer(widths[j], widths[i], i - j) for j in range(n))
            for i in range(n)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse):
            y = xs[i]
            for j, f in enumerate(row):
                if j != i:
                    y = y + f(xs[j], xs[i])
            out.append(self.relu(y))
        return out


class Transition(nn.Module):
    """Between stages: existing branches change width with a 3x3 conv-BN-ReLU if needed, and one new
    branch at half the resolution comes from the lowest-resolution input by a 3x3 stride-2 conv."""

    def __init__(self, widths_in: tuple[int, ...], widths_out: tuple[int, ...]):
        super().__init__()
        self.keep = nn.ModuleList(
            nn.Identity() if cin == cout else ConvBNAct(cin, cout, 3) for cin, cout in zip(widths_in, widths_out)
        )
        self.new = ConvBNAct(widths_in[-1], widths_out[-1], 3, stride=2)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(x) for conv, x in zip(self.keep, xs)] + [self.new(xs[-1])]


class HRNetEncoder(Encoder):
    """HRNetV2 as an encoder: features at reductions (2, 4, 8, 16, 32), see the module docstring."""

    def __init__(self, config: HRNetConfig, output_stride: int = 32, in_channels: int = 3):
        super().__init__()
        if output_stride != 32:
            raise ModelError(
                f"HRNet encoder: output_stride must be 32, got {output_stride} (its parallel branches "
                "are fixed at strides 4, 8, 16 and 32; there is no stride to replace by dilation)",
                fix="build it with output_stride=32; decoders read its reductions and work at stride 32",
            )
        self.config = config
        cfg = config
        self.stem1 = ConvBNAct(in_channels, cfg.stem, 3, stride=2)
        self.stem2 = ConvBNAct(cfg.stem, cfg.stem, 3, stride=2)
        cin, blocks = cfg.stem, []
        for _ in range(cfg.stage1_blocks):
            blocks.append(Bottleneck(cin, cfg.stage1_width, 1, 1))
            cin = cfg.stage1_width * Bottleneck.expansion
        self.stage1 = nn.Sequential(*blocks)
        widths_in: tuple[int, ...] = (cin,)
        transitions, stages = [], []
        for n_branches, n_modules in zip((2, 3, 4), cfg.modules):
            widths = cfg.widths[:n_branches]
            transitions.append(Transition(widths_in, widths))
            stages.append(nn.Sequential(*(HighResolutionModule(widths, cfg.blocks) for _ in range(n_modules))))
            widths_in = widths
        self.transitions = nn.ModuleList(transitions)
        self.stages = nn.ModuleList(stages)
        self.out_channels = (cfg.stem,) + cfg.widths
        self.reductions = (2, 4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.stem1(x)
        xs = [self.stage1(self.stem2(stem))]
        for transition, stage in zip(self.transitions, self.stages):
            xs = stage(transition(xs))
        return [stem] + xs


# Official configurations (HRNet-Semantic-Segmentation, experiments/cityscapes/seg_hrnet_*.yaml)
W18 = HRNetConfig(width=18)
W48 = HRNetConfig(width=48)
W18_SMALL_V2 = HRNetConfig(width=18, stage1_blocks=2, blocks=2, modules=(1, 3, 2))
TINY = HRNetConfig(width=4, stage1_blocks=1, blocks=1, modules=(1, 1, 1), stem=8, stage1_width=4)


@ENCODERS.register("hrnetv2_w18", output_strides=(32,))
def hrnetv2_w18(**kw) -> HRNetEncoder:
    return HRNetEncoder(W18, **kw)


@ENCODERS.register("hrnetv2_w18_small", output_strides=(32,))
def hrnetv2_w18_small(**kw) -> HRNetEncoder:
    return HRNetEncoder(W18_SMALL_V2, **kw)


@ENCODERS.register("hrnetv2_w48", output_strides=(32,))
def hrnetv2_w48(**kw) -> HRNetEncoder:
    return HRNetEncoder(W48, **kw)


@ENCODERS.register("test_hrnet", output_strides=(32,))
def test_hrnet(**kw) -> HRNetEncoder:
    return HRNetEncoder(TINY, **kw)
