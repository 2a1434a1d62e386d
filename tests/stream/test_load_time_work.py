"""Work that belongs at load time stays there, and the fast per-frame paths agree with references:
JSON records (per-class RLE, scores), the overlay's colour table, the inference stage's batching
decision, the runners' input names."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.stream import InferenceStage, Renderer
from edgeseg.stream.overlay import _lut, blend
from edgeseg.stream.sinks.files import frame_record
from edgeseg.structures import Frame, PanopticResult, SemanticResult
from edgeseg.structures.results import Segment


def test_semantic_record_scores_areas_and_rles_equal_per_class_reference():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (9, 12)).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    labels[labels == 2] = 5  # ids 0, 1, 3, 5: gaps in the class ids
    conf = rng.random(labels.shape).astype(np.float32)
    rec = frame_record(Frame(np.zeros((*labels.shape, 3), np.uint8)), SemanticResult(labels, tuple("abcdef"), conf))
    assert [s["class_id"] for s in rec["segments"]] == [0, 1, 3, 5]
    for s in rec["segments"]:
        m = labels == s["class_id"]
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert s["rle"]["counts"] == ref["counts"].decode("ascii") and s["area"] == int(m.sum())
        assert s["score"] == pytest.approx(float(conf[m].astype(np.float64).mean()), rel=1e-12)
        assert s["class"] == "abcdef"[s["class_id"]]


def test_panoptic_record_matches_per_segment_masks():
    mask_util = pytest.importorskip("pycocotools.mask")
    ids = np.zeros((20, 30), np.int32)
    ids[2:9, 3:17] = 7
    ids[10:19, 0:5] = 300
    ids[12:15, 20:28] = 2
    segs = (Segment(7, 1, True), Segment(300, 2, False), Segment(2, 1, True), Segment(9, 1, True))  # 9: no pixels
    r = PanopticResult(ids, segs, class_names=("bg", "car", "road"))
    rec = frame_record(Frame(np.zeros((20, 30, 3), np.uint8)), r)
    for s in rec["segments"]:
        m = ids == s["id"]
        assert s["rle"]["counts"] == mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
        assert s["area"] == int(m.sum())
    assert [s["area"] for s in rec["segments"]] == [98, 45, 24, 0]


def test_renderer_builds_its_colour_table_once_and_follows_a_new_palette():
    pal = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    r = Renderer(pal, ("a", "b", "c"), alpha=0.5, legend=False, hud=False)
    table = r._lut
    labels = np.array([[0, 1], [2, 200]], np.uint8)  # 200: beyond the palette -> void (black)
    img = np.full((2, 2, 3), 100, np.uint8)
    out = r(img, SemanticResult(labels))
    assert r._lut is table and not table.flags.writeable
    want = blend(img, np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 0, 0]]], np.uint8), 0.5)
    np.testing.assert_array_equal(out, want)
    assert out[0, 0].tolist() == [178, 50, 50] and out[1, 1].tolist() == [50, 50, 50]  # round(0.5*100 + 0.5*255)
    r.palette = pal[::-1].copy()
    assert r._lut[0].tolist() == [0, 0, 255] and np.array_equal(r._lut, _lut(pal[::-1]))


def test_batching_decision_is_made_once_at_open(bundle):
    import edgeseg

    p = edgeseg.load(bundle, backend="onnxruntime", threads=1)
    stage = InferenceStage(p.runner, max_batch=4)
    stage.open()
    try:
        fixed_batch = any(isinstance(s.shape[0], int) and s.shape[0] > 0 for s in p.runner.input_specs)
        assert stage._can_batch is (not fixed_batch) and stage._can_batch == stage._batchable()
        assert p.runner._input_names == frozenset(s.name for s in p.runner.input_specs) == {"images"}
        x = np.zeros((1, 3, 32, 32), np.float32)
        a = p.runner.infer({"images": x})
        b = p.runner.infer({"images": x, "unused": np.zeros(1)}, check=False)  # extra keys are dropped
        np.testing.assert_array_equal(a["logits"], b["logits"])
    finally:
        stage.close()
    assert not p.runner.is_active


def test_stream_upsample_option_picks_the_decoder_path(predictor):
    from edgeseg.decode import decode_semantic
    from edgeseg.errors import InputError
    from edgeseg.stream import stream
    from stream_helpers import ListSource, make_images

    images = make_images(3, (48, 64), seed=9)
    got = [r.labels for _, r in stream(ListSource(images), predictor, upsample="labels")]
    for img, labels in zip(images, got):
        feed, meta = predictor.preprocess(img)
        out = predictor.runner.infer(feed)
        fast = decode_semantic(out, meta, predictor.manifest, upsample="labels").labels
        accurate = decode_semantic(out, meta, predictor.manifest, upsample="logits").labels
        assert np.array_equal(labels, fast)
        assert labels.shape == accurate.shape == (48, 64)
    with pytest.raises(InputError, match="upsample must be"):
        list(stream(ListSource(images), predictor, upsample="cubic"))
