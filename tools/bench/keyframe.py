#!/usr/bin/env python
"""Keyframe acceleration (``edgeseg run --keyframe-interval``): throughput gain and accuracy cost.

Two measurements, each mode run over the same decoded frames, modes interleaved round by round so
their times are compared side by side:

* **dash-cam** (real footage, no labels): the ``road`` bundle on ``dashcam_960x540.mp4``; accuracy is
  agreement with per-frame inference (pixel accuracy and mIoU of the keyframe labels against the
  per-frame labels, over 11 classes).
* **synthetic** (exact truth): the ``shapes`` bundle on :class:`edgeseg.data.SceneGenerator` videos
  (moving, occluding objects; ``--synthetic-seeds``), mIoU against the true labels, per-frame and
  with keyframes.

Times are the segmentation path per frame (preprocess, inference and decode on keyframes; flow and
warping on the others), mean over all frames, the best of ``--rounds`` rounds.

    python tools/bench/keyframe.py --json out/bench_keyframe.json
    python tools/bench/keyframe.py --frames 120 --modes 1,3,6,6m --rounds 1

Modes: ``N`` = a keyframe every N frames; ``Nm`` = at most N apart, sooner when more than
``--motion`` of the frame is not explained by the flow.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg._io import write_json  # noqa: E402
from edgeseg.cli._common import print_table  # noqa: E402

DASHCAM = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "dashcam_960x540.mp4"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=DASHCAM, help="real footage (default: the shared dash-cam video)")
    p.add_argument("--bundle", default="road", help="bundle for the real footage (default road)")
    p.add_argument("--frames", type=int, default=221, help="frames of the video (default: all 221)")
    p.add_argument("--modes", default="1,2,3,4,6,8,4m,8m", help="comma-separated modes (see above)")
    p.add_argument("--motion", type=float, default=0.08, help="unexplained fraction for the 'm' modes (default 0.08)")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds; the best is kept (default 2)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: the backend's default)")
    p.add_argument("--synthetic-seeds", default="0,1,2", help="generator seeds for the exact-truth videos ('' to skip)")
    p.add_argument("--synthetic-frames", type=int, default=120)
    p.add_argument("--synthetic-size", default="320x240")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    return p.parse_args(argv)


def parse_mode(mode: str, motion: float):
    from edgeseg.video.keyframe import KeyframeConfig

    adaptive = mode.endswith("m")
    n = int(mode.rstrip("m"))
    return None if n == 1 and not adaptive else KeyframeConfig(interval=n, motion=motion if adaptive else None)


def run_mode(predictor, frames: list[np.ndarray], config) -> tuple[list[np.ndarray], float, int]:
    """Labels per frame, mean ms per frame, keyframes run."""
    from edgeseg.video.keyframe import Keyframes

    step = predictor if config is None else Keyframes(predictor, config)
    out = []
    t0 = time.perf_counter()
    for f in frames:
        out.append(step(f).labels)
    ms = 1e3 * (time.perf_counter() - t0) / len(frames)
    return out, ms, (len(frames) if config is None else step.stats.keyframes)


def agreement(pred: list[np.ndarray], ref: list[np.ndarray], k: int) -> tuple[float, float]:
    """(pixel accuracy, mIoU over classes present in either) of ``pred`` against ``ref``, in %."""
    cm = np.zeros((k, k), np.int64)
    same = total = 0
    for p, r in zip(pred, ref):
        cm += np.bincount(r.ravel().astype(np.int64) * k + p.ravel(), minlength=k * k).reshape(k, k)
        same += int((p == r).sum())
        total += r.size
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = inter[union > 0] / union[union > 0]
    return 100.0 * same / total, 100.0 * float(iou.mean())


def measure(name: str, predictor, frames, truth, modes, motion, rounds, k) -> list[dict]:
    configs = {m: parse_mode(m, motion) for m in modes}
    best: dict[str, float] = {}
    labels: dict[str, list[np.ndarray]] = {}
    keys: dict[str, int] = {}
    for _ in range(rounds):  # interleaved: every mode once per round
        for m, cfg in configs.items():
            out, ms, n_key = run_mode(predictor, frames, cfg)
            best[m] = min(best.get(m, float("inf")), ms)
            labels[m], keys[m] = out, n_key
    base = labels[modes[0]]
    # the noise floor of agreement: per-frame inference against itself one frame earlier (the model's
    # own flicker plus one frame of motion), which no propagation can be expected to beat
    floor_acc, floor_miou = agreement(base[:-1], base[1:], k)
    rows = []
    for m in modes:
        row = {"video": name, "mode": m, "keyframes": keys[m], "frames": len(frames),
               "ms_per_frame": round(best[m], 2), "speedup": round(best[modes[0]] / best[m], 2)}
        acc, miou = agreement(labels[m], base, k)
        row["agree_pixel_%"], row["agree_miou_%"] = round(acc, 2), round(miou, 2)
        row["truth_miou_%"] = round(agreement(labels[m], truth, k)[1], 2) if truth is not None else None
        rows.append(row)
    rows[0]["note"] = f"per-frame vs previous frame: {floor_acc:.2f} % pixels, {floor_miou:.2f} mIoU"
    return rows


def read_video(path: Path, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def main(argv=None) -> int:
    import edgeseg
    from edgeseg.data import SceneGenerator
    from edgeseg.structures import ImageShape

    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if modes[0] != "1":
        modes.insert(0, "1")  # per-frame inference is the reference
    rows: list[dict] = []
    if args.video.exists():
        frames = read_video(args.video, args.frames)
        predictor = edgeseg.load(args.bundle, threads=args.threads)
        predictor(frames[0])  # warm-up
        rows += measure(args.video.name, predictor, frames, None, modes, args.motion, args.rounds,
                        len(predictor.manifest.classes))
    else:
        print(f"{args.video} not found: the dash-cam measurement is skipped")
    seeds = [int(s) for s in args.synthetic_seeds.split(",") if s.strip()]
    if seeds:
        w, h = (int(v) for v in args.synthetic_size.lower().split("x"))
        predictor = edgeseg.load("shapes", threads=args.threads)
        frames, truth = [], []
        for seed in seeds:
            gen = SceneGenerator(ImageShape(h, w), seed=seed)
            for f in gen.frames(args.synthetic_frames):
                frames.append(f.image)
                truth.append(f.labels)
        predictor(frames[0])
        # seeds are separate videos: a discontinuity between them is a keyframe (the size check keeps
        # state across seeds here, so each seed's first frame would be propagated from the last seed's:
        # measure per seed and pool)
        per_seed = []
        n = args.synthetic_frames
        for i, seed in enumerate(seeds):
            per_seed.append(measure(f"synthetic seed {seed}", predictor, frames[i * n:(i + 1) * n],
                                    truth[i * n:(i + 1) * n], modes, args.motion, args.rounds, 6))
        for j, m in enumerate(modes):
            group = [r[j] for r in per_seed]
            pooled = {"video": f"synthetic {w}x{h}, seeds {args.synthetic_seeds}", "mode": m,
                      "keyframes": sum(r["keyframes"] for r in group), "frames": sum(r["frames"] for r in group)}
            for key in ("ms_per_frame", "speedup", "agree_pixel_%", "agree_miou_%", "truth_miou_%"):
                pooled[key] = round(float(np.mean([r[key] for r in group])), 2)
            pooled["speedup"] = round(np.mean([r[0]["ms_per_frame"] for r in per_seed]) / pooled["ms_per_frame"], 2)
            rows.append(pooled)
    print_table(rows)
    from edgeseg.backends.device import device_info

    dev = device_info()
    print(f"machine: {dev.describe()}")
    machine = {"python": platform.python_version(), **dev.to_dict()}
    write_json(args.json, {"rows": rows, "machine": machine, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
