"""Progress of a long training epoch where no terminal shows a bar.

``nohup edgeseg train ... > train.log`` (or any run whose stderr is a file) used to write nothing until an
epoch ended, which on two CPU cores can be an hour. :func:`epoch_progress` gives the trainers one object
with tqdm's ``update`` / ``set_postfix`` / ``close`` interface: a tqdm bar on a terminal, otherwise
:class:`LogProgress`, which logs one INFO line at most every ``every`` seconds::

    epoch 1/3: 150/626 steps (24%), loss 0.8312, lr 9.10e-04; 4.61 s a step, about 36 min left
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

from .._timing import format_remaining

log = logging.getLogger("edgeseg.train")
LOG_EVERY_S = 60.0


class LogProgress:
    """A tqdm stand-in for logs: ``update`` counts steps and logs a line when ``every`` seconds have
    passed since the last one (never for the last step: the epoch's own summary line follows)."""

    def __init__(self, total: int, desc: str, *, every: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger | None = None) -> None:
        self.total, self.desc, self.every, self.clock = int(total), desc, float(every), clock
        self.log = logger or log
        self.n = 0
        self.closed = False
        self.postfix = ""
        self.t0 = self.last = clock()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """The values the next line shows (set them before ``update``, as the trainers do)."""
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if self.closed or now - self.last < self.every or self.n >= self.total:
            return
        self.last = now
        per_step = (now - self.t0) / self.n
        self.log.info("%s: %d/%d steps (%.0f%%)%s; %.2f s a step, about %s left", self.desc, self.n, self.total,
                      100.0 * self.n / self.total, self.postfix, per_step,
                      format_remaining(per_step * (self.total - self.n)))

    def close(self) -> None:
        """No more lines: an update after the epoch ended (a caller that keeps counting) stays quiet."""
        self.closed = True


def epoch_progress(total: int, desc: str, *, enabled: bool = True, every: float | None = None):
    """A tqdm bar when stderr is a terminal, :class:`LogProgress` lines (every ``every`` seconds, default
    :data:`LOG_EVERY_S`) when it is not, and a disabled bar when ``enabled`` is false (``--no-progress``)."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return LogProgress(total, desc, every=LOG_EVERY_S if every is None else every)
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
