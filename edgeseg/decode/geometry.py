"""Where network pixels land in the original image: the one mapping every decoder uses.

:meth:`InputSpec.preprocess <edgeseg.structures.InputSpec.preprocess>` resizes the image to
``meta.content`` and places it at ``(pad_top, pad_left)`` of a ``meta.network`` canvas (a plain
resize is the case ``content == network``, no padding). Coordinates here are **continuous**
(pixel ``i`` covers ``[i, i + 1)``), so the map is an affine one per axis::

    x_image = (x_network - pad_left) * original.width / content.width

which is exact for box corners and for the half-pixel-centre sampling of OpenCV's bilinear resize
(pixel centre ``i + 0.5`` maps to ``(i + 0.5) * scale``). For an output at another resolution
(stride-4 masks, stride-8 logits) the network coordinates are first scaled by
``network / output``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..structures import ImageShape

if TYPE_CHECKING:
    from ..structures import PreprocessMeta


def image_affine(meta: "PreprocessMeta", out: ImageShape | None = None) -> tuple[float, float, float, float]:
    """``(sx, sy, tx, ty)`` with ``x_image = x * sx + tx`` and ``y_image = y * sy + ty`` for
    coordinates ``(x, y)`` of an output of size ``out`` (default: the network input) that spans the
    whole network input."""
    out = out or meta.network
    kx, ky = meta.network.width / out.width, meta.network.height / out.height  # output -> network px
    rx, ry = meta.original.width / meta.content.width, meta.original.height / meta.content.height
    return kx * rx, ky * ry, -meta.pad_left * rx, -meta.pad_top * ry


def _boxes(boxes: Any) -> np.ndarray:
    """``float32 [N, 4]`` from ``[N, 4]`` boxes or one ``[4]`` box; anything else an :class:`InputError` (an ``[N, 5]``
    array with scores was reshaped into garbage boxes)."""
    b = np.asarray(boxes, np.float32)
    if b.shape == (4,):
        return b.reshape(1, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be [N, 4] (x1, y1, x2, y2), got shape {list(b.shape)}",
                         fix="boxes[:, :4] when each row also holds a score or a class")
    return b


def boxes_to_image(boxes: np.ndarray, meta: "PreprocessMeta", out: ImageShape | None = None,
                   clip: bool = True) -> np.ndarray:
    """``[N, 4]`` xyxy boxes in network (or ``out``) pixels -> ``float32`` xyxy in original-image
    pixels, clipped to the image when ``clip``."""
    b = _boxes(boxes)
    sx, sy, tx, ty = image_affine(meta, out)
    res = np.empty_like(b)
    res[:, 0::2] = b[:, 0::2] * np.float32(sx) + np.float32(tx)
    res[:, 1::2] = b[:, 1::2] * np.float32(sy) + np.float32(ty)
    if clip:
        np.clip(res[:, 0::2], 0, meta.original.width, out=res[:, 0::2])
        np.clip(res[:, 1::2], 0, meta.original.height, out=res[:, 1::2])
    return res


def boxes_to_network(boxes: np.ndarray, meta: "PreprocessMeta", out: ImageShape | None = None) -> np.ndarray:
    """The inverse of :func:`boxes_to_image` (without clipping): image pixels -> ``out`` pixels."""
    b = _boxes(boxes)
    sx, sy, tx, ty = image_affine(meta, out)
    res = np.empty_like(b)
    res[:, 0::2] = (b[:, 0::2] - np.float32(tx)) / np.float32(sx)
    res[:, 1::2] = (b[:, 1::2] - np.float32(ty)) / np.float32(sy)
    return res


def content_box(meta: "PreprocessMeta", out: ImageShape) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the rows and columns of an output of size ``out`` that the image
    content covers (letterbox padding excluded), rounded to whole output pixels, never empty."""
    sy, sx = out.height / meta.network.height, out.width / meta.network.width
    y0 = min(out.height - 1, int(round(meta.pad_top * sy)))
    x0 = min(out.width - 1, int(round(meta.pad_left * sx)))
    y1 = max(y0 + 1, min(out.height, int(round((meta.pad_top + meta.content.height) * sy))))
    x1 = max(x0 + 1, min(out.width, int(round((meta.pad_left + meta.content.width) * sx))))
    return y0, y1, x0, x1
