"""SegNet — Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation" (TPAMI 2017).

The encoder is VGG-16's 13 convs with batch norm; each stage ends with 2x2 max pooling that keeps
its **indices**. The decoder mirrors it: each stage **max-unpools** with the indices of its encoder
stage (to the exact pre-pooling size, so odd sizes work), then applies conv-BN-ReLU blocks, the
last of which reduces channels to the next stage's; a final 3x3 conv predicts classes (no BN/ReLU).
Pooling with indices exports to ONNX ``MaxPool`` with its indices output; unpooling to a scatter of
the pooled values (checked against ONNX Runtime in the tests).

TensorRT parses neither ``MaxPool``'s indices nor ``MaxUnpool``: ``unpool="switches"`` (``edgeseg export
--unpool switches``) pools and unpools as DeconvNet does (:func:`~edgeseg.models.deconvnet.max_pool_with_switches`:
Slice, Max, Equal, DepthToSpace) with the same weights. Unlike DeconvNet's, its ties are exact (``rtol=0``), the
first position winning as in PyTorch's indices: in PyTorch the two forms give the same numbers (the tests), so a
SegNet trained with indices exports as switches unchanged. A runtime that rounds a conv differently can still move a
near-tie's value by a pixel, as it can with indices: parity is judged on the labels (``index_routed``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .deconvnet import max_pool_with_switches, unpool_with_switches
from .encoders import create_encoder
from .encoders.vgg import VGGEncoder
from .layers import ConvBNAct, init_weights
from .registry import register_model


def _decoder_stage(widths: tuple[int, ...], cout: int | None) -> nn.Sequential:
    """Mirror of an encoder stage with convs ``widths``: keep channels, the last conv maps to
    ``cout``; the first stage (cout None) leaves its last conv to the classifier."""
    c = widths[-1]
    layers = [ConvBNAct(c, c, 3) for _ in widths[:-1]]
    if cout is not None:
        layers.append(ConvBNAct(c, cout, 3))
    return nn.Sequential(*layers)


class SegNet(SemanticModel):
    index_routed = True  # values travel by pooling indices: parity is judged on arg-max (export.parity)

    #: how values travel back up: "indices" (MaxPool's indices output + MaxUnpool; ONNX Runtime, OpenVINO) or
    #: "switches" (index-free, for TensorRT; built so by ``edgeseg export --unpool switches``)
    UNPOOL = ("indices", "switches")

    def __init__(self, encoder: VGGEncoder, num_classes: int, unpool: str = "indices"):
        super().__init__(num_classes)
        if unpool not in self.UNPOOL:
            raise ModelError(f"SegNet unpool must be one of {', '.join(self.UNPOOL)}, got {unpool!r}")
        self.unpool = unpool
        if not isinstance(encoder, VGGEncoder) or not all(encoder.pool_flags):
            raise ModelError("SegNet needs a VGG encoder with output stride 32 (it unpools with VGG's pooling indices)",
                             fix="build it with create_encoder('vgg16_bn') (output_stride=32)")
        self.encoder = encoder
        cfg = encoder.cfg
        self.decoder = nn.ModuleList(
            _decoder_stage(cfg[i], cfg[i - 1][-1] if i > 0 else None) for i in reversed(range(len(cfg)))
        )
        self.classifier = nn.Conv2d(cfg[0][-1], num_classes, 3, padding=1)
        init_weights(self.decoder, self.classifier)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        switches = self.unpool == "switches"
        x, pools = images, []
        for stage in self.encoder.stages:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = max_pool_with_switches(x, rtol=0.0) if switches else F.max_pool2d(x, 2, 2, return_indices=True)
            pools.append((idx, size))
        for stage in self.decoder:
            idx, size = pools.pop()
            x = stage(unpool_with_switches(x, idx, size) if switches else F.max_unpool2d(x, idx, 2, 2, output_size=size))
        return self.classifier(x)


@register_model(arch="segnet", encoder="vgg16_bn")
def segnet_vgg16(num_classes: int = 12, unpool: str = "indices", **kw) -> SegNet:
    """SegNet (VGG-16-BN encoder, mirrored decoder, max-unpooling with indices)."""
    return SegNet(create_encoder("vgg16_bn", **kw), num_classes, unpool=unpool)


@register_model(arch="segnet", encoder="test_vgg_bn")
def test_segnet(num_classes: int = 5, unpool: str = "indices", **kw) -> SegNet:
    """Tiny SegNet for tests."""
    return SegNet(create_encoder("test_vgg_bn", **kw), num_classes, unpool=unpool)
