"""What a model expects as input, and the one preprocessing function that honours it.

Training, export, calibration and every runtime share :meth:`InputSpec.preprocess`, so a model
sees exactly the same tensor everywhere. A bundle imported from someone else's ONNX carries that
exporter's conventions here (NHWC, BGR, 0-255 means, ...).
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from .shapes import ImageShape

Layout = Literal["NCHW", "NHWC"]
Color = Literal["RGB", "BGR"]
SizeRule = Literal["fixed", "multiple", "any", "fit"]
ResizeMode = Literal["resize", "letterbox"]
#: Where a letterboxed image sits on the padded canvas: centred (Ultralytics' ``LetterBox``, YOLOv5-7,
#: MMYOLO's ``LetterResize``) or at the top-left corner, the padding below and to the right (MMDetection,
#: MMSegmentation and MMDeploy's ``Pad``, Detectron2's ``ImageList``, transformers' ``pad``, DeepStream's
#: ``maintain-aspect-ratio`` without ``symmetric-padding``).
Anchor = Literal["center", "top-left"]
ANCHORS = ("center", "top-left")
_DTYPES = ("float32", "float16", "uint8")


@functools.lru_cache(maxsize=64)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], scale: float) -> tuple[np.ndarray, np.ndarray]:
    sd = np.asarray(std, np.float32)
    mul = (np.float32(scale) / sd).astype(np.float32)
    add = (-np.asarray(mean, np.float32) / sd).astype(np.float32)
    mul.setflags(write=False)
    add.setflags(write=False)
    return mul, add


def _pad_value(v: Any) -> int | tuple[int, int, int]:
    """A letterbox fill: one grey level, or three levels (RGB), each an integer 0-255."""
    vals = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    if len(vals) not in (1, 3) or not all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
                                          and float(x).is_integer() and 0 <= x <= 255 for x in vals):
        raise InputError(f"letterbox pad value must be a grey level 0-255 or three of them (RGB), got {v!r}",
                         fix="e.g. --pad-value 114, or --pad-value 124,116,104")
    if len(vals) == 1 or len(set(vals)) == 1:
        return int(vals[0])
    return tuple(int(x) for x in vals)  # type: ignore[return-value]


def pad_levels(values, color: str = "RGB") -> int | tuple[int, int, int]:
    """A letterbox ``pad_value`` from three channel levels in ``color`` order (e.g. the pixel that normalises to
    0, what frameworks padding after normalising pad with): rounded half up, clipped to 0-255, in RGB order, one
    grey level when the three agree."""
    import math

    vals = [float(v) for v in values]
    rgb = [int(min(255, max(0, math.floor(v + 0.5)))) for v in (vals if color == "RGB" else vals[::-1])]
    return rgb[0] if len(set(rgb)) == 1 else tuple(rgb)  # type: ignore[return-value]


@dataclass(frozen=True)
class PreprocessMeta:
    """How an image became a network input, so outputs can be mapped back.

    original: the image as given. network: the tensor's spatial size. content: the part of the
    network input covered by the image (smaller than ``network`` when letterboxed), whose top-left
    corner is at (pad_top, pad_left).
    """

    original: ImageShape
    network: ImageShape
    content: ImageShape
    pad_top: int = 0
    pad_left: int = 0


@dataclass(frozen=True)
class InputSpec:
    """A model's input convention.

    Pixel normalisation is ``(pixel * scale - mean) / std`` per channel, in ``color`` order.
    ``size`` is the network size for ``size_rule="fixed"``; with ``"multiple"`` the image is
    resized to the nearest multiple of ``multiple`` on each side; with ``"any"`` it is fed as is;
    with ``"fit"`` (MMDeploy's dynamic MMDetection and MMSegmentation pipelines) it is scaled, its aspect
    kept, until its long side is at most the longer side of ``size`` and its short side at most the
    shorter (MMCV's ``keep_ratio`` rule, sizes rounded half up), then padded up to a multiple of
    ``multiple`` (1: not padded) with ``pad_value``, placed by ``anchor``.
    ``resize="letterbox"`` keeps the aspect ratio, scaling the image to fit the network size and filling
    the rest with ``pad_value`` (a grey level, or one level per channel in RGB order); ``anchor`` places
    the image in the middle (``"center"``, the content size rounded half to even as Ultralytics does) or
    at the top-left corner (``"top-left"``, rounded half up as MMCV, MMDeploy and Detectron2 do).
    """

    name: str = "images"
    layout: Layout = "NCHW"
    color: Color = "RGB"
    dtype: str = "float32"
    size: ImageShape | None = None
    size_rule: SizeRule = "fixed"
    multiple: int = 32
    resize: ResizeMode = "resize"
    pad_value: int | tuple[int, int, int] = 0
    anchor: Anchor = "center"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1.0 / 255.0
    dynamic_batch: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"input layout must be NCHW or NHWC, got {self.layout!r}")
        if self.color not in ("RGB", "BGR"):
            raise InputError(f"input colour order must be RGB or BGR, got {self.color!r}")
        if self.dtype not in _DTYPES:
            raise InputError(f"input dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.size_rule not in ("fixed", "multiple", "any", "fit"):
            raise InputError(f"size rule must be fixed, multiple, any or fit, got {self.size_rule!r}")
        if self.resize not in ("resize", "letterbox"):
            raise InputError(f"resize mode must be resize or letterbox, got {self.resize!r}")
        if self.anchor not in ANCHORS:
            raise InputError(f"letterbox anchor must be center or top-left, got {self.anchor!r}")
        object.__setattr__(self, "pad_value", _pad_value(self.pad_value))
        if self.size_rule in ("fixed", "fit") and self.size is None:
            raise InputError(f"a {self.size_rule}-size input spec needs a size", fix="pass size=ImageShape(h, w)")
        if self.size_rule in ("multiple", "fit") and (not isinstance(self.multiple, int) or self.multiple < 1):
            raise InputError(f"size multiple must be a positive integer, got {self.multiple!r}")
        for key in ("mean", "std"):
            v = tuple(float(x) for x in getattr(self, key))
            if len(v) != 3:
                raise InputError(f"input {key} needs 3 values (one per channel), got {v}")
            object.__setattr__(self, key, v)
        if any(s == 0 for s in self.std):
            raise InputError(f"input std has a zero: {self.std}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, numbers.Real) or not math.isfinite(self.scale) \
                or self.scale <= 0:
            raise InputError(f"input scale must be a finite number > 0, got {self.scale!r}",
                             fix="1/255 for models fed 0-1 pixels, 1 for 0-255 ones")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):  # NaN: every prediction the same nonsense
            raise InputError(f"input mean {list(self.mean)} and std {list(self.std)} must be finite numbers",
                             fix="the exporter's normalisation, e.g. mean 0.485,0.456,0.406 std 0.229,0.224,0.225")
        if max(self.mean) > 1.5 and float(self.scale) < 0.1:
            raise InputError(
                f"input mean {self.mean} is in 0-255 units but scale is {self.scale:g}: pixels would be scaled to "
                "0-1 before subtracting it, giving garbage inputs",
                fix="pass --scale 1 (mean/std in 0-255 units; scale=1.0 in InputSpec), or give mean/std in 0-1 units "
                "(e.g. 0.485,0.456,0.406)",
            )
        if self.size is not None and not isinstance(self.size, ImageShape):
            object.__setattr__(self, "size", ImageShape(*self.size))

    # ---- sizes -------------------------------------------------------------------------------
    def network_shape(self, image: ImageShape) -> ImageShape:
        """The spatial size of the network input for an image of this size."""
        if self.size_rule == "fixed":
            assert self.size is not None
            return self.size
        if self.size_rule == "multiple":
            m = self.multiple
            return ImageShape(max(m, int(round(image.height / m)) * m), max(m, int(round(image.width / m)) * m))
        if self.size_rule == "fit":
            c, m = self.fit_shape(image), self.multiple
            return ImageShape(-(-c.height // m) * m, -(-c.width // m) * m)
        return image

    def fit_shape(self, image: ImageShape) -> ImageShape:
        """The size ``"fit"`` scales an image to: MMCV's ``rescale_size`` with ``keep_ratio`` (MMDeploy's SDK
        ``Resize``): the long side within the longer of ``size``'s sides, the short within the shorter."""
        assert self.size is not None
        long_side, short_side = max(self.size.hw), min(self.size.hw)
        r = min(long_side / max(image.hw), short_side / min(image.hw))
        return ImageShape(max(1, int(image.height * r + 0.5)), max(1, int(image.width * r + 0.5)))

    def tensor_shape(self, image: ImageShape, batch: int = 1) -> tuple[int, ...]:
        s = self.network_shape(image)
        return (batch, 3, s.height, s.width) if self.layout == "NCHW" else (batch, s.height, s.width, 3)

    # ---- the one preprocessing path ---------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, PreprocessMeta]:
        """RGB ``uint8 [H, W, 3]`` -> network tensor ``[1, ...]`` (layout, colour, dtype as spec'd)."""
        import cv2

        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"expected an RGB image uint8 [H, W, 3], got {getattr(image, 'shape', type(image).__name__)}"
            )
        if image.dtype != np.uint8:
            raise InputError(f"expected a uint8 image, got {image.dtype}", fix="convert with image.astype(np.uint8)")
        original = ImageShape.of(image)
        net = self.network_shape(original)
        if self.size_rule == "fit" or (self.resize == "letterbox" and net != original):
            if self.size_rule == "fit":
                content = self.fit_shape(original)
                top, left = (0, 0) if self.anchor == "top-left" else \
                    ((net.height - content.height) // 2, (net.width - content.width) // 2)
            else:
                content, top, left = self.letterbox_box(original, net)
            canvas = np.full((net.height, net.width, 3), self.pad_value, np.uint8)
            canvas[top : top + content.height, left : left + content.width] = image if content == original else \
                cv2.resize(image, content.wh, interpolation=cv2.INTER_LINEAR)
            resized = canvas
        else:
            content, top, left = net, 0, 0
            resized = image if net == original else cv2.resize(image, net.wh, interpolation=cv2.INTER_LINEAR)
        if self.dtype == "uint8":
            x = np.ascontiguousarray(resized[..., ::-1] if self.color == "BGR" else resized)
        elif self.layout == "NCHW":  # straight into planes: no [H, W, 3] float image and no transposing copy
            x = self._normalize_planes(resized)
            return (x if self.dtype == "float32" else x.astype(np.float16))[None], \
                PreprocessMeta(original, net, content, top, left)
        else:
            x = self.normalize(resized)
            if self.dtype == "float16":
                x = x.astype(np.float16)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        x = np.ascontiguousarray(x[None])
        return x, PreprocessMeta(original, net, content, top, left)

    def letterbox_box(self, original: ImageShape, net: ImageShape) -> tuple[ImageShape, int, int]:
        """``(content, top, left)``: the size the image is scaled to inside a ``net`` canvas (its aspect kept)
        and where its top-left corner sits. ``center``: Ultralytics' ``LetterBox`` (``round``: half to even);
        ``top-left``: MMCV's ``rescale_size`` / MMDeploy's ``Resize`` (``int(x * scale + 0.5)``), capped at
        the canvas (their ``Pad`` then fills the bottom and right)."""
        r = min(net.height / original.height, net.width / original.width)
        if self.anchor == "top-left":
            content = ImageShape(min(net.height, max(1, int(original.height * r + 0.5))),
                                 min(net.width, max(1, int(original.width * r + 0.5))))
            return content, 0, 0
        content = ImageShape(max(1, round(original.height * r)), max(1, round(original.width * r)))
        return content, (net.height - content.height) // 2, (net.width - content.width) // 2

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` -> ``float32 [H, W, 3]`` in the spec's colour order, each channel
        ``(pixel * scale - mean) / std``: the pixel step of :meth:`preprocess` without resizing, layout
        or batch axis (the trainer feeds its augmented crops through it)."""
        x = image[..., ::-1] if self.color == "BGR" else image
        mul, add = self._affine()
        return x.astype(np.float32) * mul + add

    def _normalize_planes(self, image: np.ndarray) -> np.ndarray:
        """:meth:`normalize` as ``float32 [3, H, W]``, bit for bit (the same two float32 operations per
        pixel), one channel plane at a time: 5-6x faster than normalising ``[H, W, 3]`` and then
        transposing it into a contiguous CHW copy."""
        import cv2

        mul, add = self._affine()
        planes = cv2.split(np.ascontiguousarray(image))
        if self.color == "BGR":
            planes = planes[::-1]
        out = np.empty((3, *image.shape[:2]), np.float32)
        for c, plane in enumerate(planes):
            np.multiply(plane, mul[c], out=out[c])
            out[c] += add[c]
        return out

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mul, add)`` float32 ``[3]`` with ``x * mul + add == (x * scale - mean) / std``; cached per
        (mean, std, scale), read-only."""
        return _affine(self.mean, self.std, float(self.scale))

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = None if self.size is None else {"height": self.size.height, "width": self.size.width}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if isinstance(self.pad_value, tuple):
            d["pad_value"] = list(self.pad_value)
        if self.anchor == "center":  # the default: manifests written before the field existed read the same
            del d["anchor"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown input spec field(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if d.get("size") is not None:
            s = d["size"]
            if not (isinstance(s, dict) and {"height", "width"} <= set(s)) and not (
                    isinstance(s, (list, tuple)) and len(s) == 2):  # "160x120" was "takes 3 positional arguments"
                raise InputError(f"input size must be {{\"height\": H, \"width\": W}} or [H, W], got {s!r}")
            hw = (s["height"], s["width"]) if isinstance(s, dict) else tuple(s)
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) or isinstance(v, float)
                       and v.is_integer() for v in hw):  # NaN or [320] gave Python's own words
                raise InputError(f"input size must be whole numbers of pixels, got {s!r}",
                                 fix='e.g. "size": {"height": 320, "width": 640}')
            d["size"] = ImageShape(int(hw[0]), int(hw[1]))
        for key in ("mean", "std"):
            if key in d:
                v = d[key]
                if not isinstance(v, (list, tuple)) or not all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                                               for x in v):  # "0.5" was read character by character
                    raise InputError(f"input {key} must be a list of numbers, one per channel, got {v!r}")
                d[key] = tuple(v)
        return cls(**d)
