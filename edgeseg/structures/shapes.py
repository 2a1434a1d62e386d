"""Typed image shapes: always (height, width), never a bare pair."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True, order=True)
class ImageShape:
    """An image size in pixels, ``height`` first (the numpy order)."""

    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, (int,)) or isinstance(v, bool) or v <= 0:
                try:
                    iv = int(v)
                except (TypeError, ValueError):
                    iv = -1
                if iv <= 0 or iv != v:
                    raise InputError(f"ImageShape.{name} must be a positive integer, got {v!r}",
                                     fix="give sizes as WIDTHxHEIGHT with both at least 1, e.g. 480x360")
                object.__setattr__(self, name, iv)

    @classmethod
    def parse(cls, text: str) -> "ImageShape":
        """Parse ``"WxH"`` (the command-line convention, width first, as in ``--size 480x360``)."""
        m = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", str(text))
        if not m:
            raise InputError(f"cannot read image size {text!r}", fix="write it as WIDTHxHEIGHT, e.g. 480x360")
        return cls(height=int(m.group(2)), width=int(m.group(1)))

    @classmethod
    def of(cls, array) -> "ImageShape":
        """The shape of an ``[H, W, ...]`` array."""
        return cls(int(array.shape[0]), int(array.shape[1]))

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def wh(self) -> tuple[int, int]:
        """(width, height): the order OpenCV's ``dsize`` wants."""
        return (self.width, self.height)

    @property
    def area(self) -> int:
        return self.height * self.width

    def __str__(self) -> str:  # the CLI convention
        return f"{self.width}x{self.height}"
