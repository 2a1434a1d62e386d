"""Counting a model's multiply-accumulates and parameters at an input size.

Two independent counts: forward hooks on ``Conv*``/``Linear`` layers (MACs: output elements x
input channels per group x kernel area), and ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs of
every matmul/convolution the forward runs, 2 per MAC). "GFLOPs" in edgeseg's docs means the
``FlopCounterMode`` number / 1e9 (the count mmseg/fvcore call "GMACs" is half of it).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..structures import ImageShape


@dataclass(frozen=True)
class FlopCount:
    """macs: conv/linear multiply-accumulates (hooks). flops: FlopCounterMode's total. params: parameter count."""

    input: ImageShape
    macs: int
    flops: int
    params: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict:
        return {"input": str(self.input), "macs": self.macs, "flops": self.flops, "params": self.params,
                "gmacs": self.gmacs, "gflops": self.gflops}


def _kernel_area(module) -> int:
    k = 1
    for v in module.kernel_size:
        k *= int(v)
    return k


def _layer_macs(module, inputs, output) -> int:
    """Conv: out elements x (in/groups) x k. ConvTranspose: in elements x (out/groups) x k. Linear: out x in."""
    import torch.nn as nn

    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return int(inputs[0].numel()) * (module.out_channels // module.groups) * _kernel_area(module)
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(output.numel()) * (module.in_channels // module.groups) * _kernel_area(module)
    if isinstance(module, nn.Linear):
        return int(output.numel()) * module.in_features
    return 0


def conv_linear_macs(model, images) -> int:
    """MACs of the Conv/ConvTranspose/Linear layers in one forward of ``images``."""
    import torch
    import torch.nn as nn

    total = [0]

    def hook(module, inputs, output):
        total[0] += _layer_macs(module, inputs, output)

    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.inference_mode():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def count_flops(model, size: ImageShape, batch: int = 1) -> FlopCount:
    """MACs (hooks), FLOPs (FlopCounterMode) and parameters of ``model`` at ``size``, in eval mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        x = torch.zeros(batch, 3, size.height, size.width, device=device)
        macs = conv_linear_macs(model, x)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x)
        flops = int(counter.get_total_flops())
    finally:
        model.train(was_training)
    params = sum(int(q.numel()) for q in model.parameters())
    return FlopCount(size, macs, flops, params)
