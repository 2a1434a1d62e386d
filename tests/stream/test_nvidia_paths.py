"""The stream paths that only run on NVIDIA hardware (Jetson, DeepStream) and on USB cameras: their launch
strings are decided by plain functions checked here with the elements a Jetson has; what can run here (the
MJPEG camera chain, the encoder fallback, NVENC's frame padding) runs for real on GStreamer."""
from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.stream import GstSource, Mp4Sink
from edgeseg.stream import gst as gst_mod
from edgeseg.stream.sinks import video as video_mod
from edgeseg.stream.sinks.video import ENCODERS, encodable, encoder_problem, usable_encoder
from edgeseg.stream.sources import gst_source
from edgeseg.stream.sources.gst_source import LAUNCHERS, decoded
from edgeseg.stream.sources.uri import STDIN_LAUNCH, parse_source
from edgeseg.structures import Frame
from deadline import within

JETSON = {"nvvidconv", "nvarguscamerasrc", "nvv4l2decoder"}
DEEPSTREAM = {"nvvideoconvert", "nvv4l2decoder"}


def test_decodebin_is_linked_by_its_caps_where_an_nvidia_converter_exists():
    """nvv4l2decoder (picked by decodebin on a Jetson: rank PRIMARY + 11) outputs NVMM memory only, which
    videoconvert cannot read: before, every file, RTSP and HTTP source failed to negotiate on a Jetson. Where
    a converter exists, the decoder's pad is linked when it appears: through the converter when NVMM, straight
    on when a software decoder made it (the converters do not take every format videoconvert does)."""
    assert gst_source.nvmm_converter(JETSON.__contains__) == "nvvidconv ! capsfilter caps=video/x-raw,format=BGRx"
    assert gst_source.nvmm_converter(DEEPSTREAM.__contains__) == "nvvideoconvert ! capsfilter caps=video/x-raw,format=RGBA"
    assert gst_source.nvmm_converter(set().__contains__) is None
    assert decoded(JETSON.__contains__) == "decodebin name=edgeseg_decode  identity name=edgeseg_decoded"
    assert decoded(set().__contains__) == "decodebin"  # elsewhere: the launch string as before
    assert gst_source.needs_nvmm_converter("video/x-raw(memory:NVMM), format=(string)NV12, width=(int)1920")
    assert not gst_source.needs_nvmm_converter("video/x-raw, format=(string)Y42B, width=(int)640")
    assert not gst_source.needs_nvmm_converter("audio/x-raw(memory:NVMM), rate=(int)48000")


@pytest.mark.parametrize("source, head", [
    ("rtsp://cam.local/stream", "rtspsrc"),
    ("http://cam.local/clip.mp4", "uridecodebin"),
    ("-", "fdsrc fd=0"),
])
def test_every_decoded_source_is_linked_by_caps_on_a_jetson(monkeypatch, source, head):
    monkeypatch.setattr(gst_mod, "has_element", JETSON.__contains__)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # "-" refuses a terminal (pytest -s): a pipe's stand-in
    u = parse_source(source)
    text = LAUNCHERS.get(u.scheme)(u)
    if source == "-" and gst_source._stdin_is_a_file():  # pytest run with a file redirected in: read as a file
        head = "filesrc location=/proc/self/fd/0"
    assert text.startswith(head) and "name=edgeseg_decode  identity name=edgeseg_decoded ! videoconvert" in text, text
    monkeypatch.setattr(gst_mod, "has_element", set().__contains__)
    assert "edgeseg_decode" not in LAUNCHERS.get(u.scheme)(u)  # elsewhere as before
    if source == "-":
        assert u.target == STDIN_LAUNCH


def _clip(tmp_path, n=6):
    sink = Mp4Sink(tmp_path / "clip.mp4", fps=10, backend="gstreamer")
    sink.open()
    yy, xx = np.mgrid[0:48, 0:64]
    for i in range(n):
        sink.write(Frame(np.stack([xx * 4, yy * 5, np.full_like(xx, 30 * i)], -1).astype(np.uint8), 0, i, "t"), None)
    sink.close()
    return tmp_path / "clip.mp4"


def _force_jetson(monkeypatch, nvmm: bool) -> list:
    """This machine made to look like a Jetson (nvvidconv present); with ``nvmm``, every decoder pad taken for
    NVMM and converted by a software stand-in. Returns the list ``link_decoded``'s results are appended to."""
    links: list = []
    real = gst_source.link_decoded
    monkeypatch.setattr(gst_mod, "has_element", lambda name: name == "nvvidconv")
    monkeypatch.setattr(gst_source, "link_decoded", lambda *a, **k: links.append(real(*a, **k)) or links[-1])
    if nvmm:
        monkeypatch.setattr(gst_source, "needs_nvmm_converter", lambda text: text.startswith("video/"))
        monkeypatch.setattr(gst_source, "nvmm_converter", lambda has=None: "videoconvert ! capsfilter caps=video/x-raw,format=BGRx")
    return links


@pytest.mark.parametrize("nvmm", [False, True])
def test_a_file_decoded_on_a_jetson_reaches_the_appsink(gst, tmp_path, monkeypatch, nvmm):
    """The launch string a Jetson gets, run here: the software decoder's pad is linked straight on (nvmm=False);
    with nvmm=True the pad is taken for NVMM and linked through a converter chain made at run time, here a
    software stand-in for nvvidconv (the linking is what is tested; NVIDIA's element is not on this machine)."""
    clip = _clip(tmp_path)
    links = _force_jetson(monkeypatch, nvmm)
    with GstSource(str(clip)) as src:
        assert "name=edgeseg_decode  identity name=edgeseg_decoded" in src.launch
        frames = [f.image for f in src]
    assert links == ["converter" if nvmm else "direct"]
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    assert abs(int(frames[5][10, 10, 2]) - 150) < 12  # the last frame's own blue level: decoded, not a blank


def test_a_camera_decodebin_never_picks_an_nvmm_decoder():
    class Factory:
        def __init__(self, name):
            self.name = name

        def get_name(self):
            return self.name

    assert [gst_source.skip_nvmm_decoders(None, None, None, Factory(n)) for n in
            ("nvv4l2decoder", "nvjpegdec", "jpegdec", "avdec_mjpeg")] == [2, 2, 0, 0]  # 2: decodebin's SKIP


def test_v4l2_numbers_name_their_device_and_other_hosts_are_refused():
    assert parse_source("v4l2://1").target == "/dev/video1"  # before: /dev/video0, silently
    assert parse_source("v4l2:///dev/video2").target == "/dev/video2"
    assert parse_source("v4l2://").target == "/dev/video0"
    assert parse_source("v4l2://1/").target == "/dev/video1" and parse_source("v4l2://01").target == "/dev/video1"
    assert parse_source("csi:///1").target == "1" and parse_source("csi://").target == "0"  # before: sensor 0
    with pytest.raises(InputError, match="not host 'cam'"):
        parse_source("v4l2://cam")
    with pytest.raises(InputError, match="names two cameras"):
        parse_source("v4l2://1/dev/video2")


def test_csi_sensor_must_be_a_number(monkeypatch):
    monkeypatch.setattr(gst_mod, "has_element", JETSON.__contains__)
    u = parse_source("csi://abc")
    with pytest.raises(InputError, match="sensor number, got 'abc'"):  # before: a bare ValueError
        LAUNCHERS.get("csi")(u)
    assert "sensor-id=1 " in LAUNCHERS.get("csi")(parse_source("csi://1?width=1280&height=720&fps=30"))


@pytest.mark.parametrize("camera", ["raw", "mjpeg"])
def test_usb_camera_chain_takes_raw_and_mjpeg_frames(gst, tmp_path, camera):
    """Most USB webcams send 720p/1080p at 30 fps only as MJPEG; the v4l2 chain used to take raw frames only
    (GStreamer's 'not-negotiated'). The very launch string the v4l2:// source builds, its v4l2src swapped for a
    test source that sends what such a camera sends."""
    device = tmp_path / "video7"
    device.touch()  # camera_device() only checks that the node exists
    u = parse_source(f"v4l2://{device}?width=64&height=48&fps=30")
    text = LAUNCHERS.get("v4l2")(u)
    assert text.startswith(f"v4l2src device=\"{device}\" ! capsfilter caps=")
    assert "decodebin name=edgeseg_camera_decode ! videoconvert" in text  # never the NVIDIA converter
    fake = "videotestsrc num-buffers=4 pattern=ball ! video/x-raw,width=64,height=48,framerate=30/1"
    if camera == "mjpeg":
        fake += " ! jpegenc"
    launch = fake + text[text.index(" ! capsfilter"):]
    with GstSource(launch) as src:
        frames = [f.image for f in src]
    assert len(frames) == 4 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert frames[0].std() > 10  # a picture, not a blank frame


def test_an_encoder_that_cannot_run_here_falls_back_to_x264_when_the_sink_opens(gst, tmp_path, caplog):
    """The Jetson Orin Nano has no NVENC: its nvv4l2h264enc exists but cannot start, and the run ended at the
    first frame, with the camera and the model already running. Now the sink checks at open() and encodes
    on the CPU, saying why."""
    if "test-missing-enc" not in ENCODERS:
        ENCODERS.add("test-missing-enc", "videoconvert ! video/x-raw,format=I420 ! nosuchh264enc ! h264parse")
    assert encoder_problem(ENCODERS.get("test-missing-enc")) == "this machine has no nosuchh264enc element"
    assert encoder_problem(ENCODERS.get("x264enc")) is None
    sink = Mp4Sink(tmp_path / "out.mp4", fps=10, encoder="test-missing-enc", backend="gstreamer")
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        sink.open()
    assert sink.encoder_name == "x264enc"
    assert "encoder test-missing-enc cannot be used (this machine has no nosuchh264enc element)" in caplog.text
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(3):
        sink.write(Frame(image, 0, i, "t"), None)
    sink.close()
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="a camera is at /dev/video0: v4l2src would start")
def test_an_element_that_exists_but_cannot_start_is_found(gst):
    """What an Orin Nano's nvv4l2h264enc does (its device cannot be opened) shown with v4l2src, a V4L2
    element GStreamer has here, which opens /dev/video0 on the way to READY."""
    why = encoder_problem("videoconvert ! v4l2src ! h264parse")
    assert why is not None and why.startswith("v4l2src cannot start here")
    assert usable_encoder("x264enc", "mp4") == "x264enc" and usable_encoder("x264enc-live", "rtsp") == "x264enc-live"


def test_frames_are_padded_to_nvencs_smallest_size():
    """nvh264enc's sink caps start at 145x49; mp4mux's at 16x16."""
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    out = encodable(image, "nvh264enc")
    assert out.shape == (50, 146, 3) and np.array_equal(out[:20, :30], image)
    assert encodable(image).shape == (20, 30, 3)  # x264: as it was


def test_nvmm_decoders_are_the_ones_the_camera_chain_skips():
    assert {n for n, nvmm in gst_mod.HARDWARE_DECODERS if nvmm} == gst_source.NVMM_DECODERS


@within(30)
def test_a_decoded_pad_that_cannot_be_linked_is_an_error_not_a_hang(gst, tmp_path, monkeypatch):
    """A converter chain that cannot be made (here: an element this machine lacks, as a Jetson image without
    nvvidconv's library would) used to leave the source waiting for frames that never came."""
    from edgeseg.errors import StreamError

    clip = _clip(tmp_path)
    monkeypatch.setattr(gst_mod, "has_element", lambda name: name == "nvvidconv")
    monkeypatch.setattr(gst_source, "needs_nvmm_converter", lambda text: text.startswith("video/"))
    monkeypatch.setattr(gst_source, "nvmm_converter", lambda has=None: "nosuchconverter ! capsfilter caps=video/x-raw")
    with pytest.raises(StreamError, match="cannot link the decoded video"):
        with GstSource(str(clip)) as src:
            list(src)


def test_no_encoder_at_all_is_refused_when_the_sink_opens(gst, monkeypatch):
    """A Jetson image without gst-plugins-ugly: neither the hardware encoder nor x264enc can run. Said at
    open(), with the package to install, not by GStreamer at the first frame."""
    from edgeseg.errors import StreamError

    if "test-missing-enc" not in ENCODERS:
        ENCODERS.add("test-missing-enc", "videoconvert ! video/x-raw,format=I420 ! nosuchh264enc ! h264parse")
    if "test-missing-x264" not in ENCODERS:
        ENCODERS.add("test-missing-x264", "videoconvert ! nosuchx264enc ! h264parse")
    monkeypatch.setitem(video_mod.SOFTWARE_ENCODER, "mp4", "test-missing-x264")
    with pytest.raises(StreamError, match=r"no H.264 encoder can run here .*nosuchh264enc.*test-missing-x264: this "
                                          r"machine has no nosuchx264enc element") as e:
        usable_encoder("test-missing-enc", "mp4")
    assert "gstreamer1.0-plugins-ugly" in e.value.fix


def test_encoder_option_reaches_the_rtsp_sink_too():
    from edgeseg.stream.api import StreamOptions, build_sinks

    sinks = build_sinks(StreamOptions(source="test://ball", rtsp_port=8599, encoder="nvv4l2h264enc"))
    assert [s.encoder_name for s in sinks if s.name == "rtsp"] == ["nvv4l2h264enc"]  # before: always x264enc-live
    sinks = build_sinks(StreamOptions(source="test://ball", rtsp_port=8599))
    assert [s.encoder_name for s in sinks if s.name == "rtsp"] == ["x264enc-live"]


@within(60)
@pytest.mark.parametrize("nvmm", [False, True])
def test_a_stream_switch_relinks_the_new_decoder_pad(gst, tmp_path, monkeypatch, nvmm):
    """Two Ogg recordings chained (one file after the other, as recorders that roll over write them): decodebin
    removes the first decoder pad and adds a new one. The converter left by the first (NVMM path) used to keep
    the chain taken: 'not-linked' after the first recording."""
    import subprocess

    if not (gst_mod.has_element("theoraenc") and gst_mod.has_element("oggmux")):
        pytest.skip("no theoraenc/oggmux to make a chained file")
    parts = []
    for i in range(2):
        part = tmp_path / f"seg{i}.ogg"
        subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=10", f"pattern={i}", "!",
                        "video/x-raw,width=64,height=48,framerate=10/1", "!", "theoraenc", "!", "oggmux", "!",
                        "filesink", f"location={part}"], check=True, timeout=30)
        parts.append(part.read_bytes())
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(b"".join(parts))
    links = _force_jetson(monkeypatch, nvmm)
    with GstSource(str(chained)) as src:
        n = sum(1 for _ in src)
    assert n == 20 and links.count("converter" if nvmm else "direct") == 2


def test_no_encoder_at_all_falls_back_to_opencv_when_the_backend_is_auto(gst, tmp_path, monkeypatch, caplog):
    import cv2

    if "test-missing-enc" not in ENCODERS:
        ENCODERS.add("test-missing-enc", "videoconvert ! video/x-raw,format=I420 ! nosuchh264enc ! h264parse")
    if "test-missing-x264" not in ENCODERS:
        ENCODERS.add("test-missing-x264", "videoconvert ! nosuchx264enc ! h264parse")
    monkeypatch.setitem(video_mod.SOFTWARE_ENCODER, "mp4", "test-missing-x264")
    sink = Mp4Sink(tmp_path / "out.mp4", fps=10, encoder="test-missing-enc")  # backend auto
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        sink.open()
    assert sink.backend == "opencv" and "writing out.mp4 with OpenCV's mp4v instead" in caplog.text
    for i in range(3):
        sink.write(Frame(np.zeros((48, 64, 3), np.uint8), 0, i, "t"), None)
    sink.close()
    assert int(cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 3
