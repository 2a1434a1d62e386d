"""FP32 vs INT8: latency (ONNX Runtime CPU; OpenVINO when installed) and mIoU on CamVid val.

Run from the repository root (the examples use ../shared/data and calibration/ relative paths).
Prints a table (one row per bundle and target; the ``--cpu-variants`` rows after it) and each
bundle's figures as JSON as they come; ``--json`` writes them all.

    python tools/bench/int8.py BUNDLE [BUNDLE ...] --calib calibration/camvid.toml \
        --eval camvid:../shared/data/camvid --threads 1 --json int8_bench.json
    python tools/bench/int8.py --make deeplabv3plus_resnet18,pspnet_resnet18,fcn8s_vgg16,unet --size 480x360 \
        --calib synthetic:32 --latency-only --cpu-variants

Accuracy counts only on trained weights: models made with --make are untrained, so their rows say
"untrained (--make)" and carry no accuracy figures even with --eval; --latency-only skips the
evaluation for bundles given by path too. mIoU is scored as ``edgeseg eval`` scores it.
--cpu-variants also times the CPU quantization choices (U8S8, S8S8, U8S8 with reduced-range
weights) against FP32 and reports their output agreement with FP32.
--make exports untrained models from the registry (latency work before the trained models exist).
Bundles given by path are quantized in a temporary copy, so a shipped bundle (edgeseg/zoo/...) is
left as it is; --in-place writes the INT8 models into the given bundles instead.

--openvino-compare: on the same model, calibration frames and evaluation set, OpenVINO/NNCF's own
default INT8 flow (OpenVINO reads the ONNX, ``nncf.quantize(ov_model, dataset)`` with default
parameters) against edgeseg's ``openvino`` target (NNCF with edgeseg's options and graph
preparation) and edgeseg's own Q/DQ (``--engine ort``); mIoU measured in OpenVINO, latency in
OpenVINO interleaved over rounds (min and median of per-round medians: the VM is shared):

    python tools/bench/int8.py edgeseg/zoo/shapes.edgeseg --calib calibration/synthetic.toml \
        --eval synthetic:100,size=160x120,seed=0 --openvino-compare --threads 1 --json ov.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeseg._timing import time_runs

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
    """Median OpenVINO CPU latency with OpenVINO's default precision hints (None without OpenVINO)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return None
    from edgeseg.quant.openvino import openvino_latency_ms

    return openvino_latency_ms(model, feed, threads, runs, warmup=3, precision="int8")  # "int8": no f32 pinning


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


def interleaved_latency(compiled: dict, feed: dict, rounds: int, iters: int) -> dict[str, dict[str, float]]:
    """Per model: min and median over rounds of the median latency of ``iters`` runs, the models
    taking turns each round so that load from other processes hits them alike."""
    reqs = {n: c.create_infer_request() for n, c in compiled.items()}
    for r in reqs.values():
        time_runs(lambda r=r: r.infer(feed), 0, 3)  # warm-up only
    meds: dict[str, list[float]] = {n: [] for n in reqs}
    for _ in range(rounds):
        for n, r in reqs.items():
            meds[n].append(time_runs(lambda r=r: r.infer(feed), iters).p50_ms)
    return {n: {"min_ms": float(np.min(v)), "median_ms": float(np.median(v))} for n, v in meds.items()}


def openvino_compare(path: Path, frames, eval_ds, method: str, args) -> list[dict]:
    """NNCF's default flow vs edgeseg's openvino target (and its ort engine) on one bundle."""
    import shutil

    import openvino as ov

    from edgeseg.bundle import Bundle
    from edgeseg.quant import accuracy as acc
    from edgeseg.quant import openvino as eov
    from edgeseg.quant import quantize_bundle
    from edgeseg.quant.calibration import FeedReader
    tmp = Path(tempfile.mkdtemp(prefix="edgeseg-ovcmp-"))
    try:
        b = Bundle.open(shutil.copytree(path, tmp / "b.edgeseg"))
        spec = b.manifest.input
        # the baseline starts from the bundle's FP32 ONNX as a user would hand it to OpenVINO
        ov.save_model(eov.nncf_default_openvino(b.model_path("fp32"), FeedReader(frames, spec)), str(tmp / "nncf_default.xml"))
        models = {"fp32 (OpenVINO, f32)": b.model_path("fp32"), "NNCF default (OpenVINO flow)": tmp / "nncf_default.xml"}
        for engine in ("nncf", "ort"):
            quantize_bundle(b, frames, target="openvino", engine=engine, method=None if engine == "nncf" else method,
                                eval_dataset=None, threads=args.threads, progress=False, latency=False)
            dst = tmp / f"edgeseg_{engine}.onnx"
            shutil.copy(Bundle.open(b.root).model_path("int8", "openvino"), dst)
            models[f"edgeseg openvino (engine {engine})"] = dst
        compiled = {n: eov.compile_cpu(p, args.threads, "fp32" if n.startswith("fp32") else "int8") for n, p in models.items()}
        feed = {spec.name: spec.preprocess(frames[0])[0]}
        lat = interleaved_latency(compiled, feed, args.rounds, args.runs)
        rows = []
        for n, p in models.items():
            row = {"bundle": b.name, "flow": n, **lat[n], "int8": eov.int8_execution(p, compiled[n]).to_dict()}
            if eval_ds is not None:
                row["miou"] = acc.DatasetScorer(eval_ds, b.manifest, threads=args.threads, runtime="openvino")(p)
            rows.append(row)
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_label(made: bool) -> str:
    """What the row's weights are: models exported by --make are untrained (registry defaults)."""
    return "untrained (--make)" if made else "trained"


def bench_one(path: Path, args, made: bool = False) -> dict:
    """One bundle: FP32 vs INT8 per target. ``made``: the bundle came from --make (untrained weights,
    so no accuracy figures)."""
    from edgeseg.bundle import Bundle
    from edgeseg.quant import quantize_bundle
    from edgeseg.quant.calibration import collect_frames, resolve_calibration

    b = Bundle.open(path)
    if not made and not args.in_place and not args.openvino_compare:  # --openvino-compare copies the bundle itself
        import atexit
        import shutil

        tmp = tempfile.mkdtemp(prefix="edgeseg-int8-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        path = Path(shutil.copytree(b.root, Path(tmp) / b.root.name))
        b = Bundle.open(path)
    eval_ds = None
    if args.eval and not args.latency_only and not made:
        from edgeseg.data import open_dataset

        eval_ds = open_dataset(args.eval, split=args.split)
    recipe = resolve_calibration(args.calib, frames=args.frames, method=args.method)
    frames = collect_frames(recipe, progress=False)
    row: dict = {"bundle": b.name, "weights": weights_label(made), "accuracy": eval_ds is not None}
    if args.openvino_compare:
        row["openvino_compare"] = openvino_compare(path, frames, list(eval_ds) if eval_ds is not None else None, recipe.method, args)
        print_compare(row["openvino_compare"])
        return row
    for target in args.targets.split(","):
        r = quantize_bundle(b, frames, target=target, method=None if target == "openvino" else recipe.method,
                            eval_dataset=eval_ds, max_drop=args.max_drop, threads=args.threads, progress=False)
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


def _f(v, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(rows: list[dict], targets: list[str]) -> None:
    """The FP32-vs-INT8 rows of ``bench_one`` as a plain table (mIoU "-" where not measured)."""
    head = (f"{'bundle':24s} {'target':9s} {'FP32 mIoU':>9s} {'INT8 mIoU':>9s} {'drop':>6s} {'FP32 ms':>8s} "
            f"{'INT8 ms':>8s} {'speed-up':>8s} {'float nodes':>11s} {'OV FP32 ms':>10s} {'OV INT8 ms':>10s}")
    print(head)
    print("-" * len(head))
    for row in rows:
        for t in targets:
            r = row.get(t)
            if r is None:
                continue
            drop = r["fp32_miou"] - r["int8_miou"] if r["fp32_miou"] is not None and r["int8_miou"] is not None else None
            print(f"{row['bundle'][:24]:24s} {t:9s} {_f(r['fp32_miou']):>9s} {_f(r['int8_miou']):>9s} {_f(drop):>6s} "
                  f"{_f(r['fp32_ms']):>8s} {_f(r['int8_ms']):>8s} {_f(r['speedup'], '{:.2f}x'):>8s} "
                  f"{r['float_nodes']:>11d} {_f(r.get('openvino_fp32_ms')):>10s} {_f(r.get('openvino_int8_ms')):>10s}")
    variants = [(row["bundle"], v) for row in rows for v in row.get("cpu_variants", [])]
    if variants:
        print(f"\n{'bundle':24s} {'cpu variant':12s} {'ORT ms':>8s} {'rel err':>8s} {'argmax agree %':>14s}")
        for name, v in variants:
            print(f"{name[:24]:24s} {v['variant']:12s} {_f(v['latency_ms']):>8s} {_f(v.get('rel_err'), '{:.4f}'):>8s} "
                  f"{_f(v.get('argmax_agree_%')):>14s}")
    print(f"(weights: {', '.join(sorted({r['bundle'] + ' ' + r['weights'] for r in rows}))})")


def print_compare(rows: list[dict]) -> None:
    print(f"{'flow':34s} {'min ms':>8s} {'median ms':>10s} {'mIoU':>7s}  INT8 layers in OpenVINO")
    for r in rows:
        miou = f"{r['miou']:7.2f}" if r.get("miou") is not None else "      -"
        print(f"{r['flow']:34s} {r['min_ms']:8.3f} {r['median_ms']:10.3f} {miou}  {r['int8']['int8_layers']} "
              f"(others {r['int8']['other_layers']})", flush=True)


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--latency-only", action="store_true", help="skip the accuracy evaluation: report latency only")
    p.add_argument("--cpu-variants", action="store_true")
    p.add_argument("--openvino-compare", action="store_true", help="NNCF default flow vs edgeseg's openvino target")
    p.add_argument("--in-place", action="store_true",
                   help="write the INT8 models into the given bundles (default: quantize a temporary copy)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds (--openvino-compare)")
    p.add_argument("--json", default=None)
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    paths = [(path, False) for path in args.bundles]
    if args.make:
        tmp = tempfile.mkdtemp(prefix="edgeseg-bench-")
        paths += [(path, True) for path in make_bundles(args.make, args.size, Path(tmp))]
    if not paths:
        p.error("give bundles, or --make MODEL[,MODEL...]")
    rows = []
    for path, made in paths:
        row = bench_one(path, args, made)
        rows.append(row)
        print(json.dumps(row, indent=1, default=float), flush=True)
    if not args.openvino_compare:  # --openvino-compare printed its own table per bundle
        print()
        print_table(rows, args.targets.split(","))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
