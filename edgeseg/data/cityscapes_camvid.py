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

from ..errors import DataError
from ..structures import CAMVID_CLASSES, CAMVID_PALETTE
from .base import DATASETS
from .panoptic_semantic import PanopticSemantic, open_panoptic_folder

CITYSCAPES_TO_CAMVID: dict[str, str | None] = {
    "road": "road", "sidewalk": "pavement", "building": "building", "wall": "building", "fence": "fence",
    "pole": "pole", "traffic light": "sign_symbol", "traffic sign": "sign_symbol", "vegetation": "tree",
    "terrain": None, "sky": "sky", "person": "pedestrian", "rider": "bicyclist", "car": "car", "truck": "car",
    "bus": "car", "train": None, "motorcycle": "bicyclist", "bicycle": "bicyclist",
}
"""Cityscapes category name -> CamVid class name (None: void), as issue 14 defines the comparison."""


def camvid_lut(categories: dict) -> dict[int, int]:
    """Category id -> CamVid class index for the categories of a panoptic JSON, or for ids mapped to Cityscapes
    class names (``cityscapes:``'s training ids), void ones left out."""
    out = {}
    for cid, cat in categories.items():
        target = CITYSCAPES_TO_CAMVID.get(getattr(cat, "name", cat))
        if target is not None:
            out[int(cid)] = CAMVID_CLASSES.index(target)
    return out


class CityscapesCamVid(PanopticSemantic):
    """A :class:`~edgeseg.data.coco_panoptic.CocoPanoptic` dataset read as CamVid label maps."""

    def __init__(self, panoptic):
        lut = camvid_lut(panoptic.categories)
        if not lut:
            names = ", ".join(sorted(c.name for c in panoptic.categories.values()))
            raise DataError(f"{panoptic.json_path}: no category maps onto CamVid's classes (it has {names})",
                            fix="cityscapes-camvid: reads Cityscapes' categories (road, car, ...); "
                                "use panoptic-semantic: (all its categories) or coco-panoptic: for other datasets")
        super().__init__(panoptic, lut, CAMVID_CLASSES, CAMVID_PALETTE)


@DATASETS.register("cityscapes-camvid")
def _open_cityscapes_camvid(args: list[str], options: dict[str, str], split: str) -> CityscapesCamVid:
    return CityscapesCamVid(open_panoptic_folder("cityscapes-camvid", args, options, split))
