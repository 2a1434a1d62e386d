"""tools/bench/keyframe.py: pooling per-video rows, and scoring instance and panoptic results against
per-frame inference taken as the truth, on hand-computed cases."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.structures import ImageShape, InstanceResult, PanopticResult, Segment

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "bench" / "keyframe.py"


@pytest.fixture(scope="module")
def bench():
    if not SCRIPT.is_file():
        pytest.skip("tools/bench/keyframe.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("bench_keyframe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_keyframe"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _row(mode, keyframes, ms, score, truth):
    return {"task": "instance", "video": "seed", "bundle": "b", "mode": mode, "keyframes": keyframes, "frames": 12,
            "ms_per_frame": ms, "speedup": 0.0, "agree_mask_ap_%": score, "truth_mask_ap_%": truth}


def test_pool_sums_counts_and_averages_times_and_scores(bench):
    a = [_row("1", 12, 20.0, 100.0, 50.0), _row("4", 3, 8.0, 70.0, 48.0)]
    b = [_row("1", 12, 30.0, 100.0, 60.0), _row("4", 4, 9.0, 75.0, None)]
    a[0]["note"] = "per-frame vs previous frame"
    one, four = bench.pool([a, b], "synthetic")
    assert one == {"task": "instance", "video": "synthetic", "bundle": "b", "mode": "1", "keyframes": 24, "frames": 24,
                   "ms_per_frame": 25.0, "speedup": 1.0, "agree_mask_ap_%": 100.0, "truth_mask_ap_%": 55.0}
    # 8.5 ms on average against 25 ms per frame; a video without truth leaves the pooled truth empty
    assert (four["keyframes"], four["frames"], four["ms_per_frame"]) == (7, 24, 8.5)
    assert four["speedup"] == round(25.0 / 8.5, 2) == 2.94
    assert four["agree_mask_ap_%"] == 72.5 and four["truth_mask_ap_%"] is None


def test_pool_refuses_videos_measured_in_other_modes(bench):
    with pytest.raises(InputError, match="modes"):
        bench.pool([[_row("1", 1, 1.0, 1.0, 1.0)], [_row("2", 1, 1.0, 1.0, 1.0)]], "v")
    with pytest.raises(InputError, match="same modes"):
        bench.pool([[_row("1", 1, 1.0, 1.0, 1.0)], []], "v")


def _instances(masks, classes, scores):
    masks = np.asarray(masks, bool)
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return InstanceResult(boxes, np.asarray(scores, np.float32), np.asarray(classes, np.int32),
                          ImageShape(*masks.shape[1:]), masks)


def _squares(h=20, w=20):
    m = np.zeros((3, h, w), bool)
    m[0, 0:4, 0:4] = True       # 16 px
    m[1, 10:15, 10:13] = True   # 15 px
    m[2, 15:20, 0:2] = True     # 10 px
    return m


def test_instance_truth_maps_classes_and_leaves_out_unmapped_ones(bench):
    r = _instances(_squares(), [0, 1, 2], [0.9, 0.8, 0.7])
    t = bench.instance_truth(r, (1, -1, 3))
    assert t.category_ids.tolist() == [1, 3] and t.classes.tolist() == [0, 2]
    assert t.area.tolist() == [16.0, 10.0] and np.array_equal(t.masks, _squares()[[0, 2]])
    assert t.boxes.tolist() == [[0, 0, 4, 4], [0, 15, 2, 20]] and not t.iscrowd.any()
    with pytest.raises(InputError, match="outside the class map"):
        bench.instance_truth(r, (1, 2))


def test_instance_agreement_is_mask_ap_against_the_reference(bench):
    scoring = bench.instance_scoring(("circle", "rectangle", "triangle"))
    ref = [_instances(_squares()[:2], [0, 0], [0.9, 0.6])]
    assert scoring.agree(ref, ref) == {"agree_mask_ap_%": 100.0}
    # one of the two circles found, at every IoU threshold: precision 1 up to recall 0.5, then nothing:
    # 51 of COCO's 101 recall points -> 50.50 (the other categories have no instance: left out)
    half = [_instances(_squares()[:1], [0], [0.9])]
    assert scoring.agree(half, ref) == {"agree_mask_ap_%": round(100 * 51 / 101, 2)}
    empty = [_instances(np.zeros((0, 20, 20)), [], [])]
    assert scoring.agree(empty, empty) == {"agree_mask_ap_%": 100.0}  # nothing anywhere: nothing to disagree on
    assert scoring.truth(ref) == {"truth_mask_ap_%": None, "truth_ap50_%": None}


def test_instance_truth_scoring_maps_generator_classes_by_name(bench):
    from edgeseg.data.synthetic import CLASSES

    # the generator's classes index CLASSES (stuff first); the model's are its own three things
    true = _instances(_squares(), [CLASSES.index("circle"), CLASSES.index("rectangle"), CLASSES.index("triangle")],
                      [1, 1, 1])
    model = _instances(_squares(), [0, 1, 2], [0.9, 0.8, 0.7])
    scoring = bench.instance_scoring(("circle", "rectangle", "triangle"), [true])
    assert scoring.truth([model]) == {"truth_mask_ap_%": 100.0, "truth_ap50_%": 100.0}
    wrong = _instances(_squares(), [1, 0, 2], [0.9, 0.8, 0.7])  # circle and rectangle swapped: triangle alone right
    assert scoring.truth([wrong]) == {"truth_mask_ap_%": round(100 / 3, 2), "truth_ap50_%": round(100 / 3, 2)}
    # the circle's mask cut to 8 of its 16 pixels: IoU 0.5 counts at 0.5 only (1 of 10 thresholds)
    cut = _squares()
    cut[0, 2:4] = False
    half = _instances(cut, [0, 1, 2], [0.9, 0.8, 0.7])
    assert scoring.truth([half]) == {"truth_mask_ap_%": round(100 * (0.1 + 1 + 1) / 3, 2), "truth_ap50_%": 100.0}


def test_panoptic_agreement_is_pq_against_the_reference(bench):
    ids = np.ones((10, 10), np.int32)
    ids[:, 6:] = 2
    ref = [PanopticResult(ids, (Segment(1, 0, False, 60), Segment(2, 1, False, 40)))]
    merged = [PanopticResult(np.ones((10, 10), np.int32), (Segment(1, 0, False, 100),))]
    scoring = bench.panoptic_scoring(("a", "b"))
    assert scoring.agree(ref, ref) == {"agree_pq_%": 100.0}
    # category 0: one match of IoU 60/100 -> PQ 0.6; category 1: missed -> 0; mean 0.3
    assert scoring.agree(merged, ref) == {"agree_pq_%": 30.0}
    assert scoring.truth(merged) == {"truth_pq_%": None}


def test_semantic_columns_and_note_keep_their_format(bench):
    from edgeseg.structures import SemanticResult

    a = SemanticResult(np.array([[0, 0], [1, 1]], np.uint8))
    b = SemanticResult(np.array([[0, 1], [1, 1]], np.uint8))
    scoring = bench.semantic_scoring(2, [np.array([[0, 0], [1, 1]], np.uint8)])
    # pixels 3/4; IoU class 0: 1/2, class 1: 2/3 -> mIoU 58.33
    got = scoring.agree([b], [a])
    assert got == {"agree_pixel_%": 75.0, "agree_miou_%": 58.33}
    assert scoring.truth([b]) == {"truth_miou_%": 58.33}
    assert scoring.note(got) == "per-frame vs previous frame: 75.00 % pixels, 58.33 mIoU"


def test_modes_take_keyframe_config_overrides(bench):
    from edgeseg.video.keyframe import KeyframeConfig

    assert bench.parse_mode("1", 0.08) is None
    assert bench.parse_mode("4", 0.08) == KeyframeConfig(interval=4, motion=None)
    assert bench.parse_mode("6m", 0.05) == KeyframeConfig(interval=6, motion=0.05)
    assert bench.parse_mode("6:compose=0:flow_cells=0:flow_scale=0.25", 0.08) == KeyframeConfig(
        interval=6, motion=None, compose=False, flow_cells=0, flow_scale=0.25)
    assert bench.parse_mode("8m:preset=fast:compose=true", 0.1) == KeyframeConfig(interval=8, motion=0.1, preset="fast")
    assert bench.parse_mode("1:compose=0", 0.08) == KeyframeConfig(interval=1, motion=None, compose=False)
    for bad in ("4:nope=1", "4:compose", "4:interval=3"):
        with pytest.raises(InputError):
            bench.parse_mode(bad, 0.08)
