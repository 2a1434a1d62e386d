"""YOLACT's own ONNX exports -> the prototype layout edgeseg decodes (:mod:`edgeseg.export.import_instance`).

YOLACT (Bolya et al., ICCV 2019; ``dbolya/yolact``) ends in four tensors per anchor box and one of
prototypes, which ONNX conversions (OpenVINO's Open Model Zoo ``yolact-*``, the ``yolact`` ONNX
branches) expose as separate outputs:

* ``conf`` ``[1, N, nc + 1]``: softmax class probabilities, column 0 the background;
* ``boxes`` ``[1, N, 4]``: boxes in YOLACT's point form, ``x1, y1, x2, y2`` relative to the network
  input (0..1); or ``loc`` ``[1, N, 4]`` offsets from the prior boxes plus a ``priors`` ``[N, 4]``
  (or ``[1, N, 4]``) output of relative ``cx, cy, w, h``, decoded as YOLACT's ``decode`` does
  (variances 0.1 and 0.2: ``c = p_c + loc_c * 0.1 * p_wh``, ``wh = p_wh * exp(loc_wh * 0.2)``);
* ``mask`` ``[1, N, nm]``: mask coefficients (already ``tanh``-activated in the graph);
* ``proto`` ``[1, h, w, nm]`` (channels last, as YOLACT computes it) or ``[1, nm, h, w]``.

:func:`detect_yolact_layout` tells the roles apart by shape (the names ``conf``/``mask``/``prior``
settle the rare ties) and :func:`yolact_to_prototype` appends plain ONNX operators that turn them
into edgeseg's ``yolov8`` prototype layout: ``detections [1, N, 4 + nc + nm]`` (box ``cx, cy, w,
h`` in network pixels, the ``nc`` object-class probabilities without the background column, the
coefficients) and ``prototypes [1, nm, h, w]``. Decoding is then the prototype decoder's: best
class per box, score threshold, greedy NMS per class (YOLACT's evaluation uses its approximate
"Fast NMS"; the greedy one it also ships keeps slightly more boxes), masks ``sigmoid(coefficients @
prototypes)`` cropped to the box. YOLACT's pre-processing (:data:`YOLACT_INPUT`): a plain resize to
the network size (no letterbox), RGB, ImageNet mean and std in 0-255 units.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..errors import ExportError
from ..structures import ImageShape

#: YOLACT's FastBaseTransform: resize (aspect ratio not kept), RGB, (pixel - mean) / std.
YOLACT_INPUT = dict(resize="resize", pad_value=0, anchor="center", color="RGB", mean=(123.68, 116.78, 103.94), std=(58.40, 57.12, 57.38),
                    scale=1.0)
VARIANCES = (0.1, 0.2)


@dataclass(frozen=True)
class YolactOutputs:
    """Which output plays which role; ``priors`` is set when ``boxes`` holds offsets from them."""

    conf: str
    boxes: str
    coefficients: str
    prototypes: str
    priors: str | None
    nc: int
    nm: int
    channels_last: bool


HINTS = {"conf": ("conf", "score", "cls", "class"), "boxes": ("box", "loc", "bbox"), "coefficients": ("mask", "coef"),
         "priors": ("prior", "anchor")}


def _hits(name: str, role: str) -> int:
    return int(any(w in name.lower() for w in HINTS[role]))


def detect_yolact_layout(shapes: dict[str, tuple[int, ...]], fail: Callable[[str], ExportError]) -> YolactOutputs | None:
    """The roles of YOLACT's outputs (module doc), None when the outputs are not YOLACT-like (fewer
    than three per-anchor outputs), or ``fail(why)`` when they look like YOLACT but do not fit.
    Every assignment of roles the shapes allow is considered; the output names (``conf``,
    ``boxes``/``loc``, ``mask``, ``priors``) break ties, and a tie they do not break is an error."""
    import itertools

    rank3 = {k: tuple(int(v) for v in s) for k, s in shapes.items() if len(s) == 3}
    rank4 = [k for k, s in shapes.items() if len(s) == 4]
    rank2 = [k for k, s in shapes.items() if len(s) == 2]
    if len(rank3) + len(rank2) < 3 or not rank4:
        return None
    if len(rank4) != 1:
        raise fail("YOLACT-like outputs need exactly one rank-4 prototype output")
    p = tuple(int(v) for v in shapes[rank4[0]])
    counts = {s[1] for s in rank3.values()}
    if any(s[0] != 1 for s in rank3.values()) or len(counts) != 1:
        raise fail("YOLACT-like outputs must all be [1, N, k] with the same N")
    n = counts.pop()
    flat_priors = [k for k in rank2 if tuple(int(v) for v in shapes[k]) == (n, 4)]
    if len(flat_priors) > 1 or len(rank3) + len(flat_priors) not in (3, 4):
        raise fail("need [1, N, nc + 1] class probabilities, [1, N, 4] boxes, [1, N, nm] coefficients "
                   "(and optionally [N, 4] priors)")
    found = []
    for perm in itertools.permutations(rank3):
        roles = dict(zip(("conf", "boxes", "coefficients", "priors"), perm))
        if "priors" not in roles and flat_priors:
            roles["priors"] = flat_priors[0]
        k = {r: rank3[o][2] if o in rank3 else 4 for r, o in roles.items()}
        if k["boxes"] != 4 or k["priors" if "priors" in roles else "boxes"] != 4 or k["conf"] < 2:
            continue
        nm = k["coefficients"]
        for last in (True, False):
            if nm == (p[3] if last else p[1]):
                found.append((sum(_hits(o, r) for r, o in roles.items()), roles, nm, last))
    if not found:
        raise fail("no assignment of class probabilities, boxes and coefficients fits the shapes and the prototypes")
    best = max(f[0] for f in found)
    top = [f for f in found if f[0] == best]
    if len({tuple(sorted(f[1].items())) for f in top}) > 1:
        raise fail("the roles of the outputs are ambiguous; name them 'conf', 'boxes' (or 'loc' with 'priors'), "
                   "'mask' and 'proto'")
    _, roles, nm, last = top[0]
    return YolactOutputs(conf=roles["conf"], boxes=roles["boxes"], coefficients=roles["coefficients"],
                         prototypes=rank4[0], priors=roles.get("priors"), nc=rank3[roles["conf"]][2] - 1, nm=nm,
                         channels_last=last)


def yolact_to_prototype(model, roles: YolactOutputs, size: ImageShape) -> tuple[str, str]:
    """Append the operators that write ``(detections, prototypes)`` in edgeseg's ``yolov8`` layout
    (module doc) to ``model`` (in place); returns their tensor names. The original outputs stay
    inside the graph; the graph's outputs become these two."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    pre = "edgeseg_yolact_"
    conf_output = roles.conf

    def const(name: str, value) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(value), pre + name))
        return pre + name

    nodes = []

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [pre + out], **attrs))
        return pre + out

    types = {o.name: o.type.tensor_type.elem_type for o in g.output}
    types.update({t.name: t.data_type for t in g.initializer if t.name in types})  # declared float, stored float16

    def as_float(name: str) -> str:
        """float16 exports (a .half() model, onnxconverter-common's, with float16 or float32 edges): the
        appended arithmetic runs in float32, as the decoder does"""
        return name if types.get(name) == TensorProto.FLOAT else node("Cast", [name], f"f32_{name}", to=TensorProto.FLOAT)

    roles = dataclasses.replace(roles, **{k: as_float(getattr(roles, k)) for k in ("conf", "boxes", "coefficients",
                                                                                      "prototypes", "priors")
                                          if getattr(roles, k) is not None})
    wh = const("wh", np.array([size.width, size.height], np.float32))
    box_split = const("split22", np.array([2, 2], np.int64))
    lo, hi = pre + "a", pre + "b"
    nodes.append(helper.make_node("Split", [roles.boxes, box_split], [lo, hi], axis=2))
    if roles.priors is None:  # point form x1, y1, x2, y2 (relative)
        centre = node("Mul", [node("Add", [lo, hi], "sum"), const("half", np.float32(0.5))], "c_rel")
        extent = node("Sub", [hi, lo], "wh_rel")
    else:  # offsets from the priors (cx, cy, w, h relative), YOLACT's decode
        pri = node("Reshape", [roles.priors, const("shape_priors", np.array([1, -1, 4], np.int64))], "priors")
        p_c, p_wh = pre + "pc", pre + "pwh"
        nodes.append(helper.make_node("Split", [pri, box_split], [p_c, p_wh], axis=2))
        centre = node("Add", [p_c, node("Mul", [node("Mul", [lo, const("v0", np.float32(VARIANCES[0]))], "lo_v"), p_wh],
                                             "shift")], "c_rel")
        extent = node("Mul", [p_wh, node("Exp", [node("Mul", [hi, const("v1", np.float32(VARIANCES[1]))], "hi_v")],
                                         "scale")], "wh_rel")
    centre_px = node("Mul", [centre, wh], "c_px")
    extent_px = node("Mul", [extent, wh], "wh_px")
    classes = node("Slice", [roles.conf, const("s0", np.array([1], np.int64)), const("s1", np.array([roles.nc + 1], np.int64)),
                             const("s2", np.array([2], np.int64))], "classes")
    det = node("Concat", [centre_px, extent_px, classes, roles.coefficients], "detections", axis=2)
    protos = node("Transpose", [roles.prototypes], "prototypes", perm=[0, 3, 1, 2]) if roles.channels_last else \
        node("Identity", [roles.prototypes], "prototypes")
    g.node.extend(nodes)
    n = None
    for o in g.output:
        if o.name == conf_output:
            dims = o.type.tensor_type.shape.dim
            n = dims[1].dim_value if len(dims) == 3 and dims[1].HasField("dim_value") else None
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(det, TensorProto.FLOAT, [1, n, 4 + roles.nc + roles.nm]),
                     helper.make_tensor_value_info(protos, TensorProto.FLOAT, None)])
    return det, protos


__all__ = ["YOLACT_INPUT", "YolactOutputs", "detect_yolact_layout", "yolact_to_prototype"]
