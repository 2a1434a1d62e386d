"""DAVIS reader: 2016 binary masks, 2017 palette masks (decoded without Pillow), layout errors, real data."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeseg.data.davis import Davis, read_id_mask
from edgeseg.data.io import write_image, write_label
from edgeseg.errors import DataError

# the DAVIS / PASCAL VOC palette's first entries
PALETTE = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]], np.uint8)


def write_palette_png(path: Path, ids: np.ndarray, palette: np.ndarray = PALETTE) -> None:
    """An 8-bit indexed-colour PNG written by hand (colour type 3), as DAVIS-2017 ships its masks."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = ids.shape
    raw = b"".join(b"\x00" + ids[y].astype(np.uint8).tobytes() for y in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
           + chunk(b"PLTE", palette.astype(np.uint8).tobytes()) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def make_root(tmp_path: Path, seqs=("a", "b"), n=3, size=(24, 32), year=2016) -> Path:
    root = tmp_path / "DAVIS"
    rng = np.random.default_rng(0)
    h, w = size
    for s in seqs:
        for i in range(n):
            write_image(root / "JPEGImages" / "480p" / s / f"{i:05d}.jpg", rng.integers(0, 255, (h, w, 3), np.uint8))
            ids = np.zeros((h, w), np.uint8)
            ids[4 + i : 10 + i, 5:12] = 1
            if year == 2016:
                write_label(root / "Annotations" / "480p" / s / f"{i:05d}.png", ids * 255)
            else:
                ids[14:20, 20 : 26 + i] = 2
                write_palette_png(root / "Annotations" / "480p" / s / f"{i:05d}.png", ids)
    return root


def test_palette_png_gives_indices(tmp_path):
    ids = np.zeros((7, 9), np.uint8)
    ids[1:4, 2:5] = 1
    ids[5, :] = 4
    ids[0, 0] = 2
    write_palette_png(tmp_path / "m.png", ids)
    got = read_id_mask(tmp_path / "m.png")
    assert got.dtype == np.uint8 and np.array_equal(got, ids)
    # a palette that repeats a colour: the lowest index wins (no crash)
    write_palette_png(tmp_path / "dup.png", ids, np.concatenate([PALETTE, PALETTE[:2]]))
    assert np.array_equal(read_id_mask(tmp_path / "dup.png"), ids)


def test_palette_png_from_pillow_if_present(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    ids = np.zeros((10, 12), np.uint8)
    ids[2:6, 3:9] = 3
    ids[7:, :4] = 1
    img = Image.fromarray(ids, mode="P")
    img.putpalette(PALETTE.ravel().tolist() + [0] * (768 - PALETTE.size))
    img.save(tmp_path / "p.png")
    assert np.array_equal(read_id_mask(tmp_path / "p.png"), ids)


def test_binary_0_255_is_object_1(tmp_path):
    m = np.zeros((5, 5), np.uint8)
    m[1:3, 1:3] = 255
    write_label(tmp_path / "b.png", m)
    assert read_id_mask(tmp_path / "b.png").tolist() == (m // 255).tolist()
    ids = m // 255 * 3
    write_label(tmp_path / "ids.png", ids)  # plain ids stay ids
    assert np.array_equal(read_id_mask(tmp_path / "ids.png"), ids)


@pytest.mark.parametrize("year", [2016, 2017])
def test_reader(tmp_path, year):
    root = make_root(tmp_path, year=year)
    davis = Davis(root)
    assert davis.sequence_names == ["a", "b"] and len(davis) == 2
    seq = davis["a"]
    assert len(seq) == 3 and seq.frame_names == ["00000", "00001", "00002"]
    assert seq.num_objects == (1 if year == 2016 else 2)
    frames = list(seq.frames())
    assert [f.index for f in frames] == [0, 1, 2] and [f.name for f in frames] == seq.frame_names
    f = frames[1]
    assert f.image.shape == (24, 32, 3) and f.image.dtype == np.uint8
    assert f.mask.dtype == np.uint8 and f.mask[5, 6] == 1 and f.mask[0, 0] == 0
    assert set(np.unique(f.mask).tolist()) == ({0, 1} if year == 2016 else {0, 1, 2})
    assert len(seq.masks()) == 3 and np.array_equal(seq.prompt(), frames[0].mask)


def test_spec_subsets_and_selection(tmp_path):
    root = make_root(tmp_path, seqs=("a", "b", "c"))
    assert Davis.from_spec(f"davis:{root},sequences=c+a").sequence_names == ["c", "a"]
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("b\nc\n")
    assert Davis.from_spec(f"davis:{root},subset=val").sequence_names == ["b", "c"]
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "train.txt").write_text(
        "/JPEGImages/480p/a/00000.jpg /Annotations/480p/a/00000.png\n/JPEGImages/480p/a/00001.jpg /Annotations/480p/a/00001.png\n")
    assert Davis(root, subset="train").sequence_names == ["a"]
    with pytest.raises(DataError, match="subset 'test' not found"):
        Davis(root, subset="test")
    with pytest.raises(DataError, match="unknown option"):
        Davis.from_spec(f"davis:{root},split=val")
    with pytest.raises(DataError, match="not a DAVIS spec"):
        Davis.from_spec(f"camvid:{root}")


def test_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        Davis(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no JPEGImages/480p"):
        Davis(tmp_path / "empty")
    root = make_root(tmp_path, seqs=("a",))
    with pytest.raises(DataError, match="no sequence 'zz'"):
        Davis(root, sequences=["zz"])
    (root / "JPEGImages" / "480p" / "hollow").mkdir()
    with pytest.raises(DataError, match="'hollow' is empty"):
        Davis(root)["hollow"]
    # an annotation of another size than its frame
    write_label(root / "Annotations" / "480p" / "a" / "00001.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DataError, match="mask 00001.png is 16x12 but frame 00001.jpg is 32x24"):
        list(Davis(root)["a"].frames())
    # a missing annotation: None while iterating, an error where all are needed
    (root / "Annotations" / "480p" / "a" / "00002.png").unlink()
    assert Davis(root)["a"].read_mask(2) is None
    with pytest.raises(DataError, match="00002.jpg has no annotation"):
        Davis(root)["a"].masks()


@pytest.mark.data
def test_real_davis2016(data_root):
    davis = Davis(data_root / "davis2016")
    assert davis.sequence_names == ["blackswan", "car-shadow", "dance-twirl"]
    assert [len(s) for s in davis] == [50, 40, 90]
    seq = davis["car-shadow"]
    assert seq.num_objects == 1
    first = next(iter(seq.frames()))
    assert first.image.shape == (480, 854, 3) and first.mask.shape == (480, 854)
    assert set(np.unique(first.mask).tolist()) == {0, 1}
    assert 0.09 < first.mask.mean() < 0.11  # the car covers about a tenth of the frame


def _rgb_png(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
    import cv2

    img = rgb[..., ::-1] if alpha is None else np.dstack([rgb[..., ::-1], alpha])
    assert cv2.imwrite(str(path), np.ascontiguousarray(img))


def test_colour_prompt_in_davis_colours_keeps_their_indices(tmp_path):
    from edgeseg.data.davis import read_prompt_mask

    ids = np.zeros((10, 12), np.uint8)
    ids[1:4, 1:4] = 3   # (128, 128, 0): DAVIS object 3, though it appears first
    ids[6:9, 6:11] = 1  # (128, 0, 0)
    _rgb_png(tmp_path / "p.png", PALETTE[ids])
    assert np.array_equal(read_prompt_mask(tmp_path / "p.png"), ids)


def test_colour_prompt_of_free_colours_numbers_them_by_first_appearance(tmp_path, caplog):
    from edgeseg.data.davis import read_prompt_mask

    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[5:9, 0:3] = (250, 10, 10)  # appears second (row 5)
    rgb[1:3, 8:12] = (10, 250, 10)  # appears first (row 1)
    alpha = np.full((10, 12), 255, np.uint8)
    alpha[0, :] = 0
    rgb[0, :] = (255, 255, 255)  # transparent white: background
    _rgb_png(tmp_path / "p.png", rgb, alpha)
    with caplog.at_level("INFO", logger="edgeseg.data.davis"):
        got = read_prompt_mask(tmp_path / "p.png")
    want = np.zeros((10, 12), np.uint8)
    want[1:3, 8:12] = 1
    want[5:9, 0:3] = 2
    assert np.array_equal(got, want)
    assert "1 = #0afa0a, 2 = #fa0a0a" in caplog.text


def test_colour_prompt_refuses_a_photo_and_keeps_id_maps(tmp_path):
    from edgeseg.data.davis import read_prompt_mask

    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    _rgb_png(tmp_path / "photo.png", rgb)
    with pytest.raises(DataError, match="colours, more than 255 objects") as e:
        read_prompt_mask(tmp_path / "photo.png")
    assert "flat colour" in e.value.fix
    ids = np.zeros((8, 8), np.uint8)
    ids[2:5, 2:5] = 2
    write_label(tmp_path / "ids.png", ids)
    assert np.array_equal(read_prompt_mask(tmp_path / "ids.png"), ids)
    write_label(tmp_path / "bin.png", (ids > 0).astype(np.uint8) * 255)
    assert np.array_equal(read_prompt_mask(tmp_path / "bin.png"), (ids > 0).astype(np.uint8))
    write_palette_png(tmp_path / "pal.png", ids)
    assert np.array_equal(read_prompt_mask(tmp_path / "pal.png"), ids)
