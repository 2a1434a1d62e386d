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
import contextlib
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
    "edgeseg eval-vos preds/ --data davis:../shared/data/davis2016 --sequences blackswan --json jf.json",
)
METHODS = ("propagator", "flow-warp", "copy-first")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a video file (anything OpenCV decodes) or a folder of frames (sorted by file name)")
    p.add_argument("--prompt", required=True, metavar="MASK.png",
                   help="object ids on the first frame: 0 background, k object k, 1..254 (255 is DAVIS's void, not an "
                        "object; DAVIS palette PNGs, 0/255 masks and colour drawings on black, one colour per object, work)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for one id PNG per frame (created if needed; one that already holds PNGs needs --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder that already holds PNGs (an earlier run's): same-named ones are replaced")
    p.add_argument("--stats-json", default=None, metavar="PATH", help="also write timing and events (cuts, lost objects) here")
    p.add_argument("--method", default="propagator", choices=METHODS,
                   help="propagator (default); flow-warp and copy-first are the reference baselines")
    p.add_argument("--threads", type=int, default=2, help="OpenCV threads (default 2; 0: OpenCV's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _frame_files(source: Path) -> list[Path]:
    """The frames of a folder in playing order: refused when empty or when two files share a stem (their
    masks would overwrite each other); a gap in numbered names is logged."""
    import logging

    from ..data.io import IMAGE_SUFFIXES, frame_files
    from ..errors import InputError

    files = frame_files(source)
    if not files:
        raise InputError(f"no frames in {source}", fix=f"a frame folder holds images ({', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise InputError(f"frames {seen[f.stem].name} and {f.name} in {source} share the name {f.stem!r}: "
                             "their masks would be one file", fix="keep one image per frame in the folder")
        seen[f.stem] = f
    if all(f.stem.isdigit() for f in files):
        numbers = [int(f.stem) for f in files]
        gaps = [(a, b) for a, b in zip(numbers, numbers[1:]) if b != a + 1]
        if gaps:
            logging.getLogger(__name__).warning(
                "%s: %d gap(s) in the frame numbers (first: %d is followed by %d): propagation jumps over the "
                "missing frames", source, len(gaps), *gaps[0])
    return files


def source_path(text: str) -> Path:
    """``--source`` as the file or folder it names: a path, or a ``file://`` / ``dir://`` URL as ``edgeseg run``
    reads them (a live source is refused: it has no first frame to prompt on, nor frames to name masks after)."""
    from ..errors import InputError
    from ..stream.sources.uri import parse_source

    if "://" in str(text):
        spec = parse_source(text)
        if spec.scheme not in ("file", "folder"):
            raise InputError(f"source {text}: edgeseg vos reads a video file or a folder of frames, not a {spec.scheme} "
                             "source", fix=f"track objects on a live source with: edgeseg run --source {text} "
                                           "--prompt MASK.png --png-dir DIR")
        return Path(spec.target)
    return Path(text)


def _frames(source: Path) -> tuple[Iterator[tuple[str, Any]], int | None]:
    """(name, RGB image) pairs of a folder of frames or a video file, and their count if known. A folder's image
    that cannot be read comes as ``(name, InputError)``: the caller goes on without it (as ``edgeseg run``)."""
    from ..data.io import read_image
    from ..data.video import VideoReader
    from ..errors import DataError, InputError
    from ..stream.sources.uri import _missing_file_fix

    if source.is_dir():
        files = _frame_files(source)

        def read(p: Path):
            try:
                return read_image(p)
            except (InputError, DataError) as e:
                return e

        return ((p.stem, read(p)) for p in files), len(files)
    if not source.exists():
        raise InputError(f"source not found: {source}", fix=_missing_file_fix(source, str(source)) if any(
            c in source.name for c in "*?[") else "give a video file or a folder of frames")
    if source.stat().st_size == 0:
        raise InputError(f"video file {source} is empty (0 bytes)", fix="re-copy or re-record the file")
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


def _write_ids(path: Path, ids: Any) -> None:
    """One id PNG (``write_label`` writes atomically: an interrupted run leaves whole files only)."""
    from ..data.io import write_label
    from ..errors import InputError

    try:
        write_label(path, ids)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}",
                         fix="give --out a folder you can write to, on a disk with room") from None


def _check_out(out: Path, overwrite: bool, source: Path | None = None, prompt: Path | None = None) -> None:
    """``--out`` must be a folder that can be written and, without ``--overwrite``, hold no PNGs yet (an
    earlier run's masks would be mixed with this run's, or partly replaced when this one stops half-way);
    never the frames' folder nor the prompt's (the masks would replace the input)."""
    from ..errors import InputError
    from ._common import check_output

    where = out.resolve()
    for what, p in (("the frames' folder", source if source is not None and source.is_dir() else None),
                    ("the prompt's folder", prompt.parent if prompt is not None else None)):
        if p is not None and p.resolve() == where:
            raise InputError(f"--out {out} is {what}: the masks would replace input files",
                             fix="give --out another folder")
    if out.is_dir() and not overwrite:
        pngs = sorted(p.name for p in out.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if pngs:
            raise InputError(f"--out {out} already holds {len(pngs)} PNG(s) ({pngs[0]} ...), perhaps an earlier run's",
                             fix="give an empty or new folder, or add --overwrite to replace them")
    check_output(str(out), "--out", kind="folder")


def _propagate(prop, frames, prompt, prompt_path: str, out: Path, bar, written: set[str] | None = None,
               source: str = "the source") -> tuple[int, float, list[dict]]:
    """Run ``prop`` over ``frames`` writing one id PNG per frame: (frames, seconds in steps, events)."""
    import logging
    import time

    from ..errors import InputError
    from ..structures import ImageShape
    from ..video import prompt_ids

    step_s, events, n, first, ids = 0.0, [], 0, None, None
    for name, rgb in frames:
        if isinstance(rgb, Exception):  # an unreadable image in a folder: its mask is the last frame's
            reason = str(rgb).splitlines()[0]
            if ids is None:
                raise InputError(f"the first frame {name} of {source} cannot be read ({reason}): the prompt is drawn "
                                 "on it", fix="replace the file, or start the folder at a frame that reads")
            logging.getLogger(__name__).warning("frame %s cannot be read (%s): its mask repeats the last frame's, and "
                                                "propagation goes on from the next one", name, reason)
            events.append({"frame": name, "index": n, "unreadable": reason})
            if written is not None:  # named before the write: an interruption after it still counts it (written is
                written.add(f"{name}.png")  # checked against the files at the end)
            _write_ids(out / f"{name}.png", ids)
            n += 1
            bar.update(1)
            continue
        shape = ImageShape.of(rgb)
        if n == 0:
            first = shape
            result = prop.start(rgb, prompt_ids(prompt, shape, what=f"prompt {prompt_path}"))
        else:
            if shape != first:
                raise InputError(f"frame {name} of {source} is {shape.width}x{shape.height}, the first frame "
                                 f"{first.width}x{first.height}: the frames of a video have one size",
                                 fix="resize the frames to one size, or split the folder where the size changes")
            t0 = time.perf_counter()
            result = prop.step(rgb)
            step_s += time.perf_counter() - t0
            info = prop.last_info
            if info is not None and (info.cut or info.lost or info.redetected):  # index: the frame's in the source
                events.append({"frame": name, "index": n, "cut": info.cut, "lost": list(info.lost),
                               "redetected": list(info.redetected)})
        ids = _ids(result, rgb.shape[:2])
        if written is not None:  # named before the write: a Ctrl-C between the write and the count lost one frame
            written.add(f"{name}.png")  # from the stats (6 masks, 5 frames said); checked against the files below
        _write_ids(out / f"{name}.png", ids)
        n += 1
        bar.update(1)
    return n, step_s, events


def _warn_incomplete(source: Path, total: int | None, out: Path, written: set[str]) -> None:
    """Warn (stderr) when a video decoded well short of the frames its container announces (truncated or
    corrupt: the masks of what decoded are written) and when ``out`` holds PNGs this run did not write
    (an earlier run's, kept by ``--overwrite``)."""
    import sys

    if total and not source.is_dir() and len(written) < total - 1:
        print(f"edgeseg vos: warning: video {source} decoded {len(written)} of the {total} frames its container announces "
              "(truncated or corrupt?): masks were written for the frames that decoded", file=sys.stderr)
    stale = sorted(p.name for p in out.iterdir() if p.suffix.lower() == ".png" and p.name not in written)
    if stale:
        print(f"edgeseg vos: warning: {len(stale)} PNG(s) in {out}/ are not from this run ({stale[0]} ...): "
              "remove them if they are an earlier run's", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import resource
    import sys
    import time

    import cv2

    from .._progress import bar as progress_bar
    from ..data.davis import read_prompt_mask
    from ..errors import EdgesegError, InputError
    from ._common import check_output

    if args.threads < 0:
        raise InputError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        cv2.setNumThreads(args.threads)
    if args.stats_json:
        check_output(args.stats_json, "--stats-json")
    prompt = read_prompt_mask(args.prompt)
    args.source = source_path(args.source)
    frames, total = _frames(args.source)
    out = Path(args.out)
    _check_out(out, args.overwrite, args.source, Path(args.prompt))
    prop = _make(args.method)
    t_all = time.perf_counter()
    written: set[str] = set()  # the mask files this run has written
    try:
        # (a bar at a terminal, a line every 30 s in a log: before session 57, a long video under nohup said nothing)
        with progress_bar(total, "edgeseg vos", "frame", not args.no_progress) as bar:
            n, step_s, events = _propagate(prop, frames, prompt, args.prompt, out, bar, written, str(args.source))
    except (EdgesegError, KeyboardInterrupt) as e:
        written.intersection_update({f for f in written if (out / f).is_file()})  # a write cut short left none
        if written:
            print(f"edgeseg vos: stopped after {len(written)} frame(s); their masks in {out}/ are complete", file=sys.stderr)
            if args.stats_json:  # what was done, and why it stopped (as edgeseg run's stats say); a failure to
                stats = {  # write them must not hide why the run stopped
                    "source": str(args.source), "prompt": str(args.prompt), "out": str(out), "method": args.method,
                    "frames": len(written), "wall_s": time.perf_counter() - t_all, "threads": args.threads,
                    "stopped_by": (str(e) or "SIGINT") if isinstance(e, KeyboardInterrupt) else "error",
                    "error": None if isinstance(e, KeyboardInterrupt) else str(e).splitlines()[0]}
                with contextlib.suppress(OSError, EdgesegError):
                    write_json(args.stats_json, stats)
        raise
    if n == 0:
        raise InputError(f"{args.source} holds no decodable frame", fix="re-copy or re-record the file, or convert it "
                                                                       "(e.g. to H.264 MP4)")
    _warn_incomplete(Path(args.source), total, out, written)
    wall = time.perf_counter() - t_all
    stepped = n - 1 - sum(1 for e in events if "unreadable" in e)  # unreadable frames took no step
    fps = stepped / step_s if step_s > 0 and stepped > 0 else None  # None: one frame, nothing propagated
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    ids = [int(k) for k in prop.result().object_ids]
    speed = "n/a" if fps is None else f"{fps:.1f}"
    print(f"{n} frames, {len(ids)} object(s) -> {out}/  propagation {speed} fps ({args.method}, "
          f"{args.threads or 'default'} threads), {wall:.1f} s with I/O, peak RSS {peak_mb:.0f} MB")
    for e in events:
        if "unreadable" in e:
            print(f"  frame {e['frame']}: unreadable, its mask the last frame's ({e['unreadable']})")
            continue
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
    p.add_argument("pred_dir", help="predictions: PRED_DIR/SEQUENCE/FRAME.png, object ids (the DAVIS results layout; a 0/255 "
                        "mask is object 1, in single-object sequences only)")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="davis:ROOT[,resolution=480p][,subset=val] (ROOT holds JPEGImages/ and Annotations/)")
    p.add_argument("--sequences", default=None, metavar="A,B", help="score only these sequences (comma-separated)")
    add_json_option(p)


def _pct(x: float) -> str:
    import math

    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _check_pred_folders(pred_root: Path, names: list[str]) -> None:
    """Every sequence to score has its folder ``PRED_DIR/SEQUENCE``: else an error that says which are
    missing, and how the layout goes when the PNGs sit in PRED_DIR itself."""
    from ..errors import DataError

    absent = [n for n in names if not (pred_root / n).is_dir()]
    if not absent:
        return
    have = [n for n in names if n not in absent]
    flat = any(p.suffix.lower() == ".png" for p in pred_root.iterdir())
    if flat and not have:  # some sequences' folders exist: the PNGs beside them are something else's
        fix = (f"the PNGs sit in {pred_root} itself: predictions go in one folder per sequence, "
               f"{pred_root}/SEQUENCE/FRAME.png (`edgeseg vos ... --out {pred_root}/{absent[0]}`)")
    elif have:
        fix = f"predict those sequences too, or score only the predicted ones: --sequences {','.join(have)}"
    else:
        fix = f"predictions go in one folder per sequence: {pred_root}/SEQUENCE/FRAME.png"
    raise DataError(f"{pred_root}: no predictions folder for {len(absent)} of {len(names)} sequence(s) "
                    f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''})", fix=fix)


def _prediction_files(folder: Path, frame_names) -> list:
    """Each frame's prediction in ``folder``: ``NAME.png``, or for a numbered frame the PNG of the same number
    however many digits it has (``edgeseg run --png-dir`` numbers frames with six, DAVIS and ``edgeseg vos``
    with five); None where there is none."""
    numbered: dict[int, Path] = {}
    if folder.is_dir():
        for f in sorted(folder.glob("*.png")):
            if f.stem.isdigit():
                numbered.setdefault(int(f.stem), f)
    out = []
    for n in frame_names:
        exact = folder / f"{n}.png"
        out.append(exact if exact.is_file() else numbered.get(int(n)) if n.isdigit() else None)
    return out


def _binary_predictions(pred: list, files: list, gt: list, name: str) -> list:
    """A 0/255 prediction (DAVIS-2016's binary masks, all 255 included: the object fills the frame) is object 1
    of a single-object sequence. In a sequence of several objects it is refused naming the file: which object its
    255 stands for cannot be known (before, it was read as object 1, and scored as such, whatever was meant)."""
    import numpy as np

    from ..data.davis import is_binary_255
    from ..errors import InputError

    first = gt[0] if gt else None
    n_obj = 0 if first is None else int(np.where(first == 255, 0, first).max())
    out = []
    for f, p in zip(files, pred):
        if is_binary_255(p):
            if n_obj > 1:
                raise InputError(f"{f}: a 0/255 mask, but sequence {name} has {n_obj} objects: 255 names none of them",
                                 fix=f"write object ids 1..{n_obj} (0 background), as the prompt numbers them; a 0/255 "
                                     "mask is read as object 1 only in single-object sequences (DAVIS-2016)")
            p = (p == 255).astype(np.uint8)
        out.append(p)
    return out


def run_eval(args: argparse.Namespace) -> int:
    import sys

    from ..data.davis import Davis, read_id_mask
    from ..errors import DataError, InputError
    from ..eval.vos import VOSMetric
    from ._common import check_output

    if args.json:
        check_output(args.json, "--json")
    davis = Davis.from_spec(args.data)
    if args.sequences is not None:
        names = [s.strip() for s in args.sequences.split(",") if s.strip()]
        if not names:
            raise InputError(f"--sequences {args.sequences!r} names no sequence", fix="--sequences A,B (comma-separated names)")
        davis = Davis(davis.root, davis.resolution, sequences=names)
    pred_root = Path(args.pred_dir)
    if not pred_root.is_dir():
        raise DataError(f"predictions folder {pred_root} not found", fix="run `edgeseg vos ... --out PRED_DIR/SEQUENCE` first")
    _check_pred_folders(pred_root, davis.sequence_names)
    metric = VOSMetric()
    for seq in davis:
        folder = pred_root / seq.name
        files = _prediction_files(folder, seq.frame_names)
        missing = [n for n, f in zip(seq.frame_names, files) if f is None]
        if missing:
            raise DataError(f"{folder}: no prediction for {len(missing)} of {len(seq)} frames ({', '.join(missing[:3])} ...)",
                            fix="predict every frame of the sequence (the first is the prompt); a prediction is "
                                "FRAME.png, the frame's name or its number (00005.png or 000005.png)")
        gt = seq.masks()
        pred = _binary_predictions([read_id_mask(f, binary=False) for f in files], files, gt, seq.name)
        if not metric.update(seq.name, gt, pred, seq.frame_names):
            print(f"edgeseg eval-vos: warning: sequence {seq.name}: its first annotation holds no object, so nothing of it "
                  "is scored (as in the DAVIS evaluation)", file=sys.stderr)
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
