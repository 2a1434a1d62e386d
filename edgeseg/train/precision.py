"""Training precision on the CPU: float32, or bfloat16 autocast where the CPU computes in bf16.

CPUs with AMX or AVX-512 BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) run
convolutions and matrix products in bf16 through oneDNN. Under ``torch.autocast("cpu",
dtype=torch.bfloat16)`` a training step of a ResNet-18 DeepLabV3+ ran 1.9x faster than in float32
on the Intel Xeon with AMX these sessions used, a MobileNetV3 one 1.3x (depthwise convolutions are
memory-bound). On a CPU without native bf16 it is slower. So ``cpu_precision="auto"`` times both on
the run's own model and first batch, on the device that trains, and keeps bf16 only when it is at
least :data:`MIN_GAIN` faster; ``"bf16"`` forces it (refused on a CPU without native bf16); the
default ``"fp32"`` never changes anything. The loss, the optimiser, the weights and evaluation stay
float32: autocast only lowers the precision of the operations it lists (convolutions, matrix
products), so the accuracy cost is that of bf16 activations (measured in docs/models.md).
"""
from __future__ import annotations

import copy
import logging
import time
from contextlib import nullcontext
from typing import Any, Callable

from ..errors import InputError

log = logging.getLogger(__name__)
CPU_PRECISIONS = ("fp32", "bf16", "auto")
MIN_GAIN = 1.15  # auto keeps bf16 only when a step is at least this much faster


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_cpu_precision(value: str) -> None:
    if value not in CPU_PRECISIONS:
        raise InputError(f"cpu_precision must be one of {', '.join(CPU_PRECISIONS)}, got {value!r}")


def autocast_for(device: Any, amp: bool, cpu_bf16: bool = False):
    """``torch.autocast`` in float16 on CUDA when ``amp``, in bfloat16 on the CPU when ``cpu_bf16``;
    a no-op context otherwise."""
    import torch

    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return nullcontext()


def step_seconds(model, images, target, loss_fn: Callable, cpu_bf16: bool, steps: int = 3) -> float:
    """The fastest of ``steps`` forward + backward passes of ``model`` (after one warm-up), in s."""
    from .loop import logits_of

    device = images.device
    best = float("inf")
    for k in range(steps + 1):
        t = time.perf_counter()
        with autocast_for(device, False, cpu_bf16):
            logits = logits_of(model(images), tuple(target.shape[-2:]))
        loss = loss_fn(logits.float(), target)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if k:
            best = min(best, time.perf_counter() - t)
    return best


def choose_cpu_bf16(setting: str, device: Any, model=None, batch: tuple | None = None,
                    loss_fn: Callable | None = None) -> tuple[bool, dict[str, Any]]:
    """Whether to train in bf16 autocast, and what decided it (recorded with the run).

    ``fp32``: no. ``bf16``: yes on a CPU with native bf16, else :class:`~edgeseg.errors.InputError`.
    ``auto``: on a CPU with native bf16, ``model`` (a copy: the run's weights and batch-norm
    statistics are untouched) is timed in both precisions on ``batch`` = (images, target)."""
    check_cpu_precision(setting)
    if setting == "fp32" or device.type != "cpu":
        return False, {"cpu_precision": setting, "bf16": False}
    native = cpu_bf16_supported()
    if setting == "bf16":
        if not native:
            raise InputError("--cpu-precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); "
                             "autocast would emulate it, slower than float32",
                             fix="use --cpu-precision auto (it measures) or fp32")
        return True, {"cpu_precision": setting, "bf16": True}
    if not native:
        return False, {"cpu_precision": setting, "bf16": False, "why": "no native bf16 on this CPU"}
    if model is None or batch is None or loss_fn is None:
        raise InputError("cpu_precision auto needs the model, a batch and the loss to time")
    probe = copy.deepcopy(model).train()
    images, target = batch
    fp32 = step_seconds(probe, images, target, loss_fn, False)
    bf16 = step_seconds(probe, images, target, loss_fn, True)
    use = fp32 / bf16 >= MIN_GAIN
    info = {"cpu_precision": setting, "bf16": use, "step_s_fp32": round(fp32, 4), "step_s_bf16": round(bf16, 4),
            "speedup": round(fp32 / bf16, 3)}
    log.info("training precision: %s (a step takes %.3f s in float32, %.3f s in bf16 autocast)",
             "bf16" if use else "fp32", fp32, bf16)
    return use, info
