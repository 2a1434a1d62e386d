"""DeconvNet and LinkNet: parameter counts against the papers, the layer tables they publish, the
index-free max-unpooling against PyTorch's pooling indices (ties and odd sizes included), the crops
that let LinkNet take odd sizes, and exports that TensorRT parses. The shared tester
(test_models.py) runs forward, Conv-BN folding and ONNX Runtime parity on every variant."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models import create_encoder, create_model, list_models, model_info
from edgeseg.models.deconvnet import DeconvNet, max_pool_with_switches, unpool_with_switches
from edgeseg.models.linknet import crop_to
from edgeseg.structures import ImageShape, InputSpec

from .tester import randomize_batchnorm


def _meta(name: str, num_classes: int) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_variants():
    assert list_models("deconvnet*") == ["deconvnet_vgg16"]
    assert list_models("linknet*") == ["linknet_mobilenetv2", "linknet_resnet18"]
    for name, arch in (("test_deconvnet", "deconvnet"), ("test_linknet", "linknet")):
        assert model_info(name).tiny and model_info(name).arch == arch


# ---- index-free max pooling / unpooling -------------------------------------------------------------
def test_switches_hand_case():
    x = torch.tensor([[[[1.0, 3.0, 0.0, 0.0, 9.0],
                        [3.0, 2.0, 0.0, 0.0, 9.0],
                        [5.0, 5.0, 7.0, 1.0, 9.0]]]])  # 3x5: the last row and column are dropped
    pooled, switches = max_pool_with_switches(x)
    assert pooled.tolist() == [[[[3.0, 0.0]]]]
    # window (0, 0): 3 at (0, 1) and (1, 0), the first in row-major order wins; window (0, 1): all zero -> (0, 0)
    assert switches[0, 0, :, 0].T.tolist() == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    up = unpool_with_switches(torch.tensor([[[[10.0, 20.0]]]]), switches, (3, 5))
    assert up.tolist() == [[[[0.0, 10.0, 20.0, 0.0, 0.0], [0.0] * 5, [0.0] * 5]]]


def test_switches_treat_values_within_one_percent_as_ties():
    """A runtime that rounds differently cannot move a value: 0.995 ties with 1.0 (the first wins),
    0.98 does not."""
    x = torch.tensor([[[[0.995, 1.0, 0.98, 1.0], [0.0, 0.5, 0.0, 0.5]]]])
    _, switches = max_pool_with_switches(x)
    assert switches[0, 0, :, 0].T.tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("size", [(8, 12), (7, 9)])
def test_switches_equal_max_pool_indices_and_max_unpool(size):
    g = torch.Generator().manual_seed(0)
    x = F.relu(torch.randint(-2, 3, (2, 3, *size), generator=g).float())  # exact ties or gaps >= 1: PyTorch's indices
    pooled, switches = max_pool_with_switches(x)
    ref, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(pooled, ref)
    assert torch.equal(switches.sum(2), torch.ones_like(ref))  # one-hot per window
    values = torch.randn(ref.shape, generator=g)
    got = unpool_with_switches(values, switches, size)
    assert torch.equal(got, F.max_unpool2d(values, indices, 2, 2, output_size=size))


# ---- DeconvNet ----------------------------------------------------------------------------------------
# 21 classes, bias-free convs before BN (the paper states 252M):
#   VGG-16-BN convs                  14,718,912  (torchvision's 14,723,136 less its 4,224 biases)
#   fc6   7x7 512->4096 + BN        102,768,640  (102,760,448 + 8,192)
#   fc7   1x1 4096->4096 + BN        16,785,408  (16,777,216 + 8,192)
#   deconv-fc6 7x7 4096->512 + BN   102,761,472  (102,760,448 + 1,024)
#   13 3x3 deconvs + BN              14,753,152  (stage 5: 7,080,960; 4: 5,900,800; 3: 1,475,840; 2: 221,568; 1: 73,984)
#   classifier 1x1 64->21 + bias          1,365
DECONVNET_21 = 251_788_949
# deconv widths in Table 1 of the paper: deconv5-1..3, 4-1..3, 3-1..3, 2-1..2, 1-1..2
DECONV_WIDTHS = [512, 512, 512, 512, 512, 256, 256, 256, 128, 128, 64, 64, 64]


def test_deconvnet_parameter_count_matches_the_paper():
    model = _meta("deconvnet_vgg16", 21)
    assert _params(model) == DECONVNET_21
    assert round(DECONVNET_21 / 1e6) == 252
    assert _params(model.fc) == 102_768_640 + 16_785_408 and _params(model.deconv_fc6) == 102_761_472
    assert _params(model.decoder) == 14_753_152


def test_deconvnet_layers_follow_table_1():
    model = _meta("deconvnet_vgg16", 21)
    fc6, fc7 = model.fc[0][0], model.fc[1][0]
    assert (fc6.in_channels, fc6.out_channels, fc6.kernel_size, fc6.padding) == (512, 4096, (7, 7), (3, 3))
    assert (fc7.in_channels, fc7.out_channels, fc7.kernel_size) == (4096, 4096, (1, 1))
    deconv6 = model.deconv_fc6[0]
    assert isinstance(deconv6, nn.ConvTranspose2d)
    assert (deconv6.in_channels, deconv6.out_channels) == (4096, 512)
    assert deconv6.kernel_size == (7, 7) and deconv6.padding == (3, 3)
    deconvs = [m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in deconvs] == DECONV_WIDTHS
    assert all(m.kernel_size == (3, 3) and m.stride == (1, 1) for m in deconvs)
    n_convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_convs == n_bn + 1  # BN after every layer but the classifier
    assert model.classifier.kernel_size == (1, 1) and model.classifier.out_channels == 21


def test_deconvnet_unpools_back_to_the_sizes_of_table_1():
    """224x224 input: pool5 is 7x7, and unpool5..unpool1 restore 14, 28, 56, 112, 224 (Table 1)."""
    model = create_model("test_deconvnet", num_classes=3).eval()
    sizes: list[tuple[int, int]] = []
    hooks = [model.deconv_fc6.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))]
    hooks += [s.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:]))) for s in model.decoder]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))["logits"]
    for h in hooks:
        h.remove()
    assert sizes == [(7, 7), (14, 14), (28, 28), (56, 56), (112, 112), (224, 224)]
    assert out.shape == (1, 3, 224, 224)


def test_deconvnet_needs_a_vgg_encoder_at_stride_32():
    with pytest.raises(ModelError, match="VGG encoder"):
        DeconvNet(create_encoder("test_resnet"), 3)
    with pytest.raises(ModelError, match="output stride 32"):
        DeconvNet(create_encoder("test_vgg_bn", output_stride=16), 3)


# ---- LinkNet ------------------------------------------------------------------------------------------
# 11 classes (CamVid; the paper states 11.5M):
#   ResNet-18 encoder                11,176,512  (torchvision's 11,689,512 less fc)
#   decoder blocks 4..1                 328,896  (246,784 + 61,952 + 15,616 + 4,544)
#   full conv 3x3 64->32 + BN            18,496
#   conv 3x3 32->32 + BN                  9,280
#   full conv 2x2 32->11 + bias           1,419
# e-lab's reference implementation has 11,534,667: 64 more, the biases of the two convs before BN.
LINKNET_11 = 11_534_603
# (m, n) of decoder blocks 1..4, Table 1 of the paper; stride 1 for block 1 (ResNet's layer1 keeps the size)
LINKNET_DECODER = [(64, 64), (128, 64), (256, 128), (512, 256)]


def test_linknet_parameter_count_matches_the_paper():
    model = _meta("linknet_resnet18", 11)
    assert _params(model) == LINKNET_11
    assert round(LINKNET_11 / 1e5) == 115
    assert _params(model.encoder) == 11_176_512
    assert [_params(b) for b in model.decoder] == [4_544, 15_616, 61_952, 246_784]


@pytest.mark.parametrize("name, blocks", [
    ("linknet_resnet18", LINKNET_DECODER),
    ("linknet_mobilenetv2", [(24, 16), (32, 24), (96, 32), (320, 96)]),
])
def test_linknet_blocks_follow_table_1(name, blocks):
    model = _meta(name, 11)
    for block, (m, n), stride in zip(model.decoder, blocks, (1, 2, 2, 2)):
        reduce, full, expand = (b[0] for b in block)
        assert (reduce.in_channels, reduce.out_channels, reduce.kernel_size) == (m, m // 4, (1, 1))
        assert isinstance(full, nn.ConvTranspose2d) and full.kernel_size == (3, 3) and full.stride == (stride, stride)
        assert (full.in_channels, full.out_channels) == (m // 4, m // 4)
        assert (expand.in_channels, expand.out_channels, expand.kernel_size) == (m // 4, n, (1, 1))
    up1, conv, up2 = model.final[0][0], model.final[1][0], model.final[2]
    assert (up1.in_channels, up1.out_channels, up1.kernel_size, up1.stride) == (blocks[0][1], 32, (3, 3), (2, 2))
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (32, 32, (3, 3))
    assert (up2.in_channels, up2.out_channels, up2.kernel_size, up2.stride) == (32, 11, (2, 2), (2, 2))


def test_crop_keeps_the_top_left():
    x = torch.arange(24.0).reshape(1, 1, 4, 6)
    assert crop_to(x, (3, 5)).tolist() == [[[[0.0, 1, 2, 3, 4], [6, 7, 8, 9, 10], [12, 13, 14, 15, 16]]]]
    assert crop_to(x, (4, 6)) is x


def test_linknet_crops_full_conv_outputs_at_odd_sizes():
    """75x101 through ResNet: links at 19x26 (stem 38x51 pooled), 19x26, 10x13, 5x7; deepest 3x4. Each
    full conv doubles its input, one more than an odd link; the final block gives 76x104 -> 75x101."""
    model = randomize_batchnorm(create_model("test_linknet", num_classes=3))
    sizes: dict[str, tuple[int, int]] = {}
    for i, block in enumerate(model.decoder):
        block.register_forward_hook(lambda m, a, o, i=i: sizes.__setitem__(f"decoder{i + 1}", tuple(o.shape[-2:])))
    model.final.register_forward_hook(lambda m, a, o: sizes.__setitem__("final", tuple(o.shape[-2:])))
    x = torch.randn(1, 3, 75, 101, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)["logits"]
    assert sizes == {"decoder4": (6, 8), "decoder3": (10, 14), "decoder2": (20, 26), "decoder1": (19, 26),
                     "final": (76, 104)}
    assert out.shape == (1, 3, 75, 101)


# ---- export: TensorRT parses DeconvNet's unpooling ----------------------------------------------------
def test_deconvnet_export_parses_in_tensorrt(tmp_path):
    """No MaxPool indices, no MaxUnpool, no Pad (opset 17 for TensorRT 8.5): both versions parse it."""
    onnx = pytest.importorskip("onnx")
    from edgeseg.export import export_onnx, fold_conv_bn
    from edgeseg.quant.check import check_model

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("test_deconvnet", num_classes=3))
    path = export_onnx(model, tmp_path / "m.onnx", InputSpec(size=ImageShape(60, 84)), opset=17)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"MaxUnpool", "Pad"} and onnx.load(str(path)).opset_import[0].version == 17
    for target in ("tensorrt-8.5", "tensorrt-10.3"):
        report = check_model(path, target)
        assert report.ok, report.format()
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(1, 3, 60, 84, generator=torch.Generator().manual_seed(3))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = fold_conv_bn(model)(x)["logits"].numpy()
    assert abs(got - ref).max() <= 1e-4 * abs(ref).max()


# ---- SegNet with the same index-free unpooling (edgeseg export --unpool switches) -----------------------------
def test_segnet_switches_give_the_indices_numbers_and_parse_in_tensorrt(tmp_path, capsys):
    """before: a SegNet could not be deployed on TensorRT at all (MaxPool indices, MaxUnpool: `check` said so and had
    no export to offer). Now --unpool switches writes an index-free graph with the same weights: edgeseg's TensorRT 8.5
    and 10.3 op rules pass it, and in PyTorch it computes exactly what the indices model computes."""
    onnx = pytest.importorskip("onnx")
    from edgeseg.cli import main
    from edgeseg.models import save_checkpoint
    from edgeseg.quant.check import check_model

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("test_segnet", num_classes=3)).eval()
    switches = create_model("test_segnet", num_classes=3, unpool="switches").eval()  # built so, not patched
    switches.load_state_dict(model.state_dict())  # the same weights: the form has none of its own
    for size in ((60, 84), (61, 83)):  # odd sizes: the dropped row/column comes back as zeros in both forms
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            ref, got = model(x)["logits"], switches(x)["logits"]
        assert torch.equal(got, ref)  # exact ties to the first position, as PyTorch's indices: the same numbers
    ckpt = save_checkpoint(model, tmp_path / "segnet.safetensors", model_name="test_segnet", num_classes=3,
                           extra={"input_spec": InputSpec(size=ImageShape(60, 84)).to_dict()})
    out = tmp_path / "trt.edgeseg"
    assert main(["export", str(ckpt), "--unpool", "switches", "--opset", "17", "--out", str(out)]) == 0
    graph = onnx.load(str(out / "model.onnx")).graph
    assert not {n.op_type for n in graph.node} & {"MaxUnpool", "ScatterElements"}
    assert all(len(n.output) == 1 for n in graph.node if n.op_type == "MaxPool")
    for target in ("tensorrt-8.5", "tensorrt-10.3"):
        report = check_model(out / "model.onnx", target)
        assert report.ok, report.format()
    plain = tmp_path / "plain.edgeseg"
    assert main(["export", str(ckpt), "--out", str(plain)]) == 0  # the default keeps the indices, which check names
    report = check_model(plain / "model.onnx", "tensorrt-10.3")
    assert not report.ok and "--unpool switches" in report.format()
    assert main(["export", "test_deconvnet", "--num-classes", "3", "--unpool", "switches", "--out",
                 str(tmp_path / "x.edgeseg")]) == 2
    assert "--unpool applies to SegNet" in capsys.readouterr().err
