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

What the manifest holds, typed and checked, is :mod:`edgeseg.structures.manifest`; how a bundle is written
(staging, the writers' lock, the swap into place) is ``_bundle_write``, and the cache of unpacked ``.zip``
bundles ``_bundle_cache``: this module is the :class:`Bundle` that uses them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from ._bundle_cache import _CacheUnwritable, _cache_entry, _evict_unused, _hold, _private_copy, _set_aside, _touch
from ._bundle_write import (STALE_STAGE_S, _being_replaced, _bundle_lock, _changed_between, _identity, _link_or_copy,
                            _locked, _mkdir, _remove, _restore_killed_swap, _set_aside_copies, _stage_path, _swap_in,
                            _with_changes, _zip_into, check_target)
from ._io import _umask, atomic_copy_file, atomic_write_bytes, atomic_write_text, dumps_json
from .errors import BundleError
from .structures.manifest import (MANIFEST, PRECISIONS, SCHEMA_VERSION, TASKS, Manifest, ModelFile, OutputSpec,
                                  _version, check_relpath, sha256_file)
from ._compat import is_relative_to

log = logging.getLogger("edgeseg.bundle")

#: what other code imports from here: the bundle, and the manifest types and checks it was written with
__all__ = ["Bundle", "iter_files", "check_target", "Manifest", "ModelFile", "OutputSpec", "check_relpath", "sha256_file",
           "SCHEMA_VERSION", "MANIFEST", "REPORT", "REPORT_OBJECTS", "TASKS", "PRECISIONS", "REPLACED_WAIT_S",
           "STALE_STAGE_S"]

REPORT = "report.json"


#: how long :meth:`Bundle.open` keeps reading a bundle another process is replacing before it gives up
REPLACED_WAIT_S = 5.0


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


#: report.json sections that are JSON objects when edgeseg writes them
REPORT_OBJECTS = ("parity", "accuracy", "int8", "training", "import", "fuse")


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


def iter_files(bundle: Bundle) -> Iterable[Path]:
    return (bundle.root / rel for rel in bundle.manifest.files)
