#!/usr/bin/env python
"""Train a SOLOv2 instance model on the synthetic shapes scenes (circles, rectangles, triangles).

    python tools/train_instance.py --model solov2_resnet18 --size 320x240 --epochs 20 --out runs/solo
    python tools/train_instance.py --out runs/solo --resume          # continue after an interruption
    python tools/train_instance.py --model test_solov2 --size 96x64 --epochs 2 --steps-per-epoch 5 --out /tmp/t

Frames come from :func:`edgeseg.train.instance.synthetic_instances` (a pure function of the seed and
the sample index, so a resumed run sees the frames an uninterrupted one would). The run folder gets
``run.json`` (the settings; ``--resume`` reuses them), ``last.pt`` (resume state), ``history.json``,
``train.log``, ``model.safetensors`` (an edgeseg checkpoint: model name, thing classes, input spec)
and ``eval.json``: a mask-IoU check of the final model on held-out scenes (another seed).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeseg.errors import EdgesegError, InputError  # noqa: E402
from edgeseg.structures import ImageShape  # noqa: E402

SETTINGS = ("model", "size", "epochs", "steps_per_epoch", "batch", "optimizer", "lr", "schedule", "warmup",
            "weight_decay", "seed", "scenes")
log = logging.getLogger("train_instance")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="solov2_resnet18", help="a registered instance model (edgeseg models --task instance)")
    p.add_argument("--size", default="320x240", help="network input WIDTHxHEIGHT (default 320x240)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (adamw) or 0.01 (sgd)")
    p.add_argument("--schedule", choices=("poly", "cosine"), default="cosine")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=None, help="default 0.05 (adamw) or 1e-4 (sgd)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, default=256, help="distinct training scenes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--eval-frames", type=int, default=40, help="held-out frames for the final mask-IoU check (0: skip)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its run.json settings")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-3 if args.optimizer == "adamw" else 0.01
    if args.weight_decay is None:
        args.weight_decay = 0.05 if args.optimizer == "adamw" else 1e-4
    return args


def settings(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    mine = {k: getattr(args, k) for k in SETTINGS}
    if not args.resume:
        if (out / "last.pt").exists():
            raise InputError(f"{out} already holds a run (last.pt)", fix="pass --resume to continue it, or another --out")
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(mine, indent=2))
        return mine
    if not (out / "run.json").is_file():
        raise InputError(f"cannot resume: {out / 'run.json'} not found", fix="give the --out folder of an earlier run")
    return json.loads((out / "run.json").read_text())


def build(s: dict):
    import torch

    from edgeseg.data.synthetic import THING_CLASSES
    from edgeseg.models import create_model
    from edgeseg.structures import InputSpec
    from edgeseg.train.instance import InstanceTrainConfig

    size = ImageShape.parse(s["size"])
    torch.manual_seed(s["seed"])
    model = create_model(s["model"], num_classes=len(THING_CLASSES), thing_classes=list(THING_CLASSES))
    if getattr(model, "task", "") != "instance":
        raise InputError(f"{s['model']} is not an instance model", fix="pick one of: edgeseg models --task instance")
    cfg = InstanceTrainConfig(size=size, epochs=s["epochs"], steps_per_epoch=s["steps_per_epoch"], batch_size=s["batch"],
                              optimizer=s["optimizer"], lr=s["lr"], schedule=s["schedule"], warmup_steps=s["warmup"],
                              weight_decay=s["weight_decay"], seed=s["seed"])
    return model, cfg, InputSpec(size=size)


def evaluate(model, spec, s: dict, frames: int) -> dict:
    import itertools

    from edgeseg.train.instance import mask_iou_check, synthetic_instances

    held_out = synthetic_instances(spec.size, seed=s["seed"] + 1000, scenes=frames)  # scenes never trained on
    return mask_iou_check(model, itertools.islice(held_out, frames), spec)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch

        from edgeseg.train.instance import InstanceTrainer, synthetic_instances

        torch.set_num_threads(max(1, args.threads))
        s = settings(args)
        out = Path(args.out)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(out / "train.log")])
        model, cfg, spec = build(s)
        params = sum(p.numel() for p in model.parameters())
        log.info("%s %s: %.2fM parameters, %d epochs x %d steps x batch %d, %s lr %g (%s)", s["model"], s["size"],
                 params / 1e6, cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.schedule)
        trainer = InstanceTrainer(model, cfg, input_spec=spec, out_dir=out, model_name=s["model"])
        t0 = time.perf_counter()
        trainer.fit(lambda start: synthetic_instances(spec.size, s["seed"], start, scenes=s["scenes"]),
                    resume=out if args.resume else None,
                    on_epoch=lambda r: print(f"epoch {r.epoch:3d}  loss {r.loss:.4f}  category {r.category:.4f}  "
                                             f"mask {r.mask:.4f}  lr {r.lr:.3g}  {r.seconds:.0f}s", flush=True))
        log.info("trained in %.0fs; weights %s", time.perf_counter() - t0, out / "model.safetensors")
        if args.eval_frames > 0:
            report = evaluate(model, spec, s, args.eval_frames)
            (out / "eval.json").write_text(json.dumps(report, indent=2))
            log.info("held-out check: %s", json.dumps(report))
    except EdgesegError as e:
        print(f"train_instance: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
