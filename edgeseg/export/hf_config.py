"""What a Hugging Face export says about its model, read from the files beside the ONNX file.

``optimum-cli export onnx`` (and ``model.save_pretrained`` + ``torch.onnx.export`` into the same
folder) leaves ``config.json`` (``id2label``: the class names) and ``preprocessor_config.json`` (the
image processor: ``image_mean``, ``image_std``, ``rescale_factor``, ``do_rescale``, ``do_normalize``,
``size``) next to ``model.onnx``. ``edgeseg import`` takes the names and the pre-processing from them
when the command line does not give them (each option given replaces its own field), so a SegFormer,
MaskFormer or Mask2Former export imports without ``--classes`` or ``--mean``/``--std``.

Only the fields above are read; a processor that pads or resizes by its shortest edge gives no size
(``--size`` then, or the model's own fixed size). A file that is not valid JSON, or an ``id2label``
that does not number its classes ``0..n-1``, is an error naming the file (the import would otherwise
name the classes wrongly).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..structures import ImageShape


@dataclass(frozen=True)
class HFConfig:
    """``names``: the classes by index (None without ``id2label``); ``input``: :class:`InputSpec` fields
    (``mean``, ``std``, ``scale``, ``size``) the processor fixes; ``files``: what was read."""

    names: tuple[str, ...] | None = None
    input: dict = field(default_factory=dict)
    model_type: str | None = None
    files: tuple[str, ...] = ()


def _read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})",
                         fix="repair or remove it, or give --classes/--names and the pre-processing options") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a JSON object was expected, got {type(data).__name__}",
                         fix="repair or remove it, or give --classes/--names and the pre-processing options")
    return data


def _names(cfg: dict, path: Path) -> tuple[str, ...] | None:
    id2label = cfg.get("id2label")
    if id2label is None:
        return None
    try:
        pairs = sorted((int(k), str(v)) for k, v in dict(id2label).items())
    except (TypeError, ValueError):
        pairs = []
    if not pairs or [k for k, _ in pairs] != list(range(len(pairs))) or not all(v.strip() for _, v in pairs):
        raise InputError(f"{path}: id2label does not name classes 0..n-1 ({str(id2label)[:200]})",
                         fix="repair it, or give the names with --names / --classes FILE")
    return tuple(v for _, v in pairs)


def _triple(value, key: str, path: Path) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3))
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3:
        raise InputError(f"{path}: {key} must be three numbers, got {value!r}", fix=f"repair it, or give --{key[6:]}")
    return vals  # type: ignore[return-value]


def _input(pre: dict, path: Path) -> dict:
    out: dict = {}
    if pre.get("do_normalize", True):
        if "image_mean" in pre:
            out["mean"] = _triple(pre["image_mean"], "image_mean", path)
        if "image_std" in pre:
            out["std"] = _triple(pre["image_std"], "image_std", path)
    else:
        out["mean"], out["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if pre.get("do_rescale", True):
        factor = pre.get("rescale_factor", 1 / 255)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
            raise InputError(f"{path}: rescale_factor must be a positive number, got {factor!r}", fix="repair it, or give --scale")
        out["scale"] = float(factor)
    else:
        out["scale"] = 1.0
    size = pre.get("size") if pre.get("do_resize", True) else None
    if isinstance(size, dict) and {"height", "width"} <= set(size):
        try:
            out["size"] = ImageShape(int(size["height"]), int(size["width"]))
        except (TypeError, ValueError):
            pass
    return out


def huggingface_config(onnx_path: str | os.PathLike) -> HFConfig | None:
    """The names and pre-processing of the Hugging Face export ``onnx_path`` belongs to, from the
    ``config.json`` and ``preprocessor_config.json`` in its folder (module doc); None when neither exists."""
    folder = Path(onnx_path).parent
    cfg_path, pre_path = folder / "config.json", folder / "preprocessor_config.json"
    cfg, pre = _read(cfg_path), _read(pre_path)
    if cfg is None and pre is None:
        return None
    names = _names(cfg, cfg_path) if cfg is not None else None
    model_type = cfg.get("model_type") if cfg is not None and isinstance(cfg.get("model_type"), str) else None
    files = tuple(str(p) for p, d in ((cfg_path, cfg), (pre_path, pre)) if d is not None)
    return HFConfig(names, _input(pre, pre_path) if pre is not None else {}, model_type, files)


__all__ = ["HFConfig", "huggingface_config"]
