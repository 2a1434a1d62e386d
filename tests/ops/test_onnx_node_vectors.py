"""The ONNX specification's own DeformConv / RoiAlign node tests, run through edgeseg.ops.

Cases live in ``../shared/data/ops/onnx_node_tests`` (onnx v1.22). DeformConv must match to 1e-5;
the stored RoiAlign outputs are rounded to 4 decimals, hence 1.5e-4.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

import edgeseg.ops as ops  # noqa: E402

DEFORM_CASES = [
    "test_basic_deform_conv_with_padding",
    "test_basic_deform_conv_without_padding",
    "test_deform_conv_with_mask_bias",
    "test_deform_conv_with_multiple_offset_groups",
]
ROI_CASES = ["test_roialign_aligned_false", "test_roialign_aligned_true", "test_roialign_mode_max"]


def _load_case(root, name):
    case = root / "ops" / "onnx_node_tests" / name
    node = onnx.load(str(case / "model.onnx")).graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    files = sorted((case / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    inputs = [numpy_helper.to_array(onnx.load_tensor(str(f))).copy() for f in files]
    expected = numpy_helper.to_array(onnx.load_tensor(str(case / "test_data_set_0" / "output_0.pb")))
    named = dict(zip([n for n in node.input if n], inputs))
    return node, attrs, named, expected


@pytest.mark.data
@pytest.mark.parametrize("name", DEFORM_CASES)
def test_deform_conv_matches_onnx_vectors(data_root, name):
    node, attrs, named, expected = _load_case(data_root, name)
    slots = list(node.input) + [""] * (5 - len(node.input))
    x, w, off, b, m = (torch.from_numpy(named[s]) if s else None for s in slots)
    pads = attrs.get("pads", [0, 0, 0, 0])
    assert pads[:2] == pads[2:]
    y = ops.deform_conv2d(x, off, w, b, m, attrs.get("strides", 1), pads[:2], attrs.get("dilations", 1),
                          attrs.get("group", 1), attrs.get("offset_group", 1))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.data
@pytest.mark.parametrize("name", ROI_CASES)
def test_roi_align_matches_onnx_vectors(data_root, name):
    _, attrs, named, expected = _load_case(data_root, name)
    x, rois, batch = (torch.from_numpy(v) for v in named.values())
    boxes = torch.cat([batch[:, None].to(x.dtype), rois], 1)
    aligned = attrs.get("coordinate_transformation_mode", b"half_pixel") == b"half_pixel"
    y = ops.roi_align(x, boxes, (attrs["output_height"], attrs["output_width"]), attrs.get("spatial_scale", 1.0),
                      attrs.get("sampling_ratio", 0), aligned, attrs.get("mode", b"avg").decode())
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, atol=1.5e-4, rtol=0)
