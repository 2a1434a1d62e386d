"""Which model file a backend runs: a target picks among INT8 models only; FP32 is one graph for all."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.backends import BACKENDS
from edgeseg.bundle import ModelFile
from edgeseg.errors import BundleError
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle, conv_model, reference_logits


@pytest.fixture()
def bundle(tmp_path):
    b = conv_bundle(tmp_path, 4, input_spec=InputSpec(size=ImageShape(8, 12)))
    # a second graph (other weights) as the "cpu" INT8 model, so the files tell apart by their outputs
    b.add_model(ModelFile("model.int8.cpu.onnx", "int8", "cpu", 19), conv_model(tmp_path / "q.onnx", 4, seed=1))
    return b


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tensorrt"])
def test_fp32_with_a_target_selects_the_fp32_graph(bundle, backend):
    cls = BACKENDS.get(backend)
    for target in ("cpu", "tensorrt", "openvino", None):
        assert cls.select_model(bundle, "fp32", target) == bundle.root / "model.onnx"
    if backend != "tensorrt":
        assert cls.select_model(bundle, "int8", "cpu") == bundle.root / "model.int8.cpu.onnx"
    with pytest.raises(BundleError, match=r"no int8/tensorrt model \(it has: fp32, int8/cpu\)"):
        cls.select_model(bundle, "int8", "tensorrt")


def test_tensorrt_never_runs_another_targets_int8_model(bundle):
    """An ONNX Runtime or OpenVINO INT8 graph (uint8 zero points, INT32 bias) is one TensorRT's parser
    refuses: asked for INT8 without a tensorrt model, the backend says which command makes one."""
    cls = BACKENDS.get("tensorrt")
    with pytest.raises(BundleError, match=r"not 'cpu'") as e:
        cls.select_model(bundle, "int8", "cpu")
    assert "--target tensorrt" in e.value.fix
    with pytest.raises(BundleError, match=r"no int8/tensorrt model \(it has: fp32, int8/cpu\); TensorRT cannot run") as e:
        cls.select_model(bundle, "int8", None)  # before: the cpu model, handed to TensorRT
    assert "edgeseg quantize" in e.value.fix and "--target tensorrt" in e.value.fix


def test_load_fp32_with_target_cpu_runs_the_fp32_graph(bundle):
    import edgeseg

    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    x, _ = bundle.manifest.input.preprocess(image)
    with edgeseg.load(bundle, precision="fp32", target="cpu") as p:
        assert p.runner.model_path == bundle.root / "model.onnx"
        logits = p.runner.infer({"images": x})[next(iter(p.runner.output_specs)).name]
        labels = p(image).labels
    ref = reference_logits(x, 4, seed=0)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)
    assert np.array_equal(labels, ref[0].argmax(0))
    with edgeseg.load(bundle, backend="onnxruntime", precision="int8", target="cpu") as q:  # the seed-1 graph
        np.testing.assert_allclose(q.runner.infer({"images": x})["logits"], reference_logits(x, 4, seed=1),
                                   rtol=1e-4, atol=1e-4)
