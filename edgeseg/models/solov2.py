"""SOLOv2 — Wang, Zhang, Kong, Li & Shen, "SOLOv2: Dynamic and Fast Instance Segmentation"
(NeurIPS 2020); the grid formulation is SOLO (Wang et al., ECCV 2020).

Instances are segmented by location: the image is divided into an S x S grid per FPN level, and
the grid cell holding an object's centre predicts its class (category branch) and a dynamic 1x1
conv kernel (kernel branch, CoordConv input). The kernel, applied to one shared mask feature map at
stride 4 (FPN P2..P5 fused, CoordConv on the deepest), gives that instance's mask. Matrix NMS
(:mod:`.matrix_nms`) replaces sequential NMS.

Sized for an edge CPU: a ResNet-18 / MobileNetV2 encoder, FPN P2..P6 of 128 (64) channels, a
shared head of 2 GroupNorm convs of 128 (96) channels (the paper: 7 of 512), E = 64 mask-feature channels, and grids
scaled down from the paper's (40, 36, 24, 16, 12) at 800 px to (24, 20, 16, 12, 8) — chosen with
:func:`scale_ranges` so that object size per grid cell stays close to the paper's at 240-480 px.
The mask-feature branch uses BatchNorm (foldable into the convs at export) where the paper uses GN;
the head, shared across levels, keeps GN.

``forward(images)``:

* eval (inference/export), fixed shapes, K = ``max_detections``, the **dense instance layout**:
  ``scores`` float32 ``[B, K]`` (after Matrix NMS, descending; 0 for padding / empty masks),
  ``classes`` int64 ``[B, K]`` (index into the thing classes; 0 where the score is 0),
  ``masks`` float32 ``[B, K, h, w]`` sigmoid mask probabilities at stride 4 of the input
  (``h, w`` = the encoder's stride-4 feature size: ``H/4, W/4`` for multiples of 4; 0 where the
  score is 0). Thresholds and boxes are the decoder's job.
* train: ``categories`` ``[B, N, C]`` logits, ``kernels`` ``[B, N, E]``, ``mask_features``
  ``[B, E, h, w]``, where N = sum S^2 over levels, cells in level order then row-major.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..structures import ImageShape
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, FeaturePyramid, init_weights, resize_to
from .matrix_nms import KERNELS, matrix_nms
from .registry import register_model

PAPER_GRIDS = (40, 36, 24, 16, 12)
EDGE_GRIDS = (24, 20, 16, 12, 8)
# stride of each head level's input: P2 downsampled to P3, P3, P4, P5, P6 upsampled to P5
LEVEL_STRIDES = (8, 8, 16, 32, 32)
# object scale ranges (sqrt of the box area, pixels) per level, for an 800 px short side (the paper's)
PAPER_SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
PAPER_SHORT_SIDE = 800
MASK_STRIDE = 4


def scale_ranges(size: ImageShape, levels: int = 5) -> tuple[tuple[float, float], ...]:
    """The paper's per-level object scale ranges scaled to an input of ``size`` (by its short side)."""
    f = min(size.height, size.width) / PAPER_SHORT_SIDE
    return tuple((lo * f, hi * f) for lo, hi in PAPER_SCALE_RANGES[:levels])


def coord_features(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2, H, W]`` normalised (x, y) coordinates in [-1, 1] for the feature map ``x`` (CoordConv)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    xs = torch.arange(w, dtype=x.dtype, device=x.device) * (2.0 / max(w - 1, 1)) - 1.0
    ys = torch.arange(h, dtype=x.dtype, device=x.device) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
    return grid.unsqueeze(0).expand(x.shape[0], 2, h, w)


def points_nms(heat: torch.Tensor) -> torch.Tensor:
    """Keep a grid score only where it is the maximum of its 2x2 neighbourhood (SOLO's point NMS)."""
    hmax = F.max_pool2d(heat, 2, stride=1, padding=1)[..., :-1, :-1]
    return heat * (hmax == heat).to(heat.dtype)


class ConvGNAct(nn.Sequential):
    """``Conv2d(bias=False) -> GroupNorm -> ReLU`` for the head shared across levels."""

    def __init__(self, cin: int, cout: int, groups: int = 32):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.GroupNorm(math.gcd(groups, cout), cout), nn.ReLU(inplace=True))


class MaskFeatures(nn.Module):
    """SOLOv2's unified mask feature at stride 4: level i (P2..P5) goes through i conv + x2
    upsampling steps (P5 with CoordConv), the four are summed, a 1x1 conv gives E channels."""

    def __init__(self, cin: int, channels: int, out_channels: int, levels: int = 4):
        super().__init__()
        self.levels = nn.ModuleList()
        for i in range(levels):
            first_in = cin + 2 if i == levels - 1 and i > 0 else cin
            convs = [ConvBNAct(first_in if k == 0 else channels, channels, 3) for k in range(max(i, 1))]
            self.levels.append(nn.ModuleList(convs))
        self.out = ConvBNAct(channels, out_channels, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        n = len(self.levels)
        x = self.levels[0][0](feats[0])
        for i in range(1, n):
            f = feats[i]
            if i == n - 1:
                f = torch.cat([f, coord_features(f)], 1)
            for k, conv in enumerate(self.levels[i]):
                f = resize_to(conv(f), feats[i - 1 - k].shape[-2:])
            x = x + f
        return self.out(x)


class KernelCategoryHead(nn.Module):
    """Per level, on the S x S grid: category logits ``[B, C, S, S]`` and dynamic kernels ``[B, E, S, S]``."""

    def __init__(self, cin: int, channels: int, convs: int, num_classes: int, kernel_channels: int,
                 prior: float = 0.01):
        super().__init__()
        self.kernel_convs = nn.Sequential(*(ConvGNAct(cin + 2 if i == 0 else channels, channels) for i in range(convs)))
        self.cate_convs = nn.Sequential(*(ConvGNAct(cin if i == 0 else channels, channels) for i in range(convs)))
        self.kernel_out = nn.Conv2d(channels, kernel_channels, 3, padding=1)
        self.cate_out = nn.Conv2d(channels, num_classes, 3, padding=1)
        for m in self.modules():  # the reference code's init: N(0, 0.01), focal-loss prior on the class bias
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cate_out.bias, -math.log((1 - prior) / prior))

    def forward(self, x: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([x, coord_features(x)], 1)
        x = resize_to(x, (grid, grid))
        kernels = self.kernel_out(self.kernel_convs(x))
        cates = self.cate_out(self.cate_convs(x[:, :-2]))
        return cates, kernels


class SOLOv2(nn.Module):
    """SOLOv2 instance segmentation (module docstring: architecture and output contract).

    num_classes:    thing classes (``classes`` indexes them). thing_classes: their names.
    num_grids:      S per level (1 to 5 levels: P2 (down), P3, P4, P5, P6 (up)).
    pre_nms:        candidates (cell, class) kept by category score before Matrix NMS.
    max_detections: K, the fixed number of outputs.
    """

    task = "instance"

    def __init__(self, encoder: Encoder, num_classes: int = 80, *, thing_classes: tuple[str, ...] | list[str] | None = None,
                 fpn_channels: int = 128, head_channels: int = 128, head_convs: int = 2, mask_channels: int = 64,
                 mask_inner_channels: int = 64, num_grids: tuple[int, ...] = EDGE_GRIDS, pre_nms: int = 500,
                 max_detections: int = 100, mask_threshold: float = 0.5, nms_kernel: str = "gaussian",
                 nms_sigma: float = 2.0):
        super().__init__()
        if not 1 <= len(num_grids) <= len(LEVEL_STRIDES):
            raise ModelError(f"SOLOv2: 1 to {len(LEVEL_STRIDES)} grid levels, got {tuple(num_grids)}")
        if nms_kernel not in KERNELS:
            raise ModelError(f"SOLOv2: nms_kernel must be one of {KERNELS}, got {nms_kernel!r}")
        self.num_classes = int(num_classes)
        names = tuple(thing_classes) if thing_classes is not None else tuple(f"class_{i}" for i in range(num_classes))
        if len(names) != self.num_classes:
            raise ModelError(f"SOLOv2: {len(names)} thing class names for {num_classes} classes",
                             fix="give one name per thing class (thing_classes=...) or leave them out")
        self.classes = names
        self.model_name = type(self).__name__
        self.num_grids = tuple(int(s) for s in num_grids)
        self.level_strides = LEVEL_STRIDES[: len(self.num_grids)]
        self.mask_stride = MASK_STRIDE
        self.mask_channels = int(mask_channels)
        self.pre_nms, self.max_detections = int(pre_nms), int(max_detections)
        self.mask_threshold, self.nms_kernel, self.nms_sigma = float(mask_threshold), nms_kernel, float(nms_sigma)
        self.encoder = encoder
        self.taps = tuple(encoder.reductions.index(r) for r in (4, 8, 16, 32))
        self.fpn = FeaturePyramid(tuple(encoder.out_channels[i] for i in self.taps), fpn_channels)
        self.mask_features = MaskFeatures(fpn_channels, mask_inner_channels, mask_channels)
        self.head = KernelCategoryHead(fpn_channels, head_channels, head_convs, num_classes, mask_channels)
        init_weights(self.fpn, self.mask_features)
        strides = torch.cat([torch.full((s * s,), float(st)) for s, st in zip(self.num_grids, self.level_strides)])
        self.register_buffer("cell_strides", strides, persistent=False)

    @property
    def num_cells(self) -> int:
        return sum(s * s for s in self.num_grids)

    def _head_inputs(self, p: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [resize_to(p[0], p[1].shape[-2:]), p[1], p[2], p[3]]
        if len(p) > 4:
            levels.append(resize_to(p[4], p[3].shape[-2:]))
        return levels[: len(self.num_grids)]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(images)
        p = self.fpn([feats[i] for i in self.taps], extra=len(self.num_grids) > 4)
        mask_feat = self.mask_features(p[:4])
        cates, kernels = [], []
        for x, grid in zip(self._head_inputs(p), self.num_grids):
            c, k = self.head(x, grid)
            cates.append(c)
            kernels.append(k)
        if self.training:
            return {
                "categories": torch.cat([c.flatten(2) for c in cates], 2).transpose(1, 2),
                "kernels": torch.cat([k.flatten(2) for k in kernels], 2).transpose(1, 2),
                "mask_features": mask_feat,
            }
        return self.inference(cates, kernels, mask_feat)

    def inference(self, cates: list[torch.Tensor], kernels: list[torch.Tensor],
                  mask_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-level category logits and kernels plus the mask features -> the dense instance layout."""
        scores = torch.cat([points_nms(torch.sigmoid(c)).flatten(2) for c in cates], 2)  # [B, C, N]
        kern = torch.cat([k.flatten(2) for k in kernels], 2).transpose(1, 2)  # [B, N, E]
        b, c, n = scores.shape
        e = kern.shape[-1]
        h, w = int(mask_feat.shape[-2]), int(mask_feat.shape[-1])
        feat = mask_feat.flatten(2)  # [B, E, hw]
        # 1. pre-NMS: the top candidates (cell, class) by category score
        p = min(self.pre_nms, n * c)
        cate_score, idx = scores.transpose(1, 2).reshape(b, n * c).topk(p, dim=1)
        cell = torch.div(idx, c, rounding_mode="floor")
        label = idx - cell * c
        kp = torch.gather(kern, 1, cell.unsqueeze(-1).expand(b, p, e))  # [B, P, E]
        # 2. masks by the dynamic 1x1 convs (a batched matmul), scored by their mean inside probability
        prob = torch.sigmoid(torch.matmul(kp, feat))  # [B, P, hw]
        binary = (prob > self.mask_threshold).to(prob.dtype)
        area = binary.sum(-1)
        mask_score = (prob * binary).sum(-1) / area.clamp(min=1.0)
        keep = area > self.cell_strides[cell]  # the reference code drops masks smaller than the level stride
        score = torch.where(keep, cate_score * mask_score, torch.zeros_like(cate_score))
        # 3. Matrix NMS, then the top K
        score = matrix_nms(binary, label, score, kernel=self.nms_kernel, sigma=self.nms_sigma, areas=area)
        k = min(self.max_detections, p)
        score, order = score.topk(k, dim=1)
        valid = (score > 0).to(score.dtype)
        kk = torch.gather(kp, 1, order.unsqueeze(-1).expand(b, k, e))
        masks = torch.sigmoid(torch.matmul(kk, feat)) * valid.unsqueeze(-1)
        classes = torch.gather(label, 1, order) * (score > 0).to(label.dtype)
        if k < self.max_detections:  # fewer candidates than outputs (tiny models): pad
            pad = self.max_detections - k
            score = F.pad(score, (0, pad))
            classes = F.pad(classes, (0, pad))
            masks = F.pad(masks, (0, 0, 0, pad))
        return {"scores": score, "classes": classes, "masks": masks.reshape(b, self.max_detections, h, w)}


def _solov2(encoder: str, num_classes: int, encoder_kwargs: dict | None = None, **kw) -> SOLOv2:
    return SOLOv2(create_encoder(encoder, output_stride=32, **(encoder_kwargs or {})), num_classes, **kw)


@register_model(task="instance", arch="solov2", encoder="resnet18")
def solov2_resnet18(num_classes: int = 80, **kw) -> SOLOv2:
    """SOLOv2 on ResNet-18: FPN 128, head 2x128 GN convs, E = 64, grids (24, 20, 16, 12, 8)."""
    return _solov2("resnet18", num_classes, **kw)


@register_model(task="instance", arch="solov2", encoder="mobilenetv2")
def solov2_mobilenetv2(num_classes: int = 80, **kw) -> SOLOv2:
    """SOLOv2 on MobileNetV2: FPN 64, head 2x96 GN convs, E = 64, grids (24, 20, 16, 12, 8)."""
    kw = {"fpn_channels": 64, "head_channels": 96, **kw}
    return _solov2("mobilenetv2", num_classes, **kw)


@register_model(task="instance", arch="solov2", encoder="mobilenetv3_small")
def solov2_mobilenetv3_small(num_classes: int = 80, **kw) -> SOLOv2:
    """SOLOv2 on MobileNetV3-Small, sized for a shipped bundle: FPN 48, head 2x64 GN convs, E = 32,
    mask branch 32 (1.28 M parameters with 3 classes)."""
    kw = {"fpn_channels": 48, "head_channels": 64, "mask_channels": 32, "mask_inner_channels": 32, **kw}
    return _solov2("mobilenetv3_small", num_classes, **kw)


@register_model(task="instance", arch="solov2", encoder="test_resnet")
def test_solov2(num_classes: int = 3, **kw) -> SOLOv2:
    """Tiny SOLOv2 for tests: 8 channels everywhere, grids (6, 5, 4, 3, 2), 40 candidates, K = 12."""
    kw = {"fpn_channels": 8, "head_channels": 8, "head_convs": 1, "mask_channels": 8, "mask_inner_channels": 8,
          "num_grids": (6, 5, 4, 3, 2), "pre_nms": 40, "max_detections": 12, **kw}
    return _solov2("test_resnet", num_classes, **kw)
