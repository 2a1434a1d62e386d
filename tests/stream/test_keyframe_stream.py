"""Keyframe acceleration in a stream: the shipped bundles run on keyframes only, results stay close to
per-frame inference on the generator's exact truth, a discontinuity forces a keyframe, and the CLI reports it."""
from __future__ import annotations

import json

import numpy as np
import pytest

import edgeseg
from edgeseg.cli import main
from edgeseg.errors import InputError
from edgeseg.eval.semantic import SemanticMetric
from edgeseg.structures import Frame, SemanticResult
from edgeseg.stream import Stage, StreamOptions, build_pipeline
from edgeseg.stream.base import Packet
from edgeseg.stream.keyframe_stage import KeyframeStage
from edgeseg.video.keyframe import KeyframeConfig

URI = "synthetic://?seed=4&size=160x120&frames=24&truth=full"


def _miou(pairs) -> float:
    metric = SemanticMetric(6, boundary=False)
    for frame, result in pairs:
        metric.update(result.labels, frame.meta["truth"].labels)
    return 100 * metric.compute().miou


def test_keyframes_cost_little_accuracy_on_exact_truth():
    per_frame = list(edgeseg.stream(URI, "shapes"))
    keyed = list(edgeseg.stream(URI, "shapes", keyframe_interval=3, keyframe_motion=0))
    assert len(keyed) == len(per_frame) == 24
    # keyframes (0, 3, 6, ...) are exactly the per-frame results
    for t in range(0, 24, 3):
        assert np.array_equal(keyed[t][1].labels, per_frame[t][1].labels)
    full, fast = _miou(per_frame), _miou(keyed)
    assert full > 80 and fast > full - 3, (full, fast)


def test_pipeline_counts_keyframes():
    pipe = build_pipeline(StreamOptions(source=URI, bundle="shapes", keyframe_interval=5, keyframe_motion=0,
                                        log_interval_s=0), handle_signals=False)
    stage = next(s for s in pipe.stages if s.name == "keyframe")
    pipe.run()
    # 24 frames, a keyframe every 5: frames 0, 5, 10, 15, 20
    assert stage.summary()["keyframes"] == 5 and stage.summary()["by_interval"] == 4


def test_bad_keyframe_settings_are_refused_before_the_stream_starts():
    with pytest.raises(InputError, match="interval"):
        build_pipeline(StreamOptions(source=URI, bundle="shapes", keyframe_interval=0), handle_signals=False)
    with pytest.raises(InputError, match="max_batch"):
        build_pipeline(StreamOptions(source=URI, bundle="shapes", keyframe_interval=3, max_batch=2), handle_signals=False)


def test_cli_run_with_keyframes(tmp_path, capsys):
    stats = tmp_path / "stats.json"
    rc = main(["run", "--bundle", "shapes", "--source", URI, "--keyframe-interval", "4", "--stats-json", str(stats),
               "--json-out", str(tmp_path / "r.jsonl")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "keyframes:" in out
    data = json.loads(stats.read_text())
    kf = data["keyframes"]
    assert kf["frames"] == 24 and 6 <= kf["keyframes"] <= 24
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 24


class _Label(Stage):
    """Stands in for preprocess + inference + decode: labels every pixel 1."""

    def process(self, packet):
        packet.result = SemanticResult(np.ones(packet.frame.image.shape[:2], np.uint8))
        return packet


def test_discontinuity_makes_the_next_frame_of_that_source_a_keyframe():
    stage = KeyframeStage([_Label()], KeyframeConfig(interval=10, motion=None))
    image = np.full((24, 32, 3), 90, np.uint8)
    image[8:16, 8:16] = 200

    def step(i, sid):
        stage.process(Packet(Frame(image, i, i, sid)))
        return stage.states[sid].last_key

    assert [step(i, "a") for i in range(3)] == [True, False, False]
    assert step(0, "b") is True  # another source has its own state
    stage.on_discontinuity(Frame(image, 3, 3, "a"))
    assert step(3, "a") is True and step(4, "b") is False
    assert stage.summary()["keyframes"] == 3
