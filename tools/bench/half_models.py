"""A half-precision copy of a bundle's model, the way users make one, through import and INT8 side by side with
its float32 original: does the accuracy gate hold, and what do the half model and its INT8 models cost here?

    python tools/bench/half_models.py road --eval camvid:../shared/data/camvid --split val \
        --calib street --frames 32 --targets openvino,tensorrt --json half_models.json

Three variants of the bundle's FP32 ONNX, each imported with the bundle's own conventions (so none carries the
bundle's decoder options: they are compared with each other, not with the shipped bundle's report):

* ``float32``: the file as it is;
* ``float16``: ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=False)``: float16 weights,
  input and output, as Ultralytics' ``half=True`` or a ``.half()`` torch export give;
* ``float16, float32 I/O``: the same with ``keep_io_types=True`` (Casts at the edges), the form ONNX Runtime's
  documentation gives.

For each: the model's own score on ``--eval`` (the gate's FP32 column), then ``edgeseg quantize`` for each
target with ``--max-drop`` (INT8 score, layers kept in float, met or not), and ONNX Runtime's latency of the
three float models at ``--threads``, timed interleaved (median of ``--repeats`` rounds after a warm-up).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.bundle import Bundle  # noqa: E402
from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.data import open_dataset  # noqa: E402
from edgeseg.export import import_onnx  # noqa: E402
from edgeseg.quant import quantize_bundle  # noqa: E402
from edgeseg.errors import QuantizationError  # noqa: E402

VARIANTS = {"float32": None, "float16": False, "float16, float32 I/O": True}


def ort_latencies(paths: dict[str, Path], spec, threads: int, repeats: int) -> dict[str, float]:
    """ONNX Runtime's median latency of each float model, timed interleaved (one call of each per round, after a
    warm-up) so that a machine whose speed drifts affects all alike."""
    from edgeseg._ort import make_session

    runs = {}
    for name, path in paths.items():
        sess = make_session(path, threads=threads)
        inp = sess.get_inputs()[0]
        x = spec.preprocess(np.zeros((spec.size.height, spec.size.width, 3), np.uint8))[0]
        runs[name] = (sess, {inp.name: x.astype(np.float16 if "float16" in inp.type else np.float32)})
        for _ in range(3):
            sess.run(None, runs[name][1])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (sess, feed) in runs.items():
            t = time.perf_counter()
            sess.run(None, feed)
            times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="a semantic bundle (path or shipped name)")
    ap.add_argument("--eval", required=True, help="dataset spec the gate scores on")
    ap.add_argument("--split", default="val")
    ap.add_argument("--calib", default="street", help="calibration recipe (edgeseg quantize --calib)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--targets", default="openvino,tensorrt")
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from onnxconverter_common import float16
    import onnx

    src = Bundle.open(args.bundle)
    spec = src.manifest.input
    dataset = open_dataset(args.eval, split=args.split)
    records, floats = [], {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-half-") as tmp:
        for variant, keep_io in VARIANTS.items():
            path = Path(tmp) / f"{len(records)}.onnx"
            model = onnx.load(str(src.model_path("fp32")))
            if keep_io is not None:
                model = float16.convert_float_to_float16(model, keep_io_types=keep_io)
            onnx.save(model, str(path))
            out = Path(tmp) / f"{len(records)}.edgeseg"
            import_onnx(path, out, task="semantic", classes=src.manifest.classes, input_spec=replace(spec, dtype="float32"),
                        palette=src.manifest.palette)
            b = Bundle.open(out)
            floats[variant] = b.model_path("fp32")
            for target in args.targets.split(","):
                try:
                    r = quantize_bundle(out, args.calib, target=target, eval_dataset=dataset, max_drop=args.max_drop,
                                        frames=args.frames, threads=args.threads, progress=False, latency=False,
                                        eval_spec=args.eval, eval_split=args.split)
                    fp32, int8, met, kept = r.fp32_score, r.int8_score, r.met_budget, len(r.float_nodes)
                    error = None
                except QuantizationError as e:  # the gate missed: the report holds the best numbers
                    rep = Bundle.open(out).report.get("int8", {}).get(target, {})
                    fp32, int8, met, kept, error = rep.get("fp32"), rep.get("int8"), False, None, str(e).splitlines()[0]
                records.append({"variant": variant, "input_dtype": b.manifest.input.dtype, "target": target,
                                "fp32_score": fp32, "int8_score": int8, "met_budget": met, "float_nodes": kept,
                                "error": error})
                print(f"{variant} {target}: {records[-1]}", file=sys.stderr, flush=True)
        latency = ort_latencies(floats, spec, args.threads, args.repeats)
    rows = []
    for rec in records:
        rec["ort_float_ms"] = latency[rec["variant"]]
        rows.append({"model": rec["variant"], "input": rec["input_dtype"], "target": rec["target"],
                     "model's score": "-" if rec["fp32_score"] is None else f"{rec['fp32_score']:.2f}",
                     "INT8": "-" if rec["int8_score"] is None else f"{rec['int8_score']:.2f}",
                     f"within {args.max_drop}": "yes" if rec["met_budget"] else "no",
                     "float layers": "-" if rec["float_nodes"] is None else str(rec["float_nodes"]),
                     f"ORT float ms ({args.threads} thr, interleaved)": f"{rec['ort_float_ms']:.2f}"})
    print_table(rows)
    if args.json:
        write_json(args.json, {"bundle": args.bundle, "eval": args.eval, "split": args.split, "calib": args.calib,
                               "frames": args.frames, "max_drop": args.max_drop, "machine": platform.processor() or platform.machine(),
                               "results": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
