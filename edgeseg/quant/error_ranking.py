"""Rank layers by the quantization noise each one adds, from two inference passes instead of one
quantize-and-score per layer.

The exact sensitivity analysis (:func:`edgeseg.quant.accuracy.layer_sensitivity`) quantizes the model
once per layer with that layer alone in float and scores each: on a model with a hundred compute
layers and a slow task metric that is an hour or more on a CPU. This ranking runs the FP32 (prepared)
model and the fully quantized Q/DQ model side by side on a few calibration frames, with every
layer's output and float inputs exposed as graph outputs, and measures per tensor the noise-to-signal
ratio

    NSR(t) = sum over frames and elements of (t_int8 - t_fp32)^2 / sum of t_fp32^2

where ``t_int8`` is the value the tensor's consumers see in the Q/DQ model (the output of the
``DequantizeLinear`` that follows it, when it is quantized). A layer's **local noise** is the NSR of
its output minus the largest NSR among its float inputs: what quantizing this layer (its weights, its
inputs' and its output's quantization) adds to the error it received. Layers are ranked by it, most
first, as TFLite's quantization debugger and ONNX Runtime's ``qdq_loss_debug`` rank by per-layer
error. It is a proxy: the mixed-precision search (:func:`edgeseg.quant.accuracy.mixed_precision`)
still checks every candidate with the task metric, so the budget holds either way; a worse ranking
only keeps more layers in float.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .accuracy import LayerSensitivity

MEASURE = "local noise (NSR increase)"


class RankingUnavailable(Exception):
    """The two models cannot be compared tensor by tensor (the quantizer renamed what it touched)."""


def dq_sources(qdq_model) -> dict[str, str]:
    """``DequantizeLinear`` output -> the float tensor its ``QuantizeLinear`` quantized (``Q(t) -> DQ ->
    t'`` maps ``t'`` to ``t``; ONNX Runtime's and NNCF's naming alike)."""
    q_in = {n.output[0]: n.input[0] for n in qdq_model.graph.node if n.op_type == "QuantizeLinear"}
    return {n.output[0]: q_in[n.input[0]] for n in qdq_model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in q_in}


def layer_tensors(qdq_model, layers: Sequence[str], fp32_floats: set[str]) -> dict[str, tuple[tuple[str, str], list[tuple[str, str]]]]:
    """Per layer (by node name, in the Q/DQ model): its output and its float inputs, each as (FP32 tensor,
    Q/DQ tensor its consumers read). The quantizer may fold an activation into the layer (Conv -> Relu
    becomes a Conv whose output carries the Relu's name): the Q/DQ node's own output names the FP32
    tensor to compare with; a graph output keeps its name on the ``DequantizeLinear``."""
    sources = dq_sources(qdq_model)
    visible = {t: dq for dq, t in sources.items()}
    nodes = {n.name: n for n in qdq_model.graph.node}
    out = {}
    for name in layers:
        node = nodes.get(name)
        o = None if node is None else node.output[0]
        if o is not None and o not in fp32_floats and visible.get(o) in fp32_floats:
            o = visible[o]  # a graph output: the node writes "<y>_QuantizeLinear_Input", the DQ writes "<y>"
        if o is None or o not in fp32_floats:
            raise RankingUnavailable(f"layer {name!r} is not in the quantized model under its name and output")
        ins = []
        for x in node.input:
            t = sources.get(x, x)
            if t in fp32_floats:
                ins.append((t, x))
        out[name] = ((o, visible.get(o, o)), ins)
    return out


def _expose(model, names: Sequence[str]):
    """A copy of ``model`` with ``names`` added as float graph outputs (those not outputs already)."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    return m


def _session(model, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor observable
    if threads > 0:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _float_tensors(model) -> set[str]:
    """Names of the float activations (shape-inferred value_info, inputs, outputs; never a weight, even
    where an old model lists its initializers among the graph inputs)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    weights = {i.name for i in model.graph.initializer}
    return {v.name for v in infos if v.type.tensor_type.elem_type == TensorProto.FLOAT and v.name not in weights}


def noise_ratios(fp32_model, int8_model, feeds: Sequence[Mapping[str, np.ndarray]], pairs: Sequence[tuple[str, str]],
                 threads: int = 0) -> dict[tuple[str, str], float]:
    """NSR of each (FP32 tensor, Q/DQ tensor) pair between the two models over ``feeds``."""
    pairs = sorted(set(pairs))
    fs = _session(_expose(fp32_model, sorted({a for a, _ in pairs})), threads)
    qs = _session(_expose(int8_model, sorted({b for _, b in pairs})), threads)
    f_names = [o.name for o in fs.get_outputs()]
    q_names = [o.name for o in qs.get_outputs()]
    noise = dict.fromkeys(pairs, 0.0)
    signal = dict.fromkeys(pairs, 0.0)
    for feed in feeds:
        fv = dict(zip(f_names, fs.run(None, dict(feed))))
        qv = dict(zip(q_names, qs.run(None, dict(feed))))
        for a_name, b_name in pairs:
            a = np.asarray(fv[a_name], np.float64)
            d = np.asarray(qv[b_name], np.float64) - a
            noise[(a_name, b_name)] += float(np.vdot(d, d))
            signal[(a_name, b_name)] += float(np.vdot(a, a))
    return {k: noise[k] / signal[k] if signal[k] > 0 else (0.0 if noise[k] == 0 else float("inf")) for k in pairs}


def error_ranking(prepared: str | Path, int8: str | Path, feeds: Sequence[Mapping[str, np.ndarray]],
                  layers: Sequence[tuple[str, str]], threads: int = 0) -> list[LayerSensitivity]:
    """``layers`` (name, op type) of the prepared FP32 model ranked by local noise, most first
    (``score``: the NSR of the layer's output, ``gain``: its local noise; see the module doc)."""
    import onnx

    fp32 = onnx.load(str(prepared))
    q = onnx.load(str(int8))
    tensors = layer_tensors(q, [n for n, _ in layers], _float_tensors(fp32))
    nsr = noise_ratios(fp32, q, feeds, [p for o, ins in tensors.values() for p in [o, *ins]], threads)
    ranked = []
    for name, op in layers:
        o, ins = tensors[name]
        received = max((nsr[p] for p in ins), default=0.0)
        ranked.append(LayerSensitivity(name, op, nsr[o], nsr[o] - received, measure=MEASURE))
    return sorted(ranked, key=lambda r: -r.gain)
