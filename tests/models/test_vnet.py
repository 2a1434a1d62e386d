"""V-Net (Milletari et al., 3DV 2016): the layout and shapes of the paper's Fig. 2, the parameter
count derived from it, a functional re-implementation of the forward pass, the Dice loss of eq. 1-2,
ONNX export in ONNX Runtime, checkpoints and registration as a volumetric model."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from edgeseg.errors import InputError  # noqa: E402
from edgeseg.models import create_model, list_models, load_checkpoint, model_info, save_checkpoint  # noqa: E402
from edgeseg.models.vnet import VNet, dice_coefficient, dice_loss  # noqa: E402

WIDTHS = (16, 32, 64, 128, 256)
LEFT, RIGHT = (1, 2, 3, 3, 3), (3, 3, 2, 1)  # convolutions per stage; right listed coarse to fine


def _tiny(num_classes=3, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = create_model("test_vnet", num_classes=num_classes).to(dtype).eval()
    with torch.no_grad():  # PReLU slopes other than the initial 0.25, as after training
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(-0.3, 0.6)
    return model


# ---------------------------------------------------------------------------------------------- the paper
def test_layout_of_fig_2():
    with torch.device("meta"):
        model = create_model("vnet")
    convs5 = [[m for m in stage.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (5, 5, 5)]
              for stage in [*model.left, *model.right]]
    assert [len(c) for c in convs5] == [*LEFT, *RIGHT]
    assert [c[-1].out_channels for c in convs5] == [*WIDTHS, 256, 128, 64, 32]
    assert all(c.padding == (2, 2, 2) for stage in convs5 for c in stage)
    assert all(d[0].kernel_size == (2, 2, 2) and d[0].stride == (2, 2, 2) for d in model.down)
    ups = [u.up[0] for u in model.right]
    assert all(isinstance(u, nn.ConvTranspose3d) and u.kernel_size == (2, 2, 2) and u.stride == (2, 2, 2) for u in ups)
    assert [(u.in_channels, u.out_channels) for u in ups] == [(256, 128), (256, 64), (128, 32), (64, 16)]
    assert model.classifier.kernel_size == (1, 1, 1) and model.classifier.out_channels == 2
    # every convolution (5^3, down, up) is followed by a PReLU, and there is no normalisation layer
    n_conv = sum(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in model.modules())
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == n_conv - 1  # all but the classifier
    assert not any(isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d, nn.GroupNorm)) for m in model.modules())


def test_feature_shapes_of_fig_2():
    # the paper's 128x128x64 input: stages at 128x128x64x16 ... 8x8x4x256 and back up to 128x128x64x32
    with torch.device("meta"):
        model = create_model("vnet")
        shapes = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
                 for m in [*model.left, *model.right, model.classifier]]
        model(torch.empty(1, 1, 64, 128, 128))
    for h in hooks:
        h.remove()
    sizes = [(64 // 2 ** i, 128 // 2 ** i, 128 // 2 ** i) for i in range(5)]
    assert shapes == [(c, *s) for c, s in zip(WIDTHS, sizes)] + \
        [(256, *sizes[3]), (128, *sizes[2]), (64, *sizes[1]), (32, *sizes[0]), (2, *sizes[0])]


def _count(num_classes: int, in_channels: int = 1, w=WIDTHS, kernel: int = 5) -> int:
    """Parameters of V-Net from the layout alone (weights + biases + one PReLU slope per channel)."""
    def conv(cin, cout, k):
        return cin * cout * k ** 3 + cout

    total = conv(in_channels, w[0], kernel) + w[0] + (LEFT[0] - 1) * (conv(w[0], w[0], kernel) + w[0])
    for i in range(1, 5):
        total += conv(w[i - 1], w[i], 2) + w[i]  # the stride-2 down-convolution
        total += LEFT[i] * (conv(w[i], w[i], kernel) + w[i])
    for s, n in zip((3, 2, 1, 0), RIGHT):
        cin = w[4] if s == 3 else 2 * w[s + 1]
        total += conv(cin, w[s], 2) + w[s]  # the transposed up-convolution to half the stage's channels
        total += n * (conv(2 * w[s], 2 * w[s], kernel) + 2 * w[s])
    return total + conv(2 * w[0], num_classes, 1)


def test_parameter_count_as_documented():
    with torch.device("meta"):
        big, tiny = create_model("vnet"), create_model("test_vnet")
    assert sum(p.numel() for p in big.parameters()) == _count(2) == 65_175_314
    assert sum(p.numel() for p in tiny.parameters()) == _count(2, w=(2, 4, 8, 16, 32)) == 1_019_348
    assert 6 * 256 * 256 * 125 == 49_152_000  # the six 256-channel 5x5x5 convolutions of the docstring


# ------------------------------------------------------------------------------------- a direct forward
def _stage(x, convs, skip):
    for conv, act in convs:
        x = F.prelu(F.conv3d(x, conv.weight, conv.bias, padding=conv.padding), act.weight)
    return x + skip


def _reference_forward(model: VNet, x):
    """The forward pass of Fig. 2 written with torch.nn.functional from the model's weights."""
    layers = lambda stage: [(seq[0], seq[1]) for seq in stage.convs]  # noqa: E731
    feats = [_stage(x, layers(model.left[0]), x.expand(-1, model.left[0].convs[0][0].out_channels, -1, -1, -1))]
    for down, stage in zip(model.down, model.left[1:]):
        h = F.prelu(F.conv3d(feats[-1], down[0].weight, down[0].bias, stride=2), down[1].weight)
        feats.append(_stage(h, layers(stage), h))
    h = feats.pop()
    for up in model.right:
        u = F.prelu(F.conv_transpose3d(h, up.up[0].weight, up.up[0].bias, stride=2), up.up[1].weight)
        cat = torch.cat([u, feats.pop()], 1)
        h = _stage(cat, layers(up.stage), cat)
    return F.conv3d(h, model.classifier.weight, model.classifier.bias)


def test_forward_equals_the_functional_reference():
    model = _tiny(dtype=torch.float64)
    x = torch.randn(2, 1, 16, 16, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)["logits"]
        ref = _reference_forward(model, x)
    assert logits.shape == (2, 3, 16, 16, 32)
    torch.testing.assert_close(logits, ref, rtol=1e-12, atol=1e-12)
    assert float((logits[0] - logits[1]).abs().max()) > 1e-3 * float(logits.abs().max())  # no batch mixing


def test_bad_inputs_say_what_to_do():
    model = _tiny()
    with pytest.raises(InputError, match="multiple of 16"):
        model(torch.zeros(1, 1, 16, 16, 20))
    with pytest.raises(InputError, match=r"expected \[N, 1, D, H, W\]"):
        model(torch.zeros(1, 3, 16, 16))


# -------------------------------------------------------------------------------------------- Dice loss
def test_dice_coefficient_by_hand():
    p = torch.tensor([0.8, 0.2, 0.6, 0.0]).reshape(1, 1, 1, 2, 2)
    g = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 1, 2, 2)
    # sum(pg) = 1.4, sum(p^2) = 1.04, sum(g^2) = 2
    torch.testing.assert_close(dice_coefficient(p, g, eps=0.0), torch.tensor([[2.8 / 3.04]]))


def test_dice_gradient_is_eq_2_of_the_paper():
    g = torch.Generator().manual_seed(2)
    p = torch.rand(1, 1, 3, 4, 5, dtype=torch.float64, generator=g).requires_grad_(True)
    t = (torch.rand(1, 1, 3, 4, 5, dtype=torch.float64, generator=g) > 0.5).double()
    dice_coefficient(p, t, eps=0.0).sum().backward()
    spg, den = (p * t).sum().detach(), (p.square().sum() + t.square().sum()).detach()
    expected = 2 * (t * den - 2 * p.detach() * spg) / den ** 2  # dD/dp_j
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-12)


def test_dice_loss_two_classes_is_the_foreground_dice():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 4, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (2, 4, 4, 4), generator=g)
    fg = torch.softmax(logits, 1)[:, 1]
    t = (labels == 1).double()
    d = [2 * (fg[i] * t[i]).sum() / (fg[i].square().sum() + t[i].square().sum()) for i in range(2)]
    torch.testing.assert_close(dice_loss(logits, labels, eps=0.0), 1 - (d[0] + d[1]) / 2)
    perfect = F.one_hot(labels, 2).movedim(-1, 1).double() * 40 - 20
    assert float(dice_loss(perfect, labels)) < 1e-12
    assert float(dice_loss(-perfect, labels)) > 1 - 1e-6  # D = eps / (sum p^2 + sum g^2 + eps)
    assert dice_loss(logits, labels, include_background=True) != dice_loss(logits, labels)
    with pytest.raises(InputError, match="labels"):
        dice_loss(logits, labels[:, :2])


# ------------------------------------------------------------------------------------ export, registry
def test_onnx_export_runs_in_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from edgeseg.quant import trt_ops

    model = _tiny()
    x = torch.randn(1, 1, 16, 32, 16, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp_path / "vnet.onnx"), dynamo=True, opset_version=19, verbose=False,
                          input_names=["volumes"], output_names=["logits"])
    proto = onnx.load(str(tmp_path / "vnet.onnx"))
    kinds = {n.op_type for n in proto.graph.node}
    assert {"Conv", "ConvTranspose", "PRelu", "Concat", "Add"} <= kinds
    dims = {i.name: len(i.dims) for i in proto.graph.initializer}
    conv_weights = [n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    # 12 + 9 stage convs, 4 down, 4 up, the classifier; all with 3-D kernels
    assert len(conv_weights) == 30 and all(dims[w] == 5 for w in conv_weights)
    assert [k for k in sorted(kinds) if not trt_ops.supported(k, (8, 4))] == []
    session = ort.InferenceSession(str(tmp_path / "vnet.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"volumes": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x)["logits"].numpy()
    assert got.shape == (1, 3, 16, 32, 16) and float(ref.std()) > 1e-3
    np.testing.assert_allclose(got, ref, atol=1e-4 * float(np.abs(ref).max()), rtol=1e-4)


def test_checkpoint_round_trip(tmp_path):
    model = _tiny(num_classes=4)
    path = save_checkpoint(model, tmp_path / "vnet.safetensors", model_name="test_vnet", num_classes=4)
    loaded = load_checkpoint(path)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["logits"], model(x)["logits"], rtol=0, atol=0)


def test_registered_as_volumetric():
    info = model_info("vnet")
    assert (info.task, info.arch, info.tiny) == ("volumetric", "vnet", False)
    assert model_info("test_vnet").tiny and model_info("test_vnet").arch == "vnet"
    assert {"vnet", "test_vnet"} <= set(list_models()) and {"vnet", "test_vnet"} <= set(list_models(task="volumetric"))
    assert "vnet" not in list_models(task="semantic")  # the 2-D semantic tester does not run it


def test_export_cli_refuses_a_volumetric_model_with_a_reason(tmp_path, capsys):
    from edgeseg.cli import main

    assert main(["export", "test_vnet", "--out", str(tmp_path / "v.edgeseg")]) == 2
    err = capsys.readouterr().err
    assert "volumetric" in err and "fix:" in err and not (tmp_path / "v.edgeseg").exists()
