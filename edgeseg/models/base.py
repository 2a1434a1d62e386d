"""The base of every semantic model: ``forward(images) -> {"logits": [N, C, H, W]}`` at the
input resolution. Subclasses implement ``forward_features`` returning low-resolution logits."""
from __future__ import annotations

import abc

import torch
from torch import nn

from .layers import resize_to


class SemanticModel(nn.Module, metaclass=abc.ABCMeta):
    """images ``float32 [N, 3, H, W]`` (normalised per the bundle's InputSpec) ->
    ``{"logits": float32 [N, num_classes, H, W]}``. Traceable; no Python objects in the output."""

    task = "semantic"

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.model_name = type(self).__name__

    @abc.abstractmethod
    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C, h, w]``, possibly at a lower resolution than the input."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.forward_logits(images)
        return {"logits": resize_to(logits, images.shape[-2:])}
