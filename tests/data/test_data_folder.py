"""Image + mask folder reader: stem matching, class names, void mapping, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data import IGNORE, FolderDataset, open_dataset, write_image, write_label
from edgeseg.data.base import DatasetSpec
from edgeseg.errors import DataError


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(2)
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    truth = {}
    for stem in ("b", "a", "c"):
        img = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        lab = rng.integers(0, 4, (5, 6)).astype(np.uint8)
        lab[0, 0] = 9  # a stray id beyond the classes
        write_image(imgs / f"{stem}.png", img)
        write_label(masks / f"{stem}.png", lab)
        truth[stem] = (img, lab)
    (tmp_path / "classes.txt").write_text("# my classes\nbackground\nroad\n\ncar  # a comment\nvoid\n")
    return tmp_path, truth


def test_folder_pairs_classes_and_void(folder):
    root, truth = folder
    ds = open_dataset(f"folder:{root / 'images'},{root / 'masks'},classes={root / 'classes.txt'},void=3")
    assert isinstance(ds, FolderDataset) and len(ds) == 3
    assert ds.classes == ("background", "road", "car", "void") and ds.palette.shape == (4, 3)
    assert [s.name for s in ds] == ["a", "b", "c"]
    for s in ds:
        img, lab = truth[s.name]
        assert np.array_equal(s.image, img)
        expected = np.where((lab == 3) | (lab >= 4), IGNORE, lab)
        assert np.array_equal(s.labels, expected)


def test_folder_infers_class_count(folder):
    root, _ = folder
    ds = FolderDataset(root / "images", root / "masks", void=9)  # 9 is void, so ids 0..3 -> 4 classes
    assert ds.classes == ("class_0", "class_1", "class_2", "class_3")
    ds = FolderDataset(root / "images", root / "masks", num_classes=2)
    assert ds.num_classes == 2 and set(np.unique(ds[0].labels).tolist()) <= {0, 1, IGNORE}


def test_folder_unmatched_files_named(folder):
    root, _ = folder
    write_image(root / "images" / "lonely.jpg", np.zeros((5, 6, 3), np.uint8))
    write_label(root / "masks" / "orphan.png", np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError) as e:
        FolderDataset(root / "images", root / "masks", num_classes=4)
    msg = str(e.value)
    assert "images without a mask: lonely.jpg" in msg and "masks without an image: orphan.png" in msg


def test_folder_unreadable_and_mismatched(folder):
    root, _ = folder
    (root / "masks" / "b.png").write_bytes(b"garbage")
    ds = FolderDataset(root / "images", root / "masks", num_classes=4)
    with pytest.raises(DataError, match=r"cannot decode label mask .*b\.png"):
        ds[1]
    write_label(root / "masks" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"mask .*b\.png is \[4, 4\] but its image .*b\.png is \[5, 6\]") as e:
        ds[1]
    assert "EXIF" not in e.value.fix
    write_label(root / "masks" / "b.png", np.zeros((6, 5), np.uint8))  # height and width swapped: a turned photo
    with pytest.raises(DataError, match=r"is \[6, 5\] but its image .*b\.png is \[5, 6\]") as e:
        ds[1]
    assert "EXIF orientation" in e.value.fix  # (a review: the swap looked impossible, the files being 6x5 and 5x6)


def test_spec_parsing_and_errors(tmp_path):
    s = DatasetSpec.parse("folder:/x/imgs,/y/masks,classes=/z/c.txt,void=0")
    assert s.kind == "folder" and s.args == ("/x/imgs", "/y/masks")
    assert dict(s.options) == {"classes": "/z/c.txt", "void": "0"}
    with pytest.raises(DataError, match="cannot read dataset spec"):
        open_dataset("just/a/path")
    with pytest.raises(DataError, match="unknown dataset kind 'camvd'") as e:
        open_dataset("camvd:/x")
    assert "camvid" in str(e.value)
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(f"folder:{tmp_path},{tmp_path},colour=1")
    with pytest.raises(DataError, match="class-name file not found"):
        open_dataset(f"folder:{tmp_path},{tmp_path},classes={tmp_path / 'no.txt'}")
