"""Panoptic results as COCO-panoptic files (Kirillov et al., "Panoptic Segmentation", CVPR 2019;
the COCO "panoptic segmentation" results format), as panopticapi's ``pq_compute`` and
cityscapesScripts' ``evaluatePanoptic`` read them:

* one PNG per image, 8-bit RGB, segment id ``R + 256 G + 256^2 B`` (``id_to_rgb``), 0 = void;
* one JSON: ``{"annotations": [{"image_id", "file_name", "segments_info": [{"id", "category_id",
  "iscrowd", "area", "bbox": [x, y, w, h]}]}], "categories": [...], ("images": [...])}``, with
  ``area`` the segment's pixel count and ``bbox`` its tight box (``w = x_max - x_min + 1``).

What the writer guarantees, so the reference never refuses a file it wrote:

* a segment without pixels is left out (panopticapi raises ``KeyError`` on a JSON segment absent
  from the PNG);
* every non-zero id of the map has a :class:`~edgeseg.structures.Segment`, else
  :class:`InputError` naming the id and the image (panopticapi: ``KeyError``);
* with ``categories`` given, a segment's category must be one of them, else :class:`InputError`
  naming the category and the image (panopticapi: ``KeyError``);
* ids above ``256^3 - 1`` (what three bytes hold) are renumbered 1..n in the order of ``segments``
  (an id means nothing outside its file);
* every file is written atomically (temporary file + rename, :mod:`edgeseg._io`): each PNG as it
  is added, into a hidden staging folder beside the PNG folder; :meth:`PanopticWriter.close`, after
  a run that did not fail, moves them into the PNG folder and writes the JSON last. An interrupted
  or failed run leaves no truncated file, no JSON naming a PNG that is not there, and the results
  of an earlier run in the same place as they were (never its JSON with some of the new PNGs).

``edgeseg eval --save-predictions DIR`` writes ``DIR/<gt json stem>_pred.json`` and the PNGs in
``DIR/<gt json stem>_pred/`` (:func:`prediction_paths`); :func:`score_saved` scores such files
against a :class:`~edgeseg.data.coco_panoptic.CocoPanoptic` dataset, as ``pq_compute`` does::

    json_path, png_dir = prediction_paths("out", dataset.json_path)
    with PanopticWriter(json_path, png_dir, categories=dataset.categories) as w:
        for sample in dataset:
            w.add(sample.image_id, sample.file_name, predictor(sample.image()))
    scores = score_saved(dataset, json_path)
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .._compat import is_relative_to
from .._io import atomic_write_bytes, atomic_write_text
from ..data.coco_panoptic import Category, CocoPanoptic, id_to_rgb, read_categories, read_panoptic_png
from ..errors import DataError, InputError
from ..structures import PanopticResult, Segment
from ..structures.coco_panoptic import segments_info
from .panoptic import PanopticMetric, PanopticScores

MAX_ID = 256**3 - 1


def prediction_paths(out_dir: str | Path, gt_json: str | Path) -> tuple[Path, Path]:
    """``(DIR/<stem>_pred.json, DIR/<stem>_pred/)`` for the ground truth ``.../<stem>.json``."""
    stem = Path(gt_json).stem
    return Path(out_dir) / f"{stem}_pred.json", Path(out_dir) / f"{stem}_pred"


def encode_panoptic_png(segment_ids: np.ndarray) -> bytes:
    """``[H, W]`` ids in ``0 .. 256^3 - 1`` -> the bytes of an RGB PNG (``id_to_rgb``)."""
    import cv2

    ids = np.asarray(segment_ids)
    if ids.ndim != 2:
        raise InputError(f"a panoptic id map is [H, W], got {list(ids.shape)}")
    if ids.size and (ids.min() < 0 or ids.max() > MAX_ID):
        raise InputError(f"panoptic ids must be within 0..{MAX_ID} to fit an RGB PNG, got {ids.min()}..{ids.max()}")
    ok, buf = cv2.imencode(".png", id_to_rgb(ids, bgr=True))  # cv2 writes BGR
    if not ok:  # pragma: no cover - cv2 fails here only on absurd input
        raise InputError(f"cannot encode a {ids.shape[1]}x{ids.shape[0]} panoptic PNG")
    return buf.tobytes()


def write_panoptic_png(path: str | Path, segment_ids: np.ndarray) -> Path:
    """Write ``[H, W]`` ids as a COCO-panoptic PNG, atomically. Returns the path."""
    return atomic_write_bytes(path, encode_panoptic_png(segment_ids))


def _renumbered(result: PanopticResult, where: str) -> PanopticResult:
    """``result`` with ids 1..n (in the order of its segments) when some id does not fit three bytes."""
    ids = result.segment_ids
    if ids.size == 0 or (ids.min() >= 0 and ids.max() <= MAX_ID and all(0 < s.id <= MAX_ID for s in result.segments)):
        return result
    if ids.min() < 0:
        raise InputError(f"panoptic result{where} has negative segment ids", fix="segment ids are >= 0 (0 = void)")
    new_id = {int(s.id): k + 1 for k, s in enumerate(result.segments)}
    uniq, inverse = np.unique(ids, return_inverse=True)
    unknown = [int(u) for u in uniq if u != 0 and int(u) not in new_id]
    if unknown:
        raise InputError(f"panoptic result{where}: the id map has segment id(s) {unknown[:5]} with no Segment entry",
                         fix="describe every non-zero id of segment_ids in segments (0 is void)")
    lut = np.array([new_id.get(int(u), 0) for u in uniq], np.int32)
    segs = tuple(Segment(k + 1, s.category_id, s.isthing, s.area, s.score) for k, s in enumerate(result.segments))
    return dataclasses.replace(result, segment_ids=lut[inverse.reshape(ids.shape)], segments=segs)


def _relative_png(file_name: str, where: str) -> PurePosixPath:
    p = PurePosixPath(str(file_name).replace("\\", "/"))
    if not file_name or p.is_absolute() or ".." in p.parts:
        raise InputError(f"panoptic file name {file_name!r}{where} must be a relative path inside the PNG folder")
    return p.with_suffix(".png")


class PanopticWriter:
    """Collects annotations and writes their PNGs into ``png_dir`` (default: ``json_path`` without
    ``.json``); :meth:`close` (or leaving the ``with`` block without an error) writes the JSON.
    ``categories``: the dataset's (checked and copied into the JSON)."""

    def __init__(self, json_path: str | Path, png_dir: str | Path | None = None, *,
                 categories: Mapping[int, Category] | None = None):
        self.json_path = Path(json_path)
        self.png_dir = Path(png_dir) if png_dir is not None else self.json_path.with_suffix("")
        self.categories = dict(categories or {})
        self.annotations: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self._seen: set[Any] = set()
        self._stage: Path | None = None  # the PNGs until close(): an earlier run's files stay whole until then

    def _staging(self) -> Path:
        if self._stage is None:
            self.png_dir.parent.mkdir(parents=True, exist_ok=True)
            self._stage = Path(tempfile.mkdtemp(prefix=f".{self.png_dir.name}.", suffix=".part", dir=self.png_dir.parent))
        return self._stage

    def add(self, image_id: int | str, file_name: str, result: PanopticResult, crowd_ids: Iterable[int] = (), *,
            image_file_name: str | None = None) -> dict[str, Any]:
        """Write ``result``'s PNG (as ``file_name`` with a ``.png`` suffix) and keep its annotation.
        ``image_file_name``: also list the image in ``images`` (for a ground-truth file)."""
        where = f" of image {image_id} ({file_name})"
        if image_id in self._seen:
            raise InputError(f"image {image_id} ({file_name}) was added twice to {self.json_path}",
                             fix="a predictions file lists each image once: if the dataset's JSON lists this image id "
                                 "twice, remove the repeated annotation")
        png = _relative_png(file_name, where)
        result = _renumbered(result, where)
        info = segments_info(result, crowd_ids, where=where)
        if self.categories:
            for s in info:
                if s["category_id"] not in self.categories:
                    raise InputError(f"panoptic result{where}: segment {s['id']} has category {s['category_id']}, "
                                     f"which the dataset's categories ({', '.join(map(str, sorted(self.categories)))}) "
                                     "do not list", fix="predict the dataset's category ids")
        write_panoptic_png(self._staging() / png, result.segment_ids)
        ann = {"image_id": image_id, "file_name": str(png), "segments_info": info}
        self.annotations.append(ann)
        self._seen.add(image_id)
        if image_file_name is not None:
            h, w = result.segment_ids.shape
            self.images.append({"id": image_id, "file_name": image_file_name, "height": int(h), "width": int(w)})
        return ann

    def close(self) -> Path:
        """Move the PNGs into the PNG folder, then write the JSON (atomically). Returns its path."""
        data: dict[str, Any] = {"annotations": self.annotations}
        if self.images:
            data["images"] = self.images
        if self.categories:
            data["categories"] = [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
                                  for c in self.categories.values()]
        text = json.dumps(data)
        if self._stage is not None:
            earlier = self._earlier_pngs()
            self.json_path.unlink(missing_ok=True)  # an earlier run's JSON must not describe the PNGs replaced below
            for src in sorted(f for f in self._stage.rglob("*") if f.is_file()):
                dst = self.png_dir / src.relative_to(self._stage)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            self.discard()
            # the earlier run's PNGs this run did not write again (a rerun with --limit): gone, so that the folder
            # holds what the new JSON lists (only the PNGs that JSON listed: other files are not ours)
            for name in sorted(earlier - {a["file_name"] for a in self.annotations}):
                (self.png_dir / name).unlink(missing_ok=True)
        return atomic_write_text(self.json_path, text)

    def _earlier_pngs(self) -> set[str]:
        """The PNG names the JSON already at ``json_path`` lists inside the PNG folder (none when unreadable)."""
        try:
            anns = json.loads(self.json_path.read_text()).get("annotations", [])
        except (OSError, ValueError, AttributeError):
            return set()
        if not isinstance(anns, list):  # not a predictions file of ours: nothing of it is removed
            return set()
        names = {a["file_name"] for a in anns if isinstance(a, dict) and isinstance(a.get("file_name"), str)}
        root = self.png_dir.resolve()
        return {n for n in names if n.endswith(".png") and (self.png_dir / n).is_file()
                and is_relative_to((self.png_dir / n).resolve(), root)}

    def discard(self) -> None:
        """Drop the PNGs added so far (a failed run): the PNG folder and the JSON stay as they were."""
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None

    def __enter__(self) -> "PanopticWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def read_panoptic_results(json_path: str | Path, png_dir: str | Path | None = None,
                          categories: Mapping[int, Category] | None = None) -> dict[Any, PanopticResult]:
    """A COCO-panoptic results file -> ``{image_id: PanopticResult}``. ``isthing`` comes from
    ``categories`` (else from the file's own ``categories``, else False). Raises :class:`InputError`
    for a PNG id the JSON does not describe, :class:`DataError` for a missing file."""
    json_path = Path(json_path)
    png_dir = Path(png_dir) if png_dir is not None else json_path.with_suffix("")
    if not json_path.is_file():
        raise DataError(f"panoptic results not found: {json_path}", fix="give the JSON --save-predictions wrote")
    try:
        data = json.loads(json_path.read_text())
        anns = list(data["annotations"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"cannot read panoptic results {json_path}: {type(e).__name__}: {e}",
                        fix="it needs an 'annotations' list") from None
    if categories is None:
        categories = read_categories(data, str(json_path)) if "categories" in data else {}
    out: dict[Any, PanopticResult] = {}
    for ann in anns:
        where = f" of image {ann.get('image_id')} ({ann.get('file_name')})"
        try:
            ids = read_panoptic_png(png_dir / ann["file_name"])
            segs = tuple(Segment(int(s["id"]), int(s["category_id"]),
                                 bool(getattr(categories.get(int(s["category_id"])), "isthing", False)),
                                 int(s.get("area", 0))) for s in ann["segments_info"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{json_path}: malformed annotation{where}: {type(e).__name__}: {e}") from None
        try:
            result = PanopticResult(ids, segs)
        except InputError as e:
            raise InputError(f"{json_path}: annotation{where}: {e}") from None
        described = {s.id for s in segs}
        unknown = sorted(int(i) for i in np.unique(ids) if i != 0 and int(i) not in described)
        if unknown:
            raise InputError(f"{json_path}: the PNG{where} has segment id(s) {unknown[:5]} that its segments_info "
                             "does not list", fix="list every non-zero id of the PNG in segments_info")
        out[ann["image_id"]] = result
    return out


def score_saved(dataset: CocoPanoptic, pred_json: str | Path, pred_dir: str | Path | None = None) -> PanopticScores:
    """PQ of saved predictions against ``dataset``, matched by ``image_id``, as ``pq_compute`` does
    (every ground-truth image needs a prediction)."""
    preds = read_panoptic_results(pred_json, pred_dir, dataset.categories)
    cats = dataset.categories.values()
    metric = PanopticMetric({c.id: c.isthing for c in cats}, {c.id: c.name for c in cats})
    for sample in dataset:
        if sample.image_id not in preds:
            raise InputError(f"{pred_json} has no prediction for image {sample.image_id} ({sample.file_name})",
                             fix="predict every image of the ground truth (run without --limit)")
        metric.update(preds[sample.image_id], sample.panoptic, sample.crowd_ids, name=repr(sample.file_name))
    return metric.compute()
