"""Does the automatic choice time its candidates as a stream runs them?

A stream runs one model back to back. The choice times every candidate of a bundle in one process, so
a call can follow another runtime's call and pay for the switch (that runtime's worker threads still
spinning on the same cores, caches holding other weights). For each bundle and repetition, three
timings of the same active runners, taken one after the other:

- ``switching``: the method the choice used until session 38, one call per candidate per round;
- ``blocks``: the method it uses now (``edgeseg.backends.choice.time_side_by_side``): each round a
  block of back-to-back calls per candidate, the calls that pay for the switch not counted;
- ``alone``: each candidate by itself, ``--alone-runs`` calls back to back after 0.3 s of warm-up calls,
  the others idle: what a stream of that candidate sees (the reference).

Prints each method's figures, its mean relative distance from ``alone`` and whether ``decide`` picks
what it picks on ``alone``, and writes JSON with the machine:

    python tools/bench/choice_timing.py road street-panoptic shapes --reps 3 --json choice_timing.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def time_switching(runners, feed, rounds: int = 10) -> dict:
    """The pre-session-38 timing: one call per candidate per round, the order rotated each round."""
    import numpy as np

    order = list(runners)
    samples = {c: [] for c in order}
    for r in range(rounds):
        for i in range(len(order)):
            c = order[(r + i) % len(order)]
            t0 = time.perf_counter()
            runners[c].infer(feed, check=False)
            samples[c].append(time.perf_counter() - t0)
    return {c: float(np.median(s)) * 1e3 for c, s in samples.items()}


def time_alone(runner, feed, runs: int, warm_s: float = 0.3) -> float:
    """Median ms of ``runs`` back-to-back calls after ``warm_s`` of calls (at least 3): long past the ~40 ms
    during which the previous candidate's runtime still slows this one."""
    from edgeseg._timing import time_runs

    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < warm_s:
        runner.infer(feed, check=False)
        n += 1
    return time_runs(lambda: runner.infer(feed, check=False), runs).p50_ms


def bench_bundle(name: str, threads: int, reps: int, alone_runs: int) -> dict:
    import numpy as np

    from edgeseg.backends import choice as ch
    from edgeseg.bundle import Bundle

    bundle = Bundle.open(name)
    facts = ch.gather_facts(bundle, threads=threads)
    cands, _ = ch.list_candidates(facts)
    runners, failed = ch.activate_candidates(bundle, cands, "auto", threads)
    feed = ch.timing_feed(bundle)
    methods = ("switching", "blocks", "alone")
    runs: list[dict] = []
    try:
        for w in runners.values():  # each runner warm before any method times it
            for _ in range(2):
                w.infer(feed, check=False)
        for rep in range(reps):
            order = list(runners) if rep % 2 == 0 else list(reversed(runners))
            got = {"switching": time_switching(runners, feed),
                   "blocks": ch.time_side_by_side(runners, feed, warmup=1, budget_s=600),
                   "alone": {c: time_alone(runners[c], feed, alone_runs) for c in order}}
            runs.append(got)
    finally:
        for r in runners.values():
            r.deactivate()
    rows = []
    for c in runners:
        row = {"candidate": c.label}
        for m in methods:
            row[m] = float(np.median([g[m][c] for g in runs]))
        rows.append(row)
    summary = {}
    for m in methods:
        agree = sum(ch.decide(g[m])[0] == ch.decide(g["alone"])[0] for g in runs)
        dist = float(np.mean([abs(g[m][c] / g["alone"][c] - 1) for g in runs for c in runners]))
        summary[m] = {"picks_as_alone": f"{agree}/{len(runs)}", "mean_rel_distance_from_alone": dist,
                      "picks": [ch.decide(g[m])[0].label for g in runs]}
    return {"bundle": bundle.name, "threads": threads, "reps": reps, "rows": rows, "summary": summary,
            "left_out": {c.label: why for c, why in failed},
            "runs": [{m: {c.label: ms for c, ms in g[m].items()} for m in methods} for g in runs]}


def main(argv: list[str] | None = None) -> int:
    from edgeseg.backends.device import device_info

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", help="bundle paths or shipped names")
    p.add_argument("--threads", type=int, default=0, help="0: each runtime's default, as a user runs it")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the three timings (default 3)")
    p.add_argument("--alone-runs", type=int, default=30, help="timed calls of each candidate alone (default 30)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ["EDGESEG_CACHE_DIR"] = "off"  # the gates measured, nothing remembered from other runs
    dev = device_info()
    out = {"device": dev.to_dict(), "results": []}
    print(f"{dev.describe()}; threads {args.threads or 'default'}; medians over {args.reps} repetitions (ms)")
    for name in args.bundles:
        res = bench_bundle(name, args.threads, args.reps, args.alone_runs)
        out["results"].append(res)
        print(f"\n{res['bundle']}")
        print(f"{'candidate':32s}{'switching':>11s}{'blocks':>9s}{'alone':>9s}")
        for r in res["rows"]:
            print(f"{r['candidate']:32s}{r['switching']:11.2f}{r['blocks']:9.2f}{r['alone']:9.2f}")
        for m, s in res["summary"].items():
            if m != "alone":
                print(f"  {m}: {100 * s['mean_rel_distance_from_alone']:.0f}% from alone on average; "
                      f"picks what alone picks in {s['picks_as_alone']} ({', '.join(s['picks'])})")
        print(f"  alone picks: {', '.join(res['summary']['alone']['picks'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
