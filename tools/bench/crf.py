"""The fully connected CRF as a decode step on CamVid val: mIoU with and without it, and the time per
frame of each implementation, single thread.

    OMP_NUM_THREADS=1 python tools/bench/crf.py --frames 20 --exact-frames 5 --json crf.json

The shipped ``road`` bundle (480x360 logits) runs once per frame on ONNX Runtime; its logits are
then decoded (:func:`edgeseg.decode.decode_semantic`) by:

* ``none``: argmax, today's default;
* ``lattice``: :mod:`edgeseg.decode.crf`'s numpy permutohedral lattice (pydensecrf's algorithm);
* ``pydensecrf``: pydensecrf itself (``pip install pydensecrf2``; skipped when absent);
* ``exact`` at 1/``--exact-scale`` resolution (the O(N^2) kernel is out of reach at 480x360: 3e10
  pairs per filter), beside ``none`` and ``lattice`` at the same reduced resolution, on the first
  ``--exact-frames`` frames. At the reduced size, logits are area-averaged, the CRF runs there and
  its log-marginals are resized back bilinearly, as the decoder does for low-resolution outputs.

CRF settings: ``--iterations`` (5), smoothness sxy 3 / compat 3, appearance sxy 80 / srgb 13 /
compat 10 (pydensecrf's common defaults; at the reduced size the sxy are divided by the scale).
Timings are medians of the per-frame CRF time (features, lattice build and inference; the network
and the argmax are not included). mIoU over the 11 classes, void ignored.
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

from edgeseg._io import write_json  # noqa: E402
from edgeseg.cli._common import print_table  # noqa: E402
from edgeseg.data.io import read_image  # noqa: E402
from edgeseg.decode.crf import CRFParams, dense_crf, softmax  # noqa: E402
from edgeseg.eval.semantic import SemanticMetric  # noqa: E402
from edgeseg.paths import data_root  # noqa: E402

VOID = 11


def camvid_val(limit: int) -> list[tuple[Path, Path]]:
    root = data_root()
    if root is None or not (root / "camvid" / "val.txt").exists():
        raise SystemExit("CamVid not found: set EDGESEG_DATA to the shared data folder (it holds camvid/)")
    pairs = []
    for line in (root / "camvid" / "val.txt").read_text().split("\n"):
        if line.strip():
            img, lab = line.split()
            pairs.append((root / "camvid" / img, root / "camvid" / lab))
    return pairs[:limit]


def pydensecrf_q(logits: np.ndarray, rgb: np.ndarray, p: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = logits.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(unary_from_softmax(softmax(logits)))
    crf.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    crf.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=np.ascontiguousarray(rgb),
                             compat=p.bilateral_compat)
    return np.array(crf.inference(p.iterations)).reshape(c, h, w)


def timed(fn, *args) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1e3


def reduced(logits: np.ndarray, rgb: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w = logits.shape[1] // scale, logits.shape[2] // scale
    small = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in logits])
    return small, cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)


def upsampled_labels(logq: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(np.ascontiguousarray(p, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
                     for p in logq]).argmax(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=101, help="CamVid val frames (default: all 101)")
    ap.add_argument("--exact-frames", type=int, default=5, help="frames for the exact O(N^2) CRF")
    ap.add_argument("--exact-scale", type=int, default=4, help="the exact CRF runs at 1/scale resolution")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    import cv2

    import edgeseg

    cv2.setNumThreads(1)
    try:
        import pydensecrf.densecrf  # noqa: F401
        have_pyd = True
    except ImportError:
        have_pyd = False
    params = CRFParams(iterations=args.iterations)
    s = args.exact_scale
    small_params = CRFParams(iterations=args.iterations, gaussian_sxy=3.0 / s, bilateral_sxy=80.0 / s)
    predictor = edgeseg.load("road", backend="onnxruntime", precision="fp32", threads=1)
    names = ["none", "lattice"] + (["pydensecrf"] if have_pyd else [])
    small_names = [f"none@1/{s}", f"lattice@1/{s}", f"exact@1/{s}"]
    metrics = {n: SemanticMetric(11, ignore_index=VOID, boundary=False) for n in names + small_names}
    times: dict[str, list[float]] = {n: [] for n in names + small_names}
    pairs = camvid_val(args.frames)
    with predictor:
        for k, (img_path, lab_path) in enumerate(pairs):
            rgb, gt = read_image(img_path), cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
            feed, meta = predictor.preprocess(rgb)
            logits = predictor.runner.infer(feed)["logits"][0].astype(np.float32)
            assert logits.shape[1:] == rgb.shape[:2], "the bench expects 480x360 logits for 480x360 frames"
            metrics["none"].update(logits.argmax(0), gt)
            q, ms = timed(dense_crf, logits, rgb, params, "lattice")
            metrics["lattice"].update(q.argmax(0), gt)
            times["lattice"].append(ms)
            if have_pyd:
                q, ms = timed(pydensecrf_q, logits, rgb, params)
                metrics["pydensecrf"].update(q.argmax(0), gt)
                times["pydensecrf"].append(ms)
            if k < args.exact_frames:
                sl, srgb = reduced(logits, rgb, s)
                h, w = gt.shape
                metrics[f"none@1/{s}"].update(upsampled_labels(sl, h, w), gt)
                for method in ("lattice", "exact"):
                    q, ms = timed(dense_crf, sl, srgb, small_params, method)
                    metrics[f"{method}@1/{s}"].update(upsampled_labels(np.log(np.maximum(q, 1e-30)), h, w), gt)
                    times[f"{method}@1/{s}"].append(ms)
            print(f"frame {k + 1}/{len(pairs)} done", file=sys.stderr, flush=True)
    rows = []
    for n in names + small_names:
        frames = len(pairs) if "@" not in n else min(len(pairs), args.exact_frames)
        rows.append({"decode": n, "frames": frames, "size": "480x360" if "@" not in n else f"{480 // s}x{360 // s}",
                     "mIoU": round(100 * metrics[n].compute().miou, 2),
                     "crf ms/frame": round(statistics.median(times[n]), 1) if times[n] else 0.0})
    print_table(rows)
    write_json(args.json, {"rows": rows, "iterations": args.iterations, "exact_scale": s,
                           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                           "threads": 1, "command": " ".join(["tools/bench/crf.py"] + (argv or sys.argv[1:]))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
