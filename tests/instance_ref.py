"""An independent decode of Ultralytics YOLO-seg ONNX exports, written from Ultralytics' documented
post-processing (``ultralytics.utils.ops``: ``LetterBox``, ``non_max_suppression``,
``process_mask`` with ``upsample=True``, ``scale_masks``, ``scale_boxes``) in torch, sharing no
code with :mod:`edgeseg.decode.instance`. Used by the tests and by ``tools/bench/instance.py`` as
the reference the SDK's decode is compared with (mask AP within 0.3)."""
from __future__ import annotations

import numpy as np


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Ultralytics' ``LetterBox(auto=False, scaleup=True, center=True)``: (canvas, gain, (pad_w, pad_h))."""
    import cv2

    h, w = image.shape[:2]
    r = min(size[0] / h, size[1] / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (size[1] - new_w) / 2, (size[0] - new_h) / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    canvas = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return canvas, r, (dw, dh)


def _nms(boxes, scores, iou):
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(int(i))
        if order.numel() == 1:
            break
        rest = order[1:]
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(1)
        a = (boxes[i, 2:] - boxes[i, :2]).prod()
        b = (boxes[rest, 2:] - boxes[rest, :2]).prod(1)
        order = rest[inter / (a + b - inter) <= iou]
    return torch.tensor(keep, dtype=torch.long)


def yolo_seg_reference(session, image: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                       nc: int = 80, retina: bool = False, end2end: bool = False) -> dict:
    """``{"boxes": [N, 4] xyxy, "scores", "classes", "masks": bool [N, H, W]}`` for an RGB image.
    ``retina``: Ultralytics' ``retina_masks=True`` path (``process_mask_native``: prototype masks
    scaled to the image, then cropped by the image-pixel boxes), else its default ``process_mask``
    (cropped at prototype resolution, upsampled to the network size, then scaled to the image).
    ``end2end``: the detections are ``[1, K, 6 + nm]`` rows ``x1, y1, x2, y2, conf, class, coeffs``
    (YOLO26's default export): Ultralytics' predictor keeps the rows above ``conf``, the first
    ``max_det`` of them, without NMS."""
    import torch
    import torch.nn.functional as F

    inp = session.get_inputs()[0]
    size = tuple(inp.shape[2:])
    canvas, gain, (dw, dh) = letterbox(image, size)
    x = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255.0
    pred, protos = (torch.from_numpy(o) for o in session.run(None, {inp.name: x.numpy()}))
    if end2end:
        p = pred[0][pred[0][:, 4] > conf][:max_det]
        xyxy, score, j, coef = p[:, :4], p[:, 4], p[:, 5].long(), p[:, 6:]
    else:
        p = pred[0].T  # [N, 4 + nc + nm]
        box, cls, coef = p[:, :4], p[:, 4:4 + nc], p[:, 4 + nc:]
        score, j = cls.max(1)
        keep = score > conf
        box, score, j, coef = box[keep], score[keep], j[keep], coef[keep]
        xyxy = torch.cat([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1)
        order = torch.argsort(score, descending=True, stable=True)[:30000]
        xyxy, score, j, coef = xyxy[order], score[order], j[order], coef[order]
        k = _nms(xyxy + j[:, None].float() * 7680, score, iou)[:max_det]
        xyxy, score, j, coef = xyxy[k], score[k], j[k], coef[k]
    h, w = image.shape[:2]
    b = xyxy.clone()  # scale_boxes: remove the padding, divide by the gain, clip
    b[:, [0, 2]] -= round(dw - 0.1)
    b[:, [1, 3]] -= round(dh - 0.1)
    b /= gain
    b[:, [0, 2]] = b[:, [0, 2]].clamp(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clamp(0, h)
    if retina:
        return {"boxes": b.numpy(), "scores": score.numpy(), "classes": j.numpy().astype(np.int32),
                "masks": _native_masks(protos[0], coef, b, (h, w))}
    # process_mask(upsample=True): masks at prototype resolution, cropped by the downscaled boxes,
    # upsampled to the network size, thresholded at 0 (logits)
    c, mh, mw = protos[0].shape
    masks = (coef @ protos[0].float().view(c, -1)).view(-1, mh, mw)
    down = xyxy.clone()
    down[:, [0, 2]] *= mw / size[1]
    down[:, [1, 3]] *= mh / size[0]
    r = torch.arange(mw, dtype=down.dtype)[None, None, :]
    cc = torch.arange(mh, dtype=down.dtype)[None, :, None]
    x1, y1, x2, y2 = (down[:, i, None, None] for i in range(4))
    masks = masks * ((r >= x1) * (r < x2) * (cc >= y1) * (cc < y2))
    if len(masks):
        masks = F.interpolate(masks[None], size, mode="bilinear", align_corners=False)[0]
    masks = masks > 0.0
    # scale_masks: cut the letterbox padding, resize to the image, threshold at 0.5
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    bottom, right = size[0] - int(round(dh + 0.1)), size[1] - int(round(dw + 0.1))
    m = masks[:, top:bottom, left:right].float()
    if len(m):
        m = F.interpolate(m[None], (h, w), mode="bilinear", align_corners=False)[0]
    return {"boxes": b.numpy(), "scores": score.numpy(), "classes": j.numpy().astype(np.int32),
            "masks": (m > 0.5).numpy() if len(m) else np.zeros((0, h, w), bool)}


def _native_masks(protos, coef, boxes, shape: tuple[int, int]) -> np.ndarray:
    """``process_mask_native``: logits at prototype resolution, the letterbox padding cut at that
    resolution (``scale_masks``), bilinear to the image, cropped by the boxes, thresholded at 0."""
    import torch.nn.functional as F
    import torch

    c, mh, mw = protos.shape
    if not len(coef):
        return np.zeros((0, *shape), bool)
    masks = (coef @ protos.float().view(c, -1)).view(-1, mh, mw)
    h, w = shape
    gain = min(mh / h, mw / w)
    pad_w, pad_h = (mw - w * gain) / 2, (mh - h * gain) / 2
    top, left = int(round(pad_h - 0.1)), int(round(pad_w - 0.1))
    bottom, right = mh - int(round(pad_h + 0.1)), mw - int(round(pad_w + 0.1))
    masks = F.interpolate(masks[None, :, top:bottom, left:right], shape, mode="bilinear", align_corners=False)[0]
    r = torch.arange(w, dtype=boxes.dtype)[None, None, :]
    cc = torch.arange(h, dtype=boxes.dtype)[None, :, None]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    masks = masks * ((r >= x1) * (r < x2) * (cc >= y1) * (cc < y2))
    return (masks > 0.0).numpy()


def make_end2end(src, dst, max_det: int = 300) -> None:
    """Rewrite an Ultralytics YOLOv8/v11-seg ONNX export (``[1, 4 + nc + nm, N]`` + prototypes) into
    the end-to-end layout YOLO26 exports by default: ``[1, max_det, 6 + nm]`` rows ``x1, y1, x2, y2,
    score, class id, coefficients``, the top ``max_det`` anchors by their best class score (no NMS:
    a v8 head keeps its duplicates, which is fine for checking a decoder), with ``end2end=True``
    in the metadata. Plain ONNX operators appended to the graph, as Ultralytics' own top-k head is."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(src))
    g = m.graph
    det = g.output[0].name
    nm = [d.dim_value for d in g.output[1].type.tensor_type.shape.dim][1]
    f = [d.dim_value for d in g.output[0].type.tensor_type.shape.dim][1]
    nc = f - 4 - nm

    def const(name, values, dtype=TensorProto.INT64):
        g.initializer.append(helper.make_tensor(name, dtype, [len(values)], values))
        return name

    nodes = [
        helper.make_node("Transpose", [det], ["e2e_t"], perm=[0, 2, 1]),
        helper.make_node("Split", ["e2e_t", const("e2e_split", [2, 2, nc, nm])], ["e2e_xy", "e2e_wh", "e2e_cls", "e2e_coef"],
                         axis=2),
        helper.make_node("Mul", ["e2e_wh", const("e2e_half", [0.5], TensorProto.FLOAT)], ["e2e_hwh"]),
        helper.make_node("Sub", ["e2e_xy", "e2e_hwh"], ["e2e_p1"]),
        helper.make_node("Add", ["e2e_xy", "e2e_hwh"], ["e2e_p2"]),
        helper.make_node("ReduceMax", ["e2e_cls", const("e2e_ax2", [2])], ["e2e_score"], keepdims=1),
        helper.make_node("ArgMax", ["e2e_cls"], ["e2e_j"], axis=2, keepdims=1),
        helper.make_node("Cast", ["e2e_j"], ["e2e_jf"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["e2e_p1", "e2e_p2", "e2e_score", "e2e_jf", "e2e_coef"], ["e2e_rows"], axis=2),
        helper.make_node("Squeeze", ["e2e_score", const("e2e_ax02", [0, 2])], ["e2e_s1"]),
        helper.make_node("TopK", ["e2e_s1", const("e2e_k", [max_det])], ["e2e_top", "e2e_idx"], axis=0, largest=1, sorted=1),
        helper.make_node("Gather", ["e2e_rows", "e2e_idx"], ["output0_e2e"], axis=1),
    ]
    g.node.extend(nodes)
    out = helper.make_tensor_value_info("output0_e2e", TensorProto.FLOAT, [1, max_det, 6 + nm])
    g.output.remove(g.output[0])
    g.output.insert(0, out)
    props = {p.key: p.value for p in m.metadata_props}
    props["end2end"] = "True"
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))


YOLACT_MEAN, YOLACT_STD = (123.68, 116.78, 103.94), (58.40, 57.12, 57.38)


def yolact_reference(session, image: np.ndarray, conf: float = 0.25, iou: float = 0.5, max_det: int = 100,
                     priors: bool = False) -> dict:
    """An independent decode of a YOLACT-layout ONNX model (``conf [1, N, nc+1]`` with the background
    first, ``boxes [1, N, 4]`` relative ``x1, y1, x2, y2`` — or ``loc`` offsets with a ``priors``
    output when ``priors`` — ``mask [1, N, nm]``, ``proto [1, h, w, nm]``), written from YOLACT's
    ``FastBaseTransform``, ``decode`` and ``postprocess`` in torch: plain resize to the input size,
    RGB, ``(pixel - mean) / std``; best object class per box, greedy per-class NMS (YOLACT's
    ``traditional_nms``), masks ``proto @ coefficients`` interpolated to the image and cut to the box
    in image pixels (``x1 <= x < x2``), positive logits kept."""
    import cv2
    import torch
    import torch.nn.functional as F

    inp = session.get_inputs()[0]
    size = tuple(inp.shape[2:])
    h, w = image.shape[:2]
    x = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (x - np.array(YOLACT_MEAN, np.float32)) / np.array(YOLACT_STD, np.float32)
    outs = dict(zip([o.name for o in session.get_outputs()],
                    session.run(None, {inp.name: x.transpose(2, 0, 1)[None].copy()})))
    cf = torch.from_numpy(outs["conf"][0])
    coef = torch.from_numpy(outs["mask"][0])
    proto = torch.from_numpy(outs["proto"][0]).permute(2, 0, 1)  # [nm, h, w]
    if priors:
        pri = next(v for v in outs.values() if v.ndim == 2)  # [N, 4] (torch's exporter renames a constant output)
        loc, p = torch.from_numpy(outs["loc"][0]), torch.from_numpy(pri)
        c = p[:, :2] + loc[:, :2] * 0.1 * p[:, 2:]
        ext = p[:, 2:] * torch.exp(loc[:, 2:] * 0.2)
        rel = torch.cat([c - ext / 2, c + ext / 2], 1)
    else:
        rel = torch.from_numpy(outs["boxes"][0])
    score, j = cf[:, 1:].max(1)
    keep = score > conf
    rel, score, j, coef = rel[keep], score[keep], j[keep], coef[keep]
    net = rel * torch.tensor([size[1], size[0], size[1], size[0]], dtype=rel.dtype)
    order = torch.argsort(score, descending=True, stable=True)
    net, score, j, coef = net[order], score[order], j[order], coef[order]
    k = _nms(net + j[:, None].float() * 4096, score, iou)[:max_det]
    net, score, j, coef = net[k], score[k], j[k], coef[k]
    b = net * torch.tensor([w / size[1], h / size[0], w / size[1], h / size[0]], dtype=net.dtype)
    b[:, [0, 2]] = b[:, [0, 2]].clamp(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clamp(0, h)
    if not len(coef):
        masks = np.zeros((0, h, w), bool)
    else:
        logits = (coef @ proto.reshape(proto.shape[0], -1)).reshape(-1, *proto.shape[1:])
        logits = F.interpolate(logits[None], (h, w), mode="bilinear", align_corners=False)[0]
        r = torch.arange(w, dtype=b.dtype)[None, None, :]
        cc = torch.arange(h, dtype=b.dtype)[None, :, None]
        x1, y1, x2, y2 = (b[:, i, None, None] for i in range(4))
        masks = ((logits > 0) & (r >= x1) & (r < x2) & (cc >= y1) & (cc < y2)).numpy()
    return {"boxes": b.numpy(), "scores": score.numpy(), "classes": j.numpy().astype(np.int32), "masks": masks}


def assert_same_detections(ours, ref, where: str, min_mask_iou: float, min_mask_area: int = 0) -> int:
    """edgeseg's result equals an independent decode's: count, classes, scores, boxes and (masks of at
    least ``min_mask_area`` reference pixels) mask IoU; returns the count."""
    from edgeseg.decode.instance import box_iou

    assert len(ours) == len(ref["scores"]), where
    if not len(ours):
        return 0
    assert ours.classes.tolist() == ref["classes"].tolist(), where
    np.testing.assert_allclose(ours.scores, ref["scores"], atol=1e-5)
    assert np.diag(box_iou(ours.boxes, ref["boxes"])).min() > 0.99, where
    iou = (ours.masks & ref["masks"]).sum((1, 2)) / np.maximum((ours.masks | ref["masks"]).sum((1, 2)), 1)
    big = ref["masks"].sum((1, 2)) >= min_mask_area
    assert iou[big].min() > min_mask_iou, (where, iou.round(3).tolist())
    return len(ours)
