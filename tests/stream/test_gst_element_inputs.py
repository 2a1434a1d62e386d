"""The native ``edgeseg`` element given what a gst-launch-1.0 / DeepStream user gets wrong: caps it cannot
take, buffers that do not match their caps, a model that fails on some frames, properties set while the
pipeline plays, and the element used from the SDK's own Python (``Gst.parse_launch`` in a venv).

Every pipeline runs in a child process with a timeout, so a hang fails the test instead of blocking it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_model, make_bundle

pytestmark = pytest.mark.gst
FP32 = "threads=1 backend=onnxruntime precision=fp32"




@pytest.fixture(scope="module")
def liar(tmp_path_factory):
    """A bundle whose manifest says "any input size" around a graph fixed to 32x32: it runs on 32x32 frames
    and raises on every other size (ONNX Runtime's invalid-dimensions error)."""
    tmp = tmp_path_factory.mktemp("liar")
    onnx_path = conv_model(tmp / "liar.onnx", 4, size=ImageShape(32, 32))
    return make_bundle(tmp / "liar.edgeseg", onnx_path, input_spec=InputSpec(size_rule="any"), name="liar").root


def launch(env, *args, timeout=60):
    try:
        return subprocess.run(["gst-launch-1.0", *args], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"gst-launch-1.0 hung ({timeout} s): {e.stdout!s:.2000}")


# In-process harness: appsrc -> (elements) -> appsink in this venv's Python, one frame pushed and pulled at a
# time (caps set before each, so a size change is a real renegotiation); bus errors/warnings collected.
PRELUDE = """
import json, sys, threading
import numpy as np
import edgeseg
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
from edgeseg.stream import Renderer

def image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.uint8); a[:] = rng.integers(0, 255, 3)
    a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = rng.integers(0, 255, 3)
    return a

class Pipe:
    def __init__(self, elements):
        self.p = Gst.parse_launch(f"appsrc name=src format=time ! {elements} ! appsink name=sink sync=false")
        self.src, self.sink, self.e = (self.p.get_by_name(n) for n in ("src", "sink", "e"))
        self.i = 0
    def play(self):
        return self.p.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE
    def push(self, a, caps=None):
        h, w = a.shape[:2]
        stride = (w * 3 + 3) & ~3
        self.src.set_caps(Gst.Caps.from_string(caps or f"video/x-raw,format=RGB,width={w},height={h},framerate=25/1"))
        rows = np.zeros((h, stride), np.uint8); rows[:, :w * 3] = a.reshape(h, -1)
        b = Gst.Buffer.new_wrapped(rows.tobytes()); b.pts = self.i * 40 * Gst.MSECOND; b.duration = 40 * Gst.MSECOND
        self.i += 1
        self.src.emit("push-buffer", b)
        s = self.sink.emit("try-pull-sample", 3 * Gst.SECOND)
        if s is None:
            return None
        b = s.get_buffer()
        return np.frombuffer(b.extract_dup(0, b.get_size()), np.uint8).reshape(h, stride)[:, :w * 3].reshape(h, w, 3)
    def messages(self):
        out = []
        while (m := self.p.get_bus().pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.WARNING)) is not None:
            err = m.parse_error()[0] if m.type == Gst.MessageType.ERROR else m.parse_warning()[0]
            out.append(["ERROR" if m.type == Gst.MessageType.ERROR else "WARNING", m.src.get_name(), err.message])
        return out
    def stop(self):
        self.p.set_state(Gst.State.NULL)

_refs = {}
def expected(bundle, a, alpha=0.5):
    if bundle not in _refs:
        _refs[bundle] = edgeseg.load(bundle, backend="onnxruntime", precision="fp32", threads=1)
    p = _refs[bundle]
    return Renderer(p.manifest.palette_array, p.manifest.classes, alpha=alpha, hud=False)(a, p(a))

def same(out, ref):
    return out is not None and bool(np.array_equal(out, ref))
"""


def in_process(env, body: str, timeout=60) -> dict:
    """Runs PRELUDE + body in this venv's Python (whose PyGObject has no gst-python overrides); the body
    prints one JSON line last."""
    code = PRELUDE + textwrap.dedent(body)
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the pipeline hung ({timeout} s): {e.stderr!s:.2000}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_element_runs_in_the_sdks_own_python_with_size_changes_reuse_and_two_pipelines(launch_env):
    """Before: a venv's PyGObject has no gst-python overrides, nothing read __gsttemplates__, and the element
    had no pads: Gst.parse_launch failed with "could not link src to e" (a GStreamer-Base CRITICAL first)."""
    got = in_process(launch_env, f"""
        p = Pipe("edgeseg name=e bundle=shapes {FP32}")
        assert p.play()
        sizes = [(64, 48), (161, 121), (1, 1), (64, 48)]  # caps renegotiated between frames
        first = [same(p.push(image(w, h, i)), expected("shapes", image(w, h, i))) for i, (w, h) in enumerate(sizes)]
        p.stop()  # NULL, then PLAYING again: the element loads the bundle again
        assert p.play()
        again = same(p.push(image(64, 48, 9)), expected("shapes", image(64, 48, 9)))
        q = Pipe("edgeseg name=e bundle=shapes-panoptic {FP32} ! edgeseg name=e2 bundle=shapes-instance {FP32}")
        assert q.play()
        refs = {{"p": [expected("shapes", image(48, 40, s)) for s in range(2)],
                 "q": [expected("shapes-instance", expected("shapes-panoptic", image(48, 40, s))) for s in range(2)]}}
        both = {{}}
        def feed(key, pipe):  # both pipelines stream at once, each from its own thread
            both[key] = [same(pipe.push(image(48, 40, s)), refs[key][s]) for s in range(2)]
        threads = [threading.Thread(target=feed, args=("p", p)), threading.Thread(target=feed, args=("q", q))]
        [t.start() for t in threads]; [t.join(20) for t in threads]
        print(json.dumps({{"first": first, "again": again, "both": both, "messages": p.messages() + q.messages(),
                          "name": Gst.ElementFactory.make("edgeseg").get_name()}}))
        p.stop(); q.stop()
    """)
    assert got["first"] == [True] * 4
    assert got["again"] is True
    assert got["both"] == {"p": [True, True], "q": [True, True]}
    assert got["messages"] == []
    assert got["name"].startswith("edgeseg")  # GstEdgeseg: edgeseg0 in messages, not edgeseg_element+edgesegfilter0


def test_model_failure_is_posted_on_the_bus_not_silent(launch_env, liar):
    """Before: rc 0, nothing printed, every frame left unannotated (only a debug-log line)."""
    done = launch(launch_env, "videotestsrc", "num-buffers=3", "!", "video/x-raw,width=160,height=120", "!",
                  "videoconvert", "!", "video/x-raw,format=RGB", "!", "edgeseg", f"bundle={liar}", "threads=1",
                  "!", "fakesink")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "WARNING: from element /GstPipeline:pipeline0/GstEdgeseg:edgeseg0" in out
    assert "the model failed on frame 1 (160x120), which passes through unannotated" in out
    assert "[1, 3, 120, 160]" in out and "32, 32]" in out  # the model's own reason
    assert out.count("the model failed on frame") == 2  # message + debug info: one warning for the run of failures


def test_model_failure_mid_stream_counts_and_warns_once_per_run_of_failures(launch_env, liar):
    got = in_process(launch_env, f"""
        p = Pipe("edgeseg name=e bundle={liar} threads=1")
        assert p.play()
        frames = [image(32, 32, 0), image(40, 40, 1), image(40, 40, 2), image(32, 32, 3), image(48, 48, 4)]
        outs = [p.push(a) for a in frames]
        print(json.dumps({{"errors": p.e.get_property("errors"), "messages": p.messages(),
                          "passed": [same(o, a) for o, a in zip(outs, frames)]}}))
        p.stop()
    """)
    assert got["errors"] == 3
    assert got["passed"] == [False, True, True, False, True]  # failed frames pass through unchanged, in order
    warnings = [m for m in got["messages"] if m[0] == "WARNING"]
    assert [m[1] for m in warnings] == ["e", "e"] and len(got["messages"]) == 2
    assert "failed on frame 2 (40x40)" in warnings[0][2]
    assert "(1 so far; the 'errors' property counts them)" in warnings[0][2]
    assert "failed on frame 5 (48x48)" in warnings[1][2] and "3 so far" in warnings[1][2]


def test_properties_set_while_playing_take_effect_or_are_refused_clearly(launch_env):
    """Before: bundle and alpha set while PLAYING were stored and read back but never used (the frames kept
    the first model and opacity, silently); a bad bundle read back as if it ran."""
    got = in_process(launch_env, f"""
        p = Pipe("edgeseg name=e bundle=shapes {FP32}")
        assert p.play()
        a = image(64, 48)
        out = {{"start": same(p.push(a), expected("shapes", a))}}
        p.e.set_property("bundle", "shapes-instance")
        out["swapped"] = same(p.push(a), expected("shapes-instance", a))
        p.e.set_property("alpha", 0.9)
        out["alpha"] = same(p.push(a), expected("shapes-instance", a, 0.9))
        p.e.set_property("bundle", "shapez")
        out["kept"] = same(p.push(a), expected("shapes-instance", a, 0.9))
        out["bundle"] = p.e.get_property("bundle")
        out["messages"] = p.messages()
        print(json.dumps(out))
        p.stop()
    """)
    assert got["start"] and got["swapped"] and got["alpha"] and got["kept"]
    assert got["bundle"] == "shapes-instance"
    [(kind, src, text)] = got["messages"]
    assert kind == "WARNING" and src == "e"
    assert "bundle='shapez' set while running cannot be used, the element keeps bundle 'shapes-instance'" in text
    assert "bundle 'shapez' not found" in text and "fix:" in text and "shapes-panoptic" in text


def test_buffers_that_do_not_match_their_caps_are_named(launch_env):
    """appsrc told 128x96 but fed 64x48 frames. Before: "Internal data stream error. ... reason error (-5)"
    from appsrc, nothing about why. (Run in-process: gst-launch-1.0 1.22 itself can miss an error posted
    before its main loop starts and hang, with any element; see the report.)"""
    got = in_process(launch_env, f"""
        p = Pipe("edgeseg name=e bundle=shapes {FP32}")
        assert p.play()
        out = p.push(image(64, 48), caps="video/x-raw,format=RGB,width=128,height=96,framerate=25/1")
        print(json.dumps({{"out": out is not None, "messages": p.messages()}}))
        p.stop()
    """)
    assert got["out"] is False
    kind, src, text = got["messages"][0]
    assert (kind, src) == ("ERROR", "e")
    assert "a buffer of 9216 bytes does not hold a 128x96 RGB frame" in text
    assert "give the source (appsrc caps=...) the frames' true size and format" in text


def test_caps_refused_at_run_time_name_the_converter_to_add(launch_env, tmp_path):
    """decodebin links at run time, so a missing videoconvert shows when the decoder's I420 caps arrive.
    Before: only "Internal data stream error ... not-negotiated (-4)" from decodebin."""
    clip = tmp_path / "frame.jpg"  # decodebin: jpegparse ! jpegdec, which gives I420
    made = launch(launch_env, "-q", "videotestsrc", "num-buffers=1", "!", "video/x-raw,width=64,height=48", "!",
                  "jpegenc", "!", "filesink", f"location={clip}")
    if made.returncode != 0:
        pytest.skip(f"cannot write a JPEG here: {made.stderr[-300:]}")
    got = in_process(launch_env, f"""
        out = {{}}
        for key, convert in (("bare", ""), ("converted", "videoconvert !")):
            p = Gst.parse_launch("filesrc location={clip} ! decodebin ! " + convert + " edgeseg name=e bundle=shapes "
                                 "threads=1 ! fakesink")
            p.set_state(Gst.State.PLAYING)
            out[key] = [None]
            while (m := p.get_bus().timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS
                                                       | Gst.MessageType.WARNING)) is not None:
                if m.type == Gst.MessageType.WARNING:
                    out[key].append(["WARNING", m.src.get_name(), m.parse_warning()[0].message])
                else:
                    out[key][0] = "eos" if m.type == Gst.MessageType.EOS else "error"
                    break
            p.set_state(Gst.State.NULL)
        print(json.dumps(out))
    """)
    assert got["converted"] == ["eos"]
    end, *messages = got["bare"]
    assert end == "error"
    [(kind, src, text)] = [m for m in messages if m[1] == "e"]
    assert kind == "WARNING"
    assert text.startswith("edgeseg takes RGB frames in system memory (video/x-raw,format=RGB), not video/x-raw, "
                           "format=(string)I420, width=(int)64, height=(int)48")
    assert text.endswith("put videoconvert before edgeseg (NVMM memory: on a Jetson nvvidconv ! "
                         "video/x-raw,format=BGRx ! videoconvert; with DeepStream nvvideoconvert ! video/x-raw,format=RGB)")


def test_caps_are_read_on_gstreamer_1_16_too():
    """``GstVideo.VideoInfo.new_from_caps`` is GStreamer 1.20+; JetPack 5 ships 1.16, where the element reads the
    caps with ``VideoInfo().from_caps``: both give RGB rows padded to 4 bytes (642 x 3 -> 1928)."""
    code = textwrap.dedent("""
        import importlib.util, json, types
        import edgeseg
        spec = importlib.util.spec_from_file_location("el", "edgeseg/stream/gst_plugin/python/edgeseg_element.py")
        el = importlib.util.module_from_spec(spec); spec.loader.exec_module(el)
        caps = el.Gst.Caps.from_string("video/x-raw,format=RGB,width=642,height=10,framerate=30/1")
        new = el.video_info(caps)
        real = el.GstVideo
        el.GstVideo = types.SimpleNamespace(VideoInfo=lambda: real.VideoInfo())  # no new_from_caps: 1.16's bindings
        old = el.video_info(caps)
        bad = el.video_info(el.Gst.Caps.from_string("video/x-raw,format=RGB"))  # no size: not a video layout
        print(json.dumps([new.stride[0], new.width, old.stride[0], old.width, bad is None]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1928, 642, 1928, 642, True]
