"""V-Net — Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation" (3DV 2016).

A volumetric encoder-decoder (section 2, Fig. 2 of the paper), implemented as drawn:

* Five left (compression) stages at resolutions 1, 1/2, ..., 1/16 with 16, 32, 64, 128, 256
  channels and 1, 2, 3, 3, 3 convolutions of 5x5x5 voxels ('same' padding), each followed by a PReLU.
  Every stage learns a residual function: its input is added to the output of its last
  convolution. The first stage's input (one channel) is broadcast to its 16 channels for that sum.
* Between stages, a 2x2x2 convolution with stride 2 (and PReLU) halves the resolution and doubles
  the channels (the paper replaces pooling with it).
* Four right (decompression) stages: a 2x2x2 stride-2 transposed convolution (and PReLU) doubles
  the resolution and halves the channels, the features of the left stage at that resolution are
  concatenated ("fine-grained features forwarded from the early stages"), and 3, 3, 2, 1
  convolutions of 5x5x5 (256, 128, 64, 32 channels) follow, again residual (the concatenation is
  the stage input added to the last convolution's output).
* A 1x1x1 convolution to ``num_classes`` channels; the voxel-wise softmax of the paper is left to
  the loss (:func:`dice_loss`) and the consumer: ``forward`` returns logits, edgeseg's contract.

``forward(volumes float32 [N, C_in, D, H, W]) -> {"logits": float32 [N, num_classes, D, H, W]}``;
D, H and W must be multiples of 16 (four halvings). :func:`dice_loss` is the paper's Dice loss
(eq. 1): ``D = 2 sum(p g) / (sum(p^2) + sum(g^2))`` over the voxels of a volume.

Parameters: the paper does not state a count. As built here (``vnet``, 1 input channel, 2 classes)
it has 65,175,314 parameters (``tests/models/test_vnet.py`` derives the number from the layout above);
49.2 M of them are the weights of the six 5x5x5 convolutions at 256 channels (the bottom stage and the
first right stage). ``test_vnet`` (2-32 channels) has 1,019,348.

Deviations from the paper, and why:

* Weight initialisation is He et al.'s for PReLU (normal, fan-in, slope 0.25), biases zero; the
  paper does not say how it initialised.
* The Dice loss averages D over the volumes of the batch and over the foreground classes (classes
  1..C-1, or all with ``include_background``); with two classes this is the paper's binary D of the
  foreground channel. A small ``eps`` keeps an empty class with an empty prediction at D = 1.
* ``in_channels`` may be any divisor of 16 (the input is tiled over the first stage's channels for
  the residual sum); the paper has one (MRI) channel.

Scope in edgeseg: V-Net is a registered model (``task="volumetric"``, so the 2-D semantic tester
skips it) that builds, trains with plain PyTorch, saves/loads as a checkpoint and exports to ONNX
(``Conv``/``ConvTranspose`` with 3-D kernels, ``PRelu``, ``Concat``, ``Add``; all in every TensorRT
table edgeseg reads, 8.4+). edgeseg's bundle and streaming paths are 2-D (an ``InputSpec`` of
images, ``[N, 3, H, W]``); they do not take V-Net. Its ONNX file is exported with a parity check by
:func:`edgeseg.export.volumetric.export_volumetric` and quantized with Dice as the gate metric by
:func:`edgeseg.quant.volumetric.quantize_volumetric`; ``tools/train_vnet.py`` trains it on synthetic
volumes with exact labels (:mod:`edgeseg.data.synthetic_volumes`) and ``tools/bench/vnet_int8.py``
measures the family table's row.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError
from .registry import register_model

__all__ = ["VNet", "ResidualStage", "dice_coefficient", "dice_loss"]

LEFT_CONVS = (1, 2, 3, 3, 3)  # convolutions per left stage, fine to coarse (the paper's Fig. 2)


def conv_prelu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """``Conv3d`` ('same' padding at stride 1, none at stride 2) followed by a per-channel PReLU."""
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0),
                         nn.PReLU(cout))


class ResidualStage(nn.Module):
    """``convs`` (conv k^3 -> PReLU) layers at ``channels``; the stage input is added to the output
    of the last one. An input with fewer channels (V-Net's first stage) is tiled over them."""

    def __init__(self, cin: int, channels: int, convs: int, kernel: int):
        super().__init__()
        if convs < 1 or channels % cin:
            raise ModelError(f"V-Net stage: {convs} convolutions from {cin} to {channels} channels",
                             fix="at least one convolution, and input channels dividing the stage's channels")
        self.repeats = channels // cin
        self.convs = nn.Sequential(*(conv_prelu(cin if i == 0 else channels, channels, kernel) for i in range(convs)))

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.repeats == 1 else x.repeat(1, self.repeats, 1, 1, 1)
        return self.convs(x) + skip


class UpStage(nn.Module):
    """Transposed 2x2x2 conv (stride 2, PReLU) to ``cout // 2`` channels, concatenation with the left
    stage's features (``cout // 2`` channels), and a residual stage at ``cout`` channels."""

    def __init__(self, cin: int, cout: int, convs: int, kernel: int):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose3d(cin, cout // 2, 2, stride=2), nn.PReLU(cout // 2))
        self.stage = ResidualStage(cout, cout, convs, kernel)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.stage(torch.cat([self.up(x), skip], dim=1))


class VNet(nn.Module):
    """V-Net: ``forward(volumes [N, C_in, D, H, W]) -> {"logits": [N, num_classes, D, H, W]}``."""

    task = "volumetric"

    def __init__(self, num_classes: int = 2, in_channels: int = 1, channels: int = 16,
                 convs: Sequence[int] = LEFT_CONVS, kernel: int = 5):
        super().__init__()
        convs = tuple(int(c) for c in convs)
        if len(convs) < 2 or kernel % 2 == 0 or channels % in_channels:
            raise ModelError(f"V-Net: convs={convs}, kernel={kernel}, channels={channels}, in_channels={in_channels}",
                             fix="at least two stages, an odd kernel, and in_channels dividing channels")
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)
        self.model_name = type(self).__name__
        widths = [channels * 2 ** i for i in range(len(convs))]
        self.factor = 2 ** (len(convs) - 1)  # the input size must be a multiple of it
        self.left = nn.ModuleList(ResidualStage(in_channels if i == 0 else widths[i], widths[i], n, kernel)
                                  for i, n in enumerate(convs))
        self.down = nn.ModuleList(conv_prelu(widths[i], widths[i + 1], 2, stride=2) for i in range(len(convs) - 1))
        # right stages, coarse to fine: stage s has 2 * widths[s] channels and the left stage's conv count
        self.right = nn.ModuleList(UpStage(widths[s + 1] if s == len(convs) - 2 else 2 * widths[s + 1],
                                           2 * widths[s], convs[s], kernel)
                                   for s in reversed(range(len(convs) - 1)))
        self.classifier = nn.Conv3d(2 * widths[0], num_classes, 1)
        init_prelu_net(self)

    def forward(self, volumes: Tensor) -> dict[str, Tensor]:
        if volumes.dim() != 5 or volumes.shape[1] != self.in_channels:
            raise InputError(f"V-Net input has shape {tuple(volumes.shape)}, expected [N, {self.in_channels}, D, H, W]")
        if any(int(s) % self.factor for s in volumes.shape[2:]):
            raise InputError(f"V-Net input size {tuple(volumes.shape[2:])} (D, H, W) is not a multiple of "
                             f"{self.factor}",
                             fix=f"pad or crop the volume to multiples of {self.factor} voxels")
        skips = []
        x = volumes
        for i, stage in enumerate(self.left):
            x = stage(x if i == 0 else self.down[i - 1](x))
            skips.append(x)
        x = skips.pop()
        for up in self.right:
            x = up(x, skips.pop())
        return {"logits": self.classifier(x)}


def init_prelu_net(root: nn.Module, slope: float = 0.25) -> None:
    """He et al.'s initialisation for PReLU networks (normal, fan-in, the PReLU's initial slope)."""
    for m in root.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def dice_coefficient(probabilities: Tensor, targets: Tensor, eps: float = 1e-6) -> Tensor:
    """The paper's eq. 1 per volume and class: ``2 sum(p g) / (sum(p^2) + sum(g^2))`` over voxels.

    ``probabilities`` and ``targets`` (one-hot or soft) are ``[N, C, D, H, W]``; returns ``[N, C]``.
    ``eps`` is added to numerator and denominator (0 gives the paper's formula exactly).
    """
    if probabilities.shape != targets.shape:
        raise InputError(f"dice_coefficient: probabilities {tuple(probabilities.shape)} and targets "
                         f"{tuple(targets.shape)} differ")
    p, g = probabilities.flatten(2), targets.to(probabilities.dtype).flatten(2)
    return (2 * (p * g).sum(-1) + eps) / (p.square().sum(-1) + g.square().sum(-1) + eps)


def dice_loss(logits: Tensor, labels: Tensor, *, include_background: bool = False, eps: float = 1e-6) -> Tensor:
    """``1 - mean D`` of the voxel-wise softmax of ``logits [N, C, D, H, W]`` against integer
    ``labels [N, D, H, W]`` (values in ``[0, C)``), averaged over volumes and the foreground classes
    (all classes with ``include_background``). Two classes: the paper's binary Dice of the foreground."""
    num_classes = logits.shape[1]
    if labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise InputError(f"dice_loss: labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}",
                         fix="labels are [N, D, H, W] class indices")
    if num_classes < 2 and not include_background:
        raise InputError("dice_loss: a single class has no foreground; pass include_background=True")
    targets = F.one_hot(labels.long(), num_classes).movedim(-1, 1)
    dice = dice_coefficient(torch.softmax(logits, dim=1), targets, eps)
    return 1 - (dice if include_background else dice[:, 1:]).mean()


@register_model(task="volumetric", arch="vnet")
def vnet(num_classes: int = 2, **kw) -> VNet:
    """V-Net (Milletari et al. 2016): 16-256 channels, 5x5x5 residual stages, [N, 1, D, H, W] volumes."""
    return VNet(num_classes, **kw)


@register_model(task="volumetric", arch="vnet")
def test_vnet(num_classes: int = 2, **kw) -> VNet:
    """Tiny V-Net for tests: the paper's layout at 2-32 channels (instead of 16-256)."""
    return VNet(num_classes, channels=2, **kw)
