"""8-bit YUV frames (I420, NV12, Y42B, Y444, YUY2) to RGB with the frame's own colour matrix and range.

The GStreamer source takes decoded frames of these layouts as they are and converts them here: GStreamer 1.22's
``videoconvert`` is 1.7 / 3.7 / 2.2 levels (R/G/B) darker than the exact conversion on average (its 8-bit
fixed-point matrices), where this is within one level of it everywhere (``cv2.transform`` of a 3x4 matrix).
Chroma is upsampled by repetition, as OpenCV's ``cvtColor`` and most decoders' RGB outputs do.

:func:`yuv_matrix` is the matrix for one of :data:`KR_KB`'s standards, limited (``16-235``, video) or full
(``0-255``, JPEG and many cameras) range; :func:`planar_to_rgb`, :func:`nv12_to_rgb` and :func:`yuy2_to_rgb`
convert planes, as arrays or strided views of a mapped buffer (rows may be padded).
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


@functools.lru_cache(maxsize=None)
def rgb_matrix(matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """The ``float32 [3, 4]`` affine map from ``[R, G, B, 1]`` to 8-bit ``[Y, U, V]``: :func:`yuv_matrix`'s inverse."""
    m = yuv_matrix(matrix, full_range).astype(np.float64)
    inverse = np.linalg.inv(m[:, :3])
    out = np.hstack([inverse, -(inverse @ m[:, 3])[:, None]]).astype(np.float32)
    out.setflags(write=False)
    return out


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """An RGB ``uint8 [H, W, 3]`` image of even size -> its packed I420 buffer ``uint8 [H * W * 3 / 2]`` (BT.601,
    video range): :func:`rgb_to_i420_planes`' planes, written into OpenCV's own I420 buffer (its luma kept, its
    one-pixel-of-four chroma replaced by the 2x2 means) instead of copied out and joined (a 1080p frame: two
    full-frame copies fewer, session 54)."""
    import cv2

    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb)
    buf = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    half = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)  # each 2x2 block's mean
    uv = cv2.transform(half, rgb_matrix("bt601", False)[1:])
    n, q = h * w, (h // 2) * (w // 2)
    for k in (0, 1):
        np.copyto(buf[n + k * q:n + (k + 1) * q].reshape(h // 2, w // 2), uv[..., k])
    return buf


def rgb_to_i420_planes(rgb: np.ndarray, matrix: str = "bt601", full_range: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB ``uint8 [H, W, 3]`` image of even size -> its I420 planes ``Y [H, W]``, ``U``, ``V [H/2, W/2]``, each
    chroma sample the average of its 2x2 block (OpenCV's ``COLOR_RGB2YUV_I420`` takes one pixel of four: a one-pixel
    coloured line, as an overlay's outline, lost its colour)."""
    import cv2

    h, w = rgb.shape[:2]
    if matrix == "bt601" and not full_range:  # OpenCV's luma is this one, and 5x faster than a 3x1 transform
        buf, n, q = rgb_to_i420(rgb), h * w, (h // 2) * (w // 2)
        return buf[:n].reshape(h, w), buf[n:n + q].reshape(h // 2, w // 2), buf[n + q:].reshape(h // 2, w // 2)
    m = rgb_matrix(matrix, full_range)
    rgb = np.ascontiguousarray(rgb)
    y = cv2.transform(rgb, m[:1]).reshape(h, w)
    half = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)  # each 2x2 block's mean
    uv = cv2.transform(half, m[1:])
    return y, np.ascontiguousarray(uv[..., 0]), np.ascontiguousarray(uv[..., 1])


#: chroma subsampling (rows, columns) of the planar layouts: 4:2:0, 4:2:2, 4:4:4
SUBSAMPLING = {"420": (2, 2), "422": (1, 2), "444": (1, 1)}


def _check(y: np.ndarray, chroma: tuple[np.ndarray, ...], sub: tuple[int, int]) -> None:
    h, w = y.shape[:2]
    want = (-(-h // sub[0]), -(-w // sub[1]))
    for c in chroma:
        if c.shape[:2] != want or c.dtype != np.uint8 or y.dtype != np.uint8:
            raise StreamError(f"YUV planes do not fit: luma {y.shape} {y.dtype}, chroma {c.shape} {c.dtype} "
                              f"(expected {want} uint8 for {sub[0]}x{sub[1]} subsampling)")


def _convert(y: np.ndarray, u: np.ndarray, v: np.ndarray, sub: tuple[int, int], matrix: str,
             full_range: bool) -> np.ndarray:
    import cv2

    h, w = y.shape
    if sub != (1, 1):  # exactly the factor, then cut: an odd size keeps sample i at 2i, 2i+1
        size = (sub[1] * u.shape[1], sub[0] * u.shape[0])
        u, v = (cv2.resize(np.ascontiguousarray(c), size, interpolation=cv2.INTER_NEAREST)[:h, :w] for c in (u, v))
    return cv2.transform(cv2.merge([np.ascontiguousarray(p) for p in (y, u, v)]), yuv_matrix(matrix, full_range))


def planar_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, subsampling: str = "420", matrix: str = "bt601",
                  full_range: bool = False) -> np.ndarray:
    """Planar YUV (``Y [H, W]``; ``U``, ``V`` at the size :data:`SUBSAMPLING` gives, rounded up; uint8; I420, Y42B,
    Y444) -> ``uint8 [H, W, 3]`` RGB."""
    sub = SUBSAMPLING[subsampling]
    _check(y, (u, v), sub)
    return _convert(y, u, v, sub, matrix, full_range)


def i420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt601",
                full_range: bool = False) -> np.ndarray:
    """Planar 4:2:0 (``Y [H, W]``, ``U`` and ``V [ceil(H/2), ceil(W/2)]``, uint8) -> ``uint8 [H, W, 3]`` RGB."""
    return planar_to_rgb(y, u, v, "420", matrix, full_range)


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """Semi-planar 4:2:0 (``Y [H, W]``, interleaved ``UV [ceil(H/2), ceil(W/2), 2]``, uint8) -> RGB."""
    if uv.ndim != 3 or uv.shape[2] != 2:
        raise StreamError(f"NV12 chroma must be [H/2, W/2, 2], not {uv.shape}")
    _check(y, (uv,), (2, 2))
    return _convert(y, uv[..., 0], uv[..., 1], (2, 2), matrix, full_range)


def yuy2_to_rgb(packed: np.ndarray, width: int, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """Packed 4:2:2 (``YUY2``/``YUYV``, what USB cameras send raw: ``[H, ceil(W/2), 4]`` of Y0 U Y1 V) -> RGB
    ``[H, width, 3]``."""
    if packed.ndim != 3 or packed.shape[2] != 4 or packed.shape[1] != -(-width // 2) or packed.dtype != np.uint8:
        raise StreamError(f"YUY2 frame of {width} columns must be uint8 [H, {-(-width // 2)}, 4], not "
                          f"{packed.dtype} {list(packed.shape)}")
    y = packed[..., [0, 2]].reshape(packed.shape[0], -1)[:, :width]
    return _convert(y, packed[..., 1], packed[..., 3], (1, 2), matrix, full_range)
