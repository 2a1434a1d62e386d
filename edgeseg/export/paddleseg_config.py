"""What a PaddleSeg export says about its model's pre-processing, read from the ``deploy.yaml`` beside the ONNX file.

PaddleSeg's ``tools/export.py`` writes ``deploy.yaml`` (``Deploy: {model, params, transforms}``) next to the
inference model; ``paddle2onnx`` turns the model into ONNX in the same folder (PP-LiteSeg, PP-HumanSeg,
PP-MobileSeg: the edge models of that family). Its predictor reads each frame with OpenCV and converts it to RGB
(``Compose(to_rgb=True)``), then runs the transforms as ``paddleseg/transforms`` does:

* ``Resize``: ``target_size`` ``[w, h]``, a stretch (``interp: LINEAR``, OpenCV's bilinear).
* ``ResizeByLong``: the long side to ``long_size``, the aspect kept: ``size_rule="fit"`` with both sides
  ``long_size`` for a dynamic export (its sizes are rounded half to even, edgeseg's half up: they differ
  by a pixel only where ``side * scale`` ends in exactly .5).
* ``Normalize``: ``(pixel / 255 - mean) / std``, ``mean``/``std`` in 0-1 units (default 0.5 each).

* ``Padding`` after ``ResizeByLong``: the frame at the top-left of a ``target_size`` canvas filled with
  ``im_padding_value`` (127.5: 128), as its ``copyMakeBorder`` pads the bottom and right.

A static ONNX input size wins over ``target_size``. Other transforms (``ResizeByShort``, ``LimitLong``, ...) are
named in a warning (``problems``), not reproduced. Class names are not in the file
(``--names``). A ``deploy.yaml`` without a ``Deploy`` mapping listing ``transforms`` is not PaddleSeg's: None.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..structures import ImageShape, pad_levels
from .mmdeploy_config import PipelineConfig, _numbers

#: PaddleSeg's Normalize defaults
_HALF = (0.5, 0.5, 0.5)


def _positive_ints(value, n: int) -> tuple[int, ...] | None:
    vals = _numbers(value, n)
    return tuple(int(v) for v in vals) if vals and all(v >= 1 and v.is_integer() for v in vals) else None


def _read_yaml(path: Path, problems: list[str]) -> dict | None:
    try:
        import yaml
    except ImportError:
        problems.append(f"{path}: PyYAML is not installed, so the file was not read (pip install pyyaml)")
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        problems.append(f"{path}: not a readable YAML file ({str(e).splitlines()[0][:200]})")
        return None
    return data if isinstance(data, dict) else None


def paddleseg_config(onnx_path: str | os.PathLike) -> PipelineConfig | None:
    """The pre-processing of the PaddleSeg export ``onnx_path`` lies beside (module doc); None when its folder
    holds no ``deploy.yaml``, or one that is not PaddleSeg's."""
    path = Path(onnx_path).parent / "deploy.yaml"
    if not path.is_file():
        return None
    problems: list[str] = []
    data = _read_yaml(path, problems)
    if data is None:
        return PipelineConfig(problems=tuple(problems)) if problems else None
    deploy = data.get("Deploy")
    transforms = deploy.get("transforms") if isinstance(deploy, dict) else None
    if transforms is None and isinstance(deploy, dict) and "model" in deploy:
        transforms = []  # PaddleSeg's own, with no transform: raw RGB pixels at the frame's size
    if not isinstance(transforms, list):
        return None  # a deploy.yaml of another tool
    out: dict = {"color": "RGB", "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 1.0, "resize": "resize"}
    sizes: dict = {}
    fit = normalised = False
    for t in transforms:
        kind = t.get("type") if isinstance(t, dict) else None
        if not isinstance(kind, str):
            problems.append(f"{path}: a transform without a type ({str(t)[:80]}) (left out)")
            continue
        if kind == "Resize":
            wh = _positive_ints(t.get("target_size", [512, 512]), 2)
            if wh is None:
                problems.append(f"{path}: Resize target_size {t.get('target_size')!r} is not two positive integers "
                                "(left out: pass --size)")
            else:
                sizes = {"size": ImageShape(wh[1], wh[0]), "size_rule": "fixed"}
            if str(t.get("interp", "LINEAR")).upper() != "LINEAR":
                problems.append(f"{path}: Resize interp {t['interp']!r}: edgeseg resizes bilinearly (LINEAR)")
            if t.get("keep_ratio"):
                problems.append(f"{path}: Resize keep_ratio is not reproduced (the frame is stretched)")
        elif kind == "ResizeByLong":
            side = _positive_ints(t.get("long_size"), 1)
            if side is None:
                problems.append(f"{path}: ResizeByLong long_size {t.get('long_size')!r} is not a positive integer "
                                "(left out: pass --size)")
            else:
                sizes, fit = {"size": ImageShape(side[0], side[0]), "size_rule": "fit", "multiple": 1}, True
                out.update(resize="letterbox", anchor="top-left")
        elif kind == "Padding" and fit:  # after ResizeByLong: the frame at the top-left of a fixed canvas
            wh = _positive_ints(t.get("target_size"), 2) or (_positive_ints(t.get("target_size"), 1) or (0,)) * 2
            level = _numbers(t.get("im_padding_value", 127.5))
            if min(wh) < 1 or level is None or len(level) not in (1, 3):
                problems.append(f"{path}: Padding {t!r} is not a target size and padding value (left out)")
                continue
            level = level * 3 if len(level) == 1 else level
            if normalised:  # a pad after Normalize is in its units
                level = tuple((v * s + m) * 255 for v, m, s in zip(level, out["mean"], out["std"]))
            sizes = {"size": ImageShape(wh[1], wh[0]), "size_rule": "fixed"}
            out.update(pad_value=pad_levels(level))
        elif kind == "Normalize":  # one value or three
            mean, std = (_numbers(t.get(k, _HALF)) for k in ("mean", "std"))
            mean, std = ((v * 3 if v is not None and len(v) == 1 else v) for v in (mean, std))
            if mean is None or std is None or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                problems.append(f"{path}: Normalize mean {t.get('mean')!r} / std {t.get('std')!r} are not three "
                                "numbers each (left out)")
            else:
                out.update(mean=mean, std=std, scale=1.0 / 255.0)
                normalised = True
        else:
            problems.append(f"{path}: transform {kind!r} is not reproduced by edgeseg (left out)")
    return PipelineConfig(out, "semantic", (str(path),), tuple(problems), sizes)


__all__ = ["paddleseg_config"]
