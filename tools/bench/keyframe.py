#!/usr/bin/env python
"""Keyframe acceleration (``edgeseg run --keyframe-interval``): throughput gain and accuracy cost, per task.

Every mode runs over the same decoded frames, modes interleaved round by round so their times are
compared side by side. Per task (``--tasks``, default all three):

* **semantic**: the ``road`` bundle on the dash-cam video ``dashcam_960x540.mp4`` (real footage, no
  labels): agreement with per-frame inference (pixel accuracy and mIoU of the keyframe labels against
  the per-frame labels, over 11 classes); the ``shapes`` bundle on :class:`edgeseg.data.SceneGenerator`
  videos (moving, occluding objects; ``--synthetic-seeds``): mIoU against the exact labels.
* **instance**: ``shapes-instance`` (SOLOv2) on the same generator videos: COCO mask AP against the
  exact instances (categories and class mapping of ``synthetic-instance:``, as ``edgeseg eval`` scores
  the bundle; and AP50), and mask AP against per-frame inference (its detections taken as the truth). Detections
  above the bundle's score threshold (what a stream carries; ``--instance-score-threshold``).
* **panoptic**: ``shapes-panoptic`` on the generator videos: PQ against the exact panoptic truth
  (classes matched by name, as ``edgeseg demo`` scores it) and PQ against per-frame inference; and
  ``--panoptic-bundle`` (a Cityscapes model, default ``runs/street-panoptic.edgeseg``, skipped when
  absent) on the dash-cam video: PQ against per-frame inference.

Times are the segmentation path per frame (preprocess, inference and decode on keyframes; flow and
warping on the others), mean over all frames, the best of ``--rounds`` rounds. The generator's videos
are measured one seed at a time (each a fresh stream: nothing carries over from one video to the
next) and pooled: keyframes and frames summed, times and scores the mean over the videos. The first
row of each video notes how well per-frame inference agrees with itself one frame earlier.

    python tools/bench/keyframe.py --json out/bench_keyframe.json
    python tools/bench/keyframe.py --frames 120 --modes 1,3,6,6m --rounds 1
    python tools/bench/keyframe.py --tasks instance,panoptic --threads 1 --json out/kf_ip.json

Modes: ``N`` = a keyframe every N frames; ``Nm`` = at most N apart, sooner when more than
``--motion`` of the frame is not explained by the flow; either followed by ``:field=value``
overrides of :class:`~edgeseg.video.keyframe.KeyframeConfig` to compare settings side by side
(``--modes 1,6,6:compose=0,6:flow_scale=0.25``).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg._io import write_json  # noqa: E402
from edgeseg.cli._common import print_table  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DASHCAM = REPO.parent / "shared" / "data" / "video" / "dashcam_960x540.mp4"
STREET_PANOPTIC = REPO / "runs" / "street-panoptic.edgeseg"
TASKS = ("semantic", "instance", "panoptic")
SYNTHETIC_BUNDLES = {"semantic": "shapes", "instance": "shapes-instance", "panoptic": "shapes-panoptic"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks to measure (default: all of "
                   f"{', '.join(TASKS)})")
    p.add_argument("--video", type=Path, default=DASHCAM, help="real footage (default: the shared dash-cam video)")
    p.add_argument("--bundle", default="road", help="semantic bundle for the real footage (default road)")
    p.add_argument("--panoptic-bundle", type=Path, default=STREET_PANOPTIC,
                   help="panoptic bundle for the real footage (default runs/street-panoptic.edgeseg; skipped "
                   "when absent)")
    p.add_argument("--frames", type=int, default=221, help="frames of the video (default: all 221)")
    p.add_argument("--modes", default="1,2,3,4,6,8,4m,8m", help="comma-separated modes (see above)")
    p.add_argument("--motion", type=float, default=0.08, help="unexplained fraction for the 'm' modes (default 0.08)")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds; the best is kept (default 2)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: the backend's default)")
    p.add_argument("--synthetic-seeds", default="0,1,2", help="generator seeds for the exact-truth videos ('' to skip)")
    p.add_argument("--synthetic-frames", type=int, default=120)
    p.add_argument("--synthetic-size", default="320x240")
    p.add_argument("--instance-score-threshold", type=float,
                   help="least detection score of the instance bundle (default: the bundle's own)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown or not args.tasks:
        p.error(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(TASKS)}")
    return args


def parse_mode(mode: str, motion: float):
    """``N``, ``Nm``, either followed by ``:field=value`` overrides of :class:`KeyframeConfig`
    (``6:compose=0:flow_scale=0.25``); None for per-frame inference (``1`` without overrides)."""
    import dataclasses

    from edgeseg.video.keyframe import KeyframeConfig

    head, *overrides = mode.split(":")
    adaptive = head.endswith("m")
    n = int(head.rstrip("m"))
    if n == 1 and not adaptive and not overrides:
        return None
    types = {f.name: f.type for f in dataclasses.fields(KeyframeConfig)}
    fields: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in types or key in ("interval", "motion"):
            raise InputError(f"mode {mode!r}: {item!r} is not a KeyframeConfig field=value",
                             fix=f"one of {', '.join(k for k in types if k not in ('interval', 'motion'))}")
        kind = str(types[key])
        if "None" in kind and value.lower() == "none":
            fields[key] = None
        elif "bool" in kind:
            fields[key] = value.lower() in ("1", "true", "yes")
        else:
            fields[key] = float(value) if "float" in kind else int(value) if "int" in kind else value
    return KeyframeConfig(interval=n, motion=motion if adaptive else None, **fields)


def run_mode(predictor, frames: list[np.ndarray], config) -> tuple[list[Any], float, int]:
    """Results per frame, mean ms per frame, keyframes run."""
    from edgeseg.video.keyframe import Keyframes

    step = predictor if config is None else Keyframes(predictor, config)
    out = []
    t0 = time.perf_counter()
    for f in frames:
        out.append(step(f))
    ms = 1e3 * (time.perf_counter() - t0) / len(frames)
    return out, ms, (len(frames) if config is None else step.stats.keyframes)


# ---- scoring, per task -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scoring:
    """How one task's results are scored (columns in percent).

    agree: ``(results, reference results) -> {column: value}`` against another run on the same frames.
    truth: ``results -> {column: value}`` against the video's exact truth (None values: it has none).
    note:  the agreement of per-frame inference with itself one frame earlier, in words.
    """

    agree: Callable[[list, list], dict[str, float]]
    truth: Callable[[list], dict[str, float | None]]
    note: Callable[[dict[str, float]], str]


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


def semantic_scoring(k: int, truth: list[np.ndarray] | None = None) -> Scoring:
    """Pixel accuracy and mIoU against per-frame labels; mIoU against the true labels (``k`` classes)."""
    def agree(results, ref):
        acc, miou = agreement([r.labels for r in results], [r.labels for r in ref], k)
        return {"agree_pixel_%": round(acc, 2), "agree_miou_%": round(miou, 2)}

    def vs_truth(results):
        miou = agreement([r.labels for r in results], truth, k)[1] if truth is not None else None
        return {"truth_miou_%": None if miou is None else round(miou, 2)}

    return Scoring(agree, vs_truth, lambda f: (f"per-frame vs previous frame: {f['agree_pixel_%']:.2f} % pixels, "
                                               f"{f['agree_miou_%']:.2f} mIoU"))


def instance_truth(result, to_category: Sequence[int]):
    """An :class:`~edgeseg.data.coco_instances.InstanceTruth` of an ``InstanceResult`` (a model's
    detections or the generator's true instances): class ``c`` becomes category ``to_category[c]``;
    instances of classes mapped to -1 are left out."""
    from edgeseg.data.coco_instances import InstanceTruth

    lut = np.asarray(to_category, np.int64)
    classes = np.asarray(result.classes, np.int64)
    if len(classes) and (classes.min() < 0 or classes.max() >= len(lut)):
        raise InputError(f"instance classes {sorted(set(classes.tolist()))} fall outside the class map "
                         f"({len(lut)} classes)", fix="map every class the results use")
    if len(classes) and result.masks is None:
        raise InputError("the instance results have no masks", fix="mask AP needs an instance-mask model")
    cats = lut[classes]
    keep = cats >= 0
    masks = result.masks[keep] if len(classes) else np.zeros((0, *result.image_shape.hw), bool)
    n = int(keep.sum())
    return InstanceTruth(masks=masks, classes=classes[keep].astype(np.int32), category_ids=cats[keep],
                         boxes=np.asarray(result.boxes, np.float32)[keep].reshape(n, 4), iscrowd=np.zeros(n, bool),
                         area=np.array([np.count_nonzero(m) for m in masks], np.float64),
                         image_shape=result.image_shape, ids=np.arange(1, n + 1, dtype=np.int64))


def instance_scoring(model_classes: Sequence[str], truth: list | None = None) -> Scoring:
    """COCO mask AP with the categories of ``synthetic-instance:`` and model classes matched to them by
    name (:func:`~edgeseg.eval.category_map`): against per-frame detections taken as the truth (all
    100 when neither has any instance, as the INT8 gate scores agreement) and, ``truth`` given (the
    generator's ``InstanceResult`` per frame), against the exact instances (AP and AP50: whether the
    loss is in finding objects or in the masks' shape)."""
    from edgeseg.data.synthetic import CLASSES
    from edgeseg.data.synthetic_instances import SyntheticInstances
    from edgeseg.eval import MaskAPAccumulator, category_map

    categories = dict(zip(SyntheticInstances.category_ids, SyntheticInstances.classes))
    to_category = category_map(model_classes, categories).to_category
    true_lut = category_map(CLASSES, categories).to_category  # the generator's classes: stuff -> -1
    true = None if truth is None else [instance_truth(t, true_lut) for t in truth]

    def ap(results, truths) -> tuple[float, float]:
        """(AP, AP50); -1 without any instance in the truth."""
        acc = MaskAPAccumulator(categories, class_to_category=to_category)
        for i, (r, t) in enumerate(zip(results, truths)):
            acc.add(i, r, t)
        stats = acc.compute().stats
        return float(stats[0]), float(stats[1])

    def agree(results, ref):
        got = ap(results, [instance_truth(r, to_category) for r in ref])[0]
        return {"agree_mask_ap_%": 100.0 if got < 0 else round(100.0 * got, 2)}

    def vs_truth(results):
        if true is None:
            return {"truth_mask_ap_%": None, "truth_ap50_%": None}
        scores = (round(100.0 * max(v, 0.0), 2) for v in ap(results, true))
        return dict(zip(("truth_mask_ap_%", "truth_ap50_%"), scores))

    return Scoring(agree, vs_truth, lambda f: f"per-frame vs previous frame: mask AP {f['agree_mask_ap_%']:.2f}")


def panoptic_scoring(model_classes: Sequence[str], truth: list | None = None) -> Scoring:
    """PQ against per-frame inference taken as the truth (100 when nothing is segmented anywhere, as
    the INT8 gate scores agreement) and, ``truth`` given (the generator's frames), against the exact
    panoptic truth through :class:`edgeseg.demo.GroundTruthSink` (classes matched by name)."""
    from edgeseg.demo import GroundTruthSink
    from edgeseg.eval import PanopticMetric
    from edgeseg.structures.frame import Frame

    def agree(results, ref):
        metric = PanopticMetric()
        for r, t in zip(results, ref):
            metric.update(r, t)
        scores = metric.compute()
        return {"agree_pq_%": 100.0 if scores.all.n == 0 else round(100.0 * scores.pq, 2)}

    def vs_truth(results):
        if truth is None:
            return {"truth_pq_%": None}
        sink = GroundTruthSink(tuple(model_classes), task="panoptic")
        for i, (r, f) in enumerate(zip(results, truth)):
            sink.write(Frame(f.image, index=i, source_id="synthetic", meta={"truth": f}), r)
        return {"truth_pq_%": round(100.0 * sink.scores().pq, 2)}

    return Scoring(agree, vs_truth, lambda f: f"per-frame vs previous frame: PQ {f['agree_pq_%']:.2f}")


# ---- measuring and pooling ---------------------------------------------------------------------------
def measure(task: str, name: str, predictor, frames, modes, motion, rounds, scoring: Scoring
            ) -> tuple[list[dict], dict[str, float]]:
    """One row per mode (the first is per-frame inference, the reference) and the agreement of
    per-frame inference with itself one frame earlier. Modes interleaved: every mode once per round;
    results are scored in the first round and dropped (inference and flow are deterministic, so
    later rounds give the same results), so at most two modes' results are held at once."""
    configs = {m: parse_mode(m, motion) for m in modes}
    best: dict[str, float] = {}
    keys: dict[str, int] = {}
    scores: dict[str, dict] = {}
    base: list | None = None
    floor: dict[str, float] = {}
    for r in range(rounds):
        for m, cfg in configs.items():
            out, ms, n_key = run_mode(predictor, frames, cfg)
            best[m] = min(best.get(m, float("inf")), ms)
            if r == 0:
                if base is None:
                    base = out
                    # the noise floor of agreement: the model's own flicker plus one frame of motion,
                    # which no propagation can be expected to beat
                    floor = scoring.agree(base[:-1], base[1:])
                keys[m] = n_key
                scores[m] = {**scoring.agree(out, base), **scoring.truth(out)}
            del out
    bundle = f"{predictor.bundle.root.stem} ({predictor.backend} {predictor.runner.precision})"
    rows = [{"task": task, "video": name, "bundle": bundle, "mode": m, "keyframes": keys[m], "frames": len(frames),
             "ms_per_frame": round(best[m], 2), "speedup": round(best[modes[0]] / best[m], 2), **scores[m]}
            for m in modes]
    rows[0]["note"] = scoring.note(floor)
    return rows, floor


#: row columns that add up over videos; the others (but the labels) are averaged
SUMMED = ("keyframes", "frames")
LABELS = ("task", "video", "bundle", "mode", "note")


def pool(per_video: list[list[dict]], video: str) -> list[dict]:
    """Rows of several videos measured apart (one list of mode rows per video, the same modes in the
    same order, per-frame inference first) as one row per mode: keyframes and frames summed, times and
    scores the mean over the videos (None when a video has none), rounded to 2 places; the speed-up is
    the mean per-frame time over the mode's mean time."""
    if not per_video or any(len(rows) != len(per_video[0]) for rows in per_video):
        raise InputError("pooling needs the same modes measured on every video")
    base_ms = float(np.mean([rows[0]["ms_per_frame"] for rows in per_video]))
    pooled = []
    for group in zip(*per_video):
        if len({r["mode"] for r in group}) != 1:
            raise InputError(f"pooling: modes {[r['mode'] for r in group]} differ between videos")
        row = {"task": group[0].get("task"), "video": video, "bundle": group[0].get("bundle"), "mode": group[0]["mode"]}
        for key in group[0]:
            if key in LABELS:
                continue
            values = [r[key] for r in group]
            if key in SUMMED:
                row[key] = sum(values)
            else:
                row[key] = None if any(v is None for v in values) else round(float(np.mean(values)), 2)
        row["speedup"] = round(base_ms / row["ms_per_frame"], 2)
        pooled.append(row)
    return pooled


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


def load(bundle, args, task: str):
    import edgeseg

    predictor = edgeseg.load(bundle, threads=args.threads)
    if task == "instance" and args.instance_score_threshold is not None:
        predictor.set_options(score_threshold=args.instance_score_threshold)
    return predictor


SCORINGS = {"semantic": lambda p, truth: semantic_scoring(len(p.manifest.classes), truth),
            "instance": lambda p, truth: instance_scoring(p.classes, truth),
            "panoptic": lambda p, truth: panoptic_scoring(p.classes, truth)}
#: what each task's scoring takes as the truth of a generated frame
TRUTH_OF = {"semantic": lambda f: f.labels, "instance": lambda f: f.instances, "panoptic": lambda f: f}


def measure_synthetic(task: str, args, modes: list[str]) -> list[dict]:
    """The task's shapes bundle on each generator seed's video, measured apart (a fresh
    :class:`Keyframes` per video and mode, so no state crosses videos) and pooled."""
    from edgeseg.data import SceneGenerator
    from edgeseg.structures import ImageShape

    seeds = [int(s) for s in args.synthetic_seeds.split(",") if s.strip()]
    if not seeds:
        return []
    w, h = (int(v) for v in args.synthetic_size.lower().split("x"))
    predictor = load(SYNTHETIC_BUNDLES[task], args, task)
    per_seed, floors = [], []
    for seed in seeds:
        generated = list(SceneGenerator(ImageShape(h, w), seed=seed).frames(args.synthetic_frames))
        frames = [f.image for f in generated]
        truth = [TRUTH_OF[task](f) for f in generated]
        del generated
        predictor(frames[0])  # warm-up
        scoring = SCORINGS[task](predictor, truth)
        rows, floor = measure(task, f"synthetic seed {seed}", predictor, frames, modes, args.motion, args.rounds,
                              scoring)
        per_seed.append(rows)
        floors.append(floor)
    pooled = pool(per_seed, f"synthetic {w}x{h}, seeds {args.synthetic_seeds}")
    pooled[0]["note"] = scoring.note({k: float(np.mean([f[k] for f in floors])) for k in floors[0]})
    return pooled


def measure_video(task: str, bundle, frames, args, modes: list[str]) -> list[dict]:
    """``bundle`` on the real footage's frames: agreement with per-frame inference (no truth)."""
    predictor = load(bundle, args, task)
    predictor(frames[0])  # warm-up
    scoring = SCORINGS[task](predictor, None)
    return measure(task, args.video.name, predictor, frames, modes, args.motion, args.rounds, scoring)[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if modes[0] != "1":
        modes.insert(0, "1")  # per-frame inference is the reference
    real = {"semantic": args.bundle} if "semantic" in args.tasks else {}
    if "panoptic" in args.tasks:
        if args.panoptic_bundle.exists():
            real["panoptic"] = args.panoptic_bundle
        else:
            print(f"{args.panoptic_bundle} not found: the panoptic dash-cam measurement is skipped "
                  "(pass --panoptic-bundle PATH)")
    frames = []
    if real and args.video.exists():
        frames = read_video(args.video, args.frames)
    elif real:
        print(f"{args.video} not found: the dash-cam measurements are skipped")
    tables: dict[str, list[dict]] = {t: [] for t in args.tasks}
    for task in args.tasks:
        if task in real and frames:
            tables[task] += measure_video(task, real[task], frames, args, modes)
        if args.synthetic_seeds.strip():
            tables[task] += measure_synthetic(task, args, modes)
    for task, rows in tables.items():
        print(f"\n{task}")
        print_table(rows)
    from edgeseg.backends.device import device_info

    dev = device_info()
    print(f"machine: {dev.describe()}")
    machine = {"python": platform.python_version(), **dev.to_dict()}
    rows = [r for t in args.tasks for r in tables[t]]
    write_json(args.json, {"rows": rows, "machine": machine, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
