"""COCO-panoptic truth read as semantic label maps (``panoptic-semantic:``).

Every pixel of a segment takes its category's class; class ``i`` is the ``i``-th category by id
(:attr:`~edgeseg.data.coco_panoptic.CocoPanoptic.classes`, the order ``coco-panoptic:`` and the
panoptic trainer use), so a semantic model trained on it names its classes as the panoptic
dataset's categories do, and ``edgeseg fuse`` pairs it with an instance model of the same things
by name. Unlabelled pixels (id 0) are void. Crowd regions keep their category, as Cityscapes' own
semantic label images do. The palette is the JSON's category colours (when it has none,
:func:`~edgeseg.structures.default_palette`).

``panoptic-semantic:JSON|DIR[,images=DIR]``: as ``coco-panoptic:`` (``DIR`` holds
``panoptic_{split}.json``, the PNGs in the folder named like the JSON, the images in the folder
named after the split unless ``images=DIR``). ``cityscapes-camvid:`` is the same reading with its
categories mapped onto CamVid's classes (:mod:`edgeseg.data.cityscapes_camvid`).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..structures import default_palette
from .base import DATASETS, IGNORE, Sample, SegmentationDataset


class PanopticSemantic(SegmentationDataset):
    """A :class:`~edgeseg.data.coco_panoptic.CocoPanoptic` dataset read as label maps: ``lut`` maps a
    category id to a class index (a category it leaves out is void); ``classes`` and ``palette``
    default to the dataset's categories (every one a class, by id) and their colours."""

    def __init__(self, panoptic, lut: dict[int, int] | None = None,
                 classes: tuple[str, ...] | None = None, palette: np.ndarray | None = None):
        self.panoptic = panoptic
        ids = tuple(panoptic.category_ids)
        if len(ids) > IGNORE:
            raise DataError(f"{panoptic.json_path}: {len(ids)} categories do not fit uint8 label maps "
                            f"(at most {IGNORE}; {IGNORE} is void)", fix="train on fewer categories")
        self.lut = {cid: i for i, cid in enumerate(ids)} if lut is None else dict(lut)
        self.classes = tuple(panoptic.classes) if classes is None else tuple(classes)
        if palette is None:
            palette = np.array([panoptic.categories[c].color for c in ids], np.uint8).reshape(-1, 3)
            if not palette.any():  # no colours in the JSON
                palette = default_palette(len(ids))
        self.palette = palette

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


def open_panoptic_folder(kind: str, args: list[str], options: dict[str, str], split: str):
    """The COCO-panoptic dataset of a ``KIND:[JSON|DIR][,images=DIR]`` spec; no path: the data
    folder's ``cityscapes_panoptic`` (``EDGESEG_DATA``)."""
    from .coco_panoptic import open_coco_panoptic

    if not args:
        from ..paths import data_root

        root = data_root()
        if root is None:
            raise DataError(f"{kind}: no root given and no data folder found",
                            fix=f"write {kind}:PATH/TO/panoptic_{split}.json (or its folder) or set EDGESEG_DATA")
        args = [str(root / "cityscapes_panoptic")]
    return open_coco_panoptic(kind, args, options, split)


@DATASETS.register("panoptic-semantic")
def _open_panoptic_semantic(args: list[str], options: dict[str, str], split: str) -> PanopticSemantic:
    return PanopticSemantic(open_panoptic_folder("panoptic-semantic", args, options, split))
