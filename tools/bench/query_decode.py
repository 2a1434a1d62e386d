"""Cost of the ``query`` panoptic decode (imported MaskFormer/Mask2Former) on this CPU, and what deciding on
the mask grid gives up against deciding at the image's size, as the reference implementations do.

    python tools/bench/query_decode.py --repeats 10 --json query_decode.json

Each case is ``Q`` queries over a network input of ``--sizes`` (masks at 1/4 of it, as Mask2Former's), an image
of the same size, 19 classes (11 stuff), ``--kept`` queries confident enough to be kept. Masks are blobs with
logits of a trained model's scale (about +/-10 at the centre and far away, smooth borders) so that segments
overlap at their borders only. ``grid`` is edgeseg's decode (:func:`edgeseg.decode.decode_panoptic`, the id map
sampled to the image); ``full res`` resizes the kept queries' mask logits to the image (bilinear, OpenCV; the
references resize all ``Q``) and runs the same decision there, which is what the authors' code and transformers do (their results equal
edgeseg's at a 1:1 grid: tests/decode/test_panoptic_query.py). Agreement: the share of image pixels whose
class (void included) is the same, and the share of full-res segments matched by a grid segment of the same
class at IoU > 0.5 (PQ's matching rule). Medians over ``--repeats``, one thread, after a warm-up.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.bundle import Manifest  # noqa: E402
from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.decode import decode  # noqa: E402
from edgeseg.decode.panoptic_query import query_panoptic  # noqa: E402
from edgeseg.structures import ImageShape, InputSpec, PanopticOptions  # noqa: E402

NUM_CLASSES = 19
THING = np.array([c >= 11 for c in range(NUM_CLASSES)])


def scene(rng: np.random.Generator, q: int, kept: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    cls = rng.normal(0, 1, (q, NUM_CLASSES + 1)).astype(np.float32)
    cls[:, -1] += 6.0  # most queries: no object
    cls[np.arange(kept), -1] -= 6.0
    cls[np.arange(kept), rng.integers(0, NUM_CLASSES, kept)] += 10.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    masks = np.empty((q, h, w), np.float32)
    for k in range(q):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(h / 16, h / 6)
        masks[k] = np.clip((r - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)) * (40.0 / h), -10, 10)
    return cls, masks


def full_res(cls: np.ndarray, masks: np.ndarray, size: ImageShape, convention: str) -> tuple[np.ndarray, list]:
    import cv2

    from edgeseg.decode.panoptic_query import query_scores

    scores, labels = query_scores(cls)
    keep = np.flatnonzero((labels != NUM_CLASSES) & (scores > 0.8))
    # the references upsample every query; the dropped ones cannot win, so only the kept ones are (the cheapest
    # full-resolution decision: what is timed is the decision at the image's size, not the references' memory)
    up = np.stack([cv2.resize(masks[k], size.wh, interpolation=cv2.INTER_LINEAR) for k in keep]) if len(keep) else \
        np.zeros((0, size.height, size.width), np.float32)
    return query_panoptic(cls[keep], up, THING, score_threshold=0.8, convention=convention)


def _classes(ids: np.ndarray, segs) -> np.ndarray:
    lut = np.array([-1] + [c for c, _, _ in segs], np.int32)
    return lut[ids]


def _matched(ref_ids, ref_segs, ids, segs) -> float:
    hits = 0
    for t, (c, _, _) in enumerate(ref_segs, 1):
        a = ref_ids == t
        cand = np.unique(ids[a])
        best = 0.0
        for e in cand[cand > 0]:
            if segs[e - 1][0] == c:
                b = ids == e
                best = max(best, (a & b).sum() / (a | b).sum())
        hits += best > 0.5
    return hits / len(ref_segs) if ref_segs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["512x256", "1024x512", "2048x1024"], help="network input WxH")
    ap.add_argument("--queries", nargs="+", type=int, default=[100, 200])
    ap.add_argument("--kept", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--convention", default="mask2former", choices=["mask2former", "maskformer", "transformers"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    rows, records = [], []
    for text in args.sizes:
        size = ImageShape.parse(text)
        grid = ImageShape(size.height // 4, size.width // 4)
        spec = InputSpec(size=size)
        manifest = Manifest(name="q", task="panoptic", classes=tuple(f"c{i}" for i in range(NUM_CLASSES)), input=spec,
                            outputs=(), decoder=PanopticOptions(layout="query", thing_classes=tuple(np.flatnonzero(THING)),
                                                                score_threshold=0.8, stuff_area=0,
                                                                query_convention=args.convention).to_dict())
        _, meta = spec.preprocess(np.zeros((size.height, size.width, 3), np.uint8))
        for q in args.queries:
            cls, masks = scene(rng, q, args.kept, grid.height, grid.width)
            outputs = {"class_logits": cls[None], "mask_logits": masks[None]}
            times = {"grid": [], "full res": []}
            for i in range(args.repeats + 1):
                t = time.perf_counter()
                res = decode(outputs, meta, manifest)
                t1 = time.perf_counter()
                ref_ids, ref_segs = full_res(cls, masks, size, args.convention)
                t2 = time.perf_counter()
                if i:
                    times["grid"].append((t1 - t) * 1e3)
                    times["full res"].append((t2 - t1) * 1e3)
            segs = [(s.category_id, s.score, s.isthing) for s in res.segments]
            same = float((_classes(res.segment_ids, segs) == _classes(ref_ids, ref_segs)).mean())
            matched = _matched(ref_ids, ref_segs, res.segment_ids, segs)
            g, f = statistics.median(times["grid"]), statistics.median(times["full res"])
            rows.append({"input": text, "queries": q, "segments": len(ref_segs), "grid ms": f"{g:.1f}",
                         "full res ms": f"{f:.1f}", "ratio": f"{f / g:.1f}x", "same class %": f"{same * 100:.2f}",
                         "matched %": f"{matched * 100:.1f}"})
            records.append({"size": text, "queries": q, "segments": len(ref_segs), "grid_ms": g, "full_res_ms": f,
                            "pixels_same_class": same, "segments_matched": matched})
    print_table(rows)
    write_json(args.json, {"machine": {"cpu": platform.processor() or platform.machine(), "threads": 1,
                                       "cpus": os.cpu_count()}, "convention": args.convention,
                           "kept": args.kept, "repeats": args.repeats, "cases": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
