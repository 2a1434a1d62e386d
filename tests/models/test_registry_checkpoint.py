"""Registry behaviour and the checkpoint format (round trips and bad files)."""
from __future__ import annotations

import json

import pytest
import torch

from edgeseg.errors import ModelError
from edgeseg.models import create_model, list_models, load_checkpoint, model_info, read_checkpoint_meta, save_checkpoint


def test_list_models_patterns_and_task():
    names = list_models("deeplabv3plus_*")
    assert "deeplabv3plus_mobilenetv3_large" in names and all(n.startswith("deeplabv3plus_") for n in names)
    tasks = ("semantic", "instance", "panoptic", "volumetric")
    assert set().union(*(list_models(task=t) for t in tasks)) == set(list_models())
    for t in tasks:
        assert all(model_info(n).task == t for n in list_models(task=t))
    assert {"lpsnet_mobilenetv3_small", "panoptic_deeplab_mobilenetv3_small"} <= set(list_models(task="panoptic"))
    assert model_info("segnet_vgg16").arch == "segnet" and model_info("test_segnet").tiny


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ModelError, match="(?s)unknown model .pspnet_resnet5.*did you mean pspnet_resnet50"):
        create_model("pspnet_resnet5")
    with pytest.raises(ModelError) as e:  # a family's name: its members (it listed all 130 models)
        create_model("hrnet")
    assert e.value.fix == "did you mean hrnetv2_w18, hrnetv2_w18_small, hrnetv2_w48, fpn_hrnetv2_w18_small?"
    with pytest.raises(ModelError) as e:
        create_model("deeplab")
    assert e.value.fix.startswith("did you mean deeplabv1_vgg16, ") and "more)?" in e.value.fix


def test_bad_num_classes():
    with pytest.raises(ModelError, match="num_classes"):
        create_model("test_unet", num_classes=0)


def _small_model():
    torch.manual_seed(0)
    return create_model("test_fcn8s", num_classes=3).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_round_trip(tmp_path, suffix):
    model = _small_model()
    path = save_checkpoint(model, tmp_path / f"best{suffix}", model_name="test_fcn8s", num_classes=3,
                           extra={"classes": ["a", "b", "c"], "epoch": 7})
    meta = read_checkpoint_meta(path)
    assert (meta.model_name, meta.num_classes, meta.extra["classes"], meta.extra["epoch"]) == ("test_fcn8s", 3, ["a", "b", "c"], 7)
    loaded = load_checkpoint(path)
    assert loaded.model_name == "test_fcn8s" and not loaded.training
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["logits"], model(x)["logits"], rtol=0, atol=0)
    if suffix == ".pt":
        assert json.loads((tmp_path / "best.pt.json").read_text())["model_name"] == "test_fcn8s"


def test_checkpoint_keeps_model_kwargs(tmp_path):
    model = create_model("test_deeplabv3", num_classes=2, output_stride=8)
    path = save_checkpoint(model, tmp_path / "m.safetensors", model_name="test_deeplabv3", num_classes=2,
                           model_kwargs={"output_stride": 8})
    assert load_checkpoint(path).encoder.output_stride == 8


def test_bad_checkpoints(tmp_path):
    model = _small_model()
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(ModelError, match="corrupt.safetensors"):
        load_checkpoint(corrupt)
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ModelError, match="plain.pt.json"):
        load_checkpoint(plain)  # no metadata next to it
    wrong = save_checkpoint(model, tmp_path / "wrong.safetensors", model_name="test_fcn8s", num_classes=5)
    with pytest.raises(ModelError, match="do not fit.*shape mismatch"):
        load_checkpoint(wrong)
    unknown = save_checkpoint(model, tmp_path / "unknown.safetensors", model_name="fcn9s", num_classes=3)
    with pytest.raises(ModelError, match="unknown model 'fcn9s'"):
        load_checkpoint(unknown)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "obj": ModelError("x")}, path)  # weights_only refuses the object
    save_side = tmp_path / "evil.pt.json"
    save_side.write_text(json.dumps({"format": "edgeseg.checkpoint", "format_version": "1", "model_name": "test_unet",
                                     "num_classes": "2"}))
    with pytest.raises(ModelError, match="cannot read the weights"):
        load_checkpoint(path)


def test_models_cli_lists_every_registered_model(tmp_path):
    """``edgeseg models`` builds every variant on the meta device: semantic ones with 11 classes, the
    others with their own class layout (an LPSNet with 11 classes and no thing classes cannot be built)."""
    import json

    from edgeseg.cli import main

    out = tmp_path / "models.json"
    assert main(["models", "--tiny", "--json", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["models"]}
    assert set(rows) == set(list_models())
    assert {r["task"] for r in rows.values()} == {"semantic", "instance", "panoptic", "volumetric"}
    assert rows["lpsnet_mobilenetv3_small"]["params_M"] > 0
