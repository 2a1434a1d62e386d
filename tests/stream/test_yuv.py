"""4:2:0 YUV to RGB (:mod:`edgeseg.stream.yuv`) against the standards' equations and published vectors, and the
GStreamer source's colours against the colours GStreamer itself encoded, for each matrix, range and layout."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import StreamError
from edgeseg.stream import GstSource
from edgeseg.stream import yuv


def reference(y, u, v, kr, kb, full):
    """The conversion as ITU-R BT.601/709/2020 write it (float64, chroma repeated 2x2, rounded, clipped)."""
    h, w = y.shape
    up = [np.repeat(np.repeat(c.astype(np.float64), 2, 0), 2, 1)[:h, :w] - 128.0 for c in (u, v)]
    luma = y.astype(np.float64)
    cb, cr = up
    if not full:
        luma, cb, cr = (luma - 16.0) * 255.0 / 219.0, cb * 255.0 / 224.0, cr * 255.0 / 224.0
    kg = 1.0 - kr - kb
    rgb = np.stack([luma + 2 * (1 - kr) * cr, luma - 2 * kb * (1 - kb) / kg * cb - 2 * kr * (1 - kr) / kg * cr,
                    luma + 2 * (1 - kb) * cb], -1)
    return np.clip(np.rint(rgb), 0, 255)


@pytest.mark.parametrize("matrix", sorted(yuv.KR_KB))
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("size", [(48, 64), (37, 51), (1, 1)])
def test_planar_and_semi_planar_equal_the_standards_equations(matrix, full, size):
    rng = np.random.default_rng(hash((matrix, full, size)) % 2**32)
    h, w = size
    y = rng.integers(0, 256, (h, w), np.uint8)
    u, v = (rng.integers(0, 256, ((h + 1) // 2, (w + 1) // 2), np.uint8) for _ in range(2))
    want = reference(y, u, v, *yuv.KR_KB[matrix], full)
    for got in (yuv.i420_to_rgb(y, u, v, matrix, full), yuv.nv12_to_rgb(y, np.stack([u, v], -1), matrix, full)):
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        assert np.abs(got.astype(np.float64) - want).max() <= 1.0


def test_strided_planes_as_a_mapped_buffer_gives_them():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 256, (9, 20), np.uint8)[:, :13]  # padded rows (stride 20 for width 13)
    u, v = (rng.integers(0, 256, (5, 12), np.uint8)[:, :7] for _ in range(2))
    got = yuv.i420_to_rgb(y, u, v, "bt709")
    assert np.abs(got.astype(np.float64) - reference(y, u, v, *yuv.KR_KB["bt709"], False)).max() <= 1.0


@pytest.mark.parametrize("matrix,yuv_value,rgb", [
    ("bt601", (81, 90, 240), (255, 0, 0)), ("bt601", (145, 54, 34), (0, 255, 0)), ("bt601", (41, 240, 110), (0, 0, 255)),
    ("bt709", (63, 102, 240), (255, 0, 0)), ("bt709", (173, 42, 26), (0, 255, 0)), ("bt709", (32, 240, 118), (0, 0, 255)),
    ("bt709", (235, 128, 128), (255, 255, 255)), ("bt709", (16, 128, 128), (0, 0, 0))])
def test_published_8_bit_colour_bars(matrix, yuv_value, rgb):
    """The 100 % bars as BT.601 and BT.709 tabulate them in 8-bit video range (rounded there, so within 2 here)."""
    y, u, v = (np.full(shape, value, np.uint8) for shape, value in zip([(2, 2), (1, 1), (1, 1)], yuv_value))
    got = yuv.i420_to_rgb(y, u, v, matrix)[0, 0].astype(int)
    assert np.abs(got - np.array(rgb)).max() <= 2, (matrix, yuv_value, got)


def test_bt601_video_range_agrees_with_opencv():
    import cv2

    rng = np.random.default_rng(5)
    y = rng.integers(16, 236, (64, 96), np.uint8)
    u, v = (rng.integers(16, 241, (32, 48), np.uint8) for _ in range(2))
    theirs = cv2.cvtColor(np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(96, 96), cv2.COLOR_YUV2RGB_I420)
    assert np.abs(yuv.i420_to_rgb(y, u, v).astype(int) - theirs).max() <= 1


def test_planes_that_do_not_fit_and_unknown_matrices_are_named():
    y = np.zeros((4, 4), np.uint8)
    with pytest.raises(StreamError, match="4:2:0 planes do not fit"):
        yuv.i420_to_rgb(y, np.zeros((1, 2), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(StreamError, match="NV12 chroma must be"):
        yuv.nv12_to_rgb(y, np.zeros((2, 4), np.uint8))
    with pytest.raises(StreamError, match="unknown YUV colour matrix 'bt470'") as e:
        yuv.yuv_matrix("bt470")
    assert "bt601" in e.value.fix
    assert yuv.default_matrix(480) == "bt601" and yuv.default_matrix(720) == "bt709" and yuv.default_matrix(2160) == "bt2020"


# ---- the GStreamer source: GStreamer encodes a known colour with the caps' colorimetry, edgeseg decodes it -------

COLOURS = [(200, 30, 60), (20, 180, 90), (70, 90, 230), (128, 128, 128), (250, 250, 250)]


def _solid(caps: str, colour, size=(48, 64), extra: str = "") -> np.ndarray:
    r, g, b = colour
    h, w = size
    src = GstSource(f"videotestsrc pattern=solid-color foreground-color={0xff000000 | r << 16 | g << 8 | b} "
                    f"num-buffers=2 ! video/x-raw,format=RGB,width={w},height={h} ! videoconvert ! "
                    f"video/x-raw,{caps}{extra}")
    try:
        frames = list(src)
    finally:
        src.close()
    assert len(frames) == 2 and frames[0].image.shape == (h, w, 3)
    return frames[0].image


@pytest.mark.gst
@pytest.mark.parametrize("caps", ["format=I420,colorimetry=bt601", "format=I420,colorimetry=bt709",
                                  "format=NV12,colorimetry=bt709", "format=NV12,colorimetry=bt2020",
                                  "format=I420,colorimetry=1:4:0:0",  # BT.601 full range (JPEG, many cameras)
                                  "format=I420,colorimetry=2:3:5:4",  # BT.709 full range
                                  "format=I420"])  # no colorimetry: GStreamer's default for the size
def test_gst_source_gives_back_the_colour_gstreamer_encoded(gst, caps):
    """videoconvert encodes with its 8-bit matrices (up to 3 levels off); reading the frames with another of these
    matrices or ranges than the caps' would be at least 8.4 levels off on one of these colours."""
    for colour in COLOURS:
        got = _solid(caps, colour).reshape(-1, 3).astype(int)
        assert np.abs(got - np.array(colour)).max() <= 4, (caps, colour, got.mean(0))


@pytest.mark.gst
def test_gst_source_odd_sizes_and_interlaced_frames(gst):
    """Odd sizes (padded I420 planes); interlaced 4:2:0 goes through videoconvert as RGB (its chroma is per field)."""
    got = _solid("format=I420,colorimetry=bt709", (200, 30, 60), size=(37, 51))
    assert np.abs(got.reshape(-1, 3).astype(int) - [200, 30, 60]).max() <= 4
    got = _solid("format=I420,colorimetry=bt601", (200, 30, 60), extra=",interlace-mode=interleaved")
    assert np.abs(got.reshape(-1, 3).astype(int) - [200, 30, 60]).max() <= 5  # videoconvert's own error


@pytest.mark.gst
def test_gst_file_source_is_the_exact_conversion_of_the_decoded_planes(gst, tmp_path):
    """An H.264 file: the frames equal the standard's conversion of the very planes the decoder gave."""
    from edgeseg.stream.gst import gst_module

    path = tmp_path / "bars.mp4"
    Gst = gst
    enc = Gst.parse_launch(f"videotestsrc pattern=smpte num-buffers=5 ! video/x-raw,width=160,height=90 ! videoconvert "
                           f"! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location={path}")
    enc.set_state(Gst.State.PLAYING)
    enc.get_bus().timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    enc.set_state(Gst.State.NULL)
    dec = Gst.parse_launch(f"filesrc location={path} ! decodebin ! video/x-raw,format=I420 ! appsink name=s sync=false")
    dec.set_state(Gst.State.PLAYING)
    sample = dec.get_by_name("s").emit("pull-sample")
    info = gst_module("GstVideo").VideoInfo.new_from_caps(sample.get_caps())
    buf = sample.get_buffer()
    ok, mapped = buf.map(Gst.MapFlags.READ)
    data = np.frombuffer(mapped.data, np.uint8).copy()
    buf.unmap(mapped)
    dec.set_state(Gst.State.NULL)
    planes = [data[info.offset[i]:info.offset[i] + info.stride[i] * rows].reshape(rows, info.stride[i])[:, :cols]
              for i, (rows, cols) in enumerate([(90, 160), (45, 80), (45, 80)])]
    matrix = info.colorimetry.matrix.value_nick
    src = GstSource(str(path))
    try:
        first = next(iter(src)).image
    finally:
        src.close()
    want = reference(*planes, *yuv.KR_KB[matrix], info.colorimetry.range.value_nick == "0-255")
    assert np.abs(first.astype(np.float64) - want).max() <= 1.0


@pytest.mark.gst
def test_a_users_appsink_of_another_format_is_named(gst, caplog):
    src = GstSource("videotestsrc num-buffers=2 ! video/x-raw,format=BGRx,width=32,height=16 "
                    "! appsink name=edgeseg_sink emit-signals=true")
    with caplog.at_level("WARNING", logger="edgeseg.stream"):
        assert list(src) == []
    src.close()
    said = [r.getMessage() for r in caplog.records if "BGRx" in r.getMessage()]
    assert len(said) == 1 and "not RGB, I420 or NV12" in said[0] and "videoconvert" in said[0]
