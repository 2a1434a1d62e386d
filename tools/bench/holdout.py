#!/usr/bin/env python
"""Issue 14's scoreboard: a road bundle on footage it was and was not trained on, each precision.

For every bundle and every model it holds (``fp32`` and each INT8 target present), mIoU on the
runtime the model's accuracy gate scores it on (FP32 and the ``cpu``/``tensorrt`` INT8 models on ONNX
Runtime, the ``openvino`` INT8 model on OpenVINO) on:

* ``val``     CamVid ``val``: sequence 0016E5, which CamVid ``train`` also holds (seen footage);
* ``0006R0``  CamVid sequence 0006R0 (101 frames of ``train``): unseen when the bundle was trained
              without it (``road-holdout``), seen for the shipped ``road``;
* ``cities``  Cityscapes ``val`` cities (darmstadt, tubingen; 224 frames at 640x320) in CamVid's
              classes (``cityscapes-camvid:``): another camera in cities no road model here trained on.

    python tools/bench/holdout.py road runs/road-holdout.edgeseg --json out/holdout.json

Prints a markdown table (the one in docs/models.md) and writes the per-class IoU as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SETS = {
    "val": "camvid:{root}/camvid",
    "0006R0": "camvid:{root}/camvid,split=train,sequences=0006R0",
    "cities": "cityscapes-camvid:{root}/cityscapes_panoptic",
}


def precisions(bundle) -> list[str]:
    """``fp32`` and ``int8-TARGET`` for each INT8 model the bundle holds."""
    return [m.get("precision") if m.get("target") is None else f"{m['precision']}-{m['target']}"
            for m in bundle.manifest.to_dict()["models"]]


def main(argv: list[str] | None = None) -> int:
    from edgeseg.backends.gates import INT8_RUNTIMES
    from edgeseg.bundle import Bundle
    from edgeseg.data.base import open_semantic_dataset
    from edgeseg.eval import evaluate
    from edgeseg.paths import data_root
    from edgeseg.predictor import load

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", help="bundle paths or shipped names (road)")
    p.add_argument("--sets", default=",".join(SETS), help=f"which sets (default {','.join(SETS)})")
    p.add_argument("--precisions", default=None, help="e.g. fp32,int8-cpu (default: every model in the bundle)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: default)")
    p.add_argument("--json", default=None, help="write the scores here")
    args = p.parse_args(argv)
    root = data_root()
    if root is None:
        print("holdout: the real-data folder was not found: set EDGESEG_DATA", file=sys.stderr)
        return 2
    sets = {k: SETS[k].format(root=root) for k in args.sets.split(",")}
    rows, out = [], {"sets": sets, "results": []}
    for name in args.bundles:
        bundle = Bundle.open(name)
        for prec in (args.precisions.split(",") if args.precisions else precisions(bundle)):
            row = {"bundle": bundle.manifest.name, "path": str(bundle.source), "precision": prec}
            precision, _, target = prec.partition("-")
            backend = INT8_RUNTIMES.get(target, ("onnxruntime",))[0] if target else "onnxruntime"
            backend = "onnxruntime" if backend == "tensorrt" else backend  # no TensorRT here: its Q/DQ model on ORT
            row["backend"] = backend
            with load(name, backend=backend, precision=precision, target=target or None, device="cpu",
                      threads=args.threads) as pred:
                for key, spec in sets.items():
                    s = evaluate(pred, open_semantic_dataset(spec, "val", purpose="scoring"), progress=True, boundary=False)
                    d = s.to_dict()
                    row[key] = round(100 * d["miou"], 2)
                    row[f"{key}_per_class"] = {k: round(100 * v["iou"], 2) if v["iou"] == v["iou"] else None
                                               for k, v in d["per_class"].items()}
                    print(f"{row['bundle']} {prec} {key}: {row[key]:.2f}", file=sys.stderr, flush=True)
            rows.append(row)
            out["results"].append(row)
    print("| bundle | precision | runtime | " + " | ".join(sets) + " |")
    print("|---|---|---|" + "---:|" * len(sets))
    for r in rows:
        print(f"| {r['bundle']} | {r['precision']} | {r['backend']} | " + " | ".join(f"{r[k]:.2f}" for k in sets) + " |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
