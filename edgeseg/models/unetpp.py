"""UNet++ — Zhou, Rahman Siddiquee, Tajbakhsh & Liang, "UNet++: A Nested U-Net Architecture for
Medical Image Segmentation" (DLMIA / MICCAI Workshops 2018), and "UNet++: Redesigning Skip
Connections to Exploit Multiscale Features in Image Segmentation" (IEEE TMI 2020).

A backbone gives ``X^{i,0}`` at levels ``i = 0..4`` (each half the size of the one above). The
nested, dense skip pathways compute, for ``j >= 1`` and ``i + j <= 4``::

    X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])

with ``H`` two 3x3 conv-BN-ReLU and ``Up`` a 2x2 transposed conv with stride 2 (to the width of
level ``i``; its output is cropped or zero-padded to ``X^{i,0}``'s size, so any input size works).
``X^{i,j}`` has as many channels as ``X^{i,0}``. **Deep supervision**: a 1x1 classifier on each of
``X^{0,1..4}``. In training mode the model returns the deepest head as ``logits`` and heads 1..3 as
``aux_logits``; the paper averages the four heads' losses (equal weights), and the trainer adds
``aux_weight`` times the *mean* auxiliary loss, so ``aux_weight = 3`` (``level - 1``) gives
``L4 + L1 + L2 + L3`` — the paper's equal weighting, times four. In eval mode (and every export)
only ``{"logits"}`` comes out: head ``level``.

**Pruning** (both papers; DLMIA's "fast mode"): ``prune(level)`` (or ``level=`` at construction)
keeps only the sub-network up to ``X^{0,level}`` — nodes with ``i + j <= level``, the backbone
levels it reads and heads 1..level — and deletes the rest, so the pruned model computes exactly the
full model's head-``level`` output and exported graphs carry no unused layer.

``unetpp`` uses the paper's own backbone (double 3x3 convs and 2x2 max pooling, filters 32, 64,
128, 256, 512); ``unetpp_<encoder>`` reads the encoder registry's ``out_channels`` and
``reductions`` as segmentation_models.pytorch does, with ``X^{i,j}`` as wide as encoder stage ``i``
(smp instead uses fixed decoder widths 256..16 and an extra full-resolution block; here the
finest logits are at the encoder's first reduction and are upsampled bilinearly).

Deviations: ``H`` is conv-BN-ReLU (as segmentation_models.pytorch's UNet++ decoder) instead of the
DLMIA Keras code's conv(+bias)-ReLU with dropout 0.5, for training stability without tuning
dropout and so that export folds every BN; the convs before BN are bias-free. The published
9.04M parameters (Table 1, 1 class, deep supervision) is the Keras network's count; ours has
9,045,924 trainable parameters (per channel, BN's scale and shift replace the conv's bias) and,
once batch norm is folded for deployment, exactly the Keras count, 9,042,276.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import center_fit, init_weights, resize_to
from .registry import register_model
from .unet import DoubleConv

PAPER_WIDTHS = (32, 64, 128, 256, 512)


class NestedUNetBackbone(Encoder):
    """The paper's backbone: ``X^{0,0}`` = double conv on the image, ``X^{i,0}`` = double conv on
    the 2x2-max-pooled ``X^{i-1,0}`` (reductions 1, 2, 4, 8, 16). ``truncate(n)`` keeps ``n`` levels."""

    def __init__(self, widths: tuple[int, ...] = PAPER_WIDTHS, in_channels: int = 3):
        super().__init__()
        cins = (in_channels,) + tuple(widths[:-1])
        self.stages = nn.ModuleList(DoubleConv(cin, w) for cin, w in zip(cins, widths))
        self.out_channels = tuple(widths)
        self.reductions = tuple(2**i for i in range(len(widths)))

    def truncate(self, levels: int) -> None:
        del self.stages[levels:]
        self.out_channels, self.reductions = self.out_channels[:levels], self.reductions[:levels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2, 2))
            feats.append(x)
        return feats


def _key(i: int, j: int) -> str:
    return f"x{i}_{j}"


class UNetPlusPlus(SemanticModel):
    """Backbone levels ``X^{i,0}`` -> nested skip pathways ``X^{i,j}`` -> 1x1 heads on ``X^{0,j}``.

    ``widths[i]``: channels of ``X^{i,j>0}`` (default: the encoder's, level by level).
    ``deep_supervision``: one head per ``X^{0,j}`` (else a single head on ``X^{0,depth}``).
    ``level``: build only the sub-network up to ``X^{0,level}`` (default: all of it)."""

    def __init__(self, encoder: Encoder, num_classes: int, widths: tuple[int, ...] | None = None,
                 deep_supervision: bool = True, level: int | None = None):
        super().__init__(num_classes)
        self.encoder = encoder
        self.depth = len(encoder.out_channels) - 1
        feats = encoder.out_channels
        widths = tuple(widths) if widths is not None else feats[:-1]
        if len(widths) != self.depth:
            raise ModelError(f"UNet++ needs {self.depth} decoder widths for {len(feats)} encoder levels, got {widths}")
        self.deep_supervision = bool(deep_supervision)
        self.level = self.depth
        self.ups, self.nodes = nn.ModuleDict(), nn.ModuleDict()
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                below = feats[i + 1] if j == 1 else widths[i + 1]
                self.ups[_key(i, j)] = nn.ConvTranspose2d(below, widths[i], 2, stride=2)
                self.nodes[_key(i, j)] = DoubleConv(feats[i] + j * widths[i], widths[i])
        n_heads = self.depth if self.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], num_classes, 1) for _ in range(n_heads))
        init_weights(self.nodes, self.heads)
        if level is not None:
            self.prune(level)

    @property
    def aux_weight(self) -> float:
        """The trainer's weight of the mean auxiliary loss: ``level - 1`` makes every head count once."""
        return float(self.level - 1) if self.deep_supervision else 0.0

    def prune(self, level: int) -> "UNetPlusPlus":
        """Keep only the sub-network up to ``X^{0,level}`` (1..current level); returns ``self``. The
        paper's backbone loses its deeper stages; a registry encoder keeps them in the module (the
        encoder contract has no truncation), but they are dead code that exports drop."""
        if not 1 <= level <= self.level:
            raise ModelError(f"UNet++ can be pruned to a level in 1..{self.level}, got {level}")
        if level < self.depth and not self.deep_supervision:
            raise ModelError(f"UNet++ without deep supervision has no head at level {level}",
                             fix="build it with deep_supervision=True to prune it")
        for name in [k for k in self.nodes if sum(map(int, k[1:].split("_"))) > level]:
            del self.nodes[name], self.ups[name]
        if self.deep_supervision:
            del self.heads[level:]
        if isinstance(self.encoder, NestedUNetBackbone):
            self.encoder.truncate(level + 1)
        self.level = level
        if getattr(self, "model_kwargs", None) is not None:  # what create_model rebuilds it with (checkpoints)
            self.model_kwargs = {**self.model_kwargs, "level": level}
        return self

    def _head(self, j: int) -> nn.Conv2d:
        return self.heads[j - 1] if self.deep_supervision else self.heads[0]

    def _top_row(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[X^{0,1}, ..., X^{0,level}]``, computing only nodes with ``i + j <= level``."""
        levels = self.level
        columns = [[f] for f in self.encoder(images)[: levels + 1]]  # columns[i] = [X^{i,0}, X^{i,1}, ...]
        for j in range(1, levels + 1):
            for i in range(levels + 1 - j):
                up = center_fit(self.ups[_key(i, j)](columns[i + 1][j - 1]), columns[i][0].shape[-2:])
                columns[i].append(self.nodes[_key(i, j)](torch.cat([*columns[i], up], dim=1)))
        return columns[0][1:]

    def forward_heads(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the heads on ``X^{0,1..level}`` (only the last without deep supervision), at
        the resolution of ``X^{0,0}``: the paper's "accurate mode" averages these."""
        row = self._top_row(images)
        if not self.deep_supervision:
            return [self._head(self.level)(row[-1])]
        return [self._head(j)(x) for j, x in enumerate(row, start=1)]

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._head(self.level)(self._top_row(images)[-1])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if not self.training:
            return super().forward(images)
        *aux, logits = self.forward_heads(images)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {"logits": resize_to(logits, images.shape[-2:])}
        if aux:
            out["aux_logits"] = aux
        return out


def _unetpp_encoder(encoder: str, num_classes: int, widths: tuple[int, ...] | None = None,
                    deep_supervision: bool = True, level: int | None = None, **kw) -> UNetPlusPlus:
    return UNetPlusPlus(create_encoder(encoder, **kw), num_classes, widths, deep_supervision, level)


def _unetpp_paper(widths: tuple[int, ...], num_classes: int, deep_supervision: bool = True,
                  level: int | None = None, in_channels: int = 3) -> UNetPlusPlus:
    backbone = NestedUNetBackbone(widths, in_channels)
    init_weights(backbone)
    return UNetPlusPlus(backbone, num_classes, None, deep_supervision, level)


@register_model(arch="unetpp", encoder="unetpp")
def unetpp(num_classes: int = 1, **kw) -> UNetPlusPlus:
    """UNet++ with the paper's backbone (32..512 filters) and deep supervision (9.04M folded)."""
    return _unetpp_paper(PAPER_WIDTHS, num_classes, **kw)


@register_model(arch="unetpp", encoder="resnet18")
def unetpp_resnet18(num_classes: int = 21, **kw) -> UNetPlusPlus:
    """UNet++ on ResNet-18 (nested pathways as wide as the encoder stages: 64, 64, 128, 256)."""
    return _unetpp_encoder("resnet18", num_classes, **kw)


@register_model(arch="unetpp", encoder="unetpp")
def test_unetpp(num_classes: int = 5, **kw) -> UNetPlusPlus:
    """Tiny UNet++ (paper backbone, 4..16 filters) for tests."""
    return _unetpp_paper((4, 4, 8, 8, 16), num_classes, **kw)


@register_model(arch="unetpp", encoder="test_resnet")
def test_unetpp_resnet(num_classes: int = 5, **kw) -> UNetPlusPlus:
    """Tiny UNet++ on a basic-block ResNet for tests."""
    return _unetpp_encoder("test_resnet", num_classes, **kw)
