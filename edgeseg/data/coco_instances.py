"""COCO instance ground truth (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014).

``instances_*.json`` lists ``images`` (id, file_name, height, width), ``categories`` (id, name) and
``annotations`` (image_id, category_id, segmentation, area, bbox xywh, iscrowd). A segmentation is
a compressed RLE (``counts`` a string), an uncompressed RLE (``counts`` a list) or a list of
polygons ``[x1, y1, x2, y2, ...]`` in pixel coordinates.

Polygons are rasterised exactly as pycocotools does it (``frPyObjects`` + ``merge`` + ``decode``,
i.e. ``annToMask``; maskApi.c ``rleFrPoly``), in numpy:

1. vertices are scaled by 5 and rounded with C's ``(int)(5 * v + .5)`` (truncation toward zero);
2. each edge (the last closes the ring) is walked one step per unit along its longer axis, the
   other coordinate rounded as ``(int)(start + slope * t + .5)``, always from the edge's start;
3. wherever consecutive boundary points change x, the crossing is mapped back to pixel column
   ``x = (min(u) + .5) / 5 - .5`` (kept only when that is a whole column inside the image) and
   row ``y = ceil(clamp((min(v) + .5) / 5 - .5, 0, h))``; each such point toggles the mask at
   column-major position ``x * h + y``;
4. the mask is the running parity of the toggles; the parts of a multi-polygon are OR-ed.

Category ids need not be contiguous (Cityscapes: 24..33): classes are indexed by sorted category
id (:attr:`CocoInstances.category_ids` maps index -> id), as detectron2 and COCOeval order them.
``open_dataset("coco-instance:PATH/instances_val.json[,images=DIR]")`` opens it; images come from
the folder named after the split (``instances_val.json`` -> ``val/`` beside the JSON or beside its
folder, COCO's ``annotations/`` layout) unless ``images=DIR`` is given.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, EdgesegError
from ..structures import ImageShape
from ..structures.rle import rle_decode
from .base import DATASETS, IMAGE_CHECK_LIMIT, ImageLookup, coco_image_dir, coco_spec_json, keep_cities
from .io import EXIF_TURNS, exif_orientation, read_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceTruth:
    """Ground-truth instances of one image, laid out like :class:`~edgeseg.structures.InstanceResult`.

    masks:        ``bool [N, H, W]`` at the image size.
    classes:      ``int32 [N]`` contiguous class index (into the dataset's ``classes``).
    category_ids: ``int64 [N]`` the dataset's own category ids (what COCOeval matches on).
    boxes:        ``float32 [N, 4]`` xyxy absolute pixels.
    iscrowd:      ``bool [N]`` crowd regions: never counted as misses, detections on them are ignored.
    area:         ``float64 [N]`` the annotation's ``area`` (COCOeval's small/medium/large uses it).
    ids:          ``int64 [N]`` annotation ids.
    xywh:         ``float64 [N, 4]`` the annotation's ``bbox`` exactly as written (box AP reads it, as
                  COCOeval does), or None (box AP then takes ``boxes``).
    """

    masks: np.ndarray
    classes: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    image_shape: ImageShape
    ids: np.ndarray
    xywh: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.category_ids)
        want = (n, self.image_shape.height, self.image_shape.width)
        if self.masks.shape != want or self.masks.dtype != np.bool_:
            raise DataError(f"InstanceTruth.masks must be bool {list(want)}, got {self.masks.dtype} {list(self.masks.shape)}")
        for name, shape in (("classes", (n,)), ("boxes", (n, 4)), ("iscrowd", (n,)), ("area", (n,)), ("ids", (n,)),
                            ("xywh", (n, 4))):
            if name == "xywh" and self.xywh is None:
                continue
            if getattr(self, name).shape != shape:
                raise DataError(f"InstanceTruth.{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(len(self.category_ids))


@dataclass(frozen=True)
class InstanceSample:
    """One image of an instance dataset: where the image is and its :class:`InstanceTruth`.
    ``preloaded``: the decoded image when the reader had to read it anyway (YOLO labels need its size)."""

    name: str
    image_id: int
    image_path: Path | None
    truth: InstanceTruth
    preloaded: np.ndarray | None = field(default=None, repr=False, compare=False)

    def image(self) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]``."""
        if self.preloaded is not None:
            return self.preloaded
        if self.image_path is None:
            raise DataError(f"instance sample {self.name!r} has no image folder", fix="open the dataset with images=DIR")
        if not self.image_path.is_file():
            raise DataError(f"image {self.image_path} of {self.name!r} not found", fix="check the images=DIR folder")
        img = read_image(self.image_path)
        if img.shape[:2] != self.truth.masks.shape[1:]:
            turn = exif_orientation(self.image_path)
            raise DataError(
                f"image {self.image_path} is {img.shape[1]}x{img.shape[0]} but its annotations say "
                f"{self.truth.image_shape.width}x{self.truth.image_shape.height}"
                + (f" (it carries an EXIF orientation, {turn}: {EXIF_TURNS[turn]} when shown, as edgeseg reads it)"
                   if turn != 1 else ""),
                fix="use the images the annotations were made for (same size)" + (
                    "; annotations made on the stored pixels: re-save the image without the tag (exiftool "
                    "-Orientation= -n)" if turn != 1 else ""),
            )
        return img


class InstanceDataset(Sequence):
    """Base of the instance readers: a sequence of :class:`InstanceSample` with ``classes`` and
    ``category_ids`` (index -> the dataset's category id). ``task`` tells scorers which metric applies."""

    task = "instance"
    classes: tuple[str, ...] = ()
    category_ids: tuple[int, ...] = ()

    @property
    def categories(self) -> dict[int, str]:
        """Category id -> name."""
        return dict(zip(self.category_ids, self.classes))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={len(self)}, classes={len(self.classes)})"


# ---- polygons and RLE -------------------------------------------------------------------------


def _c_int(x: np.ndarray) -> np.ndarray:
    """C's ``(int)x`` for doubles: truncation toward zero."""
    return np.trunc(x).astype(np.int64)


def polygon_toggles(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Column-major positions where pycocotools' ``rleFrPoly`` toggles the mask (see the module doc)."""
    scale = 5.0
    x = _c_int(scale * xy[:, 0] + 0.5)
    y = _c_int(scale * xy[:, 1] + 0.5)
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    dx, dy = np.abs(xn - x), np.abs(y - yn)
    horiz = dx >= dy
    flip = (horiz & (x > xn)) | (~horiz & (y > yn))
    xs, xe = np.where(flip, xn, x), np.where(flip, x, xn)
    ys, ye = np.where(flip, yn, y), np.where(flip, y, yn)
    with np.errstate(divide="ignore", invalid="ignore"):  # a repeated vertex: 0/0, as in C (its point is never used)
        s = np.where(horiz, (ye - ys) / dx, (xe - xs) / dy)
    n = np.maximum(dx, dy) + 1  # points per edge
    edge = np.repeat(np.arange(len(x)), n)
    d = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    span = (n - 1)[edge]
    t = np.where(flip[edge], span - d, d)
    se, h_e = s[edge], horiz[edge]
    with np.errstate(invalid="ignore"):
        rounded = np.where(h_e, ys[edge], xs[edge]) + se * t + 0.5
        rounded = np.where(np.isfinite(rounded), rounded, 0.0)
    u = np.where(h_e, t + xs[edge], _c_int(rounded))
    v = np.where(h_e, _c_int(rounded), t + ys[edge])
    # crossings of x between consecutive boundary points, mapped back to pixel columns and rows
    j = np.flatnonzero(u[1:] != u[:-1]) + 1
    xd = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (xd + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    j, xd = j[keep], xd[keep]
    yd = np.minimum(v[j], v[j - 1]).astype(np.float64)
    yd = np.ceil(np.clip((yd + 0.5) / scale - 0.5, 0, height))
    return xd.astype(np.int64) * height + yd.astype(np.int64)


def polygon_to_mask(polygon: Sequence[float] | np.ndarray, height: int, width: int) -> np.ndarray:
    """One polygon ``[x1, y1, x2, y2, ...]`` (pixel coordinates, at least 3 points) -> ``bool [H, W]``,
    equal to pycocotools' ``decode(frPyObjects([polygon], h, w)[0])``."""
    xy = np.asarray(polygon, np.float64).reshape(-1)
    if xy.size % 2 or xy.size < 6 or not np.isfinite(xy).all():
        raise DataError(f"a polygon needs at least 3 finite (x, y) points, got {xy.size} numbers")
    x, y = xy[0::2], xy[1::2]
    margin = max(height, width, 100)  # the outline is walked point by point: memory ~ its length, so bound it
    far = (x < -margin) | (x > width + margin) | (y < -margin) | (y > height + margin)
    if far.any():
        k = int(np.flatnonzero(far)[0])
        raise DataError(f"point ({x[k]:g}, {y[k]:g}) lies more than {margin} pixels outside the "
                        f"{width}x{height} image: the coordinates are not this image's pixels")
    toggles = polygon_toggles(xy.reshape(-1, 2), height, width)
    total = height * width
    flat = np.bincount(toggles, minlength=total + 1)[:total].cumsum() % 2  # position total = the sentinel
    return flat.astype(bool).reshape(width, height).T


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> ``bool [H, W]``,
    as pycocotools' ``annToMask``. Raises :class:`DataError` on anything malformed."""
    if isinstance(segm, list):
        if not segm:
            raise DataError("empty polygon list")
        mask = np.zeros((height, width), bool)
        for i, poly in enumerate(segm):
            if not isinstance(poly, (list, tuple)):
                raise DataError(f"polygon {i} is a {type(poly).__name__}, not a list of coordinates")
            if len(poly) < 6 or len(poly) % 2:
                raise DataError(f"polygon {i} has {len(poly)} numbers: a polygon needs at least 3 (x, y) points")
            try:
                mask |= polygon_to_mask(poly, height, width)
            except (TypeError, ValueError) as e:
                raise DataError(f"polygon {i} is not numeric: {e}") from None
            except DataError as e:
                raise DataError(f"polygon {i}: {e}") from None
        return mask
    if isinstance(segm, dict):
        try:
            mask = rle_decode(segm)
        except EdgesegError as e:
            raise DataError(str(e)) from None
        if mask.shape != (height, width):
            raise DataError(f"RLE size {list(mask.shape)} does not match the image's [{height}, {width}]")
        return mask
    raise DataError(f"segmentation is a {type(segm).__name__}: expected polygons (a list) or an RLE dict")


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``bool [N, H, W]`` -> ``float32 [N, 4]`` tight xyxy boxes (x2, y2 exclusive); zeros for empty masks."""
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        rows, cols = np.flatnonzero(masks[i].any(1)), np.flatnonzero(masks[i].any(0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


# ---- the reader ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Image:
    id: int
    file_name: str
    height: int
    width: int


class CocoInstances(InstanceDataset):
    """COCO instance annotations: ``CocoInstances(json_path, image_dir=None)[i] -> InstanceSample``.

    Images are in the JSON's order; masks are decoded when a sample is read. ``check_images``
    checks up front that every listed image file exists in ``image_dir``."""

    def __init__(self, json_path: str | Path, image_dir: str | Path | None = None, *, check_images: bool = False):
        self.json_path = Path(json_path)
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self._find = ImageLookup(self.image_dir) if image_dir is not None else None
        data = self._read_json()
        where = str(self.json_path)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list):
                raise DataError(f"{where}: {key!r} is a {type(data[key]).__name__}, not a list",
                                fix="it needs 'images', 'annotations' and 'categories' lists")
        if not data["categories"]:
            raise DataError(f"{where} lists no categories", fix="list each category's id and name under 'categories'")
        try:
            cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
            self.images = [_Image(int(im["id"]), str(im["file_name"]), int(im["height"]), int(im["width"]))
                           for im in data["images"]]
            anns = list(data["annotations"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: malformed images/categories ({type(e).__name__}: {e})",
                            fix="each image needs id, file_name, height, width; each category id and name") from None
        self.category_ids = tuple(c for c, _ in cats)
        self.classes = tuple(n for _, n in cats)
        self._index = {c: i for i, c in enumerate(self.category_ids)}
        if len(self._index) != len(cats):
            raise DataError(f"{where}: repeated category ids")
        known = {im.id for im in self.images}
        if len(known) != len(self.images):
            seen: set[int] = set()
            twice = next(im for im in self.images if im.id in seen or seen.add(im.id))
            raise DataError(f"{where}: image id {twice.id} is listed twice in 'images' ({twice.file_name})",
                            fix="give every image its own id")
        bad = next((im for im in self.images if im.height <= 0 or im.width <= 0), None)
        if bad is not None:
            raise DataError(f"{where}: image {bad.id} ({bad.file_name}) has size {bad.width}x{bad.height}",
                            fix="'width' and 'height' are the image's size in pixels (> 0)")
        self._anns: dict[int, list[dict]] = {im.id: [] for im in self.images}
        for n, ann in enumerate(anns):
            self._check_annotation(ann, n, known)
            self._anns[int(ann["image_id"])].append(ann)
        names = [n.lower() for n in self.classes]
        twice = sorted({self.classes[i] for i, n in enumerate(names) if names.count(n) > 1})
        if twice:  # matched by name, a model class goes to the first category of that name only
            log.warning("%s: category name(s) %s are used by more than one category id (%s): a model class of that "
                        "name is scored as the first", where, ", ".join(twice), ", ".join(
                            f"{n}={c}" for c, n in zip(self.category_ids, self.classes) if n in twice))
        if self.images and not anns:
            log.warning("%s lists %d images but no annotation: every AP is undefined (n/a), and any detection a "
                        "false positive", where, len(self.images))
        if self.image_dir is not None and check_images:
            self._check_images()

    def category_counts(self) -> dict[str, int]:
        """Category name -> how many annotations (crowds aside) it has."""
        out = {n: 0 for n in self.classes}
        for anns in self._anns.values():
            for a in anns:
                if not a.get("iscrowd", 0):
                    out[self.classes[self._index[int(a["category_id"])]]] += 1
        return out

    def _read_json(self) -> dict:
        if not self.json_path.is_file():
            raise DataError(f"COCO instance annotations not found: {self.json_path}",
                            fix="give the path of an instances_*.json file")
        try:
            data = json.loads(self.json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read COCO instance annotations {self.json_path}: {e}") from None
        if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
            raise DataError(f"{self.json_path} is not a COCO instance file",
                            fix="it needs 'images', 'annotations' and 'categories' lists")
        return data

    def _check_annotation(self, ann: Any, n: int, known: set[int]) -> None:
        what = f"{self.json_path}: annotation {ann.get('id', f'#{n}') if isinstance(ann, dict) else f'#{n}'}"
        if not isinstance(ann, dict):
            raise DataError(f"{what} is a {type(ann).__name__}, not an object",
                            fix="each annotation needs image_id, category_id and segmentation")
        missing = [k for k in ("image_id", "category_id", "segmentation") if k not in ann]
        if missing:
            hint = " (a box-only annotation: mask AP needs masks)" if missing == ["segmentation"] and "bbox" in ann else ""
            raise DataError(f"{what} has no {' and no '.join(missing)}{hint}",
                            fix="each annotation needs image_id, category_id and segmentation (polygons or RLE)")
        if ann.get("iscrowd", 0) not in (0, 1):  # bool is an int: True/False pass
            raise DataError(f"{what}: iscrowd is {ann['iscrowd']!r}", fix="iscrowd is 0 or 1")
        try:
            image_id, cat = int(ann["image_id"]), int(ann["category_id"])
        except (TypeError, ValueError):
            raise DataError(f"{what}: image_id and category_id must be integers") from None
        if "id" in ann and (isinstance(ann["id"], bool) or not isinstance(ann["id"], (int, float))
                            or ann["id"] != ann["id"] or ann["id"] in (float("inf"), float("-inf"))):
            raise DataError(f"{what}: its id is {ann['id']!r}, not an integer", fix="give each annotation an integer id")
        if image_id not in known:
            raise DataError(f"{what} refers to image {image_id}, which 'images' does not list")
        if cat not in self._index:
            raise DataError(f"{what} has category {cat}, which 'categories' does not list",
                            fix=f"known categories: {', '.join(map(str, self.category_ids))}")

    def _check_images(self, limit: int | None = None) -> None:
        """Every listed image (the first ``limit``) is in the image folder, else a :class:`DataError` naming them."""
        images = self.images if limit is None else self.images[:limit]
        missing = [im.file_name for im in images if self._find(im.file_name) is None]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(images)} images listed in {self.json_path} are not in {self.image_dir}: "
                f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}",
                fix="give the folder that holds them with images=DIR (--images DIR)",
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_ids(self) -> tuple[int, ...]:
        return tuple(im.id for im in self.images)

    def annotations(self, index: int) -> list[dict]:
        """The raw annotation dicts of image ``index``."""
        return list(self._anns[self.images[index].id])

    def __getitem__(self, index: int) -> InstanceSample:  # type: ignore[override]
        n = len(self)
        i = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"CocoInstances index {index} out of range (len {n})")
        im = self.images[i]
        truth = self._truth(im)
        path = (self._find(im.file_name) or self.image_dir / im.file_name) if self._find is not None else None
        return InstanceSample(Path(im.file_name).stem, im.id, path, truth)

    def _truth(self, im: _Image) -> InstanceTruth:
        anns = self._anns[im.id]
        masks = np.zeros((len(anns), im.height, im.width), bool)
        boxes = np.zeros((len(anns), 4), np.float32)
        xywh = np.zeros((len(anns), 4), np.float64)
        area = np.zeros(len(anns), np.float64)
        for k, ann in enumerate(anns):
            what = f"{self.json_path}: annotation {ann.get('id', '?')} of image {im.id} ({im.file_name})"
            try:
                masks[k] = segmentation_to_mask(ann["segmentation"], im.height, im.width)
                area[k] = float(ann["area"]) if "area" in ann else float(masks[k].sum())
                if "bbox" in ann:
                    bx, by, bw, bh = (float(v) for v in ann["bbox"])
                    boxes[k], xywh[k] = (bx, by, bx + bw, by + bh), (bx, by, bw, bh)
            except DataError as e:
                raise DataError(f"{what}: {e}", fix="fix or remove that annotation") from None
            except (TypeError, ValueError) as e:
                raise DataError(f"{what}: malformed area or bbox ({e})", fix="area is a number, bbox [x, y, w, h]") from None
            if "bbox" not in ann:
                boxes[k] = mask_boxes(masks[k : k + 1])[0]
                xywh[k] = (*boxes[k, :2], *(boxes[k, 2:] - boxes[k, :2]))
        cats = np.array([int(a["category_id"]) for a in anns], np.int64)
        return InstanceTruth(
            masks=masks,
            classes=np.array([self._index[c] for c in cats.tolist()], np.int32),
            category_ids=cats,
            boxes=boxes,
            iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
            area=area,
            image_shape=ImageShape(im.height, im.width),
            ids=np.array([int(a.get("id", 0)) for a in anns], np.int64),
            xywh=xywh,
        )


@DATASETS.register("coco")  # what detectron2 and mmdet users call it
@DATASETS.register("coco-instance")
def _open_coco_instance(args: list[str], options: dict[str, str], split: str) -> CocoInstances:
    options = dict(options)
    cities = options.pop("cities", None)  # Cityscapes' cities by file name (base.keep_cities)
    path = coco_spec_json("coco-instance", "instances", args, options, split)
    image_dir = coco_image_dir("coco-instance", "instances", path, options)
    ds = CocoInstances(path, image_dir)
    if cities is not None:
        ds.images = keep_cities(ds.images, lambda im: im.file_name, cities, "coco-instance", path.name)
    if image_dir is not None:  # after the city filter (the other cities' images need not be here), up to a limit
        ds._check_images(IMAGE_CHECK_LIMIT.get())
    return ds
