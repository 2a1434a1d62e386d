"""LPSNet — Hong, Guo, Zhang, Chen & Chu, "LPSNet: A Lightweight Solution for Fast Panoptic
Segmentation" (CVPR 2021); the box head is FCOS (Tian, Shen, Chen & He, "FCOS: Fully Convolutional
One-Stage Object Detection", ICCV 2019).

One-stage panoptic segmentation without proposals, anchors or a mask head: on a feature pyramid the
network predicts, at every location, a box and its thing class (an FCOS head), and at every pixel a
semantic class over all classes (stuff and things). A parameter-free *paste head* on the host then
turns boxes plus semantics into the panoptic result: boxes in descending score, each box claims the
pixels inside it whose semantic class is the box's class; a box that overlaps earlier boxes too much
is discarded (so no NMS is needed in the graph).

Departures from FCOS that LPSNet makes (the training side is :mod:`edgeseg.train.lpsnet`):

* **mask-based positives**: a location is positive for an instance when it lies inside the
  instance's *mask* (not its box), within the level's size range;
* **border-ness** replaces centre-ness: how far the location is from the mask border (the public
  text of the paper gives the idea, not a formula; edgeseg's definition, ``min(1, 2 d / min(w, h))``
  with ``d`` the distance to the mask border and ``w, h`` the box size, is documented in
  :func:`edgeseg.train.lpsnet.borderness`).

Architecture here, sized for edge devices:

* encoder taps at strides 4, 8, 16, 32; the FPN of :mod:`.solov2` on the stride 8..32 taps gives
  P3..P5 (P6, a stride-2 subsampling of P5, when four size ranges are given);
* box head (FCOS, shared across levels): a classification tower and a box tower of GroupNorm convs;
  per location ``T`` thing-class logits, box distances ``(l, t, r, b) = exp(s_level * x) * stride``
  (FCOS v1's exp with a learnt per-level scale) and a border-ness logit on the box tower;
* semantic head: every pyramid level through its own DCNv2 layer
  (:class:`edgeseg.ops.ModulatedDeformConv2d`) + GroupNorm + ReLU, upsampled (bilinear) to stride 4
  and summed with a 1x1 projection of the stride-4 encoder feature (the detail the pyramid lacks),
  then a 1x1 classifier over all ``C`` classes.

Location ``(i, j)`` of a level with stride ``s`` is the centre of pixel ``(i*s + s//2, j*s + s//2)``,
i.e. the point ``(x, y) = (j*s + s//2 + 0.5, i*s + s//2 + 0.5)`` in continuous pixel coordinates
(FCOS's ``s//2`` offset; the half pixel makes "inside the mask" a lookup of that pixel).

``forward(images)``:

* eval (inference/export), fixed shapes, K = ``top_k``, no NMS:
  ``semantic`` float32 ``[B, C, h4, w4]`` logits at stride 4 (``h4, w4`` = the encoder's stride-4
  size, ``H/4, W/4`` for multiples of 4);
  ``boxes`` float32 ``[B, K, 4]`` xyxy in network-input pixels, clipped to the image;
  ``scores`` float32 ``[B, K]`` = ``sqrt(sigmoid(class logit) * sigmoid(border-ness logit))`` (the
  geometric mean FCOS's reference code uses for centre-ness), descending;
  ``classes`` int64 ``[B, K]`` indices into **all** classes (``thing_classes[thing index]``,
  gathered in the graph). Top K over all levels, locations and thing classes; when there are fewer
  than K candidates (tiny inputs) the rest is zero-padded.
* train: ``cls_logits`` list of ``[B, T, h, w]``, ``box_ltrb`` list of ``[B, 4, h, w]`` (pixels),
  ``border_logits`` list of ``[B, 1, h, w]`` (one per level, fine to coarse) and ``semantic``
  ``[B, C, h4, w4]``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, FeaturePyramid, init_weights, resize_to
from .registry import register_model
from .solov2 import ConvGNAct

INF = float("inf")
# FCOS's per-level ranges of max(l, t, r, b) (pixels) for P3..P7; P5 takes everything above 128 when
# the pyramid stops there (edge inputs of 320-640 px rarely hold objects larger than that).
FCOS_SIZE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))
LEVEL_STRIDES = (8, 16, 32, 64)
SEMANTIC_STRIDE = 4
MAX_LOG_DISTANCE = 8.0  # exp(8) * stride: far beyond any image; keeps exp finite early in training


def default_size_ranges(levels: int = 3) -> tuple[tuple[float, float], ...]:
    """FCOS's size ranges for ``levels`` pyramid levels from P3, the last one open-ended."""
    if not 1 <= levels <= len(LEVEL_STRIDES):
        raise ModelError(f"LPSNet: 1 to {len(LEVEL_STRIDES)} pyramid levels, got {levels}")
    ranges = list(FCOS_SIZE_RANGES[:levels])
    ranges[-1] = (ranges[-1][0], INF)
    return tuple(ranges)


def level_points(shape: tuple[int, int], stride: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None) -> torch.Tensor:
    """``[h * w, 2]`` continuous ``(x, y)`` of a level's locations, row-major (module docstring)."""
    h, w = int(shape[0]), int(shape[1])
    xs = torch.arange(w, dtype=dtype, device=device) * stride + (stride // 2 + 0.5)
    ys = torch.arange(h, dtype=dtype, device=device) * stride + (stride // 2 + 0.5)
    return torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], -1).reshape(h * w, 2)


class Scale(nn.Module):
    """A learnt scalar per pyramid level (FCOS), multiplying the shared head's box output."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(value)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class BoxHead(nn.Module):
    """FCOS head shared across levels: class tower -> ``T`` logits; box tower -> ``(l, t, r, b)``
    distances and the border-ness logit. Convs ``N(0, 0.01)``, class bias at the focal-loss prior."""

    def __init__(self, cin: int, channels: int, convs: int, num_things: int, strides: Sequence[int],
                 prior: float = 0.01):
        super().__init__()
        self.cls_tower = nn.Sequential(*(ConvGNAct(cin if i == 0 else channels, channels) for i in range(convs)))
        self.box_tower = nn.Sequential(*(ConvGNAct(cin if i == 0 else channels, channels) for i in range(convs)))
        self.cls_out = nn.Conv2d(channels, num_things, 3, padding=1)
        self.box_out = nn.Conv2d(channels, 4, 3, padding=1)
        self.border_out = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in strides)
        self.strides = tuple(int(s) for s in strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior) / prior))

    def forward(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cls_tower(x)
        b = self.box_tower(x)
        log_dist = torch.clamp(self.scales[level](self.box_out(b)), max=MAX_LOG_DISTANCE)
        return self.cls_out(c), torch.exp(log_dist) * self.strides[level], self.border_out(b)


class SemanticHead(nn.Module):
    """Per level DCNv2 3x3 -> GN -> ReLU, bilinear to stride 4, summed with a 1x1 projection of the
    stride-4 encoder feature, 1x1 classifier over all classes."""

    def __init__(self, cin: int, detail_in: int, channels: int, num_classes: int, levels: int):
        super().__init__()
        from ..ops import ModulatedDeformConv2d  # here, not at the top: edgeseg.ops imports onnxscript

        self.deform = nn.ModuleList(ModulatedDeformConv2d(cin, channels, 3, padding=1) for _ in range(levels))
        self.norms = nn.ModuleList(nn.GroupNorm(math.gcd(32, channels), channels) for _ in range(levels))
        self.detail = ConvBNAct(detail_in, channels, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, levels: list[torch.Tensor], detail: torch.Tensor) -> torch.Tensor:
        x = self.detail(detail)
        size = detail.shape[-2:]
        for feat, dcn, norm in zip(levels, self.deform, self.norms):
            x = x + resize_to(F.relu(norm(dcn(feat))), size)
        return self.classifier(x)


class LPSNet(nn.Module):
    """LPSNet panoptic segmentation (module docstring: architecture and output contract).

    num_classes:   all classes, stuff and things (the semantic head's outputs).
    class_names:   one name per class (default ``class_0``...).
    thing_classes: indices (into all classes) of the thing classes, in the box head's order.
    top_k:         K, the fixed number of box outputs.
    size_ranges:   per pyramid level from P3, the range of ``max(l, t, r, b)`` it is trained on;
                   its length (1 to 4) is the number of levels.
    """

    task = "panoptic"

    def __init__(self, encoder: Encoder, num_classes: int, *, class_names: Sequence[str] | None = None,
                 thing_classes: Sequence[int] = (), top_k: int = 100, fpn_channels: int = 64,
                 head_channels: int = 64, head_convs: int = 2, semantic_channels: int = 32,
                 size_ranges: Sequence[Sequence[float]] | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names) if class_names is not None else tuple(
            f"class_{i}" for i in range(self.num_classes))
        self.thing_classes = tuple(int(c) for c in thing_classes)
        _check_classes(self.num_classes, self.class_names, self.thing_classes)
        if int(top_k) < 1:
            raise ModelError(f"LPSNet: top_k must be >= 1, got {top_k}", fix="top_k=100 (the default)")
        self.top_k = int(top_k)
        ranges = default_size_ranges() if size_ranges is None else tuple((float(a), float(b)) for a, b in size_ranges)
        if not 1 <= len(ranges) <= len(LEVEL_STRIDES) or any(lo >= hi for lo, hi in ranges):
            raise ModelError(f"LPSNet: size_ranges must be 1 to {len(LEVEL_STRIDES)} increasing (lo, hi) pairs, "
                             f"got {ranges}", fix="leave size_ranges out for FCOS's P3..P5 ranges")
        self.size_ranges = ranges
        self.strides = LEVEL_STRIDES[: len(ranges)]
        self.model_name = type(self).__name__
        self.encoder = encoder
        try:
            self.taps = tuple(encoder.reductions.index(r) for r in (4, 8, 16, 32))
        except ValueError:
            raise ModelError(f"LPSNet needs encoder features at strides 4, 8, 16 and 32; the encoder gives "
                             f"{encoder.reductions}", fix="build the encoder with output_stride=32") from None
        self.fpn = FeaturePyramid(tuple(encoder.out_channels[i] for i in self.taps[1:]), fpn_channels)
        self.box_head = BoxHead(fpn_channels, head_channels, head_convs, len(self.thing_classes), self.strides)
        self.semantic_head = SemanticHead(fpn_channels, encoder.out_channels[self.taps[0]], semantic_channels,
                                          self.num_classes, len(self.strides))
        init_weights(self.fpn, self.semantic_head.detail, self.semantic_head.classifier)
        self.register_buffer("thing_to_class", torch.tensor(self.thing_classes, dtype=torch.int64), persistent=False)

    @property
    def num_things(self) -> int:
        return len(self.thing_classes)

    def forward(self, images: torch.Tensor) -> dict:
        feats = self.encoder(images)
        pyramid = self.fpn([feats[i] for i in self.taps[1:]], extra=len(self.strides) > 3)
        cls, ltrb, border = [], [], []
        for level, x in enumerate(pyramid):
            c, b, o = self.box_head(x, level)
            cls.append(c)
            ltrb.append(b)
            border.append(o)
        semantic = self.semantic_head(pyramid, feats[self.taps[0]])
        if self.training:
            return {"cls_logits": cls, "box_ltrb": ltrb, "border_logits": border, "semantic": semantic}
        detections = self.inference(cls, ltrb, border, (int(images.shape[-2]), int(images.shape[-1])))
        return {"semantic": semantic, **detections}

    def inference(self, cls: list[torch.Tensor], ltrb: list[torch.Tensor], border: list[torch.Tensor],
                  image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Per-level head maps -> the top-K ``boxes``, ``scores`` and ``classes`` (module docstring)."""
        b, t = int(cls[0].shape[0]), self.num_things
        points = torch.cat([level_points(c.shape[-2:], s, c.dtype, c.device) for c, s in zip(cls, self.strides)])
        logits = torch.cat([c.flatten(2) for c in cls], 2).transpose(1, 2)  # [B, N, T]
        dist = torch.cat([d.flatten(2) for d in ltrb], 2).transpose(1, 2)  # [B, N, 4]
        bord = torch.cat([o.flatten(2) for o in border], 2).transpose(1, 2)  # [B, N, 1]
        n = int(logits.shape[1])
        scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(bord))
        k = min(self.top_k, n * t)
        top, idx = scores.reshape(b, n * t).topk(k, dim=1)
        loc = torch.div(idx, t, rounding_mode="floor")
        label = idx - loc * t
        h, w = image_hw
        xy = points.unsqueeze(0)
        boxes = torch.cat([xy - dist[..., :2], xy + dist[..., 2:]], -1)  # [B, N, 4] xyxy
        x = boxes[..., 0::2].clamp(0, w)
        y = boxes[..., 1::2].clamp(0, h)
        boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)
        boxes = torch.gather(boxes, 1, loc.unsqueeze(-1).expand(b, k, 4))
        classes = self.thing_to_class[label]
        if k < self.top_k:  # fewer candidates than outputs (tiny inputs): pad with zeros
            pad = self.top_k - k
            top, classes, boxes = F.pad(top, (0, pad)), F.pad(classes, (0, pad)), F.pad(boxes, (0, 0, 0, pad))
        return {"boxes": boxes, "scores": top, "classes": classes}


def _check_classes(num_classes: int, names: tuple[str, ...], things: tuple[int, ...]) -> None:
    if num_classes < 1:
        raise ModelError(f"LPSNet: num_classes must be >= 1, got {num_classes}")
    if len(names) != num_classes:
        raise ModelError(f"LPSNet: {len(names)} class names for {num_classes} classes",
                         fix="give one name per class (class_names=...) or leave them out")
    if not things:
        raise ModelError("LPSNet: no thing classes; the box head needs at least one",
                         fix="pass thing_classes=(indices of the thing classes among all classes); edgeseg export NAME --things I,J,...")
    bad = [c for c in things if not 0 <= c < num_classes]
    if bad or len(set(things)) != len(things):
        raise ModelError(f"LPSNet: thing_classes {list(things)} must be distinct indices in 0..{num_classes - 1}",
                         fix="list each thing class once, by its index among all classes")


# ---- variants ---------------------------------------------------------------------------------------
COCO_PANOPTIC_CLASSES = 133  # Detectron2's contiguous COCO-panoptic ids: the 80 things first, then 53 stuff
COCO_THINGS = tuple(range(80))
SYNTHETIC_CLASSES = 6  # edgeseg.data.SceneGenerator: sky, ground, road, then the things circle, rectangle, triangle
SYNTHETIC_THINGS = (3, 4, 5)


def _lpsnet(encoder: str, num_classes: int, default_classes: int, default_things: tuple[int, ...], **kw) -> LPSNet:
    if "thing_classes" not in kw and num_classes == default_classes:
        kw["thing_classes"] = default_things
    return LPSNet(create_encoder(encoder, output_stride=32), num_classes, **kw)


@register_model(task="panoptic", arch="lpsnet", encoder="mobilenetv3_small")
def lpsnet_mobilenetv3_small(num_classes: int = COCO_PANOPTIC_CLASSES, **kw) -> LPSNet:
    """LPSNet on MobileNetV3-Small: FPN 48, box head 2x48 GN convs, semantic 32 (DCNv2 per level);
    default classes: COCO panoptic in Detectron2's order (things 0..79)."""
    kw = {"fpn_channels": 48, "head_channels": 48, "head_convs": 2, "semantic_channels": 32, **kw}
    return _lpsnet("mobilenetv3_small", num_classes, COCO_PANOPTIC_CLASSES, COCO_THINGS, **kw)


@register_model(task="panoptic", arch="lpsnet", encoder="resnet18")
def lpsnet_resnet18(num_classes: int = COCO_PANOPTIC_CLASSES, **kw) -> LPSNet:
    """LPSNet on ResNet-18: FPN 128, box head 3x128 GN convs, semantic 64 (DCNv2 per level);
    default classes: COCO panoptic in Detectron2's order (things 0..79)."""
    kw = {"fpn_channels": 128, "head_channels": 128, "head_convs": 3, "semantic_channels": 64, **kw}
    return _lpsnet("resnet18", num_classes, COCO_PANOPTIC_CLASSES, COCO_THINGS, **kw)


@register_model(task="panoptic", arch="lpsnet", encoder="test_resnet")
def test_lpsnet(num_classes: int = SYNTHETIC_CLASSES, **kw) -> LPSNet:
    """Tiny LPSNet for tests: 8 channels everywhere, one tower conv; default classes: the synthetic
    scenes' (3 stuff, things 3, 4, 5)."""
    kw = {"fpn_channels": 8, "head_channels": 8, "head_convs": 1, "semantic_channels": 8, **kw}
    return _lpsnet("test_resnet", num_classes, SYNTHETIC_CLASSES, SYNTHETIC_THINGS, **kw)
