"""Ultralytics' semantic segmentation datasets (``yolo-semantic:DATA.yaml``): what YOLO26-sem users train and validate on.

The data.yaml names the split's image folder (``val: images/val``), ``names`` and ``masks_dir``: each image
``.../images/val/abc.jpg`` pairs with ``.../masks/val/abc.png`` (the path's ``images`` component replaced by
``masks_dir``), a single-channel mask of class ids, 255 void. An optional ``label_mapping`` (source id -> class id,
or ``ignore_label`` for void; Ultralytics' cityscapes.yaml maps Cityscapes' label ids with it) is applied as
Ultralytics applies it; ids it does not name stay as they are, and ids at or above the class count are void.
Split entries are image folders (searched recursively), ``.txt`` image lists, or lists of either, as Ultralytics
takes them. ``path`` is taken beside the YAML, else from the working folder, else the YAML's own folder. A YAML without ``masks_dir`` has
YOLO polygon labels: Ultralytics rasterises those with an extra background class; read them as instances with
``yolo-seg:`` instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..structures import default_palette
from .base import DATASETS, IGNORE, Sample, SegmentationDataset, check_options
from .io import IMAGE_SUFFIXES, mask_size_error, read_image, read_label, read_text
from .yolo_seg import _names, read_data_yaml

MASK_SUFFIXES = (".png", ".PNG", ".bmp", ".tif", ".tiff")


def _root(data: dict, yaml_path: Path) -> Path:
    raw = data.get("path")
    if not raw:
        return yaml_path.parent
    p = Path(str(raw)).expanduser()
    for cand in ((p,) if p.is_absolute() else (yaml_path.parent / p, p, yaml_path.parent)):
        if cand.is_dir():
            return cand
    raise DataError(f"{yaml_path}: its path {raw!r} is not a folder (looked beside the YAML and in its folder)",
                    fix="write the dataset's root folder as path: (absolute, or relative to the YAML)")


def _images(where: Path) -> list[Path]:
    """The images of one split entry: a folder (searched recursively, as Ultralytics does) or a ``.txt`` list of
    image paths (relative ones against the list's folder)."""
    if where.suffix == ".txt":
        if not where.is_file():
            raise DataError(f"yolo-semantic: image list {where} not found")
        lines = [ln.strip() for ln in read_text(where, "image list", "one image path per line").splitlines() if ln.strip()]
        return [Path(ln) if Path(ln).is_absolute() else where.parent / ln for ln in lines]
    if not where.is_dir():
        raise DataError(f"yolo-semantic: image folder {where} not found", fix="check the split's folder in the data.yaml")
    return sorted(p for p in where.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _mapping(raw, nc: int, where: Path) -> np.ndarray:
    """uint8 -> uint8 table: label_mapping applied, then ids >= nc (other than 255) void."""
    lut = np.arange(256, dtype=np.int64)
    if raw is not None:
        if not isinstance(raw, dict):
            raise DataError(f"{where}: label_mapping must map source ids to class ids (or ignore_label)")
        for k, v in raw.items():
            try:
                src = int(k)
                dst = IGNORE if str(v).strip() == "ignore_label" else int(v)
            except (TypeError, ValueError):
                raise DataError(f"{where}: label_mapping {k}: {v} is not 'id: class id' or 'id: ignore_label'") from None
            if not 0 <= dst <= 255:
                raise DataError(f"{where}: label_mapping {k}: {v} maps outside 0..255")
            if 0 <= src <= 255:  # -1 (Cityscapes' license plate) never appears in a PNG
                lut[src] = dst
    lut[(lut >= nc) & (lut != IGNORE)] = IGNORE
    return lut.astype(np.uint8)


class YoloSemantic(SegmentationDataset):
    """The split's image/mask pairs of an Ultralytics semantic data.yaml."""

    def __init__(self, yaml_path: str | Path, split: str = "val"):
        self.yaml_path = Path(yaml_path)
        if not self.yaml_path.is_file():
            raise DataError(f"yolo-semantic: {self.yaml_path} not found", fix="give the dataset's data.yaml")
        data = read_data_yaml(self.yaml_path)
        if "names" not in data:
            raise DataError(f"{self.yaml_path} has no 'names'", fix="list the class names under names:")
        self.classes = _names(data["names"], self.yaml_path)
        if not 0 < len(self.classes) <= 255:
            raise DataError(f"{self.yaml_path}: {len(self.classes)} classes; 1..255 fit uint8 label maps with void 255")
        masks_dir = data.get("masks_dir")
        if not masks_dir:
            raise DataError(f"{self.yaml_path} has no masks_dir: its labels are YOLO polygons",
                            fix="read them as instances with yolo-seg:, or add masks_dir: with single-channel PNG masks")
        rel = data.get(split)
        if rel is None:
            raise DataError(f"{self.yaml_path} has no {split!r} split", fix=f"add '{split}: images/{split}' or pick --split")
        root = _root(data, self.yaml_path)
        images = [img for part in (rel if isinstance(rel, (list, tuple)) else [rel]) for img in _images(root / str(part))]
        self.pairs, lonely = [], []
        for img in images:
            if "images" not in img.parts:
                raise DataError(f"{self.yaml_path}: {img} has no 'images' folder for masks_dir to replace",
                                fix="Ultralytics finds masks by replacing the 'images' path component with masks_dir")
            at = len(img.parts) - 1 - img.parts[::-1].index("images")
            stem = Path(*img.parts[:at], str(masks_dir), *img.parts[at + 1:]).with_suffix("")
            mask = next((m for m in (stem.with_name(stem.name + s) for s in MASK_SUFFIXES) if m.is_file()), None)
            (lonely.append(img) if mask is None else self.pairs.append((img, mask)))
        if lonely:
            raise DataError(f"yolo-semantic: {len(lonely)} image(s) of {split!r} have no mask under {masks_dir}/, "
                            f"e.g. {lonely[0]}", fix="each image needs a mask of the same stem (images/.../abc.jpg -> "
                                                     f"{masks_dir}/.../abc.png)")
        if not self.pairs:
            raise DataError(f"yolo-semantic: no images for {split!r} in {rel}")
        self.palette = default_palette(len(self.classes))
        self._lut = _mapping(data.get("label_mapping"), len(self.classes), self.yaml_path)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> Sample:
        img_path, mask_path = self.pairs[index]
        image, raw = read_image(img_path), read_label(mask_path)
        if raw.shape != image.shape[:2]:
            raise mask_size_error(mask_path, raw.shape, img_path, image.shape[:2])
        return Sample(image, self._lut[raw], img_path.stem)


@DATASETS.register("yolo-semantic")
def _open_yolo_semantic(args: list[str], options: dict[str, str], split: str) -> YoloSemantic:
    check_options("yolo-semantic", options, ("split",))
    if len(args) != 1:
        raise DataError("yolo-semantic spec takes one data.yaml (or the folder holding it)",
                        fix="write yolo-semantic:PATH/data.yaml")
    path = Path(args[0])
    if path.is_dir():
        found = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
        if len(found) != 1:
            raise DataError(f"yolo-semantic: {path} holds {len(found)} YAML files", fix="name the data.yaml itself")
        path = found[0]
    return YoloSemantic(path, options.get("split", split))


__all__ = ["YoloSemantic"]
