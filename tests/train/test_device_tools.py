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
    fit = _device_tool("street_instance").epochs_that_fit
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


def test_a_run_stopped_at_its_limit_keeps_its_last_epoch(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    assert load_tool("train_instance").main(["--model", "test_solov2", "--scenes", "4", "--size", "64x48", "--epochs", "1",
                                             "--steps-per-epoch", "2", "--batch", "2", "--eval-frames", "0",
                                             "--out", str(run)]) == 0
    (run / "model.safetensors").unlink()  # as if stopped after the epoch's checkpoint
    from edgeseg.models import load_checkpoint, read_checkpoint_meta

    path = _device_tool("street_instance").salvage(run)
    assert path == run / "model.safetensors"
    meta = read_checkpoint_meta(path)
    assert meta.model_name == "test_solov2" and meta.extra["epoch"] == 1 and meta.extra["task"] == "instance"
    model = load_checkpoint(path)
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert _device_tool("street_instance").salvage(run) is None  # already there: left alone
