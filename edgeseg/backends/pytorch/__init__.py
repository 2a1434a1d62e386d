"""PyTorch backend: runs a bundle's source checkpoint (or any ``nn.Module``) eagerly."""
from .runner import TorchRunner

__all__ = ["TorchRunner"]
