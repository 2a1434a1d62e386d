#!/usr/bin/env python
"""Train a panoptic model (Panoptic-DeepLab or LPSNet) on COCO-panoptic data (Cityscapes at 640x320
in ../shared/data).

    python tools/train_panoptic.py --model panoptic_deeplab_mobilenetv3_small \\
        --data /work/shared/data/cityscapes_panoptic --size 640x320 --crop 512x256 --epochs 30 --batch 8 \\
        --threads 2 --init-encoder edgeseg/zoo/road.edgeseg --cpu-precision auto --memory-format auto --out runs/pdl
    python tools/train_panoptic.py --model lpsnet_mobilenetv3_small \\
        --data /work/shared/data/cityscapes_panoptic --size 640x320 --crop 512x256 --epochs 30 --batch 8 \\
        --threads 2 --init-encoder edgeseg/zoo/road.edgeseg --out runs/lpsnet
    python tools/train_panoptic.py --out runs/pdl --resume          # continue after an interruption
    python tools/train_panoptic.py ... --device cuda --workers 14 --batch 32   # a GPU, batches made by 14 processes
    python tools/train_panoptic.py --init runs/pdl/model.safetensors --seed 1 --lr 5e-4 --warmup 50 \
        --epochs 2 --steps-per-epoch 259 --crop 512x256 --threads 2 --out runs/pdl-ft   # a later stage
    python tools/train_panoptic.py --model test_panoptic_deeplab --data synthetic --size 96x64 --epochs 1 \\
        --steps-per-epoch 3 --batch 2 --out /tmp/pdl

``--data`` is a folder with ``panoptic_{train,val}.json``, ``panoptic_{train,val}/`` (PNGs) and
``train/``, ``val/`` (images), or ``synthetic`` (the shapes scenes). Class i is the i-th category of
the JSON; things are the categories with ``isthing``. The model's architecture picks its targets
and loss (:data:`edgeseg.train.panoptic.STRATEGIES`); everything else is shared. Frames come from
:func:`edgeseg.train.panoptic.dataset_stream` (a pure function of the seed and the sample index, so a
resumed run sees the frames an uninterrupted one would). The run folder gets ``run.json`` (the
settings; ``--resume`` reuses them), ``last.pt`` (resume state, every epoch and every
``--checkpoint-every`` steps), ``history.json``, ``train.log``, ``model.safetensors`` (an edgeseg
checkpoint: model name, classes, thing classes, category ids, input spec; rewritten every epoch) and
``eval.json``: PQ of the final model on ``--eval-frames`` val frames, decoded by the runtime decoder as
an exported bundle would be.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeseg.errors import EdgesegError, InputError  # noqa: E402
from edgeseg.structures import ImageShape  # noqa: E402
from edgeseg.train.precision import add_precision_options, step_summary  # noqa: E402
from edgeseg.train.step_batches import add_device_options  # noqa: E402

SETTINGS = ("model", "data", "size", "crop", "epochs", "steps_per_epoch", "batch", "lr", "schedule", "warmup",
            "weight_decay", "seed", "init_encoder", "init", "top_k_percent", "sigma", "cpu_precision", "memory_format")
log = logging.getLogger("train_panoptic")
INIT_BATCHES = 16  # training batches that re-estimate a folded bundle's BatchNorms (--init BUNDLE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="panoptic_deeplab_mobilenetv3_small",
                   help="a registered panoptic model: panoptic_deeplab_* or lpsnet_* (edgeseg models --task panoptic)")
    p.add_argument("--data", default="/work/shared/data/cityscapes_panoptic", help="COCO-panoptic folder, or 'synthetic'")
    p.add_argument("--size", default="640x320", help="network input WIDTHxHEIGHT (frames are resized to it at scale 1)")
    p.add_argument("--crop", default=None, help="training crop WIDTHxHEIGHT (default: --size)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=0, help="default: training frames // batch")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=("poly", "cosine"), default="poly")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--top-k-percent", type=float, default=0.2,
                   help="Panoptic-DeepLab's bootstrapped CE: hardest pixel fraction (1: plain CE); LPSNet: unused")
    p.add_argument("--sigma", type=float, default=8.0,
                   help="Panoptic-DeepLab's centre Gaussian, network-input pixels (default 8, the paper's at 2048 px "
                        "wide; 2.5 keeps its size relative to the objects at 640 px); LPSNet: unused")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-encoder", default=None, help="encoder weights: a checkpoint, model.onnx or .edgeseg bundle")
    p.add_argument("--init", default=None,
                   help="all weights from an earlier run's model.safetensors (a later stage: a fresh schedule, "
                        "usually another --seed so that it sees other crops), or from an exported bundle or "
                        "model.onnx of the same model (e.g. edgeseg/zoo/street-panoptic.edgeseg: training continues "
                        "on any machine; its folded BatchNorms are re-estimated on 16 training batches)")
    add_precision_options(p)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    add_device_options(p, "decode, augmentation, targets")
    p.add_argument("--log-every", type=int, default=10, help="progress line every N steps")
    p.add_argument("--checkpoint-every", type=int, default=50, help="also write last.pt every N steps (0: epoch ends)")
    p.add_argument("--eval-frames", type=int, default=50, help="val frames for the final PQ (0: skip)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its run.json settings")
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    mine = {k: getattr(args, k) for k in SETTINGS}
    if not args.resume:
        if (out / "last.pt").exists():
            raise InputError(f"{out} already holds a run (last.pt)", fix="pass --resume to continue it, or another --out")
        out.mkdir(parents=True, exist_ok=True)
        return mine
    if not (out / "run.json").is_file():
        raise InputError(f"cannot resume: {out / 'run.json'} not found", fix="give the --out folder of an earlier run")
    return json.loads((out / "run.json").read_text())


class Data:
    """The train/val sources: class names, category ids, thing classes and sample streams."""

    def __init__(self, where: str, size: ImageShape):
        if where == "synthetic":
            from edgeseg.data.synthetic import CLASSES, THING_CLASSES

            self.names, self.category_ids = tuple(CLASSES), tuple(range(len(CLASSES)))
            self.things = tuple(CLASSES.index(t) for t in THING_CLASSES)
            self.train = self.val = None
            self.size = size
            return
        from edgeseg.data import CocoPanoptic

        root = Path(where)
        for name in ("panoptic_train.json", "panoptic_train", "train"):
            if not (root / name).exists():
                raise InputError(f"{root / name} not found", fix="give a COCO-panoptic folder (see --help) or 'synthetic'")
        self.train = CocoPanoptic(root / "panoptic_train.json", root / "panoptic_train", root / "train")
        self.val = (CocoPanoptic(root / "panoptic_val.json", root / "panoptic_val", root / "val")
                    if (root / "panoptic_val.json").is_file() else None)
        cats = list(self.train.categories.values())  # the JSON's order
        self.names = tuple(c.name for c in cats)
        self.category_ids = tuple(c.id for c in cats)
        self.things = tuple(i for i, c in enumerate(cats) if c.isthing)
        self.size = size

    def stream(self, seed: int, start: int):
        from edgeseg.train.panoptic import dataset_stream, synthetic_panoptic

        if self.train is None:
            return synthetic_panoptic(self.size, seed, start)
        return dataset_stream(self.train, seed, start)

    def held_out(self, seed: int, frames: int):
        from edgeseg.train.panoptic import synthetic_panoptic

        if self.train is None:
            return itertools.islice(synthetic_panoptic(self.size, seed + 1000, scenes=frames), frames)
        if self.val is None:
            return iter(())
        return ((s.image(), s.panoptic, s.crowd_ids) for s in (self.val[i] for i in range(min(frames, len(self.val)))))

    @property
    def frames(self) -> int:
        return len(self.train) if self.train is not None else 1000


def build(s: dict, data: Data, device: str = "cpu", workers: int = 0):
    import torch

    from edgeseg.models import create_model
    from edgeseg.structures import InputSpec
    from edgeseg.train.panoptic import PanopticTrainConfig

    size = ImageShape.parse(s["size"])
    torch.manual_seed(s["seed"])
    model = create_model(s["model"], num_classes=len(data.names), class_names=list(data.names),
                         thing_classes=list(data.things))
    if getattr(model, "task", "") != "panoptic":
        raise InputError(f"{s['model']} is not a panoptic model", fix="pick one of: edgeseg models --task panoptic")
    steps = s["steps_per_epoch"] or max(1, data.frames // s["batch"])
    cfg = PanopticTrainConfig(size=size, crop=ImageShape.parse(s["crop"]) if s["crop"] else None, epochs=s["epochs"],
                              steps_per_epoch=steps, batch_size=s["batch"], lr=s["lr"], schedule=s["schedule"],
                              warmup_steps=s["warmup"], weight_decay=s["weight_decay"], seed=s["seed"],
                              top_k_percent=s["top_k_percent"] if s["top_k_percent"] < 1 else None,
                              sigma=float(s.get("sigma", 8.0)), cpu_precision=s.get("cpu_precision", "fp32"),
                              memory_format=s.get("memory_format", "contiguous"), device=device, workers=workers)
    return model, cfg, InputSpec(size=size)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch

        from edgeseg.models.folded import init_model_weights
        from edgeseg.models.panoptic_deeplab import load_encoder_weights
        from edgeseg.train.panoptic import PanopticTrainer, quick_pq

        torch.set_num_threads(max(1, args.threads))
        s = settings(args)
        out = Path(args.out)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(out / "train.log")])
        data = Data(s["data"], ImageShape.parse(s["size"]))
        model, cfg, spec = build(s, data, args.device, args.workers)
        trainer = PanopticTrainer(model, cfg, category_ids=data.category_ids, input_spec=spec, out_dir=out,
                                  model_name=s["model"], checkpoint_every=args.checkpoint_every, log_every=args.log_every)
        if not args.resume:
            (out / "run.json").write_text(json.dumps({**s, "steps_per_epoch": cfg.steps_per_epoch}, indent=2))
            if s.get("init"):  # a checkpoint, or a bundle / model.onnx (folded BatchNorms re-estimated)
                def batches(stream=data.stream(s["seed"], 0), b=cfg.batch_size):
                    return (trainer.prepare(list(itertools.islice(stream, b)), i * b)[0].to(trainer.device)
                            for i in range(INIT_BATCHES))

                n = init_model_weights(model, s["init"], batches, what=s["model"])
                log.info("weights: all from %s (%d folded BatchNorms re-estimated on training crops)", s["init"], n)
            elif s["init_encoder"]:
                n = load_encoder_weights(model, s["init_encoder"])
                log.info("encoder: %d tensors from %s", n, s["init_encoder"])
        params = sum(p.numel() for p in model.parameters())
        log.info("%s (%s) %s (crop %s): %.2fM parameters, %d classes (%d things), %d epochs x %d steps x batch %d, "
                 "adamw lr %g (%s)", s["model"], trainer.arch, s["size"], s["crop"] or s["size"], params / 1e6,
                 model.num_classes, len(model.thing_classes), cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.lr,
                 cfg.schedule)
        t0 = time.perf_counter()
        trainer.fit(lambda start: data.stream(s["seed"], start), resume=out if args.resume else None)
        log.info("trained in %.0fs (step: %s); weights %s", time.perf_counter() - t0, step_summary(trainer.precision),
                 out / "model.safetensors")
        if args.eval_frames > 0 and data.train is not None and data.val is None:  # before: "PQ 0.000" on 0 frames
            log.info("no held-out check: %s has no panoptic_val.json (its PQ would be of nothing)", s["data"])
        elif args.eval_frames > 0:
            categories = {c: i in model.thing_classes for i, c in enumerate(data.category_ids)}
            report = quick_pq(model, data.held_out(s["seed"], args.eval_frames), spec, data.category_ids, categories)
            (out / "eval.json").write_text(json.dumps(report, indent=2))
            log.info("PQ on %d held-out frames: all %.3f things %.3f stuff %.3f", report["frames"], report["all"]["pq"],
                     report["things"]["pq"], report["stuff"]["pq"])
    except EdgesegError as e:
        print(f"train_panoptic: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a signal: the trainers save the run after the step in progress
        from edgeseg.train.interrupt import TrainingStopped, report_stop

        if not isinstance(e, TrainingStopped):
            raise
        return report_stop("train_panoptic", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
