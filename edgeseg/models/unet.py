"""U-Net — Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation" (MICCAI 2015).

Contracting path of double 3x3 conv blocks (here conv-BN-ReLU, 'same' padding) with 2x2 max
pooling, doubling channels (64 ... 1024); expanding path of 2x2 transposed-conv "up-convolutions"
halving channels, **concatenation** with the cropped-to-size skip, and a double conv; a final 1x1
conv maps to classes. With 'same' padding the only size fix needed is when a side is not divisible
by 2**depth: the up-sampled map is zero-padded by the (static) missing pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SemanticModel
from .layers import ConvBNAct, init_weights
from .registry import register_model


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(ConvBNAct(cin, cout, 3), ConvBNAct(cout, cout, 3))


class Up(nn.Module):
    """2x2 up-conv (halves channels) -> pad to the skip's size -> concat(skip, up) -> double conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = DoubleConv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = int(skip.shape[-2] - x.shape[-2]), int(skip.shape[-1] - x.shape[-1])
        if dh or dw:
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(SemanticModel):
    def __init__(self, num_classes: int, base: int = 64, depth: int = 4, in_channels: int = 3):
        super().__init__(num_classes)
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, widths[0])])
        self.down.extend(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        init_weights(self)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        skips = []
        x = images
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2, 2))
            skips.append(x)
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)


@register_model(arch="unet", encoder="unet")
def unet(num_classes: int = 2, **kw) -> UNet:
    """U-Net as in the paper (64..1024 channels, 4 poolings), with BN."""
    return UNet(num_classes, **kw)


@register_model(arch="unet", encoder="unet")
def unet_small(num_classes: int = 2, **kw) -> UNet:
    """U-Net with 16..256 channels: the same network, 16x fewer parameters, for edge devices."""
    return UNet(num_classes, base=16, **kw)


@register_model(arch="unet", encoder="unet")
def test_unet(num_classes: int = 5, **kw) -> UNet:
    """Tiny U-Net for tests."""
    return UNet(num_classes, base=4, depth=3, **kw)
