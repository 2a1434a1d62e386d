"""``edgeseg models``: list the registered model family."""
from __future__ import annotations

import argparse

from ._common import add_json_option, check_output, print_table, write_json

NAME = "models"
HELP = "list registered models (name, task, architecture, encoder, parameters)"
EXAMPLES = (
    "edgeseg models                       # every model",
    "edgeseg models 'deeplab*'            # shell-style pattern",
    "edgeseg models --task semantic --json models.json",
    "edgeseg models --encoders            # the encoders any decoder can be built on",
    "edgeseg models --encoder hrnetv2_w18_small   # every model that can be built on HRNetV2, its size there",
    "edgeseg models --bundles             # the trained bundles shipped with edgeseg (road, street-instance, ...)",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: all)")
    p.add_argument("--task", default=None, help="only models of this task (semantic, ...)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes assumed for the parameter count (default: 11 for semantic models, each other "
                        "model's own default, e.g. COCO's for instance and panoptic variants)")
    p.add_argument("--tiny", action="store_true", help="also list the tiny test_* variants")
    p.add_argument("--encoders", action="store_true", help="list the registered encoders instead of the models")
    p.add_argument("--bundles", action="store_true",
                   help="list the trained bundles shipped with edgeseg (usable by name: edgeseg run --bundle road) "
                        "instead of the architectures; needs no torch")
    p.add_argument("--encoder", default=None, metavar="NAME",
                   help="build each listed model on this encoder (as 'edgeseg train --encoder' does); models "
                        "whose backbone is part of the architecture are named below the table")
    add_json_option(p)


def _list_bundles(args: argparse.Namespace) -> int:
    """The shipped bundles matching the pattern (and ``--task``): task, classes, input size, models."""
    import fnmatch

    from ..bundle import Bundle
    from ..errors import InputError
    from ..paths import shipped_bundle_names
    from ..structures.manifest import TASKS

    given = [o for o, v in (("--encoders", args.encoders), ("--encoder", args.encoder), ("--tiny", args.tiny),
                            ("--num-classes", args.num_classes)) if v]
    if given:
        raise InputError(f"--bundles lists the shipped bundles; {', '.join(given)} describe architectures",
                         fix="drop " + ", ".join(given))
    if args.task is not None and args.task not in TASKS:
        raise InputError(f"unknown task {args.task!r}", fix=f"use one of {', '.join(TASKS)}")
    rows, matched = [], [n for n in shipped_bundle_names() if fnmatch.fnmatch(n, args.pattern)]
    for name in matched:
        m = Bundle.open(name).manifest
        if args.task and m.task != args.task:
            continue
        size = m.input.size
        rows.append({"name": name, "task": m.task, "classes": len(m.classes),
                     "input": f"{size.width}x{size.height}" if size else "any",
                     "models": ", ".join(f"{mf.precision}" + (f"/{mf.target}" if mf.target else "") for mf in m.models)})
    if not rows and matched:  # the pattern matched: the task filtered them all out
        raise InputError(f"no shipped bundle of task {args.task} matches {args.pattern!r} ({', '.join(matched)} "
                         f"{'is' if len(matched) == 1 else 'are'} not {args.task})",
                         fix="'edgeseg models --bundles' lists them all with their tasks")
    if not rows:
        raise _no_match("bundle", args.pattern, shipped_bundle_names(), "", listing="edgeseg models --bundles")
    print_table(rows)
    write_json(args.json, {"bundles": rows})
    return 0


def run(args: argparse.Namespace) -> int:
    if args.json:
        check_output(args.json, "--json")
    if args.bundles:  # before torch: a device with the runtime alone lists them too
        return _list_bundles(args)
    import torch

    from ..errors import ModelError
    from ..models import create_model, list_models, model_info

    if args.encoders:
        return _list_encoders(args)
    _check_filters(args)
    names = list_models(args.pattern, task=args.task)
    if not names:
        raise _no_match("model", args.pattern, list_models(task=args.task), f" of task {args.task}" if args.task else "")
    rows, not_built = [], []
    for name in names:
        info = model_info(name)
        if info.tiny and not args.tiny and args.pattern == "*":
            continue
        try:
            with torch.device("meta"):  # count parameters without allocating or initialising them
                model = create_model(name, num_classes=_classes_for(info.task, args.num_classes), encoder=args.encoder)
        except ModelError as e:
            if args.encoder is None:
                raise
            not_built.append({"name": name, "reason": str(e).splitlines()[0]})
            continue
        params = sum(p.numel() for p in model.parameters())
        rows.append({"name": name, "task": info.task, "arch": info.arch, "encoder": args.encoder or info.encoder,
                     "params_M": round(params / 1e6, 3), "description": info.doc})
    print_table(rows, ["name", "task", "arch", "encoder", "params_M"])
    if not_built:
        print(f"not buildable on {args.encoder}: " + ", ".join(r["name"] for r in not_built))
    write_json(args.json, {"num_classes": args.num_classes or SEMANTIC_CLASSES, "models": rows,
                           **({"encoder": args.encoder, "not_buildable": not_built} if args.encoder else {})})
    return 0


def _check_filters(args: argparse.Namespace) -> None:
    """--task and --encoder name things that exist (else the listing is silently empty or all 'not buildable')."""
    from ..errors import InputError
    from ..models import list_models, model_info
    from ..models.encoders import list_encoders

    tasks = sorted({model_info(n).task for n in list_models()})
    if args.task is not None and args.task not in tasks:
        raise InputError(f"unknown task {args.task!r}", fix=f"use one of {', '.join(tasks)}")
    if args.encoder is not None and args.encoder not in list_encoders():
        raise _no_match("encoder", args.encoder, list_encoders(), "", listing="edgeseg models --encoders")


def _no_match(what: str, pattern: str, names: list[str], where: str, listing: str = "edgeseg models"):
    import difflib

    from ..errors import InputError

    close = difflib.get_close_matches(pattern.strip("*?"), names, n=3, cutoff=0.5)
    return InputError(f"no {'shipped' if what == 'bundle' else 'registered'} {what}{where} matches {pattern!r}",
                      fix=f"did you mean {', '.join(close)}?" if close else f"'{listing}' lists them all")


def _list_encoders(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InputError
    from ..models.encoders import create_encoder, encoder_output_strides, list_encoders

    given = [f"--{k.replace('_', '-')}" for k in ("task", "encoder", "num_classes") if getattr(args, k) is not None]
    if given:
        raise InputError(f"--encoders lists the encoders; {', '.join(given)} {'filters' if len(given) == 1 else 'filter'} models",
                         fix=f"drop {', '.join(given)}, or drop --encoders")
    names = list_encoders(args.pattern)
    if not names:
        raise _no_match("encoder", args.pattern, list_encoders(), "", listing="edgeseg models --encoders")
    rows = []
    for name in names:
        if name.startswith("test_") and not args.tiny:
            continue
        strides = encoder_output_strides(name)
        with torch.device("meta"):
            enc = create_encoder(name, output_stride=max(strides))
        rows.append({"name": name, "output_strides": ",".join(map(str, strides)),
                     "channels": ",".join(map(str, enc.out_channels)), "reductions": ",".join(map(str, enc.reductions)),
                     "params_M": round(sum(p.numel() for p in enc.parameters()) / 1e6, 3)})
    print_table(rows, ["name", "output_strides", "channels", "reductions", "params_M"])
    write_json(args.json, {"encoders": rows})
    return 0


SEMANTIC_CLASSES = 11  # CamVid's: the parameter count a semantic model has on the default road data


def _classes_for(task: str, asked: int | None) -> int | None:
    """Classes to build a listed model with: the one asked for, else 11 for semantic models and the
    variant's own default for others (instance and panoptic heads need their class layout)."""
    if asked is not None:
        return asked
    return SEMANTIC_CLASSES if task == "semantic" else None
