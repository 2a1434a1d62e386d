"""Calibration of models whose intermediate tensors hold -inf (masked attention, as transformers exports
Mask2Former): every range method finishes with finite ranges, and the INT8 model keeps the masking."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgeseg.quant.calibration import FeedReader
from edgeseg.quant.profiles import get_profile
from edgeseg.quant.quantize import quantize_model
from edgeseg.quant.ranges import calibrate, finite_tensor
from edgeseg.structures import ImageShape, InputSpec

ort = pytest.importorskip("onnxruntime")
SPEC = InputSpec(name="x", size=ImageShape(8, 8))


def _masked_attention(path) -> None:
    """x [1,3,8,8] -> Conv -> [1,4,64] scores; a mask adds -inf to the second half of the keys; Softmax;
    MatMul with values: what masked attention does (Mask2Former's decoder attends inside its masks only)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((1, 4, 64), np.float32)
    mask[..., 32:] = -np.inf
    inits = [nh.from_array(rng.normal(0, 1, (4, 3, 1, 1)).astype(np.float32), "w"),
             nh.from_array(np.array([1, 4, 64], np.int64), "shape"), nh.from_array(mask, "mask"),
             nh.from_array(rng.normal(0, 1, (64, 5)).astype(np.float32), "v")]
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Reshape", ["c", "shape"], ["s"]),
             h.make_node("Add", ["s", "mask"], ["masked"]), h.make_node("Softmax", ["masked"], ["p"], axis=-1),
             h.make_node("MatMul", ["p", "v"], ["y"])]
    g = h.make_graph(nodes, "attn", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 5])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax", "mse"])
def test_every_method_calibrates_a_masked_attention(tmp_path, method):
    _masked_attention(tmp_path / "m.onnx")
    frames = [np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8) for i in range(4)]
    table = calibrate(tmp_path / "m.onnx", FeedReader(frames, SPEC), method)
    assert all(np.isfinite([r.low, r.high]).all() for r in table.ranges.values())
    assert table.options["nonfinite_tensors"] == ["masked"]
    if method == "minmax":  # its ReduceMin of -inf keeps no finite value: no range (the nodes around stay float)
        assert "masked" not in table.ranges
    else:  # the histograms' finite part
        assert table.ranges["masked"].high > table.ranges["masked"].low
    if method == "minmax":  # the INT8 model still masks: the second half of the keys gets (almost) no weight
        out = quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", get_profile("cpu"), table)
        x, _ = SPEC.preprocess(frames[0])
        ref = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})[0]
        got = ort.InferenceSession(str(out.path)).run(None, {"x": x})[0]
        assert any("NaN/inf" in f.reason for f in out.float_nodes)
        assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_finite_tensor():
    a = np.array([-np.inf, -2.0, 3.0, np.inf, np.nan], np.float32)
    assert finite_tensor(a).tolist() == [-2.0, -2.0, 3.0, 3.0, 0.0]
    b = np.ones(3, np.float32)
    assert finite_tensor(b) is b
    assert finite_tensor(np.full(2, np.nan, np.float32)).tolist() == [0.0, 0.0]


def test_every_engine_keeps_masked_attention_and_appended_nodes_in_float(tmp_path):
    """NNCF calibrates on its own: the tensors holding -inf are found on the first calibration frames, and the
    post-processing an import appended stays float there too, under a fused bundle's scope as well."""
    from edgeseg.quant.openvino import nncf_available, nncf_quantize_onnx
    from edgeseg.quant.quantize import forced_float_nodes
    from edgeseg.quant.ranges import nonfinite_tensors

    _masked_attention(tmp_path / "m.onnx")
    frames = [np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8) for i in range(4)]
    feeds = [{"x": SPEC.preprocess(f)[0]} for f in frames]
    assert nonfinite_tensors(tmp_path / "m.onnx", feeds[:1]) == {"masked"}
    model = onnx.load(str(tmp_path / "m.onnx"))
    for i, n in enumerate(model.graph.node):
        n.name = ["conv", "sem/edgeseg_query_reshape", "add", "softmax", "edgeseg_panoptic_matmul"][i]
    forced = forced_float_nodes(model, {"masked"})
    assert set(forced) == {"sem/edgeseg_query_reshape", "add", "softmax", "edgeseg_panoptic_matmul"}
    if not nncf_available()[0]:
        pytest.skip("NNCF/OpenVINO not installed")
    onnx.save(model, str(tmp_path / "named.onnx"))
    q = nncf_quantize_onnx(tmp_path / "named.onnx", tmp_path / "q.onnx", feeds, get_profile("openvino"))
    reasons = {f.name: f.reason for f in q.float_nodes}
    assert "NaN/inf" in reasons.get("add", "") and "appended at import" in reasons.get("edgeseg_panoptic_matmul", "")
