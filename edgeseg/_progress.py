"""Progress of long jobs where no progress bar shows (a log: nohup, cron, CI, a service)."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ._timing import format_remaining

T = TypeVar("T")

#: set by the CLI when its log level is above INFO (``-q``): progress lines and notes are left out, as INFO lines are
QUIET = False


class LogProgress:
    """Progress of a long job for a log (stderr not a terminal: nohup, cron, CI, a service), with tqdm's ``update`` /
    ``set_postfix`` / ``close`` interface: one line every ``every_s`` seconds, never for the last step (the job's own
    summary follows it)::

        edgeseg predict: 1200/5000 images (24%); 36.1 a second, about 105 s left
        epoch 1/3: 150/626 steps (24%), loss 0.8312, lr 9.10e-04; 4.61 s a step, about 36 min left

    Printed to stderr, or logged at INFO on ``logger`` (the trainers: their lines take the log's timestamps). Before,
    a batch job under nohup said nothing until its end, and the trainers and the other jobs had two copies of this."""

    def __init__(self, what: str, total: int | None, unit: str = "image", every_s: float = 30.0, enabled: bool = True,
                 *, logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic,
                 seconds_each: bool = False):
        self.seconds_each = seconds_each  # the pace as seconds a unit (the trainers' steps), not units a second
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.logger, self.clock = logger, clock
        # (QUIET: -q, --log-level warning: no progress lines either; a terminal's bar is tqdm's, not these lines; a
        # logger's lines follow its own level)
        self.enabled = enabled and (logger is not None or (not sys.stderr.isatty() and not QUIET))
        self.t0 = self.last = clock()
        self.n = 0
        self.postfix = ""

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """The values the next line shows after the count (set them before ``update``, as the trainers do)."""
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def update(self, k: int = 1) -> None:
        self.n += k
        now = self.clock()
        if not self.enabled or now - self.last < self.every_s or (self.total and self.n >= self.total):
            return
        self.last = now
        self._say(self.line(now - self.t0))

    def line(self, elapsed: float) -> str:
        """The line for ``n`` done in ``elapsed`` seconds."""
        rate = self.n / max(elapsed, 1e-9)
        article = "an" if self.unit[:1] in "aeiou" else "a"
        pace = (f"{rate:.1f} a second" if rate >= 1.0 and not self.seconds_each
                else f"{1.0 / max(rate, 1e-9):.2f} s {article} {self.unit}")
        if not self.total:  # (a count not known: a stream, a video without one)
            return f"{self.what}: {self.n} {self.unit}s{self.postfix}; {pace}"
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta = f"about {format_remaining(left)} left" if left < 1e6 else "time left unknown"
        return (f"{self.what}: {self.n}/{self.total} {self.unit}s ({100.0 * self.n / self.total:.0f}%)"
                f"{self.postfix}; {pace}, {eta}")

    def _say(self, text: str) -> None:
        if self.logger is not None:
            self.logger.info("%s", text)
        else:
            print(text, file=sys.stderr, flush=True)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """No more lines: an update after it (a caller that keeps counting) stays quiet."""
        self.enabled = False


def bar(total: int | None, desc: str, unit: str = "frame", enabled: bool = True, every_s: float = 30.0) -> Any:
    """A progress display with tqdm's ``update``/``close`` and context interface: tqdm's bar at a terminal,
    :class:`LogProgress` lines (one every ``every_s``) where stderr is a log, nothing when not ``enabled``
    (``--no-progress``). Session 57 (an operator's audit): ``quantize`` under nohup or a service wrote its tqdm bars'
    carriage returns and cursor codes into the log, 51 of them in a 22 s job."""
    if enabled and not sys.stderr.isatty():
        return LogProgress(desc, total, unit, every_s)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


def tracked(items: Iterable[T], desc: str, unit: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """``items``, counted on :func:`bar` as they are taken."""
    with bar(len(items) if total is None else total, desc, unit, enabled) as b:  # type: ignore[arg-type]
        for x in items:
            yield x
            b.update(1)
