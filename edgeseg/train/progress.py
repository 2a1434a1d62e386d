"""Progress of a long training epoch where no terminal shows a bar.

``nohup edgeseg train ... > train.log`` (or any run whose stderr is a file) used to write nothing until an
epoch ended, which on two CPU cores can be an hour. :func:`epoch_progress` gives the trainers one object
with tqdm's ``update`` / ``set_postfix`` / ``close`` interface: a tqdm bar on a terminal, otherwise
:class:`~edgeseg._progress.LogProgress` (the other long jobs' lines), which logs one INFO line at most every
:data:`LOG_EVERY_S` seconds::

    epoch 1/3: 150/626 steps (24%), loss 0.8312, lr 9.10e-04; 4.61 s a step, about 36 min left
"""
from __future__ import annotations

import logging
import sys

from .._progress import LogProgress
from .._timing import format_remaining

__all__ = ["LOG_EVERY_S", "LogProgress", "epoch_progress", "format_remaining"]

log = logging.getLogger("edgeseg.train")
LOG_EVERY_S = 60.0


def epoch_progress(total: int, desc: str, *, enabled: bool = True, every: float | None = None):
    """A tqdm bar when stderr is a terminal, :class:`LogProgress` lines logged on ``edgeseg.train`` (every ``every``
    seconds, default :data:`LOG_EVERY_S`) when it is not, and a disabled bar when ``enabled`` is false
    (``--no-progress``)."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return LogProgress(desc, int(total), "step", LOG_EVERY_S if every is None else every, logger=log,
                           seconds_each=True)
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
