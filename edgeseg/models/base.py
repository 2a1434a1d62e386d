"""The base of every semantic model: ``forward(images) -> {"logits": [N, C, H, W]}`` at the
input resolution. Subclasses implement ``forward_features`` returning low-resolution logits."""
from __future__ import annotations

import abc

import torch
from torch import nn

from .layers import resize_to


def check_runs_at(model: nn.Module, size, error: type[Exception], *, batch: int = 1, name: str | None = None) -> None:
    """One eager forward pass of ``model`` (eval mode, no gradients; its mode restored) on zeros at ``size``
    (an :class:`~edgeseg.structures.ImageShape`): a size the model cannot run at (its pooling needs each
    side to be a few times its stride) raises ``error`` naming the size, before training or export
    would fail with a traceback or pages of exporter logs."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(batch, 3, size.height, size.width))
    except (RuntimeError, ValueError, IndexError) as e:
        name = name or getattr(model, "model_name", type(model).__name__)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise error(f"model {name!r} cannot run at {size.width}x{size.height} (WxH): {first}",
                    fix="give a larger --size (and --crop): the model downsamples by its stride (e.g. 32), so each side "
                        "should be a few times that, e.g. 480x360") from None
    finally:
        model.train(was)


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
