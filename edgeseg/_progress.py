"""Progress of long jobs where no progress bar shows (a log: nohup, cron, CI, a service)."""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: set by the CLI when its log level is above INFO (``-q``): progress lines and notes are left out, as INFO lines are
QUIET = False


class LogProgress:
    """Progress of a long job for a log (stderr not a terminal: nohup, cron, CI, a service): one line every
    ``every_s`` seconds, ``WHAT: 1200/5000 images, 36.1 a second, about 1m45s left``, where tqdm's bar shows only on
    a terminal (before, a batch job under nohup said nothing until its end)."""

    def __init__(self, what: str, total: int | None, unit: str = "image", every_s: float = 30.0, enabled: bool = True):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        # (QUIET: -q, --log-level warning: no progress lines either; a terminal's bar is tqdm's, not these lines)
        self.enabled = enabled and not sys.stderr.isatty() and not QUIET
        self.t0 = self.last = time.monotonic()
        self.n = 0

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every_s or (self.total and self.n >= self.total):
            return
        self.last = now
        rate = self.n / max(now - self.t0, 1e-9)
        if not self.total:  # (a count not known: a stream, a video without one)
            print(f"{self.what}: {self.n} {self.unit}s, {rate:.1f} a second", file=sys.stderr, flush=True)
            return
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta = f"about {int(left // 60)}m{int(left % 60):02d}s left" if left < 1e6 else "time left unknown"
        print(f"{self.what}: {self.n}/{self.total} {self.unit}s, {rate:.1f} a second, {eta}", file=sys.stderr,
              flush=True)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """No more lines (an update after it stays quiet)."""
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
