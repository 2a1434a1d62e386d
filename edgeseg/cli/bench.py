"""``edgeseg bench BUNDLE``: latency of a bundle on one or more backends."""
from __future__ import annotations

import argparse
import sys

from ._common import add_json_option, add_runtime_options, check_output, print_table, write_json

NAME = "bench"
HELP = ("latency of a bundle: what edgeseg predict / edgeseg.load would use here (default), given backends, or the "
        "whole matrix (--all)")
EXAMPLES = (
    "edgeseg bench road.edgeseg                          # times and names what 'edgeseg predict' would use here",
    "edgeseg bench road.edgeseg --threads 1              # what 'edgeseg run' uses on 2 cores (it leaves a core to "
    "the stream on up to 4: --threads CORES-1), and warms its cached choice",
    "edgeseg bench road.edgeseg --all --json matrix.json # every backend x precision x INT8 target, side by side",
    "edgeseg bench road.edgeseg --backend onnxruntime,openvino --runs 50 --json bench.json",
    "edgeseg bench road.edgeseg --backend onnxruntime --backend torch --threads 2 --size 960x720",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle path or the name of a bundle shipped with the package")
    p.add_argument("--runs", type=int, default=20,
                   help="timed runs per backend (default 20); with --all, interleaved rounds, each a block of back-to-back "
                        "calls per candidate (at least 3 and 0.15 s, the calls of the first 75 ms after the switch not counted)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="image size fed to the predictor (default: the bundle's network size, else 480x360)")
    p.add_argument("--all", action="store_true",
                   help="time every (backend, precision, INT8 target) the bundle supports here side by side, with accuracy "
                        "and gate, and mark the one the automatic choice takes")
    add_runtime_options(p, multi_backend=True)
    add_json_option(p)


MAX_PIXELS = 100_000_000  # --size: larger than any camera frame (8K: 33 M), and 300 MB of random pixels


def backends_of(values: list[str] | None) -> list[str]:
    """``["onnxruntime,torch", "openvino"]`` -> ``["onnxruntime", "torch", "openvino"]`` (default ``auto``)."""
    from ..errors import InputError

    names = [n.strip() for v in (values or ["auto"]) for n in v.split(",") if n.strip()]
    if not names:
        raise InputError(f"--backend {','.join(values or [])!r} names no backend",
                         fix="use one or more of auto, onnxruntime, openvino, tensorrt, torch (comma-separated)")
    return list(dict.fromkeys(names))


def stats(times_s: list[float]) -> dict[str, float]:
    """Median, p90 (linear interpolation) and mean in ms, and throughput (images/s from the median)."""
    from .._timing import Latency

    return row_of(Latency.of(times_s))


def row_of(lat) -> dict[str, float]:
    """A :class:`edgeseg._timing.Latency` as this command's table columns."""
    return {"median_ms": lat.p50_ms, "p90_ms": lat.p90_ms, "mean_ms": lat.mean_ms, "min_ms": lat.min_ms, "fps": lat.fps}


def bench_one(bundle, backend: str, args: argparse.Namespace, image) -> dict:
    from .._timing import Latency, time_runs
    from ..predictor import load

    predictor = load(bundle, backend=backend, precision=args.precision, target=args.target,
                     device=args.device, threads=args.threads)
    model: list[float] = []  # the runner's own inference time of every call, warm-up included

    def once():
        feed, meta = predictor.preprocess(image)
        outputs = predictor.runner.infer(feed)
        predictor.postprocess(outputs, meta)
        model.append(predictor.runner.last_latency_s)

    with predictor:
        feed, _ = predictor.preprocess(image)
        e2e = time_runs(once, args.runs, args.warmup)
    c = predictor.choice.candidate if predictor.choice is not None else None
    row = {"backend": predictor.backend, "precision": predictor.runner.precision,
           "target": c.target if c is not None else args.target, "input": "x".join(map(str, next(iter(feed.values())).shape)),
           "how": predictor.choice.how if predictor.choice is not None else "pinned"}
    row.update(row_of(Latency.of(model[args.warmup:])))
    row["e2e_median_ms"] = e2e.p50_ms
    return row


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..bundle import Bundle
    from ..errors import InputError
    from ..structures import ImageShape

    if args.json:
        check_output(args.json, "--json")  # before any timing: found at the end, the numbers would be lost
    if args.runs < 1 or args.warmup < 0:
        raise InputError(f"--runs must be >= 1 and --warmup >= 0, got {args.runs} and {args.warmup}")
    if args.threads < 0:  # --all times runners itself: nothing else would refuse it
        raise InputError(f"--threads must be >= 0 (0: the runtime's default), got {args.threads}")
    bundle = Bundle.open(args.bundle)
    size = ImageShape.parse(args.size) if args.size else (bundle.manifest.input.size or ImageShape(360, 480))
    if size.height * size.width > MAX_PIXELS:  # the random frame alone would take 3 bytes a pixel
        raise InputError(f"--size {args.size} is {size.height * size.width:,} pixels; bench feeds at most {MAX_PIXELS:,}",
                         fix="give a camera's frame size, e.g. --size 1920x1080 (an 8K frame is 33 million pixels)")
    image = np.random.default_rng(0).integers(0, 256, (size.height, size.width, 3), dtype=np.uint8)
    if args.all:
        return run_matrix(bundle, args)
    from ..errors import EdgesegError

    asked, rows, left = backends_of(args.backend), [], []
    for b in asked:  # several backends: one that cannot run this bundle is left out, as --all does (an audit: the
        try:         # bench stopped at torch on a bundle without a checkpoint, after timing onnxruntime)
            rows.append(bench_one(bundle, b, args, image))
        except EdgesegError as e:
            if len(asked) == 1:
                raise
            left.append({"backend": b, "why": str(e).splitlines()[0]})
            print(f"edgeseg bench: {b} left out: {left[-1]['why']}", file=sys.stderr)
    if not rows:
        raise InputError("no backend asked for can run this bundle here: " + "; ".join(f"{x['backend']}: {x['why']}"
                                                                                    for x in left),
                         fix="'edgeseg bench BUNDLE --all' lists every candidate and why each is left out")
    print(f"{bundle.name}: image {size}, {args.runs} warm runs after {args.warmup} warm-up, threads {args.threads or 'default'}")
    print_table(rows, ["backend", "precision", "target", "how", "input", "median_ms", "p90_ms", "fps", "e2e_median_ms"])
    write_json(args.json, {"bundle": str(bundle.source), "image": str(size), "runs": args.runs,
                           "warmup": args.warmup, "threads": args.threads, "results": rows,
                           **({"left_out": left} if left else {})})
    return 0


def _nothing_timed(bundle, args: argparse.Namespace, left: list[dict]) -> str:
    asked = ", ".join(f"--{k} {v}" for k, v in (("backend", ",".join(args.backend or [])), ("precision", args.precision),
                                                  ("target", args.target), ("device", args.device)) if v and v != "auto")
    kinds = sorted({m.precision + (f"/{m.target}" if m.target else "") for m in bundle.manifest.models})
    why = "every candidate was left out (above)" if left else (
        f"no candidate matches (the bundle has: {', '.join(kinds) or 'no model'}; fp32 runs on every backend, bf16 on openvino, "
        "fp16 on tensorrt, int8 on the runtimes of the bundle's INT8 targets)")
    return f"nothing of {bundle.name} can be timed here{' with ' + asked if asked else ''}: {why}"


def _nothing_fix(bundle, args: argparse.Namespace) -> str:
    if args.precision == "int8" and not any(m.precision == "int8" for m in bundle.manifest.models):
        return f"add an INT8 model first (edgeseg quantize {bundle.source}), or drop --precision int8"
    return "drop or change --backend/--precision/--target/--device; 'edgeseg bench BUNDLE --all' lists every candidate"


def run_matrix(bundle, args: argparse.Namespace) -> int:
    """``--all``: every candidate timed side by side (interleaved rounds), the ones left out with the
    reason, and the automatic choice's pick (decided from these very timings)."""
    from ..backends.choice import (Candidate, activate_candidates, decide, gather_facts, int8_gate, list_candidates,
                                   timed, timing_feed)
    from ..backends.device import device_info
    from ..errors import BackendUnavailable

    backend = backends_of(args.backend)[0] if args.backend else "auto"
    facts = gather_facts(bundle, backend, args.precision, args.threads)
    cands, excluded = list_candidates(facts, backend, args.precision, args.target, args.device)
    runners, failed = activate_candidates(bundle, cands, args.device, args.threads)
    try:  # close=0: no tie-break rounds, every row gets --runs rounds
        timings = timed(runners, timing_feed(bundle), rounds=args.runs, close=0.0, excluded=failed,
                        warmup=args.warmup, budget_s=600) if runners else {}
    finally:
        for r in runners.values():
            r.deactivate()
    best, reason = decide(timings) if timings else (None, "nothing could run")
    floats = [ms for c, ms in timings.items() if c.precision == "fp32"]
    fastest_fp32 = min(floats) if floats else float("nan")
    accuracy = bundle.report.get("accuracy", {}).get("fp32", {})
    metric = next(((name, key) for name, key in (("mIoU", "miou"), ("mask AP", "mask_ap"), ("PQ", "pq")) if key in accuracy), None)
    fp32 = f"{metric[0]} {100 * accuracy[metric[1]]:.2f}" if metric else "-"
    rows = []
    for c, ms in sorted(timings.items(), key=lambda kv: kv[1]):
        gate = (facts.int8_measured.get((c.target, c.backend)) or int8_gate(bundle, c.target)[1]) if c.precision == "int8" \
            else (facts.bf16[1] if c.precision == "bf16" else fp32)
        rows.append({**c.to_dict(), "median_ms": ms, "vs_fastest_fp32": fastest_fp32 / ms, "accuracy": gate,
                     "chosen": "<-" if c == best else ""})
    left = [{**c.to_dict(), "why": why} for c, why in (*excluded, *failed)]
    dev = device_info()
    print(f"{bundle.name} on {dev.describe()}: {len(timings)} candidates, {args.runs} interleaved rounds after "
          f"{args.warmup} warm-up, threads {args.threads or 'default'}")
    print_table([{**r, "target": r["target"] or "-"} for r in rows],
                ["backend", "precision", "target", "median_ms", "vs_fastest_fp32", "accuracy", "chosen"])
    for row in left:
        print(f"  left out {Candidate(row['backend'], row['precision'], row['target']).label}: {row['why']}")
    if best is not None:
        print(f"automatic choice: {best.label} ({reason})")
    if not rows:  # nothing was timed: not a benchmark (the reasons are printed above, when there are any)
        raise BackendUnavailable(_nothing_timed(bundle, args, left), fix=_nothing_fix(bundle, args))
    write_json(args.json, {"bundle": str(bundle.source), "device": dev.to_dict(), "runs": args.runs, "rounds": args.runs,
                           "warmup": args.warmup,
                           "threads": args.threads, "results": rows, "left_out": left,
                           "choice": None if best is None else {**best.to_dict(), "reason": reason}})
    return 0
