"""Cameras of a run with several sources that come and go: :class:`AwaitedCamera` waits for a camera's device while
the other sources go on, when it is missing at the start and when it is unplugged during the run, and carries its
frames' index and time across the outage. :func:`with_cameras` makes a multi-source run's sources so
(:class:`~edgeseg.stream.sources.mux.MultiSource` and ``edgeseg run --source A --source B``). Session 56.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ...errors import EdgesegError, InputError, StreamError
from ...structures.frame import Frame
from ..base import DISCONTINUITY, Source

log = logging.getLogger("edgeseg.stream")


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
        self._gave_up = False  # it raised its error (a timeout): no outage running on
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

    @property
    def outages_at_stop_s(self) -> list[float]:
        last = self._last  # unplugged and not back (and not given up on: a failure then): from its last frame
        if self._source is None and last is not None and not self._gave_up:
            return [max(time.monotonic_ns() - last[1], 0) / 1e9]
        return super().outages_at_stop_s

    @property  # type: ignore[override]
    def fps(self) -> float | None:
        """The camera's rate once it has joined (its per-source video file is written at it), else unknown."""
        source = self._source
        return (source.fps if source is not None else None) or self._fps

    @fps.setter
    def fps(self, value: float | None) -> None:  # (Source.__init__ sets None): the rate when no connection says one
        self._fps = value

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
            self._gave_up = (self.timeout_s is not None and waited >= self.timeout_s) or (
                self.timeout_s is None and not self.others_running())
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
