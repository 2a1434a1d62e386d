"""Accuracy control: score a model file, rank layers by INT8 sensitivity, and find the fewest float
layers that keep the task metric within a budget of FP32.

Scores are "higher is better", in percent:

* :class:`DatasetScorer` - the task metric (mIoU x 100 at each image's own resolution) on labelled
  samples, predictions made with the bundle's input spec exactly as at inference.
* :class:`AgreementScorer` - when no labelled set is given: the share of pixels whose class agrees
  with FP32's on held-out calibration frames (FP32 scores 100 by definition).

Sensitivity of a layer = score with that layer alone in float - score of the full INT8 model.
Mixed precision keeps the most sensitive layers in float, growing their number 1, 2, 4, ... then
bisecting, until the score is within the budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ..structures import InputSpec


class Scorer(Protocol):
    name: str

    def __call__(self, model_path: Path) -> float: ...


def make_session(model_path: str | Path, threads: int = 0, runtime: str = "onnxruntime"):
    """An inference session on ``runtime``: ``onnxruntime`` (CPU) or ``openvino`` (CPU plugin, same
    ``get_inputs``/``get_outputs``/``run`` slice: :class:`edgeseg.quant.openvino.OpenVinoSession`)."""
    if runtime == "openvino":
        from .openvino import OpenVinoSession

        return OpenVinoSession(model_path, threads)
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def labels_from_output(out: np.ndarray) -> np.ndarray:
    """``[1, C, H, W]`` logits or ``[1, H, W]`` labels -> ``int [H, W]`` class ids."""
    if out.ndim == 4:
        return out[0].argmax(axis=0)
    return out[0].astype(np.int64)


def to_original(labels: np.ndarray, meta) -> np.ndarray:
    """Network-resolution labels -> the original image's resolution (undoing letterbox padding)."""
    import cv2

    c = meta.content
    crop = labels[meta.pad_top: meta.pad_top + c.height, meta.pad_left: meta.pad_left + c.width]
    if crop.shape == (meta.original.height, meta.original.width):
        return crop
    return cv2.resize(crop.astype(np.uint8), meta.original.wh, interpolation=cv2.INTER_NEAREST).astype(np.int64)


def miou_percent(confusion: np.ndarray) -> float:
    """Mean IoU x 100 over classes that occur in the ground truth or the prediction."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    valid = union > 0
    return float(100.0 * np.mean(tp[valid] / union[valid])) if valid.any() else 0.0


@dataclass
class DatasetScorer:
    """mIoU (%) of a model file on labelled samples (``Sample`` objects with ``image`` and ``labels``)."""

    samples: Sequence
    spec: InputSpec
    num_classes: int
    output: str | None = None
    threads: int = 0
    ignore_index: int = 255
    name: str = "mIoU"
    runtime: str = "onnxruntime"

    def __call__(self, model_path: Path) -> float:
        sess = make_session(model_path, self.threads, self.runtime)
        inp = sess.get_inputs()[0].name
        out_name = self.output or sess.get_outputs()[0].name
        k = self.num_classes
        conf = np.zeros((k, k), np.int64)
        for s in self.samples:
            x, meta = self.spec.preprocess(s.image)
            pred = to_original(labels_from_output(sess.run([out_name], {inp: x})[0]), meta)
            gt = s.labels.astype(np.int64)
            valid = (gt != self.ignore_index) & (gt < k) & (pred >= 0) & (pred < k)
            conf += np.bincount(gt[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
        return miou_percent(conf)


@dataclass
class AgreementScorer:
    """Pixel agreement (%) with the FP32 model's classes on held-out frames."""

    frames: Sequence[np.ndarray]
    spec: InputSpec
    reference: Path
    output: str | None = None
    threads: int = 0
    name: str = "agreement with FP32 (%)"
    runtime: str = "onnxruntime"

    def __post_init__(self) -> None:
        self._ref = self._predict(self.reference)

    def _predict(self, model_path: Path) -> list[np.ndarray]:
        sess = make_session(model_path, self.threads, self.runtime)
        inp = sess.get_inputs()[0].name
        out_name = self.output or sess.get_outputs()[0].name
        return [labels_from_output(sess.run([out_name], {inp: self.spec.preprocess(f)[0]})[0]) for f in self.frames]

    def __call__(self, model_path: Path) -> float:
        got = self._predict(model_path)
        same = sum(int((a == b).sum()) for a, b in zip(got, self._ref))
        total = sum(a.size for a in self._ref)
        return 100.0 * same / max(total, 1)


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    op_type: str
    score: float  # score with this layer alone in float
    gain: float   # score - full-INT8 score

    def to_dict(self) -> dict:
        return {"name": self.name, "op_type": self.op_type, "score": self.score, "gain": self.gain}


Quantizer = Callable[[dict[str, str], Path], Path]  # (keep_float, out path) -> quantized model path


def layer_sensitivity(layers: Sequence[tuple[str, str]], quantize: Quantizer, score: Scorer, base_score: float,
                      work: Path, progress: bool = False) -> list[LayerSensitivity]:
    """Each layer alone in float; ranked most sensitive first."""
    from tqdm import tqdm

    out = []
    for name, op in tqdm(layers, desc="sensitivity", unit="layer", disable=not progress, leave=False):
        path = quantize({name: "sensitivity analysis"}, work / "sens.onnx")
        s = score(path)
        out.append(LayerSensitivity(name, op, s, s - base_score))
    return sorted(out, key=lambda r: -r.gain)


@dataclass(frozen=True)
class MixedResult:
    float_layers: tuple[str, ...]
    score: float
    met: bool
    curve: tuple[tuple[int, float], ...]  # (number of float layers, score)
    model: Path | None


def mixed_precision(ranked: Sequence[str], quantize: Quantizer, score: Scorer, fp32_score: float, int8_score: float,
                    max_drop: float, work: Path, reason: str = "mixed precision: most sensitive layers kept in float") -> MixedResult:
    """Fewest top-ranked layers in float with ``fp32_score - score <= max_drop`` (doubling, then bisection)."""
    curve = [(0, int8_score)]
    if fp32_score - int8_score <= max_drop:
        return MixedResult((), int8_score, True, tuple(curve), None)
    cache: dict[int, tuple[float, Path]] = {}

    def trial(k: int) -> float:
        if k not in cache:
            path = quantize({n: reason for n in ranked[:k]}, work / f"mixed_{k}.onnx")
            cache[k] = (score(path), path)
            curve.append((k, cache[k][0]))
        return cache[k][0]

    lo, hi, k = 0, None, 1
    while k <= len(ranked):
        if fp32_score - trial(k) <= max_drop:
            hi = k
            break
        lo, k = k, k * 2
    if hi is None and len(ranked) and lo < len(ranked):
        if fp32_score - trial(len(ranked)) <= max_drop:
            hi = len(ranked)
    if hi is None:
        best = max(cache, key=lambda j: cache[j][0]) if cache else 0
        s = cache[best][0] if cache else int8_score
        return MixedResult(tuple(ranked[:best]), s, False, tuple(sorted(curve)), cache[best][1] if cache else None)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fp32_score - trial(mid) <= max_drop:
            hi = mid
        else:
            lo = mid
    return MixedResult(tuple(ranked[:hi]), cache[hi][0], True, tuple(sorted(curve)), cache[hi][1])


def plot_curve(curve: Sequence[tuple[int, float]], fp32_score: float, max_drop: float | None, path: Path, metric: str) -> Path | None:
    """PNG of score vs number of float layers; None when matplotlib is missing (``pip install edgeseg[dev]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = sorted(curve)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="INT8 with k layers in float")
    ax.axhline(fp32_score, color="k", ls="--", lw=1, label="FP32")
    if max_drop is not None:
        ax.axhline(fp32_score - max_drop, color="r", ls=":", lw=1, label=f"budget (FP32 - {max_drop:g})")
    ax.set_xlabel("layers kept in float (most sensitive first)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def measure_latency_ms(model_path: str | Path, feed: dict[str, np.ndarray], threads: int = 0, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of one ONNX Runtime CPU inference, in milliseconds."""
    import time

    sess = make_session(model_path, threads)
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)
