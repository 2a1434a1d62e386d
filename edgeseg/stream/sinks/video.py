"""Video sinks: MP4 files (GStreamer ``x264enc``/hardware encoders + ``mp4mux``, OpenCV ``mp4v`` fallback)
and an on-screen display.

The MP4 is written to ``NAME.part.mp4`` and renamed when the muxer has finalized it (EOS reached the file),
so ``NAME`` is always a complete, playable file; the GStreamer writer fragments it while recording, so a
``.part`` file left by a killed process or a full disk plays up to its last second (:func:`muxer`). Frames
whose size differs from the first are resized
to it (a video track has one size); an odd width or height gets one more column or row, a copy of the
last, and a side under 16 pixels is padded the same way to 16 (:func:`encodable`: 4:2:0 H.264 needs even
sizes, ``mp4mux`` at least 16x16).
Each frame is placed at its source time (``Frame.pts_ns``, from the first frame written, :class:`Timeline`; with an
output rate given, ``fps=`` / ``--fps``, at ``index / fps`` instead: the frames retimed to that rate), so a
recording of a live camera whose frames the model could not all take, a variable-frame-rate phone clip, or a stream
that lost its camera for a while plays in real time, and its N-th frame is where the JSON line's ``pts_ns`` says
(before: ``index / fps``, and 12 s of a 30 fps camera processed at 10 fps became a 4.4 s video). Frames without a
source time (frames an application makes without one) are ``index / fps``; a source time that goes backwards (a looping
file, an application's own clock that restarted) continues from the last one. (A GStreamer source that reconnects keeps
its time running itself, the outage included: :meth:`~edgeseg.stream.GstSource._live_time`.)
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._imagefile import swap_rb
from ..._registry import Registry
from ...errors import MEMORY_FIX, InputError, StreamError
from ...structures.frame import Frame
from .. import gst as _gst
from ..base import SINKS, Packet, Sink, refuse_input
from ..._io import writable_file
from .files import claim_output
from .segments import Finisher, Segment, SegmentClock, claim_segment, next_free_index, now_iso, segment_path

log = logging.getLogger("edgeseg.stream")

#: H.264 encoder fragments: from RGB appsrc to an H.264 byte stream
ENCODERS: Registry[str] = Registry("H.264 encoder", error=InputError)
# bframes=0: with B-frames, x264 and mp4mux lost the last frame of a file whose frames are not evenly spaced (a source's
# own times: :class:`Timeline`); without them the same 2 Mbit/s cost 35-40 % less CPU a 960x540 frame (11.0 -> 7.5 ms)
# at +0.2 dB PSNR (session 55)
ENCODERS.add("x264enc", "videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=superfast bframes=0 ! h264parse")
ENCODERS.add("x264enc-live", "videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
             "key-int-max=30 ! h264parse")
# idrinterval: the element's default is an IDR frame every 256 (SPS/PPS only there): an RTSP client joining late
# waited ~8.5 s at 30 fps for a picture, and MP4 seek points were as far apart
ENCODERS.add("nvv4l2h264enc", "videoconvert ! video/x-raw,format=RGBA ! nvvidconv ! video/x-raw(memory:NVMM),format=I420 "
             "! nvv4l2h264enc insert-sps-pps=true idrinterval=30 ! h264parse")
ENCODERS.add("nvh264enc", "videoconvert ! video/x-raw,format=NV12 ! nvh264enc ! h264parse")
#: how the software encoders' fragments begin: the MP4 sink gives them I420 it converted itself (:func:`i420_bytes`),
#: which videoconvert passes on as it is
I420_ENCODER = "videoconvert ! video/x-raw,format=I420 !"
#: an encoder's smallest frame (height, width) where it is larger than mp4mux's 16x16: NVENC's sink caps
ENCODER_MIN_SIZE = {"nvh264enc": (49, 145)}
#: what a sink falls back to when its hardware encoder cannot start here
SOFTWARE_ENCODER = {"mp4": "x264enc", "rtsp": "x264enc-live"}


def encoder_problem(fragment: str) -> str | None:
    """None when every element of an encoder fragment exists here and starts (reaches READY: a V4L2 encoder
    opens its device then), else why not. The Jetson Orin Nano has no NVENC: its ``nvv4l2h264enc`` exists
    and fails to start, which without this check ended the run at the first frame."""
    Gst = _gst.gst()
    for part in fragment.split("!"):
        words = part.split()
        if not words or "/" in words[0] or "=" in words[0]:  # caps, not an element
            continue
        element = Gst.ElementFactory.make(words[0], None)
        if element is None:
            return f"this machine has no {words[0]} element"
        try:
            if element.set_state(Gst.State.READY) == Gst.StateChangeReturn.FAILURE:
                return f"{words[0]} cannot start here (no encoder hardware, or its device is not reachable)"
        finally:
            element.set_state(Gst.State.NULL)
    return None


def usable_encoder(name: str, sink: str) -> str:
    """``name`` when it can run here, else the sink's software encoder (:data:`SOFTWARE_ENCODER`), with a
    warning saying why; neither (an image without gst-plugins-ugly): a :class:`StreamError` at ``open()``,
    before any frame is read."""
    fallback = SOFTWARE_ENCODER[sink]
    why = encoder_problem(ENCODERS.get(name))
    if why is None:
        return name
    if name != fallback:
        fallback_why = encoder_problem(ENCODERS.get(fallback))
        if fallback_why is None:
            log.warning("%s sink: encoder %s cannot be used (%s); encoding with %s on the CPU instead", sink, name, why,
                        fallback)
            return fallback
        why = f"{why}; and {fallback}: {fallback_why}"
    raise StreamError(f"{sink} sink: no H.264 encoder can run here ({name}: {why})",
                      fix="install GStreamer's x264enc (Debian/Ubuntu/JetPack: apt install gstreamer1.0-plugins-ugly)")


#: MP4/MOV are written in 1 s fragments while recording and made a plain file at the end (``first-moov-then-
#: finalise``): after a kill -9, a power loss or a full disk the ``.part`` file plays up to its last second
#: (an unfragmented one had no index: 283 frames written, 0 readable); Matroska and AVI are readable when cut
#: short as they are. ``fragment-mode`` is GStreamer 1.20+ (JetPack 4/5 ship 1.14/1.16: plain files there).
_FRAGMENTS = "fragment-duration=1000 fragment-mode=first-moov-then-finalise"
#: the container ``Mp4Sink`` writes for each file name suffix (GStreamer muxer; OpenCV picks it by the suffix too)
MUXERS = {".mp4": "mp4mux", ".m4v": "mp4mux", ".mov": "qtmux", ".mkv": "matroskamux", ".avi": "avimux"}


@functools.lru_cache(maxsize=None)
def muxer(suffix: str) -> str:
    """The muxer element (with its fragment settings where this GStreamer has them) for a file suffix."""
    name = MUXERS[suffix.lower()]
    if name in ("mp4mux", "qtmux"):
        element = _gst.gst().ElementFactory.make(name, None)
        if element is not None and element.find_property("fragment-mode") is not None:
            return f"{name} {_FRAGMENTS}"
    return name
_OTHER_OPTION = {".jsonl": "--json-out (JSON lines)", ".json": "--json-out (JSON lines)", ".png": "--png-dir (label PNGs)"}


def check_video_path(path: str | os.PathLike) -> Path:
    """``path`` as the name of a video file :class:`Mp4Sink` can write: a file name (not a folder: a trailing
    ``/``) whose suffix names a container it writes (:data:`MUXERS`). Any other name would get an MP4 under
    a name that says otherwise (``out.xyz``, ``out``) or a file where a folder was meant."""
    text = os.fspath(path)
    p = Path(text)
    if "://" in text:
        raise InputError(f"video sink {text}: the video sink writes a file, not to a URL",
                         fix="serve the video over RTSP with --rtsp-port PORT (rtsp://127.0.0.1:PORT/edgeseg; "
                             "--rtsp-address 0.0.0.0 for the network), or give a file name such as out.mp4")
    if text.endswith(("/", os.sep)) or p.is_dir():
        raise InputError(f"cannot write {text}: it is a folder; the video sink writes one file",
                         fix=f"name the file, e.g. {p / 'out.mp4'}")
    suffix = p.suffix.lower()
    if suffix not in MUXERS:
        other = _OTHER_OPTION.get(suffix)
        raise InputError(f"video sink {text}: {'no file suffix' if not suffix else repr(suffix) + ' is not a container it writes'}"
                         f" (it writes H.264 in {', '.join(MUXERS)})",
                         fix=(f"{suffix} files are written by {other}" if other else
                              f"name it {p.with_suffix('.mp4') if suffix else p.with_name(p.name + '.mp4')}"))
    return p


def image_of(frame: Frame, packet: Packet | None) -> np.ndarray:
    """What a video sink shows: the rendered overlay when there is one, else the frame."""
    if packet is not None and packet.rendered is not None:
        return packet.rendered
    return frame.image


class _FixedSize:
    """Fits frames into the first frame's size (logged once): scaled to fit with their aspect ratio kept, centred on
    black (a folder of frames of mixed sizes, a camera that changed its resolution). Before session 58 they were
    stretched to that size: a portrait frame in a landscape video came out squashed."""

    def __init__(self, what: str):
        self.what = what
        self.size: tuple[int, int] | None = None  # (height, width)
        self._warned = False

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.size is None:
            self.size = image.shape[:2]
        if image.shape[:2] == self.size:
            return image
        if not self._warned:
            log.warning("%s: frame size changed from %s to %s; such frames are fitted into the first size, their "
                        "aspect ratio kept (black bars)", self.what, self.size[::-1], image.shape[1::-1])
            self._warned = True
        return letterbox_into(image, self.size)


def letterbox_into(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (height, width) with its aspect ratio kept, centred on black."""
    import cv2

    (H, W), (h, w) = size, image.shape[:2]
    scale = min(H / h, W / w)
    nh, nw = max(1, min(H, round(h * scale))), max(1, min(W, round(w * scale)))
    out = np.zeros((H, W) + image.shape[2:], image.dtype)
    y, x = (H - nh) // 2, (W - nw) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else
                                         cv2.INTER_LINEAR).reshape((nh, nw) + image.shape[2:])
    return out


MIN_SIDE = 16  # mp4mux's smallest H.264 width and height


def encodable(image: np.ndarray, encoder: str | None = None) -> np.ndarray:
    """``image`` padded at the right and bottom (its last column/row repeated) to an even width and height
    of at least :data:`MIN_SIDE`, or ``encoder``'s :data:`ENCODER_MIN_SIZE`: 4:2:0 encoders (x264enc on
    I420, NVENC on NV12) refuse odd sizes, ``mp4mux`` frames under 16x16, NVENC under 145x49. Every pixel of
    ``image`` keeps its place; most frames are returned as they are."""
    min_hw = ENCODER_MIN_SIZE.get(encoder, (MIN_SIDE, MIN_SIDE))
    h, w = image.shape[:2]
    ph, pw = max(h + h % 2, min_hw[0] + min_hw[0] % 2) - h, max(w + w % 2, min_hw[1] + min_hw[1] % 2) - w
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")


def i420_bytes(image: np.ndarray) -> bytes:
    """An RGB ``uint8 [H, W, 3]`` image of even size as the bytes of a GStreamer ``video/x-raw,format=I420`` buffer
    (BT.601, video range, each chroma sample its 2x2 block's mean: :func:`~edgeseg.stream.yuv.rgb_to_i420_planes`;
    rows padded to 4 bytes as GStreamer lays them out). ``videoconvert`` before a 4:2:0 encoder was 1.5-3 levels
    off (its 8-bit matrices), and slower."""
    from ..yuv import rgb_to_i420, rgb_to_i420_planes

    h, w = image.shape[:2]
    ys, cs = (w + 3) // 4 * 4, (w // 2 + 3) // 4 * 4
    if ys == w and cs == w // 2:  # no row padding: OpenCV's buffer as it is
        return rgb_to_i420(image).tobytes()
    y, u, v = rgb_to_i420_planes(image)
    out = np.zeros(ys * h + 2 * cs * (h // 2), np.uint8)
    out[:ys * h].reshape(h, ys)[:, :w] = y
    for k, plane in enumerate((u, v)):
        start = ys * h + k * cs * (h // 2)
        out[start:start + cs * (h // 2)].reshape(h // 2, cs)[:, :w // 2] = plane
    return out.tobytes()


def rgb_bytes(image: np.ndarray) -> bytes:
    """An RGB ``uint8 [H, W, 3]`` image as the bytes of a GStreamer ``video/x-raw,format=RGB`` buffer, whose
    rows are padded to a multiple of 4 bytes (a width that is not a multiple of 4 otherwise shears the
    picture into garbage)."""
    h, w = image.shape[:2]
    row = w * 3
    stride = (row + 3) // 4 * 4
    if stride == row:
        return np.ascontiguousarray(image).tobytes()
    rows = np.zeros((h, stride), np.uint8)
    rows[:, :row] = image.reshape(h, row)
    return rows.tobytes()


class Timeline:
    """Where each written frame goes in its file, in nanoseconds from the file's first frame: its source time
    (``pts_ns``) less the first frame's; ``index / fps`` for frames without one; a time at or before the last one
    (a camera whose clock restarted on a reconnect, a concatenation) continues a frame period after it, and the rest
    of that source's frames keep their spacing from there."""

    def __init__(self, fps: float):
        self.period_ns = int(round(1e9 / fps))
        self._offset: int | None = None  # added to a frame's pts: minus the first frame's, plus any restarts
        self.last_ns: int | None = None

    def place(self, pts_ns: int = -1) -> int:
        if pts_ns is None or pts_ns < 0:
            t = 0 if self.last_ns is None else self.last_ns + self.period_ns
        else:
            if self._offset is None:
                self._offset = -int(pts_ns) if self.last_ns is None else self.last_ns + self.period_ns - int(pts_ns)
            t = int(pts_ns) + self._offset
            if self.last_ns is not None and t <= self.last_ns:
                self._offset += self.last_ns + self.period_ns - t
                t = self.last_ns + self.period_ns
        self.last_ns = t
        return t


class GstAppSrcWriter:
    """``appsrc ! <tail>`` fed with RGB frames; ``close()`` sends EOS and waits until it reaches the sink.

    An error anywhere downstream (an encoder that cannot start, a full disk) ends the ``appsrc`` at once,
    so a ``push`` blocked on a full queue returns and raises :class:`StreamError` with GStreamer's message
    instead of waiting forever."""

    def __init__(self, tail: str, shape: tuple[int, int], fps: float, what: str, live: bool = False,
                 i420: bool = False):
        Gst = _gst.gst()
        h, w = shape
        num, den = _fraction(fps)
        self.i420 = i420 and h % 2 == 0 and w % 2 == 0  # frames converted here (:func:`i420_bytes`): a 4:2:0 encoder's
        caps = (f"video/x-raw,format=I420,colorimetry=bt601,width={w},height={h},framerate={num}/{den}" if self.i420
                else f"video/x-raw,format=RGB,width={w},height={h},framerate={num}/{den}")
        launch = (f"appsrc name=edgeseg_src format=time is-live={'true' if live else 'false'} block=true "
                  f"max-bytes={4 * h * ((w * 3 + 3) // 4 * 4)} caps={caps} ! {tail}")
        self.what = what
        self.fps = fps
        self.timeline = Timeline(fps)
        self._n = 0  # frames pushed
        try:
            self.pipeline = Gst.parse_launch(launch)
        except Exception as e:
            raise StreamError(f"{what}: cannot build the GStreamer pipeline: {e}", fix=f"launch string: {launch}") from None
        self.src = self.pipeline.get_by_name("edgeseg_src")
        self._failure: str | None = None
        self._bus = self.pipeline.get_bus()
        self._bus.enable_sync_message_emission()
        # runs in the failing element's thread; disconnected in _release (bus -> handler -> self -> pipeline -> bus is a
        # cycle the GC cannot break: every writer closed kept its bus's two sockets open, ~1.4 MB and 2 fds per stream)
        self._handler = self._bus.connect("sync-message::error", self._on_error)
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            why = self._error(0) or "state change failed"
            self._release()
            raise StreamError(f"{what}: the GStreamer pipeline does not start ({why})")

    def _on_error(self, _bus: Any, msg: Any) -> None:
        if self._failure is None:
            self._failure = _gst.bus_error_text(msg)
        self.src.emit("end-of-stream")  # wakes a push() blocked on the full queue (it returns EOS)

    def _error(self, timeout_ns: int) -> str | None:
        Gst = _gst.gst()
        msg = self._bus.timed_pop_filtered(timeout_ns, Gst.MessageType.ERROR)
        return self._failure if msg is None else _gst.bus_error_text(msg)

    def push(self, image: np.ndarray, pts_ns: int = -1) -> None:
        """Add a frame at its source time ``pts_ns`` (:class:`Timeline`; -1: a frame period after the last one)."""
        Gst = _gst.gst()
        buf = Gst.Buffer.new_wrapped(i420_bytes(image) if self.i420 else rgb_bytes(image))
        buf.pts = buf.dts = self.timeline.place(pts_ns)
        buf.duration = self.timeline.period_ns  # (the muxer takes a sample's duration from the next one's time)
        self._n += 1
        ret = self.src.emit("push-buffer", buf) if self._failure is None else Gst.FlowReturn.ERROR
        if ret != Gst.FlowReturn.OK:
            raise StreamError(f"{self.what}: GStreamer refused a frame ({ret.value_nick}): {self._error(0) or ''}")

    def close(self, timeout_s: float = 60.0) -> None:
        Gst = _gst.gst()
        if self.pipeline is None:  # closed (or never started)
            return
        try:
            if self._failure is not None:  # the pipeline already stopped: no EOS will come
                raise StreamError(f"{self.what}: {self._failure}")
            self.src.emit("end-of-stream")
            msg = self._bus.timed_pop_filtered(int(timeout_s * 1e9), Gst.MessageType.EOS | Gst.MessageType.ERROR)
            if msg is None:
                raise StreamError(f"{self.what}: the encoder did not finish within {timeout_s:.0f} s")
            if msg.type == Gst.MessageType.ERROR:
                raise StreamError(f"{self.what}: {_gst.bus_error_text(msg)}")
        finally:
            self._release()

    def _release(self) -> None:
        """Stop the pipeline and drop the bus handler and the sync emission that tie it to this writer."""
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is None:
            return
        pipeline.set_state(_gst.gst().State.NULL)
        if self._handler is not None:
            self._bus.disconnect(self._handler)
            self._handler = None
        self._bus.disable_sync_message_emission()


#: the most seconds of repeated frames OpenCV's constant-rate writer fills one gap of a source's time with
CV_FILL_S = 10.0


def _fraction(fps: float) -> tuple[int, int]:
    from fractions import Fraction

    f = Fraction(fps).limit_denominator(1001)
    return f.numerator, f.denominator


@SINKS.register("mp4")
class Mp4Sink(Sink):
    """An MP4 file of the rendered frames. ``backend``: ``auto`` (GStreamer when present), ``gstreamer``
    or ``opencv`` (``mp4v``, since OpenCV wheels cannot write H.264). ``encoder``: a name in :data:`ENCODERS`.
    The suffix picks the container (:data:`MUXERS`: ``.mp4``, ``.m4v``, ``.mov``, ``.mkv``, ``.avi``); other names,
    and the source's own file, are refused when the sink opens (:func:`check_video_path`).

    With several sources (a :class:`~edgeseg.stream.MultiSource`) each source gets a file of its own beside
    ``path``, ``<stem>.<source>.<suffix>`` (:func:`~edgeseg.stream.sinks.files.source_folder` names it), at that
    source's frame rate: one file of the cameras' frames interleaved played them at the fastest one's rate.

    ``segment_s``: a new file every that many seconds of video, ``<stem>.00000.<suffix>``, ... each finished while
    the next records; ``keep_segments``: only the newest that many are kept (:mod:`~edgeseg.stream.sinks.segments`)."""

    name = "mp4"

    def __init__(self, path: str | os.PathLike, fps: float | None = None, encoder: str = "x264enc", backend: str = "auto",
                 segment_s: float | None = None, keep_segments: int | None = None):
        self.path = Path(path)
        self.segment_s = segment_s or None
        self.keep_segments = keep_segments if self.segment_s else None
        self.segments: list[Segment] = []  # with segment_s: every file of the run, finished, failed or removed
        self._file = self.path  # the file being written (a segment's with segment_s)
        self._next_index = 0
        self._clock: SegmentClock | None = None
        self._finisher = Finisher(keep=self.keep_segments)
        self._name = os.fspath(path)  # as given: a trailing "/" says a folder was meant
        self.fps = fps
        self.retime = bool(fps)  # an output rate given: every frame at index / fps (its sources' times not used)
        self.encoder_name = encoder
        self.encoder = ENCODERS.get(encoder)
        self.backend = backend
        self._auto = backend == "auto"  # GStreamer when it can encode here, else OpenCV
        self.frames = 0
        self._writer: Any = None
        self._fix = _FixedSize(str(self.path))
        self._source: Any = None
        self.per_source: dict[str, "Mp4Sink"] = {}  # several sources: source_id -> its own file's sink
        self._parts: dict[str, Any] = {}
        self._names: dict[str, str] = {}  # source_id -> its part of its file's name
        self._source_sink_child = False  # one of a multi-source sink's files (its parent has said what it had to)
        self._claim: int | None = None  # the flock on the .part file while this run writes it (claim_output)

    def bind_source(self, source: Any) -> None:
        self._source = source
        self._parts = {getattr(s, "source_id", None) or s.uri or "": s for s in getattr(source, "parts", ()) or ()}
        self._names = per_source_names(list(self._parts)) if len(self._parts) > 1 else {}

    @property
    def part(self) -> Path:
        return self._file.with_name(f"{self._file.stem}.part{self._file.suffix or '.mp4'}")

    def open(self) -> None:
        self._clock = None  # a sink opened again (another run): its segments' grid starts anew
        if self.backend == "auto":
            ok, why = _gst.available()
            self.backend = "gstreamer" if ok else "opencv"
            if not ok and not self._source_sink_child:
                log.warning("%s: GStreamer is not usable here (%s), so OpenCV writes it as MPEG-4 Part 2 (mp4v), not "
                            "H.264%s", self.path.name, str(why).splitlines()[0],
                            f"; --encoder {self.encoder_name} is not used" if self.encoder_name != "x264enc" else "")
        check_video_path(self._name)  # before the first frame is read: a bad path loses nothing
        writable_file(self.path)
        if self.backend == "gstreamer":  # a hardware encoder that cannot start here: found now, not at the first frame
            try:
                self.encoder_name = usable_encoder(self.encoder_name, "mp4")
                self.encoder = ENCODERS.get(self.encoder_name)
            except StreamError as e:
                if not self._auto:
                    raise
                log.warning("%s; writing %s with OpenCV's mp4v instead (%s)", str(e).splitlines()[0], self.path.name,
                            e.fix)
                self.backend = "opencv"
        if self.segment_s:  # numbered after an earlier run's segments: none is replaced
            self._next_index = next_free_index(self.path)
            self._file = segment_path(self.path, self._next_index)
        for p in (self._file, self.part):
            refuse_input(p, self._source, "the video sink's file")
        if not self.segment_s:  # another run writing this file now: refused before any work (its .part is claimed)
            claim_output(self.part, "the video (--sink)", probe=True)
        for source_id in self._parts if len(self._parts) > 1 else ():  # each source's file: checked and probed now
            self._source_sink(source_id)  # (before, at its first frame: another run writing one was found mid-run)
        if self.path.is_file() and not self.segment_s and not self._source_sink_child and len(self._parts) <= 1:
            log.warning("%s exists: this run replaces it when it ends (give another --sink to keep it)", self.path)

    def _start(self, shape: tuple[int, int]) -> None:
        fps = output_fps(self.fps, self._source)
        self.fps = fps
        if self.segment_s:
            if self._clock is None:  # before the claim: nothing to undo if it fails
                self._clock = SegmentClock(self.segment_s, fps, by_time=not self.retime)
            self._clock.restart()
            self._next_index = claim_segment(self.path, self._next_index)
            self._file = segment_path(self.path, self._next_index)
            self._next_index += 1
            self.segments.append(Segment(str(self._file), self.frames, now_iso()))
            try:
                self._open_writer(shape, fps)
            except BaseException:
                self.segments[-1].state = "failed"
                with contextlib.suppress(OSError):  # the claimed .part, if nothing was written into it
                    if self.part.stat().st_size == 0:
                        self.part.unlink()
                raise
            return
        self._claim = claim_output(self.part, "the video (--sink)")  # held until the file is in place (close)
        try:
            self._open_writer(shape, fps)
        except BaseException:
            with contextlib.suppress(OSError):  # the claimed .part, if nothing was written into it
                if self.part.stat().st_size == 0:
                    self.part.unlink()
            self._release_claim()
            raise

    def _release_claim(self) -> None:
        fd, self._claim = self._claim, None
        if fd is not None:
            os.close(fd)

    def _open_writer(self, shape: tuple[int, int], fps: float) -> None:
        if self.backend == "gstreamer":
            tail = f"{self.encoder} ! {muxer(self.path.suffix)} ! filesink location={_gst.quote(str(self.part))}"
            self._writer = GstAppSrcWriter(tail, shape, fps, str(self.path), i420=self.encoder.startswith(I420_ENCODER))
        else:
            import cv2

            w = cv2.VideoWriter(str(self.part), cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
            if not w.isOpened():
                raise StreamError(f"OpenCV cannot write {self.path}")
            self._writer = w
            self._timeline, self._cv_slots, self._cv_last = Timeline(fps), 0, None

    @property
    def paths(self) -> list[Path]:
        """The files this sink writes: ``path``, or one per source that gave a frame (with ``segment_s``: the
        segments it keeps)."""
        if len(self._parts) > 1:  # (each source's sink is made when the sink opens: those with frames)
            return [p for c in self.per_source.values() if c.frames or c.segments for p in c.paths]
        if self.segment_s:  # a failed segment's frames are in its .part file
            return [Path(s.file) if s.state != "failed" else Path(s.file).with_name(
                f"{Path(s.file).stem}.part{Path(s.file).suffix}") for s in self.segments if s.state != "removed"]
        return [self.path]

    def segment_records(self) -> list[dict[str, Any]]:
        """With ``segment_s``: every file of the run (``stats_json``'s ``segments``), each source's named."""
        if len(self._parts) > 1:
            return [{"source": sid, **r} for sid, c in self.per_source.items() for r in c.segment_records()]
        return [s.to_dict() for s in self.segments]

    def _source_sink(self, source_id: str) -> "Mp4Sink":
        from .files import source_folder

        sink = self.per_source.get(source_id)
        if sink is None:
            name = self._names.get(source_id)
            if name is None:  # an id no part announced: named now, and remembered, so no two share a file
                name = self._names[source_id] = source_folder(source_id, set(self._names.values()))
            sink = Mp4Sink(self.path.with_name(f"{self.path.stem}.{name}{self.path.suffix}"), fps=self.fps,
                           encoder=self.encoder_name, backend=self.backend, segment_s=self.segment_s,
                           keep_segments=self.keep_segments)
            sink.bind_source(self._parts.get(source_id))
            sink._source_sink_child = True
            sink.open()
            if self._source is not None:
                refuse_input(sink.path, self._source, "the video sink's file")
            self.per_source[source_id] = sink
            log.info("source %s -> %s", source_id, sink.path if not self.segment_s else  # (an audit: a file never written)
                     sink.path.with_name(f"{sink.path.stem}.NNNNN{sink.path.suffix}"))
        return sink

    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        if len(self._parts) > 1:
            sink = self._source_sink(frame.source_id)
            sink.write(frame, result, packet)
            self.frames += 1
            return
        image = encodable(self._fix(image_of(frame, packet)), self.encoder_name)
        if self.segment_s:
            self._finisher.check()  # a segment finished in the background failed (a full disk): said now
            if self._writer is not None and self._clock.full(frame):
                self._finisher.submit(self._finishing(), self.segments[-1])
        if self._writer is None:
            self._start(image.shape[:2])
        if self.backend == "gstreamer":
            try:
                self._writer.push(image, -1 if self.retime else frame.pts_ns)
            except StreamError as e:  # a full disk, a write error: the fragments written so far stay playable
                n = self.segments[-1].frames if self.segment_s else self.frames
                kept = (f"the {n} frames written before are in {self.part}, playable up to its last "
                        f"second (rename it to keep them); " if n else "")
                said = str(e).split("\n  fix:")[0]
                reason = said.replace(str(self.part), "").replace(str(self.path), "").lower()  # not the path's words
                disk = any(w in reason for w in ("no space", "quota", "could not write", "error while writing"))
                raise StreamError(said, fix=kept + ("free space on that disk or choose another --sink" if disk else
                                                    "the encoder or muxer stopped: out of memory is one cause ("
                                                    + MEMORY_FIX + "); or choose another --encoder")) from None
        else:
            self._cv_write(swap_rb(image), -1 if self.retime else frame.pts_ns)  # (numpy's reversed copy: 7 ms at 1080p)
        self.frames += 1
        if self.segment_s:
            self.segments[-1].frames += 1
            self._clock.add(frame)

    def _cv_write(self, bgr: np.ndarray, pts_ns: int) -> None:
        """OpenCV's writer is constant-rate: before a frame whose source time is past the next slot, the frame before
        it is written again until that time (ffmpeg's ``-vsync cfr``), so the file keeps real time too; at most
        :data:`CV_FILL_S` seconds a gap (a camera away for an hour would stall the sinks' thread on repeated frames;
        the rest of such a gap is left out)."""
        t = self._timeline.place(pts_ns)
        slot = int(round(t / self._timeline.period_ns))
        fill = max(0, min(slot - self._cv_slots, int(CV_FILL_S * 1e9 / self._timeline.period_ns)))
        for _ in range(fill if self._cv_last is not None else 0):
            self._writer.write(self._cv_last)
        self._writer.write(bgr)
        self._cv_slots, self._cv_last = max(self._cv_slots + fill, slot) + 1, bgr

    def _finishing(self) -> Any:
        """Hand the current writer over: a function that finishes its file (EOS, the index, the rename into place);
        the next frame starts the next file."""
        w, self._writer = self._writer, None
        part, file, gst = self.part, self._file, self.backend == "gstreamer"

        def finish() -> None:
            if gst:
                w.close()
            else:
                w.release()
            os.replace(part, file)
            log.info("wrote %s", file)

        return finish

    def close(self) -> None:
        sinks, self.per_source = dict(self.per_source), {}
        failure: BaseException | None = None
        for sink in sinks.values():  # every source's file is finished even when one fails; the first failure after
            try:
                sink.close()
            except Exception as e:
                failure = failure or e
        self.per_source = sinks
        if failure is not None:
            raise failure
        if self.segment_s:  # the segments in flight, then the last one
            if self._writer is None:
                self._finisher.join()
            else:
                self._finisher.finish_now(self._finishing(), self.segments[-1])
            done = [x for x in self.segments if x.state in ("finished", "removed")]
            if done:  # only what was written whole (a failed segment's frames are in its .part)
                log.info("wrote %d frames in %d segment(s), %s to %s%s", sum(x.frames for x in done), len(done),
                         Path(done[0].file).name, Path(done[-1].file).name,
                         "" if len(done) == len(self.segments) else
                         f" ({len(self.segments) - len(done)} failed)")
            return
        try:
            w, self._writer = self._writer, None
            if w is None:
                return
            if self.backend == "gstreamer":
                w.close()
            else:
                w.release()
            os.replace(self.part, self.path)
            log.info("wrote %s (%d frames)", self.path, self.frames)
        finally:
            self._release_claim()


def per_source_names(source_ids: list[str]) -> dict[str, str]:
    """Each source's part of its own file's name, in the sources' order (so a source's file is named the same on every
    run, whichever source gives the first frame): :func:`~edgeseg.stream.sinks.files.source_folder` of its id, a local
    file's suffix left out (``out.clip.mp4``, not ``out.clip.mp4.mp4``; an address's ``.10`` stays), unique."""
    from .files import source_folder

    names: dict[str, str] = {}
    for sid in source_ids:
        base, sep, rest = sid.rpartition("#")  # a repeated source's "#2" (not a file named take#1.mp4)
        if not (sep and rest.isdigit()):
            base, rest = sid, ""
        p = Path(base)
        bare = str(p.with_suffix("")) + (f"#{rest}" if rest else "") if p.suffix and p.is_file() else sid
        names[sid] = source_folder(bare, set(names.values()))
    return names


def output_fps(fps: float | None, source: Any = None, default: float = 25.0) -> float:
    """The frame rate a video sink writes at: the one asked for, else the source's (read when the first
    frame arrives, so sources that learn it from the stream have it), else ``default``."""
    if fps:
        return float(fps)
    src = getattr(source, "fps", None)
    if src:
        return float(src)
    log.info("frame rate unknown; writing at %g fps", default)
    return default


def has_screen() -> tuple[bool, str]:
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return True, ""
    return False, "no screen: neither DISPLAY nor WAYLAND_DISPLAY is set"


@SINKS.register("display")
class DisplaySink(Sink):
    """Shows the rendered frames in a window (GStreamer ``autovideosink``; ``nveglglessink`` on Jetson)."""

    name = "display"

    def __init__(self, fps: float | None = None, video_sink: str | None = None):
        self.fps = fps
        self.video_sink = video_sink
        self._writer: GstAppSrcWriter | None = None
        self._fix = _FixedSize("display")
        self._source: Any = None

    def bind_source(self, source: Any) -> None:
        self._source = source

    def open(self) -> None:
        ok, why = has_screen()
        if not ok:
            raise StreamError(f"cannot show the video: {why}",
                              fix="run on a machine with a desktop, or write a file (--sink out.mp4) or serve RTSP (--rtsp-port)")
        _gst.gst()

    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        image = self._fix(image_of(frame, packet))
        if self._writer is None:
            sink = self.video_sink or ("nveglglessink" if _gst.has_element("nveglglessink") else "autovideosink")
            self._writer = GstAppSrcWriter(f"videoconvert ! {sink} sync=false", image.shape[:2], output_fps(self.fps, self._source, 30.0),
                                           "display", live=True)
        self._writer.push(image)

    def close(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.close(timeout_s=5.0)
