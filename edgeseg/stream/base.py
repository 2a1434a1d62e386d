"""The stream contract: Source, Stage, Sink, the Packet that travels between them, and registries.

::

    Source: iterator of Frame; open()/close(); live sources drop the oldest frame under back-pressure
            (counted in ``dropped``), file sources block.
    Stage:  open(); process(packet) -> packet | None; close(); reset(); on_discontinuity(frame)
    Sink:   open(); write(frame, result); close()   # close() leaves complete, playable files

Sources are chosen by URI scheme (:data:`SOURCES`), sinks by kind (:data:`SINKS`), stages by name
(:data:`STAGES`). Adding one touches only the file that defines it.

Discontinuities: the first frame of each source (each ``source_id``), and the first frame after a
reconnect, a seek or a new file, carry ``frame.meta["discontinuity"] = True`` (:data:`DISCONTINUITY`;
sources may set it, the pipeline sets it on first frames and after a source's reconnect). Before
such a frame the pipeline calls :meth:`Stage.on_discontinuity` on every stage, whose default is
:meth:`Stage.reset`: state carried across frames must not survive a jump in the video.
A source that cannot read one frame yields it with ``frame.meta["error"]`` (:data:`FRAME_ERROR`) set:
the pipeline counts it as an error frame (``on_error``).
"""
from __future__ import annotations

import abc
import collections
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .._registry import Registry
from ..errors import InputError, StreamError
from ..structures.frame import Frame

DISCONTINUITY = "discontinuity"
"""``frame.meta`` key: True on the first frame after a jump (new source, reconnect, seek, new file)."""
FRAME_ERROR = "error"
"""``frame.meta`` key: why the source could not read this frame (its image is a placeholder)."""
RECEIVED = "received_ns"
"""``frame.meta`` key: the Unix time (ns) edgeseg received the frame: a GStreamer or OpenCV live source's when its
decoder handed it over, a synthetic live source's when made (both before the source's own buffer, where a live frame
waits behind a slow model), several sources' frames in their reader threads, anything else when the stream took it."""

SOURCES: Registry[type["Source"]] = Registry("stream source", error=StreamError)
SINKS: Registry[type["Sink"]] = Registry("stream sink", error=StreamError)
STAGES: Registry[type["Stage"]] = Registry("stream stage", error=StreamError)


@dataclass
class Packet:
    """One frame on its way through the pipeline (internal, mutable; owned by one thread at a time).

    feed/meta: the network input and how it was made (preprocess stage); outputs: raw runner outputs
    (inference stage); result: the typed result (decode stage); rendered: the overlay image (render
    stage); error: why a stage failed on this frame (the frame still reaches the sinks, without result).
    """

    frame: Frame
    t_created: float = field(default_factory=time.perf_counter)
    feed: Any = None
    meta: Any = None
    outputs: Any = None
    result: Any = None
    rendered: Any = None
    error: str | None = None
    keyplan: Any = None  # keyframe streams: this frame's KeyPlan (keyframe or not, its flow), set by keyframe-flow
    timings: dict[str, float] = field(default_factory=dict)


class Source(abc.ABC):
    """An iterator of :class:`Frame`. ``live`` sources never block their producer: when the consumer is
    slow they drop the oldest buffered frame and count it in ``dropped``."""

    live: bool = False
    uri: str = ""
    #: True for a source that marks its first frame after each reconnection itself (:data:`DISCONTINUITY`): the
    #: pipeline then marks only its first frame (taken behind a multiplexer's buffer, the frame the stream takes
    #: after the reconnect count grew may be an older one)
    marks_reconnects: bool = False

    def __init__(self) -> None:
        self._buf: FrameBuffer | None = None  # the hand-over buffer of a threaded source (counts drops)
        self._reconnect_gaps: list[float] = []  # appended by sources that reconnect
        self.expected_frames: int | None = None  # for progress bars (files), None when unknown
        self.fps: float | None = None  # nominal frame rate when known

    @property
    def parts(self) -> Sequence["Source"]:
        """The sources this one merges (a multiplexer); none for a plain source."""
        return ()

    @property
    def dropped(self) -> int:
        """Frames dropped under back-pressure: this source's :class:`FrameBuffer` count plus its parts'."""
        buf = getattr(self, "_buf", None)
        return (buf.dropped if buf is not None else 0) + sum(s.dropped for s in self.parts)

    @property
    def skipped_at_start(self) -> int:
        """Frames a live source (a camera) sent before its first read, while the bundle loaded, that could not wait
        in its buffer: not ``dropped`` (before, a robot's overload monitor read ~30 s of start-up as drops)."""
        return getattr(self, "_skipped_at_start", 0) + sum(s.skipped_at_start for s in self.parts)

    def _begin_reading(self) -> None:
        """At the first read: the drops counted so far become :attr:`skipped_at_start`."""
        buf = getattr(self, "_buf", None)
        if buf is None or getattr(self, "_reading", False):
            return
        self._reading = True
        self._skipped_at_start = buf.take_dropped()
        if self._skipped_at_start:
            import logging

            logging.getLogger("edgeseg.stream").info(
                "%s: %d frames sent while the bundle loaded were skipped (not counted as drops)", self.uri or "source",
                self._skipped_at_start)

    @property
    def reconnect_gaps_s(self) -> list[float]:
        """Seconds without frames around each reconnection, this source's and then its parts'."""
        return list(getattr(self, "_reconnect_gaps", ())) + [g for s in self.parts for g in s.reconnect_gaps_s]

    @property
    def outages_at_stop_s(self) -> list[float]:
        """Seconds without frames of each outage still under way (a live source lost and not back yet), this
        source's and then its parts': what :attr:`reconnect_gaps_s` lacks when a run stops during one (session 57:
        a run stopped while its camera was away reported no outage at all)."""
        since = getattr(self, "_outage_since", None)  # (time.perf_counter() of the last frame before it)
        mine = [max(time.perf_counter() - since, 0.0)] if since is not None else []
        return mine + [g for s in self.parts for g in s.outages_at_stop_s]

    def open(self) -> "Source":
        return self

    def close(self) -> None:
        """Release the device, file or connection (default: nothing to release)."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the end of the stream; raise StreamError when it breaks."""

    def stop(self) -> None:
        """Ask a running iterator to finish soon (called from another thread); default: close."""
        self.close()

    def __enter__(self) -> "Source":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stage(abc.ABC):
    """One processing step, run in its own thread. ``process`` returns the packet (or None to drop it)."""

    name: str = "stage"

    def open(self) -> None:
        """Load what the stage needs (models, buffers) before the first packet (default: nothing)."""

    @abc.abstractmethod
    def process(self, packet: Packet) -> Packet | None:
        """Do this stage's work on one packet."""

    def close(self) -> None:
        """Release what :meth:`open` loaded (default: nothing)."""

    def reset(self) -> None:
        """Forget state carried across frames (every source's)."""

    def on_discontinuity(self, frame: Frame) -> None:
        """Called by the pipeline before ``frame`` when it follows a jump (``frame.meta["discontinuity"]``),
        (not before a frame that merely failed to read). Default: :meth:`reset`; a stage holding per-source
        state may forget only ``frame.source_id``'s."""
        self.reset()


class PerSourceStage(Stage):
    """A stage holding one state object per ``source_id`` (anything with ``reset()``): a discontinuity
    resets that source's only, :meth:`reset` every source's, :meth:`close` drops them."""

    def __init__(self) -> None:
        self.states: dict[str, Any] = {}

    def state(self, source_id: str, make: Callable[[], Any]) -> Any:
        """``source_id``'s state, made by ``make()`` on its first frame."""
        st = self.states.get(source_id)
        if st is None:
            st = self.states[source_id] = make()
        return st

    def on_discontinuity(self, frame: Frame) -> None:
        st = self.states.get(frame.source_id)
        if st is not None:
            st.reset()

    def reset(self) -> None:
        for st in self.states.values():
            st.reset()

    def close(self) -> None:
        self.states.clear()


class Sink(abc.ABC):
    """Where results go. The only place that touches disk, network or display."""

    name: str = "sink"

    def bind_source(self, source: "Source") -> None:
        """Called by the pipeline with its source, already opened (so ``source.fps`` is known for files),
        before :meth:`open`. Video sinks read the frame rate from it when none was given."""

    def open(self) -> None:
        """Create files, servers or windows before the first frame (default: nothing)."""

    @abc.abstractmethod
    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        """Consume one frame and its result (``None`` when a stage failed on this frame)."""

    def close(self) -> None:
        """Flush and finalize; after this every file the sink wrote is complete."""


def input_paths(source: Any) -> list[Path]:
    """The video files and image folders ``source`` reads (a :class:`~edgeseg.stream.MultiSource`'s parts'
    too), resolved: what no sink may write over."""
    paths = []
    for s in list(getattr(source, "parts", ()) or ()) or [source]:
        spec = getattr(s, "spec", None)
        if spec is not None and getattr(spec, "scheme", None) in ("file", "folder"):
            paths.append(Path(spec.target).expanduser().resolve())
    return paths


def refuse_input(path: str | os.PathLike, source: Any, what: str, example: str | None = None) -> None:
    """Refuse an output ``path`` that is one of ``source``'s inputs (the video being read, the folder of frames
    being read), before anything is written: writing it would destroy the input. ``what`` names the output,
    ``example`` is a name to suggest instead."""
    out = Path(path).expanduser().resolve()
    for inp in input_paths(source):
        if out == inp or (out.exists() and inp.exists() and os.path.samefile(out, inp)):
            kind = "folder of frames" if inp.is_dir() else "video"
            raise InputError(f"{what} {path} is the source's {kind} {inp}: writing there would destroy the input",
                             fix="give the output another name or folder, e.g. " + (example or (
                                 f"{inp.name}-labels/" if inp.is_dir() else f"{inp.stem}.edgeseg{inp.suffix or '.mp4'}")))


class FrameBuffer:
    """A bounded hand-over buffer between a producer thread and the consumer.

    ``drop_oldest=True`` (live sources): ``put`` never blocks; a full buffer loses its oldest frame and
    counts it. ``drop_oldest=False`` (files): ``put`` blocks until there is room or the buffer closes.
    """

    def __init__(self, capacity: int = 4, drop_oldest: bool = False):
        self.capacity = max(1, int(capacity))
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> bool:
        """Add an item; False when the buffer was closed (the producer should stop)."""
        with self._cond:
            while not self._closed and len(self._items) >= self.capacity:
                if self.drop_oldest:
                    self._items.popleft()
                    self.dropped += 1
                    break
                self._cond.wait(0.1)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item, or raise ``TimeoutError`` (nothing within ``timeout``) / ``EOFError`` (closed and empty)."""
        return self.get_counted(timeout)[0]

    def get_counted(self, timeout: float | None = None) -> tuple[Any, int]:
        """:meth:`get`, and ``dropped`` as it was when the item was taken (under the lock: every frame dropped by then
        was older than this one, so the count is exact for numbering it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise EOFError
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(left if left is not None else 0.1)
            item = self._take()
            self._cond.notify_all()
            return item, self.dropped

    def _take(self) -> Any:
        """The item :meth:`get` hands out (under the lock, the buffer not empty): the oldest."""
        return self._items.popleft()

    def take_dropped(self) -> int:
        """The frames dropped so far, the count starting again from 0."""
        with self._cond:
            dropped, self.dropped = self.dropped, 0
            return dropped

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
