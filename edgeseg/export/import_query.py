"""Mask-classification models made elsewhere (MaskFormer, Mask2Former) for any task.

These models end in ``Q`` queries: class logits ``[1, Q, C+1]`` (the last class is "no object") and
mask logits ``[1, Q, h, w]`` (Hugging Face transformers: ``class_queries_logits`` and
``masks_queries_logits``; Detectron2's Mask2Former: ``pred_logits`` and ``pred_masks``). One model
serves the three tasks through its post-processing, which the import writes as the task needs it:

* ``semantic``: appended to the graph as MaskFormer's and Mask2Former's semantic inference in their authors'
  code (Detectron2's ``semantic_inference``): the mask logits resized bilinearly to the network input,
  then ``einsum("qc,qhw->chw", softmax(class)[:, :C], sigmoid(mask))``, written as ``logits [1, C, H, W]``
  holding those sums (``SemanticOptions.scores = "probabilities"``: the decoder's confidence is the sums
  normalised, and the class bias and the CRF read their ``log``); edgeseg's semantic decoder resizes them
  bilinearly to the image and takes the argmax, as the authors' code does. The order matters for masks with sharp logits: the sigmoid of an interpolated logit is not the
  interpolated sigmoid. transformers' image processors take the sigmoid of MaskFormer's masks at their own
  1/4 size, and of Mask2Former's after resizing them to 384x384 (nearer the authors' order): on the tiny
  Mask2Former export of the tests, edgeseg's labels equal transformers' on 99-99.8 % of the pixels, and the
  sigmoid taken first would have agreed on 80-96 %. ``Q x H x W`` values are held twice at the input's size:
  above :data:`SEMANTIC_MAX_VALUES` (200 queries at 1024x2048 would be 1.7 GB) the masks are resized to the
  largest size under it instead (logged), and the decoder's bilinear resize does the rest.
* ``instance``: appended to the graph as Mask2Former's instance inference (``instance_inference``, and
  transformers' ``post_process_instance_segmentation``): the best ``k`` (query, class) pairs of the
  ``Q x C`` class probabilities (transformers: ``k = Q``; Detectron2: ``TEST.DETECTIONS_PER_IMAGE``, 100),
  each pair's mask ``sigmoid(mask)``, its score the class probability times the mask's mean probability
  over its pixels above 0.5 (``1e-6`` added to the count), written as the ``dense`` layout (``scores``,
  ``classes``, ``masks``: probabilities); edgeseg's dense decoder thresholds and pastes them. The mask score
  is taken on the mask grid (the references take it at the image's size, Detectron2, or at 384x384,
  transformers: a few hundredths apart on sharp masks). ``things`` (a model trained for panoptic output,
  ``MODEL.MASK_FORMER.TEST.PANOPTIC_ON``): the pairs of other classes score 0, as Detectron2 drops them.
* ``panoptic``: the two outputs renamed ``class_logits`` and ``mask_logits``; the ``query`` layout of
  :mod:`edgeseg.decode.panoptic_query` decodes them, with the thing classes the user names.

Recognised from one run on a test frame: a float ``[1, Q, K]`` and a float ``[1, Q, h, w]`` output with
the same ``Q``, named like class logits (``class``, ``logit``) and masks (``mask``), or with ``K`` the
number of classes given plus one; no integer output (class indices mean a box-and-mask model after its
own NMS, :mod:`edgeseg.export.import_boxmask`). transformers' and Detectron2's exact names win; outputs
named like auxiliary ones (``aux``, ``auxiliary``, ``intermediate``: a transformers export with
``output_auxiliary_logits``, a Detectron2 wrapper returning ``aux_outputs``) and hidden states ``[1, Q, D]``
are left out. Named outputs whose ``K`` is not the classes given plus one are an error naming every
output. Not supported: OneFormer (its network takes a task token as a second input), and models that
score classes with a sigmoid and no no-object class (MaskDINO).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ExportError

log = logging.getLogger(__name__)

#: Mask2Former's normalisation (transformers' image processors and Detectron2's configs: RGB, ImageNet mean/std,
#: Detectron2's 0-255 values being the same), the frame resized to the export's fixed size: what transformers'
#: processor does with a ``{"height", "width"}`` size. Detectron2 and a ``shortest_edge`` processor keep the
#: aspect ratio and pad the bottom and right after normalising: export at the frames' aspect, or pass
#: ``--resize letterbox``, which pads as they do (``top-left``, the mean pixel).
QUERY_INPUT = dict(resize="resize", pad_value=(124, 116, 104), anchor="top-left", color="RGB", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   scale=1.0 / 255.0)
_CLASS_HINTS = ("class", "logit", "cls")
_MASK_HINTS = ("mask",)
_AUX_HINTS = ("aux", "intermediate")
#: the exporters' own names for the two outputs: a pair of these wins over any other
KNOWN_PAIRS = (("class_queries_logits", "masks_queries_logits"), ("pred_logits", "pred_masks"))
#: the most ``Q x H x W`` values the semantic graph holds at once (float32: 256 MiB per tensor)
SEMANTIC_MAX_VALUES = 1 << 26
#: Detectron2's ``TEST.DETECTIONS_PER_IMAGE``: Mask2Former's instance inference keeps that many pairs
DETECTRON2_TOPK = 100


@dataclass(frozen=True)
class QueryOutputs:
    """The two outputs of a mask-classification model: names, ``Q``, ``C`` (without no-object), mask size."""

    classes: str
    masks: str
    num_queries: int
    num_classes: int
    mask_hw: tuple[int, int]


def _listing(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {np.asarray(v).dtype} {list(np.shape(v))}" for k, v in arrays.items())


def detect_query_outputs(arrays: dict[str, np.ndarray], nc: int | None, where: str) -> QueryOutputs | None:
    """The class and mask outputs of a mask-classification model among one run's ``arrays``, or None when
    no float ``[1, Q, K]`` and ``[1, Q, h, w]`` pair shares ``Q``. ``nc``: the classes the user gave
    (``K`` must be ``nc + 1``: an :class:`ExportError` naming the outputs otherwise)."""
    if any(np.asarray(v).dtype.kind in "iub" for v in arrays.values()):
        return None  # class indices (MMDeploy's labels, torchvision's, Detectron2's): a box-and-mask model
    floats = {k: np.asarray(v) for k, v in arrays.items()
              if np.asarray(v).dtype.kind == "f" and np.asarray(v).shape[:1] == (1,)}
    cls = [k for k, v in floats.items() if v.ndim == 3 and v.shape[1] >= 1 and v.shape[2] >= 2]
    msk = [k for k, v in floats.items() if v.ndim == 4 and v.shape[1] >= 1]

    def named(c: str, m: str) -> bool:
        return any(h in c.lower() for h in _CLASS_HINTS) and any(h in m.lower() for h in _MASK_HINTS)

    # a pair counts when its names say so, or when its class axis is the given classes plus no-object
    # (a class output shaped like the mask output's leading axes is a squeezed map beside a channels-last one:
    # DeepLab2's heatmap [1, h, w] and semantic logits [1, h, w, C], not queries)
    pairs = [(c, m) for c in cls for m in msk if floats[c].shape[1] == floats[m].shape[1]
             and (named(c, m) or (nc is not None and floats[c].shape[2] == nc + 1
                                  and floats[c].shape[1:3] != floats[m].shape[1:3]))]
    if not pairs:
        return None
    if len(pairs) > 1:
        known = [p for p in pairs if p in KNOWN_PAIRS]
        main = [p for p in pairs if not any(h in (p[0] + p[1]).lower() for h in _AUX_HINTS)]
        hinted = [p for p in main if named(*p)]
        fits = [(c, m) for c, m in main if nc is not None and floats[c].shape[2] == nc + 1]
        pairs = known or [p for p in hinted if p in fits] or hinted or fits or main or pairs
        if len(pairs) > 1:
            raise ExportError(f"{where}: several output pairs fit a mask-classification model's class logits "
                              f"[1, Q, C+1] and mask logits [1, Q, h, w] ({_listing(arrays)})",
                              fix="export only the two (class_queries_logits and masks_queries_logits), or name "
                                  "them with 'class' and 'mask'")
    c, m = pairs[0]
    k = floats[c].shape[2]
    if nc is not None and k != nc + 1:
        raise ExportError(f"{where}: output {c!r} {list(floats[c].shape)} scores {k - 1} classes plus no-object, "
                          f"but {nc} classes were given ({_listing(arrays)})",
                          fix=f"give the model's {k - 1} class names (its config.json id2label), without the "
                              "no-object class; a model that scores its classes with a sigmoid and has no "
                              "no-object class (MaskDINO) is not supported")
    return QueryOutputs(c, m, int(floats[c].shape[1]), int(k - 1), tuple(int(s) for s in floats[m].shape[2:4]))


def require_opset(opset: int, path) -> None:
    """The appended post-processing takes its axes as inputs (``Squeeze``, ``ReduceSum``: opset 13)."""
    if opset < 13:
        raise ExportError(f"{path}: a mask-classification model's post-processing needs opset 13 or newer; the file "
                          f"has opset {opset} and the converter could not upgrade it",
                          fix="re-export the model with opset_version=13 or later (Mask2Former's GridSample needs 16)")


def output_dtypes(model) -> dict[str, int]:
    """The ONNX element type of each graph output."""
    return {o.name: o.type.tensor_type.elem_type for o in model.graph.output}


def free_names(model, names, prefix: str) -> None:
    """Tensors of the graph already called like one of ``names`` (other than its outputs' own) are renamed
    ``prefix + name`` first, so that the appended nodes can write those names."""
    from .graph import rename_tensor

    g = model.graph
    taken = {o for n in g.node for o in n.output} | {t.name for t in g.initializer}
    for name in names:
        if name in taken:
            rename_tensor(g, name, prefix + name)


def prepare(model, q: QueryOutputs, kinds) -> tuple[QueryOutputs, dict[str, int]]:
    """Before appending: the graph's tensors called like edgeseg's output ``kinds`` renamed out of the way
    (the query outputs' names follow), and each query output's ONNX element type, by role."""
    import dataclasses

    dt = output_dtypes(model)
    dtypes = {"classes": dt.get(q.classes, 1), "masks": dt.get(q.masks, 1)}
    free_names(model, kinds, "edgeseg_query_")
    q = dataclasses.replace(q, **{role: "edgeseg_query_" + name for role, name in (("classes", q.classes),
                                                                                    ("masks", q.masks)) if name in kinds})
    return q, dtypes


def _class_probs(app, q: QueryOutputs, dtype: int) -> str:
    """softmax over the ``C + 1`` classes, no-object dropped: ``[1, Q, C]`` float32."""
    from onnx import TensorProto

    x = q.classes if dtype == TensorProto.FLOAT else app.node("Cast", [q.classes], to=TensorProto.FLOAT)
    p = app.node("Softmax", [x], axis=-1)
    return app.node("Slice", [p, app.const(np.array([0], np.int64)), app.const(np.array([q.num_classes], np.int64)),
                              app.const(np.array([2], np.int64))])


def semantic_size(q: QueryOutputs, size, where: str = "") -> tuple[int, int] | None:
    """The size the semantic graph resizes the masks to: the network input's ``size`` (an
    :class:`ImageShape`, None when dynamic: the input's own), shrunk (aspect kept) until ``Q x H x W`` fits
    :data:`SEMANTIC_MAX_VALUES` (logged, naming ``where``); None: the input's size, read in the graph."""
    if size is None:
        return None
    h, w = size.height, size.width
    if q.num_queries * h * w <= SEMANTIC_MAX_VALUES:
        return None
    f = (SEMANTIC_MAX_VALUES / (q.num_queries * h * w)) ** 0.5
    hw = max(q.mask_hw[0], int(h * f)), max(q.mask_hw[1], int(w * f))
    log.warning("%s: %d queries at %s would hold %.1f GiB per tensor: the masks are resized to %dx%d instead of the "
                "input's size, then the labels to the image", where, q.num_queries, size,
                q.num_queries * h * w * 4 / 2 ** 30, hw[1], hw[0])
    return hw


def query_to_semantic(app, q: QueryOutputs, dtypes: dict[str, int], image: str, layout: str = "NCHW",
                      size: tuple[int, int] | None = None) -> str:
    """Append MaskFormer's/Mask2Former's semantic inference; returns the class sums ``[1, C, H, W]`` at the
    size of the graph input ``image`` (or ``size``, :func:`semantic_size`) (module doc)."""
    from onnx import TensorProto

    cls = _class_probs(app, q, dtypes["classes"])
    x = q.masks if dtypes["masks"] == TensorProto.FLOAT else app.node("Cast", [q.masks], to=TensorProto.FLOAT)
    if size is None:
        lo, hi = (2, 4) if layout == "NCHW" else (1, 3)
        hw = app.node("Slice", [app.node("Shape", [image]), app.const(np.array([lo], np.int64)),
                                app.const(np.array([hi], np.int64))])
    else:
        hw = app.const(np.array(size, np.int64))
    nq = app.node("Slice", [app.node("Shape", [x]), app.const(np.array([0], np.int64)), app.const(np.array([2], np.int64))])
    up = app.node("Resize", [x, "", "", app.node("Concat", [nq, hw], axis=0)], mode="linear",
                  coordinate_transformation_mode="half_pixel")
    return app.node("Einsum", [cls, app.node("Sigmoid", [up])], equation="bqc,bqhw->bchw")


def query_to_dense(app, q: QueryOutputs, dtypes: dict[str, int], top_k: int | None = None,
                   things: Sequence[int] | None = None) -> dict[str, str]:
    """Append Mask2Former's instance inference (module doc); returns ``{"scores", "classes", "masks"}``.
    ``top_k``: pairs kept (default ``Q``); ``things``: the classes that may be instances (others score 0)."""
    from onnx import TensorProto

    c = q.num_classes
    k = min(top_k or q.num_queries, q.num_queries * c)
    cls = _class_probs(app, q, dtypes["classes"])
    flat = app.node("Reshape", [cls, app.const(np.array([1, -1], np.int64))])  # [1, Q*C], query-major
    top, idx = app.node_outputs("TopK", [flat, app.const(np.array([k], np.int64))], 2, axis=-1, largest=1, sorted=1)
    query = app.node("Div", [idx, app.const(np.array(c, np.int64))])
    label = app.node("Mod", [idx, app.const(np.array(c, np.int64))])
    picked = app.node("Gather", [q.masks, app.node("Squeeze", [query, app.const(np.array([0], np.int64))])], axis=1)
    if dtypes["masks"] != TensorProto.FLOAT:
        picked = app.node("Cast", [picked], to=TensorProto.FLOAT)
    on = app.node("Cast", [app.node("Greater", [picked, app.const(np.array(0, np.float32))])], to=TensorProto.FLOAT)
    prob = app.node("Sigmoid", [picked])
    axes = app.const(np.array([2, 3], np.int64))
    inside = app.node("ReduceSum", [app.node("Mul", [prob, on]), axes], keepdims=0)
    count = app.node("Add", [app.node("ReduceSum", [on, axes], keepdims=0), app.const(np.array(1e-6, np.float32))])
    score = app.node("Mul", [top, app.node("Div", [inside, count])])
    if things is not None:  # a panoptic model's stuff classes are no instances (Detectron2: panoptic_on)
        keep = np.zeros(c, np.float32)
        keep[list(things)] = 1.0
        score = app.node("Mul", [score, app.node("Gather", [app.const(keep), label], axis=0)])
    return {"scores": score, "classes": label, "masks": prob}


__all__ = ["DETECTRON2_TOPK", "KNOWN_PAIRS", "QUERY_INPUT", "SEMANTIC_MAX_VALUES", "QueryOutputs", "detect_query_outputs",
           "free_names", "output_dtypes", "prepare", "query_to_dense", "query_to_semantic", "require_opset",
           "semantic_size"]
