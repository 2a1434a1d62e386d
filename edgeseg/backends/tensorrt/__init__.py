"""TensorRT backend: engines built on the device from the bundle's ONNX and cached in ``engines/``.

Every TensorRT and CUDA call lives in this package (:mod:`.loader`, :mod:`.runner`); the logic
around them is in :mod:`.plan`, plain functions tested without TensorRT.
"""
from .runner import TensorRTRunner

__all__ = ["TensorRTRunner"]
