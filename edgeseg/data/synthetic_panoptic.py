"""Synthetic scenes as a panoptic dataset (``synthetic-panoptic:N[,seed=S][,size=WxH]``): the scene
generator's exact panoptic truth (stuff sky, ground, road; things circle, rectangle, triangle) as
:class:`~edgeseg.data.coco_panoptic.PanopticSample`s, scored by PQ like any COCO-panoptic set.

Category ids are the generator's class indices (0..5), as the panoptic trainer's synthetic stream
writes them. Scene ``i`` of split ``s`` is seeded ``(seed, split_stream(s), i)``: never a scene the
trainer draws (``edgeseg.train.panoptic.synthetic_panoptic`` seeds ``(seed, 17, i)``)."""
from __future__ import annotations

from typing import Sequence

from ..errors import InputError
from ..structures import ImageShape
from .base import DATASETS
from .coco_panoptic import Category, PanopticSample
from .synthetic import CLASSES, STUFF_CLASSES, held_out_frame, scene_spec, split_stream


class SyntheticPanoptic(Sequence):
    """``n`` synthetic scenes, one frame each (``t`` drawn in ``0..max_t``), with exact panoptic truth."""

    task = "panoptic"
    classes = CLASSES
    category_ids = tuple(range(len(CLASSES)))
    categories = {i: Category(i, n, i >= len(STUFF_CLASSES)) for i, n in enumerate(CLASSES)}

    def __init__(self, n: int, size: ImageShape = ImageShape(240, 320), seed: int = 0, *, stream: int = 1,
                 max_objects: int = 6, max_t: int = 400):
        if n < 0:
            raise InputError(f"SyntheticPanoptic size must be >= 0, got {n}")
        self.n, self.size, self.seed, self.stream = int(n), size, int(seed), int(stream)
        self.max_objects, self.max_t = max_objects, max_t

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> PanopticSample:  # type: ignore[override]
        if not -self.n <= index < self.n:
            raise IndexError(index)
        index %= self.n
        frame = held_out_frame(self.size, self.seed, self.stream, index, self.max_objects, self.max_t)
        name = f"synthetic_{self.seed}_{self.stream}_{index:06d}"
        return PanopticSample(name, None, frame.panoptic, frozenset(), index, f"{name}.png", preloaded=frame.image)

    def __iter__(self):
        return (self[i] for i in range(self.n))


@DATASETS.register("synthetic-panoptic")
def _open(args: list[str], options: dict[str, str], split: str) -> SyntheticPanoptic:
    n, size, seed, k = scene_spec("synthetic-panoptic", args, options, ImageShape(240, 320))
    return SyntheticPanoptic(n, size, seed, stream=split_stream(split), max_objects=k)


__all__: Sequence[str] = ["SyntheticPanoptic"]
