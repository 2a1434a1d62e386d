"""edgeseg.ops.dcnv3 (InternImage's DCNv3): the vectorised core against a direct loop written from
InternImage's CUDA kernel, hand cases, equivalence with DCNv2 (edgeseg.ops.deform_conv2d), the layer,
gradients, ONNX export in ONNX Runtime and the TensorRT versions that take the graph."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import edgeseg.ops as ops  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402


# ------------------------------------------------------------------------------------------ reference
def _bilinear(plane: np.ndarray, y: float, x: float) -> np.ndarray:
    """``plane [H, W, C]`` at ``(y, x)``; each of the four corners outside the image reads 0."""
    h, w = plane.shape[:2]
    y0, x0 = math.floor(y), math.floor(x)
    total = np.zeros(plane.shape[2])
    for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yi < h and 0 <= xi < w:
                total += wy * wx * plane[yi, xi]
    return total


def loop_reference(x, offset, mask, kernel, stride, pad, dil, groups, scale):
    """DCNv3 by direct loops over outputs, groups and points, in float64 (tiny inputs only).

    Written as InternImage's CUDA kernel states it: ``p0 = c - pad + o * stride``, the start
    ``p0 - c * scale``, point ``(i, j)`` at ``start + (i * dilation + d) * scale``, points ordered
    with the kernel column outer (``p = j * kh + i``), offsets ``(dx, dy)``.
    """
    x, offset, mask = (t.detach().double().numpy() for t in (x, offset, mask))
    n, h, w, c = x.shape
    _, ho, wo, _ = offset.shape
    (kh, kw), cg = kernel, c // groups
    c_h, c_w = dil[0] * (kh - 1) // 2, dil[1] * (kw - 1) // 2
    out = np.zeros((n, ho, wo, c))
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                start_y = c_h - pad[0] + oy * stride[0] - c_h * scale
                start_x = c_w - pad[1] + ox * stride[1] - c_w * scale
                for g in range(groups):
                    plane = x[b, :, :, g * cg:(g + 1) * cg]
                    p = g * kh * kw  # the group's first point
                    for j in range(kw):
                        for i in range(kh):
                            dx, dy = offset[b, oy, ox, 2 * p], offset[b, oy, ox, 2 * p + 1]
                            yy = start_y + (i * dil[0] + dy) * scale
                            xx = start_x + (j * dil[1] + dx) * scale
                            out[b, oy, ox, g * cg:(g + 1) * cg] += mask[b, oy, ox, p] * _bilinear(plane, yy, xx)
                            p += 1
    return torch.from_numpy(out)


# (N, H, W, C, groups, kernel, stride, pad, dilation, offset_scale)
CASES = [
    (1, 5, 6, 4, 1, (3, 3), (1, 1), (1, 1), (1, 1), 1.0),
    (2, 6, 5, 6, 3, (3, 3), (2, 1), (1, 2), (1, 2), 0.5),
    (1, 7, 6, 4, 2, (2, 3), (1, 2), (0, 1), (2, 1), 2.0),
    (2, 5, 5, 8, 4, (1, 1), (1, 1), (0, 0), (1, 1), 1.0),
]


def _inputs(n, h, w, c, groups, kernel, stride, pad, dil, seed=0, spread=2.5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ho = ops.deform_conv_output_size(h, kernel[0], stride[0], pad[0], dil[0])
    wo = ops.deform_conv_output_size(w, kernel[1], stride[1], pad[1], dil[1])
    points = kernel[0] * kernel[1]
    x = torch.randn(n, h, w, c, generator=g, dtype=dtype)
    offset = torch.randn(n, ho, wo, groups * points * 2, generator=g, dtype=dtype) * spread  # many land outside
    logits = torch.randn(n, ho, wo, groups, points, generator=g, dtype=dtype)
    mask = torch.softmax(logits, -1).reshape(n, ho, wo, groups * points)
    return x, offset, mask


@pytest.mark.parametrize("case", CASES)
def test_vectorised_equals_loop_reference(case):
    n, h, w, c, groups, kernel, stride, pad, dil, scale = case
    x, offset, mask = _inputs(n, h, w, c, groups, kernel, stride, pad, dil)
    got = ops.dcnv3_core(x, offset, mask, kernel, stride, pad, dil, groups, scale)
    want = loop_reference(x, offset, mask, kernel, stride, pad, dil, groups, scale)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_float32_follows_float64():
    x, offset, mask = _inputs(2, 6, 7, 4, 2, (3, 3), (1, 1), (1, 1), (1, 1), seed=3)
    got = ops.dcnv3_core(x.float(), offset.float(), mask.float(), 3, 1, 1, 1, 2)
    torch.testing.assert_close(got.double(), ops.dcnv3_core(x, offset, mask, 3, 1, 1, 1, 2), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- hand cases
def test_single_point_zero_offset_is_mask_times_input():
    # G = 1, a 1x1 kernel: one point, at the pixel itself (float64: float32 pixel -> grid -> pixel
    # round trips are off by ~1e-7 px, which reads that fraction of a neighbour)
    x = torch.arange(12.0, dtype=torch.float64).reshape(1, 2, 3, 2)
    mask = torch.tensor([0.5, 2.0, -1.0, 1.0, 0.0, 3.0], dtype=torch.float64).reshape(1, 2, 3, 1)
    out = ops.dcnv3_core(x, torch.zeros(1, 2, 3, 2, dtype=torch.float64), mask, 1, 1, 0, 1, 1)
    torch.testing.assert_close(out, x * mask, rtol=0, atol=1e-13)


def test_single_point_fractional_offsets_by_hand():
    # f(y, x) = 1 + x + 2y on a 2x2 image: [[1, 2], [3, 4]]; bilinear reproduces f inside the image
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    offset = torch.zeros(1, 2, 2, 2)
    offset[0, 0, 0] = torch.tensor([0.5, 0.25])  # (dx, dy): reads f(0.25, 0.5) = 2.0
    offset[0, 0, 1] = torch.tensor([-1.5, 0.0])  # reads (0, -0.5): half of f(0, 0) = 0.5, half outside
    offset[0, 1, 1] = torch.tensor([0.0, 1.0])  # reads (2, 1): entirely below the image = 0
    out = ops.dcnv3_core(x, offset, torch.ones(1, 2, 2, 1), 1, 1, 0, 1, 1)
    torch.testing.assert_close(out.reshape(2, 2), torch.tensor([[2.0, 0.5], [3.0, 0.0]]))


@pytest.mark.parametrize("p, shift", [(0, (-1, -1)), (1, (0, -1)), (2, (1, -1)), (3, (-1, 0)), (5, (1, 0)),
                                      (7, (0, 1))])
def test_point_order_is_column_major(p, shift):
    # a one-hot mask on point p of a 3x3 kernel reads the pixel at (y + i - 1, x + j - 1), p = j * 3 + i
    x = torch.randn(1, 5, 6, 2, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 5, 6, 9)
    mask[..., p] = 1.0
    out = ops.dcnv3_core(x, torch.zeros(1, 5, 6, 18), mask, 3, 1, 1, 1, 1)
    padded = F.pad(x, (0, 0, 1, 1, 1, 1))  # zero border of one pixel on H and W
    dy, dx = shift
    torch.testing.assert_close(out, padded[:, 1 + dy:6 + dy, 1 + dx:7 + dx])


def test_offset_scale_scales_grid_and_offset_about_the_centre():
    # scale 2 on a 3x3 kernel with zero offsets is a 3x3 kernel of dilation 2
    x, offset, mask = _inputs(1, 7, 8, 4, 2, (3, 3), (1, 1), (1, 1), (1, 1), seed=5)
    scaled = ops.dcnv3_core(x, torch.zeros_like(offset), mask, 3, 1, 1, 1, 2, offset_scale=2.0)
    dilated = ops.dcnv3_core(x, torch.zeros_like(offset), mask, 3, 1, 1, 1, 2)
    expected = ops.dcnv3_core(x, torch.zeros_like(offset), mask, 3, 1, 2, 2, 2)  # padding 2, dilation 2
    torch.testing.assert_close(scaled, expected)
    assert not torch.allclose(scaled, dilated)


# ------------------------------------------------------------------------------------------ against DCNv2
def _to_dcnv2(offset, mask, kernel, groups, dilation=(1, 1), scale=1.0):
    """DCNv3 (dx, dy), column-major points, channels last -> DCNv2 (dy, dx), row-major taps, NCHW.

    A displacement about the kernel centre scaled by ``s`` is DCNv2's offset plus ``(s - 1)`` times
    the tap's own displacement from the centre."""
    n, ho, wo, _ = offset.shape
    kh, kw = kernel
    ty, tx = ops.dcnv3_point_grid(kernel, dilation, dtype=offset.dtype)
    off = offset.reshape(n, ho, wo, groups, kw, kh, 2)
    dy = off[..., 1] * scale + (scale - 1) * ty.reshape(kw, kh)
    dx = off[..., 0] * scale + (scale - 1) * tx.reshape(kw, kh)
    v2_off = torch.stack((dy, dx), -1).transpose(4, 5)  # [n, ho, wo, G, kh, kw, 2]
    v2_mask = mask.reshape(n, ho, wo, groups, kw, kh).transpose(4, 5)
    return (v2_off.reshape(n, ho, wo, -1).permute(0, 3, 1, 2), v2_mask.reshape(n, ho, wo, -1).permute(0, 3, 1, 2))


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_equals_depthwise_dcnv2_with_the_same_masks(scale):
    # DCNv3's core is DCNv2 with a depthwise all-ones kernel and offset_groups = groups
    n, h, w, c, groups, kernel, stride, pad, dil = 2, 6, 7, 6, 3, (3, 3), (2, 1), (1, 2), (1, 2)
    x, offset, mask = _inputs(n, h, w, c, groups, kernel, stride, pad, dil, seed=6)
    v3 = ops.dcnv3_core(x, offset, mask, kernel, stride, pad, dil, groups, scale)
    v2_off, v2_mask = _to_dcnv2(offset, mask, kernel, groups, dil, scale)
    v2 = ops.deform_conv2d(x.permute(0, 3, 1, 2), v2_off, torch.ones(c, 1, *kernel, dtype=x.dtype), None, v2_mask,
                           stride, pad, dil, groups=c, offset_groups=groups)
    torch.testing.assert_close(v3, v2.permute(0, 2, 3, 1), rtol=1e-10, atol=1e-10)


def test_layer_normalises_with_softmax_not_sigmoid():
    torch.manual_seed(7)
    layer = ops.DCNv3(8, groups=2).double()
    for m in (layer.offset, layer.mask):  # a trained-looking predictor (zero init would hide everything)
        torch.nn.init.normal_(m.weight, std=0.5)
        torch.nn.init.normal_(m.bias, std=0.5)
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    offset, mask = layer.offsets_and_mask(x)
    feat = layer.act(layer.norm(layer.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))
    logits = layer.mask(feat)
    groups_sum = mask.reshape(2, 5, 6, 2, 9).sum(-1)
    torch.testing.assert_close(groups_sum, torch.ones_like(groups_sum))  # a softmax over the 9 points
    v2_off, v2_soft = _to_dcnv2(offset, torch.softmax(logits.reshape(2, 5, 6, 2, 9), -1).reshape(2, 5, 6, 18),
                                (3, 3), 2)
    _, v2_sigmoid = _to_dcnv2(offset, torch.sigmoid(logits), (3, 3), 2)

    def through_dcnv2(v2_mask):
        v = layer.input_proj(x).permute(0, 3, 1, 2)
        out = ops.deform_conv2d(v, v2_off, torch.ones(8, 1, 3, 3, dtype=x.dtype), None, v2_mask, 1, 1, 1, 8, 2)
        return layer.output_proj(out.permute(0, 2, 3, 1))

    with torch.no_grad():
        torch.testing.assert_close(layer(x), through_dcnv2(v2_soft), rtol=1e-10, atol=1e-10)
        assert (layer(x) - through_dcnv2(v2_sigmoid)).abs().max() > 1e-2  # DCNv2's sigmoid is another layer


# ------------------------------------------------------------------------------------------------- layer
def test_fresh_layer_averages_the_projected_neighbourhood():
    torch.manual_seed(8)
    layer = ops.DCNv3(8, kernel_size=3, groups=4)
    torch.nn.init.normal_(layer.input_proj.bias)  # a non-zero bias shows the zero padding of the values
    x = torch.randn(2, 6, 5, 8)
    v = layer.input_proj(x).permute(0, 3, 1, 2)
    mean = F.avg_pool2d(v, 3, stride=1, padding=1, count_include_pad=True)  # uniform softmax: 1/9 per point
    torch.testing.assert_close(layer(x), layer.output_proj(mean.permute(0, 2, 3, 1)), rtol=1e-5, atol=1e-5)
    layer(x).square().sum().backward()
    assert layer.offset.weight.grad.abs().sum() > 0 and layer.mask.weight.grad.abs().sum() > 0  # learns from step 1


def test_layer_parameter_shapes():
    layer = ops.DCNv3(16, kernel_size=3, groups=4)
    assert (layer.offset.out_features, layer.mask.out_features) == (4 * 9 * 2, 4 * 9)
    assert layer.dw_conv.groups == 16 and layer.dw_conv.kernel_size == (3, 3)
    # two projections, depthwise 3x3 conv, LayerNorm, offset (72) and mask (36) predictors
    assert sum(p.numel() for p in layer.parameters()) == 2 * (16 * 16 + 16) + (16 * 9 + 16) + 2 * 16 + (16 * 108 + 108)


@pytest.mark.parametrize("with_scale", [False, True])
def test_gradcheck_float64(with_scale):
    x, offset, mask = _inputs(1, 2, 3, 2, 2, (2, 2), (1, 1), (1, 1), (1, 1), seed=9, spread=0.7)
    offset = offset + 0.31  # keep sample points off the integer grid, where bilinear has a kink
    leaves = [t.clone().requires_grad_(True) for t in (x, offset, mask)]

    def fn(a, b, c):
        return ops.dcnv3_core(a, b, c, 2, 1, 1, 1, 2, offset_scale=1.25 if with_scale else 1.0)

    assert torch.autograd.gradcheck(fn, leaves, atol=1e-7)


def test_batch_items_are_independent():
    x, offset, mask = _inputs(3, 5, 5, 4, 2, (3, 3), (1, 1), (1, 1), (1, 1), seed=10)
    full = ops.dcnv3_core(x, offset, mask, 3, 1, 1, 1, 2)
    for i in range(3):
        torch.testing.assert_close(full[i:i + 1], ops.dcnv3_core(x[i:i + 1], offset[i:i + 1], mask[i:i + 1], 3, 1, 1,
                                                                 1, 2))


@pytest.mark.parametrize("bad, message", [
    (dict(offset=torch.zeros(1, 4, 4, 35)), "offset has shape"),
    (dict(mask=torch.zeros(1, 4, 4, 9)), "mask has shape"),
    (dict(groups=3), "not divisible by groups"),
    (dict(input=torch.zeros(4, 4, 4)), "4-D"),
    (dict(mask=torch.zeros(1, 4, 4, 18, dtype=torch.float64)), "mask is torch.float64"),
])
def test_bad_arguments_name_the_tensor(bad, message):
    args = dict(input=torch.zeros(1, 4, 4, 4), offset=torch.zeros(1, 4, 4, 36), mask=torch.zeros(1, 4, 4, 18),
                kernel_size=3, padding=1, groups=2)
    args.update(bad)
    with pytest.raises(InputError, match=message):
        ops.dcnv3_core(**args)


def test_layer_rejects_nchw_and_size_changing_settings():
    layer = ops.DCNv3(8, groups=2)
    with pytest.raises(InputError, match="channels last"):
        layer(torch.zeros(1, 8, 5, 5))
    with pytest.raises(InputError, match="stride=1"):
        ops.DCNv3(8, stride=2)
    with pytest.raises(InputError, match="multiple of groups"):
        ops.DCNv3(6, groups=4)


# -------------------------------------------------------------------------------------------------- export
class _Block(torch.nn.Module):
    """A DCNv3 layer with a randomised offset/mask predictor, as after training."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.dcn = ops.DCNv3(8, groups=2, offset_scale=1.0)
        for m in (self.dcn.offset, self.dcn.mask):
            torch.nn.init.normal_(m.weight, std=0.5)
            torch.nn.init.normal_(m.bias, std=1.0)

    def forward(self, x):
        return self.dcn(x)


def _export(module, args, path, opset):
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=opset, verbose=False)
    import onnx

    return onnx.load(str(path))


def test_layer_exports_to_standard_ops_that_onnxruntime_runs(tmp_path, ort_run):
    from edgeseg.quant import trt_ops

    model, x = _Block(), torch.randn(2, 9, 11, 8, generator=torch.Generator().manual_seed(12))
    proto = _export(model, (x,), tmp_path / "dcnv3.onnx", 19)
    kinds = {n.op_type for n in proto.graph.node}
    assert "GridSample" in kinds and all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    with torch.no_grad():
        expected = model(x).numpy()
    assert float(np.abs(expected).max()) > 0.1
    np.testing.assert_allclose(ort_run(str(tmp_path / "dcnv3.onnx"), x.numpy()), expected, atol=1e-5, rtol=1e-4)
    # TensorRT (edgeseg's table): the core (GridSample) from 8.5; the layer's LayerNormalization from 8.6
    def refused(version):
        return {k for k in kinds if not trt_ops.supported(k, version)}

    assert refused((8, 6)) == set() and refused((10, 0)) == set()
    assert refused((8, 5)) == {"LayerNormalization"}
    assert refused((8, 4)) == {"LayerNormalization", "GridSample"}
