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
A frame the model fails on passes through unchanged and is counted (``errors`` property).
"""
from __future__ import annotations

import sys
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


class EdgesegFilter(GstBase.BaseTransform):
    __gstmetadata__ = ("edgeseg segmentation", "Filter/Effect/Video",
                       "Runs an edgeseg bundle on each frame and draws the segmentation on it", "edgeseg")
    __gsttemplates__ = (Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
                        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS))
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
        self.predictor = None
        self.renderer = None
        self.width = self.height = self.stride = self.offset = 0

    def do_get_property(self, prop):
        return self.errors if prop.name == "errors" else self.props_[prop.name]

    def do_set_property(self, prop, value) -> None:
        self.props_[prop.name] = value

    def do_start(self) -> bool:
        from edgeseg.predictor import load
        from edgeseg.stream.overlay import Renderer

        p = self.props_
        if not p["bundle"]:
            return self._fail("the edgeseg element needs bundle=PATH (a bundle directory, .zip or shipped name)")
        try:
            self.predictor = load(p["bundle"], backend=p["backend"], precision=p["precision"], threads=p["threads"])
            self.predictor.runner.activate()
        except Exception as e:
            return self._fail(f"edgeseg cannot load bundle {p['bundle']!r}: {e}")
        m = self.predictor.manifest
        self.renderer = Renderer(m.palette_array, m.classes, alpha=p["alpha"], hud=False)
        return True

    def _fail(self, text: str) -> bool:
        err = GLib.Error.new_literal(Gst.ResourceError.quark(), text, Gst.ResourceError.SETTINGS)
        self.post_message(Gst.Message.new_error(self, err, text))
        return False

    def do_stop(self) -> bool:
        if self.predictor is not None:
            self.predictor.close()
            self.predictor = None
        return True

    def do_set_caps(self, incaps, outcaps) -> bool:
        info = GstVideo.VideoInfo.new_from_caps(incaps)  # the layout the caps imply (row stride, plane offset)
        if info is None:
            return self._fail(f"edgeseg: cannot read video caps {incaps.to_string()}")
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
            return Gst.FlowReturn.ERROR
        try:
            if info.size < offset + stride * (h - 1) + w * 3:
                Gst.warning(f"edgeseg: buffer of {info.size} bytes is too small for {w}x{h} RGB (stride {stride})")
                return Gst.FlowReturn.ERROR
            flat = np.frombuffer(info.data, np.uint8)
            rows = np.lib.stride_tricks.as_strided(flat[offset:], (h, w * 3), (stride, 1))
            image = np.ascontiguousarray(rows).reshape(h, w, 3)
        finally:
            buf.unmap(info)
        try:
            out = self.renderer(image, self.predictor(image))
        except Exception as e:  # count it, pass the frame through, keep the stream going
            self.errors += 1
            Gst.warning(f"edgeseg: frame failed: {e}")
            return Gst.FlowReturn.OK
        if stride != w * 3:
            padded = np.zeros((h, stride), np.uint8)
            padded[:, : w * 3] = out.reshape(h, w * 3)
            out = padded
        data = out.tobytes()
        buf.fill(offset, data[: buf.get_size() - offset])  # the last row's padding may lie past the buffer's end
        return Gst.FlowReturn.OK


GObject.type_register(EdgesegFilter)
__gstelementfactory__ = ("edgeseg", Gst.Rank.NONE, EdgesegFilter)
