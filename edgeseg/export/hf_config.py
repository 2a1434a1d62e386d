"""What a Hugging Face export says about its model, read from the files beside the ONNX file.

``optimum-cli export onnx`` (and ``model.save_pretrained`` + ``torch.onnx.export`` into the same
folder) leaves ``config.json`` (``id2label``: the class names) and ``preprocessor_config.json`` (the
image processor: ``image_mean``, ``image_std``, ``rescale_factor``, ``do_rescale``, ``do_normalize``,
``size``) next to ``model.onnx``. ``edgeseg import`` takes the names and the pre-processing from them
when the command line does not give them (each option given replaces its own field), so a SegFormer,
MaskFormer or Mask2Former export imports without ``--classes`` or ``--mean``/``--std``.

Only the fields above are read; a processor that pads or resizes by its shortest edge gives no size
(``--size`` then, or the model's own fixed size). What cannot be read is never fatal by itself: a field
that is not what transformers writes is left out with a warning (``problems``); a ``config.json`` that is
not JSON, or an ``id2label`` that does not number its classes ``0..n-1``, is an error (``names_error``)
only when the import needs the names from it (a semantic or panoptic import without ``--classes``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..structures import ImageShape


@dataclass(frozen=True)
class HFConfig:
    """``names``: the classes by index (None without a usable ``id2label``); ``input``: :class:`InputSpec`
    fields (``mean``, ``std``, ``scale``, ``size``) the processor fixes; ``files``: what was read;
    ``problems``: fields and files left out, and why; ``names_error``: why ``id2label`` gave no names."""

    names: tuple[str, ...] | None = None
    input: dict = field(default_factory=dict)
    model_type: str | None = None
    files: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    names_error: str | None = None


def _read(path: Path, problems: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows' Notepad) read, not refused
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested 100000 deep
        problems.append(f"{path}: not a readable JSON file ({e})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: a JSON object was expected, got {type(data).__name__}")
        return None
    return data


def _names(cfg: dict, path: Path) -> tuple[tuple[str, ...] | None, str | None]:
    id2label = cfg.get("id2label")
    if id2label is None:
        return None, None
    if isinstance(id2label, list):  # some exporters write the names as a list
        pairs = list(enumerate(str(v) for v in id2label))
    else:
        try:
            pairs = sorted((int(k), str(v)) for k, v in dict(id2label).items())
        except (TypeError, ValueError):
            pairs = []
    if not pairs or [k for k, _ in pairs] != list(range(len(pairs))) or not all(v.strip() for _, v in pairs):
        return None, f"{path}: id2label does not name classes 0..n-1 ({str(id2label)[:200]})"
    return tuple(v for _, v in pairs), None


def _flag(pre: dict, key: str, default: bool, path: Path, problems: list[str]) -> bool:
    v = pre.get(key, default)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    problems.append(f"{path}: {key} is {v!r}, not true or false (read as {str(default).lower()})")
    return default


def _triple(value) -> tuple[float, float, float] | None:
    vals = value if isinstance(value, (list, tuple)) else [value]
    try:
        vals = [float(v) for v in vals]
    except (TypeError, ValueError):
        return None
    if len(vals) == 1:
        vals = vals * 3
    return tuple(vals) if len(vals) == 3 and all(math.isfinite(v) for v in vals) else None  # type: ignore[return-value]


def _input(pre: dict, path: Path, problems: list[str]) -> dict:
    out: dict = {}
    if _flag(pre, "do_normalize", True, path, problems):
        for key, field_name in (("image_mean", "mean"), ("image_std", "std")):
            if key in pre:
                vals = _triple(pre[key])
                if vals is None or (field_name == "std" and min(vals) <= 0):
                    problems.append(f"{path}: {key} {pre[key]!r} is not one or three numbers (left out)")
                else:
                    out[field_name] = vals
    else:
        out["mean"], out["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if _flag(pre, "do_rescale", True, path, problems):
        factor = pre.get("rescale_factor", 1 / 255)
        if isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 0 and math.isfinite(factor):
            out["scale"] = float(factor)
        else:
            problems.append(f"{path}: rescale_factor {factor!r} is not a positive number (left out)")
    else:
        out["scale"] = 1.0
    size = pre.get("size") if _flag(pre, "do_resize", True, path, problems) else None
    if isinstance(size, int) and not isinstance(size, bool):  # older feature extractors: "size": 512, a square
        size = {"height": size, "width": size}
    if isinstance(size, dict) and {"height", "width"} <= set(size):
        try:
            out["size"] = ImageShape(int(size["height"]), int(size["width"]))
        except (TypeError, ValueError, InputError):
            problems.append(f"{path}: size {size!r} is not two positive integers (left out)")
    elif size is not None:  # shortest_edge / longest_edge: a resize edgeseg does not reproduce
        problems.append(f"{path}: size {size!r} is not a fixed height and width; give the network size with --size")
    return out


def huggingface_config(onnx_path: str | os.PathLike) -> HFConfig | None:
    """The names and pre-processing of the Hugging Face export ``onnx_path`` belongs to, from the
    ``config.json`` and ``preprocessor_config.json`` in its folder (module doc); None when neither exists."""
    folder = Path(onnx_path).parent
    cfg_path, pre_path = folder / "config.json", folder / "preprocessor_config.json"
    if not cfg_path.is_file() and not pre_path.is_file():
        return None
    problems: list[str] = []
    cfg, pre = _read(cfg_path, problems), _read(pre_path, problems)
    names, names_error = _names(cfg, cfg_path) if cfg is not None else (None, None)
    if cfg is None and cfg_path.is_file():  # its reason is the names' error, not a warning of its own
        names_error = problems.pop(0)
    model_type = cfg.get("model_type") if cfg is not None and isinstance(cfg.get("model_type"), str) else None
    files = tuple(str(p) for p, d in ((cfg_path, cfg), (pre_path, pre)) if d is not None)
    return HFConfig(names, _input(pre, pre_path, problems) if pre is not None else {}, model_type, files,
                    tuple(problems), names_error)


__all__ = ["HFConfig", "huggingface_config"]
