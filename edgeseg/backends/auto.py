"""``backend="auto"``: pick the best runtime available here.

Order (DESIGN.md): TensorRT when it is available (it needs an NVIDIA GPU and driver); else OpenVINO on
x86 when it is installed and takes every op of the graph; else ONNX Runtime. The choice itself is the
pure function :func:`choose_backend`; :func:`select_backend` gathers the facts for a bundle.
"""
from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Mapping

from ..errors import BackendUnavailable
from .base import BACKENDS

if TYPE_CHECKING:
    from ..bundle import Bundle

AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def choose_backend(available: Mapping[str, tuple[bool, str]], prefer: str = "auto", *, machine: str = "x86_64",
                   openvino_graph_ok: bool = True, device: str = "auto") -> str:
    """The backend to use.

    available: backend name -> (ok, why not) as :meth:`Runner.is_available` says.
    prefer: a backend name, or ``"auto"``.
    machine: ``platform.machine()``; OpenVINO is chosen automatically only on x86.
    openvino_graph_ok: whether OpenVINO takes every op of this graph.
    device: ``cpu`` rules TensorRT out of the automatic choice.
    """
    if prefer != "auto":
        if prefer not in available:
            raise BackendUnavailable(f"unknown backend {prefer!r}", fix=f"use one of auto, {', '.join(sorted(available))}")
        ok, why = available[prefer]
        if not ok:
            raise BackendUnavailable(f"backend {prefer!r} is not available: {why}", fix="use --backend auto")
        return prefer
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


def availability() -> dict[str, tuple[bool, str]]:
    """``is_available()`` of every registered backend (never raises)."""
    return {name: BACKENDS.get(name).is_available() for name in BACKENDS}


def select_backend(bundle: "Bundle", prefer: str = "auto", precision: str = "fp32", target: str | None = None,
                   device: str = "auto") -> str:
    """:func:`choose_backend` for this bundle and machine."""
    avail = availability()
    graph_ok = True
    trt_ok = avail.get("tensorrt", (False, ""))[0] and device != "cpu"
    if prefer == "auto" and not trt_ok and avail.get("openvino", (False, ""))[0]:
        ov = BACKENDS.get("openvino")
        try:
            path = ov.select_model(bundle, precision, target)
        except Exception:  # no model this backend runs: let ONNX Runtime say why later
            graph_ok = False
        else:
            graph_ok = ov.supports(path)[0]
    return choose_backend(avail, prefer, machine=platform.machine(), openvino_graph_ok=graph_ok, device=device)
