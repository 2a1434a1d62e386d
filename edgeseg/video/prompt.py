"""Checking what a user gives a propagator: frames and prompt masks."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import ImageShape

log = logging.getLogger(__name__)

_SAID: set = set()  # (what, shape, checksum) of prompts warned about: one prompt passes here several times a run

ASPECT_TOLERANCE = 0.01
"""A prompt of another size is rescaled when its aspect ratio is within 1 % of the frame's."""


def frame_image(frame: Any) -> np.ndarray:
    """The RGB ``uint8 [H, W, 3]`` image of a frame (an array, or an object with ``.image`` such as
    :class:`~edgeseg.structures.Frame`)."""
    img = getattr(frame, "image", frame)
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        desc = f"{type(img).__name__} {getattr(img, 'shape', '')} {getattr(img, 'dtype', '')}".strip()
        raise InputError(f"a video frame must be a uint8 [H, W, 3] RGB image, got {desc}")
    return np.ascontiguousarray(img)


def _first_time(kind: str, what: str, m: np.ndarray) -> bool:
    """Whether a warning of ``kind`` about this prompt is new (the CLI, the stream stage and the propagator each
    check the same prompt: it was said two or three times a run)."""
    import zlib

    key = (kind, what, m.shape, zlib.crc32(np.ascontiguousarray(m).tobytes()))
    if key in _SAID:
        return False
    if len(_SAID) > 256:
        _SAID.clear()
    _SAID.add(key)
    return True


def prompt_ids(mask: Any, shape: ImageShape, what: str = "prompt") -> np.ndarray:
    """A prompt as ``int32 [H, W]`` object ids (0 = background) at the frame size ``shape``.

    Accepted: an integer id map (ids 1..K; DAVIS convention), a bool mask (object 1), or a binary
    0/255 mask (object 1). 255 in a mask that also holds other ids is the DAVIS void label and
    counts as background. A prompt of another size with the frame's aspect ratio (within 1 %) is
    rescaled (nearest neighbour; an object too small to survive keeps one pixel at its centre) with a
    warning in the log; any other size is an
    :class:`~edgeseg.errors.InputError`, as is a prompt without any object pixel.
    """
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise InputError(f"{what}: expected a [H, W] mask of object ids, got shape {list(m.shape)}",
                         fix="give a single-channel PNG whose pixel values are object ids (0 = background)")
    if m.dtype == np.bool_:
        m = m.astype(np.int32)
    elif not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"{what}: object ids must be integers, got {m.dtype}")
    m = m.astype(np.int32)
    values = np.unique(m)
    if values.min(initial=0) < 0:
        raise InputError(f"{what}: negative object id {int(values.min())}")
    if set(values.tolist()) <= {0, 255}:
        m = (m == 255).astype(np.int32)  # binary 0/255 mask: one object
    else:
        void = m == 255
        if void.any() and _first_time("void", what, m):  # DAVIS void: not an object (said: one drawn in 255 vanished)
            log.warning("%s: %d pixels of value 255 read as DAVIS's void (not an object); objects are ids 1..254",
                        what, int(void.sum()))
        m[void] = 0
    if not m.any():
        raise InputError(f"{what} has no object pixels (every pixel is 0)",
                         fix="draw at least one object: pixel value 1..K marks object K, 0 is background")
    counts = np.bincount(m.ravel())
    if counts[0] < 0.25 * m.size and _first_time("inverted", what, m):  # objects over 3/4 of the frame: inverted?
        log.warning("%s: its objects cover %.0f%% of the frame (object %d alone %.0f%%): is the mask inverted (white "
                    "background, black object)? 0 is the background", what, 100 * (1 - counts[0] / m.size),
                    int(counts[1:].argmax()) + 1, 100 * counts[1:].max() / m.size)
    got = ImageShape.of(m)
    if got != shape:
        ar_got, ar_want = got.width / got.height, shape.width / shape.height
        if abs(ar_got - ar_want) > ASPECT_TOLERANCE * ar_want:
            raise InputError(
                f"{what} is {got.width}x{got.height} but the frames are {shape.width}x{shape.height} (another aspect ratio)",
                fix="draw the prompt on a frame of the video, at its size")
        import cv2

        log.warning("%s is %dx%d, the frames %dx%d: rescaling it (nearest neighbour)",
                    what, got.width, got.height, shape.width, shape.height)
        small = cv2.resize(m.astype(np.float32), (shape.width, shape.height), interpolation=cv2.INTER_NEAREST).astype(np.int32)
        for k in sorted(set(np.unique(m).tolist()) - set(np.unique(small).tolist())):  # too small for nearest neighbour
            ys, xs = np.nonzero(m == k)
            small[min(int(ys.mean() * shape.height / got.height), shape.height - 1),
                  min(int(xs.mean() * shape.width / got.width), shape.width - 1)] = k  # kept as one pixel
        m = small
    return m
