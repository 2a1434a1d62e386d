#!/usr/bin/env python
"""Train a SOLOv2 instance model on the synthetic shapes scenes or on COCO instance data.

    python tools/train_instance.py --model solov2_resnet18 --size 320x240 --epochs 20 --out runs/solo
    python tools/train_instance.py --out runs/solo --resume          # continue after an interruption
    python tools/train_instance.py --model test_solov2 --size 96x64 --epochs 2 --steps-per-epoch 5 --out /tmp/t
    python tools/train_instance.py --model solov2_mobilenetv3_small \
        --data coco-instance:../shared/data/cityscapes_panoptic/instances_train.json \
        --val-data coco-instance:../shared/data/cityscapes_panoptic/instances_val.json \
        --size 640x320 --crop 512x256 --epochs 12 --steps-per-epoch 259 --batch 8 --threads 2 \
        --init-encoder runs/road-holdout.edgeseg --out runs/street-instance
    python tools/train_instance.py ... --copy-paste 0.5   # Simple Copy-Paste on half the samples
    python tools/train_instance.py ... --device cuda --workers 12 --batch 32   # a GPU, batches made by 12 processes

``--data synthetic`` (default): frames from :func:`edgeseg.train.instance.synthetic_instances`;
otherwise an instance dataset spec (``coco-instance:PATH/instances_train.json``, YOLO-seg folders),
every image once per epoch in a seeded order (:func:`edgeseg.train.instance.dataset_instances`),
crowd regions left out, the model's thing classes = the dataset's classes. Both streams are pure
functions of the seed and the sample index, so a resumed run sees the frames an uninterrupted one
would. ``--copy-paste P``: with probability P a sample gets a random half of another batch sample's
instances pasted where they lie (Simple Copy-Paste, :func:`edgeseg.train.instance.copy_paste`).
``--init-encoder`` copies a trained encoder (a checkpoint, ONNX or bundle of a model with the same
encoder, e.g. a road-scene DeepLabV3+) before training. The run folder gets ``run.json`` (the
settings; ``--resume`` reuses them), ``last.pt`` (resume state), ``history.json``, ``train.log``,
``model.safetensors`` (an edgeseg checkpoint: model name, thing classes, input spec) and
``eval.json``: a mask-IoU check of the final model on held-out frames (synthetic: another seed;
real data: the first ``--eval-frames`` of ``--val-data``). Mask AP of the exported model:
``tools/make_instance_bundle.py CHECKPOINT --eval SPEC``.
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

SETTINGS = ("model", "size", "epochs", "steps_per_epoch", "batch", "optimizer", "lr", "schedule", "warmup",
            "weight_decay", "seed", "scenes", "data", "val_data", "crop", "init_encoder", "init", "cpu_precision", "memory_format",
            "copy_paste")
log = logging.getLogger("train_instance")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="solov2_resnet18", help="a registered SOLOv2 model (edgeseg models 'solov2_*')")
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
    p.add_argument("--scenes", type=int, default=256, help="distinct training scenes (synthetic data)")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (default) or an instance dataset spec, e.g. coco-instance:PATH/instances_train.json")
    p.add_argument("--val-data", default=None, help="instance dataset spec for the final mask-IoU check (real data)")
    p.add_argument("--crop", default=None, help="training crop WIDTHxHEIGHT of the network-size frame (default: whole)")
    p.add_argument("--init-encoder", default=None,
                   help="encoder weights to start from: a checkpoint, model.onnx or .edgeseg bundle with the same encoder")
    p.add_argument("--init", default=None,
                   help="all weights from a checkpoint, or from an exported bundle or model.onnx of the same model "
                        "(e.g. edgeseg/zoo/street-instance.edgeseg: training continues on any machine; folded "
                        "BatchNorms are re-estimated on 16 training batches), with a fresh schedule")
    p.add_argument("--copy-paste", type=float, default=0.0, metavar="P",
                   help="Simple Copy-Paste: with probability P a training sample gets a random half of another "
                        "sample's instances pasted on it (0, the default: off)")
    add_precision_options(p)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_device_options(p, "decode, augmentation, SOLO targets")
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


def training_data(s: dict):
    """``(thing classes, stream(start))`` of the run's data."""
    from edgeseg.data.synthetic import THING_CLASSES
    from edgeseg.train.instance import dataset_instances, synthetic_instances

    size = ImageShape.parse(s["size"])
    if s.get("data", "synthetic") == "synthetic":
        return tuple(THING_CLASSES), lambda start: synthetic_instances(size, s["seed"], start, scenes=s["scenes"])
    dataset = open_instances(s["data"], "train")
    return tuple(dataset.classes), lambda start: dataset_instances(dataset, s["seed"], start)


def open_instances(spec: str, split: str):
    from edgeseg.data import open_dataset

    dataset = open_dataset(spec, split=split)
    if getattr(dataset, "task", None) != "instance":
        raise InputError(f"{spec} is not an instance dataset", fix="give coco-instance:PATH/instances_SPLIT.json or a YOLO-seg folder")
    return dataset


def build(s: dict, classes: tuple[str, ...], device: str = "cpu", workers: int = 0):
    import torch

    from edgeseg.models import create_model
    from edgeseg.models.registry import list_models, model_info
    from edgeseg.structures import InputSpec
    from edgeseg.train.instance import InstanceTrainConfig

    size = ImageShape.parse(s["size"])
    info = model_info(s["model"])
    if info.task != "instance" or info.arch != "solov2":  # before: an AttributeError ('num_grids') for Mask R-CNN
        solos = ", ".join(list_models("solov2_*"))
        what = "an instance model but not a SOLOv2 model" if info.task == "instance" else f"a {info.task} model"
        raise InputError(f"{s['model']} is {what}: this trainer trains SOLOv2 (Mask R-CNN has no trainer here)",
                         fix=f"--model one of {solos}")
    torch.manual_seed(s["seed"])
    model = create_model(s["model"], num_classes=len(classes), thing_classes=list(classes))
    if getattr(model, "task", "") != "instance":
        raise InputError(f"{s['model']} is not an instance model", fix="pick one of: edgeseg models --task instance")
    crop = ImageShape.parse(s["crop"]) if s.get("crop") else None
    cfg = InstanceTrainConfig(size=size, epochs=s["epochs"], steps_per_epoch=s["steps_per_epoch"], batch_size=s["batch"],
                              optimizer=s["optimizer"], lr=s["lr"], schedule=s["schedule"], warmup_steps=s["warmup"],
                              weight_decay=s["weight_decay"], seed=s["seed"], crop=crop,
                              cpu_precision=s.get("cpu_precision", "fp32"), memory_format=s.get("memory_format", "contiguous"),
                              copy_paste=s.get("copy_paste", 0.0), device=device, workers=workers)
    return model, cfg, InputSpec(size=size)


def evaluate(model, spec, s: dict, frames: int) -> dict | None:

    from edgeseg.train.instance import mask_iou_check, synthetic_instances, truth_instances

    if s.get("data", "synthetic") == "synthetic":
        held_out = synthetic_instances(spec.size, seed=s["seed"] + 1000, scenes=frames)  # scenes never trained on
    elif s.get("val_data"):
        dataset = open_instances(s["val_data"], "val")
        held_out = ((dataset[i].image(), truth_instances(dataset[i].truth, dataset.classes))
                    for i in range(min(frames, len(dataset))))
    else:
        return None
    return mask_iou_check(model, itertools.islice(held_out, frames), spec)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch

        from edgeseg.train.instance import InstanceTrainer

        torch.set_num_threads(max(1, args.threads))
        s = settings(args)
        out = Path(args.out)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(out / "train.log")])
        classes, stream = training_data(s)
        model, cfg, spec = build(s, classes, args.device, args.workers)
        if s.get("val_data") and args.eval_frames > 0:  # read now: a bad spec was found only after the training
            open_instances(s["val_data"], "val")
        trainer = InstanceTrainer(model, cfg, input_spec=spec, out_dir=out, model_name=s["model"])
        if s.get("init") and not args.resume:
            from edgeseg.models.folded import init_model_weights

            samples, b = stream(0), cfg.batch_size
            n = init_model_weights(model, s["init"], lambda: (trainer.prepare(list(itertools.islice(samples, b)), i * b)[0]
                                                              .to(trainer.device) for i in range(16)), what=s["model"])
            log.info("weights: all from %s (%d folded BatchNorms re-estimated on training crops)", s["init"], n)
        elif s.get("init_encoder") and not args.resume:
            from edgeseg.models.panoptic_deeplab import load_encoder_weights

            log.info("encoder: %d tensors from %s", load_encoder_weights(model, s["init_encoder"]), s["init_encoder"])
        params = sum(p.numel() for p in model.parameters())
        log.info("%s %s: %.2fM parameters, %d epochs x %d steps x batch %d, %s lr %g (%s)", s["model"], s["size"],
                 params / 1e6, cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.schedule)
        t0 = time.perf_counter()
        trainer.fit(stream, resume=out if args.resume else None,
                    on_epoch=lambda r: print(f"epoch {r.epoch:3d}  loss {r.loss:.4f}  category {r.category:.4f}  "
                                             f"mask {r.mask:.4f}  lr {r.lr:.3g}  {r.seconds:.0f}s", flush=True))
        log.info("trained in %.0fs (step: %s); weights %s", time.perf_counter() - t0, step_summary(trainer.precision),
                 out / "model.safetensors")
        if args.eval_frames > 0:
            report = evaluate(trainer.model.cpu(), spec, s, args.eval_frames)
            if report is not None:
                (out / "eval.json").write_text(json.dumps(report, indent=2))
                log.info("held-out check: %s", json.dumps(report))
    except EdgesegError as e:
        print(f"train_instance: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a signal: the trainers save the run after the step in progress
        from edgeseg.train.interrupt import TrainingStopped, report_stop

        if not isinstance(e, TrainingStopped):
            raise
        return report_stop("train_instance", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
