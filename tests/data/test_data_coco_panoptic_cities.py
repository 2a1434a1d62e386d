"""``cities=`` of the COCO-panoptic specs (``coco-panoptic:``, ``panoptic-semantic:``, ``cityscapes-camvid:``):
the frames of the named Cityscapes cities only (file names ``CITY_SEQUENCE_FRAME``), so that one city
chooses options and another scores them; names matching no frame are an error listing those present."""
from __future__ import annotations

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
