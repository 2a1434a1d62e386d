"""The fast approximation of the fully connected CRF (:mod:`edgeseg.decode.crf`) for streams:
mean field on a grid of about ``FAST_SIZE`` pixels, ~25 ms a 480x360 frame with 11 classes and 5
iterations on one thread (``crf_method="fast"``). Exact at full resolution with one-pixel cells
(``tests/decode/test_crf.py``).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .crf import FAST_SIZE, UNARY_CLIP, CRFParams, _check_inputs, bilateral_features

# Mean field on a reduced grid (integer factor ``f = round(max(H, W) / size)``, logits and image
# area-averaged), positions in grid pixels times ``f`` so sxy keep their meaning in the logits' pixels:
#
# * smoothness: the exact Gaussian is separable in x and y: ``cv2.sepFilter2D`` with taps to 6 sigma
#   (the tail beyond is below 1.6e-8 of the centre), zero border as the dense kernel has no pixels
#   there, pixel itself included;
# * appearance: a sparse bilateral grid. Pixels fall into cells: ``block x block`` squares of the
#   grid split by colour bins ``colour_bin * srgb`` wide per channel; only occupied cells exist.
#   A cell stands for its pixels at their mean feature (x, y, r, g, b): ``K_ij ~ k(key_a, key_b)``
#   for ``i`` in cell ``a``, ``j`` in ``b`` — splat (sum of ``n Q`` per cell), an exact ``M x M``
#   Gaussian between the cells' keys, slice (each pixel takes its cell's value). CRF-as-RNN's grid
#   (:mod:`edgeseg.models.crf_rnn`) keys pixels to blocks without the colour split; splitting by
#   colour keeps edges that cross a block, and cell-to-cell makes an iteration ``M^2 C`` instead of
#   ``N M C``. With ``block=1`` each cell is one pixel and the kernel is the exact dense one.
#
# The last update is made at the logits' resolution: ``-U`` of the full-resolution logits plus the
# grid's message resized bilinearly, so the unary keeps its detail (a smooth message, not a coarse Q,
# is what gets interpolated). ``U`` is clipped as ``unary_from_softmax`` does, with the log-sum-exp
# of the grid resized (exact when the grid is the logits' own size).

def _gaussian_taps(sigma: float, n: int) -> np.ndarray:
    radius = min(int(math.ceil(6.0 * sigma)), n - 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.exp(-0.5 * (x / sigma) ** 2).astype(np.float32)


def gaussian_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float32 [len(a), len(b)]`` = ``exp(-|a_i - b_j|^2 / 2)`` for features ``[n, d]`` (one GEMM)."""
    import cv2

    ones_a, ones_b = np.ones((len(a), 1), np.float32), np.ones((len(b), 1), np.float32)
    left = np.concatenate([a, -0.5 * (a * a).sum(1, keepdims=True), ones_a], 1).astype(np.float32)
    right = np.concatenate([b, ones_b, -0.5 * (b * b).sum(1, keepdims=True)], 1).astype(np.float32)
    return cv2.exp(np.minimum(left @ right.T, 0.0))


class _SmoothnessGrid:
    """Symmetrically normalised separable Gaussian on an ``h x w`` grid; values ``[C, h*w]``."""

    def __init__(self, h: int, w: int, sigma_y: float, sigma_x: float):
        self.h, self.w = h, w
        self.ky, self.kx = _gaussian_taps(sigma_y, h), _gaussian_taps(sigma_x, w)
        self.norm = 1.0 / np.sqrt(self._blur(np.ones((1, h * w), np.float32)) + 1e-20)

    def _blur(self, x: np.ndarray) -> np.ndarray:
        import cv2

        out = np.empty_like(x)
        for k in range(x.shape[0]):  # OpenCV's single-channel path: one contiguous plane per class
            out[k] = cv2.sepFilter2D(x[k].reshape(self.h, self.w), cv2.CV_32F, self.kx, self.ky,
                                     borderType=cv2.BORDER_CONSTANT).ravel()
        return out

    def filter(self, q: np.ndarray) -> np.ndarray:
        return self.norm * self._blur(q * self.norm)


class _AppearanceGrid:
    """Symmetrically normalised bilateral kernel between the occupied cells of a sparse bilateral grid
    (section comment); ``features`` ``[h*w, 5]`` scaled as :func:`bilateral_features`; values ``[C, h*w]``."""

    def __init__(self, features: np.ndarray, h: int, w: int, block: int, colour_bin: float):
        yy, xx = np.divmod(np.arange(h * w), w)
        cell = (yy // block) * (-(-w // block)) + xx // block
        if block > 1 and colour_bin > 0:
            bins = np.floor(features[:, 2:] / colour_bin).astype(np.int64)
            radix = int(bins.max()) + 1
            cell = ((cell * radix + bins[:, 0]) * radix + bins[:, 1]) * radix + bins[:, 2]
        _, inverse = np.unique(cell, return_inverse=True)
        self.cell = inverse.ravel()
        self.m = m = int(self.cell.max()) + 1
        self.order = np.argsort(self.cell, kind="stable")  # pixels grouped by cell, for np.add.reduceat
        counts = np.bincount(self.cell, minlength=m)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.stack([np.bincount(self.cell, features[:, d], m) for d in range(features.shape[1])], 1)
        keys = (sums / counts[:, None]).astype(np.float32)  # the cells' mean features
        self.kernel = gaussian_between(keys, keys)  # [M, M], symmetric
        self.norm = (1.0 / np.sqrt(self.kernel @ counts.astype(np.float32) + 1e-20)).astype(np.float32)  # per cell

    def filter(self, q: np.ndarray) -> np.ndarray:
        splat = np.add.reduceat(q[:, self.order], self.starts, axis=1) * self.norm  # [C, M]
        return ((splat @ self.kernel) * self.norm)[:, self.cell]


def _log_unary(logits: np.ndarray, clip: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(``-U`` = clipped log-softmax over axis 0, the log-sum-exp ``[1, ...]``)."""
    import cv2

    mx = logits.max(0, keepdims=True)
    lse = mx + np.log(cv2.exp(logits - mx).sum(0, keepdims=True))
    lq = logits - lse
    return (np.maximum(lq, np.float32(math.log(clip))) if clip is not None else lq), lse


def _softmax0(z: np.ndarray) -> np.ndarray:
    import cv2

    e = cv2.exp(z - z.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def fast_block(params: CRFParams, factor: int) -> int:
    """The appearance grid's default cell side (grid pixels): about 0.8 of its sigma, 1..16."""
    return int(min(16, max(1, round(params.bilateral_sxy / factor / 1.25))))


def fast_crf_logits(logits: np.ndarray, rgb: np.ndarray, params: CRFParams = CRFParams(), size: int = FAST_SIZE,
                    block: int | None = None, colour_bin: float = 2.0, clip: float | None = UNARY_CLIP) -> np.ndarray:
    """``float32 [C, H, W]``: log-marginals (up to a per-pixel constant) of the CRF of
    :func:`dense_crf`, approximated on a grid of long side ~``size`` (section comment above).
    ``block``: the appearance cells' side in grid pixels (None: :func:`fast_block`); ``colour_bin``:
    their colour bins' width in units of ``srgb`` (0: no colour split). ``size >= max(H, W)`` with
    ``block=1`` is the exact mean field of ``dense_crf(..., "exact")`` (float32)."""
    import cv2

    _check_inputs(logits, rgb, "fast")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InputError(f"the fast CRF's grid size must be a positive integer, got {size!r}")
    c, h0, w0 = logits.shape
    lg = np.ascontiguousarray(logits, np.float32)
    f = max(1, round(max(h0, w0) / size))
    h, w = max(1, round(h0 / f)), max(1, round(w0 / f))
    full = (h, w) == (h0, w0)
    if full:
        small, im = lg.reshape(c, -1), np.asarray(rgb, np.uint8)
    else:
        small = np.stack([cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA).ravel() for plane in lg])
        im = cv2.resize(np.ascontiguousarray(rgb, np.uint8), (w, h), interpolation=cv2.INTER_AREA)
    sy, sx = h0 / h, w0 / w  # logits' pixels per grid pixel
    nu, lse = _log_unary(small, clip)  # [C, h*w], [1, h*w]
    terms: list[tuple[float, _SmoothnessGrid | _AppearanceGrid]] = []
    if params.gaussian_compat:
        smooth = _SmoothnessGrid(h, w, params.gaussian_sxy / sy, params.gaussian_sxy / sx)
        terms.append((params.gaussian_compat, smooth))
    if params.bilateral_compat:
        feats = bilateral_features(im, (params.bilateral_sxy / sx, params.bilateral_sxy / sy), params.bilateral_srgb)
        cells = fast_block(params, f) if block is None else int(block)
        terms.append((params.bilateral_compat, _AppearanceGrid(np.ascontiguousarray(feats.T), h, w, cells, colour_bin)))
    q = _softmax0(nu)
    message = np.zeros_like(nu)
    for it in range(params.iterations):
        message = np.zeros_like(nu)
        for compat, term in terms:
            message += np.float32(compat) * term.filter(q)
        if it < params.iterations - 1:
            q = _softmax0(nu + message)
    if full:
        return (nu + message).reshape(c, h0, w0)
    out = np.empty_like(lg)
    floor = None
    if clip is not None:  # the clip of -U at full resolution, with the grid's log-sum-exp resized
        floor = cv2.resize(lse.reshape(h, w), (w0, h0), interpolation=cv2.INTER_LINEAR) + np.float32(math.log(clip))
    for k in range(c):
        np.maximum(lg[k], floor, out=out[k]) if floor is not None else np.copyto(out[k], lg[k])
        out[k] += cv2.resize(message[k].reshape(h, w), (w0, h0), interpolation=cv2.INTER_LINEAR)
    return out
