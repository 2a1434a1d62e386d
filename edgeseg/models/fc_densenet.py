"""FC-DenseNet ("Tiramisu") — Jégou, Drozdzal, Vazquez, Romero & Bengio, "The One Hundred Layers
Tiramisu: Fully Convolutional DenseNets for Semantic Segmentation" (CVPR Workshops 2017).

A first 3x3 conv (48 maps) starts the *stack*. Each **dense block** is a chain of layers
BN -> ReLU -> 3x3 conv (``growth`` maps) -> dropout (0.2), each layer reading the concatenation of
the block input and every earlier layer's output. Down path: dense block, its output (input + new
maps) kept as the skip, then **transition down** BN -> ReLU -> 1x1 conv (same width) -> dropout ->
2x2 max pool. After the bottleneck block, **transition up** upsamples *only the new maps of the
previous block* by a 3x3 transposed conv with stride 2 (``growth * layers`` maps, no padding: a side
``n`` becomes ``2n + 1``), center-crops it to the skip's size and concatenates ``[up, skip]``; a
dense block follows. A final 1x1 conv on the whole stack gives the logits at the input resolution.
Convolutions keep their biases and dropout is element-wise, as in the authors' Lasagne code
(``SimJeg/FC-DenseNet``).

Parameter counts (11 classes): the authors' code reports ``sum(size of every parameter array)``,
which for Lasagne's batch norm includes the running mean and inverse std. Counted that way (PyTorch
parameters + BN running mean/var) FC-DenseNet67 and FC-DenseNet103 give 3.50M and 9.43M, Table 2's
3.5M and 9.4M; FC-DenseNet56 (4 layers per block, growth 12, 5 poolings as the paper states) gives
1.40M, not Table 2's 1.5M: we found no reading of the paper's description that gives 1.5M, and
``SimJeg/FC-DenseNet#31`` reports the same 1.4M. Trainable parameters alone: 1.38M, 3.46M, 9.32M.

Deployment: the batch norms are *pre-activation* (BN -> ReLU -> conv) and every
feature map feeds several of them (each later layer of its block, the transition down, the skip),
so none can be folded into a convolution (:func:`edgeseg.export.fold_conv_bn` folds 0 of them).
Exported graphs keep them as ONNX ``BatchNormalization`` (a per-channel scale and shift: TensorRT
imports it as a scale layer, INT8 Q/DQ go on the convolutions after the ReLU).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .base import SemanticModel
from .layers import center_fit, init_weights
from .registry import register_model


class DenseLayer(nn.Sequential):
    """BN -> ReLU -> 3x3 conv (``growth`` maps, bias) -> dropout: one layer of a dense block."""

    def __init__(self, cin: int, growth: int, dropout: float):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, growth, 3, padding=1),
                         nn.Dropout(dropout))


class DenseBlock(nn.Module):
    """``layers`` dense layers; layer ``l`` reads ``cat(x, y_1, ..., y_{l-1})``. ``forward`` returns
    the stack ``cat(x, y_1, ..., y_L)`` and the new maps ``[y_1, ..., y_L]`` (for transition up)."""

    def __init__(self, cin: int, layers: int, growth: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, dropout) for i in range(layers))
        self.out_channels = cin + layers * growth
        self.new_channels = layers * growth

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        new: list[torch.Tensor] = []
        for layer in self.layers:
            new.append(layer(x))
            x = torch.cat([x, new[-1]], dim=1)
        return x, new


class TransitionDown(nn.Sequential):
    """BN -> ReLU -> 1x1 conv (same width) -> dropout -> 2x2 max pool (floor: odd sides lose a pixel)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__(nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1),
                         nn.Dropout(dropout), nn.MaxPool2d(2))


class TransitionUp(nn.Module):
    """3x3 transposed conv, stride 2, no padding, on the previous block's new maps; the result
    (``2n + 1`` per side) is center-cropped to the skip's size and concatenated ``[up, skip]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 3, stride=2)

    def forward(self, new: list[torch.Tensor], skip: torch.Tensor) -> torch.Tensor:
        up = self.up(torch.cat(new, dim=1) if len(new) > 1 else new[0])
        return torch.cat([center_fit(up, skip.shape[-2:]), skip], dim=1)


class FCDenseNet(SemanticModel):
    """First conv, ``len(down)`` x (dense block, transition down), bottleneck block, ``len(up)`` x
    (transition up, dense block), 1x1 classifier. ``up`` defaults to ``down`` reversed."""

    def __init__(self, num_classes: int, down: tuple[int, ...] = (4, 5, 7, 10, 12), bottleneck: int = 15,
                 up: tuple[int, ...] | None = None, growth: int = 16, stem: int = 48, dropout: float = 0.2,
                 in_channels: int = 3):
        super().__init__(num_classes)
        up = tuple(reversed(down)) if up is None else tuple(up)
        if len(up) != len(down):
            raise ModelError(f"FC-DenseNet needs as many up blocks as down blocks, got down={down}, up={up}")
        self.stem = nn.Conv2d(in_channels, stem, 3, padding=1)
        self.down_blocks, self.transitions_down = nn.ModuleList(), nn.ModuleList()
        channels, skips = stem, []
        for layers in down:
            self.down_blocks.append(DenseBlock(channels, layers, growth, dropout))
            channels = self.down_blocks[-1].out_channels
            skips.append(channels)
            self.transitions_down.append(TransitionDown(channels, dropout))
        self.bottleneck = DenseBlock(channels, bottleneck, growth, dropout)
        new = self.bottleneck.new_channels
        self.transitions_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for layers, skip in zip(up, reversed(skips)):
            self.transitions_up.append(TransitionUp(new))
            self.up_blocks.append(DenseBlock(new + skip, layers, growth, dropout))
            new, channels = self.up_blocks[-1].new_channels, self.up_blocks[-1].out_channels
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_weights(self)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x, _ = block(x)
            skips.append(x)
            x = down(x)
        x, new = self.bottleneck(x)
        for up, block in zip(self.transitions_up, self.up_blocks):
            x, new = block(up(new, skips.pop()))
        return self.classifier(x)


@register_model(arch="fc_densenet", encoder="fc_densenet")
def fc_densenet56(num_classes: int = 11, **kw) -> FCDenseNet:
    """FC-DenseNet56: 4 layers per dense block, growth 12 (1.4M parameters)."""
    return FCDenseNet(num_classes, down=(4,) * 5, bottleneck=4, growth=12, **kw)


@register_model(arch="fc_densenet", encoder="fc_densenet")
def fc_densenet67(num_classes: int = 11, **kw) -> FCDenseNet:
    """FC-DenseNet67: 5 layers per dense block, growth 16 (3.5M parameters)."""
    return FCDenseNet(num_classes, down=(5,) * 5, bottleneck=5, growth=16, **kw)


@register_model(arch="fc_densenet", encoder="fc_densenet")
def fc_densenet103(num_classes: int = 11, **kw) -> FCDenseNet:
    """FC-DenseNet103: blocks of 4, 5, 7, 10, 12 | 15 | 12, 10, 7, 5, 4 layers, growth 16 (9.4M)."""
    return FCDenseNet(num_classes, down=(4, 5, 7, 10, 12), bottleneck=15, growth=16, **kw)


@register_model(arch="fc_densenet", encoder="fc_densenet")
def test_fc_densenet(num_classes: int = 5, **kw) -> FCDenseNet:
    """Tiny FC-DenseNet (3 poolings, growth 4) for tests."""
    return FCDenseNet(num_classes, down=(2, 1, 2), bottleneck=2, growth=4, stem=8, **kw)
