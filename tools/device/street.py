#!/usr/bin/env python
"""The prepared street run (docs/device.md): CUDA op parity, then street-model arms trained one after
the other on one GPU, each for as many epochs as its share of the time budget holds: SOLOv2
``street-instance`` (arms a, b; issue 11) and Panoptic-DeepLab ``street-panoptic`` (arm p; issue 12).

On the device machine (``run(command="python3 tools/device/street.py --arms a", carry=[".device"],
timeout_s=560)``, after ``python tools/device/pack.py`` (``--task panoptic`` for arm p, ``--task
instance,panoptic`` for both kinds) and from a branch without ``edgeseg/zoo``):

    python3 tools/device/street.py --arms a --budget-s 480
    python3 tools/device/street.py --arms p --budget-s 480

Dry run here (CPU, tiny): ``python tools/device/street.py --arms a,p --device cpu --batch 2 --workers 1
--steps-per-epoch 2 --probe-steps 2 --budget-s 90 --skip-ops``.

1. ``tools/bench/ops_gpu.py``: RoIAlign and modulated deformable convolution against torchvision
   (parity and timing, issues 11 and 12), ``ops_gpu.json``; then ``pytest -m gpu tests/ops`` (the kernels'
   GPU tests; its outcome in ``summary.json["ops_tests"]``).
2. Per arm, in turn (each with the GPU and every batch worker to itself; the budget left is shared out
   evenly over the arms still to run): a probe of two epochs of ``--probe-steps`` steps, as the run will
   make them (the second epoch times the step: the first carries the start; its steps must outnumber the
   batches the loader's workers make ahead (``WORKER_READ_AHEAD`` per worker), or it times the queue, not the workers),
   gives its seconds per step; then the run, with the whole epochs that fit in the arm's share (the
   cosine schedule over exactly those epochs, so it ends annealed instead of being cut off). An arm
   still running at its limit is stopped and its last finished epoch kept.

Everything lands in ``$OUT`` (at most 8 files come back): ``summary.json`` (machine, probe, epochs, losses,
wall times), ``ops_gpu.json``, and per arm ``ARM.safetensors`` and ``ARM-history.json``. Score them on
the CPU: ``tools/make_instance_bundle.py a.safetensors --eval coco-instance:.../instances_val.json``;
``edgeseg export p.safetensors --out P.edgeseg`` then ``edgeseg eval P.edgeseg --data coco-panoptic:.../panoptic_val.json``.
"""
from __future__ import annotations

import gzip
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PACK, REPO, chosen_arms, default_workers, epochs_that_fit, machine, op_checks, output_dir, run_parser,
    run_until,
)

# the arms: (training tool, its settings on top of those _command gives every arm: data, sizes, batch,
# schedule, device); at batch 32 the lr is scaled from the CPU recipes' 1e-3 at batch 8
ARMS = {
    # the shipped model, continued on a long schedule with Simple Copy-Paste (whose gains grow with the schedule)
    "a": ("train_instance", ["--model", "solov2_mobilenetv3_small", "--init", str(PACK / "init/street-instance.onnx"),
                             "--lr", "1e-3", "--warmup", "200", "--copy-paste", "0.5"]),
    # twice the parameters (MobileNetV2 encoder, no pre-trained weights here), from scratch
    "b": ("train_instance", ["--model", "solov2_mobilenetv2", "--lr", "2e-3", "--warmup", "300", "--copy-paste", "0.5"]),
    # issue 12: the shipped Panoptic-DeepLab (9 CPU epochs of 8 crops) continued at the paper's Adam 1e-3 at batch 32
    "p": ("train_panoptic", ["--model", "panoptic_deeplab_mobilenetv3_small", "--init", str(PACK / "init/street-panoptic.onnx"),
                             "--lr", "1e-3", "--warmup", "200", "--checkpoint-every", "0", "--log-every", "0"]),
}
# each tool's training truth in the pack (gzipped there, unpacked here) and its data argument
TRUTH = {"train_instance": "instances_train.json", "train_panoptic": "panoptic_train.json"}


def data_args(tool: str) -> list[str]:
    truth = PACK / "cityscapes" / TRUTH[tool]
    return ["--data", f"coco-instance:{truth}", "--optimizer", "adamw"] if tool == "train_instance" else ["--data", str(truth.parent)]


def _command(arm: str, args, out: Path, epochs: int, steps: int) -> list[str]:
    tool, settings = ARMS[arm]
    return [sys.executable, str(REPO / f"tools/{tool}.py"), *settings, *data_args(tool), "--size", "640x320",
            "--crop", "512x256", "--batch", str(args.batch), "--schedule", "cosine",
            "--epochs", str(epochs), "--steps-per-epoch", str(steps), "--device", args.device,
            "--workers", str(args.workers), "--threads", "2", "--eval-frames", "0", "--seed", "1", "--out", str(out)]


def _train(arm: str, args, root: Path, epochs: int, steps: int, timeout: float) -> dict:
    """Run one arm; its exit code, wall seconds and history. An arm still running at ``timeout`` is
    stopped and its last finished epoch (``last.pt``) kept as ``model.safetensors``."""
    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / arm, ignore_errors=True)
    rc = run_until(_command(arm, args, root / arm, epochs, steps), root / f"{arm}.log", timeout)
    if rc != 0 and ARMS[arm][0] == "train_instance":  # the panoptic trainer writes its weights every epoch
        salvage(root / arm)
    hist = root / arm / "history.json"
    return {"rc": rc, "wall_s": round(time.time() - t0, 1),
            "history": json.loads(hist.read_text())["history"] if hist.is_file() else [],
            "log_tail": (root / f"{arm}.log").read_text()[-1500:]}


def salvage(run: Path) -> Path | None:
    """``run/model.safetensors`` from the run's ``last.pt`` (the last finished epoch), when it has one:
    the run's own trainer, resumed from it, writes its weights as a finished run would."""
    if not (run / "last.pt").is_file() or (run / "model.safetensors").is_file():
        return None
    sys.path.insert(0, str(REPO / "tools"))
    from train_instance import build, training_data

    from edgeseg.train.instance import InstanceTrainer

    s = json.loads((run / "run.json").read_text())
    classes, _ = training_data(s)
    model, cfg, spec = build(s, classes)
    trainer = InstanceTrainer(model, cfg, input_spec=spec, out_dir=run, model_name=s["model"])
    trainer.load(run)
    return trainer.save_weights()


def main(argv: list[str] | None = None) -> int:
    p = run_parser(__doc__, ARMS, budget_s=400, batch=32)
    p.add_argument("--steps-per-epoch", type=int, default=0, help="default: one pass over the frames")
    args = p.parse_args(argv)
    t_start = time.time()
    arms = chosen_arms(args.arms, ARMS, "street")
    if arms is None:
        return 2
    out = output_dir()
    work = Path("/tmp/edgeseg-device")
    work.mkdir(parents=True, exist_ok=True)
    frames = 0
    for tool in sorted({ARMS[a][0] for a in arms}):  # the arms' truth, unpacked once
        truth = PACK / "cityscapes" / TRUTH[tool]
        if not truth.is_file():
            gz = truth.with_name(truth.name + ".gz")
            if not gz.is_file():
                task = "instance" if tool == "train_instance" else "panoptic"
                print(f"street: {gz} not found: run python tools/device/pack.py --task {task} (or instance,panoptic) "
                      "and carry .device", file=sys.stderr)
                return 2
            truth.write_bytes(gzip.decompress(gz.read_bytes()))
        frames = len(json.loads(truth.read_text())["images"])  # the same 2,074 frames for both
    steps = args.steps_per_epoch or max(1, frames // args.batch)
    args.workers = args.workers or default_workers()
    from edgeseg.train.step_batches import WORKER_READ_AHEAD

    args.probe_steps = args.probe_steps or 2 * WORKER_READ_AHEAD * args.workers  # twice what the workers make ahead

    summary: dict = {"machine": machine(),
                     "arms": {a: ARMS[a] for a in arms}, "batch": args.batch, "workers_per_arm": args.workers,
                     "frames": frames, "steps_per_epoch": steps}

    def save() -> None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    if not args.skip_ops:
        summary.update(op_checks(out))
        save()
    summary["probe"], summary["epochs"], summary["runs"] = {}, {}, {}
    for i, arm in enumerate(arms):  # one after the other: each arm has the GPU and every worker to itself
        share = (args.budget_s - (time.time() - t_start)) / (len(arms) - i)
        t_arm = time.time()
        # two probe epochs: the first carries the start (CUDA context, kernels chosen, workers' first batches);
        # session 31's 30-step probe timed the 56 batches made ahead: 0.078 s a step against the run's 0.117
        probe = _train(arm, args, work / "probe", 2, args.probe_steps, timeout=share / 3)
        summary["probe"][arm] = probe
        save()
        if not probe["history"]:
            print(f"street: arm {arm}'s probe failed:\n{probe['log_tail']}", file=sys.stderr)
            continue
        left = share - (time.time() - t_arm)
        epochs = summary["epochs"][arm] = epochs_that_fit(probe["history"][-1]["seconds"] / args.probe_steps, steps, left)
        run = summary["runs"][arm] = _train(arm, args, work / "runs", epochs, steps, timeout=left)
        save()
        for name, dst in (("model.safetensors", f"{arm}.safetensors"), ("history.json", f"{arm}-history.json")):
            src = work / "runs" / arm / name
            if src.is_file():
                shutil.copy2(src, out / dst)
        print(json.dumps({arm: {"epochs": epochs, "rc": run["rc"], "wall_s": run["wall_s"],
                                "loss": [round(h["loss"], 4) for h in run["history"]][-3:]}}), flush=True)
    summary["wall_s"] = round(time.time() - t_start, 1)
    save()
    return 0 if all(summary["runs"].get(a, {}).get("rc") == 0 for a in arms) else 1


if __name__ == "__main__":
    sys.exit(main())
