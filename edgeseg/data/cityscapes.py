"""Cityscapes in the layout its download has (``cityscapes:ROOT``): the frames and fine labels driving teams keep.

``ROOT/leftImg8bit/SPLIT/CITY/CITY_SEQ_FRAME_leftImg8bit.png`` pairs with
``ROOT/gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png`` (or ``_labelTrainIds.png``, what cityscapesScripts'
``createTrainIdLabelImgs`` writes, when no ``_labelIds.png`` is there; ``gt=gtCoarse`` reads the coarse labels).
Label ids become the 19 training classes by Cityscapes' own table (:data:`TRAIN_IDS`, as cityscapesScripts'
``labels.py`` gives it: ``trainId``; every label with ``ignoreInEval`` is void), named and coloured as there, so
``edgeseg eval`` scores what cityscapesScripts' ``evalPixelLevelSemanticLabeling`` scores (tested against it).
``classes=camvid`` maps them onto CamVid's 11 classes instead, with the table of ``cityscapes-camvid:`` (issue 14's
comparison on other cities). ``cities=A+B`` keeps those cities' frames. Frames keep their size (2048x1024); the
model's input resize maps them to its own.

Cityscapes' ``test`` split has no public labels (its label files are all void): its frames serve calibration,
not scoring.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..structures import CAMVID_CLASSES, CAMVID_PALETTE
from .base import DATASETS, IGNORE, Sample, SegmentationDataset, check_options, keep_cities
from .cityscapes_camvid import camvid_lut
from .io import read_image, read_label

#: Cityscapes label id -> training id (the 19 evaluated classes); every other id (0-6, 9, 10, 14-16, 18, 29, 30)
#: is void, as ``ignoreInEval`` makes it in cityscapesScripts' ``labels.py``
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
             27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)
GT_FOLDERS = ("gtFine", "gtCoarse")
SUFFIXES = ("labelIds", "labelTrainIds")
log = logging.getLogger(__name__)


def _lut(from_ids: bool, classes: str) -> np.ndarray:
    """uint8 -> uint8 table: a label file's values (label ids, or training ids) -> the dataset's classes."""
    lut = np.full(256, IGNORE, np.uint8)
    if from_ids:
        for label_id, train_id in TRAIN_IDS.items():
            lut[label_id] = train_id
    else:
        lut[:len(CITYSCAPES_CLASSES)] = np.arange(len(CITYSCAPES_CLASSES))
    if classes == "camvid":
        to_camvid = np.full(256, IGNORE, np.uint8)
        for train_id, camvid in camvid_lut(dict(enumerate(CITYSCAPES_CLASSES))).items():
            to_camvid[train_id] = camvid
        lut = to_camvid[lut]
    return lut


class Cityscapes(SegmentationDataset):
    """``Cityscapes(root, split="val")``: the split's frames and labels, in Cityscapes' 19 classes or CamVid's 11."""

    def __init__(self, root: str | Path, split: str = "val", *, classes: str = "cityscapes", gt: str = "gtFine",
                 cities: str | None = None):
        if classes not in ("cityscapes", "camvid"):
            raise DataError(f"cityscapes: classes={classes} is not one of cityscapes, camvid",
                            fix="classes=cityscapes (the 19 training classes) or classes=camvid (CamVid's 11)")
        if gt not in GT_FOLDERS:
            raise DataError(f"cityscapes: gt={gt} is not one of {', '.join(GT_FOLDERS)}")
        self.root = Path(root)
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / gt / split
        for folder, what in ((self.root, "folder"), (image_dir, "frames folder"), (label_dir, "labels folder")):
            if not folder.is_dir():
                present = sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) if folder.parent.is_dir() else []
                raise DataError(f"cityscapes: {what} {folder} not found" + (f" (there: {', '.join(present)})" if present else ""),
                                fix="give the folder holding leftImg8bit/ and gtFine/ (as Cityscapes' download unpacks: "
                                    "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip), and a split it has")
        frames = sorted(image_dir.glob("*/*_leftImg8bit.png"))
        if not frames:
            raise DataError(f"cityscapes: no *_leftImg8bit.png frames in {image_dir}/CITY/",
                            fix="Cityscapes' frames are leftImg8bit/SPLIT/CITY/CITY_SEQ_FRAME_leftImg8bit.png")
        if cities:
            frames = keep_cities(frames, lambda p: p.name, cities, "cityscapes", str(image_dir))
        self.pairs, missing = [], []
        for f in frames:
            stem = f.name[: -len("_leftImg8bit.png")]
            found = [(label_dir / f.parent.name / f"{stem}_{gt}_{s}.png", s) for s in SUFFIXES]
            label = next((p for p, _ in found if p.is_file()), None)
            if label is None:
                missing.append(found[0][0])
                continue
            self.pairs.append((f, label))
        if missing:
            raise DataError(f"cityscapes: {len(missing)} frame(s) have no label file, e.g. {missing[0]}",
                            fix=f"unpack {gt}_trainvaltest.zip into the same folder (or run cityscapesScripts' "
                                "createTrainIdLabelImgs for _labelTrainIds.png)")
        if split == "test":
            log.warning("cityscapes: the test split's labels are not public (every pixel void): its frames serve "
                        "calibration; scores on it are n/a (score on val)")
        self.split, self.classes_kind = split, classes
        self.classes = CITYSCAPES_CLASSES if classes == "cityscapes" else CAMVID_CLASSES
        self.palette = CITYSCAPES_PALETTE if classes == "cityscapes" else CAMVID_PALETTE
        self._luts = {True: _lut(True, classes), False: _lut(False, classes)}

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> Sample:
        img_path, label_path = self.pairs[index]
        image = read_image(img_path)
        raw = read_label(label_path)
        if raw.shape != image.shape[:2]:
            raise DataError(f"cityscapes: {label_path} is {list(raw.shape)} but its frame {img_path} is "
                            f"{list(image.shape[:2])}", fix="labels must have their frame's height and width")
        return Sample(image, self._luts[label_path.name.endswith("_labelIds.png")][raw],
                      img_path.name[: -len("_leftImg8bit.png")])


@DATASETS.register("cityscapes")
def _open_cityscapes(args: list[str], options: dict[str, str], split: str) -> Cityscapes:
    check_options("cityscapes", options, ("classes", "gt", "cities", "split"))
    if len(args) != 1:
        raise DataError("cityscapes spec takes one folder (the one holding leftImg8bit/ and gtFine/)",
                        fix="write cityscapes:PATH[,classes=camvid][,cities=frankfurt+lindau]")
    return Cityscapes(args[0], options.get("split", split), classes=options.get("classes", "cityscapes"),
                      gt=options.get("gt", "gtFine"), cities=options.get("cities"))


__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "TRAIN_IDS", "Cityscapes"]
