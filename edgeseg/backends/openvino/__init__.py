"""OpenVINO backend (CPU plugin)."""
from .runner import OpenVinoRunner, read_model, unsupported_ops

__all__ = ["OpenVinoRunner", "read_model", "unsupported_ops"]
