"""INT8 for volumetric models (V-Net) on ONNX files, gated by Dice.

Bundles and ``edgeseg quantize`` are 2-D (an ``InputSpec`` of images). A volumetric model takes
``float32 [1, C, D, H, W]`` volumes as they are, so this path works on the exported ONNX file and
arrays of volumes, with the 2-D quantizer's own parts: :func:`~edgeseg.quant.prepare.prepare_model`,
:func:`~edgeseg.quant.ranges.calibrate` (a reader that feeds volumes), :func:`~edgeseg.quant.quantize.quantize_model`
for a target profile, and when the all-INT8 model loses more than ``max_drop`` Dice points, the
quantization-noise ranking (:func:`~edgeseg.quant.error_ranking.error_ranking`) and the
mixed-precision search (:func:`~edgeseg.quant.accuracy.mixed_precision`) with Dice as the task
metric. The result says what each step scored; a model outside the budget is written nowhere
(:class:`~edgeseg.errors.QuantizationError` with the figures).

    from edgeseg.quant.volumetric import quantize_volumetric
    r = quantize_volumetric("vnet.onnx", "vnet_int8.onnx", calib, volumes, labels, max_drop=0.5)

``tools/bench/vnet_int8.py`` runs it on the trained V-Net and times both files.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, QuantizationError
from .calibration import FeedReader


class VolumeReader(FeedReader):
    """ONNX Runtime ``CalibrationDataReader`` over volumes ``[C, D, H, W]``: feeds each as ``[1, C, D, H, W]``."""

    def __init__(self, volumes: Sequence[np.ndarray], input_name: str, *, progress: bool = False):
        super().__init__(list(volumes), None, input_name=input_name, progress=progress, desc="calibrating (volumes)")

    def feed(self, i: int) -> dict[str, np.ndarray]:
        return {self.input_name: np.ascontiguousarray(self.frames[i], np.float32)[None]}


def _check_volumes(volumes: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(volumes)
    if v.ndim != 5 or v.dtype.kind != "f" or len(v) == 0:
        raise InputError(f"{what}: expected float volumes [N, C, D, H, W] with N >= 1, got {v.dtype} {list(v.shape)}",
                         fix="stack the volumes with a channel axis: volumes[:, None] for one-channel data")
    return v.astype(np.float32, copy=False)


def onnx_dice(model: str | Path, volumes: np.ndarray, labels: np.ndarray, *, threads: int = 0,
              runtime: str = "onnxruntime") -> float:
    """Mean foreground Dice (%) of ``model``'s arg-max labels on ``volumes`` ``[N, C, D, H, W]``
    against ``labels`` ``[N, D, H, W]`` (:func:`edgeseg.eval.volumetric.dice_score`)."""
    from .accuracy import make_session

    return session_dice(make_session(model, threads, runtime), volumes, labels)


def session_dice(sess, volumes: np.ndarray, labels: np.ndarray) -> float:
    """:func:`onnx_dice` on an open session (ONNX Runtime's, or an OpenVINO one at a chosen precision)."""
    from ..eval.volumetric import dice_score

    volumes = _check_volumes(volumes, "Dice volumes")
    name, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    logits = [sess.run([out], {name: v[None]})[0] for v in volumes]
    return dice_score(np.concatenate(logits).argmax(1), np.asarray(labels), num_classes=logits[0].shape[1])


@dataclass
class VolumetricInt8:
    """What :func:`quantize_volumetric` did and scored (Dice in percent)."""

    path: Path
    target: str
    dice_fp32: float
    dice_int8_all: float
    dice_int8: float
    max_drop: float
    float_layers: tuple[str, ...]
    quantized_layers: int
    float_nodes: tuple = ()
    curve: tuple = ()
    calib_volumes: int = 0
    eval_volumes: int = 0
    steps: list[str] = field(default_factory=list)

    @property
    def drop(self) -> float:
        return self.dice_fp32 - self.dice_int8

    def to_dict(self) -> dict:
        return {"model": str(self.path), "target": self.target, "dice_fp32": self.dice_fp32,
                "dice_int8_all_layers": self.dice_int8_all, "dice_int8": self.dice_int8, "drop": self.drop,
                "max_drop": self.max_drop, "float_layers": list(self.float_layers),
                "quantized_compute_layers": self.quantized_layers,
                "float_nodes": [f.to_dict() for f in self.float_nodes], "curve": [list(c) for c in self.curve],
                "calibration_volumes": self.calib_volumes, "eval_volumes": self.eval_volumes, "steps": self.steps}


def quantize_volumetric(model: str | Path, out: str | Path, calib: np.ndarray, volumes: np.ndarray,
                        labels: np.ndarray, *, target: str = "cpu", method: str = "minmax", max_drop: float = 0.5,
                        rank_volumes: int = 2, threads: int = 0) -> VolumetricInt8:
    """Quantize the volumetric ONNX ``model`` for ``target`` into ``out``: calibrated on ``calib``
    ``[N, C, D, H, W]``, gated on Dice over ``volumes``/``labels`` (held out from ``calib``) with
    at most ``max_drop`` points lost; layers go back to float, noisiest first, until it holds."""
    from .accuracy import mixed_precision
    from .error_ranking import error_ranking
    from .prepare import prepare_model
    from .profiles import get_profile
    from .quantize import compute_nodes, quantize_model, require_ort_quantizer
    from .ranges import calibrate

    require_ort_quantizer()  # before any calibration
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise InputError(f"volumetric model {model} not found", fix="export it first: edgeseg.export.volumetric.export_volumetric(model, path, (D, H, W))")
    calib = _check_volumes(calib, "calibration volumes")
    volumes = _check_volumes(volumes, "evaluation volumes")
    if np.asarray(labels).shape != (volumes.shape[0],) + volumes.shape[2:]:
        raise InputError(f"labels {list(np.shape(labels))} do not match the volumes {list(volumes.shape)}",
                         fix="one [D, H, W] label volume per evaluation volume")
    profile = get_profile(target)
    with tempfile.TemporaryDirectory(prefix="edgeseg-vquant-") as tmp:
        work = Path(tmp)
        prepared = work / "prepared.onnx"
        steps = list(prepare_model(model, prepared).steps)
        import onnx

        name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        table = calibrate(prepared, VolumeReader(calib, name), method)
        steps.append(f"calibrated ({method}) on {len(calib)} volumes")

        made: dict[Path, object] = {}  # every trial's QuantizedModel, by path: the winner is not made twice

        def quantize(keep: dict, path: Path):
            made[path] = quantize_model(prepared, path, profile, table, keep)
            return path

        def score(path: Path) -> float:
            return onnx_dice(path, volumes, labels, threads=threads)

        first = quantize_model(prepared, work / "int8_all.onnx", profile, table)
        fp32, all_int8 = score(prepared), score(first.path)
        steps.append(f"Dice FP32 {fp32:.2f}, all INT8 {all_int8:.2f} on {len(volumes)} volumes")
        float_layers: tuple[str, ...] = ()
        chosen, curve, dice = first, ((0, all_int8),), all_int8
        if fp32 - all_int8 > max_drop:
            feeds = [VolumeReader(calib[:rank_volumes], name).feed(i) for i in range(min(rank_volumes, len(calib)))]
            ranked = [r.name for r in error_ranking(prepared, first.path, feeds,
                                                    compute_nodes(onnx.load(str(prepared)), profile), threads)]
            mixed = mixed_precision(ranked, quantize, score, fp32, all_int8, max_drop, work)
            curve = mixed.curve
            if not mixed.met:
                best = max(mixed.score, all_int8)  # the search's best trial, or all INT8 when no trial beat it
                raise QuantizationError(
                    f"INT8 {model.name} loses {fp32 - best:.2f} Dice points at best ({best:.2f} vs FP32 {fp32:.2f}; "
                    f"all INT8 {all_int8:.2f}; up to {max(k for k, _ in curve)} layers tried in float), over the "
                    f"{max_drop} budget",
                    fix="raise max_drop (--max-drop of tools/bench/vnet_int8.py), calibrate on more "
                        "volumes, or keep the model in FP32")
            float_layers, dice, chosen = mixed.float_layers, mixed.score, made[mixed.model]
            steps.append(f"{len(float_layers)} layer(s) kept in float: Dice {dice:.2f}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chosen.path, out)
    return VolumetricInt8(out, profile.name, fp32, all_int8, dice, max_drop, float_layers,
                          chosen.quantized_compute_nodes, chosen.float_nodes, tuple(curve), len(calib), len(volumes), steps)
