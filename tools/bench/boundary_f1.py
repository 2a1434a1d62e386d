"""Boundary F1's matching step on real label maps: the exact distance transform against a dilation with the
tolerance's disk (``edgeseg.eval.boundary._within``), side by side, per tolerance.

    python tools/bench/boundary_f1.py --data camvid:../shared/data/camvid --split val --images 40 --json bf.json

For each image, each class present and each tolerance, the ground truth's boundary (the map's own classes: no model
runs) is matched both ways, alternating the order per image so that load on the machine hits them alike. Reported
per tolerance: the median ms of the two per image (every class, single thread), their ratio, and the pixels on
which the two matched sets differ (0: the same scores). The tolerances are the default 0.75 % of the diagonal at
480x360 (4.5 px), 640x320 (5.4), 1920x1080 (16.5) and 3840x2160 (33), and 12; ``DISK_MAX_RADIUS`` (20) was chosen
from this table.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402

TOLERANCES = (4.5, 5.4, 12.0, 16.5, 33.0)


def _transform(b: np.ndarray, theta: float) -> np.ndarray:
    import cv2

    return cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= theta


def _disk(b: np.ndarray, theta: float) -> np.ndarray:
    import cv2

    bf = importlib.import_module("edgeseg.eval.boundary")
    return cv2.dilate(b.astype(np.uint8), bf._disk(float(theta)), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def main(argv: list[str] | None = None) -> int:
    import cv2

    from edgeseg.data import open_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="camvid:../shared/data/camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    bf = importlib.import_module("edgeseg.eval.boundary")
    dataset = open_dataset(args.data, split=args.split)
    n = min(args.images, len(dataset))
    picks = np.linspace(0, len(dataset) - 1, n).astype(int).tolist()
    times = {t: {"transform": [], "disk": []} for t in TOLERANCES}
    differ = {t: 0 for t in TOLERANCES}
    for k, i in enumerate(picks):
        gt = dataset[i].labels
        valid = gt != getattr(dataset, "ignore_index", 255)
        borders = [bf.boundary(gt == c, valid) for c in np.unique(gt[valid]).tolist()]
        for t in TOLERANCES:
            order = (("transform", _transform), ("disk", _disk)) if k % 2 == 0 else (("disk", _disk), ("transform", _transform))
            got = {}
            for name, fn in order:
                t0 = time.perf_counter()
                got[name] = [fn(b, t) for b in borders]
                times[t][name].append(1e3 * (time.perf_counter() - t0))
            differ[t] += sum(int(np.count_nonzero(a != b)) for a, b in zip(got["transform"], got["disk"]))
    rows = []
    for t in TOLERANCES:
        a, b = statistics.median(times[t]["transform"]), statistics.median(times[t]["disk"])
        rows.append({"tolerance px": f"{t:g}", "transform ms": round(a, 3), "disk ms": round(b, 3),
                     "disk / transform": round(b / a, 2), "pixels differing": differ[t],
                     "edgeseg uses": "disk" if t <= bf.DISK_MAX_RADIUS else "transform"})
    print(f"{n} label maps of {args.data} [{args.split}], {gt.shape[1]}x{gt.shape[0]}, every class's boundary; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, one OpenCV thread")
    print_table(rows, list(rows[0]))
    write_json(args.json, {"data": args.data, "split": args.split, "images": n, "size": list(gt.shape), "rows": rows,
                           "machine": platform.platform()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
