"""Results as JSON-ready dicts: the per-frame record of ``edgeseg run --json-out`` and ``result.to_dict()``.

::

    {"task": "semantic", "segments": [{"class_id": 3, "class": "road", "area": 120345, "score": 1.0,
                                       "rle": {"size": [540, 960], "counts": "..."}}]}

Instances add ``"box": [x1, y1, x2, y2]`` (original-image pixels) and their score (and ``track_id`` when
tracked); panoptic segments add ``id`` and ``isthing``; video objects are ``{"object_id", "score", "area",
"rle"}``; a bundle run with a prompt (:class:`PromptedResult`) adds ``"objects"``. Masks are COCO RLE
(column-major, ``counts`` a string), what ``pycocotools.mask.decode`` and :func:`~edgeseg.structures.rle_decode` read.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._registry import Registry
from ..errors import InputError
from .results import InstanceResult, PanopticResult, PromptedResult, SemanticResult, TrackResult, label_counts
from .rle import rle_encode_crops, rle_encode_labels, rle_encode_labels_areas

RECORDS: Registry[Callable[[Any], dict]] = Registry("JSON record", error=InputError)


def _name(names: tuple[str, ...], i: int) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


@RECORDS.register("SemanticResult")
def semantic_record(r: SemanticResult) -> dict:
    """One segment per class present: area and mean confidence from one ``bincount`` each, every
    class's RLE from one column-major pass over the label map (:func:`rle_encode_labels`)."""
    flat = r.labels.ravel()
    counts = label_counts(r.labels)
    present = np.flatnonzero(counts)
    rles = rle_encode_labels(r.labels, present)
    scores = np.ones(len(counts))
    if r.confidence is not None:
        sums = np.bincount(flat, weights=r.confidence.ravel(), minlength=len(counts))
        scores[present] = sums[present] / counts[present]
    segs = [{"class_id": int(c), "class": _name(r.classes, int(c)), "area": int(counts[c]),
             "score": float(scores[c]), "rle": rles[int(c)]} for c in present]
    return {"task": "semantic", "segments": segs}


@RECORDS.register("InstanceResult")
def instance_record(r: InstanceResult) -> dict:
    """Masks from their crops (``InstanceResult.mask_crop``): the RLEs and areas of all instances in
    one vectorised pass (:func:`rle_encode_crops`), never ``N x H x W``."""
    names = [_name(r.class_names, c) for c in r.classes.tolist()]
    segs = [{"class_id": c, "class": name, "score": sc, "box": box}
            for c, name, sc, box in zip(r.classes.tolist(), names, r.scores.astype(np.float64).tolist(),
                                        r.boxes.astype(np.float64).tolist())]
    if r.has_masks:
        rles, areas = rle_encode_crops(r.iter_mask_crops(), r.image_shape.hw)
        for d, rle, area in zip(segs, rles, areas.tolist()):
            d["area"] = area
            d["rle"] = rle
    if r.track_ids is not None:
        for d, t in zip(segs, r.track_ids.tolist()):
            d["track_id"] = int(t)
    return {"task": "instance", "segments": segs}


@RECORDS.register("PanopticResult")
def panoptic_record(r: PanopticResult) -> dict:
    ids = np.array([s.id for s in r.segments], np.int64)
    rles, area = rle_encode_labels_areas(r.segment_ids, ids)  # areas from the runs: np.unique sorted the whole map
    segs = [{"id": s.id, "class_id": s.category_id, "class": r.class_name(s.category_id),
             "isthing": s.isthing, "area": int(area.get(s.id, 0)), "score": float(s.score), "rle": rles[s.id]}
            for s in r.segments]
    return {"task": "panoptic", "segments": segs}


def _mask_crop(m: np.ndarray) -> tuple[int, int, int, int, np.ndarray]:
    """``(x0, y0, x1, y1, crop)``: a full-size bool mask's tight bounds and the mask inside them."""
    rows = np.flatnonzero(m.any(1))
    if not len(rows):
        return 0, 0, 0, 0, m[:0, :0]
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(m[y0:y1].any(0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return x0, y0, x1, y1, m[y0:y1, x0:x1]


@RECORDS.register("TrackResult")
def track_record(r: TrackResult) -> dict:
    """The RLEs and areas from each mask's tight crop (:func:`rle_encode_crops`): a column-major copy of every
    full-size mask took 3.5 ms an object a 1080p frame."""
    # one mask at a time: all at once, ten noisy 1080p masks took 1.5 GB of run arrays (the review)
    pairs = [rle_encode_crops([_mask_crop(m)], r.masks.shape[1:]) for m in r.masks]
    rles, areas = [p[0][0] for p in pairs], [int(p[1][0]) for p in pairs]
    segs = [{"object_id": int(o), "score": float(r.scores[i]) if i < len(r.scores) else 1.0,
             "area": int(areas[i]), "rle": rles[i]} for i, o in enumerate(r.object_ids)]
    return {"task": "vos", "segments": segs}


@RECORDS.register("PromptedResult")
def prompted_record(r: PromptedResult) -> dict:
    objects = track_record(r.objects)["segments"]
    if r.result is None:
        return {"task": "vos", "error": "the bundle gave no result", "segments": [], "objects": objects}
    return {**RECORDS.get(type(r.result).__name__)(r.result), "objects": objects}


def result_record(result: Any) -> dict:
    """``result`` (any of the result types above) as its JSON-ready dict."""
    return RECORDS.get(type(result).__name__)(result)
