"""Run-time loading and launching of the CUDA kernels in ``edgeseg/ops/cuda/*.cu``.

The kernels are plain CUDA C++ compiled on first use with NVRTC through CuPy (``cupy.RawModule``),
which works the same on a desktop GPU and on a Jetson (``pip install cupy-cuda12x``; JetPack 5
uses ``cupy-cuda11x``) and needs no compiler tool-chain at run time. Tensors are shared with
CuPy without copies (``__cuda_array_interface__``) and kernels run on PyTorch's current stream;
the matrix products of the deformable convolution are PyTorch (cuBLAS) calls.

When CuPy is missing, the GPU is older than the kernels support, or ``EDGESEG_OPS_CUDA=0`` is set,
the ops fall back to the PyTorch reference on the GPU (same numbers, slower), with one warning.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SOURCE_DIR = Path(__file__).resolve().parent / "cuda"
KERNELS = {
    "deform_conv.cu": ("dcn_im2col", "dcn_col2im", "dcn_col2im_coord"),
    "roi_align.cu": ("roi_align_forward",),
}
DTYPES = {torch.float32: "f32", torch.float16: "f16"}
_THREADS = 256
_MAX_BLOCKS = 1 << 16  # the kernels loop (grid-stride), so any size works
_DCN_SHAPE = np.dtype([(n, np.int32) for n in (
    "batch", "channels", "height", "width", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw",
    "out_h", "out_w", "offset_groups", "has_mask")])
_ROI_SHAPE = np.dtype([*((n, np.int32) for n in (
    "num_boxes", "channels", "height", "width", "out_h", "out_w", "sampling_ratio", "aligned", "mode")),
    ("spatial_scale", np.float32)])
_COLUMN_BUDGET = 1 << 28  # elements of the im2col buffer per chunk of the batch


def kernel_names(source: str) -> list[str]:
    """The ``extern "C"`` entry points the loader expects in one ``.cu`` file."""
    return [f"{base}_{suffix}" for base in KERNELS[source] for suffix in DTYPES.values()]


@functools.lru_cache(maxsize=None)
def _modules(device_index: int):
    """``{kernel name: cupy.RawKernel}`` for one device, or None (with one warning) if unusable."""
    if os.environ.get("EDGESEG_OPS_CUDA", "1") == "0":
        return None
    try:
        import cupy
    except ImportError:
        warnings.warn("edgeseg.ops: CuPy is not installed, so DeformConv/RoIAlign on CUDA use the PyTorch "
                      "reference (slower). Install cupy-cuda12x (cupy-cuda11x on JetPack 5) for the kernels.",
                      stacklevel=3)
        return None
    try:
        with cupy.cuda.Device(device_index):
            table = {}
            for source in KERNELS:
                module = cupy.RawModule(code=(SOURCE_DIR / source).read_text(), options=("--std=c++17",))
                table.update({name: module.get_function(name) for name in kernel_names(source)})
            return table
    except Exception as exc:  # NVRTC errors, unsupported architecture
        warnings.warn(f"edgeseg.ops: compiling {SOURCE_DIR} for cuda:{device_index} failed ({exc}); "
                      "using the PyTorch reference on CUDA.", stacklevel=3)
        return None


def kernels_usable(tensor: Tensor) -> bool:
    """True when ``tensor`` is a float32/float16 CUDA tensor and the kernels compiled for its device."""
    return tensor.is_cuda and tensor.dtype in DTYPES and _modules(tensor.device.index or 0) is not None


def _launch(name: str, like: Tensor, total: int, args: tuple) -> None:
    import cupy

    if total <= 0:
        return
    kernel = _modules(like.device.index or 0)[f"{name}_{DTYPES[like.dtype]}"]
    blocks = min((total + _THREADS - 1) // _THREADS, _MAX_BLOCKS)
    # tensors are shared through __cuda_array_interface__ (detached: it refuses tensors that require grad);
    # a struct argument is a 1-element structured numpy array, as in CuPy's custom_struct example
    cu_args = tuple(cupy.asarray(a.detach()) if isinstance(a, Tensor) else a for a in args)
    with cupy.cuda.Device(like.device.index or 0), cupy.cuda.ExternalStream(torch.cuda.current_stream(like.device).cuda_stream):
        kernel((blocks,), (_THREADS,), cu_args)


def _dcn_shape(input, weight, offset, stride, padding, dilation, offset_groups, has_mask, batch):
    _, c, h, w = input.shape
    return np.array([(batch, c, h, w, weight.shape[2], weight.shape[3], *stride, *padding, *dilation,
                      offset.shape[2], offset.shape[3], offset_groups, int(has_mask))], dtype=_DCN_SHAPE)


def _chunks(n: int, per_item: int):
    step = max(1, min(n, _COLUMN_BUDGET // max(per_item, 1)))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _im2col(x, off, msk, weight, stride, padding, dilation, offset_groups):
    n, c = x.shape[:2]
    taps = weight.shape[2] * weight.shape[3]
    p = off.shape[2] * off.shape[3]
    columns = x.new_empty((c * taps, n * p))
    shape = _dcn_shape(x, weight, off, stride, padding, dilation, offset_groups, msk is not None, n)
    _launch("dcn_im2col", x, c * n * p, (x, off, msk if msk is not None else off, columns, shape))
    return columns


def deform_conv2d_forward(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups):
    """DCN forward on CUDA: the im2col kernel, then one batched matrix product per chunk of the batch."""
    input, offset, weight = input.contiguous(), offset.contiguous(), weight.contiguous()
    mask = mask.contiguous() if mask is not None else None
    n, c = input.shape[:2]
    o, cg, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    out = input.new_empty((n, o, ho, wo))
    w_g = weight.reshape(groups, o // groups, cg * kh * kw)
    for a, b in _chunks(n, c * kh * kw * ho * wo):
        cols = _im2col(input[a:b], offset[a:b], None if mask is None else mask[a:b], weight, stride, padding,
                       dilation, offset_groups)
        res = torch.bmm(w_g, cols.reshape(groups, cg * kh * kw, -1))  # [groups, O/g, nb*P]
        out[a:b] = res.reshape(o, b - a, ho, wo).transpose(0, 1)
    if bias is not None:
        out += bias.reshape(1, o, 1, 1)
    return out


def deform_conv2d_backward(grad, input, offset, weight, bias, mask, stride, padding, dilation, groups,
                           offset_groups):
    """Gradients ``(input, offset, weight, bias, mask)`` on CUDA (col2im kernels + cuBLAS products)."""
    grad, input, offset, weight = grad.contiguous(), input.contiguous(), offset.contiguous(), weight.contiguous()
    mask = mask.contiguous() if mask is not None else None
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    k = cg * kh * kw
    w_g = weight.reshape(groups, o // groups, k)
    grad_input = torch.zeros(input.shape, dtype=torch.float32, device=input.device)
    grad_offset = torch.empty_like(offset)
    grad_mask = torch.empty_like(mask) if mask is not None else None
    grad_weight = torch.zeros((groups, o // groups, k), dtype=weight.dtype, device=weight.device)
    for a, b in _chunks(n, c * kh * kw * ho * wo):
        m = None if mask is None else mask[a:b]
        g_out = grad[a:b].transpose(0, 1).reshape(groups, o // groups, -1)  # [groups, O/g, nb*P]
        grad_cols = torch.bmm(w_g.transpose(1, 2), g_out).reshape(c * kh * kw, -1)
        shape = _dcn_shape(input, weight, offset, stride, padding, dilation, offset_groups, m is not None, b - a)
        placeholder = m if m is not None else offset[a:b]
        _launch("dcn_col2im", input, grad_cols.numel(), (grad_cols, offset[a:b], placeholder, grad_input[a:b], shape))
        g_off, g_msk = grad_offset[a:b], (grad_mask[a:b] if grad_mask is not None else offset[a:b])
        _launch("dcn_col2im_coord", input, (b - a) * offset_groups * kh * kw * ho * wo,
                (grad_cols, input[a:b], offset[a:b], placeholder, g_off, g_msk, shape))
        cols = _im2col(input[a:b], offset[a:b], m, weight, stride, padding, dilation, offset_groups)
        grad_weight += torch.bmm(g_out, cols.reshape(groups, k, -1).transpose(1, 2))
    grad_bias = grad.sum((0, 2, 3)) if bias is not None else None
    return grad_input.to(input.dtype), grad_offset, grad_weight.reshape(weight.shape), grad_bias, grad_mask


def roi_align_forward(input, boxes, output_size, spatial_scale, sampling_ratio, aligned, mode):
    """RoIAlign forward on CUDA: one thread per output element."""
    input = input.contiguous()
    boxes32 = boxes.to(torch.float32).contiguous()
    n, c, h, w = input.shape
    k = boxes.shape[0]
    out = input.new_empty((k, c, output_size[0], output_size[1]))
    shape = np.array([(k, c, h, w, output_size[0], output_size[1], sampling_ratio, int(aligned),
                       0 if mode == "avg" else 1, spatial_scale)], dtype=_ROI_SHAPE)
    _launch("roi_align_forward", input, out.numel(), (input, boxes32, out, np.int32(n), shape))
    return out
