"""COCO-panoptic truth read as label maps: all its categories (``panoptic-semantic:``, the semantic side of
a fused panoptic model) and Cityscapes' in CamVid's 11 classes (issue 14's cross-city comparison)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.data import IGNORE, open_dataset, write_image
from edgeseg.data.cityscapes_camvid import CITYSCAPES_TO_CAMVID
from edgeseg.data.coco_panoptic import id_to_rgb
from edgeseg.errors import DataError
from edgeseg.structures import CAMVID_CLASSES, default_palette

CATS = [(7, "road", 0), (12, "wall", 0), (22, "terrain", 0), (23, "sky", 0), (25, "rider", 1), (27, "truck", 1),
        (31, "train", 1), (33, "bicycle", 1)]


def _write(root, ids, segments, name="aachen_000000_000019", categories=CATS, colors=None):
    (root / "panoptic_val").mkdir(parents=True, exist_ok=True)
    (root / "val").mkdir(exist_ok=True)
    write_image(root / "panoptic_val" / f"{name}.png", id_to_rgb(ids))
    write_image(root / "val" / f"{name}.png", np.full((*ids.shape, 3), 7, np.uint8))
    data = {"images": [{"id": 1, "file_name": f"{name}.png", "width": ids.shape[1], "height": ids.shape[0]}],
            "annotations": [{"image_id": 1, "file_name": f"{name}.png", "segments_info": [
                {"id": i, "category_id": c, "iscrowd": crowd, "area": int((ids == i).sum())} for i, c, crowd in segments]}],
            "categories": [{"id": i, "name": n, "isthing": t, **({"color": colors[k]} if colors else {})}
                           for k, (i, n, t) in enumerate(categories)]}
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


def test_panoptic_semantic_hand_case(tmp_path):
    """Every category a class, in id order; unlabelled void; a crowd region keeps its category."""
    ids = np.array([[0, 7, 7, 12],
                    [22, 23, 25001, 27000],
                    [31000, 33000, 33001, 27000]], np.int32)
    segments = [(7, 7, 0), (12, 12, 0), (22, 22, 0), (23, 23, 0), (25001, 25, 0), (27000, 27, 0),
                (31000, 31, 0), (33000, 33, 0), (33001, 33, 1)]
    _write(tmp_path, ids, segments, categories=list(reversed(CATS)))  # the JSON's order does not matter: ids do
    ds = open_dataset(f"panoptic-semantic:{tmp_path}", split="val")
    assert ds.classes == ("road", "wall", "terrain", "sky", "rider", "truck", "train", "bicycle")
    v = IGNORE
    assert np.array_equal(ds[0].labels, np.array([[v, 0, 0, 1], [2, 3, 4, 5], [6, 7, 7, 5]], np.uint8))
    assert np.array_equal(ds.palette, default_palette(8))  # no colours in the JSON
    colors = [[10 * k, 0, 255 - k] for k in range(len(CATS))]
    _write(tmp_path, ids, segments, colors=colors)
    assert np.array_equal(open_dataset(f"panoptic-semantic:{tmp_path}", split="val").palette, np.array(colors, np.uint8))


def test_panoptic_semantic_errors(tmp_path):
    with pytest.raises(DataError, match="panoptic-semantic: annotations not found"):
        open_dataset(f"panoptic-semantic:{tmp_path}", split="val")
    _write(tmp_path, np.ones((2, 2), np.int32), [(1, 1, 0)], categories=[(k + 1, f"c{k}", 0) for k in range(256)])
    with pytest.raises(DataError, match="256 categories do not fit uint8 label maps"):
        open_dataset(f"panoptic-semantic:{tmp_path}", split="val")


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


@pytest.mark.data
def test_shared_cities_in_all_categories_agree_with_the_camvid_reading(data_root):
    """``panoptic-semantic:`` on the shared copy: 19 Cityscapes classes; mapped through the issue's table
    its label maps are exactly ``cityscapes-camvid:``'s."""
    root = data_root / "cityscapes_panoptic"
    full = open_dataset(f"panoptic-semantic:{root}", split="val")
    camvid = open_dataset(f"cityscapes-camvid:{root}", split="val")
    assert len(full.classes) == 19 and len(full) == len(camvid) == 224
    lut = np.full(256, IGNORE, np.uint8)
    for i, name in enumerate(full.classes):
        target = CITYSCAPES_TO_CAMVID[name]
        lut[i] = IGNORE if target is None else CAMVID_CLASSES.index(target)
    for i in (0, 111, 223):
        a, b = full[i], camvid[i]
        assert a.name == b.name and np.array_equal(a.image, b.image)
        assert np.array_equal(lut[a.labels], b.labels)
