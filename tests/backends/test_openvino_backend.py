"""OpenVINO runner (CPU plugin) against numpy and ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.backends import BACKENDS
from edgeseg.errors import UnsupportedError
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle, custom_op_model, reference_logits

pytestmark = pytest.mark.openvino
pytest.importorskip("openvino")


def test_outputs_match_numpy(tmp_path):
    bundle = conv_bundle(tmp_path, 5, input_spec=InputSpec(size=ImageShape(8, 12), dynamic_batch=True))
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 12)).astype(np.float32)
    with BACKENDS.get("openvino").load(bundle, threads=1) as runner:
        assert runner.input_specs[0].name == "images" and runner.input_specs[0].shape[1:] == (3, 8, 12)
        assert isinstance(runner.input_specs[0].shape[0], str)  # dynamic batch
        out = runner.infer({"images": x})
    np.testing.assert_allclose(out["logits"], reference_logits(x, 5), rtol=1e-4, atol=1e-4)


def test_labels_graph(tmp_path):
    bundle = conv_bundle(tmp_path, 4, input_spec=InputSpec(size=ImageShape(8, 12)), argmax=True)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 12)).astype(np.float32)
    with BACKENDS.get("openvino").load(bundle) as runner:
        out = runner.infer({"images": x})["labels"]
    assert out.dtype == np.uint8 and np.array_equal(out, reference_logits(x, 4).argmax(1))


def test_unsupported_op(tmp_path):
    path = custom_op_model(tmp_path / "custom.onnx")
    runner_cls = BACKENDS.get("openvino")
    ok, why = runner_cls.supports(path)
    assert not ok and "FancyOp" in why
    with pytest.raises(UnsupportedError, match="FancyOp"):
        runner_cls(path).activate()
