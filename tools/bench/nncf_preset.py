"""NNCF's two activation schemes for the ``openvino`` INT8 target, measured on this CPU.

``mixed`` (asymmetric u8 activations with zero points) vs ``performance`` (symmetric activations),
both through edgeseg's NNCF flow on the same prepared model and calibration frames. Each model is
compiled under OpenVINO's f32 hint (what edgeseg runs INT8 models with) and under bf16 (the CPU
plugin's default on AMX and AVX-512 BF16 CPUs: does it compile at all?), timed side by side in
interleaved rounds with the FP32 model in f32 and bf16, and scored with the bundle's task metric in
OpenVINO where an evaluation set is given.

    python tools/bench/nncf_preset.py edgeseg/zoo/road.edgeseg --calib camvid:../shared/data/camvid \\
        --frames 200 --eval camvid:../shared/data/camvid --json road.json

Prints a table and writes JSON (with the machine).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESETS = ("mixed", "performance")


def measure(bundle_path: str, calib: str, frames: int, eval_spec: str | None, threads: int, rounds: int, runs: int) -> dict:
    from int8 import interleaved_latency

    from edgeseg.bundle import Bundle
    from edgeseg.quant import accuracy as acc
    from edgeseg.quant import openvino as eov
    from edgeseg.quant.calibration import FeedReader, collect_frames, resolve_calibration
    from edgeseg.quant.prepare import prepare_model
    from edgeseg.quant.profiles import get_profile

    b = Bundle.open(bundle_path)
    spec = b.manifest.input
    tmp = Path(tempfile.mkdtemp(prefix="edgeseg-preset-"))
    try:
        prepare_model(b.model_path("fp32"), tmp / "prepared.onnx", optimize=get_profile("openvino").optimize_graph)
        cal = collect_frames(resolve_calibration(calib, frames=frames), progress=False)
        paths = {"fp32": b.model_path("fp32")}
        for preset in PRESETS:
            q = eov.nncf_quantize_onnx(tmp / "prepared.onnx", tmp / f"{preset}.onnx", FeedReader(cal, spec),
                                       get_profile("openvino"), options=eov.NncfOptions(preset=preset))
            paths[preset] = q.path
        compiled, failed = {}, {}
        for name, path in paths.items():
            for hint, precision in (("f32", "int8" if name != "fp32" else "fp32"), ("bf16", "bf16")):
                try:
                    compiled[f"{name} / {hint}"] = eov.compile_cpu(path, threads, precision)
                except Exception as e:  # OpenVINO's compile error: the finding itself
                    failed[f"{name} / {hint}"] = next((ln for ln in str(e).splitlines() if "implementations" in ln),
                                                      str(e).splitlines()[-1] if str(e) else type(e).__name__)[:120]
        feed = {spec.name: spec.preprocess(cal[0])[0]}
        lat = interleaved_latency(compiled, feed, rounds, runs)
        ds = None
        if eval_spec:
            from edgeseg.data import open_dataset

            ds = list(open_dataset(eval_spec))
        rows = []
        for key, t in lat.items():
            name, hint = key.split(" / ")
            row = {"model": name, "hint": hint, **t}
            if ds is not None and hint == "f32":
                row["metric"] = acc.DatasetScorer(ds, b.manifest, threads=threads, runtime="openvino")(paths[name])
            rows.append(row)
        rows += [{"model": k.split(" / ")[0], "hint": k.split(" / ")[1], "compile_error": v} for k, v in failed.items()]
        return {"bundle": b.name, "calib": calib, "frames": len(cal), "eval": eval_spec, "threads": threads, "rows": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_table(result: dict) -> str:
    lines = [f"{result['bundle']} (threads {result['threads'] or 'default'})",
             "| model | hint | min ms | median ms | metric |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        if "compile_error" in r:
            lines.append(f"| {r['model']} | {r['hint']} | compile failed: {r['compile_error']} | | |")
        else:
            m = f"{r['metric']:.2f}" if "metric" in r else ""
            lines.append(f"| {r['model']} | {r['hint']} | {r['min_ms']:.2f} | {r['median_ms']:.2f} | {m} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from edgeseg.backends.device import device_info

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle path or shipped name")
    p.add_argument("--calib", required=True, help="calibration recipe or source, e.g. camvid:ROOT")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--eval", default=None, help="labelled set for the task metric, e.g. camvid:ROOT")
    p.add_argument("--threads", type=int, default=0, help="0: OpenVINO's default")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    result = measure(a.bundle, a.calib, a.frames, a.eval, a.threads, a.rounds, a.runs)
    result["machine"] = device_info()
    print(format_table(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
