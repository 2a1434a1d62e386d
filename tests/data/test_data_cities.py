"""``cities=`` of the COCO specs (``coco-instance:``, ``coco-panoptic:``, ``panoptic-semantic:``,
``cityscapes-camvid:``): the frames of the named Cityscapes cities only (file names ``CITY_SEQUENCE_FRAME``), so that one city
chooses options and another scores them; names matching no frame are an error listing those present."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.data import open_dataset, write_image
from edgeseg.data.coco_panoptic import Category
from edgeseg.errors import DataError
from edgeseg.structures import PanopticResult, Segment

CATEGORIES = {7: Category(7, "road", False), 26: Category(26, "car", True)}
FRAMES = ("aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019", "tubingen_000003_000019")


@pytest.fixture
def panoptic_val(tmp_path):
    from edgeseg.eval.panoptic_io import PanopticWriter

    with PanopticWriter(tmp_path / "panoptic_val.json", categories=CATEGORIES) as w:
        for k, name in enumerate(FRAMES):
            ids = np.full((8, 8), 7, np.int32)
            ids[: k + 1, :2] = 26000  # frame k: a car of 2 (k + 1) pixels
            write_image(tmp_path / "val" / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
            w.add(k, f"{name}_gt.png", PanopticResult(ids, (Segment(7, 7, False), Segment(26000, 26, True))),
                  image_file_name=f"{name}.png")
    return tmp_path / "panoptic_val.json"


def test_cities_keep_their_frames(panoptic_val):
    assert len(open_dataset(f"coco-panoptic:{panoptic_val}")) == 4
    aachen = open_dataset(f"coco-panoptic:{panoptic_val},cities=aachen")
    assert [s.name for s in aachen] and len(aachen) == 2
    cars = [int((s.panoptic.segment_ids == 26000).sum()) for s in aachen]
    assert cars == [2, 4]  # frames 0 and 1, in the file's order
    two = open_dataset(f"coco-panoptic:{panoptic_val},cities=bremen+tubingen")
    assert [int((s.panoptic.segment_ids == 26000).sum()) for s in two] == [6, 8]
    assert len(open_dataset(f"panoptic-semantic:{panoptic_val},cities=tubingen")) == 1


@pytest.mark.parametrize("cities, match", [("hamburg", "hamburg not among"), ("aachen+hamburg", "hamburg not among"),
                                           ("+", "no name not among")])
def test_unknown_cities_are_named(panoptic_val, cities, match):
    with pytest.raises(DataError, match=match) as e:
        open_dataset(f"coco-panoptic:{panoptic_val},cities={cities}")
    assert "aachen, bremen, tubingen" in e.value.fix


def test_coco_instance_cities(tmp_path):
    """coco-instance: the images of the named cities, each with its own annotations."""
    images, anns = [], []
    for k, name in enumerate(FRAMES):
        write_image(tmp_path / "val" / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
        images.append({"id": k + 1, "file_name": f"{name}.png", "height": 8, "width": 8})
        side = k + 2  # frame k: a car of side k + 2 pixels
        anns.append({"id": 10 + k, "image_id": k + 1, "category_id": 26, "iscrowd": 0, "area": side * side,
                     "bbox": [0, 0, side, side], "segmentation": [[0, 0, side, 0, side, side, 0, side]]})
    (tmp_path / "instances_val.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 26, "name": "car"}]}))
    spec = f"coco-instance:{tmp_path / 'instances_val.json'}"
    assert len(open_dataset(spec)) == 4
    ds = open_dataset(f"{spec},cities=bremen+tubingen")
    assert ds.image_ids == (3, 4)
    assert [[a["id"] for a in ds.annotations(i)] for i in range(len(ds))] == [[12], [13]]
    with pytest.raises(DataError, match="coco-instance: cities=munich: munich not among") as e:
        open_dataset(f"{spec},cities=munich")
    assert "aachen, bremen, tubingen" in e.value.fix
