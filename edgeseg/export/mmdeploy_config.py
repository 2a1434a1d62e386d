"""What an MMDeploy work directory says about its model's pre-processing, read from the files beside the ONNX file.

``tools/deploy.py ... --dump-info`` leaves ``deploy.json`` (the model files: ``models[0].net`` names
``end2end.onnx``), ``pipeline.json`` (the SDK's pipeline: a ``Transform`` task listing the pre-processing,
a ``Net`` task, a post-processing task whose ``component`` says the task: ``ResizeMask`` for MMSegmentation,
``ResizeInstanceMask`` for MMDetection's instance models) and ``detail.json`` beside ``end2end.onnx``.
``edgeseg import`` reproduces the transforms as MMDeploy's SDK runs them (``csrc/mmdeploy/preprocess``):

* ``Resize``: ``keep_ratio: false`` stretches the frame to the network size (MMDeploy's static exports);
  ``keep_ratio: true`` keeps its aspect ratio (MMCV's rule, sizes rounded half up), followed by a ``Pad``
  (fixed ``size`` or ``size_divisor``) that fills the bottom and right: ``letterbox``, ``anchor="top-left"``.
  A ``keep_ratio`` resize without a pad feeds frames of the network's aspect unchanged: ``resize``.
* ``LetterResize`` (MMYOLO): the image centred, the padding ``pad_val`` (its configs: 114); ``allow_scale_up:
  false`` (small frames padded, not scaled up), ``use_mini_pad`` and ``stretch_only`` are named, not reproduced.
* ``Pad``: ``pad_val`` (a number, or ``{"img": [...]}`` of which the SDK takes the first value); one after
  ``Normalize`` pads in normalised units (MMDetection's ``data_preprocessor``: 0, the mean pixel).
* ``Normalize``: ``mean``/``std`` in 0-255 units, ``to_rgb`` (the SDK decodes frames as BGR; default true).

The network size comes from the ONNX file when fixed (a static ``Resize`` size may be written width first by
MMDeploy's MMDetection exporter, and its versions read it in different orders). A dynamic export is fed as the
SDK feeds it (``sizes``): each frame scaled into a ``keep_ratio`` ``Resize``'s size by MMCV's long/short edge
rule and padded up to the ``Pad``'s ``size_divisor`` (:class:`InputSpec` ``size_rule="fit"``), or letterboxed
to a ``Pad``'s or ``LetterResize``'s fixed size; a plain ``Resize`` gives none (``--size``). Class names are not
in these files (``--names``). Transforms that change pixels and are not listed here are named in a warning (``problems``);
bookkeeping ones (``LoadImageFromFile``, ``DefaultFormatBundle``, ``ImageToTensor``, ``Collect``, ``Pack*``)
are ignored. Files that are not MMDeploy's (no ``pipeline.json``, or a ``deploy.json`` naming another
model file: the TensorRT, OpenVINO and ncnn directories name their engine, ``end2end.engine``, beside
``end2end.onnx``, which counts as the same) give None: nothing is assumed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..structures import ImageShape, pad_levels
from .hf_config import _read

#: transforms that move no pixel: the SDK's bookkeeping
_BOOKKEEPING = ("LoadImageFromFile", "LoadImageFromNDArray", "DefaultFormatBundle", "ImageToTensor", "Collect",
                "ToTensor", "Transpose", "LoadAnnotations", "LoadSegAnnotations")
#: the post-processing component -> edgeseg's task
_TASKS = {"ResizeMask": "semantic", "ResizeInstanceMask": "instance"}


@dataclass(frozen=True)
class PipelineConfig:
    """An exporter's pre-processing files, read (MMDeploy's here, PaddleSeg's in :mod:`.paddleseg_config`).
    ``input``: :class:`InputSpec` fields (``resize``, ``anchor``, ``pad_value``, ``color``, ``mean``, ``std``,
    ``scale``) the pipeline fixes; ``task``: edgeseg's name for its post-processing (or None); ``files``: what
    was read; ``problems``: what was left out, and why."""

    input: dict = field(default_factory=dict)
    task: str | None = None
    files: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    #: for a dynamic-size export: ``size``, ``size_rule`` and ``multiple`` (``fit`` for a keep-ratio ``Resize``,
    #: ``fixed`` at a ``Pad``'s own size), or {} when the pipeline sets no size
    sizes: dict = field(default_factory=dict)


#: the name its first users knew it by
MMDeployConfig = PipelineConfig


def _numbers(value, n: int | None = None) -> tuple[float, ...] | None:
    vals = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, bool) for v in vals):
        return None
    try:
        vals = [float(v) for v in vals]
    except (TypeError, ValueError):
        return None
    if not vals or not all(math.isfinite(v) for v in vals) or (n is not None and len(vals) != n):
        return None
    return tuple(vals)


def _set(sizes: dict, **fields) -> None:
    """The pipeline's latest word on the network size replaces what came before."""
    sizes.clear()
    sizes.update(fields)


def _flag(value) -> bool:
    """A JSON boolean as MMDeploy writes it (``true``); a string ``"false"`` is false."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _pad_level(value) -> float | None:
    """The SDK's ``pad_val``: a number, or ``{"img": [v, ...]}`` of which it takes the first."""
    if isinstance(value, dict):  # the SDK reads the image's level only (a {"seg": ...} alone is an error to it)
        value = value.get("img")
    vals = _numbers(value)
    return vals[0] if vals else None


def _transforms(pipeline: dict) -> list | None:
    tasks = (pipeline.get("pipeline") or {}).get("tasks") if isinstance(pipeline.get("pipeline"), dict) else None
    if not isinstance(tasks, list):
        return None
    for task in tasks:
        if isinstance(task, dict) and task.get("module") == "Transform" and isinstance(task.get("transforms"), list):
            return task["transforms"]
    return None


def _task(pipeline: dict) -> str | None:
    tasks = (pipeline.get("pipeline") or {}).get("tasks") if isinstance(pipeline.get("pipeline"), dict) else None
    for task in tasks if isinstance(tasks, list) else []:
        if isinstance(task, dict) and task.get("component") in _TASKS:
            return _TASKS[task["component"]]
    return None


def _shape(value) -> ImageShape | None:
    """A transform's ``size``/``scale``: one side, or two (MMDeploy's SDK reads ``[h, w]``); None when absent or
    not positive integers (``-1``: a short-edge resize, not reproduced)."""
    vals = _numbers(value)
    if vals is None or len(vals) not in (1, 2) or not all(v >= 1 and v.is_integer() for v in vals):
        return None
    return ImageShape(int(vals[0]), int(vals[-1]))


def _int(value, default: int) -> int | None:
    vals = _numbers(value if value is not None else default, 1)
    return int(vals[0]) if vals and vals[0] >= 1 and vals[0].is_integer() else None


def _input(transforms: list, path: Path, problems: list[str], sizes: dict) -> dict:
    keep_ratio = letter = padded = normalised = False
    pad_raw, pad_normalised = None, False
    mean, std, to_rgb = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False
    for t in transforms:
        kind = t.get("type") if isinstance(t, dict) else None
        if not isinstance(kind, str):
            problems.append(f"{path}: a transform without a type ({str(t)[:80]}) (left out)")
            continue
        kind = kind.rsplit(".", 1)[-1]  # MMYOLO's pipelines keep a scope: mmdet.LoadAnnotations
        if kind in _BOOKKEEPING or kind.startswith("Pack"):
            continue
        if kind == "Resize":
            keep_ratio = _flag(t.get("keep_ratio", False))
            if t.get("interpolation", "bilinear") != "bilinear":
                problems.append(f"{path}: Resize interpolation {t['interpolation']!r}: edgeseg resizes bilinearly")
            size = _shape(t.get("size", t.get("scale")))
            if size is not None and keep_ratio:  # either way round: the long and short edge bound the frame
                _set(sizes, size=size, size_rule="fit", multiple=1)
            elif size is not None:  # its order differs between MMDeploy's versions: a dynamic export needs --size
                sizes.clear()
            elif "size" in t or "scale" in t:
                problems.append(f"{path}: Resize size {t.get('size', t.get('scale'))!r} is not one or two positive "
                                "integers (left out: pass --size)")
        elif kind == "LetterResize":
            letter = True
            level = _pad_level(t.get("pad_val", 0))  # MMYOLO's default and the SDK's: 0 (its configs give 114)
            if level is None:
                problems.append(f"{path}: LetterResize pad_val {t.get('pad_val')!r} is not a number (read as 0)")
            pad_raw, pad_normalised = (0.0 if level is None else level), normalised
            for key, value, what in (("allow_scale_up", True, "frames smaller than its scale are scaled up by edgeseg"),
                                     ("use_mini_pad", False, "edgeseg pads to the whole scale"),
                                     ("stretch_only", False, "edgeseg keeps the aspect ratio")):
                if _flag(t.get(key, value)) != value:
                    problems.append(f"{path}: LetterResize {key} {t[key]!r} is not reproduced ({what})")
            size = _shape(t.get("scale", t.get("size")))
            if size is not None:  # MMYOLO's scale is (w, h)
                _set(sizes, size=ImageShape(size.width, size.height), size_rule="fixed")
        elif kind == "Pad":
            divisor, size = _int(t.get("size_divisor"), 1), _shape(t.get("size"))
            if divisor is None:
                problems.append(f"{path}: Pad size_divisor {t.get('size_divisor')!r} is not a positive integer (read as 1)")
                divisor = 1
            if "logical_or_val" in t:
                problems.append(f"{path}: a Pad with logical_or_val (CenterNet's centred padding) is not reproduced "
                                "(left out)")
                continue
            if not _flag(t.get("pad_to_square", False)) and size is None and divisor == 1:
                continue  # pads nothing
            padded = True
            if _flag(t.get("pad_to_square", False)):
                problems.append(f"{path}: Pad pad_to_square is not reproduced (left out: pass --size)")
            elif size is not None and not letter:
                _set(sizes, size=size, size_rule="fixed")
            elif divisor > 1 and sizes.get("size_rule") == "fit":
                sizes["multiple"] = divisor
            level = _pad_level(t.get("pad_val", 0))
            if level is None:
                problems.append(f"{path}: Pad pad_val {t.get('pad_val')!r} is not a number (read as 0)")
                level = 0.0
            if pad_raw is None:  # the first pad makes the canvas; a later size_divisor one finds it divisible
                pad_raw, pad_normalised = level, normalised
        elif kind == "Normalize":
            m, s = _numbers(t.get("mean"), 3), _numbers(t.get("std"), 3)
            if m is None or s is None or min(s) <= 0:
                problems.append(f"{path}: Normalize mean {t.get('mean')!r} / std {t.get('std')!r} are not three "
                                "numbers each (left out)")
            else:
                mean, std = m, s
            to_rgb, normalised = _flag(t.get("to_rgb", True)), True
        else:
            problems.append(f"{path}: transform {kind!r} is not reproduced by edgeseg (left out)")
    color = "RGB" if to_rgb else "BGR"
    out: dict = {"color": color, "mean": mean, "std": std, "scale": 1.0}
    if letter:
        out.update(resize="letterbox", anchor="center")
    elif keep_ratio and padded:
        out.update(resize="letterbox", anchor="top-left")
    else:
        out["resize"] = "resize"
    if out["resize"] == "letterbox":
        level = 0.0 if pad_raw is None else pad_raw
        # a pad after Normalize holds level * std + mean in pixels, per channel of the model's order
        pixel = [level * s + m for m, s in zip(mean, std)] if pad_normalised else [level] * 3
        out["pad_value"] = pad_levels(pixel, color)
    return out


def mmdeploy_config(onnx_path: str | os.PathLike) -> MMDeployConfig | None:
    """The pre-processing of the MMDeploy work directory ``onnx_path`` lies in (module doc); None when its
    folder holds no ``pipeline.json``, or a ``deploy.json`` that names another model file."""
    folder = Path(onnx_path).parent
    pipe_path, deploy_path = folder / "pipeline.json", folder / "deploy.json"
    if not pipe_path.is_file():
        return None
    problems: list[str] = []
    deploy = _read(deploy_path, problems)
    models = deploy.get("models") if isinstance(deploy, dict) else None
    # a TensorRT, OpenVINO or ncnn work directory names its engine (end2end.engine/.xml/.param) beside end2end.onnx
    stems = {Path(m["net"]).stem for m in models if isinstance(m, dict) and isinstance(m.get("net"), str)} \
        if isinstance(models, list) else set()
    if stems and Path(onnx_path).stem not in stems:
        return None  # the work directory of another model file
    pipeline = _read(pipe_path, problems)
    if pipeline is None:
        return MMDeployConfig(files=(), problems=tuple(problems))
    transforms = _transforms(pipeline)
    if transforms is None:
        problems.append(f"{pipe_path}: no Transform task with a transforms list: not MMDeploy's SDK pipeline (left out)")
        return MMDeployConfig(files=(str(pipe_path),), problems=tuple(problems))
    files = tuple(str(p) for p, d in ((pipe_path, pipeline), (deploy_path, deploy)) if d is not None)
    sizes: dict = {}
    fields = _input(transforms, pipe_path, problems, sizes)
    return MMDeployConfig(fields, _task(pipeline), files, tuple(problems), sizes)


__all__ = ["MMDeployConfig", "PipelineConfig", "mmdeploy_config"]
