"""A DeepStream ``nvinfer`` configuration file, read: the model, its classes and its pre-processing.

DeepStream users keep what a segmentation model needs in the ``[property]`` group of the ``config_infer_*.txt``
their ``nvinfer`` element loads (Gst-nvinfer's "File Configuration Specifications"); ``edgeseg import
config_infer_primary.txt --out seg.edgeseg`` reads it:

* ``onnx-file`` (the model; paths are relative to the file's folder, as nvinfer resolves them), ``labelfile-path``
  (one name per line; the older one-line ``a;b;c`` form too), ``network-type`` (2 semantic segmentation,
  3 instance segmentation; detectors and classifiers are refused).
* ``y = net-scale-factor * (x - offsets[c])``: :class:`InputSpec` ``scale = 1``, ``mean = offsets``,
  ``std = 1 / net-scale-factor``; ``model-color-format`` 0 RGB, 1 BGR (2, grey, is refused: edgeseg feeds three
  channels); ``network-input-order`` 0 NCHW, 1 NHWC; ``infer-dims`` (or the older ``input-dims``) ``C;H;W`` (the
  size when the ONNX input is dynamic). Keys are read as GKeyFile reads them: integers up to the first space
  (``network-type=2 # segmentation``), ``true``/``false`` booleans, indented lines.
* ``maintain-aspect-ratio=1``: a letterbox, black padding, at the top-left corner (padding right and bottom) unless
  ``symmetric-padding=1`` centres it. nvinfer truncates the scaled size where edgeseg rounds it: at most one
  pixel of difference along the shorter side.

Not reproduced, and named in a warning (``problems``): ``mean-file``, a non-zero ``segmentation-threshold``,
``process-mode=2`` (object crops), custom parsers, and ``scaling-filter``: nvinfer scales
with nearest-neighbour sampling unless it is set, edgeseg bilinearly (``scaling-filter=1`` in DeepStream gives the
frames edgeseg feeds). A file that is not a key file with a ``[property]`` group, or names no ONNX model (an engine,
UFF, Caffe or TAO file only), is an :class:`InputError` naming what is missing.

The YAML form (``config_infer_primary.yml``; the parser, ``gstnvinfer_yaml_parser``, is in the newer DeepStream
releases' sources, dated 2022) holds the same keys in a ``property:`` mapping; nvinfer picks it by the ``.yml`` /
``.yaml`` suffix (edgeseg also takes ``.YML``). DeepStream's parser reads ``offsets``, ``infer-dims`` and
``output-blob-names`` as ``;``-separated strings and the 0/1 switches as integers; edgeseg reads those, and is
lenient beyond them (a YAML list for a ``;`` list, ``true``/``false`` for 1/0: said in ``problems``, as nvinfer
would refuse the file), so the model imports either way.
"""
from __future__ import annotations

import configparser
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..structures import ImageShape

#: nvinfer's network-type values edgeseg imports
TASKS = {2: "semantic", 3: "instance"}
_OTHER_TYPES = {0: "a detector", 1: "a classifier", 100: "a network whose outputs nvinfer leaves to the application"}
#: model keys nvinfer reads besides onnx-file: what the error names
_NON_ONNX = ("model-engine-file", "tlt-encoded-model", "uff-file", "model-file", "proto-file", "custom-network-config")


@dataclass(frozen=True)
class NvinferConfig:
    """``onnx``: the model file; ``task``: edgeseg's task; ``names``: from the label file (None without one);
    ``input``: :class:`InputSpec` fields; ``size``: ``infer-dims``' height and width (None without it);
    ``layout``; ``files``: what was read; ``problems``: what is not reproduced, and why."""

    path: Path
    onnx: Path
    task: str
    names: tuple[str, ...] | None = None
    input: dict = field(default_factory=dict)
    size: ImageShape | None = None
    layout: str = "NCHW"
    files: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def _parser(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#",),
                                   inline_comment_prefixes=None, delimiters=("=",))
    cp.optionxform = str  # keys keep their case
    try:  # GKeyFile strips each line's leading whitespace (configparser would join an indented line to the last key)
        text = "\n".join(ln.lstrip() for ln in path.read_text(encoding="utf-8-sig", errors="replace").splitlines())
        cp.read_string(text, source=str(path))
    except (OSError, configparser.Error) as e:
        raise InputError(f"{path}: not a DeepStream nvinfer configuration file ({str(e).splitlines()[0][:200]})",
                         fix="give the config_infer_*.txt with a [property] group, or the .onnx model itself") from None
    return cp


#: suffixes nvinfer reads as YAML (``gst_nvinfer_parse_config_file_yaml``); any other is a key file
YAML_SUFFIXES = (".yml", ".yaml")


def _yaml_scalar(value) -> str:
    """A YAML value as the key file would spell it: booleans 1/0, numbers as written, lists joined by ``;``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ";".join(_yaml_scalar(v) for v in value)
    if isinstance(value, dict):
        return ""  # no nvinfer property is a mapping; an empty value reads as the key's default
    return str(value)


def _load_yaml(path: Path):
    """The YAML document of ``path`` (a UTF-8 byte-order mark is dropped), or an :class:`InputError`."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is one of edgeseg's dependencies
        raise InputError(f"{path}: reading a YAML nvinfer configuration needs PyYAML",
                         fix="pip install pyyaml, or give the config_infer_*.txt form") from None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig", errors="replace"))
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: not a DeepStream nvinfer configuration file ({str(e).splitlines()[0][:200]})",
                         fix="give the config_infer_*.yml with a property: mapping, or the .onnx model "
                             "itself") from None


def _yaml_property(path: Path, problems: list[str] | None = None) -> dict[str, str] | None:
    """The ``property`` mapping of a YAML nvinfer configuration, values spelled as in the key file; None without
    one. Values nvinfer's own YAML parser would refuse (a list, a boolean) are named in ``problems``."""
    data = _load_yaml(path)
    prop = data.get("property") if isinstance(data, dict) else None
    if not isinstance(prop, dict):
        return None
    lenient = [f"{k}: {v!r}" for k, v in prop.items() if isinstance(v, (bool, list, tuple))]
    if lenient and problems is not None:
        problems.append(f"{path}: {', '.join(lenient)}: DeepStream's YAML parser takes ';'-separated strings and 0/1 "
                        "(read here as such; nvinfer itself would refuse these values)")
    return {str(k): _yaml_scalar(v) for k, v in prop.items()}


def looks_like_nvinfer_config(path: str | os.PathLike) -> bool:
    """True for a text file (not an ONNX model) whose first group is ``[property]``, or a ``.yml``/``.yaml`` file
    with a ``property:`` mapping at its top level: what ``edgeseg import`` reads as an nvinfer configuration rather
    than as a model."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() == ".onnx":
        return False
    try:
        head = p.read_bytes()[:4096]
    except OSError:
        return False
    if b"\x00" in head:  # a binary (ONNX protobuf) file, whatever its name
        return False
    if p.suffix.lower() in YAML_SUFFIXES:  # block or flow style, a byte-order mark: what YAML itself reads
        try:
            data = _load_yaml(p)
        except InputError:  # a YAML file is no ONNX model either: the nvinfer reader says what is wrong with it
            return True
        return isinstance(data, dict) and isinstance(data.get("property"), dict)
    lines = [ln.strip() for ln in head.decode("utf-8-sig", "replace").splitlines()]  # a BOM: still [property]
    return next((ln for ln in lines if ln and not ln.startswith("#")), "") == "[property]"


def _int(prop, key: str, default: int, path: Path) -> int:
    """An integer key as GKeyFile's ``g_key_file_get_integer`` reads it: the leading integer, anything after a
    space ignored (``network-type=2 # segmentation``)."""
    raw = (prop.get(key) or "").strip()
    if not raw:
        return default
    head = raw.split()[0]
    try:
        return int(head)
    except ValueError:
        raise InputError(f"{path}: {key}={raw!r} is not an integer", fix=f"e.g. {key}={default}") from None


def _bool(prop, key: str, path: Path) -> bool:
    """A boolean key as ``g_key_file_get_boolean`` reads it (``true``/``false``, ``1``/``0``)."""
    raw = (prop.get(key) or "").strip()
    if not raw:
        return False
    head = raw.split()[0].lower()
    if head in ("true", "1"):
        return True
    if head in ("false", "0"):
        return False
    raise InputError(f"{path}: {key}={raw!r} is neither true nor false", fix=f"{key}=1 or {key}=0")


def _number(prop, key: str, default: float, path: Path) -> float:
    raw = prop.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        v = float(raw.strip().rstrip(";"))
    except ValueError:
        raise InputError(f"{path}: {key}={raw!r} is not a number", fix=f"e.g. {key}={default:g}") from None
    if not math.isfinite(v):
        raise InputError(f"{path}: {key}={raw!r} is not a finite number", fix=f"e.g. {key}={default:g}")
    return v


def _list(raw: str | None) -> list[str]:
    return [v.strip() for v in (raw or "").split(";") if v.strip()]


def _labels(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise InputError(f"cannot read the label file {path}: {e.strerror or e}",
                         fix="fix labelfile-path, or give the names with --names") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1 and ";" in lines[0]:  # the older one-line form
        lines = [v.strip() for v in lines[0].split(";") if v.strip()]
    if not lines:
        raise InputError(f"the label file {path} names no class", fix="one class name per line, or pass --names")
    return tuple(lines)


def read_nvinfer_config(path: str | os.PathLike, read_labels: bool = True) -> NvinferConfig:
    """The model, classes and pre-processing an nvinfer configuration file gives (module doc); ``read_labels=False``:
    the label file is not read (the caller has the names)."""
    path = Path(path)
    problems: list[str] = []
    if path.suffix.lower() in YAML_SUFFIXES:
        prop = _yaml_property(path, problems)
        if prop is None:
            raise InputError(f"{path}: no property: mapping at the top level: not a DeepStream nvinfer configuration "
                             "file", fix="give the config_infer_*.yml that nvinfer's config-file-path names, or the "
                                         ".onnx model")
    else:
        cp = _parser(path)
        if not cp.has_section("property"):
            raise InputError(f"{path}: no [property] group: not a DeepStream nvinfer configuration file",
                             fix="give the config_infer_*.txt that nvinfer's config-file-path names, or the .onnx "
                                 "model")
        prop = cp["property"]
    folder = path.parent
    onnx_name = (prop.get("onnx-file") or "").strip()
    if not onnx_name:
        others = [k for k in _NON_ONNX if (prop.get(k) or "").strip()]
        raise InputError(f"{path}: names no onnx-file" + (f" (only {', '.join(others)})" if others else ""),
                         fix="export the model to ONNX and add onnx-file=MODEL.onnx (an engine cannot be imported)")
    onnx = (folder / onnx_name) if not Path(onnx_name).is_absolute() else Path(onnx_name)
    if not onnx.is_file():  # (before the labels: its absence was reported as "--classes is required")
        raise InputError(f"{path}: onnx-file={onnx_name} names {onnx}, which does not exist",
                         fix="fix onnx-file (relative paths are from the configuration file's folder)")
    kind = _int(prop, "network-type", 1 if _bool(prop, "is-classifier", path) else 0, path)
    if kind not in TASKS:
        what = _OTHER_TYPES.get(kind, f"network-type {kind}")
        raise InputError(f"{path}: network-type={kind} is {what}, not a segmentation model",
                         fix="edgeseg imports network-type=2 (semantic segmentation) and 3 (instance segmentation)")
    color = _int(prop, "model-color-format", 0, path)
    if color not in (0, 1):
        raise InputError(f"{path}: model-color-format={color} (grey): edgeseg feeds three colour channels",
                         fix="use a model that takes RGB (0) or BGR (1) input")
    scale = _number(prop, "net-scale-factor", 1.0, path)
    if scale <= 0:
        raise InputError(f"{path}: net-scale-factor={scale:g} must be positive", fix="e.g. net-scale-factor=0.0039215697")
    try:
        offsets = [float(v) for v in _list(prop.get("offsets"))] or [0.0, 0.0, 0.0]
    except ValueError:
        raise InputError(f"{path}: offsets={prop.get('offsets')!r} are not numbers",
                         fix="three means separated by ';', e.g. offsets=123.675;116.28;103.53") from None
    if not all(math.isfinite(v) and abs(v) < 1e6 for v in offsets):  # nan was blamed on --mean, 1e300 on the model
        raise InputError(f"{path}: offsets={prop.get('offsets')!r} are not pixel means",
                         fix="three means in 0..255 units separated by ';', e.g. offsets=123.675;116.28;103.53")
    if len(offsets) == 1:
        offsets *= 3
    if len(offsets) != 3:
        raise InputError(f"{path}: offsets={prop.get('offsets')!r} gives {len(offsets)} values, not 3",
                         fix="one mean per colour channel, separated by ';'")
    dims = _list(prop.get("infer-dims")) or _list(prop.get("input-dims"))
    size, order = None, _int(prop, "network-input-order", 0, path)
    if dims:
        try:
            c, h, w, *_ = (int(float(v)) for v in dims)
        except (ValueError, OverflowError):  # inf, 1e400
            raise InputError(f"{path}: infer-dims={';'.join(dims)!r} is not C;H;W", fix="e.g. infer-dims=3;544;960") from None
        if h < 1 or w < 1 or c not in (1, 3):
            raise InputError(f"{path}: infer-dims={';'.join(dims)!r} is not C;H;W", fix="e.g. infer-dims=3;544;960")
        size = ImageShape(h, w)  # (input-dims' fourth field orders a UFF model's input only)
    if order not in (0, 1):
        raise InputError(f"{path}: network-input-order={order} is neither 0 (NCHW) nor 1 (NHWC)", fix="0 or 1")
    # y = nsf * (x - offset) = (x * 1 - offset) / (1 / nsf): the offsets stay in 0-255 units
    fields: dict = {"color": "RGB" if color == 0 else "BGR", "scale": 1.0, "mean": tuple(offsets),
                    "std": (1.0 / scale,) * 3}
    if _bool(prop, "maintain-aspect-ratio", path):
        fields.update(resize="letterbox", pad_value=0,
                      anchor="center" if _bool(prop, "symmetric-padding", path) else "top-left")
    else:
        fields["resize"] = "resize"
    if (prop.get("mean-file") or "").strip():
        problems.append(f"{path}: mean-file is not reproduced (offsets are): subtract its mean with offsets instead")
    if _number(prop, "segmentation-threshold", 0.0, path) > 0:
        problems.append(f"{path}: segmentation-threshold={prop.get('segmentation-threshold')} is not reproduced "
                        "(edgeseg labels every pixel with its most likely class)")
    filt = (prop.get("scaling-filter") or "").strip()
    if _int(prop, "scaling-filter", -1, path) != 1:
        problems.append(f"{path}: nvinfer scales frames " + (f"with scaling-filter={filt}" if filt else
                        "with its default filter (nearest-neighbour)") + "; edgeseg resizes bilinearly: set "
                        "scaling-filter=1 in DeepStream for the same network input")
    if _int(prop, "process-mode", 1, path) == 2:
        problems.append(f"{path}: process-mode=2 runs the model on object crops; edgeseg runs it on whole frames")
    for key in ("custom-lib-path", "parse-bbox-instance-mask-func-name"):
        if (prop.get(key) or "").strip():
            problems.append(f"{path}: {key}={prop.get(key).strip()} is not used (edgeseg recognises the outputs "
                            "from their shapes and decodes them itself)")
    names, files = None, [str(path)]
    label_file = (prop.get("labelfile-path") or "").strip()
    if label_file and read_labels:
        lp = (folder / label_file) if not Path(label_file).is_absolute() else Path(label_file)
        names = _labels(lp)
        files.append(str(lp))
    count = prop.get("num-detected-classes")
    if names is not None and count and count.strip().isdigit() and int(count) != len(names):
        problems.append(f"{path}: num-detected-classes={count.strip()} but {label_file} names {len(names)} classes "
                        "(the label file's names are used)")
    return NvinferConfig(path, onnx, TASKS[kind], names, fields, size, "NHWC" if order == 1 else "NCHW",
                         tuple(files), tuple(problems))


__all__ = ["NvinferConfig", "TASKS", "YAML_SUFFIXES", "looks_like_nvinfer_config", "read_nvinfer_config"]
