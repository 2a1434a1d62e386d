"""FC-DenseNet and UNet++ against their papers: parameter counts, layer counts, feature-map widths,
odd-size cropping, deep supervision through the trainer, and pruning that is exact and leaves no
unused layer in the graph. (Forward, fold and ONNX parity of every variant: test_models.py.)"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models import create_model
from edgeseg.models.fc_densenet import FCDenseNet, center_fit
from edgeseg.models.unetpp import PAPER_WIDTHS, UNetPlusPlus

# ---------------------------------------------------------------- FC-DenseNet (Jégou et al. 2017)

FC_DENSENETS = {  # name: (blocks down, bottleneck, growth, Table 2 parameters in millions)
    "fc_densenet56": ((4,) * 5, 4, 12, 1.5),
    "fc_densenet67": ((5,) * 5, 5, 16, 3.5),
    "fc_densenet103": ((4, 5, 7, 10, 12), 15, 16, 9.4),
}


def _tiramisu_params(down: tuple[int, ...], bottleneck: int, growth: int, classes: int = 11,
                     stem: int = 48, per_bn_channel: int = 2) -> int:
    """Closed-form count, written from the paper's description (convs with biases)."""
    def layers(cin: int, n: int) -> tuple[int, int]:
        total = 0
        for _ in range(n):
            total += per_bn_channel * cin + 9 * cin * growth + growth
            cin += growth
        return total, cin

    total, c, skips = 27 * stem + stem, stem, []
    for n in down:
        p, c = layers(c, n)
        skips.append(c)
        total += p + per_bn_channel * c + c * c + c  # block + transition down (1x1 conv, same width)
    p, c = layers(c, bottleneck)
    total, new = total + p, growth * bottleneck
    for n, skip in zip(reversed(down), reversed(skips)):
        p, c = layers(new + skip, n)
        total += 9 * new * new + new + p  # transition up (3x3 transposed conv on the new maps) + block
        new = growth * n
    return total + c * classes + classes


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _bn_stats(model: nn.Module) -> int:
    return sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("name", sorted(FC_DENSENETS))
def test_fc_densenet_parameters_match_table2(name):
    down, bottleneck, growth, published = FC_DENSENETS[name]
    model = _meta(name, num_classes=11)
    trainable = _n_params(model)
    assert trainable == _tiramisu_params(down, bottleneck, growth)
    # the authors' code counts every parameter array, Lasagne's BN running mean / inv-std included
    counted = trainable + _bn_stats(model)
    assert counted == _tiramisu_params(down, bottleneck, growth, per_bn_channel=4)
    # Table 2's 1.5M for FC-DenseNet56 is not reproducible from its stated architecture (1.40M;
    # SimJeg/FC-DenseNet#31 finds the same); 67 and 103 match to 0.1M.
    expected = 1.4 if name == "fc_densenet56" else published
    assert round(counted / 1e6, 1) == expected


@pytest.mark.parametrize("name", sorted(FC_DENSENETS))
def test_fc_densenet_name_counts_its_conv_layers(name):
    """'103 layers': first conv + dense layers + transitions down and up + classifier."""
    model = _meta(name)
    assert sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules()) == int(name[len("fc_densenet"):])


def test_fc_densenet103_feature_maps_follow_table2():
    model: FCDenseNet = _meta("fc_densenet103")
    # Table 2: m = 112, 192, 304, 464, 656 after the down blocks, 896 after the bottleneck (input + 240)
    assert [b.out_channels for b in model.down_blocks] == [112, 192, 304, 464, 656]
    assert model.bottleneck.out_channels == 896
    # transition up reads only the new maps of the block below (growth x layers), not its input
    assert [t.up.in_channels for t in model.transitions_up] == [240, 192, 160, 112, 80]
    assert [b.out_channels for b in model.up_blocks] == [1088, 816, 576, 384, 256]
    assert model.classifier.in_channels == 256
    # a dense layer l of a block reads the block input plus the l-1 earlier outputs
    first = model.down_blocks[0]
    assert [layer[0].num_features for layer in first.layers] == [48, 64, 80, 96]
    assert isinstance(first.layers[0][2], nn.Conv2d) and first.layers[0][3].p == pytest.approx(0.2)


def test_center_fit_crops_and_pads_centrally():
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    assert torch.equal(center_fit(x, (4, 7)), x[..., :4, :])  # 2n+1 -> 2n keeps the top-left
    assert torch.equal(center_fit(x, (3, 5)), x[..., 1:4, 1:6])
    padded = center_fit(x, (7, 8))
    assert padded.shape[-2:] == (7, 8)
    assert torch.equal(padded[..., 1:6, 0:7], x) and padded.sum() == x.sum()


def test_fc_densenet_transition_up_sizes_on_odd_inputs():
    """75x101 pools to 37x50, 18x25, 9x12; 3x3/2 transposed convs give 2n+1 and crop to the skip."""
    model = create_model("test_fc_densenet").eval()
    sizes = []
    hooks = [t.up.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
             for t in model.transitions_up]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 75, 101))["logits"]
    for h in hooks:
        h.remove()
    assert sizes == [(19, 25), (37, 51), (75, 101)]
    assert out.shape == (1, 5, 75, 101)


def test_fc_densenet_batch_norms_are_pre_activation_and_survive_folding():
    """BN -> ReLU -> conv cannot fold into a conv: the fold pass leaves them (exact) in the graph."""
    from edgeseg.export import fold_conv_bn

    torch.manual_seed(0)
    model = create_model("test_fc_densenet").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = fold_conv_bn(model)
    x = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        assert torch.allclose(folded(x)["logits"], model(x)["logits"], atol=1e-6)
    assert folded.folded_conv_bn == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 12 + 3  # dense layers + transitions down


# ------------------------------------------------------------------ UNet++ (Zhou et al. 2018)

def _unetpp_params(f=PAPER_WIDTHS, classes: int = 1) -> tuple[int, int]:
    """(trainable, after Conv-BN folding) for the paper's backbone with deep supervision."""
    def double(cin: int, cout: int) -> int:
        return 9 * cin * cout + 9 * cout * cout  # two bias-free 3x3 convs
    convs = sum(double(cin, cout) for cin, cout in zip((3,) + f[:-1], f))
    n_bn = 2 * len(f)
    for j in range(1, 5):
        for i in range(5 - j):
            convs += 4 * f[i + 1] * f[i] + f[i] + double((j + 1) * f[i], f[i])  # 2x2 up-conv + H
            n_bn += 2
    heads = 4 * (f[0] * classes + classes)
    bn_channels = 2 * sum(f) + 2 * sum(f[i] for j in range(1, 5) for i in range(5 - j))
    assert n_bn == 30
    return convs + heads + 2 * bn_channels, convs + heads + bn_channels  # BN: scale+shift / one bias


def test_unetpp_parameters_match_table1():
    from edgeseg.export import fold_conv_bn

    model = create_model("unetpp", num_classes=1)
    trainable, deployed = _unetpp_params()
    assert _n_params(model) == trainable == 9_045_924
    # folded for deployment, it is the Keras network (biased convs, no BN): Table 1's 9.04M exactly
    assert _n_params(fold_conv_bn(model)) == deployed == 9_042_276
    assert round(deployed / 1e6, 2) == 9.04


def test_unetpp_nested_grid_widths():
    model: UNetPlusPlus = _meta("unetpp", num_classes=1)
    expected = {f"x{i}_{j}" for j in range(1, 5) for i in range(5 - j)}
    assert set(model.nodes) == set(model.ups) == expected and len(expected) == 10
    for key in expected:
        i, j = map(int, key[1:].split("_"))
        # H reads X^{i,0..j-1} and Up(X^{i+1,j-1}): (j + 1) * f_i channels, writes f_i
        assert model.nodes[key][0][0].in_channels == (j + 1) * PAPER_WIDTHS[i]
        assert model.nodes[key][1][0].out_channels == PAPER_WIDTHS[i]
        assert model.ups[key].in_channels == PAPER_WIDTHS[i + 1] and model.ups[key].stride == (2, 2)
    assert len(model.heads) == 4 and all(h.kernel_size == (1, 1) for h in model.heads)


def test_unetpp_on_an_encoder_reads_its_declarations():
    model: UNetPlusPlus = _meta("unetpp_resnet18", num_classes=3)
    enc = model.encoder.out_channels
    assert enc == (64, 64, 128, 256, 512) and model.encoder.reductions == (2, 4, 8, 16, 32)
    assert model.ups["x3_1"].in_channels == 512 and model.nodes["x3_1"][0][0].in_channels == 256 + 256
    assert model.nodes["x0_4"][0][0].in_channels == 64 + 4 * 64
    model = create_model("test_unetpp_resnet").eval()
    with torch.no_grad():
        heads = model.forward_heads(torch.randn(1, 3, 75, 101))
    assert [h.shape[-2:] for h in heads] == [(38, 51)] * 4  # stride 2 (ResNet stem), cropped to the skip


def test_unetpp_deep_supervision_weights_every_head_equally():
    from edgeseg.train.loop import auxiliary_loss, logits_of

    torch.manual_seed(0)
    model = create_model("test_unetpp", num_classes=3).train()
    images, target = torch.randn(2, 3, 32, 48), torch.randint(0, 3, (2, 32, 48))
    out = model(images)
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 3
    heads = [*out["aux_logits"], out["logits"]]
    assert all(h.shape == (2, 3, 32, 48) for h in heads)  # the paper's backbone: full resolution
    total = F.cross_entropy(logits_of(out, (32, 48)), target) + auxiliary_loss(model, out, F.cross_entropy, target)
    per_head = [F.cross_entropy(h, target) for h in heads]
    assert model.aux_weight == 3.0
    assert float(total.detach()) == pytest.approx(float(sum(per_head).detach()), rel=1e-6)  # 4 x the paper's mean
    with torch.no_grad():
        assert set(model.eval()(images)) == {"logits"}


def _called_layers(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(convolutions run, convolutions held) in one eval forward."""
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    ran: set[int] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: ran.add(id(m))) for m in convs]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return len(ran), len(convs)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_unetpp_pruned_equals_the_full_models_head(level):
    torch.manual_seed(0)
    full = create_model("test_unetpp").eval()
    pruned = copy.deepcopy(full).prune(level)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        expected = full.forward_heads(x)[level - 1]
        got = pruned(x)["logits"]
    assert torch.equal(got, expected)  # same ops on the same weights: bit-identical
    assert pruned.level == level and len(pruned.nodes) == level * (level + 1) // 2
    assert len(pruned.encoder.stages) == level + 1 and len(pruned.heads) == level
    assert _n_params(pruned) < _n_params(full)
    # every conv it keeps runs, except the training-only supervision heads 1..level-1
    ran, held = _called_layers(pruned, x[:1])
    assert held - ran == level - 1
    assert ran == 2 * (level + 1) + 3 * len(pruned.nodes) + 1  # backbone, (H + up-conv) per node, head


def test_unetpp_prune_validates_the_level():
    model = create_model("test_unetpp")
    for bad in (0, 5):
        with pytest.raises(ModelError):
            model.prune(bad)
    model.prune(2)
    with pytest.raises(ModelError):
        model.prune(3)  # cannot grow back
    rebuilt = create_model("test_unetpp", **model.model_kwargs)  # what a checkpoint rebuilds
    rebuilt.load_state_dict(model.state_dict())  # strict: the same sub-network
    with pytest.raises(ModelError):
        create_model("test_unetpp", deep_supervision=False).prune(2)
    assert create_model("test_unetpp", level=2).level == 2


def _onnx_ops(model: nn.Module, path) -> dict[str, int]:
    import collections

    import onnx

    from edgeseg.export import export_onnx
    from edgeseg.structures import ImageShape, InputSpec

    export_onnx(model, path, InputSpec(size=ImageShape(36, 52)))
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_unetpp", "test_unetpp_resnet"])
def test_unetpp_pruned_onnx_graph_has_only_the_subnetwork(name, tmp_path):
    full = create_model(name).eval()
    counts = []
    for level in (4, 3, 2, 1):
        ops = _onnx_ops(copy.deepcopy(full).prune(level), tmp_path / f"l{level}.onnx")
        nodes = level * (level + 1) // 2
        assert ops["ConvTranspose"] == nodes
        # backbone convs up to level `level` (unused encoder stages are dead code, removed), 2 per node, 1 head
        backbone = 2 * (level + 1) if name == "test_unetpp" else 3 * level  # stem + 2 convs, then 2 + shortcut per stage
        assert ops["Conv"] == backbone + 2 * nodes + 1
        assert "Pad" not in ops  # odd sizes pad by Concat with zeros: the graph converts to opset 17
        counts.append(sum(ops.values()))
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == 4
