"""Latency samples -> percentiles, and the one timing loop every benchmark uses.

:class:`Latency` summarises wall times (seconds in, milliseconds out; percentiles by linear
interpolation, ``numpy.percentile``'s default, so ``p50_ms`` is the median). :func:`time_runs` calls a
function ``warmup`` times untimed, then ``runs`` times under ``time.perf_counter``. Asynchronous work
(CUDA kernels, which return before the GPU has run them) is timed by passing ``sync`` (e.g.
``torch.cuda.synchronize``): it is called before each timed call starts and inside its timing, after
the call, so every sample covers the device work of exactly that call.

Used by ``edgeseg bench``, the INT8 latency numbers, the stream metrics (re-exported as
``edgeseg.stream.metrics.Latency``) and the scripts in ``tools/bench``. numpy only.

:class:`LoadProbe` says how much of the CPUs a timing asked for other processes took while it ran
(:data:`BUSY_LIMIT`: above it a measured decision is not trusted): the backend choice
(:mod:`edgeseg.backends.choice`) and the trainers' choice of a CPU training step
(:func:`edgeseg.train.precision.choose_cpu_step`) both use it.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError

_NAN = float("nan")


def format_remaining(seconds: float) -> str:
    """``"about 36 min"``-style text for an estimate (seconds under 2 minutes, hours above 2)."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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


# ---- how many CPUs a timing may use -----------------------------------------------------------------------
def usable_cores() -> int:
    """CPUs this process may use: its affinity mask (``taskset``), capped by a cgroup CPU quota (containers: Docker's
    ``--cpus``, systemd's ``CPUQuota=``; v1 or v2, this process's cgroup or one above it: :func:`cgroup_cpu_limit`),
    which set the runtimes' default thread counts and so which candidate is fastest."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, n if limit is None else min(n, limit))


def cgroup_cpu_limit(proc_cgroup: str = "/proc/self/cgroup", root: Any = None) -> int | None:
    """The fewest whole CPUs any CPU quota of this process's cgroups (and those above them) allows, rounded up: v2
    ``cpu.max`` (``QUOTA PERIOD`` or ``max``), v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``-1``: none). None
    where there is no quota or none can be read. Before, only ``/sys/fs/cgroup/cpu.max`` was read: a 1-CPU quota of
    cgroup v1 (Docker ``--cpus 1`` on such hosts) or below the root left 2 cores counted, and a choice timed without
    the quota was reused under it (an audit)."""
    from ._memory import CGROUP_ROOT, cgroup_folders

    limits = []
    for v2, folder in cgroup_folders("cpu", proc_cgroup, CGROUP_ROOT if root is None else root):
        with contextlib.suppress(OSError, ValueError, IndexError):  # no such file, unlimited or odd: no cap from it
            if v2:
                quota, period = (folder / "cpu.max").read_text().split()[:2]
            else:
                quota, period = ((folder / name).read_text().strip() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
            if quota not in ("max", "-1") and int(quota) > 0 and int(period) > 0:
                limits.append(max(1, -(-int(quota) // int(period))))
    return min(limits) if limits else None


# ---- how busy the machine was while something was timed ---------------------------------------------
#: share of the timed CPUs that other processes took above which a decision is not trusted (an
#: ``edgeseg run`` timed beside a busy job once cached ONNX Runtime FP32 for a bundle whose OpenVINO
#: bf16 is 1.5x faster on that idle machine); an idle machine measures 0.00-0.02
BUSY_LIMIT = 0.2
#: /proc/stat ``cpu`` columns that are CPU time someone else could have had: user, nice, system, irq,
#: softirq, steal (a VM's vCPU taken by the hypervisor); not idle or iowait
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def machine_busy_s(stat: str, ticks_per_s: float) -> float:
    """Busy CPU seconds of the whole machine, summed over CPUs, from the text of ``/proc/stat``."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            cols = [int(v) for v in line.split()[1:]]
            return sum(cols[i] for i in _BUSY_COLUMNS if i < len(cols)) / ticks_per_s
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def contended_share(others_busy: float, wall: float, cpus: int, demand: int) -> float:
    """Share of the ``demand`` CPUs a timing asked for that other processes took: their CPU use over
    ``wall`` seconds, less what the CPUs the timing left free could hold, over ``demand``; in [0, 1].
    One thread timed on 2 CPUs beside a one-core job: 0 (the job had its own CPU); 2 threads beside it:
    what the job took from them."""
    if wall <= 0 or cpus <= 0 or demand <= 0:
        return 0.0
    free = max(0, cpus - demand)
    return min(1.0, max(0.0, (others_busy / wall - free) / min(demand, cpus)))


# this process's own inference (other predictors' calls, other threads): /proc/stat cannot tell it from the timing
_INFER_LOCK = threading.Lock()
_INFER = [0.0, time.monotonic(), 0.0]  # CPU threads of the calls in flight, when that last changed, CPU-seconds so far


def inference_seconds(delta: float = 0.0) -> float:
    """CPU-seconds of this process's inference calls so far: each call's wall time times the CPU threads it runs on,
    summed over concurrent calls; ``delta`` a call's threads as it starts (+) and ends (-) (:func:`counted_inference`)."""
    with _INFER_LOCK:
        now = time.monotonic()
        n, t, total = _INFER
        total += n * (now - t)
        _INFER[:] = [n + delta, now, total]
        return total


@contextlib.contextmanager
def counted_inference(threads: float = 1.0):
    """Around one inference call on ``threads`` CPU threads (``Runner.infer``; 0 for one on a GPU)."""
    inference_seconds(threads)
    try:
        yield
    finally:
        inference_seconds(-threads)


@dataclass
class LoadProbe:
    """How much of the CPUs a timing asked for other processes took between :meth:`start` and
    :meth:`contended` (Linux ``/proc/stat`` less this process's own CPU time; 0.0 where ``/proc/stat``
    is missing). Not this process's own threads: runtimes' thread pools make interleaved timings wait
    on each other by design."""

    _t0: tuple[float, float, float] | None = None
    _infer0: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def _now() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                busy = machine_busy_s(f.read(), float(os.sysconf("SC_CLK_TCK")))
        except (OSError, ValueError):
            return None
        t = os.times()
        return busy, t.user + t.system, time.monotonic()

    def start(self, runners: Sequence[Any] = ()) -> "LoadProbe":
        """``runners``: the ones being timed, whose own calls :meth:`own_inference` leaves out."""
        self._t0 = self._now()
        self._infer0 = (inference_seconds(), sum(getattr(r, "cpu_seconds", 0.0) for r in runners), time.monotonic())
        return self

    def own_inference(self, demand: int, runners: Sequence[Any] = ()) -> float:
        """:func:`contended_share` of the CPUs that other inference calls of this process took since :meth:`start`
        (another predictor's, in other threads, which :meth:`contended` counts as this process's own): the
        process's CPU-seconds of inference less those of ``runners`` (the ones timed), for ``demand`` threads."""
        s0, r0, w0 = self._infer0
        others = (inference_seconds() - s0) - (sum(getattr(r, "cpu_seconds", 0.0) for r in runners) - r0)
        return contended_share(max(0.0, others), time.monotonic() - w0, usable_cores(), demand)

    def contended(self, demand: int) -> float:
        """:func:`contended_share` since :meth:`start`, for a timing that used ``demand`` threads."""
        t1 = self._now()
        if self._t0 is None or t1 is None:
            return 0.0
        (b0, o0, w0), (b1, o1, w1) = self._t0, t1
        return contended_share(max(0.0, (b1 - b0) - (o1 - o0)), w1 - w0, os.cpu_count() or 1, demand)
