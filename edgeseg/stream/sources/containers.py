"""What a video file's container says about its frames, read from the file itself (GStreamer does not report it):
an AVI's announced frame count (a file cut short) and an MP4/MOV video track's own duration (a clip whose audio
runs on past the picture). Standard library only."""
from __future__ import annotations

import os
from typing import Iterator

__all__ = ["avi_header_frames", "mp4_video_duration_ns"]


def avi_header_frames(path: str) -> int | None:
    """The frame count an AVI's main header (``avih`` ``dwTotalFrames``) announces, for a file cut short (shorter
    than its RIFF header says it is), else None (not an AVI, a whole file, a recording never finalised).
    GStreamer's ``avidemux`` does not report it: on a cut file (no index) it scans what is there, and its
    duration is that of the frames left, so the cut went unnoticed. A whole file is left to the demuxer: its
    header count may include the empty chunks a variable-frame-rate writer puts where frames were dropped."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        size = os.path.getsize(path)
    except OSError:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"AVI " or size >= struct.unpack_from("<I", head, 4)[0] + 8:
        return None
    at = head.find(b"avih", 12)
    if at < 0 or len(head) < at + 8 + 20:
        return None
    total = struct.unpack_from("<I", head, at + 8 + 16)[0]  # after dwMicroSecPerFrame, MaxBytesPerSec, Padding, Flags
    return total or None


def _header(buf: bytes, at: int, room: int) -> tuple[bytes, int, int] | None:
    """``(type, header length, box size)`` of the ISO-BMFF box header at ``buf[at:]``, ``room`` bytes being left in
    its parent (a size of 0 runs to its end); None when the header or the box does not fit."""
    import struct

    if room < 8 or len(buf) < at + 8:
        return None
    size, kind = struct.unpack_from(">I4s", buf, at)
    head = 8
    if size == 1:
        if room < 16 or len(buf) < at + 16:
            return None
        size, head = struct.unpack_from(">Q", buf, at + 8)[0], 16
    elif size == 0:
        size = room
    if size < head or size > room:
        return None
    return kind, head, size


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    at = start
    while (box := _header(data, at, end - at)) is not None:
        kind, head, size = box
        yield kind, at + head, at + size
        at += size


def _moov(path: str) -> bytes | None:
    """The ``moov`` box of an MP4/MOV file (wherever it is: first or last), read by box headers; None when absent."""
    try:
        with open(path, "rb") as f:
            size_left = os.fstat(f.fileno()).st_size
            at = 0
            while True:
                f.seek(at)
                box = _header(f.read(16), 0, size_left - at)
                if box is None:
                    return None
                kind, head, size = box
                if kind == b"moov":
                    f.seek(at + head)
                    return f.read(size - head) if size <= 64 << 20 else None  # an index over 64 MiB: not read
                at += size
    except OSError:
        return None


def mp4_video_duration_ns(path: str) -> int | None:
    """The presentation duration of an MP4/MOV file's one video track (its ``tkhd`` duration, edits included, in the
    movie's timescale), or None (not an MP4, fragmented, no or several video tracks, unreadable). GStreamer reports the
    container's duration, which is its longest track's: a clip whose audio runs on past the picture was called
    truncated (25 frames decoded 'of the 75 its container announces')."""
    import struct

    moov = _moov(path)
    if not moov:
        return None
    timescale, videos = None, []
    for kind, start, end in _boxes(moov):
        if kind == b"mvex":  # fragmented: the samples (and the track's length) are in the fragments
            return None
        if kind == b"mvhd" and end - start >= 24:
            version = moov[start]
            timescale = struct.unpack_from(">I", moov, start + (20 if version == 1 else 12))[0]
        if kind == b"trak":
            tkhd_duration, handler = None, None
            for sub, s0, s1 in _boxes(moov, start, end):
                if sub == b"tkhd" and s1 - s0 >= 32:
                    version = moov[s0]
                    tkhd_duration = (struct.unpack_from(">Q", moov, s0 + 28)[0] if version == 1
                                     else struct.unpack_from(">I", moov, s0 + 20)[0])
                if sub == b"mdia":
                    for leaf, l0, l1 in _boxes(moov, s0, s1):
                        if leaf == b"hdlr" and l1 - l0 >= 12:
                            handler = moov[l0 + 8:l0 + 12]
            if handler == b"vide":
                videos.append(tkhd_duration)
    if len(videos) != 1 or not videos[0] or not timescale or videos[0] in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        return None
    return int(videos[0] * 1_000_000_000 // timescale)
