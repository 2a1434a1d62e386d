"""The ``query`` panoptic layout (MaskFormer / Mask2Former) against transformers' own post-processing.

The reference is transformers' ``MaskFormerImageProcessor.post_process_panoptic_segmentation`` (its
Mask2Former twin first resizes every mask to 384x384; MaskFormer's decides at the masks' own size,
which is what a 1:1 grid compares exactly). The authors' MaskFormer and Mask2Former code (Detectron2
projects) cannot be installed here: their conventions are checked on hand-computed cases that separate
them from transformers' and from each other.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgeseg.decode.panoptic_query import query_panoptic, query_scores

torch = pytest.importorskip("torch")
pytest.importorskip("transformers.models.maskformer.image_processing_pil_maskformer")  # transformers 5

THING = np.array([False, False, False, True, True, True])  # road, sky, building | person, car, bicycle
STUFF = {0, 1, 2}


def _processor():
    from transformers.models.maskformer.image_processing_pil_maskformer import MaskFormerImageProcessorPil

    return MaskFormerImageProcessorPil()


def _scene(rng, q: int = 16, c: int = 6, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Class logits with a confident class on most queries and blob-shaped masks that overlap."""
    cls = rng.normal(0, 1, (q, c + 1)).astype(np.float32)
    cls[np.arange(q), rng.integers(0, c + 1, q)] += rng.uniform(0, 8, q)
    cy, cx = rng.uniform(0, h, q), rng.uniform(0, w, q)
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
    noise = torch.nn.functional.interpolate(torch.from_numpy(rng.normal(0, 2, (1, q, 6, 8)).astype(np.float32)),
                                            size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    masks = ((rng.uniform(h / 8, h / 2, q)[:, None, None] - d) / 6 + noise).astype(np.float32)
    return cls, masks


def _reference(cls: np.ndarray, masks: np.ndarray, threshold: float = 0.5):
    out = SimpleNamespace(class_queries_logits=torch.from_numpy(cls)[None], masks_queries_logits=torch.from_numpy(masks)[None])
    r = _processor().post_process_panoptic_segmentation(out, threshold=threshold, label_ids_to_fuse=STUFF)[0]
    return r["segmentation"].numpy().astype(np.int64), r["segments_info"]


def _collides(info) -> bool:
    """transformers' ``compute_segments`` restarts its id counter from a merged stuff segment's id, so the
    next new segment can take an id already in use (two segments, one id): those frames are not comparable."""
    seen: dict[int, int] = {}
    for s in info:
        if s["id"] in seen and not (s["was_fused"] and seen[s["id"]] == s["label_id"]):
            return True
        seen[s["id"]] = s["label_id"]
    return False


def test_equals_transformers_panoptic_post_processing():
    rng = np.random.default_rng(7)
    compared = segments = 0
    for _ in range(40):
        cls, masks = _scene(rng)
        ref, info = _reference(cls, masks)
        if _collides(info):
            continue
        ids, segs = query_panoptic(cls, masks, THING, score_threshold=0.5, convention="transformers")
        compared += 1
        segments += len(segs)
        # the same partition of the pixels (segment ids are numbered differently after a merge) ...
        pairs = np.unique(np.stack([ref.ravel(), ids.ravel()]), axis=1)
        assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
        assert set(pairs[0][pairs[1] == 0]) <= {0, -1}  # void is void
        # ... with the same class and score on each segment
        label_of = {s["id"]: s["label_id"] for s in info}
        for r, e in pairs.T:
            if e:
                assert label_of[r] == segs[e - 1][0]
                # transformers rounds to 6 decimals; numpy's and torch's softmax differ in the last bit
                assert segs[e - 1][1] == pytest.approx(next(s["score"] for s in info if s["id"] == r), abs=2e-6)
                assert segs[e - 1][2] == bool(THING[segs[e - 1][0]])
    assert compared >= 30 and segments >= 60  # the scenes exercise it: most frames, several segments each


def test_no_query_kept_is_all_void_as_transformers():
    rng = np.random.default_rng(1)
    cls, masks = _scene(rng)
    cls[:, -1] += 50  # every query is "no object"
    ref, info = _reference(cls, masks)
    ids, segs = query_panoptic(cls, masks, THING, score_threshold=0.5, convention="transformers")
    assert info == [] and (ref == -1).all()
    assert segs == [] and not ids.any()


def _hand_case():
    """Three queries on a 1x4 strip: q0 car (score ~0.95), q1 car (~0.86), q2 road (~0.99)."""
    cls = np.full((3, 7), -20.0, np.float32)
    cls[0, 4], cls[1, 4], cls[2, 0] = 3.0, 1.9, 5.0  # softmax max against six logits of -20 and no-object at -20
    cls[:, 6] = [0.05, 0.1, 0.1]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    masks = np.array([[[logit(0.9), logit(0.9), logit(0.05), logit(0.05)]],
                      [[logit(0.05), logit(0.05), logit(0.55), logit(0.05)]],
                      [[logit(0.05), logit(0.05), logit(0.05), logit(0.9)]]], np.float32)
    return cls, masks


def test_conventions_differ_where_their_reference_codes_do():
    cls, masks = _hand_case()
    scores, labels = query_scores(cls)
    assert labels.tolist() == [4, 4, 0] and 0.8 < scores[1] < 0.9
    # q1's only pixel has probability 0.55: Detectron2 measures its own mask on sigmoid (0.55 >= 0.5: area 1),
    # transformers on score * sigmoid (0.47 < 0.5: area 0, no segment); the pixel stays void there
    ids, segs = query_panoptic(cls, masks, THING, score_threshold=0.5, convention="mask2former")
    assert ids.tolist() == [[1, 1, 2, 3]] and [s[0] for s in segs] == [4, 4, 0]
    ids, segs = query_panoptic(cls, masks, THING, score_threshold=0.5, convention="transformers")
    assert ids.tolist() == [[1, 1, 0, 2]] and [s[0] for s in segs] == [4, 0]
    ref, info = _reference(cls, masks)
    assert ref.tolist() == [[1, 1, 0, 2]] and [s["label_id"] for s in info] == [4, 0]
    # the score threshold drops q1 in both (Mask2Former's configs: 0.8 < 0.86 keeps it; 0.9 does not)
    ids, segs = query_panoptic(cls, masks, THING, score_threshold=0.9, convention="mask2former")
    assert ids.tolist() == [[1, 1, 0, 2]]


def test_area_ratio_is_at_least_for_the_authors_code_and_more_than_for_transformers():
    """q0 wins 1 of the 4 pixels of its own mask (ratio 0.25, exact in float32): kept by the authors' code
    (``< 0.25`` drops), dropped by transformers (``> 0.25`` keeps); q1 also wins pixels outside its own mask,
    which transformers and MaskFormer assign to it and Mask2Former leaves void."""
    cls = np.full((2, 3), -20.0, np.float32)
    cls[:, 1] = 10.0  # two confident queries of the thing class 1
    masks = np.full((2, 1, 10), -9.0, np.float32)
    masks[0, 0, :4] = 8.0
    masks[1, 0, :3], masks[1, 0, 4:] = 9.0, -8.0
    thing = np.array([False, True])
    ids, segs = query_panoptic(cls, masks, thing, score_threshold=0.5, mask_area_ratio=0.25, convention="mask2former")
    assert ids.tolist() == [[2, 2, 2, 1, 0, 0, 0, 0, 0, 0]] and len(segs) == 2
    ids, segs = query_panoptic(cls, masks, thing, score_threshold=0.5, mask_area_ratio=0.25, convention="transformers")
    assert ids.tolist() == [[1, 1, 1, 0, 1, 1, 1, 1, 1, 1]] and len(segs) == 1
    out = SimpleNamespace(class_queries_logits=torch.from_numpy(cls)[None], masks_queries_logits=torch.from_numpy(masks)[None])
    ref = _processor().post_process_panoptic_segmentation(out, threshold=0.5, overlap_mask_area_threshold=0.25,
                                                          label_ids_to_fuse={0})[0]
    assert ref["segmentation"].numpy().tolist() == ids.tolist()
    # MaskFormer's own code: Mask2Former's area test (unscaled, >=), transformers' pixels (every won one)
    ids, segs = query_panoptic(cls, masks, thing, score_threshold=0.5, mask_area_ratio=0.25, convention="maskformer")
    assert ids.tolist() == [[2, 2, 2, 1, 2, 2, 2, 2, 2, 2]] and len(segs) == 2


def test_stuff_merges_into_one_segment_things_do_not():
    cls = np.full((4, 3), -20.0, np.float32)
    cls[[0, 1], 0] = 10.0  # two queries of stuff class 0
    cls[[2, 3], 1] = 10.0  # two queries of thing class 1
    masks = np.full((4, 1, 8), -9.0, np.float32)
    for q in range(4):
        masks[q, 0, 2 * q:2 * q + 2] = 9.0
    thing = np.array([False, True])
    for conv in ("mask2former", "maskformer", "transformers"):
        ids, segs = query_panoptic(cls, masks, thing, score_threshold=0.5, convention=conv)
        assert ids.tolist() == [[1, 1, 1, 1, 2, 2, 3, 3]]
        assert [(s[0], s[2]) for s in segs] == [(0, False), (1, True), (1, True)]


def test_broken_outputs():
    cls, masks = _hand_case()
    cls[0, 2] = np.nan  # a query whose class logits hold NaN is dropped
    masks[2, 0, 3] = np.nan  # a NaN mask logit is "no mask" there
    ids, segs = query_panoptic(cls, masks, THING, score_threshold=0.5, convention="mask2former")
    assert ids.tolist() == [[0, 0, 1, 0]] and [s[0] for s in segs] == [4]
    inf = np.full((1, 3), -np.inf, np.float32)
    inf[0, 0] = np.inf  # +/-inf: the softmax's limits
    s, lab = query_scores(inf)
    assert lab.tolist() == [0] and s[0] == pytest.approx(1.0)
