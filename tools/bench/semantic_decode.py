"""Semantic decode cost on this CPU, per upsampling path, on a real model's logits from real footage.

    python tools/bench/semantic_decode.py --bundle road --video ../shared/data/video/dashcam_960x540.mp4 \
        --frames 20 --repeats 10 --json s.json

The bundle's model runs (ONNX Runtime, FP32) on ``--frames`` frames spread over the video; each
frame's logits are then decoded to the frame's size by each path, alternating paths within every
repeat so that load on the machine hits them alike:

* ``every plane``: each class's logits resized bilinearly to the frame (OpenCV), then the arg-max
  (the decoder before session 9, and still its path when confidence is asked for);
* ``boundary only``: the low-resolution arg-max gathered where the four source pixels agree, bilinear
  logits only where they do not (:func:`edgeseg.decode.semantic._upsampled_argmax`), at any share;
* ``decoder default``: boundary only where at most ``MAX_BOUNDARY_SHARE`` of the pixels are near a
  boundary, else every plane (a noisy map: an under-trained or random-weight model);
* ``labels``: arg-max first, labels resized nearest (``upsample="labels"``, blocky).

Reported: the median ms per path (single thread, ``cv2.setNumThreads(1)``), the share of pixels the
boundary-only path interpolates, and how many pixels each path's labels differ from the arg-max of
the logits resized in float64 (numpy, OpenCV's taps; exact ties to the lower class id).
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

from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.decode import semantic as S  # noqa: E402
from edgeseg.structures import ImageShape  # noqa: E402


def _frames(video: str, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(video)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if not cap.isOpened() or total <= 0:
        raise SystemExit(f"semantic_decode: cannot read {video}")
    want, out = set(np.linspace(0, total - 1, n).astype(int).tolist()), []
    for i in range(total):
        ok, bgr = cap.read()
        if not ok:
            break
        if i in want:
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def _every_plane(chw: np.ndarray, size: ImageShape) -> np.ndarray:
    return S._argmax_chw(S._resize_planes(chw, size), np.dtype(np.uint8))[0]


def _labels(chw: np.ndarray, size: ImageShape) -> np.ndarray:
    return S.resize_labels(S._argmax_chw(chw, np.dtype(np.uint8))[0], size)


def _reference(chw: np.ndarray, size: ImageShape) -> np.ndarray:
    """The arg-max of the logits resized bilinearly in float64 (OpenCV's taps), row band by row band."""
    y0, y1, fy = S._axis_taps(size.height, chw.shape[1])
    x0, x1, fx = S._axis_taps(size.width, chw.shape[2])
    out = np.empty(size.hw, np.uint8)
    src = chw.astype(np.float64)
    for r in range(0, size.height, 64):
        rows = slice(r, r + 64)
        top = src[:, y0[rows]][:, :, x0] * (1 - fx) + src[:, y0[rows]][:, :, x1] * fx
        bot = src[:, y1[rows]][:, :, x0] * (1 - fx) + src[:, y1[rows]][:, :, x1] * fx
        out[rows] = (top * (1 - fy[rows, None]) + bot * fy[rows, None]).argmax(0)
    return out


def _boundary_share(chw: np.ndarray, size: ImageShape) -> float:
    low = S._argmax_chw(chw, np.dtype(np.uint8))[0]
    y0, y1, _ = S._axis_taps(size.height, low.shape[0])
    x0, x1, _ = S._axis_taps(size.width, low.shape[1])
    corners = [low[np.ix_(ys, xs)] for ys in (y0, y1) for xs in (x0, x1)]
    return float(np.mean(~((corners[0] == corners[1]) & (corners[0] == corners[2]) & (corners[0] == corners[3]))))


def main(argv=None) -> int:
    import cv2

    import edgeseg

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="road")
    p.add_argument("--video", default=str(Path(__file__).resolve().parents[3] / "shared/data/video/dashcam_960x540.mp4"))
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    frames = _frames(args.video, args.frames)
    pred = edgeseg.load(args.bundle, backend="onnxruntime")
    cases, metas = [], {}
    with pred:
        for rgb in frames:
            feed, meta = pred.preprocess(rgb)
            name, _, arr = S.semantic_output(pred.runner.infer(feed), pred.manifest)
            cases.append((np.ascontiguousarray(arr[0], np.float32), ImageShape.of(rgb)))
            metas[id(cases[-1][0])] = meta
    manifest = pred.manifest

    def default(chw, size):  # the decoder itself (its choice between the two paths above)
        return S.logits_to_labels(chw[None], metas[id(chw)], manifest)[0]

    paths = {"every plane": _every_plane,
             "boundary only": lambda chw, size: S._upsampled_argmax(chw, size, np.dtype(np.uint8), max_share=1.0),
             "decoder default": default, "labels": _labels}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):
        for chw, size in cases:
            for k, fn in paths.items():
                t0 = time.perf_counter()
                fn(chw, size)
                times[k].append(time.perf_counter() - t0)
    ref = [_reference(chw, size) for chw, size in cases]
    share = 100 * statistics.mean(_boundary_share(chw, size) for chw, size in cases)
    chw0, size0 = cases[0]
    rows = [{"path": k, "logits": f"{chw0.shape[0]}x{chw0.shape[1]}x{chw0.shape[2]}", "frame": f"{size0.width}x{size0.height}",
             "ms (median)": 1e3 * statistics.median(times[k]),
             "pixels differing from float64": int(sum(int((fn(chw, size) != r).sum()) for (chw, size), r in zip(cases, ref))),
             "interpolated %": share if k == "boundary only" else (100.0 if k == "every plane" else
                                                                   (0.0 if k == "labels" else float("nan")))}
            for k, fn in paths.items()]
    print_table(rows)
    if args.json:
        write_json(args.json, {"bundle": args.bundle, "video": args.video, "frames": len(cases), "repeats": args.repeats,
                               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                               "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
