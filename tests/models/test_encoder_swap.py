"""Any decoder on any encoder (issue 15: "HRNetV2 as an encoder for every decoder"):
``create_model(name, encoder=...)``, ``edgeseg train --encoder``, ``edgeseg models --encoder(s)``.

Every encoder-decoder architecture of the family is built on the tiny HRNet and on a MobileNetV3,
run, exported with ONNX Runtime parity and rebuilt from its checkpoint; the architectures whose
backbone is part of the design refuse with a clear error."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main  # noqa: E402
from edgeseg.errors import ModelError  # noqa: E402
from edgeseg.models import create_model, list_models, model_info  # noqa: E402
from edgeseg.models.encoders import create_encoder, encoder_output_strides, swapped_encoder  # noqa: E402
from edgeseg.models.encoders.hrnet import HRNetEncoder  # noqa: E402

from .tester import check_export, check_forward  # noqa: E402

# tiny variants whose backbone is the architecture (VGG switches, dense blocks, ViT, U-Net's own, V-Net)
FIXED = {"test_deconvnet": "needs a VGG encoder", "test_segnet": "needs a VGG encoder",
         "test_deeplabv1": "no replaceable encoder", "test_deeplabv1_bn": "no replaceable encoder",
         "test_fc_densenet": "no replaceable encoder", "test_unet": "no replaceable encoder",
         "test_unetpp": "no replaceable encoder", "test_vnet": "no replaceable encoder",
         "test_setr_naive": "no replaceable encoder", "test_setr_pup": "no replaceable encoder",
         "test_setr_mla": "no replaceable encoder"}
SEMANTIC = [n for n in list_models("test_*", task="semantic") if n not in FIXED]


def test_every_tiny_variant_is_classified():
    """A new architecture must land in one list or the other: built on HRNet, or refused clearly."""
    everything = set(list_models("test_*"))
    assert set(FIXED) <= everything
    assert len(SEMANTIC) >= 20  # danet, deeplabv2/3/3+, fcn*, fpn, gcu, glore, hrnetv2, jpu, lawin, linknet, ocr, psp, unet++, crf-rnn


@pytest.mark.parametrize("name", SEMANTIC)
def test_every_semantic_decoder_runs_on_hrnet(name):
    torch.manual_seed(0)
    model = create_model(name, encoder="test_hrnet").eval()
    encoders = [m for m in model.modules() if isinstance(m, HRNetEncoder)]
    assert len(encoders) == 1 and encoders[0].output_stride == 32
    assert model.model_kwargs["encoder"] == "test_hrnet"
    check_forward(model)


@pytest.mark.parametrize("name", ["test_mask_rcnn", "test_solov2", "test_panoptic_deeplab", "test_lpsnet"])
def test_instance_and_panoptic_heads_run_on_hrnet(name):
    torch.manual_seed(0)
    model = create_model(name, encoder="test_hrnet").eval()
    assert any(isinstance(m, HRNetEncoder) for m in model.modules())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out and all(torch.isfinite(v.float()).all() for v in out.values())


@pytest.mark.parametrize("name,needle", sorted(FIXED.items()))
def test_fixed_backbones_refuse_another_encoder_clearly(name, needle):
    with pytest.raises(ModelError, match=needle) as e:
        create_model(name, encoder="test_hrnet")
    assert "fix:" in str(e.value) or e.value.fix


@pytest.mark.parametrize("name", ["test_pspnet", "test_deeplabv3", "test_fpn", "test_ocr"])
def test_swapped_models_export_with_parity_and_rebuild_from_their_checkpoint(name, tmp_path):
    from edgeseg.models import load_checkpoint, save_checkpoint
    from tests.models.tester import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(name, encoder="test_hrnet", num_classes=4)).eval()
    check_export(model, tmp_path)
    path = save_checkpoint(model, tmp_path / "w.safetensors", model_name=name, num_classes=4,
                           model_kwargs=model.model_kwargs)
    again = load_checkpoint(path)
    assert any(isinstance(m, HRNetEncoder) for m in again.modules())
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], again(x)["logits"])


def test_dilated_decoders_keep_their_stride_on_an_encoder_that_has_it():
    """PSPNet asks for output stride 8: a MobileNetV3 gives it; HRNet, which has only 32, runs at 32."""
    assert encoder_output_strides("test_hrnet") == (32,) and encoder_output_strides("test_mobilenetv3") == (8, 16, 32)
    on_mobile = create_model("test_pspnet", encoder="test_mobilenetv3")
    on_hrnet = create_model("test_pspnet", encoder="test_hrnet")
    assert on_mobile.encoder.output_stride == 8 and on_hrnet.encoder.output_stride == 32


def test_the_asked_encoders_own_options_are_dropped():
    """DeepLabV3 builds ResNet with multi_grid; HRNet has no such option, so the swap drops it
    (in_channels, which every encoder takes, is kept)."""
    with swapped_encoder("test_hrnet") as swap:
        enc = create_encoder("test_resnet_bottleneck", output_stride=16, multi_grid=(1, 2, 4), in_channels=1)
    assert isinstance(enc, HRNetEncoder) and swap.built == 1
    with torch.no_grad():
        assert enc.eval()(torch.randn(1, 1, 64, 64))[-1].shape[-1] == 2
    # outside the block nothing is swapped
    assert not isinstance(create_encoder("test_resnet"), HRNetEncoder)


def test_unknown_encoder_names_the_closest():
    with pytest.raises(ModelError, match="unknown encoder 'hrnet_w18'") as e:
        create_model("test_pspnet", encoder="hrnet_w18")
    assert "hrnetv2_w18" in str(e.value)
    with pytest.raises(ModelError, match="encoder must be a registered encoder's name"):
        create_model("test_pspnet", encoder="")


def test_model_info_is_unchanged_by_a_swap():
    create_model("test_fpn", encoder="test_hrnet")
    assert model_info("test_fpn").encoder != "test_hrnet"


def test_cli_trains_a_decoder_on_hrnet_and_exports_it(tmp_path):
    from edgeseg.bundle import Bundle

    out, bundle = tmp_path / "run", tmp_path / "m.edgeseg"
    assert main(["train", "test_pspnet", "--encoder", "test_hrnet", "--data", "synthetic:8,size=64x48,seed=1",
                 "--size", "64x48", "--batch", "4", "--epochs", "1", "--threads", "1", "--no-progress", "--cache",
                 "--out", str(out), "--export", str(bundle), "--json", str(tmp_path / "t.json")]) == 0
    rec = json.loads((tmp_path / "t.json").read_text())["training"]
    assert rec["model"] == "test_pspnet" and rec["model_kwargs"] == {"encoder": "test_hrnet"}
    b = Bundle.open(bundle)
    assert b.report["training"]["model_kwargs"] == {"encoder": "test_hrnet"} and b.report["parity"]["passed"]
    # the run folder's weights rebuild on HRNet (what export, resume and --init read)
    from edgeseg.models import load_checkpoint

    assert any(isinstance(m, HRNetEncoder) for m in load_checkpoint(out / "model.safetensors").modules())


def test_cli_models_lists_encoders_and_models_on_one(tmp_path, capsys):
    assert main(["models", "--encoders", "--tiny", "--json", str(tmp_path / "e.json")]) == 0
    enc = {r["name"]: r for r in json.loads((tmp_path / "e.json").read_text())["encoders"]}
    assert enc["hrnetv2_w18_small"]["output_strides"] == "32" and enc["resnet18"]["output_strides"] == "8,16,32"
    assert enc["hrnetv2_w18_small"]["params_M"] == pytest.approx(3.861, abs=0.001)
    capsys.readouterr()
    assert main(["models", "test_*", "--encoder", "test_hrnet", "--json", str(tmp_path / "m.json")]) == 0
    doc = json.loads((tmp_path / "m.json").read_text())
    built = {r["name"] for r in doc["models"]}
    assert set(SEMANTIC) <= built and {r["name"] for r in doc["not_buildable"]} == set(FIXED)
    assert "not buildable on test_hrnet:" in capsys.readouterr().out
