"""Ranking layers by the quantization noise each adds (edgeseg.quant.error_ranking): hand-computed noise
on hand-made Q/DQ graphs, the quantizer's folded activations, and the gate on a trained tiny net."""
import json
import shutil

import numpy as np
import pytest

from edgeseg.bundle import Bundle
from edgeseg.errors import InputError
from edgeseg.quant.error_ranking import MEASURE, RankingUnavailable, _float_tensors, error_ranking, layer_tensors

import quant_tiny as qt

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(nodes, inits, out="Y"):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _qdq(tensor, scale, out):
    """Q/DQ of ``tensor`` with uint8, zero point 0, as ONNX Runtime's quantizer names them."""
    return ([helper.make_node("QuantizeLinear", [tensor, f"{tensor}_s", f"{tensor}_z"], [f"{tensor}_q"], name=f"{tensor}_Q"),
             helper.make_node("DequantizeLinear", [f"{tensor}_q", f"{tensor}_s", f"{tensor}_z"], [out], name=f"{tensor}_DQ")],
            [_const(f"{tensor}_s", scale), _const(f"{tensor}_z", 0, np.uint8)])


X = np.array([[0.2, 0.6, 1.0, 1.4]], np.float32)


def test_noise_of_a_quantized_tensor_is_charged_to_the_layer_that_made_it(tmp_path):
    # FP32: X -> m1 (x1) -> t1 -> m2 (x2) -> Y; Q/DQ: t1 quantized with scale 0.5 between them
    fp32 = _model([helper.make_node("Mul", ["X", "one"], ["t1"], name="m1"),
                   helper.make_node("Mul", ["t1", "two"], ["Y"], name="m2")], [_const("one", 1.0), _const("two", 2.0)])
    qnodes, qinits = _qdq("t1", 0.5, "t1_dq")
    int8 = _model([helper.make_node("Mul", ["X", "one"], ["t1"], name="m1"), *qnodes,
                   helper.make_node("Mul", ["t1_dq", "two"], ["Y"], name="m2")],
                  [_const("one", 1.0), _const("two", 2.0), *qinits])
    onnx.save(fp32, tmp_path / "f.onnx")
    onnx.save(int8, tmp_path / "q.onnx")
    ranked = error_ranking(tmp_path / "f.onnx", tmp_path / "q.onnx", [{"X": X}, {"X": X + np.float32(0.1)}], [("m1", "Mul"), ("m2", "Mul")])
    # t1 = X rounds to [0, 0.5, 1.0, 1.5] (x / 0.5 half to even: 0.4 -> 0, 2.8 -> 3): noise 0.06 of 3.36;
    # X + 0.1 to [0.5, 0.5, 1.0, 1.5]: noise 0.09 of 4.04
    nsr = (0.06 + 0.09) / (3.36 + 4.04)
    assert [r.name for r in ranked] == ["m1", "m2"]
    assert ranked[0].score == pytest.approx(nsr, rel=1e-5) and ranked[0].gain == pytest.approx(nsr, rel=1e-5)
    # m2 only scales what it received: the same ratio at its output, no noise of its own
    assert ranked[1].score == pytest.approx(nsr, rel=1e-5) and ranked[1].gain == pytest.approx(0.0, abs=1e-9)
    assert ranked[0].measure == MEASURE and ranked[0].to_dict()["measure"] == MEASURE


def test_an_activation_folded_into_the_layer_is_compared_under_its_own_name():
    # FP32 m1 -> a -> Relu -> b; the quantizer drops the Relu (uint8 zero point 0 clips negatives):
    # m1 then writes "b" itself, which is what the FP32 "b" (after the Relu) must be compared with
    fp32 = _model([helper.make_node("Mul", ["X", "one"], ["a"], name="m1"),
                   helper.make_node("Relu", ["a"], ["b"], name="r"),
                   helper.make_node("Mul", ["b", "two"], ["Y"], name="m2")], [_const("one", 1.0), _const("two", 2.0)])
    qnodes, qinits = _qdq("b", 0.5, "b_dq")
    int8 = _model([helper.make_node("Mul", ["X", "one"], ["b"], name="m1"), *qnodes,
                   helper.make_node("Mul", ["b_dq", "two"], ["Y"], name="m2")],
                  [_const("one", 1.0), _const("two", 2.0), *qinits])
    floats = _float_tensors(fp32)
    assert floats == {"X", "a", "b", "Y"}
    t = layer_tensors(int8, ["m1", "m2"], floats)
    assert t["m1"] == (("b", "b_dq"), [("X", "X")])
    assert t["m2"] == (("Y", "Y"), [("b", "b_dq")])
    with pytest.raises(RankingUnavailable, match="'m3'"):
        layer_tensors(int8, ["m3"], floats)


def test_gate_with_the_error_ranking_still_meets_the_budget(trained, tmp_path):
    from edgeseg.quant.api import _accuracy_control

    from test_quant_accuracy import GOOD, _FloatLayerScore

    q, full, fixed, convs = qt.cpu_quantizer(trained, GOOD[:4], tmp_path)
    score = _FloatLayerScore(convs, fixed)  # every layer counts 3: any ranking needs 2 float layers for 96
    gate = _accuracy_control(q, full, score, None, 100.0, 90.0, sensitivity=False, max_drop=4.0, work=tmp_path,
                             progress=False, ranking="error")
    assert sorted(s.name for s in gate.sensitivity) == sorted(convs)
    assert all(s.measure == MEASURE and np.isfinite(s.gain) for s in gate.sensitivity)
    assert [s.gain for s in gate.sensitivity] == sorted((s.gain for s in gate.sensitivity), reverse=True)
    assert gate.met and gate.int8_score == 96.0 and gate.curve == ((0, 90.0), (1, 93.0), (2, 96.0))
    assert {f.name for f in gate.float_nodes} == {s.name for s in gate.sensitivity[:2]} | fixed
    with pytest.raises(InputError, match="ranking must be one of auto, task, error"):
        _accuracy_control(q, full, score, None, 100.0, 90.0, sensitivity=True, max_drop=None, work=tmp_path,
                          progress=False, ranking="fastest")


def test_quantize_bundle_reports_the_error_ranking(trained, tmp_path):
    from edgeseg.quant import quantize_bundle

    bundle = tmp_path / "b.edgeseg"
    shutil.copytree(trained, bundle)
    frames = [s.image for s in qt.scenes(16, seed=5)]
    r = quantize_bundle(bundle, frames, target="cpu", method="minmax", sensitivity=True, progress=False, latency=False,
                        latency_guard=False, ranking="error")
    assert r.sensitivity and {s.measure for s in r.sensitivity} == {MEASURE}
    rep = Bundle.open(bundle).report["int8"]["cpu"]
    assert rep["sensitivity"][0]["measure"] == MEASURE
    assert json.dumps(rep)  # finite numbers only


def test_a_failing_error_ranking_falls_back_to_the_task_ranking(trained, tmp_path, monkeypatch, caplog):
    import edgeseg.quant.error_ranking as er
    from edgeseg.quant.api import _accuracy_control

    from test_quant_accuracy import GOOD, _FloatLayerScore

    def broken(*args, **kwargs):
        raise RuntimeError("ONNX Runtime could not run the exposed graph")

    monkeypatch.setattr(er, "error_ranking", broken)
    q, full, fixed, convs = qt.cpu_quantizer(trained, GOOD[:4], tmp_path)
    score = _FloatLayerScore(convs[:2], fixed)
    with caplog.at_level("WARNING", logger="edgeseg.quant.api"):
        gate = _accuracy_control(q, full, score, None, 100.0, 90.0, sensitivity=False, max_drop=4.0, work=tmp_path,
                                 progress=False, ranking="error")
    assert "RuntimeError: ONNX Runtime could not run" in caplog.text
    assert {s.measure for s in gate.sensitivity} == {"task metric"}  # the exact ranking took over
    assert {s.name for s in gate.sensitivity[:2]} == set(convs[:2]) and gate.met and gate.int8_score == 96.0
