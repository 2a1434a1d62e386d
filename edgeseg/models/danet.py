"""DANet — Fu, Liu, Tian, Li, Bao, Fang & Lu, "Dual Attention Network for Scene Segmentation"
(CVPR 2019).

A dilated encoder (output stride 8) feeds two parallel branches, each opened by a 3x3
conv-BN-ReLU that reduces the ``C`` encoder channels to ``C/4``:

* the **position attention module** (PAM): 1x1 convs give queries and keys with ``C/8`` of those
  channels and values with all of them; every position attends to every position,
  ``softmax_j(q_i . k_j)``, and the attended values, scaled by a learned ``gamma`` initialised to 0,
  are added to the input;
* the **channel attention module** (CAM): the channel affinity ``E = X X^T`` (``[C, C]`` over all
  positions) is turned into ``softmax(max_j E_ij - E_ij)`` as in the authors' code (the paper writes
  ``softmax(E)``; the reference subtracts from the row maximum, which makes *dissimilar* channels
  weigh more and keeps the exponent bounded), applied to the channels, scaled by a learned
  ``gamma`` (0 at init) and added to the input.

Each branch ends with another 3x3 conv-BN-ReLU; the two are summed, and dropout (0.1) with a 1x1
conv classifies. As in the reference, each branch also has its own classifier: in training mode
the model returns their logits as ``aux_logits`` (the reference sums the three losses with equal
weights, hence ``aux_weight = 2.0``: the trainer multiplies the *mean* auxiliary loss); in eval
mode (and in every export) only ``{"logits"}`` comes out.

Deviations: none in the head. Convolutions before batch norm are bias-free (the reference's are
too); the query/key/value 1x1 convs keep their biases, as in the reference.

Export and INT8: both modules are ``MatMul -> Softmax -> MatMul`` plus ``ReduceMax``/``Sub`` (CAM)
on fixed shapes; ONNX opset 17 and 19 parse in TensorRT 8.5 and 10. The ``tensorrt`` quantization
profile puts Q/DQ on the inputs of all four attention MatMuls (query x key, attention x value, both
activation x activation, per-tensor scales) as well as on every Conv; the CAM energy ``X X^T`` sums
over all positions, so its calibrated range is wide — if INT8 hurts, keep that MatMul in float with
``edgeseg quantize --max-drop``. PAM's energy is ``[HW, HW]`` (2,700 x 2,700 at 480x360, OS 8):
the memory cost grows with the square of the feature area.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import attend
from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, init_weights, resize_to
from .registry import register_model


class PositionAttention(nn.Module):
    """PAM: ``out_i = gamma * sum_j softmax_j(q_i . k_j) v_j + x_i`` over the ``H*W`` positions."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        k = self.key(x).flatten(2)  # [N, C', HW]
        v = self.value(x).flatten(2).transpose(1, 2)  # [N, HW, C]
        out = attend(q, k, v).transpose(1, 2).reshape(x.shape)
        return self.gamma * out + x


class ChannelAttention(nn.Module):
    """CAM: ``out_c = gamma * sum_d softmax_d(max_e E_ce - E_cd) x_d + x_c`` with ``E = X X^T``."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # [N, C, HW]
        energy = torch.matmul(flat, flat.transpose(1, 2))  # [N, C, C]
        energy = energy.amax(dim=-1, keepdim=True) - energy
        out = torch.matmul(torch.softmax(energy, dim=-1), flat).reshape(x.shape)
        return self.gamma * out + x


class DANet(SemanticModel):
    """Encoder -> (PAM branch + CAM branch) -> classifier. ``inter_channels`` defaults to ``C/4``."""

    aux_weight = 2.0  # the reference sums the PAM, CAM and fused losses with equal weights

    def __init__(self, encoder: Encoder, num_classes: int, inter_channels: int | None = None, dropout: float = 0.1):
        super().__init__(num_classes)
        self.encoder = encoder
        cin = encoder.out_channels[-1]
        inter = inter_channels or cin // 4
        self.pam_in, self.cam_in = ConvBNAct(cin, inter, 3), ConvBNAct(cin, inter, 3)
        self.pam, self.cam = PositionAttention(inter), ChannelAttention()
        self.pam_out, self.cam_out = ConvBNAct(inter, inter, 3), ConvBNAct(inter, inter, 3)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(inter, num_classes, 1))
        self.pam_classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(inter, num_classes, 1))
        self.cam_classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(inter, num_classes, 1))
        init_weights(self.pam_in, self.cam_in, self.pam, self.pam_out, self.cam_out, self.classifier,
                     self.pam_classifier, self.cam_classifier)

    def _branches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(images)[-1]
        return self.pam_out(self.pam(self.pam_in(x))), self.cam_out(self.cam(self.cam_in(x)))

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        pam, cam = self._branches(images)
        return self.classifier(pam + cam)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if not self.training:
            return super().forward(images)
        pam, cam = self._branches(images)
        return {"logits": resize_to(self.classifier(pam + cam), images.shape[-2:]),
                "aux_logits": [self.pam_classifier(pam), self.cam_classifier(cam)]}


def _danet(encoder: str, num_classes: int, output_stride: int = 8, inter_channels: int | None = None,
           dropout: float = 0.1, **kw) -> DANet:
    return DANet(create_encoder(encoder, output_stride=output_stride, **kw), num_classes, inter_channels, dropout)


@register_model(arch="danet", encoder="resnet50")
def danet_resnet50(num_classes: int = 21, **kw) -> DANet:
    """DANet on dilated ResNet-50 (output stride 8), 512-channel attention branches."""
    return _danet("resnet50", num_classes, **kw)


@register_model(arch="danet", encoder="resnet18")
def danet_resnet18(num_classes: int = 21, **kw) -> DANet:
    """DANet on dilated ResNet-18 (output stride 8), 128-channel attention branches."""
    return _danet("resnet18", num_classes, **kw)


@register_model(arch="danet", encoder="mobilenetv2")
def danet_mobilenetv2(num_classes: int = 21, **kw) -> DANet:
    """DANet on dilated MobileNetV2 (output stride 8), 80-channel attention branches."""
    return _danet("mobilenetv2", num_classes, **kw)


@register_model(arch="danet", encoder="test_resnet")
def test_danet(num_classes: int = 5, **kw) -> DANet:
    """Tiny DANet for tests (16-channel branches, 2-channel queries and keys)."""
    return _danet("test_resnet", num_classes, inter_channels=16, **kw)
