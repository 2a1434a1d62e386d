"""Half-precision models made float32 before INT8 calibration.

Users bring float16 exports (Ultralytics' ``half=True``, ``torch.onnx.export`` of a ``.half()`` model,
``onnxconverter_common``'s ``convert_float_to_float16``, with float16 or float32 inputs and outputs) and
sometimes bfloat16 ones. The quantizers work on float32 graphs: NNCF refused such a model (``Type
'tensor(float16)' of input parameter ... of operator (QuantizeLinear) ... is invalid``), and ONNX Runtime's
quantizer gave a model whose layers could not be timed (shapes unknown after shape inference). So
:func:`upcast_half` rewrites every half-precision tensor of the graph to float32 (weights, constants,
``Cast`` targets, ``dtype`` attributes, subgraphs of ``If``/``Loop``/``Scan``, recorded types), exactly
(every float16 and bfloat16 value is a float32 value), while the graph's own inputs and outputs keep
their type through a ``Cast`` at each edge: the INT8 model takes the same feed and gives the same output
types as the bundle's model, whose manifest says float16. The layers left in float then compute in
float32, a little more exactly than the half-precision model they came from.
"""
from __future__ import annotations

import numpy as np

from ..export.graph import HALF_TYPES

_FLOAT = 1
#: node attributes that hold an element type (``RandomNormal``, ``EyeLike``, ``Cast``, ...)
_TYPE_ATTRS = ("to", "dtype")


def is_half(model) -> bool:
    """Whether ``model`` has any half-precision input, output, tensor, attribute or recorded type."""
    g = model.graph
    return bool(_half_inside(g)) or any(v.type.tensor_type.elem_type in HALF_TYPES for v in (*g.input, *g.output))


def _half_type(t) -> bool:
    """Whether a ``TypeProto`` holds a half-precision element type (tensors, and inside sequences, optionals, maps:
    ONNX's shape inference records ``seq(tensor(float16))`` for SplitToSequence and the like)."""
    kind = t.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        return getattr(t, kind).elem_type in HALF_TYPES
    if kind in ("sequence_type", "optional_type"):
        return _half_type(getattr(t, kind).elem_type)
    if kind == "map_type":
        return _half_type(t.map_type.value_type)
    return False


def _float_type(t) -> int:
    """Rewrite a ``TypeProto``'s half-precision element types to float32; the number rewritten."""
    kind = t.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        if getattr(t, kind).elem_type in HALF_TYPES:
            getattr(t, kind).elem_type = _FLOAT
            return 1
        return 0
    if kind in ("sequence_type", "optional_type"):
        return _float_type(getattr(t, kind).elem_type)
    if kind == "map_type":
        return _float_type(t.map_type.value_type)
    return 0


def _half_inside(g, outer: bool = True) -> list[str]:
    """What is half precision inside ``g`` (the names): initializers, recorded types, node attributes and
    subgraphs, not the outer graph's own inputs and outputs nor the Casts that give its outputs their type
    (what :func:`upcast_half` leaves)."""
    from onnx import AttributeProto

    edge = {o.name for o in g.output} if outer else set()
    found = [t.name for t in g.initializer if t.data_type in HALF_TYPES]
    weights = {t.name for t in g.initializer}  # weights listed as inputs too (keep_initializers_as_inputs, IR < 4)
    found += [v.name for v in (*g.value_info, *(() if outer else (*g.input, *g.output)),
                               *((i for i in g.input if i.name in weights) if outer else ()))
              if _half_type(v.type)]
    for n in g.node:
        if n.op_type == "Cast" and set(n.output) <= edge:
            continue
        for a in n.attribute:
            if ((a.type == AttributeProto.INT and a.name in _TYPE_ATTRS and a.i in HALF_TYPES)
                    or (a.type == AttributeProto.TENSOR and a.t.data_type in HALF_TYPES)
                    or any(t.data_type in HALF_TYPES for t in a.tensors)):
                found.append(n.name or n.op_type)
            for sub in (*([a.g] if a.type == AttributeProto.GRAPH else []), *a.graphs):
                found += _half_inside(sub, outer=False)
    return found


def _float_tensor(t):
    from onnx import numpy_helper

    arr = numpy_helper.to_array(t)  # float16, or ml_dtypes' bfloat16: both cast to float32 exactly
    new = numpy_helper.from_array(np.asarray(arr).astype(np.float32), t.name)
    t.CopyFrom(new)


def _upcast_graph(g, outer: bool) -> int:
    """Rewrite ``g`` (and its subgraphs) to float32; the outer graph's own inputs and outputs are left to
    :func:`upcast_half`. The number of changes (tensors converted, types and attributes rewritten)."""
    from onnx import AttributeProto

    count = 0
    for t in g.initializer:
        if t.data_type in HALF_TYPES:
            _float_tensor(t)
            count += 1
    weights = {t.name for t in g.initializer}
    edges = (*g.value_info, *(i for i in g.input if i.name in weights)) if outer else (*g.input, *g.output, *g.value_info)
    for v in edges:
        count += _float_type(v.type)
    for n in g.node:
        for a in n.attribute:
            if a.type == AttributeProto.INT and a.name in _TYPE_ATTRS and a.i in HALF_TYPES:
                a.i = _FLOAT
                count += 1
            elif a.type == AttributeProto.TENSOR and a.t.data_type in HALF_TYPES:
                _float_tensor(a.t)
                count += 1
            for t in a.tensors:
                if t.data_type in HALF_TYPES:
                    _float_tensor(t)
                    count += 1
            for sub in (*([a.g] if a.type == AttributeProto.GRAPH else []), *a.graphs):
                count += _upcast_graph(sub, outer=False)
    return count


def _rename(g, old: str, new: str, outputs_too: bool) -> None:
    """Every use of ``old`` in ``g``'s nodes (and subgraphs, which may read outer names) becomes ``new``."""
    from onnx import AttributeProto

    for n in g.node:
        for k, name in enumerate(n.input):
            if name == old:
                n.input[k] = new
        if outputs_too:
            for k, name in enumerate(n.output):
                if name == old:
                    n.output[k] = new
        for a in n.attribute:
            for sub in (*([a.g] if a.type == AttributeProto.GRAPH else []), *a.graphs):
                _rename(sub, old, new, outputs_too)


def upcast_half(model) -> int:
    """Make ``model`` (an ``onnx.ModelProto``, changed in place) float32 inside, its inputs and outputs
    keeping their declared types through ``Cast`` nodes. The number of changes (tensors converted, types and
    attributes rewritten; 0: nothing was half precision inside, the model is unchanged)."""
    from onnx import helper

    g = model.graph
    if not _half_inside(g):
        return 0
    count = _upcast_graph(g, outer=True)
    taken = {o for n in g.node for o in n.output} | {i.name for i in (*g.input, *g.initializer)}

    def fresh(base: str) -> str:
        name, k = f"{base}_float32", 1
        while name in taken:
            name, k = f"{base}_float32_{k}", k + 1
        taken.add(name)
        return name

    casts_in = []
    weights = {t.name for t in g.initializer}
    for v in g.input:
        elem = v.type.tensor_type.elem_type
        if elem in HALF_TYPES and v.name not in weights:  # (a weight listed as an input was retyped above)
            inner = fresh(v.name)
            _rename(g, v.name, inner, outputs_too=False)
            casts_in.append(helper.make_node("Cast", [v.name], [inner], name=fresh(f"edgeseg_upcast_{v.name}"), to=_FLOAT))
    produced = {o for n in g.node for o in n.output}
    for v in g.output:
        elem = v.type.tensor_type.elem_type
        if elem in HALF_TYPES and v.name in produced | {i.name for i in g.initializer}:
            inner = fresh(v.name)  # (an input passed straight through needs nothing: it keeps its type)
            _rename(g, v.name, inner, outputs_too=True)
            for t in g.initializer:
                if t.name == v.name:
                    t.name = inner
            g.node.append(helper.make_node("Cast", [inner], [v.name], name=fresh(f"edgeseg_downcast_{v.name}"), to=elem))
    for k, node in enumerate(casts_in):
        g.node.insert(k, node)
    return count
