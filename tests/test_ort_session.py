"""edgeseg._ort: the one ONNX Runtime session factory (thread rule, optimisation levels, offline
optimised graphs) and the one explainer of load errors, on real ONNX Runtime sessions."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg._ort import explain_session_error, ir_version_limit, make_session, resolve_threads
from edgeseg.errors import EdgesegError, InputError, UnsupportedError
from handmade_bundles import conv_model, custom_op_model, reference_logits


def _add_model(path=None):
    """``y = x + (1 + 2)``: the constant Add is folded away by ORT's basic optimisations."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Add", ["one", "two"], ["three"]), helper.make_node("Add", ["x", "three"], ["y"])]
    graph = helper.make_graph(
        nodes, "add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                     numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    if path is not None:
        onnx.save(model, str(path))
    return model


@pytest.mark.parametrize("threads,env,expect", [
    (3, "2", 3),      # explicit wins
    (0, "2", 2),      # else OMP_NUM_THREADS
    (0, None, 0),     # else the runtime's default
    (0, "many", 0),   # not a number: default
    (-1, "0", 0),
])
def test_thread_rule(monkeypatch, threads, env, expect):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert resolve_threads(threads) == expect


def test_session_from_path_and_bytes_computes_the_graph(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = conv_model(tmp_path / "m.onnx", 5)
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 6)).astype(np.float32)
    s_path = make_session(path, threads=2)
    s_bytes = make_session(path.read_bytes())
    assert s_path.get_session_options().intra_op_num_threads == 2
    assert s_bytes.get_session_options().intra_op_num_threads == 1  # from OMP_NUM_THREADS
    assert s_path.get_providers() == ["CPUExecutionProvider"]
    for s in (s_path, s_bytes):
        np.testing.assert_allclose(s.run(None, {"images": x})[0], reference_logits(x, 5), rtol=1e-5, atol=1e-5)


def test_optimization_levels_and_offline_optimised_graph(tmp_path):
    import onnx
    import onnxruntime as ort

    src = tmp_path / "add.onnx"
    _add_model(src)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    for name, level in levels.items():
        s = make_session(src, optimization=name)
        assert s.get_session_options().graph_optimization_level == level
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], x + 3.0)
    out = tmp_path / "opt.onnx"
    make_session(src, threads=1, optimization="basic", optimized_model_path=out)
    opt = onnx.load(str(out))
    assert [n.op_type for n in opt.graph.node] == ["Add"]  # 1 + 2 folded into one constant
    folded = [onnx.numpy_helper.to_array(t) for t in opt.graph.initializer]
    assert len(folded) == 1 and float(folded[0]) == 3.0
    with pytest.raises(InputError, match="unknown ONNX Runtime optimization 'max'"):
        make_session(src, optimization="max")


def test_missing_op_is_explained_with_the_model_name(tmp_path):
    path = custom_op_model(tmp_path / "c.onnx")
    with pytest.raises(UnsupportedError, match=r"c\.onnx: ONNX Runtime has no kernel for op com\.example:FancyOp") as e:
        make_session(path)
    assert e.value.__cause__ is not None and "FancyOp" in str(e.value.__cause__)  # ORT's own error chained
    with pytest.raises(UnsupportedError, match=r"^<in-memory model>: .*FancyOp"):
        make_session(path.read_bytes())
    with pytest.raises(UnsupportedError, match=r"^mine: "):
        make_session(path.read_bytes(), name="mine")


def test_a_standard_op_without_a_kernel_here_asks_for_a_newer_onnxruntime():
    """Session 57 (a dependency audit): YOLOv8n-seg's dynamic INT8 (ConvInteger, int8 weights) fails on ONNX Runtime
    1.18-1.23, and the fix said to export with standard ONNX ops, which ConvInteger is. ORT's message as 1.18 words it."""
    import onnxruntime

    e = explain_session_error("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
                              "ConvInteger(10) node with name '/model.0/conv/Conv_quant'", "yolo.onnx")
    assert isinstance(e, UnsupportedError) and "a standard ONNX op" in str(e) and onnxruntime.__version__ in str(e)
    assert "node '/model.0/conv/Conv_quant'" in str(e) and "upgrade onnxruntime" in e.fix
    custom = explain_session_error("Could not find an implementation for FancyOp(1) node with name 'n'", "c.onnx")
    assert "a standard ONNX op" not in str(custom) and "custom-op library" in custom.fix


def test_ir_version_too_new(tmp_path):
    import onnx

    model = _add_model()
    model.ir_version = 99
    path = tmp_path / "new.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedError, match="ONNX IR version 99 is newer") as e:
        make_session(path)
    limit = ir_version_limit(e.value)
    assert limit is not None and limit[0] == 99 and 9 <= limit[1] < 99


@pytest.mark.parametrize("message,cls,expect", [
    ("FAIL : Load model failed:Fatal error: com.x:Op(-1) is not a registered function/op", UnsupportedError, "op com.x:Op"),
    ("NOT_IMPLEMENTED : Could not find an implementation for Relu(14) node with name 'r1'", UnsupportedError,
     "op Relu (node 'r1')"),
    ("Unsupported model IR version: 12, max supported IR version: 10", UnsupportedError, "IR version 12 is newer"),
    ("Current official support for domain ai.onnx is till opset 23.", UnsupportedError, "ai.onnx up to 23"),
    ("something odd\nmore", EdgesegError, "m.onnx: ONNX Runtime cannot load the model: something odd"),
])
def test_explain_session_error_accepts_exceptions_and_text(message, cls, expect):
    for exc in (RuntimeError(message), message):
        err = explain_session_error(exc, "m.onnx")
        assert type(err) is cls and expect in str(err) and "more" not in str(err)
    assert ir_version_limit(RuntimeError("Unsupported model IR version: 12, max supported IR version: 10")) == (12, 10)
