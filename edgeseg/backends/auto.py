"""The static backend rule and the availability facts.

``edgeseg.load`` and ``edgeseg run`` choose by measuring on the device (:mod:`edgeseg.backends.choice`);
this module gives that choice its facts (:func:`availability`, :func:`openvino_supports`) and keeps the
static rule below, which validates a pinned backend and serves callers that must not time anything.

FP32 (DESIGN.md): TensorRT when it is available (it needs an NVIDIA GPU and driver); else OpenVINO on
x86 when it is installed and takes every op of the graph; else ONNX Runtime.

INT8: the backend follows the target the INT8 model was quantized and timed for
(:data:`INT8_TARGET_BACKEND`: ``cpu`` -> ONNX Runtime, ``openvino`` -> OpenVINO, ``tensorrt`` ->
TensorRT), falling back to ONNX Runtime, which runs any Q/DQ model, when that runtime is not usable
here. Without an asked target, the bundle's INT8 models are the candidates and a usable TensorRT or
OpenVINO model wins over the ``cpu`` one.

The choice itself is the pure function :func:`choose_backend`; :func:`select_backend` gathers the
facts for a bundle. Whether OpenVINO takes a graph is asked once per model file (keyed by its sha256)
in a process, so loading the same bundle again does not re-read the model for the check; and the
model that check reads is the one the OpenVINO runner then compiles (handed over by
:meth:`OpenVinoRunner.supports <edgeseg.backends.openvino.runner.OpenVinoRunner.supports>`), so the
first ``backend="auto"`` load reads it once, not twice.
"""
from __future__ import annotations

import platform
import threading
from typing import TYPE_CHECKING, Iterable, Mapping

from ..errors import BackendUnavailable, EdgesegError
from .base import BACKENDS

if TYPE_CHECKING:
    from ..bundle import Bundle

AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")
#: the runtime an INT8 model of each quantization target was tuned and timed on
INT8_TARGET_BACKEND = {"cpu": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
INT8_FALLBACK = "onnxruntime"  # runs every Q/DQ model, whatever its target

_SUPPORT_CACHE: dict[str, tuple[bool, str]] = {}  # model sha256 -> OpenVinoRunner.supports(...)
_SUPPORT_LOCK = threading.Lock()


def choose_backend(available: Mapping[str, tuple[bool, str]], prefer: str = "auto", *, machine: str = "x86_64",
                   openvino_graph_ok: bool = True, device: str = "auto", precision: str = "fp32",
                   int8_targets: Iterable[str | None] = ()) -> str:
    """The backend to use.

    available: backend name -> (ok, why not) as :meth:`Runner.is_available` says.
    prefer: a backend name, or ``"auto"``.
    machine: ``platform.machine()``; OpenVINO is chosen automatically for FP32 only on x86.
    openvino_graph_ok: whether OpenVINO takes every op of this (FP32) graph.
    device: ``cpu`` rules TensorRT out of the automatic choice.
    precision: ``int8`` chooses by ``int8_targets``, the targets of the INT8 models that may run
    (the asked one, or all the bundle has), see :func:`choose_int8_backend`.
    """
    if prefer != "auto":
        if prefer not in available:
            raise BackendUnavailable(f"unknown backend {prefer!r}", fix=f"use one of auto, {', '.join(sorted(available))}")
        ok, why = available[prefer]
        if not ok:
            raise BackendUnavailable(f"backend {prefer!r} is not available: {why}", fix="use --backend auto")
        return prefer
    if precision == "int8":
        return choose_int8_backend(available, int8_targets, device=device)
    reasons = []
    for name in AUTO_ORDER:
        ok, why = available.get(name, (False, "not registered"))
        if ok and name == "tensorrt" and device == "cpu":
            ok, why = False, "device 'cpu' asked"
        if ok and name == "openvino":
            if machine.lower() not in X86:
                ok, why = False, f"chosen automatically only on x86 (this is {machine})"
            elif not openvino_graph_ok:
                ok, why = False, "it does not take every op of this graph"
        if ok:
            return name
        reasons.append(f"{name}: {why}")
    raise BackendUnavailable("no backend can run this bundle here:\n    " + "\n    ".join(reasons),
                             fix="pip install onnxruntime")


def choose_int8_backend(available: Mapping[str, tuple[bool, str]], targets: Iterable[str | None], *,
                        device: str = "auto") -> str:
    """The backend for INT8 models quantized for ``targets``: TensorRT for a ``tensorrt`` model and
    OpenVINO for an ``openvino`` one when usable here (TensorRT not with ``device="cpu"``), else ONNX
    Runtime (the ``cpu`` profile's runtime, and the fallback for every Q/DQ model)."""
    wanted = {INT8_TARGET_BACKEND.get(t or "cpu", INT8_FALLBACK) for t in targets}
    reasons = []
    for name in ("tensorrt", "openvino"):
        if name not in wanted:
            continue
        ok, why = available.get(name, (False, "not registered"))
        if ok and name == "tensorrt" and device == "cpu":
            ok, why = False, "device 'cpu' asked"
        if ok:
            return name
        reasons.append(f"{name}: {why}")
    ok, why = available.get(INT8_FALLBACK, (False, "not registered"))
    if ok:
        return INT8_FALLBACK
    reasons.append(f"{INT8_FALLBACK}: {why}")
    raise BackendUnavailable("no backend can run this INT8 model here:\n    " + "\n    ".join(reasons),
                             fix="pip install onnxruntime")


def availability() -> dict[str, tuple[bool, str]]:
    """``is_available()`` of every registered backend (never raises)."""
    return {name: BACKENDS.get(name).is_available() for name in BACKENDS}


def openvino_supports(bundle: "Bundle", precision: str = "fp32") -> tuple[bool, str]:
    """Whether OpenVINO takes every op of the model it would run from ``bundle``: asked once per model
    file in this process (keyed by the file's sha256, from the manifest). Never raises."""
    from ..structures.manifest import sha256_file

    ov = BACKENDS.get("openvino")
    try:
        path = ov.select_model(bundle, precision)
    except EdgesegError as e:  # no model this backend runs: let ONNX Runtime say why later
        return False, str(e)
    rel = path.relative_to(bundle.root).as_posix()
    key = bundle.manifest.files.get(rel) or sha256_file(path)
    with _SUPPORT_LOCK:
        cached = _SUPPORT_CACHE.get(key)
    if cached is None:
        cached = ov.supports(path)
        with _SUPPORT_LOCK:
            _SUPPORT_CACHE[key] = cached
    return cached


def select_backend(bundle: "Bundle", prefer: str = "auto", precision: str = "fp32", target: str | None = None,
                   device: str = "auto") -> str:
    """:func:`choose_backend` for this bundle and machine."""
    avail = availability()
    machine = platform.machine()
    if prefer != "auto":
        return choose_backend(avail, prefer)
    if precision == "int8":
        targets = (target,) if target is not None else \
            tuple(m.target for m in bundle.manifest.models if m.precision == "int8")
        return choose_backend(avail, precision="int8", int8_targets=targets, device=device, machine=machine)
    graph_ok = True
    trt_ok = avail.get("tensorrt", (False, ""))[0] and device != "cpu"
    if not trt_ok and avail.get("openvino", (False, ""))[0] and machine.lower() in X86:
        graph_ok = openvino_supports(bundle, precision)[0]
    return choose_backend(avail, machine=machine, openvino_graph_ok=graph_ok, device=device, precision=precision)
