"""DeepLab v1 (LargeFOV) and v2 (ASPP-L) against the papers and their reference Caffe prototxts:
published parameter counts, the layout (pool strides, dilations, fc6 rate), the whole tiny v1
network against a functional re-statement of the prototxt, and ASPP-L against hand-written convs.
The shared tester (test_models.py) runs the registered variants through forward/fold/export."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.deeplabv1 import (
    POOL_STRIDES,
    DeepLabV1,
    deeplabv1_vgg16,
    deeplabv1_vgg16_bn,
    test_deeplabv1 as tiny_deeplabv1,
)
from edgeseg.models.deeplabv2 import (
    ASPP_L_RATES,
    ASPPL,
    DeepLabV2,
    deeplabv2_mobilenetv2,
    deeplabv2_resnet18,
    deeplabv2_resnet50,
    deeplabv2_resnet101,
    test_deeplabv2 as tiny_deeplabv2,
)

VOC = 21  # PASCAL VOC classes, what the papers count with
VGG16_CONVS = 14_714_688  # torchvision vgg16().features
VGG16_BN_CONVS = 14_723_136 - 4_224  # torchvision vgg16_bn().features minus the conv biases BN makes redundant
RESNET101 = 44_549_160 - 2_049_000  # torchvision resnet101 minus its 1000-way fc


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta(build, **kw):
    with torch.device("meta"):
        return build(num_classes=VOC, **kw)


# --- DeepLab v1 -----------------------------------------------------------------------------------


def test_largefov_has_the_20_5m_parameters_of_table_2():
    model = _meta(deeplabv1_vgg16)
    fc6 = 512 * 3 * 3 * 1024 + 1024
    fc7 = 1024 * 1024 + 1024
    fc8 = 1024 * VOC + VOC
    assert _params(model.encoder) == VGG16_CONVS
    assert _params(model) == VGG16_CONVS + fc6 + fc7 + fc8 == 20_505_429
    assert round(_params(model) / 1e6, 1) == 20.5  # Table 2, DeepLab-CRF-LargeFOV


def test_largefov_bn_variant_counts_bn_instead_of_biases():
    model = _meta(deeplabv1_vgg16_bn)
    fc6 = 512 * 3 * 3 * 1024 + 2 * 1024  # bias-free conv + BN affine
    fc7 = 1024 * 1024 + 2 * 1024
    assert _params(model) == VGG16_BN_CONVS + fc6 + fc7 + 1024 * VOC + VOC == 20_511_701
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13 + 2


def test_largefov_layout_follows_the_reference_prototxt():
    model = _meta(deeplabv1_vgg16)
    assert POOL_STRIDES == (2, 2, 2, 1, 1)
    assert model.encoder.reductions == (2, 4, 8, 8, 8) and model.encoder.output_stride == 8
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.dilation[0] for c in convs] == [1] * 10 + [2] * 3  # conv5_x at rate 2
    assert all(c.padding[0] == c.dilation[0] and c.kernel_size == (3, 3) for c in convs)
    pool5a, fc6, _, drop6, fc7, _, drop7, fc8 = model.head
    assert isinstance(pool5a, nn.AvgPool2d) and (pool5a.kernel_size, pool5a.stride, pool5a.padding) == (3, 1, 1)
    assert (fc6.kernel_size, fc6.dilation, fc6.padding, fc6.out_channels) == ((3, 3), (12, 12), (12, 12), 1024)
    assert (fc7.kernel_size, fc7.out_channels) == ((1, 1), 1024)
    assert drop6.p == drop7.p == 0.5
    assert (fc8.kernel_size, fc8.out_channels) == ((1, 1), VOC)


def _prototxt_forward(model: DeepLabV1, x: torch.Tensor) -> torch.Tensor:
    """The LargeFOV prototxt restated with functional ops, taking the weights from ``model``."""
    stages = [[m for m in s if isinstance(m, nn.Conv2d)] for s in model.encoder.stages]
    for convs, stride, rate in zip(stages, (2, 2, 2, 1, 1), (1, 1, 1, 1, 2)):
        for c in convs:
            x = F.relu(F.conv2d(x, c.weight, c.bias, padding=rate, dilation=rate))
        x = F.max_pool2d(x, 3, stride, 1)  # pool1-pool5
    x = F.avg_pool2d(x, 3, 1, 1)  # pool5a
    fc6, fc7, fc8 = (m for m in model.head if isinstance(m, nn.Conv2d))
    x = F.relu(F.conv2d(x, fc6.weight, fc6.bias, padding=12, dilation=12))
    x = F.relu(F.conv2d(x, fc7.weight, fc7.bias))
    return F.conv2d(x, fc8.weight, fc8.bias)


def test_tiny_largefov_equals_the_prototxt_and_keeps_its_321_to_41_alignment():
    torch.manual_seed(0)
    model = tiny_deeplabv1().eval()
    x = torch.randn(1, 3, 321, 321)
    with torch.no_grad():
        scores = model.forward_logits(x)
        ref = _prototxt_forward(model, x)
        logits = model(x)["logits"]
    assert scores.shape == (1, 5, 41, 41)  # the prototxt's comment: 321 -> 161 -> 81 -> 41
    torch.testing.assert_close(scores, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, F.interpolate(ref, (321, 321), mode="bilinear", align_corners=False))


def test_largefov_grid_at_odd_sizes_is_ceil_of_an_eighth():
    model = tiny_deeplabv1().eval()
    with torch.no_grad():
        for h, w in ((75, 101), (60, 84), (33, 17)):
            assert model.forward_logits(torch.zeros(1, 3, h, w)).shape[-2:] == (-(-h // 8), -(-w // 8))


# --- DeepLab v2 -----------------------------------------------------------------------------------


def test_aspp_l_is_the_sum_of_four_atrous_convs():
    torch.manual_seed(0)
    aspp = ASPPL(6, 4)
    with torch.no_grad():
        for conv in aspp.branches:
            conv.bias.normal_()
        x = torch.randn(2, 6, 41, 37)
        ref = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(aspp.branches, (6, 12, 18, 24)))
        torch.testing.assert_close(aspp(x), ref, rtol=1e-5, atol=1e-5)
    assert aspp.rates == ASPP_L_RATES == (6, 12, 18, 24)


def test_aspp_l_taps_by_hand():
    """A unit impulse at the centre of a 41x41 map, all-ones kernels weighted 1, 10, 100, 1000 for
    rates 6, 12, 18, 24 and biases 0.5 each: every output is 2 (the biases) plus the weight of each
    branch whose 3x3 taps (offsets in {-r, 0, r}^2) reach the impulse."""
    aspp = ASPPL(1, 1)
    with torch.no_grad():
        for i, conv in enumerate(aspp.branches):
            conv.weight.fill_(10.0**i)
            conv.bias.fill_(0.5)
        x = torch.zeros(1, 1, 41, 41)
        x[0, 0, 20, 20] = 1.0
        y = aspp(x)[0, 0]
    assert y[20, 20] == 1 + 10 + 100 + 1000 + 2
    assert y[26, 20] == y[14, 14] == 1 + 2  # rate 6
    assert y[32, 32] == y[8, 20] == 10 + 2  # rate 12
    assert y[2, 38] == y[38, 20] == 100 + 2  # rate 18; rate 24's outer taps fall outside the map
    assert int((y != 2).sum()) == 1 + 8 * 3


@pytest.mark.parametrize("build, cin", [
    (deeplabv2_resnet101, 2048), (deeplabv2_resnet50, 2048), (deeplabv2_resnet18, 512), (deeplabv2_mobilenetv2, 320),
])
def test_aspp_l_head_parameters(build, cin):
    model = _meta(build)
    assert model.encoder.out_channels[-1] == cin and model.encoder.output_stride == 8
    assert _params(model.aspp) == 4 * (cin * 9 * VOC + VOC)
    convs = [m for m in model.aspp.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.dilation[0], c.padding[0]) for c in convs] == [((3, 3), r, r) for r in (6, 12, 18, 24)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.aspp.modules())  # v2: no BN, no projection


def test_deeplabv2_resnet101_total_parameters():
    model = _meta(deeplabv2_resnet101)
    assert _params(model.encoder) == RESNET101
    assert _params(model) == RESNET101 + 4 * (2048 * 9 * VOC + VOC) == 44_048_532


def test_tiny_deeplabv2_output_stride_8_and_logits_only():
    torch.manual_seed(0)
    model = tiny_deeplabv2()
    assert isinstance(model, DeepLabV2) and model.encoder.output_stride == 8
    x = torch.randn(2, 3, 75, 101)
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            out = model(x)
        assert set(out) == {"logits"} and out["logits"].shape == (2, 5, 75, 101)
    with torch.no_grad():
        assert model.forward_logits(x).shape[-2:] == (10, 13)


def test_registry_metadata():
    from edgeseg.models import list_models, model_info

    assert set(list_models("deeplabv1_*")) == {"deeplabv1_vgg16", "deeplabv1_vgg16_bn"}
    assert set(list_models("deeplabv2_*")) == {
        "deeplabv2_resnet101", "deeplabv2_resnet50", "deeplabv2_resnet18", "deeplabv2_mobilenetv2"}
    info = model_info("test_deeplabv2")
    assert (info.arch, info.encoder, info.tiny) == ("deeplabv2", "test_resnet", True)
    assert model_info("deeplabv1_vgg16").arch == model_info("test_deeplabv1").arch == "deeplabv1"
