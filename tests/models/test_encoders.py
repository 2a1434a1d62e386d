"""Encoders declare what they return, match published parameter counts, and dilate correctly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models import create_encoder, list_encoders

# Backbone parameter counts of the torchvision ImageNet models without their classifier heads
# (e.g. resnet18: 11,689,512 total - fc 513,000); MobileNetV2 also without its last 1x1 1280 conv.
PUBLISHED = {
    "resnet18": 11_176_512,
    "resnet50": 23_508_032,
    "vgg16": 14_714_688,
    # torchvision's 14,723,136 minus its 4,224 conv biases, redundant before BN (ours are bias-free)
    "vgg16_bn": 14_723_136 - 4_224,
    "mobilenetv2": 2_223_872 - 412_160,
    "mobilenetv3_large": 2_971_952,
    "mobilenetv3_small": 927_008,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published_models(name):
    with torch.device("meta"):
        enc = create_encoder(name)
    assert sum(p.numel() for p in enc.parameters()) == PUBLISHED[name]


# HRNet has no stride to trade for dilation (its parallel branches are strides 4..32), so it builds
# only at output stride 32 and says so for 8 and 16; decoders read its reductions instead.
FIXED_STRIDE_32 = {"test_hrnet"}


@pytest.mark.parametrize("name", [n for n in list_encoders() if n.startswith("test_")] + ["mobilenetv3_small"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_declared_channels_and_reductions(name, output_stride):
    if output_stride != 32 and name in FIXED_STRIDE_32:
        with pytest.raises(ModelError, match="output_stride"):
            create_encoder(name, output_stride=output_stride)
        return
    enc = create_encoder(name, output_stride=output_stride).eval()
    with torch.no_grad():
        feats = enc(torch.zeros(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == list(enc.out_channels)
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in feats] == [(r, r) for r in enc.reductions]
    assert enc.output_stride == output_stride
    assert enc.reductions == tuple(min(r, output_stride) for r in (2, 4, 8, 16, 32))


def _dilations(module: nn.Module) -> list[int]:
    return [m.dilation[0] for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] == 3]


def test_resnet50_dilation_and_multigrid_follow_deeplabv3():
    with torch.device("meta"):
        os16 = create_encoder("resnet50", output_stride=16, multi_grid=(1, 2, 4))
        os8 = create_encoder("resnet50", output_stride=8)
    # OS 16: layer4 is dilated by 2, multi-grid unit rates (1, 2, 4) -> (2, 4, 8), no stride
    assert _dilations(os16.layers[3]) == [2, 4, 8]
    assert all(m.stride == (1, 1) for m in os16.layers[3].modules() if isinstance(m, nn.Conv2d))
    # OS 8: layer3 first block at rate 1 then 2; layer4 first block 2 then 4 (torchvision's scheme)
    assert _dilations(os8.layers[2]) == [1] + [2] * 5
    assert _dilations(os8.layers[3]) == [2, 4, 4]


def test_unknown_encoder_and_bad_output_stride():
    with pytest.raises(ModelError, match="resnet50"):
        create_encoder("resnet05")
    with pytest.raises(ModelError, match="output_stride"):
        create_encoder("resnet18", output_stride=4)
