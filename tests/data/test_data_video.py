"""edgeseg.data.video: the shared OpenCV reader (calibration and the OpenCV stream source use it)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data.video import VideoReader, count_frames, read_video
from edgeseg.errors import DataError, StreamError


def _clip(tmp_path, n=12, fps=25):
    import cv2

    path = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (48, 32))
    assert w.isOpened()
    for i in range(n):
        frame = np.zeros((32, 48, 3), np.uint8)
        frame[..., 0] = 20 * i  # blue in OpenCV's BGR: the last RGB channel
        frame[..., 2] = 200 - 10 * i
        w.write(frame)
    w.release()
    return path


def test_frames_pts_and_rgb_order_match_a_plain_opencv_decode(tmp_path):
    from video_ref import decode_video_rgb

    path = _clip(tmp_path)
    ref = decode_video_rgb(path)
    with VideoReader(path) as video:
        assert video.frame_count == 12 and video.fps == pytest.approx(25.0)
        frames = list(video.frames())
    assert [f.index for f in frames] == list(range(12))
    assert [f.pts_ns for f in frames] == [i * 40_000_000 for i in range(12)]  # 25 fps: 40 ms apart
    for f, want in zip(frames, ref):
        np.testing.assert_array_equal(f.image, want)
    assert frames[5].image.dtype == np.uint8 and frames[5].image.shape == (32, 48, 3)
    np.testing.assert_allclose(frames[5].image[..., 2].mean(), 100, atol=4)  # 20 * 5 in the blue channel (RGB last)
    np.testing.assert_allclose(frames[5].image[..., 0].mean(), 150, atol=4)  # 200 - 10 * 5 in red
    assert count_frames(path) == 12 and sum(1 for _ in read_video(path)) == 12


def test_stop_ends_the_frames_early(tmp_path):
    path = _clip(tmp_path)
    seen = []
    with VideoReader(path) as video:
        for f in video.frames(stop=lambda: len(seen) >= 4):
            seen.append(f.index)
    assert seen == [0, 1, 2, 3]


def test_unopenable_video_raises_the_callers_error_naming_it(tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"OpenCV cannot open video .*noise\.mp4"):
        VideoReader(bad)
    with pytest.raises(StreamError, match=r"OpenCV cannot open 'file://x\.mp4'") as e:
        VideoReader(tmp_path / "missing.mp4", error=StreamError, name="'file://x.mp4'", fix="check it")
    assert e.value.fix == "check it"
