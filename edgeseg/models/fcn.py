"""FCN-32s / FCN-16s / FCN-8s — Long, Shelhamer & Darrell, "Fully Convolutional Networks for
Semantic Segmentation" (CVPR 2015).

VGG-16's fully connected layers become convolutions (fc6: 7x7, fc7: 1x1, 4096 channels), a 1x1
``score_fr`` predicts classes at stride 32. FCN-16s adds a 1x1 score of pool4 to the 2x-upsampled
stride-32 scores (element-wise **add**), FCN-8s does the same again with pool3. Intermediate 2x
upsampling is a transposed convolution initialised to bilinear and learned; the final upsampling is
fixed bilinear interpolation, as in the paper. Instead of the paper's 100-pixel input padding and
crops, convs are 'same'-padded and an upsampled map that is off by one pixel at sizes the stride
does not divide is resized to its skip's size, so every input size exports.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import bilinear_kernel, init_weights, resize_to
from .registry import register_model


class Upsample2x(nn.ConvTranspose2d):
    """Learnable 2x upsampling (k=4, s=2, p=1), initialised to bilinear, per class (no bias)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            k = bilinear_kernel(channels, 4)
            for c in range(channels):
                self.weight[c, c] = k[c, 0]


class FCN(SemanticModel):
    """``skips``: 0 for FCN-32s, 1 for FCN-16s (pool4), 2 for FCN-8s (pool4 and pool3)."""

    def __init__(self, encoder: Encoder, num_classes: int, skips: int = 2, fc_channels: int = 4096, dropout: float = 0.5,
                 fc_kernel: int = 7):
        super().__init__(num_classes)
        self.encoder = encoder
        self.skips = skips
        c = encoder.out_channels
        self.fc = nn.Sequential(
            nn.Conv2d(c[-1], fc_channels, fc_kernel, padding=fc_kernel // 2), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        )
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        # skip i scores encoder stage -2 - i (pool4, then pool3)
        self.score_pool = nn.ModuleList(nn.Conv2d(c[-2 - i], num_classes, 1) for i in range(skips))
        self.upscore = nn.ModuleList(Upsample2x(num_classes) for _ in range(skips))
        init_weights(self.fc, self.score_fr)
        for conv in self.score_pool:  # the paper zero-initialises the skip scores
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)
        score = self.score_fr(self.fc(feats[-1]))
        for i in range(self.skips):
            skip = self.score_pool[i](feats[-2 - i])
            score = resize_to(self.upscore[i](score), skip.shape[-2:]) + skip
        return score


def _fcn(skips: int, encoder: str, num_classes: int, fc_channels: int = 4096, fc_kernel: int = 7, dropout: float = 0.5,
         **kw) -> FCN:
    return FCN(create_encoder(encoder, **kw), num_classes, skips=skips, fc_channels=fc_channels, fc_kernel=fc_kernel,
               dropout=dropout)


@register_model(arch="fcn32s", encoder="vgg16")
def fcn32s_vgg16(num_classes: int = 21, **kw) -> FCN:
    """FCN-32s on VGG-16."""
    return _fcn(0, "vgg16", num_classes, **kw)


@register_model(arch="fcn16s", encoder="vgg16")
def fcn16s_vgg16(num_classes: int = 21, **kw) -> FCN:
    """FCN-16s on VGG-16 (pool4 skip)."""
    return _fcn(1, "vgg16", num_classes, **kw)


@register_model(arch="fcn8s", encoder="vgg16")
def fcn8s_vgg16(num_classes: int = 21, **kw) -> FCN:
    """FCN-8s on VGG-16 (pool4 and pool3 skips)."""
    return _fcn(2, "vgg16", num_classes, **kw)


@register_model(arch="fcn8s", encoder="mobilenetv2")
def fcn8s_mobilenetv2(num_classes: int = 21, **kw) -> FCN:
    """FCN-8s on MobileNetV2 (the edge-sized FCN-8s: fc6 3x3 and fc7 1x1 with 512 channels on the
    320-channel stride-32 features; skips from the stride-16 and stride-8 stages, as on VGG-16)."""
    kw.setdefault("fc_channels", 512)
    kw.setdefault("fc_kernel", 3)
    kw.setdefault("dropout", 0.1)
    return _fcn(2, "mobilenetv2", num_classes, **kw)


@register_model(arch="fcn32s", encoder="test_vgg")
def test_fcn32s(num_classes: int = 5, **kw) -> FCN:
    """Tiny FCN-32s for tests."""
    return _fcn(0, "test_vgg", num_classes, fc_channels=16, **kw)


@register_model(arch="fcn16s", encoder="test_vgg")
def test_fcn16s(num_classes: int = 5, **kw) -> FCN:
    """Tiny FCN-16s for tests."""
    return _fcn(1, "test_vgg", num_classes, fc_channels=16, **kw)


@register_model(arch="fcn8s", encoder="test_vgg")
def test_fcn8s(num_classes: int = 5, **kw) -> FCN:
    """Tiny FCN-8s for tests."""
    return _fcn(2, "test_vgg", num_classes, fc_channels=16, **kw)


@register_model(arch="fcn8s", encoder="test_mobilenetv2")
def test_fcn8s_mobilenetv2(num_classes: int = 5, **kw) -> FCN:
    """Tiny FCN-8s with the edge head (fc6 3x3) of ``fcn8s_mobilenetv2``, for tests."""
    return _fcn(2, "test_mobilenetv2", num_classes, fc_channels=16, fc_kernel=3, dropout=0.1, **kw)
