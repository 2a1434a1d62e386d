"""``edgeseg train`` end to end on generated scenes: train, resume, export, and the recorded report."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main  # noqa: E402

DATA = "synthetic:16,size=64x48,seed=1"
BASE = ["train", "test_fcn8s", "--data", DATA, "--size", "64x48", "--batch", "8", "--lr", "0.2",
        "--loss", "ce+0.5*lovasz", "--threads", "1", "--no-progress", "--cache", "--warmup", "0.5"]


def test_cli_trains_and_resumes(tmp_path):
    out = tmp_path / "run"
    assert main([*BASE, "--epochs", "2", "--out", str(out), "--json", str(tmp_path / "a.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())["training"]
    assert a["epochs"] == 2 and len(a["history"]) == 2 and a["final"]["miou"] is not None
    assert (out / "last.pt").is_file() and (out / "model.safetensors").is_file()
    # resuming a finished run trains nothing more and reports the same history
    assert main([*BASE, "--epochs", "2", "--out", str(out), "--resume", "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())["training"]
    assert b["history"] == a["history"]


def test_cli_resume_on_other_data_or_settings_out_of_range_are_refused(tmp_path, capsys, caplog):
    """An audit: `--resume` with another --data at an epoch end went on (a 101-image run's best compared with an
    8-image set's mIoU); --momentum 2 and --weight-decay -1 trained without a word; --num-classes above the data's
    dropped the data's class names; a resume said nothing of where it went on."""
    out = tmp_path / "run"
    assert main([*BASE, "--epochs", "1", "--out", str(out)]) == 0
    other = [*BASE[:3], "synthetic:8,size=64x48,seed=1", *BASE[4:]]
    assert main([*other, "--epochs", "2", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "other settings than this command gives" in err and "train_images 16 then, 8 now" in err
    with caplog.at_level("INFO", logger="edgeseg.train.trainer"):
        assert main([*BASE, "--epochs", "2", "--out", str(out), "--resume"]) == 0  # the same data: goes on
    assert "at epoch 2 (of 2)" in caplog.text
    for flag, value, words in (("--momentum", "2", "momentum must be in [0, 1)"),
                               ("--weight-decay", "-1", "weight decay must be >= 0")):
        assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "x"), flag, value]) == 2
        assert words in capsys.readouterr().err
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "wide"), "--num-classes", "8", "--json",
                     str(tmp_path / "w.json")]) == 0
    from edgeseg.data.synthetic import CLASSES

    assert "outputs 6..7 are named class_6" in caplog.text
    per_class = json.loads((tmp_path / "w.json").read_text())["training"]["final"]["per_class_iou"]
    assert list(per_class) == [*CLASSES, "class_6", "class_7"]  # before: '0'..'7'


def test_cli_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "none"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "edgeseg train: error: --resume: no last.pt in" in err


def test_cli_rejects_bad_loss_and_size(tmp_path, capsys):
    assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "x"), "--loss", "ce+lovaz"]) == 2
    assert "unknown loss 'lovaz'" in capsys.readouterr().err
    assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "x"), "--size", "64by48"]) == 2
    assert "cannot read image size" in capsys.readouterr().err


@pytest.mark.slow
def test_export_records_training_and_onnx_accuracy(tmp_path):
    from edgeseg.bundle import Bundle

    out, bundle = tmp_path / "run", tmp_path / "shapes.edgeseg"
    assert main([*BASE, "--epochs", "2", "--out", str(out), "--export", str(bundle)]) == 0
    b = Bundle.open(bundle)  # verifies hashes
    assert b.manifest.classes == ("sky", "ground", "road", "circle", "rectangle", "triangle")
    report = b.report
    tr = report["training"]
    assert tr["model"] == "test_fcn8s" and tr["epochs"] == 2 and tr["command"].startswith("edgeseg ")
    assert tr["params"] == sum(p.numel() for p in __import__("edgeseg.models", fromlist=["x"]).create_model("test_fcn8s", num_classes=6).parameters())
    # the ONNX model scores what the PyTorch model scored on the same validation scenes
    assert report["accuracy"]["fp32"]["miou"] == pytest.approx(tr["final"]["miou"], abs=0.01)
    assert report["parity"]


def test_cli_init_starts_from_weights_with_a_fresh_schedule(tmp_path, capsys):
    """--init loads the weights (fine-tuning): with lr 1e-12 every learned tensor stays what the first run
    left; the record names the init file; weights of another model are refused, naming the mismatch."""
    from safetensors.torch import load_file

    first = tmp_path / "first"
    assert main([*BASE, "--epochs", "1", "--out", str(first)]) == 0
    init = first / "model.safetensors"
    second = tmp_path / "second"
    assert main([*BASE, "--epochs", "1", "--lr", "1e-12", "--crop", "48x32", "--init", str(init), "--out", str(second),
                 "--json", str(tmp_path / "b.json")]) == 0
    rec = json.loads((tmp_path / "b.json").read_text())["training"]
    assert rec["init"] == str(init) and rec["config"]["crop"] == "48x32"
    a, b = load_file(str(init)), load_file(str(second / "model.safetensors"))
    learned = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert learned and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-9) for k in learned)
    capsys.readouterr()
    other = [*BASE, "--epochs", "1", "--init", str(init), "--out", str(tmp_path / "x")]
    other[1] = "test_unet"
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "weights do not fit model 'test_unet'" in err and "model.safetensors" in err


def test_cli_crop_larger_than_size_and_missing_init_are_clear_errors(tmp_path, capsys):
    assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "a"), "--crop", "96x64"]) == 2
    assert "training crop 96x64 is larger than the network size 64x48" in capsys.readouterr().err
    assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "b"), "--init", str(tmp_path / "none.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "none.safetensors not found" in err and "model.safetensors" in err


def test_cli_trains_on_a_mixture(tmp_path):
    """``--data "2*A;B"`` trains on both sets (A twice per epoch), cached part by part; the record names the mixture."""
    mix = "2*synthetic:8,size=64x48,seed=1;synthetic:8,size=64x48,seed=2"
    args = [*BASE, "--epochs", "1", "--out", str(tmp_path / "run"), "--json", str(tmp_path / "m.json")]
    args[args.index(DATA)] = mix
    args += ["--val-data", DATA]
    assert main(args) == 0
    rec = json.loads((tmp_path / "m.json").read_text())["training"]
    assert rec["data"] == mix and rec["images"]["train"] == 24 and rec["steps"] == 3


def test_cli_init_of_a_wrapper_loads_its_backbone(tmp_path, caplog):
    """CRF-as-RNN trained as Zheng et al. do: the FCN first, then the CRF-RNN on top. ``--init`` with
    the backbone's own weights file loads them into ``model.backbone`` (with lr 1e-12 they come out
    as they went in) and the CRF's parameters start from their initial values (Potts compatibility);
    the CRF model's own weights file still loads into the whole model."""
    import logging

    from safetensors.torch import load_file

    first = tmp_path / "fcn"
    base = [*BASE, "--epochs", "1"]
    base[1] = "test_deeplabv3plus"
    assert main([*base, "--out", str(first)]) == 0
    init = first / "model.safetensors"
    crf = [*base, "--lr", "1e-12", "--init", str(init)]
    crf[1] = "test_crfasrnn"
    with caplog.at_level(logging.INFO, logger="edgeseg.train.job"):
        assert main([*crf, "--out", str(tmp_path / "crf")]) == 0
    assert "starting its backbone from the weights in" in caplog.text
    a, b = load_file(str(init)), load_file(str(tmp_path / "crf" / "model.safetensors"))
    learned = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert learned and all(torch.allclose(a[k], b["backbone." + k], rtol=0, atol=1e-9) for k in learned)
    assert torch.allclose(b["compatibility"], 1 - torch.eye(6), atol=1e-9)
    whole = [*crf]
    whole[whole.index(str(init))] = str(tmp_path / "crf" / "model.safetensors")
    assert main([*whole, "--out", str(tmp_path / "crf2")]) == 0


@pytest.mark.data
def test_panoptic_data_given_to_the_semantic_trainer_names_its_semantic_view(data_root):
    """An audit: "...is an instance dataset (CocoPanoptic)", the fix listing camvid:, folder:, synthetic: only."""
    from edgeseg.data.base import open_semantic_dataset
    from edgeseg.errors import DataError

    spec = f"coco-panoptic:{data_root}/cityscapes_panoptic/panoptic_val.json"
    with pytest.raises(DataError, match="is a panoptic dataset") as e:
        open_semantic_dataset(spec, "val", purpose="semantic training")
    assert e.value.fix.startswith(f"its semantic view: panoptic-semantic:{data_root}/cityscapes_panoptic/panoptic_val")
    assert len(open_semantic_dataset(e.value.fix.split()[3], "val")) == 224


def test_a_second_ctrl_c_before_any_checkpoint_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    """An audit: a double Ctrl-C before the first checkpoint printed only 'interrupted (SIGINT)'; the user tried
    --resume to learn there was no last.pt."""
    import edgeseg.train.job as job

    def stopped_at_once(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run_job", stopped_at_once)
    assert main([*BASE, "--epochs", "1", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint: nothing was saved" in err and "without --resume" in err


def test_cli_resume_on_another_list_of_as_many_images_is_refused(tmp_path, capsys):
    """An audit (session 50): `--resume` with `list=` files naming other images, as many as before, went on silently
    (only the counts were compared); the image names' fingerprint is compared now, names only (a moved dataset
    still resumes)."""
    import numpy as np

    from edgeseg.data.io import write_image, write_label

    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(tmp_path / "ds" / "img" / f"f{i}.png", rng.integers(0, 256, (48, 64, 3), np.uint8))
        write_label(tmp_path / "ds" / "mask" / f"f{i}.png", rng.integers(0, 3, (48, 64)).astype(np.uint8))
    for prefix, train in (("", "f0 f1 f2 f3"), ("b_", "f0 f1 f4 f5")):
        (tmp_path / "ds" / f"{prefix}train.txt").write_text(train.replace(" ", "\n") + "\n")
        (tmp_path / "ds" / f"{prefix}val.txt").write_text("f4\nf5\n")

    def args(prefix: str, root=tmp_path / "ds") -> list[str]:
        return ["train", "test_fcn8s", "--data", f"folder:{root}/img,{root}/mask,list={root}/{prefix}{{split}}.txt",
                "--size", "64x48", "--batch", "2", "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")]

    assert main([*args(""), "--epochs", "1"]) == 0
    assert main([*args("b_"), "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train_files '4 files, sha1" in err and "other settings than this command gives" in err
    (tmp_path / "ds").rename(tmp_path / "moved")
    assert main([*args("", tmp_path / "moved"), "--epochs", "2", "--resume"]) == 0
