"""An MP4 piped into ``--source -`` (:mod:`edgeseg.stream.sources.stdin_mp4`): the pipe's head is looked at without
taking it, and only an MP4/MOV that is not fragmented is read whole from a file (GStreamer's demuxer loses its frames
in a pipe: the dash-cam's 175 of 221, ``mp4mux``'s 1 of 6); a fragmented MP4, MPEG-TS or anything else stays a pipe."""
from __future__ import annotations

import contextlib
import os
import struct
import threading

import pytest

from edgeseg.stream.sources.stdin_mp4 import needs_file, peek, spool


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


FTYP = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2avc1mp41")
TRAK = box(b"trak", box(b"tkhd", bytes(84)) + box(b"mdia", bytes(200)))


@pytest.mark.parametrize("head, complete, want", [
    (FTYP + box(b"moov", box(b"mvhd", bytes(100)) + TRAK) + box(b"mdat", bytes(64)), False, True),  # faststart
    (FTYP + box(b"mdat", bytes(5000)), False, True),  # mp4mux's default: the index after the pictures
    (FTYP + box(b"free", bytes(8)) + box(b"wide") + box(b"mdat", bytes(10)), False, True),
    (FTYP + box(b"moov", box(b"mvhd", bytes(100)) + TRAK + box(b"mvex", box(b"trex", bytes(24)))) + box(b"moof"), False,
     False),  # fragmented: what ffmpeg or a camera streams live
    (b"\x47" + bytes(187) * 2, False, False),  # MPEG-TS
    (b"\x1a\x45\xdf\xa3" + bytes(60), False, False),  # Matroska
    (FTYP[:10], False, None), (FTYP[:10], True, False),  # too short to tell: wait, or (all there is) not an MP4
    (FTYP + struct.pack(">I4s", 50_000, b"moov") + bytes(100), False, None),  # an index longer than the look so far
    (FTYP + struct.pack(">I4s", 50_000, b"moov") + bytes(100), True, True),  # ... that long: sample tables
    (struct.pack(">I4sQ", 1, b"ftyp", 24) + b"isom" * 2 + box(b"mdat"), False, True),  # a 64-bit box size
])
def test_which_heads_need_a_file(head, complete, want):
    assert needs_file(head, complete) is want


def test_the_pipe_is_looked_at_without_taking_anything():
    data = FTYP + box(b"mdat", bytes(3000)) + box(b"moov", bytes(500))
    r, w = os.pipe()
    try:
        os.write(w, data)
        head, _ = peek(r, timeout_s=0.2)
        assert head == data and needs_file(head, False) is True
        os.close(w)
        w = -1
        assert os.read(r, 1 << 16) == data  # every byte still there for the reader
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_slow_writer_is_waited_for_until_the_head_tells():
    r, w = os.pipe()
    first, rest = FTYP[:6], FTYP[6:] + box(b"moov", box(b"mvhd") + box(b"mvex")) + box(b"moof")

    def late():
        import time

        time.sleep(0.3)
        os.write(w, rest)

    os.write(w, first)
    t = threading.Thread(target=late)
    t.start()
    try:
        head, complete = peek(r, timeout_s=5.0)
        assert needs_file(head, complete) is False and head == first + rest
    finally:
        t.join()
        os.close(w)
        os.close(r)


def test_peek_of_what_is_not_a_pipe_is_none(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(FTYP)
    with open(f, "rb") as fh:
        assert peek(fh.fileno()) is None


def test_spool_copies_everything_leaves_no_file_and_names_a_full_disk(tmp_path, monkeypatch, small_disk):
    import tempfile

    from edgeseg.errors import StreamError

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # (TMPDIR is read once per process)
    data = FTYP + box(b"mdat", os.urandom(200_000))
    r, w = os.pipe()
    os.set_blocking(r, False)  # (a review: a non-blocking stdin failed the copy with EAGAIN)
    writer = threading.Thread(target=lambda: (_write_all(w, data), os.close(w)))
    writer.start()
    fd = spool(r)
    writer.join()
    os.close(r)
    try:
        assert list(tmp_path.iterdir()) == []  # the copy has no name: nothing to leave behind
        assert open(f"/proc/self/fd/{fd}", "rb").read() == data
    finally:
        os.close(fd)
    # a stop while the writer is silent ends the copy (a review: only the writer's end did)
    r, w = os.pipe()
    os.write(w, FTYP)
    stop_at = __import__("time").monotonic() + 0.3
    assert spool(r, stopped=lambda: __import__("time").monotonic() > stop_at) is None
    os.close(w)
    os.close(r)
    disk = small_disk(1)
    monkeypatch.setenv("TMPDIR", str(disk))
    monkeypatch.setattr(tempfile, "tempdir", None)
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (_write_all(w, FTYP + bytes(3 << 20)), os.close(w)))
    writer.start()
    with pytest.raises(StreamError, match="copying it into .* failed") as e:
        spool(r)
    os.close(r)
    writer.join()
    assert "TMPDIR" in str(e.value) and list(disk.iterdir()) == []


def test_a_silent_writer_is_not_waited_for_once_stopped():
    r, w = os.pipe()
    try:
        assert peek(r, stopped=lambda: True) is None  # nothing came and the run stopped: nothing known, nothing taken
    finally:
        os.close(w)
        os.close(r)


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):  # the reader gave up (the disk was full)
        while data:
            data = data[os.write(fd, data):]
