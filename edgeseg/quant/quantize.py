"""Post-training static INT8 quantization of a prepared ONNX model into Q/DQ ONNX.

ONNX Runtime's ``quantize_static`` does the graph rewriting (QDQ format, per-channel weights); the
ranges come from a :class:`~edgeseg.quant.ranges.CalibrationTable` measured once, and the target
profile (:mod:`edgeseg.quant.profiles`) decides types, symmetry, where Q/DQ go and what stays in
float. Every node left in float is returned with the reason, for the report. Profiles with
``int8_prelu`` (``cpu``) get their PRelu rewritten into INT8-fusable ops first
(:func:`edgeseg.quant.prepare.int8_prelu`), on a copy: the prepared FP32 model is not changed.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..errors import QuantizationError
from .profiles import QuantProfile
from .ranges import CalibrationTable, quiet

#: op types that carry the arithmetic: the layers sensitivity analysis and mixed precision act on
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class FloatNode:
    """A node left in float, and why."""

    name: str
    op_type: str
    reason: str

    def to_dict(self) -> dict:
        return {"name": self.name, "op_type": self.op_type, "reason": self.reason}


@dataclass(frozen=True)
class QuantizedModel:
    """A quantized model file and what was left in float."""

    path: Path
    target: str
    float_nodes: tuple[FloatNode, ...]
    quantized_compute_nodes: int
    rewrites: tuple = ()  # prepare.PreluRewrite: PRelu nodes rewritten for INT8 (profile.int8_prelu)


def conv_macs_per_pixel(model, node) -> int | None:
    """Multiply-adds per output pixel of a Conv (``C_out * C_in/groups * kH * kW``), from its weight."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    for t in model.graph.initializer:
        if t.name == node.input[1]:
            dims = list(t.dims)
            prod = 1
            for d in dims:
                prod *= int(d)
            return prod
    return None


def nonfinite_nodes(model, tensors: Iterable[str] = ()) -> dict[str, str]:
    """Nodes that read or write NaN/inf (node name -> reason): a constant holding them (masked attention's
    ``-inf`` mask), or a tensor the calibration frames found holding them (``tensors``). INT8 has no
    infinity: Q/DQ would turn a masked ``-inf`` into the smallest finite value seen, and attention would
    look where it must not (or the constant's scale would be NaN)."""
    from onnx import numpy_helper

    bad = set(tensors)
    for init in model.graph.initializer:
        if init.data_type in (1, 10, 11, 16):  # float, float16, double, bfloat16
            arr = numpy_helper.to_array(init)
            if arr.size and not np.isfinite(arr.astype(np.float32, copy=False)).all():
                bad.add(init.name)
    return {n.name: "reads or writes NaN/inf (masked attention's -inf): INT8 would make it finite"
            for n in model.graph.node if bad.intersection(n.input) or bad.intersection(n.output)}


def forced_float_nodes(model, nonfinite: Iterable[str] = ()) -> dict[str, str]:
    """Nodes no target quantizes (node name -> reason), whichever engine places the Q/DQ: those touching
    NaN/inf (:func:`nonfinite_nodes`) and the post-processing ``edgeseg import`` appended (names starting
    with :data:`IMPORT_POSTPROCESS_PREFIXES`, also under the ``sem/``/``inst/`` scopes of a fused bundle)."""
    out = nonfinite_nodes(model, nonfinite)
    for node in model.graph.node:
        if node.name not in out and node.name.rsplit("/", 1)[-1].startswith(IMPORT_POSTPROCESS_PREFIXES):
            out[node.name] = ("post-processing appended at import (a mask-classification model's class sums, "
                              "Panoptic-DeepLab's offset scaling): kept in float, as the model's own code runs it")
    return out


def plan_float_nodes(model, profile: QuantProfile, keep_float: Mapping[str, str] | None = None,
                     nonfinite: Iterable[str] = ()) -> list[FloatNode]:
    """Which nodes stay in float for ``profile``: its float op types, convs too cheap for INT8 to pay
    off (profile threshold), grouped ConvTranspose (no per-channel axis that TensorRT and ONNX Runtime
    agree on), nodes touching NaN/inf (:func:`nonfinite_nodes`; ``nonfinite``: the tensors calibration
    found holding them), plus ``keep_float`` (node name -> reason, e.g. from mixed precision)."""
    keep_float = dict(keep_float or {})
    out: list[FloatNode] = []
    transformer_adds = transformer_float_adds(model)
    post = postprocess_float_nodes(model)
    forced = forced_float_nodes(model, nonfinite)
    for node in model.graph.node:
        reason = keep_float.pop(node.name, None)
        if reason is None:
            reason = forced.get(node.name)
        if reason is None:
            reason = profile.float_ops.get(node.op_type)
        if reason is None and node.name in transformer_adds:
            reason = transformer_adds[node.name]
        if reason is None and node.name in post:
            reason = post[node.name]
        if reason is None and node.op_type == "ConvTranspose" and _attr(node, "group", 1) != 1:
            reason = "grouped ConvTranspose: per-channel weight scales would not follow its output channels"
        if reason is None and profile.min_conv_macs_per_pixel:
            macs = conv_macs_per_pixel(model, node)
            if macs is not None and macs < profile.min_conv_macs_per_pixel:
                reason = (f"tiny Conv ({macs} MACs per output pixel < {profile.min_conv_macs_per_pixel}): "
                          f"INT8 was measured slower than float on {profile.name}")
        if reason is not None:
            out.append(FloatNode(node.name, node.op_type, reason))
    if keep_float:
        raise QuantizationError(f"cannot keep unknown node(s) in float: {', '.join(sorted(keep_float))}",
                                fix="use node names from the sensitivity table (edgeseg quantize --sensitivity)")
    return out


SELECTION_OPS = ("TopK", "NonMaxSuppression", "EfficientNMS_TRT", "NonZero")
#: name prefixes of the nodes ``edgeseg import`` appends after a model's own outputs (export/import_query.py,
#: import_panoptic.py): its post-processing, never INT8 (a sum of small probabilities rounds to 0)
IMPORT_POSTPROCESS_PREFIXES = ("edgeseg_query_", "edgeseg_panoptic_")
NETWORK_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def postprocess_float_nodes(model) -> dict[str, str]:
    """Nodes of the post-processing inside a graph that stay in float (node name -> reason): everything that
    works on what a selection op (TopK, NonMaxSuppression, EfficientNMS_TRT, NonZero) picked - scores, Matrix
    NMS, box arithmetic, centre grouping - except network compute that reads features or weights (a Conv,
    MatMul or Gemm with an input from before the selection or an initializer: SOLOv2's dynamic mask kernels
    applied to the mask features, Mask R-CNN's RoI heads), which INT8 runs as it runs the rest of the network.
    Before, ONNX Runtime's quantizer put Q/DQ on SOLOv2's Matrix NMS (its decay, the scores before the last
    TopK): the output scores were INT8 values and their ranking coarsened."""
    picked: set[str] = set()
    out: dict[str, str] = {}
    for node in model.graph.node:  # ONNX graphs are in topological order
        inputs = [i for i in node.input if i]
        downstream = any(i in picked for i in inputs)
        if node.op_type in SELECTION_OPS or downstream:
            picked.update(o for o in node.output if o)
        if not downstream:
            continue
        if node.op_type in NETWORK_OPS and any(i not in picked for i in inputs):
            continue
        out[node.name] = ("post-processing after a TopK/NMS (scores, NMS, box or grouping arithmetic): kept in "
                          "float, as the runtimes' own NMS and decoding are")
    return out


def transformer_float_adds(model) -> dict[str, str]:
    """``Add`` nodes of transformer blocks that stay in float (node name -> reason):

    * an Add whose output feeds a LayerNormalization (or the ReduceMean of a decomposed one): the
      residual stream of a ViT has outlier channels that per-tensor INT8 rounds away, and the norm
      after it would read the rounded stream;
    * an Add with an Erf input: the ``1 + erf(x / sqrt 2)`` inside an exported GELU; Q/DQ there
      (and on its constant) breaks TensorRT's GELU fusion and gains nothing.

    The MatMuls of attention and the MLP keep their Q/DQ; Softmax, LayerNorm and Erf are never
    quantized (no INT8 kernels)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: dict[str, str] = {}
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    residual = set()
    for n in adds:
        feeds = {c.op_type for o in n.output for c in consumers.get(o, ())}
        if feeds & {"LayerNormalization"} or ("ReduceMean" in feeds and "Sub" in feeds):
            residual.add(n.name)
    # down the residual chain: an Add taking a residual Add's output is the stream too (a block's last
    # Add may feed the head, not a norm; quantized, the Q/DQ on its input would be shared with the
    # norm that reads the same tensor)
    grew = True
    while grew:
        grew = False
        for n in adds:
            if n.name not in residual and {getattr(producers.get(i), "name", None) for i in n.input} & residual:
                residual.add(n.name)
                grew = True
    for n in adds:
        if n.name in residual:
            out[n.name] = "residual Add of a transformer block (outliers; the LayerNorm reads the stream in float)"
        elif any(getattr(producers.get(i), "op_type", None) == "Erf" for i in n.input):
            out[n.name] = "the 1 + erf(x) of a GELU (keeps TensorRT's GELU fusion)"
    return out


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def compute_nodes(model, profile: QuantProfile | None = None) -> list[tuple[str, str]]:
    """(name, op type) of the quantizable compute nodes, in graph order."""
    ops = COMPUTE_OPS if profile is None or profile.op_types is None else tuple(o for o in COMPUTE_OPS if o in profile.op_types)
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in ops]


def quantize_model(prepared: str | Path, out: str | Path, profile: QuantProfile, table: CalibrationTable,
                   keep_float: Mapping[str, str] | None = None) -> QuantizedModel:
    """Quantize the prepared model at ``prepared`` into ``out`` (Q/DQ ONNX) for ``profile``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    model = onnx.load(str(prepared), load_external_data=False)
    n_compute = len(compute_nodes(model, profile))
    with tempfile.TemporaryDirectory(prefix="edgeseg-quant-") as tmp:
        src, table, rewrites, kept = _rewrite_prelu(model, Path(prepared), profile, table, Path(tmp), keep_float or {})
        float_nodes = plan_float_nodes(model, profile, {**kept, **dict(keep_float or {})},
                                       nonfinite=table.options.get("nonfinite_tensors", ()))
        excluded = {f.name for f in float_nodes}
        kwargs = profile.ort_kwargs()
        cache = table.write_ort_cache(Path(tmp) / "ranges.json")
        try:
            with quiet():
                quantize_static(str(src), str(out), calibration_data_reader=None,
                                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                                nodes_to_exclude=sorted(excluded), **kwargs)
        except Exception as e:  # ORT raises bare ValueError/KeyError naming the tensor
            raise QuantizationError(f"ONNX Runtime could not quantize {Path(prepared).name} for {profile.name}: {e}",
                                    fix="check the graph with 'edgeseg check BUNDLE --target onnxruntime'") from None
    if excluded and profile.extra_options.get("QDQKeepRemovableActivations"):
        # only safe when ONNX Runtime kept every Relu/Clip: otherwise a Q/DQ pair *is* the activation
        _feed_float(Path(out), excluded)
    n_compute -= sum(1 for name, _ in compute_nodes(model, profile) if name in excluded)
    return QuantizedModel(Path(out), profile.name, tuple(float_nodes), n_compute, tuple(rewrites))


def _rewrite_prelu(model, prepared: Path, profile: QuantProfile, table: CalibrationTable, tmp: Path,
                   keep_float: Mapping[str, str]):
    """With ``profile.int8_prelu``: rewrite ``model``'s PRelu in place (:func:`edgeseg.quant.prepare.int8_prelu`),
    save it under ``tmp`` and extend ``table`` with the new tensors' ranges. Returns (model path to
    quantize, table, rewrites, {PRelu left in float: reason})."""
    if not profile.int8_prelu or not any(n.op_type == "PRelu" for n in model.graph.node):
        return prepared, table, [], {}
    import onnx

    from .prepare import infer_shapes, int8_prelu
    from .ranges import TensorRange

    int8_ops = None if profile.op_types is None else set(profile.op_types) - set(profile.float_ops)
    rewrites, derived, kept = int8_prelu(model, {k: (r.low, r.high) for k, r in table.ranges.items()}, int8_ops,
                                         keep=set(keep_float))
    if not rewrites:
        return prepared, table, [], kept
    model.CopyFrom(infer_shapes(model))
    path = tmp / "prelu_int8.onnx"
    onnx.save(model, str(path))
    ranges = {**table.ranges, **{k: TensorRange(lo, hi) for k, (lo, hi) in derived.items()}}
    return path, replace(table, ranges=ranges), rewrites, kept


def _feed_float(path: Path, names: set[str]) -> None:
    """Nodes left in float read the original float tensor, not a quantize-dequantize copy of it
    (ONNX Runtime shares one Q/DQ pair among a tensor's consumers); dangling Q/DQ are removed."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    changed = False
    for node in g.node:
        if node.name not in names:
            continue
        for i, t in enumerate(node.input):
            dq = producer.get(t)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                changed = True
    if not changed:
        return
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    onnx.save(model, str(path))


def float_node_names(nodes: Iterable[FloatNode]) -> list[str]:
    return [f.name for f in nodes]


#: the ONNX Runtime release whose quantizer takes calibrated ranges from a file (save_tensors_data, 1.27.0)
ORT_QUANTIZER = (1, 27)


def require_ort_quantizer() -> None:
    """A :class:`QuantizationError` before any calibration work where ONNX Runtime's quantizer is too old to take
    edgeseg's ranges (1.20-1.26 lack ``save_tensors_data``; JetPack's builds and Python 3.8's last wheel, 1.19)."""
    try:
        import onnxruntime
    except ImportError:
        raise QuantizationError("INT8 quantization needs onnxruntime", fix="pip install onnxruntime") from None
    version = getattr(onnxruntime, "__version__", "0")
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if parts < ORT_QUANTIZER:
        need = ".".join(map(str, ORT_QUANTIZER))
        raise QuantizationError(
            f"INT8 quantization needs onnxruntime >= {need} (its quantizer takes edgeseg's calibrated ranges from a "
            f"file); this is onnxruntime {version}",
            fix=f"pip install -U 'onnxruntime>={need}' (Python 3.10+), or quantize on a desktop and copy the bundle: "
                "its INT8 models run on older ONNX Runtime releases too")
