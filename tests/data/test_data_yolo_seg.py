"""YOLO-seg label folders: exact masks for hand-built rectangles and triangles, the layouts
(flat, per split, data.yaml), class names with and without PyYAML, and the errors."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data import YoloSeg, open_dataset, write_image
from edgeseg.data.yolo_seg import label_path, parse_simple_yaml
from edgeseg.errors import DataError

H, W = 20, 40


def _image(path, grey=0):
    write_image(path, np.full((H, W, 3), grey, np.uint8))


def _norm(points):
    """Pixel (x, y) vertices -> the normalised 'x y' text of a label line."""
    return " ".join(f"{x / W:.6f} {y / H:.6f}" for x, y in points)


RECT = [(4, 2), (14, 2), (14, 10), (4, 10)]  # pixels x 4..13, y 2..9
TRI = [(20, 0), (40, 0), (20, 20)]  # pixel centres inside: (x - 20) + y + 1 < 20


def _expected_rect():
    m = np.zeros((H, W), bool)
    m[2:10, 4:14] = True
    return m


def _expected_tri():
    r, c = np.mgrid[:H, :W]
    return (c >= 20) & ((c - 20) + r + 1 < 20)


@pytest.fixture
def flat(tmp_path):
    root = tmp_path / "ds"
    _image(root / "images" / "a.png")
    _image(root / "images" / "b.png", 50)  # no label file: no objects
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text(f"1 {_norm(RECT)}\n\n0 {_norm(TRI)}\n")
    return root


def test_flat_layout_exact_masks(flat):
    ds = open_dataset(f"yolo-seg:{flat}")
    assert isinstance(ds, YoloSeg) and ds.task == "instance" and len(ds) == 2
    assert ds.classes == ("0", "1") and ds.category_ids == (0, 1)  # names from the largest class id
    s = ds[0]
    assert s.image_id == 1 and s.name == "a" and s.image().shape == (H, W, 3)
    t = s.truth
    assert t.classes.tolist() == [1, 0] and t.category_ids.tolist() == [1, 0] and not t.iscrowd.any()
    np.testing.assert_array_equal(t.masks[0], _expected_rect())
    np.testing.assert_array_equal(t.masks[1], _expected_tri())
    assert t.area.tolist() == [80.0, float(_expected_tri().sum())]
    np.testing.assert_array_equal(t.boxes[0], [4, 2, 14, 10])
    empty = ds[1]
    assert empty.image_id == 2 and len(empty.truth) == 0 and empty.truth.masks.shape == (0, H, W)
    assert int(empty.image()[0, 0, 0]) == 50


def test_split_layout_with_data_yaml_list_and_mapping(tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "val"):
        _image(root / "images" / split / "x.jpg")
        (root / "labels" / split).mkdir(parents=True)
        (root / "labels" / split / "x.txt").write_text(f"2 {_norm(RECT)}\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [person, rider, car]\n")
    ds = open_dataset(f"yolo-seg:{root}", split="val")
    assert ds.classes == ("person", "rider", "car") and ds.image_paths == [root / "images" / "val" / "x.jpg"]
    np.testing.assert_array_equal(ds[0].truth.masks[0], _expected_rect())  # JPEG pixels do not matter, the size does
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: person\n  1: rider\n  2: car\n")
    ds = open_dataset(f"yolo-seg:{root / 'data.yaml'}", split="train")
    assert ds.classes == ("person", "rider", "car") and ds.image_paths[0].parent.name == "train"
    without_yaml = tmp_path / "plain"
    (root / "data.yaml").unlink()
    root.rename(without_yaml)
    assert open_dataset(f"yolo-seg:{without_yaml}", split="val").image_paths[0].parent.name == "val"


def test_names_file_option(flat, tmp_path):
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    assert open_dataset(f"yolo-seg:{flat},names={tmp_path / 'names.txt'}").classes == ("cat", "dog")


def test_simple_yaml_parser_without_pyyaml():
    assert parse_simple_yaml("path: ../d  # root\nval: images/val\nnames: ['a', \"b c\"]\n") == {
        "path": "../d", "val": "images/val", "names": ["a", "b c"]}
    assert parse_simple_yaml("names:\n  - person\n  - car\nnc: 2\n")["names"] == ["person", "car"]
    assert parse_simple_yaml("names:\n  0: person\n  1: 'traffic light'\n")["names"] == {"0": "person", "1": "traffic light"}
    assert parse_simple_yaml("names: {0: a, 1: b}\n")["names"] == {"0": "a", "1": "b"}


def test_label_path_rule(tmp_path):
    assert label_path(tmp_path / "images" / "val" / "a.jpg") == tmp_path / "labels" / "val" / "a.txt"
    assert label_path(tmp_path / "images" / "x" / "images" / "b.png") == tmp_path / "images" / "x" / "labels" / "b.txt"


@pytest.mark.parametrize("line, match", [
    ("0 0.5 0.5 0.2 0.2", "box label"),
    ("0 0.1 0.1", "at least 3"),
    ("0 0.1 0.1 0.5 0.5 0.2", "at least 3"),
    ("zero 0.1 0.1 0.5 0.5 0.2 0.9", "'zero' is not a number"),
    ("5 0.1 0.1 0.5 0.5 0.2 0.9", "class 5 is outside"),
    # found by session 34's audit:
    ("1 0.1 0.1 0.5 abc 0.2 0.9", r"'abc' is not a number"),  # the token, not the line's start
    ("1 0.1 nan 0.5 0.5 0.2 0.9", r"not finite"),  # was a DataError naming no file
    ("1 0.1 inf 0.5 0.5 0.2 0.9", r"not finite"),
    ("1.5 0.1 0.1 0.5 0.5 0.2 0.9", r"class '1\.5' is not a whole number"),
    ("1 4 2 14 2 14 10", r"not normalised to 0\.\.1 \(x 4\.\.14, y 2\.\.10\)"),  # pixels: was silently rasterised
    ("1 -0.5 -0.5 1.5 -0.5 1.5 1.5", r"not normalised"),
    ("1 0.5 0.5 1e9 0.5 1e9 1e9", r"not normalised"),  # was a 58 TiB allocation and a MemoryError traceback
])
def test_bad_label_lines_name_file_and_line(flat, line, match):
    (flat / "data.yaml").write_text("val: images\nnames: [a, b]\n")
    (flat / "labels" / "b.txt").write_text(f"1 {_norm(RECT)}\n{line}\n")
    ds = open_dataset(f"yolo-seg:{flat}")
    with pytest.raises(DataError, match=match) as e:
        ds[1]
    assert "b.txt:2" in str(e.value)


def test_a_label_file_that_is_not_text_is_named(flat):
    """A stray non-UTF-8 byte: UnicodeDecodeError escaped as a traceback (session 50's fuzzing)."""
    (flat / "data.yaml").write_text("val: images\nnames: [a, b]\n")
    (flat / "labels" / "b.txt").write_bytes(f"1 {_norm(RECT)} \xc7\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"b\.txt is not text \(the byte at offset \d+ is not UTF-8\)") as e:
        open_dataset(f"yolo-seg:{flat}")[1]
    assert "CLASS x1 y1" in e.value.fix
    (flat / "labels" / "b.txt").write_bytes(b"\xef\xbb\xbf" + f"1 {_norm(RECT)}\n".encode())  # a BOM: read
    assert len(open_dataset(f"yolo-seg:{flat}")[1].truth.masks) == 1


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_dataset(f"yolo-seg:{tmp_path / 'nothing'}")
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_dataset(f"yolo-seg:{tmp_path}")
    (tmp_path / "data.yaml").write_text("val: images\n")
    with pytest.raises(DataError, match="no 'names'"):
        open_dataset(f"yolo-seg:{tmp_path}")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [a]\n")
    with pytest.raises(DataError, match="no 'val' split"):
        open_dataset(f"yolo-seg:{tmp_path}")
    (tmp_path / "data.yaml").write_text("val: images\nnames: {0: a, 2: b}\n")
    with pytest.raises(DataError, match="without gaps"):
        open_dataset(f"yolo-seg:{tmp_path}")


def test_data_yaml_without_pyyaml(flat, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now fails: the built-in parser reads it
    (flat / "data.yaml").write_text("# classes\nval: images\nnames:\n  - cat\n  - dog\n")
    ds = open_dataset(f"yolo-seg:{flat}")
    assert ds.classes == ("cat", "dog")
    np.testing.assert_array_equal(ds[0].truth.masks[0], _expected_rect())


def test_class_out_of_range_says_how_to_fix(flat):
    (flat / "data.yaml").write_text("val: images\nnames: [a, b]\n")
    (flat / "labels" / "b.txt").write_text(f"2 {_norm(RECT)}\n")
    with pytest.raises(DataError, match="class 2 is outside 0..1") as e:
        open_dataset(f"yolo-seg:{flat}")[1]
    assert "names" in e.value.fix


def test_what_ultralytics_accepts_is_read(flat):
    """A float class id (Ultralytics reads labels as floats) and a polygon past the image edge whose box
    (cx, cy, w, h) is still within 0..1 (Ultralytics' own check) are read; the mask is clipped to the image."""
    (flat / "labels" / "b.txt").write_text("1.0 0.5 0.5 1.5 0.5 1.5 1.2 0.5 1.2\n")
    t = open_dataset(f"yolo-seg:{flat}")[1].truth
    assert t.category_ids.tolist() == [1]
    want = np.zeros((H, W), bool)
    want[10:, 20:] = True
    np.testing.assert_array_equal(t.masks[0], want)
