"""Latency samples -> percentiles, and the one timing loop every benchmark uses.

:class:`Latency` summarises wall times (seconds in, milliseconds out; percentiles by linear
interpolation, ``numpy.percentile``'s default, so ``p50_ms`` is the median). :func:`time_runs` calls a
function ``warmup`` times untimed, then ``runs`` times under ``time.perf_counter``. Asynchronous work
(CUDA kernels, which return before the GPU has run them) is timed by passing ``sync`` (e.g.
``torch.cuda.synchronize``): it is called before each timed call starts and inside its timing, after
the call, so every sample covers the device work of exactly that call.

Used by ``edgeseg bench``, the INT8 latency numbers, the stream metrics (re-exported as
``edgeseg.stream.metrics.Latency``) and the scripts in ``tools/bench``. numpy only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError

_NAN = float("nan")


@dataclass(frozen=True)
class Latency:
    """Latency statistics in milliseconds over ``count`` samples (NaN when there are none)."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    p90_ms: float = _NAN
    min_ms: float = _NAN

    @classmethod
    def of(cls, seconds: Sequence[float] | np.ndarray) -> "Latency":
        """Statistics of wall times given in seconds."""
        if len(seconds) == 0:
            return cls(0, _NAN, _NAN, _NAN, _NAN, _NAN)
        ms = np.asarray(seconds, np.float64) * 1e3
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        return cls(len(ms), float(ms.mean()), float(p50), float(p95), float(p99), float(ms.max()),
                   p90_ms=float(p90), min_ms=float(ms.min()))

    @property
    def median_ms(self) -> float:
        return self.p50_ms

    @property
    def fps(self) -> float:
        """Throughput from the median: ``1000 / p50_ms`` (inf for a zero median, NaN without samples)."""
        if self.count == 0:
            return _NAN
        return 1e3 / self.p50_ms if self.p50_ms > 0 else float("inf")


def time_runs(fn: Callable[[], Any], runs: int, warmup: int = 0, *, sync: Callable[[], Any] | None = None) -> Latency:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times timed one by one; their latency.

    sync: waits for work ``fn`` queued asynchronously (``torch.cuda.synchronize``); called untimed
    before each timed call (so earlier work, warm-up included, is not counted) and timed after it."""
    if runs < 0 or warmup < 0:
        raise InputError(f"time_runs: runs and warmup must be >= 0, got {runs} and {warmup}")
    for _ in range(warmup):
        fn()
    times = np.empty(runs, np.float64)
    for i in range(runs):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times[i] = time.perf_counter() - t0
    return Latency.of(times)
