"""Encoders: any encoder fits any decoder through ``out_channels`` / ``reductions``.

Every module of this package is imported here so it registers its encoders: a new encoder is one
new module, no list to edit."""
import importlib as _importlib
import pkgutil as _pkgutil

from .base import ENCODERS, Encoder, create_encoder, encoder_output_strides, list_encoders, swapped_encoder

for _info in _pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name != "base":
        _importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["ENCODERS", "Encoder", "create_encoder", "encoder_output_strides", "list_encoders", "swapped_encoder"]
