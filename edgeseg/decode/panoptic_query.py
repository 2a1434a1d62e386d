"""Panoptic decoding of mask-classification models: the ``query`` layout.

MaskFormer and Mask2Former (Cheng et al., "Per-Pixel Classification is Not All You Need for Semantic
Segmentation", NeurIPS 2021; "Masked-attention Mask Transformer for Universal Image Segmentation", CVPR
2022) end in ``Q`` queries, each a class distribution ``class_logits [1, Q, C+1]`` (the last class is "no
object") and a mask ``mask_logits [1, Q, h, w]`` (1/4 of the input). Their panoptic inference, as their
authors' code (Detectron2 projects: ``MaskFormer.panoptic_inference`` of each) and Hugging Face's image
processors (``post_process_panoptic_segmentation``) give it:

1. each query's score and class: the softmax's maximum over the ``C + 1`` classes; queries whose best
   class is "no object" or whose score is at or below ``score_threshold`` are dropped (0.8 in
   the authors' configs, 0.5 transformers' default);
2. each pixel goes to the kept query whose ``score * sigmoid(mask)`` is largest (ties: the first);
3. a query becomes a segment when it wins pixels and its own mask (``sigmoid >= mask_threshold``) is
   not empty, and the pixels it wins are at least (more than: ``transformers``) ``mask_area_ratio`` of
   that mask's area (0.8): a query that lost most of its mask to better ones is dropped; its pixels stay
   void;
4. the stuff classes' segments are merged into one per class (the first one's id and score).

Three conventions (``query_convention``), each reproduced where its code differs:

=============  ==============================  ==================================  ==================
convention     its own mask's area             pixels a segment gets               ratio test
=============  ==============================  ==================================  ==================
mask2former    ``sigmoid(mask) >= t``          the won ones inside its own mask    ``>=`` (double)
maskformer     ``sigmoid(mask) >= t``          every won one                       ``>=`` (double)
transformers   ``score * sigmoid(mask) >= t``  every won one                       ``>`` (float32)
=============  ==============================  ==================================  ==================

transformers merges only the ``label_ids_to_fuse`` a caller passes (the stuff classes here) and can give
two segments one id after a merge (its ``current_segment_id`` restarts from the merged id); edgeseg's ids
stay distinct.

Resolution: as the other layouts (:mod:`edgeseg.decode.panoptic`), the decision is made on the mask
grid and the id map sampled to the image (nearest, through the letterbox/resize geometry); areas
count image pixels (each grid cell weighs the image pixels it becomes). The references upsample every
query's mask to the image first (bilinear) and decide per image pixel: with ``Q`` = 100-200 queries at
1024x2048 that is 200-400 M values a frame, out of reach of an edge CPU's post-processing budget; on
the grid the two differ only along segment boundaries. At a 1:1 grid (the masks the size of the image)
the results are the references' (``tests/decode/test_panoptic_query.py``, against transformers itself).

Broken outputs: a query whose class logits hold NaN is dropped (``+/-inf`` logits behave as the
softmax's limits); NaN mask logits count as "no mask" at that pixel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..structures import ImageShape, PanopticOptions, PanopticResult
from ..structures.decoder_options import QUERY_CONVENTIONS
from .crf import softmax
from .panoptic import _class_tables, _get, _layout_error, finish_segments, grid_map

CONVENTIONS = QUERY_CONVENTIONS  # mask2former, maskformer, transformers (the options' own list)

if TYPE_CHECKING:
    from ..structures import PreprocessMeta
    from ..structures.manifest import Manifest


def query_scores(class_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(score float32 [Q], class int64 [Q])``: the softmax's maximum over ``C + 1`` classes and where
    it is (``C`` = no object); a row holding NaN scores 0 (dropped)."""
    x = np.asarray(class_logits, np.float32)
    bad = np.isnan(x).any(axis=1)
    x = np.where(np.isnan(x), 0.0, x)
    p = softmax(np.clip(x, -1e30, 1e30), axis=1)  # +/-inf as huge finite logits: the softmax's limits, no inf - inf
    labels = p.argmax(axis=1)
    scores = p[np.arange(len(p)), labels].astype(np.float32)
    scores[bad] = 0.0
    return scores, labels.astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 ``1 / (1 + exp(-x))`` in one buffer (NaN as a very negative logit)."""
    p = np.nan_to_num(np.asarray(x, np.float32), nan=-88.0)  # a copy: the caller's outputs stay as they are
    np.clip(p, -88.0, 88.0, out=p)
    np.negative(p, out=p)
    np.exp(p, out=p)
    p += 1.0
    return np.reciprocal(p, out=p)


def query_panoptic(class_logits: np.ndarray, mask_logits: np.ndarray, is_thing: np.ndarray, *,
                   score_threshold: float = 0.8, mask_threshold: float = 0.5, mask_area_ratio: float = 0.8,
                   convention: str = "mask2former", weights: np.ndarray | None = None
                   ) -> tuple[np.ndarray, list[tuple[int, float, bool]]]:
    """Mask-classification panoptic inference (module doc) on one image's ``class_logits [Q, C+1]`` and
    ``mask_logits [Q, h, w]``. ``is_thing``: bool ``[C]``; ``weights``: ``[h, w]`` image pixels per cell
    (areas; default 1 each). Returns the ``int32 [h, w]`` map of provisional ids (0 void, ``t`` the
    segment ``segments[t - 1]`` = (class, score, is_thing)) in query order. Only per-query numbers are
    looped over: the maps are decided in whole-array steps (the argmax, the areas by ``bincount`` and one
    matrix-vector product, the ids by a lookup)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    scaled_area = convention == "transformers"
    c1 = class_logits.shape[1]
    h, w = mask_logits.shape[1:]
    scores, labels = query_scores(class_logits)
    keep = np.flatnonzero((labels != c1 - 1) & (scores > score_threshold))
    segments: list[tuple[int, float, bool]] = []
    if len(keep) == 0:
        return np.zeros((h, w), np.int32), segments
    n = len(keep)
    weights = np.ones((h, w), np.float32) if weights is None else np.asarray(weights, np.float32)
    scaled = _sigmoid(mask_logits[keep])  # [K, h, w]
    if not scaled_area:  # the authors' code: its own mask on sigmoid(mask) >= t, before the scores scale it
        mine = scaled >= np.float32(mask_threshold)
    scaled *= scores[keep][:, None, None]
    winner = scaled.argmax(axis=0)  # ties: the first query, as torch's argmax
    if scaled_area:  # transformers: its own mask on score * sigmoid(mask) >= t
        mine = scaled >= np.float32(mask_threshold)
    del scaled
    flat_w = weights.ravel()
    won_area = np.bincount(winner.ravel(), weights=flat_w, minlength=n)
    own_area = mine.reshape(n, -1).astype(np.float32) @ flat_w
    # the pixels assigned: Mask2Former's, the won ones inside the winner's own mask; the others', every won one
    inside = np.take_along_axis(mine, winner[None], axis=0)[0] if convention == "mask2former" else None
    final_cells = np.bincount(winner[inside] if inside is not None else winner.ravel(), minlength=n)
    lut = np.zeros(n, np.int32)
    stuff_ids: dict[int, int] = {}
    for j, k in enumerate(keep.tolist()):
        if won_area[j] <= 0 or own_area[j] <= 0 or final_cells[j] == 0:
            continue
        if convention == "transformers":  # torch divides the two pixel counts in float32
            kept = float(np.float32(won_area[j]) / np.float32(own_area[j])) > mask_area_ratio
        else:  # the authors' code divides Python ints: a double
            kept = won_area[j] / own_area[j] >= mask_area_ratio
        if not kept:
            continue
        cls = int(labels[k])
        thing = bool(is_thing[cls])
        if not thing and cls in stuff_ids:
            lut[j] = stuff_ids[cls]
            continue
        segments.append((cls, float(scores[k]), thing))
        lut[j] = len(segments)
        if not thing:
            stuff_ids[cls] = len(segments)
    ids = lut[winner]
    if inside is not None:
        ids[~inside] = 0
    return ids, segments


def decode_query(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                 opts: PanopticOptions) -> PanopticResult:
    """``class_logits`` and ``mask_logits`` of one image -> :class:`PanopticResult` at ``meta.original``."""
    cls = _get(outputs, manifest, "query", "class_logits", 2)
    masks = _get(outputs, manifest, "query", "mask_logits", 3)
    c = manifest.num_classes
    if cls.shape[1] != c + 1:
        raise _layout_error(manifest, outputs, "query", f"class_logits has {cls.shape[1]} classes for {c} classes "
                                                        "plus no-object")
    if len(masks) != len(cls):
        raise _layout_error(manifest, outputs, "query", f"{len(cls)} class rows but {len(masks)} masks")
    is_thing, _, _ = _class_tables(manifest, opts)
    gm = grid_map(meta, ImageShape(*masks.shape[1:]))
    y0, y1, x0, x1 = gm.window
    ids, segs = query_panoptic(cls, masks[:, y0:y1, x0:x1], is_thing, score_threshold=opts.score_threshold,
                               mask_threshold=opts.mask_threshold, mask_area_ratio=opts.mask_area_ratio,
                               convention=opts.query_convention, weights=gm.weights)
    return finish_segments(ids, gm, segs, opts, manifest.classes)


__all__ = ["CONVENTIONS", "decode_query", "query_panoptic", "query_scores"]
