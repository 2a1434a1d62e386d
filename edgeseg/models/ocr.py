"""OCR — Yuan, Chen & Wang, "Object-Contextual Representations for Semantic Segmentation"
(ECCV 2020).

Following the paper's ResNet setup (and the authors' ``SpatialOCRNet`` in openseg.pytorch):

1. **Soft object regions**: an auxiliary head (3x3 conv-BN-ReLU 512, dropout 0.05, 1x1 conv) on the
   penultimate encoder stage ("stage 3 of ResNet-101") predicts ``K`` class maps ``M``.
2. **Pixel representations**: a 3x3 conv-BN-ReLU reduces the deepest stage to ``C`` = 512 channels.
3. **Object region representations**: ``f_k = sum_i softmax_i(M_k)_i x_i`` — each region is the
   spatially-softmax-weighted sum of the pixel features (:func:`gather_regions`).
4. **Pixel-region relation**: queries ``phi(x_i)`` and keys ``psi(f_k)`` (each two 1x1 conv-BN-ReLU,
   ``C -> 256 -> 256``), ``w_ik = softmax_k(phi(x_i) . psi(f_k) / sqrt(256))``.
5. **Object contextual representation**: ``y_i = rho(sum_k w_ik delta(f_k))`` (``delta``: 1x1
   conv-BN-ReLU ``C -> 256``, ``rho``: ``256 -> C``), concatenated with ``x_i``, fused by a 1x1
   conv-BN-ReLU (``2C -> C``, dropout 0.05) and classified by a 1x1 conv.

In training mode the auxiliary logits come back as ``aux_logits`` (the paper weights that loss
by 0.4, the trainer's default ``aux_weight``); in eval mode and in exports only ``{"logits"}``.
The soft regions use the deepest stage (not HRNet's concatenation of four resolutions: our
encoders are single-path), and the auxiliary logits are resized to the deepest stage when the
two stages differ in resolution (output stride 32); at output stride 8 they coincide.

Deviations: the 3x3 convs before batch norm are bias-free (the reference's carry a redundant
bias). The smaller encoders use narrower heads (``channels``/``key_channels`` below).

Export and INT8: the region gather is ``Softmax`` over the flattened ``H*W`` axis then a MatMul
``[K, HW] x [HW, C]``; the relation is ``MatMul -> Mul(key_channels^-1/2) -> Softmax -> MatMul``
with ``K`` keys — all fixed-shape ops that TensorRT 8.5 and 10 parse. The ``tensorrt`` INT8 profile puts Q/DQ
on the inputs of the three MatMuls (activation x activation, per-tensor) and of every Conv; the
soft-region probabilities and attention weights lie in [0, 1], which per-tensor INT8 represents
with a step of about 1/127.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import attend
from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, init_weights, resize_to
from .registry import register_model


def gather_regions(features: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
    """Object region representations: features ``[N, C, H, W]``, region logits ``[N, K, H, W]``
    -> ``[N, K, C]``, row ``k`` being ``sum_i softmax_i(logits_k)_i * features[:, :, i]``."""
    weights = torch.softmax(region_logits.flatten(2), dim=-1)  # [N, K, HW], softmax over positions
    return torch.matmul(weights, features.flatten(2).transpose(1, 2))


class ObjectContext(nn.Module):
    """Pixel-region relation and object contextual representation (the paper's ``phi``, ``psi``,
    ``delta``, ``rho``): pixels ``[N, C, H, W]`` and regions ``[N, K, C]`` -> ``[N, C, H, W]``."""

    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.pixel = nn.Sequential(ConvBNAct(channels, key_channels, 1), ConvBNAct(key_channels, key_channels, 1))
        self.object = nn.Sequential(ConvBNAct(channels, key_channels, 1), ConvBNAct(key_channels, key_channels, 1))
        self.down = ConvBNAct(channels, key_channels, 1)
        self.up = ConvBNAct(key_channels, channels, 1)

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        proxy = regions.transpose(1, 2).unsqueeze(-1)  # [N, C, K, 1]: regions as a 1-wide image
        query = self.pixel(pixels).flatten(2).transpose(1, 2)  # [N, HW, Ck]
        key = self.object(proxy).flatten(2)  # [N, Ck, K]
        value = self.down(proxy).flatten(2).transpose(1, 2)  # [N, K, Ck]
        context = attend(query, key, value, scale=self.key_channels ** -0.5)  # [N, HW, Ck]
        n, _, h, w = pixels.shape
        return self.up(context.transpose(1, 2).reshape(n, self.key_channels, h, w))


class OCRNet(SemanticModel):
    """Encoder -> soft regions (aux head on stage -2) + pixel features (stage -1) -> OCR -> classes."""

    aux_weight = 0.4  # the paper's weight of the soft-region (auxiliary) loss

    def __init__(self, encoder: Encoder, num_classes: int, channels: int = 512, key_channels: int = 256,
                 dropout: float = 0.05):
        super().__init__(num_classes)
        self.encoder = encoder
        c = encoder.out_channels
        self.aux_head = nn.Sequential(ConvBNAct(c[-2], channels, 3), nn.Dropout2d(dropout),
                                      nn.Conv2d(channels, num_classes, 1))
        self.pixels = ConvBNAct(c[-1], channels, 3)
        self.context = ObjectContext(channels, key_channels)
        self.fuse = nn.Sequential(ConvBNAct(2 * channels, channels, 1), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_weights(self.aux_head, self.pixels, self.context, self.fuse, self.classifier)

    def _logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encoder(images)
        pixels = self.pixels(feats[-1])
        aux = resize_to(self.aux_head(feats[-2]), pixels.shape[-2:])
        context = self.context(pixels, gather_regions(pixels, aux))
        return self.classifier(self.fuse(torch.cat([context, pixels], dim=1))), aux

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._logits(images)[0]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if not self.training:
            return super().forward(images)
        logits, aux = self._logits(images)
        return {"logits": resize_to(logits, images.shape[-2:]), "aux_logits": [aux]}


def _ocr(encoder: str, num_classes: int, output_stride: int = 8, channels: int = 512, key_channels: int = 256,
         dropout: float = 0.05, **kw) -> OCRNet:
    return OCRNet(create_encoder(encoder, output_stride=output_stride, **kw), num_classes, channels, key_channels,
                  dropout)


@register_model(arch="ocr", encoder="resnet50")
def ocr_resnet50(num_classes: int = 21, **kw) -> OCRNet:
    """OCR on dilated ResNet-50 (output stride 8), the paper's 512/256 channels."""
    return _ocr("resnet50", num_classes, **kw)


@register_model(arch="ocr", encoder="resnet18")
def ocr_resnet18(num_classes: int = 21, **kw) -> OCRNet:
    """OCR on dilated ResNet-18 (output stride 8), 256/128 channels."""
    return _ocr("resnet18", num_classes, channels=256, key_channels=128, **kw)


@register_model(arch="ocr", encoder="mobilenetv3_large")
def ocr_mobilenetv3_large(num_classes: int = 21, **kw) -> OCRNet:
    """OCR on dilated MobileNetV3-Large (output stride 8), 256/128 channels; soft regions from
    the stride-16 stage (112 channels), pixels from the last 960-channel conv."""
    return _ocr("mobilenetv3_large", num_classes, channels=256, key_channels=128, **kw)


@register_model(arch="ocr", encoder="test_resnet")
def test_ocr(num_classes: int = 5, **kw) -> OCRNet:
    """Tiny OCR for tests (8 channels, 4 key channels)."""
    return _ocr("test_resnet", num_classes, channels=8, key_channels=4, **kw)
