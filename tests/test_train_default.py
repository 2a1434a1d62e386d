"""``tools/train_default.py``: the default models' recipes and their stages (main, then fine-tuning
stages that start from the previous stage's weights with their own schedule)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from edgeseg.errors import InputError
from edgeseg.structures import ImageShape

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "train_default.py"


@pytest.fixture(scope="module")
def td():
    spec = importlib.util.spec_from_file_location("train_default", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_default"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("train_default", None)


def _args(td, tmp_path, *argv):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("name")
    for flag, default in (("--device", "cpu"), ("--stage", "main"), ("--init", None), ("--runs", str(tmp_path)),
                          ("--epochs", None), ("--threads", 0), ("--workers", None), ("--seed", 0),
                          ("--class-weighting", None)):
        p.add_argument(flag, default=default, type=int if flag in ("--epochs", "--threads", "--workers", "--seed") else None)
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--export-to", default=None)
    return p.parse_args(list(argv))


def test_road_stages_chain_their_run_folders(td, tmp_path):
    road = td.RECIPES.get("road")
    assert td.stage_names(road) == ["main", "finetune", "finetune2", "finetune3", "finetune4"]
    assert [td.stage_dir(road, k, str(tmp_path)).name for k in range(5)] == ["road", "road-ft", "road-ft2", "road-ft3",
                                                                            "road-ft4"]


def test_finetune2_starts_from_the_first_finetune_with_its_own_schedule(td, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path))
    road = td.RECIPES.get("road")
    (tmp_path / "road-ft").mkdir()
    (tmp_path / "road-ft" / "model.safetensors").write_bytes(b"")
    job = td.build_job(road, _args(td, tmp_path, "road", "--stage", "finetune2", "--no-export"))
    ft = road.finetune[1]
    assert job.init == tmp_path / "road-ft" / "model.safetensors" and job.out == tmp_path / "road-ft2"
    c = job.config
    assert (c.epochs, c.lr, c.crop, c.loss, c.scale) == (ft.epochs, ft.lr, None, ft.loss, (0.75, 1.5))
    assert c.size == ImageShape(360, 480)
    main = td.build_job(road, _args(td, tmp_path, "road", "--no-export"))
    assert main.init is None and main.config.crop == ImageShape(192, 256) and main.config.scale == road.scale


def test_a_stage_needs_the_previous_one(td, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path))
    road = td.RECIPES.get("road")
    with pytest.raises(InputError, match="run --stage finetune first"):
        td.build_job(road, _args(td, tmp_path, "road", "--stage", "finetune2", "--no-export"))
    with pytest.raises(InputError, match="has no stage 'finetune5'"):
        td.build_job(road, _args(td, tmp_path, "road", "--stage", "finetune5", "--no-export"))


def test_road_holdout_never_trains_on_0006R0(td, tmp_path, monkeypatch):
    """Issue 14's recipe: Cityscapes' training cities, then CamVid without 0006R0 mixed with them;
    every stage validates on 0006R0 and no stage trains on it or on Cityscapes' val cities."""
    from edgeseg.data.mixture import parse_mixture

    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path))
    r = td.RECIPES.get("road-holdout")
    (tmp_path / "road-holdout").mkdir()
    (tmp_path / "road-holdout" / "model.safetensors").write_bytes(b"")
    main = td.build_job(r, _args(td, tmp_path, "road-holdout", "--no-export"))
    ft = td.build_job(r, _args(td, tmp_path, "road-holdout", "--stage", "finetune", "--no-export"))
    assert main.data == f"cityscapes-camvid:{tmp_path}/cityscapes_panoptic" and main.train_split == "train"
    parts = parse_mixture(ft.data)
    assert parts == [(f"camvid:{tmp_path}/camvid,exclude=0006R0", 4), (f"cityscapes-camvid:{tmp_path}/cityscapes_panoptic", 1)]
    for job in (main, ft):
        assert job.val_data == f"camvid:{tmp_path}/camvid,split=train,sequences=0006R0"
    assert ft.init == tmp_path / "road-holdout" / "model.safetensors" and ft.out == tmp_path / "road-holdout-ft"
    assert main.config.jitter == ft.config.jitter == 0.4


def test_road_loso_is_roads_recipe_with_0006R0_held_out(td, tmp_path, monkeypatch):
    """The leave-one-sequence-out baseline: road's schedule, loss and augmentation stage by stage, CamVid
    without 0006R0 to train on and 0006R0 to validate on (its main stage at the 80 epochs road's ran)."""
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path))
    road, loso = td.RECIPES.get("road"), td.RECIPES.get("road-loso")
    for stage, prev in (("main", None), ("finetune", "road-loso"), ("finetune2", "road-loso-ft")):
        if prev:
            (tmp_path / prev).mkdir()
            (tmp_path / prev / "model.safetensors").write_bytes(b"")
        job = td.build_job(loso, _args(td, tmp_path, "road-loso", "--stage", stage, "--no-export"))
        assert job.data == f"camvid:{tmp_path}/camvid,exclude=0006R0"
        assert job.val_data == f"camvid:{tmp_path}/camvid,split=train,sequences=0006R0"
        if prev:
            (tmp_path / "road" if stage == "finetune" else tmp_path / "road-ft").mkdir()
            (tmp_path / ("road" if stage == "finetune" else "road-ft") / "model.safetensors").write_bytes(b"")
        ref = td.build_job(road, _args(td, tmp_path, "road", "--stage", stage, "--no-export"))
        for key in ("lr", "loss", "crop", "scale", "jitter", "batch_size", "class_weighting", "weight_decay"):
            assert getattr(job.config, key) == getattr(ref.config, key), (stage, key)
        assert job.config.epochs == (80 if stage == "main" else ref.config.epochs)


def test_road_holdout_stage_4_weighting_is_the_recipes_unless_overridden(td, tmp_path, monkeypatch):
    """The class-weighting A/B (session 9): finetune3 trains with the recipe's ENet weights; the
    --class-weighting flag swaps them for one run and nothing else."""
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path))
    r = td.RECIPES.get("road-holdout")
    assert td.stage_names(r)[-1] == "finetune3"
    (tmp_path / "road-holdout-ft2").mkdir()
    (tmp_path / "road-holdout-ft2" / "model.safetensors").write_bytes(b"")
    own = td.build_job(r, _args(td, tmp_path, "road-holdout", "--stage", "finetune3", "--no-export"))
    ab = td.build_job(r, _args(td, tmp_path, "road-holdout", "--stage", "finetune3", "--no-export",
                               "--class-weighting", "median"))
    assert own.config.class_weighting == "enet" and ab.config.class_weighting == "median"
    assert own.config.epochs == ab.config.epochs == 2 and own.config.lr == ab.config.lr == 0.005
    assert own.data == ab.data and own.init == ab.init == tmp_path / "road-holdout-ft2" / "model.safetensors"
    assert own.out == tmp_path / "road-holdout-ft3"


def test_road_stage_4_fine_tunes_the_shipped_bundle_on_camvid_and_cityscapes(td, tmp_path, monkeypatch):
    """Issue 14's other-camera stage: it starts from a bundle (--init, a folder: no model.safetensors
    needed), mixes all of CamVid train (8x) with Cityscapes' training cities, validates on the unseen
    Cityscapes val cities, and takes road-holdout's colour jitter; road-loso's has 0006R0 held out."""
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path))
    road = td.RECIPES.get("road")
    assert td.stage_names(road)[3] == "finetune3"
    loso = td.RECIPES.get("road-loso")
    assert td.stage_names(loso)[3] == "finetune3"  # the same stage with 0006R0 held out, validated on it
    assert loso.finetune[2].data == f"8*{td.CAMVID_TRAIN_HOLDOUT};cityscapes-camvid:{{data_root}}/cityscapes_panoptic"
    assert loso.finetune[2].val_data == td.CAMVID_0006R0
    assert (loso.finetune[2].epochs, loso.finetune[2].lr, loso.finetune[2].jitter) == (2, 0.005, 0.4)
    bundle = tmp_path / "road.edgeseg"
    bundle.mkdir()
    job = td.build_job(road, _args(td, tmp_path, "road", "--stage", "finetune3", "--init", str(bundle), "--no-export"))
    assert job.init == bundle and job.out == tmp_path / "road-ft3"
    assert job.data == f"8*camvid:{tmp_path}/camvid;cityscapes-camvid:{tmp_path}/cityscapes_panoptic"
    assert job.val_data == f"cityscapes-camvid:{tmp_path}/cityscapes_panoptic"
    assert (job.config.epochs, job.config.lr, job.config.jitter) == (2, 0.005, 0.4)
    assert job.config.crop == ImageShape(192, 256)
    with pytest.raises(InputError, match="does not exist"):  # without --init: runs/road-ft2 is not there
        td.build_job(road, _args(td, tmp_path, "road", "--stage", "finetune3", "--no-export"))


def test_road_stage_5_is_one_full_resolution_epoch_of_the_same_mix(td, tmp_path, monkeypatch):
    """Issue 14, session 22: after the other-camera stage, one epoch of the same CamVid + Cityscapes mix on
    the whole 480x360 frame (no crop, scales near 1), from stage 4's weights or a bundle; road-loso's is the
    same stage with 0006R0 held out (the A/B that decided it: edgeseg train ... --size 480x360 --epochs 1
    --lr 0.002 --warmup 0.05 --scale 0.75,1.5 --jitter 0.4, as docs/models.md records)."""
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path))
    road, loso = td.RECIPES.get("road"), td.RECIPES.get("road-loso")
    assert td.stage_names(road)[-1] == td.stage_names(loso)[-1] == "finetune4"
    (tmp_path / "road-ft3").mkdir()
    (tmp_path / "road-ft3" / "model.safetensors").write_bytes(b"")
    job = td.build_job(road, _args(td, tmp_path, "road", "--stage", "finetune4", "--no-export"))
    assert job.init == tmp_path / "road-ft3" / "model.safetensors" and job.out == tmp_path / "road-ft4"
    assert job.data == f"8*camvid:{tmp_path}/camvid;cityscapes-camvid:{tmp_path}/cityscapes_panoptic"
    assert job.val_data == f"cityscapes-camvid:{tmp_path}/cityscapes_panoptic"
    c = job.config
    assert (c.epochs, c.lr, c.warmup_epochs, c.crop, c.scale, c.jitter) == (1, 0.002, 0.05, None, (0.75, 1.5), 0.4)
    assert (c.size, c.batch_size, c.loss, c.class_weighting, c.weight_decay) == (ImageShape(360, 480), 8, "wce+lovasz",
                                                                                "enet", 4e-5)
    bundle = tmp_path / "road-street.edgeseg"
    bundle.mkdir()
    held = td.build_job(loso, _args(td, tmp_path, "road-loso", "--stage", "finetune4", "--init", str(bundle),
                                    "--no-export"))
    assert held.init == bundle and held.out == tmp_path / "road-loso-ft4"
    assert held.data == f"8*camvid:{tmp_path}/camvid,exclude=0006R0;cityscapes-camvid:{tmp_path}/cityscapes_panoptic"
    assert held.val_data == f"camvid:{tmp_path}/camvid,split=train,sequences=0006R0"
    for key in ("epochs", "lr", "warmup_epochs", "crop", "scale", "jitter", "size", "batch_size", "loss"):
        assert getattr(held.config, key) == getattr(c, key), key
