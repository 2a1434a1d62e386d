"""Helpers for the ops tests: one-node ONNX models run by onnx.reference and ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest


def _one_node_model(op_type: str, inputs: dict, attrs: dict, opset: int):
    from onnx import TensorProto, helper

    names = [name if value is not None else "" for name, value in inputs.items()]
    node = helper.make_node(op_type, names, ["Y"], **attrs)
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in inputs.items() if v is not None]
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "g", ins, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def onnx_reference():
    """``run(op_type, inputs: {name: array|None}, attrs, opset) -> array`` with onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    def run(op_type, inputs, attrs, opset):
        model = _one_node_model(op_type, inputs, attrs, opset)
        feeds = {k: v for k, v in inputs.items() if v is not None}
        return ReferenceEvaluator(model).run(None, feeds)[0]

    return run


@pytest.fixture
def ort_run():
    """``run(path_or_bytes, *arrays) -> first output`` on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    def run(model, *arrays):
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.asarray(a) for i, a in zip(sess.get_inputs(), arrays)}
        return sess.run(None, feeds)[0]

    return run
