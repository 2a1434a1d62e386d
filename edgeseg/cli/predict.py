"""``edgeseg predict BUNDLE IMAGES... [--out DIR] [--json OUT]``: segment image files.

Semantic bundles: ``<stem>_labels.png`` (uint8 class ids) and ``<stem>_overlay.png``. Instance bundles:
``<stem>_instances.png`` (uint16, 0 = none, i + 1 = instance i) and ``<stem>_overlay.png`` (masks,
boxes, class names and scores); ``--json`` lists every instance with its class, score, box ``xyxy``
and COCO RLE mask, in original-image pixels. Panoptic bundles: ``<stem>_panoptic.png`` (COCO-panoptic
RGB, id = R + 256 G + 256^2 B) and ``<stem>_overlay.png``; ``--json`` lists every segment with its
id, class, category id, isthing, area and COCO RLE mask (the stream's JSON-lines record).

An image that cannot be read (or is missing, when others are given) is reported and skipped: the others
are segmented and written, ``--json`` lists the failures under ``errors``, and the exit status is 2. Interrupted (Ctrl-C, SIGTERM), ``--json``
is still written for the images done, marked ``"interrupted": true``.

Batch jobs: ``--jsonl PATH`` writes each image's entry as a line when it is done (whole through a ``kill -9``);
``--resume`` skips what an earlier run finished (recorded in ``--jsonl``, else whose label PNG is in ``--out``: it is
written after the overlay, so it marks an image done); ``--no-overlay`` writes the label PNGs only."""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from pathlib import Path

from ._common import add_json_option, add_result_filters, add_runtime_options, check_output, print_table
from ._predict_batch import JsonLines, Rows, Table, image_paths, kept_on_interrupt, read_ahead, resume, write_results

NAME = "predict"
HELP = "segment images: label or instance PNGs and overlays per image, and/or a JSON of the results"
EXAMPLES = (
    "edgeseg predict yolo.edgeseg street.jpg --score-threshold 0.4 --json instances.json   # masks as COCO RLE",
    "edgeseg predict road.edgeseg street.png --out preds/",
    "edgeseg predict road frames/*.jpg --out preds/ --backend onnxruntime --threads 2 --json preds.json",
    "edgeseg predict road.edgeseg img.png --out preds/ --alpha 0.6",
    "edgeseg predict street-instance frames/ --json instances.json   # every image in the folder, sorted by name",
    "edgeseg predict street-panoptic frame.jpg --out preds/ --json segments.json   # COCO-panoptic PNG + segments",
    "edgeseg predict street-instance images/ --out preds/ --save-txt   # + preds/labels/*.txt, YOLO-seg polygons",
    "edgeseg predict road /data/frames/ --out preds/ --no-overlay --jsonl preds.jsonl --resume   # a batch job, rerun to go on",
    "edgeseg predict road /data/cameras/ --recursive --out preds/   # every subfolder; preds/ mirrors the tree",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle path or the name of a bundle shipped with the package")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, WebP) or folders of them")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="folders: their subfolders' images too; --out mirrors the tree (DIR/sub/a_labels.png for "
                        "FOLDER/sub/a.jpg), so images of one name in different subfolders keep apart")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder for PNGs (created if needed)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    add_result_filters(p)
    p.add_argument("--save-txt", action="store_true",
                   help="instance bundles: also write YOLO-seg polygon labels, DIR/labels/<stem>.txt (Ultralytics' "
                        "save_txt: 'class x1 y1 ...' normalised), a dataset Ultralytics and eval --data yolo-seg: read")
    p.add_argument("--no-overlay", action="store_true",
                   help="--out: the label (instance, panoptic) PNGs only; the overlay PNG is most of a batch's time and "
                        "disk (6 ms and 235 KB an image at 640x320)")
    p.add_argument("--jsonl", default=None, metavar="PATH",
                   help="one JSON line per image as it is done (--json's entries; a failure as {\"file\", \"error\"}), "
                        "kept whole through a kill; appended to with --resume ('-': standard output)")
    p.add_argument("--resume", action="store_true",
                   help="skip the images an earlier run of the same job finished: those --jsonl records, else those "
                        "whose label PNG is in --out; --json then lists them too when --jsonl has them")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (shown on a terminal for 2+ images; elsewhere a line every 30 s)")
    add_runtime_options(p)
    add_json_option(p)


def _instance_row(path: Path, result, out: Path | None, rgb, alpha: float, palette, save_txt: bool = False,
                  overlay: bool = True, name: str | None = None) -> dict:
    """One image's JSON entry (issue format: class, score, box xyxy, COCO RLE mask) and its PNGs (and, with
    ``save_txt``, its YOLO-seg label file: :mod:`~edgeseg.structures.polygons`). ``name``: where its files go in
    ``out``, without suffix (the stem; ``sub/stem`` for ``--recursive``)."""
    from ..data.io import write_image, write_label
    from ..stream.overlay import Renderer
    from ..stream.sinks.files import label_image
    from ..structures.rle import rle_encode_crops

    rles = rle_encode_crops(result.iter_mask_crops(), result.image_shape.hw)[0] if result.has_masks else None
    instances = []
    for i in range(len(result)):
        c = int(result.classes[i])
        d = {"class": result.class_names[c] if c < len(result.class_names) else str(c), "class_id": c,
             "score": round(float(result.scores[i]), 5), "box": [round(float(v), 2) for v in result.boxes[i]]}
        if rles is not None:
            d["mask"] = rles[i]
        instances.append(d)
    row = {"file": str(path), "height": result.image_shape.height, "width": result.image_shape.width, "instances": instances}
    if out is not None:  # the overlay first: the ids PNG, written last, marks the image done (--resume)
        name = name or path.stem
        ids_png, overlay_png = out / f"{name}_instances.png", out / f"{name}_overlay.png"
        if overlay:
            write_image(overlay_png, Renderer(palette, result.class_names, alpha=alpha, hud=False)(rgb, result), sync=False)
            row["overlay"] = str(overlay_png)
        write_label(ids_png, label_image(result), sync=False)
        row["instances_png"] = str(ids_png)
    if out is not None and save_txt:
        if len(result) and not result.has_masks:
            from ..errors import InputError

            raise InputError(f"--save-txt writes mask polygons; this bundle's results are boxes only ({path.name})",
                             fix="leave --save-txt out (--json has the boxes)")
        from .._io import atomic_write_text
        from ..structures.polygons import mask_polygon, yolo_lines

        polys = [mask_polygon(c, x0, y0) for x0, y0, _, _, c in result.iter_mask_crops()] if result.has_masks else []
        txt = out / "labels" / f"{name or path.stem}.txt"  # labels/ mirrors the images' tree, as YOLO datasets do
        txt.parent.mkdir(parents=True, exist_ok=True)
        lines = yolo_lines(result.classes.tolist(), polys, result.image_shape.width, result.image_shape.height)
        atomic_write_text(txt, "".join(f"{line}\n" for line in lines))  # empty: looked, found nothing
        row["labels_txt"] = str(txt)
    return row


def _panoptic_row(path: Path, result, out: Path | None, rgb, alpha: float, palette, coco: dict | None = None,
                  overlay: bool = True, name: str | None = None) -> dict:
    """One image's JSON entry (the stream's record: id, class, category id, isthing, area, RLE) and its PNGs;
    ``coco`` collects the COCO-panoptic annotation and categories of ``--out``'s ``panoptic.json``."""
    from ..data.io import write_image
    from ..stream.overlay import Renderer
    from ..stream.sinks.files import label_image
    from ..structures.records import panoptic_record
    from ..structures.coco_panoptic import segments_info

    row = {"file": str(path), "height": result.shape.height, "width": result.shape.width,
           "segments": panoptic_record(result)["segments"]}
    if out is not None:  # the overlay first: the ids PNG, written last, marks the image done (--resume)
        name = name or path.stem
        ids_png, overlay_png = out / f"{name}_panoptic.png", out / f"{name}_overlay.png"
        if overlay:
            write_image(overlay_png, Renderer(palette, result.class_names, alpha=alpha, hud=False)(rgb, result), sync=False)
            row["overlay"] = str(overlay_png)
        write_image(ids_png, label_image(result), sync=False)
        row["panoptic_png"] = str(ids_png)
        if coco is not None:  # image id: the file's stem, as the stream's PNG sink and Cityscapes name them (with
            # --recursive its path in the tree: file_name is relative to --out, where panopticapi joins it)
            coco["annotations"].append({"image_id": name, "file_name": f"{name}_panoptic.png",
                                        "segments_info": segments_info(result, where=f" of {path}")})
            for seg in result.segments:
                k = result.class_index(seg.category_id)
                coco["categories"].setdefault(int(seg.category_id), {
                    "id": int(seg.category_id), "isthing": int(bool(seg.isthing)),
                    "name": result.class_names[k] if 0 <= k < len(result.class_names) else str(seg.category_id)})
    return row


def _write_panoptic_json(out: Path | None, coco: dict) -> None:
    """``--out``'s ``panoptic.json`` (COCO-panoptic predictions that panopticapi reads, as the stream's PNG sink
    writes), for the images done."""
    if out is None or not coco["annotations"]:
        return
    from .._io import atomic_write_text

    by_image = {a["image_id"]: a for a in coco["annotations"]}  # one per image, the latest (a resumed image done again)
    doc = {"annotations": list(by_image.values()),
           "categories": [coco["categories"][c] for c in sorted(coco["categories"])]}
    atomic_write_text(out / "panoptic.json", json.dumps(doc))


#: what --out writes per image, whatever the task: <stem><suffix>
OUT_SUFFIXES = ("_labels.png", "_instances.png", "_panoptic.png", "_overlay.png")


def _refuse_overwriting_inputs(args: argparse.Namespace, images: list[str], names: dict[str, str] | None = None) -> None:
    """Refuse a ``--json`` that names an input image or a file of the bundle, an ``--out`` inside the bundle,
    and ``--out`` PNGs (``<stem>_overlay.png``, ...) that are input images (a rerun into the images' own folder
    replaced ``a_overlay.png`` and read it back as an input). Only paths are compared; nothing is read. ``names``: each
    image's place in ``--out`` (:func:`image_paths`; its stem when not given)."""
    import os

    from ..errors import InputError
    from ..paths import shipped_bundle

    def key(p) -> str:
        return os.path.realpath(p)

    inputs = {key(p): p for p in images}
    bundle = Path(args.bundle)
    if not bundle.exists() and os.sep not in str(args.bundle):
        bundle = shipped_bundle(str(args.bundle)) or bundle
    root = key(bundle) if bundle.is_dir() else None

    def in_bundle(p) -> bool:
        k = key(p)
        return k == key(bundle) or (root is not None and (k + os.sep).startswith(root + os.sep))

    for option, value in (("--json", args.json), ("--jsonl", getattr(args, "jsonl", None))):
        if value is None or str(value) == "-":
            continue
        if key(value) in inputs:
            raise InputError(f"{option} {value} is one of the images to predict: writing it would replace the image",
                             fix=f"give {option} another path, e.g. ./predictions{option[1:].replace('-', '.')}")
        if in_bundle(value):
            raise InputError(f"{option} {value} is in the bundle {args.bundle}: writing it would change the bundle",
                             fix=f"give {option} a path outside the bundle, e.g. ./{Path(value).name}")
    if args.json is not None and getattr(args, "jsonl", None) is not None and str(args.json) != "-" \
            and key(args.json) == key(args.jsonl):
        raise InputError(f"--json and --jsonl both name {args.json}: one would replace the other",
                         fix="give them different paths, e.g. preds.json and preds.jsonl")
    if args.out is not None and args.json is not None and key(args.json) == key(Path(args.out) / "panoptic.json"):
        raise InputError(f"--json {args.json} is the panoptic.json --out writes for a panoptic bundle: one would "
                         "replace the other", fix="give --json another name, e.g. ./predictions.json")
    if args.out is not None:
        if in_bundle(args.out):
            raise InputError(f"--out {args.out} is in the bundle {args.bundle}: the PNGs would change the bundle",
                             fix="give --out a folder outside the bundle, e.g. ./preds")
        names = names or {}
        hits = [str(Path(args.out) / f"{names.get(p, Path(p).stem)}{sfx}") for p in images for sfx in OUT_SUFFIXES
                if key(Path(args.out) / f"{names.get(p, Path(p).stem)}{sfx}") in inputs]
        if hits:
            raise InputError(f"--out {args.out} would write over images this run predicts: {', '.join(hits[:3])}"
                             f"{' ...' if len(hits) > 3 else ''} (an earlier run's PNGs, given again as images?)",
                             fix="write into another --out folder, or leave *_overlay.png / *_labels.png / "
                                 "*_instances.png / *_panoptic.png out of the images")


def run(args: argparse.Namespace) -> int:
    import time

    from ..data.io import read_image, write_image, write_label
    from ..errors import InputError
    from ..predictor import TASK_BYTES_PER_PIXEL, load
    from ..structures.results import label_counts

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be within 0..1, got {args.alpha}",
                         fix=f"--alpha {args.alpha / 255:.2f} (0..255 as jetson-inference counts it, divided by 255)"
                         if 1 < args.alpha <= 255 else "0 draws no overlay, 1 paints the classes opaque")
    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:  # NaN too
        raise InputError(f"--score-threshold must be within 0..1, got {args.score_threshold}",
                         fix="detections score 0..1: e.g. --score-threshold 0.4")
    if args.out is None and args.json is None and args.jsonl is None:
        raise InputError("nothing to write", fix="pass --out DIR (PNGs), --json OUT (results), --jsonl OUT (a line an "
                                                 "image), or several")
    if args.json is not None and args.jsonl is not None and str(args.json) == str(args.jsonl) == "-":
        raise InputError("--json - and --jsonl - both write to standard output: the lines and the document would mix",
                         fix="give one of them a file")
    if args.resume and args.out is None and (args.jsonl is None or str(args.jsonl) == "-"):
        raise InputError("--resume skips the images an earlier run recorded in --jsonl or wrote into --out: give one",
                         fix="e.g. --jsonl preds.jsonl --resume (the same --jsonl on every run of the job)")
    if args.no_overlay and args.out is None:
        raise InputError("--no-overlay leaves the overlay PNGs out of --out: there is no --out", fix="add --out DIR")
    images, places = image_paths(args.images, args.bundle, args.recursive, args.out)
    if args.out is not None:  # <name>_*.png: two images of one name (in one folder of --out) would overwrite each other's
        stems: dict[str, list[str]] = {}
        for p in images:
            stems.setdefault(places[p], []).append(p)
        clash = [v for v in stems.values() if len(v) > 1]
        if clash:
            raise InputError(f"images with the same name would write the same PNGs in {args.out}: "
                             + "; ".join(", ".join(v) for v in clash[:3]),
                             fix="predict them into different --out folders, or rename them"
                                 + ("" if args.recursive else "; images in subfolders of one folder: give the folder "
                                    "with --recursive (--out mirrors its tree)"))
    _refuse_overwriting_inputs(args, images, places)
    if args.json is not None:
        check_output(args.json, "--json")  # before any work: found at the end, the results would be lost
    if args.jsonl is not None and str(args.jsonl) != "-":
        check_output(args.jsonl, "--jsonl")
    if args.out is not None:
        check_output(args.out, "--out", "folder")
    out = Path(args.out) if args.out is not None else None
    predictor = load(args.bundle, backend=args.backend, precision=args.precision, target=args.target,
                     device=args.device, threads=args.threads)
    task = predictor.manifest.task
    if args.score_threshold is not None:
        if task not in ("instance", "panoptic"):
            raise InputError(f"--score-threshold applies to instance and panoptic bundles; {args.bundle} is a {task} bundle")
        predictor.set_options(score_threshold=args.score_threshold)
    if args.class_agnostic:
        if task != "instance":
            raise InputError(f"--class-agnostic applies to instance bundles; {args.bundle} is a {task} bundle",
                             fix="leave --class-agnostic out")
        predictor.set_options(class_agnostic=True)
    keep = drawn = None  # instance/panoptic: the classes kept; semantic: the classes the overlays draw
    if args.classes is not None:
        from ..structures.filters import class_ids

        if task == "semantic":
            drawn = class_ids(args.classes, predictor.classes)
            if args.out is None or args.no_overlay:
                print("edgeseg predict: note: --classes of a semantic bundle limits the classes its overlays draw; "
                      f"{'without --out' if args.out is None else 'with --no-overlay'} there is none (the label PNGs "
                      "and the JSON keep every class)", file=sys.stderr)
        elif task in ("instance", "panoptic"):  # numbers: a panoptic bundle's category ids, as its records say
            keep = class_ids(args.classes, predictor.classes, getattr(predictor.options, "category_ids", ()))
        else:
            raise InputError(f"--classes keeps some classes of instance and panoptic results or draws some of a "
                             f"semantic label map; {args.bundle} is a {task} bundle", fix="leave --classes out")
    if args.save_txt and task != "instance":
        raise InputError(f"--save-txt writes instance polygons; {args.bundle} is a {task} bundle",
                         fix="leave --save-txt out (label PNGs: --out DIR)")
    if args.save_txt and args.out is None:
        raise InputError("--save-txt writes DIR/labels/<stem>.txt: it needs --out DIR", fix="add --out DIR")
    rows, table, failed = Rows(args.json), Table(getattr(args, "verbose", False)), []
    from tqdm import tqdm

    from .._progress import LogProgress
    from ..stream.overlay import Renderer

    coco: dict = {"annotations": [], "categories": {}}  # --out's panoptic.json (panoptic bundles)
    earlier, todo = resume(args, images, out, task, coco, places) if args.resume else ([], images)
    rows.extend(earlier)  # --json lists the earlier run's images too (those --jsonl recorded)
    bar = tqdm(total=len(todo), unit="image", leave=False, dynamic_ncols=True,
               disable=args.no_progress or len(todo) < 2 or not sys.stderr.isatty())
    logged = LogProgress("edgeseg predict", len(todo), enabled=not args.no_progress and len(todo) >= 2)
    lines = JsonLines(args.jsonl, append=args.resume) if args.jsonl is not None else None
    overlay = not args.no_overlay
    # the least an image takes, a pixel: its RGB, the task's decoding, the label PNG and the overlay (a large image
    # that cannot fit is refused before decoding: its error, the others done)
    room = 3 + TASK_BYTES_PER_PIXEL.get(task, 0.0) + (0 if out is None else 4 if overlay else 1)
    result = None
    with predictor, bar, kept_on_interrupt(args, predictor, task, rows, failed, lambda: _write_panoptic_json(out, coco),
                                           table, len(todo)), \
            (lines or contextlib.nullcontext()):
        for path, rgb in read_ahead(map(Path, todo), functools.partial(read_image, bytes_per_pixel=room)):
            try:
                bar.update(1)
                logged.update(1)
                if isinstance(rgb, InputError):  # one unreadable image does not cost the others' results
                    e = rgb
                    print(f"edgeseg predict: error: {e}", file=sys.stderr)
                    failed.append({"image": str(path), "error": str(e).splitlines()[0]})
                    if lines is not None:
                        lines.write({"file": str(path), "error": str(e).splitlines()[0], "path": os.path.realpath(path)})
                    continue
                t0 = time.perf_counter()
                result = predictor(rgb)
                if keep is not None:
                    from ..structures.filters import keep_classes

                    result = keep_classes(result, keep)
                dt = time.perf_counter() - t0
                size = f"{rgb.shape[1]}x{rgb.shape[0]}"
                if task == "instance":
                    row = _instance_row(path, result, out, rgb, args.alpha, predictor.palette, args.save_txt, overlay,
                                        places[str(path)])
                    names = [d["class"] for d in row["instances"]]
                    table.append({"image": str(path), "size": size, "ms": 1e3 * dt, "instances": len(names),
                                  "classes": ", ".join(sorted(set(names)))[:60]})
                    rows.append(row)
                    if lines is not None:
                        lines.write({**row, "path": os.path.realpath(path)})
                    continue
                if task == "panoptic":
                    row = _panoptic_row(path, result, out, rgb, args.alpha, predictor.palette, coco, overlay,
                                        places[str(path)])
                    names = [d["class"] for d in row["segments"] if d["isthing"]]
                    table.append({"image": str(path), "size": size, "ms": 1e3 * dt, "segments": len(row["segments"]),
                                  "instances": len(names), "classes": ", ".join(sorted(set(names)))[:60]})
                    rows.append(row)
                    if lines is not None:  # with its COCO-panoptic annotation: a resumed run rebuilds panoptic.json from it
                        lines.write({**row, "path": os.path.realpath(path),
                                     **({"coco": coco["annotations"][-1]} if out is not None else {})})
                    continue
                counts = label_counts(result.labels, minlength=len(predictor.classes))
                top = int(counts.argmax())
                row = {"file": str(path), "height": rgb.shape[0], "width": rgb.shape[1],  # as instance and panoptic rows
                       "image": str(path), "size": size, "ms": 1e3 * dt,
                       "top class": predictor.classes[top] if top < len(predictor.classes) else str(top),
                       "class_pixels": {predictor.classes[i] if i < len(predictor.classes) else str(i): int(c)
                                        for i, c in enumerate(counts) if c}}
                if out is not None:  # the overlay first: the label PNG, written last, marks the image done (--resume)
                    labels_png, overlay_png = out / f"{places[str(path)]}_labels.png", out / f"{places[str(path)]}_overlay.png"
                    if overlay:
                        # the stream's renderer, as the instance and panoptic overlays (an audit: predict's own blend, without
                        # the legend, differed from the stream's and the element's frames by a level on half the pixels)
                        write_image(overlay_png, Renderer(predictor.palette, predictor.classes, alpha=args.alpha,
                                                          hud=False, only=drawn)(rgb, result), sync=False)
                    write_label(labels_png, result.labels, sync=False)
                    row.update(labels=str(labels_png), **({"overlay": str(overlay_png)} if overlay else {}))
                rows.append(row)
                table.append(row)
                if lines is not None:
                    lines.write({**{k: v for k, v in row.items() if k not in _TABLE_ONLY}, "path": os.path.realpath(path)})
            finally:  # the image and its result let go before the next is read: its memory check counts what is held
                rgb = result = None
    print(f"{predictor!r}: {len(rows) - len(earlier)} image(s)" + (f" -> {out}" if out is not None else "")
          + (f", {len(images) - len(todo)} done by an earlier run skipped (--resume)"
             if args.resume else ""))
    columns = {"instance": ["image", "size", "ms", "instances", "classes"],
               "panoptic": ["image", "size", "ms", "segments", "instances", "classes"]}
    print_table(table.rows, columns.get(task, ["image", "size", "ms", "top class", "labels"]))
    if len(table.rows) < len(table):
        where = next((str(w) for w in (args.json, args.jsonl, out) if w is not None and str(w) != "-"), "the output")
        print(f"... and {len(table) - len(table.rows)} more image(s) (every one in {where}; -v prints them all)")
    write_results(args, predictor, task, rows, failed)
    rows.close()
    _write_panoptic_json(out, coco)
    if failed:
        raise InputError(f"{len(failed)} of {len(images)} image(s) could not be read: "
                         f"{', '.join(f['image'] for f in failed[:5])}{' ...' if len(failed) > 5 else ''}"
                         + (f" (the other images' results are in {args.json})" if args.json and rows else ""),
                         fix="replace or drop those files (each one's reason is printed above)")
    return 0


#: what a semantic row carries for the table only, left out of its --jsonl line
_TABLE_ONLY = ("image", "size", "top class")
