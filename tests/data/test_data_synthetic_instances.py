"""Synthetic scenes as an instance dataset: exact truth from the generator, split streams apart,
and mask AP 100 for predictions equal to the truth (pycocotools-equal metric)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data import open_dataset
from edgeseg.errors import DataError


def test_truth_is_the_generators_and_splits_differ():
    from edgeseg.data.synthetic import SceneGenerator, split_stream

    ds = open_dataset("synthetic-instance:3,size=160x120", split="val")
    s = ds[1]
    gen = SceneGenerator(ds.size, (0, split_stream("val"), 1), 6)
    t = int(np.random.default_rng((0, split_stream("val"), 1, 7)).integers(0, 401))
    frame = gen.render(t)
    assert np.array_equal(s.image(), frame.image) and np.array_equal(s.truth.masks, frame.instances.masks)
    assert set(s.truth.category_ids.tolist()) <= {1, 2, 3} and ds.categories == {1: "circle", 2: "rectangle", 3: "triangle"}
    assert not np.array_equal(open_dataset("synthetic-instance:3,size=160x120", split="train")[1].image(), s.image())
    with pytest.raises(DataError, match="number of scenes"):
        open_dataset("synthetic-instance:x")


def test_truth_as_prediction_scores_ap_100():
    from edgeseg.eval import MaskAPAccumulator
    from edgeseg.structures import InstanceResult

    ds = open_dataset("synthetic-instance:4,size=160x120")
    acc = MaskAPAccumulator(ds.categories, class_to_category=[1, 2, 3])
    for s in ds:
        t = s.truth
        acc.add(s.image_id, InstanceResult(t.boxes, np.ones(len(t.classes), np.float32), t.classes, t.image_shape, t.masks), t)
    assert acc.compute().stats[0] == pytest.approx(1.0)
