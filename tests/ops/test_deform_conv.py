"""edgeseg.ops.deform_conv2d: reference semantics, autograd, modules and argument errors."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import edgeseg.ops as ops  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402

# (N, C_in, C_out, H, W, k, stride, pad, dilation, groups, offset_groups, mask, bias)
RANDOM_CASES = [
    (1, 2, 3, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False, True),
    (2, 4, 4, 6, 5, (3, 2), (2, 1), (1, 0), (1, 2), 2, 2, True, True),
    (2, 4, 2, 7, 7, (2, 2), (1, 2), (2, 1), (2, 1), 1, 4, True, False),
    (1, 6, 6, 5, 7, (3, 3), (2, 2), (2, 2), (2, 2), 3, 3, False, False),
]


def _case(n, c, o, h, w, k, stride, pad, dil, groups, og, with_mask, with_bias, seed=0, scale=2.5):
    g = torch.Generator().manual_seed(seed)
    ho = ops.deform_conv_output_size(h, k[0], stride[0], pad[0], dil[0])
    wo = ops.deform_conv_output_size(w, k[1], stride[1], pad[1], dil[1])
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(o, c // groups, *k, generator=g)
    offset = torch.randn(n, 2 * og * k[0] * k[1], ho, wo, generator=g) * scale  # many taps land outside
    mask = torch.rand(n, og * k[0] * k[1], ho, wo, generator=g) if with_mask else None
    bias = torch.randn(o, generator=g) if with_bias else None
    return x, offset, weight, bias, mask


@pytest.mark.parametrize("case", RANDOM_CASES)
def test_agrees_with_onnx_reference(case, onnx_reference):
    n, c, o, h, w, k, stride, pad, dil, groups, og, with_mask, with_bias = case
    x, offset, weight, bias, mask = _case(*case)
    ours = ops.deform_conv2d(x, offset, weight, bias, mask, stride, pad, dil, groups, og)
    inputs = {"X": x.numpy(), "W": weight.numpy(), "offset": offset.numpy(),
              "B": None if bias is None else bias.numpy(), "mask": None if mask is None else mask.numpy()}
    if mask is None:
        inputs.pop("mask")
        if bias is None:
            inputs.pop("B")
    attrs = dict(kernel_shape=list(k), strides=list(stride), pads=[*pad, *pad], dilations=list(dil), group=groups,
                 offset_group=og)
    expected = onnx_reference("DeformConv", inputs, attrs, 19)
    np.testing.assert_allclose(ours.numpy(), expected, atol=2e-5, rtol=1e-5)


def test_zero_offsets_is_a_convolution():
    x, offset, weight, bias, _ = _case(2, 4, 6, 8, 9, (3, 3), (2, 1), (1, 2), (2, 1), 2, 2, False, True)
    ours = ops.deform_conv2d(x, torch.zeros_like(offset), weight, bias, None, (2, 1), (1, 2), (2, 1), 2, 2)
    expected = F.conv2d(x, weight, bias, stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_integer_offsets_shift_the_image():
    # every tap moved by (+1, -2) equals a plain conv of the zero-padded image shifted by (1, -2)
    x = torch.randn(1, 3, 7, 8)
    weight = torch.randn(2, 3, 3, 3)
    offset = torch.zeros(1, 18, 7, 8)
    offset[:, 0::2], offset[:, 1::2] = 1.0, -2.0
    ours = ops.deform_conv2d(x, offset, weight, padding=1)
    padded = F.pad(x, (1, 1, 1, 1))
    shifted = torch.zeros_like(padded)
    shifted[:, :, :-1, 2:] = padded[:, :, 1:, :-2]
    torch.testing.assert_close(ours, F.conv2d(shifted, weight), atol=1e-5, rtol=1e-5)


def test_offsets_far_outside_read_zero():
    x, offset, weight, bias, mask = _case(1, 2, 2, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True)
    ours = ops.deform_conv2d(x, torch.full_like(offset, 100.0), weight, bias, mask, padding=1)
    torch.testing.assert_close(ours, bias.reshape(1, -1, 1, 1).expand_as(ours))


@pytest.mark.parametrize("with_mask", [False, True])
def test_gradcheck_float64(with_mask):
    x, offset, weight, bias, mask = _case(2, 2, 2, 3, 3, (2, 2), (1, 1), (1, 1), (1, 1), 2, 2, with_mask, True,
                                          scale=0.7)
    # keep sample points off the integer grid where bilinear interpolation has a kink
    offset = offset + 0.31
    tensors = [t.double().requires_grad_(True) for t in (x, offset, weight, bias)]
    m = mask.double().requires_grad_(True) if mask is not None else None

    def fn(a, b, c, d, *rest):
        return ops.deform_conv2d(a, b, c, d, rest[0] if rest else None, 1, 1, 1, 2, 2)

    assert torch.autograd.gradcheck(fn, (*tensors, *([m] if m is not None else [])), atol=1e-6)


def test_backward_matches_reference_autograd():
    x, offset, weight, bias, mask = _case(2, 4, 4, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 2, 2, True, True)
    leaves_a = [t.clone().requires_grad_(True) for t in (x, offset, weight, bias, mask)]
    leaves_b = [t.clone().requires_grad_(True) for t in (x, offset, weight, bias, mask)]
    grad = torch.randn(2, 4, 5, 5)
    a, o, w, b, m = leaves_a
    ops.deform_conv2d(a, o, w, b, m, 1, 1, 1, 2, 2).backward(grad)
    ops.deform_conv2d_reference(*leaves_b, [1, 1], [1, 1], [1, 1], 2, 2).backward(grad)
    for la, lb in zip(leaves_a, leaves_b):
        torch.testing.assert_close(la.grad, lb.grad)


def test_modulated_layer_starts_as_half_a_convolution():
    torch.manual_seed(0)
    layer = ops.ModulatedDeformConv2d(4, 6, 3, stride=2, padding=1, offset_groups=2)
    x = torch.randn(2, 4, 9, 10)
    expected = 0.5 * F.conv2d(x, layer.weight, None, stride=2, padding=1) + layer.bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    assert layer.offset_conv.out_channels == 3 * 2 * 9
    layer(x).sum().backward()
    assert layer.offset_conv.weight.grad.abs().sum() > 0  # the predictor learns from the first step


def test_module_equals_function():
    torch.manual_seed(1)
    layer = ops.DeformConv2d(4, 4, (3, 3), padding=1, groups=2, offset_groups=2)
    x = torch.randn(1, 4, 6, 6)
    off = torch.randn(1, layer.offset_channels, 6, 6)
    torch.testing.assert_close(layer(x, off), ops.deform_conv2d(x, off, layer.weight, layer.bias, None, 1, 1, 1, 2, 2))


def test_batch_items_are_independent():
    x, offset, weight, bias, mask = _case(3, 2, 2, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True)
    full = ops.deform_conv2d(x, offset, weight, bias, mask, padding=1)
    for i in range(3):
        one = ops.deform_conv2d(x[i:i + 1], offset[i:i + 1], weight, bias, mask[i:i + 1], padding=1)
        torch.testing.assert_close(full[i:i + 1], one)


@pytest.mark.parametrize("bad, message", [
    (dict(offset=torch.zeros(1, 17, 4, 4)), "offset has shape"),
    (dict(mask=torch.zeros(1, 8, 4, 4)), "mask has shape"),
    (dict(groups=3), "channels must split"),
    (dict(offset_groups=3), "channels must split"),
    (dict(input=torch.zeros(2, 4, 4)), "4-D"),
])
def test_bad_arguments_name_the_tensor(bad, message):
    args = dict(input=torch.zeros(1, 2, 4, 4), offset=torch.zeros(1, 18, 4, 4), weight=torch.zeros(2, 2, 3, 3),
                bias=None, mask=torch.zeros(1, 9, 4, 4), padding=1, groups=1, offset_groups=1)
    args.update(bad)
    with pytest.raises(InputError, match=message):
        ops.deform_conv2d(**args)
