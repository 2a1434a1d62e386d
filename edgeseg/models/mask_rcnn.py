"""Mask R-CNN — He, Gkioxari, Dollár & Girshick, "Mask R-CNN" (ICCV 2017), on a feature pyramid
(Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017) with a region proposal
network (Ren et al., "Faster R-CNN", NeurIPS 2015). Defaults follow Detectron2's R50-FPN recipe.

* Encoder taps at strides 4..32 -> FPN P2..P5 (+ P6 by subsampling P5, for the RPN only).
* RPN: one shared 3x3 conv, 3 anchors per location per level (sizes 32..512, aspect ratios 0.5,
  1, 2), box coder weights (1, 1, 1, 1) with dw/dh clamped at log(1000/16); the best
  ``rpn_pre_nms`` per level are decoded, clipped and ranked by objectness probability in **one**
  NMS over all levels (IoU 0.7; NVIDIA's TensorRT Detectron2 sample does the same), keeping
  ``rpn_post_nms``.
* Box head: multi-level RoIAlign 7x7 (aligned, sampling ratio 2; level by box area, 224 px at P4),
  2 FC, softmax over things + background (the last class), class-specific box regression
  (weights 10, 10, 5, 5). Detections: per class ``score > score_threshold``, class-aware NMS
  (IoU ``nms_iou``) through one single-class NMS over boxes offset by class (torchvision's
  ``batched_nms``), the best ``max_detections``.
* Mask head: RoIAlign 14x14 on the detections, 4 conv 3x3, a 2x2 deconv, one 28x28 mask per class;
  the detected class's channel, through a sigmoid.

``forward(images [1, 3, H, W])`` in eval mode gives the **roi instance layout** with a detection
count K that is data-dependent in the exported graph (0 <= K <= ``max_detections``):
``boxes`` float32 ``[1, K, 4]`` xyxy network pixels, ``scores`` float32 ``[1, K]``, ``classes``
int64 ``[1, K]`` (thing index), ``masks`` float32 ``[1, K, 28, 28]`` probabilities covering each box.

``nms="onnx"`` (default) exports both NMS steps as ONNX ``NonMaxSuppression`` (TensorRT >= 8.5 parses
it natively); ``nms="tensorrt"`` as TensorRT's ``EfficientNMS_TRT`` plugin (TensorRT >= 8.0; the
graph no longer runs in ONNX Runtime). Both keep the same outputs: the plugin's fixed-size result is
cut to its ``num_detections``. The two differ only at ties with the thresholds (ONNX keeps
``score > t`` and suppresses ``IoU > t``, the plugin ``>=`` both) and in the plugin's cap of 4096
NMS candidates. Exporting needs :func:`edgeseg.models.detection.detection_translation_table` in the
exporter's ``custom_translation_table`` and, for the plugin, :func:`~edgeseg.models.detection.finalize_plugin_nodes`
on the saved graph. ``forward_train(images, targets)`` returns the standard losses.

Cost at 640x320 (80 classes, 300 proposals; ``torch.utils.flop_counter.FlopCounterMode``: FLOPs =
2 x multiply-adds, RoIAlign and NMS not counted):
``mask_rcnn_r18_fpn`` 16.4 M parameters, 30 GFLOPs with 10 detections (55 with 100);
``mask_rcnn_mbv2_fpn`` 7.0 M, 17 (42); ``mask_rcnn_r50_fpn`` 44.4 M, 96 (191). Each detection's
mask head costs 0.27 GFLOPs at 128 channels (1.06 at 256).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError
from ..structures import InstanceResult
from .detection import (BoxCoder, clip_boxes, efficient_nms, grid_anchors, match_boxes, nms,
                        sample_labels)
from .encoders import Encoder, create_encoder
from .layers import FeaturePyramid
from .registry import register_model

NMS_FORMS = ("onnx", "tensorrt")
STRIDES = (4, 8, 16, 32, 64)  # P2..P6
ROI_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)  # RoIAlign reads P2..P5
BOX_RESOLUTION, MASK_RESOLUTION = 7, 14
MASK_SIZE = 2 * MASK_RESOLUTION  # 28
RPN_NO_SCORE_THRESHOLD = -1.0  # probabilities are >= 0: every candidate is ranked (same set for > and >=)
ROI_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


@dataclass(frozen=True)
class MaskRCNNConfig:
    """Sizes, inference thresholds and training sampling (Detectron2's defaults unless noted)."""

    fpn_channels: int = 256
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # one per level P2..P6
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    rpn_pre_nms: int = 1000  # per level, inference
    rpn_post_nms: int = 300  # inference (Detectron2: 1000)
    rpn_pre_nms_train: int = 2000
    rpn_post_nms_train: int = 1000
    rpn_nms_iou: float = 0.7
    box_fc: int = 1024
    mask_channels: int = 256
    mask_convs: int = 4
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    nms: str = "onnx"
    rpn_batch: int = 256  # anchors sampled per image
    rpn_positive_fraction: float = 0.5
    roi_batch: int = 512  # proposals sampled per image
    roi_positive_fraction: float = 0.25

    def __post_init__(self) -> None:
        for f in ("anchor_sizes", "aspect_ratios"):  # JSON (checkpoint kwargs) gives lists
            object.__setattr__(self, f, tuple(float(v) for v in getattr(self, f)))
        if self.nms not in NMS_FORMS:
            raise ModelError(f"Mask R-CNN: nms must be one of {NMS_FORMS}, got {self.nms!r}",
                             fix="'onnx' (NonMaxSuppression) or 'tensorrt' (EfficientNMS_TRT plugin)")
        if len(self.anchor_sizes) != len(STRIDES):
            raise ModelError(f"Mask R-CNN: one anchor size per level P2..P6, got {self.anchor_sizes}")
        if min(self.max_detections, self.rpn_pre_nms, self.rpn_post_nms) < 1:
            raise ModelError("Mask R-CNN: max_detections, rpn_pre_nms and rpn_post_nms must be positive")


@dataclass(frozen=True)
class InstanceTarget:
    """Ground truth of one training image, at the network input size: ``boxes`` float32 ``[M, 4]``
    xyxy pixels, ``classes`` int64 ``[M]`` thing indices, ``masks`` bool ``[M, H, W]``."""

    boxes: Tensor
    classes: Tensor
    masks: Tensor

    @classmethod
    def from_result(cls, result: InstanceResult, thing_classes: Sequence[str]) -> "InstanceTarget":
        """From an :class:`InstanceResult` (e.g. ``SceneGenerator.render(t).instances``): classes are
        mapped to ``thing_classes`` by name when the result names them, else taken as thing indices;
        instances with an empty box are dropped."""
        if result.masks is None:
            raise InputError("InstanceTarget.from_result: the result has no masks", fix="train on data with masks")
        if result.class_names:
            names = [result.class_names[int(c)] for c in result.classes]
            unknown = sorted(set(names) - set(thing_classes))
            if unknown:
                raise InputError(f"InstanceTarget.from_result: classes {unknown} are not among the model's thing "
                                 f"classes {list(thing_classes)}")
            labels = np.array([list(thing_classes).index(n) for n in names], np.int64)
        else:
            labels = np.asarray(result.classes, np.int64)
        b = np.asarray(result.boxes, np.float32).reshape(-1, 4)
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        masks = np.asarray(result.masks)[ok]
        return cls(torch.from_numpy(b[ok]), torch.from_numpy(labels[ok]), torch.from_numpy(masks))


    def to(self, device: torch.device) -> "InstanceTarget":
        return InstanceTarget(self.boxes.to(device), self.classes.to(device), self.masks.to(device))


def _as_target(t: InstanceTarget | Mapping, device: torch.device) -> InstanceTarget:
    """An :class:`InstanceTarget`, or a mapping with its field names (``boxes``, ``classes``, ``masks``)."""
    if not isinstance(t, InstanceTarget):
        try:
            t = InstanceTarget(torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4),
                               torch.as_tensor(t["classes"], dtype=torch.int64),
                               torch.as_tensor(t["masks"], dtype=torch.bool))
        except KeyError as e:
            raise InputError(f"forward_train: a target has no {e.args[0]!r}",
                             fix="pass InstanceTarget.from_result(result, model.classes) per image") from None
    return t.to(device)


# ---- heads ----------------------------------------------------------------------------------------------
class RPNHead(nn.Module):
    """Per level: objectness logits ``[N, h*w*A]`` and anchor deltas ``[N, h*w*A, 4]``."""

    def __init__(self, channels: int, anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.logits = nn.Conv2d(channels, anchors, 1)
        self.deltas = nn.Conv2d(channels, anchors * 4, 1)
        for m in (self.conv, self.logits, self.deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in feats:
            t = F.relu(self.conv(x))
            lg = self.logits(t)
            n, a, h, w = lg.shape
            logits.append(lg.permute(0, 2, 3, 1).reshape(n, h * w * a))
            deltas.append(self.deltas(t).reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4))
        return logits, deltas


class BoxHead(nn.Module):
    """2 FC on 7x7 RoI features -> class logits ``[R, C + 1]`` (background last), deltas ``[R, C * 4]``."""

    def __init__(self, channels: int, fc: int, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(channels * BOX_RESOLUTION**2, fc)
        self.fc2 = nn.Linear(fc, fc)
        self.cls = nn.Linear(fc, num_classes + 1)
        self.reg = nn.Linear(fc, num_classes * 4)
        for m in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(m.weight, a=1)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.001)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))
        return self.cls(x), self.reg(x)


class MaskHead(nn.Module):
    """``convs`` 3x3 convs + ReLU on 14x14 RoI features, a 2x2 stride-2 deconv + ReLU, a 1x1 conv:
    mask logits ``[R, C, 28, 28]``."""

    def __init__(self, cin: int, channels: int, convs: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(cin if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(channels if convs else cin, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(F.relu(self.deconv(self.convs(x))))


# ---- the model ----------------------------------------------------------------------------------------
class MaskRCNN(nn.Module):
    """Mask R-CNN with an FPN (module docstring: architecture, output contract, NMS forms).

    num_classes: thing classes (``classes`` indexes them). thing_classes: their names.
    Other keyword arguments: fields of :class:`MaskRCNNConfig`.
    """

    task = "instance"

    def __init__(self, encoder: Encoder, num_classes: int = 80, *, thing_classes: Sequence[str] | None = None,
                 **config):
        super().__init__()
        names = tuple(thing_classes) if thing_classes is not None else tuple(f"class_{i}" for i in range(num_classes))
        if len(names) != num_classes:
            raise ModelError(f"Mask R-CNN: {len(names)} thing class names for {num_classes} classes")
        unknown = sorted(set(config) - {f.name for f in fields(MaskRCNNConfig)})
        if unknown:
            raise ModelError(f"Mask R-CNN: unknown options {unknown}",
                             fix="see the fields of edgeseg.models.mask_rcnn.MaskRCNNConfig")
        self.cfg = MaskRCNNConfig(**config)
        self.num_classes, self.classes = int(num_classes), names
        self.model_name = type(self).__name__
        self.encoder = encoder
        self.taps = tuple(encoder.reductions.index(r) for r in (4, 8, 16, 32))
        c = self.cfg.fpn_channels
        self.fpn = FeaturePyramid(tuple(encoder.out_channels[i] for i in self.taps), c, extra=True, c2_xavier=True)
        self.rpn = RPNHead(c, len(self.cfg.aspect_ratios))
        self.box_head = BoxHead(c, self.cfg.box_fc, num_classes)
        self.mask_head = MaskHead(c, self.cfg.mask_channels, self.cfg.mask_convs, num_classes)
        self.rpn_coder, self.roi_coder = BoxCoder(), BoxCoder(ROI_WEIGHTS)

    # -- shared pieces
    def features(self, images: Tensor) -> list[Tensor]:
        feats = self.encoder(images)
        return self.fpn([feats[i] for i in self.taps])

    def anchors(self, p: list[Tensor]) -> list[Tensor]:
        shapes = [(int(x.shape[-2]), int(x.shape[-1])) for x in p]
        return [a.to(p[0].device) for a in grid_anchors(shapes, STRIDES, self.cfg.anchor_sizes, self.cfg.aspect_ratios)]

    def _nms(self, boxes: Tensor, scores: Tensor, score_threshold: float, iou: float, limit: int,
             size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """Class-aware NMS of ``boxes [N, C, 4]`` (one per class, clipped to the image ``size``) scored
        ``scores [N, C]``: the kept ``(boxes [K, 4], scores [K], classes int64 [K])``, best first,
        K <= ``limit``."""
        c = scores.shape[1]
        if self.cfg.nms == "tensorrt":  # [1, N, 4] boxes shared by the classes when there is one class
            # the plugin's creator refuses a negative score_threshold (PLUGIN_VALIDATE(scoreThreshold >= 0)): the RPN's
            # rank-everything -1 is 0 here, the same set (the plugin keeps score >= threshold; probabilities are >= 0)
            num, b, s, cl = efficient_nms((boxes[:, 0] if c == 1 else boxes)[None], scores[None],
                                         max(0.0, score_threshold), iou, limit)
            # the valid rows through NonZero, the data-dependent shape TensorRT (>= 8.5) already builds for
            # multi-level RoIAlign, rather than a Slice whose end is read from the plugin's output
            keep = torch.nonzero(torch.arange(limit, device=num.device) < num[0, 0]).flatten()
            return b[0, keep], s[0, keep], cl[0, keep].long()
        flat = boxes.reshape(-1, 4)
        shifted = flat
        if c > 1:  # one single-class NMS over boxes shifted by class beyond each other's coordinates
            offset = torch.arange(c, dtype=boxes.dtype, device=boxes.device)[:, None] * float(max(size) + 1)
            shifted = (boxes + offset).reshape(-1, 4)
        keep = nms(shifted, scores.reshape(-1), iou, score_threshold, limit)
        cls = keep - torch.div(keep, c, rounding_mode="floor") * c
        return flat[keep], scores.reshape(-1)[keep], cls

    def _proposals(self, logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor], size: tuple[int, int],
                   pre: int, post: int) -> Tensor:
        """One image's proposals ``[P, 4]`` from per-level ``logits [hwA]``, ``deltas [hwA, 4]``."""
        boxes, scores = [], []
        for lg, dl, an in zip(logits, deltas, anchors):
            top, idx = lg.topk(min(pre, int(lg.shape[0])))
            boxes.append(clip_boxes(self.rpn_coder.decode(dl[idx], an[idx])[:, 0], *size))
            scores.append(torch.sigmoid(top))
        kept, _, _ = self._nms(torch.cat(boxes)[:, None], torch.cat(scores)[:, None], RPN_NO_SCORE_THRESHOLD,
                               self.cfg.rpn_nms_iou, post, size)
        return kept

    def _roi_features(self, p: list[Tensor], boxes: Tensor, image_index: Tensor | None, resolution: int) -> Tensor:
        from ..ops import multi_scale_roi_align  # here, not at the top: edgeseg.ops imports onnxscript

        idx = image_index if image_index is not None else boxes.new_zeros(boxes.shape[0])
        rois = torch.cat([idx.to(boxes.dtype)[:, None], boxes], 1)
        return multi_scale_roi_align(p[:4], rois, resolution, ROI_SCALES, sampling_ratio=2, aligned=True)

    # -- inference
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if self.training:
            raise ModelError("Mask R-CNN in train mode computes losses: call forward_train(images, targets)",
                             fix="call model.eval() for inference")
        if images.shape[0] != 1:
            raise InputError(f"Mask R-CNN inference takes one image at a time ([1, 3, H, W]), got {list(images.shape)}",
                             fix="run the images one by one: each has its own number of detections")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        p = self.features(images)
        logits, deltas = self.rpn(p)
        proposals = self._proposals([x[0] for x in logits], [x[0] for x in deltas], self.anchors(p), size,
                                    self.cfg.rpn_pre_nms, self.cfg.rpn_post_nms)
        cls, reg = self.box_head(self._roi_features(p, proposals, None, BOX_RESOLUTION))
        scores = F.softmax(cls, -1)[:, :-1]
        boxes = clip_boxes(self.roi_coder.decode(reg, proposals), *size)  # [P, C, 4]
        det_boxes, det_scores, det_classes = self._nms(boxes, scores, self.cfg.score_threshold, self.cfg.nms_iou,
                                                       self.cfg.max_detections, size)
        masks = self.masks(p, det_boxes, det_classes, None)
        return {"boxes": det_boxes[None], "scores": det_scores[None], "classes": det_classes[None],
                "masks": masks[None]}

    def masks(self, p: list[Tensor], boxes: Tensor, classes: Tensor, image_index: Tensor | None,
              logits: bool = False) -> Tensor:
        """The mask of each box's class ``[K, 28, 28]``: probabilities, or logits with ``logits``."""
        m = self.mask_head(self._roi_features(p, boxes, image_index, MASK_RESOLUTION))
        m = torch.gather(m, 1, classes.reshape(-1, 1, 1, 1).expand(-1, 1, MASK_SIZE, MASK_SIZE))[:, 0]
        return m if logits else torch.sigmoid(m)

    # -- training
    def forward_train(self, images: Tensor, targets: Sequence[InstanceTarget | Mapping]) -> dict[str, Tensor]:
        """Losses (each a scalar): ``loss_rpn_cls`` (objectness BCE), ``loss_rpn_box`` (smooth L1,
        beta 1/9), ``loss_cls`` (cross-entropy), ``loss_box`` (smooth L1 on the gt class's deltas),
        ``loss_mask`` (BCE on 28x28 RoIAligned gt masks), as torchvision normalises them."""
        tg = [_as_target(t, images.device) for t in targets]
        if len(tg) != images.shape[0]:
            raise InputError(f"forward_train: {images.shape[0]} images but {len(tg)} targets")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        p = self.features(images)
        logits, deltas = self.rpn(p)
        anchors = self.anchors(p)
        losses = self._rpn_losses(torch.cat(logits, 1), torch.cat(deltas, 1), torch.cat(anchors), tg)
        with torch.no_grad():
            props = [torch.cat([self._proposals([x[i] for x in logits], [x[i] for x in deltas], anchors, size,
                                                self.cfg.rpn_pre_nms_train, self.cfg.rpn_post_nms_train), t.boxes])
                     for i, t in enumerate(tg)]
        losses.update(self._roi_losses(p, props, tg))
        return losses

    def _rpn_losses(self, logits: Tensor, deltas: Tensor, anchors: Tensor, tg: list[InstanceTarget]) -> dict:
        obj, reg, sampled = logits.new_zeros(()), logits.new_zeros(()), 0
        for i, t in enumerate(tg):
            idx, label = match_boxes(t.boxes, anchors, 0.7, 0.3, low_quality=True)
            pos, neg = sample_labels(label, self.cfg.rpn_batch, self.cfg.rpn_positive_fraction)
            sel = torch.cat([pos, neg])
            target = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(logits.dtype)
            obj = obj + F.binary_cross_entropy_with_logits(logits[i, sel], target, reduction="sum")
            if len(pos):
                want = self.rpn_coder.encode(anchors[pos], t.boxes[idx[pos]])
                reg = reg + F.smooth_l1_loss(deltas[i, pos], want, beta=1 / 9, reduction="sum")
            sampled += len(sel)
        n = max(sampled, 1)
        return {"loss_rpn_cls": obj / n, "loss_rpn_box": reg / n}

    def _roi_losses(self, p: list[Tensor], props: list[Tensor], tg: list[InstanceTarget]) -> dict:
        from ..ops import roi_align

        dev = p[0].device
        boxes, image, labels, reg_t, fg_boxes, fg_image, fg_labels, mask_t = [], [], [], [], [], [], [], []
        for i, (b, t) in enumerate(zip(props, tg)):
            idx, label = match_boxes(t.boxes, b, 0.5, 0.5, low_quality=False)
            pos, neg = sample_labels(label, self.cfg.roi_batch, self.cfg.roi_positive_fraction)
            gt_cls = t.classes[idx[pos]]
            boxes.append(torch.cat([b[pos], b[neg]]))
            image.append(torch.full((len(pos) + len(neg),), i, dtype=torch.long, device=dev))
            labels.append(torch.cat([gt_cls, torch.full((len(neg),), self.num_classes, dtype=torch.long, device=dev)]))
            if len(pos):
                reg_t.append(self.roi_coder.encode(b[pos], t.boxes[idx[pos]]))
                fg_boxes.append(b[pos])
                fg_image.append(image[-1][: len(pos)])
                fg_labels.append(gt_cls)
                gt_rois = torch.cat([idx[pos].to(b.dtype)[:, None], b[pos]], 1)  # each proposal on its gt's mask
                crops = roi_align(t.masks[:, None].to(b.dtype), gt_rois, MASK_SIZE, 1.0, 2, True)[:, 0]
                mask_t.append((crops >= 0.5).to(b.dtype))
        cls, reg = self.box_head(self._roi_features(p, torch.cat(boxes), torch.cat(image), BOX_RESOLUTION))
        labels_all = torch.cat(labels)
        out = {"loss_cls": F.cross_entropy(cls, labels_all)}
        if not fg_boxes:  # zero, but still a function of every head's parameters
            zero = reg.sum() * 0 + sum(q.sum() for q in self.mask_head.parameters()) * 0
            return {**out, "loss_box": zero, "loss_mask": zero}
        fg = torch.nonzero(labels_all < self.num_classes).flatten()
        pred = reg.reshape(reg.shape[0], self.num_classes, 4)[fg, labels_all[fg]]
        out["loss_box"] = F.smooth_l1_loss(pred, torch.cat(reg_t), beta=1 / 9, reduction="sum") / labels_all.numel()
        m = self.masks(p, torch.cat(fg_boxes), torch.cat(fg_labels), torch.cat(fg_image), logits=True)
        out["loss_mask"] = F.binary_cross_entropy_with_logits(m, torch.cat(mask_t))
        return out


def _mask_rcnn(encoder: str, num_classes: int, encoder_kwargs: dict | None = None, **kw) -> MaskRCNN:
    return MaskRCNN(create_encoder(encoder, output_stride=32, **(encoder_kwargs or {})), num_classes, **kw)


@register_model(task="instance", arch="mask_rcnn", encoder="resnet50")
def mask_rcnn_r50_fpn(num_classes: int = 80, **kw) -> MaskRCNN:
    """Mask R-CNN on ResNet-50: FPN 256, box head 2x1024 FC, mask head 4x256 convs (Detectron2's R50-FPN)."""
    return _mask_rcnn("resnet50", num_classes, **kw)


@register_model(task="instance", arch="mask_rcnn", encoder="resnet18")
def mask_rcnn_r18_fpn(num_classes: int = 80, **kw) -> MaskRCNN:
    """Mask R-CNN on ResNet-18: FPN 128, box head 2x512 FC, mask head 4x128 convs."""
    return _mask_rcnn("resnet18", num_classes, **{"fpn_channels": 128, "box_fc": 512, "mask_channels": 128, **kw})


@register_model(task="instance", arch="mask_rcnn", encoder="mobilenetv2")
def mask_rcnn_mbv2_fpn(num_classes: int = 80, **kw) -> MaskRCNN:
    """Mask R-CNN on MobileNetV2: FPN 128, box head 2x512 FC, mask head 4x128 convs."""
    return _mask_rcnn("mobilenetv2", num_classes, **{"fpn_channels": 128, "box_fc": 512, "mask_channels": 128, **kw})


@register_model(task="instance", arch="mask_rcnn", encoder="test_resnet")
def test_mask_rcnn(num_classes: int = 3, **kw) -> MaskRCNN:
    """Tiny Mask R-CNN for tests: 8 channels, anchors 8..128 px, 2 mask convs, K <= 20."""
    kw = {"fpn_channels": 8, "box_fc": 32, "mask_channels": 8, "mask_convs": 2, "anchor_sizes": (8, 16, 32, 64, 128),
          "rpn_pre_nms": 200, "rpn_post_nms": 50, "rpn_pre_nms_train": 200, "rpn_post_nms_train": 100,
          "max_detections": 20, "rpn_batch": 64, "roi_batch": 64, **kw}
    return _mask_rcnn("test_resnet", num_classes, **kw)
