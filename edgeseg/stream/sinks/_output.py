"""Output folders for the file sinks: created and proven writable when a sink opens.

A sink opens before the pipeline reads its first frame, so a path that cannot be written (a folder
that is really a file, a read-only or virtual file system such as ``/proc``) is refused there, naming
the path, instead of failing on the first frame after the source has started.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ...errors import InputError

_FIX = "choose a path in a folder you can write to, e.g. ./out/result.mp4"


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing ancestor of ``folder`` (itself included) that is not a directory, if any."""
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def writable_folder(folder: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Create ``folder`` (with its parents) and check a file can be created in it; ``target`` is what
    the sink will write (named in the error). Raises :class:`InputError`."""
    folder = Path(folder)
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise InputError(f"cannot write {target}: {blocker} is a file, not a folder", fix=_FIX)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot write {target}: cannot create the folder {folder} ({e.strerror or e})", fix=_FIX) from None
    try:
        tempfile.NamedTemporaryFile(dir=folder, prefix=".edgeseg-probe-").close()  # created, then removed
    except OSError as e:
        raise InputError(f"cannot write {target}: the folder {folder} does not take new files ({e.strerror or e})",
                         fix=_FIX) from None
    return folder


def writable_file(path: str | os.PathLike) -> Path:
    """``path`` as a file a sink may create or replace: not an existing folder, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder", fix=f"name a file, e.g. {path / 'result.mp4'}")
    writable_folder(path.parent, path)
    return path
