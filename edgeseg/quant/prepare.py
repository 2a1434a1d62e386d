"""Graph preparation before quantization, the same for edgeseg-exported and imported ONNX models.

Steps, in order (each recorded in :class:`PrepareReport`):

0. half precision: a float16 or bfloat16 model is made float32 inside (:mod:`edgeseg.quant.upcast`), its
   inputs and outputs keeping their types through Casts; the quantizers work on float32 graphs.
1. opset upgrade: models below opset 13 (common from other exporters: 9-12) are converted with
   ``onnx.version_converter`` to 13, the first opset with per-channel QuantizeLinear/DequantizeLinear.
2. node names: unnamed nodes get ``<OpType>_<index>`` so they can be excluded / reported by name.
3. Conv-BatchNormalization folding at the ONNX level (``W' = W * g / sqrt(v + eps)``,
   ``b' = (b - m) * g / sqrt(v + eps) + beta``), when the BN's parameters are constants and the Conv
   output feeds only the BN. A following ReLU stays a separate node; TensorRT and ONNX Runtime fuse it.
4. constant folding and clean-up: ONNX Runtime's *basic* (hardware-independent, standard-ONNX)
   optimiser run offline (``SessionOptions.optimized_model_filepath``): constant folding, redundant
   node elimination (Identity, Dropout, ...), Conv-Add/Conv-Mul fusion.
5. shape inference (symbolic where ONNX Runtime's symbolic inference works, ONNX's otherwise),
   so the quantizer knows which tensors are float.

NHWC models keep their layout (the input spec says NHWC and calibration feeds NHWC); the input
Transpose stays in float. Unusual normalisations (Mul/Sub on the input) fold into the first Conv
only when they are constant-foldable; otherwise they stay, in float.

:func:`int8_prelu` is not a preparation step: it rewrites PRelu for targets that ask for it
(``QuantProfile.int8_prelu``, the ``cpu`` target) just before quantization, so the FP32 model that
latency and accuracy are compared against keeps its PRelu.
"""
from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np

from .._ort import make_session
from ..errors import EdgesegError, QuantizationError
from .upcast import upcast_half

MIN_QDQ_OPSET = 13


@dataclass(frozen=True)
class PrepareReport:
    """What preparation changed."""

    opset_before: int
    opset_after: int
    folded_batchnorms: tuple[str, ...]
    renamed_nodes: int
    nodes_before: int
    nodes_after: int
    steps: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {
            "opset_before": self.opset_before, "opset_after": self.opset_after,
            "folded_batchnorms": list(self.folded_batchnorms), "renamed_nodes": self.renamed_nodes,
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after, "steps": list(self.steps),
        }


def model_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def prepare_model(src, dst: str | Path, *, optimize: bool = True) -> PrepareReport:
    """Prepare ``src`` (a path or ``onnx.ModelProto``) for quantization and save it to ``dst``."""
    import onnx

    model = onnx.load(str(src)) if not isinstance(src, onnx.ModelProto) else onnx.ModelProto.FromString(src.SerializeToString())
    check_float_model(model, "the model" if isinstance(src, onnx.ModelProto) else str(src))
    steps = []
    opset_before = model_opset(model)
    nodes_before = len(model.graph.node)
    halves = upcast_half(model)
    if halves:
        steps.append(f"half precision -> float32 ({halves} tensors, types and attributes; inputs and outputs keep "
                     "their types through Casts)")
    if opset_before < MIN_QDQ_OPSET:
        model = upgrade_opset(model, MIN_QDQ_OPSET)
        steps.append(f"opset {opset_before} -> {MIN_QDQ_OPSET}")
    renamed = name_nodes(model)
    if renamed:
        steps.append(f"named {renamed} unnamed nodes")
    folded = fold_batchnorm(model)
    if folded:
        steps.append(f"folded {len(folded)} Conv-BatchNormalization pairs")
    dst = Path(dst)
    if optimize:
        model = ort_basic_optimize(model)
        steps.append("constant folding and clean-up (ONNX Runtime basic optimiser)")
        name_nodes(model)
    model = infer_shapes(model)
    steps.append("shape inference")
    pooled = global_pools(model)
    if pooled:
        steps.append(f"{len(pooled)} spatial ReduceMean -> GlobalAveragePool (it has an INT8 kernel)")
    onnx.save(model, str(dst))
    return PrepareReport(opset_before, model_opset(model), tuple(folded), renamed, nodes_before, len(model.graph.node), tuple(steps))




from ..export.graph import QUANTIZED_OPS, quantized_ops  # noqa: E402  (ops of a model quantized already)


def check_float_model(model, where: str) -> None:
    """Refuse a model that is quantized already: calibrating it again stacks a second Q/DQ pair on each
    (ONNX Runtime then refuses the graph, or TensorRT gets twice the rounding)."""
    found = quantized_ops(model)  # subgraphs too
    if found:
        count = sum(n.op_type in QUANTIZED_OPS for n in model.graph.node)
        raise QuantizationError(f"{where}: the model is quantized already ({count or 'some'} {', '.join(found)} nodes); "
                                "INT8 calibration needs the float model",
                                fix="quantize a bundle made from the FP32 ONNX model (edgeseg export / edgeseg import of "
                                    "the float file); a bundle's own INT8 models are its model.int8.<target>.onnx")


def global_pools(model) -> list[str]:
    """Turn ``ReduceMean`` over both spatial axes of a 4-D tensor with ``keepdims=1`` (how many
    exporters write a squeeze-excitation block's or a pooling branch's global mean) into the
    equivalent ``GlobalAveragePool``, which ONNX Runtime and TensorRT run in INT8 (a ReduceMean sits
    between a DequantizeLinear and a QuantizeLinear in float). Returns the rewritten node names."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    rank = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in list(g.value_info) + list(g.input) + list(g.output)
            if vi.type.tensor_type.HasField("shape")}
    done = []
    for i, node in enumerate(list(g.node)):
        if node.op_type != "ReduceMean" or rank.get(node.input[0]) != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in inits:
            axes = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if attrs.get("keepdims", 1) != 1 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        g.node.remove(node)
        g.node.insert(i, helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name))
        done.append(node.name)
    if done:
        _drop_unused_initializers(model)
    return done


def upgrade_opset(model, opset: int):
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:  # the converter raises bare RuntimeErrors naming the op
        raise QuantizationError(
            f"cannot convert the model from opset {model_opset(model)} to {opset} for INT8 (Q/DQ per-channel needs >= 13): {e}",
            fix="re-export the model at opset 13 or newer",
        ) from None


def name_nodes(model) -> int:
    """Give every unnamed node a unique ``<OpType>_<index>`` name; return how many were named."""
    used = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{i}"
        while name in used:
            name += "_"
        node.name = name
        used.add(name)
        count += 1
    return count


def _graph_index(g):
    """(initializers by name, consumer count per tensor, producing node per tensor, graph output names)."""
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    return inits, consumers, {o: n for n in g.node for o in n.output}, {o.name for o in g.output}


def fold_batchnorm(model) -> list[str]:
    """Fold ``Conv -> BatchNormalization`` pairs in place; return the names of the folded BN nodes."""
    from onnx import numpy_helper

    g = model.graph
    inits, consumers, producer, graph_outputs = _graph_index(g)
    folded, remove = [], []
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or consumers.get(conv.output[0], 0) != 1 or conv.output[0] in graph_outputs:
            continue
        params = bn.input[1:5]
        if not all(p in inits for p in params) or conv.input[1] not in inits:
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in params)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0])
        k = gamma / np.sqrt(var + eps)
        w_new = (w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        b_new = ((b - mean) * k + beta).astype(np.float32)
        wname, bname = f"{conv.name or conv.output[0]}.weight_folded", f"{conv.name or conv.output[0]}.bias_folded"
        g.initializer.extend([numpy_helper.from_array(w_new, wname), numpy_helper.from_array(b_new, bname)])
        del conv.input[1:]
        conv.input.extend([wname, bname])
        conv.output[0] = bn.output[0]
        remove.append(bn)
        folded.append(bn.name or bn.output[0])
    for n in remove:
        g.node.remove(n)
    _drop_unused_initializers(model)
    return folded


def _drop_unused_initializers(model) -> None:
    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)


def ort_basic_optimize(model):
    """ONNX Runtime's basic-level graph optimisations applied offline (result is standard ONNX)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgeseg-prep-") as tmp:
        src, out = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        try:
            make_session(src, threads=1, optimization="basic", optimized_model_path=out)
        except EdgesegError as e:
            raise QuantizationError(f"ONNX Runtime cannot load the model to optimise it for INT8: {e.__cause__ or e}",
                                    fix="check the model with 'edgeseg check BUNDLE --target onnxruntime'") from None
        return onnx.load(str(out))


def infer_shapes(model):
    """Symbolic shape inference (handles dynamic axes), falling back to ONNX's own."""
    import onnx

    try:
        return _symbolic_shape_inference().infer_shapes(model, auto_merge=True)
    except Exception:  # symbolic inference does not know every op; ONNX's is the fallback
        return onnx.shape_inference.infer_shapes(model)


@functools.lru_cache(maxsize=1)
def _symbolic_shape_inference() -> Any:
    """ONNX Runtime's ``SymbolicShapeInference``, its module loaded by file: importing it as
    ``onnxruntime.tools.symbolic_shape_infer`` runs the ``tools`` package's ``__init__``, which imports torch where
    it is installed (1.2 s of every ``quantize``, a performance audit); the module itself needs only onnx and numpy."""
    import importlib.util
    import os

    import onnxruntime

    path = os.path.join(os.path.dirname(onnxruntime.__file__), "tools", "symbolic_shape_infer.py")
    spec = importlib.util.spec_from_file_location("_edgeseg_ort_symbolic_shape_infer", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SymbolicShapeInference


# ---- PRelu for ONNX Runtime's INT8 path ----------------------------------------------------------
#: a PRelu this many INT8 compute layers or fewer from the model output stays float (ESPNet-like,
#: 12 CamVid frames, argmax agreement with FP32: 96.29% all PRelu float, 95.84% all 20 rewritten,
#: 96.13% keeping the 2 before a float ConvTranspose, 96.30% with this rule: 15 rewritten, 5 kept)
PRELU_MIN_INT8_DEPTH = 1


@dataclass(frozen=True)
class PreluRewrite:
    """One PRelu (with the BatchNormalization before it, if absorbed) rewritten into ops that ONNX
    Runtime fuses into INT8 kernels. ``form``: ``LeakyRelu`` (one slope: QLinearLeakyRelu),
    ``depthwise`` (per-channel slopes after a BatchNormalization: two 1x1 depthwise QLinearConv and
    a QLinearAdd) or ``residual`` (per-channel, no BatchNormalization: one depthwise QLinearConv
    and a QLinearAdd)."""

    node: str
    form: str
    batchnorm: str | None = None

    def to_dict(self) -> dict:
        return {"node": self.node, "form": self.form, "batchnorm": self.batchnorm}


def int8_prelu(model, ranges: Mapping[str, tuple[float, float]], int8_ops: Collection[str] | None = None,
               keep: Collection[str] = ()) -> tuple[list[PreluRewrite], dict[str, tuple[float, float]], dict[str, str]]:
    """Rewrite, in place, every PRelu with a constant slope so that ONNX Runtime runs it in INT8
    (its CPU provider has no INT8 PRelu: in a Q/DQ graph each one costs DequantizeLinear -> float
    PRelu -> QuantizeLinear, and ORT's broadcasting float PRelu is itself slow). Equivalent in float:

    * one slope ``s`` (or all channels equal): ``LeakyRelu(alpha=s)`` (QLinearLeakyRelu);
    * per-channel slopes ``s_c <= 1`` on NCHW: with ``z = a*x + b`` (the BatchNormalization feeding
      only this PRelu, absorbed; else ``a = 1, b = 0``), ``PRelu(z) = s*z + Relu((1 - s)*z)``: two 1x1
      depthwise Conv (weights ``s*a`` and ``(1 - s)*a``, biases ``s*b`` and ``(1 - s)*b``; per-channel
      INT8 weights represent one value per channel exactly), a Relu and an Add; without a
      BatchNormalization ``PRelu(x) = x + Relu((s - 1)*x)``: one depthwise Conv, a Relu and an Add
      (``x`` is already quantized: one rounding fewer). The Add keeps the PRelu's name and output.

    The INT8 forms round twice more than ``DQ -> PRelu -> Q`` (each branch, then the Add). A PRelu
    at most :data:`PRELU_MIN_INT8_DEPTH` INT8 compute layers (op types in ``int8_ops``, the ones
    the target quantizes; None: all) from the model output stays float: there the extra noise goes
    nearly straight into the logits (and before a float op it saves no conversion either).

    ``keep``: PRelu node names to leave as they are (asked to stay float). ``ranges``: calibrated
    (low, high) per tensor of the model. Returns the rewrites, the ranges of the new tensors
    (derived from the PRelu input's range, channel by channel: a bound, not a measurement) and
    ``{PRelu node: why it was left}`` for the PRelu nodes kept."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits, consumers, producer, outputs = _graph_index(g)
    rank = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in list(g.value_info) + list(g.input) + list(g.output)
            if vi.type.tensor_type.HasField("shape")}
    done, derived, kept = [], {}, {}
    depth = _prelu_int8_depth(g, int8_ops)
    for node in [n for n in g.node if n.op_type == "PRelu"]:
        x, y = node.input[0], node.output[0]
        if node.name in keep:
            continue
        if depth[node.name] <= PRELU_MIN_INT8_DEPTH:
            kept[node.name] = (f"PRelu {depth[node.name]} INT8 layer(s) from the model output: the INT8 form's extra "
                               f"roundings would reach the logits nearly unchanged, left in float")
            continue
        if node.input[1] not in inits:
            kept[node.name] = "PRelu slope computed in the graph: no INT8 form, left in float"
            continue
        slope = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        at = list(g.node).index(node)
        if slope.size == 1 or np.all(slope == slope.flat[0]):
            g.node.remove(node)
            g.node.insert(at, helper.make_node("LeakyRelu", [x], [y], name=node.name, alpha=float(slope.flat[0])))
            done.append(PreluRewrite(node.name, "LeakyRelu"))
            continue
        why = _per_channel_problem(slope, rank.get(x), ranges.get(x))
        if why:
            kept[node.name] = why + ": left in float (DequantizeLinear -> PRelu -> QuantizeLinear)"
            continue
        s = slope.reshape(-1)
        bn = producer.get(x)
        if _absorbable_bn(bn, inits, consumers, outputs, s.size):
            at = list(g.node).index(bn)  # the depthwise pair reads the BN's input
            g.node.remove(bn)
            g.node.remove(node)
            t = _depthwise_prelu(node.name, bn.input[0], y, s, *_bn_affine(bn, inits), at, g)
            done.append(PreluRewrite(node.name, "depthwise", bn.name))
            derived.update(_prelu_ranges(t, s, ranges[x]))
        else:
            g.node.remove(node)
            t = _residual_prelu(node.name, x, y, s, at, g)
            done.append(PreluRewrite(node.name, "residual"))
            derived.update(_residual_ranges(t, s, ranges[x]))
    if done:
        _drop_unused_initializers(model)
    return done, derived, kept


def _prelu_int8_depth(g, int8_ops: Collection[str] | None) -> dict[str, int]:
    """For each PRelu: the fewest INT8 compute layers (Conv, MatMul, ... that the target quantizes)
    between its output and a graph output, over all paths (float ops add none). Nodes are in
    topological order (ONNX requires it), so one pass from the end suffices."""
    from .quantize import COMPUTE_OPS

    far = 10**6
    dist: dict[str, int] = {o.name: 0 for o in g.output}
    out: dict[str, int] = {}
    for node in reversed(list(g.node)):
        d = min((dist.get(o, far) for o in node.output), default=far)
        if node.op_type == "PRelu":
            out[node.name] = d
        through = d + 1 if node.op_type in COMPUTE_OPS and (int8_ops is None or node.op_type in int8_ops) else d
        for i in node.input:
            dist[i] = min(dist.get(i, far), through)
    return out


def _per_channel_problem(slope: np.ndarray, x_rank: int | None, x_range) -> str | None:
    shape = (1,) * (4 - slope.ndim) + slope.shape if slope.ndim <= 4 else slope.shape
    if x_rank != 4 or len(shape) != 4 or shape[0] != 1 or shape[2:] != (1, 1):
        return f"PRelu slope of shape {list(slope.shape)} is not per channel of an NCHW tensor"
    if slope.max() > 1.0:
        return f"PRelu slope {slope.max():.3g} > 1 on some channel (the depthwise form needs 1 - slope >= 0)"
    if x_range is None:
        return "PRelu input has no calibrated range"
    return None


def _absorbable_bn(bn, inits, consumers, outputs, channels: int) -> bool:
    return (bn is not None and bn.op_type == "BatchNormalization" and len(bn.output) == 1
            and consumers.get(bn.output[0], 0) == 1 and bn.output[0] not in outputs
            and all(p in inits for p in bn.input[1:5]) and int(np.prod(inits[bn.input[1]].dims)) == channels)


def _bn_affine(bn, inits) -> tuple[np.ndarray, np.ndarray]:
    from onnx import numpy_helper

    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    gamma, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in bn.input[1:5])
    a = gamma / np.sqrt(var + eps)
    return a, beta - mean * a


def _depthwise_prelu(name: str, src: str, y: str, s, a, b, at: int, g) -> dict[str, str]:
    """Insert ``Add(DWConv(src; s*a, s*b), Relu(DWConv(src; (1-s)*a, (1-s)*b)))`` at ``at``; return the new tensors."""
    from onnx import helper, numpy_helper

    c = s.size
    t = {"neg": f"{y}/prelu_neg", "pre": f"{y}/prelu_pos_pre", "pos": f"{y}/prelu_pos"}
    for key, k in (("neg", s), ("pos", 1.0 - s)):
        g.initializer.extend([numpy_helper.from_array((k * a).astype(np.float32).reshape(c, 1, 1, 1), f"{name}/{key}.weight"),
                              numpy_helper.from_array((k * b).astype(np.float32), f"{name}/{key}.bias")])
    nodes = [
        helper.make_node("Conv", [src, f"{name}/neg.weight", f"{name}/neg.bias"], [t["neg"]], name=f"{name}/neg", group=c),
        helper.make_node("Conv", [src, f"{name}/pos.weight", f"{name}/pos.bias"], [t["pre"]], name=f"{name}/pos", group=c),
        helper.make_node("Relu", [t["pre"]], [t["pos"]], name=f"{name}/relu"),
        helper.make_node("Add", [t["neg"], t["pos"]], [y], name=name),
    ]
    for i, n in enumerate(nodes):
        g.node.insert(at + i, n)
    return t


def _residual_prelu(name: str, x: str, y: str, s, at: int, g) -> dict[str, str]:
    """Insert ``Add(x, Relu(DWConv(x; s - 1)))`` (``PRelu(x) = x + (1 - s) * Relu(-x)``) at ``at``."""
    from onnx import helper, numpy_helper

    c = s.size
    t = {"pre": f"{y}/prelu_neg_pre", "pos": f"{y}/prelu_neg"}
    g.initializer.append(numpy_helper.from_array((s - 1.0).astype(np.float32).reshape(c, 1, 1, 1), f"{name}/neg.weight"))
    nodes = [helper.make_node("Conv", [x, f"{name}/neg.weight"], [t["pre"]], name=f"{name}/neg", group=c),
             helper.make_node("Relu", [t["pre"]], [t["pos"]], name=f"{name}/relu"),
             helper.make_node("Add", [x, t["pos"]], [y], name=name)]
    for i, n in enumerate(nodes):
        g.node.insert(at + i, n)
    return t


def _residual_ranges(t: dict[str, str], s: np.ndarray, x_range) -> dict[str, tuple[float, float]]:
    lo, hi = float(x_range[0]), float(x_range[1])
    ends = np.concatenate([(s - 1.0) * lo, (s - 1.0) * hi])
    return {t["pre"]: (float(ends.min()), float(ends.max())), t["pos"]: (0.0, max(float(ends.max()), 1e-6))}


def _prelu_ranges(t: dict[str, str], s: np.ndarray, z_range) -> dict[str, tuple[float, float]]:
    """Ranges of the new tensors from the PRelu input's ``[lo, hi]``: channel c of ``k*z`` lies in
    ``k_c * [lo, hi]``, so the tensor lies in the hull over channels."""
    lo, hi = float(z_range[0]), float(z_range[1])

    def hull(k):
        ends = np.concatenate([k * lo, k * hi])
        return float(ends.min()), float(ends.max())

    pre = hull(1.0 - s)
    return {t["neg"]: hull(s), t["pre"]: pre, t["pos"]: (0.0, max(pre[1], 1e-6))}
