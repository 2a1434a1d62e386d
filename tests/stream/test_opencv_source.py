"""OpenCV sources (used without GStreamer): image folders and video files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.stream import CallbackSink, OpenCVSource, Pipeline, open_source
from stream_helpers import make_images, write_mp4


def test_image_folder_in_name_order(tmp_path):
    images = make_images(5, shape=(20, 30))
    for i, img in enumerate(images):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), img[..., ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path))
    from edgeseg.stream.sources import FolderSource

    assert isinstance(src, FolderSource)  # image folders are read by FolderSource (sorted, stems kept)
    frames = list(src)
    assert [f.index for f in frames] == list(range(5)) and src.expected_frames == 5
    for f, img in zip(frames, images):
        np.testing.assert_array_equal(f.image, img)  # PNG is lossless; RGB order restored


def test_video_file_with_opencv_and_realtime_pacing(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(10)], fps=50,
                     backend="opencv")
    frames = list(OpenCVSource(str(path)))
    assert len(frames) == 10
    assert [round(f.pts_ns / 1e6) for f in frames] == [20 * i for i in range(10)]
    assert abs(float(frames[5].image.mean()) - 100) <= 6  # mp4v is lossy
    src = OpenCVSource(str(path), realtime=True)
    got = []
    stats = Pipeline([src, CallbackSink(lambda f, r: got.append(f.index))], handle_signals=False).run()
    assert got == list(range(10)) and stats.drops == 0 and stats.wall_s >= 0.17  # 9 frame periods of 20 ms


def test_missing_inputs_are_clear(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        OpenCVSource(str(tmp_path / "nope.mp4")).open()
    with pytest.raises(InputError, match="holds no images"):
        OpenCVSource(str(tmp_path)).open()
    with pytest.raises(InputError, match="rtsp"):
        OpenCVSource("rtsp://127.0.0.1/x")


def test_image_folder_with_non_ascii_path_and_shared_suffixes(tmp_path):
    from edgeseg.data.io import write_image

    folder = tmp_path / "caméra_дорога"
    folder.mkdir()
    images = make_images(3, shape=(12, 16), seed=5)
    write_image(folder / "a.png", images[0])
    write_image(folder / "b.ppm", images[1])  # a suffix the data readers know, and now the source too
    write_image(folder / "c.png", images[2])
    frames = list(OpenCVSource(str(folder)))
    assert len(frames) == 3
    for f, img in zip(frames, images):
        np.testing.assert_array_equal(f.image, img)


def test_corrupt_image_in_folder_names_the_file(tmp_path):
    from edgeseg.data.io import write_image

    write_image(tmp_path / "0.png", make_images(1, shape=(8, 8))[0])
    (tmp_path / "1.png").write_bytes(b"not a png")
    src = OpenCVSource(str(tmp_path))
    it = iter(src)
    assert next(it).index == 0
    with pytest.raises(InputError, match=r"1\.png"):
        next(it)


def test_unopenable_video_is_a_stream_error_naming_the_source(tmp_path):
    from edgeseg.errors import StreamError

    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(StreamError, match=r"OpenCV cannot open '.*noise\.mp4'"):
        OpenCVSource(str(bad)).open()
