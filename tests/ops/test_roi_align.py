"""edgeseg.ops.roi_align and the multi-level variant: ONNX semantics, edge cases, autograd."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgeseg.ops as ops  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402


def _boxes(k, batch, h, w, seed=0, spread=1.6):
    """Random boxes including ones partly/fully outside the image and degenerate (zero-size, inverted) ones."""
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(k, 2, generator=g) * spread - 0.3) * torch.tensor([w, h])
    wh = torch.rand(k, 2, generator=g) ** 2 * torch.tensor([w, h])
    boxes = torch.cat([torch.randint(0, batch, (k, 1), generator=g).float(), xy, xy + wh], 1)
    boxes[0, 3:5] = boxes[0, 1:3]  # zero-size box
    boxes[1, 1:5] = torch.tensor([w + 5.0, h + 5.0, w + 9.0, h + 9.0])  # fully outside
    boxes[2, [1, 3]] = boxes[2, [3, 1]] + torch.tensor([0.0, -2.0])  # inverted in x
    return boxes


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio, scale", [(0, 0.5), (2, 0.25), (3, 1.0)])
def test_agrees_with_onnx_reference(mode, aligned, sampling_ratio, scale, onnx_reference):
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(3))
    boxes = _boxes(12, 2, 9 / scale, 11 / scale, seed=sampling_ratio)
    ours = ops.roi_align(x, boxes, (3, 2), scale, sampling_ratio, aligned, mode)
    attrs = dict(coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel", mode=mode,
                 output_height=3, output_width=2, sampling_ratio=sampling_ratio, spatial_scale=scale)
    inputs = {"X": x.numpy(), "rois": boxes[:, 1:].numpy().copy(), "batch_indices": boxes[:, 0].long().numpy()}
    expected = onnx_reference("RoiAlign", inputs, attrs, 16)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5, rtol=1e-5)


def test_hand_computed_bilinear_average():
    # one 2x2 bin grid (sampling 1) at the centre of a ramp: value = 10*y + x at the sample point
    y, x = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    image = (10 * y + x)[None, None]
    box = torch.tensor([[0.0, 1.0, 2.0, 5.0, 4.0]])  # aligned: corners shift by -0.5
    out = ops.roi_align(image, box, (1, 2), 1.0, 1, True, "avg")
    # bin centres: y = 1.5 + 0.5*2 = 2.5, x = 0.5 + 1 = 1.5 and 0.5 + 3 = 3.5 (ramps are linear)
    torch.testing.assert_close(out, torch.tensor([[[[26.5, 28.5]]]]))


def test_empty_box_list():
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    out = ops.roi_align(x, torch.zeros(0, 5), 7, 1.0)
    assert out.shape == (0, 4, 7, 7)
    out.sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_zero_size_box_aligned_is_zero_and_legacy_is_one_pixel():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    box = torch.tensor([[0.0, 2.0, 3.0, 2.0, 3.0]])
    assert torch.count_nonzero(ops.roi_align(x, box, 2, aligned=True)) == 0  # no samples in ONNX half_pixel
    # legacy mode forces a 1x1 box at (2..3, 3..4): samples at (3.25, 2.25) ... mean of bilinear values
    legacy = ops.roi_align(x, box, 1, sampling_ratio=2, aligned=False)
    expected = np.mean([5 * yy + xx for yy in (3.25, 3.75) for xx in (2.25, 2.75)])
    assert float(legacy) == pytest.approx(expected, abs=1e-5)


def test_gradcheck_float64():
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0, 0.3, 0.7, 4.1, 3.9], [1, -1.2, 1.1, 3.3, 6.4], [1, 2.2, 0.4, 2.9, 1.3]],
                         dtype=torch.float64)
    for mode in ("avg", "max"):
        assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, boxes, (2, 2), 1.0, 2, True, mode), (x,))


def test_module_and_dtype_float64():
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    boxes = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0]], dtype=torch.float64)
    layer = ops.RoIAlign((2, 3), 0.5, 2, aligned=False)
    torch.testing.assert_close(layer(x, boxes), ops.roi_align(x, boxes, (2, 3), 0.5, 2, False))
    assert layer(x, boxes).dtype == torch.float64


@pytest.mark.parametrize("boxes, message", [
    (torch.zeros(3, 4), r"\[K, 5\]"),
    (torch.tensor([[2.0, 0, 0, 1, 1]]), "batch indices"),
])
def test_bad_boxes(boxes, message):
    with pytest.raises(InputError, match=message):
        ops.roi_align(torch.zeros(2, 1, 4, 4), boxes, 2)


def test_bad_mode():
    with pytest.raises(InputError, match="mode"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2, mode="median")


# ----------------------------------------------------------------------------------------- multi-level
def test_fpn_level_assignment_matches_the_formula():
    sides = torch.tensor([10.0, 111.9, 112.0, 223.9, 224.0, 447.9, 448.0, 2000.0])
    xyxy = torch.stack([torch.zeros(8), torch.zeros(8), sides, sides], 1)
    # floor(4 + log2(side / 224)) clamped to [2, 5]; boundaries at 112, 224, 448 (eps 1e-6)
    expected = torch.tensor([2, 2, 3, 3, 4, 4, 5, 5]) - 2
    torch.testing.assert_close(ops.assign_fpn_levels(xyxy, 2, 5), expected)


def test_multi_scale_pools_each_box_from_its_level():
    torch.manual_seed(0)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    feats = [torch.randn(2, 3, 128 // 2 ** i, 160 // 2 ** i) for i in range(4)]
    boxes = _boxes(30, 2, 512, 640, spread=1.0)
    boxes[:, 1:3] = boxes[:, 1:3].clamp(min=0)
    boxes[:, 3:5] = torch.maximum(boxes[:, 3:5], boxes[:, 1:3] + 1)
    out = ops.MultiScaleRoIAlign(5, scales, sampling_ratio=2)(feats, boxes)
    levels = ops.assign_fpn_levels(boxes[:, 1:], 2, 5)
    assert len(torch.unique(levels)) >= 3
    for i in range(boxes.shape[0]):
        lvl = int(levels[i])
        one = ops.roi_align(feats[lvl], boxes[i:i + 1], 5, scales[lvl], 2, True)
        torch.testing.assert_close(out[i:i + 1], one)


def test_multi_scale_rejects_non_power_of_two_scales():
    with pytest.raises(InputError, match="power of 2"):
        ops.multi_scale_roi_align([torch.zeros(1, 1, 4, 4)], torch.zeros(0, 5), 2, [0.3])
