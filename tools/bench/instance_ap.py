"""Mask AP of an imported prototype-mask model (YOLOv8-seg) decoded by edgeseg against an independent
decode of the same ONNX file on the same images (``tests/instance_ref.py``: Ultralytics' documented
post-processing in torch, both its default ``process_mask`` path and its ``retina_masks`` path).

    python tools/bench/instance_ap.py yolo.edgeseg --onnx ../shared/data/models/yolov8n_seg_int8_320.onnx \
        --data coco-instance:../shared/data/cityscapes_panoptic/instances_val.json --json ap.json

All three use the same score threshold (0.001, Ultralytics' val), IoU 0.7 and 100 detections per
image, and are scored by :mod:`edgeseg.eval.instance` (equal to pycocotools' COCOeval, tested).
Also reports edgeseg's per-image decode time (median) at that threshold.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edgeseg.cli._common import print_table, write_json  # noqa: E402


def main(argv=None) -> int:
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.data import open_dataset
    from edgeseg.eval import category_map, evaluate_instances
    from edgeseg.structures import ImageShape, InstanceResult
    from instance_ref import yolo_seg_reference

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--onnx", required=True, help="the original ONNX file the bundle was imported from")
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--score-threshold", type=float, default=0.001)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    dataset = open_dataset(args.data)
    predictor = edgeseg.load(args.bundle, backend="onnxruntime", precision="fp32", threads=args.threads)
    predictor.set_options(score_threshold=args.score_threshold, max_detections=100)
    names = predictor.classes
    cmap = category_map(names, dataset.categories)
    session = make_session(args.onnx, threads=args.threads)
    decode_ms: list[float] = []

    def ours(image):
        feed, meta = predictor.preprocess(image)
        out = predictor.runner.infer(feed)
        t0 = time.perf_counter()
        r = predictor.postprocess(out, meta)
        decode_ms.append(1e3 * (time.perf_counter() - t0))
        return r

    def reference(retina: bool):
        def run(image):
            d = yolo_seg_reference(session, image, conf=args.score_threshold, iou=0.7, max_det=100, nc=len(names),
                                   retina=retina)
            return InstanceResult(boxes=d["boxes"].astype(np.float32), scores=d["scores"].astype(np.float32),
                                  classes=d["classes"], image_shape=ImageShape(*image.shape[:2]), masks=d["masks"],
                                  class_names=names)
        return run

    rows = []
    with predictor:
        for name, fn in (("edgeseg decode", ours), ("reference, Ultralytics default masks", reference(False)),
                         ("reference, Ultralytics retina masks", reference(True))):
            t0 = time.perf_counter()
            s = evaluate_instances(fn, dataset, cmap.to_category, limit=args.limit)
            named = s.named()
            rows.append({"decode": name, "images": s.num_images, "AP": 100 * named["AP"], "AP50": 100 * named["AP50"],
                         "AP75": 100 * named["AP75"], "s": round(time.perf_counter() - t0, 1)})
    base = rows[0]["AP"]
    for r in rows:
        r["AP - edgeseg"] = r["AP"] - base
    print(f"mask AP on {args.data} ({rows[0]['images']} images), score > {args.score_threshold}; "
          f"edgeseg decode median {statistics.median(decode_ms):.2f} ms/image")
    print_table(rows)
    write_json(args.json, {"machine": platform.node(), "cpus": os.cpu_count(), "args": vars(args), "rows": rows,
                           "decode_ms_median": statistics.median(decode_ms), "class_map": dict(cmap.pairs)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
