"""LinkNet — Chaurasia & Culurciello, "LinkNet: Exploiting Encoder Representations for Efficient
Semantic Segmentation" (VCIP 2017).

A ResNet-18 encoder: the initial block (7x7/2 conv, 3x3/2 max pool) and four encoder blocks. Each
decoder block is 1x1 conv (m -> m/4), 3x3 full (transposed) conv (m/4 -> m/4, upsampling by the
encoder block's stride), 1x1 conv (m/4 -> n), each with BN and ReLU; its output is **added** to the
input of its encoder block (the "link"), so the decoder reuses the encoder's spatial information
at almost no cost. The final block is a 3x3 full conv stride 2 (n0 -> 32, BN, ReLU), a 3x3 conv
(32 -> 32, BN, ReLU) and a 2x2 full conv stride 2 (32 -> classes), back to the input size.

Any encoder fits: block i reads ``out_channels[i]`` (m) at ``reductions[i]`` and adds into the
previous level (n channels), its full conv's stride is the ratio of the two reductions. Level 0 is
the initial block: the encoder's stride-2 feature max-pooled 3x3/2 here (the encoders expose the
stem before its pool) — for ResNet bit-identical to layer1's input; so, as in the authors'
reference implementation (e-lab's PyTorch LinkNet), decoder block 1 mirrors ResNet's stride-1
layer1 with a stride-1 full conv.

Deviations from the paper, and why:

* Sizes the encoder's strides do not divide (75x101): a full conv stride 2 outputs twice its input
  size, one more than the skip when the skip's size is odd; the output is cropped to the skip's
  size (bottom/right: the transposed conv's output pixel 2i sits on input pixel i, as the strided
  convs of the encoder sample them), and the final output to the image size.
* Convolutions followed by BN have no bias (redundant before BN): the reference implementation's
  final-block biases (2 x 32) are absent; see the parameter count in the tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, init_weights, resize_to
from .registry import register_model


class FullConvBNAct(nn.Sequential):
    """``ConvTranspose2d(bias=False)`` k x k, ``stride`` (output ``stride`` x the input) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 2):
        pad = (kernel - 1) // 2
        super().__init__(
            nn.ConvTranspose2d(cin, cout, kernel, stride, pad, output_padding=stride + 2 * pad - kernel, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Sequential):
    """LinkNet's decoder block (Fig. 3 of the paper): 1x1 (m -> m/4), 3x3 full conv (m/4 -> m/4,
    ``stride``), 1x1 (m/4 -> n), each conv-BN-ReLU."""

    def __init__(self, m: int, n: int, stride: int):
        mid = max(m // 4, 1)
        super().__init__(ConvBNAct(m, mid, 1), FullConvBNAct(mid, mid, 3, stride), ConvBNAct(mid, n, 1))


def crop_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """``x`` cut to ``size`` = (height, width) at the bottom/right (a static Slice in ONNX); resized
    if it is smaller (no encoder here produces that)."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if x.shape[-2] < h or x.shape[-1] < w:
        return resize_to(x, (h, w))
    return x[..., :h, :w]


class LinkNet(SemanticModel):
    def __init__(self, encoder: Encoder, num_classes: int, final_channels: int = 32):
        super().__init__(num_classes)
        if len(encoder.out_channels) < 2 or encoder.reductions[0] != 2:
            raise ModelError(f"LinkNet needs an encoder whose first feature is at reduction 2 (the stem), got "
                             f"reductions {encoder.reductions}", fix="use a ResNet or MobileNet encoder")
        self.encoder = encoder
        channels = encoder.out_channels
        levels = (4,) + tuple(encoder.reductions[1:])  # level 0: the initial block (stem + 3x3/2 max pool)
        strides = [levels[i] // levels[i - 1] for i in range(1, len(levels))]
        if any(s not in (1, 2) for s in strides):
            raise ModelError(f"LinkNet's decoder blocks upsample by 1 or 2; encoder reductions {encoder.reductions}")
        # decoder[i] takes level i + 1 (m = channels[i + 1]) to level i (n = channels[i]; level 0 has the stem's)
        self.decoder = nn.ModuleList(DecoderBlock(channels[i + 1], channels[i], s) for i, s in enumerate(strides))
        self.final = nn.Sequential(
            FullConvBNAct(channels[0], final_channels, 3, 2),
            ConvBNAct(final_channels, final_channels, 3),
            nn.ConvTranspose2d(final_channels, num_classes, 2, 2),
        )
        init_weights(self.decoder, self.final)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)
        links = [F.max_pool2d(feats[0], 3, 2, 1)] + list(feats[1:-1])  # the input of each encoder block
        x = feats[-1]
        for block, link in zip(reversed(self.decoder), reversed(links)):
            x = crop_to(block(x), link.shape[-2:]) + link
        return crop_to(self.final(x), images.shape[-2:])


@register_model(arch="linknet", encoder="resnet18")
def linknet_resnet18(num_classes: int = 21, **kw) -> LinkNet:
    """LinkNet on ResNet-18, as in the paper (11.5M parameters)."""
    return LinkNet(create_encoder("resnet18", **kw), num_classes)


@register_model(arch="linknet", encoder="mobilenetv2")
def linknet_mobilenetv2(num_classes: int = 21, **kw) -> LinkNet:
    """LinkNet's decoder on MobileNetV2 (links of 16, 24, 32, 96 channels)."""
    return LinkNet(create_encoder("mobilenetv2", **kw), num_classes)


@register_model(arch="linknet", encoder="test_resnet")
def test_linknet(num_classes: int = 5, **kw) -> LinkNet:
    """Tiny LinkNet for tests (8-channel final block)."""
    return LinkNet(create_encoder("test_resnet", **kw), num_classes, final_channels=8)
