"""What a replica does with a batch (edgeseg.serve.batching), without Ray: stacked inference for a
dynamic batch axis, frame by frame otherwise, results equal to ``predictor(rgb)`` either way."""
from __future__ import annotations

import numpy as np
import pytest

import edgeseg
from edgeseg.serve.batching import BatchStats, infer_batch
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle


class CountingRunner:
    """Wraps a runner and records the batch size of every ``infer`` call."""

    def __init__(self, runner):
        self._runner, self.calls = runner, []

    def infer(self, feed):
        self.calls.append(next(iter(feed.values())).shape[0])
        return self._runner.infer(feed)

    def __getattr__(self, name):
        return getattr(self._runner, name)


def _frames(sizes):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.mark.parametrize("dynamic, calls", [(True, [3]), (False, [1, 1, 1])])
def test_batches_stack_only_on_a_dynamic_batch_axis(tmp_path, dynamic, calls):
    spec = InputSpec(size=ImageShape(16, 24), dynamic_batch=dynamic)
    bundle = conv_bundle(tmp_path, 4, input_spec=spec, name=f"dyn{int(dynamic)}")
    frames = _frames([(16, 24), (30, 40), (9, 13)])  # a fixed-size input: all resize to 16x24
    with edgeseg.load(bundle, backend="onnxruntime", precision="fp32") as p:
        want = [p(rgb) for rgb in frames]
        p.runner = CountingRunner(p.runner)
        got = infer_batch(p, frames)
    assert p.runner.calls == calls
    for g, w, rgb in zip(got, want, frames):
        assert g.labels.shape == rgb.shape[:2]
        np.testing.assert_array_equal(g.labels, w.labels)


def test_a_batch_larger_than_the_runners_runs_in_parts(tmp_path):
    """A TensorRT engine whose profile takes two frames (its runner's ``max_batch``), five frames at once."""
    spec = InputSpec(size=ImageShape(16, 24), dynamic_batch=True)
    bundle = conv_bundle(tmp_path, 4, input_spec=spec, name="parts")
    frames = _frames([(16, 24)] * 5)
    with edgeseg.load(bundle, backend="onnxruntime", precision="fp32") as p:
        want = [p(rgb) for rgb in frames]
        p.runner.max_batch = 2
        p.runner = CountingRunner(p.runner)
        got = infer_batch(p, frames)
    assert p.runner.calls == [2, 2, 1]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.labels, w.labels)


def test_unequal_shapes_run_one_by_one(tmp_path):
    spec = InputSpec(size=None, size_rule="multiple", multiple=4, dynamic_batch=True)
    bundle = conv_bundle(tmp_path, 3, input_spec=spec, name="anysize")
    frames = _frames([(16, 24), (32, 20)])
    with edgeseg.load(bundle, backend="onnxruntime", precision="fp32") as p:
        p.runner = CountingRunner(p.runner)
        got = infer_batch(p, frames)
    assert p.runner.calls == [1, 1] and [g.labels.shape for g in got] == [(16, 24), (32, 20)]


def test_batch_stats():
    s = BatchStats()
    for n in (1, 4, 4, 2):
        s.record(n, 0.01)
    d = s.to_dict()
    assert (d["frames"], d["batches"], d["max_batch"], d["batch_sizes"]) == (11, 4, 4, {"1": 1, "2": 1, "4": 2})
    assert d["mean_batch"] == pytest.approx(11 / 4)
    # frames answered with an error (a bad image: 400) are counted apart, not as served frames
    s.record(3, 0.01, errors=2)
    other = BatchStats()
    other.record(2, 0.01, errors=2)
    s.merge(other)
    d = s.to_dict()
    assert (d["frames"], d["errors"], d["batches"]) == (12, 4, 6) and d["mean_batch"] == pytest.approx(16 / 6)
