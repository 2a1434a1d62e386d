"""``edgeseg vos SOURCE --prompt MASK.png --out DIR``: carry object masks through a video, and
``edgeseg eval-vos PRED_DIR --data davis:ROOT``: score such masks with DAVIS J&F.

Masks are PNGs of object ids (DAVIS convention: 0 background, k = object k; a 0/255 prompt is
object 1; a colour-coded prompt, as an image editor saves it, has one object per colour on black),
one per frame, named after the frame's file stem (a video file: its zero-padded frame
index). This module defines two commands: ``vos`` (module level) and ``eval-vos`` (:data:`EVAL_VOS`,
listed in ``EXTRA_COMMANDS``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

from ._common import add_json_option, print_table, write_json

NAME = "vos"
HELP = "video object segmentation: propagate the objects of a first-frame mask through a video (one id PNG per frame)"
EXAMPLES = (
    "edgeseg vos clip.mp4 --prompt first_frame_mask.png --out masks/",
    "edgeseg vos ../shared/data/davis2016/JPEGImages/480p/blackswan "
    "--prompt ../shared/data/davis2016/Annotations/480p/blackswan/00000.png --out preds/blackswan --stats-json stats.json",
    "edgeseg vos frames/ --prompt ids.png --out masks/ --method flow-warp --threads 2   # the plain-flow baseline",
    "edgeseg eval-vos preds/ --data davis:../shared/data/davis2016 --json jf.json",
)
METHODS = ("propagator", "flow-warp", "copy-first")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a video file (anything OpenCV decodes) or a folder of frames (sorted by file name)")
    p.add_argument("--prompt", required=True, metavar="MASK.png",
                   help="object ids on the first frame: 0 background, k object k (DAVIS palette PNGs, 0/255 masks and "
                        "colour drawings on black, one colour per object, work)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for one id PNG per frame (created if needed)")
    p.add_argument("--stats-json", default=None, metavar="PATH", help="also write timing and events (cuts, lost objects) here")
    p.add_argument("--method", default="propagator", choices=METHODS,
                   help="propagator (default); flow-warp and copy-first are the reference baselines")
    p.add_argument("--threads", type=int, default=2, help="OpenCV threads (default 2; 0: OpenCV's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _frames(source: Path) -> tuple[Iterator[tuple[str, Any]], int | None]:
    """(name, RGB image) pairs of a folder of frames or a video file, and their count if known."""
    from ..data.io import IMAGE_SUFFIXES, image_files, read_image
    from ..data.video import VideoReader
    from ..errors import InputError

    if source.is_dir():
        files = image_files(source)
        if not files:
            raise InputError(f"no frames in {source}", fix=f"a frame folder holds images ({', '.join(IMAGE_SUFFIXES)})")
        return ((p.stem, read_image(p)) for p in files), len(files)
    if not source.exists():
        raise InputError(f"source not found: {source}", fix="give a video file or a folder of frames")
    reader = VideoReader(source, error=InputError, name=f"video {source}")
    digits = max(5, len(str((reader.frame_count or 1) - 1)))

    def gen() -> Iterator[tuple[str, Any]]:
        with reader:
            for f in reader.frames():
                yield f"{f.index:0{digits}d}", f.image

    return gen(), reader.frame_count


def _make(method: str):
    from ..video import CopyFirstMask, FlowWarp, Propagator

    return {"propagator": Propagator, "flow-warp": FlowWarp, "copy-first": CopyFirstMask}[method]()


def _ids(result, shape) -> Any:
    import numpy as np

    ids = np.zeros(shape, np.uint8)
    for m, k in zip(result.masks, result.object_ids):
        ids[m] = int(k)
    return ids


def _propagate(prop, frames, prompt, prompt_path: str, out: Path, bar) -> tuple[int, float, list[dict]]:
    """Run ``prop`` over ``frames`` writing one id PNG per frame: (frames, seconds in steps, events)."""
    import time

    from ..data.io import write_label
    from ..structures import ImageShape
    from ..video import prompt_ids

    step_s, events, n = 0.0, [], 0
    for name, rgb in frames:
        if n == 0:
            result = prop.start(rgb, prompt_ids(prompt, ImageShape.of(rgb), what=f"prompt {prompt_path}"))
        else:
            t0 = time.perf_counter()
            result = prop.step(rgb)
            step_s += time.perf_counter() - t0
            info = prop.last_info
            if info is not None and (info.cut or info.lost or info.redetected):
                events.append({"frame": name, "index": info.index, "cut": info.cut, "lost": list(info.lost),
                               "redetected": list(info.redetected)})
        write_label(out / f"{name}.png", _ids(result, rgb.shape[:2]))
        n += 1
        bar.update(1)
    return n, step_s, events


def run(args: argparse.Namespace) -> int:
    import resource
    import sys
    import time

    import cv2
    from tqdm import tqdm

    from ..data.davis import read_prompt_mask
    from ..errors import InputError

    if args.threads < 0:
        raise InputError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        cv2.setNumThreads(args.threads)
    prompt = read_prompt_mask(args.prompt)
    frames, total = _frames(Path(args.source))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prop = _make(args.method)
    t_all = time.perf_counter()
    with tqdm(total=total, unit="frame", disable=args.no_progress or not sys.stderr.isatty(), dynamic_ncols=True) as bar:
        n, step_s, events = _propagate(prop, frames, prompt, args.prompt, out, bar)
    if n == 0:
        raise InputError(f"{args.source} holds no decodable frame")
    wall = time.perf_counter() - t_all
    fps = (n - 1) / step_s if step_s > 0 else float("nan")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    ids = [int(k) for k in prop.result().object_ids]
    print(f"{n} frames, {len(ids)} object(s) -> {out}/  propagation {fps:.1f} fps ({args.method}, "
          f"{args.threads or 'default'} threads), {wall:.1f} s with I/O, peak RSS {peak_mb:.0f} MB")
    for e in events:
        what = ", ".join(x for x in ("cut" if e["cut"] else "", f"lost {e['lost']}" if e["lost"] else "",
                                     f"found again {e['redetected']}" if e["redetected"] else "") if x)
        print(f"  frame {e['frame']}: {what}")
    if args.stats_json:
        from dataclasses import asdict

        config = asdict(prop.config) if hasattr(prop, "config") else {}
        write_json(args.stats_json, {
            "source": str(args.source), "prompt": str(args.prompt), "out": str(out), "method": args.method,
            "frames": n, "objects": ids, "propagation_fps": fps, "wall_s": wall, "peak_rss_mb": peak_mb,
            "threads": args.threads, "events": events, "config": config,
        })
    return 0


# -- eval-vos -----------------------------------------------------------------------------------------------------
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred_dir", help="predictions: PRED_DIR/SEQUENCE/FRAME.png, object ids (the DAVIS results layout)")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="davis:ROOT[,resolution=480p][,subset=val] (ROOT holds JPEGImages/ and Annotations/)")
    p.add_argument("--sequences", default=None, metavar="A,B", help="score only these sequences (comma-separated)")
    add_json_option(p)


def _pct(x: float) -> str:
    import math

    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def run_eval(args: argparse.Namespace) -> int:
    from ..data.davis import Davis, read_id_mask
    from ..errors import DataError
    from ..eval.vos import VOSMetric

    davis = Davis.from_spec(args.data)
    if args.sequences:
        davis = Davis(davis.root, davis.resolution, sequences=[s.strip() for s in args.sequences.split(",") if s.strip()])
    pred_root = Path(args.pred_dir)
    if not pred_root.is_dir():
        raise DataError(f"predictions folder {pred_root} not found", fix="run `edgeseg vos ... --out PRED_DIR/SEQUENCE` first")
    metric = VOSMetric()
    for seq in davis:
        folder = pred_root / seq.name
        missing = [n for n in seq.frame_names if not (folder / f"{n}.png").is_file()]
        if missing:
            raise DataError(f"{folder}: no prediction for {len(missing)} of {len(seq)} frames ({', '.join(missing[:3])} ...)",
                            fix="predict every frame of the sequence (the first is the prompt)")
        pred = [read_id_mask(folder / f"{n}.png") for n in seq.frame_names]
        metric.update(seq.name, seq.masks(), pred, seq.frame_names)
    scores = metric.compute()
    rows = [{"sequence": r["sequence"], "object": r["object"], "frames": r["frames"], "J&F": _pct(r["J&F-Mean"]),
             "J": _pct(r["J-Mean"]), "F": _pct(r["F-Mean"]), "J-Recall": _pct(r["J-Recall"]),
             "F-Recall": _pct(r["F-Recall"])} for r in scores.per_object()]
    print(f"{pred_root} on {args.data}: {len(davis)} sequence(s), {len(scores.objects)} object(s) "
          "(first and last frames not scored, as the DAVIS semi-supervised evaluation)")
    print_table(rows)
    print()
    print_table([{k: _pct(v) for k, v in scores.summary().items()}])
    data = scores.to_dict()
    data.update(pred_dir=str(pred_root), data=args.data)
    write_json(args.json, data)
    return 0


EVAL_VOS = SimpleNamespace(
    NAME="eval-vos",
    HELP="score video object masks with DAVIS J&F (region IoU and contour accuracy, as the official evaluation)",
    EXAMPLES=(
        "edgeseg eval-vos preds/ --data davis:../shared/data/davis2016",
        "edgeseg eval-vos preds/ --data davis:DAVIS2017,subset=val --sequences bike-packing,dogs-jump --json jf.json",
    ),
    add_arguments=add_eval_arguments,
    run=run_eval,
)
EXTRA_COMMANDS = (EVAL_VOS,)
