"""``quantize_bundle``: the whole INT8 flow on a bundle, and its typed report.

prepare -> calibrate once -> quantize for the target -> score FP32 (the bundle's own model) and INT8,
exactly as ``edgeseg eval`` scores them (:mod:`edgeseg.quant.accuracy`) -> (sensitivity) ->
(mixed precision within ``max_drop``: :func:`_accuracy_control`) -> latency -> write ``model.int8.<target>.onnx``,
``calibration.json``, TensorRT calibration caches (target ``tensorrt``) and ``report.json["int8"][target]``.

Two engines place the Q/DQ: ``ort`` (ONNX Runtime's quantizer with ranges from
:mod:`edgeseg.quant.ranges`) and ``nncf`` (:mod:`edgeseg.quant.openvino`, the ``openvino`` target's
default; scored and timed in OpenVINO). Both see the same calibration feeds and the same accuracy gate.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import InputError, QuantizationError, UnsupportedError
from ..structures import InputSpec
from . import accuracy as acc
from .calibration import CalibrationRecipe, FeedReader, collect_frames, resolve_calibration, split_holdout
from .prepare import model_opset, prepare_model
from .profiles import ENGINES, QuantProfile, get_profile
from .quantize import FloatNode, QuantizedModel, compute_nodes, quantize_model, require_ort_quantizer
from .ranges import CalibrationTable, calibrate

if TYPE_CHECKING:
    from ..backends.device import DeviceInfo

log = logging.getLogger(__name__)

TRT_CACHE_VERSIONS = ("8.5.2", "10.3.0")
#: range methods that clip the histogram's tails; when one misses the budget, minmax ranges are tried
CLIPPING_METHODS = ("entropy", "percentile", "mse")


@dataclass(frozen=True)
class QuantReport:
    """What ``quantize_bundle`` did and measured (also written to ``report.json["int8"][target]``)."""

    target: str
    method: str
    model_file: str | None
    frames: int
    metric: str | None
    fp32_score: float | None
    int8_score: float | None
    met_budget: bool
    max_drop: float | None
    float_nodes: tuple[FloatNode, ...]
    sensitivity: tuple[acc.LayerSensitivity, ...] = ()
    curve: tuple[tuple[int, float], ...] = ()
    latency_ms: dict[str, float] = field(default_factory=dict)
    size_bytes: dict[str, int] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    engine: str = "ort"
    execution: dict[str, Any] = field(default_factory=dict)  # openvino: layers OpenVINO runs in INT8
    layer_latency: dict[str, Any] = field(default_factory=dict)  # cpu: per-layer INT8 vs float timings
    calibration: dict[str, Any] = field(default_factory=dict)  # the recipe: source(s), split, sampling, seed
    #: what the gate's metric was scored on: ``{"dataset": spec, "split": ..., "samples": n}``, or the
    #: held-out calibration frames FP32 was compared with (``{"agreement_frames": n}``); {} without a gate
    gate_data: dict[str, Any] = field(default_factory=dict)
    #: the machine every latency figure and decision above was made on (edgeseg.backends.device);
    #: a bundle run on another CPU re-times instead of trusting them (edgeseg.backends.choice)
    device: "DeviceInfo" = field(default_factory=lambda: _device())

    @property
    def drop(self) -> float | None:
        if self.fp32_score is None or self.int8_score is None:
            return None
        return self.fp32_score - self.int8_score

    @property
    def speedup(self) -> float | None:
        f, q = self.latency_ms.get("fp32"), self.latency_ms.get("int8")
        return f / q if f and q else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "method": self.method, "model": self.model_file, "frames": self.frames,
            "metric": self.metric, "fp32": self.fp32_score, "int8": self.int8_score, "drop": self.drop,
            "max_drop": self.max_drop, "met_budget": self.met_budget,
            "float_nodes": [f.to_dict() for f in self.float_nodes],
            "sensitivity": [s.to_dict() for s in self.sensitivity],
            "curve": [list(c) for c in self.curve],
            "latency_ms": self.latency_ms, "speedup": self.speedup, "size_bytes": self.size_bytes,
            "prepare": self.prepare, "files": list(self.files), "engine": self.engine, "execution": self.execution,
            "layer_latency": self.layer_latency, "calibration": self.calibration, "gate_data": self.gate_data,
            "device": self.device.to_dict(),
        }


def quantize_bundle(bundle, calib: str | CalibrationRecipe | Sequence, target: str = "tensorrt", method: str | None = None,
                    eval_dataset=None, max_drop: float | None = None, sensitivity: bool = False, *,
                    frames: int | None = None, threads: int = 0, progress: bool = True, latency: bool = True,
                    engine: str | None = None, latency_guard: bool = True, ranking: str = "auto",
                    eval_spec: str | None = None, eval_split: str | None = None,
                    keep_float: Sequence[str] = ()) -> QuantReport:
    """Quantize ``bundle``'s FP32 model for ``target`` and record the result in the bundle.

    calib: a recipe (``.toml``, recipe name, folder, video, dataset spec, :class:`CalibrationRecipe`)
    or a list of RGB frames (a live source already sampled). eval_dataset: labelled samples (a
    dataset from :func:`edgeseg.data.open_dataset`) for the task metric, scored as ``edgeseg eval``
    scores (the FP32 score is the bundle's FP32 model's ``edgeseg eval`` mIoU). Raises
    :class:`QuantizationError` (after writing the report) when ``max_drop`` cannot be met.
    engine: ``ort`` | ``nncf`` (default: the profile's; ``openvino`` uses NNCF when it is installed).
    latency_guard: on the ``cpu`` target, time every layer in float and INT8 on this CPU and leave the
    ones INT8 makes slower in float, when that makes the whole model faster (:func:`_latency_guard`).
    ranking: how the sensitivity analysis and the ``max_drop`` search rank layers (:func:`_rank_layers`).
    eval_spec / eval_split: the spec and split ``eval_dataset`` was opened from, recorded in the report's
    ``gate_data`` (which data the gate scored: a held-out sequence, another camera) beside its size.
    When ranges from a clipping method (:data:`CLIPPING_METHODS`) miss ``max_drop`` with every layer in
    INT8, minmax ranges are tried before any layer is kept in float, and kept when they score higher:
    clipping can cut off the rare large activations a detection head's positives live in (a street
    SOLOv2: mask AP 2.63 FP32, 0.00 INT8 with entropy ranges, 2.51 with minmax). The report's
    ``calibration.method_fallback`` records both scores.
    keep_float: layers (node names, as the report's ``float_nodes`` and the sensitivity table print them)
    kept in float in every model tried, before any search: a layer the noise ranking under-rates (a stem
    convolution whose error every later layer amplifies) costs the search many others.
    """
    from ..bundle import Bundle

    if ranking not in RANKINGS:  # before any work, not when the gate first needs it
        raise InputError(f"sensitivity ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    if max_drop is not None and not (float(max_drop) >= 0 and math.isfinite(float(max_drop))):
        raise InputError(f"--max-drop must be a number >= 0 (the largest metric drop from FP32 allowed), got {max_drop}",
                         fix="e.g. --max-drop 1.0 (one mIoU point); 0 asks INT8 to score at least what FP32 scores")
    if not isinstance(bundle, Bundle):
        _refuse_shipped_name(bundle)
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    _check_float_bundle(b)  # before the calibration frames are read: a model quantized already is refused anyway
    profile = _engine_profile(get_profile(target), engine, method)
    if profile.name == "openvino" and _has_openvino():  # before any calibration: OpenVINO must read the graph
        _check_openvino_reads(b)
    spec = b.manifest.input
    recipe, calib_frames = _calibration_frames(calib, frames, method, progress,
                                               spec if spec.size_rule in ("fixed", "fit") else None)
    method = "nncf" if profile.engine == "nncf" else method or recipe.method
    runtime = "openvino" if profile.name == "openvino" and _has_openvino() else "onnxruntime"
    need_holdout = sensitivity or (max_drop is not None and eval_dataset is None)
    cal_frames, held = split_holdout(calib_frames, recipe.holdout or (0.2 if need_holdout else 0.0))
    work = Path(tempfile.mkdtemp(prefix="edgeseg-int8-"))
    try:
        fp32 = b.model_path("fp32")
        prepared = work / "prepared.onnx"
        prep = prepare_model(fp32, prepared, optimize=profile.optimize_graph)
        feed = {spec.name: spec.preprocess(calib_frames[0])[0]}  # the input every latency figure is timed on
        forced = _forced_float(prepared, profile, keep_float)

        def build(m: str, name: str):
            """Ranges by method ``m``, the all-INT8 model and (cpu) the latency guard's choice."""
            table = None if profile.engine == "nncf" else calibrate(
                prepared, FeedReader(cal_frames, spec, progress=progress, desc=recipe.name or "calibration"), m,
                symmetric=profile.activation_symmetric, percentile=recipe.percentile)
            q = _Quantizer(prepared, profile, table, cal_frames, spec, base_keep=forced, progress=progress)
            full = q.model(None, work / name)
            guard: dict[str, Any] = {}
            if latency_guard and profile.name == "cpu" and profile.engine == "ort" and runtime == "onnxruntime":
                q, full, guard = _latency_guard(q, full, feed, threads, work, progress)
            return table, q, full, guard

        table, q, full, guard = build(method, "int8.onnx")
        scorer, sens_scorer = _scorers(eval_dataset, held, b.manifest, fp32, threads, runtime)
        fp32_score = scorer(fp32) if scorer else None
        int8_score = scorer(full.path) if scorer else None
        fallback = None
        if (max_drop is not None and fp32_score is not None and int8_score is not None and profile.engine == "ort"
                and method in CLIPPING_METHODS and fp32_score - int8_score > max_drop):
            # clipping ranges can cut off the rare large activations a detection head's positives live in
            # (SOLOv2's category scores and kernels): try the full ranges before keeping layers in float
            alt_table, alt_q, alt_full, alt_guard = build("minmax", "int8_minmax.onnx")
            alt_score = scorer(alt_full.path)
            log.info("INT8 with %s ranges scores %.4g (FP32 %.4g); with minmax ranges %.4g", method, int8_score,
                     fp32_score, alt_score)
            if alt_score > int8_score:
                fallback = {"method": method, "int8": int8_score, "minmax": alt_score}
                table, q, full, guard, int8_score, method = alt_table, alt_q, alt_full, alt_guard, alt_score, "minmax"
        gate = _accuracy_control(q, full, scorer, sens_scorer, fp32_score, int8_score, sensitivity=sensitivity,
                                 max_drop=max_drop, work=work, progress=progress, ranking=ranking, threads=threads)
        lat = _latency(prepared, gate.model, feed, threads, runtime) if latency else {}
        report = QuantReport(
            target=target, method=method, model_file=None, frames=len(cal_frames), metric=scorer.name if scorer else None,
            fp32_score=fp32_score, int8_score=gate.int8_score, met_budget=gate.met, max_drop=max_drop,
            float_nodes=gate.float_nodes, sensitivity=gate.sensitivity, curve=gate.curve, latency_ms=lat,
            size_bytes={"fp32": os.path.getsize(fp32), "int8": os.path.getsize(gate.model)}, prepare=prep.to_dict(),
            engine=profile.engine, execution=_execution(gate.model, runtime), layer_latency=guard,
            calibration={**_recipe_record(recipe, len(calib_frames), len(held)),
                         **({"method_fallback": fallback} if fallback else {})},
            gate_data=_gate_data(scorer, eval_dataset, eval_spec, eval_split, held))
        return _write(b, report, gate.model, table, recipe, fp32, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class _Quantizer:
    """The prepared model and its calibration: quantizes it with any set of layers kept in float
    (called as ``q(keep, out) -> path`` by the sensitivity analysis and the mixed-precision search)."""

    prepared: Path
    profile: QuantProfile
    table: CalibrationTable | None  # None for the nncf engine (NNCF gathers its own statistics)
    frames: Sequence
    spec: InputSpec
    base_keep: dict[str, str] = field(default_factory=dict)  # always in float (the latency guard's layers)
    progress: bool = True  # NNCF's own bars (the nncf engine): on standard error, or none (--no-progress)

    def model(self, keep: dict[str, str] | None, out: Path) -> QuantizedModel:
        keep = {**self.base_keep, **(keep or {})} or None
        if self.profile.engine == "nncf":
            from .openvino import nncf_quantize_onnx

            return nncf_quantize_onnx(self.prepared, out, FeedReader(self.frames, self.spec), self.profile, keep,
                                      progress=self.progress)
        return quantize_model(self.prepared, out, self.profile, self.table, keep)

    def __call__(self, keep: dict[str, str], out: Path) -> Path:
        return self.model(keep, out).path


@dataclass(frozen=True)
class _Gate:
    """What accuracy control settled on: the model to ship and its numbers."""

    model: Path
    float_nodes: tuple[FloatNode, ...]
    int8_score: float | None
    met: bool
    curve: tuple[tuple[int, float], ...]
    sensitivity: tuple[acc.LayerSensitivity, ...] = ()


RANKINGS = ("auto", "task", "error")
AUTO_TASK_LAYERS = 24  # up to this many layers, "auto" ranks by the task metric (one score per layer)
RANKING_FRAMES = 4  # calibration frames the error ranking runs


def _rank_layers(q: _Quantizer, full: QuantizedModel, layers, sens_scorer, scorer, int8_score, ranking: str,
                 threads: int, work: Path, progress: bool) -> list[acc.LayerSensitivity]:
    """Layers ranked most INT8-sensitive first: by the task metric with each layer alone in float
    (``task``: one quantization and one scoring per layer), or by the noise each adds (``error``: two
    inference passes, :mod:`edgeseg.quant.error_ranking`); ``auto`` takes ``task`` up to
    :data:`AUTO_TASK_LAYERS` layers."""
    if ranking not in RANKINGS:
        raise InputError(f"sensitivity ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    if ranking == "auto":
        ranking = "task" if len(layers) <= AUTO_TASK_LAYERS else "error"
    if ranking == "error":
        from .error_ranking import error_ranking

        feeds = [{q.spec.name: q.spec.preprocess(f)[0]} for f in q.frames[:RANKING_FRAMES]]
        try:
            ranked = error_ranking(q.prepared, full.path, feeds, layers, threads)
            log.info("ranked %d layers by the quantization noise each adds (%d frames)", len(layers), len(feeds))
            return ranked
        except Exception as e:  # noqa: BLE001  (renamed layers, a graph ONNX Runtime cannot run with its
            # tensors exposed: the exact ranking still works, only slower)
            log.warning("ranking by the task metric instead of quantization noise: %s: %s", type(e).__name__, e)
    base = int8_score if sens_scorer is scorer else sens_scorer(full.path)
    return acc.layer_sensitivity(layers, q, sens_scorer, base, work, progress)


def _accuracy_control(q: _Quantizer, full: QuantizedModel, scorer, sens_scorer, fp32_score: float | None,
                      int8_score: float | None, *, sensitivity: bool, max_drop: float | None, work: Path,
                      progress: bool, ranking: str = "auto", threads: int = 0) -> _Gate:
    """Per-layer sensitivity (ranked on ``sens_scorer``, else ``scorer``) and, with ``max_drop``, the
    fewest most-sensitive layers in float that keep ``scorer`` within ``max_drop`` of FP32."""
    curve = ((0, int8_score),) if scorer else ()
    if not sensitivity and max_drop is None:
        return _Gate(full.path, full.float_nodes, int8_score, True, curve)
    if scorer is None:
        raise QuantizationError("sensitivity and --max-drop need an evaluation set or held-out calibration frames",
                                fix="pass --eval DATASET, or calibrate on more than one frame")
    if not sensitivity and fp32_score is not None and int8_score is not None and fp32_score - int8_score <= max_drop:
        return _Gate(full.path, full.float_nodes, int8_score, True, curve)  # within budget: nothing to rank
    import onnx

    fixed = {f.name for f in full.float_nodes}
    layers = [(n, op) for n, op in compute_nodes(onnx.load(str(q.prepared)), q.profile) if n not in fixed]
    sens = tuple(_rank_layers(q, full, layers, sens_scorer or scorer, scorer, int8_score, ranking, threads, work, progress))
    if max_drop is None:
        return _Gate(full.path, full.float_nodes, int8_score, True, tuple(_sensitivity_curve(sens, q, scorer, int8_score, work)), sens)
    mixed = acc.mixed_precision([s.name for s in sens], q, scorer, fp32_score, int8_score, max_drop, work)
    if mixed.model is None:
        return _Gate(full.path, full.float_nodes, int8_score, mixed.met, mixed.curve, sens)
    reason = f"mixed precision (--max-drop {max_drop:g}): among the most INT8-sensitive layers"
    final = q.model({n: reason for n in mixed.float_layers}, work / "final.onnx")
    return _Gate(final.path, final.float_nodes, mixed.score, mixed.met, mixed.curve, sens)


KEEP_FLOAT_REASON = "kept in float by --keep-float"


def _forced_float(prepared: Path, profile: QuantProfile, names: Sequence[str]) -> dict[str, str]:
    """``{name: reason}`` for the layers the caller keeps in float; an unknown name is an error naming
    the model's quantizable layers (a typo must not silently quantize the layer it meant)."""
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        return {}
    import onnx

    known = [n for n, _ in compute_nodes(onnx.load(str(prepared), load_external_data=False), profile)]
    unknown = [n for n in names if n not in known]
    if unknown:
        shown = ", ".join(known[:12]) + (f", ... ({len(known)} in all)" if len(known) > 12 else "")
        raise InputError(f"--keep-float: no quantizable layer named {', '.join(map(repr, unknown))} in this model",
                         fix=f"use the names the sensitivity table and the report's float_nodes print: {shown}")
    return {n: KEEP_FLOAT_REASON for n in names}


def _latency_guard(q: _Quantizer, full: QuantizedModel, feed: dict, threads: int, work: Path, progress: bool,
                   max_trials: int = 6):
    """Time every layer in float and INT8 on this CPU (:mod:`edgeseg.quant.layer_latency`); for the
    layers INT8 makes slower (most time lost first, at most ``max_trials``), quantize again with the
    layer left in float and keep it so only if the *whole* model is then measured faster, side by side
    (a float layer can also push its neighbours out of INT8). Returns (quantizer, model, report section)."""
    from dataclasses import replace

    import onnx

    from .layer_latency import measure_layers, slow_int8_layers, time_models_interleaved

    timings = measure_layers(onnx.load(str(q.prepared)), threads=max(threads, 0), skip=[f.name for f in full.float_nodes],
                             progress=progress, input_shapes={k: v.shape for k, v in feed.items()})
    slow = slow_int8_layers(timings)
    loss = {t.name: t.int8_ms - t.float_ms - t.convert_ms for t in timings}
    section: dict[str, Any] = {"threads": threads, "layers": [t.to_dict() for t in timings],
                               "slower_in_int8": sorted(slow, key=lambda n: -loss[n]), "trials": [], "kept_float": []}
    best_q, best = q, full
    for k, name in enumerate(section["slower_in_int8"][:max_trials]):
        trial_q = replace(best_q, base_keep={**best_q.base_keep, name: slow[name]})
        trial = trial_q.model(None, work / f"int8_guard_{k}.onnx")
        cur_ms, trial_ms = time_models_interleaved([best.path, trial.path], feed, threads)
        faster = trial_ms < cur_ms * 0.99
        section["trials"].append({"layer": name, "whole_model_ms": round(cur_ms, 3), "with_layer_float_ms": round(trial_ms, 3),
                                  "kept_float": faster})
        if faster:
            best_q, best = trial_q, trial
            section["kept_float"].append(name)
    if not timings:
        section["decision"] = "no layer could be timed (shapes unknown after shape inference): nothing left in float for speed"
    elif not slow:
        section["decision"] = "every timed layer is faster in INT8 (within 10%): nothing left in float for speed"
    elif section["kept_float"]:
        section["decision"] = (f"{len(section['kept_float'])} of {len(slow)} layer(s) slower in INT8 left in float: "
                               f"each made the whole model faster (measured side by side)")
    else:
        section["decision"] = (f"{len(slow)} layer(s) are slower in INT8 alone, but leaving any of them in float did not "
                               f"make the whole model faster: all kept in INT8")
    return best_q, best, section


def _device() -> "DeviceInfo":
    from ..backends.device import device_info

    return device_info()


def _engine_profile(profile: QuantProfile, engine: str | None, method: str | None) -> QuantProfile:
    """The profile with the engine that will place Q/DQ: the asked one, else the profile's (NNCF
    falls back to ``ort`` when NNCF/OpenVINO are not installed and nobody asked for it)."""
    from dataclasses import replace

    if engine is not None and engine not in ENGINES:
        raise InputError(f"quantization engine {engine!r} is unknown", fix=f"use one of {', '.join(ENGINES)}")
    chosen = engine or profile.engine
    if engine == "nncf" and profile.name != "openvino":
        raise InputError(f"the nncf engine quantizes for OpenVINO only, not for target {profile.name!r}",
                         fix="use --target openvino, or drop --engine")
    if chosen == "nncf":
        from .openvino import nncf_available

        ok, why = nncf_available()
        if not ok and engine is None:
            chosen = "ort"
            log.warning("target openvino: NNCF is not usable here (%s), so edgeseg's own Q/DQ placement (the ort engine) "
                        "quantizes instead; for NNCF's: pip install 'edgeseg[openvino]'", why)
        if method is not None and chosen == "nncf":
            raise InputError(f"--method {method} sets edgeseg's range algorithm; the nncf engine uses NNCF's statistics",
                             fix="drop --method, or add --engine ort to use edgeseg's ranges")
    if chosen == "ort":
        require_ort_quantizer()
    return replace(profile, engine=chosen) if chosen != profile.engine else profile


def _has_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _execution(model: Path, runtime: str) -> dict[str, Any]:
    if runtime != "openvino":
        return {}
    from .openvino import int8_execution

    return {"runtime": "openvino-cpu", **int8_execution(model).to_dict()}


def _check_float_bundle(b) -> None:
    """The bundle's FP32 model must be a float one (:func:`~edgeseg.quant.prepare.check_float_model`)."""
    import onnx

    from .prepare import check_float_model

    path = b.model_path("fp32")
    check_float_model(onnx.load(str(path), load_external_data=False), str(path))


def _recipe_record(recipe: CalibrationRecipe, given: int | None = None, held: int = 0) -> dict[str, Any]:
    """What the report says about the calibration frames: the recipe without its folder, sources resolved;
    ``frames`` the number the sources gave (``given``), with ``frames_asked`` the recipe's when they gave fewer,
    and ``held_out`` those of them kept aside to rank layers (not calibrated on)."""
    d = {k: v for k, v in recipe.to_dict().items() if k != "base_dir"}
    if given is not None and given != d.get("frames"):
        d["frames_asked"], d["frames"] = d.get("frames"), given
    if held:
        d["held_out"] = held
    try:
        d["resolved"] = recipe.resolved_sources()
    except InputError as e:  # an unset ${VAR}: the sources stay as written, with the reason
        d["resolved_error"] = str(e)
    return d


def _calibration_frames(calib, frames: int | None, method: str | None, progress: bool, network: Any = None):
    if isinstance(calib, (str, os.PathLike)):
        recipe = resolve_calibration(str(calib), frames=frames, method=method)
        return recipe, collect_frames(recipe, progress=progress, network=network)
    if isinstance(calib, CalibrationRecipe):
        return calib, collect_frames(calib, progress=progress, network=network)
    from .calibration import take_frames

    got = take_frames(iter(calib), frames or 10**9, network=network)
    return CalibrationRecipe(source="frames", frames=len(got), name="frames", method=method or "entropy"), got


def _gate_data(scorer, eval_dataset, spec: str | None, split: str | None, held) -> dict[str, Any]:
    """What the gate's metric was scored on (:attr:`QuantReport.gate_data`)."""
    if scorer is None:
        return {}
    if eval_dataset is None:
        return {"agreement_frames": len(held)}
    from ..data.base import recordable_spec

    out: dict[str, Any] = {"dataset": recordable_spec(spec) if spec is not None else repr(eval_dataset)}
    if split is not None:
        out["split"] = split
    if hasattr(eval_dataset, "__len__"):  # an iterable without a length records no count
        out["samples"] = len(eval_dataset)
    return out


def _scorers(eval_dataset, held, manifest, fp32: Path, threads: int, runtime: str):
    """(the gate's scorer, the sensitivity ranking's scorer): the task metric on ``eval_dataset``
    and agreement with FP32 on the held-out frames; either is None when its data is missing."""
    if manifest.task not in acc.TASK_SCORERS:
        raise UnsupportedError(f"no INT8 accuracy gate for {manifest.task} bundles",
                               fix=f"quantize a bundle of task {', '.join(acc.TASK_SCORERS)}")
    agreement, dataset_scorer = acc.TASK_SCORERS[manifest.task]
    agree = agreement(held, manifest, fp32, threads=threads, runtime=runtime) if held else None
    if eval_dataset is not None:
        return dataset_scorer(eval_dataset, manifest, threads=threads, runtime=runtime), agree
    return agree, agree


def _sensitivity_curve(sens, quantize, scorer, int8_score, work: Path) -> list[tuple[int, float]]:
    """Score with the top-k most sensitive layers in float, k = 0, 1, 2, 4, ... (for the plot)."""
    curve, k = [(0, int8_score)], 1
    names = [s.name for s in sens]
    while k <= len(names):
        curve.append((k, scorer(quantize({n: "sensitivity curve" for n in names[:k]}, work / f"curve_{k}.onnx"))))
        k = k * 2 if k * 2 <= len(names) or k == len(names) else len(names)
    return curve


def _latency(fp32: Path, int8: Path, feed: dict, threads: int, runtime: str = "onnxruntime") -> dict[str, float]:
    if runtime == "openvino":
        from .openvino import openvino_latency_ms

        return {"fp32": openvino_latency_ms(fp32, feed, threads, precision="fp32"),
                "int8": openvino_latency_ms(int8, feed, threads), "threads": threads, "runtime": "openvino-cpu"}
    from .layer_latency import time_models_interleaved

    f, q = time_models_interleaved([fp32, int8], feed, threads, runs=10, rounds=3)  # side by side: the host is shared
    return {"fp32": f, "int8": q, "threads": threads, "runtime": "onnxruntime-cpu"}


def _refuse_shipped_name(bundle: Any) -> None:
    """``quantize shapes`` (a shipped bundle's name, no such path here) rewrote the bundle inside the installed package:
    every user of that installation, and ``edgeseg demo``, then ran the new model, its gate unmeasured when no
    ``--eval`` was given. Refused, naming the copy to make; its path given explicitly still edits it (a maintainer's
    rebuild of the shipped bundles)."""
    import shlex

    from ..paths import shipped_bundle

    text = os.fspath(bundle)
    if os.path.exists(text) or os.sep in text or (os.altsep and os.altsep in text):
        return
    shipped = shipped_bundle(text)
    if shipped is not None:
        raise InputError(f"{text!r} names the bundle shipped with edgeseg ({shipped}): quantizing it would change it "
                         "for every user of this installation",
                         fix=f"quantize a copy: cp -rT {shlex.quote(str(shipped))} ./my-{shipped.name}, then edgeseg "
                             f"quantize my-{shipped.name} ...; to change the shipped bundle itself, give its path")


def _check_openvino_reads(bundle) -> None:
    """An INT8 model for OpenVINO of a graph OpenVINO cannot read would fail after the whole calibration
    (before: a RuntimeError traceback from the compile check, e.g. "No conversion rule found for operations:
    DeformConv-19"); refused first, naming the ops and the forms that work."""
    from ..backends.openvino.runner import read_model

    path = bundle.model_path("fp32")
    try:
        read_model(path, name=str(path))
    except UnsupportedError as e:
        what = str(e).splitlines()[0]
        deform = "DeformConv" in what
        raise QuantizationError(f"{what}: no INT8 model for OpenVINO can be made of it",
                                fix=("re-export with --deform-conv decomposed (standard ops OpenVINO reads and INT8 "
                                     "covers), or quantize for --target cpu or tensorrt (DeformConv stays float there)")
                                if deform else "export with standard ONNX ops, or quantize for --target cpu") from None


def _write(bundle, report: QuantReport, model: Path, table, recipe: CalibrationRecipe, fp32: Path, work: Path) -> QuantReport:
    import onnx

    from ..structures.manifest import ModelFile
    from .trt_cache import write_cache

    if not report.met_budget and any(m.precision == "int8" and m.target == report.target for m in bundle.manifest.models):
        # the bundle's INT8 model of this target (an earlier run's) stays usable: its record, ranges and caches
        # are not replaced by those of a model that was not added; the numbers go to --json (QuantizationError.report)
        raise _gate_failed(report, kept=True)
    with bundle.editing() as b:  # all or nothing: a Ctrl-C or a full disk here leaves the bundle as it was
        files = []
        if report.met_budget:
            name = f"model.int8.{report.target}.onnx"
            if any(m.file == name for m in b.manifest.models):
                before = (b.report.get("int8") or {}).get(report.target)
                if isinstance(before, dict) and before.get("metric") and isinstance(before.get("int8"), (int, float)) \
                        and not report.metric:  # an audit: a gated model replaced by an unmeasured one, said at INFO
                    log.warning("replacing the bundle's %s, gated on %s (%s %.2f), with an INT8 model whose accuracy "
                                "was not measured (no --eval): backend auto no longer prefers INT8 for it; give --eval "
                                "DATA to gate the new one", name, (before.get("gate_data") or {}).get("dataset", "data"),
                                before["metric"], before["int8"])
                else:
                    log.info("replacing the bundle's %s with the new INT8 model", name)
            opset = model_opset(onnx.load(str(model), load_external_data=False))
            b.add_model(ModelFile(name, "int8", target=report.target, opset=opset), model)
            files.append(name)
        calib = b.read_json("calibration.json", {}) or {}
        calib.setdefault("targets", {})[report.target] = {**_table_dict(table, model, report), "recipe": recipe.to_dict()}
        b.write_json("calibration.json", calib)
        files.append("calibration.json")
        if report.target == "tensorrt" and table is not None:
            names = _tensor_names(fp32)
            sub = CalibrationTable(table.method, {k: v for k, v in table.ranges.items() if k in names}, table.frames, table.options)
            for v in TRT_CACHE_VERSIONS:
                rel = f"calibration.tensorrt-{'.'.join(v.split('.')[:2])}.cache"
                write_cache(sub, work / rel, v)
                b.add_file(rel, work / rel)
                files.append(rel)
        rel = f"sensitivity.{report.target}.png"
        png = None
        if report.curve and len(report.curve) > 1:
            png = acc.plot_curve(report.curve, report.fp32_score or 0.0, report.max_drop, work / "sens.png", report.metric or "score")
        if png:
            b.add_file(rel, png)
            files.append(rel)
        elif report.met_budget:  # an earlier model's plot would describe a model no longer in the bundle
            b.remove_file(rel)
        from dataclasses import replace

        report = replace(report, model_file=files[0] if report.met_budget else None, files=tuple(files))
        section = b.report.get("int8", {})
        section[report.target] = report.to_dict()
        b.update_report("int8", section)
    if not report.met_budget:
        raise _gate_failed(report, kept=False)
    return report


def _gate_failed(report: QuantReport, kept: bool) -> QuantizationError:
    """The error of a missed ``max_drop``; ``.report`` holds the best attempt's numbers. ``kept``: the bundle
    already had an INT8 model of the target and was left exactly as it was."""
    where = (f"; the bundle is unchanged: its {report.target} INT8 model from an earlier run and its record are kept"
             if kept else "")
    err = QuantizationError(
        f"INT8 ({report.target}) cannot stay within {report.max_drop:g} {report.metric} of FP32: "
        f"FP32 {report.fp32_score:.2f}, best INT8 {report.int8_score:.2f} with {len(report.float_nodes)} layers in float"
        + where,
        fix="raise --max-drop, calibrate on more or more typical frames, try --method percentile|mse, or use QAT")
    err.report = report
    return err


def _table_dict(table, model: Path, report: QuantReport) -> dict[str, Any]:
    """Our ranges (ort engine), or the scales NNCF chose, read back from its Q/DQ model."""
    if table is not None:
        return table.to_dict()
    from .openvino import EDGESEG_NNCF, qdq_scales

    return {"method": "nncf", "engine": "nncf", "options": EDGESEG_NNCF.to_dict(), "frames": report.frames,
            "tensors": qdq_scales(model)}


def _tensor_names(path: Path) -> set[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {i.name for i in m.graph.input} | {o for n in m.graph.node for o in n.output}
