"""Graph preparation: BN folding, opset upgrade, NHWC models - numerically equivalent to the source."""
import numpy as np
import onnx
import pytest

from edgeseg.quant.prepare import fold_batchnorm, prepare_model

from quant_graphs import conv_bn_relu, run


def _x(shape, seed=1):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def test_fold_batchnorm_matches_reference_formula():
    m = conv_bn_relu()
    x = _x((1, 3, 16, 16))
    ref = run(m, x)
    folded = onnx.ModelProto.FromString(m.SerializeToString())
    names = fold_batchnorm(folded)
    assert len(names) == 1
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu", "ConvTranspose", "Conv"]
    # the folded weight is W * g / sqrt(v + eps), computed here by hand for output channel 0
    init = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    new = {t.name: onnx.numpy_helper.to_array(t) for t in folded.graph.initializer}
    w_name = folded.graph.node[0].input[1]
    k0 = init["g"][0] / np.sqrt(init["var"][0] + 1e-3)
    np.testing.assert_allclose(new[w_name][0], init["W1"][0] * k0, rtol=1e-6)
    np.testing.assert_allclose(run(folded, x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [11, 17])
def test_prepare_upgrades_old_opsets_and_keeps_outputs(tmp_path, opset):
    m = conv_bn_relu(opset=opset)
    x = _x((1, 3, 16, 16))
    rep = prepare_model(m, tmp_path / "p.onnx")
    assert rep.opset_before == opset and rep.opset_after == max(opset, 13)
    assert rep.folded_batchnorms and rep.nodes_after < rep.nodes_before
    prepared = onnx.load(str(tmp_path / "p.onnx"))
    assert "BatchNormalization" not in {n.op_type for n in prepared.graph.node}
    assert all(n.name for n in prepared.graph.node)
    np.testing.assert_allclose(run(str(tmp_path / "p.onnx"), x), run(m, x), rtol=1e-4, atol=1e-5)


def test_prepare_nhwc_model(tmp_path):
    m = conv_bn_relu(nhwc=True)
    x = _x((1, 16, 16, 3))
    prepare_model(m, tmp_path / "p.onnx")
    np.testing.assert_allclose(run(str(tmp_path / "p.onnx"), x), run(m, x), rtol=1e-4, atol=1e-5)


def test_failed_opset_upgrade_is_a_quantization_error(tmp_path):
    from onnx import TensorProto as T
    from onnx import helper as h

    from edgeseg.errors import ExportError, QuantizationError

    g = h.make_graph([h.make_node("Foo", ["x"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 4, 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 3, 4, 4])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 11)])
    with pytest.raises(QuantizationError, match="from opset 11 to 13") as e:
        prepare_model(m, tmp_path / "p.onnx")
    assert not isinstance(e.value, ExportError)
    assert e.value.fix == "re-export the model at opset 13 or newer"
    assert not (tmp_path / "p.onnx").exists()


def test_spatial_reducemean_becomes_global_average_pool(tmp_path):
    """ReduceMean over H and W with keepdims (attribute axes at opset 17, input axes at opset 18, negative
    axes) -> GlobalAveragePool, outputs unchanged; other reductions are left alone."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from edgeseg.quant.prepare import global_pools, infer_shapes

    x = np.random.default_rng(0).normal(0, 1, (1, 3, 5, 7)).astype(np.float32)
    for opset in (17, 18):
        axes_in = opset >= 18
        def rm(name, axes, keep=1):
            if axes_in:
                return h.make_node("ReduceMean", ["x", f"{name}_axes"], [name], name=name, keepdims=keep)
            return h.make_node("ReduceMean", ["x"], [name], name=name, axes=axes, keepdims=keep)
        specs = {"a": ([2, 3], 1), "b": ([-1, -2], 1), "c": ([1], 1), "d": ([2, 3], 0)}
        nodes = [rm(n, ax, k) for n, (ax, k) in specs.items()]
        inits = [nh.from_array(np.array(ax, np.int64), f"{n}_axes") for n, (ax, _) in specs.items()] if axes_in else []
        outs = [h.make_tensor_value_info(n, T.FLOAT, None) for n in specs]
        g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 5, 7])], outs, inits)
        m = infer_shapes(h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8))
        before = _run_all(m, x)
        assert global_pools(m) == ["a", "b"]
        assert [n.op_type for n in m.graph.node] == ["GlobalAveragePool", "GlobalAveragePool", "ReduceMean", "ReduceMean"]
        onnx.checker.check_model(m)
        after = _run_all(m, x)
        for b, a in zip(before, after):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _run_all(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})
