"""tools/bench/int8_profile.py: per-layer FP32 vs INT8 profiles (ONNX Runtime trace, OpenVINO counters),
grouped by op family, and the ESPNet-like model of issue 10."""
import sys
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from quant_graphs import conv_bn_relu, load_bench_script  # noqa: E402


@pytest.fixture(scope="module")
def prof():
    mod = load_bench_script("int8_profile.py", "int8_profile")
    yield mod
    sys.modules.pop("int8_profile", None)


def _ev(node, op, dur, cat="Node"):
    return {"cat": cat, "name": f"{node}_kernel_time", "dur": dur, "args": {"op_name": op, "provider": "CPUExecutionProvider"}}


def test_ort_trace_gives_each_nodes_median_kernel_time(prof):
    events = [_ev("conv", "QLinearConv", d) for d in (1000, 1200, 9000)] + [_ev("q", "QuantizeLinear", d) for d in (100, 300)]
    events += [{"cat": "Session", "name": "model_run", "dur": 50000}, _ev("conv", "QLinearConv", 7, cat="Api")]
    got = {t.name: t for t in prof.parse_ort_trace(events)}
    assert set(got) == {"conv", "q"}
    assert got["conv"].ms == pytest.approx(1.2) and got["q"].ms == pytest.approx(0.2)  # median: the 9 ms outlier ignored
    assert (got["conv"].family, got["q"].family) == ("Conv", "Q/DQ")


def test_openvino_counters_keep_executed_nodes(prof):
    def c(name, typ, exec_type, us, status="Status.EXECUTED"):
        return SimpleNamespace(node_name=name, node_type=typ, exec_type=exec_type, real_time=timedelta(microseconds=us),
                               status=status)

    runs = [[c("conv", "Convolution", "jit_avx2_I8", us), c("fq", "FakeQuantize", "jit_avx2_FP32", 50),
             c("r", "Reshape", "unknown_FP32", 0, "Status.OPTIMIZED_OUT")] for us in (400, 600, 500)]
    got = {t.name: t for t in prof.parse_openvino_counters(runs)}
    assert set(got) == {"conv", "fq"}
    assert got["conv"].ms == pytest.approx(0.5) and got["conv"].exec_type == "jit_avx2_I8"
    assert got["fq"].family == "Q/DQ"


def test_families_and_the_layers_int8_makes_slower(prof):
    L = prof.LayerTime
    fp32 = prof.ModelProfile("fp32", "a", (L("conv1", "FusedConv", "cpu", 2.0), L("act", "PRelu", "cpu", 1.0),
                                           L("conv2", "Conv", "cpu", 0.5)), wall_ms=3.6)
    int8 = prof.ModelProfile("int8", "b", (L("conv1_quant", "QLinearConv", "cpu", 1.0), L("act", "PRelu", "cpu", 1.3),
                                           L("conv2_token_7", "QLinearConv", "cpu", 0.6),
                                           L("act_q", "QuantizeLinear", "cpu", 0.4),
                                           L("Transpose_token_3", "Transpose", "cpu", 0.005)),
                             wall_ms=3.0, argmax_agreement=0.98)
    rows = {r["family"]: r for r in prof.family_table([fp32, int8])}
    assert rows["Conv"]["fp32"] == pytest.approx(2.5) and rows["Conv"]["int8"] == pytest.approx(1.6)
    assert rows["Q/DQ"]["fp32"] == 0.0 and rows["Q/DQ"]["int8"] == pytest.approx(0.4)
    slower = prof.slower_layers(fp32, int8)
    assert [(r["layer"], round(r["extra_ms"], 3)) for r in slower] == [("act_q", 0.4), ("act", 0.3), ("conv2_token_7", 0.1)]
    text = prof.format_report("onnxruntime", [fp32, int8])
    assert "speed-up vs fp32" in text and "1.20" in text and "98.00" in text


def _pair(tmp_path):
    """conv_bn_relu prepared (FP32) and quantized for the cpu target."""
    from edgeseg.quant.calibration import FeedReader
    from edgeseg.quant.prepare import prepare_model
    from edgeseg.quant.profiles import get_profile
    from edgeseg.quant.quantize import quantize_model
    from edgeseg.quant.ranges import calibrate
    from edgeseg.structures import ImageShape, InputSpec

    spec = InputSpec(name="x", size=ImageShape(16, 16))
    frames = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(4)]
    prepare_model(conv_bn_relu(), tmp_path / "fp32.onnx")
    table = calibrate(tmp_path / "fp32.onnx", FeedReader(frames, spec), "minmax", symmetric=False)
    quantize_model(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", get_profile("cpu"), table)
    models = [("fp32", str(tmp_path / "fp32.onnx")), ("int8", str(tmp_path / "int8.onnx"))]
    return models, [{"x": spec.preprocess(f)[0]} for f in frames]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_profiles_a_real_pair(prof, tmp_path, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    models, feeds = _pair(tmp_path)
    fp32, int8 = prof.profile_models(models, backend, feeds[0], threads=1, runs=3, rounds=1, frames=feeds)
    assert fp32.argmax_agreement is None and 0.8 <= int8.argmax_agreement <= 1.0
    assert fp32.wall_ms > 0 and int8.wall_ms > 0 and all(t.ms >= 0 for t in fp32.layers + int8.layers)
    assert "Conv" in fp32.by_family() and "ConvTranspose" in int8.by_family()
    if backend == "onnxruntime":  # ORT: the INT8 model runs QLinearConv and pays Q/DQ around the float ConvTranspose
        assert {t.op_type for t in int8.layers} >= {"QLinearConv", "QuantizeLinear", "DequantizeLinear"}
    else:  # OpenVINO names how each layer ran, e.g. jit_avx2_I8 / jit_avx2_FP32
        assert any("I8" in t.exec_type.upper() for t in int8.layers)


def test_espnet_like_has_the_users_layers(prof):
    torch = pytest.importorskip("torch")
    net = prof.build_espnet(classes=11)
    n = {k: sum(isinstance(m, getattr(torch.nn, k)) for m in net.modules()) for k in ("PReLU", "ConvTranspose2d")}
    assert n == {"PReLU": 20, "ConvTranspose2d": 3}
    dilations = {m.dilation[0] for m in net.modules() if isinstance(m, torch.nn.Conv2d)}
    assert dilations == {1, 2, 4, 8, 16}
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 48, 64))["logits"]
    assert tuple(out.shape) == (1, 11, 48, 64)
