"""OpenVINO backend (CPU plugin)."""
from .runner import OpenVinoRunner

__all__ = ["OpenVinoRunner"]
