"""ONNX Runtime runner against numpy computations of hand-built graphs."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.backends import BACKENDS
from edgeseg.backends.onnxrt import OnnxRuntimeRunner, explain_session_error
from edgeseg.errors import EdgesegError, InputError, UnsupportedError
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle, custom_op_model, reference_logits

SPEC = InputSpec(size=ImageShape(8, 12), dynamic_batch=True)


def test_registered_and_available():
    assert BACKENDS.get("onnxruntime") is OnnxRuntimeRunner
    assert OnnxRuntimeRunner.is_available() == (True, "")


def test_specs_and_outputs_match_numpy(tmp_path):
    bundle = conv_bundle(tmp_path, 5, input_spec=SPEC)
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 12)).astype(np.float32)
    with BACKENDS.get("onnxruntime").load(bundle, threads=1) as runner:
        assert runner.input_specs[0].name == "images" and runner.input_specs[0].dtype == "float32"
        assert runner.input_specs[0].shape == ("N", 3, 8, 12)
        assert runner.output_specs[0].name == "logits" and runner.output_specs[0].shape[:2] == ("N", 5)
        out = runner.infer({"images": x})
        assert runner.last_latency_s > 0
        assert runner.session.get_session_options().intra_op_num_threads == 1
        assert runner.active_providers == ["CPUExecutionProvider"]
    np.testing.assert_allclose(out["logits"], reference_logits(x, 5), rtol=1e-5, atol=1e-5)
    assert not runner.is_active


def test_stride_and_argmax_graph(tmp_path):
    bundle = conv_bundle(tmp_path, 6, input_spec=SPEC, stride=2, argmax=True)
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 12)).astype(np.float32)
    with OnnxRuntimeRunner.load(bundle) as runner:
        out = runner.infer({"images": x})["labels"]
        assert runner.output_specs[0].dtype == "uint8"
    assert out.dtype == np.uint8 and out.shape == (1, 4, 6)
    assert np.array_equal(out, reference_logits(x, 6, stride=2).argmax(1))


def test_nhwc_uint8_input(tmp_path):
    spec = InputSpec(layout="NHWC", dtype="uint8", color="BGR", size=ImageShape(8, 12))
    bundle = conv_bundle(tmp_path, 3, input_spec=spec)
    x = np.random.default_rng(3).integers(0, 256, (1, 8, 12, 3), dtype=np.uint8)
    with OnnxRuntimeRunner.load(bundle) as runner:
        assert runner.input_specs[0].dtype == "uint8" and runner.input_specs[0].shape == ("N", 8, 12, 3)
        out = runner.infer({"images": x})["logits"]
    np.testing.assert_allclose(out, reference_logits(x.transpose(0, 3, 1, 2).astype(np.float32), 3), rtol=1e-5, atol=1e-4)


def test_feed_validation_names_the_tensor(tmp_path):
    bundle = conv_bundle(tmp_path, input_spec=SPEC)
    runner = OnnxRuntimeRunner.load(bundle)
    with pytest.raises(EdgesegError, match="not active"):
        runner.infer({"images": np.zeros((1, 3, 8, 12), np.float32)})
    with runner:
        with pytest.raises(InputError, match=r"input 'images' has dtype float64, expected float32"):
            runner.infer({"images": np.zeros((1, 3, 8, 12))})
        with pytest.raises(InputError, match=r"input 'images' has shape \[1, 3, 8, 11\]"):
            runner.infer({"images": np.zeros((1, 3, 8, 11), np.float32)})
        with pytest.raises(InputError, match=r"missing input\(s\) \['images'\]"):
            runner.infer({"x": np.zeros((1, 3, 8, 12), np.float32)})


def test_unsupported_op_is_named(tmp_path):
    runner = OnnxRuntimeRunner(custom_op_model(tmp_path / "custom.onnx"))
    with pytest.raises(UnsupportedError, match=r"no kernel for op com\.example:FancyOp") as e:
        runner.activate()
    assert "fix:" in str(e.value) and "custom.onnx" in str(e.value)


def test_new_ir_version_explained(tmp_path):
    import onnx

    path = custom_op_model(tmp_path / "m.onnx")
    m = onnx.load(str(path))
    m.ir_version = 99
    onnx.save(m, str(path))
    with pytest.raises(UnsupportedError, match="IR version 99"):
        OnnxRuntimeRunner(path).activate()


@pytest.mark.parametrize("message,expect", [
    ("FAIL : Load model from m.onnx failed:Fatal error: com.x:Op(-1) is not a registered function/op", "op com.x:Op"),
    ("INVALID_GRAPH : ... Error No Op registered for NotReal with domain_version of 19", "op NotReal"),
    ("NOT_IMPLEMENTED : Could not find an implementation for Relu(14) node with name 'r1'", "op Relu (node 'r1')"),
    ("Current official support for domain ai.onnx is till opset 23.", "ai.onnx up to 23"),
])
def test_explain_session_error(message, expect):
    err = explain_session_error("m.onnx", message)
    assert isinstance(err, UnsupportedError) and expect in str(err)


def test_explain_other_errors_keep_first_line():
    err = explain_session_error("m.onnx", "something odd\nmore")
    assert type(err) is EdgesegError and "something odd" in str(err) and "more" not in str(err)


def test_cuda_device_without_provider(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    from edgeseg.errors import BackendUnavailable

    runner = OnnxRuntimeRunner.load(conv_bundle(tmp_path, input_spec=SPEC), device="cuda")
    with pytest.raises(BackendUnavailable, match="no CUDA provider"):
        runner.activate()
