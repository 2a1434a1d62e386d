#!/usr/bin/env python
"""The prepared road run for a lent GPU (issue 14, docs/device.md): the road network trained from
scratch on CamVid and Cityscapes' training cities mixed, with the GPU's budget of image views.

On the device machine (after ``python tools/device/pack.py --task road`` and from a branch without
``edgeseg/zoo``): ``run(command="python3 tools/device/road.py", carry=[".device"], timeout_s=560)``

    python3 tools/device/road.py                          # the holdout arm, 450 s in all
    python3 tools/device/road.py --arms holdout,all       # both arms, half the budget each

Dry run here (CPU, tiny): ``python tools/device/road.py --device cpu --batch 2 --workers 1 --frames 8
--probe-steps 2 --budget-s 120 --size 96x72 --skip-ops``.

First, as in street.py, the CUDA op checks (``ops_gpu.py`` and ``pytest -m gpu tests/ops``, about
30 s of the budget; ``--skip-ops`` leaves them out).

The arms, one after the other (each with the GPU and every batch worker to itself; the budget left is
shared out evenly over the arms still to run), the same recipe on two training sets. By default only
**holdout** runs, with the whole budget: shared, a lease gives an arm about 100,000 image views (batch
making measured at 7 ms a sample on one core here; the GPU step at this size not yet), about what the CPU
recipes gave, so the first lease spends it on one schedule twice as long; ``all`` can follow:

* **holdout**: CamVid without sequence ``0006R0`` (266 frames, repeated so that CamVid is about half of
  every epoch) and the 2,074 Cityscapes frames; validated on ``0006R0`` during the run. Its figure on
  ``0006R0`` is the protocol's unseen-drive figure, and its best epoch there tells whether the schedule's
  end is its best.
* **all**: the same with all three CamVid drives (367 frames): once the holdout arm's schedule has shown
  what it gives, the candidate to ship (a third drive is a third of CamVid's camera diversity). Its
  ``0006R0`` figure is seen footage.

Each arm: a probe of two epochs of ``--probe-steps`` steps (the second times the step), then the run
with the whole epochs that fit in the arm's share, so its poly schedule ends at zero rather than
being cut off; a run still going at its limit is stopped and its last finished epoch kept. Back in
``$OUT``: ``summary.json``, per arm ``ARM.safetensors`` (the final weights), ``ARM-best.safetensors``
(the best epoch on ``0006R0``) and ``ARM-history.json``. Score them here on the unseen cities and on
``0006R0``: ``edgeseg export ARM.safetensors`` then ``python tools/bench/holdout.py``.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PACK, chosen_arms, default_workers, epochs_that_fit, machine, op_checks, output_dir, run_parser,
    run_until,
)

MODEL = "deeplabv3plus_mobilenetv3_small"
HOLDOUT = "0006R0"
# the arms: (the CamVid drives left out, times CamVid is repeated in an epoch); Cityscapes' 2,074 frames
# join each epoch once
ARMS = {
    "holdout": (HOLDOUT, 8),  # 8 x 266 = 2,128 against 2,074
    "all": (None, 6),  # 6 x 367 = 2,202
}
# the recipe: road-holdout's (tools/train_default.py) at the full 480x360 image and GPU batch size
RECIPE = ["--loss", "wce+0.5*lovasz", "--class-weighting", "enet", "--jitter", "0.4", "--scale", "0.5,2.0",
          "--weight-decay", "4e-5", "--momentum", "0.9", "--power", "0.9", "--cache", "--no-progress"]


def write_list(folder: Path, split: str, keep: int, per_sequence: bool = False) -> str:
    """``folder/{split}.txt``: the first ``keep`` lines of ``folder/train.txt`` (``per_sequence``: of each
    CamVid sequence); the probe's and the dry run's smaller sets, read with ``camvid:folder,split=SPLIT``."""
    lines = [ln for ln in (folder / "train.txt").read_text().splitlines() if ln.strip()]
    if per_sequence:
        count: dict[str, int] = {}
        kept = []
        for ln in lines:
            seq = Path(ln.split()[0]).stem.split("_", 1)[0]
            count[seq] = count.get(seq, 0) + 1
            if count[seq] <= keep:
                kept.append(ln)
        lines = kept
    (folder / f"{split}.txt").write_text("\n".join(lines[:len(lines) if per_sequence else keep]) + "\n")
    return split


def arm_data(arm: str, split: str = "train", pack: Path = PACK) -> str:
    """The arm's training spec: CamVid repeated, then Cityscapes (``split``: the dry run's list)."""
    left_out, repeat = ARMS[arm]
    camvid = f"camvid:{pack / 'road/camvid'},split={split}" + (f",exclude={left_out}" if left_out else "")
    return f"{repeat}*{camvid};camvid:{pack / 'road/cityscapes'},split={split}"


def val_data(split: str = "train", pack: Path = PACK) -> str:
    """The held-out drive: what the holdout arm selects on (seen footage for the all arm)."""
    return f"camvid:{pack / 'road/camvid'},split={split},sequences={HOLDOUT}"


def command(args, data: str, val: str, out: Path, epochs: int, eval_every: int) -> list[str]:
    return [sys.executable, "-m", "edgeseg", "train", MODEL, "--data", data, "--val-data", val, "--size", args.size, "--batch", str(args.batch), "--lr", str(args.lr),
            "--warmup", str(args.warmup), "--epochs", str(epochs), "--eval-every", str(eval_every), *RECIPE,
            "--device", args.device, "--workers", str(args.workers), "--threads", "2", "--seed", "0", "--out", str(out)]


def salvage(run: Path) -> Path | None:
    """``run/model.safetensors`` from the run's ``last.pt`` (its last finished epoch), when it has one
    and the run did not write its final weights."""
    if not (run / "last.pt").is_file() or (run / "model.safetensors").is_file():
        return None
    import torch

    from edgeseg.models import create_model
    from edgeseg.models.checkpoint import save_checkpoint

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    model = create_model(state["model_name"], state["num_classes"])
    model.load_state_dict(state["model"])
    return save_checkpoint(model, run / "model.safetensors", model_name=state["model_name"],
                           num_classes=state["num_classes"],
                           extra={"epoch": state["epoch"], "step": state["step"], "loss_spec": state["config"]["loss"],
                                  "stopped": "at the time limit"})


def _history(run: Path) -> list[dict]:
    hist = run / "history.json"
    return json.loads(hist.read_text())["history"] if hist.is_file() else []


def _train(arm: str, args, root: Path, data: tuple[str, str], epochs: int, eval_every: int, timeout: float) -> dict:
    t0 = time.time()
    shutil.rmtree(root / arm, ignore_errors=True)
    rc = run_until(command(args, *data, root / arm, epochs, eval_every), root / f"{arm}.log", timeout)
    if rc != 0:
        salvage(root / arm)
    return {"rc": rc, "wall_s": round(time.time() - t0, 1), "history": _history(root / arm),
            "log_tail": (root / f"{arm}.log").read_text()[-1500:]}


def main(argv: list[str] | None = None) -> int:
    p = run_parser(__doc__, ARMS, budget_s=450, batch=16, default_arms="holdout")
    p.add_argument("--lr", type=float, default=0.05, help="SGD base lr (default 0.05, road's recipe)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs (default 1)")
    p.add_argument("--size", default="480x360")
    p.add_argument("--evals", type=int, default=8, help="evaluations on 0006R0 over a run (default 8)")
    p.add_argument("--frames", type=int, default=0, help="dry runs: the first N frames of each set only")
    args = p.parse_args(argv)
    t_start = time.time()
    arms = chosen_arms(args.arms, ARMS, "road")
    if arms is None:
        return 2
    if not (PACK / "road/camvid/train.txt").is_file() or not (PACK / "road/cityscapes/train.txt").is_file():
        print(f"road: {PACK / 'road'} is not a road pack: run python tools/device/pack.py --task road and carry .device",
              file=sys.stderr)
        return 2
    args.workers = args.workers or default_workers()
    args.probe_steps = args.probe_steps or 8 * args.workers
    # the probe trains on the first Cityscapes frames (an epoch of --probe-steps steps) and checks on 2
    probe_data = (f"camvid:{PACK / 'road/cityscapes'},split={write_list(PACK / 'road/cityscapes', 'probe', args.probe_steps * args.batch)}",
                  f"camvid:{PACK / 'road/cityscapes'},split={write_list(PACK / 'road/cityscapes', 'probeval', 2)}")
    split = "train"
    if args.frames:  # a dry run: the first frames of each CamVid drive and of Cityscapes
        split = write_list(PACK / "road/camvid", "dry", args.frames, per_sequence=True)
        write_list(PACK / "road/cityscapes", "dry", args.frames)
    out = output_dir()
    work = Path("/tmp/edgeseg-device-road")
    summary: dict = {"machine": machine(), "recipe": RECIPE, "batch": args.batch, "lr": args.lr, "size": args.size,
                     "workers_per_arm": args.workers, "arms": {}, "probe": {}, "epochs": {}, "runs": {}}

    def save() -> None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    if not args.skip_ops:  # whichever prepared run a lease gets, issue 11's and 12's kernel checks come with it
        summary.update(op_checks(out))
        save()
    for i, arm in enumerate(arms):
        share = (args.budget_s - (time.time() - t_start)) / (len(arms) - i)
        t_arm = time.time()
        # the probe: two short epochs as the run makes them (the first fills the cache and starts the workers)
        probe = _train(arm, args, work / "probe", probe_data, 2, 100, timeout=share / 3)
        summary["probe"][arm] = probe
        save()
        steps = [h["steps"] for h in probe["history"]]
        if len(steps) < 2:
            print(f"road: arm {arm}'s probe failed:\n{probe['log_tail']}", file=sys.stderr)
            continue
        per_step = probe["history"][-1]["seconds"] / steps[-1]
        frames = _epoch_frames(arm_data(arm, split))
        steps_per_epoch = max(1, frames // args.batch)
        left = share - (time.time() - t_arm)
        # the run's own dataset cache and evaluations: about a tenth of the share, kept out of its epochs
        epochs = summary["epochs"][arm] = epochs_that_fit(per_step, steps_per_epoch, 0.9 * left)
        summary["arms"][arm] = {"data": arm_data(arm, split), "frames_per_epoch": frames,
                                "steps_per_epoch": steps_per_epoch, "seconds_per_step": round(per_step, 4)}
        run = summary["runs"][arm] = _train(arm, args, work / "runs", (arm_data(arm, split), val_data(split)), epochs,
                                            max(1, epochs // args.evals), timeout=left)
        save()
        for name, dst in (("model.safetensors", f"{arm}.safetensors"), ("best.safetensors", f"{arm}-best.safetensors"),
                          ("history.json", f"{arm}-history.json")):
            src = work / "runs" / arm / name
            if src.is_file():
                shutil.copy2(src, out / dst)
        print(json.dumps({arm: {"epochs": epochs, "rc": run["rc"], "wall_s": run["wall_s"],
                                "miou_0006R0": [None if h.get("miou") is None else round(100 * h["miou"], 2)
                                                for h in run["history"]]}}), flush=True)
    summary["wall_s"] = round(time.time() - t_start, 1)
    save()
    return 0 if all(summary["runs"].get(a, {}).get("rc") == 0 for a in arms) else 1


def _epoch_frames(spec: str) -> int:
    """Frames in one epoch of a training spec."""
    from edgeseg.data.base import open_semantic_dataset

    return len(open_semantic_dataset(spec, split="train"))


if __name__ == "__main__":
    sys.exit(main())
