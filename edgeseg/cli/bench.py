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
    import numpy as np

    t = np.asarray(times_s, np.float64) * 1e3
    med = float(np.median(t))
    return {"median_ms": med, "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "fps": 1e3 / med if med > 0 else float("inf")}


def bench_one(bundle, backend: str, args: argparse.Namespace, image) -> dict:
    import time

    from ..predictor import load

    predictor = load(bundle, backend=backend, precision=args.precision, target=args.target,
                     device=args.device, threads=args.threads)
    with predictor:
        feed, meta = predictor.preprocess(image)
        for _ in range(args.warmup):
            predictor(image)
        model, e2e = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            feed, meta = predictor.preprocess(image)
            outputs = predictor.runner.infer(feed)
            predictor.postprocess(outputs, meta)
            e2e.append(time.perf_counter() - t0)
            model.append(predictor.runner.last_latency_s)
    row = {"backend": predictor.backend, "precision": args.precision, "input": "x".join(map(str, next(iter(feed.values())).shape))}
    row.update(stats(model))
    row["e2e_median_ms"] = stats(e2e)["median_ms"]
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
