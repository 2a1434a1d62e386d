"""Graph preparation before quantization, the same for edgeseg-exported and imported ONNX models.

Steps, in order (each recorded in :class:`PrepareReport`):

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
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._ort import make_session
from ..errors import EdgesegError, QuantizationError

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
    steps = []
    opset_before = model_opset(model)
    nodes_before = len(model.graph.node)
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


def fold_batchnorm(model) -> list[str]:
    """Fold ``Conv -> BatchNormalization`` pairs in place; return the names of the folded BN nodes."""
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    graph_outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
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
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # symbolic inference does not know every op; ONNX's is the fallback
        return onnx.shape_inference.infer_shapes(model)
