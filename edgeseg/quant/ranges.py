"""Activation ranges: measured once on the calibration frames, reused for every quantized variant.

Methods (``RANGE_METHODS``):

* ``minmax``     - the observed min and max (ONNX Runtime's MinMax calibrator).
* ``entropy``    - TensorRT's KL-divergence threshold (ONNX Runtime's Entropy calibrator; 512 bins,
  since its threshold search costs O(bins^2) per tensor: 2048 bins took ~1 s per tensor here).
* ``percentile`` - clip each side at the given percentile of the value histogram.
* ``mse``        - our own search: on the same value histogram, the clipping range whose INT8
  quantize-dequantize minimises the expected squared error (clipping error + rounding error),
  searched over 128 candidate ranges. ONNX Runtime has no MSE calibrator; its ``Distribution``
  method serves FP8 and is not used.

Ranges are stored in a typed :class:`CalibrationTable` (what ``calibration.json`` holds) and handed to
ONNX Runtime's quantizer through its calibration-cache file, so sensitivity analysis and mixed
precision re-quantize without re-running calibration.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

from .._registry import Registry
from ..errors import QuantizationError
from .calibration import FeedReader


@dataclass(frozen=True)
class TensorRange:
    """The real-valued range ``[low, high]`` that INT8 covers for one tensor."""

    low: float
    high: float

    @property
    def amax(self) -> float:
        return max(abs(self.low), abs(self.high))

    def symmetric_scale(self) -> float:
        """The scale of symmetric INT8 (zero-point 0): ``amax / 127``."""
        return self.amax / 127.0


@dataclass(frozen=True)
class CalibrationTable:
    """Per-tensor ranges plus how they were made (enough to reproduce them)."""

    method: str
    ranges: dict[str, TensorRange]
    frames: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "frames": self.frames, "options": self.options,
            "tensors": {k: {"min": r.low, "max": r.high, "amax": r.amax, "scale_symmetric": r.symmetric_scale()}
                        for k, r in sorted(self.ranges.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CalibrationTable":
        ranges = {k: TensorRange(float(v["min"]), float(v["max"])) for k, v in d["tensors"].items()}
        return cls(str(d["method"]), ranges, int(d["frames"]), dict(d.get("options", {})))

    def write_ort_cache(self, path: Path) -> Path:
        """The ranges in ONNX Runtime's calibration-cache format (``quantize_static(calibration_cache_path=)``)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

        data = {k: TensorData(lowest=np.float32(r.low), highest=np.float32(r.high)) for k, r in self.ranges.items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
        return path


ENTROPY_BINS = 512

RangeFn = Callable[[Path, FeedReader, Dict[str, Any]], Dict[str, TensorRange]]
RANGE_METHODS: Registry[RangeFn] = Registry("calibration method", QuantizationError)


def calibrate(model_path: str | Path, reader: FeedReader, method: str = "entropy", *, chunk: int = 8,
              symmetric: bool = False, percentile: float = 99.999) -> CalibrationTable:
    """Run the frames of ``reader`` through ``model_path`` and compute every float tensor's range."""
    fn = RANGE_METHODS.get(method)
    chunk = fitting_chunk(model_path, chunk)
    opts = {"chunk": chunk, "symmetric": symmetric, "percentile": percentile}
    with quiet():
        ranges = fn(Path(model_path), reader, opts)
    if not ranges:
        raise QuantizationError(f"calibration of {Path(model_path).name} produced no tensor ranges")
    used = {"percentile": percentile} if method == "percentile" else {}
    if method == "mse":
        used["symmetric"] = symmetric
    if opts.get("nonfinite"):  # masked attention's -inf: those tensors' nodes stay in float (quantize.plan_float_nodes)
        used["nonfinite_tensors"] = sorted(opts["nonfinite"])
        logging.getLogger(__name__).warning(
            "%s: %d tensor(s) hold NaN/inf on the calibration frames (e.g. %s: masked attention); calibrated on their "
            "finite values, the nodes that read or write them stay in float", Path(model_path).name,
            len(opts["nonfinite"]), sorted(opts["nonfinite"])[0])
    return CalibrationTable(method, ranges, len(reader), used)


#: share of the memory available when calibration starts that the frames of one chunk may hold: ONNX
#: Runtime's calibrators keep every float tensor of every frame of a chunk (plus copies while merging)
CALIB_MEMORY_SHARE = 0.25


def activation_bytes(model_path: str | Path) -> int:
    """Bytes of every float tensor one frame produces in ``model_path`` (static shapes from ONNX shape
    inference; tensors of unknown shape are not counted): what a calibrator holds per frame."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path), load_external_data=False))
    sizes = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.DOUBLE: 8}
    total = 0
    for vi in (*model.graph.value_info, *model.graph.output):
        t = vi.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        if t.elem_type in sizes and dims and all(d > 0 for d in dims):
            total += int(np.prod(dims)) * sizes[t.elem_type]
    return total


def fitting_chunk(model_path: str | Path, chunk: int, available: int | None = None) -> int:
    """The number of frames calibrated at once so that their tensors fit :data:`CALIB_MEMORY_SHARE` of
    the available memory (at most ``chunk``, at least 1). FC-DenseNet56 at 480x360 produces 3.4 GiB of
    float tensors a frame: 8 frames at once were killed by the kernel (24 GB) on a 24 GB machine.
    Raises :class:`QuantizationError` before any work when one frame alone does not fit."""
    per_frame = activation_bytes(model_path)
    from .._memory import available_bytes  # a container's limit too: MemAvailable alone said the host's 22 GB

    available = available_bytes() if available is None else available
    if not per_frame or available is None:
        return chunk
    fits = int(available * CALIB_MEMORY_SHARE // per_frame)
    if fits < 1:
        raise QuantizationError(
            f"calibrating {Path(model_path).name} holds {per_frame / 2**30:.1f} GiB of tensors per frame, more than "
            f"{CALIB_MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB available here",
            fix="free memory or calibrate on a machine with more; a smaller network input size (edgeseg export --size) "
                "shrinks every tensor")
    return max(1, min(chunk, fits))


@contextlib.contextmanager
def quiet():
    """ONNX Runtime's quantization tools print progress and hints; keep the CLI output clean."""
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


def _run_chunks(calibrator: Any, reader: FeedReader, chunk: int) -> None:
    from .._progress import bar as progress_bar

    n = len(reader)
    with progress_bar(n, f"calibrating ({reader.desc})", "frame", reader.progress) as bar:
        for start in range(0, n, chunk):
            reader.set_range(start, start + chunk)
            calibrator.collect_data(reader)
            bar.update(min(chunk, n - start))
    reader.rewind()


def finite_tensor(a: np.ndarray) -> np.ndarray:
    """``a`` with NaN and +/-inf replaced by its finite extremes (a copy only when some are there)."""
    if a.dtype.kind != "f" or np.isfinite(a).all():
        return a
    ok = np.isfinite(a)
    lo, hi = (a[ok].min(), a[ok].max()) if ok.any() else (0.0, 0.0)
    return np.nan_to_num(a, nan=0.0 if lo <= 0.0 <= hi else lo, posinf=hi, neginf=lo)


class _FiniteOutputs:
    """The calibrator's session, with its intermediate outputs made finite (:func:`finite_tensor`).

    Masked attention writes ``-inf`` where a query may not look (Mask2Former, exported from transformers),
    and ONNX Runtime's histogram calibrators then fail (``np.histogram``: "supplied range of [-inf, inf] is not
    finite") and its min-max one gives an infinite scale. Those tensors are calibrated on their finite values
    (an INT8 ``-inf`` becomes the smallest value seen: a masked logit stays far below the others); their
    names are kept in ``nonfinite`` for the report."""

    def __init__(self, session: Any):
        self._session = session
        self.nonfinite: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def run(self, names, feed, *args, **kwargs):
        outs = self._session.run(names, feed, *args, **kwargs)
        out_names = names or [o.name for o in self._session.get_outputs()]
        fixed = []
        for name, y in zip(out_names, outs):
            z = finite_tensor(y) if isinstance(y, np.ndarray) else y
            if z is not y:
                self.nonfinite.add(name)
            fixed.append(z)
        return fixed


def _calibrator(model_path: Path, ort_method: str, tmp: str, extra: dict[str, Any]) -> Any:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    cal = create_calibrator(model_path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                            calibrate_method=CalibrationMethod[ort_method], extra_options=extra)
    cal.infer_session = _FiniteOutputs(cal.infer_session)
    return cal


def _collect(cal: Any, reader: FeedReader, opts: dict[str, Any]) -> None:
    """Run the frames through the calibrator; the tensors found holding NaN/inf go to ``opts["nonfinite"]``
    (by tensor name: min-max calibration augments the graph with ``<tensor>_ReduceMin``/``_ReduceMax``)."""
    _run_chunks(cal, reader, opts["chunk"])
    _record_nonfinite(cal, opts)


def _record_nonfinite(cal: Any, opts: dict[str, Any]) -> None:
    names = opts.setdefault("nonfinite", set())
    for name in getattr(cal.infer_session, "nonfinite", ()):
        for suffix in ("_ReduceMin", "_ReduceMax"):
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        names.add(name)


class _Feeds:
    """An ONNX Runtime calibration data reader over ready feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self._it = iter(list(feeds))

    def get_next(self):
        return next(self._it, None)


def nonfinite_tensors(model_path: str | Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> set[str]:
    """The float tensors of ``model_path`` that hold NaN/inf on ``feeds`` (one ONNX Runtime run each with
    every tensor's min and max exposed): for engines that calibrate on their own (NNCF), so that the nodes
    touching them stay float (:func:`edgeseg.quant.quantize.forced_float_nodes`)."""
    if not feeds:
        return set()
    opts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-nonfinite-") as tmp, quiet():
        cal = _calibrator(Path(model_path), "MinMax", tmp, {"symmetric": False})
        cal.collect_data(_Feeds(feeds))
        _record_nonfinite(cal, opts)
    return opts.get("nonfinite", set())


def _to_ranges(tensors_data: Any) -> dict[str, TensorRange]:
    out = {}
    for name, td in tensors_data.items():
        lo, hi = td.range_value
        out[name] = TensorRange(float(np.min(lo)), float(np.max(hi)))
    return out


@RANGE_METHODS.register("minmax")
def _minmax(model_path: Path, reader: FeedReader, opts: dict[str, Any]) -> dict[str, TensorRange]:
    with tempfile.TemporaryDirectory(prefix="edgeseg-calib-") as tmp:
        cal = _calibrator(model_path, "MinMax", tmp, {"symmetric": False})
        _collect(cal, reader, opts)
        # a tensor's ReduceMin of -inf has no finite value left to take: no range (its nodes stay float)
        return {k: r for k, r in _to_ranges(cal.compute_data()).items() if k not in opts["nonfinite"]}


@RANGE_METHODS.register("entropy")
def _entropy(model_path: Path, reader: FeedReader, opts: dict[str, Any]) -> dict[str, TensorRange]:
    with tempfile.TemporaryDirectory(prefix="edgeseg-calib-") as tmp:
        cal = _calibrator(model_path, "Entropy", tmp, {"symmetric": False, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128})
        _collect(cal, reader, opts)
        own = cal.collector.get_entropy_threshold  # ONNX Runtime's search, kept for histograms of other counts
        cal.collector.get_entropy_threshold = lambda histogram, bins: entropy_threshold(histogram, bins) \
            if np.asarray(histogram[0]).dtype.kind in "iu" else own(histogram, bins)
        return _to_ranges(cal.compute_data())


def entropy_threshold(histogram: Sequence[Any], num_quantized_bins: int = 128) -> tuple[Any, Any]:
    """ONNX Runtime's ``HistogramCollector.get_entropy_threshold`` (TensorRT's KL-divergence search) with prefix sums
    and reshapes where it sums numpy slices with Python's ``sum`` (quadratic in the bins, which merging frames widens
    past ``ENTROPY_BINS``: 11.5 s of a 200-frame calibration of ``road``, a performance audit; 2 s here). The same
    thresholds bit for bit on integer counts (``np.histogram``'s): every sum is of integers, and its
    ``smooth_distribution`` and ``entropy`` are used as they are. ``histogram``: (counts, edges, min, max, ...)."""
    from onnxruntime.quantization.calibrate import entropy, smooth_distribution

    hist, edges = histogram[0], histogram[1]
    bins, half = hist.size, num_quantized_bins // 2
    zero = bins // 2
    dtype = edges.dtype
    prefix = np.concatenate([[0], np.cumsum(hist, dtype=np.int64)])
    total = prefix[-1]
    divergence = np.zeros(zero - half + 1)
    thresholds = []
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, bins)
        thresholds.append((edges[start], edges[end]))
        sliced = hist[start:end]
        p = sliced.copy()  # the reference distribution: the outliers folded into the edge bins
        p[0] += prefix[start]
        p[-1] += total - prefix[end]
        merged = sliced.size // num_quantized_bins
        whole = num_quantized_bins * merged
        quantized = sliced[:whole].reshape(num_quantized_bins, merged).sum(1, dtype=np.int64)
        quantized[-1] += sliced[whole:].sum(dtype=np.int64)
        norm = (p[:whole] != 0).reshape(num_quantized_bins, merged).sum(1)
        level = np.zeros(num_quantized_bins, np.int64)
        ok = norm != 0
        level[ok] = (quantized[ok] / norm[ok]).astype(np.int64)  # its float into int64: truncated, as there
        q = np.zeros(p.size, np.int64)
        q[:whole] = np.repeat(level, merged)
        p, q = smooth_distribution(p), smooth_distribution(q)
        divergence[i - half] = np.array(np.inf if p is None or q is None else entropy(p, q), dtype=dtype)
    best = thresholds[int(np.argmin(divergence))]
    if best[0] < histogram[2]:
        best = (histogram[2], best[1])
    if best[1] > histogram[3]:
        best = (best[0], histogram[3])
    return best


@RANGE_METHODS.register("percentile")
def _percentile(model_path: Path, reader: FeedReader, opts: dict[str, Any]) -> dict[str, TensorRange]:
    with tempfile.TemporaryDirectory(prefix="edgeseg-calib-") as tmp:
        cal = _calibrator(model_path, "Percentile", tmp,
                          {"symmetric": False, "num_bins": 2048, "percentile": opts["percentile"]})
        _collect(cal, reader, opts)
        return _to_ranges(cal.compute_data())


@RANGE_METHODS.register("mse")
def _mse(model_path: Path, reader: FeedReader, opts: dict[str, Any]) -> dict[str, TensorRange]:
    with tempfile.TemporaryDirectory(prefix="edgeseg-calib-") as tmp:
        # the Entropy calibrator collects real-value histograms; we only use them, not its threshold
        cal = _calibrator(model_path, "Entropy", tmp, {"symmetric": False, "num_bins": 2048})
        _collect(cal, reader, opts)
        hists = cal.collector.histogram_dict
        out = {}
        for name, (hist, edges, lo, hi, *_) in hists.items():
            out[name] = mse_range(np.asarray(hist, np.float64), np.asarray(edges, np.float64), float(lo), float(hi),
                                  symmetric=opts["symmetric"])
        return out


def mse_range(hist: np.ndarray, edges: np.ndarray, low: float, high: float, *, symmetric: bool = False,
              candidates: int = 128) -> TensorRange:
    """The range ``r * [low, high]`` (r in (0, 1]) minimising the expected squared INT8 quantize-dequantize
    error of values distributed as ``hist`` (bin centres stand for their values)."""
    total = hist.sum()
    if total <= 0 or high <= low:
        return TensorRange(low, high)
    centers = 0.5 * (edges[:-1] + edges[1:])
    p = hist / total
    fracs = np.linspace(1.0 / candidates, 1.0, candidates)[:, None]
    if symmetric:
        amax = max(abs(low), abs(high))
        lo, hi = -amax * fracs, amax * fracs
        levels = 254.0
    else:
        lo, hi = min(low, 0.0) * fracs, max(high, 0.0) * fracs
        levels = 255.0
    step = np.maximum((hi - lo) / levels, 1e-12)
    clipped = np.clip(centers[None, :], lo, hi)
    deq = np.round((clipped - lo) / step) * step + lo
    err = (p[None, :] * (centers[None, :] - deq) ** 2).sum(axis=1)
    best = int(np.argmin(err))
    return TensorRange(float(lo[best, 0]), float(hi[best, 0]))


def read_table(path: str | Path) -> CalibrationTable:
    try:
        return CalibrationTable.from_dict(json.loads(Path(path).read_text()))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise QuantizationError(f"cannot read calibration table {path}: {e}") from None
