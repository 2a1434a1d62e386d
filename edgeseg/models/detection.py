"""Two-stage detection pieces shared by box-based instance models (Mask R-CNN): the feature pyramid,
anchors, the box coder, IoU matching and sampling, and non-maximum suppression that exports.

Papers: Lin et al., "Feature Pyramid Networks for Object Detection" (CVPR 2017); Ren et al.,
"Faster R-CNN" (NeurIPS 2015) for anchors, the box coder and the matcher.

Boxes are ``xyxy`` in input-image pixels everywhere (a box's width is ``x2 - x1``, no +1).

NMS comes in two forms, each a ``torch.library`` custom op with an eager reference that reproduces
its runtime's rules exactly, and an ONNX translation (:func:`detection_translation_table`):

* :func:`nms` -> ONNX ``NonMaxSuppression`` (opset 10+): keeps ``score > score_threshold``,
  suppresses ``IoU > iou_threshold``, equal scores in index order (ONNX Runtime's rules), output
  indices best first, a data-dependent count (0 to ``max_output``).
* :func:`efficient_nms` -> TensorRT's ``EfficientNMS_TRT`` plugin (TensorRT >= 8.0; fields and
  outputs as in NVIDIA/TensorRT ``plugin/efficientNMSPlugin/README.md``; rules as its
  ``efficientNMSInference.cu`` computes them): keeps ``score >= score_threshold``, suppresses
  ``IoU >= iou_threshold`` within a class, considers the best 4096 candidates, outputs zero-padded
  to ``max_output_boxes``. The node goes in the default ONNX
  domain, as NVIDIA's samples write it: TensorRT's parser imports an op it does not know as the
  plugin of that name, and from 10.10 reads the plugin namespace from the node's domain (the
  standard plugins live in namespace ""). The translation writes the node in a private domain
  (:data:`PLUGIN_EXPORT_DOMAIN`), which ONNX's version converter leaves alone when an export asks
  for opset 17 (it rejects a default-domain op it has no schema for); the exporter then moves it
  to the default domain with :func:`finalize_plugin_nodes`. ONNX Runtime cannot run such a graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["BoxCoder", "grid_anchors", "box_iou", "clip_boxes", "match_boxes", "sample_labels", "nms",
           "nms_reference", "efficient_nms", "efficient_nms_reference", "detection_translation_table",
           "finalize_plugin_nodes", "EFFICIENT_NMS_CANDIDATES", "PLUGIN_EXPORT_DOMAIN"]

# the candidates the plugin ranks: EfficientNMSPlugin::initialize() sets numSelectedBoxes to 5000 on devices with
# 64 K registers per block (Xavier, Orin, desktop GPUs; 2000 on a TX1/TX2); its README's "4096" is the older default
EFFICIENT_NMS_CANDIDATES = 5000
PLUGIN_EXPORT_DOMAIN = "edgeseg.tensorrt_plugin"  # where the plugin node waits until finalize_plugin_nodes


# ---- anchors and the box coder ------------------------------------------------------------------------
def cell_anchors(size: float, ratios: tuple[float, ...]) -> Tensor:
    """``[A, 4]`` anchors centred on 0 of area ``size**2`` and height/width ``ratios`` (Detectron2)."""
    out = []
    for r in ratios:
        w = math.sqrt(size * size / r)
        out.append((-w / 2, -r * w / 2, w / 2, r * w / 2))
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(shapes: list[tuple[int, int]], strides: tuple[int, ...], sizes: tuple[float, ...],
                 ratios: tuple[float, ...]) -> list[Tensor]:
    """Per level ``[h * w * A, 4]`` anchors, location-major then anchor (the order of a head output
    ``[N, A, h, w]`` permuted to ``[N, h, w, A]``). Centres at ``(x * stride, y * stride)``."""
    out = []
    for (h, w), stride, size in zip(shapes, strides, sizes):
        base = cell_anchors(size, ratios)
        ys = torch.arange(h, dtype=torch.float32) * stride
        xs = torch.arange(w, dtype=torch.float32) * stride
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([sx, sy, sx, sy], -1).reshape(-1, 1, 4)
        out.append((shifts + base[None]).reshape(-1, 4))
    return out


@dataclass(frozen=True)
class BoxCoder:
    """Faster R-CNN's box parametrisation: ``(dx, dy, dw, dh) = weights * (dctr / size, log(size ratio))``;
    ``dw, dh`` are clamped at ``log(1000 / 16)`` before ``exp`` when decoding (Detectron2)."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    scale_clamp: float = math.log(1000.0 / 16)

    def encode(self, src: Tensor, dst: Tensor) -> Tensor:
        """Deltas ``[N, 4]`` that take boxes ``src [N, 4]`` to ``dst [N, 4]``."""
        wx, wy, ww, wh = self.weights
        sw, sh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
        sx, sy = src[:, 0] + 0.5 * sw, src[:, 1] + 0.5 * sh
        tw, th = dst[:, 2] - dst[:, 0], dst[:, 3] - dst[:, 1]
        tx, ty = dst[:, 0] + 0.5 * tw, dst[:, 1] + 0.5 * th
        return torch.stack([wx * (tx - sx) / sw, wy * (ty - sy) / sh, ww * torch.log(tw / sw),
                            wh * torch.log(th / sh)], 1)

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """``deltas [N, k * 4]`` applied to ``boxes [N, 4]`` -> ``[N, k, 4]``."""
        wx, wy, ww, wh = self.weights
        d = deltas.reshape(deltas.shape[0], -1, 4)
        w, h = boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]
        cx, cy = boxes[:, 0:1] + 0.5 * w, boxes[:, 1:2] + 0.5 * h
        pcx, pcy = d[..., 0] / wx * w + cx, d[..., 1] / wy * h + cy
        pw = torch.exp(torch.clamp(d[..., 2] / ww, max=self.scale_clamp)) * w
        ph = torch.exp(torch.clamp(d[..., 3] / wh, max=self.scale_clamp)) * h
        return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], -1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clamp ``[..., 4]`` xyxy boxes to ``[0, width] x [0, height]``."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


# ---- matching and sampling (training) -----------------------------------------------------------
def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[len(a), len(b)]`` of xyxy boxes."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def match_boxes(gt: Tensor, boxes: Tensor, fg: float, bg: float, low_quality: bool) -> tuple[Tensor, Tensor]:
    """Detectron2's Matcher: ``(matched gt index [N], label [N])`` with label 1 (IoU >= ``fg``), 0
    (IoU < ``bg``) or -1 (between: ignored). ``low_quality``: each gt's best boxes (ties included)
    are positive even below ``fg`` (the RPN rule). No gt: every box is negative."""
    n = boxes.shape[0]
    if gt.shape[0] == 0:
        zeros = torch.zeros(n, dtype=torch.long, device=boxes.device)
        return zeros, zeros.clone()
    iou = box_iou(gt, boxes)
    best, idx = iou.max(0)
    label = torch.full((n,), -1, dtype=torch.long, device=boxes.device)
    label[best < bg] = 0
    label[best >= fg] = 1
    if low_quality:
        top = iou.max(1, keepdim=True).values
        hit = ((iou == top) & (top > 0)).any(0)
        label[hit] = 1
    return idx, label


def sample_labels(label: Tensor, count: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Random positives (at most ``count * positive_fraction``) and negatives filling ``count``:
    ``(positive indices, negative indices)``."""
    pos = torch.nonzero(label == 1).flatten()
    neg = torch.nonzero(label == 0).flatten()
    n_pos = min(int(count * positive_fraction), pos.numel())
    n_neg = min(count - n_pos, neg.numel())
    return (pos[torch.randperm(pos.numel(), device=pos.device)[:n_pos]],
            neg[torch.randperm(neg.numel(), device=neg.device)[:n_neg]])


# ---- NMS: ONNX NonMaxSuppression ------------------------------------------------------------------
def _corners(b: np.ndarray) -> tuple[np.ndarray, ...]:
    return (np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 0], b[:, 2]),
            np.maximum(b[:, 1], b[:, 3]))


def _iou_row(c: tuple[np.ndarray, ...], i: int, rest: np.ndarray) -> np.ndarray:
    """float32 IoU of box ``i`` with boxes ``rest``, 0 where either area or the overlap is empty
    (ONNX Runtime's ``SuppressByIOU`` and EfficientNMS's ``IOU`` agree on these cases)."""
    x1, y1, x2, y2 = c
    iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
    ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
    inter = (iw * ih).astype(np.float32)
    area_i = (x2[i] - x1[i]) * (y2[i] - y1[i])
    area_r = (x2[rest] - x1[rest]) * (y2[rest] - y1[rest])
    union = (area_i + area_r - inter).astype(np.float32)
    ok = (iw > 0) & (ih > 0) & (area_i > 0) & (area_r > 0) & (union > 0)
    return np.where(ok, inter / np.where(ok, union, np.float32(1)), np.float32(0)).astype(np.float32)


def _greedy(b: np.ndarray, iou_threshold: float, limit: int, strict: bool) -> list[int]:
    """Greedy NMS over boxes already in score order: positions kept (at most ``limit``)."""
    c = _corners(b)
    alive = np.ones(len(b), bool)
    keep: list[int] = []
    thr = np.float32(iou_threshold)
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if len(rest):
            iou = _iou_row(c, i, rest)
            alive[rest[iou > thr if strict else iou >= thr]] = False
    return keep


def nms_reference(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float,
                  max_output: int) -> Tensor:
    """ONNX ``NonMaxSuppression`` for one image and one class, as ONNX Runtime computes it: int64
    indices into ``boxes [N, 4]`` of the kept boxes, best score first."""
    s = scores.detach().float().cpu().numpy()
    cand = np.flatnonzero(s > np.float32(score_threshold))
    order = cand[np.argsort(-s[cand], kind="stable")]
    b = boxes.detach().float().cpu().numpy()[order]
    keep = _greedy(b, iou_threshold, max_output, strict=True) if max_output > 0 else []
    return torch.from_numpy(order[np.asarray(keep, np.int64)].astype(np.int64)).to(boxes.device)


@torch.library.custom_op("edgeseg::box_nms", mutates_args=())
def _nms_op(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float, max_output: int) -> Tensor:
    return nms_reference(boxes, scores, iou_threshold, score_threshold, max_output)


@_nms_op.register_fake
def _nms_fake(boxes, scores, iou_threshold, score_threshold, max_output):
    n = torch.library.get_ctx().new_dynamic_size(max=max_output)
    return boxes.new_empty((n,), dtype=torch.int64)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float, max_output: int) -> Tensor:
    """Indices ``int64 [S]`` (0 <= S <= ``max_output``) of the boxes ``[N, 4]`` that survive greedy
    NMS, best ``scores [N]`` first; exports as ONNX ``NonMaxSuppression`` (module doc: rules)."""
    return _nms_op(boxes, scores, float(iou_threshold), float(score_threshold), int(max_output))


# ---- NMS: TensorRT EfficientNMS_TRT ---------------------------------------------------------------------
def efficient_nms_reference(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float,
                            max_output_boxes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What ``EfficientNMS_TRT`` (background_class -1, score_activation 0, box_coding 0, class-aware)
    computes: ``boxes [B, N, 4]`` (shared by all classes) or ``[B, N, C, 4]`` (one per class),
    ``scores [B, N, C]`` -> ``num_detections int32 [B, 1]``, ``detection_boxes [B, M, 4]``,
    ``detection_scores [B, M]``, ``detection_classes int32 [B, M]`` (zero padded, best first)."""
    bsz, n, c = scores.shape
    m = int(max_output_boxes)
    num = torch.zeros(bsz, 1, dtype=torch.int32)
    out_b, out_s = boxes.new_zeros(bsz, m, 4), scores.new_zeros(bsz, m)
    out_c = torch.zeros(bsz, m, dtype=torch.int32)
    for i in range(bsz):
        s = scores[i].detach().float().cpu().numpy().reshape(-1)  # element = anchor * C + class
        cand = np.flatnonzero(s >= np.float32(score_threshold))
        cand = cand[np.argsort(-s[cand], kind="stable")][:EFFICIENT_NMS_CANDIDATES]
        bx = boxes[i].detach().float().cpu().numpy().reshape(-1, 4)
        bx = bx[cand] if boxes.dim() == 4 else bx[cand // c]
        kept = []
        for cls in np.unique(cand % c):
            pos = np.flatnonzero(cand % c == cls)
            kept += [pos[j] for j in _greedy(bx[pos], iou_threshold, m, strict=False)]
        kept = sorted(kept)[:m]  # positions in the sorted candidate list: best first
        k = len(kept)
        num[i, 0] = k
        out_b[i, :k] = torch.from_numpy(bx[kept]).to(boxes)
        out_s[i, :k] = torch.from_numpy(s[cand[kept]]).to(scores)
        out_c[i, :k] = torch.from_numpy((cand[kept] % c).astype(np.int32))
    return num.to(boxes.device), out_b, out_s, out_c.to(boxes.device)


@torch.library.custom_op("edgeseg::efficient_nms_trt", mutates_args=())
def _efficient_nms_op(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float,
                      max_output_boxes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return efficient_nms_reference(boxes, scores, score_threshold, iou_threshold, max_output_boxes)


@_efficient_nms_op.register_fake
def _efficient_nms_fake(boxes, scores, score_threshold, iou_threshold, max_output_boxes):
    b, m = scores.shape[0], max_output_boxes
    return (scores.new_empty((b, 1), dtype=torch.int32), scores.new_empty((b, m, 4)), scores.new_empty((b, m)),
            scores.new_empty((b, m), dtype=torch.int32))


def efficient_nms(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float,
                  max_output_boxes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TensorRT's ``EfficientNMS_TRT`` (:func:`efficient_nms_reference` says what it computes)."""
    return _efficient_nms_op(boxes, scores, float(score_threshold), float(iou_threshold), int(max_output_boxes))


# ---- ONNX ---------------------------------------------------------------------------------------------
def _efficient_nms_schema():
    """An ONNX schema for the plugin node, so that onnxscript can build it; never registered."""
    from onnx.defs import OpSchema

    p, a, t = OpSchema.FormalParameter, OpSchema.Attribute, OpSchema.AttrType
    attrs = [a("score_threshold", t.FLOAT, ""), a("iou_threshold", t.FLOAT, ""), a("max_output_boxes", t.INT, ""),
             a("background_class", t.INT, ""), a("score_activation", t.INT, ""), a("box_coding", t.INT, ""),
             a("plugin_version", t.STRING, "")]
    return OpSchema("EfficientNMS_TRT", PLUGIN_EXPORT_DOMAIN, 1, doc="TensorRT EfficientNMS plugin (not an ONNX op)",
                    inputs=[p("boxes", "T"), p("scores", "T")],
                    outputs=[p("num_detections", "tensor(int32)"), p("detection_boxes", "T"),
                             p("detection_scores", "T"), p("detection_classes", "tensor(int32)")],
                    type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "boxes and scores")],
                    attributes=attrs)


def detection_translation_table() -> dict:
    """``custom_translation_table`` entries for :func:`nms` and :func:`efficient_nms` (merge with
    :func:`edgeseg.ops.onnx_translation_table` when exporting a detector; after the export, and after
    any opset conversion, call :func:`finalize_plugin_nodes` on the ONNX model)."""
    from onnxscript import opset19 as op
    from onnxscript import values

    plugin = values.Op(values.Opset(PLUGIN_EXPORT_DOMAIN, 1), "EfficientNMS_TRT", _efficient_nms_schema())

    def nms_onnx(boxes, scores, iou_threshold, score_threshold, max_output):
        selected = op.NonMaxSuppression(op.Unsqueeze(boxes, op.Constant(value_ints=[0])),
                                        op.Unsqueeze(scores, op.Constant(value_ints=[0, 1])),
                                        op.Constant(value_ints=[int(max_output)]),
                                        op.Constant(value_floats=[float(iou_threshold)]),
                                        op.Constant(value_floats=[float(score_threshold)]))
        return op.Gather(selected, op.Constant(value_int=2), axis=1)  # [S, 3] -> box index column

    def efficient_nms_onnx(boxes, scores, score_threshold, iou_threshold, max_output_boxes):
        return plugin(boxes, scores, score_threshold=float(score_threshold), iou_threshold=float(iou_threshold),
                      max_output_boxes=int(max_output_boxes), background_class=-1, score_activation=0, box_coding=0,
                      plugin_version="1")

    return {torch.ops.edgeseg.box_nms.default: nms_onnx,
            torch.ops.edgeseg.efficient_nms_trt.default: efficient_nms_onnx}


def finalize_plugin_nodes(model) -> int:
    """Move the TensorRT plugin nodes of an exported ``onnx.ModelProto`` from
    :data:`PLUGIN_EXPORT_DOMAIN` to the default domain, where TensorRT's parser looks them up, and
    drop that domain's opset import. Returns the number of nodes moved (in place)."""
    moved = 0
    for node in model.graph.node:
        if node.domain == PLUGIN_EXPORT_DOMAIN:
            node.domain = ""
            moved += 1
    keep = [o for o in model.opset_import if o.domain != PLUGIN_EXPORT_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return moved
