"""The encoder contract and registry (segmentation_models.pytorch style).

An encoder returns one feature map per stage, shallow to deep, and declares what they are:
``out_channels[i]`` channels at ``reductions[i]`` times smaller than the input. ``output_stride``
is the reduction of the deepest stage; dilated encoders reach 8 or 16 by replacing strides with
dilation, so any encoder fits any decoder that reads these declarations.
"""
from __future__ import annotations

import abc
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..._registry import Registry
from ...errors import ModelError

ENCODERS: Registry[Callable[..., "Encoder"]] = Registry("encoder", error=ModelError)
OUTPUT_STRIDES = (8, 16, 32)


class Encoder(nn.Module, metaclass=abc.ABCMeta):
    """Base class. Subclasses set ``out_channels`` and ``reductions`` and implement ``forward``."""

    out_channels: tuple[int, ...] = ()
    reductions: tuple[int, ...] = ()

    @property
    def output_stride(self) -> int:
        return self.reductions[-1]

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One feature map per stage, shallow to deep (``out_channels[i]`` channels each)."""


def check_output_stride(output_stride: int, name: str) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ModelError(
            f"encoder {name!r}: output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}",
            fix="use 8 or 16 for dilated (DeepLab/PSPNet) backbones, 32 for the plain one",
        )


def encoder_output_strides(name: str) -> tuple[int, ...]:
    """The output strides a registered encoder can be built at (HRNet: 32 only; dilated ones 8-32)."""
    return tuple(ENCODERS.entry(name).meta.get("output_strides", OUTPUT_STRIDES))


SWAP_KEEPS = frozenset({"in_channels"})  # encoder options every encoder takes


class _Swap:
    def __init__(self, name: str):
        self.name = name
        self.built = 0


_SWAP: ContextVar[_Swap | None] = ContextVar("edgeseg_encoder_swap", default=None)


@contextmanager
def swapped_encoder(name: str) -> Iterator[_Swap]:
    """Inside this block every ``create_encoder`` call builds ``name`` instead of the encoder asked
    for (at the asked output stride when ``name`` has it, else at its deepest one): how one model
    variant is built on another encoder. Decoders read ``out_channels`` and ``reductions``, so they
    follow. The yielded object counts the encoders built (0: the model has no swappable encoder)."""
    ENCODERS.entry(name)  # an unknown name fails here, with the closest names
    swap = _Swap(name)
    token = _SWAP.set(swap)
    try:
        yield swap
    finally:
        _SWAP.reset(token)


def create_encoder(name: str, output_stride: int = 32, **kwargs: Any) -> Encoder:
    """Build a registered encoder (``edgeseg.models.list_encoders()`` names them)."""
    from ..layers import init_weights

    swap = _SWAP.get()
    if swap is not None:
        name = swap.name
        strides = encoder_output_strides(name)
        if output_stride not in strides:
            output_stride = max(strides)
        # options of the encoder asked for (ResNet's multi_grid, ...) do not apply to another one
        kwargs = {k: v for k, v in kwargs.items() if k in SWAP_KEEPS}
        swap.built += 1
    check_output_stride(output_stride, name)
    encoder = ENCODERS.get(name)(output_stride=output_stride, **kwargs)
    init_weights(encoder)
    return encoder


def list_encoders(pattern: str = "*") -> list[str]:
    return ENCODERS.names(pattern)
