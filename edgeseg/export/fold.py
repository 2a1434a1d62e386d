"""Conv-BN folding: a BatchNorm in eval mode is an affine map per channel, so it can be merged into
the convolution (or transposed convolution) right before it.

Folded pairs are the ``(conv, bn)`` neighbours inside an ``nn.Sequential`` — the way every edgeseg
model builds its blocks (:class:`edgeseg.models.layers.ConvBNAct`). The BN is replaced by
``nn.Identity`` and the conv gets the scaled weights and a bias.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_conv_bn(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every Conv/ConvTranspose -> BatchNorm pair folded.
    ``model`` itself is left untouched. The copy has ``folded_conv_bn`` = number of pairs folded."""
    folded = copy.deepcopy(model).eval()
    count = 0
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, _CONVS) and isinstance(bn, _BNS) and bn.running_mean is not None \
                    and conv.out_channels == bn.num_features:
                module._modules[first] = fuse_conv_bn(conv, bn)
                module._modules[second] = nn.Identity()
                count += 1
    folded.folded_conv_bn = count
    return folded


@torch.no_grad()
def fuse_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A new conv equal to ``bn(conv(x))`` with ``bn`` in eval mode (groups handled for transposed convs)."""
    fused = copy.deepcopy(conv)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    w = conv.weight
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        # weight [in, out / groups, k...]: output channel g * (out / groups) + j
        g = conv.groups
        shape = (g, w.shape[0] // g, w.shape[1]) + tuple(w.shape[2:])
        s = scale.reshape(g, 1, w.shape[1], *([1] * (w.dim() - 2)))
        fused.weight.copy_((w.reshape(shape) * s).reshape(w.shape))
    else:
        fused.weight.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter(bias * scale + shift)
    return fused
