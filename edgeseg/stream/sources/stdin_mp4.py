"""An MP4/MOV piped into ``--source -``: read whole from a file, not through the pipe.

GStreamer's MP4 demuxer reads a pipe in push mode, where it cannot seek: a file whose audio and video are not
interleaved, or whose index (``moov``) comes after the pictures (``mp4mux``'s default), loses frames without an error
(the dash-cam's MP4 piped with ``cat``: 175 of its 221 frames; ``mp4mux``'s: 1 of 6). Only a fragmented MP4 (``moov``
with ``mvex``, then ``moof``/``mdat`` pairs: what ffmpeg or a camera streams live) is made to be read that way.

So before the pipeline starts, :func:`peek` looks at the pipe's first bytes without taking them (Linux ``tee(2)``):
an MP4/MOV that is not fragmented (:func:`needs_file`) is complete before it can be piped at all (its index covers
every sample), and :func:`spool` copies it whole into a temporary file that is read as a file is; anything else
(MPEG-TS, Matroska, raw frames, a fragmented MP4) stays a pipe, untouched.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import struct
import sys
import tempfile
import time
from typing import Any, Callable

from ...errors import StreamError

F_GETPIPE_SZ = 1032
F_SETPIPE_SZ = 1031
SPLICE_F_NONBLOCK = 2
#: boxes that may come between ``ftyp`` and ``moov`` (or ``mdat``) without telling anything
_NEUTRAL = {b"free", b"skip", b"wide", b"uuid", b"pdin", b"junk", b"prfl"}
#: the most of a pipe's head looked at (a fragmented file's ``moov`` holds no sample tables: a few KB)
PEEK_BYTES = 1 << 20


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def peek(fd: int = 0, want: int = PEEK_BYTES, timeout_s: float = 5.0,
         stopped: Callable[[], bool] = lambda: False) -> tuple[bytes, bool] | None:
    """``(head, complete)``: the first bytes waiting in the pipe ``fd``, left there (``tee(2)`` copies them into a pipe
    of our own), and whether no more will come within this look (the pipe is full, the writer closed it, or gave
    nothing more for ``timeout_s``: the head is all there is to judge by). Waits for the first byte, polling, until
    ``stopped()``. None where ``fd`` is not a pipe, ``tee`` cannot be used (not Linux), or the caller stopped: then
    nothing is known and nothing was taken. A non-blocking pipe is read as a blocking one is."""
    libc = _libc() if sys.platform.startswith("linux") else None
    if libc is None:
        return None
    try:
        capacity = min(fcntl.fcntl(fd, F_GETPIPE_SZ), want)
    except OSError:  # not a pipe
        return None
    if not _wait_readable(fd, stopped):
        return None
    head, grew_at = b"", time.monotonic()
    while True:
        got = _tee(libc, fd, capacity)
        if got is None:
            return None
        now = time.monotonic()
        if len(got) > len(head):
            head, grew_at = got, now
        gone = _writer_gone(fd)
        if not head and gone:  # the writer closed without writing: an empty input
            return head, True
        verdict = needs_file(head, complete=False)
        if verdict is not None or len(head) >= capacity or now - grew_at >= timeout_s or (gone and head) or stopped():
            return head, verdict is None
        time.sleep(0.01)


def _wait_readable(fd: int, stopped: Callable[[], bool]) -> bool:
    """Until ``fd`` has data or its writer has gone (True), or ``stopped()`` (False); 0.1 s polls."""
    import select

    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLHUP)
    while not p.poll(100):
        if stopped():
            return False
    return True


def _tee(libc: Any, fd: int, capacity: int) -> bytes | None:
    """What is in the pipe now (up to ``capacity``), not taken: ``tee(2)`` into a pipe of our own, never blocking
    (an interrupted call is tried again). None where tee fails otherwise."""
    r, w = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, capacity)
        while True:
            n = libc.tee(fd, w, ctypes.c_size_t(capacity), ctypes.c_uint(SPLICE_F_NONBLOCK))
            if n >= 0:
                break
            err = ctypes.get_errno()
            if err == errno.EAGAIN:  # nothing waiting just now
                return b""
            if err != errno.EINTR:
                return None
        got = b""
        while len(got) < n:
            got += os.read(r, n - len(got))
        return got
    finally:
        os.close(r)
        os.close(w)


def _writer_gone(fd: int) -> bool:
    """Whether the pipe's write end is closed (a poll for hang-up): every byte the writer sent is in the pipe."""
    import select

    p = select.poll()
    p.register(fd, select.POLLHUP)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


def needs_file(head: bytes, complete: bool) -> bool | None:
    """Whether a stream starting with ``head`` is an MP4/MOV that is not fragmented (True: read it from a file), not
    one or a fragmented one (False: a pipe reads it whole). None: ``head`` is too short to tell, and ``complete`` is
    false (more may come). With ``complete``, an index longer than ``head`` holds sample tables: not fragmented."""
    def box(at: int) -> tuple[int, bytes] | None:
        if len(head) < at + 8:
            return None
        size, kind = struct.unpack(">I4s", head[at:at + 8])
        if size == 1:
            if len(head) < at + 16:
                return None
            size = struct.unpack(">Q", head[at + 8:at + 16])[0]
        return size, kind

    first = box(0)
    if first is None:
        return None if not complete else False
    if first[1] not in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return False  # not an MP4/MOV
    at = 0
    while True:
        found = box(at)
        if found is None:
            # the head ends before an index or pictures: nothing proves the stream complete (a live one that sent its
            # ftyp and waits): left a pipe, as before
            return None if not complete else False
        size, kind = found
        if kind == b"moov":
            if len(head) >= at + size:
                return b"mvex" not in head[at:at + size]
            return None if not complete else True  # an index bigger than the look: sample tables, not fragments
        if kind == b"mdat":
            return True  # the pictures before the index
        if kind == b"moof":
            return False
        if kind != b"ftyp" and kind not in _NEUTRAL:
            return False  # something else: leave it to GStreamer
        if size < 8:
            return False  # a box running to the end (size 0) or broken: nothing to judge by
        at += size


def spool(fd: int = 0, stopped: Callable[[], bool] = lambda: False) -> int | None:
    """Copy everything from ``fd`` to its end into a temporary file (``$TMPDIR``), removed from its folder at once:
    the descriptor returned reads it (``/proc/self/fd/N``; nothing is left behind whatever ends the process). None
    when ``stopped()`` first (the copy dropped, and what it read with it: the run is stopping). A disk that fills is an error naming the folder and the fix; a
    non-blocking ``fd`` is waited on, not an error."""
    handle, path = tempfile.mkstemp(prefix="edgeseg-stdin-", suffix=".mp4")
    os.unlink(path)
    try:
        while True:
            if not _wait_readable(fd, stopped):
                os.close(handle)
                return None
            try:
                block = os.read(fd, 1 << 20)
            except BlockingIOError:  # (a non-blocking pipe between the poll and the read)
                continue
            if not block:
                break
            view = memoryview(block)
            while view:
                view = view[os.write(handle, view):]
    except OSError as e:
        os.close(handle)
        raise StreamError(f"standard input is an MP4 that must be read whole, and copying it into "
                          f"{os.path.dirname(path)} failed ({e.strerror or e})",
                          fix="set TMPDIR to a folder with room for the video, or give the file's path "
                              "(--source FILE, or --source - < FILE)") from None
    except BaseException:
        os.close(handle)
        raise
    os.lseek(handle, 0, os.SEEK_SET)
    return handle
