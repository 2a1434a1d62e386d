"""``--opset``: opset 17 exports (TensorRT 8.5 / JetPack 5) match PyTorch and pass the TensorRT 8.5
deployability check; a DeformConv cannot go below opset 19 unless decomposed."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeseg.errors import ExportError
from edgeseg.export.onnx_export import export_onnx
from edgeseg.models import create_model
from edgeseg.ops import ModulatedDeformConv2d
from edgeseg.quant.check import check_model
from edgeseg.structures import ImageShape, InputSpec

SPEC = InputSpec(size=ImageShape(48, 64))


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def test_opset17_export_matches_torch_and_passes_tensorrt_8_5(tmp_path, capfd, caplog):
    torch.manual_seed(0)
    model = create_model("test_pspnet", num_classes=5).eval()
    path = export_onnx(model, tmp_path / "m17.onnx", SPEC, opset=17)
    said = capfd.readouterr().err + caplog.text  # torch's 'Setting ONNX exporter to use operator set version 18'
    assert "operator set version 18" not in said and "version conversion" not in said  # and onnxscript's: asked 18
    assert {o.domain: o.version for o in onnx.load(str(path)).opset_import}[""] == 17
    x = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].numpy()
    assert np.abs(_run(path, x) - ref).max() < 1e-4
    assert check_model(path, "tensorrt-8.5").ok
    assert not check_model(export_onnx(model, tmp_path / "m19.onnx", SPEC), "tensorrt-8.5").ok  # opset 19 > 17


def test_opset17_export_of_a_mobilenetv3_model_is_really_opset_17(tmp_path):
    """The exporter's own down-conversion left MobileNetV3's squeeze-excite ReduceMean at opset 18
    (the whole graph then said 18, which TensorRT 8.5 refuses): the graph must be at 17, valid for
    it (no opset-18 attribute left behind) and equal to PyTorch."""
    torch.manual_seed(0)
    model = create_model("test_deeplabv3plus", num_classes=5).eval()  # MobileNetV3 layout: SE blocks
    path = export_onnx(model, tmp_path / "m17.onnx", SPEC, opset=17)
    graph = onnx.load(str(path))
    assert {o.domain: o.version for o in graph.opset_import}[""] == 17
    onnx.checker.check_model(graph, full_check=True)
    means = [n for n in graph.graph.node if n.op_type == "ReduceMean"]
    assert means and all({a.name for a in n.attribute} <= {"axes", "keepdims"} for n in means)
    x = np.random.default_rng(1).random((1, 3, 48, 64), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].numpy()
    assert np.abs(_run(path, x) - ref).max() < 1e-4
    assert check_model(path, "tensorrt-8.5").ok


class _Dcn(nn.Module):
    num_classes = 4

    def __init__(self):
        super().__init__()
        self.dcn = ModulatedDeformConv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return {"logits": self.dcn(x)}


def test_deform_conv_below_opset19_needs_the_decomposed_form(tmp_path):
    model = _Dcn().eval()
    with pytest.raises(ExportError, match="decomposed"):
        export_onnx(model, tmp_path / "d17.onnx", SPEC, opset=17)
    path = export_onnx(model, tmp_path / "d17.onnx", SPEC, opset=17, deform_conv="decomposed")
    assert not any(n.op_type == "DeformConv" for n in onnx.load(str(path)).graph.node)
    x = np.random.default_rng(1).random((1, 3, 48, 64), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].numpy()
    assert np.abs(_run(path, x) - ref).max() < 1e-4


def test_unsupported_opset_is_refused(tmp_path):
    with pytest.raises(ExportError, match="opset 13"):
        export_onnx(create_model("test_fcn32s", num_classes=3).eval(), tmp_path / "x.onnx", SPEC, opset=13)
