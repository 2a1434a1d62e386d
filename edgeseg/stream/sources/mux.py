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
A camera whose device does not exist when the run starts, or goes away during it (:class:`AwaitedCamera`), joins
when it appears, the others running meanwhile.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ...errors import EdgesegError, InputError, StreamError
from ...structures.frame import Frame
from ..base import DISCONTINUITY, RECEIVED, FrameBuffer, Source

log = logging.getLogger("edgeseg.stream")


def _name(source: Source) -> str:
    """What the frames of ``source`` are tagged with (its ``source_id``), else its URI or class."""
    return getattr(source, "source_id", None) or source.uri or type(source).__name__


#: how often an awaited camera looks for its device (seconds)
AWAIT_POLL_S = 0.2


#: how long a camera whose stream failed or ended is watched for its device node going away (the driver's error comes
#: before the kernel removes the node: the USB disconnect cancels transfers first) before it counts as a failure or end
UNPLUG_GRACE_S = 2.0


class AwaitedCamera(Source):
    """One of several sources: a camera (``v4l2``) that may be absent, at the start of the run (a USB camera not
    plugged in yet, a rig whose cameras enumerate late) or during it (unplugged). The other sources go on; this one
    looks for its device every :data:`AWAIT_POLL_S` and, once it is there, opens ``make()`` and gives its frames (a
    device node that is there before it can be opened, as udev makes it before its permissions and driver are ready,
    is tried again). A camera whose stream fails or ends and whose device goes away (within :data:`UNPLUG_GRACE_S`)
    waits for it again; its frames' index and time go on across the outage (the time by the monotonic time between
    the last frame and the next), the outage counts as a reconnection (``reconnect_gaps_s``) and its next frame is
    marked a discontinuity. It gives up, raising ``error`` (the missing camera named, with the cameras here) or the
    last failure to open it, after the URI's ``timeout=S`` (each wait), or without one when no other source is left
    running. A failure with the device still there is the camera's failure, as any source's. Session 56: before,
    one camera missing at start stopped every camera of the run, and one unplugged was lost for the rest of it."""

    live = True
    marks_reconnects = True  # its first frame after an outage carries DISCONTINUITY (and its connection's own)

    def __init__(self, uri: str, device: str, error: EdgesegError, make: Callable[[], Source],
                 name: str | None = None, timeout_s: float | None = None, source: Source | None = None):
        super().__init__()
        self.uri = str(uri)
        self.source_id = name or self.uri
        self.device, self.error, self.timeout_s = device, error, timeout_s
        self._make = make
        self._source: Source | None = source  # the camera's current connection (None: waiting for its device)
        self._past = (0, 0, ())  # its earlier connections' drops, skipped frames and gaps
        self._lock = threading.Lock()  # stop()/close() against the open that makes _source
        self._stopping = False
        self._last: tuple[int, int] | None = None  # the last frame given: (index, monotonic ns)
        self._last_timed: tuple[int, int] | None = None  # the last frame with a time: (pts_ns, monotonic ns)
        self._offsets = (0, 0)  # added to the current connection's (index, pts_ns)
        self._retime = False  # the time offset waits for a frame with a time (after a reconnect)
        self._fps: float | None = None  # the last connection's rate
        #: whether any other source of the run still runs (set by :class:`MultiSource`); none left: give up
        self.others_running: Callable[[], bool] = lambda: True

    @property
    def waiting(self) -> bool:
        """Whether its camera is not there now (not joined yet, or unplugged)."""
        return self._source is None

    @property
    def parts(self) -> Sequence[Source]:
        return () if self._source is None else (self._source,)

    @property
    def dropped(self) -> int:
        return self._past[0] + super().dropped

    @property
    def skipped_at_start(self) -> int:
        return self._past[1] + super().skipped_at_start

    @property
    def reconnect_gaps_s(self) -> list[float]:
        return [*self._past[2], *super().reconnect_gaps_s]

    @property  # type: ignore[override]
    def fps(self) -> float | None:
        """The camera's rate once it has joined (its per-source video file is written at it), else unknown."""
        source = self._source
        return (source.fps if source is not None else None) or self._fps

    @fps.setter
    def fps(self, value: float | None) -> None:  # Source.__init__ sets it
        pass

    def open(self) -> "AwaitedCamera":
        if self._source is not None:
            self._source.open()
        return self

    def __iter__(self) -> Iterator[Frame]:
        lost_at = time.monotonic()
        while not self._stopping:
            if self._source is None and not self._await(lost_at):
                return
            source = self._source
            rejoined = self._last is not None
            why = "its stream ended"
            try:
                for frame in source:
                    yield self._continued(frame, rejoined)
                    rejoined = False
            except EdgesegError as e:
                if self._stopping or not self._gone():
                    raise  # the camera failed, not unplugged
                why = str(e).split("\n  fix: ")[0]
            else:  # (OpenCV's reader ends a camera's stream when the camera goes)
                if self._stopping or not self._gone():
                    return  # the camera's stream ended, as any source's does
            lost_at = time.monotonic()
            log.warning("camera %s unplugged after %d frames (%s): waiting for it; the other sources go on",
                        self.device, 0 if self._last is None else self._last[0] + 1, why)
            with self._lock:
                self._past = (self._past[0] + source.dropped, self._past[1] + source.skipped_at_start,
                              (*self._past[2], *source.reconnect_gaps_s))
                self._fps = source.fps or self._fps
                self._source = None
            source.close()

    def _gone(self) -> bool:
        """Whether the device node is gone, or goes within :data:`UNPLUG_GRACE_S`."""
        end = time.monotonic() + UNPLUG_GRACE_S
        while Path(self.device).exists():
            if self._stopping or time.monotonic() >= end:
                return False
            time.sleep(0.05)
        return True

    def _continued(self, frame: Frame, rejoined: bool) -> Frame:
        """``frame`` numbered and timed on from the camera's earlier connections; the first after a reconnect marked
        a discontinuity (here, not where the stream takes it: a frame from before the outage may wait in the buffer)."""
        now = time.monotonic_ns()
        if rejoined and self._last is not None:
            self._reconnect_gaps.append((now - self._last[1]) / 1e9)
            self._offsets = (self._last[0] + 1 - frame.index, self._offsets[1])
            self._retime = True
            frame.meta[DISCONTINUITY] = True
        if self._retime and frame.pts_ns >= 0 and self._last_timed is not None:
            pts, at = self._last_timed  # the first frame with a time after the outage sets the time offset
            self._offsets = (self._offsets[0], pts + max(now - at, 1) - frame.pts_ns)
            self._retime = False
        if self._offsets != (0, 0):
            frame = dataclasses.replace(frame, index=frame.index + self._offsets[0],
                                        pts_ns=frame.pts_ns + self._offsets[1] if frame.pts_ns >= 0 else frame.pts_ns)
        self._last = (frame.index, now)
        if frame.pts_ns >= 0:
            self._last_timed = (frame.pts_ns, now)
        return frame

    def _await(self, since: float) -> bool:
        """Wait for the device and open the camera (True), or stop (False); raises when it gives up."""
        last: EdgesegError | None = None  # the last failure to open a device that is there
        while not self._stopping:
            if Path(self.device).exists():
                try:
                    source = self._make().open()
                except EdgesegError as e:  # there, but not ready: tried again
                    if last is None or str(e) != str(last):
                        log.warning("camera %s is there but does not open yet (%s): trying again", self.device,
                                    str(e).split("\n  fix: ")[0])
                    last = e
                else:
                    with self._lock:
                        self._source = source
                        stopped = self._stopping
                    if stopped:  # stop() or close() came while it opened
                        source.close()
                        return False
                    log.warning("camera %s %s after %.1f s: its frames join the stream", self.device,
                                "appeared" if self._last is None else "is back", time.monotonic() - since)
                    return True
            waited = time.monotonic() - since
            why = last if last is not None else self.error
            said = str(why).split("\n  fix: ")[0]
            if self.timeout_s is not None and waited >= self.timeout_s:
                raise StreamError(f"{said} (waited {waited:.1f} s for it, timeout={self.timeout_s:g})", fix=why.fix)
            if self.timeout_s is None and not self.others_running():  # (a timeout given: that long, whatever else)
                raise StreamError(f"{said} (waited {waited:.1f} s for it, until no other source was left)",
                                  fix=why.fix)
            time.sleep(AWAIT_POLL_S)
        return False

    def _halt(self) -> Source | None:
        """Mark it stopping (an open in progress sees it and closes what it opened); its connection now, if any."""
        with self._lock:
            self._stopping = True
            return self._source

    def stop(self) -> None:
        source = self._halt()
        if source is not None:
            source.stop()

    def close(self) -> None:
        source = self._halt()
        if source is not None:
            source.close()


def _camera_spec(uri: str) -> Any:
    """``uri`` parsed when it names a camera device (``v4l2``), else None."""
    from .uri import parse_source

    try:
        spec = parse_source(uri)
    except EdgesegError:
        return None  # named as it is where the source is made
    return spec if spec.scheme == "v4l2" else None


def missing_camera(uri: str) -> InputError | None:
    """The error naming the camera ``uri`` when its device does not exist now (with the cameras there are), else
    None (not a camera, or there)."""
    from .uri import camera_device

    spec = _camera_spec(uri)
    if spec is None or Path(spec.target).exists():
        return None
    try:
        camera_device(spec.target)
    except InputError as e:
        return e
    return None


def awaited_camera(uri: str, make: Callable[[], Source], name: str | None = None) -> AwaitedCamera | None:
    """An :class:`AwaitedCamera` for ``uri`` when it names a camera device (``v4l2``), else None: waiting for the
    device when it does not exist now, else made now (``make()``: a camera that is there but cannot be read is
    refused at once, as alone)."""
    from .gst_source import _timeout_opt

    spec = _camera_spec(uri)
    if spec is None:
        return None
    missing = missing_camera(uri)
    return AwaitedCamera(uri, spec.target, missing or InputError(f"camera {spec.target} does not exist"), make,
                         name=name, timeout_s=_timeout_opt(spec, None), source=None if missing else make())


def with_cameras(entries: Sequence[tuple[Any, Callable[[], Source], str | None]]) -> list[Source]:
    """The sources of a multi-source run from ``(given, make, name)`` entries: a :class:`Source` given as it is, a
    camera URI as an :class:`AwaitedCamera` (waited for while missing, waited for again when unplugged), any other
    URI ``make()``. A camera missing at start is said; when every entry is such a camera, the first is refused at
    once (a typo must not wait for ever)."""
    missing = [missing_camera(given) if isinstance(given, str) else None for given, _, _ in entries]
    if missing and all(e is not None for e in missing):
        raise missing[0]  # type: ignore[misc]
    out: list[Source] = []
    for (given, make, name), e in zip(entries, missing):
        if not isinstance(given, str):
            out.append(given)
            continue
        camera = awaited_camera(given, make, name)
        out.append(camera if camera is not None else make())
        if e is not None and camera is not None:
            log.warning("%s (the other sources start; it joins when it appears%s)", str(e).split("\n  fix: ")[0],
                        f", for up to {camera.timeout_s:g} s" if camera.timeout_s else "; ?timeout=S gives up after S s")
    return out


class MultiSource(Source):
    def __init__(self, sources: Sequence[Source | str], buffer_size: int = 8, **options: Any):
        super().__init__()
        from . import open_source

        if not sources:
            raise InputError("MultiSource needs at least one source")
        # (each camera's wait for its device: here too for MultiSource([...]) in an application, not only edgeseg run)
        self.sources = with_cameras([(s, functools.partial(open_source, s, **options), options.get("name"))
                                     for s in sources])
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
        """Each source's part of a run's stats: its id, the frames of it handed on, drops, reconnection gaps, and why it
        stopped if it failed."""
        failed = {id(src): (n, e) for src, n, e in self._errors}
        out = []
        for src in self.sources:
            rec: dict[str, Any] = {"source": _name(src), "frames": self._buf.taken_by.get(_name(src), 0),
                                   "reconnect_gaps_s": src.reconnect_gaps_s,
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
