"""Semantic segmentation decoding: logits or in-graph labels -> :class:`SemanticResult` at the
original image size.

Steps: pick the semantic output (by the manifest's output specs: kind ``logits`` float ``[1, C, h, w]``
or ``[1, h, w, C]``, kind ``labels`` integer ``[1, h, w]``); undo the letterbox by cropping the content
region (``meta.content`` at ``(pad_top, pad_left)`` in network pixels, scaled to the output's
resolution); resize to the original size.

Resizing choice (:class:`~edgeseg.structures.SemanticOptions` ``upsample`` in the manifest, or the ``upsample`` argument):

* ``"logits"`` (default, the accurate path used by evaluation): when the crop is smaller than the
  image (a fixed network size, or a stride-8 output) the **logits are resized bilinearly** (OpenCV,
  one plane per class, half-pixel centres as PyTorch's ``align_corners=False``) and the argmax taken
  after: smooth boundaries, as the models are trained. Without confidence only the pixels whose four
  source pixels disagree on the arg-max are interpolated (the rest provably keep it; the same labels
  up to exact ties, which go to the lower id; :func:`_upsampled_argmax`, ``tools/bench/semantic_decode.py``).
* ``"labels"``: argmax first, then the labels resized nearest-exact: about 10x cheaper at 960x540,
  blocky boundaries (about 1% of the pixels of a 6-class 160x120 output differ; more with more
  classes). A stream may choose it (``StreamOptions.upsample``); evaluation keeps the default.

Otherwise (crop at or above the image size) the argmax is taken first and the labels resized
nearest-exact, which is cheaper and loses nothing. Labels outputs are always resized nearest-exact.
The optional confidence is the softmax probability of the chosen class, ``1 / sum_c exp(l_c - max)``.

With ``SemanticOptions.crf_iterations > 0`` the cropped logits are first refined by the fully
connected CRF (:mod:`edgeseg.decode.crf`) at their own resolution, with the original image resized
to it (area-averaged when shrinking); its marginals ``Q`` continue as logits ``log Q``, so the
resizing above and the confidence (then the CRF's ``Q`` of the chosen class) are unchanged.
``crf_method="fast"`` runs the mean field on a ``crf_fast_size`` grid and returns ``log Q`` (up to a
per-pixel constant) at the logits' resolution (:func:`edgeseg.decode.crf_fast.fast_crf_logits`).
The CRF needs the image: pass ``image=`` to :func:`decode_semantic`.

Broken outputs: logits holding NaN (no class is defined there) are an :class:`UnsupportedError`
naming the output; ``+/-inf`` logits (an fp16 overflow) are clamped to ``+/-LOGIT_LIMIT`` (same
argmax, finite confidence). The checks look at the low-resolution logits or the per-pixel maximum
the argmax computes anyway. A labels output holding ids its label maps cannot hold (negative, or above
255 for up to 256 classes) is an error too (a cast would wrap 999 into class 231); ids from C up to 255
pass as void, as before (a model's own ignore id: drawn black, named by number).
"""
from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..errors import InputError, UnsupportedError
from ..structures import ImageShape, SemanticOptions, SemanticResult
from . import DECODERS
from .geometry import content_box

log = logging.getLogger("edgeseg.decode")

if TYPE_CHECKING:
    from ..structures import PreprocessMeta
    from ..structures.manifest import Manifest

def semantic_output(outputs: Mapping[str, np.ndarray], manifest: "Manifest") -> tuple[str, str, np.ndarray]:
    """(name, kind, array) of the semantic output: by the manifest's specs, then by the names
    ``logits``/``labels`` (the torch backend's), then the only output by its dtype."""
    for spec in manifest.outputs:
        if spec.kind in ("logits", "labels") and spec.name in outputs:
            return spec.name, spec.kind, np.asarray(outputs[spec.name])
    for kind in ("logits", "labels"):
        if kind in outputs:
            return kind, kind, np.asarray(outputs[kind])
    if len(outputs) == 1:
        name, arr = next(iter(outputs.items()))
        arr = np.asarray(arr)
        return name, "logits" if np.issubdtype(arr.dtype, np.floating) else "labels", arr
    want = [s.name for s in manifest.outputs]
    raise UnsupportedError(
        f"bundle {manifest.name!r}: no semantic output among {sorted(outputs)} (the manifest lists {want})",
        fix="the manifest's outputs must name the model's logits or labels output",
    )


_MISMATCH_SAID: set[tuple[str, int, int]] = set()


def _logits_3d(arr: np.ndarray, manifest: "Manifest", layout: str | None = None) -> tuple[np.ndarray, int]:
    """``[1, C, h, w]`` / ``[1, h, w, C]`` / ``[C, h, w]`` -> (a 3-D view, its channel axis: 0 or 2)."""
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise InputError(f"decode_semantic decodes one image at a time; got a batch of {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim != 3:
        raise UnsupportedError(f"logits must be [1, C, h, w], got shape {list(arr.shape)}")
    c = manifest.num_classes
    guessed = layout is None
    if layout is None:  # infer: channels are the axis that matches the class count (NCHW on ties)
        layout = "NHWC" if arr.shape[0] != c and arr.shape[2] == c else "NCHW"
    axis = 2 if layout == "NHWC" else 0
    if arr.shape[axis] != c and (manifest.name, arr.shape[axis], c) not in _MISMATCH_SAID:
        _MISMATCH_SAID.add((manifest.name, arr.shape[axis], c))  # once per bundle: said, not repeated per frame
        log.warning("bundle %r: the model scores %d classes (%s logits %s%s) but its manifest lists %d (%s%s): %s; the "
                    "manifest's classes must name every class the model scores, in its order (restore the manifest "
                    "from a copy, or re-import the model with --classes/--names)", manifest.name, arr.shape[axis],
                    layout, list(arr.shape), "; the layout guessed: the decoder option logits_layout sets it"
                    if guessed and arr.shape[2] != c else "", c, ", ".join(manifest.classes[:4]),
                    ", ..." if c > 4 else "", "the classes past the list are reported by number"
                    if arr.shape[axis] > c else "the classes past the model's never occur")
    return arr, axis


#: ``+/-inf`` logits (an fp16 overflow) are clamped to ``+/-LOGIT_LIMIT`` before decoding: the same
#: argmax (ties between ``+inf`` classes go to the lower id, as any tie), a finite confidence (``1 / n``
#: between ``n`` classes at ``+inf``) and no ``inf * 0 = NaN`` in the bilinear resize
LOGIT_LIMIT = 1e30


def finite_logits(x: np.ndarray, manifest: "Manifest", name: str = "logits") -> np.ndarray:
    """``x`` when it is all finite; else a ``float32`` copy with ``+/-inf`` clamped to
    ``+/-LOGIT_LIMIT``, or an error naming the output when it holds NaN (no class is defined there).
    Callers look first with a cheap test (the low-resolution logits, or the running maximum, which NaN
    and ``+inf`` reach); this full pass runs on bad outputs only."""
    if np.isfinite(x).all():
        return x
    nan = int(np.count_nonzero(np.isnan(x)))
    if nan:
        raise UnsupportedError(
            f"bundle {manifest.name!r}: the {name!r} output holds NaN ({nan} of its {x.size} values): the model "
            "computed no class scores there",
            fix="the model is broken for this input (an fp16 overflow or a faulty export): re-export or re-import "
                "it in fp32 ('edgeseg import' runs it on a test frame), or check the frame it was given")
    return np.clip(x, -LOGIT_LIMIT, LOGIT_LIMIT, dtype=np.float32)


def _argmax_chw(chw: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(argmax over axis 0, max) by a running maximum over the channel planes: contiguous passes,
    faster than ``argmax(axis=0)`` for the tens of classes segmentation has; first index wins ties."""
    best = chw[0].astype(np.float32, copy=True)
    idx = np.zeros(best.shape, dtype)
    for k in range(1, chw.shape[0]):
        better = chw[k] > best
        np.maximum(best, chw[k], out=best)
        idx[better] = k
    return idx, best


def _resize_planes(chw: np.ndarray, size: ImageShape) -> np.ndarray:
    """``[C, h, w]`` -> ``float32 [C, H, W]`` bilinear (half-pixel centres), one contiguous plane per
    class: OpenCV's single-channel path is several times faster than its C-channel one, and the
    planes feed :func:`_argmax_chw` without a transpose."""
    import cv2

    out = np.empty((chw.shape[0], size.height, size.width), np.float32)
    for k in range(chw.shape[0]):
        cv2.resize(np.ascontiguousarray(chw[k], dtype=np.float32), size.wh, dst=out[k], interpolation=cv2.INTER_LINEAR)
    return out


#: above this size of every class plane at the image's size, labels are taken plane by plane (an audit: an 8000x6000
#: frame of a noisy model's map, 11 classes, allocated 2.1 GB of planes: +2.4 GB of RSS)
PLANES_BUDGET_BYTES = 256 << 20


def _resized_argmax(chw: np.ndarray, size: ImageShape, dtype: np.dtype) -> np.ndarray:
    """:func:`_argmax_chw` of :func:`_resize_planes`, one class plane at a time (the same labels: the same bilinear
    planes, the same running maximum, first class winning ties), holding two planes instead of all of them."""
    import cv2

    best = np.empty((size.height, size.width), np.float32)
    plane = np.empty_like(best)
    cv2.resize(np.ascontiguousarray(chw[0], dtype=np.float32), size.wh, dst=best, interpolation=cv2.INTER_LINEAR)
    idx = np.zeros(best.shape, dtype)
    for k in range(1, chw.shape[0]):
        cv2.resize(np.ascontiguousarray(chw[k], dtype=np.float32), size.wh, dst=plane, interpolation=cv2.INTER_LINEAR)
        better = plane > best
        np.maximum(best, plane, out=best)
        idx[better] = k
    return idx


@functools.lru_cache(maxsize=32)
def _axis_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis, half-pixel centres, edge clamped (OpenCV's ``INTER_LINEAR``):
    (first source index, second source index, weight of the second). Cached per size pair (a stream
    asks for the same ones every frame) and read-only."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    taps = (i0, np.minimum(i0 + 1, n_in - 1), pos - i0)
    for t in taps:
        t.setflags(write=False)
    return taps


#: share of source cells on a label boundary (about the share of output pixels to interpolate) above
#: which resizing every class plane is cheaper than interpolating only those pixels. 960x540 from
#: 480x360, 11 classes, Intel Xeon (AVX-512), one thread: boundary-only 8 ms at ~5 % (a trained model
#: on the dash-cam video), 15 ms at 10 %, 61 ms at 32 %, 210 ms on a random-weight model's noise;
#: every plane resized 9-23 ms whatever the share (same labels). Since session 20 the interpolation
#: runs class by class in place with a running maximum (14.8 -> 10.5 ms for a dash-cam frame, side by
#: side); the threshold was kept, so it errs towards resizing every plane
MAX_BOUNDARY_SHARE = 0.08


def _upsampled_argmax(chw: np.ndarray, size: ImageShape, dtype: np.dtype,
                      max_share: float = MAX_BOUNDARY_SHARE) -> np.ndarray | None:
    """argmax of the bilinearly resized ``[C, h, w]`` logits at ``size``, interpolating only near label
    boundaries; ``None`` when the label dtype has no spare value to mark them.

    An output pixel is a convex combination of the four source pixels around it, and so is every class
    difference ``l_a - l_b``: where those four share one argmax, the resized pixel has it too (ties go to
    the lower id on both sides). Only pixels whose four sources disagree are interpolated (in float64, with
    OpenCV's taps: exact ties go to the lower id as in the float64 reference, where OpenCV's float32
    rounding may pick either); the rest are one gather of the low-resolution arg-max. At 960x540 from 480x360
    with 11 classes that is about 5 % of the pixels (measured on the dash-cam video). Where more than
    :data:`MAX_BOUNDARY_SHARE` of them are (a noisy label map: an under-trained or random-weight model,
    heavy texture), resizing every plane is cheaper and this returns ``None`` (``max_share``: 1 always
    interpolates, as ``tools/bench/semantic_decode.py`` times it)."""
    c, h, w = chw.shape
    mark = np.iinfo(dtype).max
    if c > mark:
        return None
    low, _ = _argmax_chw(chw, dtype)
    nxt_r = np.concatenate([low[1:], low[-1:]], 0)  # the source's lower neighbour, edge clamped
    nxt_c = np.concatenate([low[:, 1:], low[:, -1:]], 1)
    nxt_rc = np.concatenate([nxt_r[:, 1:], nxt_r[:, -1:]], 1)
    agree = (low == nxt_r) & (low == nxt_c) & (low == nxt_rc)
    if agree.size - np.count_nonzero(agree) > max_share * agree.size:  # source cells on a boundary
        return None
    cell = np.where(agree, low, dtype.type(mark))
    y0, y1, fy = _axis_taps(size.height, h)
    x0, x1, fx = _axis_taps(size.width, w)
    out = np.take(np.take(cell, y0, axis=0), x0, axis=1)
    at = np.flatnonzero(out == mark)
    for s in range(0, at.size, INTERPOLATED_CHUNK):  # bounded memory: ~160 bytes a pixel interpolated at once
        part = at[s:s + INTERPOLATED_CHUNK]
        out.reshape(-1)[part] = _interpolated_argmax(chw, part, size.width, (y0, y1, fy), (x0, x1, fx), dtype)
    return out


#: the boundary share up to which a photo too large for two full-size planes is interpolated pixel by pixel (above it, a
#: noisy map: plane by plane is 10x faster for ~10 % more memory; the review, 6000x6000 from 160x160: 0.57 s, 5.5 s)
LARGE_BOUNDARY_SHARE = 0.3

#: boundary pixels interpolated at once by :func:`_upsampled_argmax`: its float64 work arrays take ~160 bytes a
#: pixel, so an 8000x8000 photo's 3 million boundary pixels took 680 MB at once (a batch audit); 1 << 18 keeps them
#: to ~40 MB, and a 960x540 frame's (~26,000) still go in one piece
INTERPOLATED_CHUNK = 1 << 18


def _interpolated_argmax(chw: np.ndarray, at: np.ndarray, width: int, ytaps, xtaps, dtype: np.dtype) -> np.ndarray:
    """argmax over classes of the bilinear logits at the flat output pixels ``at`` (in float64, the
    reference's order: along rows, then between them; ties to the lower id), class by class over 1-D
    planes: contiguous takes, in-place arithmetic and a running maximum, with no ``[C, n]`` array."""
    (y0, y1, fy), (x0, x1, fx) = ytaps, xtaps
    w = chw.shape[2]
    rr, cc = np.divmod(at, width)
    ra, rb, wy = y0[rr] * w, y1[rr] * w, fy[rr]
    xa, xb, wx = x0[cc], x1[cc], fx[cc]
    taps = (ra + xa, ra + xb, rb + xa, rb + xb)
    ux, uy = 1 - wx, 1 - wy
    top, bottom, tmp, best = (np.empty(at.size) for _ in range(4))
    idx = np.zeros(at.size, dtype)
    for k in range(chw.shape[0]):
        a, b, d, e = (np.take(chw[k].reshape(-1), t) for t in taps)
        np.multiply(a, ux, out=top)
        np.multiply(b, wx, out=tmp)
        top += tmp
        top *= uy
        np.multiply(d, ux, out=bottom)
        np.multiply(e, wx, out=tmp)
        bottom += tmp
        bottom *= wy
        top += bottom  # (a ux + b wx) uy + (d ux + e wx) wy
        if k == 0:
            best[:] = top
            continue
        better = top > best  # strictly: the lower id keeps a tie
        np.maximum(best, top, out=best)
        idx[better] = k
    return idx


def resize_labels(labels: np.ndarray, size: ImageShape) -> np.ndarray:
    """Nearest-exact resize (pixel centres: ``src = floor((dst + 0.5) * in / out)``)."""
    import cv2

    if ImageShape.of(labels) == size:
        return labels
    dtype = labels.dtype
    work = labels if dtype in (np.uint8, np.int32, np.uint16, np.int16) else labels.astype(np.int32)
    return cv2.resize(np.ascontiguousarray(work), size.wh, interpolation=cv2.INTER_NEAREST_EXACT).astype(dtype, copy=False)


def _label_dtype(num: int) -> np.dtype:
    return np.dtype(np.uint8) if num <= 256 else np.dtype(np.int32)


def _confidence(x: np.ndarray, axis: int, mx: np.ndarray | None = None, probabilities: bool = False) -> np.ndarray:
    """The chosen class's softmax probability; for ``probabilities`` scores, the chosen score over their sum."""
    m = x.max(axis=axis, keepdims=True) if mx is None else np.expand_dims(mx, axis)
    if probabilities:
        total = np.maximum(x, 0).sum(axis=axis)
        return np.divide(np.squeeze(m, axis), total, out=np.zeros_like(total), where=total > 0).astype(np.float32)
    return (1.0 / np.exp(x - m).sum(axis=axis)).astype(np.float32)


UPSAMPLE_MODES = ("logits", "labels")


def _upsample_mode(manifest: "Manifest", upsample: str | None) -> str:
    mode = upsample or "logits"
    if mode not in UPSAMPLE_MODES:
        raise InputError(f"bundle {manifest.name!r}: decoder upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}")
    return mode


def logits_to_labels(logits: np.ndarray, meta: "PreprocessMeta", manifest: "Manifest",
                     confidence: bool = False, upsample: str | None = None,
                     layout: str | None = None, name: str = "logits",
                     probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and the confidence) at ``meta.original`` (module doc). Logits holding NaN are an error
    naming output ``name``; ``+/-inf`` are clamped (:func:`finite_logits`). ``probabilities``: the scores
    are non-negative class scores, not logits (the confidence is the chosen one's share)."""
    x, caxis = _logits_3d(logits, manifest, layout)
    hw = x.shape[1:] if caxis == 0 else x.shape[:2]
    y0, y1, x0, x1 = content_box(meta, ImageShape(*hw))
    x = x[:, y0:y1, x0:x1] if caxis == 0 else x[y0:y1, x0:x1]
    size, crop = meta.original, ImageShape(y1 - y0, x1 - x0)
    dtype = _label_dtype(x.shape[caxis])
    mode = _upsample_mode(manifest, upsample)
    if crop != size and mode != "labels" and (crop.height < size.height or crop.width < size.width):
        chw = finite_logits(x if caxis == 0 else x.transpose(2, 0, 1), manifest, name)  # below image size: cheap
        labels = None if confidence else _upsampled_argmax(chw, size, dtype)
        if labels is not None:
            return labels, None
        if not confidence and chw.shape[0] * size.height * size.width * 4 > PLANES_BUDGET_BYTES:
            if size.height * size.width * 9 > PLANES_BUDGET_BYTES:  # even two planes too many: a photo of 30 Mpx and up
                labels = _upsampled_argmax(chw, size, dtype, max_share=LARGE_BOUNDARY_SHARE)  # in chunks, ~2 B a pixel
                if labels is not None:
                    return labels, None
            return _resized_argmax(chw, size, dtype), None
        planes = _resize_planes(chw, size)
        labels, mx = _argmax_chw(planes, dtype)
        return labels, (_confidence(planes, 0, mx, probabilities) if confidence else None)
    if caxis == 0:
        labels, mx = _argmax_chw(x, dtype)
        if not np.isfinite(mx).all():  # NaN and +inf reach the running maximum (so does a pixel all -inf)
            x = finite_logits(x, manifest, name)
            labels, mx = _argmax_chw(x, dtype)
        conf = _confidence(x, 0, mx, probabilities) if confidence else None
    else:
        at = x.argmax(axis=2)  # NaN wins numpy's argmax: the chosen values show it, as +inf
        if not np.isfinite(np.take_along_axis(x, at[..., None], 2)).all():
            x = finite_logits(x, manifest, name)
            at = x.argmax(axis=2)
        labels = at.astype(dtype)
        conf = _confidence(x, 2, None, probabilities) if confidence else None
    if crop != size:
        labels = resize_labels(labels, size)
        if conf is not None:
            conf = resize_labels(conf.view(np.int32), size).view(np.float32)  # nearest on the raw bits
    return labels, conf


def labels_to_labels(labels: np.ndarray, meta: "PreprocessMeta", manifest: "Manifest", name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise UnsupportedError(f"labels output must be [1, h, w], got shape {list(labels.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise UnsupportedError(f"labels output must be integer, got {arr.dtype}")
    y0, y1, x0, x1 = content_box(meta, ImageShape.of(arr))
    arr = arr[y0:y1, x0:x1]
    dtype = _label_dtype(manifest.num_classes)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > np.iinfo(dtype).max:  # a cast would wrap 999 into class 231 and -1 into 255: silently wrong
        raise UnsupportedError(
            f"bundle {manifest.name!r}: the {name!r} output holds labels {lo}..{hi}, which {dtype} label maps of the "
            f"bundle's {manifest.num_classes} classes cannot hold (ids 0..{manifest.num_classes - 1}; ids up to "
            f"{np.iinfo(dtype).max} pass as void)",
            fix="the manifest's classes must list every class the model predicts: re-import it with the right "
                "--classes")
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    return resize_labels(arr, meta.original)


def crf_logits(logits: np.ndarray, meta: "PreprocessMeta", manifest: "Manifest", opts: SemanticOptions,
               image: np.ndarray | None, layout: str | None = None,
               name: str = "logits") -> tuple[np.ndarray, "PreprocessMeta"]:
    """The content region of ``logits`` refined by the CRF of ``opts``: (``float32 [C, h, w]`` = log Q,
    the meta of an output that is all content)."""
    import cv2

    from ..structures import PreprocessMeta
    from .crf import CRFParams, dense_crf
    from .crf_fast import fast_crf_logits

    if image is None:
        raise InputError(f"bundle {manifest.name!r}: the CRF (decoder option crf_iterations="
                         f"{opts.crf_iterations}) needs the image the logits came from",
                         fix="pass image=rgb to decode_semantic, or set crf_iterations=0")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or ImageShape.of(image) != meta.original:
        raise InputError(f"the CRF's image must be the original RGB uint8 {meta.original.width}x"
                         f"{meta.original.height}x3 image, got {image.dtype} {list(image.shape)}")
    x, caxis = _logits_3d(logits, manifest, layout)
    chw = x if caxis == 0 else x.transpose(2, 0, 1)
    y0, y1, x0, x1 = content_box(meta, ImageShape(*chw.shape[1:]))
    chw = finite_logits(chw[:, y0:y1, x0:x1], manifest, name)  # one pass: the CRF costs hundreds
    crop = ImageShape(y1 - y0, x1 - x0)
    shrink = crop.height < meta.original.height or crop.width < meta.original.width
    rgb = image if crop == meta.original else cv2.resize(
        image, crop.wh, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    params = CRFParams(iterations=opts.crf_iterations, gaussian_sxy=opts.crf_gaussian_sxy,
                       gaussian_compat=opts.crf_gaussian_compat, bilateral_sxy=opts.crf_bilateral_sxy,
                       bilateral_srgb=opts.crf_bilateral_srgb, bilateral_compat=opts.crf_bilateral_compat)
    if opts.crf_method == "fast":  # log Q up to a per-pixel constant: the same argmax and softmax
        refined = fast_crf_logits(np.asarray(chw, np.float32), rgb, params, opts.crf_fast_size)
    else:
        q = dense_crf(np.asarray(chw, np.float32), rgb, params, opts.crf_method)
        refined = np.log(np.maximum(q, 1e-30)).astype(np.float32)
    return refined, PreprocessMeta(meta.original, crop, crop)


def _biased(logits: np.ndarray, manifest: "Manifest", bias: tuple[float, ...],
            layout: str | None) -> tuple[np.ndarray, str]:
    """``logits`` plus ``bias`` along the class axis (a new ``float32`` array; the runtime's output is
    left alone) and the layout of the 3-D result."""
    x, caxis = _logits_3d(logits, manifest, layout)
    if len(bias) != x.shape[caxis]:
        raise InputError(f"bundle {manifest.name!r}: decoder option class_bias has {len(bias)} values for "
                         f"{x.shape[caxis]} classes", fix="give one value per class, in the bundle's class order")
    b = np.asarray(bias, np.float32)
    return (x + (b[:, None, None] if caxis == 0 else b)).astype(np.float32, copy=False), ("NCHW" if caxis == 0 else "NHWC")


def class_logits(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                 options: SemanticOptions | None = None) -> np.ndarray:
    """The logits a semantic bundle's decoder takes its argmax of, as ``float32 [C, H, W]`` at
    ``meta.original``: the content region (letterbox padding cut away), the decoder's ``class_bias``
    added, resized bilinearly. For soft targets (distillation, :mod:`edgeseg.train.distill`) and
    ensembles; the labels :func:`decode_semantic` gives are their argmax (up to resize rounding)."""
    opts = options or manifest.decoder_options
    _, kind, arr = semantic_output(outputs, manifest)
    if kind != "logits":
        raise UnsupportedError(f"bundle {manifest.name!r} outputs labels, not logits: it has no class scores to give",
                               fix="export the model without the argmax in the graph")
    layout = opts.logits_layout if isinstance(opts, SemanticOptions) else None
    if isinstance(opts, SemanticOptions) and opts.scores == "probabilities":  # logits to bias, average or distil
        arr = np.log(np.maximum(np.asarray(arr, np.float32), 1e-12))
    if isinstance(opts, SemanticOptions) and opts.class_bias:
        arr, layout = _biased(arr, manifest, opts.class_bias, layout)
    x, caxis = _logits_3d(arr, manifest, layout)
    chw = x if caxis == 0 else x.transpose(2, 0, 1)
    y0, y1, x0, x1 = content_box(meta, ImageShape(*chw.shape[1:]))
    chw = finite_logits(chw[:, y0:y1, x0:x1], manifest)
    if tuple(chw.shape[1:]) == (meta.original.height, meta.original.width):
        return np.ascontiguousarray(chw, np.float32)
    return _resize_planes(chw, meta.original)


@DECODERS.register("semantic")
def decode_semantic(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                    options: SemanticOptions | None = None, *, confidence: bool | None = None,
                    upsample: str | None = None, image: np.ndarray | None = None) -> SemanticResult:
    """Model outputs for one image -> labels ``[H, W]`` at ``meta.original`` (see the module doc).
    ``upsample`` overrides the bundle's ``SemanticOptions.upsample`` (``logits`` or ``labels``).
    ``image``: the original RGB ``uint8 [H, W, 3]``, needed only when the options ask for the CRF."""
    opts = options or manifest.decoder_options
    if not isinstance(opts, SemanticOptions):
        raise UnsupportedError(f"bundle {manifest.name!r} is a {manifest.task} bundle, not a semantic one")
    name, kind, arr = semantic_output(outputs, manifest)
    want_conf = opts.confidence if confidence is None else confidence
    layout = opts.logits_layout
    probabilities = kind == "logits" and opts.scores == "probabilities"
    if probabilities and (opts.class_bias or opts.crf_iterations > 0):  # both read logits: take the scores' log
        arr, probabilities = np.log(np.maximum(np.asarray(arr, np.float32), 1e-12)), False
    if kind == "logits" and opts.class_bias:
        arr, layout = _biased(arr, manifest, opts.class_bias, layout)
    if kind == "logits" and opts.crf_iterations > 0:
        arr, meta = crf_logits(arr, meta, manifest, opts, image, layout, name)
        layout = "NCHW"
    if kind == "logits":
        labels, conf = logits_to_labels(arr, meta, manifest, want_conf, upsample or opts.upsample, layout, name,
                                        probabilities)
    else:
        labels, conf = labels_to_labels(arr, meta, manifest, name), None
    return SemanticResult(labels=np.ascontiguousarray(labels), classes=tuple(manifest.classes), confidence=conf)
