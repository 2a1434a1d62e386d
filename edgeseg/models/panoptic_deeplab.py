"""Panoptic-DeepLab — Cheng, Collins, Zhu, Liu, Huang, Adam & Chen, "Panoptic-DeepLab: A Simple,
Strong, and Fast Baseline for Bottom-Up Panoptic Segmentation" (CVPR 2020).

One encoder, two decoders, three heads, all at stride 4 of the input:

* **semantic decoder**: ASPP on the deepest (stride-16) features, upsampled x2 and fused with the
  stride-8 features (1x1 projection to ``sem_skip[0]`` channels), upsampled x2 and fused with the
  stride-4 features (``sem_skip[1]``); each fusion is one 5x5 depthwise-separable conv-BN-ReLU.
  Semantic head: 5x5 depthwise-separable conv + 1x1 conv to ``num_classes`` logits.
* **instance decoder**: the same layout with fewer channels (the paper: 256 -> 128 decoder, skips
  32/16); two heads of a 5x5 depthwise-separable conv (32 channels) + 1x1 conv: the **centre**
  heatmap (1 channel, raw regression of a Gaussian of sigma 8 input pixels, trained with MSE; no
  sigmoid) and the **offset** map (2 channels: dy, dx in network-input pixels from a pixel to the
  centre of mass of its instance).

Positions at stride 4: output cell ``(i, j)`` stands for the input position ``(4 i + 1.5, 4 j + 1.5)``
(the centre of its 4x4 block, input pixel ``(r, c)`` being at ``(r, c)``). Offsets and centres are
in those input coordinates.

``forward(images)`` returns ``semantic [N, C, h, w]``, ``center [N, 1, h, w]``, ``offset [N, 2, h, w]``
(``h, w`` = the stride-4 feature size, ``H/4, W/4`` for multiples of 4). With ``grouping="graph"``
in eval mode it also returns the paper's instance grouping, in fixed shapes and TensorRT-friendly
ops (:func:`group_centers`): ``centers [N, K, 3]`` (score, y, x) of the top-K centre peaks after
7x7 max-pool NMS, and ``instance`` int64 ``[N, h, w]`` the index of the nearest centre (score above
``center_threshold``) to each cell's position + offset.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .deeplabv3 import ASPP, aspp_rates
from .encoders import Encoder, create_encoder
from .folded import load_folded_state, read_weights_source
from .layers import ConvBNAct, SeparableConvBNAct, init_weights, resize_to
from .registry import register_model

STRIDE = 4
GROUPINGS = ("host", "graph")
ENCODER_PREFIX = "encoder."
_FAR = 1e10  # added to the distance of centres below the threshold (never the nearest while one is valid)


def cell_positions(h: int, w: int, dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel positions ``(y [h, 1], x [1, w])`` of the stride-4 cells: ``4 i + 1.5``."""
    ys = torch.arange(h, dtype=dtype, device=device) * STRIDE + (STRIDE - 1) / 2
    xs = torch.arange(w, dtype=dtype, device=device) * STRIDE + (STRIDE - 1) / 2
    return ys.view(h, 1), xs.view(1, w)


def group_centers(center: torch.Tensor, offset: torch.Tensor, top_k: int = 100, threshold: float = 0.1,
                  nms_kernel: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Panoptic-DeepLab's instance grouping in fixed shapes (MaxPool, TopK, Gather, ArgMin, arithmetic).

    center ``[N, 1, h, w]``, offset ``[N, 2, h, w]`` (dy, dx, input pixels) ->
    ``centers`` float32 ``[N, K, 3]`` (score, y, x in input pixels; score 0 for non-peaks and padding)
    and ``instance`` int64 ``[N, h, w]``: for each cell, the index k minimising
    ``|position + offset - centre_k|^2`` over the centres with score > ``threshold`` (0 when none).
    """
    n, _, h, w = center.shape
    pooled = F.max_pool2d(center, nms_kernel, stride=1, padding=nms_kernel // 2)
    peaks = (center * (center == pooled).to(center.dtype)).reshape(n, h * w)
    k = min(int(top_k), h * w)
    scores, idx = torch.topk(peaks, k, dim=1)
    ys = torch.div(idx, w, rounding_mode="floor").to(center.dtype) * STRIDE + (STRIDE - 1) / 2
    xs = torch.remainder(idx, w).to(center.dtype) * STRIDE + (STRIDE - 1) / 2
    if k < top_k:  # fewer cells than K: pad with empty centres
        pad = int(top_k) - k
        scores, ys, xs = (F.pad(t, (0, pad)) for t in (scores, ys, xs))
    centers = torch.stack([scores, ys, xs], dim=2)
    py, px = cell_positions(h, w, center.dtype, center.device)
    ty = (offset[:, 0] + py).reshape(n, 1, h * w)
    tx = (offset[:, 1] + px).reshape(n, 1, h * w)
    dist = (ty - ys.unsqueeze(2)) ** 2 + (tx - xs.unsqueeze(2)) ** 2  # [N, K, hw]
    dist = dist + (scores <= threshold).to(dist.dtype).unsqueeze(2) * _FAR
    instance = torch.argmin(dist, dim=1).reshape(n, h, w)
    return centers, instance


class PanopticDecoder(nn.Module):
    """ASPP on the deepest features, then for each skip (stride 8, then 4): upsample, concatenate the
    skip's 1x1 projection, fuse with a 5x5 depthwise-separable conv-BN-ReLU."""

    def __init__(self, encoder: Encoder, aspp_channels: int, skip_channels: tuple[int, int], channels: int):
        super().__init__()
        self.skip_index = (encoder.reductions.index(8), encoder.reductions.index(4))
        self.aspp = ASPP(encoder.out_channels[-1], aspp_channels, aspp_rates(encoder.output_stride), separable=True)
        self.project = nn.ModuleList(ConvBNAct(encoder.out_channels[i], c, 1) for i, c in zip(self.skip_index, skip_channels))
        cins = (aspp_channels + skip_channels[0], channels + skip_channels[1])
        self.fuse = nn.ModuleList(SeparableConvBNAct(cin, channels, 5) for cin in cins)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.aspp(feats[-1])
        for i, project, fuse in zip(self.skip_index, self.project, self.fuse):
            skip = project(feats[i])
            x = fuse(torch.cat([resize_to(x, skip.shape[-2:]), skip], dim=1))
        return x


class Head(nn.Sequential):
    """5x5 depthwise-separable conv-BN-ReLU, then a 1x1 conv (with bias) to ``cout``."""

    def __init__(self, cin: int, mid: int, cout: int):
        super().__init__(SeparableConvBNAct(cin, mid, 5), nn.Conv2d(mid, cout, 1))


class PanopticDeepLab(nn.Module):
    """Panoptic-DeepLab (module docstring).

    num_classes:   all classes (stuff and things), in the data's category order.
    class_names:   their names (default ``class_0...``); thing_classes: indices of the thing classes.
    grouping:      "host" (maps only) or "graph" (also ``centers``/``instance`` in eval mode).
    top_k:         K centres kept by the graph grouping; center_threshold: minimum score of a centre
                   pixels are assigned to.
    """

    task = "panoptic"

    def __init__(self, encoder: Encoder, num_classes: int, *, class_names: tuple[str, ...] | list[str] | None = None,
                 thing_classes: tuple[int, ...] | list[int] = (), grouping: str = "host", top_k: int = 100,
                 center_threshold: float = 0.1, sem_channels: int = 256, sem_skip: tuple[int, int] = (64, 32),
                 ins_aspp_channels: int = 256, ins_channels: int = 128, ins_skip: tuple[int, int] = (32, 16),
                 head_channels: int = 32):
        super().__init__()
        names = tuple(class_names) if class_names is not None else tuple(f"class_{i}" for i in range(num_classes))
        if len(names) != num_classes:
            raise ModelError(f"panoptic_deeplab: {len(names)} class names for {num_classes} classes",
                             fix="give one name per class (class_names=...) or leave them out")
        things = tuple(int(t) for t in thing_classes)
        if any(not 0 <= t < num_classes for t in things) or len(set(things)) != len(things):
            raise ModelError(f"panoptic_deeplab: thing_classes {list(things)} must be distinct indices in 0..{num_classes - 1}",
                             fix="give the indices (into the class list) of the classes that are things")
        if grouping not in GROUPINGS:
            raise ModelError(f"panoptic_deeplab: grouping must be one of {GROUPINGS}, got {grouping!r}",
                             fix='use "host" (decode on the host) or "graph" (grouping in the exported graph)')
        if int(top_k) < 1:
            raise ModelError(f"panoptic_deeplab: top_k must be positive, got {top_k}")
        if 4 not in encoder.reductions or 8 not in encoder.reductions:
            raise ModelError(f"panoptic_deeplab: the encoder has no stride-4/stride-8 features ({encoder.reductions})")
        self.num_classes = int(num_classes)
        self.class_names = names
        self.thing_classes = things
        self.grouping, self.top_k, self.center_threshold = grouping, int(top_k), float(center_threshold)
        self.model_name = type(self).__name__
        self.encoder = encoder
        self.semantic_decoder = PanopticDecoder(encoder, sem_channels, sem_skip, sem_channels)
        self.instance_decoder = PanopticDecoder(encoder, ins_aspp_channels, ins_skip, ins_channels)
        self.semantic_head = Head(sem_channels, sem_channels, num_classes)
        self.center_head = Head(ins_channels, head_channels, 1)
        self.offset_head = Head(ins_channels, head_channels, 2)
        init_weights(self.semantic_decoder, self.instance_decoder, self.semantic_head, self.center_head, self.offset_head)
        for head in (self.semantic_head, self.center_head, self.offset_head):  # predictors start near 0 (detectron2's)
            nn.init.normal_(head[-1].weight, 0.0, 0.001)
            nn.init.zeros_(head[-1].bias)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(images)
        sem = self.semantic_decoder(feats)
        ins = self.instance_decoder(feats)
        out = {"semantic": self.semantic_head(sem), "center": self.center_head(ins), "offset": self.offset_head(ins)}
        if self.grouping == "graph" and not self.training:
            out["centers"], out["instance"] = group_centers(out["center"], out["offset"], self.top_k, self.center_threshold)
        return out


# ---- encoder weights from a trained semantic model ----------------------------------------------
def load_encoder_weights(model: nn.Module, path: str | Path) -> int:
    """Copy the encoder weights of a trained model (e.g. the DeepLabV3+ of ``edgeseg/zoo/road.edgeseg``)
    into ``model.encoder``: every tensor named ``encoder.*`` whose name and shape match. From a
    Conv-BN-folded ONNX export, a folded conv's bias goes to the following BatchNorm, set to the
    identity otherwise (mean 0, variance 1 - eps, scale 1), which reproduces the folded conv exactly
    (:mod:`edgeseg.models.folded`). Returns the number of tensors loaded."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"encoder weights {path} not found", fix="give a checkpoint, model.onnx or .edgeseg bundle")
    state, folded = read_weights_source(path)
    done, unfolded = load_folded_state(model, state, folded, prefix=ENCODER_PREFIX)
    bn_tensors = {f"{bn}.{k}" for bn in unfolded for k in ("weight", "bias", "running_mean", "running_var",
                                                           "num_batches_tracked")}
    return len(done - bn_tensors) + len(unfolded)


# ---- variants -----------------------------------------------------------------------------------
CITYSCAPES_CLASSES = 19
CITYSCAPES_THINGS = tuple(range(11, 19))  # person, rider, car, truck, bus, train, motorcycle, bicycle


def _pdl(encoder: str, num_classes: int, output_stride: int = 16, encoder_kwargs: dict | None = None, **kw) -> PanopticDeepLab:
    if "thing_classes" not in kw and num_classes == CITYSCAPES_CLASSES:  # the variants' default: Cityscapes' classes
        kw["thing_classes"] = CITYSCAPES_THINGS  # (before: none, and `edgeseg export NAME` could not build the model)
    return PanopticDeepLab(create_encoder(encoder, output_stride=output_stride, **(encoder_kwargs or {})), num_classes, **kw)


@register_model(task="panoptic", arch="panoptic_deeplab", encoder="mobilenetv3_small")
def panoptic_deeplab_mobilenetv3_small(num_classes: int = 19, **kw) -> PanopticDeepLab:
    """Panoptic-DeepLab on MobileNetV3-Small, output stride 16; semantic 128, instance 128 -> 64 channels."""
    kw = {"sem_channels": 128, "sem_skip": (64, 32), "ins_aspp_channels": 128, "ins_channels": 64, "ins_skip": (32, 16),
          "head_channels": 32, **kw}
    return _pdl("mobilenetv3_small", num_classes, **kw)


@register_model(task="panoptic", arch="panoptic_deeplab", encoder="mobilenetv2")
def panoptic_deeplab_mobilenetv2(num_classes: int = 19, **kw) -> PanopticDeepLab:
    """Panoptic-DeepLab on MobileNetV2, output stride 16; semantic 192, instance 128 -> 96 channels."""
    kw = {"sem_channels": 192, "ins_aspp_channels": 128, "ins_channels": 96, **kw}
    return _pdl("mobilenetv2", num_classes, **kw)


@register_model(task="panoptic", arch="panoptic_deeplab", encoder="resnet18")
def panoptic_deeplab_resnet18(num_classes: int = 19, **kw) -> PanopticDeepLab:
    """Panoptic-DeepLab on ResNet-18, output stride 16; the paper's 256 / 256 -> 128 channels."""
    return _pdl("resnet18", num_classes, **kw)


@register_model(task="panoptic", arch="panoptic_deeplab", encoder="test_mobilenetv3")
def test_panoptic_deeplab(num_classes: int = 6, **kw) -> PanopticDeepLab:
    """Tiny Panoptic-DeepLab on a MobileNetV3 layout for tests."""
    kw = {"sem_channels": 8, "sem_skip": (4, 4), "ins_aspp_channels": 8, "ins_channels": 8, "ins_skip": (4, 4),
          "head_channels": 4, **kw}
    return _pdl("test_mobilenetv3", num_classes, **kw)
