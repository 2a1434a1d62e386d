"""``edgeseg train``: train a registered model on a labelled dataset, resumably, and optionally export it."""
from __future__ import annotations

import argparse
import shlex
import sys

from ..train.precision import add_precision_options
from ._common import add_json_option, write_json

NAME = "train"
HELP = "train a model from the family on a labelled dataset (CE/Lovasz/..., SGD + poly, checkpoints, resume)"
EXAMPLES = (
    "edgeseg train deeplabv3plus_mobilenetv2 --data camvid:../shared/data/camvid --epochs 100 --out runs/road",
    "edgeseg train deeplabv3plus_mobilenetv2 --data camvid:../shared/data/camvid --epochs 100 --out runs/road --resume",
    "edgeseg train deeplabv3plus_mobilenetv3_small --data '4*camvid:../shared/data/camvid,exclude=0006R0;"
    "cityscapes-camvid:../shared/data/cityscapes_panoptic' --val-data camvid:../shared/data/camvid,split=train,sequences=0006R0 "
    "--epochs 20 --out runs/mixed",
    "edgeseg train test_fcn8s --data synthetic:200,size=160x120 --size 160x120 --epochs 5 --out runs/shapes "
    "--loss ce+0.5*lovasz --export shapes.edgeseg",
    "edgeseg train deeplabv3plus_mobilenetv2 --data camvid:../shared/data/camvid --epochs 30 --lr 0.01 "
    "--init runs/road/model.safetensors --crop 384x288 --out runs/road-ft   # fine-tune",
    "edgeseg train deeplabv3plus_mobilenetv3_small --data camvid:MY_FRAMES --epochs 10 --lr 0.005 "
    "--init road --crop 256x192 --out runs/my-road   # fine-tune a shipped bundle",
    "edgeseg train pspnet_resnet18 --encoder hrnetv2_w18_small --data camvid:../shared/data/camvid --epochs 30 "
    "--out runs/psp-hrnet   # any decoder on HRNetV2 (edgeseg models --encoders)",
    "edgeseg train deeplabv3plus_mobilenetv3_small --data camvid:MY_FRAMES --epochs 1 --lr 0.001 --rare-sampling 0.01 "
    "--init road --out runs/my-road-rare   # rare classes drawn more often (poles, bicyclists)",
    "edgeseg train deeplabv3plus_mobilenetv3_small --data camvid:MY_FRAMES --epochs 1 --lr 0.001 --copy-paste 0.5 "
    "--init road --out runs/my-road-paste   # rare classes' pixels pasted from other frames",
    "edgeseg train deeplabv3plus_mobilenetv3_small --data '8*camvid:../shared/data/camvid;cityscapes-camvid:"
    "../shared/data/cityscapes_panoptic' --epochs 1 --lr 0.001 --init road --teacher 'none;road+street-semantic' "
    "--teacher-flip --out runs/road-kd   # distil an ensemble into road on the Cityscapes frames",
    "edgeseg train deeplabv3plus_mobilenetv3_small --data panoptic-semantic:../shared/data/cityscapes_panoptic "
    "--size 640x320 --epochs 3 --lr 0.005 --init road --out runs/street-sem   "
    "# 19 new classes from road's body (then: edgeseg fuse it with an instance model)",
)


def _init_path(value: str):
    """``--init``: a file or bundle path, or the name of a shipped bundle (``road``) when no such path exists."""
    from pathlib import Path

    from ..paths import shipped_bundle

    path = Path(value)
    return path if path.exists() else (shipped_bundle(value) or path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model name (see 'edgeseg models')")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="camvid:ROOT[,exclude=SEQ] | cityscapes:ROOT[,classes=camvid] (as downloaded) | "
                        "cityscapes-camvid:DIR | panoptic-semantic:DIR (a COCO-panoptic "
                        "dataset's label maps, all categories) | folder:IMAGES_DIR,MASKS_DIR[,...] | "
                        "synthetic:N[,seed=S,size=WxH]; several joined with ';', K* repeats one (4*camvid:R;cityscapes-camvid:D)")
    p.add_argument("--val-data", default=None, metavar="SPEC", help="validation dataset spec (default: --data)")
    p.add_argument("--train-split", default="train", help="split of --data to train on (default train)")
    p.add_argument("--val-split", default="val", help="split to evaluate on (default val)")
    p.add_argument("--epochs", type=int, required=True, help="number of epochs")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder: last.pt (resume), best/model weights, history.json")
    p.add_argument("--size", default="480x360", metavar="WxH", help="network input size (default 480x360)")
    p.add_argument("--crop", default=None, metavar="WxH",
                   help="train on random crops of this size from the --size image (cheaper steps; default: no crop)")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these weights with a fresh schedule (fine-tuning): a safetensors or state-dict .pt "
                        "checkpoint, or an exported model.onnx / .edgeseg bundle (or a shipped bundle's name) of the same model (its folded BatchNorms "
                        "are re-estimated on 16 training batches); trained for other classes, its class layers start afresh")
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--lr", type=float, default=0.01, help="base learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4, help="on conv/linear weights only (default 1e-4)")
    p.add_argument("--warmup", type=float, default=1.0, metavar="EPOCHS", help="linear warm-up length in epochs (default 1)")
    p.add_argument("--power", type=float, default=0.9, help="poly schedule power (default 0.9)")
    p.add_argument("--loss", default="ce", help="loss spec, e.g. ce, wce, focal, dice, lovasz, ce+0.5*lovasz (default ce)")
    p.add_argument("--class-weighting", default="enet", choices=["enet", "median"], help="class weights for wce")
    p.add_argument("--scale", default="0.5,2.0", metavar="MIN,MAX", help="random scale range (default 0.5,2.0)")
    p.add_argument("--jitter", type=float, default=0.25, help="colour jitter amplitude (default 0.25; 0 turns it off)")
    p.add_argument("--aspect", type=float, default=0.0,
                   help="random aspect change A: frames stretched by up to 1+A in width or height, area kept "
                        "(for other cameras' frame shapes; default 0: off)")
    p.add_argument("--rare-sampling", type=float, default=0.0, metavar="T",
                   help="rare-class sampling: draw each frame by first drawing a class, rare ones more often, at "
                        "temperature T (DAFormer's 0.01; larger is closer to uniform over classes; default 0: "
                        "a uniform shuffle)")
    p.add_argument("--copy-paste", type=float, default=0.0, metavar="P",
                   help="rare-class copy-paste: with probability P a frame gets the pixels of the rare classes (below "
                        "a uniform share of the labelled pixels) of another training frame pasted on it (default 0: off)")
    p.add_argument("--paste-classes", default=None, metavar="NAMES",
                   help="comma-separated class names copy-paste pastes instead of the rare ones, e.g. "
                        "pole,sign_symbol,pedestrian,bicyclist")
    p.add_argument("--teacher", default=None, metavar="SPEC",
                   help="distil from teacher bundles: a bundle (path or shipped name) or an ensemble joined with '+' "
                        "(probabilities averaged), for every frame or one per ';'-separated part of --data ('none': no "
                        "teacher), e.g. 'none;road+street-semantic'; classes mapped by name or Cityscapes->CamVid")
    p.add_argument("--distill-weight", type=float, default=1.0, metavar="W",
                   help="weight of the distillation term W*T^2*KL(teacher||student) (default 1)")
    p.add_argument("--distill-temperature", type=float, default=1.0, metavar="T", help="softmax temperature (default 1)")
    p.add_argument("--teacher-flip", action="store_true",
                   help="average each teacher over the frame and its mirror image (twice the teacher's time)")
    p.add_argument("--eval-every", type=int, default=1, metavar="K", help="evaluate every K epochs and at the end")
    p.add_argument("--num-classes", type=int, default=None, help="model outputs (default: the dataset's classes)")
    p.add_argument("--encoder", default=None, metavar="NAME",
                   help="build the model on another registered encoder, e.g. hrnetv2_w18_small "
                        "(names: edgeseg models --encoders)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt (also from inside an epoch: Ctrl-C or SIGTERM "
                        "stops after the step in progress and saves the run)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                   help="also write last.pt inside an epoch every M minutes (default 10; 0: at epoch ends only)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds another run (its last.pt, weights and history are removed "
                        "first), and let --export replace an existing bundle; without it either is refused")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu); mixed precision on cuda")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    add_precision_options(p)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op CPU threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", action="store_true", help="decode the datasets once and keep them in memory")
    p.add_argument("--weights-format", default="safetensors", choices=["safetensors", "pt"])
    p.add_argument("--export", default=None, metavar="BUNDLE", help="export the trained model to this bundle (FP32)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) and no progress lines (when stderr is a file)")
    add_json_option(p)


def _scale(text: str) -> tuple[float, float]:
    from ..errors import InputError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--scale {text!r}: write MIN,MAX, e.g. 0.5,2.0") from None
    return lo, hi


def build_job(args: argparse.Namespace):
    from pathlib import Path

    from ..structures import ImageShape
    from ..train.job import TrainJob
    from ..train.trainer import TrainConfig

    size = ImageShape.parse(args.size)
    config = TrainConfig(
        epochs=args.epochs, size=size, batch_size=args.batch, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, poly_power=args.power, warmup_epochs=args.warmup, loss=args.loss,
        class_weighting=args.class_weighting, scale=_scale(args.scale), jitter=args.jitter, aspect=args.aspect,
        rare_sampling=args.rare_sampling, copy_paste=args.copy_paste,
        paste_classes=tuple(c.strip() for c in args.paste_classes.split(",") if c.strip()) if args.paste_classes else None,
        teacher=args.teacher, distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
        teacher_flip=args.teacher_flip,
        eval_every=args.eval_every, seed=args.seed, workers=args.workers, device=args.device, amp=not args.no_amp,
        cpu_precision=args.cpu_precision, memory_format=args.memory_format,
        threads=args.threads, progress=not args.no_progress, checkpoint_minutes=args.checkpoint_minutes,
        weights_format=args.weights_format, crop=ImageShape.parse(args.crop) if args.crop else None,
    )
    if config.device != "cpu":  # a GPU asked for is checked before the data is read
        from ..train.trainer import resolve_device

        resolve_device(config.device)
    export = Path(args.export) if args.export else None
    return TrainJob(
        model=args.model, data=args.data, out=Path(args.out), config=config, val_data=args.val_data,
        train_split=args.train_split, val_split=args.val_split, num_classes=args.num_classes, export=export,
        cache=args.cache, init=_init_path(args.init) if args.init else None,
        model_kwargs={"encoder": args.encoder} if args.encoder else {}, command="edgeseg " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "",
        overwrite=args.overwrite,
    )


def run(args: argparse.Namespace) -> int:
    from ..train.job import run_job

    job = build_job(args)
    if args.json:  # found unwritable after the training, the run's record would be lost (an audit: exit 2 at the end)
        from ._common import check_output

        check_output(args.json, "--json")
    try:
        res = run_job(job, resume=args.resume)
    except KeyboardInterrupt as e:
        from ..train.interrupt import TrainingStopped, report_stop
        from ..train.trainer import LAST

        if isinstance(e, TrainingStopped):
            return report_stop("edgeseg train", e)
        if (job.out / LAST).is_file():  # the last finished epoch is kept: say how to go on from it
            print(f"edgeseg train: {job.out / LAST} holds the run up to its last checkpoint; continue with the same command "
                  "plus --resume", file=sys.stderr)
        else:  # an audit: a second Ctrl-C before any checkpoint, and the user tried --resume to learn there was none
            print(f"edgeseg train: stopped before its first checkpoint: nothing was saved in {job.out} (run the command "
                  "again, without --resume)", file=sys.stderr)
        raise
    rec = res.training_record
    final = rec["final"]
    miou = "n/a" if final["miou"] is None else f"{100 * final['miou']:.2f}"
    print(f"trained {job.model}: {rec['epochs']} epochs in {rec['seconds_total']:.0f} s on {rec['device']}, "
          f"final loss {final['loss']:.4f}, val mIoU {miou}")
    print(f"  run folder: {job.out} (resume with the same command plus --resume)")
    if res.bundle is not None:
        b = res.bundle_scores or {}
        print(f"  bundle: {res.bundle} (ONNX Runtime FP32 mIoU {100 * (b.get('miou') or 0):.2f})")
    write_json(args.json, {"training": rec, "bundle": None if res.bundle is None else str(res.bundle),
                           "bundle_accuracy": res.bundle_scores})
    return 0
