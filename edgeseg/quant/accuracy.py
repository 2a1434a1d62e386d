"""Accuracy control: score a model file, rank layers by INT8 sensitivity, and find the fewest float
layers that keep the task metric within a budget of FP32.

Scores are "higher is better", in percent, and are computed the way ``edgeseg eval`` computes them:
the bundle's :meth:`InputSpec.preprocess`, the runtime decoder :func:`edgeseg.decode.decode` (crop
the letterbox at the output's own stride, upsample, argmax, at each image's own size), model classes
matched to the dataset's by :func:`edgeseg.eval.class_map`, and :class:`edgeseg.eval.SemanticMetric`.

* :class:`DatasetScorer` - the task metric (mIoU x 100) on labelled samples.
* :class:`AgreementScorer` - when no labelled set is given: the share of pixels whose decoded class
  agrees with the FP32 model's on held-out calibration frames (FP32 scores 100 by definition).

Both preprocess their frames (and hold the ground truth / FP32 labels) once: the gate scores many
models (one per layer for the sensitivity analysis), each pays only inference and decoding.

Sensitivity of a layer = score with that layer alone in float - score of the full INT8 model.
Mixed precision keeps the most sensitive layers in float, growing their number 1, 2, 4, ... then
bisecting, until the score is within the budget.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Protocol, Sequence, TYPE_CHECKING

import numpy as np

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..structures import PreprocessMeta
    from ..structures.manifest import Manifest


class Scorer(Protocol):
    name: str

    def __call__(self, model_path: Path) -> float: ...


def make_session(model_path: str | Path, threads: int = 0, runtime: str = "onnxruntime"):
    """An inference session on ``runtime``: ``onnxruntime`` (CPU, :func:`edgeseg._ort.make_session`
    and its thread rule) or ``openvino`` (CPU plugin, same ``get_inputs``/``get_outputs``/``run``
    slice: :class:`edgeseg.quant.openvino.OpenVinoSession`)."""
    if runtime == "openvino":
        from .openvino import OpenVinoSession

        return OpenVinoSession(model_path, threads)
    from .._ort import make_session as ort_session

    return ort_session(model_path, threads=threads)


class _Decoded:
    """Frames preprocessed once by the bundle's input spec; :meth:`labels` runs a model file on all
    of them and decodes each output exactly as the runtime does."""

    def __init__(self, images: Sequence[np.ndarray], manifest: "Manifest", threads: int, runtime: str):
        self.manifest, self.threads, self.runtime = manifest, threads, runtime
        spec = manifest.input
        self.feeds: list[tuple[dict[str, np.ndarray], "PreprocessMeta"]] = []
        for img in images:
            x, meta = spec.preprocess(img)
            self.feeds.append(({spec.name: x}, meta))

    def results(self, model_path: Path, options=None) -> Iterator:
        """The decoded result of every frame (``options``: the task's decoder options, else the bundle's)."""
        from ..decode import decode

        sess = make_session(model_path, self.threads, self.runtime)
        names = [o.name for o in sess.get_outputs()]
        for feed, meta in self.feeds:
            outputs = dict(zip(names, sess.run(names, feed)))
            yield decode(outputs, meta, self.manifest, options)

    def labels(self, model_path: Path) -> Iterator[np.ndarray]:
        for r in self.results(model_path):
            yield r.labels


class DatasetScorer:
    """mIoU (%) of a model file on labelled samples (``Sample`` objects with ``image`` and ``labels``),
    over the dataset's own classes (``dataset.classes``; the model's when the samples carry none),
    void = ``dataset.ignore_index`` (255 by default). Equal to ``edgeseg eval`` on the same model."""

    name = "mIoU"

    def __init__(self, dataset, manifest: "Manifest", *, threads: int = 0, runtime: str = "onnxruntime"):
        from ..eval import class_map

        samples = list(dataset)
        self.classes = tuple(getattr(dataset, "classes", ()) or manifest.classes)
        self.ignore_index = int(getattr(dataset, "ignore_index", 255))
        self.class_map = class_map(manifest.classes, self.classes)
        for _, text in self.class_map.notes(manifest.classes, self.classes):
            log.warning("--eval: %s", text)
        self._truth = [np.asarray(s.labels) for s in samples]
        self._frames = _Decoded([s.image for s in samples], manifest, threads, runtime)

    def scores(self, model_path: Path):
        """The full :class:`~edgeseg.eval.SemanticScores` (boundary F1 off: the gate needs IoU only)."""
        from ..eval import SemanticMetric

        metric = SemanticMetric(len(self.classes), self.ignore_index, boundary=False, classes=self.classes)
        for labels, gt in zip(self._frames.labels(model_path), self._truth):
            metric.update(self.class_map(labels), gt)
        return metric.compute()

    def __call__(self, model_path: Path) -> float:
        miou = self.scores(model_path).miou
        return 0.0 if np.isnan(miou) else 100.0 * miou


class AgreementScorer:
    """Pixel agreement (%) of the decoded classes with the FP32 model's (``reference``) on held-out frames."""

    name = "agreement with FP32 (%)"

    def __init__(self, frames: Sequence[np.ndarray], manifest: "Manifest", reference: Path, *, threads: int = 0,
                 runtime: str = "onnxruntime"):
        self._frames = _Decoded(frames, manifest, threads, runtime)
        self._ref = list(self._frames.labels(reference))
        self._total = max(sum(r.size for r in self._ref), 1)

    def __call__(self, model_path: Path) -> float:
        same = sum(int(np.count_nonzero(a == b)) for a, b in zip(self._frames.labels(model_path), self._ref))
        return 100.0 * same / self._total


#: instance scorers keep every detection above this score, as ``edgeseg eval`` does for mask AP (one
#: definition: the on-device accuracy check of :mod:`edgeseg.backends.gates` uses it too)
from ..backends.gates import AP_SCORE_THRESHOLD  # noqa: E402


class InstanceDatasetScorer:
    """Mask AP (%) of a model file on an instance dataset (``InstanceSample``s: ``image()``,
    ``truth``, ``image_id``; ``categories``), model classes matched to categories by name, detections
    above :data:`AP_SCORE_THRESHOLD`: the number ``edgeseg eval`` prints for the same model."""

    name = "mask AP"

    def __init__(self, dataset, manifest: "Manifest", *, threads: int = 0, runtime: str = "onnxruntime"):
        from ..eval import category_map

        samples = list(dataset)
        self.categories = dataset.categories
        self.cmap = category_map(manifest.classes, dataset.categories)
        self._truth = [(s.image_id, s.truth) for s in samples]
        self._frames = _Decoded([s.image() for s in samples], manifest, threads, runtime)
        self._options = manifest.decoder_options.replace(score_threshold=AP_SCORE_THRESHOLD)

    def __call__(self, model_path: Path) -> float:
        from ..eval import MaskAPAccumulator

        acc = MaskAPAccumulator(self.categories, class_to_category=self.cmap.to_category)
        for (image_id, truth), result in zip(self._truth, self._frames.results(model_path, self._options)):
            acc.add(image_id, result, truth)
        ap = acc.compute().stats[0]
        return 0.0 if ap < 0 else 100.0 * ap


class InstanceAgreementScorer:
    """Mask AP (%) of a model file's detections against the FP32 model's (``reference``) taken as
    ground truth (those above the bundle's score threshold), on held-out frames: FP32 scores 100;
    missed, extra, moved or reshaped instances lower it, like AP against real truth."""

    name = "mask AP against FP32 (%)"

    def __init__(self, frames: Sequence[np.ndarray], manifest: "Manifest", reference: Path, *, threads: int = 0,
                 runtime: str = "onnxruntime"):
        self._frames = _Decoded(frames, manifest, threads, runtime)
        self.num_classes = max(1, manifest.num_classes)
        self._truth = [self._as_truth(r) for r in self._frames.results(reference)]

    def _as_truth(self, r) -> list[dict]:
        from ..structures import rle_encode

        return [{"id": i + 1, "category_id": int(r.classes[i]), "iscrowd": 0, "area": float(r.masks[i].sum()),
                 "segmentation": rle_encode(r.masks[i], r.mask_bounds(i))} for i in range(len(r))]

    def __call__(self, model_path: Path) -> float:
        from ..eval import MaskAPAccumulator

        acc = MaskAPAccumulator(range(self.num_classes), class_to_category=list(range(self.num_classes)))
        for image_id, (truth, result) in enumerate(zip(self._truth, self._frames.results(model_path))):
            acc.add(image_id, result, truth, image_shape=result.image_shape)
        ap = acc.compute().stats[0]
        return 100.0 if ap < 0 else 100.0 * ap  # no instance anywhere in FP32 or INT8: nothing to disagree on


class PanopticDatasetScorer:
    """PQ (%) of a model file on a panoptic dataset (``PanopticSample``s: ``image()``, ``panoptic``,
    ``crowd_ids``; ``categories``), as ``edgeseg eval`` computes it: the decoder writes the
    dataset's category ids (``PanopticOptions.category_ids``) into each segment."""

    name = "PQ"

    def __init__(self, dataset, manifest: "Manifest", *, threads: int = 0, runtime: str = "onnxruntime"):
        samples = list(dataset)
        self.categories = {int(c.id): bool(c.isthing) for c in getattr(dataset, "categories", {}).values()}
        self._truth = [(s.panoptic, s.crowd_ids) for s in samples]
        self._frames = _Decoded([s.image() for s in samples], manifest, threads, runtime)

    def __call__(self, model_path: Path) -> float:
        from ..eval import PanopticMetric

        metric = PanopticMetric(self.categories)
        for (truth, crowd), result in zip(self._truth, self._frames.results(model_path)):
            metric.update(result, truth, crowd)
        return 100.0 * metric.compute().pq


class PanopticAgreementScorer:
    """PQ (%) of a model file's panoptic output against the FP32 model's (``reference``) taken as
    ground truth, on held-out frames: FP32 scores 100; merged, split, missed or reshaped segments
    lower it as they would against real truth."""

    name = "PQ against FP32 (%)"

    def __init__(self, frames: Sequence[np.ndarray], manifest: "Manifest", reference: Path, *, threads: int = 0,
                 runtime: str = "onnxruntime"):
        self._frames = _Decoded(frames, manifest, threads, runtime)
        self._truth = list(self._frames.results(reference))

    def __call__(self, model_path: Path) -> float:
        from ..eval import PanopticMetric

        metric = PanopticMetric()
        for truth, result in zip(self._truth, self._frames.results(model_path)):
            metric.update(result, truth)
        scores = metric.compute()
        return 100.0 if scores.all.n == 0 else 100.0 * scores.pq  # nothing segmented anywhere: nothing to disagree on


#: the gate's scorers per task: (agreement with FP32 on held-out frames, the task metric on a dataset)
TASK_SCORERS = {
    "semantic": (AgreementScorer, DatasetScorer),
    "instance": (InstanceAgreementScorer, InstanceDatasetScorer),
    "panoptic": (PanopticAgreementScorer, PanopticDatasetScorer),
}


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    op_type: str
    score: float  # score with this layer alone in float (an error ranking: the NSR of its output)
    gain: float   # score - full-INT8 score (an error ranking: the noise this layer adds)
    measure: str = "task metric"  # what score and gain are (edgeseg.quant.error_ranking.MEASURE)

    def to_dict(self) -> dict:
        return {"name": self.name, "op_type": self.op_type, "score": self.score, "gain": self.gain,
                "measure": self.measure}


Quantizer = Callable[[Dict[str, str], Path], Path]  # (keep_float, out path) -> quantized model path


def layer_sensitivity(layers: Sequence[tuple[str, str]], quantize: Quantizer, score: Scorer, base_score: float,
                      work: Path, progress: bool = False) -> list[LayerSensitivity]:
    """Each layer alone in float; ranked most sensitive first."""
    from .._progress import tracked

    out = []
    for name, op in tracked(layers, "sensitivity", "layer", progress):
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
    """Median wall time of one ONNX Runtime CPU inference, in milliseconds (:func:`edgeseg._timing.time_runs`)."""
    from .._timing import time_runs

    sess = make_session(model_path, threads)
    return time_runs(lambda: sess.run(None, feed), runs, warmup).p50_ms
