"""``edgeseg eval``: score a bundle on a labelled dataset (mIoU, mAcc, pixel accuracy, boundary F1)."""
from __future__ import annotations

import argparse
import math

from ._common import add_json_option, add_runtime_options, print_table, write_json

NAME = "eval"
HELP = "score a bundle on a labelled dataset: mIoU, mAcc, pixel accuracy, per-class IoU, boundary F1"
EXAMPLES = (
    "edgeseg eval road.edgeseg --data camvid:../shared/data/camvid --split val",
    "edgeseg eval road.edgeseg --data folder:images/,masks/,classes=classes.txt --json scores.json",
    "edgeseg eval shapes --data synthetic:50 --limit 20 --backend onnxruntime --threads 2",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle path or the name of a bundle shipped with the package")
    p.add_argument(
        "--data", required=True, metavar="SPEC",
        help="camvid:ROOT | folder:IMAGES_DIR,MASKS_DIR[,classes=FILE][,void=ID] | synthetic:N[,seed=S,size=WxH]",
    )
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="score only the first N images")
    p.add_argument("--no-boundary", action="store_true", help="skip boundary F1 (faster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runtime_options(p, precision="fp32")
    add_json_option(p)


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..eval import class_map, evaluate
    from ..predictor import load

    dataset = open_dataset(args.data, split=args.split)
    predictor = load(
        args.bundle, backend=args.backend, precision=args.precision, target=args.target,
        device=args.device, threads=args.threads,
    )
    with predictor:
        cmap = class_map(predictor.classes, tuple(dataset.classes))
        _warn_class_mismatch(cmap, predictor.classes, tuple(dataset.classes))
        scores = evaluate(
            lambda rgb: cmap(predictor(rgb).labels), dataset,
            progress=not args.no_progress, limit=args.limit, boundary=not args.no_boundary,
        )
    print(f"{args.bundle} on {args.data} [{args.split}], {scores.num_images} images, {len(dataset.classes)} classes")
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
    data.update(bundle=str(args.bundle), data=args.data, split=args.split, backend=args.backend, precision=args.precision,
                class_match=cmap.by, unmatched_model_classes=list(cmap.unmatched))
    write_json(args.json, data)
    return 0


def _warn_class_mismatch(cmap, model: tuple[str, ...], data: tuple[str, ...]) -> None:
    """Say how model classes were matched to the dataset's when it is not one-to-one by the same names."""
    if cmap.by == "id":
        print(f"warning: no class name is shared: model {list(model)} vs dataset {list(data)}; scoring by class id")
    if cmap.unmatched:
        print(f"note: model classes the dataset does not have count as misses: {', '.join(cmap.unmatched)}")
    if cmap.unpredictable:
        print(f"warning: dataset classes the model cannot predict score 0: {', '.join(cmap.unpredictable)}")
