"""The one place an ONNX Runtime session is made, and the one place its load errors are explained.

Every package that runs a graph in ONNX Runtime (the ``onnxruntime`` backend, export import and
parity checks, the INT8 tools) calls :func:`make_session`; a failure to load comes back as one of
ours from :func:`explain_session_error`, naming the model, the op and the fix.

Thread rule (intra-op threads), the same everywhere:

1. an explicit ``threads > 0`` wins;
2. else ``$OMP_NUM_THREADS`` when it is set to a positive integer (a shared machine caps every
   runtime with it);
3. else ONNX Runtime's default (one thread per physical core).

onnxruntime is imported inside :func:`make_session` only (``import edgeseg`` stays light).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence, Union

from .errors import EdgesegError, InputError, UnsupportedError, memory_error, out_of_memory

ModelSource = Union[str, "os.PathLike[str]", bytes]

#: ``optimization=`` -> the name of ONNX Runtime's ``GraphOptimizationLevel`` member
OPTIMIZATION_LEVELS = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disabled": "ORT_DISABLE_ALL",
}

# patterns on ORT's load errors whose first group names the op (the second, if any, the node);
# the precise ones first, then looser ones seen on other ORT versions
_OP_PATTERNS = (
    re.compile(r"Fatal error: (\S+?) is not a registered function/op"),
    re.compile(r"No Op registered for (\S+) with domain_version of"),
    re.compile(r"Could not find an implementation for (\S+?) node with name '([^']*)'"),
    re.compile(r"implementation for ([\w.:]+)\("),
    re.compile(r"([\w.:]+)\(-?\d*\) is not a registered"),
    re.compile(r"op_type=(\w+)"),
)


def resolve_threads(threads: int = 0) -> int:
    """Intra-op threads by the module's rule: ``threads > 0``, else ``$OMP_NUM_THREADS`` (a positive
    integer), else 0 (the runtime's default)."""
    if threads and int(threads) > 0:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(env) if env else 0
    except ValueError:
        n = 0
    return max(0, n)


def _session_options(*, threads: int = 0, optimization: str = "all",
                    optimized_model_path: str | os.PathLike | None = None):
    """``onnxruntime.SessionOptions`` with the thread rule, the optimisation level and quiet logging."""
    import onnxruntime as ort

    level = OPTIMIZATION_LEVELS.get(optimization)
    if level is None:
        raise InputError(f"unknown ONNX Runtime optimization {optimization!r}",
                         fix=f"use one of {', '.join(OPTIMIZATION_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    n = resolve_threads(threads)
    if n > 0:
        so.intra_op_num_threads = n
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    so.log_severity_level = 3
    return so


def make_session(model: ModelSource, *, threads: int = 0, providers: Sequence[str] | None = None,
                 optimization: str = "all", optimized_model_path: str | os.PathLike | None = None,
                 name: str | None = None):
    """An ``onnxruntime.InferenceSession`` for a model file or serialized bytes.

    threads: see the module doc. providers: default CPU only. optimization: ``all`` | ``extended`` |
    ``basic`` | ``disabled``. optimized_model_path: ORT writes the optimised graph there (offline
    optimisation). name: how errors name the model (default: the path, or ``<in-memory model>``).
    A model ORT cannot load raises :func:`explain_session_error`'s error, ORT's own exception
    chained as its ``__cause__``.
    """
    import onnxruntime as ort

    so = _session_options(threads=threads, optimization=optimization, optimized_model_path=optimized_model_path)
    src = model if isinstance(model, bytes) else str(Path(model))
    label = name or (str(src) if not isinstance(model, bytes) else "<in-memory model>")
    try:
        return ort.InferenceSession(src, so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # ORT raises its own pybind types (Fail, InvalidGraph, NotImplemented, NoSuchFile)
        raise explain_session_error(e, label) from e


def _standard_op(op: str) -> bool:
    """Whether ``op`` (``Name`` or ``domain:Name``) is an op of the ONNX standard (not a custom one)."""
    domain, _, name = op.rpartition(":")
    if domain not in ("", "ai.onnx"):
        return False
    try:
        import onnx.defs

        return bool(onnx.defs.has(name))
    except Exception:  # noqa: BLE001 - no onnx here: say nothing of it
        return False


def _ort_version() -> str:
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except Exception:  # noqa: BLE001
        return "(version unknown)"


def explain_session_error(exc: BaseException | str, model_name: str) -> EdgesegError:
    """ONNX Runtime's session-creation error (the exception or its text) -> one of ours, naming the
    model, the op (or IR version / opset) and the fix. Unknown errors keep ORT's first line."""
    message = str(exc)
    for pat in _OP_PATTERNS:
        m = pat.search(message)
        if m:
            op = re.sub(r"\(-?\d+\)$", "", m.group(1))
            node = f" (node {m.group(2)!r})" if m.lastindex and m.lastindex >= 2 and m.group(2) else ""
            if op.split(":")[0] in ("mmdeploy", "mmcv"):  # MMDeploy's custom ops (TRTBatchedNMS, MMCVRoiAlign, ...)
                return UnsupportedError(
                    f"{model_name}: ONNX Runtime has no kernel for op {op}{node}: MMDeploy writes its own ops into "
                    "graphs exported for TensorRT (and into some ONNX Runtime ones, for libmmdeploy_onnxruntime_ops)",
                    fix="export the model again with an MMDeploy onnxruntime deploy config at opset 16 or newer (e.g. "
                        "configs/mmdet/instance-seg/instance-seg_onnxruntime_static-800x1344.py), whose graph uses "
                        "standard RoiAlign and NonMaxSuppression")
            if _standard_op(op):  # (a dependency audit, session 57: ConvInteger of int8 weights before ORT 1.24)
                return UnsupportedError(
                    f"{model_name}: ONNX Runtime {_ort_version()} has no kernel for op {op}{node} with the input types "
                    "this model gives it (a standard ONNX op: newer ONNX Runtime releases add kernels, e.g. "
                    "ConvInteger with int8 weights from 1.24)",
                    fix="upgrade onnxruntime (pip install -U onnxruntime; on Python 3.8/3.10, where the newest "
                        "wheels stop earlier, use --backend openvino), or quantize the float model with edgeseg "
                        "quantize (Q/DQ, which every runtime takes)")
            return UnsupportedError(
                f"{model_name}: ONNX Runtime has no kernel for op {op}{node}",
                fix="export with standard ONNX ops (e.g. edgeseg export --deform-conv decomposed), register the "
                "custom-op library with the runtime, or use a backend that has the op",
            )
    m = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", message)
    if m:
        return UnsupportedError(
            f"{model_name}: ONNX IR version {m.group(1)} is newer than this ONNX Runtime reads (max {m.group(2)})",
            fix="upgrade onnxruntime, or re-save the model with a lower ir_version (edgeseg import does this)",
        )
    m = re.search(r"Current official support for domain (\S+) is till opset (\d+)", message)
    if m:
        return UnsupportedError(
            f"{model_name}: the model's opset is newer than this ONNX Runtime supports ({m.group(1)} up to {m.group(2)})",
            fix="upgrade onnxruntime, or export with an older opset (edgeseg uses 19)",
        )
    if out_of_memory(message.replace(str(model_name), "")):  # the runtime's words, not the file's name
        return memory_error(f"{model_name}: ONNX Runtime could not load the model", message)
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    if "INVALID_PROTOBUF" in message or "Protobuf parsing failed" in message:
        return EdgesegError(f"{model_name}: not a valid ONNX file (ONNX Runtime: {first})",
                            fix="check the file was copied completely; re-export or re-import the model")
    return EdgesegError(f"{model_name}: ONNX Runtime cannot load the model: {first}")


def ir_version_limit(exc: BaseException) -> tuple[int, int] | None:
    """``(model IR version, highest this ONNX Runtime reads)`` when ``exc`` (or the ORT error chained
    to it) says the model's IR version is too new, else None."""
    for e in (exc, exc.__cause__):
        m = re.search(r"IR version: (\d+), max supported IR version: (\d+)", str(e or ""))
        if m:
            return int(m.group(1)), int(m.group(2))
    return None
