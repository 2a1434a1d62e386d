"""Feeding datasets (sequences of :class:`edgeseg.data.Sample`) to the training loop.

:class:`TrainSet` augments (seeded by ``(seed, epoch, index)``) and normalises with the model's
:meth:`InputSpec.normalize <edgeseg.structures.InputSpec.normalize>` (colour order, mean/std/scale), the
pixel step of :meth:`InputSpec.preprocess`, so training sees the tensor every runtime will feed.
:class:`EvalSet` runs ``preprocess`` itself (resized to the network size) and keeps the labels at
their original size (metrics are computed at the labels' resolution).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from ..structures import ImageShape, InputSpec
from .augment import AugmentConfig, augment
from .copy_paste import RareClassPaste, paste_classes


class TrainSet:
    """Augmented training samples as ``(float32 [3, h, w], int64 [h, w])``; call :meth:`set_epoch` per epoch.

    ``paste``: rare-class copy-paste (:mod:`edgeseg.train.copy_paste`); the donor is augmented on its own.
    ``teachers``: one :class:`~edgeseg.train.distill.Teacher` (or None) per part of a mixture (one for any
    other dataset); samples then carry a third element, the teacher's ``float32 [C, h, w]`` probabilities
    on the augmented frame (zeros for a part without a teacher)."""

    def __init__(self, dataset: Sequence, augment_cfg: AugmentConfig, spec: InputSpec, seed: int = 0,
                 paste: RareClassPaste | None = None, teachers: Sequence | None = None):
        self.dataset, self.cfg, self.spec, self.seed = dataset, augment_cfg, spec, int(seed)
        self.paste = paste
        self.teachers = list(teachers) if teachers else None
        # the student's class count as the teachers map onto it: the zeros a part without a teacher carries
        self._soft_classes = (next(int(t.members[0].map.shape[0]) for t in self.teachers if t is not None)
                              if self.teachers else 0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        sample = self.dataset[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        image, labels = augment(sample.image, sample.labels, self.cfg, rng)
        if self.paste is not None:
            prng = np.random.default_rng([self.seed, self.epoch, int(i), 41])
            j = self.paste.donor(prng)
            if j is not None:
                donor = self.dataset[j]
                d_image, d_labels = augment(donor.image, donor.labels, self.cfg, prng)
                image, labels = paste_classes(image, labels, d_image, d_labels, self.paste.classes)
        x = np.ascontiguousarray(self.spec.normalize(image).transpose(2, 0, 1))
        if self.teachers is None:
            return x, labels.astype(np.int64)
        part = self.dataset.part_of(i) if hasattr(self.dataset, "part_of") else 0
        teacher = self.teachers[part]
        soft = (teacher.probs(image) if teacher is not None else
                np.zeros((self._soft_classes, *labels.shape), np.float32))
        return x, labels.astype(np.int64), soft


class EvalSet:
    """Evaluation samples as ``(float32 [3, H', W'] at the network size, uint8 [H, W] original labels)``.

    Images go through :meth:`InputSpec.preprocess`, the runtime's own path, with the spec as the model
    under training takes it: float32 NCHW, stretched to ``size`` (``None``: each image at its own size).
    """

    def __init__(self, dataset: Sequence, size: ImageShape | None, spec: InputSpec):
        self.dataset, self.size = dataset, size
        self.spec = replace(spec, layout="NCHW", dtype="float32", resize="resize", size=size,
                            size_rule="any" if size is None else "fixed")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        sample = self.dataset[i]
        x, _ = self.spec.preprocess(sample.image)
        return x[0], sample.labels


def collate_train(batch: list[tuple[np.ndarray, ...]]):
    """``(images, labels)``, or ``(images, labels, teacher probabilities)`` when distilling."""
    import torch

    return tuple(torch.from_numpy(np.stack([b[k] for b in batch])) for k in range(len(batch[0])))


def collate_eval(batch: list[tuple[np.ndarray, np.ndarray]]):
    import torch

    return torch.from_numpy(np.stack([b[0] for b in batch])), [b[1] for b in batch]


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 8
    workers: int = 0
    seed: int = 0
    drop_last: bool = True


class SkipFirst:
    """A sampler: ``base``'s indices without the first ``skip`` (a run resumed mid-epoch). The base
    sampler draws its order exactly as it would unwrapped, so the rest of the epoch is the same."""

    def __init__(self, base: Sequence[int] | Any, skip: int = 0):
        self.base, self.skip = base, max(0, int(skip))

    def __iter__(self) -> Iterator[int]:
        it = iter(self.base)
        for _ in range(self.skip):
            if next(it, None) is None:
                return
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def train_loader(train_set: TrainSet, cfg: LoaderConfig, epoch: int, indices: Sequence[int] | None = None,
                 skip_batches: int = 0) -> Any:
    """A DataLoader for one epoch: the shuffle order and augmentation depend only on (seed, epoch).

    ``indices``: the epoch's frames in order (rare-class sampling, :mod:`edgeseg.train.sampling`)
    instead of a shuffle of all frames. ``skip_batches``: leave out the epoch's first batches (a run
    resumed mid-epoch); the batches after them are those the whole epoch would give."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    train_set.set_epoch(epoch)
    g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    n = len(train_set) if indices is None else len(indices)
    drop = cfg.drop_last and n >= cfg.batch_size
    # the sampler DataLoader(shuffle=True, generator=g) would build, drawing from g at the same moments
    base = RandomSampler(train_set, generator=g) if indices is None else list(indices)
    return DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=SkipFirst(base, skip_batches * cfg.batch_size),
        generator=g,
        num_workers=cfg.workers,
        collate_fn=collate_train,
        drop_last=drop,
        persistent_workers=False,
    )


def eval_loader(eval_set: EvalSet, batch_size: int, workers: int = 0) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(eval_set, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_eval)


def permuted_indices(n: int, seed: int = 0, start: int = 0) -> Iterator[int]:
    """Endless dataset indices: sample k is ``perm_e[k % n]``, ``perm_e`` a permutation of ``range(n)``
    drawn from ``(seed, e = k // n)``; a pure function of ``(seed, k)`` starting at ``k = start``."""
    k, perm, perm_epoch = start, None, -1
    while True:
        e = k // n
        if e != perm_epoch:
            perm, perm_epoch = np.random.default_rng((seed, 7, e)).permutation(n), e
        yield int(perm[k % n])
        k += 1
