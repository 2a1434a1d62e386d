"""ViT, SETR and Lawin against published numbers and hand-written references (the shared tester in
test_models.py runs the tiny variants through forward, fold and ONNX parity)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models import create_model
from edgeseg.models.lawin import LargeWindowAttention, Lawin, window_map, window_tokens
from edgeseg.models.setr import SETR, fraction_taps
from edgeseg.models.vit import VIT_CONFIGS, Attention, ViTConfig, VisionTransformer, create_vit

# Totals of the ImageNet models with their 1000-class head (DeiT paper / timm: vit_base_patch16_224
# 86,567,656; deit_small 22,050,664; deit_tiny 5,717,416) minus the head (C * 1000 + 1000).
PUBLISHED_VIT = {
    "vit_base": 86_567_656 - (768 * 1000 + 1000),  # 85.8M, the brief's "85.8M without the head"
    "vit_small": 22_050_664 - (384 * 1000 + 1000),
    "vit_tiny": 5_717_416 - (192 * 1000 + 1000),
}


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_VIT))
def test_vit_parameter_counts_match_published_models(name):
    with torch.device("meta"):
        vit = create_vit(name)
    assert _params(vit) == PUBLISHED_VIT[name]


def test_vit_tiny_flops_match_deit():
    """DeiT reports 1.3 GFLOPs (multiply-adds, fvcore) for DeiT-Ti at 224x224; FlopCounterMode
    counts two FLOPs per multiply-add (attention matmuls included; edgeseg.train.count_flops's number)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        vit = create_vit("vit_tiny")
        x = torch.zeros(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vit(x)
    assert round(counter.get_total_flops() / 2e9, 1) == 1.3


def test_vit_returns_stride16_maps_of_selected_blocks_without_class_token():
    vit = create_vit("test_vit", out_indices=(0, 3)).eval()
    with torch.no_grad():
        feats = vit(torch.randn(2, 3, 48, 80))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 3, 5)] * 2
    assert vit.out_channels == (32, 32) and vit.reductions == (16, 16) and vit.output_stride == 16
    assert len(vit.blocks) == 4 and isinstance(vit.norm, nn.LayerNorm)
    assert len(create_vit("test_vit", out_indices=(1,)).blocks) == 2  # blocks past the last tap are not built
    with pytest.raises(ModelError, match="multiple of the patch size"):
        vit(torch.randn(1, 3, 50, 80))
    with pytest.raises(ModelError, match="ascending"):
        create_vit("test_vit", out_indices=(3, 1))


def test_position_embeddings_resize_bilinearly():
    """A ramp along x (value = column) resized from 4 to 8 columns with align_corners=False:
    sample positions (j + 0.5) / 2 - 0.5, clamped to [0, 3]."""
    cfg = ViTConfig(4, 1, 1, base_grid=4)
    vit = VisionTransformer(cfg)
    with torch.no_grad():
        vit.pos_embed[0, 1:] = torch.arange(4.0).repeat(4)[:, None]  # row-major grid, same in every channel
    assert torch.equal(vit.position_embedding((4, 4)), vit.pos_embed[:, 1:])
    pos = vit.position_embedding((4, 8)).reshape(4, 8, 4)
    expected = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])
    assert torch.allclose(pos[2, :, 1], expected)


def test_attention_matches_scaled_dot_product_attention():
    torch.manual_seed(0)
    attn = Attention(16, 4).eval()
    x = torch.randn(2, 7, 16)
    qkv = attn.qkv(x).reshape(2, 7, 3, 4, 4).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(2, 7, 16)
    assert torch.allclose(attn(x), attn.proj(ref), atol=1e-6)


def test_setr_taps_follow_the_paper():
    # ViT-L (24 blocks): auxiliary heads on Z10, Z15, Z20 (+Z24 for PUP); MLA on Z6, Z12, Z18, Z24
    assert fraction_taps(24, (10, 15, 20)) == (9, 14, 19)
    assert fraction_taps(24, (6, 12, 18, 24)) == (5, 11, 17, 23)
    # 12-block ViTs: MLA on blocks 3/6/9/12
    with torch.device("meta"):
        mla = create_model("setr_mla_vit_small", num_classes=11)
        naive = create_model("setr_naive_vit_tiny")
    assert mla.encoder.out_indices == (2, 5, 8, 11) and len(mla.aux_heads) == 4
    assert naive.encoder.out_indices == (4, 7, 9, 11)


def test_setr_pads_to_16_and_crops():
    """75x101 runs the ViT on the zero-padded 80x112 image (a 5x7 grid); the logits are those of the
    padded image, cropped."""
    torch.manual_seed(0)
    model = create_model("test_setr_pup", num_classes=3).eval()
    grids = []
    model.encoder.patch_embed.register_forward_hook(lambda m, i, o: grids.append(tuple(o.shape[-2:])))
    x = torch.randn(1, 3, 75, 101)
    with torch.no_grad():
        out = model(x)["logits"]
        padded = model(F.pad(x, (0, 11, 0, 5)))["logits"]
    assert grids == [(5, 7), (5, 7)]
    assert out.shape == (1, 3, 75, 101)
    assert torch.allclose(out, padded[:, :, :75, :101], atol=1e-5)


def test_setr_pup_upsamples_2x_four_times():
    model = create_model("test_setr_pup", num_classes=3).eval()
    sizes = []
    for conv in model.decoder.convs:
        conv.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert sizes == [(4, 6), (8, 12), (16, 24), (32, 48)]


def test_setr_naive_head_is_two_1x1_layers():
    """Naive head parameters: LN (2C) + 1x1 conv C->256 + BN (2*256) + 1x1 conv 256->K with bias."""
    with torch.device("meta"):
        model = create_model("setr_naive_vit_small", num_classes=11)
    c = 384
    assert _params(model.decoder) == 2 * c + c * 256 + 2 * 256 + 256 * 11 + 11
    assert _params(model.encoder) == PUBLISHED_VIT["vit_small"] - 2 * c  # no final norm: SETR norms each input


def test_setr_aux_logits_only_in_training():
    from edgeseg.train.loop import auxiliary_loss

    torch.manual_seed(0)
    model = create_model("test_setr_naive", num_classes=4)
    x, target = torch.randn(2, 3, 40, 56), torch.randint(0, 4, (2, 40, 56))
    out = model.train()(x)
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == len(model.aux_heads) == 2
    assert all(a.shape == (2, 4, 40, 56) for a in out["aux_logits"])
    loss = auxiliary_loss(model, out, F.cross_entropy, target)
    expected = 0.4 * sum(F.cross_entropy(a, target) for a in out["aux_logits"]) / 2
    assert torch.allclose(loss, expected)
    with torch.no_grad():
        assert set(model.eval()(x)) == {"logits"}


def _reference_branch(m: LargeWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """The authors' algorithm (LawinHead.get_context + LawinAttn) with unfold and per-window 1x1 convs."""
    p, r, heads = m.window, m.ratio, m.heads
    n, c, h, w = x.shape
    query = F.unfold(x, p, stride=p).reshape(n, c, p, p, -1).permute(0, 4, 1, 2, 3).reshape(-1, c, p, p)
    ctx = F.unfold(x, p * r, stride=p, padding=(r - 1) * p // 2)
    ctx = ctx.reshape(n, c, p * r, p * r, -1).permute(0, 4, 1, 2, 3).reshape(-1, c, p * r, p * r)
    ctx = 0.5 * (F.max_pool2d(ctx, r) + F.avg_pool2d(ctx, r))
    ctx = F.layer_norm(ctx.permute(0, 2, 3, 1), (c,), m.norm.weight, m.norm.bias, m.norm.eps).permute(0, 3, 1, 2)
    flat = ctx.reshape(-1, c, p * p)
    mixed = [F.linear(flat[:, i * c // heads:(i + 1) * c // heads], m.mix_weight[i], m.mix_bias[i, 0]) for i in range(heads)]
    flat = flat + torch.cat(mixed, dim=1)
    b, inter = flat.shape[0], m.theta.out_channels
    theta = m.theta(query).reshape(b, heads, inter // heads, p * p).transpose(2, 3)
    phi = m.phi(flat.transpose(1, 2)).transpose(1, 2).reshape(b, heads, inter // heads, p * p)
    g = m.g(flat.transpose(1, 2)).transpose(1, 2).reshape(b, heads, inter // heads, p * p).transpose(2, 3)
    att = (torch.matmul(theta, phi) / (inter // heads) ** 0.5).softmax(-1)
    y = torch.matmul(att, g).transpose(2, 3).reshape(b, inter, p, p)
    y = y.reshape(n, h // p, w // p, inter, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, inter, h, w)
    return x + m.out(y)


@pytest.mark.parametrize("ratio", [8, 4, 2])
def test_large_window_attention_matches_the_unfold_reference(ratio):
    torch.manual_seed(ratio)
    m = LargeWindowAttention(16, ratio, heads=2, window=8).eval()
    with torch.no_grad():
        m.out[1].weight.fill_(1.0)  # the zero-initialised BN would hide the attention path
        m.mix_bias.normal_()
        x = torch.randn(2, 16, 16, 24)
        assert torch.allclose(m(x), _reference_branch(m, x), atol=1e-5)


def test_zero_pad_is_f_pad():
    from edgeseg.models.vit import zero_pad

    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(zero_pad(x, 1, 2, 3, 4), F.pad(x, (1, 2, 3, 4)))
    assert zero_pad(x, 0, 0, 0, 0) is x


def test_windows_round_trip_and_order():
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).reshape(2, 3, 16, 24)
    t = window_tokens(x, 8)
    assert t.shape == (2 * 2 * 3, 64, 3)
    assert torch.equal(t[4, :, 0], x[0, 0, 8:16, 8:16].reshape(-1))  # image 0, window row 1, column 1
    assert torch.equal(window_map(t, 8, 16, 24), x)


def test_lawin_taps_and_odd_sizes():
    torch.manual_seed(0)
    model = create_model("test_lawin", num_classes=3).eval()
    assert isinstance(model, Lawin)
    assert [model.encoder.reductions[i] for i in model.taps] == [4, 8, 16, 32]
    seen = []
    model.aspp.branches[0].register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 75, 101))["logits"]
    assert out.shape == (1, 3, 75, 101)
    assert seen == [(16, 16)]  # the 10x13 map at 1/8 padded to whole 8x8 windows
    with pytest.raises(ModelError, match="multiple of the ratio"):
        LargeWindowAttention(16, 8, heads=2, window=4)


def test_lawin_position_mixing_parameters():
    """Per head one P^2 x P^2 linear layer: R=8 with 32 heads at P=8 is 32 * (64 * 64 + 64)."""
    with torch.device("meta"):
        model = create_model("lawin_resnet18", num_classes=11)
    branch = model.aspp.branches[0]
    assert (branch.ratio, branch.heads) == (8, 32)
    assert branch.mix_weight.numel() + branch.mix_bias.numel() == 32 * (64 * 64 + 64)
    assert isinstance(model, Lawin) and not isinstance(model, SETR)
    assert VIT_CONFIGS["vit_base"].embed_dim == 768


def test_decomposed_layer_norm_is_layer_norm():
    from edgeseg.models.vit import LayerNorm, LayerNorm2d

    torch.manual_seed(0)
    fused, split = LayerNorm(16, 1e-6), LayerNorm(16, 1e-6, decomposed=True)
    with torch.no_grad():
        fused.weight.normal_(), fused.bias.normal_()
    split.load_state_dict(fused.state_dict())
    x = torch.randn(3, 5, 16) * 4 + 2
    assert torch.allclose(split(x), F.layer_norm(x, (16,), fused.weight, fused.bias, 1e-6), atol=1e-5)
    ln2d = LayerNorm2d(16, decomposed=True)
    ln2d.load_state_dict(fused.state_dict())
    y = torch.randn(2, 16, 3, 4)
    assert torch.allclose(ln2d(y), F.layer_norm(y.permute(0, 2, 3, 1), (16,), fused.weight, fused.bias).permute(0, 3, 1, 2),
                          atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_setr_mla", "test_lawin"])
def test_decomposed_norm_has_only_tensorrt_8_5_ops(name, tmp_path):
    """TensorRT 8.5 has no LayerNormalization: with ``decomposed_norm=True`` every op of the graph is
    in its table (the opset still has to come down to 17, which the exporter does not do yet)."""
    import onnx

    from edgeseg.export import export_onnx
    from edgeseg.quant.check import check_model
    from edgeseg.structures import ImageShape, InputSpec

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, decomposed_norm=True).eval()
    path = export_onnx(model, tmp_path / "m.onnx", InputSpec(size=ImageShape(64, 96)))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "LayerNormalization" not in ops and {"MatMul", "Softmax"} <= ops
    report = check_model(path, "tensorrt-8.5")
    assert [f.code for f in report.errors] == ["opset"], report.format()
