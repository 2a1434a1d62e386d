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


def test_a_pascal_voc_layout_reads_the_pairs_its_list_names(tmp_path):
    """An audit: VOC2012 has 17k JPEGImages and 2.9k SegmentationClass masks; folder: refused the unmatched images and
    nothing read ImageSets/Segmentation/{train,val}.txt. ``list=FILE`` keeps the listed stems, ``{split}`` replaced."""
    voc = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    for i in range(5):  # five images, three masks (VOC's palette PNG: 255 is the border, void)
        write_image(voc / "JPEGImages" / f"2007_{i:06d}.jpg", np.full((8, 10, 3), 40 * i, np.uint8))
    for i in (0, 2, 3):
        lab = np.full((8, 10), i, np.uint8)
        lab[0] = 255
        write_label(voc / "SegmentationClass" / f"2007_{i:06d}.png", lab)
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000000\n2007_000002\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000003\n")
    spec = f"folder:{voc}/JPEGImages,{voc}/SegmentationClass,num_classes=21,list={voc}/ImageSets/Segmentation/{{split}}.txt"
    train, val = open_dataset(spec, "train"), open_dataset(spec, "val")
    assert [s.name for s in train] == ["2007_000000", "2007_000002"] and [s.name for s in val] == ["2007_000003"]
    assert (train[1].labels[1:] == 2).all() and (train[1].labels[0] == IGNORE).all() and len(train.classes) == 21
    (voc / "ImageSets/Segmentation/val.txt").write_text("\ufeff# the validation list\r\n2007_000003.jpg\r\n")
    assert [s.name for s in open_dataset(spec, "val")] == ["2007_000003"]  # a BOM, a comment, CRLF, a suffix
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000001\n")  # an image without a mask
    with pytest.raises(DataError, match="1 of the 1 listed names have no image or no mask") as e:
        open_dataset(spec, "val")
    assert "2007_000001" in str(e.value)
    with pytest.raises(DataError, match="images without a mask") as e:
        open_dataset(f"folder:{voc}/JPEGImages,{voc}/SegmentationClass", "train")
    assert "list=ImageSets/Segmentation/{split}.txt" in e.value.fix


def test_an_indexed_masks_colours_are_the_classes_colours(tmp_path):
    """An audit: palette PNG masks (VOC, annotation tools) gave their indices but the trained bundle got the default
    colours. Now the first mask's palette is the dataset's, when it colours every class; grey masks keep the default."""
    from PIL import Image

    from edgeseg.structures import default_palette

    (tmp_path / "img").mkdir()
    (tmp_path / "pal").mkdir()
    (tmp_path / "grey").mkdir()
    colours = [[10, 20, 30], [200, 0, 0], [0, 180, 40]]
    for i in range(2):
        write_image(tmp_path / "img" / f"{i}.png", np.full((6, 8, 3), 50, np.uint8))
        m = Image.fromarray(np.full((6, 8), i + 1, np.uint8), mode="P")
        m.putpalette([v for c in colours for v in c] + [0] * (768 - 9))
        m.save(tmp_path / "pal" / f"{i}.png")
        write_label(tmp_path / "grey" / f"{i}.png", np.full((6, 8), i + 1, np.uint8))
    ds = open_dataset(f"folder:{tmp_path}/img,{tmp_path}/pal,num_classes=3", "train")
    assert ds.palette.tolist() == colours and ds[1].labels[0, 0] == 2
    grey = open_dataset(f"folder:{tmp_path}/img,{tmp_path}/grey,num_classes=3", "train")
    assert grey.palette.tolist() == default_palette(3).tolist()


def test_ade20k_style_masks_read_with_reduce_zero_label(tmp_path, caplog):
    """ADE20K's masks hold 0 for 'other' (void) and its 150 classes as 1..150, while models trained on them (as
    MMSegmentation's reduce_zero_label trains them) output 0..149: read plainly, every pixel was scored against the
    class one above its own. reduce_zero_label=1 reads them as MMSegmentation does (0 -> void, k -> k - 1, 255 void)."""
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    lab = np.array([[0, 1, 2], [3, 150, 255]], np.uint8)
    write_image(imgs / "ADE_val_00000001.jpg", np.zeros((2, 3, 3), np.uint8))
    write_label(masks / "ADE_val_00000001.png", lab)
    with caplog.at_level("WARNING"):  # ids 4..149 unseen below 150: said, as for any folder (not the reduced 0)
        ds = open_dataset(f"folder:{imgs},{masks},reduce_zero_label=1")
    assert "up to 150 but never 4-149: a 150-class model" in caplog.text
    assert ds.num_classes == 150  # ids 1..150 -> classes 0..149, counted from the masks
    assert ds[0].labels.tolist() == [[IGNORE, 0, 1], [2, 149, IGNORE]]
    small = FolderDataset(imgs, masks, num_classes=2, reduce_zero_label=True)  # ids past the classes: void
    assert small[0].labels.tolist() == [[IGNORE, 0, 1], [IGNORE, IGNORE, IGNORE]]
    assert FolderDataset(imgs, masks, num_classes=151)[0].labels.tolist() == lab.tolist()  # plainly: unchanged
    with pytest.raises(DataError, match="reduce_zero_label='maybe' is neither 1 nor 0"):
        open_dataset(f"folder:{imgs},{masks},reduce_zero_label=maybe")
