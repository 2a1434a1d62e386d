"""edgeseg._timing: Latency percentiles against hand-computed values, and time_runs' loop."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg._timing import Latency, time_runs
from edgeseg.errors import InputError


def test_latency_of_hand_computed():
    lat = Latency.of([0.001, 0.002, 0.003, 0.004, 0.010])  # seconds
    # linear interpolation on 1,2,3,4,10 ms: rank 0.9*4 = 3.6 -> 4 + 0.6*6 = 7.6; 0.95*4 = 3.8 -> 8.8; 0.99*4 = 3.96 -> 9.76
    assert lat.count == 5
    assert lat.p50_ms == pytest.approx(3.0) and lat.median_ms == pytest.approx(3.0)
    assert lat.p90_ms == pytest.approx(7.6) and lat.p95_ms == pytest.approx(8.8) and lat.p99_ms == pytest.approx(9.76)
    assert lat.mean_ms == pytest.approx(4.0) and lat.min_ms == pytest.approx(1.0) and lat.max_ms == pytest.approx(10.0)
    assert lat.fps == pytest.approx(1e3 / 3.0)


def test_latency_of_nothing_is_nan():
    lat = Latency.of(np.zeros(0))
    assert lat.count == 0 and all(math.isnan(v) for v in (lat.mean_ms, lat.p50_ms, lat.p99_ms, lat.min_ms, lat.fps))


def test_time_runs_counts_calls_and_times_each_one():
    calls = []
    lat = time_runs(lambda: calls.append(1), runs=7, warmup=3)
    assert len(calls) == 10 and lat.count == 7  # warm-up calls are not timed
    assert 0 <= lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.max_ms


def test_time_runs_measures_sleeps():
    import time

    lat = time_runs(lambda: time.sleep(0.02), runs=3)
    assert 20.0 <= lat.min_ms < 200.0  # sleep never returns early; a loaded machine may add some


def test_time_runs_refuses_negative_counts():
    with pytest.raises(InputError, match="runs and warmup must be >= 0"):
        time_runs(lambda: None, runs=-1)


def test_stream_metrics_and_bench_share_it():
    from edgeseg.cli.bench import stats
    from edgeseg.stream.metrics import Latency as StreamLatency

    assert StreamLatency is Latency
    assert stats([0.001, 0.002, 0.003, 0.004, 0.010]) == pytest.approx(
        {"median_ms": 3.0, "p90_ms": 7.6, "mean_ms": 4.0, "min_ms": 1.0, "fps": 1e3 / 3.0})


def test_time_runs_sync_hook_order():
    events = []
    lat = time_runs(lambda: events.append("fn"), runs=2, warmup=1, sync=lambda: events.append("sync"))
    # warm-up untimed and unsynced; each timed call is fenced by sync before (untimed) and after (timed)
    assert events == ["fn", "sync", "fn", "sync", "sync", "fn", "sync"] and lat.count == 2


def test_time_runs_sync_covers_asynchronous_work():
    """Work queued by fn (a worker thread here, a CUDA stream on a GPU) counts only when sync waits for it. The
    launch is a put on a queue that a thread started beforehand works off (starting a thread per launch measured up
    to 33 ms on a loaded 2-core machine: Thread.start() waits for the new thread to be scheduled)."""
    import queue
    import threading
    import time

    work: queue.Queue = queue.Queue()

    def worker():
        while work.get() is not None:
            time.sleep(0.03)
            work.task_done()
        work.task_done()

    threading.Thread(target=worker, daemon=True).start()

    def launch():  # returns at once, like a CUDA kernel launch
        work.put(1)

    unsynced = time_runs(launch, runs=3)
    work.join()
    synced = time_runs(launch, runs=3, sync=work.join)
    work.put(None)
    assert unsynced.max_ms < 25.0  # the launch alone
    assert 30.0 <= synced.min_ms < 300.0  # the 30 ms of work, every sample
