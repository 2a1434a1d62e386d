"""What a bundle's ``manifest.json`` holds, typed: :class:`Manifest`, with its :class:`OutputSpec` and :class:`ModelFile`
entries, read and checked field by field (a :class:`~edgeseg.errors.BundleError` naming the file and the fix, never a
raw ``KeyError``), and the sha256 by which the manifest lists each file of the bundle. The bundle on disk (opening,
verifying, writing) is :mod:`edgeseg.bundle`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ..errors import BundleError, InputError
from .decoder_options import DecoderOptions, decoder_options
from .input_spec import InputSpec
from .manifest_schema import manifest_schema
from .palette import default_palette

#: the newest manifest schema this edgeseg reads and writes; a manifest is written with the oldest schema that holds
#: what it uses (:func:`~edgeseg.structures.manifest_schema.manifest_schema`)
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
TASKS = ("semantic", "instance", "panoptic", "vos")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class OutputSpec:
    """One model output. kind: ``logits`` (float ``[N, C, H, W]``), ``labels`` (uint8 ``[N, H, W]``),
    or a task-specific name the task's decoder knows. ``shape`` uses strings for dynamic axes."""

    name: str
    kind: str
    dtype: str = "float32"
    shape: tuple[int | str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OutputSpec":
        if not isinstance(d, dict):  # an audit: "outputs": ["logits"] raised AttributeError from the loader
            raise InputError(f"each 'outputs' entry must be an object with a 'name' and a 'kind', got {d!r}",
                             fix='e.g. "outputs": [{"name": "logits", "kind": "logits"}]')
        shape = d.get("shape", ())
        if not isinstance(shape, (list, tuple)) or not all(
                isinstance(v, str) and v or isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape):
            raise InputError(f"output {d.get('name')!r}: shape must list sizes (whole numbers) or axis names, got "
                             f"{shape!r}", fix='e.g. "shape": ["batch", 19, 320, 640]')
        return cls(d["name"], d["kind"], d.get("dtype", "float32"), tuple(shape))


@dataclass(frozen=True)
class ModelFile:
    """A model file in the bundle. ``target`` tells INT8 variants apart (tensorrt, cpu, openvino)."""

    file: str
    precision: str = "fp32"
    target: str | None = None
    opset: int | None = None
    #: the float model's weights when they are half precision (``float16``, ``bfloat16``: a ``half=True``
    #: export imported as it is); None for float32. Its precision stays ``fp32``: the float model of the bundle
    weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "precision": self.precision, "target": self.target, "opset": self.opset,
                **({"weights": self.weights} if self.weights else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = MANIFEST) -> "ModelFile":
        if not isinstance(d, dict):
            raise BundleError(f"{where}: each 'models' entry must be an object with a 'file', got {d!r}")
        if d.get("precision", "fp32") not in PRECISIONS:
            raise BundleError(f"{where}: model {d.get('file')!r} has unknown precision {d.get('precision')!r} (this "
                              f"edgeseg reads {', '.join(PRECISIONS)})",
                              fix="a bundle made by a newer edgeseg: upgrade edgeseg; else correct the entry")
        target = d.get("target")
        if target is not None and not isinstance(target, str):
            raise BundleError(f"{where}: model {d.get('file')!r} has a non-string target {target!r}")
        weights = d.get("weights")
        if weights not in (None, "float16", "bfloat16"):
            raise BundleError(f"{where}: model {d.get('file')!r} has unknown weights {weights!r} (float16, bfloat16 or none)",
                              fix="a bundle made by a newer edgeseg: upgrade edgeseg; else correct the entry")
        return cls(check_relpath(d["file"], "models", where), d.get("precision", "fp32"), target, d.get("opset"), weights)


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds, typed."""

    name: str
    task: str
    classes: tuple[str, ...]
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    models: tuple[ModelFile, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    decoder: dict[str, Any] = field(default_factory=dict)  # task decoder options (thresholds, void id, ...)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the schema the manifest was read with (written: :func:`manifest_schema`, from what it uses)
    schema_version: int = field(default=SCHEMA_VERSION, compare=False)
    #: top-level fields this edgeseg does not know (a newer one's, a user's own): kept when the manifest is rewritten
    extra: dict[str, Any] = field(default_factory=dict)
    decoder_options: DecoderOptions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BundleError(f"unknown task {self.task!r}", fix=f"use one of {', '.join(TASKS)}")
        try:  # typed and validated once: decoders read manifest.decoder_options, never loose keys
            object.__setattr__(self, "decoder_options", decoder_options(self.task, self.decoder))
        except InputError as e:
            text = e.args[0].splitlines()[0]
            raise BundleError(f"manifest of {self.name!r}: {text}", fix=_newer_fix(self.provenance, e.fix, text)) from None
        if not self.palette:  # VOC's, whose first colour is black: an instance or panoptic model's first class
            skip = 0 if self.task == "semantic" else 1  # (COCO's person, a city's road) was drawn black
            colours = default_palette(len(self.classes) + skip)[skip:]
            object.__setattr__(self, "palette", tuple(map(tuple, colours.tolist())))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def palette_array(self) -> np.ndarray:
        return np.asarray(self.palette, np.uint8).reshape(-1, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "schema_version": manifest_schema(self.task, self.input.to_dict(), self.decoder),
            "name": self.name,
            "task": self.task,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "input": self.input.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "models": [m.to_dict() for m in self.models],
            "decoder": self.decoder,
            "files": dict(sorted(self.files.items())),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = MANIFEST) -> "Manifest":
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected a JSON object at the top level")
        version = d.get("schema_version")
        if isinstance(version, bool) or version not in range(1, SCHEMA_VERSION + 1):
            if isinstance(version, str) and version.strip().isdigit() and 1 <= int(version) <= SCHEMA_VERSION:
                raise BundleError(f"{where}: schema_version is the string {version!r}; it must be the number "
                                  f"{version.strip()}", fix=f'write "schema_version": {version.strip()} (no quotes)')
            raise BundleError(
                f"{where}: unknown schema_version {version!r} (this edgeseg {_version()} reads 1 to {SCHEMA_VERSION})",
                fix=_newer_fix(d.get("provenance"), "re-export the bundle with this edgeseg version", "unknown schema"),
            )
        try:
            return cls(
                name=str(d["name"]),
                task=str(d["task"]),
                classes=tuple(str(c) for c in _list(d, "classes", where)),
                input=InputSpec.from_dict(d["input"]),
                outputs=tuple(OutputSpec.from_dict(o) for o in _list(d, "outputs", where)),
                models=tuple(ModelFile.from_dict(m, where) for m in _list(d, "models", where, [])),
                palette=_palette(d.get("palette", []), where),
                decoder=dict(d.get("decoder", {})),
                files=_files(d.get("files", {}), where),
                provenance=dict(d.get("provenance", {})),
                schema_version=int(version),
                extra={k: v for k, v in d.items() if k not in _MANIFEST_FIELDS},
            )
        except KeyError as e:
            raise BundleError(f"{where}: missing field {e.args[0]!r}") from None
        except InputError as e:  # its fix kept as the fix (it was folded into the message)
            text = str(e.args[0]).split(chr(10) + '  fix: ')[0]
            raise BundleError(f"{where}: invalid content: {text}", fix=_newer_fix(d.get("provenance"), e.fix, text)) from None
        except BundleError as e:  # a check of the whole manifest (Manifest.__post_init__): named as the file
            if str(where) in str(e):
                raise
            raise BundleError(f"{where}: {str(e.args[0]).split(chr(10) + '  fix: ')[0]}", fix=e.fix) from None
        except (TypeError, ValueError) as e:
            raise BundleError(f"{where}: invalid content: {e}") from None


def _newer_fix(provenance: Any, fix: str | None, text: str = "") -> str | None:
    """The fix of a manifest this edgeseg does not read. Made by a newer edgeseg (its provenance says so): the
    upgrade, whatever the field or value (a later option spelled like a known one is not a typo); editing the
    manifest by hand would change what the bundle does. Made by this or an older one: ``fix``. Not said: for an
    unknown field that is no close name of a known one (``text``), the upgrade if a newer edgeseg made it."""
    made = provenance.get("edgeseg_version") if isinstance(provenance, dict) else None
    upgrade = (f"upgrade edgeseg (pip install -U edgeseg; this is {_version()}); editing the manifest by hand would "
               "change what the bundle does" + (f". Else: {fix}" if fix else ""))
    if isinstance(made, str) and _version_key(made) > _version_key(_version()):
        return f"the bundle was made by edgeseg {made}: {upgrade}"
    if isinstance(made, str) or "did you mean" in text or not text.startswith("unknown"):
        return fix
    return f"if a newer edgeseg made the bundle (its manifest does not say which): {upgrade}"


def _version_key(v: str) -> tuple[int, ...]:
    import re

    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


_MANIFEST_FIELDS = ("schema_version", "name", "task", "classes", "palette", "input", "outputs", "models", "decoder",
                    "files", "provenance")


def check_relpath(rel: Any, section: str, where: str = MANIFEST) -> str:
    """``rel`` if it is a path inside the bundle (relative, no ``..``), else a :class:`BundleError`
    naming the manifest section and the entry. Both ``/`` and ``\\`` count as separators."""
    if not isinstance(rel, str) or not rel.strip():
        raise BundleError(f"{where}: {section} entry {rel!r} is not a file name")
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive \
            or rel.startswith(("/", "\\")) or ".." in parts:
        raise BundleError(
            f"{where}: {section} entry {rel!r} points outside the bundle (absolute or with '..')",
            fix="bundle files are named relative to the bundle folder, e.g. 'model.onnx'; re-create the bundle",
        )
    return rel


def _list(d: dict[str, Any], key: str, where: str, default: Any = KeyError) -> list:
    if key not in d and default is not KeyError:
        return default
    v = d[key]  # KeyError -> "missing field" in Manifest.from_dict
    if not isinstance(v, list):
        raise BundleError(f"{where}: {key!r} must be a JSON list, got {type(v).__name__}")
    return v


def _palette(palette: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    """The manifest's palette: RGB triples of 0..255 (before, ``[[1, 2]]`` or ``300`` passed ``info`` and raised a
    traceback when an overlay was drawn)."""
    import numbers

    if not isinstance(palette, (list, tuple)) or not all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
            for c in palette):
        raise BundleError(f"{where}: 'palette' must be a list of [R, G, B] colours of integers 0..255, got "
                          f"{str(palette)[:80]}", fix="correct it, or remove 'palette' (edgeseg then picks colours)")
    return tuple((int(c[0]), int(c[1]), int(c[2])) for c in palette)


def _files(files: Any, where: str) -> dict[str, str]:
    if not isinstance(files, dict):
        raise BundleError(f"{where}: 'files' must be an object mapping file name -> sha256, got {type(files).__name__}",
                          fix="re-create the bundle with 'edgeseg export' or 'edgeseg import'")
    out = {}
    for rel, digest in files.items():
        check_relpath(rel, "files", where)
        if not isinstance(digest, str):
            raise BundleError(f"{where}: files entry {rel!r} has a non-string sha256 {digest!r}")
        out[rel] = digest
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version() -> str:
    from .. import __version__

    return __version__
