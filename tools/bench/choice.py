"""Is the automatic choice (``edgeseg.load(b)``, ``edgeseg run``) ever slower than the fastest FP32 runtime?

For each bundle: the choice is made as a user's first run makes it (no cache), then every candidate
the bundle has here (FP32 on ONNX Runtime and OpenVINO, bf16 where the CPU has it, each gated INT8
model on each runtime that runs it) is timed again, side by side in interleaved rounds, in a
*separate* measurement, and the chosen one is compared with the fastest FP32 runtime of that
measurement. Goal (issue 10): chosen <= 1.05 x fastest FP32, and INT8 where chosen faster than it.

    bash tools/bench/espnet_import.sh /tmp/ext      # makes /tmp/ext/espnet.edgeseg (minutes)
    python tools/bench/choice.py road shapes /tmp/ext/espnet.edgeseg --threads 0 --rounds 30 --json out.json

Run from the repository root. Every bundle is opened before any timing starts; one that does not
open stops the script at once (exit 2) with its name and how to make it. Prints a table and writes
JSON (with the machine). ``--threads 0`` is each runtime's default, as a
user runs it; ``--threads 1`` pins one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def bench_bundle(name: str, threads: int, rounds: int) -> dict:
    from edgeseg.backends import choice as ch
    from edgeseg.bundle import Bundle

    bundle = Bundle.open(name)
    os.environ["EDGESEG_CACHE_DIR"] = "off"  # a first run: decide by measuring
    decision, runner = ch.choose(bundle, threads=threads, use_cache=False)
    if runner is not None:
        runner.deactivate()
    facts = ch.gather_facts(bundle, threads=threads)
    cands, excluded = ch.list_candidates(facts)
    runners, failed = ch.activate_candidates(bundle, cands, "auto", threads)
    timings = ch.time_side_by_side(runners, ch.timing_feed(bundle), rounds=rounds, warmup=3, budget_s=600)
    for r in runners.values():
        r.deactivate()
    fp32 = {c: ms for c, ms in timings.items() if c.precision == "fp32"}
    best_fp32 = min(fp32, key=fp32.get)
    chosen_ms = timings.get(decision.candidate, float("nan"))
    return {
        "bundle": bundle.name, "threads": threads, "chosen": decision.candidate.label, "reason": decision.reason,
        "chosen_ms": chosen_ms, "fastest_fp32": best_fp32.label, "fastest_fp32_ms": fp32[best_fp32],
        "chosen_vs_fastest_fp32": chosen_ms / fp32[best_fp32],
        "timings_ms": {c.label: ms for c, ms in sorted(timings.items(), key=lambda kv: kv[1])},
        "left_out": {c.label: why for c, why in (*excluded, *failed)},
    }


def check_bundles(names: list[str]) -> list[str]:
    """Why each bundle of ``names`` that does not open fails (empty: all open). Run before any timing,
    so that a missing bundle stops the script in seconds, not after the first bundles' rounds."""
    from edgeseg.bundle import Bundle
    from edgeseg.errors import EdgesegError

    problems = []
    for name in names:
        try:
            Bundle.open(name)
        except (EdgesegError, OSError, ValueError) as e:
            how = ("make it first: bash tools/bench/espnet_import.sh " + str(Path(name).parent)
                   if "espnet" in Path(name).name else
                   "give a bundle directory or .zip, or a shipped name (edgeseg models --bundles)")
            problems.append(f"bundle {name!r} does not open: {str(e).splitlines()[0]}\n    {how}")
    return problems


def main(argv: list[str] | None = None) -> int:
    from edgeseg.backends.device import device_info

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", help="bundle paths or shipped names")
    p.add_argument("--threads", type=int, action="append", default=None, help="0: runtime default (repeatable)")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds of the check (default 30)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    problems = check_bundles(args.bundles)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    rows = [bench_bundle(b, t, args.rounds) for t in (args.threads or [0]) for b in args.bundles]
    dev = device_info()
    print(f"machine: {dev.describe()}")
    print(f"{'bundle':<16} {'thr':>3}  {'chosen':<24} {'ms':>8}  {'fastest FP32':<20} {'ms':>8}  {'ratio':>6}")
    for r in rows:
        print(f"{r['bundle']:<16} {r['threads'] or 'def':>3}  {r['chosen']:<24} {r['chosen_ms']:8.2f}  "
              f"{r['fastest_fp32']:<20} {r['fastest_fp32_ms']:8.2f}  {r['chosen_vs_fastest_fp32']:6.3f}")
        print("    all: " + ", ".join(f"{k} {v:.2f}" for k, v in r["timings_ms"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev.to_dict(), "rounds": args.rounds, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
