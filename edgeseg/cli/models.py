"""``edgeseg models``: list the registered model family."""
from __future__ import annotations

import argparse

from ._common import add_json_option, print_table, write_json

NAME = "models"
HELP = "list registered models (name, task, architecture, encoder, parameters)"
EXAMPLES = (
    "edgeseg models                       # every model",
    "edgeseg models 'deeplab*'            # shell-style pattern",
    "edgeseg models --task semantic --json models.json",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: all)")
    p.add_argument("--task", default=None, help="only models of this task (semantic, ...)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes assumed for the parameter count (default: 11 for semantic models, each other "
                        "model's own default, e.g. COCO's for instance and panoptic variants)")
    p.add_argument("--tiny", action="store_true", help="also list the tiny test_* variants")
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import create_model, list_models, model_info

    rows = []
    for name in list_models(args.pattern, task=args.task):
        info = model_info(name)
        if info.tiny and not args.tiny and args.pattern == "*":
            continue
        with torch.device("meta"):  # count parameters without allocating or initialising them
            model = create_model(name, num_classes=_classes_for(info.task, args.num_classes))
        params = sum(p.numel() for p in model.parameters())
        rows.append({"name": name, "task": info.task, "arch": info.arch, "encoder": info.encoder,
                     "params_M": round(params / 1e6, 3), "description": info.doc})
    print_table(rows, ["name", "task", "arch", "encoder", "params_M"])
    write_json(args.json, {"num_classes": args.num_classes or SEMANTIC_CLASSES, "models": rows})
    return 0


SEMANTIC_CLASSES = 11  # CamVid's: the parameter count a semantic model has on the default road data


def _classes_for(task: str, asked: int | None) -> int | None:
    """Classes to build a listed model with: the one asked for, else 11 for semantic models and the
    variant's own default for others (instance and panoptic heads need their class layout)."""
    if asked is not None:
        return asked
    return SEMANTIC_CLASSES if task == "semantic" else None
