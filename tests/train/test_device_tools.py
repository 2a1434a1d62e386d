"""The prepared device run (docs/device.md), checked here without a GPU: the pack's frames and truth
read back through the same reader, the epochs that fit a budget, and a run stopped at its limit keeps
its last finished epoch as a checkpoint."""
from __future__ import annotations

import gzip
import importlib.util
import json

import numpy as np
import pytest
import torch

from tool_loader import REPO, load_tool


def _device_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"device_{name}", REPO / "tools" / "device" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_epochs_that_fit_the_budget():
    fit = _device_tool("common").epochs_that_fit
    assert fit(0.1, 64, 400) == 56  # 0.9 * 400 s / 6.4 s an epoch = 56.25
    assert fit(0.1, 64, 400, margin=1.0) == 62
    assert fit(2.0, 64, 100) == 1  # at least one epoch
    with pytest.raises(ValueError):
        fit(0.0, 64, 100)


def test_pack_keeps_the_truth_and_the_frames(tmp_path):
    """Frames re-encoded as WebP (close to the originals), the JSON's file names changed and gzipped;
    the same coco-instance reader gives the same masks and near-equal images."""
    from edgeseg.data import open_dataset
    from edgeseg.data.io import write_image

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"f{i}.jpg", "height": 32, "width": 48} for i in (1, 2)]
    frames = {}
    for im in images:
        y, x = np.mgrid[:32, :48]
        img = np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8) + rng.integers(0, 8, (32, 48, 3), dtype=np.uint8)
        frames[im["id"]] = img
        write_image(src / "train" / im["file_name"], img)
    anns = [{"id": 1, "image_id": 1, "category_id": 26, "segmentation": [[2, 2, 20, 2, 20, 18, 2, 18]], "area": 288,
             "bbox": [2, 2, 18, 16], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 24, "segmentation": [[30, 5, 44, 5, 37, 30]], "area": 170,
             "bbox": [30, 5, 14, 25], "iscrowd": 0}]
    (src / "instances_train.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 24, "name": "person"}, {"id": 26, "name": "car"}]}))
    dst = tmp_path / "pack"
    written = _device_tool("pack").pack_instances(src, dst, quality=90)
    assert written == sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    (dst / "instances_train.json").write_bytes(gzip.decompress((dst / "instances_train.json.gz").read_bytes()))
    packed = open_dataset(f"coco-instance:{dst / 'instances_train.json'}", split="train")
    original = open_dataset(f"coco-instance:{src / 'instances_train.json'}", split="train")
    assert sorted(p.name for p in (dst / "train").iterdir()) == ["f1.webp", "f2.webp"]
    for a, b in zip(packed, original):
        np.testing.assert_array_equal(a.truth.masks, b.truth.masks)
        assert a.truth.classes.tolist() == b.truth.classes.tolist()
        diff = np.abs(a.image().astype(int) - b.image().astype(int))
        assert diff.mean() < 4.0, diff.mean()  # lossy, but close (the street frames: 38-40 dB PSNR)


def test_panoptic_pack_keeps_every_segment_id(tmp_path):
    """The panoptic truth as lossless WebP: the coco-panoptic reader gives the same segment ids (ids whose
    RGB encoding uses all three channels included) and segments; the frames near the originals; the
    instance truth packed after it points at the same (already written) frames."""
    from edgeseg.data import open_dataset
    from edgeseg.data.coco_panoptic import id_to_rgb
    from edgeseg.data.io import write_image

    src = tmp_path / "src"
    rng = np.random.default_rng(2)
    ids = np.zeros((32, 48), np.int32)
    ids[:, :20] = 7 * 1000 + 3            # a stuff segment: id 7003 (two RGB channels)
    ids[4:20, 24:40] = 26 * 1000 + 65537  # a car whose id needs the blue channel
    y, x = np.mgrid[:32, :48]
    img = np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8) + rng.integers(0, 8, (32, 48, 3), dtype=np.uint8)
    write_image(src / "panoptic_train" / "f1.png", id_to_rgb(ids))
    write_image(src / "train" / "f1.jpg", img)
    segs = [{"id": int(i), "category_id": c, "iscrowd": 0, "area": int((ids == i).sum())} for i, c in ((7003, 7), (91537, 26))]
    (src / "panoptic_train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "f1.jpg", "width": 48, "height": 32}],
        "annotations": [{"image_id": 1, "file_name": "f1.png", "segments_info": segs}],
        "categories": [{"id": 7, "name": "road", "isthing": 0}, {"id": 26, "name": "car", "isthing": 1}]}))
    anns = [{"id": 1, "image_id": 1, "category_id": 26, "segmentation": [[24, 4, 40, 4, 40, 20, 24, 20]], "area": 256,
             "bbox": [24, 4, 16, 16], "iscrowd": 0}]
    (src / "instances_train.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "f1.jpg", "height": 32,
                                                                      "width": 48}], "annotations": anns,
                                                          "categories": [{"id": 26, "name": "car"}]}))
    pack, dst = _device_tool("pack"), tmp_path / "pack"
    written = pack.pack_panoptic(src, dst, quality=90)
    written += pack.pack_instances(src, dst, quality=90, frames=False)
    assert written == sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    assert sorted(p.name for p in (dst / "train").iterdir()) == ["f1.webp"]
    for name in ("panoptic_train.json", "instances_train.json"):
        (dst / name).write_bytes(gzip.decompress((dst / f"{name}.gz").read_bytes()))
    packed = open_dataset(f"coco-panoptic:{dst / 'panoptic_train.json'}", split="train")[0]
    original = open_dataset(f"coco-panoptic:{src / 'panoptic_train.json'}", split="train")[0]
    np.testing.assert_array_equal(packed.panoptic.segment_ids, ids)
    assert packed.panoptic.segments == original.panoptic.segments
    assert np.abs(packed.image().astype(int) - original.image().astype(int)).mean() < 4.0
    inst = open_dataset(f"coco-instance:{dst / 'instances_train.json'}", split="train")[0]
    assert inst.truth.masks.sum() > 0 and inst.image().shape == (32, 48, 3)


def test_a_run_stopped_at_its_limit_keeps_its_last_epoch(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    assert load_tool("train_instance").main(["--model", "test_solov2", "--scenes", "4", "--size", "64x48", "--epochs", "1",
                                             "--steps-per-epoch", "2", "--batch", "2", "--eval-frames", "0",
                                             "--out", str(run)]) == 0
    (run / "model.safetensors").unlink()  # as if stopped after the epoch's checkpoint
    from edgeseg.models import load_checkpoint, read_checkpoint_meta

    path = _device_tool("street").salvage(run)
    assert path == run / "model.safetensors"
    meta = read_checkpoint_meta(path)
    assert meta.model_name == "test_solov2" and meta.extra["epoch"] == 1 and meta.extra["task"] == "instance"
    model = load_checkpoint(path)
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert _device_tool("street").salvage(run) is None  # already there: left alone


def _camvid_folder(root, frames):
    """A CamVid-layout folder: ``{name: (image, raw label 0..11)}`` as train/ + trainannot/ PNGs and train.txt."""
    from edgeseg.data.io import write_image, write_label

    lines = []
    for name, (img, lab) in frames.items():
        write_image(root / "train" / f"{name}.png", img)
        write_label(root / "trainannot" / f"{name}.png", lab)
        lines.append(f"train/{name}.png trainannot/{name}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")


def test_road_pack_reads_back_the_same_labels(tmp_path):
    """``pack_semantic`` writes a spec's frames in CamVid's layout: ``camvid:`` reads the very label maps the
    original reader gave (void included) and images close to the originals; the list keeps the frame names
    (CamVid's sequences), so ``exclude=`` and ``sequences=`` work on the pack."""
    from edgeseg.data import open_dataset

    rng = np.random.default_rng(1)
    y, x = np.mgrid[:36, :48]
    frames = {}
    for name in ("0001TP_000010", "0001TP_000040", "0006R0_f00930"):
        img = np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8) + rng.integers(0, 8, (36, 48, 3), dtype=np.uint8)
        lab = rng.integers(0, 12, (36, 48)).astype(np.uint8)  # 11: CamVid's void
        frames[name] = (img, lab)
    _camvid_folder(tmp_path / "src", frames)
    pack = _device_tool("pack")
    written = pack.pack_semantic(f"camvid:{tmp_path / 'src'}", "train", tmp_path / "pack", quality=90)
    assert written == sum(f.stat().st_size for f in (tmp_path / "pack").rglob("*") if f.suffix in (".webp", ".png"))
    original = open_dataset(f"camvid:{tmp_path / 'src'}", split="train")
    packed = open_dataset(f"camvid:{tmp_path / 'pack'}", split="train")
    assert [s.name for s in packed] == [s.name for s in original]
    for a, b in zip(packed, original):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert (a.labels == 255).sum() == (frames[a.name][1] == 11).sum() > 0
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 4.0
    held = open_dataset(f"camvid:{tmp_path / 'pack'},exclude=0006R0", split="train")
    assert [s.name for s in held] == ["0001TP_000010", "0001TP_000040"]
    from edgeseg.errors import DataError

    spec = f"folder:{tmp_path / 'src/train'},{tmp_path / 'src/trainannot'},num_classes=19"
    with pytest.raises(DataError, match="19 classes"):  # more than the pack's camvid: reader keeps
        pack.pack_semantic(spec, "train", tmp_path / "bad", quality=90)


@pytest.mark.data
def test_road_pack_of_cityscapes_equals_the_cityscapes_camvid_reader(tmp_path, data_root):
    """The street frames' labels in CamVid's classes, packed as 8-bit maps, equal ``cityscapes-camvid:``'s."""
    from edgeseg.data import open_dataset

    spec = f"cityscapes-camvid:{data_root / 'cityscapes_panoptic'},cities=tubingen"
    _device_tool("pack").pack_semantic(spec, "val", tmp_path / "cs", quality=75)
    original = open_dataset(spec, split="val")
    packed = open_dataset(f"camvid:{tmp_path / 'cs'}", split="val")
    assert len(packed) == len(original) == 139
    for i in (0, 70, 138):
        np.testing.assert_array_equal(packed[i].labels, original[i].labels)
        assert packed[i].name == original[i].name


def test_road_arms_data_and_lists(tmp_path):
    """The arms' specs on a pack: holdout trains on no 0006R0 frame, validates on 0006R0 only; the dry-run
    list keeps the first frames of each drive; the probe's list the first lines."""
    road = _device_tool("road")
    img = np.zeros((24, 32, 3), np.uint8)
    lab = np.zeros((24, 32), np.uint8)
    names = [f"{seq}_{i:06d}" for seq in ("0001TP", "0006R0", "0016E5") for i in range(3)]
    _camvid_folder(tmp_path / "road/camvid", {n: (img, lab) for n in names})
    _camvid_folder(tmp_path / "road/cityscapes", {f"aachen_{i:06d}": (img, lab) for i in range(5)})
    from edgeseg.data import open_dataset

    hold = open_dataset(road.arm_data("holdout", pack=tmp_path), split="train")
    assert len(hold) == 8 * 6 + 5 and not any(hold[i].name.startswith("0006R0") for i in range(len(hold)))
    assert len(open_dataset(road.arm_data("all", pack=tmp_path), split="train")) == 6 * 9 + 5
    val = open_dataset(road.val_data(pack=tmp_path), split="val")
    assert [s.name for s in val] == [f"0006R0_{i:06d}" for i in range(3)]
    assert road.write_list(tmp_path / "road/camvid", "dry", 2, per_sequence=True) == "dry"
    dry = open_dataset(road.val_data("dry", pack=tmp_path), split="val")
    assert [s.name for s in dry] == ["0006R0_000000", "0006R0_000001"]
    road.write_list(tmp_path / "road/cityscapes", "probe", 2)
    assert len(open_dataset(f"camvid:{tmp_path / 'road/cityscapes'},split=probe")) == 2


def test_a_stopped_road_run_keeps_its_last_epoch(tmp_path):
    """A semantic run stopped after its epoch's checkpoint: ``road.salvage`` writes the weights of last.pt."""
    from edgeseg.cli import main
    from edgeseg.models import load_checkpoint, read_checkpoint_meta

    torch.set_num_threads(1)
    run = tmp_path / "run"
    assert main(["train", "test_fcn8s", "--data", "synthetic:4,size=64x48", "--size", "64x48", "--epochs", "1",
                 "--batch", "2", "--eval-every", "5", "--no-progress", "--out", str(run)]) == 0
    (run / "model.safetensors").unlink()
    road = _device_tool("road")
    path = road.salvage(run)
    assert path == run / "model.safetensors"
    meta = read_checkpoint_meta(path)
    assert meta.model_name == "test_fcn8s" and meta.extra["epoch"] == 1 and meta.num_classes == 6
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
    for k, v in load_checkpoint(path).state_dict().items():
        assert torch.equal(v, state[k]), k
    assert road.salvage(run) is None


def test_road_command_is_an_edgeseg_train_command(tmp_path):
    """The road arms' command line parses as ``edgeseg train`` with road-holdout's recipe."""
    import argparse

    from edgeseg.cli.train import add_arguments

    road = _device_tool("road")
    args = road.run_parser("", road.ARMS, budget_s=450, batch=16).parse_args(["--arms", "holdout"])
    args.size, args.lr, args.warmup, args.workers = "480x360", 0.05, 1.0, 3
    cmd = road.command(args, road.arm_data("holdout"), road.val_data(), tmp_path / "run", 12, 2)
    assert cmd[1:4] == ["-m", "edgeseg", "train"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    got = p.parse_args(cmd[4:])
    assert (got.model, got.batch, got.lr, got.epochs, got.eval_every, got.workers) == (
        "deeplabv3plus_mobilenetv3_small", 16, 0.05, 12, 2, 3)
    assert (got.loss, got.class_weighting, got.jitter, got.scale, got.weight_decay) == (
        "wce+0.5*lovasz", "enet", 0.4, "0.5,2.0", 4e-5)
    assert got.cache and got.device == "cuda" and "exclude=0006R0" in got.data and "sequences=0006R0" in got.val_data


def test_arms_are_checked_and_road_defaults_to_holdout(capsys):
    common = _device_tool("common")
    arms = {"a": 1, "b": 2, "p": 3}
    assert common.chosen_arms("a,p", arms, "street") == ["a", "p"]
    assert common.chosen_arms("a,x", arms, "street") is None
    assert "unknown arms ['x']; known: a, b, p" in capsys.readouterr().err
    assert common.chosen_arms("", arms, "street") is None
    road = _device_tool("road")
    assert road.run_parser("", road.ARMS, 450, 16, default_arms="holdout").parse_args([]).arms == "holdout"
    assert common.run_parser("", arms, 400, 32).parse_args([]).arms == "a,b,p"
