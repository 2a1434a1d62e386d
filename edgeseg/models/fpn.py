"""FPN for semantic segmentation — the feature pyramid of Lin, Dollár, Girshick, He, Hariharan &
Belongie, "Feature Pyramid Networks for Object Detection" (CVPR 2017), with the semantic branch of
Kirillov, Girshick, He & Dollár, "Panoptic Feature Pyramid Networks" (CVPR 2019).

Pyramid: every encoder stage at reduction 4..32 (C2..C5) gets a 1x1 lateral conv to 256 channels;
top-down, each coarser map is nearest-upsampled to the finer lateral's size and added; a 3x3 conv
on each merged map gives P2..P5. Semantic branch: each level goes through ``log2(stride / 4)``
stages (at least one) of 3x3 conv (128) -> norm -> ReLU -> 2x bilinear upsampling (none for P2),
the four stride-4 maps are summed, a 1x1 conv classifies, and logits are upsampled x4.

Deviations: batch norm instead of the paper's group norm in the semantic branch — the branch is
then a chain of :class:`~edgeseg.models.layers.ConvBNAct` that folds into plain convolutions for
export and INT8 (GN was chosen in the paper for small-batch detection training). Upsampling resizes
to the finer level's exact size instead of a fixed factor 2, so odd input sizes (75x101) work.
The MobileNetV3 variant halves the widths (128 / 64) to stay an edge model.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, FeaturePyramid, init_weights, resize_to
from .registry import register_model


class SemanticBranch(nn.Module):
    """Panoptic FPN's semantic branch: a level of reduction ``r`` runs ``max(1, log2(r / 4))``
    3x3 conv-BN-ReLU stages; on every level but the finest each stage ends with a bilinear resize
    to the next finer level (``targets[i][k]``: the level whose size stage ``k`` of level ``i``
    resizes to). The stride-4 results are summed."""

    def __init__(self, reductions: tuple[int, ...], cin: int, channels: int = 128):
        super().__init__()
        base = reductions[0]
        self.levels = nn.ModuleList()
        self.targets: list[list[int]] = []
        for r in reductions:
            steps = (r // base).bit_length() - 1
            try:
                targets = [reductions.index(r >> (k + 1)) for k in range(steps)]
            except ValueError:
                raise ModelError(
                    f"FPN: encoder reductions {reductions} do not halve level by level down to {base}",
                    fix="build the encoder with output_stride=32 (a plain, non-dilated pyramid)",
                ) from None
            convs = [ConvBNAct(cin if k == 0 else channels, channels, 3) for k in range(max(steps, 1))]
            self.levels.append(nn.ModuleList(convs))
            self.targets.append(targets)
        self.out_channels = channels

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for p, convs, targets in zip(pyramid, self.levels, self.targets):
            for k, conv in enumerate(convs):
                p = conv(p)
                if k < len(targets):
                    p = resize_to(p, pyramid[targets[k]].shape[-2:])
            outs.append(p)
        return sum(outs[1:], outs[0])  # every level at 1/4, summed


class FPN(SemanticModel):
    """Encoder stages at reductions 4, 8, 16, 32 -> :class:`FeaturePyramid` -> :class:`SemanticBranch`
    -> 1x1 classifier (stride 4)."""

    def __init__(self, encoder: Encoder, num_classes: int, channels: int = 256, head_channels: int = 128):
        super().__init__(num_classes)
        if 4 not in encoder.reductions:
            raise ModelError(f"FPN: the encoder has no stride-4 stage (reductions {encoder.reductions})")
        self.encoder = encoder
        self.first = encoder.reductions.index(4)
        self.pyramid = FeaturePyramid(encoder.out_channels[self.first:], channels)
        self.semantic = SemanticBranch(encoder.reductions[self.first:], channels, head_channels)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)
        init_weights(self.pyramid, self.semantic, self.classifier)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)[self.first:]
        return self.classifier(self.semantic(self.pyramid(feats)))


def _fpn(encoder: str, num_classes: int, channels: int = 256, head_channels: int = 128, **kw) -> FPN:
    return FPN(create_encoder(encoder, output_stride=32, **kw), num_classes, channels, head_channels)


@register_model(arch="fpn", encoder="resnet18")
def fpn_resnet18(num_classes: int = 21, **kw) -> FPN:
    """Semantic FPN on ResNet-18 (256-channel pyramid, 128-channel semantic branch)."""
    return _fpn("resnet18", num_classes, **kw)


@register_model(arch="fpn", encoder="resnet50")
def fpn_resnet50(num_classes: int = 21, **kw) -> FPN:
    """Semantic FPN on ResNet-50, as in Panoptic FPN (256 / 128 channels)."""
    return _fpn("resnet50", num_classes, **kw)


@register_model(arch="fpn", encoder="mobilenetv3_large")
def fpn_mobilenetv3_large(num_classes: int = 21, **kw) -> FPN:
    """Semantic FPN on MobileNetV3-Large with halved widths (128-channel pyramid, 64 semantic)."""
    return _fpn("mobilenetv3_large", num_classes, channels=128, head_channels=64, **kw)


@register_model(arch="fpn", encoder="test_resnet")
def test_fpn(num_classes: int = 5, **kw) -> FPN:
    """Tiny semantic FPN for tests."""
    return _fpn("test_resnet", num_classes, channels=8, head_channels=4, **kw)
