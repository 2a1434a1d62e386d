"""Encoders: any encoder fits any decoder through ``out_channels`` / ``reductions``."""
from . import mobilenetv2, mobilenetv3, resnet, vgg  # noqa: F401  (register)
from .base import ENCODERS, Encoder, create_encoder, list_encoders

__all__ = ["ENCODERS", "Encoder", "create_encoder", "list_encoders"]
