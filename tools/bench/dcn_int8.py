"""INT8 of a model with deformable convolution, DeformConv kept in float or decomposed into standard ops
(issue 12: "deformable convolution stays float or decomposed where a runtime has no INT8 kernel, measured").

From one checkpoint (e.g. an LPSNet-style panoptic model): two bundles, ``edgeseg export --deform-conv onnx``
(ONNX ``DeformConv``, which the quantizer leaves in float on every target: no runtime has an INT8 kernel
for it) and ``--deform-conv decomposed`` (bilinear sampling by GridSample + the convolution,
which INT8 then covers); each quantized for the targets asked, gated by the task metric on ``--eval``;
then every model of both bundles timed side by side (interleaved rounds, the same frames, one process).
Prints the accuracy table and the timing table; writes JSON.

    python tools/bench/dcn_int8.py runs/lps/model.safetensors --eval synthetic-panoptic:100 \\
        --calib calibration/synthetic.toml --frames 32 --targets cpu openvino tensorrt --threads 2 \\
        --work runs/dcn --json dcn_int8.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402

FORMS = ("onnx", "decomposed")
RUNS = {  # target -> (backend, precision) that runs its INT8 model on a CPU
    "cpu": ("onnxruntime", "int8"), "openvino": ("openvino", "int8"), "tensorrt": ("onnxruntime", "int8"),
}


def _cli(*args: str) -> int:
    from edgeseg.cli import main

    return main([str(a) for a in args])


def quantize_forms(ckpt: str, args) -> list[dict]:
    rows = []
    for form in FORMS:
        bundle = Path(args.work) / f"{form}.edgeseg"
        if _cli("export", ckpt, "--deform-conv", form, "--out", bundle, "--overwrite"):
            raise SystemExit(f"export --deform-conv {form} failed")
        for target in args.targets:
            out = Path(args.work) / f"{form}.{target}.json"
            extra = ["--method", "minmax"] if target == "tensorrt" else []
            rc = _cli("quantize", bundle, "--calib", args.calib, "--frames", str(args.frames), "--target", target,
                      "--eval", args.eval, "--max-drop", str(args.max_drop), "--threads", str(args.threads),
                      "--no-progress", "--json", out, *extra)
            r = json.loads(out.read_text()) if out.is_file() else {}
            deform = [f for f in r.get("float_nodes", []) if f.get("op_type") == "DeformConv"]
            rows.append({"deform conv": form, "target": target, "metric": r.get("metric"), "fp32": r.get("fp32"),
                         "int8": r.get("int8"), "drop": r.get("drop"), "met budget": r.get("met_budget") and rc == 0,
                         "DeformConv in float": len(deform), "float nodes": len(r.get("float_nodes", []))})
    return rows


def time_models(args) -> list[dict]:
    """Every model of both bundles, interleaved rounds over the same frames (median ms of ``runner.infer``).
    Each model runs all the frames of a round back to back, as a stream runs one model (the automatic choice's
    ``time_side_by_side`` switched model at every inference until session 38, which on this 2-core VM measured
    every model 2-3x slower and changed their order; it now times blocks of back-to-back calls too)."""
    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.data import open_dataset

    data = open_dataset(args.eval)
    frames = [data[i].image() for i in range(min(args.timing_frames, len(data)))]
    preds = {}
    for form in FORMS:
        bundle = Bundle.open(Path(args.work) / f"{form}.edgeseg")
        configs = [("onnxruntime", "fp32", None), ("openvino", "fp32", None)]
        configs += [(*RUNS[m.target], m.target) for m in bundle.manifest.models if m.precision == "int8" and m.target in RUNS]
        for backend, precision, target in configs:
            try:
                p = edgeseg.load(bundle, backend=backend, precision=precision, target=target, threads=args.threads)
                p.runner.activate()
            except Exception as e:  # noqa: BLE001 - a runtime missing here is a row that says so
                print(f"left out {form} {backend}/{precision}/{target}: {e}")
                continue
            feeds = [p.preprocess(f)[0] for f in frames]
            preds[(form, backend, precision, target)] = (p, feeds)
    times = {k: [] for k in preds}
    for r in range(args.rounds + 2):
        for k, (p, feeds) in preds.items():
            for feed in feeds:
                t0 = time.perf_counter()
                p.runner.infer(feed)
                if r >= 2:  # two warm-up rounds
                    times[k].append(1e3 * (time.perf_counter() - t0))
    fastest_fp32 = min(statistics.median(v) for k, v in times.items() if k[2] == "fp32")
    rows = []
    for (form, backend, precision, target), v in sorted(times.items(), key=lambda kv: statistics.median(kv[1])):
        med = statistics.median(v)
        rows.append({"deform conv": form, "backend": backend, "precision": precision, "target": target or "-",
                     "median ms": med, "vs fastest fp32": fastest_fp32 / med})
    for p, _ in preds.values():
        p.close()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a model checkpoint with deformable convolutions (edgeseg export takes it)")
    p.add_argument("--eval", required=True, help="labelled data for the task metric (the INT8 gate)")
    p.add_argument("--calib", required=True, help="calibration recipe or source")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--targets", nargs="+", default=["cpu", "openvino", "tensorrt"], choices=sorted(RUNS))
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timing-frames", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--work", default="runs/dcn_int8")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    accuracy = quantize_forms(args.checkpoint, args)
    timing = time_models(args)
    fmt = lambda rows: [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]  # noqa: E731
    print_table(fmt(accuracy))
    print()
    print_table(fmt(timing))
    write_json(args.json, {"machine": platform.node(), "processor": platform.processor(), "cpus": os.cpu_count(),
                           "args": vars(args), "accuracy": accuracy, "timing": timing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
