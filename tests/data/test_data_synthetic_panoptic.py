"""``synthetic-panoptic:N``: the generator's exact panoptic truth as a PQ dataset (held-out scenes)."""
from __future__ import annotations

import numpy as np
import pytest


def test_spec_samples_and_truth_against_itself():
    from edgeseg.data import SceneGenerator, open_dataset
    from edgeseg.data.synthetic import split_stream
    from edgeseg.eval import PanopticMetric, evaluate_panoptic
    from edgeseg.structures import ImageShape

    ds = open_dataset("synthetic-panoptic:4,size=96x72,seed=3", split="val")
    assert len(ds) == 4 and ds.task == "panoptic" and [c.isthing for c in ds.categories.values()] == [False] * 3 + [True] * 3
    s = ds[1]
    assert s.image().shape == (72, 96, 3) and s.panoptic.segment_ids.shape == (72, 96)
    t = int(np.random.default_rng((3, split_stream("val"), 1, 7)).integers(0, 401))
    want = SceneGenerator(ImageShape(72, 96), (3, split_stream("val"), 1), 6).render(t)
    np.testing.assert_array_equal(s.image(), want.image)
    np.testing.assert_array_equal(s.panoptic.segment_ids, want.panoptic.segment_ids)
    truth = {x.image().tobytes(): x.panoptic for x in ds}
    scores = evaluate_panoptic(lambda img: truth[img.tobytes()], ds, progress=False)
    assert scores.pq == 1.0 and scores.things.n == 3  # the truth scores itself perfectly
    m = PanopticMetric({c.id: c.isthing for c in ds.categories.values()})
    m.update(ds[0].panoptic, ds[0].panoptic)
    assert m.compute().pq == 1.0


def test_bad_specs():
    from edgeseg.data import open_dataset
    from edgeseg.errors import DataError

    with pytest.raises(DataError, match="number of scenes"):
        open_dataset("synthetic-panoptic:many")
    with pytest.raises(DataError, match="integers"):
        open_dataset("synthetic-panoptic:3,seed=x")
