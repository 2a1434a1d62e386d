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
