"""The bundle: one directory (or a ``.zip`` of it) that carries everything a device needs.

::

    road.edgeseg/
      manifest.json      schema, task, classes, palette, input spec, outputs, models, sha256 of files
      model.onnx         FP32, fused
      model.int8.*.onnx  Q/DQ INT8 per target profile
      calibration.json   ranges and how they were obtained
      report.json        accuracy, parity, latency, size
      engines/           TensorRT engines built on the device (cache; not hashed)

Loading verifies the schema and the sha256 of every listed file, never unpickles anything, and fails
with a :class:`~edgeseg.errors.BundleError` naming the file and the problem.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Iterator

import numpy as np

from ._io import _umask, atomic_copy_file, atomic_write_bytes, atomic_write_text, dumps_json, writable_folder
from .errors import BundleError, InputError
from .structures.decoder_options import DecoderOptions, decoder_options
from .structures.input_spec import InputSpec
from .structures.manifest_schema import manifest_schema
from .structures.palette import default_palette
from ._compat import is_relative_to, removesuffix

log = logging.getLogger("edgeseg.bundle")

#: the newest manifest schema this edgeseg reads and writes; a manifest is written with the oldest schema that holds
#: what it uses (:func:`~edgeseg.structures.manifest_schema.manifest_schema`)
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
REPORT = "report.json"
TASKS = ("semantic", "instance", "panoptic", "vos")
PRECISIONS = ("fp32", "fp16", "int8")
_UNHASHED_DIRS = ("engines",)


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


def _close_bundles(p: Path) -> list[str]:
    """Shipped names and bundles beside ``p`` spelled like it (``raod`` -> ``road``, ``road.edgesg`` ->
    ``road.edgeseg``)."""
    import difflib

    from .paths import shipped_bundle_names

    names = shipped_bundle_names() if len(p.parts) == 1 else []
    try:
        folder = p.parent if str(p.parent) else Path(".")
        here = [c.name for c in folder.iterdir() if c.suffix.lower() in (".edgeseg", ".zip")][:500]
    except OSError:
        here = []
    found = difflib.get_close_matches(p.name, names + here, n=2, cutoff=0.75)
    return [n if n in names or len(p.parts) == 1 else str(p.parent / n) for n in found]


def _starts_like_a_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


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


#: report.json sections that are JSON objects when edgeseg writes them
REPORT_OBJECTS = ("parity", "accuracy", "int8", "training", "import", "fuse")


class _CacheUnwritable(BundleError):
    """The bundle cache takes no new folder (a read-only home or file system)."""


class Bundle:
    """A bundle on disk. Open with :meth:`open` (verifies) or make one with :meth:`create`."""

    def __init__(self, root: Path, manifest: Manifest, source: Path | None = None):
        self.root = Path(root)
        self.manifest = manifest
        self.source = source or self.root  # the .zip it came from, if any
        self._loaded = manifest  # as on disk when read or last written: what other writers are told apart from

    # ---- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path_or_name: str | os.PathLike, verify: bool = True) -> "Bundle":
        """Open a bundle directory, a ``.zip`` of one, or the name of a bundle shipped with edgeseg. One that another
        process replaces meanwhile (``edgeseg quantize`` adding a model, an export with ``--overwrite``) is read
        again, for up to :data:`REPLACED_WAIT_S`: the reader gets the old bundle or the new one, whole (before: one
        open in seven failed during a loop of edits, "sha256 mismatch ... corrupt", "missing", "not found")."""
        p = Path(path_or_name)
        deadline, delay = time.monotonic() + REPLACED_WAIT_S, 0.02
        while True:
            before = _identity(p)
            try:
                return cls._open_once(path_or_name, verify)
            except (BundleError, FileNotFoundError) as e:
                if not _being_replaced(p, before):
                    raise
                if time.monotonic() > deadline:
                    if isinstance(e, BundleError):
                        raise
                    raise BundleError(f"{p}: {e.filename or 'a file'} went missing while it was read: another process "
                                      "was replacing the bundle", fix="open it again once that process has finished") from None
                time.sleep(delay)
                delay = min(0.25, 2 * delay)

    @classmethod
    def _open_once(cls, path_or_name: str | os.PathLike, verify: bool) -> "Bundle":
        from .paths import shipped_bundle, shipped_bundle_names

        p = Path(path_or_name)
        if not p.exists() and not _restore_killed_swap(p):
            shipped = shipped_bundle(str(path_or_name)) if os.sep not in str(path_or_name) else None
            if shipped is None:
                names = ", ".join(shipped_bundle_names()) or "none installed"
                kept = _set_aside_copies(p)
                close = _close_bundles(p)
                raise BundleError(
                    f"bundle {str(path_or_name)!r} not found",
                    fix=(f"a process replacing this bundle has set the old one aside at {kept[-1]}: try again in a "
                         f"moment; if no process is replacing it, rename that folder back to {p}" if kept else
                         (f"did you mean {' or '.join(close)}? " if close else "")
                         + f"give the path of a bundle directory or .zip, or a shipped name ({names})"),
                )
            p = shipped
        source = p
        if p.is_file():
            if not zipfile.is_zipfile(p):
                if p.suffix.lower() == ".zip" or _starts_like_a_zip(p):  # a cut download renamed NAME.edgeseg too
                    raise BundleError(f"{p}: not a readable .zip (its zip directory is missing: the file is truncated "
                                      "or corrupt)", fix="copy or download the bundle again, or zip its folder anew")
                onnx = p.suffix.lower() == ".onnx"  # a model made elsewhere: imported first
                raise BundleError(f"{p}: not a bundle (neither a directory nor a .zip)"
                                  + (": an ONNX model" if onnx else ""),
                                  fix=(f"make a bundle of it first: edgeseg import {p} --out "
                                       f"{p.with_suffix('.edgeseg').name}" if onnx else
                                       "give a bundle folder (NAME.edgeseg), a .zip of one, or a shipped name"))
            try:
                return cls._open_folder(cls._extract(p), source, verify)
            except _CacheUnwritable as e:  # a read-only home: unpacked for this process only, as writing a zip does
                return cls._open_folder(_private_copy(p, e), source, verify)
            except (BundleError, FileNotFoundError, NotADirectoryError) as first:
                # FileNotFoundError: read without the lock while another process swapped a repaired copy in
                if not verify and isinstance(first, BundleError):
                    raise
                if not p.is_file():
                    raise BundleError(f"{p}: the .zip was removed or replaced while it was being opened",
                                      fix="open it again once whatever writes it has finished") from None
                # the cached copy may be damaged (a crash, a disk): unpack anew once, under the cache's lock, where
                # an entry another process has just repaired is found whole and used; a bad zip fails again as before
                try:
                    return cls._open_folder(cls._extract(p, fresh=True), source, verify)
                except (OSError, _CacheUnwritable) as e:  # a read-only cache: its damaged copy cannot be replaced
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
                    raise BundleError(f"{str(first).splitlines()[0]} (the unpacked copy of {p} in the cache, which "
                                      f"cannot be replaced: {why})",
                                      fix="set EDGESEG_CACHE_DIR to a folder you can write to, or unzip the bundle "
                                          "and give its folder") from None
        return cls._open_folder(p, source, verify)

    @classmethod
    def _open_folder(cls, p: Path, source: Path, verify: bool) -> "Bundle":
        mpath = p / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{p}: no {MANIFEST}; this is not an edgeseg bundle", fix="create one with 'edgeseg export' or 'edgeseg import'")
        try:
            data = json.loads(mpath.read_text(encoding="utf-8-sig"))  # a BOM (an editor's UTF-8 with BOM) is fine
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mpath}: not valid JSON ({e})",
                              fix="the manifest is truncated or was edited: restore it from a copy of the bundle, or "
                                  "re-create the bundle (edgeseg export / edgeseg import)") from None
        bundle = cls(p, Manifest.from_dict(data, where=str(mpath)), source=source)
        if verify:
            bundle.verify()
        return bundle

    @staticmethod
    def _extract(zpath: Path, fresh: bool = False) -> Path:
        """The folder a ``.zip`` bundle unpacks to, in the cache (:func:`edgeseg.paths.cache_dir`, by the zip's sha256).
        Unpacked beside the cache entry and renamed into place, so that processes opening one zip at once
        each see a whole folder and never remove one another's; ``fresh``: replace the entry (found damaged),
        once the new copy is unpacked."""
        cache = _cache_entry(zpath)
        _hold(cache)  # before the check: an eviction cannot take it from here on
        try:
            if not fresh and (cache / MANIFEST).is_file():
                _touch(cache)
                return cache
            cache.parent.mkdir(parents=True, exist_ok=True)
            lock = _locked(cache.parent.parent / ".bundles.lock")  # one for the cache: unpacking is rare
        except OSError as e:
            raise _CacheUnwritable(f"cannot unpack {zpath}: the bundle cache {cache.parent} is not writable "
                              f"({e.strerror or e})", fix="set EDGESEG_CACHE_DIR to a folder you can write to, or unzip "
                                                          "the bundle and give its folder") from None
        with lock:  # one process unpacks or repairs an entry at a time; a later one finds it whole and uses it
            if not fresh and (cache / MANIFEST).is_file():
                return cache
            if fresh:
                with contextlib.suppress(BundleError):
                    Bundle._open_folder(cache, zpath, verify=True)
                    return cache
            cache = Bundle._unpack(zpath, cache, fresh)
            _hold(cache)
            _evict_unused(cache.parent, keep=cache)
            return cache

    @staticmethod
    def _unpack(zpath: Path, cache: Path, fresh: bool) -> Path:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", suffix=".extract", dir=cache.parent))
        except OSError as e:
            raise _CacheUnwritable(f"cannot unpack {zpath}: the bundle cache {cache.parent} is not writable "
                              f"({e.strerror or e})", fix="set EDGESEG_CACHE_DIR to a folder you can write to, or unzip "
                                                          "the bundle and give its folder") from None
        try:
            with zipfile.ZipFile(zpath) as zf:
                for member in zf.namelist():
                    target = (tmp / member).resolve()
                    if not is_relative_to(target, tmp.resolve()):  # not a string prefix: bundle-ab would admit bundle-abc/
                        raise BundleError(f"{zpath}: unsafe path {member!r} in zip")
                zf.extractall(tmp)
            inner = [d for d in tmp.iterdir() if d.is_dir() and (d / MANIFEST).is_file()]
            if not (tmp / MANIFEST).is_file() and len(inner) != 1:  # before: named the cache folder, left it there
                raise BundleError(
                    f"{zpath}: " + (f"holds {len(inner)} bundles ({', '.join(sorted(d.name for d in inner))}), not one"
                                    if inner else f"no {MANIFEST} at its top or in a folder at its top: not an edgeseg "
                                                  "bundle"),
                    fix="zip one bundle folder: zip -r NAME.zip NAME.edgeseg" if inner else
                        "zip a bundle made by 'edgeseg export' or 'edgeseg import' (zip -r NAME.zip NAME.edgeseg)")
            root = tmp if (tmp / MANIFEST).is_file() else inner[0]
            os.chmod(root, 0o777 & ~_umask())  # mkdtemp's 0700 would keep other users out of a shared cache
            if fresh and cache.exists():
                _swap_in(root, cache)
                return cache
            if (cache / MANIFEST).is_file():  # another process unpacked it meanwhile: use theirs
                return cache
            if cache.exists():  # a leftover without a manifest
                _set_aside(cache)
            try:
                os.rename(root, cache)
            except OSError:
                if not (cache / MANIFEST).is_file():  # not another process's finished folder
                    raise
            return cache
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError) as e:
            raise BundleError(f"{zpath}: the .zip is corrupt ({type(e).__name__}: {e})",
                              fix="copy or download the bundle again, or zip its folder anew") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def verify(self) -> None:
        """Check every listed file exists and matches its sha256."""
        if not self.manifest.files:
            raise BundleError(f"{self.root / MANIFEST}: lists no files")
        if not self.manifest.models:
            raise BundleError(f"{self.root / MANIFEST}: lists no models ('models' is empty), so there is nothing to run",
                              fix="re-create the bundle with 'edgeseg export' or 'edgeseg import', or restore its "
                                  "manifest from a copy")
        for rel, want in self.manifest.files.items():
            f = self.root / rel
            if not f.is_file():
                raise BundleError(f"{self.root}: file {rel!r} listed in the manifest is missing")
            got = sha256_file(f)
            if got != want:
                raise BundleError(
                    f"{f}: sha256 mismatch (manifest {want[:12]}..., file {got[:12]}...): the file was changed or is corrupt",
                    fix="re-create the bundle, or restore the original file",
                )
        for m in self.manifest.models:
            if m.file not in self.manifest.files:
                raise BundleError(f"{self.root / MANIFEST}: model {m.file!r} is not in the hashed file list")

    # ---- creating and editing ---------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, manifest: Manifest, overwrite: bool = False) -> "Bundle":
        """An empty bundle at ``path``, made in place (an existing bundle there is removed first). The
        commands write through :meth:`writing` instead, which never leaves a half-made bundle."""
        root = check_target(path, overwrite=overwrite, writable=False)
        if root.exists():
            _remove(root)
        _mkdir(root, parents=True)
        return cls._new(root, manifest)

    @classmethod
    @contextmanager
    def writing(cls, path: str | os.PathLike, manifest: Manifest, overwrite: bool = False) -> Iterator["Bundle"]:
        """A new bundle made in a hidden folder beside ``path`` (``.NAME.XXXX.partial``) and moved to
        ``path`` when the ``with`` block ends without an error; only then is a bundle already at ``path``
        (``overwrite``) removed. An error, Ctrl-C or a full disk inside the block leaves ``path`` exactly
        as it was. Between the two renames of the swap the old bundle is ``.NAME.XXXX.old`` (a moment;
        after a crash there it is still whole)."""
        root = check_target(path, overwrite=overwrite, writable=False)
        if root.is_symlink():  # --overwrite through a link replaces the bundle it points to, and keeps the link
            root = root.resolve()
        _mkdir(root.parent, parents=True, exist_ok=True)
        stage = _stage_path(root)  # made by mkdir: its mode, not mkdtemp's 0700
        _mkdir(stage)
        try:
            bundle = cls._new(stage, manifest)
            yield bundle
            with _bundle_lock(root):  # not in the middle of another command's edit of the bundle there
                if not overwrite and os.path.lexists(root):  # checked before the work; another process made it since
                    raise BundleError(f"{root} was made by another process while this one wrote it; it is kept as "
                                      "that process wrote it", fix="write this one to another path, or give "
                                                                   "--overwrite (overwrite=True) to replace it")
                if root.suffix.lower() == ".zip":  # --out model.zip: a .zip file, not a folder named like one
                    bundle.source, bundle.root = root, _zip_into(bundle, root)
                else:
                    _swap_in(stage, root)
                    bundle.root = bundle.source = root
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise

    @contextmanager
    def editing(self) -> Iterator["Bundle"]:
        """Edits of this bundle made all at once: on a copy beside it (files hard-linked where the file
        system allows; every write replaces a file, so the originals are never touched), swapped in when the
        ``with`` block ends without an error. An error, Ctrl-C or full disk inside leaves the bundle as it
        was (``edgeseg quantize`` writes a model, its ranges, caches and report: never half of them)."""
        zipped = self.source != self.root and self.source.is_file()  # opened from a .zip: root is its unpacked copy
        # one writer at a time per bundle (a lock file beside it, which every swap leaves in place), and the edit starts
        # from the bundle as it is now: two quantize runs at once each read the manifest when they started, and the
        # second swapped in a manifest without the first's model beside the first's report and calibration (a sha256
        # mismatch: the bundle no longer opened). Changes made to this object's manifest in memory are kept on top.
        with _bundle_lock(self.source.resolve() if zipped else self.root.resolve()):
            now = Bundle.open(self.source, verify=False) if zipped else Bundle._open_folder(self.root.resolve(),
                                                                                             self.source, False)
            changed = _changed_between(self._loaded, now.manifest)
            if changed:
                raise BundleError(f"{self.source}: {', '.join(changed)} changed while this command ran (another "
                                  "command or an edit by hand); nothing was written",
                                  fix="run the command again (commands editing one bundle run one after the other)")
            start = _with_changes(now.manifest, self._loaded, self.manifest, self.source)
            real = now.root.resolve()  # a link (current.edgeseg -> releases/v3.edgeseg) stays a link to the edited bundle
            stage = _stage_path(real)
            try:
                shutil.copytree(real, stage, symlinks=True, copy_function=_link_or_copy)
            except OSError as e:
                shutil.rmtree(stage, ignore_errors=True)
                raise BundleError(f"cannot edit {self.root}: its folder {real.parent} takes no new folder "
                                  f"({e.strerror or e})", fix="copy the bundle to a folder you can write to") from None
            try:
                edit = type(self)(stage, start, source=self.source)
                if start != now.manifest:
                    edit._write_manifest()  # this object's own changes in memory, on the copy
                yield edit
                if zipped:  # the user's bundle is the .zip: written anew (atomically), the unpacked copy filed under it
                    root = _zip_into(edit, self.source.resolve())  # through a link: the zip it points to
                else:
                    _swap_in(stage, real)
                    root = self.root
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
        self.manifest, self.root = edit.manifest, root
        self._loaded = edit.manifest
        edit.root = root

    @classmethod
    def _new(cls, root: Path, manifest: Manifest) -> "Bundle":
        provenance = {"edgeseg_version": _version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        provenance.update(manifest.provenance)
        b = cls(root, replace(manifest, provenance=provenance, files={}))
        b._write_manifest()
        return b

    def add_file(self, rel: str, src: str | os.PathLike | bytes | None = None) -> Path:
        """Copy ``src`` (a path or bytes) to ``rel`` in the bundle — or, with ``src=None``, adopt a file
        already written there — and record its sha256."""
        dst = self.root / check_relpath(rel, "files", str(self.root))
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, (bytes, bytearray)):
            atomic_write_bytes(dst, bytes(src))
        elif src is not None and Path(src).resolve() != dst.resolve():
            atomic_copy_file(src, dst)
        if not dst.is_file():
            raise BundleError(f"cannot add {rel!r} to {self.root}: no such file")
        files = dict(self.manifest.files)
        files[rel] = sha256_file(dst)
        self.manifest = replace(self.manifest, files=files)
        self._write_manifest()
        return dst

    def remove_file(self, rel: str) -> bool:
        """Drop a listed file that is no model (e.g. an earlier run's plot): from the manifest, then the disk.
        False when it was not listed."""
        if rel not in self.manifest.files:
            return False
        if any(m.file == rel for m in self.manifest.models):
            raise BundleError(f"{rel} is a model of {self.root}; it is replaced with add_model, not removed")
        self.manifest = replace(self.manifest, files={k: v for k, v in self.manifest.files.items() if k != rel})
        self._write_manifest()
        (self.root / check_relpath(rel, "files", str(self.root))).unlink(missing_ok=True)
        return True

    def add_model(self, model: ModelFile, src: str | os.PathLike | bytes | None = None) -> Path:
        """Add (or replace) a model file; replaces an entry with the same precision and target."""
        dst = self.add_file(model.file, src)
        models = [m for m in self.manifest.models if not (m.precision == model.precision and m.target == model.target) and m.file != model.file]
        self.manifest = replace(self.manifest, models=tuple(models) + (model,))
        self._write_manifest()
        return dst

    def update(self, **fields: Any) -> None:
        """Replace manifest fields (e.g. ``decoder=...``) and rewrite it."""
        self.manifest = replace(self.manifest, **fields)
        self._write_manifest()

    def write_json(self, rel: str, data: Any) -> Path:
        return self.add_file(rel, dumps_json(data).encode())

    def read_json(self, rel: str, default: Any = None) -> Any:
        f = self.root / rel
        if not f.is_file():
            return default
        try:
            return json.loads(f.read_text(encoding="utf-8-sig"))  # a BOM (an editor's UTF-8 with BOM) is fine
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{f}: not valid JSON ({e})") from None

    @property
    def report(self) -> dict[str, Any]:
        """``report.json``; a file that is no JSON object, or a section of it that must be one and is not (edited by
        hand), reads as absent, said (before: an ``AttributeError`` traceback when a backend was chosen)."""
        report = self.read_json(REPORT, {}) or {}
        bad = ([REPORT] if not isinstance(report, dict) else
               [k for k in REPORT_OBJECTS if k in report and not isinstance(report[k], dict)])
        if not bad:
            return report
        log.warning("%s: %s %s no JSON object: read as absent (restore the file from a copy of the bundle)",
                    self.root / REPORT, "the file" if bad == [REPORT] else "section(s) " + ", ".join(bad),
                    "is" if len(bad) == 1 else "are")
        return {} if bad == [REPORT] else {k: v for k, v in report.items() if k not in bad}

    def update_report(self, section: str, data: Any) -> None:
        """Set one top-level section of ``report.json`` (``parity``, ``accuracy``, ``int8``, ...)."""
        report = self.report
        report[section] = data
        self.write_json(REPORT, report)

    def _write_manifest(self) -> None:
        atomic_write_text(self.root / MANIFEST, dumps_json(self.manifest.to_dict()))
        self._loaded = self.manifest

    # ---- reading ----------------------------------------------------------------------------
    def model_entry(self, precision: str = "fp32", target: str | None = None) -> ModelFile:
        """The model file of ``precision`` (and ``target``, when given). Without a target the untargeted
        entry wins (the ONNX graph, not e.g. the torch checkpoint ``model.safetensors``), whatever
        the manifest's order; then the first entry of that precision."""
        cands = [m for m in self.manifest.models if m.precision == precision]
        if target is not None:
            cands = [m for m in cands if m.target == target]
        else:
            cands = [m for m in cands if m.target is None] + [m for m in cands if m.target is not None]
        if not cands:
            have = ", ".join(f"{m.precision}" + (f"/{m.target}" if m.target else "") + (f" ({m.weights} weights)" if m.weights else "")
                             for m in self.manifest.models) or "none"
            fix = (f"run 'edgeseg quantize {self.root} --calib RECIPE' to add an INT8 model (RECIPE: camvid, street, "
                   "dashcam, synthetic:64, or your frames' folder)" if precision == "int8" else None)
            if precision == "bf16":
                fix = ("bf16 is OpenVINO's precision (it runs the float model in bf16 where the CPU has it): "
                       "--backend openvino --precision bf16, or --precision fp32 here")
            if precision == "fp16":
                fix = ("fp16 is TensorRT's precision (--backend tensorrt builds it from the float model); ONNX Runtime "
                       "and OpenVINO run the float model as it is stored: --precision fp32 (or auto)")
            raise BundleError(
                f"bundle {self.root} has no {precision}{'/' + target if target else ''} model (it has: {have})", fix=fix
            )
        return cands[0]

    def model_path(self, precision: str = "fp32", target: str | None = None) -> Path:
        return self.root / self.model_entry(precision, target).file

    @property
    def name(self) -> str:
        return self.manifest.name

    def zip(self, out: str | os.PathLike) -> Path:
        """Write the bundle (without the engine cache) as a ``.zip``, atomically (a failed write leaves ``out``
        as it was and no temporary file)."""
        from ._io import commit_file

        out = Path(out)
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for rel in [MANIFEST, *self.manifest.files]:
                    zf.write(self.root / rel, rel)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return commit_file(tmp, out)

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, task={self.manifest.task!r}, classes={self.manifest.num_classes})"


def _version() -> str:
    from . import __version__

    return __version__


def iter_files(bundle: Bundle) -> Iterable[Path]:
    return (bundle.root / rel for rel in bundle.manifest.files)


def check_target(path: str | os.PathLike, option: str = "--out", *, overwrite: bool = True,
                 writable: bool = True) -> Path:
    """``path`` as a place a bundle may be written, checked before any work: an existing bundle (a folder
    or its ``.zip``) only with ``overwrite``; never a non-empty folder or a file that is not a bundle (they
    would be deleted); with ``writable``, its folder must take new files (created if missing). Errors
    name ``option``. Used by :meth:`Bundle.create` and by commands that write a bundle after long work
    (``edgeseg train --export``, ``fuse``, ``import``). A bundle an interrupted replacement set aside is put
    back first (:func:`_restore_killed_swap`)."""
    root = Path(path)
    _restore_killed_swap(root)
    if root.exists():  # what is not a bundle first: --overwrite would not help there
        if root.is_dir() and not (root / MANIFEST).exists() and any(root.iterdir()):
            raise BundleError(f"{option} {root} is a non-empty folder that is not a bundle; refusing to overwrite it",
                              fix=f"choose another {option}, or move the folder away")
        if not root.is_dir() and not _is_zipped_bundle(root):
            raise BundleError(f"{option} {root} is a file that is not a bundle; refusing to overwrite it",
                              fix=f"choose another {option}, or move the file away")
        if not overwrite:
            raise BundleError(f"{root} already exists", fix=f"choose another {option}, or pass --overwrite")
    if writable:
        try:
            writable_folder(root.parent, root)
        except InputError as e:
            raise BundleError(f"{option}: {e.args[0].splitlines()[0]}",
                              fix=f"give {option} a bundle path in a folder you can write to, e.g. ./out/model.edgeseg") from None
    return root


def _mkdir(path: Path, **kw: bool) -> None:
    try:
        path.mkdir(**kw)
    except OSError as e:
        raise BundleError(f"cannot create the bundle folder {path} ({e.strerror or e})",
                          fix="choose an --out in a folder you can write to") from None


def _zip_into(staged: "Bundle", zpath: Path) -> Path:
    """Zip the finished bundle folder ``staged`` to ``zpath`` (atomically, replacing a bundle there: a zip, or a
    folder named like one, which ``--out x.zip`` made before) and file the folder in the cache as that zip's
    unpacked copy (what opening the zip would unpack); returns the folder."""
    if zpath.is_dir():
        _swap_in(staged.zip(zpath.with_name(f".{zpath.name}.{secrets.token_hex(4)}.zip")), zpath)
    else:
        staged.zip(zpath)
    entry = _cache_entry(zpath)
    with contextlib.suppress(OSError):  # the cache on another file system, or a leftover there: unpacked below
        entry.parent.mkdir(parents=True, exist_ok=True)
        if (entry / MANIFEST).is_file():  # the same zip unpacked before (same sha256)
            shutil.rmtree(staged.root, ignore_errors=True)
            return entry
        os.rename(staged.root, entry)
        return entry
    try:
        entry = Bundle._extract(zpath)
        shutil.rmtree(staged.root, ignore_errors=True)
        return entry
    except _CacheUnwritable:  # the zip is written, which is what was asked; its folder is kept elsewhere
        private = Path(tempfile.mkdtemp(prefix="edgeseg-bundle-")) / zpath.stem
        shutil.move(str(staged.root), private)
        log.info("the bundle cache is not writable: %s's unpacked copy is in %s", zpath, private)
        return private


STALE_STAGE_S = 600.0  # a staging folder this old whose process is gone is a killed run's: removed


def _stage_path(root: Path) -> Path:
    """``.NAME.PID@HOST-XXXX.partial`` beside ``root``; staging folders that killed processes of this machine
    left for ``root`` (their process gone, untouched for :data:`STALE_STAGE_S`) are removed first (a folder
    shared between containers or hosts: only this host's, whose pids are meaningful)."""
    now = time.time()
    host = _host()
    for old in root.parent.glob(f".{glob.escape(root.name)}.*@{glob.escape(host)}-*.partial"):
        pid = old.name[len(root.name) + 2:].split("@", 1)[0]  # only this machine's: pids of others mean nothing here
        try:
            if not pid.isdigit() or _alive(int(pid)) or now - old.stat().st_mtime < STALE_STAGE_S:
                continue
        except OSError:
            continue
        shutil.rmtree(old, ignore_errors=True)
    return root.parent / f".{root.name}.{os.getpid()}@{host}-{secrets.token_hex(4)}.partial"


class _locked:
    """An exclusive ``flock`` on ``path`` for a ``with`` block. The file is opened (created if missing, 0666
    less the umask) when this object is made, so an unusable cache fails there, where the caller turns it into
    its error: for writing where it can be (NFS emulates flock with write locks), else read-only (a lock file
    another user of a shared cache made). A file system that takes no lock at all leaves the block
    unlocked (the lock only orders processes), never failed. ``wait_s``: a holder that keeps it longer is not waited
    for (the block then runs unlocked, said); ``waiting``: said once when the lock is held by another."""

    def __init__(self, path: Path, wait_s: float | None = None, waiting: str | None = None):
        self.path, self.wait_s, self.waiting = path, wait_s, waiting
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            self.fd = os.open(path, os.O_RDONLY)

    def __enter__(self) -> None:
        import fcntl

        deadline = None if self.wait_s is None else time.monotonic() + self.wait_s
        said = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None or self.waiting else 0))
                return
            except BlockingIOError:
                if self.waiting and not said:
                    log.info("%s", self.waiting)
                    said = True
                if deadline is not None and time.monotonic() > deadline:
                    log.warning("another process has held %s for over %g s: going on without it", self.path, self.wait_s)
                    return
                time.sleep(0.05)
            except OSError as e:
                log.debug("no lock (%s): unlocked", e.strerror or e)
                return

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)  # releases the lock


_HELD: dict[str, list[Any]] = {}  # lock file -> [RLock, holders in this process, open fd or None]
_HELD_GUARD = threading.Lock()


@contextmanager
def _bundle_lock(bundle: Path) -> Iterator[None]:
    """Held by a writer of ``bundle`` (a folder or a .zip) while it replaces it: an exclusive ``flock`` on
    ``.NAME.lock`` beside it (a file the swap of a new copy into place leaves where it is; removed again by the holder,
    so nothing is left beside the bundle), so that two processes writing one bundle go one after the other, said when
    one waits. Within a process the lock is re-entrant and its threads take turns (``flock`` locks two opens of one
    file against each other even in one process: nested writers hung). A folder that takes no lock file, or a file
    system without locks, leaves the write unlocked (the write itself then says why it fails, if it does)."""
    path = bundle.parent / f".{bundle.name}.lock"
    with _HELD_GUARD:
        entry = _HELD.setdefault(str(path), [threading.RLock(), 0, None])
    entry[0].acquire()
    try:
        entry[1] += 1
        if entry[1] == 1:
            entry[2] = _lock_file(path, bundle)
        yield
    finally:
        entry[1] -= 1
        if entry[1] == 0 and entry[2] is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still held: a process waiting on this file finds it gone and opens a new one
            os.close(entry[2])
            entry[2] = None
        entry[0].release()


def _lock_file(path: Path, bundle: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive ``flock`` (None: no lock could be had here). The file a
    holder removes on release is not the one a waiter then holds: the waiter opens the path anew until the file it
    locked is the one at the path."""
    import fcntl

    said = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    log.warning("%s: another command is writing it; waiting for it to finish", bundle)
                    said = True
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # no locks on this file system (some network ones)
            os.close(fd)
            log.debug("no lock on %s (%s): writing unlocked", path, e.strerror or e)
            return None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the holder that just released it removed this one: open the path anew


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the file now at ``path`` (False when ``path`` is gone)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def _with_changes(now: Manifest, loaded: Manifest, mine: Manifest, where: Path) -> Manifest:
    """``now`` (the manifest on disk) with the fields this object changed in memory since it was read (``mine`` against
    ``loaded``); a field both changed is refused, naming it."""
    if mine is loaded:
        return now
    changes: dict[str, Any] = {}
    for f in ("name", "task", "classes", "input", "outputs", "models", "palette", "decoder", "files", "provenance",
              "extra"):
        if getattr(mine, f) != getattr(loaded, f):
            if getattr(now, f) != getattr(loaded, f):
                raise BundleError(f"{where}: its {f} was changed both by this command and by another while it ran; "
                                  "nothing was written", fix="run the command again")
            changes[f] = getattr(mine, f)
    return replace(now, **changes) if changes else now


def _changed_between(read: Manifest, now: Manifest) -> list[str]:
    """What another writer changed in a bundle since a command read ``read`` that the command's work rests on (its
    float model, classes, input, outputs, decoder); other models and files a concurrent command added are kept."""
    def floats(m: Manifest) -> list[tuple[str, str | None]]:
        return sorted((x.file, m.files.get(x.file)) for x in m.models if x.precision == "fp32")

    def as_stored(m: Manifest, f: str) -> str:  # as the manifest file holds it: a tuple in memory is a list there
        return json.dumps(m.to_dict()[f], sort_keys=True, default=str)

    changed = [f for f in ("task", "classes", "input", "outputs", "decoder") if as_stored(read, f) != as_stored(now, f)]
    return changed + (["its float model"] if floats(read) != floats(now) else [])


#: how long :meth:`Bundle.open` keeps reading a bundle another process is replacing before it gives up
REPLACED_WAIT_S = 5.0


def _identity(path: Path) -> tuple[int, int] | None:
    """The file or folder at ``path`` (device and inode), None when nothing is there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _being_replaced(root: Path, before: tuple[int, int] | None) -> bool:
    """Whether another writer replaced ``root`` while it was read (another folder or file is there now), or is
    replacing it (another process holds its lock file, as every swap does). What killed writers left is not waited
    for, nor is this process's own writer."""
    return _identity(root) != before or _held_by_another(root.parent / f".{root.name}.lock")


def _held_by_another(path: Path) -> bool:
    """Whether a writer holds the lock file ``path`` now (one a killed writer left is not held); this process's own
    writers are not another's."""
    import fcntl

    with _HELD_GUARD:
        entry = _HELD.get(str(path))
        if entry is not None and entry[1] > 0:
            return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _set_aside_copies(root: Path) -> list[Path]:
    """The old copies of ``root`` that swaps set aside (``.NAME.PID@HOST-XXXX.old``), oldest first."""
    if not root.parent.is_dir():
        return []
    return sorted(root.parent.glob(f".{glob.escape(root.name)}.*.old"), key=lambda f: f.stat().st_mtime)


def _restore_killed_swap(root: Path) -> bool:
    """Put back the bundle a process killed between the two renames of :func:`_swap_in` left aside: ``root``
    is gone, ``.NAME.PID@HOST-XXXX.old`` of this machine (its process dead) is the whole old bundle, and
    ``.NAME.PID@HOST-XXXX.partial``, the new one never renamed in, is still there: that pair is the mark of
    that moment (a process killed later, while it removed the old copy, leaves no ``.partial``: its swap was
    done, and a bundle the user deleted since is not brought back). The command that was killed then changed
    nothing, as any interrupted write promises; its staging folder is removed. A live process is left alone."""
    if os.path.lexists(root):
        return False
    host = _host()
    for old in reversed(_set_aside_copies(root)):
        pid, _, rest = old.name[len(root.name) + 2:].partition("@")
        if not pid.isdigit() or not rest.startswith(f"{host}-") or _alive(int(pid)):
            continue
        stage = old.with_name(removesuffix(old.name, ".old") + ".partial")
        if not stage.is_dir():
            continue
        try:
            os.rename(old, root)
        except OSError:  # another process restored it first, or the folder takes no rename: left as it is
            continue
        shutil.rmtree(stage, ignore_errors=True)
        log.warning("%s: restored the bundle that an interrupted replacement (process %s) had set aside at %s",
                    root, pid, old.name)
        return True
    return False


def _host() -> str:
    import socket

    return "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


_PRIVATE_COPIES: dict[str, Path] = {}


def _private_copy(zpath: Path, why: BaseException) -> Path:
    """``zpath`` unpacked into a temporary folder of this process (removed at exit), when the bundle cache takes
    no new folder (a read-only home, a cache folder without permissions): before, loading the zip was refused."""
    key = sha256_file(zpath)
    if key in _PRIVATE_COPIES and (_PRIVATE_COPIES[key] / MANIFEST).is_file():
        return _PRIVATE_COPIES[key]
    import atexit

    folder = Path(tempfile.mkdtemp(prefix="edgeseg-bundle-"))
    atexit.register(shutil.rmtree, folder, True)
    log.warning("%s; unpacked for this process only (set EDGESEG_CACHE_DIR to a writable folder to keep the "
                "unpacked copy)", str(why).splitlines()[0])
    _PRIVATE_COPIES[key] = Bundle._unpack(zpath, folder / zpath.stem, False)
    return _PRIVATE_COPIES[key]


def _cache_entry(zpath: Path) -> Path:
    """Where a ``.zip`` bundle is unpacked: the cache's ``bundles/<first 16 hex of the zip's sha256>``."""
    from .paths import cache_dir

    return cache_dir() / "bundles" / sha256_file(zpath)[:16]


_WARNED_ONCE: set[str] = set()
#: unpacked bundles this process uses: entry path -> the descriptor of its in-use file, on which the process
#: holds a shared ``flock`` until it ends (:func:`_hold`); eviction takes an entry only when it gets an exclusive one
_IN_USE: dict[str, int] = {}
_IN_USE_LOCK = threading.Lock()


def _inuse_path(entry: Path) -> Path:
    """``<cache>/bundles-in-use/<entry>`` (beside the entries, not among them): never removed, as a process waiting on
    one would otherwise hold a lock on a file no longer there."""
    folder = entry.parent.parent / "bundles-in-use"
    folder.mkdir(exist_ok=True)
    return folder / entry.name


def _hold(entry: Path) -> None:
    """Mark the unpacked bundle ``entry`` as used by this process for as long as it runs (a shared ``flock``; it waits
    while an eviction holds the exclusive one, which it does only while it moves the entry away). A cache where the
    file cannot be made or locked is used unmarked (nothing can be evicted from a cache one cannot write)."""
    import fcntl

    key = str(entry)
    with _IN_USE_LOCK:
        if key in _IN_USE or not entry.parent.is_dir():
            return
        try:  # read-only: a file open for writing for the process's life would keep its disk from a read-only remount
            fd = os.open(_inuse_path(entry), os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            return
        _IN_USE[key] = fd


def _claim_unused(entry: Path) -> int | None:
    """An exclusive, non-blocking ``flock`` on ``entry``'s in-use file (its descriptor), or None when a process (this
    one included) holds it: the entry is in use."""
    import fcntl

    try:
        fd = os.open(_inuse_path(entry), os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _touch(entry: Path) -> None:
    """Mark an unpacked bundle as used now (its folder's mtime: what :func:`_evict_unused` reads); a read-only
    cache keeps the time it has."""
    with contextlib.suppress(OSError):
        os.utime(entry)


def _evict_unused(bundles: Path, keep: Path, now: float | None = None) -> list[Path]:
    """Remove the unpacked bundles in ``bundles`` (the cache's folder) not opened for
    :func:`~edgeseg.paths.cache_days` and used by no running process (:func:`_hold`), except ``keep``; called under
    the cache's lock when a zip is unpacked. Returns what was removed. A later open of a removed one's zip unpacks
    it again."""
    from .paths import cache_days

    try:
        days = cache_days()
    except InputError as e:  # said by edgeseg doctor too; an open never fails for it, and nothing is removed
        if "days" not in _WARNED_ONCE:
            _WARNED_ONCE.add("days")
            log.warning("%s: no unpacked bundle is removed (fix: %s)", str(e).splitlines()[0], e.fix)
        return []
    if days is None:
        return []
    now = time.time() if now is None else now
    limit = now - days * 86400.0
    removed = []
    try:
        entries = list(bundles.iterdir())
    except OSError:
        return []
    for entry in entries:
        try:  # housekeeping never fails an open
            if entry.name.startswith("."):  # an unpack or a removal a killed process left (a day is long enough)
                if entry.name.endswith((".extract", ".old")) and entry.stat().st_mtime < now - 86400.0:
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            if entry == keep or not entry.is_dir() or entry.stat().st_mtime >= limit:
                continue
            claim = _claim_unused(entry)
            if claim is None:  # a process still uses it (a service running for longer than the days)
                continue
            try:
                size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                _set_aside(entry)
            finally:
                os.close(claim)
        except OSError:
            continue
        removed.append(entry)
        log.info("removed %s from the bundle cache (%.1f MB; no bundle opened it for %g days)", entry,
                 size / 1e6, days)
    return removed


def _set_aside(path: Path) -> None:
    """Rename ``path`` out of the way, then remove it (a process still reading it keeps its files)."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process did it
        return
    shutil.rmtree(aside, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _swap_in(stage: Path, root: Path) -> None:
    """Move the finished bundle ``stage`` to ``root``, replacing what is there (a bundle folder or
    ``.zip``, checked by :func:`check_target`) only once the new one is in place."""
    if not os.path.lexists(root):
        os.replace(stage, root)
        return
    old = stage.with_name(removesuffix(stage.name, ".partial") + ".old")
    os.replace(root, old)
    try:
        os.replace(stage, root)
    except BaseException:
        os.replace(old, root)
        raise
    try:  # the new one is in place: what stays of the old one is only a warning
        _remove(old)
    except OSError as e:
        shutil.rmtree(old, ignore_errors=True)
        if os.path.lexists(old):  # not whole any more: not an .old a user would be told to rename back
            trash = old.with_suffix(".trash")
            with contextlib.suppress(OSError):
                os.rename(old, trash)
                old = trash
            log.warning("replaced %s, but could not remove all of the old copy %s (%s)", root, old, e.strerror or e)


def _is_zipped_bundle(path: Path) -> bool:
    """Whether ``path`` is a ``.zip`` of a bundle (its manifest at the top or one folder down)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(PurePosixPath(n).name == MANIFEST and len(PurePosixPath(n).parts) <= 2 for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
