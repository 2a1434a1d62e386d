"""Box-and-mask instance models made elsewhere (Mask R-CNN, RTMDet-Ins, SOLO, ... as MMDeploy and
torchvision export them) -> the ``roi`` or ``dense`` layout edgeseg decodes.

These exports end after their own NMS, in one row per final detection:

* **MMDeploy** (``configs/mmdet/instance-seg/*_onnxruntime_*.py``): ``dets [1, K, 5]`` (``x1, y1,
  x2, y2, score`` in network-input pixels: MMDeploy exports with ``rescale=False``), ``labels [1, K]``
  (integer, 0-based class index) and ``masks [1, K, 28, 28]`` (Mask R-CNN with
  ``export_postprocess_mask=False``: each box's sigmoid mask, its class already selected) or
  ``masks [1, K, H, W]`` over the whole network input (``export_postprocess_mask=True``, the
  RTMDet-Ins and SOLO configs: probabilities, or booleans thresholded in the graph).
* **torchvision** (``torch.onnx.export(maskrcnn_resnet50_fpn(...), [image])``): the image input is
  ``[3, H, W]`` float 0..1 (resizing and normalisation happen inside the graph, the outputs are in
  the input's pixels), ``boxes [K, 4]``, ``labels [K]`` (integer; torchvision's COCO models count
  from 1 with ``__background__`` at 0: give their full category list, background included, as the
  names), ``scores [K]`` and ``masks [K, 1, H, W]`` probabilities over the whole input.
* **Detectron2** (``tools/deploy/export_model.py --export-method tracing --format onnx``): input ``[3, H,
  W]`` 0-255 BGR, float32 or uint8 (normalised inside the graph), unnamed outputs in the order its
  ``TracingAdapter`` flattens them (the ``Instances`` fields sorted by name, then the image size):
  ``pred_boxes [K, 4]``, ``pred_classes [K]`` (0-based), ``pred_masks [K, 1, 28, 28]`` (per box:
  ``do_postprocess=False``), ``scores [K]``, ``image_size [2]`` (left out); told from torchvision by
  its per-box masks (any unbatched export with per-box masks gets Detectron2's conventions).
* Any export of that shape: boxes ``[1, K, 4]`` plus ``scores [1, K]`` or ``dets [1, K, 5]``, integer
  labels, masks ``[1, K, m, m]`` per box or ``[1, K, H, W]`` over the input; or the same without the
  batch axis (masks ``[K, 1, h, w]`` or ``[K, h, w]``).

:func:`detect_boxmask_layout` tells the roles apart from one run on a test frame (an integer output
of rank 1 or 2 is what marks the family; names settle ties) and :func:`boxmask_to_layout` appends
plain ONNX operators that write edgeseg's names and ranks: ``boxes [1, K, 4]``, ``scores [1, K]``,
``classes [1, K]``, ``masks [1, K, h, w]`` (float). Per-box masks decode as the ``roi`` layout (pasted
as Detectron2 and MMDetection paste them); whole-input masks as the ``dense`` layout, keeping the
model's boxes. A ``[3, H, W]`` image input gets a batch axis in front (:func:`batch_image_input`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ExportError
from ..structures import ImageShape, pad_levels
from .graph import Appender, rename_tensor

#: The ImageNet mean pixel (RGB, 0-255, rounded: 124, 116, 104): what padding with 0 after normalising
#: (MMDetection's and torchvision's batching, Detectron2's ``ImageList``) holds before it.
MEAN_PIXEL = pad_levels((123.675, 116.28, 103.53))
#: MMDetection's pre-processing (its detectors' ``data_preprocessor``): RGB, ImageNet mean and std in
#: 0-255 units. MMDeploy's static-shape exports resize to the input size without keeping the aspect
#: ratio (its ``Resize`` gets ``keep_ratio=False`` for them), which ``resize`` reproduces; a dynamic one
#: keeps it and pads the bottom and right after normalising (``top-left``, the mean pixel).
MMDET_INPUT = dict(resize="resize", pad_value=MEAN_PIXEL, anchor="top-left", color="RGB", mean=(123.675, 116.28, 103.53),
                   std=(58.395, 57.12, 57.375), scale=1.0)
#: Detectron2's tracing exports (``tools/deploy/export_model.py --export-method tracing --format onnx``) take
#: one ``[3, H, W]`` float image in 0-255, BGR (``cfg.INPUT.FORMAT``), normalise it inside the graph, and
#: expect the shortest-edge resize done outside: letterboxed here as its ``ImageList`` pads (bottom and
#: right, 0 after normalising: the mean pixel before).
DETECTRON2_INPUT = dict(resize="letterbox", pad_value=MEAN_PIXEL, anchor="top-left", color="BGR", mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0), scale=1.0)
#: torchvision's detection models normalise and resize inside the graph: they take RGB in 0..1 (letterboxed
#: to a fixed export size as their own batching pads: bottom and right, the mean pixel).
TORCHVISION_INPUT = dict(resize="resize", pad_value=MEAN_PIXEL, anchor="top-left", color="RGB", mean=(0.0, 0.0, 0.0),
                         std=(1.0, 1.0, 1.0), scale=1.0 / 255.0)

#: Class names that name no class: the background torchvision's detectors count as label 0 and the ``N/A``
#: gaps of their 91-entry COCO list (lower case).
PLACEHOLDER_CLASSES = ("__background__", "background", "_background_", "__bg__", "bg", "n/a")

_INT = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


@dataclass(frozen=True)
class BoxMaskOutputs:
    """Which output plays which role (module doc). ``scores`` None: the score is ``boxes``' fifth
    column (``dets``). ``batched``: the outputs have the leading ``1`` axis. ``full_image``: the masks
    cover the network input (``dense``), else each its box (``roi``). ``mask_rank``: 4 or 3."""

    boxes: str
    scores: str | None
    labels: str
    masks: str
    batched: bool
    full_image: bool
    mask_rank: int
    mask_dtype: str
    box_dtype: str = "float32"
    score_dtype: str = "float32"
    labels_float: bool = False

    @property
    def layout(self) -> str:
        return "dense" if self.full_image else "roi"


def _listing(outs: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {np.asarray(v).dtype} {list(np.shape(v))}" for k, v in outs.items())


def _pick(names: list[str], hints: tuple[str, ...], role: str, fail) -> str:
    if len(names) == 1:
        return names[0]
    named = [n for n in names if any(h in n.lower() for h in hints)]
    if len(named) == 1:
        return named[0]
    raise fail(f"{len(names) or 'no'} outputs could be the {role} ({', '.join(names) or 'none'}); name it "
               f"{hints[0]!r}")


def detect_boxmask_layout(outs: dict[str, np.ndarray], net: ImageShape, where: str,
                          roi_align: bool | None = None) -> BoxMaskOutputs | None:
    """The roles of a box-and-mask export's outputs from one run (``outs``: name -> array; ``net``:
    the spatial size fed; ``roi_align``: whether the graph has a ``RoiAlign``, for
    :func:`whole_input_masks`), None when no output is integer labels (not this family), or an
    :class:`ExportError` naming every output, dtype and shape when it is one but the rest does not fit."""
    def fail(why: str) -> ExportError:
        return ExportError(f"{where}: outputs ({_listing(outs)}) are not a box-and-mask instance layout: {why}",
                           fix="expected integer labels [1, K] with dets [1, K, 5] (or boxes [1, K, 4] and scores "
                               "[1, K]) and masks [1, K, h, w], as MMDeploy exports them, or the same without the batch "
                               "axis (torchvision: boxes [K, 4], labels [K], scores [K], masks [K, 1, H, W])")

    arrays = {k: np.asarray(v) for k, v in outs.items()}
    ints = [k for k, v in arrays.items() if str(v.dtype) in _INT and v.ndim in (1, 2)]
    if not ints:  # some exporters write class ids as floats: accepted under a label-like name, whole numbers only
        ints = [k for k, v in arrays.items() if v.dtype.kind == "f" and v.ndim in (1, 2)
                and any(h in k.lower() for h in ("label", "class", "cls")) and np.array_equal(v, np.round(v))]
    if not ints:
        return None
    if len(ints) > 1:  # Detectron2's traced exports end in the image size, an int64 [2] of the input's height, width
        ints = [k for k in ints if not (arrays[k].shape == (2,) and arrays[k].tolist() == [net.height, net.width])]
    labels = _pick(ints, ("label", "class", "cls"), "class labels", fail)
    batched = arrays[labels].ndim == 2
    if batched and arrays[labels].shape[0] != 1:
        raise fail(f"labels {labels!r} has a batch of {arrays[labels].shape[0]}; edgeseg decodes one image at a time")
    k = arrays[labels].shape[-1]
    rest = {n: v for n, v in arrays.items() if n != labels}
    lead = (1,) if batched else ()
    box_like = [n for n, v in rest.items() if v.ndim == len(lead) + 2 and v.shape[-1] in (4, 5)
                and v.dtype.kind == "f" and v.shape[:-1] == (*lead, k)]
    score_like = [n for n, v in rest.items() if v.shape == (*lead, k) and v.dtype.kind == "f" and n != labels]
    mask_like = [n for n, v in rest.items() if v.ndim in ((4,) if batched else (3, 4)) and v.dtype.kind in "fbu"
                 and (v.shape[:2] == (1, k) if batched else v.shape[0] == k and (v.ndim == 3 or v.shape[1] == 1))]
    if not box_like:
        raise fail(f"no boxes: a float output {list((*lead, k, 4))} or dets {list((*lead, k, 5))}")
    if not mask_like:
        raise fail(f"no masks: an output {list((*lead, k, 'h', 'w'))}" + ("" if batched else " or [K, 1, h, w]"))
    boxes = _pick(box_like, ("det", "box", "bbox"), "boxes", fail)
    masks = _pick(mask_like, ("mask", "seg"), "masks", fail)
    scores = None
    if score_like:
        scores = _pick(score_like, ("score", "conf"), "scores", fail)
    elif arrays[boxes].shape[-1] != 5:
        raise fail(f"no scores: boxes {boxes!r} has 4 columns and no float output is {list((*lead, k))}")
    m = arrays[masks]
    full = whole_input_masks(tuple(m.shape[-2:]), net, roi_align)
    if full is None:
        raise fail(f"masks {masks!r} {list(m.shape)} neither cover the network input ({net.width}x{net.height}, or "
                   "1/2, 1/4, 1/8 of it) nor are per-box masks (square: 14x14, 28x28, 56x56)")
    return BoxMaskOutputs(boxes=boxes, scores=scores, labels=labels, masks=masks, batched=batched, full_image=full,
                          mask_rank=m.ndim, mask_dtype=str(m.dtype), box_dtype=str(arrays[boxes].dtype),
                          score_dtype=str(arrays[scores].dtype) if scores else str(arrays[boxes].dtype),
                          labels_float=arrays[labels].dtype.kind == "f")


#: Per-box mask sizes (Mask R-CNN's 28x28; 14 and 56 in lighter and finer heads).
ROI_MASK_SIZES = (14, 28, 56)


def whole_input_masks(hw: tuple[int, int], net: ImageShape, roi_align: bool | None = None) -> bool | None:
    """True when masks of size ``hw`` cover the network input (at its size, or 1/2, 1/4, 1/8 of it:
    SOLO's ONNX Runtime exports leave them at the 1/4 feature map), False when they are per-box
    masks (square, :data:`ROI_MASK_SIZES`), None when neither. A size that fits both (56x56 masks
    of a 224x224 input) is per-box when the graph has a ``RoiAlign`` (``roi_align``: Mask R-CNN's
    heads crop with it; SOLO, RTMDet-Ins and CondInst do not), whole-input when it has none."""
    h, w = hw
    if (h, w) == (net.height, net.width):
        return True
    per_box = h == w and h in ROI_MASK_SIZES
    scaled = any(abs(h * s - net.height) < s and abs(w * s - net.width) < s for s in (2, 4, 8))
    if per_box and scaled and roi_align is not None:
        return not roi_align
    if per_box:
        return False
    return True if scaled else None


#: RTMDet-Ins (MMDetection's ``configs/rtmdet``): BGR in (``bgr_to_rgb=False``), the mean and std in BGR
#: order, keep-ratio resize and its ``Pad`` with 114 at the bottom and right (``top-left``).
RTMDET_INPUT = dict(resize="letterbox", pad_value=114, anchor="top-left", color="BGR", mean=(103.53, 116.28, 123.675),
                    std=(57.375, 57.12, 58.395), scale=1.0)

_MMDEPLOY_OP_FIXES = {
    "TRTBatchedNMS": "a graph exported for TensorRT: export it again with an onnxruntime deploy config",
    "grid_sampler": "masks pasted in the graph: export with export_postprocess_mask=False (the onnxruntime configs' "
                    "setting), edgeseg pastes them",
    "MMCVRoiAlign": "an old MMDeploy's RoiAlign: export with MMDeploy 1.x at opset 16 or newer (standard RoiAlign)",
    "MMCVModulatedDeformConv2d": "a DCN backbone: ONNX Runtime needs MMDeploy's libmmdeploy_onnxruntime_ops for it",
}


def mmdeploy_ops_error(model, where: str) -> ExportError | None:
    """An error naming every MMDeploy/MMCV custom operator in ``model`` (domains ``mmdeploy``, ``mmcv``)
    and what to export instead, or None when it has none. Plain ONNX Runtime has none of them."""
    ops = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain in ("mmdeploy", "mmcv")})
    if not ops:
        return None
    fixes = sorted({fix for op in ops for key, fix in _MMDEPLOY_OP_FIXES.items() if op.endswith("::" + key)})
    return ExportError(f"{where}: the graph uses MMDeploy's own operators, which ONNX Runtime does not have: "
                       f"{', '.join(ops)}",
                       fix="; ".join(fixes) if fixes else "export the model again with an MMDeploy onnxruntime deploy "
                       "config (configs/mmdet/instance-seg/*_onnxruntime_*.py)")


def boxmask_to_layout(model, roles: BoxMaskOutputs, opset: int) -> dict[str, str]:
    """Append the operators that write edgeseg's ``boxes``, ``scores``, ``classes`` and ``masks``
    (module doc) to ``model`` in place; returns ``{edgeseg name: original output}`` for provenance.
    Each of the four is written by an operator's own output (an output that needs no change is
    renamed), never by an ``Identity``: OpenVINO folds those away and may report a tensor by its
    other name."""
    from onnx import TensorProto, helper

    g = model.graph
    targets = ("boxes", "scores", "classes", "masks")
    source = {"boxes": roles.boxes, "scores": roles.scores or roles.boxes, "classes": roles.labels, "masks": roles.masks}
    pre = "edgeseg_boxmask_"
    if any(i.name in targets for i in g.input):
        raise ExportError(f"the graph's input is named {g.input[0].name!r}, a name edgeseg gives an output",
                          fix="export the model with another input name (e.g. input_names=['input'])")
    # a tensor already called like one of edgeseg's outputs (torchvision's boxes, MMDeploy's masks, an internal
    # 'scores' before the NMS) gets a fresh name first, so that nothing below writes a name twice
    taken = {o for n in g.node for o in n.output} | {i.name for i in g.initializer}
    src = {k: (f"{pre}{v}" if v in targets else v) for k, v in source.items()}
    for old in taken & set(targets):
        rename_tensor(g, old, f"{pre}{old}")
    app = Appender(g, pre)
    node, const = app.node, app.const

    def finish(x: str, target: str) -> None:  # x as ``target``, with the leading batch axis it may lack
        if roles.batched:
            app.write_as(x, target)
        elif opset >= 13:
            node("Unsqueeze", [x, const(np.array([0], np.int64))], target)
        else:
            node("Unsqueeze", [x], target, axes=[0])

    def as_float(x: str, dtype: str) -> str:  # fp16 exports (MMDeploy's onnxruntime-fp16 configs), bool masks
        return x if dtype == "float32" else node("Cast", [x], to=TensorProto.FLOAT)

    boxes = as_float(src["boxes"], roles.box_dtype)
    if roles.scores is None:  # dets: x1, y1, x2, y2, score
        axis = 2 if roles.batched else 1
        finish(node("Gather", [boxes, const(np.array([0, 1, 2, 3], np.int64))], axis=axis), "boxes")
        finish(node("Gather", [boxes, const(np.array(4, np.int64))], axis=axis), "scores")
    else:
        finish(boxes, "boxes")
        finish(as_float(src["scores"], roles.score_dtype), "scores")
    # whole numbers written as floats: the decoder reads integer ids
    finish(node("Cast", [src["classes"]], to=TensorProto.INT64) if roles.labels_float else src["classes"], "classes")
    masks = as_float(src["masks"], roles.mask_dtype)
    if not roles.batched and roles.mask_rank == 4:  # [K, 1, h, w] -> [1, K, h, w]
        node("Transpose", [masks], "masks", perm=[1, 0, 2, 3])
    else:
        finish(masks, "masks")
    app.flush()
    # the classes keep the exporter's integer type (the decoder reads any)
    label_type = TensorProto.INT64 if roles.labels_float else next(
        (o.type.tensor_type.elem_type for o in g.output if o.name in (src["classes"], "classes")), TensorProto.INT64)
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, "detections", 4]),
                     helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, "detections"]),
                     helper.make_tensor_value_info("classes", label_type, [1, "detections"]),
                     helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, "detections", None, None])])
    return source


def batch_image_input(model) -> str | None:
    """An image input ``[3, H, W]`` (torchvision's detection exports) becomes an internal tensor fed
    by a ``Squeeze`` of a new graph input ``images [1, 3, H, W]``; returns its name when it did."""
    from onnx import helper, numpy_helper

    from .graph import default_opset, dims, graph_inputs

    inputs = graph_inputs(model)
    if len(inputs) != 1 or len(dims(inputs[0])) != 3:
        return None
    inp = inputs[0]
    shape = dims(inp)
    if isinstance(shape[0], int) and shape[0] > 0 and shape[0] != 3:
        return None  # [H, W, 3] or something else: the input checks name it
    original = inner = inp.name
    if any(i.name == "images" for i in model.graph.initializer):
        raise ExportError("the graph has a weight named 'images'; cannot add a batched image input of that name")
    if original == "images" or any("images" in n.output for n in model.graph.node):
        # the input itself, or an internal tensor, is called 'images': that one gets another name
        if original == "images":
            inner = "edgeseg_inner_images"
        rename_tensor(model.graph, "images", "edgeseg_inner_images")
    if default_opset(model) >= 13:
        axes = "edgeseg_unbatched_axes"
        model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), axes))
        squeeze = helper.make_node("Squeeze", ["images", axes], [inner], name="edgeseg_unbatched")
    else:
        squeeze = helper.make_node("Squeeze", ["images"], [inner], name="edgeseg_unbatched", axes=[0])
    model.graph.node.insert(0, squeeze)
    sizes = ["channels", "height", "width"]
    inp.CopyFrom(helper.make_tensor_value_info("images", inp.type.tensor_type.elem_type,
                                               [1, *[d if isinstance(d, int) and d > 0 else sizes[i]
                                                     for i, d in enumerate(shape)]]))
    return original


__all__ = ["BoxMaskOutputs", "DETECTRON2_INPUT", "MEAN_PIXEL", "MMDET_INPUT", "PLACEHOLDER_CLASSES", "RTMDET_INPUT", "TORCHVISION_INPUT", "batch_image_input",
           "boxmask_to_layout", "detect_boxmask_layout", "mmdeploy_ops_error", "whole_input_masks"]
