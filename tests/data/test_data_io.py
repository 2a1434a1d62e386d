"""read_image / read_label: RGB order, and clear errors for missing, corrupt and non-image files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeseg.data import read_image, read_label, write_image, write_label
from edgeseg.errors import DataError, InputError


def test_read_image_returns_rgb(tmp_path):
    bgr = np.zeros((3, 4, 3), np.uint8)
    bgr[0, 0] = (255, 0, 0)  # pure blue in OpenCV's BGR
    bgr[2, 3] = (0, 0, 200)  # red
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    rgb = read_image(tmp_path / "a.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 4, 3) and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [0, 0, 255]
    assert rgb[2, 3].tolist() == [200, 0, 0]


def test_read_image_grey_and_unicode_path(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    p = tmp_path / "bïld ü.png"
    write_label(p, grey)
    rgb = read_image(p)
    assert rgb.shape == (3, 4, 3)
    assert np.array_equal(rgb[..., 0], grey) and np.array_equal(rgb[..., 2], grey)


def test_write_image_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", rgb)
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "image not found"),
        (b"", "is empty"),
        (b"this is a text file, not an image\n", "cannot decode image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(200)), "cannot decode image"),  # truncated / corrupt PNG
    ],
)
def test_read_image_bad_files(tmp_path, content, message):
    p = tmp_path / "bad.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_image(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_read_image_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)


def test_read_label_formats(tmp_path):
    lab = np.array([[0, 1, 2], [3, 255, 7]], np.uint8)
    write_label(tmp_path / "m.png", lab)
    out = read_label(tmp_path / "m.png")
    assert out.dtype == np.uint8 and np.array_equal(out, lab)
    # a grey mask saved as 3 equal channels is accepted
    cv2.imwrite(str(tmp_path / "m3.png"), np.repeat(lab[..., None], 3, axis=2))
    assert np.array_equal(read_label(tmp_path / "m3.png"), lab)
    # a 16-bit mask with small ids is accepted and narrowed
    cv2.imwrite(str(tmp_path / "m16.png"), lab.astype(np.uint16))
    assert np.array_equal(read_label(tmp_path / "m16.png"), lab)


def test_read_label_rejects_colour_and_wide_ids(tmp_path):
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (10, 20, 30)
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    with pytest.raises(DataError, match="colour image"):
        read_label(tmp_path / "c.png")
    cv2.imwrite(str(tmp_path / "w.png"), np.full((2, 2), 300, np.uint16))
    with pytest.raises(DataError, match="outside 0..255") as err:
        read_label(tmp_path / "w.png")
    assert "8-bit PNGs" in err.value.fix
    (tmp_path / "t.png").write_text("nope")
    with pytest.raises(DataError, match="cannot decode label mask"):
        read_label(tmp_path / "t.png")


def test_write_image_refuses_what_is_not_rgb_and_writes_nothing(tmp_path):
    """A label map given to write_image was mirrored left-right (its last axis reversed as if it were
    colour); it is now refused with the function to use, and no file is written."""
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for bad in (labels, np.zeros((3, 4, 4), np.uint8)):
        with pytest.raises(InputError, match=r"write_label|\[H, W, 3\]"):
            write_image(tmp_path / "x.png", bad)
    assert not (tmp_path / "x.png").exists()
    write_label(tmp_path / "l.png", labels)
    assert np.array_equal(read_label(tmp_path / "l.png"), labels)  # the right way round


def test_frame_files_play_in_number_order_and_label_writes_are_atomic(tmp_path):
    from edgeseg.data.io import frame_files, image_files, read_label, write_label

    for name in ["10.png", "9.png", "1.png", "frame_0002.jpg", "frame_0010.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in frame_files(tmp_path)] == ["1.png", "9.png", "10.png", "frame_0002.jpg", "frame_0010.jpg"]
    assert [p.name for p in image_files(tmp_path)][:3] == ["1.png", "10.png", "9.png"]  # datasets keep name order
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_label(tmp_path / "m.png", labels)
    assert np.array_equal(read_label(tmp_path / "m.png"), labels)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") or "tmp" in p.name) == []
