"""Runtimes behind one contract (see :mod:`edgeseg.backends.base`).

Backend modules register themselves in :data:`BACKENDS`; they are imported here (cheap: none imports
its runtime at module level). One folder per backend, Polygraphy style."""
from . import onnxrt, openvino, pytorch, tensorrt  # noqa: F401  (registration)
from .auto import choose_backend, select_backend
from .base import BACKENDS, Runner, TensorSpec

__all__ = ["BACKENDS", "Runner", "TensorSpec", "choose_backend", "select_backend"]
