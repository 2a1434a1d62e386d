"""Batches stay within the runner's own largest batch: a TensorRT engine's optimization profile, which a Jetson's
memory keeps at 1-4 frames, while ``--max-batch`` (one frame per camera) may ask for more."""
from __future__ import annotations

import numpy as np

from edgeseg.backends import BACKENDS
from edgeseg.backends.tensorrt.plan import profile_max_batch
from edgeseg.stream import InferenceStage
from edgeseg.stream.base import Packet
from edgeseg.structures import Frame, ImageShape, InputSpec
from handmade_bundles import conv_bundle, reference_logits


def test_profile_max_batch_is_the_smallest_inputs():
    assert profile_max_batch([((1, 3, 8, 8), (1, 3, 8, 8), (4, 3, 8, 8)), None]) == 4
    assert profile_max_batch([((1, 3), (2, 3), (4, 3)), ((1, 5), (1, 5), (2, 5))]) == 2
    assert profile_max_batch([None, None]) is None and profile_max_batch([]) is None


def test_a_batch_larger_than_the_runners_runs_in_parts(tmp_path):
    """Seven frames for an engine that takes two at a time: runs of 2, 2, 2 and 1 (ONNX Runtime computes them;
    ``max_batch`` is set as the TensorRT runner sets it from its profile), each frame's outputs its own."""
    bundle = conv_bundle(tmp_path, 5, input_spec=InputSpec(size=ImageShape(8, 12), dynamic_batch=True))
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(1, 3, 8, 12)).astype(np.float32) for _ in range(7)]
    with BACKENDS.get("onnxruntime").load(bundle) as runner:
        runner.max_batch = 2
        stage = InferenceStage(runner, max_batch=8)
        stage.open()
        packets = [Packet(Frame(np.zeros((8, 12, 3), np.uint8)), feed={"images": x}) for x in xs]
        stage.process_batch(packets)
        assert dict(stage.batch_sizes) == {2: 3, 1: 1}
        for x, p in zip(xs, packets):
            np.testing.assert_allclose(p.outputs["logits"], reference_logits(x, 5), rtol=1e-5, atol=1e-5)
        runner.max_batch = None  # ONNX Runtime's own: no limit
        stage.open()
        stage.batch_sizes.clear()
        stage.process_batch(packets)
        assert dict(stage.batch_sizes) == {7: 1}
