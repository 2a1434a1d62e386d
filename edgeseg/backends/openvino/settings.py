"""The one place OpenVINO compile settings are made: every path that compiles a model for the CPU
plugin (the ``openvino`` backend, the INT8 scorers and latency probes in ``edgeseg.quant``, the
benchmarks) takes its ``config`` from :func:`compile_config`.

Why an explicit inference precision for every precision (OpenVINO 2026.4):

* ``fp32``: ``f32``, so results match ONNX Runtime; on CPUs with AMX or AVX-512 BF16 OpenVINO's
  default is ``bf16``.
* ``bf16``: ``bf16``, only offered where the CPU plugin lists ``BF16`` in its
  ``OPTIMIZATION_CAPABILITIES`` (elsewhere OpenVINO silently runs f32, see :func:`precisions_here`).
* ``int8``: ``f32`` for the layers that stay float. Under the bf16 default of AMX CPUs the CPU
  plugin cannot compile INT8 convolutions fed by asymmetric (zero-pointed) u8 activations
  (``Check '!implementations.empty()' ... No suitable implementations``; measured on an Intel Xeon
  with AMX, OpenVINO 2026.4). edgeseg's own NNCF models are symmetric and compile under either hint
  at the same speed (``tools/bench/nncf_preset.py``), but bundles quantized before, or Q/DQ models
  made elsewhere, may be asymmetric; and the INT8 accuracy gate scored the float layers in f32.
"""
from __future__ import annotations

import functools
from typing import Any

#: edgeseg precision -> OpenVINO's INFERENCE_PRECISION_HINT
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def compile_config(precision: str = "fp32", threads: int = 0, perf_count: bool = False) -> dict[str, Any]:
    """``config`` for ``Core.compile_model(model, "CPU", config)``.

    precision: ``fp32``, ``bf16`` or ``int8`` (the model's own precision: Q/DQ models run their
    quantized layers in INT8 whatever the hint). threads: ``INFERENCE_NUM_THREADS`` when > 0.
    perf_count: per-layer profiling (``PERF_COUNT``)."""
    if precision not in INFERENCE_PRECISION:
        from ...errors import InputError

        raise InputError(f"OpenVINO runs precision fp32, bf16 or int8, not {precision!r}")
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision]}
    if threads and int(threads) > 0:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    if perf_count:
        cfg["PERF_COUNT"] = True
    return cfg


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> frozenset[str]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. ``FP32``, ``INT8``, ``BF16``, ``FP16``);
    empty when OpenVINO is not usable."""
    try:
        from .runner import core

        return frozenset(str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # not installed, or no CPU plugin: no capabilities
        return frozenset()


def precisions_here() -> tuple[str, ...]:
    """Float precisions OpenVINO really runs on this CPU: ``fp32``, plus ``bf16`` where it has BF16."""
    return ("fp32", "bf16") if "BF16" in cpu_capabilities() else ("fp32",)
