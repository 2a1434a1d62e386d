"""SETR — Zheng, Lu, Zhao, Zhu, Luo, Wang, Fu, Feng, Xiang, Torr & Zhang, "Rethinking Semantic
Segmentation from a Sequence-to-Sequence Perspective with Transformers" (CVPR 2021).

A plain ViT (:mod:`.vit`, stride 16, no downsampling) encodes the image as a sequence of patch
tokens; the class token is dropped and the tokens of selected blocks are reshaped to
``[N, C, H/16, W/16]`` maps, each LayerNorm-ed over channels, for one of three decoders:

* **Naive** (:class:`NaiveHead`): 1x1 conv-BN-ReLU, 1x1 conv to the classes, bilinear x16.
* **PUP**, progressive upsampling (:class:`PUPHead`): four times a 3x3 conv-BN-ReLU followed by a 2x
  bilinear upsampling, then a 1x1 classifier at full resolution.
* **MLA**, multi-level feature aggregation (:class:`MLAHead`): four streams from evenly spaced blocks
  (3/6/9/12 of a 12-layer ViT; 6/12/18/24 of ViT-L), each a 1x1 conv-BN-ReLU, a top-down
  aggregation (each stream adds the deeper one's output), a 3x3 conv-BN-ReLU, then two 3x3
  conv-BN-ReLU at half the width and a 4x bilinear upsampling; the streams are concatenated,
  classified by a 1x1 conv and upsampled 4x.

Deep supervision as in the paper: in training mode the model also returns ``aux_logits`` from the
blocks at 10/24, 15/24 and 20/24 of the depth (Naive; PUP adds the last block; MLA uses its four
streams' blocks), each through a Naive-style head; the trainer weights them by ``aux_weight`` (0.4,
the released configs' weight). Eval mode returns only ``logits``.

Inputs that are not multiples of 16 (75x101, 480x360) are **zero-padded** at the bottom and right
to the next multiple of 16 inside :meth:`SETR.forward_logits` (zero is the mean colour after the
input normalisation), and the full-resolution logits are **cropped** back: no resampling of the
image, and the exported graph is a static Pad and Slice.

Deviations: widths follow the authors' released code where the paper gives none (256 decoder
channels; MLA: 256 after the 1x1 and 128 in the two 3x3 convs of each stream, which the paper
describes as halving); the paper's ViT-L backbone is replaced by ViT-S/B/Ti for edge devices
(MLA taps scale to the depth); dropout is omitted.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SemanticModel
from .layers import ConvBNAct, init_weights, resize_to
from .registry import register_model
from .vit import VIT_CONFIGS, LayerNorm2d, VisionTransformer, zero_pad


def scale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling by an integer ``factor`` to an explicit (static) size."""
    return resize_to(x, (int(x.shape[-2]) * factor, int(x.shape[-1]) * factor))


class NaiveHead(nn.Module):
    """SETR-Naive: LN -> 1x1 conv-BN-ReLU -> 1x1 conv (classes), at 1/16 (upsampled by the model)."""

    def __init__(self, cin: int, num_classes: int, channels: int = 256, decomposed_norm: bool = False):
        super().__init__()
        self.norm = LayerNorm2d(cin, 1e-6, decomposed_norm)
        self.conv = ConvBNAct(cin, channels, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.conv(self.norm(feats[-1])))


class PUPHead(nn.Module):
    """SETR-PUP: LN, then ``stages`` x (3x3 conv-BN-ReLU, 2x bilinear up), then a 1x1 classifier."""

    def __init__(self, cin: int, num_classes: int, channels: int = 256, stages: int = 4, decomposed_norm: bool = False):
        super().__init__()
        self.norm = LayerNorm2d(cin, 1e-6, decomposed_norm)
        self.convs = nn.ModuleList(ConvBNAct(cin if i == 0 else channels, channels, 3) for i in range(stages))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.norm(feats[-1])
        for conv in self.convs:
            x = scale(conv(x), 2)
        return self.classifier(x)


class MLAHead(nn.Module):
    """SETR-MLA over ``len(feats)`` streams (shallow to deep): LN, 1x1 lateral conv, top-down sum,
    3x3 conv; per stream two 3x3 convs at ``head_channels`` and a 4x upsampling; concatenate,
    classify, (the model upsamples 4x more)."""

    def __init__(self, cin: int, num_classes: int, streams: int = 4, channels: int = 256, head_channels: int = 128,
                 decomposed_norm: bool = False):
        super().__init__()
        self.norms = nn.ModuleList(LayerNorm2d(cin, 1e-6, decomposed_norm) for _ in range(streams))
        self.lateral = nn.ModuleList(ConvBNAct(cin, channels, 1) for _ in range(streams))
        self.smooth = nn.ModuleList(ConvBNAct(channels, channels, 3) for _ in range(streams))
        self.heads = nn.ModuleList(
            nn.Sequential(ConvBNAct(channels, head_channels, 3), ConvBNAct(head_channels, head_channels, 3))
            for _ in range(streams)
        )
        self.classifier = nn.Conv2d(head_channels * streams, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        lateral = [conv(norm(f)) for f, norm, conv in zip(feats, self.norms, self.lateral)]
        for i in range(len(lateral) - 2, -1, -1):  # top-down: the deepest stream flows into the shallower
            lateral[i] = lateral[i] + lateral[i + 1]
        outs = [scale(head(smooth(x)), 4) for x, smooth, head in zip(lateral, self.smooth, self.heads)]
        return self.classifier(torch.cat(outs, dim=1))


class SETR(SemanticModel):
    """A ViT whose ``decoder_taps`` blocks feed ``decoder``; ``upsample`` brings the decoder's
    logits to the padded input size (16 for Naive, 1 for PUP, 4 for MLA). ``aux_taps``: blocks
    with auxiliary Naive heads (training mode only). ``decomposed_norm``: see :mod:`.vit` (TensorRT 8.5)."""

    def __init__(self, vit: str, decoder: nn.Module, decoder_taps: tuple[int, ...], num_classes: int,
                 upsample: int, aux_taps: tuple[int, ...] = (), aux_weight: float = 0.4, aux_channels: int = 256,
                 decomposed_norm: bool = False):
        super().__init__(num_classes)
        taps = tuple(sorted(set(decoder_taps) | set(aux_taps)))
        self.encoder = VisionTransformer(VIT_CONFIGS[vit], out_indices=taps, final_norm=False,
                                         decomposed_norm=decomposed_norm)
        self.patch = self.encoder.cfg.patch_size
        self.decoder_slots = tuple(taps.index(t) for t in decoder_taps)
        self.aux_slots = tuple(taps.index(t) for t in aux_taps)
        self.decoder = decoder
        self.upsample = upsample
        c = self.encoder.cfg.embed_dim
        self.aux_heads = nn.ModuleList(NaiveHead(c, num_classes, aux_channels, decomposed_norm) for _ in aux_taps)
        self.aux_weight = aux_weight
        init_weights(self.decoder, self.aux_heads)

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        h, w = int(images.shape[-2]), int(images.shape[-1])
        ph, pw = -h % self.patch, -w % self.patch
        return zero_pad(images, 0, pw, 0, ph)

    def _full(self, logits: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
        """Upsample by ``factor`` to the padded size, crop the padding off."""
        logits = scale(logits, factor) if factor != 1 else logits
        return logits[:, :, : size[0], : size[1]]

    def _run(self, images: torch.Tensor, aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        feats = self.encoder(self._pad(images))
        logits = self._full(self.decoder([feats[i] for i in self.decoder_slots]), self.upsample, size)
        extra = [self._full(head([feats[i]]), self.patch, size) for i, head in zip(self.aux_slots, self.aux_heads)] if aux else []
        return logits, extra

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images, aux=False)[0]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor] | dict[str, torch.Tensor | list[torch.Tensor]]:
        logits, aux = self._run(images, aux=self.training and len(self.aux_heads) > 0)
        out: dict = {"logits": logits}
        if aux:
            out["aux_logits"] = aux
        return out


def fraction_taps(depth: int, fractions: tuple[int, ...], of: int = 24) -> tuple[int, ...]:
    """0-based indices of the blocks at ``fraction / of`` of ``depth`` (the paper's ViT-L layer
    numbers 10, 15, 20, 24 of 24), rounded half up, without repeats."""
    return tuple(sorted({max(1, (2 * depth * f + of) // (2 * of)) - 1 for f in fractions}))


def setr_naive(vit: str, num_classes: int, channels: int = 256, aux: bool = True, decomposed_norm: bool = False) -> SETR:
    cfg = VIT_CONFIGS[vit]
    head = NaiveHead(cfg.embed_dim, num_classes, channels, decomposed_norm)
    aux_taps = fraction_taps(cfg.depth, (10, 15, 20)) if aux else ()
    return SETR(vit, head, (cfg.depth - 1,), num_classes, 16, aux_taps, aux_channels=channels,
                decomposed_norm=decomposed_norm)


def setr_pup(vit: str, num_classes: int, channels: int = 256, aux: bool = True, decomposed_norm: bool = False) -> SETR:
    cfg = VIT_CONFIGS[vit]
    head = PUPHead(cfg.embed_dim, num_classes, channels, decomposed_norm=decomposed_norm)
    aux_taps = fraction_taps(cfg.depth, (10, 15, 20, 24)) if aux else ()
    return SETR(vit, head, (cfg.depth - 1,), num_classes, 1, aux_taps, aux_channels=channels,
                decomposed_norm=decomposed_norm)


def setr_mla(vit: str, num_classes: int, channels: int = 256, head_channels: int = 128, aux: bool = True,
             decomposed_norm: bool = False) -> SETR:
    cfg = VIT_CONFIGS[vit]
    taps = fraction_taps(cfg.depth, (6, 12, 18, 24))
    head = MLAHead(cfg.embed_dim, num_classes, len(taps), channels, head_channels, decomposed_norm)
    return SETR(vit, head, taps, num_classes, 4, taps if aux else (), aux_channels=channels,
                decomposed_norm=decomposed_norm)


@register_model(arch="setr_naive", encoder="vit_small")
def setr_naive_vit_small(num_classes: int = 21, **kw) -> SETR:
    """SETR-Naive on ViT-S/16."""
    return setr_naive("vit_small", num_classes, **kw)


@register_model(arch="setr_naive", encoder="vit_tiny")
def setr_naive_vit_tiny(num_classes: int = 21, **kw) -> SETR:
    """SETR-Naive on ViT-Ti/16 (DeiT-Tiny size)."""
    return setr_naive("vit_tiny", num_classes, **kw)


@register_model(arch="setr_pup", encoder="vit_small")
def setr_pup_vit_small(num_classes: int = 21, **kw) -> SETR:
    """SETR-PUP (progressive upsampling) on ViT-S/16."""
    return setr_pup("vit_small", num_classes, **kw)


@register_model(arch="setr_pup", encoder="vit_base")
def setr_pup_vit_base(num_classes: int = 21, **kw) -> SETR:
    """SETR-PUP (progressive upsampling) on ViT-B/16."""
    return setr_pup("vit_base", num_classes, **kw)


@register_model(arch="setr_mla", encoder="vit_small")
def setr_mla_vit_small(num_classes: int = 21, **kw) -> SETR:
    """SETR-MLA (multi-level aggregation of blocks 3/6/9/12) on ViT-S/16."""
    return setr_mla("vit_small", num_classes, **kw)


@register_model(arch="setr_naive", encoder="test_vit")
def test_setr_naive(num_classes: int = 5, **kw) -> SETR:
    """Tiny SETR-Naive for tests."""
    return setr_naive("test_vit", num_classes, channels=8, **kw)


@register_model(arch="setr_pup", encoder="test_vit")
def test_setr_pup(num_classes: int = 5, **kw) -> SETR:
    """Tiny SETR-PUP for tests."""
    return setr_pup("test_vit", num_classes, channels=8, **kw)


@register_model(arch="setr_mla", encoder="test_vit")
def test_setr_mla(num_classes: int = 5, **kw) -> SETR:
    """Tiny SETR-MLA for tests."""
    return setr_mla("test_vit", num_classes, channels=8, head_channels=4, **kw)
