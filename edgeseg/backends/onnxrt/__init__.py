"""ONNX Runtime backend (CPU; the CUDA execution provider when present)."""
from .runner import OnnxRuntimeRunner, explain_session_error, load_error

__all__ = ["OnnxRuntimeRunner", "explain_session_error", "load_error"]
