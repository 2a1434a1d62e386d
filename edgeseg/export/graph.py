"""ONNX graph helpers shared by export and import: clean-up, opset, IO description."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ExportError

ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
               16: "bfloat16"}
log = logging.getLogger(__name__)


#: ``TensorProto.FLOAT16``, ``TensorProto.BFLOAT16``: the half-precision element types
HALF_TYPES = (10, 16)


def half_weights(model) -> str | None:
    """``"float16"`` or ``"bfloat16"`` when most of ``model``'s float weights (initializers, by element count) are
    stored in that type (a ``half=True`` export, onnxconverter-common's conversion); ``None`` for float32 ones."""
    import math

    counts: dict[int, int] = {}
    for t in model.graph.initializer:
        if t.data_type in (1, *HALF_TYPES):
            counts[t.data_type] = counts.get(t.data_type, 0) + math.prod(t.dims)
    kind = max(counts, key=counts.get, default=1)
    return {10: "float16", 16: "bfloat16"}.get(kind)


#: ops of a model that is quantized already (Q/DQ, QOperator or integer-arithmetic form)
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                           "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QGemm"})


def fresh_node_name(graph, base: str) -> str:
    """``base``, or ``base_2``, ``base_3``, ... : a node name ``graph`` does not use yet (a model edgeseg wrote
    before, imported again, already holds edgeseg's node names: ONNX Runtime refuses a repeated one)."""
    used = {n.name for n in graph.node}
    k = 1
    name = base
    while name in used:
        k += 1
        name = f"{base}_{k}"
    return name


def quantized_ops(model) -> list[str]:
    """The :data:`QUANTIZED_OPS` ``model``'s graph holds, its ``If``/``Loop``/``Scan`` bodies included, sorted
    (empty for a float model)."""
    found: set[str] = set()

    def walk(graph) -> None:
        for n in graph.node:
            if n.op_type in QUANTIZED_OPS:
                found.add(n.op_type)
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g)

    walk(model.graph)
    return sorted(found)


def default_opset(model) -> int:
    """The version of the default ONNX domain the model imports (0 if none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def dims(value_info) -> tuple[int | str, ...]:
    """Shape of a graph input/output: ints, or the symbolic name (``"?"`` when unnamed)."""
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim)


def elem_dtype(value_info) -> str:
    t = value_info.type.tensor_type.elem_type
    return ONNX_DTYPES.get(t, f"onnx-type-{t}")


def graph_inputs(model) -> list:
    """Real inputs (initializers listed as inputs by old exporters are not inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _subgraphs(node):
    for attr in node.attribute:
        yield from attr.graphs
        if attr.HasField("g"):
            yield attr.g


def rename_tensor(graph, old: str, new: str, outer: bool = True) -> None:
    """``old`` is ``new`` wherever the graph writes or reads it (a node's output, a constant output
    straight from the weights, and the If/Loop/Scan bodies that read it from the enclosing graph,
    unless a body defines a name ``old`` of its own)."""
    if outer:
        for t in graph.initializer:
            if t.name == old:
                t.name = new
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        if outer:
            n.output[:] = [new if o == old else o for o in n.output]
        for sub in _subgraphs(n):
            own = {o for m in sub.node for o in m.output} | {t.name for t in sub.initializer} | {i.name for i in sub.input}
            if old not in own:
                rename_tensor(sub, old, new, outer=False)
    for o in graph.output:
        if o.name == old:
            o.name = new


class Appender:
    """Operators appended to ``graph`` under one name ``prefix`` (the imports' rewiring): constants as
    initializers, nodes with fresh output names, kept aside until :meth:`flush` so that
    :meth:`write_as` can still give a node's output its final name."""

    def __init__(self, graph, prefix: str):
        self.graph, self.prefix, self.nodes, self._count = graph, prefix, [], 0

    def _fresh(self, kind: str) -> str:
        self._count += 1
        return f"{self.prefix}{kind}{self._count}"

    def const(self, value) -> str:
        import numpy as np
        from onnx import numpy_helper

        name = self._fresh("c")
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self._fresh("t")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self._fresh(op.lower()), **attrs))
        return out

    def node_outputs(self, op: str, inputs: list[str], count: int, **attrs) -> list[str]:
        """A node with ``count`` outputs (TopK's values and indices), their fresh names."""
        from onnx import helper

        outs = [self._fresh("t") for _ in range(count)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self._fresh(op.lower()), **attrs))
        return outs

    def set_outputs(self, written: dict[str, str], types: dict[str, tuple[int, int]]) -> None:
        """Flush, and make the tensors ``written`` (kind -> tensor) the graph's only outputs, named by kind and
        declared by element type and rank only (``types``: kind -> (ONNX element type, rank)): shape inference
        may not reach them through a runtime's contrib ops."""
        from onnx import helper

        for kind, x in written.items():
            self.node("Identity", [x], out=kind)
        self.flush()
        del self.graph.output[:]
        self.graph.output.extend([helper.make_tensor_value_info(k, types[k][0], [None] * types[k][1]) for k in written])

    def write_as(self, x: str, target: str) -> None:
        """``target`` is written in place of ``x``: by the appended node that writes ``x``, or, for a tensor
        of the original graph, by renaming it everywhere (:func:`rename_tensor`)."""
        producer = next((n for n in self.nodes if x in n.output), None)
        if producer is not None:
            producer.output[:] = [target]
        else:
            rename_tensor(self.graph, x, target)

    def flush(self) -> None:
        self.graph.node.extend(self.nodes)
        self.nodes = []


def remove_unused_initializers(model) -> int:
    """Drop initializers no node (or subgraph, or graph output) reads; returns how many."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    _subgraph_inputs(model.graph, used)
    unused = {i.name for i in model.graph.initializer if i.name not in used}
    if unused:
        keep = [i for i in model.graph.initializer if i.name not in unused]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        inputs = [i for i in model.graph.input if i.name not in unused]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    return len(unused)


def _subgraph_inputs(graph, used: set[str]) -> None:
    for node in graph.node:
        for attr in node.attribute:
            for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                used.update(n for sub in g.node for n in sub.input)
                _subgraph_inputs(g, used)


def clean_graph(model):
    """Remove unused initializers, run shape inference (fails softly on exotic graphs)."""
    import onnx

    remove_unused_initializers(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # noqa: BLE001 - shape inference is an optimisation; the graph stays valid
        log.debug("shape inference skipped: %s", e)
    return model


def save_single_file(model, path: Path) -> Path:
    """Save with weights inside the file (models < 2 GB), via a temp file and rename."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
    except ValueError as e:
        raise ExportError(f"cannot write {path}: {e}", fix="models over 2 GB are not supported in a bundle") from None
    tmp.replace(path)
    return path
