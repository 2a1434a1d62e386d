"""Helpers shared by the stream tests: known frame sources and video decoding."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from edgeseg.stream import Source
from edgeseg.structures import Frame


def make_images(n: int, shape=(48, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8) for _ in range(n)]


class ListSource(Source):
    """Frames from a list of images (a file-like source: it blocks, never drops)."""

    def __init__(self, images: list[np.ndarray], name: str = "list"):
        super().__init__()
        self.images = images
        self.uri = name
        self.expected_frames = len(images)
        self._stop = False

    def __iter__(self) -> Iterator[Frame]:
        for i, img in enumerate(self.images):
            if self._stop:
                return
            yield Frame(img, i * 40_000_000, i, self.uri)

    def stop(self) -> None:
        self._stop = True


def decode_mp4_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, decoded by OpenCV (FFmpeg), RGB."""
    from video_ref import decode_video_rgb

    return decode_video_rgb(path)


def write_mp4(path: Path, images, fps: float = 25.0, backend: str = "gstreamer") -> Path:
    """``images`` (RGB) written by edgeseg's own MP4 sink."""
    from edgeseg.stream import Mp4Sink

    sink = Mp4Sink(path, fps=fps, backend=backend)
    sink.open()
    for i, image in enumerate(images):
        sink.write(Frame(image, index=i), None)
    sink.close()
    return path
