"""A tiny labelled dataset for the trainer's class-balancing tests (rare-class sampling, copy-paste)."""
from __future__ import annotations

import numpy as np

from edgeseg.data.base import Sample


class Frames(list):
    classes = ("common", "rare")


def corner_frames(n: int, rare_at: int, size: int = 16) -> Frames:
    """``n`` frames, frame k grey ``40 k``, all class 0 (``common``) but for class 1 (``rare``) in the 4x4
    top-left corner of frame ``rare_at``."""
    frames = Frames()
    for k in range(n):
        lab = np.zeros((size, size), np.uint8)
        if k == rare_at:
            lab[:4, :4] = 1
        frames.append(Sample(image=np.full((size, size, 3), 40 * k, np.uint8), labels=lab))
    return frames
