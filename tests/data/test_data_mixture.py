"""Dataset mixtures ``SPEC;K*SPEC``: concatenation order, repeats, classes, the training cache."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data import open_dataset
from edgeseg.data.mixture import Mixture, parse_mixture
from edgeseg.errors import DataError


def test_order_and_repeats():
    a = open_dataset("synthetic:3,size=32x24,seed=1", "train")
    b = open_dataset("synthetic:2,size=32x24,seed=7", "train")
    mix = open_dataset("2*synthetic:3,size=32x24,seed=1;synthetic:2,size=32x24,seed=7", "train")
    assert isinstance(mix, Mixture) and len(mix) == 2 * 3 + 2 and mix.classes == a.classes
    expected = [a[0], a[1], a[2], a[0], a[1], a[2], b[0], b[1]]
    for got, want in zip(mix, expected):
        assert got.name == want.name
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.labels, want.labels)
    assert mix[-1].name == b[1].name
    with pytest.raises(IndexError):
        mix[8]
    assert parse_mixture(" 3 * camvid:R,exclude=0006R0 ;x:1") == [("camvid:R,exclude=0006R0", 3), ("x:1", 1)]


def test_cache_decodes_each_part_once():
    from edgeseg.train.job import InMemory

    calls = []

    class Counting(list):
        classes = ("a", "b")

        def __getitem__(self, i):
            calls.append(i)
            return super().__getitem__(i)

    mix = Mixture([(Counting([10, 11]), 3), (Counting([20]), 1)], ["x", "y"])
    cached = mix.with_parts(InMemory)
    assert [cached[i] for i in range(len(cached))] == [10, 11, 10, 11, 10, 11, 20]
    assert sorted(calls) == [0, 0, 1]  # each sample read once, however often it repeats


@pytest.mark.parametrize("spec, match", [
    ("synthetic:2;", "empty part"),
    ("0*synthetic:2", "at least 1"),
    ("synthetic:2;coco-instance:/nowhere.json", "annotations not found|instance"),
])
def test_bad_mixtures(spec, match):
    with pytest.raises(DataError, match=match):
        open_dataset(spec, "train")


def test_classes_must_agree(tmp_path):
    from edgeseg.data import write_image, write_label

    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    write_image(tmp_path / "i" / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_label(tmp_path / "m" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="has classes") as e:
        open_dataset(f"synthetic:2;folder:{tmp_path / 'i'},{tmp_path / 'm'},num_classes=2", "train")
    assert "same classes" in e.value.fix


@pytest.mark.data
def test_camvid_and_cities(data_root):
    mix = open_dataset(f"4*camvid:{data_root / 'camvid'},exclude=0006R0;cityscapes-camvid:", "train")
    assert len(mix) == 4 * 266 + 2074
    assert mix[0].name == mix[266].name and mix[4 * 266].name.startswith("aachen")


def test_specs_are_recorded_with_absolute_paths_and_relative_ones_are_not_scored_again(tmp_path, monkeypatch):
    """An audit: street-instance's report recorded ``coco-instance:../shared/data/...`` (the trainer's folder), and the
    on-device INT8 check opened it from wherever the bundle was used: from another folder it failed, or opened other
    data. Reports now record absolute paths; a relative one (older bundles) is not scored again."""
    from edgeseg.backends.gates import task_metric_gate
    from edgeseg.data.base import recordable_spec, relative_paths

    (tmp_path / "data" / "camvid").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    (tmp_path / "data" / "instances_val.json").write_text("{}")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    monkeypatch.chdir(tmp_path)
    root = tmp_path.resolve()
    assert recordable_spec("8*camvid:data/camvid,exclude=0006R0;cityscapes-camvid:data") == (
        f"8*camvid:{root}/data/camvid,exclude=0006R0;cityscapes-camvid:{root}/data")
    assert recordable_spec("coco-instance:data/instances_val.json,images=data/val") == (
        f"coco-instance:{root}/data/instances_val.json,images={root}/data/val")
    assert recordable_spec("folder:data/val,data/val,classes=classes.txt,void=255") == (
        f"folder:{root}/data/val,{root}/data/val,classes={root}/classes.txt,void=255")
    (tmp_path / "camvid").mkdir()
    (tmp_path / "voc" / "ImageSets").mkdir(parents=True)
    assert recordable_spec("folder:data/val,data/val,list=voc/ImageSets/{split}.txt") == (
        f"folder:{root}/data/val,{root}/data/val,list={root}/voc/ImageSets/{{split}}.txt")
    # (the review) a name, not a file, though a folder of that name is here
    assert recordable_spec("cityscapes:/abs/cs,classes=camvid") == "cityscapes:/abs/cs,classes=camvid"
    assert relative_paths("cityscapes:/abs/cs,classes=camvid") == []
    assert recordable_spec("coco-instance:../x/../data/instances_val.json") == "coco-instance:../x/../data/instances_val.json"
    (tmp_path.parent / "x").mkdir(exist_ok=True)
    assert recordable_spec("coco-instance:./data/../data/instances_val.json") == (
        f"coco-instance:{root}/data/instances_val.json")  # normalised, symlinks kept
    for kept in ("synthetic:100,size=160x120", "camvid:", "camvid:/abs/camvid", "camvid:not/here", "no spec"):
        assert recordable_spec(kept) == kept  # nothing to resolve (absent paths stay as written, for the error)
    assert relative_paths("8*camvid:data/camvid;cityscapes-camvid:/abs") == ["data/camvid"]
    assert relative_paths("coco-instance:/abs/i.json,images=rel/val") == ["rel/val"]
    assert relative_paths("synthetic:100") == relative_paths("camvid:") == relative_paths("camvid:/a") == []

    import cv2

    for sub in ("img", "mask"):
        (tmp_path / "data" / sub).mkdir()
        cv2.imwrite(str(tmp_path / "data" / sub / "a.png"), np.zeros((8, 8) if sub == "mask" else (8, 8, 3), np.uint8))
    spec = "folder:data/img,data/mask,num_classes=2"
    assert len(open_dataset(spec)) == 1  # it opens from here, and only from here

    class Old:  # a bundle whose report names it
        name = "old"
        report = {"accuracy": {"fp32": {"data": spec, "split": "val"}}}
        manifest = type("M", (), {"task": "depth"})()  # a task the check does not score: None right after opening

    opened = []
    monkeypatch.setattr("edgeseg.data.open_dataset", lambda *a, **k: opened.append(a) or [])
    assert task_metric_gate(Old(), "int8", 1, "cpu", "onnxruntime") is None and not opened
    Old.report["accuracy"]["fp32"]["data"] = recordable_spec(spec)  # absolute: opened
    assert task_metric_gate(Old(), "int8", 1, "cpu", "onnxruntime") is None and opened == [(recordable_spec(spec),)]
