"""The encoder contract and registry (segmentation_models.pytorch style).

An encoder returns one feature map per stage, shallow to deep, and declares what they are:
``out_channels[i]`` channels at ``reductions[i]`` times smaller than the input. ``output_stride``
is the reduction of the deepest stage; dilated encoders reach 8 or 16 by replacing strides with
dilation, so any encoder fits any decoder that reads these declarations.
"""
from __future__ import annotations

import abc
from typing import Any, Callable

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


def create_encoder(name: str, output_stride: int = 32, **kwargs: Any) -> Encoder:
    """Build a registered encoder (``edgeseg.models.list_encoders()`` names them)."""
    from ..layers import init_weights

    check_output_stride(output_stride, name)
    encoder = ENCODERS.get(name)(output_stride=output_stride, **kwargs)
    init_weights(encoder)
    return encoder


def list_encoders(pattern: str = "*") -> list[str]:
    return ENCODERS.names(pattern)
