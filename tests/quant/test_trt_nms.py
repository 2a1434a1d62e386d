"""What ``edgeseg check`` knows about NMS on TensorRT, against its sources (edgeseg/quant/trt_ops.py):
ONNX NonMaxSuppression is native from 8.5 (8.4: experimental, output padded to a fixed size), the
EfficientNMS_TRT plugin ships from 8.0 and is imported from a default-domain node."""
import onnx
from onnx import TensorProto as T
from onnx import helper as h

from edgeseg.quant import trt_ops as t
from edgeseg.quant.check import check_model


def test_nms_facts_by_version():
    assert not t.supported("NonMaxSuppression", (8, 4)) and t.supported("NonMaxSuppression", (8, 5))
    assert t.supported("NonMaxSuppression", (10, 3)) and t.supported("NonMaxSuppression", (11, 0))
    assert "Y [EXPERIMENTAL]" in t.why_unsupported("NonMaxSuppression", (8, 4))
    assert not t.supported("EfficientNMS_TRT", (7, 2)) and t.supported("EfficientNMS_TRT", (8, 0))
    assert t.supported("EfficientNMS_TRT", (8, 4)) and t.supported("EfficientNMS_TRT", (11, 0))
    assert "plugin" in t.why_unsupported("EfficientNMS_TRT", (7, 2))
    assert "--nms tensorrt" in t.FIXES["NonMaxSuppression"]
    assert t.MAX_PRECISION["NonMaxSuppression"] == "fp16"  # FP32/FP16 only in every table read


def _graph(tmp_path, node, name, domain_opsets=()):
    g = h.make_graph([node], "g", [h.make_tensor_value_info("boxes", T.FLOAT, [1, 8, 4]),
                                   h.make_tensor_value_info("scores", T.FLOAT, None)],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in node.output],
                     [h.make_tensor("m", T.INT64, [1], [4]), h.make_tensor("i", T.FLOAT, [1], [0.5])])
    opsets = [h.make_opsetid("", 13)]  # 8.4 parses up to opset 13 + [h.make_opsetid(d, 1) for d in domain_opsets]
    p = tmp_path / f"{name}.onnx"
    onnx.save(h.make_model(g, opset_imports=opsets, ir_version=8), str(p))
    return p


def _plugin(domain=""):
    return h.make_node("EfficientNMS_TRT", ["boxes", "scores"], ["num", "det_boxes", "det_scores", "det_classes"],
                       domain=domain, score_threshold=0.05, iou_threshold=0.5, max_output_boxes=4, background_class=-1,
                       score_activation=0, box_coding=0, plugin_version="1")


def _errors(report):
    return [(f.code, f.message.split()[0]) for f in report.findings if f.level == "error"]


def test_check_flags_onnx_nms_on_84_with_the_fix(tmp_path):
    p = _graph(tmp_path, h.make_node("NonMaxSuppression", ["boxes", "scores", "m", "i"], ["selected"]), "nms")
    old = check_model(p, "tensorrt-8.4")
    hit = [f for f in old.findings if f.code == "unsupported-op"]
    assert not old.ok and len(hit) == 1 and hit[0].message.startswith("NonMaxSuppression")
    # not "export with --nms tensorrt" (session 38): that graph keeps NonZero and RoiAlign, also 8.5's
    assert hit[0].fix.startswith("target TensorRT >= 8.5") and "keeps NonZero and RoiAlign" in hit[0].fix
    assert hit[0].level == "error"
    new = check_model(p, "tensorrt-8.5")
    assert new.ok and not [f for f in new.findings if f.code == "unsupported-op"]
    assert [f.code for f in new.findings if f.message.startswith("NonMaxSuppression")] == ["precision-cap"]


def test_check_accepts_the_plugin_node_in_the_default_domain(tmp_path):
    p = _graph(tmp_path, _plugin(), "plugin")
    for target in ("tensorrt-8.4", "tensorrt-8.5", "tensorrt-10.3"):
        assert _errors(check_model(p, target)) == [], target
    # a plugin in its own domain: TensorRT >= 10.10 would look for it in that plugin namespace
    q = _graph(tmp_path, _plugin("trt"), "plugin_domain", domain_opsets=("trt",))
    assert ("custom-op", "EfficientNMS_TRT") in _errors(check_model(q, "tensorrt-10.3"))
