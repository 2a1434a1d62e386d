"""Post-processing inside an instance graph stays in float under INT8 (issue 11: "NMS and box arithmetic stay
in float"): what works on what a TopK or NMS picked (scores, Matrix NMS, box arithmetic) gets no Q/DQ,
while network compute that reads features or weights after the selection (SOLOv2's dynamic mask kernels)
is quantized like the rest of the network. Before, ONNX Runtime's quantizer put Q/DQ on SOLOv2's Matrix
NMS, so the output scores were INT8 values (mixed precision then spent a float layer on the NMS matmul)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeseg.quant.quantize import postprocess_float_nodes  # noqa: E402


def _graph():
    """x -> Conv -> Sigmoid -> TopK (the selection); after it: a Gather of picked kernels, a MatMul of them
    with the features (network: reads features), a MatMul of picked masks with each other (NMS overlap),
    score arithmetic (Mul, Exp), and a Conv on the features that does not depend on the selection."""
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["f"], name="conv"),
        helper.make_node("Reshape", ["f", "shape"], ["flat"], name="flat"),  # [4, 16]
        helper.make_node("Sigmoid", ["flat"], ["prob"], name="sigmoid"),
        helper.make_node("ReduceMax", ["prob"], ["score"], name="score", keepdims=0, axes=[1]),
        helper.make_node("TopK", ["score", "k"], ["top", "idx"], name="topk"),
        helper.make_node("Gather", ["flat", "idx"], ["picked"], name="gather", axis=0),  # [2, 16]
        helper.make_node("Transpose", ["flat"], ["flat_t"], name="transpose_features"),  # [16, 4]
        helper.make_node("MatMul", ["picked", "flat_t"], ["dyn"], name="dynamic_kernels"),  # reads features
        helper.make_node("Transpose", ["picked"], ["picked_t"], name="transpose_picked"),
        helper.make_node("MatMul", ["picked", "picked_t"], ["overlap"], name="nms_overlap"),  # picked x picked
        helper.make_node("Mul", ["top", "top"], ["decay"], name="decay"),
        helper.make_node("Exp", ["decay"], ["scores"], name="exp"),
        helper.make_node("Conv", ["x", "w"], ["other"], name="conv_elsewhere"),
    ]
    shape = numpy_helper.from_array(np.array([4, 16], np.int64), "shape")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                               for n in ("dyn", "overlap", "scores", "other")], [w, k, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_what_the_selection_picked_stays_float_but_network_compute_does_not():
    post = postprocess_float_nodes(_graph())
    assert set(post) == {"gather", "transpose_picked", "nms_overlap", "decay", "exp"}
    assert "TopK/NMS" in post["nms_overlap"]


def test_shipped_solov2_int8_keeps_matrix_nms_float(tmp_path):
    """The shipped shapes-instance (SOLOv2, Matrix NMS in the graph) quantized for cpu and tensorrt: no
    DequantizeLinear feeds the Matrix NMS or the last TopK, the dynamic-kernel MatMuls are quantized."""
    import shutil

    from edgeseg.bundle import Bundle
    from edgeseg.paths import shipped_bundle
    from edgeseg.quant import quantize_bundle

    src = tmp_path / "si.edgeseg"
    shutil.copytree(shipped_bundle("shapes-instance"), src)
    fp32 = onnx.load(str(src / "model.onnx"), load_external_data=False)
    post = postprocess_float_nodes(fp32)
    matmuls = [n.name for n in fp32.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 3 and [m for m in matmuls if m in post] == ["node_matmul_1"]  # the NMS overlap only
    for target in ("cpu", "tensorrt"):
        r = quantize_bundle(Bundle.open(src), "synthetic:8", target=target, progress=False, max_drop=100.0)
        q = onnx.load(str(src / r.model_file))
        dq = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        fed = {n.op_type for n in q.graph.node if n.name in post and any(i in dq for i in n.input)}
        # only readers of the network's own tensors that INT8 computes anyway (the mask logits of the quantized
        # dynamic-kernel MatMul, the kernels it reads); never the NMS, the scores or the TopKs
        assert fed <= {"Sigmoid", "GatherElements"}, (target, sorted(fed))
        nms = [n for n in q.graph.node if n.name in post and n.op_type in ("MatMul", "Mul", "Exp", "Where", "TopK")]
        assert len(nms) >= 8 and not [n.name for n in nms if any(i in dq for i in n.input)]
        quantized = [n.name for n in q.graph.node if n.name in matmuls and any(i in dq for i in n.input)]
        assert quantized == ["node_matmul", "node_matmul_2"], (target, quantized)
