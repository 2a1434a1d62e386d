"""The cache of unpacked ``.zip`` bundles (``$EDGESEG_CACHE_DIR/bundles/<first 16 hex digits of the zip's sha256>``):
where a zip unpacks, the shared lock a process holds on each entry it uses while it runs, the removal of entries no bundle opened for the kept
days, and a process's private copy when the cache takes no new folder. Private to :mod:`edgeseg.bundle`, whose
``Bundle._extract`` unpacks into it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .errors import BundleError, InputError
from .structures.manifest import MANIFEST, sha256_file

log = logging.getLogger("edgeseg.bundle")


class _CacheUnwritable(BundleError):
    """The bundle cache takes no new folder (a read-only home or file system)."""


_PRIVATE_COPIES: dict[str, Path] = {}


def _private_copy(zpath: Path, why: BaseException) -> Path:
    """``zpath`` unpacked into a temporary folder of this process (removed at exit), when the bundle cache takes
    no new folder (a read-only home, a cache folder without permissions): before, loading the zip was refused."""
    key = sha256_file(zpath)
    if key in _PRIVATE_COPIES and (_PRIVATE_COPIES[key] / MANIFEST).is_file():
        return _PRIVATE_COPIES[key]
    import atexit

    from .bundle import Bundle  # imports this module: imported when used

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
