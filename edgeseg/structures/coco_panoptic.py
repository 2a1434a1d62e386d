"""A :class:`~edgeseg.structures.PanopticResult` in COCO-panoptic terms: its ``segments_info`` (id, category,
crowd, area, tight ``bbox``), as the results JSON beside the PNGs lists them. Shared by the evaluation's
writer (``edgeseg eval --save-predictions``) and the stream's PNG sink."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import InputError
from .results import PanopticResult


def segments_info(result: PanopticResult, crowd_ids: Iterable[int] = (), *, where: str = "") -> list[dict[str, Any]]:
    """COCO ``segments_info`` of ``result``: its segments with pixels, in its order, with area and
    bbox ``[x, y, w, h]`` from the id map. Raises :class:`InputError` for an id without a segment."""
    ids = np.ascontiguousarray(result.segment_ids)
    h, w = ids.shape
    n = len(result.segments)
    segment_ids = [int(s.id) for s in result.segments]
    # from the map's row-major runs, not per pixel (a full-resolution int64 lookup and two bincounts of
    # int64 row/column keys took 17 ms a 1080p frame, the runs 0.75): a run inside one row gives its columns and
    # row; one that wraps onto later rows spans every column from its first row to its last
    flat = ids.ravel()
    starts, ends = map_runs(flat)
    if len(starts) > flat.size // RUNS_PER_PIXEL:  # runs of a few pixels (noise): per pixel is faster (the review)
        index = segment_index(ids, segment_ids, where)  # 0 void, k + 1 for segments[k]
        area = np.bincount(index.ravel(), minlength=n + 1)
        rows = np.bincount((index + (n + 1) * np.arange(h)[:, None]).ravel(), minlength=(n + 1) * h).reshape(h, n + 1) > 0
        cols = np.bincount((index + (n + 1) * np.arange(w)[None, :]).ravel(), minlength=(n + 1) * w).reshape(w, n + 1) > 0
        y0, y1 = rows.argmax(0), h - 1 - rows[::-1].argmax(0)
        x0, x1 = cols.argmax(0), w - 1 - cols[::-1].argmax(0)
    else:
        index = segment_index(flat[starts][None], segment_ids, where)[0]
        ys, ye, xs, xe = run_spans(starts, ends, w)
        area = np.zeros(n + 1, np.int64)
        np.add.at(area, index, ends - starts + 1)
        y0, y1, x0, x1 = np.full(n + 1, h), np.full(n + 1, -1), np.full(n + 1, w), np.full(n + 1, -1)
        np.minimum.at(y0, index, ys)
        np.maximum.at(y1, index, ye)
        np.minimum.at(x0, index, xs)
        np.maximum.at(x1, index, xe)
    crowd = {int(c) for c in crowd_ids}
    out = []
    for k, s in enumerate(result.segments, start=1):
        if area[k]:
            out.append({"id": int(s.id), "category_id": int(s.category_id), "iscrowd": int(int(s.id) in crowd),
                        "area": int(area[k]), "bbox": [int(x0[k]), int(y0[k]), int(x1[k] - x0[k] + 1), int(y1[k] - y0[k] + 1)]})
    return out


#: a map with more than one run per this many pixels (noise) is counted pixel by pixel: building the runs costs more
#: there (1080p of 1-pixel runs: 17 -> 54 ms; of 100,000 runs: 20 -> 3.7 ms; the session 54 review)
RUNS_PER_PIXEL = 4


def map_runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)``, ``int64 [R]``: the maximal runs of equal values of a flat (row-major) map, ``ends``
    inclusive."""
    if not flat.size:
        z = np.zeros(0, np.int64)
        return z, z
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    return starts, np.concatenate((starts[1:], [flat.size])) - 1


def run_spans(starts: np.ndarray, ends: np.ndarray, width: int) -> tuple[np.ndarray, ...]:
    """``(first row, last row, first column, last column)`` of each run of a row-major map ``width`` wide: a run
    that wraps onto later rows spans every column."""
    ys, ye, xs, xe = starts // width, ends // width, starts % width, ends % width
    wrap = ys != ye
    xs[wrap], xe[wrap] = 0, width - 1
    return ys, ye, xs, xe


def segment_index(ids: np.ndarray, segment_ids: list[int], where: str) -> np.ndarray:
    """``int [H, W]``: 0 for void, ``k + 1`` where ``ids`` is ``segment_ids[k]``; an id of the map
    not among them is an :class:`InputError` naming it."""
    top = int(ids.max(initial=0))
    if ids.size and ids.min() >= 0 and top < (1 << 22):  # a lookup table of the ids
        lut = np.full(top + 1, -1, np.int64)
        lut[0] = 0
        for k, i in enumerate(segment_ids, start=1):
            if 0 < i <= top:
                lut[i] = k
        index = lut[ids]
    else:
        uniq, inverse = np.unique(ids, return_inverse=True)
        pos = {i: k for k, i in enumerate(segment_ids, start=1)}
        index = np.array([0 if u == 0 else pos.get(int(u), -1) for u in uniq.tolist()], np.int64)[inverse.reshape(ids.shape)]
    if (index < 0).any():
        unknown = sorted(set(ids[index < 0].tolist()))
        raise InputError(f"panoptic result{where}: the id map has segment id(s) {unknown[:5]} with no Segment entry",
                         fix="describe every non-zero id of segment_ids in segments (0 is void)")
    return index
