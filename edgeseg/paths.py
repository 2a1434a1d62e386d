"""Where things live: shipped bundles, the optional shared data folder."""
from __future__ import annotations

import os
from pathlib import Path
from ._compat import removesuffix
from .errors import InputError

PACKAGE_DIR = Path(__file__).resolve().parent
ZOO_DIR = PACKAGE_DIR / "zoo"  # bundles shipped with the package: zoo/<name>.edgeseg/


def data_root() -> Path | None:
    """The real-data folder: ``$EDGESEG_DATA``, else ``../shared/data`` next to the checkout, if it exists."""
    env = os.environ.get("EDGESEG_DATA")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    for base in (Path.cwd(), PACKAGE_DIR.parent):
        p = (base / ".." / "shared" / "data").resolve()
        if p.is_dir():
            return p
    return None


def cache_dir() -> Path:
    """The per-user cache (unpacked ``.zip`` bundles, TensorRT engines of read-only bundles, the backend
    choices): ``$EDGESEG_CACHE_DIR``, else ``$EDGESEG_CACHE`` (the name the bundle cache read before),
    else ``$XDG_CACHE_HOME/edgeseg`` or ``~/.cache/edgeseg``. ``off`` turns the backend-choice cache
    off (:func:`edgeseg.backends.choice.cache_path`); the rest then uses the default place."""
    for var in ("EDGESEG_CACHE_DIR", "EDGESEG_CACHE"):
        env = os.environ.get(var, "").strip()
        if env and env.lower() not in ("off", "0", "none"):
            return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "edgeseg"
    try:
        return Path.home() / ".cache" / "edgeseg"
    except (RuntimeError, KeyError):  # no $HOME and a user id without a passwd entry (a container's arbitrary uid)
        import logging
        import tempfile

        fallback = _private_folder(Path(tempfile.gettempdir()) / f"edgeseg-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
        if fallback not in _WARNED:
            _WARNED.add(fallback)
            logging.getLogger("edgeseg").warning("no home folder ($HOME unset, no passwd entry for this user): the "
                                                 "cache is %s (set EDGESEG_CACHE_DIR to choose it)", fallback)
        return fallback


def _private_folder(path: Path) -> Path:
    """``path`` (made 0700, or set to 0700) if it is this user's own folder; else a fresh private folder beside it,
    removed when the process ends. A shared temporary folder's predictable name could be made first by another user, who
    would then plant choices or unpacked bundles (a bundle's checks compare its files with its own manifest)."""
    import tempfile

    if not hasattr(os, "getuid"):
        return path
    if _own_private(path):
        return path
    if path not in _FOREIGN:  # a private folder of this process's own instead
        import atexit
        import shutil

        _FOREIGN[path] = Path(tempfile.mkdtemp(prefix=f"{path.name}-"))
        atexit.register(shutil.rmtree, str(_FOREIGN[path]), True)  # one per process: not left behind
        import logging

        logging.getLogger("edgeseg").warning("%s is not this user's own private folder (another user's, a link, or "
                                             "not to be made): using %s instead (set EDGESEG_CACHE_DIR to choose "
                                             "the cache)", path, _FOREIGN[path])
    return _FOREIGN[path]


_FOREIGN: dict[Path, Path] = {}


def _own_private(path: Path) -> bool:
    """Whether ``path`` is (made, if missing) this user's own folder, not a link, and private (made so: a folder an
    older edgeseg made under umask 002); False when it cannot be made or made private."""
    import stat

    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
        if not (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()):
            return False
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
        return True
    except OSError:
        return False


_WARNED: set[Path] = set()


#: unpacked ``.zip`` bundles not opened for this many days are removed when another zip is unpacked (a device that
#: takes a new model version every week would otherwise keep every version it ever ran);
#: ``EDGESEG_BUNDLE_CACHE_DAYS`` sets it, ``0`` or ``off`` keeps them all
CACHE_DAYS = 30.0


def cache_days() -> float | None:
    """:data:`CACHE_DAYS`, or ``$EDGESEG_BUNDLE_CACHE_DAYS`` (None: keep every unpacked bundle)."""
    text = os.environ.get("EDGESEG_BUNDLE_CACHE_DAYS", "").strip().lower()
    if not text:
        return CACHE_DAYS
    if text in ("off", "none", "never"):
        return None
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if days == 0:  # 0, 0.0, 00
        return None
    if not days > 0 or days == float("inf"):
        raise InputError(f"EDGESEG_BUNDLE_CACHE_DAYS={text!r} is no number of days",
                          fix="set it to the days an unpacked .zip bundle may go unused (30 by default), or 0 to "
                              "keep them all")
    return days


def shipped_bundle(name: str) -> Path | None:
    """The path of a bundle shipped with the package (``road``, ``shapes``), or None."""
    for cand in (ZOO_DIR / f"{name}.edgeseg", ZOO_DIR / name):
        if (cand / "manifest.json").is_file():
            return cand
    return None


def shipped_bundle_names() -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(removesuffix(p.name, ".edgeseg") for p in ZOO_DIR.iterdir() if (p / "manifest.json").is_file())
