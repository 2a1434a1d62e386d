"""Runtimes behind one contract (see :mod:`edgeseg.backends.base`).

Backend modules register themselves in :data:`BACKENDS`; they are imported here (cheap: none imports
its runtime at module level)."""
from .base import BACKENDS, Runner, TensorSpec

__all__ = ["BACKENDS", "Runner", "TensorSpec"]
