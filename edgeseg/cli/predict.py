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
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._common import add_json_option, add_result_filters, add_runtime_options, check_output, print_table

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
    image's place in ``--out`` (:func:`_image_paths`; its stem when not given)."""
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
    from ..predictor import load
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
    images, places = _image_paths(args.images, args.bundle, args.recursive)
    seen: set[str] = set()
    unique = []  # the first of each file given
    for p in images:
        if os.path.realpath(p) not in seen:
            seen.add(os.path.realpath(p))
            unique.append(p)
    if len(unique) < len(images):  # an option audit: `a.jpg DIR/` with DIR/a.jpg was refused as two of one name
        print(f"edgeseg predict: {len(images) - len(unique)} image(s) given more than once (a file and its folder?): "
              "each is done once", file=sys.stderr)
        images = unique
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
    rows, table, failed = _Rows(args.json), _Table(getattr(args, "verbose", False)), []
    from tqdm import tqdm

    from .._progress import LogProgress
    from ..stream.overlay import Renderer

    coco: dict = {"annotations": [], "categories": {}}  # --out's panoptic.json (panoptic bundles)
    earlier, todo = _resume(args, images, out, task, coco, places) if args.resume else ([], images)
    rows.extend(earlier)  # --json lists the earlier run's images too (those --jsonl recorded)
    bar = tqdm(total=len(todo), unit="image", leave=False, dynamic_ncols=True,
               disable=args.no_progress or len(todo) < 2 or not sys.stderr.isatty())
    logged = LogProgress("edgeseg predict", len(todo), enabled=not args.no_progress and len(todo) >= 2)
    lines = _JsonLines(args.jsonl, append=args.resume) if args.jsonl is not None else None
    overlay = not args.no_overlay
    with predictor, bar, _results_kept_on_interrupt(args, predictor, task, rows, failed, lambda: _write_panoptic_json(out, coco)), \
            (lines or contextlib.nullcontext()):
        for path in map(Path, todo):
            bar.update(1)
            logged.update(1)
            try:
                rgb = read_image(path)
            except InputError as e:  # one unreadable image does not cost the others' results
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
    print(f"{predictor!r}: {len(rows) - len(earlier)} image(s)" + (f" -> {out}" if out is not None else "")
          + (f", {len(images) - len(todo)} done by an earlier run skipped (--resume)"
             if args.resume else ""))
    columns = {"instance": ["image", "size", "ms", "instances", "classes"],
               "panoptic": ["image", "size", "ms", "segments", "instances", "classes"]}
    print_table(table.rows, columns.get(task, ["image", "size", "ms", "top class", "labels"]))
    if len(table.rows) < len(table):
        where = next((str(w) for w in (args.json, args.jsonl, out) if w is not None and str(w) != "-"), "the output")
        print(f"... and {len(table) - len(table.rows)} more image(s) (every one in {where}; -v prints them all)")
    _write_results(args, predictor, task, rows, failed)
    rows.close()
    _write_panoptic_json(out, coco)
    if failed:
        raise InputError(f"{len(failed)} of {len(images)} image(s) could not be read: "
                         f"{', '.join(f['image'] for f in failed[:5])}{' ...' if len(failed) > 5 else ''}"
                         + (f" (the other images' results are in {args.json})" if args.json and rows else ""),
                         fix="replace or drop those files (each one's reason is printed above)")
    return 0


#: the table printed at the end shows this many images (-v: all); the files hold every one
TABLE_ROWS = 50
class _Table:
    """The rows of the table printed at the end: the first :data:`TABLE_ROWS` kept (``verbose``: all), the rest counted."""

    def __init__(self, verbose: bool):
        self.rows: list[dict] = []
        self._verbose, self._count = verbose, 0

    def append(self, row: dict) -> None:
        self._count += 1
        if self._verbose or len(self.rows) < TABLE_ROWS:
            self.rows.append(row)

    def __len__(self) -> int:
        return self._count


class _Rows:
    """``--json``'s entries, spooled to a temporary file as they come and read back once when ``--json`` is written
    (a batch audit: an instance image's entry, RLE masks and all, is ~8.5 KB: 850 MB held to the end for 100,000
    images). The spool lies beside ``--json`` (a ``/tmp`` in memory would hold it all again), removed when closed."""

    def __init__(self, json_path: str | None):
        import tempfile

        folder = Path(json_path).parent if json_path is not None and str(json_path) != "-" else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder, prefix=".edgeseg-rows-") \
            if json_path is not None else None
        self._count = 0

    def append(self, row: dict) -> None:
        from .._io import json_default

        if self._spool is not None:
            self._spool.write(json.dumps(row, default=json_default) + "\n")
        self._count += 1

    def extend(self, rows) -> None:
        for row in rows:
            self.append(row)

    def __len__(self) -> int:
        return self._count

    def lines(self):
        """Each entry's JSON text, in order."""
        if self._spool is None:
            return
        self._spool.flush()
        self._spool.seek(0)
        try:
            for line in self._spool:
                yield line.rstrip("\n")
        finally:
            self._spool.seek(0, os.SEEK_END)  # more may be appended (an interrupted run's --json, then the rest)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


#: what a semantic row carries for the table only, left out of its --jsonl line
_TABLE_ONLY = ("image", "size", "top class")


class _JsonLines:
    """``--jsonl``: one entry a line, each on disk whole when written (the stream's JSON-lines file: a second process
    writing it is refused, a full disk keeps the lines before); a fresh file, or appended to (``--resume``) after a
    line a kill cut in half is removed. ``-``: standard output."""

    def __init__(self, path: str, append: bool):
        self._lines: Any = None
        if str(path) == "-":  # standard output itself (json_to_stdout sent everything else to standard error)
            from ._common import _JSON_STDOUT

            self._out = _JSON_STDOUT[-1] if _JSON_STDOUT else sys.stdout
            return
        from ..stream.sinks.files import _Lines

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lines = _Lines(Path(path), "--jsonl", append=append)

    def write(self, entry: dict) -> None:
        from .._io import json_default

        text = json.dumps(entry, default=json_default) + "\n"
        if self._lines is not None:
            self._lines.write(text)
        else:
            self._out.write(text)
            self._out.flush()

    def __enter__(self) -> "_JsonLines":
        return self

    def __exit__(self, *exc) -> None:
        if self._lines is not None:
            self._lines.close()


def _resume(args: argparse.Namespace, images: list[str], out: Path | None, task: str, coco: dict,
            names: dict[str, str]) -> tuple[list, list]:
    """(the earlier runs' entries, the images still to do) for ``--resume``. Done: the images ``--jsonl`` records
    without an error (matched by the absolute path each line keeps: a job resumed from another folder, or with the
    folder spelled otherwise, finds them), and those whose label PNG (written after the overlay) is in ``--out``. The
    ``--jsonl`` entries come back for ``--json`` (the latest per image), and a panoptic bundle's ``panoptic.json`` gets
    their annotations back (a kill left it unwritten)."""
    import os

    key = os.path.realpath
    wanted = {key(p): p for p in images}
    earlier: dict[str, dict] = {}
    if args.jsonl is not None and str(args.jsonl) != "-" and Path(args.jsonl).is_file():
        recorded = 0
        for line in Path(args.jsonl).read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line a kill cut off: its image is done again
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                continue
            recorded += 1
            k = entry.get("path") if isinstance(entry.get("path"), str) else key(entry["file"])
            if k in wanted:
                if "error" in entry:
                    earlier.pop(k, None)  # failed last time: tried again
                else:
                    earlier[k] = entry
        if recorded and not earlier:
            print(f"edgeseg predict: --resume: none of the {recorded} image(s) {args.jsonl} records is among this job's "
                  "images; all are done", file=sys.stderr)
    marker = {"instance": "_instances.png", "panoptic": "_panoptic.png"}.get(task, "_labels.png")
    pngs = {k for k, p in wanted.items() if out is not None and (out / f"{names[p]}{marker}").is_file()}
    without = [k for k in earlier if out is not None and k not in pngs]
    if without:  # an option audit: --out added on a resumed run left those images' PNGs missing, unsaid
        print(f"edgeseg predict: --resume: {len(without)} image(s) {args.jsonl} records as done have no PNGs in {out}: "
              "done again", file=sys.stderr)
        for k in without:
            del earlier[k]
    done = set(earlier) | pngs
    if out is not None and task == "panoptic":
        _resume_panoptic_json(out, coco, earlier.values(), [p for k, p in wanted.items() if k in done], names)
    rows = [{k: v for k, v in e.items() if k not in ("path", "coco")} for e in earlier.values()]
    return rows, [p for p in images if key(p) not in done]


def _resume_panoptic_json(out: Path, coco: dict, entries, done: list[str], names: dict[str, str]) -> None:
    """``coco`` seeded with ``out/panoptic.json``'s annotations and those the ``--jsonl`` entries carry; said when
    images taken as done have none (resumed from the PNGs alone after a kill: their segments are not known)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        doc = json.loads((out / "panoptic.json").read_text(encoding="utf-8"))
        coco["annotations"].extend(doc["annotations"])
        coco["categories"].update({int(c["id"]): c for c in doc["categories"]})
    for e in entries:
        if isinstance(e.get("coco"), dict):
            coco["annotations"].append(e["coco"])
            for seg in e.get("segments", ()):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    coco["categories"].setdefault(int(seg["category_id"]), {
                        "id": int(seg["category_id"]), "isthing": int(bool(seg["isthing"])), "name": seg["class"]})
    have = {str(a.get("image_id")) for a in coco["annotations"] if isinstance(a, dict)}
    missing = [p for p in done if names[p] not in have]
    if missing:
        print(f"edgeseg predict: --resume: {len(missing)} image(s) taken as done have no annotation in "
              f"{out / 'panoptic.json'} ({', '.join(Path(p).name for p in missing[:3])}{' ...' if len(missing) > 3 else ''}): "
              "give --jsonl on every run of the job (its lines keep them), or delete their PNGs to do them again",
              file=sys.stderr)


def _image_paths(given: list[str], bundle: str = "BUNDLE", recursive: bool = False) -> tuple[list[str], dict[str, str]]:
    """The image arguments with each folder replaced by the images in it (sorted by name; ``recursive``: its
    subfolders' too, folder by folder), and where each image's files go in ``--out``, without suffix: its stem, or
    with ``recursive`` its path below the folder given (``sub/a`` for ``FOLDER/sub/a.jpg``)."""
    from ..data.io import IMAGE_SUFFIXES
    from ..errors import InputError

    from ..stream.sources.uri import VIDEO_SUFFIXES

    videos = [p for p in given if Path(p).suffix.lower() in VIDEO_SUFFIXES or "://" in p]
    if videos:  # Ultralytics' `predict source=video.mp4`: here a video is a stream (before: "cannot decode image")
        raise InputError(f"{videos[0]} is a video or a stream; predict segments images",
                         fix=f"edgeseg run --bundle {bundle} --source {videos[0]} --sink out.mp4 --json-out results.jsonl "
                             "(--png-dir DIR for label maps)")
    missing = [p for p in given if not Path(p).exists()]
    if len(missing) == len(given):  # nothing to segment: say so before the bundle is loaded
        raise InputError(f"image not found: {', '.join(missing)}", fix="check the paths")
    paths: list[str] = []
    names: dict[str, str] = {}
    notes: list[str] = []
    for p in map(Path, given):
        if not p.is_dir():  # a missing file among others is reported and skipped like an unreadable one
            paths.append(str(p))
            names[str(p)] = p.stem
            continue
        folders = _walk(p) if recursive else [p]
        subfolders: list[str] = []
        found = 0
        for folder in folders:
            files, note, below = _folder_images(folder)
            if note:
                notes.append(note)
            if not recursive:
                subfolders = below
            found += len(files)
            for f in files:
                paths.append(str(f))
                names[str(f)] = f.relative_to(p).with_suffix("").as_posix() if recursive else f.stem
        if subfolders:
            shown = ", ".join(subfolders[:5]) + (f" and {len(subfolders) - 5} more" if len(subfolders) > 5 else "")
            print(f"edgeseg predict: {len(subfolders)} subfolder(s) of {p} not read ({shown}): a folder gives the images "
                  f"directly in it; --recursive reads its subfolders too (--out mirrors the tree)", file=sys.stderr)
        if not found:
            raise InputError(f"folder {p} holds no images" + (" in it or its subfolders" if recursive else ""),
                             fix=f"give image files ({', '.join(IMAGE_SUFFIXES)}) or folders of them"
                                 + ("; its subfolders hold them? add --recursive" if subfolders else ""))
    for note in notes[:3]:
        print(f"edgeseg predict: {note} (images: {', '.join(IMAGE_SUFFIXES)})", file=sys.stderr)
    if len(notes) > 3:
        print(f"edgeseg predict: ... and files left out in {len(notes) - 3} more folder(s)", file=sys.stderr)
    return paths, names


def _folder_images(folder: Path) -> tuple[list[Path], str | None, list[str]]:
    """The images directly in ``folder`` (sorted; links to images that are gone too: they fail as unreadable images,
    not dropped unsaid), the note naming its other files (None: none), and its subfolders' names (hidden aside)."""
    from ..data.io import IMAGE_SUFFIXES, image_files, left_out

    files = image_files(folder)
    dangling = [q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_symlink() and not q.exists()]
    subfolders = sorted(q.name for q in folder.iterdir() if q.is_dir() and not q.name.startswith("."))
    return sorted(files + dangling), left_out(folder, files), subfolders


def _walk(root: Path) -> list[Path]:
    """``root`` and the folders below it, each before its subfolders (sorted by name; hidden ones skipped); a linked
    folder is followed once (a link back up the tree is not walked again)."""
    seen: set[str] = set()
    order: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            below = sorted((q for q in folder.iterdir() if q.is_dir() and not q.name.startswith(".")), key=lambda q: q.name)
        except OSError as e:  # a subfolder that cannot be listed: said, its images left out (the folder given: an error)
            if folder == root:
                raise
            print(f"edgeseg predict: folder {folder} cannot be read ({e.strerror or e}): its images left out", file=sys.stderr)
            continue
        order.append(folder)
        stack.extend(reversed(below))
    return order


def _write_results(args, predictor, task: str, rows: list, failed: list, interrupted: bool = False) -> None:
    """``--json`` with the results (and the failures); when every image failed, an earlier file at that path is kept
    as it was (session 50's fuzzing: one unreadable image replaced an earlier run's results with none)."""
    if not args.json:
        return
    if not rows and str(args.json) != "-" and Path(args.json).is_file() and Path(args.json).stat().st_size:
        print(f"edgeseg predict: no image was segmented, so {args.json} keeps the results it held", file=sys.stderr)
        return
    head = {"bundle": args.bundle, "task": task, "backend": predictor.backend, "precision": predictor.runner.precision}
    tail = {**({"errors": failed} if failed else {}), **({"interrupted": True} if interrupted else {})}
    _write_document(args.json, head, rows, tail)


def _write_document(path: str, head: dict, rows: "_Rows", tail: dict) -> None:
    """``{**head, "images": [rows...], **tail}`` written to ``path`` (atomically; ``-``: standard output), the rows
    streamed from their spool, one image a line."""
    from .._io import _special_file, json_default, write_with

    def write(f) -> None:
        f.write(json.dumps(head, default=json_default)[:-1] + ', "images": [')
        for i, line in enumerate(rows.lines()):
            f.write(("\n  " if i == 0 else ",\n  ") + line)
        f.write("\n]" + "".join(f", {json.dumps(k)}: {json.dumps(v, default=json_default)}" for k, v in tail.items())
                + "}\n")

    if str(path) == "-":
        from ._common import _JSON_STDOUT

        out = _JSON_STDOUT[-1] if _JSON_STDOUT else sys.stdout
        write(out)
        out.flush()
        return
    dst = Path(path)
    if _special_file(dst):  # /dev/stdout, a FIFO: written into as it is (atomic_write_bytes' rule)
        with open(dst, "w", encoding="utf-8") as f:
            write(f)
        return

    def to_file(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            write(f)

    write_with(dst, to_file)


@contextlib.contextmanager
def _results_kept_on_interrupt(args, predictor, task: str, rows: list, failed: list, also=None):
    """Ctrl-C (or SIGTERM) halfway through a long list still writes ``--json`` (and ``also()``: ``--out``'s
    ``panoptic.json``) for the images done."""
    try:
        yield
    except KeyboardInterrupt:
        if also is not None:
            also()
        if args.json and (rows or failed):
            kept = not rows and str(args.json) != "-" and Path(args.json).is_file() and Path(args.json).stat().st_size
            _write_results(args, predictor, task, rows, failed, interrupted=True)
            if not kept:  # (an earlier run's file kept is said by _write_results, not called this run's results)
                print(f"edgeseg predict: {len(rows)} image(s) done before the interruption: results in {args.json}",
                      file=sys.stderr)
        raise
