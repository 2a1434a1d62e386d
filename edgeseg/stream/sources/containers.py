"""What a video file's container says about its frames, read from the file itself (GStreamer does not report it,
or not right): an AVI's announced frame count (a file cut short), an MP4/MOV video track's own duration (a clip whose
audio runs on past the picture) and its colour range. Standard library only."""
from __future__ import annotations

import os
from typing import Iterator

__all__ = ["avi_header_frames", "mp4_full_range", "mp4_video_duration_ns"]


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


#: the sample entries of video tracks whose ``colr`` box :func:`mp4_full_range` reads (visual sample entries: 78
#: bytes of fields before their child boxes)
_VISUAL_ENTRY_FIELDS = 78


def mp4_full_range(path: str) -> bool | None:
    """Whether an MP4/MOV file's one video track says, in its ``colr`` box (``nclx``), that its samples are full
    range (0-255, as phones, many dash-cams and IP cameras record): True or False as the box says, None when there
    is no such box (QuickTime's ``nclc`` has no range), several video tracks, or the file is no MP4. GStreamer
    1.22's MP4 demuxer reports such files as limited range: their pictures came out washed out (7 levels on
    average, 20 at most)."""
    moov = _moov(path)
    if not moov:
        return None
    found = []
    for kind, start, end in _boxes(moov):
        if kind != b"trak":
            continue
        entries = _stsd_entries(moov, start, end)
        if entries is None:
            continue
        flags = [_nclx_full_range(moov, s0 + _VISUAL_ENTRY_FIELDS, s1) for s0, s1 in entries]
        found.append(next((f for f in flags if f is not None), None))
    return found[0] if len(found) == 1 else None


def _stsd_entries(moov: bytes, start: int, end: int) -> list[tuple[int, int]] | None:
    """The sample entries (payload start, end) of a ``trak`` whose handler is video, else None."""
    for sub, s0, s1 in _boxes(moov, start, end):
        if sub != b"mdia":
            continue
        kids = {leaf: (l0, l1) for leaf, l0, l1 in _boxes(moov, s0, s1)}
        if b"hdlr" not in kids or moov[kids[b"hdlr"][0] + 8:kids[b"hdlr"][0] + 12] != b"vide":
            return None
        box: tuple[int, int] | None = kids.get(b"minf")
        for name in (b"stbl", b"stsd"):
            if box is None:
                return None
            box = next(((b0, b1) for leaf, b0, b1 in _boxes(moov, *box) if leaf == name), None)
        if box is None or box[1] - box[0] < 8:
            return None
        return [(e0, e1) for _, e0, e1 in _boxes(moov, box[0] + 8, box[1])]  # after version, flags, entry count
    return None


def _nclx_full_range(moov: bytes, start: int, end: int) -> bool | None:
    for kind, s0, s1 in _boxes(moov, start, end):
        if kind == b"colr" and s1 - s0 >= 11 and moov[s0:s0 + 4] == b"nclx":
            return bool(moov[s0 + 10] & 0x80)  # after the type and three 16-bit code points
    return None
