"""``edgeseg fuse SEMANTIC INSTANCE --out PANOPTIC``: one panoptic bundle from a semantic and an
instance bundle (one ONNX graph, panopticapi's combination heuristics; see
:mod:`edgeseg.export.fuse`)."""
from __future__ import annotations

import argparse

from ._common import add_json_option, write_json

NAME = "fuse"
HELP = "fuse a semantic and an instance bundle into one panoptic bundle (instances by score, then stuff)"
EXAMPLES = (
    "edgeseg fuse street-semantic.edgeseg street-instance.edgeseg --out street-fused.edgeseg",
    "edgeseg fuse shapes shapes-instance --things circle,triangle --out shapes-fused.edgeseg --overwrite",
    "edgeseg fuse sem.edgeseg inst.edgeseg --stuff road,sky,building --stuff-area 256 --out f.edgeseg --json parity.json",
    "edgeseg fuse street-semantic street-instance --score-threshold 0.25 --class-score-thresholds "
    "rider=0.5,car=0.35,truck=0.2,motorcycle=0.2,bicycle=0.35 --out f.edgeseg  # per-class thresholds",
    "edgeseg fuse street-panoptic.edgeseg street-instance.edgeseg --out f.edgeseg  # a panoptic model's semantic head",
    "edgeseg fuse runs/street-sem.edgeseg street-instance --categories ../shared/data/cityscapes_panoptic/panoptic_val.json "
    "--out f.edgeseg  # a semantic model of the dataset's classes: predictions carry its category ids",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("semantic", help="a semantic bundle (path or shipped name), or a panoptic bundle with a semantic "
                                    "output (Panoptic-DeepLab): its semantic head is used")
    p.add_argument("instance", help="an instance bundle (path or shipped name): if either model letterboxes, both need the same input size")
    p.add_argument("--out", required=True, help="panoptic bundle directory to create")
    p.add_argument("--name", default=None, help="bundle name (default: from --out)")
    p.add_argument("--stuff", default=None,
                   help="comma-separated semantic classes kept as stuff (default: those not named like an instance class)")
    p.add_argument("--things", default=None, help="comma-separated instance classes kept as things (default: all)")
    p.add_argument("--score-threshold", type=float, default=None, help="instances scoring below are left out (default 0.3)")
    p.add_argument("--class-score-thresholds", default=None, metavar="NAME=T,...",
                   help="per thing class, the score its instances need instead of --score-threshold, e.g. "
                        "rider=0.5,car=0.35 (tools/bench/panoptic_sweep.py --class-thresholds chooses them)")
    p.add_argument("--overlap-threshold", type=float, default=None,
                   help="an instance more than this share covered by higher-scoring ones is dropped (default 0.5)")
    p.add_argument("--stuff-area", type=int, default=None, help="stuff segments smaller than this (pixels) become void")
    p.add_argument("--categories", default=None, metavar="JSON",
                   help="a COCO-panoptic JSON of the dataset: the fused bundle predicts its category ids, matched to "
                        "the classes by name (default: a panoptic source's ids, else the class indices)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_json_option(p)


def _split(v: str | None) -> list[str] | None:
    return [s.strip() for s in v.split(",") if s.strip()] if v else None


def _category_ids(path: str) -> dict[str, int]:
    """Category id by name from a COCO-panoptic JSON's ``categories``."""
    from ..data.coco_panoptic import read_categories, read_panoptic_json
    from ..errors import DataError

    data = read_panoptic_json(path, ("categories",), what="--categories file")
    categories = read_categories(data, str(path))
    if not categories:
        raise DataError(f"--categories: {path} lists no categories", fix="give the dataset's panoptic JSON")
    return {c.name: c.id for c in categories.values()}


def class_score_thresholds(value: str | None) -> dict[str, float] | None:
    """``"rider=0.5,car=0.35"`` -> ``{"rider": 0.5, "car": 0.35}`` (None: not given)."""
    from ..errors import InputError

    if value is None:
        return None
    out: dict[str, float] = {}
    for item in _split(value) or []:
        name, sep, t = item.rpartition("=")
        try:
            threshold = float(t)
        except ValueError:
            threshold = None
        if not sep or not name.strip() or threshold is None:
            raise InputError(f"--class-score-thresholds: {item!r} is not NAME=THRESHOLD",
                             fix="e.g. --class-score-thresholds rider=0.5,car=0.35")
        out[name.strip()] = threshold
    if not out:
        raise InputError("--class-score-thresholds names no class", fix="e.g. --class-score-thresholds rider=0.5,car=0.35")
    return out


def run(args: argparse.Namespace) -> int:
    from ..bundle import check_target
    from ..export.fuse import fuse_bundles
    from ..structures import PanopticOptions

    options = PanopticOptions().replace(score_threshold=args.score_threshold, overlap_threshold=args.overlap_threshold,
                                        stuff_area=args.stuff_area,
                                        class_score_thresholds=class_score_thresholds(args.class_score_thresholds))
    check_target(args.out, "--out", overwrite=args.overwrite)
    ids = None if args.categories is None else _category_ids(args.categories)
    b = fuse_bundles(args.semantic, args.instance, args.out, name=args.name, stuff=_split(args.stuff),
                     things=_split(args.things), overwrite=args.overwrite, options=options, category_ids=ids)
    m, parity = b.manifest, b.report["parity"]
    things = [m.classes[i] for i in m.decoder_options.thing_classes]
    stuff = [c for i, c in enumerate(m.classes) if i not in m.decoder_options.thing_classes]
    print(f"wrote {b.source} (panoptic, fusion layout, input {m.input.size}): stuff {', '.join(stuff) or '-'}; "
          f"things {', '.join(things)}")
    limits = parity.get("thresholds", {})
    relaxed = f" (at least {limits['pixel_agreement']:.1%}: {', '.join(limits['relaxed_for'])})" if limits.get("relaxed_for") else ""
    print(f"parity with the two bundles run apart on {parity['images']} frames: "
          f"pixel agreement {parity['min_pixel_agreement']:.4%}{relaxed}")
    write_json(args.json, {"bundle": str(b.root), "parity": parity})
    return 0
