"""CRF-as-RNN — Zheng, Jayasumana, Romera-Paredes, Vineet, Su, Du, Huang & Torr, "Conditional Random
Fields as Recurrent Neural Networks" (ICCV 2015).

Any :class:`SemanticModel` followed by ``T`` unrolled mean-field iterations of a fully connected CRF
(Krähenbühl & Koltun, NIPS 2011) with Gaussian smoothness and bilateral appearance kernels, as
exportable ops, with trainable per-class kernel weights and a trainable ``C x C`` label
compatibility (initialised to the Potts model ``1 - I``, as in the paper). One iteration, with
``U = -logits`` (the paper's unary) and ``Q = softmax(logits)`` at the start:

``m = w_s * filter_s(Q) + w_b * filter_b(Q)`` (per class), ``logits_t = logits - mu @ m``,
``Q = softmax(logits_t)``. The module returns ``logits_T`` (``softmax(logits_T) = Q_T``).

The kernels follow pydensecrf (:mod:`edgeseg.decode.crf`): ``exp(-|f_i - f_j|^2 / 2)`` on scaled
features, the pixel itself included, symmetric normalisation ``filter(Q) = n * K (n * Q)`` with
``n = 1 / sqrt(K 1)``. They run on the backbone's logit grid, positions in **input pixels** (a cell's
centre), colours 0..255 (the normalised input is mapped back with ``pixel_mean``/``pixel_std``,
then area-averaged to the grid), so ``gaussian_sxy``/``bilateral_sxy``/``bilateral_srgb`` mean
what pydensecrf's ``sxy``/``srgb`` mean at the input resolution.

* spatial kernel: a separable Gaussian depthwise convolution (two 1-D convs, zero padding,
  truncated at ``truncate`` sigma): exact but for the truncation;
* bilateral kernel: **dense pairwise to a downsampled grid** — every pixel ``i`` of the logit grid
  against the ``bilateral_stride x bilateral_stride`` blocks ``b`` of it, with the block's mean
  feature and the block's sum of ``n * Q``: ``K(i, j) ~ k(f_i, mean_b f)`` for ``j`` in ``b``. An
  ``N x N/s^2`` MatMul; with ``bilateral_stride=1`` it is the exact dense kernel.

Deviations from the paper: the bilateral filter is the grid approximation above instead of the
permutohedral lattice (which has no ONNX form); kernel weights are per-class vectors (the paper's
are ``C x C`` 1x1 convolutions, diagonal at initialisation) and normalisation is pydensecrf's
symmetric one (the paper's Caffe code divides by ``K 1`` after filtering).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import SemanticModel
from .layers import _bin_matrix
from .registry import create_model, register_model


def _block_matrix(size: int, stride: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[ceil(size / stride), size]`` 0/1 matrix: block ``b`` sums indices ``b*stride .. b*stride+stride-1``."""
    idx = torch.arange(size, device=device) // stride
    return (idx[None, :] == torch.arange(-(-size // stride), device=device)[:, None]).to(dtype)


def _gaussian_taps(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-0.5 * (x / sigma) ** 2).to(dtype=dtype, device=device)


class CRFasRNN(SemanticModel):
    """``backbone`` logits refined by ``iterations`` mean-field steps (module doc). Input and output
    are those of every :class:`SemanticModel`; refinement happens at the backbone's logit grid."""

    def __init__(self, backbone: SemanticModel, iterations: int = 5, gaussian_sxy: float = 3.0,
                 gaussian_compat: float = 3.0, bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
                 bilateral_compat: float = 10.0, bilateral_stride: int = 4, truncate: float = 4.0,
                 pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                 pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)):
        super().__init__(backbone.num_classes)
        c = backbone.num_classes
        self.backbone = backbone
        self.iterations = int(iterations)
        self.gaussian_sxy, self.bilateral_sxy, self.bilateral_srgb = float(gaussian_sxy), float(bilateral_sxy), float(bilateral_srgb)
        self.bilateral_stride, self.truncate = int(bilateral_stride), float(truncate)
        self.spatial_weight = nn.Parameter(torch.full((c,), float(gaussian_compat)))
        self.bilateral_weight = nn.Parameter(torch.full((c,), float(bilateral_compat)))
        self.compatibility = nn.Parameter(1.0 - torch.eye(c))
        # 0..255 RGB = (normalised * std + mean) * 255, the InputSpec defaults (scale 1/255)
        self.register_buffer("rgb_scale", torch.tensor(pixel_std).reshape(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("rgb_shift", torch.tensor(pixel_mean).reshape(1, 3, 1, 1) * 255.0, persistent=False)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.refine(self.backbone.forward_logits(images), images)

    # ---- the pieces ---------------------------------------------------------------------------
    def refine(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``logits [B, C, h, w]`` and the network input ``images [B, 3, H, W]`` -> refined logits."""
        if self.iterations == 0:
            return logits
        (hi, wi), (h, w) = images.shape[-2:], logits.shape[-2:]
        spatial = self._spatial_filter(h, w, hi / h, wi / w, logits)
        bilateral = self._bilateral_filter(self._grid_features(images, h, w))
        mu = self.compatibility[:, :, None, None]
        ws, wb = self.spatial_weight[None, :, None, None], self.bilateral_weight[None, :, None, None]
        out = logits
        q = torch.softmax(logits, dim=1)
        for _ in range(self.iterations):
            message = ws * spatial(q) + wb * bilateral(q)
            out = logits - F.conv2d(message, mu)
            q = torch.softmax(out, dim=1)
        return out

    def _spatial_filter(self, h: int, w: int, cell_y: float, cell_x: float, like: torch.Tensor):
        """Symmetrically normalised separable Gaussian on the ``h x w`` grid (sigma in input pixels)."""
        ty = _gaussian_taps(self.gaussian_sxy / cell_y, self.truncate, like.dtype, like.device)
        tx = _gaussian_taps(self.gaussian_sxy / cell_x, self.truncate, like.dtype, like.device)

        def blur(x: torch.Tensor) -> torch.Tensor:
            k = x.shape[1]
            x = F.conv2d(x, ty.reshape(1, 1, -1, 1).expand(k, 1, -1, 1), padding=(ty.numel() // 2, 0), groups=k)
            return F.conv2d(x, tx.reshape(1, 1, 1, -1).expand(k, 1, 1, -1), padding=(0, tx.numel() // 2), groups=k)

        norm = torch.rsqrt(blur(torch.ones(1, 1, h, w, dtype=like.dtype, device=like.device)) + 1e-20)
        return lambda q: norm * blur(norm * q)

    def _grid_features(self, images: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``[B, 5, h, w]``: (x / sxy, y / sxy, r / srgb, g / srgb, b / srgb), x and y the cell centres
        in input pixels, the colour area-averaged over the cell."""
        hi, wi = int(images.shape[-2]), int(images.shape[-1])
        rgb = images * self.rgb_scale + self.rgb_shift
        if (hi, wi) != (h, w):
            rgb = torch.matmul(torch.matmul(_bin_matrix(hi, h, rgb.dtype, rgb.device), rgb),
                               _bin_matrix(wi, w, rgb.dtype, rgb.device).t())
        ys = ((torch.arange(h, dtype=rgb.dtype, device=rgb.device) + 0.5) * (hi / h) - 0.5) / self.bilateral_sxy
        xs = ((torch.arange(w, dtype=rgb.dtype, device=rgb.device) + 0.5) * (wi / w) - 0.5) / self.bilateral_sxy
        pos = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])[None].expand(rgb.shape[0], 2, h, w)
        return torch.cat([pos, rgb / self.bilateral_srgb], dim=1)

    def _bilateral_filter(self, feats: torch.Tensor):
        """Symmetrically normalised bilateral kernel against the block grid (module doc)."""
        b, d, h, w = feats.shape
        s = self.bilateral_stride
        bh, bw = _block_matrix(h, s, feats.dtype, feats.device), _block_matrix(w, s, feats.dtype, feats.device)

        def pool(x: torch.Tensor) -> torch.Tensor:  # block sums [B, k, h/s, w/s] -> [B, k, n]
            return torch.matmul(torch.matmul(bh, x), bw.t()).flatten(2)

        counts = pool(torch.ones(1, 1, h, w, dtype=feats.dtype, device=feats.device))  # [1, 1, n]
        keys = pool(feats) / counts  # [B, 5, n] block means
        f = feats.flatten(2)  # [B, 5, N]
        d2 = (f * f).sum(1)[:, :, None] + (keys * keys).sum(1)[:, None, :] - 2.0 * torch.matmul(f.transpose(1, 2), keys)
        kernel = torch.exp(-0.5 * torch.clamp(d2, min=0.0))  # [B, N, n]
        # K 1 >= 1 for the exact kernel (a pixel's own term is exp(0)); a block mean can be far from every
        # pixel of its block (mixed colours), so the grid sum can reach ~1e-19, whose rsqrt blew the
        # gradients up (1.6e6 on CamVid frames; training diverged at step 27): keep the exact bound
        norm = torch.rsqrt(torch.clamp(torch.matmul(kernel, counts.transpose(1, 2)), min=1.0)).transpose(1, 2)  # [B, 1, N]

        def apply(q: torch.Tensor) -> torch.Tensor:
            nq = norm * q.flatten(2)  # [B, C, N]
            summed = pool(nq.reshape(q.shape))  # [B, C, n]
            return (norm * torch.matmul(summed, kernel.transpose(1, 2))).reshape(q.shape)

        return apply


def _crf(backbone: str, num_classes: int, iterations: int = 5, **kw) -> CRFasRNN:
    crf_keys = {"gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat",
                "bilateral_stride", "truncate", "pixel_mean", "pixel_std"}
    crf_kw = {k: kw.pop(k) for k in list(kw) if k in crf_keys}
    return CRFasRNN(create_model(backbone, num_classes=num_classes, **kw), iterations, **crf_kw)


@register_model(arch="crfasrnn", encoder="mobilenetv3_small")
def crfasrnn_deeplabv3plus_mobilenetv3_small(num_classes: int = 21, **kw) -> CRFasRNN:
    """CRF-as-RNN (5 mean-field iterations) on DeepLabV3+ / MobileNetV3-Small."""
    return _crf("deeplabv3plus_mobilenetv3_small", num_classes, **kw)


@register_model(arch="crfasrnn", encoder="test_mobilenetv3")
def test_crfasrnn(num_classes: int = 5, **kw) -> CRFasRNN:
    """Tiny CRF-as-RNN (3 iterations, bilateral stride 2) on the tiny DeepLabV3+ for tests."""
    kw.setdefault("bilateral_stride", 2)
    return _crf("test_deeplabv3plus", num_classes, iterations=kw.pop("iterations", 3), **kw)
