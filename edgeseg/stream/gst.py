"""GStreamer access through PyGObject, imported only when a GStreamer source or sink is used.

:func:`gst` returns the initialised ``Gst`` module or raises :class:`~edgeseg.errors.StreamError`
saying how to install it; :func:`available` answers without raising.
"""
from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Iterable

import numpy as np

from .._unwind import pin_gcc_unwinder
from ..errors import StreamError

_FIX = ("install GStreamer with its Python bindings: apt install gir1.2-gstreamer-1.0 gstreamer1.0-plugins-good "
        "gstreamer1.0-plugins-bad gstreamer1.0-libav, and pip install 'edgeseg[gst]' (PyGObject==3.50.2 on Debian 12; "
        "pip builds it from source where no wheel fits, e.g. Python 3.12/3.13: first apt install libgirepository1.0-dev "
        "libcairo2-dev pkg-config gcc)"
        + ("; on Python 3.8 (JetPack 5), where that PyGObject has no wheel: apt install python3-gi and a venv made with "
           "--system-site-packages" if sys.version_info < (3, 9) else ""))
_init_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _load(extra: tuple[str, ...] = ()) -> Any:
    with _init_lock:
        pin_gcc_unwinder()  # GStreamer brings libunwind into the global scope: GCC's unwinder must come first
        try:
            import gi

            gi.require_version("Gst", "1.0")
            for ns in extra:
                gi.require_version(ns, "1.0")
            from gi.repository import Gst
        except (ImportError, ValueError) as e:
            raise StreamError(f"GStreamer is not available from Python ({e})", fix=_FIX) from None
        if not Gst.is_initialized():
            Gst.init(None)
        return Gst


def quote(value: str) -> str:
    """``value`` as a quoted property value of a launch string (quotes and backslashes escaped): paths
    with spaces, quotes or ``!`` stay one value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gst() -> Any:
    """The initialised ``Gst`` module."""
    return _load()


def gst_module(name: str) -> Any:
    """Another GStreamer namespace (``GstApp``, ``GstRtspServer``, ``GstBase``), initialised."""
    _load((name,))
    import importlib

    return importlib.import_module(f"gi.repository.{name}")


def available() -> tuple[bool, str]:
    """(True, "") when GStreamer works from Python, else (False, why). Never raises."""
    try:
        gst()
        return True, ""
    except StreamError as e:
        return False, str(e)


def has_element(factory: str) -> bool:
    try:
        return gst().ElementFactory.find(factory) is not None
    except StreamError:
        return False


#: decoders raised above the software ones when present: NVIDIA's V4L2 decoders (which output NVMM memory) only
#: where a converter that reads it is there too (``sources.gst_source.NVMM_CONVERTERS``), GStreamer's own NVDEC and
#: VA-API decoders (system memory) everywhere; the first of two that decode the same stream wins
HARDWARE_DECODERS = (("nvv4l2decoder", True), ("nvjpegdec", True), ("nvh264dec", False), ("nvh265dec", False),
                     ("vah264dec", False), ("vaapih264dec", False))


#: hardware decoders that failed in this process (a container without NVDEC, a driver refusing a profile):
#: ranked NONE from then on, so decodebin takes the next decoder (:func:`disable_decoders`): the rank each had
#: and how many sources blame it; the lock keeps one source's disabling and another's raising
#: (:func:`prefer_hardware_decoders`) apart
_failed_decoders: dict[str, list[int]] = {}
_ranks_lock = threading.Lock()


def file_decoder_ranks() -> dict[str, int]:
    """The ranks :func:`prefer_hardware_decoders` gives the hardware decoders that exist here (nothing is
    changed): PRIMARY + 100 - i for the i-th of :data:`HARDWARE_DECODERS`, NONE for an NVMM one without a
    converter that reads its output (its own rank, nvv4l2decoder's PRIMARY + 11, would still beat the
    software decoders) and for one that failed in this process."""
    Gst = gst()
    nvmm_ok = has_element("nvvidconv") or has_element("nvvideoconvert")
    ranks = {}
    for i, (name, nvmm) in enumerate(HARDWARE_DECODERS):
        if Gst.ElementFactory.find(name) is not None:
            bad = (nvmm and not nvmm_ok) or name in _failed_decoders
            ranks[name] = int(Gst.Rank.NONE) if bad else int(Gst.Rank.PRIMARY) + 100 - i
    return ranks


def prefer_hardware_decoders() -> list[str]:
    """Give the hardware decoders that exist here their :func:`file_decoder_ranks` so decodebin picks them;
    returns the names raised."""
    Gst = gst()
    with _ranks_lock:
        ranks = file_decoder_ranks()
        for name, rank in ranks.items():
            Gst.ElementFactory.find(name).set_rank(rank)
    return [name for name, rank in ranks.items() if rank > int(Gst.Rank.NONE)]


def hardware_decoder_names() -> frozenset[str]:
    """The factory names of :data:`HARDWARE_DECODERS`."""
    return frozenset(name for name, _ in HARDWARE_DECODERS)


def is_hardware_decoder(factory: Any) -> bool:
    """A decoder on a GPU, VPU or codec block: one of :data:`HARDWARE_DECODERS`, one whose class says so
    (GStreamer's VA, V4L2 stateless and D3D11 decoders: ``Codec/Decoder/Video/Hardware``), a V4L2 memory-to-memory
    decoder (``v4l2h264dec``: a Raspberry Pi's) or NVIDIA's (``nv*dec``)."""
    if factory is None:
        return False
    name, klass = factory.get_name(), factory.get_metadata("klass") or ""
    return (name in hardware_decoder_names() or ("Decoder" in klass and "Hardware" in klass)
            or (name.endswith("dec") and name.startswith(("v4l2", "nv"))))


def disable_decoders(names: Iterable[str]) -> list[str]:
    """Rank ``names`` NONE for the rest of this process (decodebin then takes the next decoder) and count one
    more source blaming each; returns those not disabled before."""
    Gst = gst()
    new = []
    with _ranks_lock:
        for name in sorted(set(names)):
            if name in _failed_decoders:
                _failed_decoders[name][1] += 1
                continue
            f = Gst.ElementFactory.find(name)
            _failed_decoders[name] = [f.get_rank() if f is not None else 0, 1]
            if f is not None:
                f.set_rank(Gst.Rank.NONE)
            new.append(name)
    return new


def restore_decoders(names: Iterable[str]) -> None:
    """Withdraw one source's blame from ``names`` (its next decoder failed as well: these were not to blame);
    a decoder no source blames any more gets its rank back."""
    Gst = gst()
    with _ranks_lock:
        for name in set(names):
            entry = _failed_decoders.get(name)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] > 0:
                continue
            del _failed_decoders[name]
            f = Gst.ElementFactory.find(name)
            if f is not None:
                f.set_rank(entry[0])


def failed_decoders() -> frozenset[str]:
    """The decoders :func:`disable_decoders` ranked NONE in this process."""
    with _ranks_lock:
        return frozenset(_failed_decoders)


#: the layouts of decoded frames edgeseg converts itself (:mod:`.yuv`: exact, where ``videoconvert`` is up to 3.7
#: levels dark): planes (count, ``yuv`` subsampling) or ``"packed"``
YUV_FORMATS = {"I420": (3, "420"), "NV12": (2, "420"), "Y42B": (3, "422"), "Y444": (3, "444"), "YUY2": "packed"}
#: what a GStreamer source's ``appsink`` takes (:func:`sample_to_rgb` reads each): progressive 8-bit YUV frames of
#: :data:`YUV_FORMATS` as the decoder or camera gives them, and everything else as RGB from ``videoconvert``
#: (interlaced YUV has its chroma lines per field; 10-bit 4:2:0 comes as I420, converted to 8 bits by videoconvert)
SOURCE_CAPS = (f"video/x-raw,format=(string){{ {', '.join(YUV_FORMATS)} }},interlace-mode=progressive; "
               "video/x-raw,format=RGB")
#: GStreamer's colour matrices (``GstVideoColorMatrix`` nicks) that :mod:`.yuv` converts
_MATRICES = ("bt601", "bt709", "bt2020", "smpte240m", "fcc")


class FrameFormatError(StreamError):
    """Frames of a format :func:`sample_to_rgb` does not read (a user's own ``edgeseg_sink`` caps): every frame
    would fail alike, so a source stops on it."""


def sample_to_rgb(sample: Any, full_range: bool | None = None) -> np.ndarray:
    """A ``GstSample`` of :data:`SOURCE_CAPS` -> ``uint8 [H, W, 3]`` RGB (a new array). YUV frames are converted with
    the colour matrix and range their caps state (GStreamer's defaults when they say none; ``full_range`` overrides
    the range, as the file's container states it where GStreamer misreads it); RGB rows are unpadded (GStreamer
    pads them to 4 bytes). Another format raises :class:`FrameFormatError` naming it."""
    Gst = gst()
    caps = sample.get_caps()
    structure = caps.get_structure(0) if caps is not None and caps.get_size() else None
    if structure is None:
        raise StreamError("GStreamer sample without caps")
    fmt = structure.get_value("format") if structure.has_field("format") else "RGB"
    features = caps.get_features(0)
    memory = [features.get_nth(i) for i in range(features.get_size())] if features is not None else []
    if any(m != "memory:SystemMemory" for m in memory):  # NVMM, CUDA, DMA-buf: mapping gives a handle, not pixels
        raise FrameFormatError(f"the source's appsink got frames in {', '.join(memory)}, not system memory "
                               f"({caps.to_string()})",
                               fix="convert them to system memory before the appsink: nvvidconv ! "
                                   "video/x-raw,format=BGRx ! videoconvert (Jetson), nvvideoconvert (DeepStream), or "
                                   "leave edgeseg_sink out and edgeseg adds it")
    if fmt != "RGB" and fmt not in YUV_FORMATS:
        raise FrameFormatError(f"the source's appsink got {fmt} frames, not RGB or {', '.join(YUV_FORMATS)} "
                               f"({caps.to_string()})",
                               fix="end the pipeline with 'videoconvert ! video/x-raw,format=RGB ! appsink "
                                   "name=edgeseg_sink', or leave edgeseg_sink out and edgeseg adds it")
    ok_w, w = structure.get_int("width")
    ok_h, h = structure.get_int("height")
    if not (ok_w and ok_h):
        raise StreamError(f"GStreamer sample without a frame size: {caps.to_string()}")
    buf = sample.get_buffer()
    ok, info = buf.map(Gst.MapFlags.READ)
    if not ok:
        raise StreamError("cannot map a GStreamer buffer for reading")
    try:
        if fmt != "RGB":
            return _yuv_to_rgb(caps, buf, info.data, fmt, w, h, full_range)
        stride = info.size // h if h else 0
        if stride < w * 3:
            raise StreamError(f"GStreamer buffer of {info.size} bytes is too small for {w}x{h} RGB")
        arr = np.frombuffer(info.data, np.uint8, count=stride * h).reshape(h, stride)[:, : w * 3]
        return np.ascontiguousarray(arr.reshape(h, w, 3))
    finally:
        buf.unmap(info)


def _yuv_to_rgb(caps: Any, buf: Any, data: Any, fmt: str, w: int, h: int, full_range: bool | None) -> np.ndarray:
    from . import yuv

    GstVideo = gst_module("GstVideo")
    vinfo = GstVideo.VideoInfo.new_from_caps(caps)
    if vinfo is None:
        raise StreamError(f"GStreamer caps that are no video layout: {caps.to_string()}")
    meta = GstVideo.buffer_get_video_meta(buf)  # a decoder's own plane layout (padded planes), when it says one
    layout = meta if meta is not None else vinfo
    layout_kind = YUV_FORMATS[fmt]
    if layout_kind == "packed":
        shapes = [(h, -(-w // 2), 4)]
    else:
        planes, sub = layout_kind
        fy, fx = yuv.SUBSAMPLING[sub]
        rows, cols = -(-h // fy), -(-w // fx)
        shapes = [(h, w, 1), (rows, cols, 2)] if planes == 2 else [(h, w, 1), (rows, cols, 1), (rows, cols, 1)]
    views = []
    for i, (r, c, n) in enumerate(shapes):
        stride, offset = int(layout.stride[i]), int(layout.offset[i])
        try:
            views.append(np.ndarray((r, c, n), np.uint8, buffer=data, offset=offset, strides=(stride, n, 1)))
        except (TypeError, ValueError):
            raise StreamError(f"a GStreamer {fmt} buffer too small for {w}x{h} (plane {i}: stride {stride}, "
                              f"offset {offset})") from None
    nick = vinfo.colorimetry.matrix.value_nick  # unknown (and rgb, meaningless for YUV): what GStreamer assumes
    matrix = nick if nick in _MATRICES else yuv.default_matrix(h)
    full = vinfo.colorimetry.range.value_nick == "0-255" if full_range is None else full_range
    if layout_kind == "packed":
        return yuv.yuy2_to_rgb(views[0], w, matrix, full)
    if len(views) == 2:
        return yuv.nv12_to_rgb(views[0][..., 0], views[1], matrix, full)
    return yuv.planar_to_rgb(views[0][..., 0], views[1][..., 0], views[2][..., 0], layout_kind[1], matrix, full)


#: a frame rate above this is a demuxer's placeholder, not a rate (qtdemux says 1000000000/1 for a variable-rate
#: MP4 whose header rate is 0/1): treated as unknown, so no frame total is made of it and sinks write at 25 fps
MAX_FPS = 1000.0


def caps_fps(sample: Any) -> float | None:
    """The frame rate in a sample's caps (``framerate=30/1``), or None when absent or variable (0/1)."""
    try:
        ok, num, den = sample.get_caps().get_structure(0).get_fraction("framerate")
    except Exception:  # no caps
        return None
    return num / den if ok and num > 0 and den > 0 and num / den <= MAX_FPS else None


def pts_ns(buffer: Any) -> int:
    Gst = gst()
    pts = buffer.pts
    return -1 if pts == Gst.CLOCK_TIME_NONE else int(pts)


def stream_time_ns(sample: Any, pts: int) -> int:
    """``pts`` (a buffer's, in the sample's segment) as stream time: the position in the file, as players, FFmpeg and
    OpenCV give it. A file with an edit list (x264's B-frames; every MP4 FFmpeg or mp4mux writes) has its first buffer
    at the edit's offset (80 ms at 25 fps): its frame 0 was at 0.08 s in the JSON lines and 0 in the MP4 written.
    ``pts`` itself where the segment cannot map it."""
    Gst = gst()
    segment = sample.get_segment()
    if pts < 0 or segment is None or segment.format != Gst.Format.TIME:
        return pts
    shown = segment.to_stream_time(Gst.Format.TIME, pts)
    return pts if shown in (Gst.CLOCK_TIME_NONE, -1) or shown < 0 else int(shown)


def bus_error_text(message: Any) -> str:
    err, debug = message.parse_error()
    src = message.src.get_name() if message.src is not None else "?"
    text = f"{err.message} (from element {src})"
    if debug:
        text += f"; debug: {debug.splitlines()[-1][:300]}"
    return text


class GLibLoop:
    """A GLib main loop in a daemon thread (for gst-rtsp-server and bus watches)."""

    def __init__(self) -> None:
        from gi.repository import GLib

        self.context = GLib.MainContext.new()
        self.loop = GLib.MainLoop.new(self.context, False)
        self._thread = threading.Thread(target=self._run, name="edgeseg-glib", daemon=True)

    def _run(self) -> None:
        self.context.push_thread_default()
        try:
            self.loop.run()
        finally:
            self.context.pop_thread_default()

    def start(self) -> "GLibLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.ident is None:  # never started
            return
        from gi.repository import GLib

        quit_source = GLib.idle_source_new()  # runs once the loop runs: a quit() before run() would be lost
        quit_source.set_callback(lambda *_: self.loop.quit() or GLib.SOURCE_REMOVE)
        quit_source.attach(self.context)
        self._thread.join(2.0)
