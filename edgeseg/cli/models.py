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
    p.add_argument("--num-classes", type=int, default=11, help="classes assumed for the parameter count (default 11)")
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
            model = create_model(name, num_classes=args.num_classes)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"name": name, "task": info.task, "arch": info.arch, "encoder": info.encoder,
                     "params_M": round(params / 1e6, 3), "description": info.doc})
    print_table(rows, ["name", "task", "arch", "encoder", "params_M"])
    write_json(args.json, {"num_classes": args.num_classes, "models": rows})
    return 0
