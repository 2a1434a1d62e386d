"""ONNX export of the ops (dynamo exporter), both forms, run in ONNX Runtime (and OpenVINO when installed)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

import edgeseg.ops as ops  # noqa: E402
from edgeseg.errors import ExportError, InputError  # noqa: E402


class _DCN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.dcn = ops.DeformConv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, offset_groups=2)

    def forward(self, x, offset, mask):
        return self.dcn(x, offset, mask)


class _DCNv2(torch.nn.Module):
    """A DCNv2 block whose offset predictor is randomised (zero-init would hide offset bugs)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.dcn = ops.ModulatedDeformConv2d(3, 5, 3, padding=1, offset_groups=1)
        torch.nn.init.normal_(self.dcn.offset_conv.weight, std=0.5)

    def forward(self, x):
        return self.dcn(x)


class _Roi(torch.nn.Module):
    def __init__(self, mode, aligned, sampling_ratio):
        super().__init__()
        self.roi = ops.RoIAlign((3, 4), 0.5, sampling_ratio, aligned, mode)

    def forward(self, x, boxes):
        return self.roi(x, boxes)


def _export(module, args, path, dynamic_shapes=None, **forms):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=19, verbose=False, optimize=False,
                          dynamic_shapes=dynamic_shapes, custom_translation_table=ops.onnx_translation_table(**forms))
    return onnx.load(str(path))


def _dcn_inputs(n=2):
    g = torch.Generator().manual_seed(2)
    ho, wo = ops.deform_conv_output_size(9, 3, 2, 2, 2), ops.deform_conv_output_size(11, 3, 2, 2, 2)
    return (torch.randn(n, 4, 9, 11, generator=g), torch.randn(n, 36, ho, wo, generator=g) * 3,
            torch.rand(n, 18, ho, wo, generator=g))


BOXES = torch.tensor([[0, 1, 2, 8, 9], [1, -5, -3, 30, 4], [1, 3, 3, 3, 3], [0, 10, 2, 4, 30.0], [1, 0, 0, 23, 19]])


@pytest.mark.parametrize("form, op_type", [("onnx", "DeformConv"), ("decomposed", "GridSample")])
def test_deform_conv_export_runs_in_onnxruntime(tmp_path, ort_run, form, op_type):
    model, args = _DCN(), _dcn_inputs()
    proto = _export(model, args, tmp_path / "dcn.onnx", deform_conv=form)
    kinds = {n.op_type for n in proto.graph.node}
    assert op_type in kinds and (form == "onnx" or "DeformConv" not in kinds)
    expected = model(*args).detach().numpy()
    np.testing.assert_allclose(ort_run(str(tmp_path / "dcn.onnx"), *[a.numpy() for a in args]), expected,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["onnx", "decomposed"])
def test_dcnv2_block_with_dynamic_batch(tmp_path, ort_run, form):
    model = _DCNv2()
    x = torch.randn(2, 3, 10, 12)
    batch = torch.export.Dim("batch", min=1, max=8)
    _export(model, (x,), tmp_path / "v2.onnx", dynamic_shapes=({0: batch},), deform_conv=form)
    for n in (1, 3):
        xn = torch.randn(n, 3, 10, 12)
        np.testing.assert_allclose(ort_run(str(tmp_path / "v2.onnx"), xn.numpy()), model(xn).detach().numpy(),
                                   atol=1e-4, rtol=1e-4)


_FAST_ROI = {("onnx", True, "avg"), ("decomposed", True, "avg"), ("decomposed", False, "max")}
ROI_FORMS = [pytest.param(f, a, m, marks=() if (f, a, m) in _FAST_ROI else pytest.mark.slow)
             for f in ("onnx", "decomposed") for a in (True, False) for m in ("avg", "max")]


@pytest.mark.parametrize("form, aligned, mode", ROI_FORMS)
def test_roi_align_export_runs_in_onnxruntime(tmp_path, ort_run, form, aligned, mode):
    model, x = _Roi(mode, aligned, 2), torch.randn(2, 3, 10, 12)
    proto = _export(model, (x, BOXES), tmp_path / "roi.onnx", roi_align=form)
    assert ("RoiAlign" in {n.op_type for n in proto.graph.node}) == (form == "onnx")
    np.testing.assert_allclose(ort_run(str(tmp_path / "roi.onnx"), x.numpy(), BOXES.numpy()), model(x, BOXES).numpy(),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_adaptive_sampling_exports_as_standard_op_only(tmp_path, ort_run):
    model, x = _Roi("avg", True, 0), torch.randn(1, 3, 10, 12)
    boxes = BOXES[BOXES[:, 0] == 0]
    _export(model, (x, boxes), tmp_path / "roi.onnx", roi_align="onnx")
    np.testing.assert_allclose(ort_run(str(tmp_path / "roi.onnx"), x.numpy(), boxes.numpy()), model(x, boxes).numpy(),
                               atol=1e-5)
    with pytest.raises(Exception) as info:
        _export(model, (x, boxes), tmp_path / "roi_d.onnx", roi_align="decomposed")
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, ExportError) and "sampling_ratio" in str(e) for e in chain)


class _FPN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = ops.MultiScaleRoIAlign(7, [1 / 4, 1 / 8, 1 / 16, 1 / 32], sampling_ratio=2)

    def forward(self, p2, p3, p4, p5, boxes):
        return self.pool([p2, p3, p4, p5], boxes)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["onnx", "decomposed"])
def test_multi_scale_export_with_dynamic_box_count(tmp_path, ort_run, form):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 4, 64 // 2 ** i, 96 // 2 ** i, generator=g) for i in range(4)]
    xy = torch.rand(20, 2, generator=g) * 300
    boxes = torch.cat([torch.zeros(20, 1), xy, xy + torch.rand(20, 2, generator=g) ** 2 * 300], 1)
    model = _FPN()
    k = torch.export.Dim.DYNAMIC
    _export(model, (*feats, boxes), tmp_path / "fpn.onnx", dynamic_shapes=(None, None, None, None, {0: k}),
            roi_align=form)
    for count in (20, 3, 1):
        got = ort_run(str(tmp_path / "fpn.onnx"), *[f.numpy() for f in feats], boxes[:count].numpy())
        np.testing.assert_allclose(got, model(*feats, boxes[:count]).numpy(), atol=1e-4, rtol=1e-4)


def test_unknown_form_is_rejected():
    with pytest.raises(InputError, match="deform_conv"):
        ops.onnx_translation_table(deform_conv="tensorrt")


@pytest.mark.slow
@pytest.mark.openvino
def test_decomposed_graphs_run_in_openvino(tmp_path):
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    cases = [(_DCN(), _dcn_inputs(), dict(deform_conv="decomposed")),
             (_Roi("avg", True, 2), (torch.randn(2, 3, 10, 12), BOXES), dict(roi_align="decomposed")),
             (_Roi("max", False, 2), (torch.randn(2, 3, 10, 12), BOXES), dict(roi_align="decomposed"))]
    for i, (model, args, forms) in enumerate(cases):
        path = tmp_path / f"m{i}.onnx"
        _export(model, args, path, **forms)
        # f32 explicitly: OpenVINO may otherwise pick bf16/f16 on CPUs that have it
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled([a.numpy() for a in args])[compiled.output(0)]
        np.testing.assert_allclose(got, model(*args).detach().numpy(), atol=1e-4, rtol=1e-4)
