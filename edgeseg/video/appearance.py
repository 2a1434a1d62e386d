"""Colour evidence for an object: a global model learnt on the prompt, a local one on the previous frame.

* :class:`GlobalColour` is the re-anchor: foreground and background colour histograms of the prompt
  frame (YCrCb, ``bits`` per channel), kept for the object's lifetime, giving
  ``p(object | colour)``. It also re-detects an object that was lost.
* :func:`local_colour` is a bilateral grid (Paris and Durand 2006; used for video segmentation by
  Maerki et al., "Bilateral Space Video Segmentation", CVPR 2016): the previous frame's pixels are
  splatted with their labels into cells of (y, x, colour), summed over the 3x3 neighbouring cells,
  and sliced at the positions the current pixels came from. It knows which colours belong to the
  object *here*, which a global histogram cannot.
* :func:`reliability` says, per tile, how well the global model explained the previous frame's
  boundary region (1 = perfectly, 0 = no better than chance), so its weight follows its local
  reliability (after Video SnapCut, Bai et al., SIGGRAPH 2009).
"""
from __future__ import annotations

import numpy as np


def colour_index(ycc: np.ndarray, bits: int) -> np.ndarray:
    """``int32`` joint colour bin of each pixel (``bits`` per channel) of a ``uint8 [..., 3]`` image."""
    s = 8 - bits
    c0, c1, c2 = ((ycc[..., i] >> s).astype(np.int32) for i in range(3))
    return (c0 << (2 * bits)) | (c1 << bits) | c2


def logit(p: np.ndarray, clip: float = 0.02) -> np.ndarray:
    q = np.clip(p, clip, 1.0 - clip)
    return np.log(q / (1.0 - q)).astype(np.float32)


class GlobalColour:
    """``p(object | colour)`` from the prompt frame: object pixels against all other pixels."""

    def __init__(self, ycc: np.ndarray, mask: np.ndarray, bits: int = 4, eps: float = 1e-5):
        self.bits = bits
        idx = colour_index(ycc, bits)
        n = 1 << (3 * bits)
        fg = np.bincount(idx[mask], minlength=n).astype(np.float64)
        bg = np.bincount(idx[~mask], minlength=n).astype(np.float64)
        fg /= max(fg.sum(), 1.0)
        bg /= max(bg.sum(), 1.0)
        fg += eps  # equal pseudo-mass: a colour neither side has seen is neutral (0.5)
        bg += eps
        coarse = np.bincount(colour_index(ycc[mask], 2), minlength=64).astype(np.float64)
        self.histogram = coarse / max(coarse.sum(), 1.0)  # 2 bits per channel: blobs are compared with it
        self.posterior = (fg / (fg + bg)).astype(np.float32)

    def __call__(self, ycc: np.ndarray) -> np.ndarray:
        """``float32`` posterior of each pixel of ``ycc`` (any leading shape, last axis 3)."""
        return self.posterior[colour_index(ycc, self.bits)]

    def similarity(self, ycc_pixels: np.ndarray) -> float:
        """Bhattacharyya coefficient between these pixels' coarse colour histogram (2 bits per channel)
        and the object's prompt colours: 1 = the same distribution."""
        h = np.bincount(colour_index(ycc_pixels, 2).ravel(), minlength=64).astype(np.float64)
        if h.sum() == 0:
            return 0.0
        return float(np.sqrt(h / h.sum() * self.histogram).sum())


def local_colour(prev_ycc: np.ndarray, prev_mask: np.ndarray, box: tuple[int, int, int, int], src_x: np.ndarray,
                 src_y: np.ndarray, cur_ycc: np.ndarray, prior: np.ndarray, cell: int = 16, bits: int = 3,
                 prior_weight: float = 2.0, stride: int = 1) -> np.ndarray:
    """``p(object)`` of current pixels from the previous frame's labelled pixels near where they came from.

    prev_ycc/prev_mask: the previous frame and its final mask (full frame). box: the region of the
    previous frame to learn from (x0, y0, x1, y1). src_x/src_y: ``float32 [n]`` previous-frame
    positions of the n current pixels; cur_ycc: ``uint8 [n, 3]`` their colours; prior: ``[n]`` the
    probability to fall back on where the grid has few samples (``prior_weight`` pseudo-counts, in
    units of ``stride^2`` pixels: the previous frame is sampled on every ``stride``-th pixel each way).
    """
    x0, y0, x1, y1 = box
    ycc, m = prev_ycc[y0:y1:stride, x0:x1:stride], prev_mask[y0:y1:stride, x0:x1:stride]
    h, w = y1 - y0, x1 - x0
    ny, nx, nb = (h + cell - 1) // cell, (w + cell - 1) // cell, 1 << (3 * bits)
    rows, cols = np.arange(0, h, stride, dtype=np.int32) // cell, np.arange(0, w, stride, dtype=np.int32) // cell
    cells = (rows[:, None] * nx + cols[None, :]) * nb
    idx = ((cells + colour_index(ycc, bits)) * 2 + m).ravel()
    counts = np.bincount(idx, minlength=ny * nx * nb * 2).reshape(ny, nx, nb, 2).astype(np.float32)
    counts = _box3(counts)
    cy = np.clip((src_y - y0).astype(np.int32) // cell, 0, ny - 1)
    cx = np.clip((src_x - x0).astype(np.int32) // cell, 0, nx - 1)
    flat = counts.reshape(-1, 2)[(cy * nx + cx) * nb + colour_index(cur_ycc, bits)]
    n_bg, n_fg = flat[:, 0], flat[:, 1]
    return ((n_fg + prior_weight * prior) / (n_fg + n_bg + prior_weight)).astype(np.float32)


def _box3(a: np.ndarray) -> np.ndarray:
    """Sum over the 3x3 neighbouring cells (axes 0 and 1 of ``[ny, nx, ...]``), zero outside."""
    p = np.pad(a, ((1, 1), (1, 1)) + ((0, 0),) * (a.ndim - 2))
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def reliability(model: GlobalColour, ycc: np.ndarray, mask: np.ndarray, band: np.ndarray, tile: int = 32,
                gamma: float = 2.0) -> np.ndarray:
    """``float32 [ceil(h/tile), ceil(w/tile)]`` per-tile reliability of ``model`` on one labelled frame region.

    ``1 - 2 * mean |label - p|`` over the ``band`` pixels of each tile (3x3 tiles pooled), clipped to
    [0, 1] and raised to ``gamma``; 0 where a tile has no band pixels near it.
    """
    import cv2

    h, w = mask.shape
    ny, nx = (h + tile - 1) // tile, (w + tile - 1) // tile
    ys, xs = np.nonzero(band)
    if len(ys) == 0:
        return np.zeros((ny, nx), np.float32)
    err = np.abs(mask[ys, xs].astype(np.float32) - model(ycc[ys, xs]))
    t = (ys // tile) * nx + xs // tile
    e = np.bincount(t, err, minlength=ny * nx).reshape(ny, nx).astype(np.float32)
    n = np.bincount(t, minlength=ny * nx).reshape(ny, nx).astype(np.float32)
    e, n = cv2.blur(e, (3, 3), borderType=cv2.BORDER_CONSTANT), cv2.blur(n, (3, 3), borderType=cv2.BORDER_CONSTANT)
    rel = np.clip(1.0 - 2.0 * e / np.maximum(n, 1e-6), 0.0, 1.0) ** gamma
    rel[n < 1e-6] = 0.0
    return rel.astype(np.float32)
