"""ONNX translations of ``edgeseg::deform_conv2d`` and ``edgeseg::roi_align`` for the dynamo exporter.

Two forms of each op, chosen at export time:

``onnx``
    The standard ops: ``DeformConv`` (opset 19) and ``RoiAlign`` (opset 16, the first with
    ``coordinate_transformation_mode``). ONNX Runtime runs both on the CPU; TensorRT >= 10.1
    imports both natively.
``decomposed``
    Only ops every runtime has. DeformConv becomes one ``GridSample`` (bilinear, zero padding)
    per offset group for all taps at once, the modulation ``Mul``, and a 1x1 ``Conv`` holding all
    the weights (the part INT8 quantization can take). RoiAlign becomes ``GridSample`` (border
    padding) at every sample point, a validity ``Mul`` and an ``AveragePool`` (avg), or four
    ``GridSample`` nearest corner reads, a weighted ``Max`` and a ``MaxPool`` (ONNX max mode).
    The decomposed RoiAlign needs a fixed ``sampling_ratio > 0`` (an adaptive grid has a
    data-dependent size).

Use::

    torch.onnx.export(model, args, path, dynamo=True, opset_version=19,
                      custom_translation_table=onnx_translation_table(deform_conv="decomposed"))
"""
from __future__ import annotations

from onnxscript import opset19 as op

from ..errors import ExportError, InputError

__all__ = ["onnx_translation_table", "FORMS"]

FORMS = ("onnx", "decomposed")
_F = 1  # onnx.TensorProto.FLOAT
_I64 = 7  # onnx.TensorProto.INT64


def _ints(values) -> object:
    return op.Constant(value_ints=[int(v) for v in values])


def _floats(values) -> object:
    return op.Constant(value_floats=[float(v) for v in values])


def _dtype_of(tensor) -> int:
    return int(tensor.dtype) if tensor.dtype is not None else _F


# --------------------------------------------------------------------------------------------- DeformConv
def deform_conv_onnx(input, offset, weight, bias=None, mask=None, stride=(1, 1), padding=(0, 0),
                     dilation=(1, 1), groups=1, offset_groups=1):
    """``edgeseg::deform_conv2d`` as the standard ``DeformConv`` node."""
    kh, kw = int(weight.shape[2]), int(weight.shape[3])
    return op.DeformConv(input, weight, offset, bias, mask, dilations=list(dilation), group=int(groups),
                         kernel_shape=[kh, kw], offset_group=int(offset_groups),
                         pads=[padding[0], padding[1], padding[0], padding[1]], strides=list(stride))


def _tap_bases(offset, stride, padding, dilation, kh, kw, dtype):
    """Sample-grid origins: rows ``[K, Ho, 1]`` and columns ``[K, 1, Wo]`` as float tensors."""
    ho = op.Shape(offset, start=2, end=3)
    wo = op.Shape(offset, start=3, end=4)
    zero, one = op.Constant(value_int=0), op.Constant(value_int=1)
    rows = op.Cast(op.Range(zero, op.Squeeze(ho), one), to=dtype)
    cols = op.Cast(op.Range(zero, op.Squeeze(wo), one), to=dtype)
    rows = op.Sub(op.Mul(rows, op.CastLike(_floats([stride[0]]), rows)), op.CastLike(_floats([padding[0]]), rows))
    cols = op.Sub(op.Mul(cols, op.CastLike(_floats([stride[1]]), cols)), op.CastLike(_floats([padding[1]]), cols))
    ky = [i * dilation[0] for i in range(kh) for _ in range(kw)]
    kx = [j * dilation[1] for _ in range(kh) for j in range(kw)]
    ky_t = op.CastLike(op.Constant(value_floats=[float(v) for v in ky]), rows)
    kx_t = op.CastLike(op.Constant(value_floats=[float(v) for v in kx]), cols)
    base_y = op.Add(op.Unsqueeze(ky_t, _ints([1, 2])), op.Unsqueeze(rows, _ints([0, 2])))
    base_x = op.Add(op.Unsqueeze(kx_t, _ints([1, 2])), op.Unsqueeze(cols, _ints([0, 1])))
    return base_y, base_x


def deform_conv_decomposed(input, offset, weight, bias=None, mask=None, stride=(1, 1), padding=(0, 0),
                           dilation=(1, 1), groups=1, offset_groups=1):
    """``edgeseg::deform_conv2d`` as GridSample (all taps of an offset group at once) + 1x1 Conv."""
    out_c, cg, kh, kw = (int(d) for d in weight.shape)
    channels = cg * int(groups)
    og, taps = int(offset_groups), kh * kw
    base_y, base_x = _tap_bases(offset, stride, padding, dilation, kh, kw, _dtype_of(input))
    n = op.Shape(offset, start=0, end=1)
    ho_wo = op.Shape(offset, start=2, end=4)
    off = op.Reshape(offset, op.Concat(n, _ints([og, taps, 2]), ho_wo, axis=0))  # [N, G, K, 2, Ho, Wo]
    y = op.Add(op.Squeeze(op.Slice(off, _ints([0]), _ints([1]), _ints([3])), _ints([3])), base_y)
    x = op.Add(op.Squeeze(op.Slice(off, _ints([1]), _ints([2]), _ints([3])), _ints([3])), base_x)
    hw = op.CastLike(op.Shape(input, start=2, end=4), y)  # (H, W)
    h_f = op.Slice(hw, _ints([0]), _ints([1]))
    w_f = op.Slice(hw, _ints([1]), _ints([2]))
    one, two = op.CastLike(op.Constant(value_float=1.0), y), op.CastLike(op.Constant(value_float=2.0), y)
    gy = op.Sub(op.Div(op.Add(op.Mul(y, two), one), h_f), one)  # align_corners=0 normalisation
    gx = op.Sub(op.Div(op.Add(op.Mul(x, two), one), w_f), one)
    grid = op.Concat(op.Unsqueeze(gx, _ints([-1])), op.Unsqueeze(gy, _ints([-1])), axis=-1)  # [N,G,K,Ho,Wo,2]
    wo = op.Shape(offset, start=3, end=4)
    n_og = op.Mul(n, _ints([og]))  # explicit sizes, no -1: stays valid for empty batches
    grid = op.Reshape(grid, op.Concat(n_og, op.Mul(op.Shape(offset, start=2, end=3), _ints([taps])), wo,
                                      _ints([2]), axis=0))  # [N*G, K*Ho, Wo, 2]
    planes = op.Reshape(input, op.Concat(n_og, _ints([channels // og]), op.Shape(input, start=2, end=4), axis=0))
    sampled = op.GridSample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=0)
    sampled = op.Reshape(sampled, op.Concat(n, _ints([og, channels // og, taps]), ho_wo, axis=0))
    if mask is not None:
        m = op.Reshape(mask, op.Concat(n, _ints([og, 1, taps]), ho_wo, axis=0))
        sampled = op.Mul(sampled, m)
    columns = op.Reshape(sampled, op.Concat(n, _ints([channels * taps]), ho_wo, axis=0))
    kernel = op.Reshape(weight, _ints([out_c, cg * taps, 1, 1]))
    if bias is not None:
        return op.Conv(columns, kernel, bias, group=int(groups), kernel_shape=[1, 1])
    return op.Conv(columns, kernel, group=int(groups), kernel_shape=[1, 1])


# ----------------------------------------------------------------------------------------------- RoiAlign
def _split_boxes(boxes):
    batch = op.Cast(op.Squeeze(op.Slice(boxes, _ints([0]), _ints([1]), _ints([1])), _ints([1])), to=_I64)
    rois = op.Slice(boxes, _ints([1]), _ints([5]), _ints([1]))
    return batch, rois


def roi_align_onnx(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True, mode="avg"):
    """``edgeseg::roi_align`` as the standard ``RoiAlign`` node (opset 16 semantics)."""
    batch, rois = _split_boxes(boxes)
    return op.RoiAlign(input, rois, batch, coordinate_transformation_mode="half_pixel" if aligned else
                       "output_half_pixel", mode=mode, output_height=int(output_size[0]),
                       output_width=int(output_size[1]), sampling_ratio=max(int(sampling_ratio), 0),
                       spatial_scale=float(spatial_scale))


def _roi_axis(start, extent, bins: int, grid: int, aligned: bool):
    """Sample coordinates ``[K, bins*grid]`` along one axis: start + (j + 0.5) * bin / grid."""
    if not aligned:
        extent = op.Max(extent, op.CastLike(op.Constant(value_float=1.0), extent))
    step = op.Div(extent, op.CastLike(op.Constant(value_float=float(bins * grid)), extent))
    j = op.CastLike(_floats([i + 0.5 for i in range(bins * grid)]), extent)
    return op.Add(start, op.Mul(step, j))


def _gather_per_box(sampled, batch, k, c, ph, pw):
    """``sampled [N, C, K*ph, pw]`` -> ``[K, C, ph, pw]`` taking each box from its own image.

    Shapes are spelt out (no -1) so that an empty box list (K = 0) stays valid.
    """
    n = op.Shape(sampled, start=0, end=1)
    per = op.Reshape(sampled, op.Concat(n, _ints([c]), k, _ints([ph, pw]), axis=0))  # [N, C, K, ph, pw]
    per = op.Reshape(op.Transpose(per, perm=[0, 2, 1, 3, 4]), op.Concat(op.Mul(n, k), _ints([c, ph, pw]), axis=0))
    index = op.Add(op.Mul(batch, op.Squeeze(k)), op.Range(op.Constant(value_int=0), op.Squeeze(k),
                                                          op.Constant(value_int=1)))
    return op.Gather(per, index, axis=0)


def _normalise(v, size):
    one, two = op.CastLike(op.Constant(value_float=1.0), v), op.CastLike(op.Constant(value_float=2.0), v)
    return op.Sub(op.Div(op.Add(op.Mul(v, two), one), size), one)


def _grid(ys, xs, h_f, w_f, k, ph, pw):
    """GridSample grid ``[1, K*ph, pw, 2]`` from ``ys [K, ph]`` and ``xs [K, pw]`` (pixel units)."""
    gy = op.Expand(op.Unsqueeze(_normalise(ys, h_f), _ints([2])), op.Concat(k, _ints([ph, pw]), axis=0))
    gx = op.Expand(op.Unsqueeze(_normalise(xs, w_f), _ints([1])), op.Concat(k, _ints([ph, pw]), axis=0))
    grid = op.Concat(op.Unsqueeze(gx, _ints([-1])), op.Unsqueeze(gy, _ints([-1])), axis=-1)
    return op.Reshape(grid, op.Concat(_ints([1]), op.Mul(k, _ints([ph])), _ints([pw, 2]), axis=0))


def _sample(input, grid, mode):
    n = op.Shape(input, start=0, end=1)
    grid = op.Expand(grid, op.Concat(n, _ints([1, 1, 1]), axis=0))
    return op.GridSample(input, grid, mode=mode, padding_mode="border", align_corners=0)


def roi_align_decomposed(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True,
                         mode="avg"):
    """``edgeseg::roi_align`` without RoiAlign: GridSample at every sample point, then pooling."""
    if int(sampling_ratio) <= 0:
        raise ExportError(
            "roi_align with an adaptive sampling_ratio cannot be decomposed: the sample grid size depends on "
            "each box",
            fix="export with roi_align='onnx', or build the model with a fixed sampling_ratio (e.g. 2, as Mask R-CNN)")
    s = int(sampling_ratio)
    ph, pw = int(output_size[0]) * s, int(output_size[1]) * s
    c = int(input.shape[1])
    batch, rois = _split_boxes(boxes)
    shift = 0.5 if aligned else 0.0
    scaled = op.Sub(op.Mul(rois, op.CastLike(op.Constant(value_float=float(spatial_scale)), rois)),
                    op.CastLike(op.Constant(value_float=shift), rois))
    x1, y1, x2, y2 = (op.Slice(scaled, _ints([i]), _ints([i + 1]), _ints([1])) for i in range(4))
    ys = _roi_axis(y1, op.Sub(y2, y1), int(output_size[0]), s, aligned)  # [K, ph]
    xs = _roi_axis(x1, op.Sub(x2, x1), int(output_size[1]), s, aligned)  # [K, pw]
    hw = op.CastLike(op.Shape(input, start=2, end=4), ys)
    h_f, w_f = op.Slice(hw, _ints([0]), _ints([1])), op.Slice(hw, _ints([1]), _ints([2]))
    minus_one = op.CastLike(op.Constant(value_float=-1.0), ys)
    inside = op.And(op.Unsqueeze(op.And(op.GreaterOrEqual(ys, minus_one), op.LessOrEqual(ys, h_f)), _ints([2])),
                    op.Unsqueeze(op.And(op.GreaterOrEqual(xs, minus_one), op.LessOrEqual(xs, w_f)), _ints([1])))
    inside = op.Unsqueeze(op.CastLike(inside, ys), _ints([1]))  # [K, 1, ph, pw]
    k = op.Shape(boxes, start=0, end=1)
    if mode == "avg":
        pooled = _gather_per_box(_sample(input, _grid(ys, xs, h_f, w_f, k, ph, pw), "bilinear"), batch, k, c, ph, pw)
        return op.AveragePool(op.Mul(pooled, inside), kernel_shape=[s, s], strides=[s, s])
    pooled = op.MaxPool(op.Mul(_max_corners(input, ys, xs, h_f, w_f, batch, k, c, (ph, pw)), inside),
                        kernel_shape=[s, s], strides=[s, s])
    return pooled[0] if isinstance(pooled, tuple) else pooled  # MaxPool's optional Indices output


def _corner_axis(v, size):
    """ONNX RoiAlign clamping: ``(low, high, frac)`` with ``v`` clamped to ``[0, size - 1]``."""
    zero = op.CastLike(op.Constant(value_float=0.0), v)
    top = op.Sub(size, op.CastLike(op.Constant(value_float=1.0), v))
    v = op.Min(op.Max(v, zero), top)
    low = op.Floor(v)
    high = op.Min(op.Add(low, op.CastLike(op.Constant(value_float=1.0), v)), top)
    return low, high, op.Sub(v, low)


def _max_corners(input, ys, xs, h_f, w_f, batch, k, c, size):
    """Per sample ``max_i(w_i * v_i)`` over the four corners (ONNX max mode), ``[K, C, ph, pw]``."""
    ph, pw = size
    one = op.CastLike(op.Constant(value_float=1.0), ys)
    yl, yh, ly = _corner_axis(ys, h_f)
    xl, xh, lx = _corner_axis(xs, w_f)
    best = None
    for y_i, wy in ((yl, op.Sub(one, ly)), (yh, ly)):
        for x_i, wx in ((xl, op.Sub(one, lx)), (xh, lx)):
            vals = _gather_per_box(_sample(input, _grid(y_i, x_i, h_f, w_f, k, ph, pw), "nearest"), batch, k, c,
                                   ph, pw)
            weight = op.Mul(op.Unsqueeze(wy, _ints([2])), op.Unsqueeze(wx, _ints([1])))
            term = op.Mul(vals, op.Unsqueeze(weight, _ints([1])))
            best = term if best is None else op.Max(best, term)
    return best


# -------------------------------------------------------------------------------------------------- table
_DEFORM = {"onnx": deform_conv_onnx, "decomposed": deform_conv_decomposed}
_ROI = {"onnx": roi_align_onnx, "decomposed": roi_align_decomposed}


def onnx_translation_table(deform_conv: str = "onnx", roi_align: str = "onnx") -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)`` covering edgeseg's ops.

    ``deform_conv`` and ``roi_align`` each pick ``"onnx"`` (standard op) or ``"decomposed"``.
    """
    import torch

    from . import deform_conv as _dc  # noqa: F401  (registers torch.ops.edgeseg.*)
    from . import roi_align as _ra  # noqa: F401

    for name, value in (("deform_conv", deform_conv), ("roi_align", roi_align)):
        if value not in FORMS:
            raise InputError(f"onnx_translation_table: {name}={value!r} is not one of {FORMS}")
    return {
        torch.ops.edgeseg.deform_conv2d.default: _DEFORM[deform_conv],
        torch.ops.edgeseg.roi_align.default: _ROI[roi_align],
    }
