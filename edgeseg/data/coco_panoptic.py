"""COCO-panoptic ground truth (Kirillov et al., "Panoptic Segmentation", CVPR 2019; COCO format).

``annotations.json`` lists per image a PNG file and its ``segments_info``; the PNG encodes each
pixel's segment id as ``R + 256 * G + 256**2 * B`` (0 = unlabelled / void).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..structures import PanopticResult, Segment
from .io import read_image


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class PanopticSample:
    """One image's panoptic truth. ``crowd_ids`` are the segment ids marked ``iscrowd``."""

    name: str
    image_path: Path | None
    panoptic: PanopticResult
    crowd_ids: frozenset[int] = frozenset()

    def image(self) -> np.ndarray:
        if self.image_path is None:
            raise DataError(f"panoptic sample {self.name!r} has no image folder")
        return read_image(self.image_path)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB -> ``int32 [H, W]`` ids, ``R + 256 G + 256^2 B`` (panopticapi's rgb2id)."""
    c = rgb.astype(np.int32)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], -1).astype(np.uint8)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """A COCO-panoptic PNG as ``int32 [H, W]`` segment ids."""
    return rgb_to_id(read_image(path))


class CocoPanoptic(Sequence):
    """COCO-panoptic annotations: ``CocoPanoptic(json_path, png_dir, image_dir=None)[i] -> PanopticSample``."""

    def __init__(self, json_path: str | Path, png_dir: str | Path, image_dir: str | Path | None = None):
        self.json_path, self.png_dir = Path(json_path), Path(png_dir)
        self.image_dir = Path(image_dir) if image_dir is not None else None
        try:
            data = json.loads(self.json_path.read_text())
            self.categories = {
                int(c["id"]): Category(int(c["id"]), c["name"], bool(c["isthing"]), tuple(c.get("color", (0, 0, 0))))
                for c in data["categories"]
            }
            self.annotations = list(data["annotations"])
            images = {int(im["id"]): im["file_name"] for im in data.get("images", [])}
        except FileNotFoundError:
            raise DataError(f"COCO panoptic annotations not found: {self.json_path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"cannot read COCO panoptic annotations {self.json_path}: {e}") from None
        self._images = images

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> PanopticSample:  # type: ignore[override]
        ann = self.annotations[index]
        png = self.png_dir / ann["file_name"]
        ids = read_panoptic_png(png)
        segments, crowd = [], set()
        for s in ann["segments_info"]:
            cat = self.categories.get(int(s["category_id"]))
            if cat is None:
                raise DataError(f"{self.json_path}: segment {s['id']} of {png.name} has unknown category {s['category_id']}")
            segments.append(Segment(int(s["id"]), cat.id, cat.isthing, int(s.get("area", 0))))
            if s.get("iscrowd", 0):
                crowd.add(int(s["id"]))
        file_name = self._images.get(int(ann.get("image_id", -1)))
        image_path = self.image_dir / file_name if self.image_dir is not None and file_name else None
        return PanopticSample(Path(ann["file_name"]).stem, image_path, PanopticResult(ids, tuple(segments)), frozenset(crowd))
