"""4:2:0 YUV frames (I420, NV12) to RGB with the frame's own colour matrix and range.

The GStreamer source takes decoded 4:2:0 frames as they are and converts them here: GStreamer 1.22's
``videoconvert`` is 1.7 / 3.7 / 2.2 levels (R/G/B) darker than the exact conversion on average (its 8-bit
fixed-point matrices), where this is within one level of it everywhere (``cv2.transform`` of a 3x4 matrix).
Chroma is upsampled by repetition, as OpenCV's ``cvtColor`` and most decoders' RGB outputs do.

:func:`yuv_matrix` is the matrix for one of :data:`KR_KB`'s standards, limited (``16-235``, video) or full
(``0-255``, JPEG and many cameras) range; :func:`i420_to_rgb` and :func:`nv12_to_rgb` convert planes, as
arrays or strided views of a mapped buffer (rows may be padded).
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import StreamError

#: luma weights (Kr, Kb) of the colour matrices GStreamer names (``GstVideoColorMatrix``)
KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593),
         "smpte240m": (0.212, 0.087), "fcc": (0.30, 0.11)}


def default_matrix(height: int) -> str:
    """The matrix GStreamer assumes for YUV caps that do not say one (``gst_video_info_set_format``'s rule):
    BT.2020 from 2160 lines, BT.709 above 576, BT.601 below."""
    return "bt2020" if height >= 2160 else "bt709" if height > 576 else "bt601"


@functools.lru_cache(maxsize=None)
def yuv_matrix(matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """The ``float32 [3, 4]`` affine map from 8-bit ``[Y, U, V, 1]`` to ``[R, G, B]`` for ``matrix`` (a key of
    :data:`KR_KB`), limited range (Y 16-235, U/V 16-240) or full range (0-255, chroma centred on 128)."""
    if matrix not in KR_KB:
        raise StreamError(f"unknown YUV colour matrix {matrix!r}", fix=f"one of {', '.join(KR_KB)}")
    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    sy, sc = (1.0, 1.0) if full_range else (255.0 / 219.0, 255.0 / 224.0)
    m = np.array([[sy, 0.0, 2.0 * (1.0 - kr) * sc],
                  [sy, -2.0 * kb * (1.0 - kb) / kg * sc, -2.0 * kr * (1.0 - kr) / kg * sc],
                  [sy, 2.0 * (1.0 - kb) * sc, 0.0]])
    offset = -(m @ np.array([0.0 if full_range else 16.0, 128.0, 128.0]))
    out = np.hstack([m, offset[:, None]]).astype(np.float32)
    out.setflags(write=False)
    return out


def _check(y: np.ndarray, *chroma: np.ndarray) -> tuple[int, int]:
    h, w = y.shape[:2]
    half = ((h + 1) // 2, (w + 1) // 2)
    for c in chroma:
        if c.shape[:2] != half or c.dtype != np.uint8 or y.dtype != np.uint8:
            raise StreamError(f"4:2:0 planes do not fit: luma {y.shape} {y.dtype}, chroma {c.shape} {c.dtype} "
                              f"(expected {half} uint8)")
    return h, w


def _convert(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, full_range: bool) -> np.ndarray:
    import cv2

    h, w = y.shape
    size = (2 * u.shape[1], 2 * u.shape[0])  # exactly twice, then cut: an odd size keeps sample i at 2i, 2i+1
    up = [cv2.resize(np.ascontiguousarray(c), size, interpolation=cv2.INTER_NEAREST)[:h, :w] for c in (u, v)]
    return cv2.transform(cv2.merge([np.ascontiguousarray(y), *up]), yuv_matrix(matrix, full_range))


def i420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt601",
                full_range: bool = False) -> np.ndarray:
    """Planar 4:2:0 (``Y [H, W]``, ``U`` and ``V [ceil(H/2), ceil(W/2)]``, uint8) -> ``uint8 [H, W, 3]`` RGB."""
    _check(y, u, v)
    return _convert(y, u, v, matrix, full_range)


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """Semi-planar 4:2:0 (``Y [H, W]``, interleaved ``UV [ceil(H/2), ceil(W/2), 2]``, uint8) -> RGB."""
    if uv.ndim != 3 or uv.shape[2] != 2:
        raise StreamError(f"NV12 chroma must be [H/2, W/2, 2], not {uv.shape}")
    _check(y, uv)
    return _convert(y, uv[..., 0], uv[..., 1], matrix, full_range)
