"""tools/bench/stream_cpu.py: CPU per thread of a real ``edgeseg run``, bounded by the kernel's own
accounting of the child process."""
from __future__ import annotations

import importlib.util
import json
import resource
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "bench" / "stream_cpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_stream_cpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_stream_cpu"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_stream_cpu", None)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_per_thread_cpu_of_a_stream_fits_in_the_processes_cpu(bench, tmp_path):
    """Threads' CPU comes in clock ticks (10 ms; this kernel has no schedstat): 40 frames at 466 fps counted 0 ticks
    once on a loaded machine, so the run is long enough to be counted (300 frames, about 0.6 s)."""
    out = tmp_path / "cpu.json"
    before = _children_cpu()
    rc = bench.main(["--rounds", "1", "--json", str(out), "--", "run", "--bundle", "shapes", "--source",
                     "synthetic://?frames=300", "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1"])
    spent = _children_cpu() - before  # the child's whole life: start-up, loading and the run
    assert rc == 0
    data = json.loads(out.read_text())
    (one,) = data["rounds"]
    assert one["frames"] == 300
    assert {"edgeseg-inference", "edgeseg-decode"} <= set(one["cpu_s"])  # the pipeline's threads, by name
    counted = sum(one["cpu_s"].values())
    assert 0 < counted <= spent + 0.02  # from the pipeline's start only: never more than the process used
    assert data["median_total_ms_per_frame"] == pytest.approx(1000 * counted / 300)


def test_the_stream_is_required(bench):
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "1", "--", "bench", "shapes"])
