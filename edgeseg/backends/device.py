"""What this machine is, as far as a speed decision depends on it.

A latency measured on one CPU does not carry to another (INT8 1.6x faster than FP32 on an AMD EPYC
with AVX-512 VNNI ran 0.8x on an Intel Xeon with AMX), so every speed decision records the
:class:`DeviceInfo` it was made on: :mod:`edgeseg.backends.choice` keys its cache by it, and
``edgeseg quantize`` stores it next to its per-layer latency decisions. Standard library only.
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
from dataclasses import asdict, dataclass
from importlib import metadata

from .._timing import usable_cores

#: CPU features that change which kernels a runtime picks (INT8 VNNI/AMX, bf16, fp16)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
             # aarch64 (Jetson, Graviton, Raspberry Pi): NEON, its int8 dot products and matrix multiply, SVE
             "asimd", "asimddp", "i8mm", "sve", "sve2")
RUNTIMES = ("onnxruntime", "openvino", "tensorrt", "torch")
#: the packages each runtime installs as (Jetson and CUDA hosts install onnxruntime-gpu, NVIDIA's wheels tensorrt-cu12):
#: an upgrade of any of them changes what a choice or an INT8 check measured (an audit: only the first names were
#: looked up, so an onnxruntime-gpu upgrade reused the old choices and verdicts)
RUNTIME_DISTS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
                 "openvino": ("openvino",), "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"),
                 "torch": ("torch",)}
#: ISA flags with an INT8 dot product that accumulates u8*s8 pairs in 32 bits (no int16 saturation); on
#: aarch64 the dot-product and matrix instructions (without them, ONNX Runtime's s8s8 NEON kernels add two
#: products in 16 bits, which wraps for a -128 weight: treated as x86 without VNNI is)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_arithmetic(isa) -> str:
    """How ONNX Runtime's U8S8 kernels add INT8 products on a CPU with these ISA flags: ``vnni``
    (``vpdpbusd``/AMX, aarch64's ``sdot``/``udot``/``smmla``: exact int32 sums) or ``saturating`` (x86 without VNNI: ``vpmaddubsw`` adds
    pairs of u8*s8 products in int16 and saturates, so full-range INT8 weights can lose accuracy; see
    ONNX Runtime's quantization docs). ``unknown`` when no flags were recorded."""
    isa = tuple(isa or ())
    if not isa:
        return "unknown"
    return "vnni" if any(f in isa for f in VNNI_FLAGS) else "saturating"


def runtime_versions() -> tuple[str, ...]:
    """``name==version`` of each installed runtime package (:data:`RUNTIME_DISTS`), in :data:`RUNTIMES` order; every
    ONNX Runtime package installed (two of its builds share one module: both are named), the first of the others'."""
    out = []
    for runtime in RUNTIMES:
        for dist in RUNTIME_DISTS[runtime]:
            try:
                out.append(f"{dist}=={metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                continue
            if runtime != "onnxruntime":  # (tensorrt's pip install is always two packages: the key stays as it was)
                break
    return tuple(out)


@dataclass(frozen=True)
class DeviceInfo:
    """The CPU (model name, speed-relevant ISA flags, logical cores), the architecture, and the
    versions of the installed runtimes (``name==version``)."""

    cpu: str
    isa: tuple[str, ...]
    cores: int
    machine: str
    runtimes: tuple[str, ...]

    @property
    def int8_arithmetic(self) -> str:
        return int8_arithmetic(self.isa)

    @property
    def key(self) -> str:
        """A short stable hash of everything above (the cache key part for this device)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.cpu} ({', '.join(self.isa) or 'no AVX2 or CPU flags unknown'}; {self.cores} cores; {', '.join(self.runtimes)})"

    def same_cpu(self, other: "DeviceInfo | dict") -> bool:
        """Whether ``other`` (a DeviceInfo or its recorded dict) is the same CPU model with the same ISA flags."""
        d = other if isinstance(other, dict) else asdict(other)
        return d.get("cpu") == self.cpu and tuple(d.get("isa", ())) == self.isa

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def architecture(machine: str | None) -> str:
    """``platform.machine()`` as one name per architecture (Windows' ``AMD64``, macOS's ``arm64``)."""
    m = (machine or "").lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(m, m)


def cpu_model_and_flags(cpuinfo: str, board: str = "") -> tuple[str, tuple[str, ...]]:
    """(model name, ISA flags of :data:`ISA_FLAGS` present) from the text of ``/proc/cpuinfo``. An aarch64
    kernel writes no x86 ``model name`` worth the name (``ARMv8 Processor rev 1 (v8l)`` on every Jetson, or
    none): the board (``board``, from the device tree, or cpuinfo's ``Model`` line on a Raspberry Pi) and the
    core's implementer and part numbers (``0x41:0xd42``, Arm's Cortex-A78AE) tell ARM CPUs apart instead."""
    name, flags, fields = "", set(), {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not name:
            name = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key in ("Model", "CPU implementer", "CPU part"):
            fields.setdefault(key, value)
    if "CPU part" in fields:
        board = board or fields.get("Model", "")
        core = f"{fields.get('CPU implementer', '?')}:{fields['CPU part']}"
        name = " / ".join(x for x in (board, name) if x) + f" (core {core})"
    return name.strip(), tuple(f for f in ISA_FLAGS if f in flags)


def device_tree_model(path: str = "/proc/device-tree/model") -> str:
    """The board's name where the kernel has a device tree (Jetsons, Raspberry Pis), else ``""``."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def device_info() -> DeviceInfo:
    """This machine's :class:`DeviceInfo` (read once per process)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name, isa = cpu_model_and_flags(f.read(), device_tree_model())
    except OSError:
        name, isa = "", ()
    return DeviceInfo(name or platform.processor() or platform.machine(), isa, usable_cores(),
                      platform.machine(), runtime_versions())
