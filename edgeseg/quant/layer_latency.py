"""Per-layer INT8 latency on the host: which layers INT8 does not make faster, to leave them in float.

INT8 pays on wide convolutions, but on a CPU some layers run *slower* quantized than in float
(depthwise and tiny convolutions, odd kernel shapes, layers whose INT8 kernel needs extra reorders),
and models from other exporters have many of them. For every quantizable Conv/Gemm/MatMul of the
prepared model, at its real shapes (shape inference at the bundle's input size), this module builds
and times, in ONNX Runtime on this CPU with the session threads inference will use:

* **float**: the layer alone, float in and out, with the Relu/Clip that follows it (ORT fuses it);
* **int8**: ``u8 -> DequantizeLinear -> layer(DQ(int8 weights, per channel), DQ(int32 bias)) ->
  QuantizeLinear -> u8``, the pattern ORT fuses into one integer kernel (QLinearConv, ...), with the
  activation folded into the output range, as inside a quantized graph;
* **conversions**: the DequantizeLinear of its input and QuantizeLinear of its output that leaving
  this one layer in float inside a quantized graph adds.

A layer stays in float when ``float + conversions`` beats ``int8`` by ``margin``: it is then faster
in float even after paying to convert in and out. Timings are interleaved (float, int8, float, ...)
and the minimum of ``rounds`` medians is kept, so a shared machine's noise touches both alike.
``quantize_bundle`` applies the result to the ``cpu`` target and keeps it only if the whole model is
then measured faster (both models timed side by side); the report lists each layer with its times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .._timing import time_runs

#: op types timed (the layers where INT8 arithmetic happens)
TIMED_OPS = ("Conv", "Gemm", "MatMul")
_ACTIVATIONS = ("Relu", "Clip")


@dataclass(frozen=True)
class LayerTiming:
    """One layer's measured times in milliseconds."""

    name: str
    op_type: str
    float_ms: float
    int8_ms: float
    convert_ms: float  # DQ of its input + Q of its output, paid when it alone stays in float
    shape: tuple[int, ...]  # its output shape

    def float_wins(self, margin: float) -> bool:
        """Float, conversions included, is faster than INT8 by more than ``margin`` (fraction)."""
        return self.float_ms + self.convert_ms < self.int8_ms * (1.0 - margin)

    def reason(self) -> str:
        return (f"measured slower in INT8 on this CPU: {self.int8_ms:.3f} ms vs {self.float_ms:.3f} ms float "
                f"+ {self.convert_ms:.3f} ms to convert in and out")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "float_ms": self.float_ms, "int8_ms": self.int8_ms,
                "convert_ms": self.convert_ms, "shape": list(self.shape)}


def measure_layers(model, threads: int = 1, *, runs: int = 15, rounds: int = 3, skip: Sequence[str] = (),
                   progress: bool = False, input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[LayerTiming]:
    """Time every timed layer of ``model`` (an ``onnx.ModelProto``) in float and INT8 on this CPU.
    ``input_shapes`` fixes the graph inputs' dynamic dimensions (e.g. the batch axis) to the shapes
    inference will feed; layers whose shapes stay unknown are not timed. ``skip``: node names not to
    time (already kept in float)."""
    import onnx

    from .._progress import tracked

    if input_shapes:
        model = _with_input_shapes(model, input_shapes)
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = _value_shapes(inferred)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    skip = set(skip)
    todo = [n for n in model.graph.node if n.op_type in TIMED_OPS and n.name not in skip]
    out = []
    for node in tracked(todo, "per-layer latency", "layer", progress):
        layer = _Layer.of(node, inits, shapes, consumers)
        if layer is not None:
            out.append(_time_layer(layer, threads, runs, rounds))
    return out


def _with_input_shapes(model, shapes: Mapping[str, Sequence[int]]):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for inp in out.graph.input:
        if inp.name in shapes:
            for d, v in zip(inp.type.tensor_type.shape.dim, shapes[inp.name]):
                d.Clear()
                d.dim_value = int(v)
    return out


def slow_int8_layers(timings: Sequence[LayerTiming], margin: float = 0.1) -> dict[str, str]:
    """node name -> reason, for the layers float beats INT8 on by more than ``margin``."""
    return {t.name: t.reason() for t in timings if t.float_wins(margin)}


# ---- one layer ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layer:
    node: Any  # onnx.NodeProto
    act: Any | None  # the Relu/Clip fused after it (its only consumer), if any
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    weight: np.ndarray
    bias: np.ndarray | None
    act_consts: dict[str, np.ndarray]  # Clip min/max initializers

    @classmethod
    def of(cls, node, inits: dict, shapes: dict, consumers: dict) -> "_Layer | None":
        if len(node.input) < 2 or node.input[1] not in inits or node.input[0] in inits:
            return None  # activation x activation MatMul, or weights computed in-graph: not a weight layer
        w = inits[node.input[1]]
        if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
            return None
        bias = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and bias is None:
            return None
        x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        if x is None or y is None or w.dtype != np.float32:
            return None
        users = consumers.get(node.output[0], [])
        act = users[0] if len(users) == 1 and users[0].op_type in _ACTIVATIONS else None
        consts = {}
        if act is not None:
            for name in act.input[1:]:
                if name and name not in inits:
                    act = None
                    break
                if name:
                    consts[name] = inits[name]
        return cls(node, act, x, y, w, bias, consts)


def _value_shapes(model) -> dict[str, tuple[int, ...]]:
    out = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.elem_type != 1 or not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if dims and all(d > 0 for d in dims):
            out[vi.name] = tuple(dims)
    return out


def _time_layer(layer: _Layer, threads: int, runs: int, rounds: int) -> LayerTiming:
    from .._ort import make_session

    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape).astype(np.float32)
    xq = rng.integers(0, 256, layer.x_shape, dtype=np.uint8)
    sessions = {
        "float": (make_session(_float_model(layer).SerializeToString(), threads=threads), {"x": x}),
        "int8": (make_session(_int8_model(layer).SerializeToString(), threads=threads), {"x": xq}),
        "dq": (make_session(_convert_model(layer.x_shape, to_float=True).SerializeToString(), threads=threads), {"x": xq}),
        "q": (make_session(_convert_model(layer.y_shape, to_float=False).SerializeToString(), threads=threads),
              {"x": rng.standard_normal(layer.y_shape).astype(np.float32)}),
    }
    best = {k: float("inf") for k in sessions}
    for _ in range(rounds):
        for k, (sess, feed) in sessions.items():
            best[k] = min(best[k], time_runs(lambda s=sess, f=feed: s.run(None, f), runs, warmup=2).p50_ms)
    # rounded once, here: the decision (float_wins) and the report (to_dict) read the same figures
    return LayerTiming(layer.node.name, layer.node.op_type, round(best["float"], 4), round(best["int8"], 4),
                       round(best["dq"] + best["q"], 4), layer.y_shape)


def _copy_node(node, inputs: list[str], outputs: list[str]):
    import onnx

    n = onnx.NodeProto()
    n.CopyFrom(node)
    del n.input[:]
    n.input.extend(inputs)
    del n.output[:]
    n.output.extend(outputs)
    return n


def _graph(nodes, inits, x_shape, x_type: int, y_shape, y_type: int):
    import onnx
    from onnx import helper

    g = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", x_type, list(x_shape))],
                          [helper.make_tensor_value_info("y", y_type, list(y_shape))], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _act_nodes(layer: _Layer, src: str, dst: str) -> list:
    return [_copy_node(layer.act, [src] + list(layer.act.input[1:]), [dst])] if layer.act is not None else []


def _float_model(layer: _Layer):
    from onnx import TensorProto, numpy_helper

    inits = [numpy_helper.from_array(layer.weight, "w")]
    ins = ["x", "w"]
    if layer.bias is not None:
        inits.append(numpy_helper.from_array(layer.bias, "b"))
        ins.append("b")
    inits += [numpy_helper.from_array(v, k) for k, v in layer.act_consts.items()]
    mid = "y" if layer.act is None else "pre"
    nodes = [_copy_node(layer.node, ins, [mid])] + _act_nodes(layer, "pre", "y")
    return _graph(nodes, inits, layer.x_shape, TensorProto.FLOAT, layer.y_shape, TensorProto.FLOAT)


def _weight_axis(layer: _Layer) -> int:
    if layer.node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in layer.node.attribute)
        return 0 if trans_b else 1
    return 0 if layer.node.op_type == "Conv" else layer.weight.ndim - 1


def _int8_model(layer: _Layer):
    """u8 -> DQ -> layer(DQ(s8 per-channel weights), DQ(s32 bias)) -> Q -> u8, as ORT's quantizer writes it."""
    from onnx import TensorProto, helper, numpy_helper

    axis = _weight_axis(layer)
    reduce = tuple(i for i in range(layer.weight.ndim) if i != axis)
    w_scale = np.maximum(np.abs(layer.weight).max(axis=reduce), 1e-8).astype(np.float32) / 127.0
    shape = [1] * layer.weight.ndim
    shape[axis] = -1
    wq = np.clip(np.round(layer.weight / w_scale.reshape(shape)), -127, 127).astype(np.int8)
    x_scale, x_zp = np.float32(0.05), np.uint8(128)
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(w_scale, "ws"),
             numpy_helper.from_array(np.zeros_like(w_scale, np.int8), "wz"),
             numpy_helper.from_array(np.array(x_scale), "xs"), numpy_helper.from_array(np.array(x_zp), "xz"),
             numpy_helper.from_array(np.array(np.float32(0.05)), "ys"), numpy_helper.from_array(np.array(np.uint8(0)), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], name="dq_w", axis=axis)]
    ins = ["xf", "wf"]
    if layer.bias is not None:
        b_scale = (w_scale * x_scale).astype(np.float32)
        # a zero weight channel gives a tiny scale: clip (this model only times the layer) instead of overflowing
        bq = np.clip(np.round(layer.bias / b_scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
        inits += [numpy_helper.from_array(bq, "bq"), numpy_helper.from_array(b_scale, "bs"),
                  numpy_helper.from_array(np.zeros_like(bq), "bz")]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bf"], name="dq_b", axis=0))
        ins.append("bf")
    nodes.append(_copy_node(layer.node, ins, ["yf"]))
    nodes.append(helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"], name="q_y"))
    return _graph(nodes, inits, layer.x_shape, TensorProto.UINT8, layer.y_shape, TensorProto.UINT8)


def _convert_model(shape: tuple[int, ...], to_float: bool):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(np.float32(0.05)), "s"), numpy_helper.from_array(np.array(np.uint8(128)), "z")]
    op = "DequantizeLinear" if to_float else "QuantizeLinear"
    nodes = [helper.make_node(op, ["x", "s", "z"], ["y"], name=op)]
    src, dst = (TensorProto.UINT8, TensorProto.FLOAT) if to_float else (TensorProto.FLOAT, TensorProto.UINT8)
    return _graph(nodes, inits, shape, src, shape, dst)


def time_models_interleaved(paths: Sequence, feed: dict[str, np.ndarray], threads: int = 1, *, runs: int = 10,
                            rounds: int = 3) -> list[float]:
    """Median latency (ms) of each ONNX model, timed round-robin ``rounds`` times; the minimum of the
    rounds' medians (side by side, so a shared machine's load touches all of them alike)."""
    from .._ort import make_session

    sessions = [make_session(p, threads=threads) for p in paths]
    best = [float("inf")] * len(sessions)
    for _ in range(rounds):
        for i, sess in enumerate(sessions):
            best[i] = min(best[i], time_runs(lambda s=sess: s.run(None, feed), runs, warmup=2).p50_ms)
    return best
