"""Training batches made by worker processes ahead of the step (the instance and panoptic trainers).

A trainer whose batch is a pure function of its step index (the sample stream is a pure function of
the sample index; augmentation draws from ``(seed, sample index)``) hands :func:`worker_batches` that
function: a DataLoader of worker processes (fork) then makes the batches of ``steps`` in order, the
same ones the training process would make itself, so a run's losses do not depend on the number of
workers. On a GPU the workers, not the step, are what the batch rate needs (docs/device.md).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from ..errors import InputError

WORKER_TIMEOUT_S = 300.0  # a batch worker silent this long is an error, not a hang
WORKER_READ_AHEAD = 4  # batches each worker makes ahead of the step (a speed probe must outlast them)


class StepBatches(torch.utils.data.Dataset):
    """Item k = ``make(steps[k])``, the batch of training step ``steps[k]``."""

    def __init__(self, make: Callable[[int], Any], steps: range):
        self.make, self.steps = make, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, k: int) -> Any:
        return self.make(self.steps[k])


def _quiet_worker(_: int) -> None:
    """Each batch worker computes on one torch thread (the workers are the parallelism). OpenCV's thread
    count is left alone: ``cv2.setNumThreads`` in a child forked after the parent ran OpenCV's pool
    (``--init`` re-estimates BatchNorms on training crops) waits forever for the parent's threads."""
    torch.set_num_threads(1)


def worker_batches(make: Callable[[int], Any], steps: range, workers: int, pin_memory: bool = False) -> Iterator[Any]:
    """``make(step)`` for each of ``steps`` in order, made by ``workers`` processes, each
    ``WORKER_READ_AHEAD`` batches ahead. A worker silent for ``WORKER_TIMEOUT_S`` is an
    :class:`InputError` naming the fix (``--workers 0``), not a hang."""
    import multiprocessing

    loader = torch.utils.data.DataLoader(
        StepBatches(make, steps), batch_size=None, shuffle=False, num_workers=workers,
        prefetch_factor=WORKER_READ_AHEAD, worker_init_fn=_quiet_worker, timeout=WORKER_TIMEOUT_S,
        multiprocessing_context=multiprocessing.get_context("fork"), pin_memory=pin_memory)
    batches = iter(loader)
    while True:
        try:
            item = next(batches)
        except StopIteration:
            return
        except RuntimeError as e:
            if "timed out" not in str(e):
                raise
            raise InputError(f"a batch worker made nothing for {WORKER_TIMEOUT_S:g} s ({e})",
                             fix="train with --workers 0 (batches made in the training process)") from None
        yield item


def check_device_and_workers(device: str, workers: int) -> None:
    """The trainers' configs: ``device`` auto, cpu, cuda or cuda:N; ``workers`` >= 0."""
    from .trainer import check_device_name

    check_device_name(device)
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}", fix="0 prepares batches in the training process")


def _device_name(text: str) -> str:
    import argparse

    from .trainer import check_device_name

    try:
        return check_device_name(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).replace("\n ", ";")) from None


def add_device_options(p, made: str) -> None:
    """``--device`` and ``--workers`` for a training tool (``made``: what a batch worker makes)."""
    p.add_argument("--device", default="cpu", type=_device_name,
                   help="cpu (default), cuda or cuda:N: on a GPU the step runs in bf16 autocast, channels-last "
                        "(a machine choice, not a run setting: a resumed run may move)")
    p.add_argument("--workers", type=int, default=0,
                   help=f"processes making batches ({made}) ahead of the step; the batches are the same as "
                        "without (default 0: made in the training process)")
