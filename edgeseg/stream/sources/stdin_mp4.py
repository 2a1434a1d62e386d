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


def peek(fd: int = 0, want: int = PEEK_BYTES, timeout_s: float = 5.0) -> tuple[bytes, bool] | None:
    """``(head, complete)``: the first bytes waiting in the pipe ``fd``, left there (``tee(2)`` copies them into a pipe
    of our own), and whether no more will come within this look (the pipe is full, or the writer gave nothing more for
    ``timeout_s``: the head is all there is to judge by). Waits for the first byte. None where ``fd`` is not a pipe
    or ``tee`` cannot be used (not Linux): then nothing is known and nothing was taken."""
    libc = _libc() if sys.platform.startswith("linux") else None
    if libc is None:
        return None
    try:
        capacity = min(fcntl.fcntl(fd, F_GETPIPE_SZ), want)
    except OSError:  # not a pipe
        return None
    head, grew_at, flags = b"", time.monotonic(), 0
    while True:
        r, w = os.pipe()
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, F_SETPIPE_SZ, capacity)
            n = libc.tee(fd, w, ctypes.c_size_t(capacity), ctypes.c_uint(flags))
            if n < 0:
                if ctypes.get_errno() != errno.EAGAIN:  # (EAGAIN: nothing waiting) anything else: tee cannot be used
                    return None
                n = 0
            got = b""
            while len(got) < n:
                got += os.read(r, n - len(got))
        finally:
            os.close(r)
            os.close(w)
        flags = SPLICE_F_NONBLOCK  # (the first look waits for data; later ones see what has come since)
        now = time.monotonic()
        if len(got) > len(head):
            head, grew_at = got, now
        if n == 0 and not head:  # the writer closed without writing: an empty input
            return head, True
        verdict = needs_file(head, complete=False)
        if verdict is not None or len(head) >= capacity or now - grew_at >= timeout_s or _writer_gone(fd, head):
            return head, verdict is None
        time.sleep(0.01)


def _writer_gone(fd: int, head: bytes) -> bool:
    """Whether every byte the writer will send is already in the pipe (its write end closed: a poll for hang-up), so
    that the head seen is all there is."""
    import select

    p = select.poll()
    p.register(fd, select.POLLHUP)
    return any(ev & select.POLLHUP for _, ev in p.poll(0)) and len(head) > 0


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


def spool(fd: int = 0) -> str:
    """Copy everything from ``fd`` to its end into a temporary file (``$TMPDIR``); its path. A disk that fills is an
    error naming the file and the fix (the partial copy removed)."""
    handle, path = tempfile.mkstemp(prefix="edgeseg-stdin-", suffix=".mp4")
    try:
        with os.fdopen(handle, "wb") as out:
            while True:
                block = os.read(fd, 1 << 20)
                if not block:
                    break
                out.write(block)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise StreamError(f"standard input is an MP4 that must be read whole, and copying it to {path} failed "
                          f"({e.strerror or e})",
                          fix="set TMPDIR to a folder with room for the video, or give the file's path "
                              "(--source FILE, or --source - < FILE)") from None
    return path
