"""Box-and-mask instance exports as MMDeploy, torchvision and Detectron2 write them, built here from a Mask R-CNN
with known weights, and an independent decode of them written from MMDetection's and torchvision's
documented post-processing (``rescale`` of boxes by the scale factor, ``_do_paste_mask`` by
``grid_sample``, masks at the original size thresholded at 0.5), in torch, sharing no code with
:mod:`edgeseg.decode.instance` or :mod:`edgeseg.export.import_boxmask`."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MMDET_MEAN = (123.675, 116.28, 103.53)
MMDET_STD = (58.395, 57.12, 57.375)
FORMS = ("mmdeploy-roi", "mmdeploy-full", "torchvision", "detectron2")


def paste(masks: torch.Tensor, boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[K, M, M]`` masks over ``boxes [K, 4]`` -> ``[K, h, w]``: each output pixel centre sampled
    bilinearly in its box's mask, zero outside (MMDetection's ``_do_paste_mask``, ``skip_empty=False``)."""
    k = masks.shape[0]
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
    gy = (ys[None] - y0) / (y1 - y0) * 2 - 1
    gx = (xs[None] - x0) / (x1 - x0) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(k, h, w), gy[:, :, None].expand(k, h, w)], dim=3)
    return F.grid_sample(masks[:, None].float(), grid, align_corners=False)[:, 0]


class Foreign(nn.Module):
    """A Mask R-CNN's outputs in another exporter's form (:data:`FORMS`). ``torchvision``: the model
    normalises its 0..1 input itself, as torchvision's detection models do."""

    def __init__(self, model: nn.Module, form: str):
        super().__init__()
        self.model, self.form = model.eval(), form
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if self.form == "torchvision":
            x = (x - self.mean) / self.std
        elif self.form == "detectron2":  # BGR 0-255 in, normalised inside the graph
            x = (x.flip(1) / 255.0 - self.mean) / self.std
        out = self.model(x)
        boxes, scores, classes = out["boxes"][0], out["scores"][0], out["classes"][0]
        # untrained mask heads give ~0.5 everywhere: each box's mask is an ellipse instead, its size set by the
        # score (smooth probabilities, so pasting and resizing decide which pixels pass 0.5)
        t = (torch.arange(28, dtype=torch.float32) + 0.5) / 14 - 1
        r2 = t[None, :, None] ** 2 + (t[None, None, :] / 0.8) ** 2
        masks = torch.sigmoid(8 * (0.3 + 2 * scores[:, None, None] - r2))
        dets = torch.cat([boxes, scores[:, None]], 1)[None]
        if self.form == "mmdeploy-roi":
            return {"dets": dets, "labels": classes.long()[None], "masks": masks[None]}
        if self.form == "detectron2":  # the Instances fields in name order, per-box masks
            return {"pred_boxes": boxes, "pred_classes": classes.long(), "pred_masks": masks[:, None], "scores": scores,
                    "image_size": torch.tensor([h, w])}  # TracingAdapter appends it
        full = paste(masks, boxes, h, w)
        if self.form == "mmdeploy-full":  # ONNX Runtime configs threshold in the graph: bool masks
            return {"dets": dets, "labels": classes.long()[None], "masks": (full >= 0.5)[None]}
        return {"boxes": boxes, "labels": classes.long() + 1, "scores": scores, "masks": full[:, None]}


OUTPUTS = {"mmdeploy-roi": ("dets", "labels", "masks"), "mmdeploy-full": ("dets", "labels", "masks"),
           "torchvision": ("boxes", "labels", "scores", "masks"),
           "detectron2": ("pred_boxes", "pred_classes", "pred_masks", "scores", "image_size")}


def export_foreign(model: nn.Module, path, form: str, size: tuple[int, int]) -> None:
    """Write ``model`` as the ``form`` export at network size ``(h, w)`` (torchvision's: input ``image
    [3, h, w]``, as its exports without dynamic axes have)."""
    import onnx
    from onnx import helper, numpy_helper

    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.structures import ImageShape, InputSpec

    export_onnx(Foreign(model, form), path, InputSpec(size=ImageShape(*size)), outputs=OUTPUTS[form])
    g = onnx.load(str(path))
    if form == "detectron2":  # torch.onnx.export without output names: numbers
        for k, o in enumerate(g.graph.output):
            new = str(3000 + 7 * k)
            for n in g.graph.node:
                n.output[:] = [new if x == o.name else x for x in n.output]
                n.input[:] = [new if x == o.name else x for x in n.input]
            for t in g.graph.initializer:  # a constant output (the image size, folded by the exporter)
                t.name = new if t.name == o.name else t.name
            o.name = new
    if form in ("torchvision", "detectron2"):  # their exports take one unbatched image
        inp = g.graph.input[0]
        g.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "unsqueeze_axes"))
        g.graph.node.insert(0, helper.make_node("Unsqueeze", ["image", "unsqueeze_axes"], [inp.name]))
        inp.CopyFrom(helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [3, *size]))
    else:
        g.graph.input[0].name = "input"  # MMDeploy's name
        for n in g.graph.node:
            n.input[:] = ["input" if i == "images" else i for i in n.input]
    onnx.save(g, str(path))


def reference(session, image: np.ndarray, form: str, size: tuple[int, int] | None, conf: float = 0.25,
              max_det: int = 100, letterbox: bool = False) -> dict[str, np.ndarray]:
    """Detections of a ``form`` export on ``image`` (RGB uint8) as MMDetection / torchvision users
    decode them: ``size`` the static network size ``(h, w)``, the image resized to it (``letterbox``:
    keeping its aspect ratio, sizes rounded half up, the image at the top-left corner and the mean pixel
    below and to the right, as their batching pads with 0 after normalising), boxes mapped back by the
    scale factor, whole-input masks cut to the image's part and resized to it; None feeds the image as it
    is (torchvision's dynamic exports). Classes as the model gives them."""
    import cv2

    ih, iw = image.shape[:2]
    h, w = size if size is not None else (ih, iw)
    top = left = 0
    ch, cw = h, w  # the part of the network input the image covers
    if letterbox and (h, w) != (ih, iw):
        r = min(h / ih, w / iw)
        ch, cw = min(h, int(ih * r + 0.5)), min(w, int(iw * r + 0.5))  # MMCV's rescale_size, Detectron2's resize
        resized = np.full((h, w, 3), (124, 116, 104), np.uint8)  # RGB mean pixel: 0 once normalised
        resized[top:top + ch, left:left + cw] = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR)
    else:
        resized = image if (h, w) == (ih, iw) else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if form == "torchvision":
        x = (resized.astype(np.float32) / 255.0).transpose(2, 0, 1)
        boxes, labels, scores, masks = session.run(None, {session.get_inputs()[0].name: x})
        masks = masks[:, 0]
    elif form == "detectron2":  # BGR, 0-255
        x = np.ascontiguousarray(resized[..., ::-1].astype(np.float32).transpose(2, 0, 1))
        boxes, labels, masks, scores = session.run(None, {session.get_inputs()[0].name: x})[:4]
        masks = masks[:, 0]
    else:
        x = ((resized.astype(np.float32) - MMDET_MEAN) / MMDET_STD).transpose(2, 0, 1)[None].astype(np.float32)
        dets, labels, masks = (o[0] for o in session.run(None, {session.get_inputs()[0].name: x}))
        boxes, scores = dets[:, :4], dets[:, 4]
    keep = np.flatnonzero(scores > conf)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
    scale = np.array([cw / iw, ch / ih, cw / iw, ch / ih], np.float32)
    boxes = (boxes[keep] - np.array([left, top, left, top], np.float32)) / scale  # MMDetection's rescale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, iw)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, ih)
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # a box wholly in the padding covers no pixel
    keep, boxes = keep[inside], boxes[inside]
    if form in ("mmdeploy-roi", "detectron2"):  # per-box masks, pasted at the image's size
        full = paste(torch.from_numpy(masks[keep]), torch.from_numpy(boxes), ih, iw).numpy() >= 0.5
    else:  # masks over the network input: the image's part, resized to the image
        m = torch.from_numpy(masks[keep, top:top + ch, left:left + cw].astype(np.float32))[:, None]
        full = F.interpolate(m, size=(ih, iw), mode="bilinear", align_corners=False)[:, 0].numpy() > 0.5
    return {"boxes": boxes, "scores": scores[keep], "classes": labels[keep], "masks": full}
