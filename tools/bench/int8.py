"""FP32 vs INT8: latency (ONNX Runtime CPU; OpenVINO when installed) and mIoU on CamVid val.

    python tools/bench/int8.py BUNDLE [BUNDLE ...] --calib calibration/camvid.toml \
        --eval camvid:../shared/data/camvid --threads 1 --json int8_bench.json
    python tools/bench/int8.py --make deeplabv3plus_resnet18,pspnet_resnet18,fcn8s_vgg16,unet --size 480x360 \
        --calib synthetic:32 --latency-only --cpu-variants

Accuracy counts only on trained weights: pass --latency-only for untrained bundles (the table then
says "untrained: latency only"). --cpu-variants also times the CPU quantization choices (U8S8,
S8S8, U8S8 with reduced-range weights) against FP32 and reports their output agreement with FP32.
--make exports untrained models from the registry (latency work before the trained models exist).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

CPU_VARIANTS = {
    "u8s8": {},
    "s8s8": {"activation_type": "int8", "activation_symmetric": True},
    "u8s8-reduce": {"reduce_range": True},
}


def make_bundles(names: str, size: str, out: Path) -> list[Path]:
    from edgeseg.export import export_bundle
    from edgeseg.models import create_model
    from edgeseg.structures import CAMVID_CLASSES, ImageShape, InputSpec

    spec = InputSpec(size=ImageShape.parse(size))
    paths = []
    for name in names.split(","):
        model = create_model(name, num_classes=len(CAMVID_CLASSES))
        paths.append(export_bundle(model, out / f"{name}.edgeseg", name=name, classes=CAMVID_CLASSES, input_spec=spec, overwrite=True).root)
    return paths


def openvino_latency(model: Path, feed: dict, threads: int, runs: int) -> float | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    cfg = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    compiled = core.compile_model(str(model), "CPU", cfg)
    req = compiled.create_infer_request()
    x = next(iter(feed.values()))
    for _ in range(3):
        req.infer([x])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        req.infer([x])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def cpu_variants(bundle, frames, threads: int, runs: int) -> list[dict]:
    """Time and compare the CPU quantization choices on one bundle (the data behind the cpu profile)."""
    from edgeseg.quant import accuracy as acc
    from edgeseg.quant.calibration import FeedReader
    from edgeseg.quant.prepare import prepare_model
    from edgeseg.quant.profiles import get_profile
    from edgeseg.quant.quantize import quantize_model
    from edgeseg.quant.ranges import calibrate

    spec = bundle.manifest.input
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "p.onnx"
        prepare_model(bundle.model_path("fp32"), prepared)
        feed = {spec.name: spec.preprocess(frames[0])[0]}
        ref = acc.make_session(prepared, threads).run(None, feed)[0]
        rows.append({"variant": "fp32", "latency_ms": acc.measure_latency_ms(prepared, feed, threads, runs)})
        for name, over in CPU_VARIANTS.items():
            prof = replace(get_profile("cpu"), **over)
            table = calibrate(prepared, FeedReader(frames, spec), "minmax", symmetric=prof.activation_symmetric)
            out = Path(tmp) / f"{name}.onnx"
            quantize_model(prepared, out, prof, table)
            got = acc.make_session(out, threads).run(None, feed)[0]
            agree = float((got.argmax(1) == ref.argmax(1)).mean() * 100) if got.ndim == 4 else float("nan")
            rel = float(np.abs(got - ref).mean() / (np.abs(ref).mean() + 1e-12))
            rows.append({"variant": name, "latency_ms": acc.measure_latency_ms(out, feed, threads, runs),
                         "rel_err": rel, "argmax_agree_%": agree})
    return rows


def bench_one(path: Path, args) -> dict:
    from edgeseg.bundle import Bundle
    from edgeseg.quant import quantize_bundle
    from edgeseg.quant.calibration import collect_frames, resolve_calibration

    b = Bundle.open(path)
    eval_ds = None
    if args.eval and not args.latency_only:
        from edgeseg.data import open_dataset

        eval_ds = open_dataset(args.eval, split=args.split)
    recipe = resolve_calibration(args.calib, frames=args.frames, method=args.method)
    frames = collect_frames(recipe, progress=False)
    row: dict = {"bundle": b.name, "weights": "untrained: latency only" if args.latency_only else "trained"}
    for target in args.targets.split(","):
        r = quantize_bundle(b, frames, target=target, method=recipe.method, eval_dataset=eval_ds, max_drop=args.max_drop,
                            threads=args.threads, progress=False)
        row[target] = {"fp32_ms": r.latency_ms["fp32"], "int8_ms": r.latency_ms["int8"], "speedup": r.speedup,
                       "fp32_miou": r.fp32_score if eval_ds else None, "int8_miou": r.int8_score if eval_ds else None,
                       "float_nodes": len(r.float_nodes)}
        feed = {b.manifest.input.name: b.manifest.input.preprocess(frames[0])[0]}
        ov = openvino_latency(Bundle.open(path).model_path("int8", target), feed, args.threads, args.runs)
        if ov is not None:
            row[target]["openvino_int8_ms"] = ov
            row[target]["openvino_fp32_ms"] = openvino_latency(b.model_path("fp32"), feed, args.threads, args.runs)
    if args.cpu_variants:
        row["cpu_variants"] = cpu_variants(b, frames[: min(len(frames), 16)], args.threads, args.runs)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="*", type=Path)
    p.add_argument("--make", default=None, help="comma-separated registry model names to export (untrained)")
    p.add_argument("--size", default="480x360")
    p.add_argument("--calib", default="camvid")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--method", default=None)
    p.add_argument("--eval", default=None, help="e.g. camvid:../shared/data/camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--targets", default="cpu")
    p.add_argument("--max-drop", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--latency-only", action="store_true", help="weights are untrained: report latency only")
    p.add_argument("--cpu-variants", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    paths = list(args.bundles)
    tmp = None
    if args.make:
        tmp = tempfile.mkdtemp(prefix="edgeseg-bench-")
        paths += make_bundles(args.make, args.size, Path(tmp))
    if not paths:
        p.error("give bundles, or --make MODEL[,MODEL...]")
    rows = []
    for path in paths:
        row = bench_one(path, args)
        rows.append(row)
        print(json.dumps(row, indent=1, default=float), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
