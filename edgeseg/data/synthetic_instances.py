"""Synthetic scenes as an instance dataset (``synthetic-instance:N[,seed=S][,size=WxH]``): the
scene generator's exact instance masks of its things (circle, rectangle, triangle) as
:class:`~edgeseg.data.coco_instances.InstanceSample` truth, scored by mask AP like any COCO set.

Scene ``i`` of split ``s`` is seeded ``(seed, split_stream(s), i)``: never a scene the instance
trainer draws (``edgeseg.train.instance.synthetic_instances`` seeds ``(seed, 17, i)``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError
from ..structures import ImageShape
from .base import DATASETS
from .coco_instances import InstanceDataset, InstanceSample, InstanceTruth
from .synthetic import STUFF_CLASSES, THING_CLASSES, held_out_frame, scene_spec, split_stream


class SyntheticInstances(InstanceDataset):
    """``n`` synthetic scenes, one frame each (``t`` drawn in ``0..max_t``), with exact instance truth."""

    classes = THING_CLASSES
    category_ids = (1, 2, 3)

    def __init__(self, n: int, size: ImageShape = ImageShape(240, 320), seed: int = 0, *, stream: int = 1,
                 max_objects: int = 6, max_t: int = 400):
        if n < 0:
            raise InputError(f"SyntheticInstances size must be >= 0, got {n}")
        self.n, self.size, self.seed, self.stream = int(n), size, int(seed), int(stream)
        self.max_objects, self.max_t = max_objects, max_t

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> InstanceSample:
        if not -self.n <= index < self.n:
            raise IndexError(index)
        index %= self.n
        frame = held_out_frame(self.size, self.seed, self.stream, index, self.max_objects, self.max_t)
        inst = frame.instances
        classes = (np.asarray(inst.classes, np.int64) - len(STUFF_CLASSES)).astype(np.int32)
        masks = inst.masks if inst.masks is not None else np.zeros((0, *self.size.hw), bool)
        truth = InstanceTruth(masks=masks, classes=classes, category_ids=classes.astype(np.int64) + 1,
                              boxes=np.asarray(inst.boxes, np.float32), iscrowd=np.zeros(len(classes), bool),
                              area=masks.reshape(len(masks), -1).sum(1).astype(np.float64), image_shape=self.size,
                              ids=np.arange(1, len(classes) + 1, dtype=np.int64))
        return InstanceSample(f"synthetic_{self.seed}_{self.stream}_{index:06d}", index, None, truth, preloaded=frame.image)

    def __iter__(self):
        return (self[i] for i in range(self.n))


@DATASETS.register("synthetic-instance")
def _open(args: list[str], options: dict[str, str], split: str) -> SyntheticInstances:
    n, size, seed, k = scene_spec("synthetic-instance", args, options, ImageShape(240, 320))
    return SyntheticInstances(n, size, seed, stream=split_stream(split), max_objects=k)


__all__: Sequence[str] = ["SyntheticInstances"]
