#!/usr/bin/env python
"""Score distillation teachers (``edgeseg train --teacher``) the way the trainer runs them, before a run.

A teacher is worth distilling from only where it beats the student. Each ``--teacher`` (a bundle, or
an ensemble joined with ``+``) runs through :class:`edgeseg.train.distill.Teacher`: each member's own
preprocessing and class bias, its classes mapped onto the student's, probabilities averaged (and over
the mirrored frame with ``--flip``); its argmax at the labels' resolution is scored with mIoU on the
held-out sets of ``tools/bench/holdout.py``.

    python tools/bench/teacher.py --classes camvid --teacher road --teacher road+street-semantic \\
        --teacher road+street-semantic --flip-all --json out/teachers.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from holdout import SETS  # noqa: E402  (tools/bench/holdout.py)

from edgeseg.cli._common import print_table, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from edgeseg.data.base import open_semantic_dataset
    from edgeseg.eval import SemanticMetric
    from edgeseg.paths import data_root
    from edgeseg.structures import CAMVID_CLASSES
    from edgeseg.train.distill import Teacher, TeacherMember

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", action="append", required=True, help="a bundle or BUNDLE+BUNDLE (repeatable)")
    p.add_argument("--flip-all", action="store_true", help="also score each teacher averaged over mirrored frames")
    p.add_argument("--classes", default="camvid", help="the student's classes: camvid (default)")
    p.add_argument("--sets", default=",".join(SETS), help=f"which sets (default {','.join(SETS)})")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per member (default 2)")
    p.add_argument("--json", default=None, help="write the scores here")
    args = p.parse_args(argv)
    if args.classes != "camvid":
        print("teacher: only --classes camvid is known here", file=sys.stderr)
        return 2
    root = data_root()
    if root is None:
        print("teacher: the real-data folder was not found: set EDGESEG_DATA", file=sys.stderr)
        return 2
    sets = {k: SETS[k].format(root=root) for k in args.sets.split(",")}
    rows = []
    for spec in args.teacher:
        members = [TeacherMember(b, CAMVID_CLASSES, threads=args.threads) for b in spec.split("+")]
        for flip in ([False, True] if args.flip_all else [False]):
            teacher = Teacher(members, flip)
            row = {"teacher": teacher.name}
            for key, ds_spec in sets.items():
                ds = open_semantic_dataset(ds_spec, "val", purpose="scoring")
                metric = SemanticMetric(len(CAMVID_CLASSES), 255, boundary=False)
                for i in range(len(ds)):
                    s = ds[i]
                    metric.update(teacher.probs(s.image).argmax(0), s.labels)
                row[key] = round(100 * metric.compute().miou, 2)
                print(f"{teacher.name} {key}: {row[key]:.2f}", file=sys.stderr, flush=True)
            rows.append(row)
    print_table(rows, ["teacher", *sets])
    write_json(args.json, {"sets": sets, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
