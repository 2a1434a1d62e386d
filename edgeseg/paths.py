"""Where things live: shipped bundles, the optional shared data folder."""
from __future__ import annotations

import os
from pathlib import Path
from ._compat import removesuffix

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
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeseg"


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
