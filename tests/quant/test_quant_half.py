"""Half-precision models (Ultralytics' ``half=True``, a ``.half()`` torch export, onnxconverter-common's
float16 conversion) quantized like float32 ones: the graph made float32 inside, exactly, its inputs and
outputs keeping their types, and the accuracy gate scoring the bundle's own half model before and after."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgeseg.quant.prepare import prepare_model
from edgeseg.quant.upcast import HALF_TYPES, _half_inside, is_half, upcast_half

import quant_tiny as qt

VAL = qt.scenes(12, seed=7)
GOOD = [s.image for s in qt.scenes(16, seed=5)]


def _half_graph():
    """x (float16) -> 1x1 Conv (float16 weights) + a float16 Constant + ConstantOfShape(float16 value)
    -> If (a branch scaling by a float16 constant: a subgraph reading an outer tensor) -> y (float16),
    and a second output from a bfloat16 initializer cast to float16."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (4, 3, 1, 1)).astype(np.float16)
    c = rng.normal(0, 1, (1, 4, 1, 1)).astype(np.float16)
    k = np.float16(1.5)
    bf = np.array([1.5, -2.25, 3.0], np.float32)  # exact in bfloat16
    bf_t = h.make_tensor("bf", T.BFLOAT16, [3], bf.tolist())
    then = h.make_graph([h.make_node("Constant", [], ["k"], value=nh.from_array(np.array(k), "k")),
                         h.make_node("Mul", ["s", "k"], ["t"])], "then", [],
                        [h.make_tensor_value_info("t", T.FLOAT16, None)])
    other = h.make_graph([h.make_node("Identity", ["s"], ["e"])], "else", [], [h.make_tensor_value_info("e", T.FLOAT16, None)])
    nodes = [h.make_node("Conv", ["x", "w"], ["cv"]),
             h.make_node("Constant", [], ["c"], value=nh.from_array(c, "c")),
             h.make_node("Add", ["cv", "c"], ["a"]),
             h.make_node("Shape", ["a"], ["shp"]),
             h.make_node("ConstantOfShape", ["shp"], ["ones"], value=nh.from_array(np.array([0.25], np.float16), "v")),
             h.make_node("Add", ["a", "ones"], ["s"]),
             h.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other),
             h.make_node("Cast", ["bf"], ["z"], to=T.FLOAT16)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT16, [1, 3, 4, 4]),
                                  h.make_tensor_value_info("flag", T.BOOL, [])],
                     [h.make_tensor_value_info("y", T.FLOAT16, [1, 4, 4, 4]), h.make_tensor_value_info("z", T.FLOAT16, [3])],
                     [nh.from_array(w, "w"), bf_t])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m)
    return m, (w, c, k, bf)


def _run(m, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_upcast_is_exact_inside_and_keeps_the_graphs_input_and_output_types():
    m, (w, c, k, bf) = _half_graph()
    assert is_half(m)
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 4, 4)).astype(np.float16)
    up = onnx.ModelProto.FromString(m.SerializeToString())
    assert upcast_half(up) >= 5  # w, bf, the Constant's, the ConstantOfShape's and the If branch's Constant's tensors, ...
    onnx.checker.check_model(up)
    # inputs and outputs keep float16; nothing half precision is left inside, subgraphs included
    assert [i.type.tensor_type.elem_type for i in up.graph.input] == [T.FLOAT16, T.BOOL]
    assert [o.type.tensor_type.elem_type for o in up.graph.output] == [T.FLOAT16, T.FLOAT16]
    assert _half_inside(up.graph) == [] and _half_inside(m.graph)
    for flag in (True, False):
        y, z = _run(up, {"x": x, "flag": np.array(flag)})
        # the reference: the same arithmetic in float32 on the half model's values, rounded to float16 at the end
        ref = np.einsum("oi,nihw->nohw", w[:, :, 0, 0].astype(np.float32), x.astype(np.float32)) + c.astype(np.float32) + 0.25
        ref = ref * np.float32(k) if flag else ref
        assert y.dtype == np.float16 and z.dtype == np.float16
        np.testing.assert_array_equal(y, ref.astype(np.float16))
        np.testing.assert_array_equal(z, bf.astype(np.float16))
        y16, _ = _run(m, {"x": x, "flag": np.array(flag)})  # the half model itself: within float16 rounding
        np.testing.assert_allclose(y.astype(np.float32), y16.astype(np.float32), rtol=5e-3, atol=5e-3)


def test_float32_models_and_upcast_ones_are_left_unchanged():
    from quant_graphs import conv_bn_relu

    f32 = conv_bn_relu()
    before = f32.SerializeToString()
    assert not is_half(f32) and upcast_half(f32) == 0 and f32.SerializeToString() == before
    up, _ = _half_graph()
    upcast_half(up)
    before = up.SerializeToString()
    assert is_half(up) and upcast_half(up) == 0 and up.SerializeToString() == before  # float16 edges only


def test_weights_listed_as_inputs_sequence_types_and_casts_only():
    """(found by the review) weights also listed as graph inputs (``keep_initializers_as_inputs``, IR < 4) are
    retyped, not fed through a Cast; ``seq(tensor(float16))`` records are rewritten; a float32 model casting to
    float16 inside (an autocast export) counts as changed."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (2, 3, 1, 1)).astype(np.float16)
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["c"]),
                      h.make_node("SplitToSequence", ["c"], ["seq"], axis=1),
                      h.make_node("SequenceAt", ["seq", "one"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT16, [1, 3, 4, 4]), h.make_tensor_value_info("w", T.FLOAT16, [2, 3, 1, 1])],
                     [h.make_tensor_value_info("y", T.FLOAT16, None)],
                     [nh.from_array(w, "w"), nh.from_array(np.array(1, np.int64), "one")],
                     value_info=[h.make_tensor_sequence_value_info("seq", T.FLOAT16, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    x = rng.normal(0, 1, (1, 3, 4, 4)).astype(np.float16)
    upcast_half(m)
    assert [i.type.tensor_type.elem_type for i in m.graph.input] == [T.FLOAT16, T.FLOAT]  # the weight retyped, no Cast
    assert sum(n.op_type == "Cast" for n in m.graph.node) == 2  # one in, one out
    ref = np.einsum("oi,nihw->nohw", w[:, :, 0, 0].astype(np.float32), x.astype(np.float32))[:, 1:2]
    np.testing.assert_array_equal(_run(m, {"x": x})[0], ref.astype(np.float16))
    auto = h.make_model(h.make_graph(
        [h.make_node("Cast", ["x"], ["x16"], to=T.FLOAT16), h.make_node("Cast", ["x16"], ["y"], to=T.FLOAT)], "a",
        [h.make_tensor_value_info("x", T.FLOAT, [2])], [h.make_tensor_value_info("y", T.FLOAT, [2])]),
        opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    assert upcast_half(auto) == 1 and [a.i for n in auto.graph.node for a in n.attribute] == [T.FLOAT, T.FLOAT]


def test_prepare_makes_a_half_model_float32_and_says_so(tmp_path, tiny_net):
    half = qt.export_bundle(tiny_net, tmp_path / "h.edgeseg", half=True)
    rep = prepare_model(half / "model.onnx", tmp_path / "p.onnx")
    assert any(s.startswith("half precision -> float32") for s in rep.steps)
    p = onnx.load(str(tmp_path / "p.onnx"))
    assert p.graph.input[0].type.tensor_type.elem_type == T.FLOAT16  # the bundle's feed still fits
    assert not any(t.data_type in HALF_TYPES for t in p.graph.initializer)


def _labels(path, images, dtype):
    from edgeseg.quant import accuracy as acc

    sess = acc.make_session(path)
    return np.concatenate([sess.run(None, {"images": qt.SPEC.preprocess(im)[0].astype(dtype)})[0].argmax(1) for im in images])


@pytest.mark.parametrize("target", ["cpu", "tensorrt", "openvino"])
def test_a_half_model_quantizes_for_every_target_as_its_float32_original_does(tiny_net, tmp_path, target):
    """The same trained net exported in float32 and in float16: each quantized with the same frames; the
    half bundle's gate scores its own half model (FP32 column) and its INT8 model scores as the float32
    bundle's INT8 model does (the calibration sees weights that differ by float16 rounding only)."""
    if target == "openvino":
        pytest.importorskip("nncf")
    from edgeseg.bundle import Bundle
    from edgeseg.quant import quantize_bundle

    kw = dict(target=target, method=None if target == "openvino" else "minmax", eval_dataset=VAL, max_drop=1.0, progress=False, latency=False)
    half = qt.export_bundle(tiny_net, tmp_path / "h.edgeseg", half=True)
    full = qt.export_bundle(tiny_net, tmp_path / "f.edgeseg")
    rh = quantize_bundle(half, GOOD, **kw)
    rf = quantize_bundle(full, GOOD, **kw)
    assert rh.fp32_score > 90 and rh.met_budget and rh.drop <= 1.0
    assert rh.fp32_score == pytest.approx(rf.fp32_score, abs=0.2)  # the half model scores as the float32 one
    assert rh.int8_score == pytest.approx(rf.int8_score, abs=0.5)
    b = Bundle.open(half)
    int8 = onnx.load(str(b.model_path("int8", target)))
    assert int8.graph.input[0].type.tensor_type.elem_type == T.FLOAT16  # fed as the manifest says
    assert int8.graph.output[0].type.tensor_type.elem_type == T.FLOAT16
    ops = {n.op_type for n in int8.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert not any(t.data_type in HALF_TYPES for t in int8.graph.initializer)
    # the two INT8 models label the held-out scenes alike
    images = [s.image for s in VAL]
    agree = np.mean(_labels(b.model_path("int8", target), images, np.float16)
                    == _labels(Bundle.open(full).model_path("int8", target), images, np.float32))
    assert agree > 0.99


def test_predictor_runs_a_half_bundles_int8_model(tiny_net, tmp_path):
    import edgeseg
    from edgeseg.quant import quantize_bundle

    half = qt.export_bundle(tiny_net, tmp_path / "h.edgeseg", half=True)
    quantize_bundle(half, GOOD, target="cpu", method="minmax", eval_dataset=VAL, max_drop=1.0, progress=False, latency=False)
    p = edgeseg.load(half, backend="onnxruntime", precision="int8", threads=1)
    s = VAL[0]
    res = p(s.image)
    assert np.mean(res.labels == s.labels) > 0.9  # the trained net's INT8 model, through the predictor's fp16 feed


def test_onnxconverter_float16_models_with_float32_io_quantize(tiny_net, tmp_path):
    """onnxconverter-common's ``convert_float_to_float16(keep_io_types=True)``: float32 in and out, Casts
    to float16 inside (the conversion ONNX Runtime's documentation gives)."""
    float16 = pytest.importorskip("onnxconverter_common.float16")
    from edgeseg.quant import quantize_bundle

    from edgeseg.export import import_onnx

    full = qt.export_bundle(tiny_net, tmp_path / "f.edgeseg")
    m = float16.convert_float_to_float16(onnx.load(str(full / "model.onnx")), keep_io_types=True)
    assert any(t.data_type == T.FLOAT16 for t in m.graph.initializer)
    onnx.save(m, str(tmp_path / "c.onnx"))
    conv = tmp_path / "c.edgeseg"
    import_onnx(tmp_path / "c.onnx", conv, task="semantic", classes=qt.CLASSES, input_spec=qt.SPEC)
    r = quantize_bundle(conv, GOOD, target="cpu", method="minmax", eval_dataset=VAL, max_drop=1.0, progress=False,
                        latency=False)
    rf = quantize_bundle(full, GOOD, target="cpu", method="minmax", eval_dataset=VAL, max_drop=1.0, progress=False,
                         latency=False)
    assert r.fp32_score > 90 and r.met_budget
    assert r.int8_score == pytest.approx(rf.int8_score, abs=0.5)
