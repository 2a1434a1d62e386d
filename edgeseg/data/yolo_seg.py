"""Ultralytics YOLO segmentation labels (the ``yolo-seg`` format of YOLOv5/v8/11-seg).

::

    ROOT/images/[SPLIT/]a.jpg     images
    ROOT/labels/[SPLIT/]a.txt     one line per object: ``CLASS x1 y1 x2 y2 ...``, polygon vertices
                                  normalised to [0, 1] by the image width and height
    ROOT/data.yaml                optional: ``names`` (a list, or a mapping id -> name), ``path``,
                                  and ``train``/``val``/``test`` image folders (relative to ``path``)

A label file sits where its image does with the last ``images`` folder replaced by ``labels``
(Ultralytics' rule); an image without one has no objects. Polygons are scaled to pixels and
rasterised like COCO polygons (pycocotools' ``rleFrPoly``, :func:`~edgeseg.data.coco_instances.polygon_to_mask`:
pixels whose centre lies inside), so a YOLO dataset and its COCO export score the same. Category
ids are the YOLO class ids (a whole number, ``2`` or ``2.0``); no object is a crowd; ``area`` is the mask's pixel
count. A polygon whose box (``cx, cy, w, h``) leaves ``0..1`` is refused, naming the file and line, as Ultralytics
refuses it (pixel coordinates, typically); vertices a little past the image edge inside that rule are clipped. Without
``names`` the classes are called ``"0"``, ``"1"``, ... up to the largest id in the labels.
``open_dataset("yolo-seg:ROOT[,names=FILE]")`` or ``"yolo-seg:ROOT/data.yaml"`` opens it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..structures import ImageShape
from .base import DATASETS, check_options
from .coco_instances import InstanceDataset, InstanceSample, InstanceTruth, mask_boxes, polygon_to_mask
from .io import IMAGE_SUFFIXES, read_image, read_text


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""


def parse_simple_yaml(text: str) -> dict[str, Any]:
    """The subset of YAML a ``data.yaml`` uses: top-level ``key: value``, and ``names`` as an
    inline list/mapping or a block list (``- a``) / mapping (``0: a``). For when PyYAML is absent."""
    out: dict[str, Any] = {}
    key = None
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        if not line[0].isspace() and not line.startswith("-"):
            k, _, v = line.partition(":")
            key, v = k.strip(), v.strip()
            if v.startswith("[") and v.endswith("]"):
                out[key] = [_scalar(x) for x in v[1:-1].split(",") if x.strip()]
            elif v.startswith("{") and v.endswith("}"):
                out[key] = {_scalar(a): _scalar(b) for a, _, b in (x.partition(":") for x in v[1:-1].split(",") if x.strip())}
            else:
                out[key] = _scalar(v) if v else None
            continue
        item = line.strip()
        if key is None:
            continue
        if item.startswith("-"):
            out[key] = (out[key] if isinstance(out.get(key), list) else []) + [_scalar(item[1:])]
        else:
            a, _, b = item.partition(":")
            out[key] = {**(out[key] if isinstance(out.get(key), dict) else {}), _scalar(a): _scalar(b)}  # not | (3.9)
    return out


def read_data_yaml(path: Path) -> dict[str, Any]:
    """A ``data.yaml`` as a dict (PyYAML when installed, else :func:`parse_simple_yaml`)."""
    text = read_text(path, "data file", "a YAML file naming the splits' folders and the class names (Ultralytics')")
    try:
        import yaml
    except ImportError:
        data = parse_simple_yaml(text)
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"cannot parse {path}: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a YOLO data.yaml (expected a mapping with 'names')")
    return data


def _names(raw: Any, where: Path) -> tuple[str, ...]:
    if isinstance(raw, (list, tuple)):
        return tuple(str(n) for n in raw)
    if isinstance(raw, dict):
        try:
            ids = {int(k): str(v) for k, v in raw.items()}
        except ValueError:
            raise DataError(f"{where}: 'names' keys must be class ids 0, 1, ...") from None
        if sorted(ids) != list(range(len(ids))):
            raise DataError(f"{where}: 'names' must number the classes 0..{len(ids) - 1} without gaps")
        return tuple(ids[i] for i in range(len(ids)))
    raise DataError(f"{where}: 'names' must be a list or a mapping id -> name")


def label_path(image: Path) -> Path:
    """Ultralytics' ``img2label_paths``: the last ``images`` folder becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_polygons(path: Path, num_classes: int | None) -> list[tuple[int, np.ndarray]]:
    """``(class id, float64 [K, 2] normalised xy)`` per line of a label file."""
    out = []
    text = read_text(path, "YOLO label file", "one polygon per line: CLASS x1 y1 x2 y2 ... (normalised coordinates)")
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{n}"
        try:
            values = np.array([float(v) for v in fields], np.float64)
        except ValueError:
            bad = next(v for v in fields if not _is_number(v))
            raise DataError(f"{where}: {bad[:20]!r} is not a number (a line is 'CLASS x1 y1 x2 y2 ...')",
                            fix="fix or remove that line") from None
        if not np.isfinite(values).all():
            raise DataError(f"{where}: a value is not finite ({line.strip()[:60]!r})", fix="fix or remove that line")
        if values[0] != int(values[0]):  # Ultralytics reads the class as a float: 2.0 is class 2
            raise DataError(f"{where}: class {fields[0]!r} is not a whole number", fix="the first value is the class id")
        cls, xy = int(values[0]), values[1:]
        if len(xy) == 4:
            raise DataError(f"{where}: a box label (class cx cy w h), not a polygon",
                            fix="yolo-seg needs segmentation labels (class x1 y1 x2 y2 x3 y3 ...)")
        if len(xy) % 2 or len(xy) < 6:
            raise DataError(f"{where}: a polygon needs at least 3 (x, y) points, got {len(xy)} numbers")
        if cls < 0 or (num_classes is not None and cls >= num_classes):
            raise DataError(f"{where}: class {cls} is outside 0..{(num_classes or 1) - 1} of the dataset's names",
                            fix="class ids count from 0 in the order of data.yaml's names (or names=FILE); "
                                "add the class there or fix the label")
        xy = xy.reshape(-1, 2)
        lo, hi = xy.min(0), xy.max(0)
        box = np.concatenate([(lo + hi) / 2, hi - lo])  # Ultralytics' check: the polygon's box as cx, cy, w, h
        if box.min() < 0 or box.max() > 1:
            raise DataError(f"{where}: coordinates are not normalised to 0..1 (x {lo[0]:g}..{hi[0]:g}, "
                            f"y {lo[1]:g}..{hi[1]:g})",
                            fix="divide x by the image width and y by its height (Ultralytics refuses this label too)")
        out.append((cls, xy))
    return out


class YoloSeg(InstanceDataset):
    """Images with YOLO-seg polygon labels: ``YoloSeg(images_dir, names=None)[i] -> InstanceSample``.

    Images are sorted by path; image ids are 1, 2, ... in that order."""

    def __init__(self, images_dir: str | Path, names: tuple[str, ...] | None = None):
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise DataError(f"yolo-seg: images folder {self.images_dir} not found",
                            fix="give ROOT holding images/ and labels/, or its data.yaml")
        self.image_paths = sorted(p for p in self.images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.image_paths:
            raise DataError(f"yolo-seg: no images in {self.images_dir}", fix=f"images end in {', '.join(IMAGE_SUFFIXES)}")
        if names is None:
            top = -1
            for p in self.image_paths:
                lab = label_path(p)
                if lab.is_file():
                    top = max([top] + [c for c, _ in read_polygons(lab, None)])
            names = tuple(str(i) for i in range(top + 1)) or ("0",)
        self.classes = tuple(names)
        self.category_ids = tuple(range(len(self.classes)))

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> InstanceSample:  # type: ignore[override]
        n = len(self)
        i = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"YoloSeg index {index} out of range (len {n})")
        path = self.image_paths[i]
        image = read_image(path)
        h, w = image.shape[:2]
        lab = label_path(path)
        polys = read_polygons(lab, len(self.classes)) if lab.is_file() else []
        masks = np.zeros((len(polys), h, w), bool)
        for k, (_, xy) in enumerate(polys):
            masks[k] = polygon_to_mask(xy * (w, h), h, w)
        cls = np.array([c for c, _ in polys], np.int32)
        truth = InstanceTruth(
            masks=masks, classes=cls, category_ids=cls.astype(np.int64), boxes=mask_boxes(masks),
            iscrowd=np.zeros(len(polys), bool), area=np.array([np.count_nonzero(m) for m in masks], np.float64),
            image_shape=ImageShape(h, w), ids=np.arange(1, len(polys) + 1, dtype=np.int64),
        )
        return InstanceSample(path.stem, i + 1, path, truth, preloaded=image)


def _from_yaml(path: Path, split: str) -> tuple[Path, tuple[str, ...]]:
    data = read_data_yaml(path)
    if "names" not in data:
        raise DataError(f"{path} has no 'names'", fix="list the class names under names:")
    names = _names(data["names"], path)
    root = Path(str(data.get("path") or path.parent))
    if not root.is_absolute():
        root = path.parent / root
    rel = data.get(split)
    if rel is None:
        raise DataError(f"{path} has no {split!r} split", fix=f"add '{split}: images/{split}' or pick --split")
    if not isinstance(rel, str):
        raise DataError(f"{path}: {split!r} must be one image folder")
    images = root / rel
    if images.suffix == ".txt":
        raise DataError(f"{path}: {split!r} is an image list file; yolo-seg reads an image folder")
    return images, names


@DATASETS.register("yolo-seg")
def _open_yolo_seg(args: list[str], options: dict[str, str], split: str) -> YoloSeg:
    check_options("yolo-seg", options, ("names",))
    if len(args) != 1:
        raise DataError("yolo-seg spec takes one folder (or its data.yaml)", fix="write yolo-seg:ROOT or yolo-seg:ROOT/data.yaml")
    root = Path(args[0])
    names = None
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        images, names = _from_yaml(root, split)
    elif (root / "data.yaml").is_file():
        images, names = _from_yaml(root / "data.yaml", split)
    else:
        images = root / "images" / split if (root / "images" / split).is_dir() else root / "images"
    if "names" in options:
        from .folder import read_class_names

        names = tuple(read_class_names(options["names"]))
    return YoloSeg(images, names)
