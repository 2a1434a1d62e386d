"""``yolo-semantic:DATA.yaml``: Ultralytics' semantic segmentation dataset layout (images/ and masks_dir/ by stem,
255 void, ``label_mapping`` applied on the raw ids as its ``convert_label`` does: each source id once)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeseg.data import open_dataset
from edgeseg.errors import DataError

YAML = """# Ultralytics semantic dataset
path: {path}
train: images/train
val: images/val
masks_dir: masks
names:
  0: road
  1: car
  2: sky
label_mapping:
  -1: ignore_label
  0: ignore_label
  7: 0
  26: 1
  23: 2
"""


def _make(root, yaml_path=None, path="ds", masks_dir=True):
    rng = np.random.default_rng(0)
    ds = root / "ds"
    for split in ("train", "val"):
        (ds / "images" / split).mkdir(parents=True, exist_ok=True)
        (ds / "masks" / split).mkdir(parents=True, exist_ok=True)
        for k in range(2):
            cv2.imwrite(str(ds / "images" / split / f"f{k}.jpg"), rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
            raw = rng.choice(np.array([0, 7, 23, 26, 1, 255, 40], np.uint8), (16, 24))
            cv2.imwrite(str(ds / "masks" / split / f"f{k}.png"), raw)
    text = YAML.format(path=path)
    if not masks_dir:
        text = text.replace("masks_dir: masks\n", "")
    y = yaml_path or root / "data.yaml"
    y.write_text(text)
    return y


def test_pairs_names_and_label_mapping(tmp_path):
    y = _make(tmp_path)
    ds = open_dataset(f"yolo-semantic:{y}", split="val")
    assert ds.classes == ("road", "car", "sky") and len(ds) == 2 and ds[0].name == "f0"
    raw = cv2.imread(str(tmp_path / "ds/masks/val/f0.png"), cv2.IMREAD_UNCHANGED)
    # 7 -> road, 26 -> car, 23 -> sky, 0 -> void; 1 (not mapped, a class id) stays car; 40 (not mapped, >= 3) void
    want = np.select([raw == 7, raw == 26, raw == 23, raw == 1], [0, 1, 2, 1], 255).astype(np.uint8)
    np.testing.assert_array_equal(ds[0].labels, want)
    assert open_dataset(f"yolo-semantic:{y}", split="train")[1].name == "f1"
    # path relative to the YAML's folder, or the YAML inside the dataset with a path that names nothing here
    inside = _make(tmp_path, yaml_path=tmp_path / "ds" / "cs.yaml", path="cityscapes8")
    assert len(open_dataset(f"yolo-semantic:{inside}", split="val")) == 2
    assert len(open_dataset(f"yolo-semantic:{tmp_path / 'ds'}", split="val")) == 2  # the folder holding one YAML


def test_mistakes_are_named(tmp_path):
    y = _make(tmp_path, masks_dir=False)
    with pytest.raises(DataError, match="no masks_dir: its labels are YOLO polygons"):
        open_dataset(f"yolo-semantic:{y}", split="val")
    y = _make(tmp_path)
    (tmp_path / "ds/masks/val/f1.png").unlink()
    with pytest.raises(DataError, match="1 image\\(s\\) .* have no mask"):
        open_dataset(f"yolo-semantic:{y}", split="val")
    with pytest.raises(DataError, match="has no 'test' split"):
        open_dataset(f"yolo-semantic:{y}", split="test")
    y.write_text(y.read_text().replace("23: 2", "23: road"))
    with pytest.raises(DataError, match="label_mapping 23: road"):
        open_dataset(f"yolo-semantic:{y}", split="train")


def test_nested_folders_image_lists_and_lists_of_entries(tmp_path):
    """(found by the review) Ultralytics searches a split's folder recursively and takes .txt image lists and lists of
    entries: city subfolders were skipped silently."""
    y = _make(tmp_path)
    sub = tmp_path / "ds/images/val/ulm"
    sub.mkdir()
    (tmp_path / "ds/masks/val/ulm").mkdir()
    cv2.imwrite(str(sub / "c0.jpg"), np.zeros((16, 24, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "ds/masks/val/ulm/c0.png"), np.full((16, 24), 7, np.uint8))
    ds = open_dataset(f"yolo-semantic:{y}", split="val")
    assert [s.name for s in ds] == ["f0", "f1", "c0"] and (ds[2].labels == 0).all()
    (tmp_path / "ds/val.txt").write_text("./images/val/f1.jpg\n./images/val/ulm/c0.jpg\n")
    y.write_text(y.read_text().replace("val: images/val", "val: val.txt").replace("train: images/train",
                                                                                   "train: [images/train, val.txt]"))
    assert [s.name for s in open_dataset(f"yolo-semantic:{y}", split="val")] == ["f1", "c0"]
    assert len(open_dataset(f"yolo-semantic:{y}", split="train")) == 4
