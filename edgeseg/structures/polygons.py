"""Instance masks as YOLO-seg polygon labels: what ``edgeseg predict --save-txt`` writes, Ultralytics'
``save_txt`` layout (``labels/<stem>.txt``, one line ``class x1 y1 x2 y2 ...`` per instance, coordinates divided
by the image's width and height), so that predictions become a dataset Ultralytics and ``edgeseg eval --data
yolo-seg:`` read (auto-labelling).

A mask's outline is its external contours (OpenCV, pixel coordinates of the boundary pixels), as Ultralytics'
``masks2segments``; a mask in several parts (a car behind a pole) becomes one polygon, as Ultralytics' ``"all"``
strategy makes it: each other part joined to the largest by a zero-width bridge between their closest points, which
an even-odd fill (pycocotools', the reader's) leaves empty. Holes are not kept (external contours only). A part one
pixel thin, whose centre outline encloses nothing, is outlined along its pixels' edges (:func:`_pixel_squares`);
docs/instance.md says what each reader then gets back.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def mask_polygon(crop: np.ndarray, x0: int = 0, y0: int = 0) -> np.ndarray:
    """``float64 [K, 2]`` pixel xy of one polygon outlining ``crop`` (a ``bool`` mask whose pixel ``[0, 0]`` lies
    at image pixel ``(x0, y0)``); ``[0, 2]`` for an empty mask."""
    import cv2

    m8 = np.ascontiguousarray(crop, np.uint8)
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = []
    if contours:  # one labelling and one erosion for every part (per part, a mask of 1,000 specks took 4 s)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
        eroded = cv2.erode(m8, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        thick = set(np.unique(labels[eroded > 0]).tolist())  # an eroded pixel's 8 neighbours are all its part's
    for c in contours:
        c = c.reshape(-1, 2).astype(np.float64)
        x, y = c[0].astype(int)
        k = int(labels[y, x])
        if k in thick:  # a pixel with all 8 neighbours in the part: its contour encloses an area
            parts.append(c)
            continue
        # a dot, a line, an L, a 2-pixel stripe: the pixel-centre contour encloses next to nothing, so the outline
        # of the pixels' squares (below), from the part's own box
        left, top, w, h = (int(v) for v in stats[k, :4])
        parts.append(_pixel_squares(labels[top:top + h, left:left + w] == k) + (left, top))
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


def _pixel_squares(part: np.ndarray) -> np.ndarray:
    """The outline of the union of the squares of a thin part's pixels (``part``: ``bool``, pixel ``(x, y)`` spanning
    ``[x, x+1] x [y, y+1]``). Its pixel-centre contour encloses nothing (a dot, a straight or diagonal line, an L), and
    an even-odd fill reads it back empty: before session 49 such parts were left out of the labels, in session 49 a
    part became its bounding box (a 10-pixel diagonal read back as 100 pixels). The part is traced at twice its size
    and each doubled coordinate ``c`` mapped to the edge it lies on (even: a pixel's near side ``c / 2``; odd: its far
    side ``(c + 1) / 2``)."""
    import cv2

    ys, xs = np.nonzero(part)
    top, left = int(ys.min()), int(xs.min())
    sub = part[top: int(ys.max()) + 1, left: int(xs.max()) + 1].astype(np.uint8)
    double = np.pad(np.repeat(np.repeat(sub, 2, axis=0), 2, axis=1), 1)  # padded: a contour never meets the edge
    traced, _ = cv2.findContours(double, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(traced, key=len).reshape(-1, 2).astype(np.int64) - 1
    return ((c + (c & 1)) // 2 + (left, top)).astype(np.float64)


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
