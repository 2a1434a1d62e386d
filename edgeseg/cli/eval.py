"""``edgeseg eval``: score a bundle on a labelled dataset: mIoU, mAcc, pixel accuracy, boundary F1 for
semantic bundles; COCO mask AP (the 12 COCOeval stats, per-class AP) for instance bundles on
``coco-instance:`` / ``yolo-seg:`` data; PQ / SQ / RQ (all, things, stuff, per category, as
panopticapi's ``pq_compute``) for panoptic bundles on ``coco-panoptic:`` data, with the predictor's
time per frame; ``--save-predictions DIR`` writes them as COCO-panoptic PNGs + JSON
(:mod:`edgeseg.eval.panoptic_io`) that panopticapi and cityscapesScripts' ``evaluatePanoptic`` read."""
from __future__ import annotations

import argparse
import math
import sys

from ..errors import InputError
from ._common import add_json_option, add_runtime_options, check_output, print_table, write_json
from .._compat import is_relative_to

NAME = "eval"
HELP = ("score a bundle on a labelled dataset: mIoU, mAcc, pixel accuracy, boundary F1; mask AP for instance bundles; "
        "PQ for panoptic bundles")
EXAMPLES = (
    "edgeseg eval road.edgeseg --data camvid:../shared/data/camvid --split val",
    "edgeseg eval road.edgeseg --data folder:images/,masks/,classes=classes.txt --json scores.json",
    "edgeseg eval city.edgeseg --data cityscapes:/data/cityscapes --split val   # as downloaded: leftImg8bit/, gtFine/",
    "edgeseg eval road --data cityscapes:/data/cityscapes,classes=camvid,cities=frankfurt+lindau",
    "edgeseg eval shapes --data synthetic:50 --limit 20 --backend onnxruntime --threads 2",
    "edgeseg eval inst.edgeseg --data coco:../shared/data/cityscapes_panoptic/instances_val.json --json ap.json  # mask and box AP",
    "edgeseg eval inst.edgeseg --data yolo-seg:datasets/mine --class-map rider=person --save-predictions dets.json",
    "edgeseg eval pan.edgeseg --data coco-panoptic:../shared/data/cityscapes_panoptic/panoptic_val.json "
    "--save-predictions preds/ --json pq.json",
    "edgeseg eval coco-pan.edgeseg --data coco-panoptic:city/panoptic_val.json --class-map rider=person,terrain=void",
)


def _note(text: str) -> None:
    """A note on standard error; ``-q`` leaves notes out (warnings stay)."""
    from .. import _progress

    if not _progress.QUIET:
        print(f"note: {text}", file=sys.stderr)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle path or the name of a bundle shipped with the package")
    p.add_argument(
        "--data", required=True, metavar="SPEC",
        help="camvid:ROOT | cityscapes:ROOT[,classes=camvid][,cities=A+B] (leftImg8bit/ + gtFine/ as downloaded) | "
             "folder:IMAGES_DIR,MASKS_DIR[,classes=FILE][,void=ID][,reduce_zero_label=1] | synthetic:N[,seed=S,size=WxH] | "
             "yolo-semantic:DATA_YAML (Ultralytics semantic: images/ + masks/) | "
             "coco:INSTANCES_JSON[,images=DIR] (also coco-instance:) | yolo-seg:ROOT_OR_DATA_YAML[,names=FILE] | "
             "coco-panoptic:PANOPTIC_JSON[,images=DIR] (PNGs in the folder named like the JSON without .json) | "
             "panoptic-semantic:PANOPTIC_JSON (its segments as label maps, for semantic bundles) | "
             "cityscapes-camvid:PANOPTIC_JSON (Cityscapes panoptic truth in CamVid's 11 classes) | "
             "synthetic-instance:N[,seed=S,size=WxH] | synthetic-panoptic:N[,seed=S,size=WxH]",
    )
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="score only the first N images")
    p.add_argument("--no-boundary", action="store_true", help="skip boundary F1 (faster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("instance bundles (mask AP) and panoptic bundles (PQ)")
    g.add_argument("--images", metavar="DIR", default=None,
                   help="coco, coco-panoptic: the image folder (default: the folder named after the split "
                        "beside the JSON: instances_val.json or panoptic_val.json -> val/)")
    g.add_argument("--class-map", metavar="MODEL=DATASET,...", default=None,
                   help="map model classes to dataset categories by name, e.g. person=person,rider=person; "
                        "other classes match by equal name. Instance data: unmatched classes are dropped; panoptic "
                        "data: CLASS=void leaves a class's segments out, stuff classes mapped onto one category "
                        "become one segment, and an unmatched class is refused, naming it")
    g.add_argument("--score-threshold", type=float, default=None, metavar="T",
                   help="instance data: keep detections scoring above T (default 0.001, as Ultralytics' val does: AP "
                        "integrates the whole precision/recall curve, so the bundle's display threshold would cut it "
                        "short); panoptic data: the bundle's own unless given (PQ counts every false segment)")
    g.add_argument("--save-predictions", metavar="FILE|DIR", default=None,
                   help="instance: write the detections as a COCO results JSON (image_id, category_id, RLE "
                        "segmentation, score, bbox xywh) that pycocotools' loadRes reads (mask APs/APm/APl sort "
                        "detections by mask area, as Detectron2 and MMDetection do: pop 'bbox' for COCOeval segm to "
                        "get the same; loadRes would take the box area); panoptic: a folder that "
                        "gets <gt json stem>_pred.json and the PNGs in <gt json stem>_pred/ (COCO panoptic results) "
                        "that panopticapi's pq_compute and cityscapesScripts' evaluatePanoptic read (with --limit, "
                        "only the images scored)")
    add_runtime_options(p, precision="fp32")
    add_json_option(p)


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..eval import class_map, evaluate
    from ..predictor import load

    _check_numbers(args)
    if args.json:
        check_output(args.json, "--json")  # before any work: a path that cannot be written loses the scores
    from ..data.base import first_images_checked

    with first_images_checked(args.limit):  # --limit N: a partial download scores the images it has
        dataset = open_dataset(_spec(args), split=args.split)
    task = getattr(dataset, "task", "semantic")
    if len(dataset) == 0:  # nothing to score: n/a (or panopticapi's 0 PQ) would read as a result
        raise InputError(f"--data {args.data} holds no image in split {args.split!r}",
                         fix="check the path and --split (or the spec's sequences=/exclude=/cities= selection)")
    if task == "instance":
        return _run_instance(args, dataset)
    if task == "panoptic":
        return _run_panoptic(args, dataset)
    if args.save_predictions:
        raise InputError(f"--save-predictions {args.save_predictions}: {args.data} is semantic data; predictions are "
                         "saved for instance data (a COCO results JSON) and panoptic data (COCO-panoptic PNGs)",
                         fix="leave --save-predictions out; edgeseg predict BUNDLE IMAGES --out DIR writes label maps")
    if args.score_threshold is not None:  # an option audit: taken, recorded in --json, and used by nothing
        raise InputError(f"--score-threshold {args.score_threshold}: {args.data} is semantic data, scored from every "
                         "pixel's class; a score threshold applies to instance and panoptic data",
                         fix="leave --score-threshold out")
    if args.class_map:
        raise InputError(f"--class-map {args.class_map}: {args.data} is semantic data, whose classes are matched to "
                         "the model's by name (else by id)", fix="leave --class-map out: it maps instance and panoptic "
                                                                 "categories (coco-instance:, yolo-seg:, coco-panoptic:)")
    _check_overwrites(args, dataset, [("--json", args.json)])
    predictor = load(
        args.bundle, backend=args.backend, precision=args.precision, target=args.target,
        device=args.device, threads=args.threads,
    )
    with predictor:
        if predictor.manifest.task != "semantic":
            other = {"instance": "coco-instance: or yolo-seg: data (mask AP)", "panoptic": "coco-panoptic: data (PQ)"}
            raise InputError(f"{args.bundle} is {_a(predictor.manifest.task)} bundle; {args.data} holds semantic label "
                             "maps", fix=f"score a semantic bundle on it, or this bundle on "
                                         f"{other.get(predictor.manifest.task, 'data of its task')}")
        cmap = class_map(predictor.classes, tuple(dataset.classes))
        for level, text in cmap.notes(predictor.classes, dataset.classes):
            _note(text) if level == "note" else print(f"{level}: {text}", file=sys.stderr)
        from ..eval.semantic import SemanticMetric

        metric = SemanticMetric(len(dataset.classes), getattr(dataset, "ignore_index", 255),
                                boundary=not args.no_boundary, classes=tuple(dataset.classes))
        skipped: list = []
        try:
            scores = evaluate(
                lambda rgb: cmap(predictor(rgb).labels), dataset,
                progress=not args.no_progress, limit=args.limit, boundary=not args.no_boundary, metric=metric,
                skipped=skipped,
            )
        except KeyboardInterrupt:  # the scores so far are shown (a batch audit: Ctrl-C at 95% kept nothing); --json
            if metric.images_scored:  # is not written: an earlier run's complete scores there are kept
                _print_semantic(args, dataset, cmap, metric.compute(), skipped, _ran(predictor), interrupted=True)
                print(f"edgeseg eval: interrupted after {metric.images_scored} image(s): the scores so far are above"
                      + (f" ({args.json} is left as it was)" if args.json else ""), file=sys.stderr)
            raise
    _print_semantic(args, dataset, cmap, scores, skipped, _ran(predictor))
    _refuse_left_out(args, skipped, scores.num_images)
    return 0


def _refuse_left_out(args: argparse.Namespace, skipped: list, scored: int) -> None:
    """The samples that could not be read, after the others' scores were printed and written: an error (exit 2)."""
    if not skipped:
        return
    from ..errors import DataError

    first = "; ".join(s["error"] for s in skipped[:3])
    raise DataError(f"{len(skipped)} sample(s) of {args.data} could not be read and are left out of the scores "
                    f"above ({scored} scored): {first}{' ...' if len(skipped) > 3 else ''}",
                    fix="mend or drop those files and score again" + (f" (each is listed in {args.json}, 'skipped')"
                                                                      if args.json else ""))


def _skipped_record(skipped: list) -> list:
    """``skipped`` as --json keeps it (the exceptions left out)."""
    return [{k: v for k, v in s.items() if k != "exception"} for s in skipped]


def _print_semantic(args: argparse.Namespace, dataset, cmap, scores, skipped: list, ran: dict,
                    interrupted: bool = False) -> None:
    """The scores' table, and ``--json`` (not for an interrupted run); ``ran``: :func:`_ran`."""
    print(f"{args.bundle} on {args.data} [{args.split}], {scores.num_images} images, {len(dataset.classes)} classes"
          + (" (interrupted)" if interrupted else ""))
    print(f"  mIoU        {_pct(scores.miou)}")
    print(f"  mAcc        {_pct(scores.macc)}")
    print(f"  pixel acc   {_pct(scores.pixel_acc)}")
    bf = "skipped" if args.no_boundary else f"{_pct(scores.boundary_f1)}  (tolerance {scores.boundary_tolerance_px or 0:.2f} px)"
    print(f"  boundary F1 {bf}")
    rows = [
        {"class": n, "IoU %": _pct(i), "Acc %": _pct(a), "BF1 %": _pct(b)}
        for n, i, a, b in zip(scores.class_names(), scores.per_class_iou, scores.per_class_acc, scores.per_class_boundary_f1)
    ]
    print()
    print_table(rows, ["class", "IoU %", "Acc %", "BF1 %"] if not args.no_boundary else ["class", "IoU %", "Acc %"])
    data = scores.to_dict()
    data.update(bundle=str(args.bundle), data=args.data, split=args.split, **ran,
                class_match=cmap.by, unmatched_model_classes=list(cmap.unmatched))
    if skipped:
        data["skipped"] = _skipped_record(skipped)
    if not interrupted:
        write_json(args.json, data)


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"person=person,rider=person"`` -> ``{"person": "person", "rider": "person"}``."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        src, eq, dst = part.partition("=")
        if not eq or not src.strip() or not dst.strip():
            raise InputError(f"cannot read class map entry {part!r}", fix="write MODEL_CLASS=DATASET_CATEGORY,...")
        out[src.strip()] = dst.strip()
    return out


def _run_instance(args: argparse.Namespace, dataset) -> int:
    import json

    from .._io import atomic_write_text
    from ..eval import category_map, evaluate_instances
    from ..predictor import load

    if args.save_predictions:
        check_output(args.save_predictions, "--save-predictions")
    _check_overwrites(args, dataset, [("--json", args.json), ("--save-predictions", args.save_predictions)])
    predictor = load(
        args.bundle, backend=args.backend, precision=args.precision, target=args.target,
        device=args.device, threads=args.threads,
    )
    with predictor:
        task = predictor.manifest.task
        if task != "instance":
            raise InputError(f"{args.bundle} is {_a(task)} bundle; {args.data} holds instance masks",
                             fix="score an instance bundle on it (or a semantic bundle on a semantic dataset)")
        if args.score_threshold is None:
            args.score_threshold = INSTANCE_SCORE_THRESHOLD
        predictor.set_options(score_threshold=args.score_threshold)
        cmap = category_map(predictor.classes, dataset.categories, parse_class_map(args.class_map))
        if cmap.by == "index":
            print(f"warning: no class name is shared: model {list(predictor.classes)} vs dataset {list(dataset.classes)}; "
                  "mapping by class index", file=sys.stderr)
        if cmap.dropped:
            _note(f"model classes without a dataset category are dropped: {', '.join(cmap.dropped)}")
        counts = instance_counts(dataset)
        names = [c.lower() for c in dataset.classes]
        missing = [c for c in cmap.missing if counts.get(c, 1) > 0 and names.count(c.lower()) == 1]  # (a repeated
        if missing:  # name is warned about by the reader: a --class-map to it would go to its first category)
            import difflib

            # the example pairs names that are alike when there are some, and says it is a question (before: the
            # first of each, paired whatever they were, as an answer: 'airplane=rider')
            pair = next(((d[0], m) for m in missing if (d := difflib.get_close_matches(m, list(cmap.dropped), 1, 0.6))),
                        (cmap.dropped[0], missing[0]) if cmap.dropped else None)
            print(f"warning: dataset categories no model class maps to (each of their instances is a miss): "
                  f"{', '.join(missing)}; if the model calls them otherwise, pair them with --class-map MODEL=DATASET"
                  + (f" (e.g. --class-map '{pair[0]}={pair[1]}' if the model's {pair[0]} is the dataset's {pair[1]})"
                     if pair else ""), file=sys.stderr)
        records: list[dict] | None = [] if args.save_predictions else None
        skipped: list = []
        scores = evaluate_instances(predictor, dataset, cmap.to_category, progress=not args.no_progress,
                                    limit=args.limit, results=records, skipped=skipped)
    print(f"{args.bundle} on {args.data} [{args.split}], {scores.num_images} images, {len(dataset.classes)} categories")
    box = scores.box.named() if scores.box is not None else {}
    print(f"  {'':<6} {'mask':>6} {'box':>6}")
    for name, value in scores.named().items():
        b = box.get(name, -1.0)
        print(f"  {name:<6} {_pct(value) if value >= 0 else 'n/a':>6} {_pct(b) if b >= 0 else 'n/a':>6}")
    print()
    box_ap = {c.category_id: c.ap for c in scores.box.per_class} if scores.box is not None else {}
    print_table([{"class": c.name, "id": c.category_id, "AP %": _pct(c.ap) if c.ap >= 0 else "n/a",
                  "AP50 %": _pct(c.ap50) if c.ap50 >= 0 else "n/a",
                  "box AP %": _pct(box_ap[c.category_id]) if box_ap.get(c.category_id, -1) >= 0 else "n/a",
                  "GT": c.num_gt} for c in scores.per_class])
    if records is not None:
        atomic_write_text(args.save_predictions, json.dumps(records))  # compact: one record per detection
        print(f"wrote {len(records)} detections to {args.save_predictions}")
    data = scores.to_dict()
    data.update(bundle=str(args.bundle), data=args.data, split=args.split, **_ran(predictor),
                score_threshold=args.score_threshold, class_match=cmap.by, class_map={m: c for m, c in cmap.pairs}, dropped_model_classes=list(cmap.dropped))
    if skipped:
        data["skipped"] = _skipped_record(skipped)
    write_json(args.json, data)
    _refuse_left_out(args, skipped, scores.num_images)
    return 0


def instance_counts(dataset) -> dict[str, int]:
    """Category name -> instances of an instance dataset (empty when the reader cannot tell: every category then
    counts as having some)."""
    counts = getattr(dataset, "category_counts", None)
    return counts() if callable(counts) else {}


def _run_panoptic(args: argparse.Namespace, dataset) -> int:
    import time
    from pathlib import Path

    from .._timing import Latency
    from ..eval.panoptic import evaluate_panoptic, panoptic_class_map, remap_categories
    from ..eval.panoptic_io import PanopticWriter, prediction_paths
    from ..predictor import load

    pairs = parse_class_map(args.class_map)
    outputs = [("--json", args.json)]
    if args.save_predictions:  # a folder: <gt stem>_pred.json and the PNGs in <gt stem>_pred/
        if getattr(dataset, "json_path", None) is None:
            raise InputError(f"--save-predictions {args.save_predictions}: {args.data} has no ground-truth JSON to name "
                             "the predictions after and to score them against (COCO-panoptic results pair with one)",
                             fix="leave --save-predictions out, or score coco-panoptic: data")
        if Path(args.save_predictions).suffix.lower() == ".json" and not Path(args.save_predictions).is_dir():
            raise InputError(f"--save-predictions {args.save_predictions}: panoptic predictions are a folder (a JSON and "
                             "its PNGs), not one JSON file",
                             fix=f"give a folder, e.g. --save-predictions {Path(args.save_predictions).with_suffix('')}: "
                                 f"it gets {Path(dataset.json_path).stem}_pred.json and {Path(dataset.json_path).stem}"
                                 "_pred/ with the PNGs")
        json_path, png_dir = prediction_paths(args.save_predictions, dataset.json_path)
        outputs += [("--save-predictions", json_path), ("--save-predictions", png_dir)]
        check_output(args.save_predictions, "--save-predictions", "folder")
        for p in (json_path, png_dir):
            if p.exists() and p.is_dir() != (p == png_dir):
                raise InputError(f"--save-predictions: {p} is in the way: it is a {'folder' if p.is_dir() else 'file'}",
                                 fix="move it away, or give --save-predictions another folder")
    _check_overwrites(args, dataset, outputs)
    predictor = load(args.bundle, backend=args.backend, precision=args.precision, target=args.target,
                     device=args.device, threads=args.threads)
    seconds: list[float] = []
    lut: dict[int, int | None] | None = None
    isthing = {c.id: c.isthing for c in dataset.categories.values()}

    def timed(rgb):
        start = time.perf_counter()
        result = predictor(rgb)
        seconds.append(time.perf_counter() - start)
        return result if lut is None else remap_categories(result, lut, isthing)

    with predictor:
        if predictor.manifest.task != "panoptic":
            fix = "score a panoptic bundle on it" + (
                f" (or this bundle on the same truth as label maps: --data panoptic-semantic:{dataset.json_path})"
                if predictor.manifest.task == "semantic" and getattr(dataset, "json_path", None) else "")
            raise InputError(f"{args.bundle} is {_a(predictor.manifest.task)} bundle; "
                             f"{args.data} holds panoptic segments", fix=fix)
        if pairs:  # the user's map, the rest by name; the bundle's own ids are only what its segments carry
            own = tuple(getattr(predictor.options, "category_ids", ()) or ())
            lut = panoptic_class_map(predictor.classes, own, dataset.categories, pairs)
            voided = [n for k, n in enumerate(predictor.classes) if lut[own[k] if own else k] is None]
            _note("classes scored as categories by --class-map and by name"
                  + (f"; left out as void: {', '.join(voided)}" if voided else ""))
        else:
            _check_panoptic_categories(args.bundle, predictor, dataset)
        if args.score_threshold is not None:  # the bundle's own otherwise (it was taken and used by nothing)
            predictor.set_options(score_threshold=args.score_threshold)
        writer = None
        if args.save_predictions:
            writer = PanopticWriter(json_path, png_dir, categories=dataset.categories)
        save = None if writer is None else (lambda s, r: writer.add(s.image_id, s.file_name, r))
        skipped: list = []
        try:
            scores = evaluate_panoptic(timed, dataset, progress=not args.no_progress, limit=args.limit,
                                       on_prediction=save, skipped=skipped)
        except BaseException:
            if writer is not None:
                writer.discard()  # a failed run: an earlier run's predictions stay as they were
            raise
        if writer is not None:
            writer.close()
    latency = Latency.of(seconds)
    print(f"{args.bundle} on {args.data} [{args.split}], {scores.num_images} images, "
          f"{len(dataset.categories)} categories")
    for name, g in (("all", scores.all), ("things", scores.things), ("stuff", scores.stuff)):
        print(f"  {name:<7} PQ {_pct(g.pq)}  SQ {_pct(g.sq)}  RQ {_pct(g.rq)}  ({g.n} categories)")
    print(f"  time    {latency.mean_ms:.1f} ms per frame (median {latency.p50_ms:.1f}; preprocess, inference, decode)")
    print()
    print_table([{"class": c.name, "id": c.category_id, "thing": "yes" if c.isthing else "no", "PQ %": _pct(c.pq),
                  "SQ %": _pct(c.sq), "RQ %": _pct(c.rq), "TP": c.tp, "FP": c.fp, "FN": c.fn} for c in scores.per_class])
    data = scores.to_dict()
    data.update(bundle=str(args.bundle), data=args.data, split=args.split, **_ran(predictor),
                score_threshold=args.score_threshold, ms_per_frame=latency.mean_ms, latency={"mean_ms": latency.mean_ms, "p50_ms": latency.p50_ms,
                                                       "p95_ms": latency.p95_ms, "max_ms": latency.max_ms})
    if writer is not None:
        print(f"wrote {len(writer.annotations)} panoptic predictions to {writer.json_path} (PNGs in {writer.png_dir})")
        data.update(predictions={"json": str(writer.json_path), "png_dir": str(writer.png_dir)})
    if skipped:
        data["skipped"] = _skipped_record(skipped)
    write_json(args.json, data)
    _refuse_left_out(args, skipped, scores.num_images)
    return 0


def _check_panoptic_categories(bundle, predictor, dataset) -> None:
    """Match the bundle's classes to the dataset's category ids. Its own ids are used when each names the
    class's category in this dataset; otherwise (an imported model without ids, or ids that name other
    categories here: another numbering of the same classes) the categories of the same names, when every class
    has one. Ids the dataset does not list are refused (panopticapi refuses such predictions); ids naming other
    categories with no match by name are warned about, naming them. Classes whose thing/stuff kind differs from
    the dataset's are noted."""
    from ..eval.panoptic import category_ids_by_name

    classes, cats = predictor.classes, dataset.categories
    own = tuple(getattr(predictor.options, "category_ids", ()) or ())
    ids = own or tuple(range(len(classes)))
    by_name = category_ids_by_name(classes, cats)

    def same(name: str, c: int) -> bool:
        return cats[c].name.lower() == name.lower()

    unknown = [f"{n}={c}" for n, c in zip(classes, ids) if c not in cats]
    other = [f"{n}={c} ({cats[c].name!r} here)" for n, c in zip(classes, ids) if c in cats and not same(n, c)]
    if by_name is not None and by_name != ids and (not own or unknown or other):
        predictor.set_options(category_ids=by_name)
        if own:
            print(f"warning: {bundle}'s category ids name other categories in this dataset "
                  f"({', '.join((unknown + other)[:6])}{', ...' if len(unknown + other) > 6 else ''}); its classes are "
                  "scored as the dataset's categories of the same names", file=sys.stderr)
        else:
            _note(f"{bundle} has no category ids; its classes are the dataset's categories of the same names")
        ids, unknown, other = by_name, [], []
    if unknown:
        listed = list(cats.values())
        known = ", ".join(f"{c.id} {c.name}" for c in listed[:10]) + (f", ... ({len(listed)} in all)" if len(listed) > 10
                                                                         else "")
        raise InputError(f"{bundle} writes category ids the dataset does not list: {', '.join(unknown[:10])}"
                         f"{' ...' if len(unknown) > 10 else ''}"
                         + (f"; and ids naming other categories: {', '.join(other[:10])}" if other else ""),
                         fix=f"map the bundle's classes onto this dataset's categories with --class-map "
                             f"CLASS=CATEGORY,... (CLASS=void leaves one out; classes left out match by name), or "
                             f"score it on a dataset of its own categories (the dataset's: {known})")
    if other:
        print(f"warning: {bundle}'s classes and the dataset's categories of the same ids have other names: "
              f"{', '.join(other)}; scored by id (--class-map CLASS=CATEGORY,... maps them by name)", file=sys.stderr)
    things = set(getattr(predictor.options, "thing_classes", ()))
    differ = [n for k, (n, c) in enumerate(zip(classes, ids)) if (k in things) != cats[c].isthing]
    if differ:
        _note(f"thing/stuff differs from the dataset for {', '.join(differ)}; PQ uses the dataset's")


#: instance data's score threshold unless --score-threshold is given (Ultralytics' val: the whole precision/recall curve)
INSTANCE_SCORE_THRESHOLD = 0.001


def _ran(predictor) -> dict:
    """The backend and precision that ran (an option audit: --json said "auto", so scores could not be told apart)."""
    return {"backend": predictor.backend, "precision": predictor.runner.precision}


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse option values that cannot mean anything, naming the option, before any work."""
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit}: scores no image; N must be 1 or more",
                         fix="give --limit N with N >= 1, or leave --limit out to score every image")
    if args.threads is not None and args.threads < 0:
        raise InputError(f"--threads {args.threads}: must be 0 or more",
                         fix="--threads 0 uses the runtime's default; N >= 1 runs that many CPU threads")
    t = args.score_threshold
    if t is not None and not 0.0 <= t <= 1.0:  # NaN too
        raise InputError(f"--score-threshold {t}: must be within 0..1",
                         fix="detections score 0..1; the default 0.001 keeps nearly all, as AP needs")


_IMAGES_KINDS = ("coco", "coco-instance", "coco-panoptic", "cityscapes-camvid", "panoptic-semantic")


def _spec(args: argparse.Namespace) -> str:
    """``--data`` with ``--images DIR`` added as its ``images=DIR`` option, for the kinds that take one."""
    if args.images is None:
        return args.data
    from pathlib import Path

    from ..data.base import DATASETS, DatasetSpec
    from ..data.mixture import is_mixture

    if is_mixture(args.data):
        raise InputError(f"--images {args.images}: --data {args.data} names several datasets",
                         fix="give each part its folder as images=DIR inside --data")
    parsed = DatasetSpec.parse(args.data)
    if parsed.kind in DATASETS and parsed.kind not in _IMAGES_KINDS:
        raise InputError(f"--images {args.images}: {parsed.kind}: data takes no separate image folder "
                         f"(--images is for {', '.join(k + ':' for k in _IMAGES_KINDS)})",
                         fix=f"leave --images out; {parsed.kind}: finds its images from --data "
                             "(folder:IMAGES_DIR,MASKS_DIR names them)")
    given = dict(parsed.options).get("images")
    if given is not None and Path(given).expanduser().resolve() != Path(args.images).expanduser().resolve():
        raise InputError(f"--images {args.images} and images={given} in --data: two image folders",
                         fix="give the image folder once")
    return args.data if given is not None else f"{args.data},images={args.images}"


def _input_paths(args: argparse.Namespace, dataset) -> tuple[list, list, list]:
    """``(paths, bundle folders and files, names)``: what this run reads, to keep its outputs off
    them: the paths ``--data`` names, the dataset's own paths (its folders, annotation JSON, image
    and label files) and the bundle. Only paths are gathered here; none is touched on disk."""
    import os
    from pathlib import Path

    from ..data.base import DatasetSpec
    from ..data.mixture import is_mixture, parse_mixture
    from ..paths import shipped_bundle

    named: list[Path] = []
    parts = [s for s, _ in parse_mixture(args.data)] if is_mixture(args.data) else [args.data]
    for part in parts:
        spec = DatasetSpec.parse(part)
        named += [Path(v) for v in (*spec.args, *(v for _, v in spec.options)) if v]
    if args.images:
        named.append(Path(args.images))
    listed: list[Path] = []  # many (a label per image): compared by name first

    def walk(obj, depth: int, in_list: bool) -> None:
        if isinstance(obj, os.PathLike):
            (listed if in_list else named).append(Path(obj))
        elif depth > 5 or isinstance(obj, (str, bytes)):
            return
        elif isinstance(obj, (list, tuple)):
            for x in obj:
                walk(x, depth + 1, True)
        elif hasattr(obj, "__dict__") and not callable(obj):  # a reader, or a reader inside one (cityscapes-camvid)
            for v in vars(obj).values():
                walk(v, depth + 1, in_list)

    walk(dataset, 0, False)
    bundle = Path(args.bundle)
    if not bundle.exists() and os.sep not in str(args.bundle):
        bundle = shipped_bundle(str(args.bundle)) or bundle
    return named, [bundle], listed


def _check_overwrites(args: argparse.Namespace, dataset, outputs) -> None:
    """Refuse outputs (``[(option, path)]``) that would overwrite what this run reads (``--json`` naming
    the annotations, the classes file or a label) or each other (``--json`` and ``--save-predictions``)."""
    from pathlib import Path

    from ..data.io import IMAGE_SUFFIXES

    outs = [(opt, Path(p)) for opt, p in outputs if p]
    if not outs:
        return
    named, bundles, listed = _input_paths(args, dataset)

    def same(a: Path, b: Path) -> bool:
        try:
            return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
        except (OSError, ValueError):
            return False

    def inside(a: Path, folder: Path) -> bool:
        try:
            return folder.is_dir() and is_relative_to(a.resolve(), folder.resolve())
        except (OSError, ValueError):
            return False

    for k, (opt, out) in enumerate(outs):
        for opt2, out2 in outs[k + 1:]:
            if opt2 != opt and same(out, out2):
                raise InputError(f"{opt} and {opt2} both name {out}: one would overwrite the other",
                                 fix=f"give {opt} another path")
        for b in bundles:
            if same(out, b) or inside(out, b):
                raise InputError(f"{opt} {out} is in the bundle {args.bundle}: writing it would change the bundle",
                                 fix=f"give {opt} a path outside the bundle, e.g. ./{out.name}")
        if not out.exists():
            continue  # only an existing file can be overwritten
        hit = next((p for p in named if same(out, p)), None) or \
            next((p for p in listed if p.name == out.name and same(out, p)), None)
        if hit is None and out.suffix.lower() in (*IMAGE_SUFFIXES, ".txt", ".yaml", ".yml"):
            hit = next((p for p in named if inside(out, p)), None)  # an image, label or list file of a data folder
        if hit is not None:
            raise InputError(f"{opt} {out} is a file this run reads (--data {args.data}): writing it would overwrite "
                             "it", fix=f"give {opt} another path, e.g. ./{'scores' if opt == '--json' else 'predictions'}"
                                       ".json")
