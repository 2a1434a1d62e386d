"""TensorRT calibration cache (implicit INT8, TensorRT 8.5-10.x, JetPack 5/6).

The format TensorRT's ``IInt8EntropyCalibrator2`` reads and writes::

    TRT-8502-EntropyCalibration2
    images: 3c010204
    /backbone/conv1/Conv_output_0: 3d8f5c29

First line: ``TRT-<version>-<algorithm>``, where version is ``NV_TENSORRT_VERSION`` (8.x:
``major*1000 + minor*100 + patch``, e.g. 8.5.2 -> 8502; 10.x: ``major*10000 + minor*100 + patch``,
e.g. 10.3.0 -> 100300). TensorRT skips a cache whose header names another version, so the cache is
written for the version that will build the engine: a bundle ships two (8.5.2, JetPack 5.1; 10.3.0,
JetPack 6.1/6.2), and :func:`retarget_cache` rewrites one for any other 8.x-10.x version. Each following line is a tensor name,
``": "``, and the symmetric INT8 scale ``amax / 127`` as the hex digits of its IEEE-754 float32
big-endian bytes. TensorRT 11 removed implicit INT8; use the Q/DQ model there.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import QuantizationError
from .ranges import CalibrationTable

ALGORITHM = "EntropyCalibration2"


def trt_version_code(version: str) -> int:
    """``"8.5.2"`` -> 8502, ``"10.3"`` -> 100300 (``NV_TENSORRT_VERSION``)."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.\d+)*\s*", version)
    if not m:
        raise QuantizationError(f"cannot read TensorRT version {version!r}", fix="write it as MAJOR.MINOR[.PATCH], e.g. 8.5.2")
    major, minor, patch = (int(g or 0) for g in m.groups())
    if major >= 11:
        raise QuantizationError(
            f"TensorRT {version} has no implicit INT8 calibration (removed in TensorRT 11)",
            fix="deploy the Q/DQ model (edgeseg quantize --target tensorrt) instead of a calibration cache",
        )
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


@dataclass(frozen=True)
class CalibrationCache:
    """A parsed TensorRT calibration cache: header and per-tensor scales."""

    version_code: int
    algorithm: str
    scales: dict[str, float]

    def to_text(self) -> str:
        lines = [f"TRT-{self.version_code}-{self.algorithm}"]
        lines += [f"{name}: {scale_to_hex(s)}" for name, s in sorted(self.scales.items())]  # the same bytes every run
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, where: str = "calibration cache") -> "CalibrationCache":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        m = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0].strip()) if lines else None
        if not m:
            raise QuantizationError(f"{where}: first line must be TRT-<version>-<algorithm>, got {lines[:1]}")
        scales = {}
        for ln in lines[1:]:
            name, sep, hexval = ln.rpartition(": ")
            if not sep or not re.fullmatch(r"[0-9a-fA-F]{8}", hexval.strip()):
                raise QuantizationError(f"{where}: cannot read line {ln!r} (want 'tensor: 8 hex digits')")
            scales[name] = hex_to_scale(hexval.strip())
        return cls(int(m.group(1)), m.group(2), scales)


def cache_from_table(table: CalibrationTable, trt_version: str = "10.3", tensors: set[str] | None = None) -> CalibrationCache:
    """Symmetric scales (``amax / 127``) for every tensor of ``table`` (or only ``tensors``)."""
    scales = {}
    for name, r in table.ranges.items():
        if tensors is not None and name not in tensors:
            continue
        scales[name] = max(r.symmetric_scale(), 1e-12)
    return CalibrationCache(trt_version_code(trt_version), ALGORITHM, scales)


def write_cache(table: CalibrationTable, path: str | Path, trt_version: str = "10.3") -> Path:
    p = Path(path)
    p.write_text(cache_from_table(table, trt_version).to_text())
    return p


def read_cache(path: str | Path) -> CalibrationCache:
    p = Path(path)
    try:
        return CalibrationCache.parse(p.read_text(), where=str(p))
    except OSError as e:
        raise QuantizationError(f"cannot read TensorRT calibration cache {p}: {e}") from None


def retarget_cache(path: str | Path, trt_version: str, out: str | Path) -> Path:
    """The cache at ``path`` with its header rewritten for TensorRT ``trt_version`` (``trt.__version__``
    on the device), written to ``out``: the scales are the same for every version."""
    cache = read_cache(path)
    o = Path(out)
    o.write_text(CalibrationCache(trt_version_code(trt_version), cache.algorithm, cache.scales).to_text())
    return o
