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
             "amx_tile", "amx_int8", "amx_bf16", "amx_fp16")
RUNTIMES = ("onnxruntime", "openvino", "tensorrt", "torch")
#: ISA flags with an INT8 dot product that accumulates u8*s8 pairs in 32 bits (no int16 saturation)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_arithmetic(isa) -> str:
    """How ONNX Runtime's U8S8 kernels add INT8 products on a CPU with these ISA flags: ``vnni``
    (``vpdpbusd``/AMX, exact int32 sums) or ``saturating`` (x86 without VNNI: ``vpmaddubsw`` adds
    pairs of u8*s8 products in int16 and saturates, so full-range INT8 weights can lose accuracy; see
    ONNX Runtime's quantization docs). ``unknown`` when no flags were recorded."""
    isa = tuple(isa or ())
    if not isa:
        return "unknown"
    return "vnni" if any(f in isa for f in VNNI_FLAGS) else "saturating"


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
        return f"{self.cpu} ({', '.join(self.isa) or 'no AVX2'}; {self.cores} cores; {', '.join(self.runtimes)})"

    def same_cpu(self, other: "DeviceInfo | dict") -> bool:
        """Whether ``other`` (a DeviceInfo or its recorded dict) is the same CPU model with the same ISA flags."""
        d = other if isinstance(other, dict) else asdict(other)
        return d.get("cpu") == self.cpu and tuple(d.get("isa", ())) == self.isa

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def cpu_model_and_flags(cpuinfo: str) -> tuple[str, tuple[str, ...]]:
    """(model name, ISA flags of :data:`ISA_FLAGS` present) from the text of ``/proc/cpuinfo``."""
    name, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        if name and flags:
            break
    return name, tuple(f for f in ISA_FLAGS if f in flags)


@functools.lru_cache(maxsize=1)
def device_info() -> DeviceInfo:
    """This machine's :class:`DeviceInfo` (read once per process)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name, isa = cpu_model_and_flags(f.read())
    except OSError:
        name, isa = "", ()
    runtimes = []
    for dist in RUNTIMES:
        try:
            runtimes.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return DeviceInfo(name or platform.processor() or platform.machine(), isa, usable_cores(),
                      platform.machine(), tuple(runtimes))
