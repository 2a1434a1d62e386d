"""Training augmentation in numpy/OpenCV: random scale, crop with ignore padding, flip, colour jitter.

All randomness comes from the ``numpy.random.Generator`` passed in, so a sample's augmentation is
a function of ``(seed, epoch, index)`` only, whatever the number of loader workers.
Images are RGB ``uint8 [H, W, 3]``; labels ``uint8 [H, W]`` with 255 = ignore.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..structures import ImageShape

IGNORE_INDEX = 255


@dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment` does.

    size:        the network input size; the (scaled) image is first resized so that it matches
                 this size at scale 1, then randomly scaled by ``scale`` and cropped to ``size``.
    scale:       (min, max) random scale factor, uniform.
    hflip:       flip horizontally with probability 0.5.
    brightness, contrast, saturation: colour jitter amplitudes (factor uniform in [1-a, 1+a]).
    pad_value:   image padding when a scaled image is smaller than the crop (labels pad with 255).
    crop:        the training crop, when smaller than ``size`` (cheaper steps on a CPU; the model
                 is fully convolutional, so it still runs at ``size``). None: crop to ``size``.
    aspect:      random aspect change ``a``: after the scale, the width is stretched by ``sqrt(r)`` and
                 the height by ``1 / sqrt(r)``, ``r`` log-uniform in ``[1/(1+a), 1+a]`` (area kept).
                 Other cameras' frames reach the network stretched by other factors (a 16:9 or a 2:1
                 frame resized to 4:3); 0 (default) draws nothing, so runs without it are unchanged.
    """

    size: ImageShape
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    pad_value: tuple[int, int, int] = (124, 116, 104)
    crop: ImageShape | None = None
    aspect: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise InputError(f"augmentation scale range must be 0 < min <= max, got {self.scale}")
        if not 0 <= self.aspect <= 3:
            raise InputError(f"augmentation aspect change must be in [0, 3], got {self.aspect}",
                             fix="e.g. 0.3: frames stretched by up to 1.3x in width or height")


def random_scale(image: np.ndarray, labels: np.ndarray, factor_hw: tuple[float, float]):
    """Resize by (fy, fx): bilinear for the image, nearest for the labels."""
    import cv2

    h, w = labels.shape
    size = (max(1, round(w * factor_hw[1])), max(1, round(h * factor_hw[0])))
    if size == (w, h):
        return image, labels
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
        cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST),
    )


def pad_to(image: np.ndarray, labels: np.ndarray, size: ImageShape, pad_value=(0, 0, 0)):
    """Pad bottom/right up to ``size``: the image with ``pad_value``, the labels with 255 (ignored)."""
    h, w = labels.shape
    ph, pw = max(0, size.height - h), max(0, size.width - w)
    if ph == 0 and pw == 0:
        return image, labels
    img = np.empty((h + ph, w + pw, 3), np.uint8)
    img[...] = np.asarray(pad_value, np.uint8)
    img[:h, :w] = image
    lab = np.full((h + ph, w + pw), IGNORE_INDEX, np.uint8)
    lab[:h, :w] = labels
    return img, lab


def random_crop(image, labels, size: ImageShape, rng: np.random.Generator, pad_value=(0, 0, 0)):
    """A random ``size`` window (after padding with ignore where the image is smaller)."""
    image, labels = pad_to(image, labels, size, pad_value)
    h, w = labels.shape
    top = int(rng.integers(0, h - size.height + 1))
    left = int(rng.integers(0, w - size.width + 1))
    return (
        image[top : top + size.height, left : left + size.width],
        labels[top : top + size.height, left : left + size.width],
    )


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float, saturation: float):
    """Brightness, contrast and saturation factors, each uniform in ``[1 - a, 1 + a]``, in random order."""
    x = image.astype(np.float32)
    ops = [("b", brightness), ("c", contrast), ("s", saturation)]
    for k in rng.permutation(len(ops)):
        name, amp = ops[int(k)]
        if amp <= 0:
            continue
        f = float(rng.uniform(1.0 - amp, 1.0 + amp))
        if name == "b":
            x = x * f
        elif name == "c":
            x = (x - x.mean()) * f + x.mean()
        else:
            grey = x @ np.asarray([0.299, 0.587, 0.114], np.float32)
            x = (x - grey[..., None]) * f + grey[..., None]
        np.clip(x, 0, 255, out=x)
    return np.rint(x).astype(np.uint8)


def augment(image: np.ndarray, labels: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator):
    """The full training augmentation; returns image ``uint8 [h, w, 3]`` and labels ``uint8 [h, w]`` at ``cfg.crop or cfg.size``."""
    h, w = labels.shape
    s = float(rng.uniform(*cfg.scale))
    fy, fx = s * cfg.size.height / h, s * cfg.size.width / w
    if cfg.aspect > 0:
        r = float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(cfg.aspect)))
        fy, fx = fy / np.sqrt(r), fx * np.sqrt(r)
    image, labels = random_scale(image, labels, (fy, fx))
    image, labels = random_crop(image, labels, cfg.crop or cfg.size, rng, cfg.pad_value)
    if cfg.hflip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    image = color_jitter(image, rng, cfg.brightness, cfg.contrast, cfg.saturation)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)
