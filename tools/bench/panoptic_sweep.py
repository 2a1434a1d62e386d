"""Choose a panoptic bundle's decoder options on frames it may have trained on, then score the choice
once on held-out frames: the protocol that keeps the held-out figure honest.

    python tools/bench/panoptic_sweep.py runs/street-panoptic.edgeseg \\
        --select coco-panoptic:../shared/data/cityscapes_panoptic/panoptic_train.json --select-limit 150 \\
        --score coco-panoptic:../shared/data/cityscapes_panoptic/panoptic_val.json \\
        --grid center_threshold=0.1,0.2,0.3 nms_kernel=7,11 stuff_area=128,512 --json sweep.json

The model runs once per frame (outputs kept in memory); every combination of ``--grid`` values is
decoded from them and scored with :class:`edgeseg.eval.PanopticMetric` (PQ equal to panopticapi's).
The best combination on ``--select`` (by PQ) and the bundle's own options are then scored on
``--score``. ``--class-thresholds V1,V2,...`` (fused bundles) then chooses a score threshold per thing
class on ``--select`` as well, starting from the best combination and the bundle's own per-class
thresholds (which the grid's rows keep): coordinate ascent, two rounds over
the thing classes, each class trying every value (``class_score_thresholds``; apply it with
``edgeseg fuse --class-score-thresholds``), and scores that choice on ``--score`` too. Nothing is
written into the bundle: apply a choice with ``predictor.set_options(...)`` or by editing the
manifest's ``decoder``. ``--select`` frames are spread evenly over the dataset
(every k-th), so that they cover its cities.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402


def _parse_grid(items: list[str]) -> dict[str, list]:
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"panoptic_sweep: --grid takes KEY=V1,V2,... (got {item!r})")
        grid[key] = [float(v) if "." in v else int(v) for v in values.split(",")]
    return grid


def _outputs(pred, dataset, limit: int | None, spread: bool):
    n = len(dataset)
    idx = list(range(n))
    if limit is not None and limit < n:
        idx = [round(i * n / limit) for i in range(limit)] if spread else idx[:limit]
    cached = []
    for i in idx:
        sample = dataset[i]
        feed, meta = pred.preprocess(sample.image())
        cached.append((pred.runner.infer(feed), meta, sample.panoptic, sample.crowd_ids))
    return cached


def _pq(pred, cached, categories, options) -> dict:
    from edgeseg.decode import decode
    from edgeseg.eval import PanopticMetric

    metric = PanopticMetric({c.id: c.isthing for c in categories}, {c.id: c.name for c in categories})
    opts = pred.options.replace(**options)
    t0 = time.perf_counter()
    results = [decode(out, meta, pred.manifest, opts) for out, meta, _, _ in cached]
    ms = 1e3 * (time.perf_counter() - t0) / max(len(cached), 1)
    for r, (_, _, truth, crowd) in zip(results, cached):
        metric.update(r, truth, crowd)
    d = metric.compute().to_dict()
    return {"PQ": 100 * d["all"]["pq"], "things PQ": 100 * d["things"]["pq"], "stuff PQ": 100 * d["stuff"]["pq"],
            "decode ms": ms}


def _class_thresholds(pred, cached, categories, chosen: dict, values: list[float], start_pq: float,
                      rounds: int = 2) -> dict[str, float]:
    """Per thing class score thresholds by coordinate ascent on the cached frames (module doc)."""
    opts = pred.options
    names = [pred.manifest.classes[i] for i in opts.thing_classes]
    # from the bundle's own per-class thresholds: the grid's rows (and start_pq) were decoded with them
    current: dict[str, float] = dict(opts.class_score_thresholds or {})
    best = start_pq
    for r in range(rounds):
        for name in names:
            for v in values:
                trial = {**current, name: v}
                pq = _pq(pred, cached, categories, {**chosen, "class_score_thresholds": trial})["PQ"]
                if pq > best + 1e-9:
                    best, current = pq, trial
            print(f"round {r + 1}, {name}: {current} PQ {best:.2f}", flush=True)
    return current


def main(argv=None) -> int:
    import edgeseg
    from edgeseg.data import open_dataset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--select", required=True, help="where options are chosen: coco-panoptic:PATH/panoptic_train.json")
    p.add_argument("--select-limit", type=int, default=150, help="frames of --select, spread over it (default 150)")
    p.add_argument("--score", required=True, help="held-out frames scored once: coco-panoptic:PATH/panoptic_val.json")
    p.add_argument("--score-limit", type=int, default=None)
    p.add_argument("--grid", nargs="+", required=True, help="KEY=V1,V2,... decoder options to try (every combination)")
    p.add_argument("--class-thresholds", default=None, metavar="V1,V2,...",
                   help="also choose a score threshold per thing class among these values (fused bundles)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    grid = _parse_grid(args.grid)
    pred = edgeseg.load(args.bundle, backend=args.backend, precision=args.precision)
    if args.class_thresholds and getattr(pred.options, "layout", None) != "fusion":
        raise SystemExit("panoptic_sweep: --class-thresholds is for fused bundles (edgeseg fuse)")
    unknown = sorted(set(grid) - set(pred.options.to_dict()))
    if unknown:
        raise SystemExit(f"panoptic_sweep: {', '.join(unknown)} are not {pred.manifest.task} decoder options")
    select, score = open_dataset(args.select), open_dataset(args.score)
    with pred:
        cached = _outputs(pred, select, args.select_limit, spread=True)
        rows = []
        for values in itertools.product(*grid.values()):
            options = dict(zip(grid, values))
            rows.append({**options, **_pq(pred, cached, select.categories.values(), options)})
        print(f"selection: {len(cached)} frames of {args.select} ({pred.backend}/{pred.runner.precision})")
        print_table(rows)
        best = max(rows, key=lambda r: r["PQ"])
        chosen = {k: best[k] for k in grid}
        own = {k: getattr(pred.options, k) for k in grid}
        per_class = None
        if args.class_thresholds:
            values = [float(v) for v in args.class_thresholds.split(",") if v.strip()]
            per_class = _class_thresholds(pred, cached, select.categories.values(), chosen, values, best["PQ"])
        held = _outputs(pred, score, args.score_limit, spread=False)
        final = [{"options": "the bundle's", **own, **_pq(pred, held, score.categories.values(), own)},
                 {"options": "chosen on --select", **chosen, **_pq(pred, held, score.categories.values(), chosen)}]
        if per_class is not None:
            with_classes = {**chosen, "class_score_thresholds": per_class}
            final.append({"options": "chosen on --select, per class", **chosen,
                          **_pq(pred, held, score.categories.values(), with_classes)})
    if per_class is not None:
        print(f"per-class score thresholds chosen on --select: {per_class}")
    print(f"held out: {len(held)} frames of {args.score}")
    print_table(final)
    write_json(args.json, {"bundle": args.bundle, "backend": f"{pred.backend}/{pred.runner.precision}",
                           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                           "select": args.select, "select_frames": len(cached), "score": args.score,
                           "score_frames": len(held), "grid": grid, "selection": rows, "held_out": final,
                           "class_score_thresholds": per_class})
    return 0


if __name__ == "__main__":
    sys.exit(main())
