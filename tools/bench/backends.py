#!/usr/bin/env python
"""PyTorch eager vs ONNX Runtime FP32 latency for each architecture of the model family.

Every real (non-test) variant from ``edgeseg.models.list_models`` is built with random weights,
exported to ONNX (Conv-BN folded, opset 19) with ``edgeseg.export.export_onnx``, and timed on the
same preprocessed 480x360 input through the two runners (``TorchRunner.from_module`` — the model as
trained, BN unfolded, ``torch.inference_mode`` — and ``OnnxRuntimeRunner``). One invocation, one
table; ``--json`` writes the numbers, rewritten after every model (``"complete": false`` until the
last), so a run stopped part-way keeps what it measured.

The registry has grown since issue 2's table (about 60 real variants now, some of them minutes each
at one thread); ``--documented`` restricts the run to the 17 architectures of that table in
docs/benchmarks.md, and ``--models`` takes comma-separated fnmatch patterns.

    OMP_NUM_THREADS=1 python tools/bench/backends.py --documented --runs 5 --warmup 1 --threads 1 \
        --json bench_backends.json
    python tools/bench/backends.py --models 'deeplabv3plus_*,unet*' --size 960x720
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg._io import write_json  # noqa: E402
from edgeseg.cli._common import print_table  # noqa: E402
from edgeseg.structures import ImageShape, InputSpec  # noqa: E402

# The 17 architectures of issue 2's table in docs/benchmarks.md ("Backends: PyTorch eager vs ONNX Runtime FP32").
DOCUMENTED = (
    "deeplabv3_mobilenetv3_large", "deeplabv3_resnet18", "deeplabv3_resnet50", "deeplabv3plus_mobilenetv2",
    "deeplabv3plus_mobilenetv3_large", "deeplabv3plus_mobilenetv3_small", "deeplabv3plus_resnet18",
    "deeplabv3plus_resnet50", "fcn16s_vgg16", "fcn32s_vgg16", "fcn8s_vgg16", "pspnet_mobilenetv2", "pspnet_resnet18",
    "pspnet_resnet50", "segnet_vgg16", "unet", "unet_small",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="*",
                   help="comma-separated fnmatch patterns over model names (default: all real variants)")
    p.add_argument("--documented", action="store_true",
                   help="only the 17 architectures of issue 2's table in docs/benchmarks.md (with --models: both)")
    p.add_argument("--size", default="480x360", help="input size WxH (default 480x360)")
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--runs", type=int, default=5, help="timed runs per backend (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for both runtimes (0: their default)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def time_runner(runner, feed, runs: int, warmup: int) -> tuple[dict, np.ndarray]:
    """Median and p90 of the runner's own inference time (``last_latency_s``) over ``runs`` calls."""
    from edgeseg._timing import Latency, time_runs

    out: dict[str, np.ndarray] = {}
    model: list[float] = []

    def once() -> None:
        out.update(runner.infer(feed))
        model.append(runner.last_latency_s)

    with runner:
        time_runs(once, runs, warmup)
    lat = Latency.of(model[warmup:])
    return {"median_ms": lat.p50_ms, "p90_ms": lat.p90_ms}, out["logits"]


def bench_model(name: str, args, spec: InputSpec, feed: dict, tmp: Path) -> dict:
    import torch

    from edgeseg.backends.onnxrt import OnnxRuntimeRunner
    from edgeseg.backends.pytorch import TorchRunner
    from edgeseg.export import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=args.num_classes).eval()
    t0 = time.perf_counter()
    onnx_path = export_onnx(model, tmp / f"{name}.onnx", spec)
    export_s = time.perf_counter() - t0
    pt, pt_out = time_runner(TorchRunner.from_module(model, spec, threads=args.threads), feed, args.runs, args.warmup)
    ort, ort_out = time_runner(OnnxRuntimeRunner(onnx_path, threads=args.threads), feed, args.runs, args.warmup)
    agree = float(np.mean(pt_out.argmax(1) == ort_out.argmax(1)))
    return {"model": name, "torch_median_ms": pt["median_ms"], "torch_p90_ms": pt["p90_ms"],
            "ort_median_ms": ort["median_ms"], "ort_p90_ms": ort["p90_ms"],
            "speedup": pt["median_ms"] / ort["median_ms"], "argmax_agreement": agree, "export_s": export_s}


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime
    import torch

    from edgeseg.models import list_models, model_info

    size = ImageShape.parse(args.size)
    spec = InputSpec(size=size)
    image = np.random.default_rng(0).integers(0, 256, (size.height, size.width, 3), dtype=np.uint8)
    x, _ = spec.preprocess(image)
    feed = {"images": x}  # the same input for every model and both runtimes
    names = sorted({n for pat in args.models.split(",") if pat.strip()
                    for n in list_models(pat.strip(), task="semantic") if not model_info(n).tiny})
    if args.documented:
        missing = [n for n in DOCUMENTED if n not in list_models("*", task="semantic")]
        if missing:
            print(f"backends.py: not in the model registry: {', '.join(missing)}", file=sys.stderr)
            return 2
        names = [n for n in names if n in DOCUMENTED]
    if not names:
        print(f"backends.py: no model matches {args.models!r}", file=sys.stderr)
        return 2
    machine = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
               "cpus": __import__("os").cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "torch_threads": torch.get_num_threads()}
    command = "python tools/bench/backends.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows: list[dict] = []

    def save(complete: bool) -> None:  # after every model: an interrupted run keeps what it measured
        write_json(args.json, {"command": command, "size": str(size), "runs": args.runs, "warmup": args.warmup,
                               "threads": args.threads, "machine": machine, "models": names, "complete": complete,
                               "results": rows})

    stopped = False
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        try:
            for i, name in enumerate(names, 1):
                print(f"... {name} ({i}/{len(names)})", file=sys.stderr, flush=True)
                rows.append(bench_model(name, args, spec, feed, Path(tmp)))
                save(complete=False)
        except KeyboardInterrupt:
            stopped = True
            print(f"stopped after {len(rows)} of {len(names)} models; the table and JSON hold those", file=sys.stderr)
    print(f"PyTorch eager vs ONNX Runtime FP32, input {size} (1x3x{size.height}x{size.width}), {args.runs} runs after "
          f"{args.warmup} warm-up, threads {args.threads or 'default'}; {machine['cpus']} CPUs {machine['machine']}")
    print_table(rows, ["model", "torch_median_ms", "torch_p90_ms", "ort_median_ms", "ort_p90_ms", "speedup", "argmax_agreement"])
    save(complete=not stopped)
    return 130 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
