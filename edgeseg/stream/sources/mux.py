"""Several sources as one stream (the first half of a DeepStream-style stream muxer).

Each source runs in its own reader thread; frames arrive interleaved in arrival order, each keeping
its own ``source_id`` and per-source ``index``. Batching them for the model is the inference stage's
job (``InferenceStage(max_batch=N, batch_timeout_s=T)``). Under back-pressure a file-like source's reader
waits for room in the shared buffer (none of its frames is lost), and a live source's frame never waits:
while a file is being read each live source holds one slot, its newest frame (counted in ``dropped`` when
it replaces an older one), so neither starves the other; with no file left, live frames share the whole
buffer and a full one loses its oldest live frame. (Before, the whole buffer dropped its oldest frame once
any source was live: a file read beside a camera lost 13 of its 30 frames, even while the camera gave
none.) Frames are taken from the sources in turn (round robin), each source's in its own order, so cameras
faster than the model share it equally (first in, first out gave one of four cameras 96 % of the frames). A
source that fails is
logged and the others go on; when all have ended, a :class:`StreamError` names every source that failed
(its id, the frames it gave, its error; a lone failure whose message names its source is raised as it is).
A camera whose device does not exist when the run starts, or goes away during it, joins when it appears, the others
running meanwhile (:mod:`edgeseg.stream.sources.awaited`).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from ...errors import EdgesegError, InputError, StreamError
from ...structures.frame import Frame
from ..base import RECEIVED, FrameBuffer, Source
from .awaited import AwaitedCamera, with_cameras

log = logging.getLogger("edgeseg.stream")


def _name(source: Source) -> str:
    """What the frames of ``source`` are tagged with (its ``source_id``), else its URI or class."""
    return getattr(source, "source_id", None) or source.uri or type(source).__name__


def unique_names(ids: Sequence[str]) -> list[str]:
    """Each source's id in a run with several: as given, a repeated one with ``#2``, ``#3``, ... (an audit: two sources
    of one URI were one source in the stats, the JSON lines and the MP4s)."""
    seen: dict[str, int] = {}
    out = []
    for sid in ids:
        seen[sid] = seen.get(sid, 0) + 1
        out.append(sid if seen[sid] == 1 else f"{sid}#{seen[sid]}")
    return out


class MultiSource(Source):
    def __init__(self, sources: Sequence[Source | str], buffer_size: int = 8, **options: Any):
        super().__init__()
        from . import open_source

        if not sources:
            raise InputError("MultiSource needs at least one source")
        # (each camera's wait for its device: here too for MultiSource([...]) in an application, not only edgeseg run)
        names = unique_names([s if isinstance(s, str) else _name(s) for s in sources])
        self.sources = with_cameras([(s, functools.partial(open_source, s, **{"name": n, **options}),
                                      options.get("name", n)) for s, n in zip(sources, names)])
        for s, n in zip(self.sources, names):  # a Source object given twice under one id: the second one renamed
            if _name(s) != n and hasattr(s, "source_id"):
                log.info("source %s given twice: the second one's frames are tagged %s", _name(s), n)
                s.source_id = n
        self.uri = "mux(" + ", ".join(s.uri or type(s).__name__ for s in self.sources) + ")"
        self.live = any(s.live for s in self.sources)
        self._buf = _MuxBuffer(buffer_size, sum(1 for s in self.sources if s.live),
                               files=sum(1 for s in self.sources if not s.live))
        self._threads: list[threading.Thread] = []
        #: ``gate(source_id, stopped)``, called in a file's reader before each frame is put: it waits for room
        #: downstream (``edgeseg.stream``'s hand-over to a Python loop); None: the buffer's room alone
        self.gate: Any = None
        self._errors: list[tuple[Source, int, BaseException]] = []  # (source, frames it gave, error)
        for s in self.sources:
            if isinstance(s, AwaitedCamera):
                s.others_running = self._others_running(s)
        counts = [s.expected_frames for s in self.sources]
        self.expected_frames = sum(counts) if all(c is not None for c in counts) else None  # type: ignore[arg-type]

    @property
    def parts(self) -> Sequence[Source]:
        """The merged sources: ``dropped`` and ``reconnect_gaps_s`` (from :class:`Source`) add theirs."""
        return getattr(self, "sources", ())

    def source_records(self) -> list[dict[str, Any]]:
        """Each source's part of a run's stats: its id, the frames of it handed on, drops, reconnection gaps, an outage under
        way at the stop, and why it stopped if it failed."""
        failed = {id(src): (n, e) for src, n, e in self._errors}
        out = []
        for src in self.sources:
            rec: dict[str, Any] = {"source": _name(src), "frames": self._buf.taken_by.get(_name(src), 0),
                                   "reconnect_gaps_s": src.reconnect_gaps_s,
                                   "outages_at_stop_s": src.outages_at_stop_s,
                                   "dropped": src.dropped + self._buf.dropped_by.get(_name(src), 0)}  # its and the mux's
            if id(src) in failed:
                n, e = failed[id(src)]
                rec.update(failed=str(e).splitlines()[0] if str(e) else type(e).__name__, frames_before_failure=n)
            out.append(rec)
        return out

    def _others_running(self, me: Source) -> Callable[[], bool]:
        """Whether a source other than ``me`` is still read (a camera still waiting for its device does not count):
        before the readers start, all are."""
        def running() -> bool:  # (a reader not started yet is running: the readers start one after another)
            threads = self._threads
            return not threads or any(t.ident is None or t.is_alive() for t, s in zip(threads, self.sources)
                                      if s is not me and not (isinstance(s, AwaitedCamera) and s.waiting))
        return running

    def open(self) -> "MultiSource":
        for s in self.sources:
            s.open()
        self.fps = max((s.fps for s in self.sources if s.fps), default=None)
        return self

    def _read(self, source: Source) -> None:
        n = 0
        try:
            for frame in source:
                frame.meta.setdefault(RECEIVED, time.time_ns())  # before the shared buffer's wait
                if self.gate is not None and not source.live:  # keyed as the hand-over's put sees the frame
                    self.gate(frame.source_id, lambda: self._buf.closed)
                if not self._buf.put_from(frame, live=source.live):
                    return
                n += 1
        except Exception as e:  # raised to the caller when the stream ends (_failure); said now only while other
            text = str(e).splitlines()[0] if str(e) else type(e).__name__  # sources go on (alone, it was logged and
            log.log(logging.WARNING if len(self.sources) > 1 else logging.DEBUG,  # raised with its prefix twice)
                    "source %s stopped after %d frames (the others go on): %s", _name(source), n, text)
            self._errors.append((source, n, e))
        finally:
            if not source.live:
                self._buf.file_done()

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        self._threads = [threading.Thread(target=self._read, args=(s,), name=f"edgeseg-mux-{i}", daemon=True)
                         for i, s in enumerate(self.sources)]
        for t in self._threads:
            t.start()
        closer = threading.Thread(target=self._close_when_done, daemon=True)
        closer.start()
        while True:
            try:
                yield self._buf.get()
            except EOFError:
                break
        if self._errors:
            raise self._failure()

    def _failure(self) -> BaseException:
        """The error the stream ends with: which sources failed, after how many frames, and why (before,
        the first error alone: ``source 'mux(a, b, c)' failed: camera unplugged`` named none of them)."""
        failed = list(self._errors)
        source, n, e = failed[0]
        names = {_name(source), source.uri or ""} - {""}
        if len(failed) == 1 and isinstance(e, StreamError) and any(x in str(e) for x in names):
            return e  # already says which source and what to do (a truncated file, an unreachable camera)
        parts = [f"source {_name(s)!r} failed after {k} frame(s): {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                 for s, k, err in failed]
        ok = len(self.sources) - len(failed)
        fixes = [err.fix for _, _, err in failed if isinstance(err, EdgesegError) and err.fix]
        return StreamError(f"{len(failed)} of {len(self.sources)} sources failed: " + "; ".join(parts),
                           fix=(fixes[0] + "; " if fixes else "") + (f"the frames of the other {ok} source(s) and those read "
                                                                     "before each failure were processed" if ok else
                                                                     "the frames read before each failure were processed"))

    def _close_when_done(self) -> None:
        for t in self._threads:
            t.join()
        self._buf.close()

    def stop(self) -> None:
        for s in self.sources:
            s.stop()
        self._buf.close()

    def close(self) -> None:
        self._buf.close()
        for s in self.sources:
            s.close()
        for t in self._threads:
            t.join(2.0)


class _MuxBuffer(FrameBuffer):
    """The mux's shared buffer: frames of file-like sources wait for room and are never dropped; frames of
    live sources never wait. While a file source is still being read, live frames hold at most one slot per
    live source (``live_slots``): a camera's new frame replaces its own oldest one there (counted in
    ``dropped``), so a camera faster than the model can neither starve a file nor be starved by it. With no
    file left, live frames use the whole buffer, dropping the oldest live frame when it is full."""

    def __init__(self, capacity: int, live: int, files: int):
        super().__init__(max(int(capacity), live + 1), drop_oldest=False)
        self.live_slots = live
        self.files_active = files  # file-like sources not yet finished (MultiSource counts them down)
        self._live_ids: set[str] = set()  # source ids of the frames live sources put here
        self.dropped_by: dict[str | None, int] = {}  # source id -> frames of it this buffer dropped
        self._turns: list[str | None] = []  # source ids in the order they first put a frame: the round's order
        self._last: str | None = None  # the source whose frame was taken last
        self.taken_by: dict[str | None, int] = {}  # source id -> frames of it handed on

    def _take(self) -> Frame:
        """The oldest frame of the next source in turn that has one (round robin, as DeepStream's ``nvstreammux`` takes
        a frame from each source in turn). First in, first out over all sources starved cameras under load: each new
        live frame of a full buffer went to the back and the frames at the front were mostly one camera's (an audit:
        four 15 fps cameras behind a 60 ms model got 289, 4, 0 and 7 of 300 frames; now about a quarter each)."""
        firsts: dict[str | None, int] = {}
        for i, f in enumerate(self._items):
            sid = getattr(f, "source_id", None)
            firsts.setdefault(sid, i)
            if sid not in self._turns:
                self._turns.append(sid)
        start = self._turns.index(self._last) + 1 if self._last in self._turns else 0
        sid = next(s for s in self._turns[start:] + self._turns[:start] if s in firsts)
        frame = self._items[firsts[sid]]
        del self._items[firsts[sid]]
        self._last = sid
        self.taken_by[sid] = self.taken_by.get(sid, 0) + 1
        return frame

    def file_done(self) -> None:
        with self._cond:
            self.files_active = max(0, self.files_active - 1)
            self._cond.notify_all()

    def put_from(self, frame: Frame, live: bool) -> bool:
        """Add a source's frame; False when the buffer was closed (the reader should stop)."""
        with self._cond:
            if not live:  # a file's frame waits while only the live sources' slots are left
                while not self._closed and len(self._items) >= self.capacity - self.live_slots:
                    self._cond.wait(0.1)
            if self._closed:
                return False
            if live and not self._place_live(frame):
                return True
            self._items.append(frame)
            self._cond.notify_all()
            return True

    def _place_live(self, frame: Frame) -> bool:
        """Make room for a live frame (under the lock); False when it was placed already or dropped."""
        sid = getattr(frame, "source_id", None)
        self._live_ids.add(sid)
        mine = [i for i, f in enumerate(self._items) if getattr(f, "source_id", None) == sid]
        if self.files_active and mine:  # files still reading: this camera keeps one slot, its newest frame, in place
            self._items[mine[0]] = frame  # (appended, it went behind the file's frames every time: starved)
            self._drop(sid)
            self._cond.notify_all()
            return False
        if len(self._items) < self.capacity:
            return True
        lives = mine or [i for i, f in enumerate(self._items) if getattr(f, "source_id", None) in self._live_ids]
        if not lives:  # (files leave the live slots free) the new frame is the one dropped
            self._drop(sid)
            return False
        self._drop(getattr(self._items[lives[0]], "source_id", None))
        del self._items[lives[0]]
        return True

    def _drop(self, source_id: str | None) -> None:
        """Count a dropped frame, in all and for its source (the stats' per-source records)."""
        self.dropped += 1
        self.dropped_by[source_id] = self.dropped_by.get(source_id, 0) + 1
