"""Session 54 (an audit of the stream's options at 1080p and 4K): COCO ``segments_info``, the tracker's panoptic
detections, the panoptic and track JSON records and the column-major label runs are computed from the id map's
runs (or from tight crops) instead of per-pixel lookups, sorts and full-size masks. Each is compared here with the
per-pixel form it replaced, on random maps with runs that wrap rows, void, large and negative ids, and odd layouts."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.structures import PanopticResult, Segment, TrackResult
from edgeseg.structures.coco_panoptic import segments_info
from edgeseg.structures.records import panoptic_record, track_record
from edgeseg.structures.rle import label_runs, rle_encode, rle_encode_labels_areas


def _maps(seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        blocks = rng.integers(0, 6, (max(1, h // 4), max(1, w // 3)))
        ids = np.repeat(np.repeat(blocks, 4, 0), 3, 1)[:h, :w]
        ids = np.pad(ids, ((0, h - ids.shape[0]), (0, w - ids.shape[1])), mode="edge")
        if rng.random() < 0.3:  # noise: runs of a pixel or two, counted pixel by pixel (RUNS_PER_PIXEL)
            ids = rng.integers(0, 6, (h, w))
        yield (ids * int(rng.choice([1, 7, 1000, 300_000]))).astype(rng.choice([np.int32, np.int64, np.uint16, np.uint32]))


def _result(ids: np.ndarray) -> PanopticResult:
    present = [int(v) for v in np.unique(ids) if v != 0]
    segs = tuple(Segment(id=v, category_id=k % 3, isthing=bool(k % 2), score=0.5) for k, v in enumerate(present))
    return PanopticResult(segment_ids=ids.astype(np.int32), segments=segs, class_names=("a", "b", "c"))


def test_segments_info_equals_the_per_pixel_counts():
    for ids in _maps(1):
        r = _result(ids)
        got = segments_info(r)
        for s, d in zip(r.segments, got):
            ys, xs = np.nonzero(r.segment_ids == s.id)
            assert d["area"] == ys.size
            assert d["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    fortran = np.asfortranarray(_result(next(_maps(2))).segment_ids)
    assert segments_info(_result(fortran)) == segments_info(_result(np.ascontiguousarray(fortran)))
    bad = _result(np.array([[0, 5], [9, 9]]))
    with pytest.raises(InputError, match=r"segment id\(s\) \[9\] with no Segment entry"):
        segments_info(PanopticResult(segment_ids=bad.segment_ids, segments=bad.segments[:1], class_names=("a",)))


def test_tracker_detections_of_things_equal_the_per_pixel_bounds():
    from edgeseg.video.tracker import _thing_detections

    for ids in _maps(3):
        r = _result(ids)
        things = [s for s in r.segments if s.isthing]
        d = _thing_detections(r, things)
        for i, s in enumerate(things):
            m = r.segment_ids == s.id
            ys, xs = np.nonzero(m)
            assert d.areas[i] == ys.size
            x0, y0, x1, y1 = d.bounds[i].tolist()
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert np.array_equal(d.crops[i], m[y0:y1, x0:x1])
    void = PanopticResult(segment_ids=np.array([[-1, 3], [3, -1]], np.int32),
                          segments=(Segment(id=3, category_id=0, isthing=True),), class_names=("a",))
    d = _thing_detections(void, list(void.segments))  # a negative (void) id is no thing: lut[-1] read the last one
    assert d.areas.tolist() == [2] and d.bounds.tolist() == [[0, 0, 2, 2]]


def test_panoptic_record_areas_and_label_runs_equal_the_sorted_counts():
    for ids in _maps(4):
        rles, areas = rle_encode_labels_areas(ids)
        present, counts = np.unique(ids, return_counts=True)
        assert areas == dict(zip(present.tolist(), counts.tolist()))
        for v in present.tolist():
            assert rles[v] == rle_encode(ids == v)
        starts, lengths, values = label_runs(ids)
        flat = np.repeat(values, lengths)
        assert np.array_equal(flat, ids.T.ravel())
        assert starts.tolist() == np.concatenate(([0], np.cumsum(lengths)[:-1])).tolist()
        rec = panoptic_record(_result(ids))
        assert [s["area"] for s in rec["segments"]] == [int((ids == s.id).sum()) for s in _result(ids).segments]
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64):
        labels = np.arange(35, dtype=dtype).reshape(5, 7) % 4
        assert np.array_equal(np.repeat(*label_runs(labels)[2:0:-1]), labels.T.ravel()), dtype


def test_track_record_equals_the_full_masks_encoding():
    rng = np.random.default_rng(5)
    for _ in range(30):
        h, w, k = int(rng.integers(1, 25)), int(rng.integers(1, 25)), int(rng.integers(0, 4))
        masks = rng.random((k, h, w)) > rng.random()
        if k:
            masks[0] = False  # an empty mask among them
        r = TrackResult(masks=masks, object_ids=np.arange(1, k + 1, dtype=np.int64), scores=np.ones(k, np.float32))
        segs = track_record(r)["segments"]
        assert [s["rle"] for s in segs] == [rle_encode(m) for m in masks]
        assert [s["area"] for s in segs] == [int(m.sum()) for m in masks]
