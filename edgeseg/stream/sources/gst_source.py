"""GStreamer sources: any URI or launch string, decoded to RGB frames through an ``appsink``.

The launch description for each scheme comes from :data:`LAUNCHERS` (one small function per scheme).
Decoding runs in GStreamer's threads; the ``new-sample`` callback converts each sample to a
:class:`Frame` and hands it over through a :class:`FrameBuffer`: blocking for files (back-pressure),
dropping the oldest frame for live sources (counted). Live network sources reconnect with back-off
when the stream errors, ends, or stalls, and record each gap.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import re
import sys
import time
from typing import Any, Callable, Iterator, Sequence

from ..._registry import Registry
from ...errors import InputError, StreamError
from ...structures.frame import Frame
from ..base import DISCONTINUITY, RECEIVED, SOURCES, FrameBuffer, Source
from .. import gst as _gst
from .containers import avi_header_frames, mp4_full_range, mp4_video_duration_ns
from .uri import STDIN_LAUNCH, SourceURI, camera_device, is_gif, parse_source, video_file

log = logging.getLogger("edgeseg.stream")
#: frames reach the appsink as the decoder made them where edgeseg converts them exactly (progressive 8-bit I420, NV12,
#: Y42B, Y444, YUY2), else as RGB from videoconvert (:data:`..gst.SOURCE_CAPS`)
APPSINK = (f"videoconvert ! capsfilter caps={_gst.quote(_gst.SOURCE_CAPS)} "
           "! appsink name=edgeseg_sink emit-signals=true max-buffers=2")
#: decoded video turned as its orientation tag says (phone clips are stored sideways with a rotation in the
#: container; OpenCV's reader applies it, decodebin does not): a pass-through when there is no tag
UPRIGHT = "videoconvert ! videoflip video-direction=auto"  # videoflip takes fewer formats than decoders give (4:2:2)
LAUNCHERS: Registry[Callable[[SourceURI], str]] = Registry("GStreamer source scheme", error=InputError)
#: the NVIDIA converters that bring ``video/x-raw(memory:NVMM)`` frames (the only output of ``nvv4l2decoder``, which
#: decodebin prefers on a Jetson and with DeepStream: rank PRIMARY + 11) to system memory ``videoconvert`` reads;
#: the first this machine has is used, and only for a decoder pad whose caps are NVMM (:func:`link_decoded`)
NVMM_CONVERTERS = (("nvvidconv", "nvvidconv ! capsfilter caps=video/x-raw,format=BGRx"),  # JetPack
                   ("nvvideoconvert", "nvvideoconvert ! capsfilter caps=video/x-raw,format=RGBA"))  # DeepStream
#: decoders whose output is NVMM memory: a camera's MJPEG is decoded without them (the v4l2 chain has no converter,
#: and nvv4l2decoder takes JPEG only behind jpegparse and with mjpeg=1)
NVMM_DECODERS = frozenset({"nvv4l2decoder", "nvjpegdec"})
DECODE_NAME, DECODED_NAME = "edgeseg_decode", "edgeseg_decoded"
CAMERA_DECODE_NAME = "edgeseg_camera_decode"  # the v4l2 chain's: raw frames pass, MJPEG is decoded without NVMM
CONVERTER_PREFIX = "edgeseg_nvmm_convert"
_converters = itertools.count()


def nvmm_converter(has: Callable[[str], bool] | None = None) -> str | None:
    """The chain of :data:`NVMM_CONVERTERS` this machine has, else None. ``has``: whether an element exists
    (GStreamer's registry by default; tests pass a set's ``__contains__``)."""
    has = has or _gst.has_element
    return next((chain for element, chain in NVMM_CONVERTERS if has(element)), None)


def decoded(has: Callable[[str], bool] | None = None) -> str:
    """``decodebin``, linked to what follows as usual, or, where this machine has an NVIDIA converter, a named
    ``decodebin`` and a named ``identity`` starting the rest of the chain, unlinked: :func:`link_decoded` links
    each decoded video pad to it when the pad appears, through the converter only when its caps are NVMM (a
    software decoder's 4:2:2 or RGB frames, which the converters do not all take, go straight on)."""
    if nvmm_converter(has) is None:
        return "decodebin"
    return f"decodebin name={DECODE_NAME}  identity name={DECODED_NAME}"


def needs_nvmm_converter(caps_text: str) -> bool:
    """Whether a decoder pad's caps are NVIDIA's device memory (``video/x-raw(memory:NVMM), ...``)."""
    return caps_text.startswith("video/") and "memory:NVMM" in caps_text.split(",", 1)[0]


def link_decoded(pipeline: Any, pad: Any, converter: str | None = None) -> str:
    """A ``pad-added`` handler's work for :func:`decoded`'s unlinked decodebin: a video pad is linked to the
    ``identity`` the rest of the chain starts with, through ``converter`` (default :func:`nvmm_converter`'s)
    when its caps are NVMM; other pads (audio) and a second video pad are left alone. Returns how
    (``"direct"``, ``"converter"``, ``"ignored"``); a link GStreamer refuses raises :class:`StreamError`."""
    Gst = _gst.gst()
    text = _pad_caps_text(pad)
    target = pipeline.get_by_name(DECODED_NAME).get_static_pad("sink")
    if not text.startswith("video/"):
        return "ignored"
    peer = target.get_peer()  # a converter left by a stream switch (chained files, concatenated TS): its decoder
    owner = peer.get_parent_element() if peer is not None else None  # pad is gone; the new one takes its place
    if owner is not None and owner.get_name().startswith(CONVERTER_PREFIX) and not owner.get_static_pad("sink").is_linked():
        peer.unlink(target)
    if target.is_linked():
        return "ignored"
    links = [(pad, target)]
    if needs_nvmm_converter(text):
        chain = Gst.parse_bin_from_description(converter or nvmm_converter(), True)
        chain.set_name(f"{CONVERTER_PREFIX}{next(_converters)}")
        pipeline.add(chain)
        chain.sync_state_with_parent()
        links = [(pad, chain.get_static_pad("sink")), (chain.get_static_pad("src"), target)]
    for src, sink in links:
        if src.link(sink) != Gst.PadLinkReturn.OK:
            raise StreamError(f"cannot link the decoded video ({text})")
    return "direct" if len(links) == 1 else "converter"


def _pad_caps_text(pad: Any) -> str:
    caps = pad.get_current_caps() or pad.query_caps(None)
    return caps.to_string() if caps is not None else ""


def skip_nvmm_decoders(_bin: Any, _pad: Any, _caps: Any, factory: Any) -> int:
    """A decodebin ``autoplug-select`` handler: 2 (SKIP) for :data:`NVMM_DECODERS`, 0 (TRY) for the others."""
    return 2 if factory.get_name() in NVMM_DECODERS else 0


def _caps(u: SourceURI, kind: str = "video/x-raw") -> str:
    parts = [kind]
    for key in ("width", "height"):
        if u.opt(key):
            parts.append(f"{key}={u.int_opt(key)}")
    if u.opt("fps"):
        parts.append(f"framerate={u.int_opt('fps')}/1")
    return ",".join(parts)


@LAUNCHERS.register("file")
def _file(u: SourceURI) -> str:
    if is_gif(str(video_file(u.target))):
        raise StreamError(f"{u.target} is a GIF: GStreamer 1.22 decodes its frames but never ends the stream (the "
                          "run would wait for ever after the last frame)",
                          fix="read it with OpenCV: --source-backend opencv (auto does), or open_source(..., "
                              "backend='opencv')")
    return f"filesrc location={_gst.quote(str(video_file(u.target)))} ! {decoded()} ! {UPRIGHT} ! {APPSINK}"


@LAUNCHERS.register("http")
def _http(u: SourceURI) -> str:
    convert = decoded().partition("decodebin")[2]  # uridecodebin picks the same decoders
    return f"uridecodebin uri={_gst.quote(u.target)}{convert} ! {UPRIGHT} ! {APPSINK}"


@LAUNCHERS.register("rtsp")
def _rtsp(u: SourceURI) -> str:
    transport = (u.opt("transport") or "tcp").lower()
    if transport not in ("tcp", "udp"):
        raise InputError(f"source {u.text!r}: transport must be tcp or udp, got {transport!r}")
    latency = u.int_opt("latency", 200)
    if latency < 0:
        raise InputError(f"source {u.text!r}: latency must be >= 0 milliseconds, got {latency}", fix="e.g. ?latency=200")
    return (f"rtspsrc location={_gst.quote(u.target)} latency={latency} protocols={transport} tcp-timeout=5000000 "
            f"! {decoded()} ! {UPRIGHT} ! {APPSINK}")


@LAUNCHERS.register("v4l2")
def _v4l2(u: SourceURI) -> str:
    """Raw frames where the camera gives them at the asked size and rate, else its MJPEG (most USB webcams send
    720p and 1080p at 30 fps only as ``image/jpeg``), decoded; raw frames pass ``decodebin`` untouched. Its
    decodebin never picks an NVMM decoder (:func:`skip_nvmm_decoders`), so the chain needs no converter."""
    caps = f"{_caps(u)};{_caps(u, 'image/jpeg')}"
    return (f"v4l2src device={_gst.quote(camera_device(u.target))} ! capsfilter caps={_gst.quote(caps)} "
            f"! decodebin name={CAMERA_DECODE_NAME} ! {APPSINK}")


@LAUNCHERS.register("csi")
def _csi(u: SourceURI) -> str:
    if not _gst.has_element("nvarguscamerasrc"):  # GStreamer's "no element" parse error said neither why nor what
        raise InputError(f"source {u.text!r}: csi:// cameras are read by nvarguscamerasrc, a Jetson (JetPack) "
                         "element this machine does not have",
                         fix="on other machines give the camera as its number or v4l2:///dev/videoN")
    if not u.target.isdigit():
        raise InputError(f"source {u.text!r}: a CSI camera is given by its sensor number, got {u.target!r}",
                         fix="csi://0 for the first sensor, csi://1 for the second")
    caps = _caps(u, "video/x-raw(memory:NVMM)")
    return (f"nvarguscamerasrc sensor-id={int(u.target)} ! {caps} ! nvvidconv ! video/x-raw,format=BGRx ! {APPSINK}")


#: videotestsrc's patterns (GStreamer 1.22), named when test://PATTERN is not one
TEST_PATTERNS = ("smpte", "snow", "black", "white", "red", "green", "blue", "checkers-1", "checkers-2", "checkers-4",
                 "checkers-8", "circular", "blink", "smpte75", "zone-plate", "gamut", "chroma-zone-plate",
                 "solid-color", "ball", "smpte100", "bar", "pinwheel", "spokes", "gradient", "colors", "smpte-rp-219")


@LAUNCHERS.register("test")
def _test(u: SourceURI) -> str:
    frames = u.int_opt("frames", -1)
    live = "true" if u.bool_opt("live") else "false"
    caps = _caps(SourceURI(u.text, u.scheme, u.target, {"width": "320", "height": "240", "fps": "30", **u.options}),
                 "video/x-raw,format=RGB")  # the patterns as drawn: in 4:2:0 'colors' and smpte's bottom row change
    return f"videotestsrc pattern={u.target} is-live={live} num-buffers={frames} ! {caps} ! {APPSINK}"


@LAUNCHERS.register("launch")
def _launch(u: SourceURI) -> str:
    if u.target == STDIN_LAUNCH:  # ``--source -``: decoded as a file is (a phone's rotation tag too)
        # a file redirected in (< clip.mp4) is read as a file: a pipe is read in push mode, where GStreamer's MP4
        # demuxer drops the end of files whose audio and video are not interleaved (a dash-cam's: 175 of 221 frames)
        src = "filesrc location=/proc/self/fd/0" if _stdin_is_a_file() else "fdsrc fd=0"
        return f"{src} ! {decoded()} ! {UPRIGHT} ! {APPSINK}"
    return u.target if "edgeseg_sink" in u.target else f"{u.target} ! {APPSINK}"


def _unusable_file(text: str, undecodable: Sequence[str] = ()) -> tuple[str, str] | None:
    """``(what, fix)`` for the errors GStreamer gives a file that holds no playable video, before any frame (its
    own words were internal: 'Internal data stream error ... reason not-linked', a typefind source path);
    ``undecodable``: the video codecs no decoder was found for (:func:`undecodable_watch`)."""
    missing = re.search(r"Missing decoder: (.+?) \(video/", text)
    if undecodable or missing:
        codec = undecodable[0] if undecodable else missing.group(1)
        return (f"holds {codec} video, which no installed GStreamer decoder plays",
                "install the decoder (gstreamer1.0-libav for most codecs; -plugins-bad for AV1 (dav1d), -plugins-ugly; "
                "gst-inspect-1.0 | grep -i dec lists those here), or re-encode it to a codec this machine decodes")
    if "reason not-linked" in text:
        return ("holds no video stream GStreamer can link (an audio-only file?)",
                "give a file with a video track; gst-discoverer-1.0 on it lists its streams")
    if "no playable streams" in text or "no known streams found" in text:
        return ("holds no playable video: its index (an MP4's moov) is missing, as in a recording cut before it was "
                "finalised, or it has no video track", "re-copy the file; a cut MP4 can sometimes be rebuilt with a "
                "repair tool (e.g. untrunc) from a whole file of the same camera")
    if "Could not determine type of stream" in text:
        return ("is not a video file GStreamer recognises (its first bytes match no container)",
                "check that it is the video (not a text, playlist or partial download); file(1) shows what it is")
    return None


def _warn_mp4_in_a_pipe(_bin: Any, _sub: Any, element: Any) -> None:
    """A ``deep-element-added`` handler: an MP4/MOV demuxer reading a pipe is warned about (it cannot seek there)."""
    factory = element.get_factory()
    if factory is not None and factory.get_name() == "qtdemux":
        log.warning("standard input is an MP4/MOV read from a pipe: GStreamer's demuxer cannot seek there and loses "
                    "frames of files whose index is at the end or whose audio and video are not interleaved (a "
                    "dash-cam's MP4 gave 175 of its 221 frames; one with its index at the end, 1 frame), without an "
                    "error. "
                    "Give the file (--source FILE, or '--source - < FILE'), or pipe MPEG-TS or Matroska")


def _stdin_is_a_file() -> bool:
    """Whether standard input is a regular file (a shell's ``< clip.mp4``), not a pipe or a terminal."""
    import stat

    try:
        return sys.platform.startswith("linux") and stat.S_ISREG(os.fstat(0).st_mode)
    except OSError:
        return False


#: a file whose hardware decoder gives no frame (and no error, no end) for this long has hung (NVIDIA's forums
#: report nvv4l2decoder doing so on some streams): it is replaced as if it had failed
HARDWARE_STALL_S = 10.0
#: a file whose pipeline is still starting after this long (no frame, not one coded frame into the decoder, no error, its
#: state change pending) has hit GStreamer's start-up race (about 1 start in 40 of a cut MP4 waited for ever): it is
#: started again, once. Slow storage is not mistaken for it: its coded frames reach the decoder first
START_STALL_S = 20.0
PREROLL_TIMEOUT_S = 3.0  # how long opening a file waits for GStreamer to preroll before giving up on its total
#: how long a network source that never gave a frame keeps trying before the run stops, by scheme: a camera
#: (rtsp) for ever (a service started before its camera), saying why at every attempt; a file over http 10 s
#: (a 404 or 401 does not go away); ``?timeout=S`` sets it per URL
CONNECT_TIMEOUT_S: dict[str, float | None] = {"rtsp": None, "http": 10.0}


def file_frame_total(pipeline: Any, sink_name: str = "edgeseg_sink") -> tuple[int | None, float | None]:
    """``(frames, fps)`` of a prerolled file pipeline: GStreamer's duration query (``Gst.Format.TIME``)
    times the frame rate negotiated on the appsink's pad, rounded to whole frames. ``None`` for what
    GStreamer does not know (no duration, a variable frame rate)."""
    Gst = _gst.gst()
    sink = pipeline.get_by_name(sink_name)
    caps = sink.get_static_pad("sink").get_current_caps() if sink is not None else None
    fps = None
    if caps is not None and caps.get_size() > 0:
        ok, num, den = caps.get_structure(0).get_fraction("framerate")
        fps = num / den if ok and num > 0 and den > 0 and num / den <= _gst.MAX_FPS else None
    ok, duration_ns = pipeline.query_duration(Gst.Format.TIME)
    if not ok or duration_ns <= 0 or fps is None:
        return None, fps
    frames = int(round(duration_ns * fps / 1e9))
    return (frames if frames > 0 else None), fps


_LIVE_SCHEMES = {"rtsp", "v4l2", "csi"}
_RECONNECT_SCHEMES = {"rtsp", "http"}


def decoder_input_counter(count: Callable[[], None]) -> Callable[[Any, Any, Any], None]:
    """A ``deep-element-added`` handler: ``count()`` for every coded frame entering a video decoder ``decodebin``
    makes (one per frame the container holds, whatever its timestamps say; the NAL units or slices of one
    frame share its timestamp and count once)."""
    def on_element(_bin: Any, _parent: Any, element: Any) -> None:
        factory = element.get_factory()
        pad = element.get_static_pad("sink")
        klass = (factory.get_metadata("klass") or "") if factory is not None else ""
        if "Decoder" in klass and "Video" in klass and pad is not None:  # not the audio track's decoder
            Gst = _gst.gst()
            last = [None]

            def probe(_pad: Any, info: Any) -> Any:
                pts = info.get_buffer().pts
                if pts == Gst.CLOCK_TIME_NONE or pts != last[0]:
                    count()
                last[0] = pts
                return Gst.PadProbeReturn.OK

            pad.add_probe(Gst.PadProbeType.BUFFER, probe)

    return on_element


def gif_watch(found: list[str]) -> Callable[[Any, Any, Any], None]:
    """A ``deep-element-added`` handler: every ``decodebin`` skips GStreamer 1.22's GIF demuxer (``avdemux_gif``),
    each skip appended to ``found``: it errors on a stream, or decodes a short GIF and then spins at 100 % CPU without
    ending, and a pipeline it spins in cannot even be stopped (SIGTERM hung in ``set_state(NULL)``). The source then
    refuses the GIF, naming it; a GIF file goes to OpenCV before any pipeline."""
    def skip_gif(_bin: Any, _pad: Any, _caps: Any, factory: Any) -> int:
        if factory.get_name() == "avdemux_gif":
            found.append(factory.get_name())
            return 2  # GST_AUTOPLUG_SELECT_SKIP
        return 0  # TRY

    def on_element(_bin: Any, _parent: Any, element: Any) -> None:
        factory = element.get_factory()
        if factory is not None and factory.get_name() in ("decodebin", "uridecodebin", "parsebin"):
            _connect_if_any(element, "autoplug-select", skip_gif)  # parsebin: the demuxing inside decodebin3

    return on_element


def _all_elements(bin_: Any) -> list[Any]:
    """Every element inside ``bin_``, bins recursed into, outermost first."""
    found = []
    for element in list(bin_.children):
        found.append(element)
        if hasattr(element, "children"):
            found.extend(_all_elements(element))
    return found


def _connect_if_any(element: Any, signal: str, handler: Callable[..., Any]) -> None:
    """``element.connect(signal, handler)`` when the element's class has that signal (``decodebin3`` has neither
    ``unknown-type`` nor ``autoplug-select``: connecting raised ``TypeError`` and every launch string with it failed)."""
    from gi.repository import GObject

    if GObject.signal_lookup(signal, element.__gtype__):
        element.connect(signal, handler)


def undecodable_watch(found: list[str]) -> Callable[[Any, Any, Any], None]:
    """A ``deep-element-added`` handler: the video streams a ``decodebin`` finds no decoder for, appended to ``found``
    as the codec's name (a clip whose video codec has no decoder installed, beside an audio track, failed with
    'reason not-linked' only, which read as an audio-only file)."""
    def on_element(_bin: Any, _parent: Any, element: Any) -> None:
        factory = element.get_factory()
        if factory is not None and factory.get_name() in ("decodebin", "decodebin3", "uridecodebin"):
            _connect_if_any(element, "unknown-type", lambda _db, _pad, caps: found.append(_codec_name(caps))
                            if caps.get_size() and caps.get_structure(0).get_name().startswith("video/") else None)

    return on_element


def _codec_name(caps: Any) -> str:
    try:
        import gi

        gi.require_version("GstPbutils", "1.0")
        from gi.repository import GstPbutils

        GstPbutils.pb_utils_init()
        return GstPbutils.pb_utils_get_codec_description(caps) or caps.get_structure(0).get_name()
    except Exception:  # noqa: BLE001 - no GstPbutils typelib (gir1.2-gst-plugins-base-1.0): the caps' own name
        return caps.get_structure(0).get_name()


def hardware_decoder_watch(decoders: dict[str, str]) -> tuple[Callable[[Any, Any, Any], None], ...]:
    """``deep-element-added`` and ``deep-element-removed`` handlers keeping ``decoders`` (element name ->
    factory name) to the hardware decoders (:func:`edgeseg.stream.gst.is_hardware_decoder`) in the pipeline:
    ``decodebin`` adds each it tries and removes one that cannot start or refuses the caps (it then tries
    the next decoder itself)."""
    def added(_bin: Any, _parent: Any, element: Any) -> None:
        factory = element.get_factory()
        if _gst.is_hardware_decoder(factory):
            decoders[element.get_name()] = factory.get_name()

    def removed(_bin: Any, _parent: Any, element: Any) -> None:
        decoders.pop(element.get_name(), None)

    return added, removed


#: a flow error a hardware decoder gives for a stream it cannot take (a profile, size or bit depth the GPU
#: lacks, a resolution change): it posts nothing itself, the demuxer or parser posts the stopped stream
_REFUSED = ("reason not-negotiated", "reason not-supported")


def blamed_decoders(decoders: dict[str, str], error_from: str | None, text: str) -> list[str]:
    """The hardware decoders (factory names) an error is laid on: the one that posted it, or every one in
    the pipeline for a not-negotiated/not-supported stream; none for anything else (a network, file or
    source error is not the decoder's)."""
    if error_from in decoders:
        return [decoders[error_from]]
    if decoders and any(r in text for r in _REFUSED):
        return sorted(set(decoders.values()))
    return []


def decoder_threads_setter(threads: int) -> Callable[[Any, Any, Any], None]:
    """A ``deep-element-added`` handler: each decoder ``decodebin`` makes (before it starts) gets ``threads``
    as its ``max-threads`` when it has one (the software ``avdec_*``)."""
    def on_element(_bin: Any, _parent: Any, element: Any) -> None:
        factory = element.get_factory()
        if (factory is not None and "Decoder" in (factory.get_metadata("klass") or "")
                and element.find_property("max-threads") is not None):
            element.set_property("max-threads", threads)

    return on_element


def _timeout_opt(u: SourceURI, default: float | None) -> float | None:
    """The URI's ``timeout=S`` (seconds; 0: none), else ``default``."""
    if u.opt("timeout") is None:
        return default
    try:
        value = float(u.opt("timeout"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError(f"source {u.text!r}: timeout={u.opt('timeout')!r} is not a number of seconds >= 0",
                         fix="e.g. ?timeout=30 (seconds to wait for the first frame; 0: keep trying)")
    return value or None


#: reconnection attempts of one outage said as warnings, then one every SAID_EVERY_S seconds (the rest at debug)
SAID_ATTEMPTS = 3
SAID_EVERY_S = 30.0


class GstSource(Source):
    """Frames from GStreamer. ``realtime=True`` paces a file at its frame rate and makes it behave like a
    camera (drop oldest). ``reconnect`` (default on for rtsp/http) retries with back-off from
    ``backoff_s[0]`` doubling up to ``backoff_s[1]``, giving up after ``reconnect_timeout_s`` (None: never).
    The 1 s ceiling bounds the frames lost after a camera comes back to about one second's worth (a
    4 s ceiling turned a 2 s outage into a 4.2 s gap); a refused connection costs the camera nothing.
    ``decoder_threads``: ``max-threads`` of the software decoders ``decodebin`` picks (``avdec_*``;
    :func:`~edgeseg.stream.pipeline.decoder_threads`: None is 1 on few cores, 0 the decoder's own).

    Reconnecting is for a stream that was there: a source that has not given its first frame within
    ``connect_timeout_s`` (the URI's ``?timeout=S``; default ``"auto"``: :data:`CONNECT_TIMEOUT_S` by scheme;
    0 or None: keep trying) raises a :class:`StreamError` naming the URL and the last error; until then every attempt
    logs why it failed and how to give up (a typo in a camera's address was retried in silence)."""

    marks_reconnects = True  # its first frame after a reconnect carries DISCONTINUITY

    def __init__(self, uri: str, *, name: str | None = None, realtime: bool = False, buffer_size: int = 4,
                 reconnect: bool | None = None, backoff_s: tuple[float, float] = (0.25, 1.0),
                 reconnect_timeout_s: float | None = None, stall_timeout_s: float = 5.0,
                 decoder_threads: int | None = None, connect_timeout_s: float | None | str = "auto"):
        from ..pipeline import decoder_threads as _decoder_threads

        super().__init__()
        self.decoder_threads = _decoder_threads(decoder_threads)
        self.spec = parse_source(uri)
        self.uri = str(uri)
        self.source_id = name or self.uri
        self.launch = LAUNCHERS.get(self.spec.scheme)(self.spec)
        live_test = self.spec.scheme == "test" and self.spec.bool_opt("live")
        self.live = realtime or live_test or self.spec.scheme in _LIVE_SCHEMES or (
            self.spec.scheme == "launch" and "is-live=true" in self.spec.target)
        self.realtime = realtime
        #: a file read whole: a path, or a video piped into standard input (its frame count is checked at the end)
        stdin = self.spec.scheme == "launch" and self.spec.target == STDIN_LAUNCH
        self.piped = stdin and not _stdin_is_a_file()  # a pipe: its container cannot be read, nor read again
        #: a regular file redirected into standard input (< clip.mp4): read as that file is
        self._stdin_file = "/proc/self/fd/0" if stdin and not self.piped else None
        self._whole_file = self.spec.scheme == "file" or stdin
        #: a piped MP4 copied whole to a file (removed at close); whether the pipe's head was looked at; whether a
        #: pipe's MP4 needs no warning (fragmented, or copied)
        self._spooled: int | None = None
        self._stdin_looked = self._stdin_mp4_ok = False
        self.reconnect = self.spec.bool_opt("reconnect", self.spec.scheme in _RECONNECT_SCHEMES) \
            if reconnect is None else reconnect
        self.backoff_s = backoff_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._gif: list[str] = []  # the GIF demuxers of the pipeline (gif_watch): refused
        self._dropped_before = 0  # the buffer's drops when the frame being numbered was taken (all older than it)
        if connect_timeout_s == "auto":
            connect_timeout_s = CONNECT_TIMEOUT_S.get(self.spec.scheme)
        self.connect_timeout_s = _timeout_opt(self.spec, connect_timeout_s)
        self._opened_at: float | None = None
        self._held = False  # prerolled, waiting for the first read to play (a real-time file)
        self._restarted_stuck = False  # started again after GStreamer's start-up race (START_STALL_S)
        self._buf = FrameBuffer(buffer_size, drop_oldest=self.live)
        self._pipeline: Any = None
        self._stopping = False
        self._index = 0
        self._started_at = 0.0
        self._coded = 0  # coded frames that entered the decoder (files)
        self._pts_span: tuple[int, int] | None = None  # first and last decoded pts (files)
        self._duration_ns: int | None = None  # the container's duration (files)
        self._exact_total = False  # expected_frames is a count the container wrote (AVI), not an estimate
        self._hardware: dict[str, str] = {}  # this pipeline's hardware decoders: element name -> factory name
        self._error_from: str | None = None  # the element that posted the last error read from the bus
        self._last_pts = -1
        self._last_shown = -1  # the last delivered frame's stream time (where a restart seeks)
        #: a live source's time across reconnects (:meth:`_live_time`): added to the pipeline's pts; the last frame's
        #: time and arrival; whether the next frame is a new pipeline's first
        self._live_offset, self._last_out, self._last_received, self._rebase = 0, -1, -1, False
        self._attempts: list[float] = [-1.0, 0, 0.0]  # the outage (its start), its attempts, when one was last said
        self._resume: tuple[int, int] | None = None  # after a software restart: (last pts, frames) to skip
        self._retried: set[str] = set()  # hardware decoders this source replaced (each once)
        self._outputs = 0  # frames the current pipeline's decoder gave (delivered, or skipped after a restart)
        self._unconfirmed: list[str] = []  # decoders it disabled whose software replacement gave no frame yet
        self._unreadable: set[str] = set()  # why samples were skipped, each said once
        self._fatal: StreamError | None = None  # frames of a format edgeseg does not read: raised by the reader
        #: an MP4/MOV's full-range flag, which GStreamer 1.22's demuxer misreads (None: the caps' range)
        self._full_range = (mp4_full_range(self._stdin_file) if self._stdin_file else
                            mp4_full_range(str(video_file(self.spec.target))) if self.spec.scheme == "file" else None)
        #: the hardware decoders this source stopped using, and why (None: none failed)
        self.decoder_fallback: str | None = None
        if self.spec.scheme == "test" and self.spec.int_opt("frames", -1) > 0:
            self.expected_frames = self.spec.int_opt("frames")
        if self.spec.opt("fps") or self.spec.scheme == "test":  # the caps the launch string asks for
            self.fps = float(self.spec.int_opt("fps", 30))

    # ---- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "GstSource":
        import importlib

        # OpenCV loaded here, not first inside GStreamer's streaming thread (the colour conversion): where the loader
        # failed to map it (out of memory) that thread died with a segmentation fault, nothing said
        importlib.import_module("cv2")
        if self._pipeline is None:
            self._opened_at = self._opened_at or time.perf_counter()
            if self.piped and not self._stdin_looked:
                self._read_piped_mp4_whole()
            self._start(hold=True)
        return self

    def _read_piped_mp4_whole(self) -> None:
        """An MP4/MOV piped into standard input that is not fragmented is copied whole into a temporary file and read
        as a file (:mod:`.stdin_mp4`: GStreamer's demuxer loses frames of it in a pipe, 175 of the dash-cam's 221);
        anything else stays the pipe it is, untouched. A stop meanwhile (Ctrl-C, SIGTERM, ``stop()``) ends the look or
        the copy: the pipe is then left to GStreamer, which ends at once."""
        from .stdin_mp4 import needs_file, peek, spool

        self._stdin_looked = True
        stopped = lambda: self._stopping  # noqa: E731
        looked = peek(0, stopped=stopped)
        if looked is None:
            return
        if not needs_file(*looked):  # (no warning only where the head said so: MPEG-TS, Matroska, fragments)
            self._stdin_mp4_ok = needs_file(looked[0], False) is False
            return
        t0 = time.perf_counter()
        fd = spool(0, stopped=stopped)
        if fd is None:
            return
        path = f"/proc/self/fd/{fd}"  # (the copy has no name: nothing is left behind, whatever ends the run)
        self._spooled, self.piped, self._stdin_file, self._stdin_mp4_ok = fd, False, path, True
        log.info("standard input is an MP4/MOV that is not fragmented: read whole into a temporary file (%.1f MB in "
                 "%.1f s) and decoded from there (through the pipe GStreamer's demuxer loses frames of such a file)",
                 os.fstat(fd).st_size / 1e6, time.perf_counter() - t0)
        self.launch = f"filesrc location={path} ! {decoded()} ! {UPRIGHT} ! {APPSINK}"
        self._full_range = mp4_full_range(path)

    def _start(self, seek_ns: int | None = None, hold: bool = False) -> None:
        """Build and start the pipeline; ``seek_ns``: first preroll and seek there (a software restart). ``hold``: the
        first start (:meth:`open`) of a real-time file waits prerolled for the first read; a restart never does (it
        was left paused for ever)."""
        Gst = _gst.gst()
        if self.spec.scheme in ("file", "http"):
            _gst.prefer_hardware_decoders()
        try:
            pipe = Gst.parse_launch(self.launch)
        except Exception as e:  # GLib.Error: no such element, bad syntax
            if self.spec.scheme == "test" and '"pattern"' in str(e):  # test://bal: GStreamer's enum, unlisted
                raise StreamError(f"test pattern {self.spec.target!r} is not one of videotestsrc's",
                                  fix=f"test://PATTERN with PATTERN one of {', '.join(TEST_PATTERNS)}") from None
            raise StreamError(f"cannot build a GStreamer pipeline for {self.uri!r}: {e}",
                              fix=f"check the source; the launch string was: {self.launch}") from None
        sink = pipe.get_by_name("edgeseg_sink")
        if sink is None:
            raise StreamError(f"launch string for {self.uri!r} has no appsink named edgeseg_sink")
        sink.set_property("sync", self.realtime or self.live)
        sink.set_property("emit-signals", True)  # a user's own appsink without it never called back: a silent hang
        sink.connect("new-sample", self._on_sample)
        dec = pipe.get_by_name(DECODE_NAME)
        if dec is not None:  # an NVIDIA machine: the decoder's pad is linked when it appears (decoded())
            dec.connect("pad-added", self._on_decoded_pad)
        cam = pipe.get_by_name(CAMERA_DECODE_NAME)
        if cam is not None:
            cam.connect("autoplug-select", skip_nvmm_decoders)
        if self.decoder_threads:
            pipe.connect("deep-element-added", decoder_threads_setter(self.decoder_threads))
        if self._whole_file:
            pipe.connect("deep-element-added", decoder_input_counter(self._count_coded))
        if self.piped and not self._stdin_mp4_ok:  # (not looked at: tee(2) unusable here)
            pipe.connect("deep-element-added", _warn_mp4_in_a_pipe)
        self._gif.clear()
        self._undecodable: list[str] = []
        watches = (undecodable_watch(self._undecodable), gif_watch(self._gif))
        for watch in watches:
            pipe.connect("deep-element-added", watch)
            for element in _all_elements(pipe):  # the launch string's own decodebin and what it holds already
                watch(pipe, element.get_parent(), element)  # (decodebin3's parsebin): not deep-element-added
        self._hardware, self._error_from = {}, None
        added, removed = hardware_decoder_watch(self._hardware)
        pipe.connect("deep-element-added", added)
        pipe.connect("deep-element-removed", removed)
        self._buf.reopen()
        # a reconnect (a camera's, a live HTTP stream's): the new pipeline's clock starts again (a file replayed in
        # real time, or restarted for a hardware decoder's failure, seeks in its own)
        self._rebase = self._timed_across_restarts and self._index > 0
        self._pipeline = pipe
        self._started_at = time.perf_counter()
        # a file replayed in real time waits, prerolled, for its reader: its clock starts with the first read, not
        # while the bundle loads after open() (the first second of the file was dropped as if late)
        self._held = hold and seek_ns is None and self.realtime and self.spec.scheme == "file"
        playing = seek_ns is None and not self._held
        if pipe.set_state(Gst.State.PLAYING if playing else Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            err = self._pop_error(timeout_ns=0)
            self._teardown()
            raise StreamError(f"cannot start source {self.uri!r}: {err or 'state change failed'}")
        if seek_ns is not None:
            self._seek(seek_ns)
            pipe.set_state(Gst.State.PLAYING)
        self._probe_file_info()

    def _seek(self, pts_ns: int) -> None:
        """Once prerolled (paused: no sample reaches the reader, nothing waits on the frame buffer), an accurate
        flushing seek to ``pts_ns``: decoding restarts at the keyframe before it, not at the file's start.
        A file that cannot seek is decoded from the start; :meth:`_frame` skips what was delivered either way."""
        Gst = _gst.gst()
        ret, _, _ = self._pipeline.get_state(int(PREROLL_TIMEOUT_S * Gst.SECOND))
        ok = ret == Gst.StateChangeReturn.SUCCESS and self._pipeline.seek_simple(
            Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE, pts_ns)
        if not ok:
            log.info("%s: no seek to %.3f s (%s); decoding from the start", self.uri, pts_ns / 1e9, ret.value_nick)

    def _on_decoded_pad(self, dec: Any, pad: Any) -> None:
        """:func:`link_decoded` in GStreamer's thread; a video pad it cannot link is posted as an error on the
        bus (else no frame and no error would ever come: the source would wait for ever)."""
        try:
            link_decoded(dec.get_parent(), pad)
        except Exception as e:  # noqa: BLE001 - reported on the bus, read by the reader like any pipeline error
            from gi.repository import GLib

            Gst = _gst.gst()
            why = str(e) if isinstance(e, StreamError) else f"cannot link the decoded video: {type(e).__name__}: {e}"
            err = GLib.Error.new_literal(Gst.StreamError.quark(), why.splitlines()[0], Gst.StreamError.FAILED)
            dec.post_message(Gst.Message.new_error(dec, err, "edgeseg: decoder pad not linked"))

    def _probe_file_info(self) -> None:
        """For a file: its frame total (the progress bar, the truncation check) and frame rate, from
        GStreamer itself once the pipeline has prerolled: the duration query (the container's
        duration) times the negotiated frame rate. No total when either is unknown; never fatal."""
        if not self._whole_file or self.expected_frames is not None:
            return
        Gst = _gst.gst()
        try:
            ret, _, _ = self._pipeline.get_state(int(PREROLL_TIMEOUT_S * Gst.SECOND))
            if ret not in (Gst.StateChangeReturn.SUCCESS, Gst.StateChangeReturn.NO_PREROLL):
                return  # an error (the bus will say it) or too slow to preroll: no total
            total, fps = file_frame_total(self._pipeline)
            ok, duration_ns = self._pipeline.query_duration(Gst.Format.TIME)
            self._duration_ns = duration_ns if ok and duration_ns > 0 else None
        except Exception as e:  # noqa: BLE001 - the count only feeds the progress bar
            log.debug("%s: no frame count for the progress bar (%s)", self.spec.target, e)
            return
        if self.piped:  # no file to read the tracks or the header of
            self.expected_frames, self.fps = total, fps or self.fps
            return
        path = self._stdin_file or self.spec.target
        video_ns = mp4_video_duration_ns(path)
        if video_ns and fps and self._duration_ns and video_ns < self._duration_ns:  # audio runs on past the picture
            self._duration_ns, total = video_ns, int(round(video_ns * fps / 1e9)) or None
        announced = avi_header_frames(path)
        if announced is not None and (total is None or announced > total):
            total, self._exact_total = announced, True  # a count, not duration x rate: no variable-rate excuse
        self.expected_frames = total
        self.fps = fps or self.fps

    def _on_sample(self, sink: Any) -> Any:
        Gst = _gst.gst()
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.EOS
        try:
            image = _gst.sample_to_rgb(sample, self._full_range)
        except _gst.FrameFormatError as e:  # every frame alike: the source stops, saying why
            self._fatal = e
            self._buf.close()
            return Gst.FlowReturn.EOS
        except StreamError as e:
            said = str(e)  # once per kind: a pipeline of the wrong format would say it for every frame
            if said not in self._unreadable:
                self._unreadable.add(said)
                log.warning("%s: skipping an unreadable sample: %s", self.uri, e)
            return Gst.FlowReturn.OK
        if self.fps is None:  # rtsp, http, launch strings: the negotiated caps say
            self.fps = _gst.caps_fps(sample)
        pts = _gst.pts_ns(sample.get_buffer())
        shown = pts
        if self._whole_file and pts >= 0:
            self._pts_span = (pts, pts) if self._pts_span is None else (self._pts_span[0], pts)
            shown = _gst.stream_time_ns(sample, pts)
        # (received: when the decoder handed it over, before this source's own buffer: a live frame waits there; in
        # Unix time for the outputs, and on the monotonic clock for the time across a reconnect, which a wall-clock
        # step must not stretch)
        received = (time.time_ns(), time.monotonic_ns())
        return Gst.FlowReturn.OK if self._buf.put((image, pts, shown, received)) else Gst.FlowReturn.FLUSHING

    def _teardown(self) -> None:
        pipe, self._pipeline = self._pipeline, None
        if pipe is not None:
            self._buf.close()  # unblock a streaming thread waiting in put()
            pipe.set_state(_gst.gst().State.NULL)

    def stop(self) -> None:
        self._stopping = True
        self._buf.close()

    def close(self) -> None:
        self._stopping = True
        self._teardown()
        if self._spooled is not None:
            fd, self._spooled = self._spooled, None
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---- reading -----------------------------------------------------------------------------
    def _pop_error(self, timeout_ns: int = 0) -> str | None:
        msg = self._pop_bus(timeout_ns)
        return None if msg is None else msg[1]

    def _pop_bus(self, timeout_ns: int = 0) -> tuple[str, str] | None:
        Gst = _gst.gst()
        if self._pipeline is None:
            return None
        msg = self._pipeline.get_bus().timed_pop_filtered(timeout_ns, Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if msg is None:
            return None
        if msg.type == Gst.MessageType.EOS:
            return ("eos", "end of stream")
        self._error_from = msg.src.get_name() if msg.src is not None else None
        return ("error", _gst.bus_error_text(msg))

    def _release(self) -> None:
        """Start a held (prerolled, real-time) file playing: its clock starts now."""
        if self._held and self._pipeline is not None:
            self._held = False
            self._started_at = time.perf_counter()
            self._pipeline.set_state(_gst.gst().State.PLAYING)

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        self._release()
        self._begin_reading()
        last_frame = time.perf_counter()
        lost_at: float | None = None
        waiting_since: float | None = None  # the reader has found no frame since
        while not self._stopping:
            try:
                (image, pts, shown, received), self._dropped_before = self._buf.get_counted(timeout=0.05)
            except EOFError:
                if self._fatal is not None and not self._stopping:
                    raise self._fatal from None
                return
            except TimeoutError:
                image = None
            if self._gif:
                raise StreamError(f"source {self.uri!r} is a GIF, which GStreamer 1.22 cannot read to its end (its GIF "
                                  "demuxer, avdemux_gif, fails on a stream or a pipe, or spins for ever after the last "
                                  "frame)", fix="give the GIF as a file (--source clip.gif: read by OpenCV), or "
                                                "convert it: ffmpeg -i clip.gif clip.mp4")
            if image is not None:
                waiting_since = None
                frame = self._frame(image, pts, shown, received)
                if frame is None:  # delivered before a software restart
                    continue
                now = time.perf_counter()
                if lost_at is not None:
                    self._reconnect_gaps.append(now - last_frame)
                    frame.meta[DISCONTINUITY] = True  # (marks_reconnects)
                    log.warning("%s: reconnected after a %.2f s gap", self.uri, now - last_frame)
                    lost_at = self._outage_since = None
                last_frame = now
                yield frame
                continue
            event = self._pop_bus(0)
            quiet = time.perf_counter() - max(last_frame, self._started_at)
            if event is None and self.live and self.reconnect and quiet > self.stall_timeout_s:
                event, self._error_from = ("error", f"no frame for {self.stall_timeout_s:.1f} s"), None
            waiting_since = waiting_since or time.perf_counter()
            if event is None and self.spec.scheme == "file" and not self._index and not self._coded \
                    and not self._hardware and time.perf_counter() - waiting_since > START_STALL_S \
                    and self._start_stuck():  # (a hardware decoder that hangs: HARDWARE_STALL_S replaces it)
                if not self._restarted_stuck:  # GStreamer's own race: started again once, as nothing was delivered
                    self._restarted_stuck = True
                    log.warning("%s: GStreamer did not start the file within %g s (no frame, no error): starting it "
                                "again", self.uri, START_STALL_S)
                    self._teardown()
                    self._start()
                    waiting_since = None
                    continue
                event, self._error_from = ("error", f"GStreamer did not start decoding the file within "
                                                    f"{START_STALL_S:g} s, twice (no frame and no error)"), None
            if event is None and self._hardware and self.spec.scheme == "file" and not self.realtime \
                    and time.perf_counter() - waiting_since > HARDWARE_STALL_S:
                self._error_from = next(iter(dict(self._hardware)), None)
                event = ("error", f"no frame and no error from the decoder for {HARDWARE_STALL_S:g} s")
            if event is None:
                continue
            yield from self._drain()
            kind, text = event
            if kind == "error" and self._replace_hardware_decoder(text):
                waiting_since = None  # the new pipeline's wait starts now
                continue
            if kind == "eos" and self.spec.scheme == "http" and not self._stopping and self._has_duration():
                return  # a video file served over HTTP ends at its end; a live HTTP stream (no duration) is reconnected
            if not self.reconnect or self._stopping:
                if kind == "eos":
                    self._check_complete()
                    return
                if self.spec.target == STDIN_LAUNCH and not self._index:  # before: GStreamer's typefind message only
                    raise StreamError(
                        "--source -: standard input " + ("was empty: nothing was piped in" if "enough data" in text
                                                         else "holds no video GStreamer can decode ("
                                                               + text.split("; debug:")[0] + ")"),
                        fix="pipe a whole video file or stream into it (e.g. cat clip.mp4 | edgeseg run --source - "
                            "...); gst-discoverer-1.0 on the file shows whether GStreamer can read it")
                if "cannot link the decoded video" in text:  # the NVIDIA converter, not the file or the network
                    raise StreamError(f"source {self.uri!r}: {text.split('; debug:')[0]}",
                                      fix="the NVIDIA converter (nvvidconv on JetPack, nvvideoconvert with DeepStream) "
                                          "is missing or refused the decoder's output: check that install "
                                          "(gst-inspect-1.0 nvvidconv)")
                unusable = _unusable_file(text, self._undecodable) if self.spec.scheme == "file" and not self._index \
                    else None
                if unusable is not None:
                    raise StreamError(f"video file {self.spec.target} {unusable[0]}", fix=unusable[1])
                raise StreamError(f"source {self.uri!r} failed after {self._index} frames: {text}",
                                  fix=("frames before the failure were processed; " if self._index else "") + (
                                      "check that the camera or server is reachable and the URL is right"
                                      if self.spec.scheme in _RECONNECT_SCHEMES else
                                      "check that the file is complete and not corrupt (e.g. play it with gst-play-1.0)"))
            if lost_at is None:
                lost_at, self._outage_since = time.perf_counter(), last_frame  # (outages_at_stop_s until it is back)
            try:
                self._reconnect(kind, text, lost_at)
            except BaseException:  # it gave up (a timeout): a failure of its own, not an outage running on (a review)
                self._outage_since = None
                raise
            waiting_since = None

    def _start_stuck(self) -> bool:
        """Whether the pipeline is still changing state towards playing (an asynchronous change that has not ended)."""
        Gst = _gst.gst()
        try:
            ret, _, pending = self._pipeline.get_state(0)
        except Exception:  # noqa: BLE001 - no pipeline: not stuck
            return False
        return ret == Gst.StateChangeReturn.ASYNC and pending != Gst.State.VOID_PENDING

    def _has_duration(self) -> bool:
        """Whether the stream announced a duration (a file, wherever it is read from; a camera's stream has none)."""
        try:
            ok, duration_ns = self._pipeline.query_duration(_gst.gst().Format.TIME)
        except Exception:  # noqa: BLE001 - no pipeline, or no answer: treat it as live
            return False
        return bool(ok and duration_ns > 0)

    def _count_coded(self) -> None:
        self._coded += 1

    def _check_complete(self) -> None:
        """A file that ends well before the frame count its container announces is truncated or corrupt,
        unless the count was only an estimate (duration x frame rate): a variable-frame-rate file (phones,
        screen recorders, Matroska/WebM) whose every coded frame decoded and whose timestamps reach the
        end of its duration is complete. A file that gave no frame at all is never complete (before: the first
        20 KB of an MP4, its index and no picture, ran as '0 frames', exit 0)."""
        if self.spec.scheme == "file" and not self._stopping and not self._index:
            raise StreamError(f"video file {self.spec.target} gave no frame: it is truncated (its index without the "
                              "pictures), empty, or holds no video", fix="re-copy or re-record the file; "
                              "gst-discoverer-1.0 on it shows what it holds")
        want = self.expected_frames
        if not self._whole_file or self._stopping or not want:
            return
        slack = max(2, want // 100)
        # realtime: frames a slow pipeline could not take were dropped on purpose, as a camera's are: they count
        got = self._index + (self.dropped + self.skipped_at_start if self.realtime else 0)
        if got < want - slack and self.piped and not self._variable_rate_complete(slack):
            # a warning: a pipe's tracks cannot be read (a longer audio track makes the count too high), and GStreamer's
            # MP4 demuxer, which cannot seek in a pipe, drops the end of files whose audio and video are not
            # interleaved (a dash-cam's MP4: 175 of its 221 frames, no error)
            log.warning("standard input ended after %d frames; its container announces %d: the input was cut short, or "
                        "GStreamer could not read all of this file from a pipe (an MP4 whose audio and video are not "
                        "interleaved). Give the file's path (--source FILE) to read every frame", self._index, want)
            return
        if got < want - slack and not self._variable_rate_complete(slack):
            dropped = f" (and {got - self._index} dropped to keep real time)" if got != self._index else ""
            name = ("the MP4 piped into standard input" if self._spooled is not None else "the file redirected into standard input"
                    if self._stdin_file else f"video file {self.spec.target}")
            raise StreamError(f"{name} decoded {self._index}{dropped} of the {want} frames its "
                              "container announces: the file is truncated or corrupt",
                              fix="every frame that decoded was processed; re-copy or re-record the file")

    def _variable_rate_complete(self, slack: int) -> bool:
        """Every coded frame decoded (none dropped as corrupt) and the last one is at the container's end
        (not truncated): the frame count was wrong, not the file."""
        if self._exact_total or not self._coded or self._pts_span is None or not self._duration_ns or not self.fps:
            return False
        period_ns = 1e9 / self.fps
        reached_end = self._pts_span[1] - self._pts_span[0] + (slack + 1) * period_ns >= self._duration_ns
        # this pipeline's counts (the same as _index without restarts); after a seek restart the decoder's input also
        # holds the preroll before the seek and the frames from the keyframe it drops: only the end is checked then
        if (self._retried or self._outputs >= self._coded - slack) and reached_end:
            log.info("%s: %d frames, not the %d that duration x frame rate suggests: a variable frame rate",
                     self.spec.target, self._index, self.expected_frames)
            return True
        return False

    def _drain(self) -> Iterator[Frame]:
        while True:
            try:
                (image, pts, shown, received), self._dropped_before = self._buf.get_counted(timeout=0)
            except (TimeoutError, EOFError):
                return
            frame = self._frame(image, pts, shown, received)
            if frame is not None:
                yield frame

    def _frame(self, image: Any, pts: int, shown: int | None = None,
               received: tuple[int, int] | None = None) -> Frame | None:
        """The next frame, or None for one a software restart decodes again (:meth:`_replace_hardware_decoder`).
        ``pts``: the buffer's (restarts seek and skip by it); ``shown``: the frame's time in the file (its stream
        time: the frame's ``pts_ns``), which an edit list makes differ (x264's B-frames: the first frame at 80 ms)."""
        self._unconfirmed = []  # the next decoder gives frames: the failed one stays disabled
        self._outputs += 1
        if self._resume is not None:
            last_pts, left = self._resume
            again = pts <= last_pts if pts >= 0 and last_pts >= 0 else left > 0
            self._resume = (last_pts, left - 1) if again else None
            if again:
                return None
        out = pts if shown is None else shown
        if self._timed_across_restarts:
            out = self._live_time(out, received)
        # a live source's number counts the frames its buffer dropped (all older than this one): gaps show them
        f = Frame(image, out, self._index + (self._dropped_before if self.live else 0), self.source_id)
        if received is not None:
            f.meta[RECEIVED] = received[0]
        self._index += 1
        self._last_pts = pts
        self._last_shown = pts if shown is None else shown
        return f

    @property
    def _timed_across_restarts(self) -> bool:
        """Whether the frames' time goes on across pipeline restarts (:meth:`_live_time`): live sources and those that
        reconnect (rtsp, http), not files."""
        return (self.live or self.reconnect) and not self._whole_file

    def _live_time(self, pts: int, received: tuple[int, int] | None) -> int:
        """A live or reconnecting source's frame time (``Frame.pts_ns``): its pipeline's pts, and after a reconnect
        (whose new pipeline's clock starts again from about 0) the last frame's time plus the time between the two
        frames' arrivals (on the monotonic clock, which a wall-clock step does not move), so that time never runs
        backwards and an outage keeps its length (session 56: the MP4 continued a frame after the last one, so a 20 s
        outage was not in the file, and the JSON lines' time jumped back to 0)."""
        if pts < 0:
            return pts
        if self._rebase and self._last_out >= 0:
            gap = received[1] - self._last_received if received is not None and self._last_received >= 0 else 0
            self._live_offset = self._last_out + max(int(gap), 1) - pts
        self._rebase = False
        out = pts + self._live_offset
        self._last_out = out
        if received is not None:
            self._last_received = received[1]
        return out

    def _replace_hardware_decoder(self, text: str) -> bool:
        """A hardware decoder that failed after it started (:func:`blamed_decoders`: its own error, or a stream
        it refused) is ranked NONE (:func:`edgeseg.stream.gst.disable_decoders`) and the source starts again
        with the software decoder; a file seeks back and resumes after the last frame delivered, so no frame is
        lost or repeated. Sources that reconnect (rtsp, http) do so as usual, now in software; standard input
        cannot be read again. True when it restarted the source; each decoder is replaced once per source,
        and one whose replacement fails before its first frame is ranked as before (it was not to blame)."""
        if self._unconfirmed and not self._hardware:  # the software decoder failed too
            _gst.restore_decoders(self._unconfirmed)
            self._unconfirmed = []
        blamed = [n for n in blamed_decoders(dict(self._hardware), self._error_from, text) if n not in self._retried]
        # standard input cannot be read again; a launch string's frames cannot be resumed once some were delivered
        if self._stopping or not blamed or self.spec.target == STDIN_LAUNCH or (
                self.spec.scheme == "launch" and self._index):
            return False
        self._retried.update(blamed)
        _gst.disable_decoders(blamed)  # already disabled by another source: restarted all the same
        self.decoder_fallback = (f"{', '.join(blamed)} failed after {self._index} frames ({text.split('; debug:')[0]});"
                                 " decoding again without it")
        log.warning("%s: hardware decoder %s", self.uri, self.decoder_fallback)
        if self.reconnect:
            return False
        self._teardown()
        replay = self.spec.scheme == "file" and self._index > 0
        self._resume = (self._last_pts, self._index) if replay else None
        self._coded, self._outputs, self._unconfirmed = 0, 0, blamed
        # a seek is in stream time (the raw pts of an edit-listed file landed a frame late: one frame lost)
        self._start(seek_ns=self._last_shown if replay and self._last_pts >= 0 else None)
        return True

    def _attempt_level(self, lost_at: float) -> int:
        """The log level of a reconnection attempt's line: a warning for the first :data:`SAID_ATTEMPTS` of an outage
        and then one every :data:`SAID_EVERY_S`, the others at debug (an audit: a line a second, 3,600 an hour of a
        camera that stays away)."""
        now = time.perf_counter()
        if self._attempts[0] != lost_at:
            self._attempts = [lost_at, 0, now]
        self._attempts[1] += 1
        if self._attempts[1] <= SAID_ATTEMPTS or now - self._attempts[2] >= SAID_EVERY_S:
            self._attempts[2] = now
            return logging.WARNING
        return logging.DEBUG

    def _reconnect(self, kind: str, text: str, lost_at: float) -> None:
        delay = self.backoff_s[0]
        while not self._stopping:
            if self._index == 0 and self.connect_timeout_s and self._opened_at is not None \
                    and time.perf_counter() - self._opened_at >= self.connect_timeout_s:
                raise StreamError(f"cannot connect to {self.uri!r}: no frame within {self.connect_timeout_s:g} s ({text})",
                                  fix="check that the camera or server is on and reachable from here and that the URL "
                                      "(host, port, path) is right; add ?timeout=S to the URL to wait longer (0: forever)")
            waited = time.perf_counter() - lost_at
            if self.reconnect_timeout_s is not None and waited > self.reconnect_timeout_s:
                raise StreamError(f"source {self.uri!r} lost ({text}) and not back after {waited:.1f} s",
                                  fix="check the camera/server, or raise reconnect_timeout_s")
            level = self._attempt_level(lost_at)
            if self._index == 0 and self._opened_at is not None:  # never connected: a typo, or a camera not up yet
                log.log(level, "%s: cannot connect (%s); trying again in %.2f s (%.0f s without a frame; %s)", self.uri,
                        text, delay, time.perf_counter() - self._opened_at,
                        f"giving up after {self.connect_timeout_s:g} s" if self.connect_timeout_s else
                        "add ?timeout=S to the URL to give up after S s")
            else:
                log.log(level, "%s: stream lost %.0f s ago (%s); reconnecting in %.2f s", self.uri,
                        time.perf_counter() - lost_at, text, delay)
            self._teardown()
            end = time.perf_counter() + delay
            while not self._stopping and time.perf_counter() < end:
                time.sleep(0.02)
            delay = min(delay * 2, self.backoff_s[1])
            try:
                self._start()
            except StreamError as e:
                text = str(e)
                continue
            got = self._pop_bus(int(0.3e9))  # an immediate refusal shows up fast
            if got is None:
                return  # started; frames (or a stall) will tell
            text = got[1]
