"""SGD with momentum and decoupled-from-norm weight decay, and the poly learning-rate schedule.

Weight decay applies to conv/linear weights only (tensors with more than one dimension); biases
and normalisation scales/shifts are not decayed, as in "Bag of Tricks" (He et al., 2019).

The poly schedule (Chen et al., DeepLab, 2017) with a linear warm-up::

    factor(step) = (1 - step / total) ** power * warm(step)
    warm(step)   = start + (1 - start) * step / warmup    for step < warmup, else 1

The schedule is a pure function of the global step, so resuming only needs the step number.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _warmup(f: float, s: int, warmup: int, start: float) -> float:
    """``f`` scaled by a linear warm-up from ``start`` over the first ``warmup`` steps."""
    return f * (start + (1.0 - start) * s / warmup) if s < warmup else f


class _Schedule(ABC):
    """What every schedule shares: ``factor(step)`` (the subclass's), clamping, :meth:`apply`."""

    total: int
    warmup: int

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.total <= 0:
            raise InputError(f"{name}: total steps must be positive, got {self.total}")
        if not 0 <= self.warmup <= self.total:
            raise InputError(f"{name}: warm-up {self.warmup} must be in [0, total={self.total}]")

    def _step(self, step: int) -> int:
        return min(max(int(step), 0), self.total)

    @abstractmethod
    def factor(self, step: int) -> float:
        """The learning-rate multiplier at ``step`` (0-based; clamped to the last step)."""

    def apply(self, optimizer: "torch.optim.Optimizer", step: int) -> float:
        """Set every param group's ``lr`` to ``initial_lr * factor(step)``; returns the factor."""
        f = self.factor(step)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * f
        return f


@dataclass(frozen=True)
class PolySchedule(_Schedule):
    """Poly decay over ``total`` steps with a linear warm-up of ``warmup`` steps from ``start``."""

    total: int
    power: float = 0.9
    warmup: int = 0
    start: float = 0.1
    min_factor: float = 0.0

    def factor(self, step: int) -> float:
        """The learning-rate multiplier at ``step`` (0-based; clamped to the last step)."""
        s = self._step(step)
        return max(_warmup((1.0 - s / self.total) ** self.power, s, self.warmup, self.start), self.min_factor)


@dataclass(frozen=True)
class CosineSchedule(_Schedule):
    """Cosine decay to ``min_factor`` over ``total`` steps after a linear warm-up from ``start``."""

    total: int
    warmup: int = 0
    start: float = 0.1
    min_factor: float = 0.0

    def factor(self, step: int) -> float:
        s = self._step(step)
        f = self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * s / self.total))
        return _warmup(f, s, self.warmup, self.start)


def param_groups(model: "torch.nn.Module", weight_decay: float) -> list[dict]:
    """Two groups: weights with decay, and biases / norm parameters (ndim <= 1) without."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_sgd(
    model: "torch.nn.Module", lr: float, momentum: float = 0.9, weight_decay: float = 1e-4, nesterov: bool = False
) -> "torch.optim.SGD":
    """SGD with momentum; no weight decay on biases and norm layers."""
    import torch

    if lr <= 0:
        raise InputError(f"learning rate must be positive, got {lr}")
    groups = param_groups(model, weight_decay)
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


def build_adamw(model: "torch.nn.Module", lr: float, weight_decay: float) -> "torch.optim.AdamW":
    """AdamW; no weight decay on biases and norm layers."""
    import torch

    if lr <= 0:
        raise InputError(f"learning rate must be positive, got {lr}")
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


def build_schedule(kind: str, total_steps: int, warmup_steps: int) -> PolySchedule | CosineSchedule:
    """``poly`` (power 0.9) or ``cosine`` over ``total_steps`` after a linear warm-up (capped at the total)."""
    if kind not in ("poly", "cosine"):
        raise InputError(f"schedule must be poly or cosine, got {kind!r}")
    warm = min(warmup_steps, total_steps)
    return PolySchedule(total_steps, 0.9, warm) if kind == "poly" else CosineSchedule(total_steps, warm)
