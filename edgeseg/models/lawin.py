"""Lawin — Yan, Zhang, Li, Huang & Zhang, "Lawin Transformer: Improving Semantic Segmentation
Transformer with Multi-Scale Representations via Large Window Attention" (arXiv 2201.01615, 2022).

The Lawin head on multi-level features:

1. SegFormer-style MLP decoder: the 1/8, 1/16 and 1/32 features are each linearly projected
   (1x1 conv with bias) to ``embed_dim`` channels, bilinearly resized to 1/8, concatenated and fused
   by a 1x1 conv-BN-ReLU to ``channels``.
2. The **Lawin ASPP** on that 1/8 map: a shortcut (1x1 conv-BN-ReLU), image pooling (global mean,
   1x1 conv-BN-ReLU, broadcast) and three **large window attention** branches with ratios
   R = 8, 4, 2: the map is cut into P x P query windows (P = 8); each window's context is the
   R*P x R*P patch centred on it (zero beyond the border), pooled back to P x P by
   ``(max + mean) / 2`` over R x R cells and LayerNorm-ed; a per-head token-mixing linear layer
   (P^2 -> P^2, "position mixing") is added to the context, then multi-head attention runs
   from the window's pixels (queries) to the pooled context (keys/values) as a non-local block:
   1x1 theta/phi/g to half the channels, ``softmax(q k^T / sqrt(d)) v``, a 1x1 conv-BN back, plus
   the query (residual). The five branches are concatenated and fused by a 1x1 conv-BN-ReLU.
3. The result is upsampled to 1/4, concatenated with the 1/4 feature projected to 48 channels,
   fused by a 1x1 conv-BN-ReLU and classified by a 1x1 conv (after dropout 0.1).

Static shapes for export: the 1/8 map is zero-padded at the bottom/right to a multiple of P and the
branch outputs are cropped back. The context of every window is taken from *one* pooled map: with
the map padded by (R-1)P/2 on each side, the R x R cells of every window's context lie on a single
stride-R grid (P is a multiple of R), so the pooled contexts are P x P crops, at stride P/R, of one
pooled map, gathered with a constant index (ONNX ``Gather``) — exactly what the authors' code
computes with ``unfold`` (which has no ONNX op) followed by pooling. theta is applied to the whole
map before windowing and the output conv after, which is the same as per window (1x1 convs).

Deviations: the paper's MiT (SegFormer) encoder is replaced by edgeseg's registered CNN encoders
(features at reductions 4, 8, 16, 32 from :func:`~edgeseg.models.encoders.create_encoder`), so the
head runs on ResNet/MobileNet backbones; the edge variants use ``channels`` 256 and
``embed_dim`` 256 (the authors use 512/768 on MiT-B2+), with 32/16/4 heads for R = 8/4/2
(the authors' 64/16/4 at 512 channels: 32 keeps their 4 channels per head at 256).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .deeplabv3 import ImagePooling
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, init_weights, resize_to
from .registry import register_model
from .vit import LayerNorm2d, zero_pad

RATIOS = (8, 4, 2)


class GlobalPooling(ImagePooling):
    """DeepLabV3's image pooling (global mean -> 1x1 conv-BN-ReLU -> broadcast) with the mean as
    whole-map ``AveragePool`` (static kernel): it has an INT8 kernel, and it exports at opset 17,
    where a spatial ``ReduceMean`` does not (the exporter's 18 -> 17 conversion asserts on its axes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.avg_pool2d(x, (int(x.shape[-2]), int(x.shape[-1]))))
        return y.expand(-1, -1, int(x.shape[-2]), int(x.shape[-1]))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom/right of ``[N, C, H, W]`` to multiples of ``multiple``."""
    ph, pw = -int(x.shape[-2]) % multiple, -int(x.shape[-1]) % multiple
    return zero_pad(x, 0, pw, 0, ph)


def window_tokens(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[N, C, H, W]`` (H, W multiples of ``window``) -> ``[N * nh * nw, window^2, C]``, windows in
    row-major order, pixels row-major inside each."""
    c, h, w = (int(s) for s in x.shape[1:])  # not the batch: int() on it would bake the export's example into the graph
    x = x.reshape(-1, c, h // window, window, w // window, window).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, window * window, c)


def window_map(tokens: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_tokens`: ``[N * nh * nw, window^2, C]`` -> ``[N, C, H, W]``."""
    c = int(tokens.shape[-1])
    x = tokens.reshape(-1, h // window, w // window, window, window, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(-1, c, h, w)  # -1: the batch, which a --dynamic-batch export keeps symbolic


def context_index(h: int, w: int, window: int, ratio: int, device: torch.device) -> torch.Tensor:
    """Flat indices into the pooled, padded map (width ``(w + (ratio-1)*window) / ratio``) of every
    window's ``window x window`` context crop, ``[nh * nw * window^2]`` in window-major order."""
    step, wp = window // ratio, (w + (ratio - 1) * window) // ratio
    rows = torch.arange(h // window, device=device)[:, None] * step + torch.arange(window, device=device)[None]
    cols = torch.arange(w // window, device=device)[:, None] * step + torch.arange(window, device=device)[None]
    idx = rows[:, None, :, None] * wp + cols[None, :, None, :]  # [nh, nw, window, window]
    return idx.reshape(-1)


class LargeWindowAttention(nn.Module):
    """One Lawin branch at context ratio ``ratio``: ``[N, C, H, W]`` (H, W multiples of ``window``)
    -> ``[N, C, H, W]``, each P x P window attending to its pooled R*P x R*P context."""

    def __init__(self, channels: int, ratio: int, heads: int, window: int = 8, reduction: int = 2,
                 decomposed_norm: bool = False):
        super().__init__()
        inter = channels // reduction
        if window % ratio or channels % heads or inter % heads:
            raise ModelError(f"Lawin: window {window} must be a multiple of the ratio {ratio}, and {channels} "
                             f"and {inter} channels multiples of the {heads} heads",
                             fix="use window 8 with ratios 8/4/2, and head counts that divide channels // 2")
        self.ratio, self.heads, self.window = ratio, heads, window
        self.scale = (inter // heads) ** -0.5
        self.norm = LayerNorm2d(channels, decomposed=decomposed_norm)
        length = window * window
        # one P^2 -> P^2 linear layer per head, over that head's channel group of the context
        self.mix_weight = nn.Parameter(torch.empty(heads, length, length))
        self.mix_bias = nn.Parameter(torch.zeros(heads, 1, length))
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Linear(channels, inter)
        self.g = nn.Linear(channels, inter)
        self.out = ConvBNAct(inter, channels, 1, act="none")
        nn.init.trunc_normal_(self.mix_weight, std=0.02)

    def pooled_context(self, x: torch.Tensor) -> torch.Tensor:
        """``[N * nh * nw, C, P^2]``: every window's zero-padded R*P context, pooled to P x P
        (``(max + mean) / 2`` over R x R cells) and LayerNorm-ed over channels."""
        c, h, w = (int(s) for s in x.shape[1:])
        pad = (self.ratio - 1) * self.window // 2
        xp = zero_pad(x, pad, pad, pad, pad)
        pooled = 0.5 * (F.max_pool2d(xp, self.ratio) + F.avg_pool2d(xp, self.ratio))
        pooled = self.norm(pooled).flatten(2)  # [N, C, Hp * Wp]
        crops = pooled.index_select(2, context_index(h, w, self.window, self.ratio, x.device))
        nwin = (h // self.window) * (w // self.window)
        crops = crops.reshape(-1, c, nwin, self.window ** 2).permute(0, 2, 1, 3)
        return crops.reshape(-1, c, self.window ** 2)

    def position_mixing(self, ctx: torch.Tensor) -> torch.Tensor:
        """``ctx + Linear_head(ctx)`` per head's channel group, mixing the P^2 positions."""
        c, length = (int(s) for s in ctx.shape[1:])
        grouped = ctx.reshape(-1, self.heads, c // self.heads, length)
        mixed = torch.matmul(grouped, self.mix_weight.transpose(1, 2)) + self.mix_bias
        return ctx + mixed.reshape(-1, c, length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        ctx = self.position_mixing(self.pooled_context(x)).transpose(1, 2)  # [B, P^2, C]
        q = window_tokens(self.theta(x), self.window)  # [B, P^2, inter]
        length, inter = int(q.shape[1]), int(q.shape[2])
        d = inter // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, length, self.heads, d).transpose(1, 2)  # [B, heads, P^2, d]

        attn = torch.matmul(split(q) * self.scale, split(self.phi(ctx)).transpose(-2, -1)).softmax(dim=-1)
        y = torch.matmul(attn, split(self.g(ctx))).transpose(1, 2).reshape(-1, length, inter)
        return x + self.out(window_map(y, self.window, h, w))


class LawinASPP(nn.Module):
    """Shortcut, image pooling and one large-window-attention branch per ratio, concatenated and
    fused by a 1x1 conv-BN-ReLU. Pads to a multiple of the window, crops back."""

    def __init__(self, channels: int, window: int = 8, ratios=RATIOS, heads=(64, 16, 4), decomposed_norm: bool = False):
        super().__init__()
        self.window = window
        self.short_path = ConvBNAct(channels, channels, 1)
        self.image_pool = GlobalPooling(channels, channels)
        self.branches = nn.ModuleList(LargeWindowAttention(channels, r, hd, window, decomposed_norm=decomposed_norm)
                                      for r, hd in zip(ratios, heads))
        self.fuse = ConvBNAct(channels * (2 + len(ratios)), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        xp = pad_to_multiple(x, self.window)
        outs = [self.short_path(x), self.image_pool(x)]
        outs += [branch(xp)[:, :, :h, :w] for branch in self.branches]
        return self.fuse(torch.cat(outs, dim=1))


class Lawin(SemanticModel):
    """An encoder with features at reductions 4, 8, 16, 32, and the Lawin head. ``decomposed_norm``:
    the context LayerNorms export without ``LayerNormalization`` (TensorRT 8.5, see :mod:`.vit`)."""

    def __init__(self, encoder: Encoder, num_classes: int, embed_dim: int = 256, channels: int = 256,
                 low_channels: int = 48, window: int = 8, heads=(32, 16, 4), dropout: float = 0.1,
                 decomposed_norm: bool = False):
        super().__init__(num_classes)
        self.encoder = encoder
        self.taps = tuple(encoder.reductions.index(r) for r in (4, 8, 16, 32))
        c1, c2, c3, c4 = (encoder.out_channels[i] for i in self.taps)
        self.proj = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in (c2, c3, c4))
        self.linear_fuse = ConvBNAct(3 * embed_dim, channels, 1)
        self.aspp = LawinASPP(channels, window, RATIOS, heads, decomposed_norm)
        self.low = nn.Conv2d(c1, low_channels, 1)
        self.low_fuse = ConvBNAct(channels + low_channels, channels, 1)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
        init_weights(self.proj, self.linear_fuse, self.aspp, self.low, self.low_fuse, self.classifier)
        for branch in self.aspp.branches:  # non-local blocks start as the identity (zero-init output BN)
            nn.init.zeros_(branch.out[1].weight)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)
        c1, c2, c3, c4 = (feats[i] for i in self.taps)
        size = c2.shape[-2:]
        x = torch.cat([resize_to(p(f), size) for p, f in zip(self.proj, (c2, c3, c4))], dim=1)
        x = self.aspp(self.linear_fuse(x))
        x = torch.cat([resize_to(x, c1.shape[-2:]), self.low(c1)], dim=1)
        return self.classifier(self.low_fuse(x))


def _lawin(encoder: str, num_classes: int, **kw) -> Lawin:
    """Lawin on a registered encoder at output stride 32 (features at 4, 8, 16, 32)."""
    return Lawin(create_encoder(encoder, output_stride=32), num_classes, **kw)


@register_model(arch="lawin", encoder="mobilenetv3_large")
def lawin_mobilenetv3_large(num_classes: int = 21, **kw) -> Lawin:
    """Lawin head (large window attention, P = 8, R = 8/4/2) on MobileNetV3-Large."""
    return _lawin("mobilenetv3_large", num_classes, **kw)


@register_model(arch="lawin", encoder="resnet18")
def lawin_resnet18(num_classes: int = 21, **kw) -> Lawin:
    """Lawin head (large window attention, P = 8, R = 8/4/2) on ResNet-18."""
    return _lawin("resnet18", num_classes, **kw)


@register_model(arch="lawin", encoder="test_resnet")
def test_lawin(num_classes: int = 5, **kw) -> Lawin:
    """Tiny Lawin (P = 8, 16 channels) for tests."""
    return _lawin("test_resnet", num_classes, embed_dim=8, channels=16, low_channels=4, heads=(4, 2, 1), **kw)
