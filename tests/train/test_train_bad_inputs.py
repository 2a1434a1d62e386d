"""``edgeseg train`` on a user's own folder of images and label PNGs, with bad or unusual input: an
``edgeseg train: error:`` line with a ``fix:`` (exit 2), never a traceback, and a run folder that already
holds a run is never replaced or damaged by a command that fails or was not asked to replace it.

Everything is made for real in tmp_path: 64x48 PNG images and index masks, run folders written by
earlier ``edgeseg train`` commands, a ``last.pt`` overwritten with garbage (no mocks)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edgeseg.cli import main  # noqa: E402

BASE = ["train", "test_fcn8s", "--size", "64x48", "--epochs", "1", "--batch", "2", "--threads", "1", "--no-progress"]


def folder_data(root, n=4, top=2) -> str:
    """n random 64x48 images with index masks holding ids 0..top; returns the folder spec."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "img" / f"f{i}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        lab = np.zeros((48, 64), np.uint8)
        lab[:, 20:] = 1
        lab[24:, :] = top
        cv2.imwrite(str(root / "lab" / f"f{i}.png"), lab)
    return f"folder:{root / 'img'},{root / 'lab'}"


def hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def run(argv, capsys) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_num_classes_fewer_than_the_labels_use_is_a_clear_error(tmp_path, capsys):
    """Before: IndexError 'Target 7 is out of bounds' from the loss, with a traceback."""
    data = folder_data(tmp_path / "d", top=7)  # ids 0, 1, 7: the folder reader counts 8 classes
    rc, err = run([*BASE, "--data", data, "--num-classes", "3", "--out", str(tmp_path / "run")], capsys)
    assert rc == 2
    assert "edgeseg train: error: --num-classes 3 is fewer than the 8 classes" in err and "fix:" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "last.pt").exists()


def test_a_fresh_run_into_another_runs_folder_is_refused_unless_overwrite(tmp_path, capsys):
    """Before: a second run (even of another model) silently replaced last.pt, the weights and history.json."""
    data = folder_data(tmp_path / "d")
    out = tmp_path / "run"
    assert main([*BASE, "--data", data, "--out", str(out)]) == 0
    before = hashes(out)
    other = [*BASE, "--data", data, "--out", str(out)]
    other[1] = "test_pspnet"
    rc, err = run(other, capsys)
    assert rc == 2
    assert f"--out {out} already holds a training run (last.pt)" in err and "--resume" in err and "--overwrite" in err
    assert hashes(out) == before
    assert main([*other, "--overwrite"]) == 0  # asked for: replaced
    assert hashes(out)["last.pt"] != before["last.pt"]


def test_resume_from_a_corrupt_or_empty_last_pt_is_a_clear_error(tmp_path, capsys):
    data = folder_data(tmp_path / "d")
    out = tmp_path / "run"
    assert main([*BASE, "--data", data, "--out", str(out)]) == 0
    for garbage in (np.random.default_rng(1).integers(0, 255, 3000, dtype=np.uint8).tobytes(), b""):
        (out / "last.pt").write_bytes(garbage)
        before = hashes(out)
        rc, err = run([*BASE, "--data", data, "--out", str(out), "--resume"], capsys)
        assert rc == 2
        assert "is not a readable training checkpoint: it is corrupt or truncated" in err and "fix:" in err
        assert "weights_only" not in err and "Traceback" not in err  # not torch's advice to unpickle it
        assert hashes(out) == before


def test_resume_with_another_model_names_the_runs_model(tmp_path, capsys):
    data = folder_data(tmp_path / "d")
    out = tmp_path / "run"
    assert main([*BASE, "--data", data, "--out", str(out)]) == 0
    before = hashes(out)
    other = [*BASE, "--data", data, "--out", str(out), "--resume"]
    other[1] = "test_pspnet"
    rc, err = run(other, capsys)
    assert rc == 2
    assert "written by a run of model 'test_fcn8s' with 3 classes; this run trains 'test_pspnet'" in err
    assert hashes(out) == before


def test_init_from_a_runs_last_pt(tmp_path, capsys):
    """Before: 'expected a plain state dict (name -> tensor), got dict' (no fix): a run interrupted before
    it wrote model.safetensors had only last.pt to fine-tune from."""
    data = folder_data(tmp_path / "d")
    assert main([*BASE, "--data", data, "--out", str(tmp_path / "a")]) == 0
    assert main([*BASE, "--data", data, "--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "last.pt"),
                 "--lr", "1e-12"]) == 0
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert torch.allclose(a["encoder.stages.0.0.weight"], b["encoder.stages.0.0.weight"], atol=1e-9)


def test_export_into_a_folder_that_is_not_a_bundle_is_refused_before_training(tmp_path, capsys):
    """Before: refused by the exporter after the whole training, naming --out instead of --export."""
    data = folder_data(tmp_path / "d")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    rc, err = run([*BASE, "--data", data, "--out", str(tmp_path / "run"), "--export", str(junk)], capsys)
    assert rc == 2
    assert f"--export {junk} is a non-empty folder that is not a bundle" in err and "fix:" in err
    assert not (tmp_path / "run" / "last.pt").exists() and (junk / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("out, words", [("/proc/edgeseg-run", "cannot create the folder /proc/edgeseg-run"),
                                        ("FILE/run", "is a file, not a folder")])
def test_an_out_or_json_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, out, words):
    """An audit (session 58): `--out /proc/x` trained a whole epoch, then failed writing its checkpoint ("No such file
    or directory: /proc/x/last.pt"); `--json /proc/x.json` failed after the whole training."""
    data = folder_data(tmp_path / "d")
    (tmp_path / "FILE").write_text("a file")
    rc, err = run([*BASE, "--data", data, "--out", out.replace("FILE", str(tmp_path / "FILE"))], capsys)
    assert rc == 2 and words in err and "--out a folder you can write to" in err, err
    assert "epoch" not in err
    rc, err = run([*BASE, "--data", data, "--out", str(tmp_path / "run"), "--json", "/proc/edgeseg.json"], capsys)
    assert rc == 2 and err.startswith("edgeseg train: error: --json: cannot write /proc/edgeseg.json"), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lr", ["nan", "-1", "0"])
def test_bad_learning_rate_is_refused_before_training(tmp_path, capsys, lr):
    data = folder_data(tmp_path / "d")
    rc, err = run([*BASE, "--data", data, "--out", str(tmp_path / "run"), "--lr", lr], capsys)
    assert rc == 2
    assert "learning rate must be a positive number" in err and "fix:" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("batch, n", [(1, 4), (4, 1)])
def test_a_batch_of_one_image_for_a_pooled_batchnorm_is_a_clear_error(tmp_path, capsys, batch, n):
    """--batch 1, or a one-image dataset: torch's 'Expected more than 1 value per channel when training' from the
    ASPP's pooled branch, with a traceback."""
    data = folder_data(tmp_path / "d", n=n)
    argv = [*BASE, "--data", data, "--out", str(tmp_path / "run")]
    argv[1], argv[argv.index("--batch") + 1] = "test_deeplabv3", str(batch)
    rc, err = run(argv, capsys)
    assert rc == 2 and "cannot train this model: a BatchNorm after its global pooling" in err, err
    assert "--batch 2 or more" in err and "Traceback" not in err


def test_class_name_file_one_line_short_warns_that_a_class_becomes_void(tmp_path, caplog):
    data = folder_data(tmp_path / "d")  # ids 0, 1, 2
    (tmp_path / "names.txt").write_text("road\nsky\n")
    with caplog.at_level("WARNING", logger="edgeseg.data.folder"):
        assert main([*BASE, "--data", f"{data},classes={tmp_path / 'names.txt'}", "--out", str(tmp_path / "run")]) == 0
    assert "holds class id(s) 2, at or above its 2 classes (road, sky): those pixels are void" in caplog.text


def test_a_stray_id_that_makes_classes_no_mask_holds_is_said(tmp_path, caplog):
    """Masks of ids 0..2 with one pixel of 40: a 41-class model, without a word."""
    from edgeseg.data import open_dataset

    spec = folder_data(tmp_path / "d")
    lab = cv2.imread(str(tmp_path / "d" / "lab" / "f0.png"), cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 40
    cv2.imwrite(str(tmp_path / "d" / "lab" / "f0.png"), lab)
    with caplog.at_level("WARNING", logger="edgeseg.data.folder"):
        assert len(open_dataset(spec).classes) == 41
    assert "hold class ids up to 40 but never 3-39: a 41-class model, 37 of its classes with no pixel" in caplog.text


def test_a_class_named_twice_is_refused_and_blank_lines_between_names_said(tmp_path, capsys, caplog):
    """A duplicate name trained 3 classes but kept 2 in history.json's per-class scores (one overwritten)."""
    data = folder_data(tmp_path / "d")  # ids 0, 1, 2
    (tmp_path / "dup.txt").write_text("road\nsky\nRoad\n")
    rc, err = run([*BASE, "--data", f"{data},classes={tmp_path / 'dup.txt'}", "--out", str(tmp_path / "run")], capsys)
    assert rc == 2 and "lists 'Road' twice (lines 1 and 3)" in err and not (tmp_path / "run" / "last.pt").exists()
    rc, err = run(["export", "test_fcn8s", "--classes", str(tmp_path / "dup.txt"), "--out", str(tmp_path / "b")], capsys)
    assert rc == 2 and "lists 'Road' twice" in err
    (tmp_path / "gap.txt").write_text("# names\nroad\n\nsky\n# vehicles\ncar\n\n")
    with caplog.at_level("WARNING", logger="edgeseg.data.folder"):
        assert main([*BASE, "--data", f"{data},classes={tmp_path / 'gap.txt'}", "--out", str(tmp_path / "run2")]) == 0
    assert "blank line(s) 3 between names are skipped" in caplog.text and "'class_1'" in caplog.text  # not line 5
    from edgeseg.data.folder import class_names_from_lines  # placeholders may repeat (torchvision's COCO list)

    assert class_names_from_lines(["person", "N/A", "car", "N/A"], tmp_path / "x") == ("person", "N/A", "car", "N/A")


@pytest.mark.parametrize("size", [["--size", "2x2"], ["--size", "64x48", "--crop", "2x2"]])
def test_a_size_the_model_cannot_run_at_is_a_clear_error(tmp_path, capsys, size):
    """Before: RuntimeError 'Output size is too small' from max_pool2d, with a traceback, at the first step."""
    data = folder_data(tmp_path / "d")
    argv = [a for a in BASE if a not in ("--size", "64x48")] + size
    rc, err = run([*argv, "--data", data, "--out", str(tmp_path / "run")], capsys)
    assert rc == 2
    assert "edgeseg train: error: model 'test_fcn8s' cannot run at 2x2 (WxH)" in err and "fix: give a larger --size" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("device, words", [
    ("gpu", "--device 'gpu' is not a training device"),  # before: torch's "Expected one of cpu, cuda, ..." after reading the data
    ("cuda:x", "--device 'cuda:x' is not a training device"),
    ("cuda:7", "torch finds no CUDA GPU"),  # this machine has none (a GPU machine: "torch sees N CUDA GPU(s)")
    ("mps", "torch finds no Apple GPU"),  # taken (it worked through torch.device before), then checked here
])
def test_a_device_that_is_not_one_is_refused_before_the_data_is_read(tmp_path, capsys, device, words):
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("an Apple GPU is here: mps is a training device")
    if device == "cuda:7" and torch.cuda.is_available():
        words = "numbered from 0" if torch.cuda.device_count() <= 7 else "never"
    rc, err = run([*BASE, "--data", str(tmp_path / "no-such-data"), "--device", device, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and words in err and "fix:" in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


def test_export_onto_an_existing_bundle_needs_overwrite_and_overwrite_clears_the_old_weights(tmp_path, capsys,
                                                                                              monkeypatch):
    """before: `--export X.edgeseg` silently replaced an existing bundle after training (`edgeseg export` refuses
    without --overwrite; tools/train_default.py exports to edgeseg/zoo/ by default), and an --overwrite run stopped
    early left the earlier run's best/model weights beside its own last.pt."""
    from edgeseg.train import trainer as trainer_mod

    data = folder_data(tmp_path / "d")
    out, bundle = tmp_path / "run", tmp_path / "x.edgeseg"
    assert main([*BASE, "--data", data, "--out", str(out), "--export", str(bundle)]) == 0
    kept = hashes(bundle)
    rc, err = run([*BASE, "--data", data, "--out", str(tmp_path / "run2"), "--export", str(bundle)], capsys)
    assert rc == 2 and f"{bundle} already exists" in err and "--overwrite" in err
    assert hashes(bundle) == kept and not (tmp_path / "run2" / "last.pt").exists()  # refused before any training
    assert {"best.safetensors", "model.safetensors", "last.pt"} <= set(hashes(out))

    def stopped(self, resume=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "fit", stopped)
    rc = main([*BASE, "--data", data, "--out", str(out), "--overwrite"])
    assert rc == 130
    assert not {"best.safetensors", "model.safetensors", "last.pt", "history.json"} & set(hashes(out))


@pytest.mark.parametrize("model,task,tool", [("test_solov2", "an instance", "tools/train_instance.py"),
                                             ("test_mask_rcnn", "an instance", "Mask R-CNN has no trainer here"),
                                             ("test_panoptic_deeplab", "a panoptic", "tools/train_panoptic.py")])
def test_a_model_of_another_task_is_sent_to_its_trainer_before_any_data_is_read(tmp_path, capsys, model, task, tool):
    """before: `KeyError: 'logits'` with a traceback (SOLOv2, Panoptic-DeepLab) or Mask R-CNN's message for programmers,
    once the data had been read and the model built."""
    rc, err = run([*BASE[:1], model, *BASE[2:], "--data", "folder:/no/such/images,/no/such/masks",
                   "--out", str(tmp_path / "run")], capsys)
    assert rc == 2 and f"error: {model} is {task} model; edgeseg train trains semantic models" in err
    assert tool in err and "Traceback" not in err and "/no/such" not in err


def test_the_instance_tool_trains_solov2_and_names_the_others_before_training(tmp_path, capsys):
    """before: tools/train_instance.py --model mask_rcnn_* (its --help listed them) failed with
    AttributeError 'num_grids'; a bad --val-data was found only after the training."""
    from tool_loader import load_tool

    tool = load_tool("train_instance")
    common = ["--scenes", "4", "--size", "64x48", "--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--threads", "1"]
    assert tool.main(["--model", "test_mask_rcnn", *common, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "test_mask_rcnn is an instance model but not a SOLOv2 model" in err and "solov2_mobilenetv3_small" in err
    assert tool.main(["--model", "test_fcn8s", *common, "--out", str(tmp_path / "c")]) == 2
    assert "test_fcn8s is a semantic model: this trainer trains SOLOv2" in capsys.readouterr().err
    assert tool.main(["--model", "test_solov2", *common, "--val-data", f"coco-instance:{tmp_path}/none.json",
                      "--out", str(tmp_path / "b")]) == 2
    assert "annotations not found" in capsys.readouterr().err and not (tmp_path / "b" / "last.pt").exists()


def test_validation_on_the_training_images_is_said(tmp_path, capsys, caplog):
    """before: a folder: spec has no splits, so without --val-data the run validated, chose its best weights and
    reported its accuracy on its own training images, unsaid."""
    import logging

    data = folder_data(tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="edgeseg.train"):
        assert main([*BASE, "--data", data, "--out", str(tmp_path / "run")]) == 0
    assert "4 of the 4 validation images are training images" in caplog.text and "--val-data" in caplog.text
    caplog.clear()
    val = folder_data(tmp_path / "v")
    with caplog.at_level(logging.WARNING, logger="edgeseg.train"):
        assert main([*BASE, "--data", data, "--val-data", val, "--out", str(tmp_path / "run2")]) == 0
    assert "validation images are training images" not in caplog.text  # held-out images: nothing to say


def test_resume_with_other_training_settings_is_refused_and_epochs_may_grow(tmp_path, capsys):
    """before: `--resume` with another --lr and --batch went on silently: the restored optimizer kept the run's lr while
    history.json and the report recorded the new one, and the batch changed mid-epoch."""
    data = folder_data(tmp_path / "d")
    out = tmp_path / "run"
    assert main([*BASE, "--data", data, "--out", str(out), "--lr", "0.01"]) == 0
    before = hashes(out)
    rc, err = run([*BASE, "--data", "folder:/no/such/images,/no/such/masks", "--out", str(out), "--lr", "0.5",
                   "--batch", "4", "--resume"], capsys)
    assert rc == 2 and "this run was started with other settings than this command gives" in err
    assert "batch_size 2 then, 4 now" in err and "lr 0.01 then, 0.5 now" in err and "--out NEW_RUN" in err
    assert "/no/such" not in err and hashes(out) == before  # refused before any data was read
    rc, err = run([*BASE, "--data", data, "--out", str(out), "--lr", "0.5", "--init", str(out / "model.safetensors"),
                   "--overwrite"], capsys)  # the advice half-followed: --init from the run --overwrite would empty
    assert rc == 2 and "whose earlier run --overwrite removes" in err and hashes(out) == before
    more = [*BASE, "--data", data, "--out", str(out), "--lr", "0.01", "--resume", "--checkpoint-minutes", "5"]
    more[more.index("--epochs") + 1] = "2"
    more[more.index("--threads") + 1] = "2"  # how this machine runs it may change too
    assert main(more) == 0  # a longer schedule is what --resume is for
