"""A video sink in segments, for runs of days: ``--sink out.mp4 --segment-s 600`` writes ``out.00000.mp4``,
``out.00001.mp4``, ... each ``segment_s`` seconds of video long. Each file is finished (its index written, renamed from
its ``.part`` name) while the next one records, so a long run is a series of whole, playable files rather than one
that grows for ever (and a kill loses at most the segment being written's last second, as before). With
``keep_segments`` only the newest that many of the run's files are kept (a dash cam's loop recording); files the run
did not write are never touched, and a run continues the numbering of an earlier one's files instead of replacing
them. Standard library only; the writers are :class:`~edgeseg.stream.sinks.video.Mp4Sink`'s and
:class:`~edgeseg.stream.sinks.files.JsonLinesSink`'s (``--json-out res.jsonl``: ``res.00000.jsonl``, ...)."""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...errors import StreamError

log = logging.getLogger("edgeseg.stream")

DIGITS = 5  # out.00000.mp4: ten thousand 10-minute segments are 69 days; more get a sixth digit


def segment_path(path: Path, index: int) -> Path:
    """The file of segment ``index`` of a sink named ``path``: ``<stem>.<index, 5 digits>.<suffix>``."""
    return path.with_name(f"{path.stem}.{index:0{DIGITS}d}{path.suffix}")


def next_free_index(path: Path) -> int:
    """The first segment number after every segment file (or its ``.part``) of ``path`` already in its folder: a
    second run beside an earlier one's files goes on from them instead of replacing them."""
    pattern = re.compile(rf"{re.escape(path.stem)}\.(\d{{{DIGITS},}})(?:\.part)?{re.escape(path.suffix)}")
    try:
        names = os.listdir(path.parent if str(path.parent) else ".")
    except OSError:
        return 0
    found = [int(m.group(1)) for n in names if (m := pattern.fullmatch(n))]
    return max(found) + 1 if found else 0


def claim_segment(path: Path, index: int) -> int:
    """The first segment number from ``index`` on whose file and ``.part`` do not exist, its ``.part`` created (empty)
    so that no other run takes it: two runs with one ``--sink`` (a restart while the old run finishes) otherwise
    counted into each other's files. Where the file cannot be created, the number is used as it is (the writer then
    says why it cannot write)."""
    while True:
        seg = segment_path(path, index)
        part = seg.with_name(f"{seg.stem}.part{seg.suffix}")
        if not seg.exists():
            try:
                os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                return index
            except FileExistsError:  # another run's: the next number
                index += 1
                continue
            except OSError:
                return index
        index += 1


def segment_frames(segment_s: float, fps: float) -> int:
    """Frames in a segment of ``segment_s`` seconds at ``fps`` (for frames without a source time:
    :class:`SegmentClock`); a length past any count (``1e308`` s) is one file."""
    n = segment_s * fps
    return max(1, round(n)) if math.isfinite(n) and n < sys.maxsize else sys.maxsize


class SegmentClock:
    """Whether a segment is full when ``frame`` comes: cuts fall on a grid of ``segment_s`` seconds of its source's
    time (``Frame.pts_ns``) from that source's first frame (less half a frame period, so a constant-rate source cuts
    every ``segment_frames`` frames as before), as ffmpeg's segment muxer cuts: a segment ends at the first frame at or
    past its grid line, and after an outage (a camera away, a reconnect) the first frame starts a segment that ends at
    the next line, so later cuts stay on the grid (session 57: before, each segment was measured from its own first
    frame, so every cut after an outage moved by it). One file of several sources' frames (the JSON lines) has no
    common grid, their clocks being their own: a segment is full when a source's time since its first frame in it
    reaches ``segment_s``, as before (a grid per source cut at every source's lines). A source whose time goes
    backwards (a camera that reconnected with its clock anew, a looping file) keeps the time it had and counts on from
    there, a frame period later; a source without times, ``segment_frames`` frames a segment. Before session 53, segments were always
    ``round(segment_s x fps)`` frames: a live camera the model took a third of the frames of wrote "2 s" files of 4-6 s
    (an audit), and ``--segment-s 600`` was not 10 minutes. The MP4 and JSON-lines sinks use the same rule on the same
    frames, so their segments still begin at the same frame. ``rate_of(source_id)``: each source's rate where one sink
    holds several sources' frames (the JSON lines; session 56: the fastest source's rate was every source's, where each
    source's MP4 takes its own)."""

    def __init__(self, segment_s: float, fps: float, by_time: bool = True,
                 rate_of: Callable[[Any], float] | None = None):
        self.by_time = by_time  # False: frames only (an output rate given: its files' times are index / fps)
        self.segment_s = float(segment_s)
        self.period_ns = 1e9 / fps
        self.segment_ns = float(segment_s) * 1e9 - 0.5 * self.period_ns
        self.max_frames = segment_frames(segment_s, fps)
        self._rate_of = rate_of
        self._rates: dict[Any, tuple[float, float, int]] = {}  # source id -> (period, segment less half a period, frames)
        self._run: dict[Any, list[float]] = {}  # source id -> [first pts of its current run, last pts, time before it]
        self._begun: dict[Any, float] = {}  # source id -> its time at its first frame of the current segment
        self._origin: dict[Any, float] = {}  # source id -> its grid's origin: the first segment's start with a time
        self._count: dict[Any, int] = {}  # source id -> its frames in the current segment
        self._sources: set[Any] = set()  # every source seen: with several, no common grid (their clocks differ)

    def _rate(self, sid: Any) -> tuple[float, float, int]:
        """(frame period ns, segment length less half a period ns, frames in a segment) of source ``sid``."""
        got = self._rates.get(sid)
        if got is None:
            fps = self._rate_of(sid) if self._rate_of is not None else None
            got = (self.period_ns, self.segment_ns, self.max_frames) if not fps else (
                1e9 / fps, self.segment_s * 1e9 - 0.5e9 / fps, segment_frames(self.segment_s, fps))
            self._rates[sid] = got
        return got

    def _time(self, sid: Any, pts: int) -> float | None:
        """The source's time (ns from its first frame, outages kept, clock restarts bridged) at a frame of time
        ``pts`` (None: it has no times)."""
        run = self._run.get(sid)
        if run is None or pts is None or pts < 0:
            return None
        first, last, before = run
        if pts < last:  # its clock went back: on from the last frame
            return before + (last - first) + self._rate(sid)[0]
        return before + (pts - first)

    def full(self, frame: Any) -> bool:
        sid = getattr(frame, "source_id", None)
        if not self._count.get(sid):
            return False
        t = self._time(sid, getattr(frame, "pts_ns", -1)) if self.by_time else None
        period, segment_ns, max_frames = self._rate(sid)
        begun = self._begun.get(sid)
        if t is None or begun is None:
            return self._count[sid] >= max_frames
        if len(self._sources) > 1:  # one file for several sources (the JSON lines): each one's time in this segment,
            return t - begun >= segment_ns  # as before (a grid each would cut at every source's lines: a review)
        length, origin = segment_ns + 0.5 * period, self._origin[sid]  # the grid's step and origin
        return t >= origin + (math.floor((begun - origin + 0.5 * period) / length) + 1) * length - 0.5 * period

    def add(self, frame: Any) -> None:
        sid = getattr(frame, "source_id", None)
        pts = getattr(frame, "pts_ns", -1)
        self._count[sid] = self._count.get(sid, 0) + 1
        self._sources.add(sid)
        first_of_segment = self._count[sid] == 1
        if first_of_segment:
            self._begun.pop(sid, None)  # (a segment whose first frame has no time: counted in frames)
        if pts is None or pts < 0:
            return
        run = self._run.get(sid)
        if run is None:
            run = self._run[sid] = [pts, pts, 0.0]
        elif pts < run[1]:  # restarted: the time so far kept
            run = self._run[sid] = [pts, pts, run[2] + (run[1] - run[0]) + self._rate(sid)[0]]
        else:
            run[1] = pts
        if first_of_segment:
            self._begun[sid] = run[2] + (pts - run[0])
            self._origin.setdefault(sid, self._begun[sid])  # (a first segment counted in frames: the grid from here)

    def restart(self) -> None:
        """A new segment begins (each source's time runs on: the grid is the run's)."""
        self._count.clear()
        self._begun.clear()


@dataclass
class Segment:
    """One file of a segmented sink: what ``stats_json`` lists under ``segments``."""

    file: str
    first_frame: int  # of the sink's frames, 0-based
    started: str  # local wall-clock time its first frame was written, ISO 8601
    frames: int = 0
    state: str = "recording"  # recording -> finished (renamed into place) | failed | removed (keep_segments)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "first_frame": self.first_frame, "frames": self.frames, "started": self.started,
                "state": self.state}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Finisher:
    """Finishes segments in a thread of its own, one after the other, so the sink thread records the next segment
    meanwhile (closing an MP4 waits for the encoder to drain and the muxer to write the index: a frame-time's worth
    or more). A failure is kept and raised by :meth:`check` (the next frame's write) or :meth:`join` (the close)."""

    keep: int | None = None  # keep_segments: the newest this many finished files stay
    remove: Callable[[str], None] = os.remove  # how an old one goes (a PNG segment is a folder)
    failure: StreamError | None = None
    finished: list[Segment] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)  # failure: set by the finishing thread, taken by check

    def submit(self, finish: Callable[[], None], segment: Segment) -> None:
        """Run ``finish()`` (close the writer, rename the file) for ``segment`` after the one before it is done."""
        before = self._thread

        def run() -> None:
            if before is not None:
                before.join()
            self._finish(finish, segment)

        self._thread = threading.Thread(target=run, name=f"edgeseg-segment-{segment.first_frame}", daemon=True)
        self._thread.start()

    def finish_now(self, finish: Callable[[], None], segment: Segment) -> None:
        """The last segment, finished in the caller's thread (after those in flight)."""
        self.join(raise_failure=False)
        self._finish(finish, segment)
        self.check()

    def _finish(self, finish: Callable[[], None], segment: Segment) -> None:
        try:
            finish()
        except Exception as e:  # a full disk, an encoder error: that file stays a .part file, playable to its last second
            segment.state = "failed"
            with self._lock:
                if self.failure is None:
                    self.failure = e if isinstance(e, StreamError) else StreamError(f"{segment.file}: {e}")
            return
        segment.state = "finished"
        self.finished.append(segment)
        self._prune()

    def _prune(self) -> None:
        if not self.keep:
            return
        while len(self.finished) > self.keep:
            old = self.finished.pop(0)
            try:
                self.remove(old.file)
                old.state = "removed"
                log.debug("removed %s (--keep-segments %d)", old.file, self.keep)
            except FileNotFoundError:  # removed by someone else already
                old.state = "removed"
            except OSError as e:  # left in place, said: the loop goes on
                log.warning("%s: cannot remove it (%s); --keep-segments %d keeps it", old.file,
                            e.strerror or e, self.keep)

    def check(self) -> None:
        """Raise the failure of a segment finished in the background, once."""
        with self._lock:
            failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    def join(self, raise_failure: bool = True) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()
        if raise_failure:
            self.check()
