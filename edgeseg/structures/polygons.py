"""Instance masks as YOLO-seg polygon labels: what ``edgeseg predict --save-txt`` writes, Ultralytics'
``save_txt`` layout (``labels/<stem>.txt``, one line ``class x1 y1 x2 y2 ...`` per instance, coordinates divided
by the image's width and height), so that predictions become a dataset Ultralytics and ``edgeseg eval --data
yolo-seg:`` read (auto-labelling).

A mask's outline is its external contours (OpenCV, pixel coordinates of the boundary pixels), as Ultralytics'
``masks2segments``; a mask in several parts (a car behind a pole) becomes one polygon, as Ultralytics' ``"all"``
strategy makes it: each other part joined to the largest by a zero-width bridge between their closest points, which
an even-odd fill (pycocotools', the reader's) leaves empty. Holes are not kept (external contours only).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def mask_polygon(crop: np.ndarray, x0: int = 0, y0: int = 0) -> np.ndarray:
    """``float64 [K, 2]`` pixel xy of one polygon outlining ``crop`` (a ``bool`` mask whose pixel ``[0, 0]`` lies
    at image pixel ``(x0, y0)``); ``[0, 2]`` for an empty mask."""
    import cv2

    contours, _ = cv2.findContours(np.ascontiguousarray(crop, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [_outline(c.reshape(-1, 2).astype(np.float64)) for c in contours if len(c)]
    if not parts:
        return np.zeros((0, 2))
    parts.sort(key=lambda c: -abs(cv2.contourArea(c.astype(np.float32))) - len(c) * 1e-9)
    ring = parts[0]
    for part in parts[1:]:  # bridge each part to the outline so far, at their closest points, out and back
        d = ((ring[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        detour = np.concatenate([np.roll(part, -j, axis=0), part[j:j + 1]])  # around the part, back to its point
        ring = np.concatenate([ring[: i + 1], detour, ring[i:]])
    return ring + (x0, y0)


def _outline(contour: np.ndarray) -> np.ndarray:
    """A contour of 3+ points as it is; a part one or two pixels thin (a dot, a line: fewer than 3 corners, which no
    polygon encloses) as the square outline of its pixels' edges (before: left out of the labels)."""
    if len(contour) >= 3 and len(np.unique(contour, axis=0)) >= 3:
        uniq_x, uniq_y = np.unique(contour[:, 0]), np.unique(contour[:, 1])
        if len(uniq_x) > 1 and len(uniq_y) > 1:
            return contour
    (x0, y0), (x1, y1) = contour.min(0), contour.max(0) + 1
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def yolo_lines(classes: Iterable[int], polygons: Iterable[np.ndarray], width: int, height: int,
               scores: Iterable[float] | None = None) -> list[str]:
    """One ``class x1 y1 ...`` line per polygon of 3+ points (coordinates over ``width``/``height``, 6 decimals, as
    Ultralytics writes them); ``scores`` appended last (its ``save_conf``); smaller polygons are left out."""
    out = []
    confs = [] if scores is None else list(scores)
    for k, (c, poly) in enumerate(zip(classes, polygons)):
        if len(poly) < 3:
            continue
        xy = np.clip(np.asarray(poly, np.float64) / (width, height), 0.0, 1.0).reshape(-1)
        fields = [str(int(c)), *(f"{v:.6g}" for v in xy)]
        if confs:
            fields.append(f"{float(confs[k]):.5g}")
        out.append(" ".join(fields))
    return out
