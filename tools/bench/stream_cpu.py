#!/usr/bin/env python
"""Where a stream's CPU goes: CPU time per thread of ``edgeseg run``, in ms per frame.

On a machine whose cores the stream saturates (2 vCPUs: about 70 ms of CPU per 960x540 frame against
36 ms of wall time), stage latencies mislead: a stage waiting for a core looks slow. CPU time per
thread says what each part costs. Each round runs ``edgeseg run`` in a fresh process with the given
arguments, reads every thread's user + system time from ``/proc/self/task`` from the moment the
pipeline's first thread starts (imports, loading and the backend choice are left out) until the run
ends, and
names Python threads by their ``threading`` name (``edgeseg-inference``, ``edgeseg-decode``, ...);
native threads keep the kernel's name (GStreamer's ``multiqueue0:src`` decodes the source,
``edgeseg_src:src`` is the MP4 sink's appsrc thread, which converts and encodes, x264's own threads
inheriting its name). Rounds alternate nothing: run the variants you compare as separate invocations
close together, or better, as several rounds each.

    python tools/bench/stream_cpu.py --rounds 3 --json cpu.json -- \\
        run --bundle road --source ../shared/data/video/dashcam_960x540.mp4 --sink /tmp/out.mp4

Prints one row per thread (median ms of CPU per frame over the rounds, share of the total) and the
runs' fps; ``--json`` writes every round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _child(out: str, argv: list[str]) -> int:
    """Run ``edgeseg`` with ``argv`` in this process and write per-thread CPU seconds to ``out``."""
    import threading

    sys.path.insert(0, str(ROOT))
    names = {threading.get_native_id(): "main"}
    run = threading.Thread.run
    tick = os.sysconf("SC_CLK_TCK")
    seen: dict[int, tuple[str, float]] = {}
    start: dict[int, float] = {}  # CPU already spent when the pipeline's first thread started

    def sample(into: dict | None = None):
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            except OSError:  # the thread ended between listing and reading
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            seen[int(tid)] = (comm, cpu)
            if into is not None:
                into[int(tid)] = cpu

    def named_run(self):
        names[threading.get_native_id()] = self.name
        if self.name.startswith("edgeseg-") and not start:  # imports, loading, the backend choice: not per frame
            sample(start)
        return run(self)

    threading.Thread.run = named_run

    stop = threading.Event()

    def poll():  # threads that end before the run does are counted from their last sample
        while not stop.wait(0.1):
            sample()

    poller = threading.Thread(target=poll, name="stream_cpu-poller", daemon=True)
    poller.start()
    from edgeseg.cli import main

    code = main(argv)
    stop.set()
    poller.join()
    sample()
    per: dict[str, float] = {}
    for tid, (comm, cpu) in seen.items():
        name = names.get(tid, comm)
        if name != "stream_cpu-poller":
            per[name] = per.get(name, 0.0) + cpu - start.get(tid, 0.0)
    Path(out).write_text(json.dumps({"code": code, "threads": per}))
    sys.stdout.flush()
    os._exit(code or 0)  # as the CLI exits: GStreamer's threads are not joined


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="fresh runs (default 3)")
    p.add_argument("--json", default=None, help="write every round here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("edgeseg", nargs=argparse.REMAINDER, help="-- then the edgeseg arguments: run --bundle ... --source ...")
    args = p.parse_args(argv)
    cmd = args.edgeseg[1:] if args.edgeseg[:1] == ["--"] else list(args.edgeseg)  # only the separator
    if args.child:
        return _child(args.child, cmd)
    if not cmd or cmd[0] != "run":
        p.error("give the stream after --: -- run --bundle B --source S [...]")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="stream_cpu-") as tmp:
        for r in range(args.rounds):
            out, stats = Path(tmp) / f"cpu{r}.json", Path(tmp) / f"stats{r}.json"
            child = [sys.executable, __file__, "--child", str(out), "--", *cmd, "--stats-json", str(stats)]
            proc = subprocess.run(child, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0 or not out.is_file() or not stats.is_file():
                print(f"stream_cpu: round {r + 1} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            st = json.loads(stats.read_text())
            frames = max(1, int(st.get("processed") or st.get("frames") or 0))
            cpu = json.loads(out.read_text())["threads"]
            rounds.append({"frames": frames, "fps": st.get("fps"), "cpu_s": cpu,
                           "ms_per_frame": {k: 1000 * v / frames for k, v in cpu.items()}})
            print(f"round {r + 1}: {frames} frames, {st.get('fps', 0):.1f} fps, "
                  f"{1000 * sum(cpu.values()) / frames:.1f} ms of CPU per frame", file=sys.stderr)
    names = sorted({k for r in rounds for k in r["ms_per_frame"]})
    med = {k: statistics.median(r["ms_per_frame"].get(k, 0.0) for r in rounds) for k in names}
    total = statistics.median(sum(r["ms_per_frame"].values()) for r in rounds)
    print(f"{'thread':<28} {'CPU ms/frame':>12} {'share':>7}")
    for k in sorted(med, key=med.get, reverse=True):
        if med[k] >= 0.05:
            print(f"{k:<28} {med[k]:>12.2f} {100 * med[k] / total:>6.1f}%")
    print(f"{'total':<28} {total:>12.2f}")
    fps = [r["fps"] for r in rounds if r["fps"]]
    if fps:
        print(f"fps: median {statistics.median(fps):.1f} over {len(fps)} rounds ({min(fps):.1f}-{max(fps):.1f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"command": cmd, "cores": os.cpu_count(), "median_ms_per_frame": med,
                                               "median_total_ms_per_frame": total, "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
