"""Per-layer INT8 latency (edgeseg.quant.layer_latency) and the cpu target's latency guard.

The timing models must compute what the layer computes (float) and what ONNX Runtime's fused
integer kernel computes (int8: checked against numpy within one quantization step); the decision rule
is checked on hand-made timings; the guard's report must be consistent with its own measurements.
"""
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

from edgeseg.quant import layer_latency as ll  # noqa: E402

from quant_graphs import _model, conv_bn_relu, run  # noqa: E402


def _conv_relu_graph(seed=0):
    """x[1,4,12,12] -> Conv(4->6, 3x3, bias) -> Relu -> MatMul(x x, activation x activation) -> y."""
    rng = np.random.default_rng(seed)
    inits = [nh.from_array(rng.normal(0, .3, (6, 4, 3, 3)).astype(np.float32), "W"),
             nh.from_array(rng.normal(0, .1, 6).astype(np.float32), "B")]
    nodes = [h.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"], name="relu"),
             h.make_node("MatMul", ["r", "r"], ["y"], name="self_matmul")]
    return _model(nodes, inits, [1, 4, 12, 12], "y", [1, 6, 12, 12])


def _layer(model, name):
    inferred = onnx.shape_inference.infer_shapes(model)
    inits = {t.name: nh.to_array(t) for t in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    node = next(n for n in model.graph.node if n.name == name)
    return ll._Layer.of(node, inits, ll._value_shapes(inferred), consumers)


def test_float_timing_model_computes_the_layer_and_its_activation():
    model = _conv_relu_graph()
    layer = _layer(model, "conv")
    assert layer.act is not None and layer.act.op_type == "Relu"
    assert layer.x_shape == (1, 4, 12, 12) and layer.y_shape == (1, 6, 12, 12)
    x = np.random.default_rng(1).normal(0, 1, layer.x_shape).astype(np.float32)
    # reference: the original graph cut after the Relu
    cut = _model(list(model.graph.node)[:2], list(model.graph.initializer), [1, 4, 12, 12], "r", [1, 6, 12, 12])
    np.testing.assert_array_equal(run(ll._float_model(layer), x), run(cut, x))


def test_int8_timing_model_is_the_quantized_layer():
    """u8 in -> the integer kernel ORT fuses -> u8 out equals numpy's quantized conv within 1 step."""
    model = _conv_relu_graph()
    layer = _layer(model, "conv")
    # inputs below 128: no pair of u8*s8 products can saturate ORT's int16 adds on CPUs without VNNI
    # (vpmaddubsw), so the check is about the graph, the same on every x86 CPU
    xq = np.random.default_rng(2).integers(0, 128, layer.x_shape, dtype=np.uint8)
    got = run(ll._int8_model(layer), xq)
    assert got.dtype == np.uint8
    # numpy reference: dequantize input, weights (per output channel, symmetric) and bias, convolve in float
    w = layer.weight
    ws = np.maximum(np.abs(w).max(axis=(1, 2, 3)), 1e-8).astype(np.float32) / 127.0
    wq = np.clip(np.round(w / ws[:, None, None, None]), -127, 127)
    x = (xq.astype(np.float32) - 128) * np.float32(0.05)
    bias = np.round(layer.bias / (ws * 0.05)) * (ws * 0.05)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros(layer.y_shape, np.float64)
    for i in range(3):
        for j in range(3):
            ref += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 12, j:j + 12], wq[:, :, i, j] * ws[:, None])
    ref += bias[None, :, None, None]
    expected = np.clip(np.round(ref / 0.05), 0, 255)  # zero point 0: the Relu is folded into the range
    assert np.abs(got.astype(np.int32) - expected).max() <= 1


def test_activation_x_activation_matmul_is_not_timed():
    timings = ll.measure_layers(_conv_relu_graph(), threads=1, runs=2, rounds=1)
    assert [t.name for t in timings] == ["conv"]
    t = timings[0]
    assert t.shape == (1, 6, 12, 12) and min(t.float_ms, t.int8_ms, t.convert_ms) > 0


def test_every_weight_conv_is_timed_at_its_real_shape():
    model = conv_bn_relu()  # Conv 3->8 (16x16), BN, Relu, ConvTranspose (not timed: no CPU INT8 kernel), Conv 4->5 (32x32)
    timings = ll.measure_layers(model, threads=1, runs=2, rounds=1)
    assert [(t.op_type, t.shape) for t in timings] == [("Conv", (1, 8, 16, 16)), ("Conv", (1, 5, 32, 32))]


def test_decision_rule_counts_the_conversions():
    t = ll.LayerTiming("a", "Conv", float_ms=1.0, int8_ms=1.5, convert_ms=0.2, shape=(1, 8, 4, 4))
    assert t.float_wins(0.1)  # 1.2 < 1.35
    assert not ll.LayerTiming("b", "Conv", 1.0, 1.3, 0.2, (1,)).float_wins(0.1)  # 1.2 > 1.17: within the margin
    assert not ll.LayerTiming("c", "Conv", 1.0, 0.5, 0.0, (1,)).float_wins(0.0)
    assert ll.slow_int8_layers([t, ll.LayerTiming("c", "Conv", 1.0, 0.5, 0.0, (1,))]) == {"a": t.reason()}
    assert "1.500 ms vs 1.000 ms float + 0.200 ms" in t.reason()


def test_cpu_target_reports_per_layer_latency_and_acts_on_its_own_numbers(trained, tmp_path):
    from edgeseg.bundle import Bundle
    from edgeseg.quant import quantize_bundle

    import quant_tiny as qt

    dst = shutil.copytree(trained, tmp_path / "b.edgeseg")
    frames = [s.image for s in qt.scenes(8, seed=5)]
    r = quantize_bundle(dst, frames, target="cpu", method="minmax", threads=1, progress=False, latency=False)
    sec = Bundle.open(dst).report["int8"]["cpu"]["layer_latency"]
    prepared_convs = r.layer_latency["layers"]
    assert sec == r.layer_latency and len(prepared_convs) >= 2
    slower = {d["name"] for d in prepared_convs if d["float_ms"] + d["convert_ms"] < d["int8_ms"] * 0.9}
    assert set(sec["slower_in_int8"]) == slower
    for trial in sec["trials"]:
        assert trial["kept_float"] == (trial["with_layer_float_ms"] < trial["whole_model_ms"] * 0.99)
    assert sec["kept_float"] == [t["layer"] for t in sec["trials"] if t["kept_float"]]
    speed_float = {f.name for f in r.float_nodes if f.reason.startswith("measured slower in INT8")}
    assert speed_float == set(sec["kept_float"])
    # the tensorrt target is not timed here (the host is not the target)
    r2 = quantize_bundle(dst, frames, target="tensorrt", method="minmax", threads=1, progress=False, latency=False)
    assert r2.layer_latency == {}


def test_dynamic_batch_is_fixed_to_the_feed_shape():
    """Exported bundles have a dynamic batch axis: the layers are timed at the shapes inference feeds."""
    model = _conv_relu_graph()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert ll.measure_layers(model, threads=1, runs=1, rounds=1) == []  # unknown shapes: nothing timed
    timings = ll.measure_layers(model, threads=1, runs=1, rounds=1, input_shapes={"x": (2, 4, 12, 12)})
    assert [(t.name, t.shape) for t in timings] == [("conv", (2, 6, 12, 12))]
