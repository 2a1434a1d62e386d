"""Cityscapes panoptic truth read in CamVid's 11 classes (issue 14's cross-city comparison)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.data import IGNORE, open_dataset, write_image
from edgeseg.data.cityscapes_camvid import CITYSCAPES_TO_CAMVID
from edgeseg.data.coco_panoptic import id_to_rgb
from edgeseg.errors import DataError
from edgeseg.structures import CAMVID_CLASSES

CATS = [(7, "road", 0), (12, "wall", 0), (22, "terrain", 0), (23, "sky", 0), (25, "rider", 1), (27, "truck", 1),
        (31, "train", 1), (33, "bicycle", 1)]


def _write(root, ids, segments, name="aachen_000000_000019", categories=CATS):
    (root / "panoptic_val").mkdir(parents=True, exist_ok=True)
    (root / "val").mkdir(exist_ok=True)
    write_image(root / "panoptic_val" / f"{name}.png", id_to_rgb(ids))
    write_image(root / "val" / f"{name}.png", np.full((*ids.shape, 3), 7, np.uint8))
    data = {"images": [{"id": 1, "file_name": f"{name}.png", "width": ids.shape[1], "height": ids.shape[0]}],
            "annotations": [{"image_id": 1, "file_name": f"{name}.png", "segments_info": [
                {"id": i, "category_id": c, "iscrowd": crowd, "area": int((ids == i).sum())} for i, c, crowd in segments]}],
            "categories": [{"id": i, "name": n, "isthing": t} for i, n, t in categories]}
    (root / "panoptic_val.json").write_text(json.dumps(data))


def test_hand_case(tmp_path):
    ids = np.array([[0, 7, 7, 12],
                    [22, 23, 25001, 27000],
                    [31000, 33000, 33001, 27000]], np.int32)
    # 33001 is a crowd ("group") region: it keeps its class, as Cityscapes' semantic labels do
    _write(tmp_path, ids, [(7, 7, 0), (12, 12, 0), (22, 22, 0), (23, 23, 0), (25001, 25, 0), (27000, 27, 0),
                           (31000, 31, 0), (33000, 33, 0), (33001, 33, 1)])
    ds = open_dataset(f"cityscapes-camvid:{tmp_path}", split="val")
    assert ds.classes == CAMVID_CLASSES and len(ds) == 1
    c = CAMVID_CLASSES.index
    v = IGNORE
    expected = np.array([[v, c("road"), c("road"), c("building")],          # void, road, road, wall -> building
                         [v, c("sky"), c("bicyclist"), c("car")],            # terrain void, rider -> bicyclist, truck -> car
                         [v, c("bicyclist"), c("bicyclist"), c("car")]], np.uint8)  # train void, bicycle (+crowd)
    s = ds[0]
    assert s.name == "aachen_000000_000019" and s.image.shape == (3, 4, 3)
    assert np.array_equal(s.labels, expected)


def test_mapping_is_the_issues():
    """Issue 14: terrain and train void; wall -> building; truck, bus -> car; rider, bicycle, motorcycle -> bicyclist."""
    assert {k for k, v in CITYSCAPES_TO_CAMVID.items() if v is None} == {"terrain", "train"}
    assert [k for k, v in CITYSCAPES_TO_CAMVID.items() if v == "car"] == ["car", "truck", "bus"]
    assert sorted(k for k, v in CITYSCAPES_TO_CAMVID.items() if v == "bicyclist") == ["bicycle", "motorcycle", "rider"]
    assert set(CITYSCAPES_TO_CAMVID.values()) - {None} == set(CAMVID_CLASSES)  # every CamVid class is reachable


def test_errors(tmp_path):
    with pytest.raises(DataError, match="annotations not found"):
        open_dataset(f"cityscapes-camvid:{tmp_path}", split="val")
    _write(tmp_path, np.ones((2, 2), np.int32), [(1, 1, 0)], categories=[(1, "person-coco", 1)])
    with pytest.raises(DataError, match="no category maps onto CamVid"):
        open_dataset(f"cityscapes-camvid:{tmp_path}", split="val")


@pytest.mark.data
def test_shared_cities(data_root):
    """The shared copy: 13 training cities (2,074 frames), 2 unseen val cities (224); labels only 0..10 or void."""
    train = open_dataset("cityscapes-camvid:", split="train")
    val = open_dataset(f"cityscapes-camvid:{data_root / 'cityscapes_panoptic'}", split="val")
    assert (len(train), len(val)) == (2074, 224)
    s = val[0]
    assert s.image.shape == (320, 640, 3)
    assert set(np.unique(s.labels)) <= set(range(11)) | {IGNORE}
    assert (s.labels == CAMVID_CLASSES.index("road")).mean() > 0.2  # a street frame: road is the largest class
