"""A folder of images as a stream source: order, timestamps, stems, unreadable files, empty folders."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data.io import write_image
from edgeseg.errors import InputError, StreamError
from edgeseg.stream import CallbackSink, Pipeline, StreamOptions, build_pipeline, open_source
from edgeseg.stream.sources import FolderSource
from stream_helpers import make_images


def _folder(tmp_path, n=5, shape=(20, 30), names=None):
    images = make_images(n, shape=shape, seed=1)
    names = names or [f"f{i:02d}" for i in range(n)]
    for name, img in zip(names, images):
        write_image(tmp_path / f"{name}.png", img)
    return images, names


def test_frames_in_number_order_with_stem_pts_and_first_discontinuity(tmp_path):
    images, _ = _folder(tmp_path, names=["b10", "a2", "c", "a1", "b9"])
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path), fps=10.0)
    assert isinstance(src, FolderSource)
    frames = list(src.open())
    assert src.expected_frames == 5 and src.fps == 10.0
    # playing order: digit runs as numbers (frames 1..10 without zero padding), else by name
    assert [f.meta["stem"] for f in frames] == ["a1", "a2", "b9", "b10", "c"]
    assert [f.index for f in frames] == list(range(5))
    assert [f.pts_ns for f in frames] == [i * 100_000_000 for i in range(5)]
    assert [bool(f.meta.get("discontinuity")) for f in frames] == [True, False, False, False, False]
    by_name = dict(zip(["b10", "a2", "c", "a1", "b9"], images))
    for f in frames:
        np.testing.assert_array_equal(f.image, by_name[f.meta["stem"]])  # lossless, RGB


def test_dir_uri_default_fps_and_fps_option(tmp_path):
    _folder(tmp_path, n=3)
    src = open_source(f"dir://{tmp_path}")
    assert isinstance(src, FolderSource) and src.fps == 25.0
    assert [f.pts_ns for f in src] == [0, 40_000_000, 80_000_000]
    assert open_source(f"dir://{tmp_path}?fps=50").fps == 50.0
    assert not src.live
    # a file:// URL naming a folder is the folder (was "video file ... does not exist", suggesting the same path)
    src = open_source(f"file://{tmp_path}?fps=50")
    assert isinstance(src, FolderSource) and src.fps == 50.0 and len(list(src)) == 3
    from edgeseg.stream.sources.uri import video_file

    with pytest.raises(InputError, match="is a folder") as e:
        video_file(str(tmp_path))
    assert f"--source {tmp_path}" in e.value.fix


def test_unreadable_image_in_the_middle_is_an_error_frame(tmp_path):
    images, _ = _folder(tmp_path, n=4)
    (tmp_path / "f01.png").write_bytes(b"not a png")  # replaces frame 1
    got = []
    pipe = Pipeline([FolderSource(str(tmp_path)), CallbackSink(lambda f, r: got.append(f))], handle_signals=False)
    stats = pipe.run()
    assert [f.index for f in got] == [0, 1, 2, 3]  # every frame reaches the sinks, in order
    assert stats.errors == 1 and "f01.png" in stats.error_messages[0]
    assert "f01.png" in got[1].meta["error"] and got[1].image.shape == images[0].shape and not got[1].image.any()
    np.testing.assert_array_equal(got[2].image, images[2])
    pipe = Pipeline([FolderSource(str(tmp_path)), CallbackSink(lambda f, r: None)], on_error="stop", handle_signals=False)
    with pytest.raises(StreamError, match=r"f01\.png"):
        pipe.run()


def test_unreadable_first_image_takes_the_size_of_the_next(tmp_path):
    images, _ = _folder(tmp_path, n=3, shape=(10, 14))
    (tmp_path / "f00.png").write_bytes(b"broken")
    frames = list(FolderSource(str(tmp_path)))
    assert frames[0].meta["error"] and frames[0].image.shape == (10, 14, 3) and frames[0].meta["discontinuity"]
    np.testing.assert_array_equal(frames[1].image, images[1])


def test_empty_missing_and_all_broken_folders_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"image folder .*empty holds no images"):
        open_source(str(empty)).open()
    with pytest.raises(InputError, match=r"empty holds no images"):  # before any model is loaded
        build_pipeline(StreamOptions(source=str(empty), bundle="no-such-bundle"))
    with pytest.raises(InputError, match=r"image folder .*nowhere does not exist"):
        FolderSource(f"dir://{tmp_path / 'nowhere'}").open()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"x")
    with pytest.raises(InputError, match="none of its 1 images can be decoded"):
        FolderSource(str(broken)).open()


def test_json_lines_of_a_folder_name_each_frame_s_file(tmp_path):
    """before: every record's source was the folder: which image a record described was left to counting lines."""
    import json

    from edgeseg.stream import JsonLinesSink

    frames_dir = tmp_path / "frames"
    _folder(frames_dir, n=3, names=["b", "a", "c"])
    out = tmp_path / "r.jsonl"
    Pipeline([open_source(str(frames_dir)), JsonLinesSink(out)], handle_signals=False).run()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in records] == [str(frames_dir / f"{n}.png") for n in "abc"]


def test_the_periodic_log_gives_the_last_interval_s_rate(tmp_path, caplog):
    """Audit (a 10-minute soak): the log line's fps was the run's average, which hides a slow-down hours in."""
    import logging
    import time

    from edgeseg.stream import Packet, Stage

    class Slow(Stage):
        name = "slow"

        def process(self, packet: Packet) -> Packet:
            time.sleep(0.05)
            return packet

    _folder(tmp_path, n=12)
    with caplog.at_level(logging.INFO, logger="edgeseg.stream"):
        Pipeline([open_source(str(tmp_path)), Slow()], handle_signals=False, log_interval_s=0.2).run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stream: ")]
    assert lines and all("; last 0.2 s: " in line and line.endswith(" fps") for line in lines)
    rates = [float(line.rsplit(": ", 1)[1].split()[0]) for line in lines]
    assert all(0 < r < 25 for r in rates)  # 20 fps at most through a 50 ms stage


@pytest.mark.parametrize("backend", ["auto", "gstreamer", "opencv"])
def test_one_image_file_is_a_stream_of_one_frame_read_as_every_image_is(tmp_path, backend):
    """`edgeseg run --source photo.jpg` went through a video decoder: a phone photo's EXIF orientation was ignored
    (the labels 480x360 where `predict` gave 360x480, 14 % alike for an upside-down photo) and GStreamer read a
    16-bit RGB PNG with its channels shifted (a red picture). Now one image file is a one-frame FolderSource, read by
    read_image on any backend: as `predict` reads it (session 50's audit of images as users have them)."""
    from PIL import Image

    from edgeseg.data.io import read_image

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (12, 20, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored as is, shown turned 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    wide = (rng.integers(0, 65536, (8, 10, 3))).astype(np.uint16)
    import cv2

    cv2.imwrite(str(tmp_path / "deep.png"), wide[..., ::-1])  # 16-bit RGB
    for name in ("phone.jpg", "deep.png"):
        src = open_source(str(tmp_path / name), backend=backend)
        assert isinstance(src, FolderSource)
        frames = list(src)
        assert len(frames) == 1 and frames[0].index == 0 and frames[0].meta["path"] == str(tmp_path / name)
        np.testing.assert_array_equal(frames[0].image, read_image(tmp_path / name))
    assert frames[0].image.shape == (8, 10, 3)
    assert open_source(str(tmp_path / "phone.jpg")).__iter__().__next__().image.shape == (20, 12, 3)  # as shown
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="bad.png"):
        list(open_source(str(tmp_path / "bad.png")))


def test_files_a_folder_source_or_predict_leaves_out_are_named(tmp_path, caplog, capsys):
    """A folder's AVIF (and a GIF where frames are stills) were skipped without a word by `predict FOLDER` and the
    stream's folder source (session 50's audit): the files left out are named."""
    from edgeseg.cli import main

    write_image(tmp_path / "f" / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "f" / "b.avif").write_bytes(b"\x00")
    (tmp_path / "f" / "notes.txt").write_text("x")
    (tmp_path / "f" / ".hidden").write_text("x")
    with caplog.at_level("WARNING"):
        assert len(list(FolderSource(str(tmp_path / "f")))) == 1
    assert "2 file(s) of" in caplog.text and "left out, not read as images by their suffix: b.avif, notes.txt" in caplog.text
    assert main(["predict", "shapes", str(tmp_path / "f"), "--json", str(tmp_path / "p.json"), "--backend",
                 "onnxruntime"]) == 0
    assert "left out, not read as images by their suffix: b.avif, notes.txt" in capsys.readouterr().err
