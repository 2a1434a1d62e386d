"""Train V-Net on synthetic volumes (edgeseg.data.synthetic_volumes) with the paper's Dice loss.

    python tools/train_vnet.py --out runs/vnet --steps 300                 # the paper's V-Net
    python tools/train_vnet.py --out runs/vnet --resume                    # continue after an interruption
    python tools/train_vnet.py --model test_vnet --steps 20 --shape 16x32x32 --out /tmp/v

Every step draws ``--batch`` new volumes of stream ``--seed`` (volumes ``step * batch ...``), so a
resumed run sees the volumes an uninterrupted one would; the held-out Dice is scored on stream
``--seed + 1000`` (never trained on). The run folder gets ``run.json`` (settings; ``--resume``
reuses them), ``last.pt`` (every ``--save-every`` steps), ``history.json``, ``train.log`` and, at
the end, ``model.safetensors`` (an edgeseg checkpoint). INT8 and the table row:
``tools/bench/vnet_int8.py runs/vnet/model.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeseg.errors import InputError  # noqa: E402

HELD_OUT_OFFSET = 1000  # the held-out stream's seed is the training seed + this


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vnet", help="a registered volumetric model (default vnet)")
    p.add_argument("--shape", default="32x64x64", help="volume size DxHxW, multiples of 16 (default 32x64x64)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4,
                   help="Adam learning rate, cosine to 0 (default 1e-4: at 1e-3 the paper's V-Net diverges)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-volumes", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    return p.parse_args(argv)


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        d, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--shape {text!r} is not DxHxW", fix="e.g. --shape 32x64x64") from None
    if any(v <= 0 or v % 16 for v in (d, h, w)):
        raise InputError(f"--shape {text}: every axis must be a positive multiple of 16 (V-Net halves four times)",
                         fix="e.g. --shape 32x64x64")
    return d, h, w


def held_out_dice(model, volumes: np.ndarray, labels: np.ndarray) -> float:
    """Mean foreground Dice (hard labels, %) of ``model`` on held-out volumes."""
    import torch

    from edgeseg.eval.volumetric import dice_score

    model.eval()
    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(v[None]))["logits"].numpy() for v in volumes])
    model.train()
    return dice_score(logits.argmax(1), labels)


def main(argv=None) -> int:
    from edgeseg.cli._common import run_tool

    return run_tool("train_vnet", train, parse_args(argv))


def train(args: argparse.Namespace) -> int:
    import torch

    from edgeseg.data.synthetic_volumes import synthetic_volumes
    from edgeseg.models import create_model
    from edgeseg.models.checkpoint import save_checkpoint
    from edgeseg.models.vnet import dice_loss

    out = Path(args.out)
    if args.resume:
        if not (out / "run.json").is_file():
            raise InputError(f"--resume: {out} holds no run.json (no run was started there)",
                             fix="start the run without --resume, or point --out at the run folder")
        saved = json.loads((out / "run.json").read_text())
        for key in ("model", "shape", "steps", "batch", "lr", "seed", "eval_volumes", "eval_every"):
            setattr(args, key, saved[key])
    shape = parse_shape(args.shape)
    if args.threads:
        torch.set_num_threads(args.threads)
    # denormal gradients slow V-Net's backward pass up to 5x on the CPU (steps of 25-40 s instead of
    # 6-8 at 32x64x64); flushing them to zero leaves the losses unchanged to the third decimal
    torch.set_flush_denormal(True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps({k: v for k, v in vars(args).items() if k != "resume"}, indent=2))
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, args.steps) / args.steps)))
    step, history = 0, []
    if args.resume and (out / "last.pt").exists():
        state = torch.load(out / "last.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
    val_x, val_y = synthetic_volumes(args.seed + HELD_OUT_OFFSET, args.eval_volumes, shape)
    log = (out / "train.log").open("a")

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    say(f"training {args.model} on synthetic volumes {args.shape} from step {step} to {args.steps}")
    t0, losses = time.time(), []
    model.train()
    while step < args.steps:
        x, y = synthetic_volumes(args.seed, args.batch, shape, start=step * args.batch)
        loss = dice_loss(model(torch.from_numpy(x))["logits"], torch.from_numpy(y.astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        losses.append(float(loss.detach()))
        if step % args.eval_every == 0 or step == args.steps:
            dice = held_out_dice(model, val_x, val_y)
            history.append({"step": step, "loss": float(np.mean(losses)), "held_out_dice": dice,
                            "seconds": round(time.time() - t0, 1)})
            say(f"step {step}/{args.steps} loss {np.mean(losses):.4f} held-out Dice {dice:.2f} ({time.time() - t0:.0f} s)")
            losses = []
        if step % args.save_every == 0 or step == args.steps:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "step": step, "history": history}, out / "last.pt.tmp")
            (out / "last.pt.tmp").replace(out / "last.pt")
    save_checkpoint(model, out / "model.safetensors", model_name=args.model, num_classes=2,
                    extra={"task": "volumetric", "shape": list(shape), "data": f"synthetic-volumes seed {args.seed}"})
    (out / "history.json").write_text(json.dumps(history, indent=2))
    say(f"saved {out / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
