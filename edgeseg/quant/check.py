"""Deployability check: will this bundle's model run on that runtime version, as quantized?

``check_model(path, "tensorrt-8.5")`` / ``check_bundle(bundle, target, precision)`` return a
:class:`CheckReport` of :class:`Finding` s (``error`` blocks deployment, ``warning`` does not),
each with the nodes involved and the fix. Targets (:data:`TARGETS`): ``tensorrt-<major.minor>``
(8.5, 10.3 and 11 are named; any version parses), ``onnxruntime``, ``openvino``.

What is checked for TensorRT: every op against the ONNX-TensorRT support table with the version
that added it (:mod:`edgeseg.quant.trt_ops`), ops capped below INT8 (DeformConv, RoiAlign: FP16 at
most), Q/DQ conformance (INT8 only, zero-point 0, per-tensor activations, per-channel weights on
the output-channel axis: Conv 0, ConvTranspose 1, no INT32 bias DQ), opset range, dynamic shapes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, List

import numpy as np

from .._registry import Registry
from ..errors import EdgesegError, InputError, UnsupportedError
from . import trt_ops

LEVELS = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | info
    code: str
    message: str
    fix: str = ""
    nodes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"level": self.level, "code": self.code, "message": self.message, "fix": self.fix, "nodes": list(self.nodes)}


@dataclass(frozen=True)
class CheckReport:
    target: str
    model: str
    precision: str
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def to_dict(self) -> dict:
        return {"target": self.target, "model": self.model, "precision": self.precision, "ok": self.ok,
                "findings": [f.to_dict() for f in self.findings]}

    def format(self) -> str:
        head = f"{self.model} on {self.target} ({self.precision}): {'OK' if self.ok else 'BLOCKED'}"
        lines = [head]
        for f in sorted(self.findings, key=lambda f: LEVELS.index(f.level)):
            nodes = f" [{', '.join(f.nodes[:5])}{', ...' if len(f.nodes) > 5 else ''}]" if f.nodes else ""
            lines.append(f"  {f.level:7s} {f.code}: {f.message}{nodes}")
            if f.fix:
                lines.append(f"          fix: {f.fix}")
        return "\n".join(lines)


Checker = Callable[[object, str], List[Finding]]
TARGETS: Registry[Checker] = Registry("deployment target", UnsupportedError)


def parse_trt_version(target: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"tensorrt-(\d+)(?:\.(\d+))?(?:\.\d+)*", target.strip().lower())  # 8.5.2.2: as trt.__version__ prints
    version = (int(m.group(1)), int(m.group(2) or 0)) if m else None
    return version if version is not None and version[0] >= 1 else None  # there is no TensorRT 0.x


def _version_findings(version: tuple[int, int]) -> list[Finding]:
    """A warning where ``version`` lies outside the TensorRT releases whose support tables were read
    (:mod:`edgeseg.quant.trt_ops`): its findings are then the nearest table's, not its own."""
    oldest, newest = trt_ops.MAX_OPSET[0][0], max(trt_ops.MAJOR_MAX_OPSET)
    vtxt = f"TensorRT {version[0]}.{version[1]}"
    if version < oldest:
        return [Finding("warning", "version-unconfirmed", f"{vtxt} is older than the oldest ONNX-TensorRT support table "
                        f"read ({oldest[0]}.{oldest[1]}): ops and opsets are checked as for {oldest[0]}.{oldest[1]}",
                        fix="confirm on the device (trtexec --onnx=MODEL), or target a TensorRT >= "
                            f"{oldest[0]}.{oldest[1]}")]
    if version[0] > newest:
        return [Finding("warning", "version-unconfirmed", f"{vtxt} is newer than any TensorRT this check knows "
                        f"({newest}.x): it is checked as {newest}.x; ops removed or limits added since are not known",
                        fix="confirm on the device (trtexec --onnx=MODEL), or upgrade edgeseg")]
    return []


def check_model(path: str | Path, target: str, precision: str = "fp32") -> CheckReport:
    """Check one ONNX file for ``target``."""
    import onnx

    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        return CheckReport(target, p.name, precision, (Finding("error", "unreadable", f"cannot read {p}: {e}"),))
    target = target.strip().lower()
    version = parse_trt_version(target)
    findings: list[Finding] = []
    if version is not None:
        findings += _version_findings(version) + check_tensorrt(model, version)
    else:
        findings += TARGETS.get(target)(model, str(p))
    findings += _shape_findings(model, target)
    return CheckReport(target, p.name, precision, tuple(findings))


#: the oldest opset ``edgeseg export`` writes (its dynamo exporter: 18, down-converted to 17)
EXPORT_MIN_OPSET = 17


def check_target_name(target: str) -> str:
    """``target`` as ``edgeseg check`` names runtimes: quantize's ``cpu`` is ``onnxruntime``; a bare ``tensorrt`` is
    refused with the versions to choose from (what TensorRT accepts depends on its version)."""
    target = target.strip().lower()
    if target == "cpu":
        return "onnxruntime"
    if target == "tensorrt":
        raise InputError("--target tensorrt: which TensorRT version? what it takes differs between versions",
                         fix="e.g. --target tensorrt-8.5 (JetPack 5), tensorrt-10.3 (JetPack 6), tensorrt-X.Y for a "
                             "desktop's (python -c 'import tensorrt; print(tensorrt.__version__)' there)")
    return target


def check_bundle(bundle, target: str, precision: str = "fp32", model_target: str | None = None) -> CheckReport:
    """Check the bundle's model for ``precision`` that suits ``target`` (INT8: its Q/DQ variant)."""
    from ..bundle import Bundle

    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    target = check_target_name(target)
    if parse_trt_version(target) is None:
        TARGETS.get(target)  # an unknown target is refused before any model is read
    targeted = sorted({m.target for m in b.manifest.models if m.precision == precision and m.target})
    if model_target is not None:  # asked for by name: that model or a clear error, never another one
        if model_target not in targeted:
            if precision != "int8":
                raise InputError(f"--model-target {model_target!r}: bundle {b.name} has no {precision} model for a "
                                 f"target (--precision is {precision}; targets name INT8 models, and the FP32 "
                                 "graph a detector exports for TensorRT)", fix="add --precision int8, or drop --model-target")
            raise InputError(f"bundle {b.name} has no INT8 model for target {model_target!r} "
                             f"(it has: {', '.join(targeted) or 'no INT8 model'})",
                             fix=f"use --model-target {targeted[0]}" if targeted else f"run 'edgeseg quantize {b.root} --calib RECIPE' first (RECIPE: camvid, street, "
                                                                    "dashcam, synthetic:64, or your frames' folder)")
    want = model_target
    if precision == "int8" and want is None:
        want = "tensorrt" if target.startswith("tensorrt") else {"onnxruntime": "cpu"}.get(target, target)
    elif want is None and target.startswith("tensorrt") and "tensorrt" in targeted:
        want = "tensorrt"  # the graph TensorRT runs: a detector's model.trt.onnx (EfficientNMS_TRT), as its runner picks
    cands = [m for m in b.manifest.models if m.precision == precision and m.target == want]
    note: list[Finding] = []
    if not cands and precision == "int8" and want in _INT8_STANDINS:
        # none made for this target: the one this target's runtime loads instead, as its backend picks
        order = _INT8_STANDINS[want]
        cands = [m for t in order for m in b.manifest.models if m.precision == "int8" and m.target == t][:1]
        if cands:
            note.append(Finding(
                "info", "stand-in-model",
                f"bundle has no INT8 model made for {want}; checked the one made for {cands[0].target or 'no target'} "
                f"({cands[0].file}), which the {want} backend runs in its place",
                fix=f"run 'edgeseg quantize {b.root} --target {want} --calib RECIPE' for a model made for it"))
    if not cands and precision == "int8":  # TensorRT takes no other target's Q/DQ model in its place
        return CheckReport(target, str(b.root), precision, (Finding(
            "error", "no-model", f"bundle has no INT8 model for {want}", f"run 'edgeseg quantize {b.root} --target {want} --calib RECIPE' (RECIPE: camvid, street, dashcam, "
            "synthetic:64, or your frames' folder)"),))
    if not cands:  # an FP32 graph for every target
        cands = [m for m in b.manifest.models if m.precision == precision]
    if not cands:
        fix = (f"run 'edgeseg quantize {b.root} --target {want} --calib RECIPE' (RECIPE: camvid, street, dashcam, "
               "synthetic:64, or your frames' folder)" if precision == "int8" else None)
        return CheckReport(target, str(b.root), precision, (Finding(
            "error", "no-model", f"bundle has no {precision} model{' for ' + want if want else ''}", fix or ""),))
    report = check_model(b.root / cands[0].file, target, precision)
    return replace(report, findings=tuple(note) + report.findings) if note else report


# the INT8 models a runtime loads when the bundle has none made for it, in the order its backend takes them
# (backends' ``model_targets``: OpenVINO runs the ONNX Runtime model, and ONNX Runtime OpenVINO's; TensorRT needs
# its own symmetric Q/DQ and takes none in its place)
_INT8_STANDINS = {"openvino": ("cpu", None), "cpu": (None, "openvino", "tensorrt")}


# ---- TensorRT ------------------------------------------------------------------------------------
def check_tensorrt(model, version: tuple[int, int]) -> list[Finding]:
    from .prepare import model_opset

    vtxt = f"TensorRT {version[0]}.{version[1]}"
    out: list[Finding] = []
    by_op: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            out.append(Finding("error", "custom-op", f"{n.op_type} (domain {n.domain}) needs a TensorRT plugin", nodes=(n.name,),
                               fix="export with standard ops only, or register the plugin on the device"))
            continue
        by_op.setdefault(n.op_type, []).append(n.name or n.op_type)
    for op, nodes in sorted(by_op.items()):
        if not trt_ops.supported(op, version):
            level = "warning" if trt_ops.unconfirmed(op, version) else "error"
            out.append(Finding(level, "unsupported-op", f"{op} is not supported by {vtxt} ({trt_ops.why_unsupported(op, version)})",
                               fix=trt_ops.FIXES.get(op, trt_ops.NEVER.get(op, "replace the op before export")), nodes=tuple(nodes)))
        elif op in trt_ops.MAX_PRECISION:
            out.append(Finding("info", "precision-cap", f"{op} runs in {trt_ops.MAX_PRECISION[op].upper()} at most on {vtxt}",
                               nodes=tuple(nodes)))
    out += [Finding(h.level, "op-restriction", h.message, fix=h.fix, nodes=h.nodes)
            for h in trt_ops.restriction_hits(model.graph.node, version)]
    opset, (lo, hi) = model_opset(model), trt_ops.opset_bounds(version)
    if opset > lo:
        sure = lo == hi or (hi is not None and opset > hi)  # else: between the caps of the tables read
        out.append(Finding("error" if sure else "warning", "opset", f"opset {opset} is newer than {vtxt} parses "
                           f"(<= {lo}{'' if sure else ', unconfirmed above'})",
                           fix=(f"export with opset {lo} (edgeseg export --opset {lo}; a model made elsewhere: "
                                f"torch.onnx.export(..., opset_version={lo}), or MMDeploy's onnx_config "
                                f"opset_version={lo}, then edgeseg import again)") if lo >= EXPORT_MIN_OPSET else
                               (f"TensorRT 8.5 or newer (edgeseg export writes opset {EXPORT_MIN_OPSET} at the oldest: "
                                f"--opset {EXPORT_MIN_OPSET}); or a model exported at opset {lo} elsewhere "
                                f"(torch.onnx.export(..., opset_version={lo})), then edgeseg import")))
    elif opset < trt_ops.MIN_OPSET:
        out.append(Finding("error", "opset", f"opset {opset} is older than TensorRT parses (>= {trt_ops.MIN_OPSET})",
                           fix="upgrade the model's opset (edgeseg import does it)"))
    out += qdq_findings(model, vtxt)
    return out


def _initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def qdq_findings(model, runtime: str = "TensorRT") -> list[Finding]:
    """Q/DQ conformance for TensorRT's explicit quantization."""
    inits = _initializers(model)
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    bad_zp, bad_type, bad_axis, act_pc, int32 = [], [], [], [], []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(n.input[1]) if len(n.input) > 1 else None
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None:
            if zp.dtype == np.int32 or inits.get(n.input[0], np.zeros(0, np.int8)).dtype == np.int32:
                int32.append(n.name)
                continue
            if zp.dtype != np.int8:
                bad_type.append(n.name)
            if np.any(zp != 0):
                bad_zp.append(n.name)
        if scale is not None and scale.size > 1:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if n.op_type == "DequantizeLinear" and n.input[0] in inits:
                for c in consumers.get(n.output[0], []):
                    want = {"Conv": 0, "ConvTranspose": 1}.get(c.op_type)
                    if want is not None and c.input[1] == n.output[0] and axis != want:
                        bad_axis.append(f"{n.name} (axis {axis}, {c.op_type} needs {want})")
            elif n.input[0] not in inits:
                act_pc.append(n.name)
    out = []
    if int32:
        out.append(Finding("error", "qdq-int32", f"{runtime} Q/DQ takes INT8 only; INT32 (bias) DequantizeLinear found", nodes=tuple(int32),
                           fix="re-quantize with 'edgeseg quantize --target tensorrt' (biases stay float)"))
    if bad_type:
        out.append(Finding("error", "qdq-uint8", f"{runtime} Q/DQ takes signed INT8; UINT8 zero points found", nodes=tuple(bad_type),
                           fix="re-quantize with 'edgeseg quantize --target tensorrt' (symmetric INT8)"))
    if bad_zp:
        out.append(Finding("error", "qdq-zero-point", f"{runtime} needs zero-point 0 (symmetric quantization)", nodes=tuple(bad_zp),
                           fix="re-quantize with 'edgeseg quantize --target tensorrt'"))
    if bad_axis:
        out.append(Finding("error", "qdq-axis", "per-channel weight scales on the wrong axis", nodes=tuple(bad_axis),
                           fix="re-quantize with 'edgeseg quantize --target tensorrt'"))
    if act_pc:
        out.append(Finding("error", "qdq-activation-per-channel", f"{runtime} quantizes activations per tensor only", nodes=tuple(act_pc),
                           fix="re-quantize with 'edgeseg quantize --target tensorrt'"))
    return out


def _shape_findings(model, target: str) -> list[Finding]:
    dyn = []
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        names = [d.dim_param or ("?" if not d.HasField("dim_value") else str(d.dim_value)) for d in dims]
        if any(not d.HasField("dim_value") for d in dims):
            dyn.append(f"{vi.name}[{','.join(names)}]")
    if not dyn:
        return [Finding("info", "shapes", "all input shapes are static")]
    if target.startswith("tensorrt"):
        return [Finding("warning", "dynamic-shape", "dynamic input axes: the engine needs an optimization profile (min/opt/max)",
                        nodes=tuple(dyn), fix="edgeseg's TensorRT backend builds the profile from the input spec; static shapes build faster")]
    return [Finding("info", "dynamic-shape", "dynamic input axes", nodes=tuple(dyn))]


# ---- other runtimes --------------------------------------------------------------------------------
@TARGETS.register("onnxruntime")
def _check_onnxruntime(model, path: str) -> list[Finding]:
    import onnxruntime as ort

    from ..backends.onnxrt import load_error  # the backend's own answer: one source of truth

    err = load_error(path)
    if err is not None:  # ORT's own message (the chained cause) says best which op and opset
        first = str(err.__cause__ or err).splitlines()[0]
        return [Finding("error", "load", f"ONNX Runtime {ort.__version__} cannot load the model: {first}",
                        fix="check the op and opset named above")]
    return [Finding("info", "load", f"ONNX Runtime {ort.__version__} loads the model on CPU")]


@TARGETS.register("openvino")
def _check_openvino(model, path: str) -> list[Finding]:
    from ..backends.openvino import OpenVinoRunner, unsupported_ops  # the backend's own answer

    if not OpenVinoRunner.is_available()[0]:
        return [Finding("warning", "not-installed", "OpenVINO is not installed: op support not checked",
                        fix="pip install 'edgeseg[openvino]'")]
    from .._openvino import decline_telemetry

    decline_telemetry()
    import openvino as ov

    try:
        missing = unsupported_ops(path, Path(path).name)
    except EdgesegError as e:  # names the model and the ops OpenVINO has no conversion rule for
        return [Finding("error", "load", str(e).splitlines()[0], fix=e.fix or "")]
    if missing:
        return [Finding("error", "unsupported-op", "OpenVINO's CPU plugin does not support these operations", nodes=tuple(missing))]
    return [Finding("info", "load", f"OpenVINO {ov.get_version()} supports every operation on CPU")]


for _name in ("tensorrt-8.5", "tensorrt-10.3", "tensorrt-11"):
    TARGETS.add(_name, lambda model, path, _v=parse_trt_version(_name): check_tensorrt(model, _v))
