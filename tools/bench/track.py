#!/usr/bin/env python
"""Instance identity tracking (``edgeseg.video.Tracker``): ID switches, MOTA, IDF1 and speed on exact truth.

Three measurements, all on :class:`edgeseg.data.SceneGenerator` scenes (exact true ids; objects cross,
occlude each other, leave and enter):

* **truth**: each frame's true instances fed through the tracker after dropping a share of them at
  random (``--drop``, 10 %) and jittering every mask (shifted by up to 1 px each way, then dilated or
  eroded by 1 px at random), ``--frames`` frames per seed, 640x360. Rows: the tracker, and the same
  without motion (``motion=False``).
* **model**: the shipped SOLOv2 bundle ``shapes-instance`` (192x144) run on the generated frames, its
  detections tracked; counted against the truth by mask IoU >= 0.5 (so misses and false positives
  are the model's, the ID switches the tracker's).
* **speed**: ``Tracker.update`` per frame with ``--speed-objects`` objects at 640x360, the masks with
  their decoder bounds (``mask_boxes``), as an instance decoder hands them over.

    python tools/bench/track.py --json out/bench_track.json
    python tools/bench/track.py --seeds 0,1,2 --frames 200 --no-model

Measured (the defaults: seeds 0-4, 200 frames each; a 2-core x86 machine shared with a training run,
so times are upper bounds):

    run                                     truth  misses  FP    ID sw.  MOTA    IDF1    true ids  track ids  class flips
    truth, tracker                          6993   876     125   6       0.856   0.9173  92        113
    truth, no motion                        6993   876     125   8       0.8557  0.9108  92        109
    truth, no partial views                 6993   876     125   63      0.8478  0.8916  92        237
    shapes-instance, tracker                5299   1017    1547  60      0.5048  0.6573  58        199        16
    shapes-instance, no motion              5299   1017    1547  59      0.505   0.6567  58        221        16
    shapes-instance, no partial views       5299   1017    1547  68      0.5033  0.6567  58        231        20
    shapes-instance, tracker, score >= 0.4  5299   1291    253   44      0.7003  0.7429  58        96         30

    Tracker.update, 19.7 objects at 640x360: instance 0.89 ms p50 (1.49 mean), panoptic 3.05 ms p50 (4.92 mean)

With the model, misses and false positives are the model's (low-score duplicates of one object under
two classes, at the bundle's threshold 0.25); the remaining ID switches come mostly from the model
calling an object by another class on some frames (``class_flips``; the tracker never matches across
classes) or giving it two same-class masks.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg._io import write_json  # noqa: E402
from edgeseg.cli._common import print_table  # noqa: E402
from edgeseg.data import SceneGenerator  # noqa: E402
from edgeseg.structures import ImageShape, InstanceResult  # noqa: E402
from edgeseg.video import MotAccumulator, Tracker  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated scene seeds")
    p.add_argument("--frames", type=int, default=200, help="frames per seed")
    p.add_argument("--size", default="640x360", help="frame size of the truth runs (WxH)")
    p.add_argument("--objects", type=int, default=8, help="objects alive at once in the truth runs")
    p.add_argument("--drop", type=float, default=0.1, help="share of true detections dropped at random")
    p.add_argument("--no-model", action="store_true", help="skip the shapes-instance run")
    p.add_argument("--model-frames", type=int, default=200, help="frames per seed for the model run")
    p.add_argument("--speed-objects", type=int, default=20)
    p.add_argument("--speed-frames", type=int, default=200)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def _shift(m: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = m[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
    return out


def degrade(truth: InstanceResult, rng: np.random.Generator, drop: float) -> InstanceResult:
    """Drop each true instance with probability ``drop``; shift each mask by -1..1 px each way, then
    dilate (1/3), erode (1/3) or keep it (4-neighbourhood, 1 px). Ids removed (-1); tight bounds set."""
    keep = np.flatnonzero(rng.random(len(truth)) >= drop)
    r = truth[keep]
    masks = r.masks.copy()
    for i in range(len(r)):
        m = _shift(masks[i], int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))
        op = int(rng.integers(0, 3))
        if op < 2:
            nb = [_shift(m, 1, 0), _shift(m, -1, 0), _shift(m, 0, 1), _shift(m, 0, -1)]
            m = m | nb[0] | nb[1] | nb[2] | nb[3] if op == 0 else m & nb[0] & nb[1] & nb[2] & nb[3]
        masks[i] = m
    nonempty = masks.reshape(len(r), -1).any(axis=1)
    r = replace(r, masks=masks, track_ids=np.full(len(r), -1, np.int64))[np.flatnonzero(nonempty)]
    return replace(r, mask_boxes=_bounds(r.masks))


def _bounds(masks: np.ndarray) -> np.ndarray:
    out = np.zeros((len(masks), 4), np.int32)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if len(rows):
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def run_truth(seeds, frames, size, objects, drop, **tracker_kw) -> dict:
    total, per_frame = None, []
    for seed in seeds:
        gen = SceneGenerator(size, seed, max_objects=objects)
        rng = np.random.default_rng((seed, 99))
        tracker, acc = Tracker(**tracker_kw), MotAccumulator()
        for t in range(frames):
            truth = gen.render(t).instances
            det = degrade(truth, rng, drop)
            t0 = time.perf_counter()
            out = tracker.update(det)
            per_frame.append(time.perf_counter() - t0)
            acc.update(truth, out)
        total = acc.counts() if total is None else total + acc.counts()
    return {**total.to_dict(), "ms_per_frame": 1e3 * float(np.mean(per_frame))}


MODEL_RUNS = {  # name -> (least detection score, Tracker options)
    "tracker": (None, {}),
    "no motion": (None, {"motion": False}),
    "no partial views": (None, {"partial_views": False}),
    "no distance match": (None, {"distance_gate": 0}),
    "tracker, score >= 0.4": (0.4, {}),
}


def run_model(seeds, frames) -> dict:
    """shapes-instance on the generated frames (192x144, the bundle's input size), every run in MODEL_RUNS
    on the same detections; ``class_flips``: ID switches whose old and new track differ in class (the
    model called the object by another class; the tracker never matches across classes)."""
    import edgeseg

    size = ImageShape(144, 192)
    totals: dict = {}
    flips = dict.fromkeys(MODEL_RUNS, 0)
    with edgeseg.load("shapes-instance", backend="onnxruntime", precision="fp32") as predictor:
        for seed in seeds:
            gen = SceneGenerator(size, seed)
            trackers = {k: Tracker(**kw) for k, (_, kw) in MODEL_RUNS.items()}
            accs = {k: MotAccumulator() for k in trackers}
            cls_of: dict = {k: {} for k in trackers}
            for t in range(frames):
                f = gen.render(t)
                det = predictor(f.image)
                for k, tr in trackers.items():
                    least = MODEL_RUNS[k][0]
                    out = tr.update(det if least is None else det[det.scores >= least])
                    cls_of[k].update(zip(out.track_ids.tolist(), out.classes.tolist()))
                    accs[k].update(f.instances, out)
            for k, a in accs.items():
                totals[k] = a.counts() if k not in totals else totals[k] + a.counts()
                flips[k] += sum(cls_of[k][old] != cls_of[k][new] for _, _, old, new in a.switches_at)
    return {k: {**c.to_dict(), "class_flips": flips[k]} for k, c in totals.items()}


def run_speed(objects: int, frames: int) -> dict:
    """``Tracker.update`` per frame at 640x360: instances (masks with their ``mask_boxes``, as decoders give
    them) and the same scene as panoptic results (things and stuff, renumbered)."""
    size = ImageShape(360, 640)
    gen = SceneGenerator(size, 7, max_objects=objects, object_size=(0.04, 0.09), max_gap=0)
    insts, pans = [], []
    for t in range(frames):
        f = gen.render(t)
        insts.append(replace(f.instances, track_ids=None, mask_boxes=f.instances.boxes.astype(np.int32)))  # tight boxes
        pans.append(f.panoptic)
    out = {"objects_mean": float(np.mean([len(d) for d in insts]))}
    for name, results in (("instance", insts), ("panoptic", pans)):
        tracker, times = Tracker(), []
        for r in results:
            t0 = time.perf_counter()
            tracker.update(r)
            times.append(time.perf_counter() - t0)
        ms = np.array(times[5:]) * 1e3
        out[name] = {"ms_mean": float(ms.mean()), "ms_p50": float(np.percentile(ms, 50)), "ms_p95": float(np.percentile(ms, 95))}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    size = ImageShape.parse(args.size)
    cols = ("truth", "misses", "false_positives", "id_switches", "mota", "idf1", "truth_ids", "track_ids")
    rows, out = [], {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                     "seeds": seeds, "frames": args.frames, "size": [size.width, size.height], "drop": args.drop}
    for name, kw in (("truth, tracker", {}), ("truth, no motion", {"motion": False}),
                     ("truth, no partial views", {"partial_views": False}),
                     ("truth, no distance match", {"distance_gate": 0})):
        r = run_truth(seeds, args.frames, size, args.objects, args.drop, **kw)
        out[name] = r
        rows.append({"run": name, **r})
    if not args.no_model:
        for k, r in run_model(seeds, args.model_frames).items():
            out[f"shapes-instance, {k}"] = r
            rows.append({"run": f"shapes-instance, {k}", **r})
    print_table(rows, ["run", *cols, "class_flips", "ms_per_frame"])
    sp = run_speed(args.speed_objects, args.speed_frames)
    out["speed"] = sp
    for name in ("instance", "panoptic"):
        print(f"speed, {name}: {sp['objects_mean']:.1f} objects at 640x360: {sp[name]['ms_mean']:.3f} ms/frame mean, "
              f"p50 {sp[name]['ms_p50']:.3f}, p95 {sp[name]['ms_p95']:.3f}")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
