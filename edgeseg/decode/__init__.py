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
    from ..structures import DecoderOptions, PreprocessMeta
    from ..structures.manifest import Manifest

Decoder = Callable[..., Any]  # (outputs, meta, manifest, options=None) -> result
DECODERS: Registry[Decoder] = Registry("decoder", error=UnsupportedError)

from .semantic import decode_semantic  # noqa: E402  (registers "semantic")
from .instance import decode_instance  # noqa: E402  (registers "instance")
from .panoptic import decode_panoptic, fuse_panoptic  # noqa: E402  (registers "panoptic")
from .geometry import boxes_to_image, boxes_to_network, content_box, image_affine  # noqa: E402


def decode(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
           options: "DecoderOptions | None" = None, image: np.ndarray | None = None) -> Any:
    """Decode with the decoder registered for ``manifest.task``, with ``options`` (the task's
    :class:`~edgeseg.structures.DecoderOptions`) or the bundle's own. ``image``: the original RGB
    frame, which semantic decoding needs when its options ask for the CRF (ignored otherwise)."""
    if manifest.task == "semantic":
        return DECODERS.get(manifest.task)(outputs, meta, manifest, options, image=image)
    return DECODERS.get(manifest.task)(outputs, meta, manifest, options)


__all__ = ["DECODERS", "decode", "decode_semantic", "decode_instance", "decode_panoptic", "fuse_panoptic",
           "boxes_to_image", "boxes_to_network", "content_box", "image_affine"]
