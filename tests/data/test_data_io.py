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


def test_exif_orientation_of_jpeg_and_png_files_and_a_training_folder_says_it(tmp_path, caplog):
    """An audit (session 50): a phone photo mirrored or upside down (EXIF 2-4) keeps its size, so a mask drawn on its
    stored pixels trained silently against the turned picture edgeseg reads (2.5 % of its labels right). The
    orientation is read (JPEG APP1, PNG eXIf), and a folder dataset says once that masks follow the picture as shown."""
    from PIL import Image

    from edgeseg.data import open_dataset
    from edgeseg.data.io import exif_orientation, write_label

    px = np.zeros((8, 10, 3), np.uint8)
    for tag in range(1, 9):
        for ext in ("jpg", "png"):
            exif = Image.Exif()
            exif[0x0112] = tag
            Image.fromarray(px).save(tmp_path / f"o{tag}.{ext}", exif=exif)
            assert exif_orientation(tmp_path / f"o{tag}.{ext}") == tag
    Image.fromarray(px).save(tmp_path / "plain.jpg")
    assert exif_orientation(tmp_path / "plain.jpg") == exif_orientation(tmp_path / "missing.jpg") == 1
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xff")  # a cut header
    assert exif_orientation(tmp_path / "junk.jpg") == 1
    for name in ("a", "b"):
        (tmp_path / "ds" / "img").mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        exif[0x0112] = 3
        Image.fromarray(px).save(tmp_path / "ds" / "img" / f"{name}.jpg", exif=exif)
        write_label(tmp_path / "ds" / "mask" / f"{name}.png", np.zeros((8, 10), np.uint8))
    ds = open_dataset(f"folder:{tmp_path}/ds/img,{tmp_path}/ds/mask,num_classes=2")
    with caplog.at_level("WARNING", logger="edgeseg.data.folder"):
        ds[0], ds[1]
    said = [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert len(said) == 1 and "(3: turned 180 degrees when shown)" in said[0] and "drawn on the picture as shown" in said[0]


def test_a_16_bit_png_holding_12_bits_is_said_once_per_folder(tmp_path, caplog):
    """An audit of images as users have them (session 50): a 12-bit camera's frames in 16-bit PNGs (values 0..4095)
    read as 8 bits from their top byte, nearly black (0..15), without a word."""
    import cv2

    from edgeseg.data.io import read_image

    rng = np.random.default_rng(0)
    (tmp_path / "narrow").mkdir()
    (tmp_path / "wide").mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / "narrow" / f"{name}.png"), rng.integers(0, 4096, (6, 8, 3)).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "wide" / "c.png"), rng.integers(0, 65536, (6, 8)).astype(np.uint16))
    with caplog.at_level("WARNING", logger="edgeseg.data.io"):
        assert read_image(tmp_path / "narrow" / "a.png").max() <= 15
        read_image(tmp_path / "narrow" / "b.png")
        assert read_image(tmp_path / "wide" / "c.png").max() > 200
    said = [r.getMessage() for r in caplog.records if "12-bit data?" in r.getMessage()]
    assert len(said) == 1 and "a.png is a 16-bit PNG whose values stop at" in said[0]


@pytest.mark.parametrize("fmt,options", [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("BMP", {}),
                                         ("GIF", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 50})])
def test_image_dimensions_read_the_header_as_pillow_writes_it(fmt, options):
    import io

    from PIL import Image

    from edgeseg.data.io import image_dimensions

    for w, h in ((37, 19), (640, 321)):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, fmt, **options)
        assert image_dimensions(buf.getvalue()) == (w, h)
    assert image_dimensions(b"II*\x00" + bytes(60)) is None  # TIFF: decoded as it is
    assert image_dimensions(b"\xff\xd8\xff\xe0\x00") is None  # a header cut short


def _png_header(w: int, h: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_an_image_opencv_will_not_decode_is_named_with_its_size(tmp_path):
    """Before: a 40000x30000 panorama (above OpenCV's 2**30 pixels) was "not an image or a corrupt file"."""
    p = tmp_path / "pano.png"
    p.write_bytes(_png_header(40000, 30000) + bytes(64))
    with pytest.raises(InputError, match=r"pano.png is 40000x30000 \(1,200 megapixels\): above the 1,074 megapixels "
                                         r"OpenCV decodes") as e:
        read_image(p)
    assert "downscale it first" in e.value.fix


def test_an_image_too_large_for_the_memory_left_is_refused_before_decoding(tmp_path, monkeypatch):
    """A batch audit: a 12000x12000 photo took 2.46 GB; in a container the kernel killed the whole job. An image that
    would take more than the memory left (the container's limit included) is an error naming it, before decoding.
    Session 54: the figure is the least it takes (decoding: 6 bytes a pixel; the caller's work when it says), not 16
    bytes a pixel whatever is done with it, which refused a 12000x12000 JPEG that `predict --json` reads in 1 GB."""
    from edgeseg import _memory
    from edgeseg.data import io

    p = tmp_path / "big.png"
    cv2.imwrite(str(p), np.zeros((4000, 4100, 3), np.uint8))  # 16.4 megapixels: 98 MB at 6 bytes a pixel
    monkeypatch.setattr(_memory, "available_bytes", lambda: 90 << 20)
    with pytest.raises(InputError, match=r"big.png is 4100x4000 \(16 megapixels\): it takes at least 94 MiB "
                                         r"and 90 MiB is free"):
        read_image(p)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 200 << 20)
    assert read_image(p).shape == (4000, 4100, 3)
    with pytest.raises(InputError, match=r"it takes at least 250 MiB and 200 MiB is free"):  # the caller's figure
        read_image(p, bytes_per_pixel=16)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 1)  # small images are not checked
    monkeypatch.setattr(_memory, "CHECKED_PIXELS", 4000 * 4100 + 1)
    assert read_image(p).shape == (4000, 4100, 3)


def test_headers_the_review_found_read_right(tmp_path, monkeypatch):
    """The review: an OS/2 BMP (16-bit sizes) read as 2424885x1572865 and was refused; a JPEG whose ICC profile runs
    past 128 KB before its frame header was not checked; a 1,100,000-pixel-wide PNG (OpenCV's and libpng's side
    limits) read as "not an image or a corrupt file"; an OPENCV_IO_MAX_IMAGE_PIXELS below 16 megapixels was not
    checked."""
    import io
    import struct

    from PIL import Image

    from edgeseg.data.io import image_dimensions

    w, h = 53, 37
    pixels = bytes((w * 3 + 3) // 4 * 4 * h)
    os2 = b"BM" + struct.pack("<IHHI", 26 + len(pixels), 0, 0, 26) + struct.pack("<IHHHH", 12, w, h, 1, 24) + pixels
    (tmp_path / "os2.bmp").write_bytes(os2)
    assert image_dimensions(os2) == (53, 37) and read_image(tmp_path / "os2.bmp").shape == (37, 53, 3)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 70, 3), np.uint8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    app2 = b"".join(b"\xff\xe2" + struct.pack(">H", 60002) + bytes(60000) for _ in range(4))  # 240 KB of ICC
    assert image_dimensions(jpeg[:2] + app2 + jpeg[2:]) == (70, 40)
    (tmp_path / "wide.png").write_bytes(_png_header(1_100_000, 16) + bytes(64))
    with pytest.raises(InputError, match=r"wide.png is 1100000x16: wider or taller than OpenCV decodes"):
        read_image(tmp_path / "wide.png")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((30, 40, 3), np.uint8))
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(InputError, match=r"small.png is 40x30 \(0 megapixels\): above the 0 megapixels OpenCV decodes"):
        read_image(tmp_path / "small.png")


def test_panoptic_ids_to_rgb_invert_the_reference_rgb2id_in_either_channel_order():
    """Session 54: the ids' bytes are split by OpenCV over an in-place view (0.15 ms a 1080p map; numpy's byte
    arithmetic in the PNG sink took 19 ms and 18 bytes a pixel). The result is read back by the reference's rgb2id
    (cityscapesScripts' port of panopticapi) for every id layout a result or a user gives."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import rgb2id

    from edgeseg.data.coco_panoptic import id_to_rgb

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256 ** 3, (37, 53)).astype(np.int32)
    ids[0, :4] = [0, 255, 256, 256 ** 3 - 1]
    for given in (ids, ids.astype(np.int64), ids.astype(np.uint32), ids.astype(">i4"), ids[:, ::2], ids.T):
        rgb = id_to_rgb(given)
        assert rgb.dtype == np.uint8 and rgb.shape == (*given.shape, 3) and rgb.flags.c_contiguous
        assert np.array_equal(rgb2id(rgb), np.asarray(given, np.int64))
        assert np.array_equal(id_to_rgb(given, bgr=True), rgb[..., ::-1])
    assert id_to_rgb(ids)[0, :4].tolist() == [[0, 0, 0], [255, 0, 0], [0, 1, 0], [255, 255, 255]]
    assert id_to_rgb(np.zeros((0, 5), np.int32)).shape == (0, 5, 3)
    assert id_to_rgb(np.int32(258)).tolist() == [2, 1, 0] and id_to_rgb(np.int32(258), bgr=True).tolist() == [0, 1, 2]
    for odd in (ids[0], ids[None, :3], ids.astype(np.int64)[None]):  # not a map (the review): numpy's way, the same bytes
        c = id_to_rgb(odd).astype(np.int64)
        assert np.array_equal(c[..., 0] + 256 * c[..., 1] + 65536 * c[..., 2], odd) and c.shape == (*odd.shape, 3)
        assert np.array_equal(id_to_rgb(odd, bgr=True), id_to_rgb(odd)[..., ::-1])


def test_swap_rb_is_the_reversed_channels_for_every_array_a_writer_gets():
    """OpenCV's conversion in place of numpy's reversed copy (7.0 -> 0.12 ms a 1080p frame): the same bytes for the
    dtypes and layouts the writers get, views included; other shapes keep the reversed copy."""
    from edgeseg._imagefile import swap_rb

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (21, 34, 3), np.uint8)
    for given in (rgb, rgb[:, ::-1], rgb[::2, 3:], rgb.astype(np.uint16) * 257, rgb.astype(np.float32),
                  rgb.astype(np.int32), rgb[..., :2], np.zeros((0, 4, 3), np.uint8)):
        out = swap_rb(given)
        assert out.flags.c_contiguous and out.dtype == given.dtype and np.array_equal(out, given[..., ::-1])
