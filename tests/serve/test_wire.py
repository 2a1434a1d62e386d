"""The result half of the wire format (edgeseg.wire.encode_result / decode_result), without Ray:
every task's result comes back equal, bit for bit and dtype for dtype, through real JSON text."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from edgeseg.errors import EdgesegError, UnsupportedError
from edgeseg.wire import decode_result, encode_result
from edgeseg.structures import ImageShape, InstanceResult, PanopticResult, Segment, SemanticResult, TrackResult
from equality import assert_results_equal

IMAGE = ImageShape(23, 31)


def _wire(result):
    """encode -> JSON text (as the server sends it: strict JSON) -> decode."""
    return decode_result(json.loads(json.dumps(encode_result(result), allow_nan=False)))


def _instances(bounds, seed=0, **kw) -> InstanceResult:
    """A compact result (as the instance decoders give): one random crop per (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    b = np.array(bounds, np.int32).reshape(-1, 4)
    crops = tuple(rng.random((y1 - y0, x1 - x0)) > 0.4 for x0, y0, x1, y1 in b.tolist())
    n = len(b)
    return InstanceResult(boxes=(b + rng.random((n, 4))).astype(np.float32), scores=rng.random(n).astype(np.float32),
                          classes=rng.integers(0, 3, n).astype(np.int32), image_shape=IMAGE,
                          class_names=("circle", "rectangle", "triangle"), mask_boxes=b, mask_crops=crops, **kw)


@pytest.mark.parametrize("bounds", [
    [(2, 3, 9, 11), (0, 0, 31, 23), (20, 15, 31, 23)],  # the second covers the frame, the third touches two borders
    [(0, 5, 4, 23)],                                   # one instance touching the left and bottom borders
    [(4, 4, 4, 9), (5, 6, 12, 6)],                     # empty crops (zero width, zero height)
    [],                                                # no instance at all
], ids=["three", "border", "empty-crops", "none"])
def test_compact_instances_round_trip(bounds):
    want = _instances(bounds)
    got = _wire(want)
    assert len(got) == len(bounds)
    assert_results_equal(got, want)


def test_instances_with_full_masks_track_ids_or_no_masks_round_trip():
    compact = _instances([(2, 3, 9, 11), (20, 15, 31, 23)], track_ids=np.array([7, -1], np.int64))
    full = compact.replace(masks=compact.masks)  # full-size masks, mask_boxes kept
    assert not full.is_compact
    assert_results_equal(_wire(full), full)
    loose = InstanceResult(boxes=full.boxes, scores=full.scores, classes=full.classes, image_shape=IMAGE,
                           masks=full.masks)  # no mask_boxes: crops over tight bounds, full masks back
    got = _wire(loose)
    assert got.mask_boxes is None
    assert_results_equal(got, loose)
    assert_results_equal(_wire(InstanceResult.empty(IMAGE)), InstanceResult.empty(IMAGE))
    boxes_only = InstanceResult.empty(IMAGE, with_masks=False)
    assert_results_equal(_wire(boxes_only), boxes_only)


def test_instance_masks_travel_as_crops_not_frames():
    small = _instances([(2, 3, 6, 7)])
    big = InstanceResult(boxes=small.boxes, scores=small.scores, classes=small.classes,
                         image_shape=ImageShape(1080, 1920), mask_boxes=small.mask_boxes, mask_crops=small.mask_crops)
    assert len(json.dumps(encode_result(big))) < 1000  # 16 mask pixels, not 2 million


def _panoptic(ids: np.ndarray) -> PanopticResult:
    present = [int(i) for i in np.unique(ids) if i]
    segments = tuple(Segment(id=i, category_id=3 + i % 3, isthing=bool(i % 2), area=int((ids == i).sum()),
                             score=0.1 + 1.0 / (i + 2)) for i in present)
    return PanopticResult(segment_ids=ids, segments=segments, class_names=("sky", "ground", "road", "a", "b", "c"),
                          category_ids=(0, 1, 2, 3, 4, 5))


@pytest.mark.parametrize("top, form", [(7, "png"), (300, "png"), (70000, "data")], ids=["8-bit", "16-bit", "raw"])
def test_panoptic_round_trips_whatever_the_ids(top, form):
    ids = np.random.default_rng(2).choice([0, 1, 2, top], size=(IMAGE.height, IMAGE.width)).astype(np.int32)
    want = _panoptic(ids)
    payload = encode_result(want)
    assert form in payload["segment_ids"]
    got = _wire(want)
    assert got.segment_ids.dtype == np.int32 and got.segments == want.segments
    assert (got.class_names, got.category_ids) == (want.class_names, want.category_ids)
    np.testing.assert_array_equal(got.segment_ids, want.segment_ids)


def test_panoptic_void_only_and_odd_scores():
    want = PanopticResult(segment_ids=np.zeros((4, 5), np.int32))
    got = _wire(want)
    assert got.segments == () and got.segment_ids.dtype == np.int32 and not got.segment_ids.any()
    ids = np.ones((4, 5), np.int32)
    odd = PanopticResult(segment_ids=ids, segments=(Segment(1, 0, False, 20, float("nan")),))
    assert np.isnan(_wire(odd).segments[0].score)  # strict JSON has no NaN: it travels as text


def test_semantic_confidence_round_trips():
    rng = np.random.default_rng(4)
    want = SemanticResult(labels=rng.integers(0, 6, (9, 11)).astype(np.uint8), classes=tuple("abcdef"),
                          confidence=rng.random((9, 11)).astype(np.float32))
    got = _wire(want)
    assert got.confidence.dtype == np.float32
    np.testing.assert_array_equal(got.confidence, want.confidence)
    np.testing.assert_array_equal(got.labels, want.labels)


def test_unknown_tasks_and_types_are_clear_errors():
    with pytest.raises(EdgesegError, match="does not know: 'depth'") as info:
        decode_result({"task": "depth", "shape": [2, 2]})
    assert "same edgeseg version" in info.value.fix
    with pytest.raises(EdgesegError, match="does not know: None"):
        decode_result(["not", "a", "dict"])
    track = TrackResult(masks=np.zeros((1, 2, 2), bool), object_ids=np.array([1]))
    with pytest.raises(UnsupportedError, match="cannot send a TrackResult"):
        encode_result(track)


def _corrupt(payload: dict, path: tuple, value) -> dict:
    out = json.loads(json.dumps(payload))
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


@pytest.mark.parametrize("path, value, match", [
    (("boxes",), KeyError, "missing field 'boxes'"),
    (("boxes", "data"), "AAAA", "bytes do not hold"),
    (("boxes", "data"), "!!not base64!!", "malformed"),
    (("boxes", "dtype"), "|O", "not a number type"),
    (("scores", "shape"), [1, 2], "is not 1-dimensional"),
    (("masks", "bits"), "AA==", "bytes of mask bits"),
    (("mask_boxes",), None, "compact masks need mask_boxes"),
    (("classes",), {"dtype": "<i4", "shape": [3], "data": "AAAAAAAAAAAAAAAA"},  # 3 classes for 2 boxes:
     "classes must be"),                                                     # a result's own check
], ids=["no-boxes", "short", "base64", "object-dtype", "ndim", "bits", "no-bounds", "count"])
def test_malformed_instance_answers_are_edgeseg_errors(path, value, match):
    payload = encode_result(_instances([(2, 3, 9, 11), (20, 15, 31, 23)]))
    with pytest.raises(EdgesegError, match=match) as info:
        decode_result(_corrupt(payload, path, value))
    assert "malformed" in str(info.value)


def test_mask_bounds_outside_the_image_are_refused():
    full = _instances([(2, 3, 9, 11)])
    payload = encode_result(full.replace(masks=full.masks))
    wide = base64.b64encode(np.array([[2, 3, 40, 11]], np.int32).tobytes()).decode()
    with pytest.raises(EdgesegError, match="outside the 31x23 image"):
        decode_result(_corrupt(payload, ("masks", "bounds", "data"), wide))


@pytest.mark.parametrize("path, value, match", [
    (("segment_ids", "png"), "iVBORw0KGgo=", "does not decode"),
    (("segments", 0, "id"), 0, "reserved for void"),
    (("shape",), [5, 5], "does not match the stated shape"),
])
def test_malformed_panoptic_answers_are_edgeseg_errors(path, value, match):
    payload = encode_result(_panoptic(np.arange(12, dtype=np.int32).reshape(3, 4) % 4))
    with pytest.raises(EdgesegError, match=match):
        decode_result(_corrupt(payload, path, value))
