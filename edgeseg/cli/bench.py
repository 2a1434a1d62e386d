"""``edgeseg bench BUNDLE``: latency of a bundle on one or more backends."""
from __future__ import annotations

import argparse

from ._common import add_json_option, add_runtime_options, print_table, write_json

NAME = "bench"
HELP = "latency table (median/p90 over warm runs, throughput) of a bundle on one or more backends"
EXAMPLES = (
    "edgeseg bench road.edgeseg",
    "edgeseg bench road.edgeseg --backend onnxruntime,openvino --runs 50 --json bench.json",
    "edgeseg bench road.edgeseg --backend onnxruntime --backend torch --threads 2 --size 960x720",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle path or the name of a bundle shipped with the package")
    p.add_argument("--runs", type=int, default=20, help="timed runs per backend (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="image size fed to the predictor (default: the bundle's network size, else 480x360)")
    add_runtime_options(p, multi_backend=True)
    add_json_option(p)


def backends_of(values: list[str] | None) -> list[str]:
    """``["onnxruntime,torch", "openvino"]`` -> ``["onnxruntime", "torch", "openvino"]`` (default ``auto``)."""
    names = [n.strip() for v in (values or ["auto"]) for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or ["auto"]


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
    row = {"backend": predictor.backend, "precision": args.precision, "input": "x".join(map(str, next(iter(feed.values())).shape))}
    row.update(row_of(Latency.of(model[args.warmup:])))
    row["e2e_median_ms"] = e2e.p50_ms
    return row


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..bundle import Bundle
    from ..errors import InputError
    from ..structures import ImageShape

    if args.runs < 1 or args.warmup < 0:
        raise InputError(f"--runs must be >= 1 and --warmup >= 0, got {args.runs} and {args.warmup}")
    bundle = Bundle.open(args.bundle)
    size = ImageShape.parse(args.size) if args.size else (bundle.manifest.input.size or ImageShape(360, 480))
    image = np.random.default_rng(0).integers(0, 256, (size.height, size.width, 3), dtype=np.uint8)
    rows = [bench_one(bundle, b, args, image) for b in backends_of(args.backend)]
    print(f"{bundle.name}: image {size}, {args.runs} warm runs after {args.warmup} warm-up, threads {args.threads or 'default'}")
    print_table(rows, ["backend", "precision", "input", "median_ms", "p90_ms", "fps", "e2e_median_ms"])
    write_json(args.json, {"bundle": str(bundle.source), "image": str(size), "runs": args.runs,
                           "warmup": args.warmup, "threads": args.threads, "results": rows})
    return 0
