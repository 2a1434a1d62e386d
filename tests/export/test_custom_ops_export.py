"""Models using edgeseg.ops export through the ops' translation table (picked automatically)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeseg.export import export_onnx
from edgeseg.structures import ImageShape, InputSpec

ops = pytest.importorskip("edgeseg.ops")


class DeformSeg(nn.Module):
    """conv -> offsets -> deformable conv -> logits (a DCN-style head)."""

    num_classes = 3
    model_name = "deform_seg"

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.offset = nn.Conv2d(8, 18, 3, padding=1)
        self.dcn = ops.DeformConv2d(8, 3, 3, padding=1)
        nn.init.normal_(self.offset.weight, std=0.1)

    def forward(self, images):
        x = torch.relu(self.stem(images))
        return {"logits": self.dcn(x, self.offset(x))}


def test_decomposed_deform_conv_exports_and_matches(tmp_path):
    torch.manual_seed(0)
    model = DeformSeg().eval()
    size = ImageShape(20, 28)
    path = export_onnx(model, tmp_path / "d.onnx", InputSpec(size=size), deform_conv="decomposed")
    assert "DeformConv" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    x = torch.randn(1, 3, *size.hw)
    with torch.no_grad():
        ref = model(x)["logits"].numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_standard_deform_conv_form_is_used_when_asked(tmp_path):
    torch.manual_seed(0)
    path = export_onnx(DeformSeg().eval(), tmp_path / "s.onnx", InputSpec(size=ImageShape(20, 28)), deform_conv="onnx")
    assert "DeformConv" in {n.op_type for n in onnx.load(str(path)).graph.node}
