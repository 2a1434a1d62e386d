"""Building blocks shared by the model family.

Every convolution that is followed by batch norm is built as a :class:`ConvBNAct` (an
``nn.Sequential`` of conv, BN, activation), which is what :func:`edgeseg.export.fold_conv_bn`
folds. Export-friendly choices are made here, at build time: pooling to fixed bins is expressed
as matrix products computed from the static feature size (:func:`adaptive_avg_pool2d_static`),
upsampling to an explicit size is bilinear ``Resize``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "none": nn.Identity,
}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` (MobileNet convention), never below 90%."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _activation(name: str) -> nn.Module:
    cls = ACTIVATIONS[name]
    return cls(inplace=True) if cls not in (nn.Identity,) else cls()


class ConvBNAct(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> activation``; 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1, act: str = "relu"):
        pad = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            _activation(act),
        )


class SeparableConvBNAct(nn.Sequential):
    """Depthwise-separable conv as in DeepLabV3+: depthwise 3x3 (atrous) -> BN -> ReLU, then
    pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, dilation: int = 1, act: str = "relu"):
        super().__init__(
            ConvBNAct(cin, cin, kernel, dilation=dilation, groups=cin, act=act),
            ConvBNAct(cin, cout, 1, act=act),
        )


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as in MobileNetV3: global mean -> 1x1 ReLU -> 1x1 hard-sigmoid."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = make_divisible(channels / reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


def _bin_matrix(size: int, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[bins, size]`` averaging matrix with PyTorch's adaptive-pooling bin edges:
    bin i covers ``[floor(i*size/bins), ceil((i+1)*size/bins))``."""
    m = torch.zeros(bins, size, dtype=dtype, device=device)
    for i in range(bins):
        start = (i * size) // bins
        end = -((-(i + 1) * size) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool2d_static(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Exactly ``F.adaptive_avg_pool2d(x, bins)`` for any feature size, written as two matrix
    products ``P_h @ x @ P_w^T`` whose matrices are computed from the (static) feature size. It
    exports to plain MatMul with constant weights, so the ONNX graph is correct at every input size
    the model is exported at — not only sizes the bins divide."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph = _bin_matrix(h, bins, x.dtype, x.device)
    pw = _bin_matrix(w, bins, x.dtype, x.device)
    return torch.matmul(torch.matmul(ph, x), pw.t())


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear (align_corners=False) resize to ``size`` = (height, width); a no-op when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


def _resized(shape: torch.Size, dim: int, n: int) -> tuple[int, ...]:
    dims = list(shape)
    dims[dim] = n
    return tuple(dims)


def center_fit(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Center-crop (where larger) or zero-pad (where smaller) the last two dims of ``x`` to
    ``size`` = (height, width). Sizes are static, so exports get constant ``Slice`` ops; padding is
    a ``Concat`` with zeros rather than ``Pad``, which ONNX cannot convert from opset 19 down to the
    opset 17 TensorRT 8.5 parses."""
    out = x
    for dim, target in ((-2, int(size[0])), (-1, int(size[1]))):
        have = int(out.shape[dim])
        if have > target:
            out = out.narrow(dim, (have - target) // 2, target)
        elif have < target:
            before = (target - have) // 2
            parts = [out.new_zeros(_resized(out.shape, dim, n)) for n in (before, target - have - before)]
            out = torch.cat([p for p in (parts[0], out, parts[1]) if p.shape[dim] > 0], dim=dim)
    return out


class FeaturePyramid(nn.Module):
    """Feature pyramid (Lin et al., 2017): 1x1 laterals, nearest top-down sum (resized to the
    lateral's size), 3x3 outputs P2..P5 (or whatever levels come in). With ``extra`` (at build time,
    or per call) a P6 is appended: P5 subsampled by 2 (max pool with kernel 1, Detectron2's
    ``LastLevelMaxPool``, the SOLO reference code's P6). ``c2_xavier``: Detectron2's init of the
    FPN convs (Mask R-CNN); otherwise PyTorch's default. The FPN semantic model, SOLOv2, LPSNet and
    Mask R-CNN share it."""

    def __init__(self, in_channels: tuple[int, ...], channels: int = 256, *, extra: bool = False,
                 c2_xavier: bool = False):
        super().__init__()
        self.extra = extra
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        if c2_xavier:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, a=1)
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor], extra: bool | None = None) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=tuple(lat[i - 1].shape[-2:]), mode="nearest")
        outs = [conv(x) for conv, x in zip(self.output, lat)]
        if self.extra if extra is None else extra:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """``[channels, 1, k, k]`` bilinear-upsampling weights for a per-channel transposed conv (FCN)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    w2d = filt[:, None] * filt[None, :]
    return w2d.expand(channels, 1, kernel, kernel).clone()


def init_weights(*modules: nn.Module) -> None:
    """He (Kaiming) normal init for convolutions (fan-out, ReLU), BN to identity — torchvision's
    choice, which keeps the signal alive through deep nets at random init. Transposed convs keep
    their own init (FCN's bilinear upsampling, U-Net's up-convs)."""
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
