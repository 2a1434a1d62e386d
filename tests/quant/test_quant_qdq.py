"""Q/DQ structure per target, INT8 vs FP32 agreement, range methods, TensorRT calibration cache."""
import struct

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeseg.errors import QuantizationError
from edgeseg.quant.calibration import FeedReader
from edgeseg.quant.prepare import prepare_model
from edgeseg.quant.profiles import get_profile
from edgeseg.quant.quantize import quantize_model
from edgeseg.quant.ranges import CalibrationTable, TensorRange, calibrate, mse_range
from edgeseg.quant.trt_cache import (CalibrationCache, cache_from_table, read_cache, retarget_cache, trt_version_code,
                                    write_cache)
from edgeseg.structures import ImageShape, InputSpec

from quant_graphs import conv_bn_relu, run, with_deform_conv


def _frames(n=8, hw=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def _quantize(tmp_path, model, target, method="minmax", spec=None):
    spec = spec or InputSpec(name="x", size=ImageShape(16, 16))
    prepare_model(model, tmp_path / "p.onnx")
    table = calibrate(tmp_path / "p.onnx", FeedReader(_frames(), spec), method, symmetric=get_profile(target).activation_symmetric)
    q = quantize_model(tmp_path / "p.onnx", tmp_path / f"{target}.onnx", get_profile(target), table)
    return q, onnx.load(str(tmp_path / f"{target}.onnx")), spec


def _consumers(g):
    out = {}
    for n in g.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def test_tensorrt_profile_structure(tmp_path):
    q, m, spec = _quantize(tmp_path, conv_bn_relu(), "tensorrt")
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    cons = _consumers(m.graph)
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:  # symmetric INT8, zero-point 0 everywhere, no INT32 bias
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not np.any(zp)
    axes = {}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[1]].size > 1:
            user = cons[n.output[0]][0]
            axes[user.op_type] = next(a.i for a in n.attribute if a.name == "axis")
            # per-channel scales: one per output channel, symmetric amax/127 of that channel's float weights
            assert inits[n.input[0]].dtype == np.int8
    assert axes == {"Conv": 0, "ConvTranspose": 1}
    conv_t = next(n for n in m.graph.node if n.op_type == "ConvTranspose")
    w_dq = next(n for n in m.graph.node if n.output[0] == conv_t.input[1])
    assert inits[w_dq.input[1]].shape == (4,)  # ConvTranspose weight [C_in=8, C_out=4, 2, 2]: 4 scales on axis 1
    # Q/DQ only where TensorRT fuses: activation DQs feed compute ops (or a residual Add)
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits:
            assert {c.op_type for c in cons[n.output[0]]} <= {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add"}
    assert "Relu" in {n.op_type for n in m.graph.node}  # activations kept explicit for TensorRT's fusions
    # biases stay float
    assert all(inits[n.input[2]].dtype == np.float32 for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2)
    x = spec.preprocess(_frames(1, seed=3)[0])[0]
    ref, got = run(str(tmp_path / "p.onnx"), x), run(str(tmp_path / "tensorrt.onnx"), x)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_cpu_profile_structure_and_agreement(tmp_path):
    q, m, spec = _quantize(tmp_path, conv_bn_relu(), "cpu")
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    act_q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert act_q and all(inits[n.input[2]].dtype == np.uint8 for n in act_q)
    assert [f.op_type for f in q.float_nodes] == ["ConvTranspose"]
    x = spec.preprocess(_frames(1, seed=3)[0])[0]
    ref, got = run(str(tmp_path / "p.onnx"), x), run(str(tmp_path / "cpu.onnx"), x)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_deform_conv_left_in_float_for_tensorrt(tmp_path):
    q, m, _ = _quantize(tmp_path, with_deform_conv(), "tensorrt")
    assert [(f.name, f.op_type) for f in q.float_nodes] == [("dcn", "DeformConv")]
    assert "FP16" in q.float_nodes[0].reason
    producers = {o: n for n in m.graph.node for o in n.output}
    dcn = next(n for n in m.graph.node if n.op_type == "DeformConv")
    # it reads the float tensors, not quantize-dequantize copies
    assert all(producers[i].op_type not in ("DequantizeLinear",) for i in dcn.input if i in producers)
    head = next(n for n in m.graph.node if n.name == "head")
    assert producers[head.input[0]].op_type == "DequantizeLinear"


def test_mse_range_hand_computed():
    # all mass at +-1 and a 1% outlier at 10: the MSE-optimal range clips the outlier's tail (< 10)
    edges = np.linspace(-10, 10, 2001)
    hist = np.zeros(2000)
    hist[np.searchsorted(edges, [-1.0, 1.0]) - 1] = 495
    hist[-1] = 10
    r = mse_range(hist, edges, -10.0, 10.0, symmetric=True)
    assert 1.0 <= r.high < 10.0 and r.low == -r.high
    # a uniform distribution on [0, 1]: no clipping pays off
    e = np.linspace(0, 1, 1001)
    r = mse_range(np.ones(1000), e, 0.0, 1.0)
    assert r.low == 0.0 and r.high == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile", "mse"])
def test_methods_give_ranges_within_minmax(tmp_path, method):
    prepare_model(conv_bn_relu(), tmp_path / "p.onnx")
    spec = InputSpec(name="x", size=ImageShape(16, 16))
    mm = calibrate(tmp_path / "p.onnx", FeedReader(_frames(4), spec), "minmax")
    t = calibrate(tmp_path / "p.onnx", FeedReader(_frames(4), spec), method)
    assert t.method == method and t.frames == 4 and set(t.ranges) == set(mm.ranges)
    for k, r in t.ranges.items():
        assert mm.ranges[k].low - 1e-3 <= r.low <= r.high <= mm.ranges[k].high + 1e-3 + 0.01 * mm.ranges[k].amax


def test_trt_cache_format_and_round_trip(tmp_path):
    assert trt_version_code("8.5.2") == 8502 and trt_version_code("10.3") == 100300 and trt_version_code("7.2.2") == 7202
    with pytest.raises(QuantizationError, match="TensorRT 11"):
        trt_version_code("11.0")
    # published cache line (TensorRT 7.2 MNIST sample): "data: 3c008912"
    assert CalibrationCache.parse("TRT-7202-EntropyCalibration2\ndata: 3c008912\n").scales["data"] == struct.unpack(">f", bytes.fromhex("3c008912"))[0]
    table = CalibrationTable("entropy", {"images": TensorRange(-1.0, 1.0), "a/b:0": TensorRange(0.0, 2.54)}, 3)
    text = cache_from_table(table, "8.5.2").to_text()
    assert text.splitlines()[0] == "TRT-8502-EntropyCalibration2" and "images: 3c010204" in text.splitlines()  # 1/127
    assert text.splitlines()[1:] == sorted(text.splitlines()[1:])  # by name: the same bytes on every run (a review)
    p = write_cache(table, tmp_path / "c.cache", "10.3.0")
    back = read_cache(p)
    assert back.version_code == 100300 and back.algorithm == "EntropyCalibration2"
    assert back.scales["a/b:0"] == pytest.approx(2.54 / 127, rel=1e-7)
    assert back.scales["images"] == np.float32(1 / 127)
    # JetPack 6.0's TensorRT 8.6.2 (four-part, as trt.__version__ prints it): same scales, its own header
    moved = read_cache(retarget_cache(p, "8.6.2.3", tmp_path / "jp60.cache"))
    assert moved.version_code == 8602 and moved.scales == back.scales
    assert (tmp_path / "jp60.cache").read_text().splitlines()[1:] == p.read_text().splitlines()[1:]
