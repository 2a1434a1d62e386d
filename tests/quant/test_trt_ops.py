"""The ONNX-TensorRT table against its sources (hand-checked rows), and check_model on tiny ONNX graphs.

Sources (see edgeseg/quant/trt_ops.py and docs/quantization.md "TensorRT operator table: sources"):
onnx/onnx-tensorrt docs/operators.md at 8.4 (commit 009d654), 8.5 (commit 6d0ab7b), 9.2, 10.0 (header)
and 10.15; onnx-tensorrt docs/Changelog.md; NVIDIA/TensorRT v11.0 release notes; NVIDIA ONNX opset guide.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgeseg.quant import trt_ops as t
from edgeseg.quant.check import check_model


# ---- table facts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, absent, present", [
    ("HardSwish", (8, 4), (8, 5)),           # 8.4 table has no HardSwish row; 8.5 table: Y
    ("Reciprocal", (8, 4), (8, 5)),          # 8.4: N; 8.5: Y
    ("Shrink", (8, 4), (8, 5)),              # 8.4: N; 8.5: Y
    ("MeanVarianceNormalization", (8, 4), (8, 5)),
    ("LayerNormalization", (8, 5), (8, 6)),  # 8.5: N; Changelog 8.6 EA
    ("GroupNormalization", (8, 5), (8, 6)),  # absent from 8.5; Changelog 8.6 EA (the old table said 10.0)
    ("IsInf", (8, 5), (8, 6)),               # 8.5: N; Changelog 8.6 EA
    ("Hardmax", (8, 6), (9, 2)),             # 8.5: N; Changelog 9.2 GA (the old table said 8.5)
    ("CastLike", (8, 5), (9, 2)),            # absent from 8.5; 9.2: Y
    ("DeformConv", (10, 0), (10, 1)),        # Changelog 10.1 GA
    ("HannWindow", (10, 3), (10, 4)),        # Changelog 10.4 GA
    ("STFT", (10, 4), (10, 5)),              # Changelog 10.5 GA
    ("Swish", (10, 15), (11, 0)),            # NVIDIA/TensorRT v11.0: "Added support for Swish operator"
])
def test_first_version(op, absent, present):
    assert not t.supported(op, absent) and t.supported(op, present)


def test_segmentation_ops_by_target():
    for op in ("Conv", "ConvTranspose", "Resize", "Upsample", "DepthToSpace", "ArgMax", "Einsum", "Pad"):
        assert t.supported(op, (8, 5)) and t.supported(op, (10, 3)) and t.supported(op, (11, 0))
    assert t.supported("GridSample", (8, 5)) and t.supported("RoiAlign", (8, 5))  # 8.5 table: Y
    assert not t.supported("Hardmax", (8, 5)) and t.supported("Hardmax", (10, 3))
    assert not t.supported("GroupNormalization", (8, 5)) and t.supported("GroupNormalization", (8, 6))
    for op in ("MaxUnpool", "QLinearConv", "ConvInteger", "DynamicQuantizeLinear", "CenterCropPad", "Col2Im"):
        assert not t.supported(op, (10, 3)) and not t.supported(op, (11, 0)) and not t.unconfirmed(op, (10, 3))


def test_unconfirmed_gap():
    """Gelu/Mish: not in the 9.2 table, 'Y' in the 10.15 one; the tables between were not read."""
    assert not t.supported("Gelu", (9, 2)) and not t.unconfirmed("Gelu", (9, 2))
    assert t.unconfirmed("Gelu", (10, 3)) and not t.supported("Gelu", (10, 3))
    assert t.supported("Gelu", (10, 15)) and t.supported("Mish", (11, 0))
    assert "unconfirmed" in t.why_unsupported("Gelu", (10, 3))
    assert t.why_unsupported("DeformConv", (8, 5)) == "added in TensorRT 10.1"
    assert "absent from the TensorRT 9.2 table" in t.why_unsupported("Gelu", (8, 5))


def test_opset_caps():
    # headers: 8.4 "up to Opset 13", 8.5 "up to Opset 17", 9.2 "up to Opset 19", 10.0 "opset 9 to opset 20",
    # 10.15 "opset 9 to opset 24"; 8.6: DLA doc "up to Opset 17"; 11.x opset guide: max 25
    exact = {(8, 4): 13, (8, 5): 17, (8, 6): 17, (9, 2): 19, (10, 0): 20, (10, 15): 24, (11, 0): 25, (11, 4): 25}
    for v, cap in exact.items():
        assert t.opset_bounds(v) == (cap, cap), v
    assert t.opset_bounds((10, 3)) == (20, 24)  # unconfirmed: between the 10.0 and 10.15 headers
    assert t.opset_bounds((9, 0)) == (17, 19)
    assert t.max_opset((10, 3)) == 20 and t.MIN_OPSET == 9


def test_precision_cap_is_fp32_fp16_only():
    # Supported Types "FP32, FP16" in the 8.5/9.2/10.15 tables (Conv: "FP32, FP16, INT8" in 8.5)
    assert set(t.MAX_PRECISION) == {"DeformConv", "RoiAlign", "GridSample", "NonMaxSuppression", "NonZero"}
    assert set(t.MAX_PRECISION.values()) == {"fp16"}


# ---- check_model on tiny graphs -----------------------------------------------------------------------
def _save(tmp_path, nodes, inits, opset, x_shape=(1, 4, 8, 8), name="m"):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, list(x_shape))],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=10)
    p = tmp_path / f"{name}.onnx"
    onnx.save(m, str(p))
    return p


def _codes(report, level):
    return sorted(f.code for f in report.findings if f.level == level)


def _deform(tmp_path, pads=(1, 1, 1, 1)):
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.normal(0, .1, (18, 4, 3, 3)).astype(np.float32), "Wo"),
             nh.from_array(rng.normal(0, .3, (4, 4, 3, 3)).astype(np.float32), "Wd")]
    nodes = [h.make_node("Conv", ["x", "Wo"], ["off"], name="offset", pads=[1, 1, 1, 1]),
             h.make_node("DeformConv", ["x", "Wd", "off"], ["y"], name="dcn", pads=list(pads))]
    return _save(tmp_path, nodes, inits, 19, name=f"dcn{pads}")


def test_deform_conv_blocks_8_5_passes_10_3(tmp_path):
    p = _deform(tmp_path)
    r85 = check_model(p, "tensorrt-8.5")
    assert not r85.ok and _codes(r85, "error") == ["opset", "unsupported-op"]  # opset 19 > 17 as well
    assert [f.nodes for f in r85.errors if f.code == "unsupported-op"] == [("dcn",)]
    r103 = check_model(p, "tensorrt-10.3")
    assert r103.ok and _codes(r103, "warning") == [] and "precision-cap" in _codes(r103, "info")
    r100 = check_model(p, "tensorrt-10.0")
    assert [f.message for f in r100.errors] == ["DeformConv is not supported by TensorRT 10.0 (added in TensorRT 10.1)"]
    asym = check_model(_deform(tmp_path, (1, 1, 0, 0)), "tensorrt-10.3")  # 10.15 table: begin == end pads
    assert asym.ok and _codes(asym, "warning") == ["op-restriction"]


def test_group_norm_8_5_blocked_8_6_ok(tmp_path):
    inits = [nh.from_array(np.ones(2, np.float32), "s"), nh.from_array(np.zeros(2, np.float32), "b")]
    p = _save(tmp_path, [h.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)], inits, 18)
    assert _codes(check_model(p, "tensorrt-8.5"), "error") == ["opset", "unsupported-op"]
    assert check_model(p, "tensorrt-10.3").ok and not check_model(p, "tensorrt-8.6").ok  # 8.6: opset 18 > 17


def test_resize_modes(tmp_path):
    inits = [nh.from_array(np.array([1, 1, 2, 2], np.float32), "sc")]
    def resize(**kw):
        node = h.make_node("Resize", ["x", "", "sc"], ["y"], name="up", **kw)
        return check_model(_save(tmp_path, [node], inits, 17, name=str(sorted(kw.items()))), "tensorrt-10.3")
    assert resize(mode="linear", coordinate_transformation_mode="align_corners").findings[0].code == "shapes"
    assert resize(mode="nearest").ok  # default coordinate_transformation_mode: half_pixel
    cubic = resize(mode="cubic")
    assert not cubic.ok and [(f.code, f.nodes) for f in cubic.errors] == [("op-restriction", ("up",))]
    assert "nearest, linear" in cubic.errors[0].message
    assert not resize(mode="linear", coordinate_transformation_mode="tf_crop_and_resize").ok


def test_pad_wrap_before_10_0(tmp_path):
    inits = [nh.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    p = _save(tmp_path, [h.make_node("Pad", ["x", "pads"], ["y"], mode="wrap")], inits, 19)
    assert "op-restriction" in _codes(check_model(p, "tensorrt-9.2"), "error")  # Changelog 10.0 EA added wrap
    assert check_model(p, "tensorrt-10.3").ok


def test_einsum_diagonal_until_10_12(tmp_path):
    p = _save(tmp_path, [h.make_node("Einsum", ["x"], ["y"], equation="bcii->bci")], [], 17)
    assert _codes(check_model(p, "tensorrt-10.3"), "error") == ["op-restriction"]
    assert check_model(p, "tensorrt-10.12").ok  # Changelog 10.12 GA: ellipses, diagonal, broadcasting
    ok = _save(tmp_path, [h.make_node("Einsum", ["x"], ["y"], equation="bchw->bhwc")], [], 17, name="ok")
    assert check_model(ok, "tensorrt-8.5").ok


def test_maxpool_indices_output_blocked(tmp_path):
    node = h.make_node("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2], strides=[2, 2])
    r = check_model(_save(tmp_path, [node], [], 17), "tensorrt-10.3")
    assert [(f.code, f.nodes) for f in r.errors] == [("op-restriction", ("mp",))]
    assert "deploy this model with ONNX Runtime or OpenVINO" in r.errors[0].fix  # (a family audit: SegNet got no fix)


def test_unconfirmed_findings_are_warnings(tmp_path):
    gelu = _save(tmp_path, [h.make_node("Gelu", ["x"], ["y"])], [], 20, name="gelu")
    r = check_model(gelu, "tensorrt-10.3")
    assert r.ok and _codes(r, "warning") == ["unsupported-op"]
    assert check_model(gelu, "tensorrt-10.15").ok and _codes(check_model(gelu, "tensorrt-10.15"), "warning") == []
    relu = [h.make_node("Relu", ["x"], ["y"])]
    assert _codes(check_model(_save(tmp_path, relu, [], 21, name="o21"), "tensorrt-10.3"), "warning") == ["opset"]
    assert _codes(check_model(_save(tmp_path, relu, [], 25, name="o25"), "tensorrt-10.3"), "error") == ["opset"]
    assert check_model(_save(tmp_path, relu, [], 25, name="o25b"), "tensorrt-11").ok
