"""DANet, OCR, GloRe and GCU heads against direct computations written here (loops, einsum,
explicit difference tensors: not the modules' own code paths), hand-worked small cases, and
parameter counts summed layer by layer from the authors' reference implementations."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgeseg.models import create_model
from edgeseg.models.attention import attend
from edgeseg.models.danet import ChannelAttention, PositionAttention
from edgeseg.models.glore import GloReUnit, GraphConvUnit
from edgeseg.models.ocr import ObjectContext, gather_regions

RESNET50_BACKBONE = 23_508_032  # torchvision resnet50 without fc (tests/models/test_encoders.py)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=m.running_mean.dtype) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 0.5)
    return module.double().eval()


def _conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv as an einsum over channels."""
    return torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x) + conv.bias[None, :, None, None]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- attention ------------------------------------------


def test_attend_matches_a_loop():
    q, k, v = _randn(2, 3, 4, seed=1), _randn(2, 4, 5, seed=2), _randn(2, 5, 6, seed=3)
    ref = torch.zeros(2, 3, 6, dtype=torch.float64)
    for n in range(2):
        for i in range(3):
            e = [0.5 * sum(q[n, i, d] * k[n, d, j] for d in range(4)) for j in range(5)]
            w = [math.exp(float(x)) for x in e]
            for j in range(5):
                ref[n, i] += w[j] / sum(w) * v[n, j]
    torch.testing.assert_close(attend(q, k, v, scale=0.5), ref)


# ---------------------------------------------------------------- DANet ----------------------------------------------


def test_position_attention_matches_einsum():
    pam = _randomize(PositionAttention(16))
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    x = _randn(2, 16, 3, 5, seed=4)
    q, k, v = (_conv1x1(c, x).flatten(2) for c in (pam.query, pam.key, pam.value))
    assert q.shape == (2, 2, 15) and v.shape == (2, 16, 15)  # queries/keys C/8, values C
    attn = torch.softmax(torch.einsum("nci,ncj->nij", q, k), dim=2)  # over the attended positions j
    ref = 0.7 * torch.einsum("ncj,nij->nci", v, attn).reshape(x.shape) + x
    with torch.no_grad():
        torch.testing.assert_close(pam(x), ref)


def test_channel_attention_matches_einsum_and_a_hand_case():
    cam = ChannelAttention().double()
    with torch.no_grad():
        cam.gamma.fill_(-1.3)
    x = _randn(2, 6, 4, 3, seed=5)
    flat = x.flatten(2)
    energy = torch.einsum("nci,ndi->ncd", flat, flat)
    attn = torch.softmax(energy.max(dim=2, keepdim=True).values - energy, dim=2)
    ref = -1.3 * torch.einsum("ncd,ndi->nci", attn, flat).reshape(x.shape) + x
    with torch.no_grad():
        torch.testing.assert_close(cam(x), ref)
        # two channels, one position, x = (1, 2): E = [[1, 2], [2, 4]], max - E = [[1, 0], [2, 0]]
        cam.gamma.fill_(1.0)
        got = cam(torch.tensor([1.0, 2.0], dtype=torch.float64).reshape(1, 2, 1, 1)).flatten()
    e = math.e
    want0 = 1 + (e * 1 + 1 * 2) / (e + 1)
    want1 = 2 + (e * e * 1 + 1 * 2) / (e * e + 1)
    torch.testing.assert_close(got, torch.tensor([want0, want1], dtype=torch.float64))


def test_gamma_zero_makes_both_modules_the_identity():
    pam, cam = PositionAttention(16), ChannelAttention()
    assert pam.gamma.tolist() == [0.0] and cam.gamma.tolist() == [0.0]  # the paper's initialisation
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        assert torch.equal(pam(x), x) and torch.equal(cam(x), x)


def test_danet_returns_aux_logits_only_in_training():
    model = create_model("test_danet", num_classes=3)
    x = torch.randn(2, 3, 64, 48)
    out = model.train()(x)
    assert set(out) == {"logits", "aux_logits"} and out["logits"].shape == (2, 3, 64, 48)
    assert [a.shape for a in out["aux_logits"]] == [(2, 3, 8, 6)] * 2  # PAM and CAM logits at OS 8
    with torch.no_grad():
        assert set(model.eval()(x)) == {"logits"}


def test_danet_resnet50_head_parameters_match_the_reference_layers():
    with torch.device("meta"):
        model = create_model("danet_resnet50", num_classes=19)
    c, inter, nc = 2048, 512, 19
    conv3x3_bn = lambda cin, cout: cin * cout * 9 + 2 * cout  # noqa: E731  (bias-free conv + BN)
    head = (2 * conv3x3_bn(c, inter)  # conv5a, conv5c
            + 2 * (inter * inter // 8 + inter // 8) + inter * inter + inter + 1  # PAM: query, key, value, gamma
            + 1  # CAM: gamma
            + 2 * conv3x3_bn(inter, inter)  # conv51, conv52
            + 3 * (inter * nc + nc))  # conv8 (fused) and conv6, conv7 (the PAM/CAM auxiliary classifiers)
    assert head == 23_954_619
    assert _params(model) == RESNET50_BACKBONE + head
    assert model.encoder.output_stride == 8


# ---------------------------------------------------------------- OCR ------------------------------------------------


def test_gather_regions_matches_einsum_and_a_hand_case():
    feats, logits = _randn(2, 5, 3, 4, seed=6), _randn(2, 3, 3, 4, seed=7)
    weights = torch.softmax(logits.reshape(2, 3, 12), dim=2)
    ref = torch.einsum("nki,nci->nkc", weights, feats.reshape(2, 5, 12))  # [N, K, C]
    torch.testing.assert_close(gather_regions(feats, logits), ref)
    # one channel, two pixels (1, 3), region logits (0, ln 3): weights (1/4, 3/4) -> 1/4 + 9/4
    f = torch.tensor([1.0, 3.0], dtype=torch.float64).reshape(1, 1, 1, 2)
    m = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).reshape(1, 1, 1, 2)
    assert float(gather_regions(f, m)) == pytest.approx(2.5)


def test_object_context_attention_matches_einsum():
    ctx = _randomize(ObjectContext(6, 4))
    pixels, regions = _randn(2, 6, 3, 5, seed=8), _randn(2, 3, 6, seed=9)
    with torch.no_grad():
        proxy = regions.transpose(1, 2).unsqueeze(-1)  # the reference's [N, C, K, 1] context
        q = ctx.pixel(pixels).flatten(2)  # [N, 4, 15]
        k, v = ctx.object(proxy).flatten(2), ctx.down(proxy).flatten(2)  # [N, 4, 3]
        sim = torch.softmax(torch.einsum("nci,nck->nik", q, k) / math.sqrt(4), dim=2)  # over the K regions
        ref = ctx.up(torch.einsum("nik,nck->nci", sim, v).reshape(2, 4, 3, 5))
        torch.testing.assert_close(ctx(pixels, regions), ref)


def test_ocr_soft_regions_come_from_the_penultimate_stage_and_train_as_aux():
    model = create_model("test_ocr", num_classes=4)
    assert model.aux_head[0][0].in_channels == model.encoder.out_channels[-2]
    assert model.pixels[0].in_channels == model.encoder.out_channels[-1]
    out = model.train()(torch.randn(2, 3, 40, 56))
    assert [a.shape for a in out["aux_logits"]] == [(2, 4, 5, 7)] and model.aux_weight == 0.4
    with torch.no_grad():
        assert set(model.eval()(torch.randn(1, 3, 40, 56))) == {"logits"}


def test_ocr_resnet50_head_parameters_match_the_reference_layers():
    with torch.device("meta"):
        model = create_model("ocr_resnet50", num_classes=19)
    nc, mid, key = 19, 512, 256
    conv_bn = lambda cin, cout, k=1: cin * cout * k * k + 2 * cout  # noqa: E731
    head = (conv_bn(1024, mid, 3) + mid * nc + nc  # dsn_head (soft object regions) on layer3
            + conv_bn(2048, mid, 3)  # conv_3x3 (pixel representations)
            + 2 * (conv_bn(mid, key) + conv_bn(key, key))  # f_pixel, f_object
            + conv_bn(mid, key) + conv_bn(key, mid)  # f_down, f_up
            + conv_bn(2 * mid, mid)  # conv_bn_dropout on [context, pixels]
            + mid * nc + nc)  # cls head
    assert _params(model) == RESNET50_BACKBONE + head


# ---------------------------------------------------------------- GloRe ----------------------------------------------


def test_glore_unit_matches_einsum():
    unit = _randomize(GloReUnit(6, num_state=4, num_node=3))
    x = _randn(2, 6, 3, 5, seed=10)
    xs, b = _conv1x1(unit.state, x).flatten(2), _conv1x1(unit.proj, x).flatten(2)  # [N, S, HW], [N, V, HW]
    nodes = torch.einsum("nsi,nvi->nsv", xs, b)  # projection: a sum over all positions
    a_g, a_bias = unit.gcn.node.weight[:, :, 0], unit.gcn.node.bias
    h = torch.einsum("uv,nsv->nsu", a_g, nodes) + a_bias + nodes  # (I + A_g) over the nodes
    z = torch.einsum("ts,nsv->ntv", unit.gcn.state.weight[:, :, 0], torch.relu(h))  # W_g over the states
    y = torch.einsum("nsv,nvi->nsi", z, b).reshape(2, 4, 3, 5)  # reverse projection with the same B
    conv, bn = unit.extend[0], unit.extend[1]
    ext = torch.einsum("cs,nshw->nchw", conv.weight[:, :, 0, 0], y)
    ext = (ext - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-4) \
        * bn.weight[:, None, None] + bn.bias[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(unit(x), x + ext)


def test_glore_unit_starts_as_identity_and_has_the_reference_parameter_count():
    model = create_model("test_glore").eval()
    x = torch.randn(1, 16, 4, 6)
    with torch.no_grad():
        assert torch.allclose(model.glore(x), x)  # zero-initialised blocker BN (running stats 0 / 1)
    with torch.device("meta"):
        big = create_model("glore_resnet50", num_classes=19)
    s, v, c = 128, 64, 512  # num_mid = 64: 2 * 64 states, 64 nodes on the 512-channel head
    assert (big.glore.gcn.state.in_channels, big.glore.gcn.node.in_channels) == (s, v)
    # conv_state (bias), conv_proj (bias), GCN conv1 (bias) and conv2 (none), conv_extend (none), blocker BN
    assert _params(big.glore) == (c * s + s) + (c * v + v) + (v * v + v) + s * s + s * c + 2 * c == 185_600


# ---------------------------------------------------------------- GCU ------------------------------------------------


def _gcu_reference(gcu: GraphConvUnit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's equations with the explicit ``[N, HW, V, C]`` difference tensor."""
    pixels = x.flatten(2).transpose(1, 2)  # [N, HW, C]
    sigma = torch.exp(gcu.log_sigma)
    diff = (pixels[:, :, None, :] - gcu.centres) / sigma  # [N, HW, V, C]
    q = torch.softmax(-0.5 * (diff ** 2).sum(-1), dim=2)  # over the vertices
    z = (q[..., None] * diff).sum(1) / (q.sum(1)[..., None] + gcu.eps)  # [N, V, C]
    z = z / torch.sqrt((z ** 2).sum(-1, keepdim=True) + gcu.eps)
    adjacency = torch.einsum("nkc,nlc->nkl", z, z)
    z_out = torch.relu(torch.einsum("nkl,nlc,oc->nko", adjacency, z, gcu.weight.weight))
    y = torch.einsum("nik,nko->noi", q, z_out).reshape(x.shape[0], -1, *x.shape[2:])
    return q, y


def test_gcu_projection_and_reprojection_match_the_paper_equations():
    gcu = _randomize(GraphConvUnit(5, 3, vertices=4))
    x = _randn(2, 5, 3, 4, seed=11)
    q_ref, y_ref = _gcu_reference(gcu, x)
    with torch.no_grad():
        torch.testing.assert_close(gcu.assignment(x.flatten(2).transpose(1, 2)), q_ref)
        torch.testing.assert_close(gcu(x), y_ref)


def test_gcu_assignment_hand_case():
    gcu = GraphConvUnit(1, 1, vertices=2).double()
    with torch.no_grad():
        gcu.centres.copy_(torch.tensor([[0.0], [2.0]]))
        gcu.log_sigma.zero_()
        q = gcu.assignment(torch.tensor([[[1.0], [0.0]]], dtype=torch.float64))[0]
    # x = 1 is equidistant from 0 and 2; x = 0: exponents 0 and -4/2 -> 1 / (1 + e^-2)
    torch.testing.assert_close(q[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert float(q[1, 0]) == pytest.approx(1 / (1 + math.exp(-2)))


def test_gcu_model_uses_2_4_8_32_vertices_with_a_quarter_of_the_channels_each():
    with torch.device("meta"):
        model = create_model("gcu_resnet50", num_classes=19)
    assert [g.centres.shape for g in model.gcus] == [(v, 2048) for v in (2, 4, 8, 32)]
    assert [g.weight.out_features for g in model.gcus] == [512] * 4
    assert model.head[0][0].in_channels == 2048 + 4 * 512 and model.encoder.output_stride == 8
