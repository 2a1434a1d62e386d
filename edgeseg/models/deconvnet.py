"""DeconvNet — Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation" (ICCV
2015).

The convolution network is VGG-16 with batch norm after every layer, then fc6 (7x7 conv, 4096) and
fc7 (1x1 conv, 4096). The deconvolution network mirrors it: a 7x7 transposed conv (deconv-fc6,
4096 -> 512), then per stage, deepest first, **max-unpooling** with the switches (the positions of
the maxima) of the matching pooling layer and 3x3 transposed convs ("deconv"), each with BN and
ReLU, mirroring the VGG widths (deconv5-1..3: 512; deconv4-1, 4-2: 512, 4-3: 256; deconv3-1, 3-2:
256, 3-3: 128; deconv2-1: 128, 2-2: 64; deconv1-1, 1-2: 64), and a 1x1 classifier — Table 1 of the
paper.

Deviations from the paper, and why:

* fc6 is a 7x7 conv with padding 3 and deconv-fc6 a 7x7 transposed conv with padding 3, both
  size-preserving. In the paper the 224x224 input makes pool5 7x7, fc6 a *valid* conv to 1x1 and
  deconv-fc6 a valid transposed conv back to 7x7; padding keeps the architecture (and the weights'
  shapes) while accepting any input size.
* Convolutions followed by BN have no bias (a bias before BN is redundant); see the parameter count
  in the tests (251,788,949 for 21 classes, the paper's "252M").
* Unlike edgeseg's SegNet, unpooling uses neither ``MaxPool``'s ``Indices`` output nor ``MaxUnpool``:
  the ONNX-TensorRT parser supports neither (``edgeseg check`` rejects both). The switches are computed
  from the four strided 2x2 phases of the feature map instead (:func:`max_pool_with_switches`:
  Slice, Max, Equal), and unpooling places each value at its switch (Mul, DepthToSpace) — the same
  numbers as ``max_pool2d(return_indices=True)`` + ``max_unpool2d`` wherever a window's maximum
  is clear, which the tests check. Values within :data:`SWITCH_RTOL` (1%) of the maximum count as
  ties, and ties go to the first position in row-major order (PyTorch's rule for exact ties):
  flat image regions make exact ties common (a third of the first pooling's windows on the
  synthetic parity frames), and two runtimes that round a conv differently would otherwise break
  them differently and move values by a pixel (ONNX Runtime vs PyTorch: 0.16 relative logit
  error, against 1e-6 with the tolerance). Odd sizes pool with floor
  (the last row/column is dropped) and unpool back to the exact size with a zero row/column, as
  ``max_unpool2d(output_size=...)`` does; it is concatenated rather than padded, because ONNX's
  version converter cannot take ``Pad`` from opset 18 (what the exporter writes) down to 17
  (TensorRT 8.5). In training, the gradient of an exact tie between non-zero maxima is shared by
  the tied positions (``torch.maximum``) instead of going to the first one; both are subgradients.
  TensorRT FP16/INT8 round more coarsely than 1%, so there a few switches can still differ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .encoders import create_encoder
from .encoders.vgg import VGGEncoder
from .layers import ConvBNAct, init_weights
from .registry import register_model


class DeconvBNAct(nn.Sequential):
    """``ConvTranspose2d(bias=False, stride 1, 'same' padding) -> BatchNorm2d -> ReLU`` (foldable)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__(
            nn.ConvTranspose2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


SWITCH_RTOL = 1e-2  # values this close to a window's maximum (relative) tie with it


def max_pool_with_switches(x: torch.Tensor, rtol: float = SWITCH_RTOL) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2/2 max pooling of ``x [N, C, H, W]`` (floor: an odd last row/column is dropped).

    Returns ``pooled [N, C, H//2, W//2]`` and ``switches float [N, C, 4, H//2, W//2]``: a one-hot
    over the window positions (0, 0), (0, 1), (1, 0), (1, 1) marking where the maximum was; among
    values within ``rtol * |max|`` of it the first in that order (PyTorch's pooling indices pick the
    first of exact ties). Only Slice/Max/Abs/GreaterOrEqual/Cast/Mul/Sub in ONNX.
    """
    h2, w2 = (int(x.shape[-2]) // 2) * 2, (int(x.shape[-1]) // 2) * 2
    phases = [x[..., i:h2:2, j:w2:2] for i in (0, 1) for j in (0, 1)]
    pooled = torch.maximum(torch.maximum(phases[0], phases[1]), torch.maximum(phases[2], phases[3]))
    floor = pooled - rtol * pooled.abs()
    switches, free = [], None
    for phase in phases:
        hit = (phase >= floor).to(x.dtype)
        if free is not None:  # a later position wins only where no earlier one has
            hit = hit * free
        switches.append(hit)
        free = 1.0 - hit if free is None else free - hit
    return pooled, torch.stack(switches, dim=2)


def unpool_with_switches(x: torch.Tensor, switches: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Max-unpooling: ``x [N, C, h, w]`` placed at its ``switches`` (from
    :func:`max_pool_with_switches`) in a zero map of ``size`` = (height, width), like
    ``max_unpool2d(x, indices, 2, 2, output_size=size)``."""
    y = F.pixel_shuffle((switches * x.unsqueeze(2)).flatten(1, 2), 2)  # channel 4c + 2i + j -> (2y+i, 2x+j)
    for dim, want in ((-2, int(size[0])), (-1, int(size[1]))):
        if want > y.shape[dim]:  # the row/column the pooling dropped: zeros (Concat, not Pad: see the docstring)
            shape = list(y.shape)
            shape[dim] = want - shape[dim]
            y = torch.cat([y, y.new_zeros(shape)], dim=dim)
    return y


def _deconv_stage(widths: tuple[int, ...], cout: int) -> nn.Sequential:
    """Mirror of an encoder stage with convs ``widths``: 3x3 deconvs keeping the stage's width, the
    last one mapping to ``cout`` (the previous stage's width; the first stage keeps its own)."""
    c = widths[-1]
    return nn.Sequential(*[DeconvBNAct(c, c) for _ in widths[:-1]], DeconvBNAct(c, cout))


class DeconvNet(SemanticModel):
    index_routed = True  # values travel by pooling switches: parity is judged on arg-max (export.parity)

    def __init__(self, encoder: VGGEncoder, num_classes: int, fc_channels: int = 4096, fc_kernel: int = 7):
        super().__init__(num_classes)
        if not isinstance(encoder, VGGEncoder) or not all(encoder.pool_flags):
            raise ModelError("DeconvNet needs a VGG encoder with output stride 32 (it unpools with the switches of "
                             "VGG's five poolings)", fix="build it with create_encoder('vgg16_bn') (output_stride=32)")
        self.encoder = encoder
        cfg = encoder.cfg
        top = cfg[-1][-1]
        self.fc = nn.Sequential(ConvBNAct(top, fc_channels, fc_kernel), ConvBNAct(fc_channels, fc_channels, 1))
        self.deconv_fc6 = DeconvBNAct(fc_channels, top, fc_kernel)
        self.decoder = nn.ModuleList(
            _deconv_stage(cfg[i], cfg[max(i - 1, 0)][-1]) for i in reversed(range(len(cfg)))
        )
        self.classifier = nn.Conv2d(cfg[0][-1], num_classes, 1)
        init_weights(self.fc, self.classifier)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        x, pools = images, []
        for stage in self.encoder.stages:
            x = stage(x)
            size = x.shape[-2:]
            x, switches = max_pool_with_switches(x)
            pools.append((switches, size))
        x = self.deconv_fc6(self.fc(x))
        for stage in self.decoder:
            switches, size = pools.pop()
            x = stage(unpool_with_switches(x, switches, size))
        return self.classifier(x)


@register_model(arch="deconvnet", encoder="vgg16_bn")
def deconvnet_vgg16(num_classes: int = 21, **kw) -> DeconvNet:
    """DeconvNet (VGG-16-BN, fc6/fc7 as 7x7/1x1 convs, mirrored deconvolution network)."""
    return DeconvNet(create_encoder("vgg16_bn", **kw), num_classes)


@register_model(arch="deconvnet", encoder="test_vgg_bn")
def test_deconvnet(num_classes: int = 5, **kw) -> DeconvNet:
    """Tiny DeconvNet for tests (32-channel fc6/fc7)."""
    return DeconvNet(create_encoder("test_vgg_bn", **kw), num_classes, fc_channels=32)
