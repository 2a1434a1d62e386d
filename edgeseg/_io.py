"""The one atomic file writer: a reader never sees a half-written file.

Data goes to a temporary file in the destination's directory (same filesystem), is flushed to disk,
and is renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows). A failed
write leaves the old file as it was and no temporary behind.

    atomic_write_bytes(path, data)
    atomic_write_text(path, text)
    write_json(path, obj)          # indented, numpy scalars/arrays and Paths converted

Before any work, :func:`writable_folder` / :func:`writable_file` prove an output path can be written (a
folder that is really a file, a read-only or virtual file system such as ``/proc``), naming it.

Standard library only at import time (the CLI imports this); numpy is looked up only when an object
needs converting.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_copy_file", "atomic_write_bytes", "atomic_write_text", "atomic_write_with", "commit_file", "dumps_json", "json_default",
           "temp_name_prefix", "writable_file",
           "writable_folder", "write_json", "write_whole", "write_with"]

_FIX = "choose a path in a folder you can write to, e.g. under ./out/"


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview, *, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders are created). Returns the path. ``sync=False`` leaves out
    the ``fsync`` before the rename: the file is still whole or absent if the process dies (the kernel has it), but a
    power cut may lose it (a batch of thousands of images: 1 ms a file saved).

    An existing ``path`` that is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO, a shell's
    ``>(jq .)``) is written into as it is: renaming over it replaced the device or pipe with a plain file (as root,
    ``--json /dev/null`` deleted the system's ``/dev/null``). A failed write names ``path``, not the temporary."""
    return atomic_write_with(path, lambda f: f.write(data), sync=sync)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Any], Any], *, sync: bool = True) -> Path:
    """:func:`atomic_write_bytes` of what ``write(f)`` writes into the binary file ``f`` (a document streamed piece
    by piece, never whole in memory), through a temporary of a unique name beside ``path``."""
    dst = Path(path)
    if _special_file(dst):
        return _write_into(dst, write)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(dst), suffix=".tmp", dir=dst.parent)
    except OSError as e:  # a read-only or full file system: the file being written, not the temporary
        raise _naming(e, dst) from None
    try:
        with contextlib.suppress(OSError):  # a file system without Unix modes (vfat, exFAT, CIFS): as it is
            os.fchmod(fd, _mode_for(dst))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full disk: the file being written, not its temporary (or no name at all)
            raise _naming(e, dst) from None
        raise
    return dst


def write_whole(f: Any, data: bytes | memoryview, end: int) -> int:
    """``data`` written into the unbuffered binary file ``f`` (each partial write continued), whose whole content ends
    at ``end``; returns the new end. A write that fails (a full disk, an interruption) cuts the file back to ``end``
    where it can (a FIFO cannot) and raises: the file keeps whole entries only (JSON lines, a spool's entries)."""
    view = memoryview(data)
    try:
        while view:
            view = view[f.write(view):]
    except BaseException:
        with contextlib.suppress(OSError):
            f.truncate(end)
            f.seek(end)
        raise
    return f.tell() if f.seekable() else end


def _special_file(path: Path) -> bool:
    """Whether ``path`` exists and is not a regular file or a folder (a device, a FIFO, a socket), or is one of the
    system's names for an open file (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``: with standard output
    redirected to a file they lead to a regular file, and renaming over them replaced the link itself)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return True
    name = os.path.abspath(path)
    return not stat.S_ISDIR(mode) and (name in ("/dev/stdout", "/dev/stderr") or name.startswith(("/dev/fd/", "/proc/")))


def _write_into(dst: Path, write: Callable[[Any], Any]) -> Path:
    """What ``write(f)`` writes, into the special file ``dst`` as it is (:func:`_special_file`). This process's own
    names for an open file (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``) are written through that file
    descriptor, where it stands: reopening the name truncated a regular file behind it (`--json /dev/stdout >> log`
    wiped the log, a review found)."""
    fd = _own_descriptor(dst)
    if fd in (1, 2):  # what Python holds for it goes first (the table before the JSON, in order)
        import sys

        with contextlib.suppress(Exception):
            (sys.stdout if fd == 1 else sys.stderr).flush()
    try:
        with (os.fdopen(os.dup(fd), "wb") if fd is not None else open(dst, "wb")) as f:
            write(f)
    except OSError as e:
        raise _naming(e, dst) from None
    return dst


def _own_descriptor(path: Path) -> int | None:
    """The file descriptor ``path`` names in this process (``/dev/stdout`` 1, ``/dev/stderr`` 2, ``/dev/fd/N`` and
    ``/proc/self/fd/N`` N), or None."""
    name = os.path.abspath(path)
    if name in ("/dev/stdout", "/dev/stderr"):
        return 1 if name == "/dev/stdout" else 2
    for prefix in ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return None


def _copy_of(src: str | os.PathLike) -> Callable[[Any], Any]:
    """A writer of the file ``src``'s bytes (for :func:`_write_into`)."""
    import shutil

    def write(f) -> None:
        with open(src, "rb") as g:
            shutil.copyfileobj(g, f)

    return write


def temp_name_prefix(dst: Path) -> str:
    """The temporary's name prefix beside ``dst``: at most 100 bytes of its name (a 250-byte name, legal itself,
    made the temporary's name longer than the 255 bytes a file system takes)."""
    name = dst.name.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore")
    return f".{name}."


def _naming(e: OSError, dst: Path) -> OSError:
    """``e`` as an error about ``dst`` (its errno and reason kept)."""
    if e.errno is None:
        return e
    return OSError(e.errno, e.strerror, str(dst))


def _mode_for(dst: Path) -> int:
    """The permissions a file written at ``dst`` gets: those of the file it replaces, else what ``open()``
    gives a new file (0666 less the umask). ``mkstemp`` makes 0600 files: bundles and results written
    through it could not be read by another user (a service account, a container's user)."""
    try:
        return dst.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        try:  # Linux: read it without changing it (os.umask sets it, racing other threads)
            with open("/proc/self/status") as f:
                _UMASK = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Flush ``tmp`` (a file another library wrote: ``torch.save``, safetensors) to disk and rename it over
    ``path``: after a power loss ``path`` is the old file or the new one, never an empty one. It gets the
    permissions a file written at ``path`` gets (:func:`_mode_for`: safetensors writes through a 0600 temporary
    file). ``tmp`` is removed if this fails."""
    if _special_file(Path(path)):  # a device or a pipe (--json /dev/stdout): written into, the temporary removed
        try:
            return _write_into(Path(path), _copy_of(tmp))
        finally:
            Path(tmp).unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):  # a file system without Unix modes (vfat, exFAT, CIFS): as it is
            os.chmod(tmp, _mode_for(Path(path)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(path)


def write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` (a library's own writer: ``torch.save``, safetensors' ``save_file``) to ``path + ".tmp"``, then
    :func:`commit_file`. A failed write removes the temporary and names ``path``; a full disk is said as one
    (``OSError`` ENOSPC): torch reports it as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``,
    which reached users as a traceback with ``last.pt.tmp`` left filling the disk."""
    dst = Path(path)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _naming(e, dst) from None
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        write(tmp)
    except BaseException as e:
        full = isinstance(e, Exception) and not isinstance(e, OSError) and _failed_write(e) and _disk_full(dst.parent)
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, dst) from None
        if not full:
            raise
    else:
        return commit_file(tmp, dst)
    # raised outside the handler: no __context__ keeps torch's writer (and the deleted file's space) alive
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))


#: how the writers edgeseg calls report a write the disk refused (torch's zip writer, safetensors' Rust writer)
_WRITE_FAILURES = ("unexpected pos", "failed writing", "basic_ios::clear", "iostream error", "os error 28",
                   "no space left", "storagefull", "file write failed")


def _failed_write(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) reads as a write that failed, not another writer error."""
    seen = 0
    while e is not None and seen < 5:
        if any(w in str(e).lower() for w in _WRITE_FAILURES):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    """Whether the file system holding ``folder`` has less than ``margin`` bytes left for this user."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False
    return st.f_bavail * st.f_frsize < margin


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for what edgeseg writes: numpy scalars and arrays, paths, tuples of them."""
    import sys

    np = sys.modules.get("numpy")  # only convert numpy objects if numpy is already in use
    if np is not None:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps_json(obj: Any) -> str:
    """``obj`` as indented JSON text with a trailing newline (raises TypeError for what cannot be written)."""
    return json.dumps(obj, indent=2, default=json_default) + "\n"


def write_json(path: str | os.PathLike | None, obj: Any) -> Path | None:
    """Write ``obj`` as indented JSON to ``path`` atomically; ``path=None`` writes nothing (``--json`` not given).

    The JSON is built before anything is written, so an object that cannot be serialised leaves the
    destination untouched."""
    if path is None or path == "":
        return None
    return atomic_write_text(path, dumps_json(obj))


def atomic_copy_file(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the file ``src`` to ``path`` atomically (the copy appears whole or not at all)."""
    import shutil

    dst = Path(path)
    if _special_file(dst):
        return _write_into(dst, _copy_of(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(dst), suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, _mode_for(dst))
        os.replace(tmp, dst)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and os.fspath(tmp) in (e.filename, e.filename2):
            raise _naming(e, dst) from None  # the copy's destination: name the file being written
        raise
    return dst


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing ancestor of ``folder`` (itself included) that is not a directory, if any."""
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def writable_folder(folder: str | os.PathLike, target: str | os.PathLike, fix: str = _FIX) -> Path:
    """Create ``folder`` (with its parents) and check a file can be created in it; ``target`` is what
    will be written there (named in the error). Raises :class:`~edgeseg.errors.InputError`."""
    from .errors import InputError

    folder = Path(folder)
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise InputError(f"cannot write {target}: {blocker} is a file, not a folder", fix=fix)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot write {target}: cannot create the folder {folder} ({e.strerror or e})", fix=fix) from None
    try:
        tempfile.NamedTemporaryFile(dir=folder, prefix=".edgeseg-probe-").close()  # created, then removed
    except OSError as e:
        raise InputError(f"cannot write {target}: the folder {folder} does not take new files ({e.strerror or e})",
                         fix=fix) from None
    return folder


def writable_file(path: str | os.PathLike) -> Path:
    """``path`` as a file that may be created or replaced: not an existing folder, in a writable folder."""
    from .errors import InputError

    path = Path(path)
    example = f"./out/{path.name or 'result'}"
    if _special_file(path):  # /dev/null, a FIFO, >(jq .): written into, not replaced
        if not os.access(path, os.W_OK):
            raise InputError(f"cannot write {path}: no permission", fix=f"choose a path you can write to, e.g. {example}")
        return path
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder", fix=f"name a file in it, e.g. {path / 'result'}"
                                                                     f"{'.json' if not path.suffix else path.suffix}")
    writable_folder(path.parent, path, fix=f"choose a path in a folder you can write to, e.g. {example}")
    return path
