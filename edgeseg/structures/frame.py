"""A video frame as it travels through a stream pipeline."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .shapes import ImageShape


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    image:     ``uint8 [H, W, 3]``, **RGB** order, C-contiguous. Sources convert to RGB.
    pts_ns:    presentation timestamp in nanoseconds (from the container/camera; -1 if unknown).
    index:     0-based frame number within its source; a live source's frames dropped under back-pressure leave
               gaps (it counts every frame the source delivered from the first read on).
    source_id: which source produced it (a URI or a user-given name).
    """

    image: np.ndarray
    pts_ns: int = -1
    index: int = 0
    source_id: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            desc = f"{type(img).__name__} {getattr(img, 'shape', '')} {getattr(img, 'dtype', '')}"
            raise InputError(f"Frame.image must be a uint8 [H, W, 3] RGB array, got {desc.strip()}")

    @property
    def shape(self) -> ImageShape:
        return ImageShape.of(self.image)
