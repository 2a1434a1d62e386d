"""Shared fixtures of the trainer tests: a small synthetic dataset held in memory."""
from __future__ import annotations

import pytest

from edgeseg.structures import ImageShape

TINY = ImageShape(48, 64)


class Cached(list):
    """A dataset held in memory (rendering once keeps the tests fast)."""

    def __init__(self, ds):
        super().__init__(ds[i] for i in range(len(ds)))
        self.classes = ds.classes


@pytest.fixture(scope="module")
def data():
    """(24 training scenes, 8 validation scenes) at 64x48, seed 3."""
    torch = pytest.importorskip("torch")
    from edgeseg.data.synthetic import SyntheticDataset

    torch.set_num_threads(1)
    return Cached(SyntheticDataset(24, TINY, seed=3, stream=0)), Cached(SyntheticDataset(8, TINY, seed=3, stream=1))
