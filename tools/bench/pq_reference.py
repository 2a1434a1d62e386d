"""PQ that `edgeseg eval` reports against the reference on the predictions it saved (issue 12: equal within 0.1).

For each bundle: `edgeseg eval BUNDLE --data coco-panoptic:JSON --save-predictions DIR` (its PQ, SQ, RQ for all,
things and stuff), then the reference on the files it wrote: the Cityscapes benchmark's
``evaluatePanoptic`` (cityscapesScripts, panopticapi's ``pq_compute`` ported line for line; panopticapi
itself is not on PyPI). Prints one row per bundle and group and the largest difference; writes JSON.

    python tools/bench/pq_reference.py street-panoptic street-fused.edgeseg \\
        --data coco-panoptic:../shared/data/cityscapes_panoptic/panoptic_val.json --threads 2 --json pq_ref.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402

GROUPS = (("all", "All"), ("things", "Things"), ("stuff", "Stuff"))


def compare(bundle: str, data: str, threads: int, work: Path) -> list[dict]:
    """Rows (one per group) of edgeseg's and the reference's PQ/SQ/RQ, in percent, for one bundle."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    from edgeseg.cli import main
    from edgeseg.eval.panoptic_io import prediction_paths

    gt_json = Path(data.split(":", 1)[1].split(",")[0])
    out, scores = work / "pred", work / "pq.json"
    rc = main(["eval", bundle, "--data", data, "--threads", str(threads), "--no-progress",
               "--save-predictions", str(out), "--json", str(scores)])
    if rc:
        raise SystemExit(f"edgeseg eval {bundle} failed ({rc})")
    ours = json.loads(scores.read_text())
    pred_json, pred_dir = prediction_paths(out, gt_json)
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints every class
        ref = evaluatePanoptic(str(gt_json), str(gt_json.with_suffix("")), str(pred_json), str(pred_dir),
                               str(work / "reference.json"))
    rows = []
    for key, name in GROUPS:
        row = {"bundle": bundle, "group": key, "images": ours["num_images"]}
        for m in ("pq", "sq", "rq"):
            row[f"{m} edgeseg"] = 100 * ours[key][m]
            row[f"{m} reference"] = 100 * ref[name][m]
        row["max |diff|"] = max(abs(row[f"{m} edgeseg"] - row[f"{m} reference"]) for m in ("pq", "sq", "rq"))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", help="panoptic bundles (a path or a shipped name)")
    p.add_argument("--data", required=True, help="coco-panoptic:PATH/panoptic_val.json (its PNGs beside it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    for bundle in args.bundles:
        with tempfile.TemporaryDirectory(prefix="pq-ref-") as tmp:
            rows += compare(bundle, args.data, args.threads, Path(tmp))
    print_table([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
    worst = max(r["max |diff|"] for r in rows)
    print(f"largest difference: {worst:.2e} PQ/SQ/RQ points (goal: within 0.1)")
    write_json(args.json, {"machine": platform.node(), "cpus": os.cpu_count(), "args": vars(args), "rows": rows,
                           "largest_difference": worst})
    return 0 if worst <= 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
