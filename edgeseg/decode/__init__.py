"""Raw model outputs -> typed results. One decoder per task, registered in :data:`DECODERS`.

::

    result = decode(outputs, meta, manifest)      # picks DECODERS[manifest.task]
    result = decode_semantic(outputs, meta, manifest)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .._registry import Registry
from ..errors import UnsupportedError

if TYPE_CHECKING:
    from ..bundle import Manifest
    from ..structures import PreprocessMeta

Decoder = Callable[[Mapping[str, np.ndarray], "PreprocessMeta", "Manifest"], Any]
DECODERS: Registry[Decoder] = Registry("decoder", error=UnsupportedError)

from .semantic import decode_semantic  # noqa: E402  (registers "semantic")


def decode(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest") -> Any:
    """Decode with the decoder registered for ``manifest.task``."""
    return DECODERS.get(manifest.task)(outputs, meta, manifest)


__all__ = ["DECODERS", "decode", "decode_semantic"]
