"""Cityscapes street frames as a semantic dataset in CamVid's 11 classes (``cityscapes-camvid:``).

The panoptic ground truth of ``../shared/data/cityscapes_panoptic`` (COCO-panoptic PNG + JSON, 19
Cityscapes categories) becomes a CamVid label map, so that a CamVid model can be scored on street
frames of other cities and pre-trained on them (issue 14). The mapping, by Cityscapes category name:

================  ============  ================  ============
Cityscapes        CamVid        Cityscapes        CamVid
================  ============  ================  ============
road              Road          sky               Sky
sidewalk          Pavement      person            Pedestrian
building, wall    Building      rider             Bicyclist
fence             Fence         car, truck, bus   Car
pole              Pole          motorcycle        Bicyclist
traffic light     SignSymbol    bicycle           Bicyclist
traffic sign      SignSymbol    terrain, train    void (ignored)
vegetation        Tree          unlabelled        void (ignored)
================  ============  ================  ============

Crowd ("group") regions keep their category, as Cityscapes' own semantic label images do. A
category the table does not name is void. Images keep their size (640x320 in the shared data): the
model's input resize (or the trainer's) maps them to its own.

``cityscapes-camvid:JSON|DIR[,images=DIR]``: ``DIR`` holds ``panoptic_{split}.json``; split ``train``
is the 13 training cities, ``val`` the two unseen ones (darmstadt, tubingen).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..structures import CAMVID_CLASSES, CAMVID_PALETTE
from .base import DATASETS, IGNORE, Sample, SegmentationDataset

CITYSCAPES_TO_CAMVID: dict[str, str | None] = {
    "road": "road", "sidewalk": "pavement", "building": "building", "wall": "building", "fence": "fence",
    "pole": "pole", "traffic light": "sign_symbol", "traffic sign": "sign_symbol", "vegetation": "tree",
    "terrain": None, "sky": "sky", "person": "pedestrian", "rider": "bicyclist", "car": "car", "truck": "car",
    "bus": "car", "train": None, "motorcycle": "bicyclist", "bicycle": "bicyclist",
}
"""Cityscapes category name -> CamVid class name (None: void), as issue 14 defines the comparison."""


def camvid_lut(categories: dict) -> dict[int, int]:
    """Category id -> CamVid class index for the categories of a panoptic JSON (void ones left out)."""
    out = {}
    for cid, cat in categories.items():
        target = CITYSCAPES_TO_CAMVID.get(cat.name)
        if target is not None:
            out[int(cid)] = CAMVID_CLASSES.index(target)
    return out


class CityscapesCamVid(SegmentationDataset):
    """A :class:`~edgeseg.data.coco_panoptic.CocoPanoptic` dataset read as CamVid label maps."""

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE

    def __init__(self, panoptic):
        self.panoptic = panoptic
        self.lut = camvid_lut(panoptic.categories)
        if not self.lut:
            names = ", ".join(sorted(c.name for c in panoptic.categories.values()))
            raise DataError(f"{panoptic.json_path}: no category maps onto CamVid's classes (it has {names})",
                            fix="cityscapes-camvid: reads Cityscapes' categories (road, car, ...); "
                                "use coco-panoptic: for other datasets")

    def __len__(self) -> int:
        return len(self.panoptic)

    def _load(self, index: int) -> Sample:
        s = self.panoptic[index]
        ids = s.panoptic.segment_ids
        lut = np.full(int(ids.max(initial=0)) + 1, IGNORE, np.uint8)
        for seg in s.panoptic.segments:
            if seg.id < len(lut):
                lut[seg.id] = self.lut.get(seg.category_id, IGNORE)
        return Sample(s.image(), lut[ids], s.name)


@DATASETS.register("cityscapes-camvid")
def _open_cityscapes_camvid(args: list[str], options: dict[str, str], split: str) -> CityscapesCamVid:
    from .coco_panoptic import open_coco_panoptic

    if not args:  # "cityscapes-camvid:" -> the shared data folder's copy
        from ..paths import data_root

        root = data_root()
        if root is None:
            raise DataError("cityscapes-camvid: no root given and no data folder found",
                            fix="write cityscapes-camvid:PATH/TO/cityscapes_panoptic or set EDGESEG_DATA")
        args = [str(root / "cityscapes_panoptic")]
    return CityscapesCamVid(open_coco_panoptic("cityscapes-camvid", args, options, split))
