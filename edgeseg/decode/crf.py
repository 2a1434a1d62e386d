"""Fully connected CRF on a semantic output — Krähenbühl & Koltun, "Efficient Inference in Fully
Connected CRFs with Gaussian Edge Potentials" (NIPS 2011), computed as pydensecrf does it
(github lucasb-eyer/pydensecrf, which wraps Krähenbühl's 2013 ``densecrf`` C++ code).

The model: unary ``U = -log p`` (pydensecrf's ``unary_from_softmax``: the softmax probabilities
clipped at 1e-5), and two Gaussian pairwise terms with Potts compatibility,

* smoothness (``addPairwiseGaussian(sxy, compat)``): ``exp(-|p_i - p_j|^2 / (2 sxy^2))``;
* appearance (``addPairwiseBilateral(sxy, srgb, rgb, compat)``):
  ``exp(-|p_i - p_j|^2 / (2 sxy^2) - |I_i - I_j|^2 / (2 srgb^2))`` on ``uint8`` RGB,

both written as ``exp(-|f_i - f_j|^2 / 2)`` on scaled features ``f`` (``x/sx, y/sy[, r/sr, g/sg, b/sb]``,
x the column). Mean-field inference as ``DenseCRF::inference(n)``: ``Q = softmax(-U)``, then ``n``
times ``Q = softmax(-U + sum_k w_k * filter_k(Q))`` — Potts ``PottsCompatibility(w).apply`` gives
``-w * filter(Q)``, which the update subtracts; with the paper's ``mu(l, l') = [l != l']`` the logits
differ by a per-pixel constant, so ``Q`` is the same.

``filter`` is pydensecrf's ``DenseKernel::filter`` with normalisation (default ``NORMALIZE_SYMMETRIC``):
``norm = 1 / sqrt(K 1 + 1e-20)`` and ``filter(Q) = norm * K (norm * Q)``; ``before``: ``K (norm^2 Q)``;
``after``: ``norm^2 * K Q`` (``norm`` there is ``1 / (K 1 + 1e-20)``). ``K`` is a Gaussian
**including the pixel itself** (``j = i``): the lattice splats, blurs and slices every point
together with its neighbours, with no self-term subtracted (unlike the paper's ``sum_{j != i}``).
Normalisation makes the kernel's overall scale irrelevant, so the exact kernel ``K_ij =
exp(-|f_i - f_j|^2 / 2)`` (``K_ii = 1``) is what the lattice approximates.

Two implementations of ``K v``:

* :class:`DenseGaussian` — exact, O(N^2) (float64): a reference for small images.
* :class:`Permutohedral` — the permutohedral lattice of Adams, Baek & Davis, "Fast High-Dimensional
  Filtering Using the Permutohedral Lattice" (Eurographics 2010), step for step as densecrf's
  ``Permutohedral`` (elevation with scale ``sqrt(2/3) (d+1)``, rounding to the nearest 0-coloured
  point with ties to even as its SSE build does, barycentric splat, a ``[1/2, 1, 1/2]`` blur along
  each of the ``d+1`` lattice axes, slice with ``alpha = 1 / (1 + 2^-d)``), vectorised in numpy in
  float32. The hash table becomes ``np.unique`` over integer-coded keys, so vertices are numbered
  differently; only the order of float32 additions differs from the C++ code. One quirk is kept on
  purpose: densecrf's SSE build (every x86-64 build) elevates points four at a time and pads the last
  group with all-zero features, whose enclosing vertices enter the lattice (with no value) and so
  change how the blur propagates when ``N`` is not a multiple of 4 (``sse_padding=True``).

A third method, ``fast`` (:func:`edgeseg.decode.crf_fast.fast_crf_logits`), approximates the same model for streams: mean
field on a grid whose long side is about ``size`` pixels, with the smoothness kernel as a separable
Gaussian and the appearance kernel between cells of a sparse bilateral grid (module section below).

Deviations: ``NO_NORMALIZATION`` is not offered (its result depends on the lattice's unnormalised
amplitude, which the exact kernel does not share); label compatibility is Potts only (pydensecrf
also takes a diagonal or full matrix).

::

    q = dense_crf(logits, rgb, CRFParams(iterations=5))     # [C, H, W] probabilities
    z = crf_fast.fast_crf_logits(logits, rgb, CRFParams(iterations=5))  # [C, H, W] log Q + a per-pixel constant
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from ..errors import InputError

Normalization = Literal["symmetric", "before", "after"]
Method = Literal["lattice", "exact", "fast"]
NORMALIZATIONS = ("symmetric", "before", "after")
METHODS = ("lattice", "exact", "fast")
FAST_SIZE = 128  # the fast method's grid: long side in pixels
UNARY_CLIP = 1e-5  # pydensecrf.utils.unary_from_softmax's default


@dataclass(frozen=True)
class CRFParams:
    """A fully connected CRF with pydensecrf's common settings. Positions in pixels of the grid
    the CRF runs on, colours in 0..255 units. A compat of 0 drops that kernel."""

    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    normalization: Normalization = "symmetric"

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool) or self.iterations < 0:
            raise InputError(f"CRF iterations must be an integer >= 0, got {self.iterations!r}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"CRF {name} must be > 0, got {getattr(self, name)!r}")
        if self.normalization not in NORMALIZATIONS:
            raise InputError(f"CRF normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")


# ---- features and unaries (pydensecrf's layouts: [D, N] and [C, N], pixels row-major) ----------

def spatial_features(height: int, width: int, sxy: float | tuple[float, float]) -> np.ndarray:
    """``float32 [2, H*W]``: ``(x / sx, y / sy)`` per pixel, row-major (``DenseCRF2D::addPairwiseGaussian``)."""
    sx, sy = (sxy, sxy) if np.isscalar(sxy) else sxy
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xx.ravel() / np.float32(sx), yy.ravel() / np.float32(sy)])


def bilateral_features(rgb: np.ndarray, sxy: float | tuple[float, float],
                       srgb: float | tuple[float, float, float]) -> np.ndarray:
    """``float32 [5, H*W]``: ``(x / sx, y / sy, r / sr, g / sg, b / sb)`` (``addPairwiseBilateral``)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"the CRF's image must be RGB [H, W, 3], got shape {list(rgb.shape)}")
    s = (srgb,) * 3 if np.isscalar(srgb) else srgb
    colour = rgb.reshape(-1, 3).T.astype(np.float32) / np.asarray(s, np.float32)[:, None]
    return np.concatenate([spatial_features(rgb.shape[0], rgb.shape[1], sxy), colour])


def softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``exp(x - max) / sum`` along ``axis`` (densecrf's ``expAndNormalize``)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def unary_from_softmax(probs: np.ndarray, clip: float | None = UNARY_CLIP) -> np.ndarray:
    """``float32 [C, N]`` = ``-log(clip(probs, clip, 1))`` for probabilities ``[C, ...]``
    (``pydensecrf.utils.unary_from_softmax`` without its optional ``scale``)."""
    p = np.clip(probs, clip, 1.0) if clip is not None else probs
    return (-np.log(p)).reshape(probs.shape[0], -1).astype(np.float32)


# ---- the two filters ----------------------------------------------------------------------------

class GaussianFilter(Protocol):
    n: int  # number of points

    def compute(self, values: np.ndarray) -> np.ndarray:
        """``[V, N]`` -> ``[V, N]``: ``out_i = sum_j K(f_i, f_j) values_j`` (self-term included)."""


class DenseGaussian:
    """Exact ``K v`` with ``K_ij = exp(-|f_i - f_j|^2 / 2)`` in float64, rows in blocks (O(N^2) time;
    ``K`` is kept when it has at most ``cache_entries`` entries)."""

    def __init__(self, features: np.ndarray, block: int = 1024, cache_entries: int = 1 << 22):
        self.f = np.ascontiguousarray(features, np.float64)
        self.sq = (self.f ** 2).sum(0)
        self.block = block
        self.n = n = self.f.shape[1]
        self._k = self._rows(0, n) if n * n <= cache_entries else None

    def _rows(self, start: int, stop: int) -> np.ndarray:
        fi = self.f[:, start:stop]
        d2 = self.sq[start:stop, None] + self.sq[None, :] - 2.0 * (fi.T @ self.f)
        return np.exp(-0.5 * np.maximum(d2, 0.0))

    def compute(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, np.float64)
        if self._k is not None:
            return v @ self._k.T
        n = self.f.shape[1]
        out = np.empty((v.shape[0], n), np.float64)
        for s in range(0, n, self.block):
            out[:, s:s + self.block] = v @ self._rows(s, min(s + self.block, n)).T
        return out


class Permutohedral:
    """densecrf's permutohedral lattice in numpy (module doc). ``features`` ``[d, N]``, already
    scaled so the kernel is ``exp(-|f_i - f_j|^2 / 2)`` (approximately)."""

    def __init__(self, features: np.ndarray, sse_padding: bool = True):
        f = np.ascontiguousarray(features, np.float32)
        d, n = f.shape
        self.d, self.n = d, n
        pad = (-n) % 4 if sse_padding else 0
        if pad:  # densecrf's SSE build elevates points 4 at a time, padding with zero features
            f = np.concatenate([f, np.zeros((d, pad), np.float32)], axis=1)
        rem0, rank, elevated = self._simplex(f)
        self.barycentric = self._barycentric(elevated, rem0, rank)[:n]  # [N, d+1]
        keys = self._vertex_keys(rem0, rank)  # [(N+pad)*(d+1), d] int64
        offset, self.neighbors = self._hash(keys)  # [N+pad, d+1], [d+1, 2, M]
        self.offset = np.ascontiguousarray(offset[:n])
        self.m = self.neighbors.shape[2]
        self.alpha = np.float32(1.0 / (1.0 + 2.0 ** -d))

    def _simplex(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Elevate onto the hyperplane, round to the nearest 0-coloured lattice point and rank the
        remainders (Adams et al. 2010, pp. 5-10)."""
        d, n = f.shape
        inv_std = np.float32(np.sqrt(2.0 / 3.0) * (d + 1))
        scale = np.array([1.0 / np.sqrt((i + 2) * (i + 1)) * float(inv_std) for i in range(d)], np.float32)
        elevated = np.empty((d + 1, n), np.float32)
        sm = np.zeros(n, np.float32)
        for j in range(d, 0, -1):
            cf = f[j - 1] * scale[j - 1]
            elevated[j] = sm - np.float32(j) * cf
            sm += cf
        elevated[0] = sm
        down = np.float32(1.0 / (d + 1))
        v = np.rint(elevated * down)  # ties to even, as _mm_cvtps_epi32
        rem0 = v * np.float32(d + 1)
        total = v.sum(0)
        diff = elevated - rem0
        rank = np.zeros((d + 1, n), np.float32)
        for i in range(d):
            for j in range(i + 1, d + 1):
                c = (diff[i] < diff[j]).astype(np.float32)
                rank[i] += c
                rank[j] += 1 - c
        rank += total
        add = np.where(rank < 0, np.float32(d + 1), np.float32(0))
        sub = np.where(rank >= d + 1, np.float32(d + 1), np.float32(0))
        rank += add - sub
        rem0 += add - sub
        return rem0, rank.astype(np.int64), elevated

    def _barycentric(self, elevated: np.ndarray, rem0: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """``[N, d+1]`` barycentric weights: remainder ``i`` adds ``v_i`` at ``d - rank_i`` and
        subtracts it at the next slot; the ranks of a point are a permutation, so one scatter does it."""
        d = self.d
        v = (elevated - rem0) * np.float32(1.0 / (d + 1))
        placed = np.empty_like(v)
        np.put_along_axis(placed, d - rank, v, axis=0)  # placed[d - rank_i] = v_i
        bary = placed.copy()
        bary[1:] -= placed[:-1]
        bary[0] += np.float32(1) - placed[d]  # the wrap-around: slot d+1 folds onto slot 0
        return np.ascontiguousarray(bary.T)

    def _vertex_keys(self, rem0: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """The ``d+1`` enclosing vertices of each point: ``key_i = rem0_i + canonical[r, rank_i]``
        for the first ``d`` coordinates (the last one is implied: coordinates sum to 0)."""
        d = self.d
        r = np.arange(d + 1)[:, None, None]
        canonical = np.where(rank[None, :d] <= d - r, r, r - (d + 1))  # [d+1 (remainder), d, N]
        keys = rem0[None, :d].astype(np.int64) + canonical
        return keys.transpose(2, 0, 1).reshape(-1, d)  # point-major: [N*(d+1), d]

    def _hash(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Number the distinct vertices and find, per lattice axis, each vertex's two neighbours
        (``key -/+ 1`` on every coordinate, ``+/- d`` on the axis's own; -1 (here: M) when absent)."""
        d = self.d
        lo = keys.min(0) - (d + 1)
        radix = keys.max(0) + (d + 1) - lo + 1
        if float(np.prod(radix.astype(np.float64))) >= 2.0 ** 62:
            raise InputError("the CRF's features span too many lattice cells to index",
                             fix="use larger sxy/srgb (the features are positions and colours divided by them)")
        mult = np.concatenate([[1], np.cumprod(radix[:-1])]).astype(np.int64)

        def code(k: np.ndarray) -> np.ndarray:
            return (k - lo) @ mult

        uniq, inverse = np.unique(code(keys), return_inverse=True)
        verts = np.empty((uniq.size, d), np.int64)
        verts[inverse] = keys
        m = uniq.size
        neighbors = np.empty((d + 1, 2, m), np.int64)
        for j in range(d + 1):
            for side, (all_shift, own_shift) in enumerate(((-1, d), (1, -d))):
                k = verts + all_shift
                if j < d:
                    k[:, j] = verts[:, j] + own_shift
                c = code(k)
                pos = np.minimum(np.searchsorted(uniq, c), m - 1)
                neighbors[j, side] = np.where(uniq[pos] == c, pos, m)
        return inverse.reshape(-1, d + 1), neighbors

    def compute(self, values: np.ndarray) -> np.ndarray:
        """``[V, N]`` -> ``[V, N]`` float32: splat, blur along axes 0..d, slice."""
        v = np.ascontiguousarray(np.asarray(values, np.float32).T)  # [N, V]
        nv = v.shape[1]
        lat = np.zeros((self.m + 1, nv), np.float32)  # row M stays 0: the "absent neighbour"
        flat_off = self.offset.ravel()
        w = self.barycentric.ravel()
        rep = np.repeat(v, self.d + 1, axis=0) * w[:, None]
        for c in range(nv):
            lat[:self.m, c] = np.bincount(flat_off, rep[:, c], minlength=self.m)
        half = np.float32(0.5)
        for j in range(self.d + 1):
            n1, n2 = self.neighbors[j]
            new = lat.copy()
            new[:self.m] += half * (lat[n1] + lat[n2])
            lat = new
        wa = self.barycentric * self.alpha
        out = np.einsum("nr,nrv->nv", wa, lat[self.offset])
        return np.ascontiguousarray(out.T)


# ---- pairwise terms and mean field --------------------------------------------------------------

class PairwiseTerm:
    """A normalised Gaussian kernel with Potts weight ``compat`` (densecrf's ``PairwisePotential``
    with ``PottsCompatibility``): :meth:`message` is the ``-w * filter(Q)`` the update subtracts."""

    def __init__(self, kernel: GaussianFilter, compat: float, normalization: Normalization = "symmetric"):
        if normalization not in NORMALIZATIONS:
            raise InputError(f"CRF normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        self.kernel, self.compat, self.normalization = kernel, float(compat), normalization
        k1 = kernel.compute(np.ones((1, kernel.n), np.float32))[0]
        self.norm = (1.0 / np.sqrt(k1 + 1e-20) if normalization == "symmetric" else 1.0 / (k1 + 1e-20)).astype(k1.dtype)

    def filter(self, q: np.ndarray) -> np.ndarray:
        pre = self.normalization in ("symmetric", "before")
        out = self.kernel.compute(q * self.norm if pre else q)
        return out * self.norm if self.normalization in ("symmetric", "after") else out

    def message(self, q: np.ndarray) -> np.ndarray:
        return -self.compat * self.filter(q)


def mean_field(unary: np.ndarray, terms: list[PairwiseTerm], iterations: int) -> np.ndarray:
    """``DenseCRF::inference``: ``Q = softmax(-U)``; ``iterations`` times ``Q = softmax(-U - sum_k
    message_k(Q))``. ``unary`` ``[C, N]``; returns ``Q`` ``[C, N]`` (float64 for exact kernels)."""
    q = softmax(-unary)
    for _ in range(iterations):
        logits = -unary
        for t in terms:
            logits = logits - t.message(q)
        q = softmax(logits)
    return q


def crf_terms(rgb: np.ndarray, params: CRFParams, method: Method = "lattice") -> list[PairwiseTerm]:
    """The smoothness and appearance terms of ``params`` on an RGB ``uint8 [H, W, 3]`` image
    (``lattice`` or ``exact``; the ``fast`` method builds its own, :mod:`edgeseg.decode.crf_fast`)."""
    if method not in ("lattice", "exact"):
        raise InputError(f"CRF method must be lattice or exact here, got {method!r}")
    build = Permutohedral if method == "lattice" else DenseGaussian
    h, w = rgb.shape[:2]
    terms = []
    if params.gaussian_compat:
        terms.append(PairwiseTerm(build(spatial_features(h, w, params.gaussian_sxy)), params.gaussian_compat,
                                  params.normalization))
    if params.bilateral_compat:
        feats = bilateral_features(np.ascontiguousarray(rgb, np.uint8), params.bilateral_sxy, params.bilateral_srgb)
        terms.append(PairwiseTerm(build(feats), params.bilateral_compat, params.normalization))
    return terms


def _check_inputs(logits: np.ndarray, rgb: np.ndarray, method: str) -> None:
    if method not in METHODS:
        raise InputError(f"CRF method must be one of {', '.join(METHODS)}, got {method!r}")
    if logits.ndim != 3:
        raise InputError(f"the CRF's logits must be [C, H, W], got shape {list(logits.shape)}")
    c, h, w = logits.shape
    if rgb.shape[:2] != (h, w):
        raise InputError(f"the CRF's image is {rgb.shape[1]}x{rgb.shape[0]} but the logits are {w}x{h}",
                         fix="resize the image to the logits' size first")


def dense_crf(logits: np.ndarray, rgb: np.ndarray, params: CRFParams = CRFParams(), method: Method = "lattice",
              clip: float | None = UNARY_CLIP, fast_size: int = FAST_SIZE) -> np.ndarray:
    """Mean-field marginals ``[C, H, W]`` of the fully connected CRF for ``logits`` ``[C, H, W]``
    and an RGB ``uint8 [H, W, 3]`` image of the same size: pydensecrf's
    ``DenseCRF2D(W, H, C)`` + ``setUnaryEnergy(unary_from_softmax(softmax(logits)))`` +
    ``addPairwiseGaussian`` + ``addPairwiseBilateral`` + ``inference(iterations)``.
    ``method="fast"``: the approximation of :func:`edgeseg.decode.crf_fast.fast_crf_logits` on a ``fast_size`` grid."""
    _check_inputs(logits, rgb, method)
    c, h, w = logits.shape
    if method == "fast":
        from .crf_fast import fast_crf_logits

        return softmax(fast_crf_logits(logits, rgb, params, fast_size, clip=clip))
    unary = unary_from_softmax(softmax(np.asarray(logits, np.float64)), clip)
    if method == "exact":
        unary = unary.astype(np.float64)
    q = mean_field(unary, crf_terms(rgb, params, method), params.iterations)
    return q.reshape(c, h, w)
