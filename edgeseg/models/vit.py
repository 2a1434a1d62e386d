"""Vision Transformer backbone — Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner,
Dehghani, Minderer, Heigold, Gelly, Uszkoreit & Houlsby, "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale" (ICLR 2021).

Implemented: the patch embedding (a 16x16 stride-16 convolution), an optional class token, learned
position embeddings, and pre-norm transformer blocks ``x + MSA(LN(x))``, ``x + MLP(LN(x))`` with
an exact (erf) GELU in the two-layer MLP (ratio 4) and LayerNorm eps 1e-6 (the released weights').
:class:`VisionTransformer` is an :class:`~edgeseg.models.encoders.Encoder`: it returns the token
grids of selected blocks as ``[N, C, H/16, W/16]`` maps (``reductions`` all 16), class token dropped.

Position embeddings are defined at a base grid (14x14, the 224x224 pre-training size) and resized
bilinearly (``align_corners=False``, as mmsegmentation does for SETR) to the input's token grid.
The input must be a multiple of the patch size (segmentation models pad, see :mod:`.setr`); the
grid is read from the static input shape, so an export traces one size and the resize is a
constant-foldable ``Resize`` of a weight. Attention is written out (``softmax(q k^T) v``, ``q``
scaled by ``d^-1/2`` first) rather than with ``scaled_dot_product_attention``, so the exported graph
is plain MatMul/Softmax that every runtime and INT8 quantizer understands.

TensorRT 8.5 (JetPack 5) parses opset 17 at most and has no ``LayerNormalization``: build with
``decomposed_norm=True`` (the same parameters; a build-time choice, recorded in the checkpoint's
model kwargs) and export with ``opset=17``. TensorRT 8.6+ and 10 take the fused op (default).

Deviations: the classification head is not built (segmentation needs none), and dropout/stochastic
depth are left out (they do not change the exported graph; ``ViTConfig`` has no such fields).
:data:`VIT_CONFIGS` holds ViT-B/16, and the DeiT sizes ViT-S/16 and ViT-Ti/16 (Touvron et al.,
"Training data-efficient image transformers & distillation through attention", ICML 2021).
This module registers no model: SETR (:mod:`.setr`) builds on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .encoders import Encoder


@dataclass(frozen=True)
class ViTConfig:
    """A ViT size: token width, depth, heads; patch size and the grid the position embeddings are
    learned at (224 / patch)."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    mlp_ratio: float = 4.0
    base_grid: int = 14
    class_token: bool = True
    eps: float = 1e-6


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_base": ViTConfig(768, 12, 12),
    "vit_small": ViTConfig(384, 12, 6),
    "vit_tiny": ViTConfig(192, 12, 3),
    "test_vit": ViTConfig(32, 4, 2, base_grid=4),
}


class Attention(nn.Module):
    """Multi-head self-attention over ``[N, L, C]`` tokens: one qkv projection, per-head
    ``softmax(q k^T / sqrt(d)) v``, output projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"ViT: embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, heads, L, d]
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(n, length, c)
        return self.proj(y)


class Mlp(nn.Sequential):
    """Linear -> GELU (erf) -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, decomposed_norm: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps, decomposed_norm)
        self.attn = Attention(dim, num_heads)
        self.norm2 = LayerNorm(dim, eps, decomposed_norm)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def zero_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """``F.pad(x, (left, right, top, bottom))`` with zeros, written as a concatenation with zero
    blocks: the ONNX exporter cannot write ``Pad`` at opset 17 (its version converter has no Pad
    adapter from 18), which TensorRT 8.5 needs; Concat exports at every opset."""
    if left or right:
        n, c, h = x.shape[0], int(x.shape[1]), int(x.shape[2])  # n stays symbolic under a dynamic-batch export
        parts = [x.new_zeros(n, c, h, left)] if left else []
        x = torch.cat(parts + [x] + ([x.new_zeros(n, c, h, right)] if right else []), dim=3)
    if top or bottom:
        n, c, w = x.shape[0], int(x.shape[1]), int(x.shape[3])
        parts = [x.new_zeros(n, c, top, w)] if top else []
        x = torch.cat(parts + [x] + ([x.new_zeros(n, c, bottom, w)] if bottom else []), dim=2)
    return x


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis; with ``decomposed`` it computes the same normalisation
    as ``mean``/``sub``/``mul``/``sqrt``/``div``, so an ONNX export has no ``LayerNormalization``
    node (opset 17+, TensorRT 8.6+): the choice for TensorRT 8.5 (JetPack 5, opset 17). Same
    parameters either way, so checkpoints load into both."""

    def __init__(self, dim: int, eps: float = 1e-5, decomposed: bool = False):
        super().__init__(dim, eps=eps)
        self.decomposed = decomposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.decomposed:
            return super().forward(x)
        d = x - x.mean(-1, keepdim=True)
        return d / torch.sqrt((d * d).mean(-1, keepdim=True) + self.eps) * self.weight + self.bias


class LayerNorm2d(LayerNorm):
    """:class:`LayerNorm` over the channels of an ``[N, C, H, W]`` map (each pixel's C values), as the
    transformer decoders (SETR's per-input norms, Lawin's context norm) apply it to token grids."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class VisionTransformer(Encoder):
    """images ``[N, 3, H, W]`` (H, W multiples of the patch size) -> one ``[N, C, H/p, W/p]`` map per
    block in ``out_indices`` (0-based, ascending). ``final_norm`` applies the ViT's last LayerNorm
    (the encoder output ``LN(z_L)`` of the paper) to the last block's output when it is selected.
    ``decomposed_norm``: LayerNorms that export without ``LayerNormalization`` (TensorRT 8.5)."""

    def __init__(self, cfg: ViTConfig, out_indices: tuple[int, ...] | None = None, final_norm: bool = True,
                 in_channels: int = 3, decomposed_norm: bool = False):
        super().__init__()
        out_indices = tuple(out_indices) if out_indices is not None else (cfg.depth - 1,)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not 0 <= out_indices[0] <= out_indices[-1] < cfg.depth:
            raise ModelError(f"ViT: out_indices must be ascending block indices in [0, {cfg.depth}), got {out_indices}")
        self.cfg = cfg
        self.out_indices = out_indices
        c, p = cfg.embed_dim, cfg.patch_size
        self.patch_embed = nn.Conv2d(in_channels, c, p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c)) if cfg.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, int(cfg.class_token) + cfg.base_grid ** 2, c))
        self.blocks = nn.ModuleList(Block(c, cfg.num_heads, cfg.mlp_ratio, cfg.eps, decomposed_norm)
                                    for _ in range(out_indices[-1] + 1))
        self.norm = LayerNorm(c, cfg.eps, decomposed_norm) if final_norm and out_indices[-1] == cfg.depth - 1 else nn.Identity()
        self.out_channels = (c,) * len(out_indices)
        self.reductions = (p,) * len(out_indices)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's ViT init: truncated normal (std 0.02) for embeddings and linear weights, zero biases,
        the patch embedding like a linear layer (fan-in uniform, PyTorch's default)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[1, grid_h * grid_w, C]``: the base-grid embeddings resized bilinearly to ``grid``."""
        g, c = self.cfg.base_grid, self.cfg.embed_dim
        pos = self.pos_embed[:, int(self.cfg.class_token):]
        if grid == (g, g):
            return pos
        pos = pos.reshape(1, g, g, c).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=grid, mode="bilinear", align_corners=False)
        return pos.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p = self.cfg.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ModelError(f"ViT: input {tuple(x.shape[-2:])} is not a multiple of the patch size {p}",
                             fix="pad the images to a multiple of the patch size (SETR does)")
        x = self.patch_embed(x)
        gh, gw = int(x.shape[-2]), int(x.shape[-1])  # not the batch: int() would bake the export's example into the graph
        x = x.flatten(2).transpose(1, 2) + self.position_embedding((gh, gw))
        skip = 0
        if self.cls_token is not None:
            cls = self.cls_token + self.pos_embed[:, :1]
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
            skip = 1
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_indices:
                y = self.norm(x) if i == self.cfg.depth - 1 else x
                feats.append(y[:, skip:].transpose(1, 2).reshape(y.shape[0], -1, gh, gw))
        return feats


def create_vit(name: str, out_indices: tuple[int, ...] | None = None, final_norm: bool = True,
               decomposed_norm: bool = False) -> VisionTransformer:
    """A ViT of :data:`VIT_CONFIGS` (random weights; ``out_indices`` default: the last block)."""
    if name not in VIT_CONFIGS:
        raise ModelError(f"unknown ViT {name!r}", fix=f"use one of {', '.join(sorted(VIT_CONFIGS))}")
    return VisionTransformer(VIT_CONFIGS[name], out_indices, final_norm, decomposed_norm=decomposed_norm)
