"""The generic training step and evaluation pass: model, loss, optimizer, data — nothing else.

These functions are what :class:`edgeseg.train.Trainer` runs each epoch, and what quantization-aware
fine-tuning reuses with a fake-quantized model. A model returns ``{"logits": [N, C, H, W]}`` (the
edgeseg model contract) or a bare tensor; logits smaller than the target are upsampled bilinearly.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import InputError
from .precision import autocast_for, to_memory_format, train_forward

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .optim import PolySchedule


@dataclass(frozen=True)
class EpochResult:
    """What one pass over the training data did: mean loss, optimizer steps, seconds, last lr."""

    loss: float
    steps: int
    seconds: float
    lr: float


def logits_of(output: Any, size: tuple[int, int] | None = None) -> "torch.Tensor":
    """The logits tensor of a model output, resized to ``size`` (H, W) when it differs."""
    import torch
    import torch.nn.functional as F

    t = output["logits"] if isinstance(output, dict) else output
    if not isinstance(t, torch.Tensor) or t.ndim != 4:
        raise InputError(
            f"model output must be {{'logits': [N, C, H, W]}} or a 4-D tensor, got {type(output).__name__}",
            fix="make forward(images) return {'logits': tensor}",
        )
    if size is not None and tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t


def auxiliary_loss(model: Any, output: Any, loss_fn: Callable, target: "torch.Tensor") -> Any:
    """Deep supervision: in training mode a model may add ``"aux_logits"`` (a list of ``[N, C, h, w]``
    tensors, e.g. PSPNet's auxiliary head or UNet++'s nested outputs) to its output; each is scored
    at the target's size with the same loss and the mean is weighted by ``model.aux_weight``
    (default 0.4, PSPNet's). Eval-mode outputs never carry them, so exported graphs are unchanged."""
    aux = output.get("aux_logits") if isinstance(output, dict) else None
    if not aux:
        return 0.0
    size = tuple(target.shape[-2:])
    losses = [loss_fn(logits_of(a, size).float(), target) for a in aux]
    return float(getattr(model, "aux_weight", 0.4)) * sum(losses) / len(losses)


def train_one_epoch(
    model: "torch.nn.Module",
    batches: Iterable,
    loss_fn: Callable,
    optimizer: "torch.optim.Optimizer",
    *,
    device: "torch.device",
    schedule: "PolySchedule | None" = None,
    step: int = 0,
    scaler: Any = None,
    amp: bool = False,
    grad_clip: float | None = None,
    progress: Any = None,
    cpu_bf16: bool = False,
    channels_last: bool = False,
    distill: tuple[float, float] | None = None,
    after_step: Callable[[int, float], bool] | None = None,
) -> EpochResult:
    """One epoch: forward, loss, backward, optimizer step; the schedule is set from the global ``step``.
    ``cpu_bf16``: the forward pass under bfloat16 autocast on the CPU; ``channels_last``: the images in
    channels-last layout, like the model (:mod:`edgeseg.train.precision`). ``distill``: ``(weight,
    temperature)`` when batches carry teacher probabilities as a third element
    (:func:`edgeseg.train.distill.distill_loss` is added to the loss).

    ``progress`` is an optional tqdm bar (updated per batch with the running loss and lr).
    ``after_step(steps, loss_sum)`` is called after each step with the steps done so far and the sum of
    their losses; when it returns true the epoch ends there (a stop asked for by a signal).
    """
    model.train()
    total, n, t0, lr = 0.0, 0, time.perf_counter(), optimizer.param_groups[0]["lr"]
    for batch in batches:
        images, target, soft = batch if len(batch) == 3 else (*batch, None)
        if schedule is not None:
            schedule.apply(optimizer, step + n)
        lr = optimizer.param_groups[0]["lr"]
        images = to_memory_format(images.to(device, non_blocking=True), channels_last)
        target = target.to(device, non_blocking=True)
        with autocast_for(device, amp, cpu_bf16):
            output = train_forward(model, images)
            logits = logits_of(output, tuple(target.shape[-2:]))
        loss = loss_fn(logits.float(), target) + auxiliary_loss(model, output, loss_fn, target)
        if distill is not None and soft is not None:
            from .distill import distill_loss

            loss = loss + distill[0] * distill_loss(logits.float(), soft.to(device, non_blocking=True), target, distill[1])
        if not math.isfinite(float(loss.detach())):
            raise InputError(
                f"training diverged: loss is {float(loss.detach())} at step {step + n}",
                fix="lower the learning rate (--lr) or add warm-up",
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                _clip(model, grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip:
                _clip(model, grad_clip)
            optimizer.step()
        total += float(loss.detach())
        n += 1
        if progress is not None:
            progress.set_postfix(loss=f"{total / n:.4f}", lr=f"{lr:.2e}", refresh=False)
            progress.update(1)
        if after_step is not None and after_step(n, total):
            break
    if n == 0:
        raise InputError("the training set gave no batch", fix="use a smaller --batch or more training images")
    return EpochResult(total / n, n, time.perf_counter() - t0, float(lr))


def _clip(model, max_norm: float) -> None:
    import torch

    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def evaluate_model(
    model: "torch.nn.Module",
    batches: Iterable,
    num_classes: int,
    *,
    device: "torch.device",
    amp: bool = False,
    ignore_index: int = 255,
    boundary: bool = False,
    classes: tuple[str, ...] = (),
    progress: Any = None,
    should_stop: Callable[[], bool] | None = None,
):
    """mIoU & co. with :class:`edgeseg.eval.SemanticMetric`; logits are upsampled to each label map's size.

    ``boundary`` also scores boundary F1 (slower; off for per-epoch evaluation). ``should_stop``: asked
    before each batch; when it answers true the pass ends early and None is returned."""
    import numpy as np
    import torch

    from ..eval import SemanticMetric

    metric = SemanticMetric(num_classes, ignore_index=ignore_index, boundary=boundary, classes=tuple(classes))
    model.eval()
    with torch.inference_mode():
        for images, labels in batches:
            if should_stop is not None and should_stop():
                return None
            with autocast_for(device, amp):
                out = model(images.to(device))
            logits = logits_of(out).float()
            for i, gt in enumerate(labels):
                li = logits_of(logits[i : i + 1], tuple(gt.shape))
                pred = li.argmax(1)[0].to("cpu").numpy().astype(np.uint8)
                metric.update(pred, np.asarray(gt))
            if progress is not None:
                progress.update(1)
    return metric.compute()
