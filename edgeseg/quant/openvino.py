"""The ``openvino`` INT8 target through NNCF, and the checks that OpenVINO really runs it in INT8.

NNCF (Neural Network Compression Framework, OpenVINO's quantizer) quantizes the *prepared* ONNX
model (``onnx.ModelProto``, after edgeseg's graph preparation) with the same calibration feeds as
every other target (``InputSpec.preprocess`` of the recipe's frames). Its output is Q/DQ ONNX
(``model.int8.openvino.onnx``) that OpenVINO's ONNX frontend turns into FakeQuantize and runs with
INT8 kernels. The options below were chosen by measuring against NNCF's own defaults on the same
model and frames (``tools/bench/int8.py --openvino-compare``; numbers in docs/quantization.md):

* ``preset="performance"``: symmetric activations and per-channel weights. Measured on an Intel Xeon
  with AMX (OpenVINO 2026.4, ``tools/bench/nncf_preset.py``, docs/quantization.md): ``mixed``
  (asymmetric activations, chosen earlier on AMD EPYCs where both presets run at the same speed,
  +0.03-0.1 mIoU) is 1.3-1.6x slower there (median ms: road 16.3 vs 10.6, shapes 3.1 vs 2.3, an
  ESPNet-like import 44.6 vs 28.1: zero-pointed u8 inputs leave AMX's INT8 convolution kernels) and
  cannot be compiled under the CPU's default bf16 hint ("No suitable implementations" on 3x3 and 1x1
  convs fed by asymmetric u8): issue 10's defect 2 at its root. ``performance`` compiles under every
  hint, at 54.91 vs 55.02 mIoU (road) and 88.28 vs 88.31 (shapes).
* ``target_device="CPU"``: the quantizer placement of OpenVINO's CPU plugin.
* ``subset_size``: every calibration frame (NNCF's default takes at most 300).
* fast bias correction (NNCF's default; full bias correction fails on graphs whose subgraph
  extraction ONNX Runtime rejects, e.g. MobileNetV3's hard-swish).

Layers kept in float (mixed precision, ``--max-drop``) become NNCF's ``IgnoredScope``. Every
produced model is compiled by OpenVINO and its runtime precisions read back (:func:`int8_execution`)
so a model OpenVINO cannot compile, or runs without INT8 kernels, never reaches a bundle.

NNCF and OpenVINO are imported inside the functions (``pip install 'edgeseg[openvino]'``).
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailable, QuantizationError
from .profiles import QuantProfile
from .quantize import COMPUTE_OPS, FloatNode, QuantizedModel, compute_nodes, forced_float_nodes, postprocess_float_nodes
from .ranges import nonfinite_tensors

#: layer types of OpenVINO's CPU runtime graph that carry the arithmetic
OV_COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")
INT8_PRECISIONS = ("u8", "i8")


@dataclass(frozen=True)
class NncfOptions:
    """Arguments of ``nncf.quantize`` (names as NNCF spells them)."""

    preset: str = "performance"  # performance (symmetric activations) | mixed (asymmetric)
    target_device: str = "CPU"  # ANY | CPU | GPU | NPU | CPU_SPR
    fast_bias_correction: bool = True
    subset_size: int | None = None  # None: every calibration frame

    def kwargs(self, frames: int) -> dict[str, Any]:
        from .._openvino import decline_telemetry

        decline_telemetry()
        import nncf

        return {"preset": nncf.QuantizationPreset(self.preset), "target_device": nncf.TargetDevice(self.target_device),
                "fast_bias_correction": self.fast_bias_correction, "subset_size": self.subset_size or max(1, frames)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: edgeseg's choice for the openvino target (measured, see the module docstring)
EDGESEG_NNCF = NncfOptions()
#: ``nncf.quantize(model, dataset)`` with nothing else: the baseline edgeseg is compared with
NNCF_DEFAULTS = NncfOptions(preset="performance", target_device="ANY", subset_size=300)


def nncf_available() -> tuple[bool, str]:
    """Whether NNCF and OpenVINO are importable. Never raises."""
    missing = [m for m in ("nncf", "openvino") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"{' and '.join(missing)} not installed; pip install 'edgeseg[openvino]'"
    return True, ""


def _require() -> None:
    ok, why = nncf_available()
    if not ok:
        raise BackendUnavailable(f"the NNCF quantization engine needs NNCF and OpenVINO: {why}",
                                 fix="pip install 'edgeseg[openvino]', or use --engine ort")


def nncf_quantize_onnx(prepared: str | Path, out: str | Path, feeds: Sequence[Mapping[str, np.ndarray]],
                       profile: QuantProfile, keep_float: Mapping[str, str] | None = None,
                       options: NncfOptions = EDGESEG_NNCF, progress: bool = True) -> QuantizedModel:
    """Quantize the prepared ONNX model with NNCF into Q/DQ ONNX at ``out``.

    feeds: ``{input name: tensor}`` per calibration frame (a list, or a :class:`FeedReader`). keep_float: node name -> reason (mixed
    precision); the profile's ``float_ops`` are ignored by type. Raises :class:`QuantizationError`
    when NNCF fails or OpenVINO cannot compile the result. ``progress``: NNCF's own bars, on standard error
    (:func:`_nncf_output`).
    """
    _require()
    from .._openvino import decline_telemetry

    decline_telemetry()
    import nncf
    import onnx

    model = onnx.load(str(prepared))
    keep = dict(keep_float or {})
    unknown = sorted(set(keep) - {n.name for n in model.graph.node})
    # NMS, scores and box arithmetic stay in float here too, and so do nodes touching NaN/inf (masked attention's
    # -inf, found on the first calibration frames) and the post-processing an import appended
    first = [feeds.feed(i) for i in range(min(2, len(feeds)))] if hasattr(feeds, "feed") else list(feeds)[:2]
    forced = forced_float_nodes(model, nonfinite_tensors(prepared, first))
    keep = {**postprocess_float_nodes(model), **forced, **keep}
    if unknown:
        raise QuantizationError(f"cannot keep unknown node(s) in float: {', '.join(unknown)}",
                                fix="use node names from the sensitivity table (edgeseg quantize --sensitivity)")
    types = sorted({n.op_type for n in model.graph.node} & set(profile.float_ops))
    scope = nncf.IgnoredScope(names=sorted(keep), types=types, validate=False) if keep or types else None
    _quiet_nncf()
    try:
        with _nncf_output(progress):
            q = nncf.quantize(model, nncf.Dataset(feeds), ignored_scope=scope, **options.kwargs(len(feeds)))
    except Exception as e:  # NNCF raises its own and ONNX Runtime's errors
        raise QuantizationError(f"NNCF could not quantize {Path(prepared).name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                fix="try --engine ort (edgeseg's own Q/DQ for OpenVINO)") from None
    onnx.save(q, str(out))
    execution = int8_execution(out)  # compiles it: a model OpenVINO rejects never reaches a bundle
    if not execution.int8_layers:
        raise QuantizationError(f"OpenVINO runs no layer of the NNCF model {Path(out).name} in INT8",
                                fix="check that the CPU supports INT8 (AVX2/VNNI); try --engine ort")
    float_nodes = _float_nodes(q, model, profile, keep)
    n_compute = sum(1 for name, _ in compute_nodes(model) if name not in {f.name for f in float_nodes})
    return QuantizedModel(Path(out), profile.name, tuple(float_nodes), n_compute)


def _float_nodes(quantized, original, profile: QuantProfile, keep: Mapping[str, str]) -> list[FloatNode]:
    """Every compute node without a quantized weight, with the reason (ours, or NNCF's placement)."""
    producer = {o: n.op_type for n in quantized.graph.node for o in n.output}
    by_name = {n.name: n for n in quantized.graph.node}
    out = []
    for node in original.graph.node:
        reason = keep.get(node.name) or profile.float_ops.get(node.op_type)
        if reason is None and node.op_type in COMPUTE_OPS:
            q = by_name.get(node.name)
            if q is not None and len(q.input) > 1 and producer.get(q.input[1]) != "DequantizeLinear":
                reason = "NNCF placed no quantizer (its CPU pattern keeps e.g. squeeze-excitation 1x1 convs on pooled tensors in float)"
        if reason is not None:
            out.append(FloatNode(node.name, node.op_type, reason))
    return out


def _quiet_nncf() -> None:
    import logging

    logging.getLogger("nncf").setLevel(logging.WARNING)


def _nncf_output(progress: bool) -> Any:
    """A context for ``nncf.quantize``: its progress bars (rich, written to standard output) go to standard error, or
    nowhere without ``progress`` (session 57, an operator's audit: they were on standard output, where
    ``quantize --json -`` users and a service's log parser read results, and ``--no-progress`` did not stop them)."""
    import contextlib
    import os
    import sys

    if progress:
        return contextlib.redirect_stdout(sys.stderr)
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
    return stack


def nncf_default_openvino(prepared: str | Path, feeds: Sequence[Mapping[str, np.ndarray]]):
    """OpenVINO's own default INT8 flow (the baseline): read the ONNX into OpenVINO and run
    ``nncf.quantize(ov_model, dataset)`` with default parameters. Returns an ``openvino.Model``."""
    _require()
    from .._openvino import decline_telemetry

    decline_telemetry()
    import nncf

    _quiet_nncf()
    model = _core().read_model(str(prepared))
    names = [p.get_any_name() for p in model.inputs]
    return nncf.quantize(model, nncf.Dataset([[f[n] for n in names] for f in feeds]))


@dataclass(frozen=True)
class Int8Execution:
    """How OpenVINO's CPU plugin executes a model's compute layers (from the compiled runtime graph)."""

    int8_layers: tuple[str, ...]
    other_layers: tuple[tuple[str, str], ...]  # (layer, runtime precision), e.g. ("conv_3", "bf16")

    @property
    def int8_fraction(self) -> float:
        n = len(self.int8_layers) + len(self.other_layers)
        return len(self.int8_layers) / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        precisions: dict[str, int] = {}
        for _, p in self.other_layers:
            precisions[p] = precisions.get(p, 0) + 1
        return {"int8_layers": len(self.int8_layers), "other_layers": precisions, "int8_fraction": self.int8_fraction}


def compile_cpu(model, threads: int = 0, precision: str = "int8", perf_count: bool = False):
    """Compile a model (path or ``openvino.Model``) for the CPU plugin with the settings every OpenVINO
    path uses (:func:`edgeseg.backends.openvino.settings.compile_config`)."""
    _require_openvino()
    from ..backends.openvino.settings import compile_config

    from ..backends.openvino.runner import explain_read_error

    cfg = compile_config(precision, threads, perf_count)
    try:
        return _core().compile_model(model if not isinstance(model, (str, Path)) else str(model), "CPU", cfg)
    except RuntimeError as e:  # OpenVINO's long report: the ops it cannot convert, named (the backend's wording)
        raise explain_read_error(str(model) if isinstance(model, (str, Path)) else "the model", str(e)) from e


def _core():
    """The process's one OpenVINO Core (shared with the openvino backend): a model must not outlive
    the Core that read it."""
    from ..backends.openvino.runner import core

    return core()


def _require_openvino() -> None:
    if importlib.util.find_spec("openvino") is None:
        raise BackendUnavailable("OpenVINO is not installed", fix="pip install 'edgeseg[openvino]'")


def int8_execution(model, compiled=None) -> Int8Execution:
    """Read the runtime precision of every compute layer of ``model`` compiled for the CPU."""
    compiled = compiled if compiled is not None else compile_cpu(model)
    int8, other = [], []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if str(rt["layerType"].astype(str)) not in OV_COMPUTE_LAYERS:
            continue
        prec = str(rt["runtimePrecision"].astype(str)).lower()
        (int8.append(op.get_friendly_name()) if prec in INT8_PRECISIONS else other.append((op.get_friendly_name(), prec)))
    return Int8Execution(tuple(int8), tuple(other))


def openvino_latency_ms(model, feed: Mapping[str, np.ndarray], threads: int = 0, runs: int = 20, warmup: int = 3,
                        precision: str = "int8") -> float:
    """Median wall time of one OpenVINO CPU inference, in milliseconds (:func:`edgeseg._timing.time_runs`)."""
    from .._timing import time_runs

    compiled = compile_cpu(model, threads, precision)
    req = compiled.create_infer_request()
    inputs = dict(feed)
    return time_runs(lambda: req.infer(inputs), runs, warmup).p50_ms


class OpenVinoSession:
    """The slice of ``onnxruntime.InferenceSession`` the accuracy scorers use, on OpenVINO's CPU
    plugin, so the ``openvino`` target is scored by the runtime that will run it."""

    def __init__(self, model_path: str | Path, threads: int = 0, precision: str | None = None):
        _require_openvino()
        model = _core().read_model(str(model_path))
        if precision is None:  # FP32 models pinned to f32 (as the openvino backend runs FP32)
            precision = "int8" if any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) else "fp32"
        self.compiled = compile_cpu(model, threads, precision)
        self.request = self.compiled.create_infer_request()
        from ..backends.openvino.runner import graph_port_names

        self._names = graph_port_names(model, self.compiled)

    def get_inputs(self):
        return [_Port(n) for n in self._names[0]]

    def get_outputs(self):
        return [_Port(n) for n in self._names[1]]

    def run(self, names, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        res = self.request.infer(dict(feed))
        ports = self.compiled.outputs if not names else [self.compiled.output(n) for n in names]
        return [np.array(res[p]) for p in ports]


@dataclass(frozen=True)
class _Port:
    name: str


def qdq_scales(model_path: str | Path) -> dict[str, dict[str, Any]]:
    """Per-tensor activation scale and zero point of a Q/DQ model (what ``calibration.json`` records
    for the NNCF engine, whose ranges come from its own statistics)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model_path), load_external_data=False)
    init = {t.name: t for t in m.graph.initializer}
    out: dict[str, dict[str, Any]] = {}
    for n in m.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in init or n.input[1] not in init:
            continue
        scale = numpy_helper.to_array(init[n.input[1]])
        if scale.size != 1:
            continue
        zp = numpy_helper.to_array(init[n.input[2]]) if len(n.input) > 2 and n.input[2] in init else np.zeros((), np.uint8)
        out[n.input[0]] = {"scale": float(scale), "zero_point": int(zp), "dtype": str(zp.dtype)}
    return out
