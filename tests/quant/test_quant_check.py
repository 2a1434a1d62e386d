"""Deployability check: op support by TensorRT version, Q/DQ conformance, CLI exit codes."""
import onnx
import pytest

from edgeseg.quant.check import check_model
from edgeseg.quant.trt_ops import max_opset, supported

from quant_graphs import conv_bn_relu, with_deform_conv


def test_trt_table_versions():
    assert not supported("RoiAlign", (8, 4)) and supported("RoiAlign", (8, 5))
    assert not supported("DeformConv", (10, 0)) and supported("DeformConv", (10, 1))
    assert supported("GridSample", (8, 5)) and supported("Conv", (8, 5))
    assert not supported("QLinearConv", (10, 3))
    assert max_opset((8, 5)) == 17 and max_opset((10, 3)) == 20


def test_deform_conv_blocks_tensorrt_8_5_with_the_fix(tmp_path):
    p = tmp_path / "dcn.onnx"
    onnx.save(with_deform_conv(), str(p))
    r = check_model(p, "tensorrt-8.5")
    assert not r.ok
    codes = {f.code: f for f in r.errors}
    assert set(codes) == {"unsupported-op", "opset"}  # DeformConv, and opset 19 > 17
    assert codes["unsupported-op"].nodes == ("dcn",)
    assert "deform_conv='decomposed'" in codes["unsupported-op"].fix
    assert "10.1" in codes["unsupported-op"].message
    r10 = check_model(p, "tensorrt-10.3")
    assert r10.ok, r10.format()
    # the version as trt.__version__ and JetPack print it (four parts) is the same target
    assert check_model(p, "tensorrt-8.5.2.2").format() == r.format().replace("tensorrt-8.5", "tensorrt-8.5.2.2")
    assert check_model(p, "tensorrt-10.3.0.30").ok
    assert any(f.code == "precision-cap" and "FP16" in f.message for f in r10.findings)
    assert check_model(p, "onnxruntime").ok


def test_qdq_conformance(tmp_path):
    from edgeseg.quant.calibration import FeedReader
    from edgeseg.quant.prepare import prepare_model
    from edgeseg.quant.profiles import get_profile
    from edgeseg.quant.quantize import quantize_model
    from edgeseg.quant.ranges import calibrate
    from edgeseg.structures import ImageShape, InputSpec
    import numpy as np

    prepare_model(conv_bn_relu(), tmp_path / "p.onnx")
    frames = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(4)]
    spec = InputSpec(name="x", size=ImageShape(16, 16))
    for target in ("tensorrt", "cpu"):
        prof = get_profile(target)
        table = calibrate(tmp_path / "p.onnx", FeedReader(frames, spec), "minmax", symmetric=prof.activation_symmetric)
        quantize_model(tmp_path / "p.onnx", tmp_path / f"{target}.onnx", prof, table)
    assert check_model(tmp_path / "tensorrt.onnx", "tensorrt-10.3").ok
    bad = check_model(tmp_path / "cpu.onnx", "tensorrt-10.3")
    assert {f.code for f in bad.errors} == {"qdq-uint8", "qdq-zero-point", "qdq-int32"}
    # a per-channel weight DQ moved to the wrong axis is caught
    m = onnx.load(str(tmp_path / "tensorrt.onnx"))
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear":
            for a in n.attribute:
                if a.name == "axis" and a.i == 1:
                    a.i = 0
    onnx.save(m, str(tmp_path / "axis.onnx"))
    assert [f.code for f in check_model(tmp_path / "axis.onnx", "tensorrt-10.3").errors] == ["qdq-axis"]


def test_check_cli_exit_codes(tmp_path, capsys):
    from edgeseg.bundle import Bundle, Manifest, ModelFile, OutputSpec
    from edgeseg.cli import main
    from edgeseg.structures import ImageShape, InputSpec

    p = tmp_path / "dcn.onnx"
    onnx.save(with_deform_conv(), str(p))
    man = Manifest(name="dcn", task="semantic", classes=tuple("abcd"), input=InputSpec(name="x", size=ImageShape(16, 16)),
                   outputs=(OutputSpec("y", "logits"),))
    b = Bundle.create(tmp_path / "b.edgeseg", man)
    b.add_model(ModelFile("model.onnx", "fp32", opset=19), p)
    assert main(["check", str(b.root), "--target", "tensorrt-8.5", "--json", str(tmp_path / "c.json")]) == 1
    out = capsys.readouterr().out
    assert "BLOCKED" in out and "deform_conv='decomposed'" in out
    assert main(["check", str(b.root), "--target", "tensorrt-10.3"]) == 0
    assert main(["check", str(b.root), "--target", "tensorrt-10.3", "--precision", "int8"]) == 1
    assert "edgeseg quantize" in capsys.readouterr().out


# ---- ONNX Runtime and OpenVINO: the backends' own support answers -----------------------------------
def test_onnxruntime_target_is_the_backends_answer(tmp_path):
    from edgeseg.backends import BACKENDS
    from edgeseg.backends.onnxrt import load_error
    from handmade_bundles import conv_model, custom_op_model

    good = conv_model(tmp_path / "conv.onnx", 3)
    bad = custom_op_model(tmp_path / "custom.onnx")
    assert load_error(good) is None and BACKENDS.get("onnxruntime").supports(good) == (True, "")
    ok_report = check_model(good, "onnxruntime")
    assert ok_report.ok and [(f.level, f.code) for f in ok_report.findings] == [("info", "load"), ("info", "dynamic-shape")]
    report = check_model(bad, "onnxruntime")
    assert [(f.level, f.code) for f in report.errors] == [("error", "load")]
    err = load_error(bad)
    assert "FancyOp" in str(err) and "FancyOp" in report.errors[0].message  # ORT's own line names the op
    assert report.errors[0].message.endswith(str(err.__cause__).splitlines()[0])
    ok, why = BACKENDS.get("onnxruntime").supports(bad)
    assert not ok and why == str(err)


def test_openvino_target_is_the_backends_answer(tmp_path):
    pytest.importorskip("openvino")
    from edgeseg.backends import BACKENDS
    from edgeseg.backends.openvino import unsupported_ops
    from handmade_bundles import conv_model, custom_op_model

    good = conv_model(tmp_path / "conv.onnx", 3)
    assert unsupported_ops(good) == [] and BACKENDS.get("openvino").supports(good) == (True, "")
    report = check_model(good, "openvino")
    assert report.ok and [(f.level, f.code) for f in report.findings] == [("info", "load"), ("info", "dynamic-shape")]
    assert "supports every operation on CPU" in report.findings[0].message
    bad = check_model(custom_op_model(tmp_path / "custom.onnx"), "openvino")
    assert [(f.level, f.code) for f in bad.errors] == [("error", "load")]
    # the model and the op without a conversion rule are named (not OpenVINO's 'Exception from src/...' line)
    assert bad.errors[0].message == "custom.onnx: OpenVINO cannot convert op(s) com.example.FancyOp"
    assert "--backend onnxruntime" in bad.errors[0].fix
    ok, why = BACKENDS.get("openvino").supports(tmp_path / "custom.onnx")
    assert not ok and why.splitlines()[0] == bad.errors[0].message
