"""COCO-panoptic ground truth (Kirillov et al., "Panoptic Segmentation", CVPR 2019; COCO format).

``panoptic_*.json`` lists ``categories`` (id, name, isthing), ``images`` (id, file_name) and, per
image, an annotation with its PNG's ``file_name``, its ``image_id`` and its ``segments_info`` (id,
category_id, iscrowd, area, bbox); the PNG encodes each pixel's segment id as
``R + 256 * G + 256**2 * B`` (0 = unlabelled / void), panopticapi's ``rgb2id``.

``open_dataset("coco-panoptic:PATH/panoptic_val.json[,images=DIR]")`` opens it as panopticapi's
``pq_compute`` finds the files: the PNGs in the folder named like the JSON without its extension
(``panoptic_val/``); the images in the folder named after the split, the JSON's stem after
``panoptic_`` (``val/``), beside the JSON or beside its folder (COCO's ``annotations/`` layout),
unless ``images=DIR`` is given. An annotation whose ``image_id`` has no ``images`` entry takes the
image named like its PNG (any image suffix). Every PNG and image is checked up front.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, InputError
from ..structures import PanopticResult, Segment
from .base import DATASETS, ImageLookup, coco_image_dir, coco_spec_json, keep_cities
from .io import IMAGE_SUFFIXES, read_image


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class PanopticSample:
    """One image's panoptic truth. ``crowd_ids`` are the segment ids marked ``iscrowd``;
    ``image_id`` and ``file_name`` (the PNG's) are the annotation's, as a prediction file repeats them."""

    name: str
    image_path: Path | None
    panoptic: PanopticResult
    crowd_ids: frozenset[int] = frozenset()
    image_id: int | str = -1
    file_name: str = ""
    preloaded: np.ndarray | None = None  # a generated frame (synthetic-panoptic): no file to read

    def image(self) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]``, checked to be the size of the ground truth."""
        if self.preloaded is not None:
            return self.preloaded
        if self.image_path is None:
            raise DataError(f"panoptic sample {self.name!r} has no image",
                            fix="open the dataset with an image folder (images=DIR) holding the images the JSON's "
                                "'images' list names, or named like the PNGs")
        if not self.image_path.is_file():
            raise DataError(f"image {self.image_path} of {self.name!r} not found", fix="check the images=DIR folder")
        img = read_image(self.image_path)
        h, w = self.panoptic.segment_ids.shape
        if img.shape[:2] != (h, w):
            raise DataError(f"image {self.image_path} is {img.shape[1]}x{img.shape[0]} but its panoptic PNG is {w}x{h}",
                            fix="use the images the annotations were made for (same size)")
        return img


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB -> ``int32 [H, W]`` ids, ``R + 256 G + 256^2 B`` (panopticapi's rgb2id)."""
    c = rgb.astype(np.int32)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def id_to_rgb(ids: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """``[H, W]`` ids in ``0 .. 256^3 - 1`` -> ``uint8 [H, W, 3]`` RGB (panopticapi's id2rgb; ``bgr``: in OpenCV's
    order, for its encoders). Ids beyond keep their low three bytes. 0.15 ms a 1080p map (an ``int32`` one is read in
    place); the three byte planes sliced out by numpy took 10-19 ms (session 54)."""
    import cv2

    ids = np.asarray(ids)
    if ids.dtype.str in ("<i4", "<u4") and ids.flags.c_contiguous:  # little-endian 32-bit already: read in place
        u = ids.view("<u4")
    else:
        u = np.ascontiguousarray(ids, dtype="<u4")  # little-endian bytes: R = id % 256, G, B, then a 4th byte
    b = u.reshape(u.shape or (1,)).view(np.uint8).reshape(*u.shape, 4)  # (a 0-d array has no bytes view)
    if u.ndim != 2 or not u.size:  # OpenCV converts images: other shapes by numpy
        return np.ascontiguousarray(b[..., 2::-1] if bgr else b[..., :3])
    return cv2.cvtColor(b, cv2.COLOR_RGBA2BGR if bgr else cv2.COLOR_RGBA2RGB)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """A COCO-panoptic PNG as ``int32 [H, W]`` segment ids."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"panoptic PNG not found: {p}", fix="check the PNG folder (named like the JSON without .json)")
    return rgb_to_id(read_image(p))


def read_panoptic_json(path: str | Path, keys: Sequence[str] = ("annotations", "categories"),
                       what: str = "COCO panoptic annotations") -> dict:
    """A COCO-panoptic JSON file as a dict holding ``keys``; a missing, unreadable or foreign file is a
    :class:`DataError` naming it (``what``: how the message calls the file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}", fix="give the path of a panoptic_*.json file")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(data, dict) or not set(keys) <= set(data):
        raise DataError(f"{path} is not a COCO panoptic file",
                        fix=f"it needs {' and '.join(repr(k) for k in keys)} lists (and 'images')")
    return data


def read_categories(data: dict[str, Any], where: str) -> dict[int, Category]:
    """The ``categories`` of a COCO-panoptic JSON, id -> :class:`Category`, in the file's order."""
    try:
        cats = [Category(int(c["id"]), str(c["name"]), bool(c.get("isthing", 0)), tuple(c.get("color", (0, 0, 0))))
                for c in data["categories"]]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: malformed categories ({type(e).__name__}: {e})",
                        fix="each category needs id, name and isthing") from None
    out = {c.id: c for c in cats}
    if len(out) != len(cats):
        raise DataError(f"{where}: repeated category ids")
    return out


class CocoPanoptic(Sequence):
    """COCO-panoptic annotations: ``CocoPanoptic(json_path, png_dir=None, image_dir=None)[i] -> PanopticSample``.

    ``png_dir`` defaults to the JSON's path without ``.json``. ``categories``: id -> :class:`Category`
    in the file's order; ``category_ids`` / ``classes``: sorted by id. ``check_files`` checks up front
    that every PNG (and, with ``image_dir``, every image) exists."""

    task = "panoptic"

    def __init__(self, json_path: str | Path, png_dir: str | Path | None = None, image_dir: str | Path | None = None,
                 *, check_files: bool = False):
        self.json_path = Path(json_path)
        self.png_dir = Path(png_dir) if png_dir is not None else self.json_path.with_suffix("")
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self._find = ImageLookup(self.image_dir) if image_dir is not None else None
        data = self._read_json()
        where = str(self.json_path)
        self.categories = read_categories(data, where)
        self.category_ids = tuple(sorted(self.categories))
        self.classes = tuple(self.categories[c].name for c in self.category_ids)
        try:
            self._images = {im["id"]: str(im["file_name"]) for im in data.get("images") or []}
        except (KeyError, TypeError) as e:
            raise DataError(f"{where}: malformed images ({type(e).__name__}: {e})",
                            fix="each image needs id and file_name") from None
        self.annotations = list(data["annotations"])
        for n, ann in enumerate(self.annotations):
            self._check_annotation(ann, n)
        if check_files:
            self._check_files()

    def _read_json(self) -> dict:
        return read_panoptic_json(self.json_path, ("annotations", "categories"))

    def _check_annotation(self, ann: Any, n: int) -> None:
        what = f"{self.json_path}: annotation #{n}"
        if not isinstance(ann, dict) or not {"file_name", "segments_info"} <= set(ann):
            raise DataError(f"{what} is malformed", fix="each annotation needs image_id, file_name and segments_info")
        if not isinstance(ann["file_name"], str) or not ann["file_name"].strip():
            raise DataError(f"{what}: its file_name is {ann['file_name']!r}, not a PNG's name",
                            fix="file_name names the annotation's PNG in the folder named like the JSON")
        if not isinstance(ann["segments_info"], list):
            raise DataError(f"{what} ({ann['file_name']}): segments_info is a {type(ann['segments_info']).__name__}, "
                            "not a list", fix="segments_info lists the image's segments ([] for a void-only image)")
        seen: set[int] = set()
        for s in ann["segments_info"]:
            try:
                sid, cat = int(s["id"]), int(s["category_id"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{what} ({ann['file_name']}): a segment without integer id and category_id") from None
            if sid in seen:
                raise DataError(f"{what} ({ann['file_name']}): segment id {sid} is listed twice in segments_info",
                                fix="give every segment of an image its own id")
            seen.add(sid)
            if cat not in self.categories:
                raise DataError(f"{what} ({ann['file_name']}): segment {sid} has category {cat}, which 'categories' "
                                "does not list", fix=f"known categories: {', '.join(map(str, self.category_ids))}")

    def _check_files(self) -> None:
        if not self.png_dir.is_dir():
            raise DataError(f"panoptic PNG folder {self.png_dir} not found "
                            f"(named like {self.json_path.name} without .json)",
                            fix="place the PNGs there (panopticapi's layout)")
        missing = [a["file_name"] for a in self.annotations if not (self.png_dir / a["file_name"]).is_file()]
        _missing(missing, len(self.annotations), "panoptic PNGs", self.json_path, self.png_dir,
                 "place them there; the PNG folder is named like the JSON without .json")
        if self.image_dir is not None:
            missing = [a["file_name"] for a in self.annotations if self._image_path(a) is None]
            _missing(missing, len(self.annotations), "images of the annotations", self.json_path, self.image_dir,
                     "give the folder that holds them with images=DIR (edgeseg eval: --images DIR)")

    def _image_path(self, ann: dict) -> Path | None:
        if self._find is None:
            return None
        name = self._images.get(ann.get("image_id"))
        if name is not None:
            return self._find(name)
        stem = Path(ann["file_name"]).stem
        return next((p for p in (self._find(f"{stem}{s}") for s in IMAGE_SUFFIXES) if p is not None), None)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> PanopticSample:  # type: ignore[override]
        n = len(self)
        i = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"CocoPanoptic index {index} out of range (len {n})")
        ann = self.annotations[i]
        ids = read_panoptic_png(self.png_dir / ann["file_name"])
        segments, crowd = [], set()
        for s in ann["segments_info"]:
            cat = self.categories[int(s["category_id"])]
            segments.append(Segment(int(s["id"]), cat.id, cat.isthing, int(s.get("area", 0))))
            if s.get("iscrowd", 0):
                crowd.add(int(s["id"]))
        try:
            panoptic = PanopticResult(ids, tuple(segments))
        except InputError as e:  # duplicate or zero segment ids
            raise DataError(f"{self.json_path}: annotation {ann['file_name']}: {e}") from None
        unknown = _unlisted_ids(ids, [s.id for s in segments])
        if unknown:  # panopticapi would score those pixels as nobody's, silently: the PNG and JSON do not belong together
            raise DataError(f"panoptic PNG {self.png_dir / ann['file_name']} has segment id(s) {unknown[:5]}"
                            f"{' ...' if len(unknown) > 5 else ''} that its segments_info in {self.json_path} does not list",
                            fix="use the PNGs made with this JSON (a PNG id is R + 256 G + 256^2 B; 0 is void)")
        return PanopticSample(Path(ann["file_name"]).stem, self._image_path(ann), panoptic, frozenset(crowd),
                              ann.get("image_id", -1), str(ann["file_name"]))

    def __repr__(self) -> str:
        return f"CocoPanoptic(len={len(self)}, categories={len(self.categories)})"


def _unlisted_ids(ids: np.ndarray, listed: list[int]) -> list[int]:
    """The non-zero ids of the map ``ids`` that are not in ``listed`` (a lookup table when the ids are small,
    as Cityscapes' are: about 5 ms for 2048x1024 where ``np.unique`` takes 100)."""
    top = int(ids.max(initial=0))
    if top < (1 << 22):
        known = np.zeros(top + 1, bool)
        known[0] = True
        known[[i for i in listed if 0 < i <= top]] = True
        if known[ids].all():
            return []
    listed_set = set(listed)
    return [int(u) for u in np.unique(ids) if u != 0 and int(u) not in listed_set]


def _missing(missing: list[str], total: int, what: str, json_path: Path, folder: Path, fix: str) -> None:
    if missing:
        raise DataError(f"{len(missing)} of {total} {what} listed in {json_path} are not in {folder}: "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}", fix=fix)


@DATASETS.register("coco-panoptic")
def _open_coco_panoptic(args: list[str], options: dict[str, str], split: str) -> CocoPanoptic:
    return open_coco_panoptic("coco-panoptic", args, options, split)


def open_coco_panoptic(kind: str, args: list[str], options: dict[str, str], split: str) -> CocoPanoptic:
    """The COCO-panoptic dataset of a ``KIND:JSON|DIR[,images=DIR][,cities=A+B]`` spec (``kind`` names it in
    errors). ``cities=`` keeps the frames whose file names start with one of those names and ``_``
    (Cityscapes' ``CITY_SEQUENCE_FRAME``): a city chooses options, another scores them."""
    options = dict(options)
    cities = options.pop("cities", None)
    path = coco_spec_json(kind, "panoptic", args, options, split)
    png_dir = path.with_suffix("")
    if not png_dir.is_dir():
        raise DataError(f"{kind}: PNG folder {png_dir} not found (named like {path.name} without .json)",
                        fix=f"place the panoptic PNGs in {png_dir}")
    image_dir = coco_image_dir(kind, "panoptic", path, options)
    ds = CocoPanoptic(path, png_dir, image_dir, check_files=True)
    if cities is not None:
        ds.annotations = keep_cities(ds.annotations, lambda a: a["file_name"], cities, kind, path.name)
    return ds
