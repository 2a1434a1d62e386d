"""How a bundle is written without ever leaving half of one: the checks of a target before the work, the hidden
staging folder beside it, the lock by which writers of one bundle take turns (and readers see one being replaced),
an edit's changes merged with what another writer changed meanwhile, the swap of the finished folder into place, and
the restore of a bundle that a killed swap set aside. Used by :mod:`edgeseg.bundle`, whose
:meth:`~edgeseg.bundle.Bundle.writing` and :meth:`~edgeseg.bundle.Bundle.editing` use it; its file lock
(:func:`_locked`) also orders the backend choice's processes (:mod:`edgeseg.backends.choice`).
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterator

from ._bundle_cache import _cache_entry, _CacheUnwritable
from ._compat import removesuffix
from ._io import writable_folder
from .errors import BundleError, InputError
from .structures.manifest import MANIFEST, Manifest

if TYPE_CHECKING:
    from .bundle import Bundle

log = logging.getLogger("edgeseg.bundle")


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
    from .bundle import Bundle  # imports this module: imported when used

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
