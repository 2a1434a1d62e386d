"""Where a Panoptic-DeepLab model loses its things: PQ with parts of its output replaced by the truth.

    python tools/bench/panoptic_oracle.py CHECKPOINT --data coco-panoptic:../shared/data/cityscapes_panoptic/panoptic_val.json \\
        --frames 60 --json oracle.json

The model (a checkpoint of ``tools/train_panoptic.py``) runs once per frame in PyTorch; its outputs are
decoded by the runtime decoder (:func:`edgeseg.decode.decode`, as deployed) as they are, and with

* ``true centres``: the centre heatmap replaced by the training target of the frame's truth
  (:func:`edgeseg.train.panoptic.panoptic_targets`, ``--sigma``);
* ``true offsets``: the offsets replaced by the truth's on thing pixels;
* both: then every thing pixel the *semantic head* labels as a thing joins its true instance, so
  what is left of the things' PQ gap is the semantic head's;
* outputs upsampled bilinearly by 2 and 4 before grouping (the reference implementation groups at
  full resolution; edgeseg's decoder groups on the stride-4 grid for speed), with the decode time.

PQ is :class:`edgeseg.eval.PanopticMetric` (equal to panopticapi's). A diagnosis tool: the truth is
used, so none of these figures is a model's score.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a Panoptic-DeepLab checkpoint (model.safetensors of tools/train_panoptic.py)")
    p.add_argument("--data", required=True, help="coco-panoptic:PATH/panoptic_val.json (images in the folder named after the split)")
    p.add_argument("--frames", type=int, default=60, help="first N frames (default 60)")
    p.add_argument("--sigma", type=float, default=8.0, help="centre Gaussian of the true heatmap, input pixels (default 8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from edgeseg.data import open_dataset
    from edgeseg.decode import decode
    from edgeseg.eval import PanopticMetric
    from edgeseg.models.checkpoint import load_checkpoint
    from edgeseg.structures import InputSpec, PanopticOptions
    from edgeseg.train.panoptic import panoptic_manifest, panoptic_targets

    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).eval()
    spec = InputSpec.from_dict(model.checkpoint_meta.extra["input_spec"])
    data = open_dataset(args.data, split="val")
    cats = {c: i in model.thing_classes for i, c in enumerate(data.category_ids)}
    class_of = {c: i for i, c in enumerate(data.category_ids)}
    modes = [("model", 1), ("true centres", 1), ("true offsets", 1), ("true centres and offsets", 1),
             ("model, grouped at stride 2", 2), ("model, grouped at stride 1", 4)]
    metrics = {m: PanopticMetric(cats) for m in modes}
    decode_s = {m: 0.0 for m in modes}
    n = min(args.frames, len(data))
    with torch.no_grad():
        for i in range(n):
            s = data[i]
            x, meta = spec.preprocess(s.image())
            raw = model(torch.from_numpy(x))
            out = {k: v.numpy() for k, v in raw.items()}
            ids = s.panoptic.segment_ids
            if ids.shape != spec.size.hw:
                raise SystemExit(f"panoptic_oracle: frame {s.name} is {ids.shape[1]}x{ids.shape[0]}, the model's input "
                                 f"{spec.size}: give frames of the model's size")
            t = panoptic_targets(ids, s.panoptic.segments, class_of, model.thing_classes, s.crowd_ids, sigma=args.sigma)
            for mode in modes:
                name, factor = mode
                if factor > 1:
                    o = {k: F.interpolate(v, scale_factor=factor, mode="bilinear", align_corners=False).numpy()
                         for k, v in raw.items()}
                else:
                    o = dict(out)
                    if "centres" in name:
                        o["center"] = t.center[None, None]
                    if "offsets" in name:
                        o["offset"] = np.where(t.offset_weights[None, None] > 0, t.offset[None], out["offset"])
                kernel = PanopticOptions().nms_kernel
                man = panoptic_manifest(model, spec, data.category_ids,
                                        PanopticOptions(nms_kernel=kernel * factor - (factor - 1)))
                t0 = time.perf_counter()
                result = decode(o, meta, man)
                decode_s[mode] += time.perf_counter() - t0
                metrics[mode].update(result, s.panoptic, s.crowd_ids)
    rows = []
    for mode in modes:
        r = metrics[mode].compute().to_dict()
        rows.append({"outputs": mode[0], "PQ": round(100 * r["all"]["pq"], 2), "things PQ": round(100 * r["things"]["pq"], 2),
                     "things SQ": round(100 * r["things"]["sq"], 1), "things RQ": round(100 * r["things"]["rq"], 1),
                     "stuff PQ": round(100 * r["stuff"]["pq"], 2), "decode ms": round(1000 * decode_s[mode] / n, 2)})
    print(f"{n} frames of {args.data}, {Path(args.checkpoint).name}")
    print_table(rows)
    write_json(args.json, {"checkpoint": str(args.checkpoint), "data": args.data, "frames": n, "sigma": args.sigma,
                           "threads": args.threads, "machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
