"""``edgeseg``: a GStreamer element (``GstBase.BaseTransform``, in place) that runs an edgeseg bundle on
every RGB frame and draws the result on it::

    GST_PLUGIN_PATH=$(python -m edgeseg.stream.gst_plugin --plugin-path) \\
    PYTHONPATH=$(python -m edgeseg.stream.gst_plugin --python-path) \\
    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! edgeseg bundle=road.edgeseg \\
        ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4

GStreamer's Python plugin loader (``libgstpython``, gst-python) finds this file in
``$GST_PLUGIN_PATH/python/`` and imports it in the Python it embeds (Debian's libpython3.11, not the
venv's interpreter); PYTHONPATH gives that Python edgeseg and the venv's packages (same CPython 3.11
ABI). See docs/streaming.md. Properties: bundle, backend, precision, threads, alpha.

* A frame the model fails on passes through unchanged and is counted (``errors`` property); the first
  failure of every run of failures is posted on the bus as a WARNING with the model's error.
* ``bundle``, ``backend``, ``precision``, ``threads`` set while the element runs load the new model in
  the caller's thread and swap it in between two frames; a model that cannot load is refused with a
  WARNING and the running one kept. ``alpha`` applies from the next frame.
* The element also works in a Python process whose PyGObject lacks gst-python's overrides (a venv
  calling ``Gst.parse_launch`` with ``GST_PLUGIN_PATH`` set): its pad templates and metadata are added
  to the class here, not only through ``__gsttemplates__``.
* Caps refused at run time (``decodebin ! edgeseg`` without ``videoconvert``) are named in a WARNING
  before GStreamer's "not-negotiated" error; a buffer smaller than its caps say is an ERROR naming both.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

_REPO = Path(__file__).resolve().parents[4]
try:  # make the checkout importable when only GST_PLUGIN_PATH was set
    import edgeseg  # noqa: F401
except ImportError:
    sys.path.append(str(_REPO))

import gi  # noqa: E402

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

Gst.init(None)
_CAPS = Gst.Caps.from_string("video/x-raw,format=RGB")
_METADATA = ("edgeseg segmentation", "Filter/Effect/Video",
             "Runs an edgeseg bundle on each frame and draws the segmentation on it", "edgeseg")


def _templates() -> tuple:
    return (Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
            Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS))


def _debug(text: str) -> None:
    """A line in GStreamer's debug log (``Gst.warning`` comes from gst-python's overrides, which a venv's
    PyGObject may lack)."""
    log = getattr(Gst, "warning", None)
    if log is not None:
        log(text)



def video_info(caps):
    """``GstVideo.VideoInfo`` of ``caps``, or None: ``VideoInfo.new_from_caps`` is GStreamer 1.20+ (JetPack 5 and
    Ubuntu 20.04 ship 1.16), ``VideoInfo().from_caps`` the older form (a bool, or ``(bool, info)`` in newer
    bindings)."""
    if hasattr(GstVideo.VideoInfo, "new_from_caps"):
        return GstVideo.VideoInfo.new_from_caps(caps)
    info = GstVideo.VideoInfo()
    got = info.from_caps(caps)
    ok, info = (got if isinstance(got, tuple) else (got, info))
    return info if ok else None

class EdgesegFilter(GstBase.BaseTransform):
    __gtype_name__ = "GstEdgeseg"  # instances are named edgeseg0, edgeseg1, ... in messages
    __gstmetadata__ = _METADATA
    __gsttemplates__ = _templates()
    __gproperties__ = {
        "bundle": (str, "bundle", "bundle directory, .zip, or shipped name", "", GObject.ParamFlags.READWRITE),
        "backend": (str, "backend", "auto | onnxruntime | openvino | tensorrt | torch", "auto", GObject.ParamFlags.READWRITE),
        "precision": (str, "precision", "auto | fp32 | bf16 | fp16 | int8 (auto: chosen on this device)", "auto",
                      GObject.ParamFlags.READWRITE),
        "threads": (int, "threads", "intra-op CPU threads (0: runtime default)", 0, 256, 0, GObject.ParamFlags.READWRITE),
        "alpha": (float, "alpha", "overlay opacity", 0.0, 1.0, 0.5, GObject.ParamFlags.READWRITE),
        "errors": (int, "errors", "frames the model failed on", 0, 2**31 - 1, 0, GObject.ParamFlags.READABLE),
    }

    def __init__(self) -> None:
        super().__init__()
        self.props_ = {"bundle": "", "backend": "auto", "precision": "auto", "threads": 0, "alpha": 0.5}
        self.errors = 0
        self.frames = 0
        self.failing = False  # the last frame failed (one bus warning per run of failures)
        self.refused: set[str] = set()  # caps refused (and named on the bus) so far
        self.model_lock = threading.RLock()  # the model and renderer, swapped by a property set while running
        self.config_lock = threading.RLock()  # property sets and start, one at a time (each may load a model);
        # re-entrant: a sync bus handler that sets a property when this thread posts a warning runs in it
        self.predictor = None
        self.renderer = None
        self.width = self.height = self.stride = self.offset = 0

    def do_get_property(self, prop):
        return self.errors if prop.name == "errors" else self.props_[prop.name]

    def do_set_property(self, prop, value) -> None:
        with self.config_lock:  # one property set, or a start, at a time: none is lost to another's load
            self._set_property(prop.name, value)

    def _set_property(self, name: str, value) -> None:
        with self.model_lock:
            running = self.predictor is not None
            if not running or value == self.props_[name]:
                self.props_[name] = value  # takes effect when the element starts
                return
            if name == "alpha":
                self.props_[name] = value
                self.renderer = self._renderer(self.predictor, value)
                return
        props = {**self.props_, name: value}
        try:  # load in the caller's thread; frames keep flowing through the running model meanwhile
            predictor = self._load(props)
        except Exception as e:
            self._post(Gst.Message.new_warning, Gst.ResourceError.SETTINGS,
                       f"edgeseg: {name}={value!r} set while running cannot be used, the element keeps "
                       f"bundle {self.props_['bundle']!r} (backend {self.props_['backend']}, precision "
                       f"{self.props_['precision']}): {e}")
            return
        with self.model_lock:
            self.props_ = props
            if self.predictor is None:  # stopped while the model loaded: the next start loads it again
                old = predictor
            else:
                old, self.predictor = self.predictor, predictor
                self.renderer = self._renderer(predictor, props["alpha"])
        old.close()

    @staticmethod
    def _load(props: dict):
        from edgeseg.predictor import load

        if not props["bundle"]:
            raise ValueError("the edgeseg element needs bundle=PATH (a bundle directory, .zip or shipped name)")
        predictor = load(props["bundle"], backend=props["backend"], precision=props["precision"],
                         threads=props["threads"])
        try:
            predictor.runner.activate()
        except BaseException:
            predictor.close()
            raise
        return predictor

    @staticmethod
    def _renderer(predictor, alpha: float):
        from edgeseg.stream.overlay import Renderer

        m = predictor.manifest
        return Renderer(m.palette_array, m.classes, alpha=alpha, hud=False)

    def do_start(self) -> bool:
        with self.config_lock:  # a property set while the model loads is applied after, not lost
            return self._start()

    def _start(self) -> bool:
        p = dict(self.props_)
        if not p["bundle"]:
            return self._fail("the edgeseg element needs bundle=PATH (a bundle directory, .zip or shipped name)")
        try:
            predictor = self._load(p)
        except Exception as e:
            return self._fail(f"edgeseg cannot load bundle {p['bundle']!r}: {e}")
        with self.model_lock:
            self.predictor = predictor
            self.renderer = self._renderer(predictor, p["alpha"])
            self.errors = self.frames = 0
            self.failing = False
        return True

    def _post(self, new, code, text: str, debug: str | None = None) -> None:
        err = GLib.Error.new_literal(Gst.ResourceError.quark() if isinstance(code, Gst.ResourceError)
                                     else Gst.StreamError.quark(), text, code)
        self.post_message(new(self, err, debug or text))

    def _fail(self, text: str, code=Gst.ResourceError.SETTINGS) -> bool:
        self._post(Gst.Message.new_error, code, text)
        return False

    def do_stop(self) -> bool:
        with self.model_lock:
            predictor, self.predictor, self.renderer = self.predictor, None, None
        if predictor is not None:
            predictor.close()
        return True

    def do_accept_caps(self, direction, caps) -> bool:
        ok = GstBase.BaseTransform.do_accept_caps(self, direction, caps)
        if not ok and direction == Gst.PadDirection.SINK and caps.is_fixed():
            text = caps.to_string()
            if text not in self.refused:  # the CAPS event is refused before any element code runs: say why here
                self.refused.add(text)
                self._post(Gst.Message.new_warning, Gst.StreamError.FORMAT,
                           f"edgeseg takes RGB frames in system memory (video/x-raw,format=RGB), not {text}: put "
                           "videoconvert before edgeseg (NVMM memory: on a Jetson nvvidconv ! video/x-raw,format=BGRx ! "
                           "videoconvert; with DeepStream nvvideoconvert ! video/x-raw,format=RGB)")
        return ok

    def do_set_caps(self, incaps, outcaps) -> bool:
        info = video_info(incaps)  # the layout the caps imply (row stride, plane offset)
        if info is None:
            return self._fail(f"edgeseg: cannot read video caps {incaps.to_string()}", Gst.StreamError.FORMAT)
        self.width, self.height = info.width, info.height
        self.stride, self.offset = info.stride[0], info.offset[0]
        return True

    def _layout(self, buf) -> tuple[int, int]:
        """(row stride, offset) of this buffer: its GstVideoMeta when upstream attached one, else the caps'."""
        meta = GstVideo.buffer_get_video_meta(buf)
        if meta is not None:
            return meta.stride[0], meta.offset[0]
        return self.stride, self.offset

    def do_transform_ip(self, buf):
        import numpy as np

        h, w = self.height, self.width
        stride, offset = self._layout(buf)
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            self._fail("edgeseg: cannot map a frame's memory for reading", Gst.StreamError.FAILED)
            return Gst.FlowReturn.ERROR
        try:
            need = offset + stride * (h - 1) + w * 3
            if info.size < need or stride < w * 3:
                self._fail(f"edgeseg: a buffer of {info.size} bytes does not hold a {w}x{h} RGB frame (row stride "
                           f"{stride}, offset {offset}: {need} bytes, rows of at least {w * 3}); upstream's "
                           "buffers do not match its caps: give the source (appsrc caps=...) the frames' true "
                           "size and format", Gst.StreamError.FORMAT)
                return Gst.FlowReturn.ERROR
            flat = np.frombuffer(info.data, np.uint8)
            rows = np.lib.stride_tricks.as_strided(flat[offset:], (h, w * 3), (stride, 1))
            image = np.ascontiguousarray(rows).reshape(h, w, 3)
        finally:
            buf.unmap(info)
        self.frames += 1
        with self.model_lock:
            try:
                out = self.renderer(image, self.predictor(image))
            except Exception as e:  # count it, pass the frame through, keep the stream going
                self.errors += 1
                text = (f"edgeseg: the model failed on frame {self.frames} ({w}x{h}), which passes through "
                        f"unannotated ({self.errors} so far; the 'errors' property counts them): "
                        f"{type(e).__name__}: {e}")
                _debug(text)
                if not self.failing:
                    self._post(Gst.Message.new_warning, Gst.StreamError.FAILED, text)
                self.failing = True
                return Gst.FlowReturn.OK
        self.failing = False
        if stride != w * 3:
            padded = np.zeros((h, stride), np.uint8)
            padded[:, : w * 3] = out.reshape(h, w * 3)
            out = padded
        data = out.tobytes()
        buf.fill(offset, data[: buf.get_size() - offset])  # the last row's padding may lie past the buffer's end
        return Gst.FlowReturn.OK


GObject.type_register(EdgesegFilter)
# Without gst-python's overrides (a venv's PyGObject has none) nothing reads __gsttemplates__/__gstmetadata__:
# the element had no pads ("can't handle caps video/x-raw, format=RGB") and no metadata. Add them to the class
# here, only then (a second template of the same name would replace the first without taking a reference).
if "gi.overrides._gi_gst" not in sys.modules:
    _TEMPLATES = _templates()
    for _template in _TEMPLATES:
        EdgesegFilter.add_pad_template(_template)
    EdgesegFilter.set_static_metadata(*_METADATA)
__gstelementfactory__ = ("edgeseg", Gst.Rank.NONE, EdgesegFilter)
