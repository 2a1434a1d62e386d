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
from edgeseg.errors import StreamError
from edgeseg.stream.keyframe_stage import KeyframeOnly, KeyframePlanStage, keyframe_stages
from edgeseg.video.keyframe import KeyframeConfig

URI = "synthetic://?seed=4&size=160x120&frames=24&truth=full"


def _miou(pairs) -> float:
    metric = SemanticMetric(6, boundary=False)
    for frame, result in pairs:
        metric.update(result.labels, frame.meta["truth"].labels)
    return 100 * metric.compute().miou


def test_keyframes_cost_little_accuracy_on_exact_truth():
    shapes = edgeseg.load("shapes")  # one backend choice for both (under load, two loads may choose differently)
    per_frame = list(edgeseg.stream(URI, shapes))
    keyed = list(edgeseg.stream(URI, shapes, keyframe_interval=3, keyframe_motion=0))
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
    """Stands in for preprocess + inference + decode: labels every pixel 1 (or fails when told to)."""

    name = "decode"

    def __init__(self):
        self.calls, self.fail = 0, False

    def process(self, packet):
        self.calls += 1
        if self.fail:
            raise RuntimeError("inference broke")
        packet.result = SemanticResult(np.ones(packet.frame.image.shape[:2], np.uint8))
        return packet


def _image():
    image = np.full((24, 32, 3), 90, np.uint8)
    image[8:16, 8:16] = 200
    return image


def _through(stages, packet):
    """What the pipeline does with one packet: each stage in turn, none after a failure."""
    for st in stages:
        packet = st.process(packet)
    return packet


def test_discontinuity_makes_the_next_frame_of_that_source_a_keyframe():
    inner = _Label()
    stages = keyframe_stages([inner], KeyframeConfig(interval=10, motion=None))
    image = _image()

    def step(i, sid):
        p = _through(stages, Packet(Frame(image, i, i, sid)))
        assert p.result is not None and p.result.labels.shape == (24, 32)
        return p.keyplan.key

    assert [step(i, "a") for i in range(3)] == [True, False, False]
    assert step(0, "b") is True  # another source has its own state
    for st in stages:
        st.on_discontinuity(Frame(image, 3, 3, "a"))
    assert step(3, "a") is True and step(4, "b") is False
    assert stages[-1].summary()["keyframes"] == 3 and inner.calls == 3


def test_keyframe_stages_wrap_the_inner_stages_and_keep_their_names():
    stages = keyframe_stages([_Label()], KeyframeConfig(interval=3, motion=None))
    assert [s.name for s in stages] == ["keyframe-flow", "decode", "keyframe"]
    assert isinstance(stages[0], KeyframePlanStage) and isinstance(stages[1], KeyframeOnly)


def test_a_failed_keyframe_costs_only_the_frames_already_planned_on_it():
    """The keyframe's inference fails: the frames planned on it cannot be carried (errors, not stale
    results), and the next frame the planner sees is a keyframe, not the next interval's."""
    inner = _Label()
    plan_stage, only, carry = keyframe_stages([inner], KeyframeConfig(interval=10, motion=None))
    image = _image()
    planned = [plan_stage.process(Packet(Frame(image, i, i, "a"))) for i in range(3)]  # ahead of inference
    assert [p.keyplan.key for p in planned] == [True, False, False]
    inner.fail = True
    with pytest.raises(RuntimeError):
        only.process(planned[0])  # the pipeline marks this packet as an error: it skips the carry stage
    for p in planned[1:]:
        only.process(p)  # not keyframes: passed through
        with pytest.raises(StreamError, match="keyframe 0's result is missing"):
            carry.process(p)
    inner.fail = False
    p = _through([only, carry], plan_stage.process(Packet(Frame(image, 3, 3, "a"))))
    assert p.keyplan.key and p.result is not None  # forced at once (interval 10 would wait for frame 10)
    assert _through([only, carry], plan_stage.process(Packet(Frame(image, 4, 4, "a")))).result is not None


def test_stream_with_a_failing_keyframe_goes_on(tmp_path):
    """In a real pipeline: the bundle fails on one keyframe; the stream counts that frame and the ones
    planned on it as errors, and every other frame has a result."""
    from edgeseg.stream.pipeline import Pipeline
    from edgeseg.stream.sinks.files import CallbackSink
    from edgeseg.stream.sources import open_source

    class _FailOnce(_Label):
        def process(self, packet):
            self.fail = packet.frame.index == 6
            return super().process(packet)

    results = {}
    collect = CallbackSink(lambda frame, result: results.__setitem__(frame.index, result))
    stages = keyframe_stages([_FailOnce()], KeyframeConfig(interval=3, motion=None))
    pipe = Pipeline([open_source("synthetic://?seed=1&size=64x48&frames=15"), *stages, collect],
                    on_error="skip", handle_signals=False, log_interval_s=0)
    stats = pipe.run(raise_on_error=False)
    failed = sorted(i for i, r in results.items() if r is None)
    assert len(results) == 15 and failed[0] == 6 and stats.errors == len(failed)
    assert all(results[i] is not None for i in range(6)) and results[14] is not None
    assert len(failed) <= 3  # the keyframe and at most the interval's other frames (frame 9 is a keyframe anyway)
