"""FPN, FastFCN's JPU and HRNetV2 against their papers: published parameter counts and GFLOPs,
strides and shapes the papers state, and hand-computed small cases. (Forward, Conv-BN folding and
ONNX parity of every variant run in test_models.py.)"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models import Encoder, create_encoder, create_model, model_info
from edgeseg.models.deeplabv3plus import DeepLabV3Plus
from edgeseg.models.encoders.hrnet import HighResolutionModule
from edgeseg.models.fpn import FPN, FeaturePyramid
from edgeseg.models.jpu import FastFCN, JointPyramidUpsampling
from edgeseg.train.flops import conv_linear_macs

EPS = 1e-5  # BatchNorm2d's default


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_model(name: str, num_classes: int = 19) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes).eval()


def _conv_bn(seq: nn.Sequential, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """A ConvBNAct written out with functional ops (eval-mode BN)."""
    conv, bn = seq[0], seq[1]
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return F.relu(y) if relu else y


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


# ---- HRNetV2 --------------------------------------------------------------------------------------
# HRNet-Semantic-Segmentation README, Cityscapes table: #params and GFLOPs at 1024x2048, where its
# modelsummary.py counts conv/linear multiply-adds divided by 1024**3.
PUBLISHED_HRNET = {"hrnetv2_w48": (65.9, 696.2), "hrnetv2_w18_small": (3.9, 71.6)}


@pytest.mark.parametrize("name", sorted(PUBLISHED_HRNET))
def test_hrnetv2_parameter_counts_match_published(name):
    assert round(_params(_meta_model(name)) / 1e6, 1) == PUBLISHED_HRNET[name][0]


@pytest.mark.parametrize("name", [
    "hrnetv2_w18_small", pytest.param("hrnetv2_w48", marks=pytest.mark.slow)])
def test_hrnetv2_gflops_match_published(name):
    model = _meta_model(name)
    macs = conv_linear_macs(model, torch.zeros(1, 3, 1024, 2048, device="meta"))
    assert round(macs / 1024**3, 1) == PUBLISHED_HRNET[name][1]


@pytest.mark.parametrize("name, width, stage1, blocks, modules", [
    ("hrnetv2_w18", 18, 4, 4, (1, 4, 3)),
    ("hrnetv2_w48", 48, 4, 4, (1, 4, 3)),
    ("hrnetv2_w18_small", 18, 2, 2, (1, 3, 2)),  # official seg_hrnet_w18_small_v2
])
def test_hrnet_layout_follows_the_official_configs(name, width, stage1, blocks, modules):
    with torch.device("meta"):
        enc = create_encoder(name)
    assert enc.out_channels == (64, width, 2 * width, 4 * width, 8 * width)
    assert enc.reductions == (2, 4, 8, 16, 32) and enc.output_stride == 32
    assert len(enc.stage1) == stage1 and enc.stage1[-1].conv3[0].out_channels == 256
    assert tuple(len(s) for s in enc.stages) == modules
    assert [len(s[0].branches) for s in enc.stages] == [2, 3, 4]
    assert all(len(b) == blocks for s in enc.stages for m in s for b in m.branches)
    assert [enc.stem1[0].stride, enc.stem2[0].stride] == [(2, 2), (2, 2)]


def test_hrnet_branches_keep_ceil_halved_sizes_at_odd_inputs():
    enc = create_encoder("test_hrnet").eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 75, 101))
    # every stride-2 conv has padding 1: ceil(n / 2) at each halving
    assert [tuple(f.shape[-2:]) for f in feats] == [(38, 51), (19, 26), (10, 13), (5, 7), (3, 4)]
    assert [f.shape[1] for f in feats] == list(enc.out_channels)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_hrnet_has_no_output_stride_but_32(output_stride):
    with pytest.raises(ModelError, match="output_stride must be 32"):
        create_encoder("test_hrnet", output_stride=output_stride)


def test_multi_resolution_fusion_matches_the_paper_rule():
    """Two branches, no blocks: out_0 = ReLU(x_0 + up(BN(1x1(x_1)))), out_1 = ReLU(BN(3x3/2(x_0)) + x_1)."""
    torch.manual_seed(0)
    module = _randomize_bn(HighResolutionModule((3, 6), blocks=0))
    x0, x1 = torch.randn(2, 3, 9, 11), torch.randn(2, 6, 5, 6)
    with torch.no_grad():
        out0, out1 = module([x0, x1])
        up = F.interpolate(_conv_bn(module.fuse[0][1].conv, x1, relu=False), size=(9, 11), mode="bilinear",
                           align_corners=False)
        down = _conv_bn(module.fuse[1][0].conv[0], x0, relu=False)
    assert module.fuse[1][0].conv[0][0].stride == (2, 2) and module.fuse[0][1].conv[0].kernel_size == (1, 1)
    torch.testing.assert_close(out0, F.relu(x0 + up))
    torch.testing.assert_close(out1, F.relu(down + x1))


def test_hrnet_fusion_down_path_has_relu_between_strided_convs_only():
    module = HighResolutionModule((2, 4, 8), blocks=1)
    chain = module.fuse[2][0].conv  # from stride x1 to x4: two strided convs
    assert [c[0].stride for c in chain] == [(2, 2), (2, 2)]
    assert [c[0].out_channels for c in chain] == [2, 8]
    assert [type(c[2]) for c in chain] == [nn.ReLU, nn.Identity]


def test_hrnetv2_head_concatenates_15c_channels():
    model = _meta_model("hrnetv2_w48")
    mix, classifier = model.head[0][0], model.head[1]
    assert mix.in_channels == mix.out_channels == 15 * 48 and mix.kernel_size == (1, 1)
    assert classifier.in_channels == 720 and classifier.out_channels == 19


def test_hrnetv2_logits_are_at_stride_4():
    model = create_model("test_hrnetv2", num_classes=3).eval()
    with torch.no_grad():
        assert model.forward_logits(torch.randn(1, 3, 75, 101)).shape == (1, 3, 19, 26)


def test_deeplabv3plus_runs_on_the_hrnet_encoder():
    torch.manual_seed(0)
    model = DeepLabV3Plus(create_encoder("test_hrnet"), num_classes=4, channels=8, low_channels=4).eval()
    assert model.low_index == 1 and model.encoder.output_stride == 32
    assert [b[0][0].dilation for b in model.aspp.branches[1:4]] == [(3, 3), (6, 6), (9, 9)]  # OS 32 rates
    with torch.no_grad():
        out = model(torch.randn(2, 3, 75, 101))
    assert set(out) == {"logits"} and out["logits"].shape == (2, 4, 75, 101)
    assert torch.isfinite(out["logits"]).all()


def test_fpn_decoder_is_registered_on_hrnet():
    info = model_info("fpn_hrnetv2_w18_small")
    assert (info.arch, info.encoder) == ("fpn", "hrnetv2_w18_small")
    model = _meta_model("fpn_hrnetv2_w18_small")
    assert isinstance(model, FPN) and [c.in_channels for c in model.pyramid.lateral] == [18, 36, 72, 144]


# ---- FPN --------------------------------------------------------------------------------------------
def test_fpn_top_down_is_nearest_resize_to_the_lateral_size():
    """Hand case: identity laterals/outputs, C5 = [[1,2,3],[4,5,6]] onto an odd 3x5 C4 of ones.
    Nearest picks rows floor(i * 2/3) = 0,0,1 and columns floor(j * 3/5) = 0,0,1,1,2."""
    fpn = FeaturePyramid((1, 1), channels=1)
    with torch.no_grad():
        for conv in list(fpn.lateral) + list(fpn.output):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0
        c5 = torch.tensor([[1.0, 2, 3], [4, 5, 6]]).view(1, 1, 2, 3)
        p4, p5 = fpn([torch.ones(1, 1, 3, 5), c5])
    expected = torch.tensor([[1.0, 1, 2, 2, 3], [1, 1, 2, 2, 3], [4, 4, 5, 5, 6]]) + 1
    torch.testing.assert_close(p4[0, 0], expected)
    torch.testing.assert_close(p5, c5)


def test_fpn_semantic_branch_follows_panoptic_fpn():
    model = create_model("test_fpn", num_classes=3).eval()
    # P2: one conv, no upsampling; P3: one; P4: two; P5: three (conv -> x2 up each)
    assert [len(level) for level in model.semantic.levels] == [1, 1, 2, 3]
    assert model.semantic.targets == [[], [0], [1, 0], [2, 1, 0]]
    with torch.no_grad():
        pyramid = model.pyramid(model.encoder(torch.randn(1, 3, 75, 101))[1:])
        logits = model.forward_logits(torch.randn(1, 3, 75, 101))
    assert [tuple(p.shape[-3:]) for p in pyramid] == [(8, 19, 26), (8, 10, 13), (8, 5, 7), (8, 3, 4)]
    assert logits.shape == (1, 3, 19, 26)  # stride 4


def test_fpn_resnet50_parameter_count_by_hand():
    resnet50 = 23_508_032  # torchvision backbone without fc (test_encoders.py)
    neck = sum(c * 256 + 256 for c in (256, 512, 1024, 2048)) + 4 * (256 * 256 * 9 + 256)
    bn = 2 * 128
    branch = 4 * (256 * 128 * 9 + bn) + (1 + 2) * (128 * 128 * 9 + bn)  # first convs of P2..P5, then P4 1, P5 2
    classifier = 128 * 19 + 19
    assert _params(_meta_model("fpn_resnet50")) == resnet50 + neck + branch + classifier


class _StubEncoder(Encoder):
    def __init__(self, reductions: tuple[int, ...]):
        super().__init__()
        self.reductions, self.out_channels = reductions, (4,) * len(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Zero maps of the declared channels and reductions (never run: FPN refuses it at build)."""
        h, w = x.shape[-2:]
        return [x.new_zeros(x.shape[0], c, -(-h // r), -(-w // r)) for c, r in zip(self.out_channels, self.reductions)]


def test_fpn_rejects_encoders_without_a_halving_pyramid_from_stride_4():
    with pytest.raises(ModelError, match="stride-4"):
        FPN(_StubEncoder((2, 8, 16, 32)), num_classes=3)
    with pytest.raises(ModelError, match="halve"):
        FPN(_StubEncoder((2, 4, 16, 32)), num_classes=3)
    # a dilated encoder (strides 4, 8, 8, 8) still has a pyramid: every stride-8 level upsamples once
    assert FPN(create_encoder("test_resnet", output_stride=8), num_classes=3).semantic.targets == [[], [0], [0], [0]]


# ---- FastFCN JPU ----------------------------------------------------------------------------------
def test_jpu_output_stride_is_8_on_a_stride_32_encoder():
    model = create_model("test_jpu", num_classes=3).eval()
    assert model.encoder.output_stride == 32
    assert [b[0].dilation for b in model.aspp.branches[1:4]] == [(12, 12), (24, 24), (36, 36)]  # FastFCN's
    assert [d[0][0].dilation for d in model.jpu.dilated] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    for h, w in ((64, 96), (75, 101)):
        with torch.no_grad():
            feats = model.encoder(torch.randn(1, 3, h, w))
            jpu = model.jpu(feats[-3:])
        assert jpu.shape == (1, 4 * 4, *feats[2].shape[-2:])
        assert tuple(jpu.shape[-2:]) == (-(-h // 8), -(-w // 8))


def test_jpu_on_constant_inputs_matches_a_hand_computation():
    """All weights 1, width 1, BN at its init (scale s = 1/sqrt(1 + eps)), constant stride-8/16/32 maps
    a, b, c. Away from borders: each 3x3 conv gives 9 s value; the depthwise 3x3 9x that; the pointwise
    conv sums the three channels; so every dilation branch gives 81 s^3 (a + b + c)."""
    jpu = JointPyramidUpsampling((1, 1, 1), width=1).eval()
    with torch.no_grad():
        for m in jpu.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
        a, b, c = 1.0, 2.0, 3.0
        out = jpu([torch.full((1, 1, 40, 40), a), torch.full((1, 1, 20, 20), b), torch.full((1, 1, 10, 10), c)])
    s = (1 + EPS) ** -0.5
    assert out.shape == (1, 4, 40, 40)
    centre = out[0, :, 16:24, 16:24]  # taps within 9 pixels of the 1/8 border never reach it
    torch.testing.assert_close(centre, torch.full_like(centre, 81 * s**3 * (a + b + c)))


def test_jpu_equals_its_recomposition():
    """The module against the paper's recipe written out: reduce each level, upsample to 1/8, concat,
    four separable dilated convs (depthwise -> BN -> pointwise -> BN -> ReLU), concat."""
    torch.manual_seed(0)
    jpu = _randomize_bn(JointPyramidUpsampling((4, 6, 8), width=3))
    feats = [torch.randn(1, 4, 10, 13), torch.randn(1, 6, 5, 7), torch.randn(1, 8, 3, 4)]
    with torch.no_grad():
        got = jpu(feats)
        reduced = [_conv_bn(conv, f) for conv, f in zip(jpu.reduce, feats)]
        x = torch.cat([reduced[0]] + [F.interpolate(r, size=(10, 13), mode="bilinear") for r in reduced[1:]], 1)
        branches = []
        for d, sep in zip((1, 2, 4, 8), jpu.dilated):
            dw = F.conv2d(x, sep[0][0].weight, padding=d, dilation=d, groups=9)
            dw = F.batch_norm(dw, sep[0][1].running_mean, sep[0][1].running_var, sep[0][1].weight, sep[0][1].bias,
                              False, 0.0, EPS)
            branches.append(_conv_bn(sep[1], dw))
        ref = torch.cat(branches, 1)
    torch.testing.assert_close(got, ref)


def test_fastfcn_needs_a_plain_encoder():
    with pytest.raises(ModelError, match="strides 8, 16, 32"):
        FastFCN(create_encoder("test_resnet", output_stride=16), num_classes=3)


def test_jpu_resnet50_has_the_paper_widths():
    model = _meta_model("jpu_resnet50")
    assert [c[0].in_channels for c in model.jpu.reduce] == [512, 1024, 2048]
    assert [c[0].out_channels for c in model.jpu.reduce] == [512] * 3
    assert model.jpu.out_channels == 2048 and model.aspp.branches[0][0].in_channels == 2048
