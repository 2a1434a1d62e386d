"""A folder of image files as a stream: ``edgeseg run --source frames/`` (or ``dir://frames``); one image file
(``--source photo.jpg``) is a stream of one frame, read the same way.

Files with an image suffix (PNG, JPEG, BMP, TIFF, WebP, PPM/PGM; GIF, its first frame, where OpenCV reads GIFs) are
frames, sorted by file name. A
frame's ``index`` is its position in that order, its ``pts_ns`` is ``index / fps`` (``fps``: the
constructor's, else ``?fps=`` in the URI, else 25), ``meta["stem"]`` is the file stem and
``meta["path"]`` the file. The first frame carries ``meta["discontinuity"] = True``.

A file source: it blocks, never drops. An image that does not decode does not stop the stream: its
frame is a black image of the folder's frame size with ``meta["error"]`` set, which the pipeline
counts as an error frame (``on_error``: skipped, or the run stops). ``realtime=True`` paces the
frames at ``fps`` (still without drops).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ...data.io import IMAGE_SUFFIXES, frame_files, frame_suffixes, left_out, read_image
from ...errors import EdgesegError, InputError
from ...structures.frame import Frame
from ..base import Source
from .uri import VIDEO_SUFFIXES, parse_source

log = logging.getLogger(__name__)
DEFAULT_FPS = 25.0


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file with a still-image suffix (:data:`IMAGE_SUFFIXES`)."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


class FolderSource(Source):
    """``FolderSource("frames/")``, ``FolderSource("dir://frames?fps=30")``."""

    live = False

    def __init__(self, uri: str, *, name: str | None = None, realtime: bool = False, fps: float | None = None,
                 **_: object):
        super().__init__()
        self.spec = parse_source(uri)
        #: one image file (``--source photo.jpg``): one frame, read as every other image is (EXIF orientation, 16-bit,
        #: CMYK); through a video decoder it kept the stored orientation and GStreamer read 16-bit RGB shifted
        self.single = self.spec.scheme == "file" and is_image_file(self.spec.target)
        if self.spec.scheme != "folder" and not self.single:
            raise InputError(f"FolderSource reads a folder of images or one image, not {self.spec.scheme!r} ({uri})")
        self.uri = str(uri)
        self.source_id = name or self.uri
        self.root = Path(self.spec.target)
        opt_fps = self.spec.opt("fps")
        try:
            self.fps = float(fps or (opt_fps and float(opt_fps)) or DEFAULT_FPS)
        except ValueError:
            raise InputError(f"source {uri!r}: fps={opt_fps!r} is not a number") from None
        if self.fps <= 0:
            raise InputError(f"source {uri!r}: fps must be > 0, got {self.fps}")
        self.realtime = realtime
        self.files: list[Path] = []
        self._first: tuple[int, np.ndarray] | None = None  # the first readable image (read once, at open)
        self._stopping = threading.Event()

    def open(self) -> "FolderSource":
        if self.files:
            return self
        if self.single:
            self.files, self.expected_frames = [self.root], 1
            self._first = (0, read_image(self.root))  # an unreadable image: its error, now (a stream of one)
            return self
        if not self.root.is_dir():
            raise InputError(f"image folder {self.root} does not exist", fix="check the path")
        files = frame_files(self.root)
        if not files:
            videos = sorted(p.name for p in self.root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if videos:  # a folder of clips is not a source: each clip is
                shown = ", ".join(videos[:3]) + (f" and {len(videos) - 3} more" if len(videos) > 3 else "")
                raise InputError(f"folder {self.root} holds no images but {len(videos)} video file(s) ({shown}); "
                                 "a folder source is a sequence of image frames",
                                 fix=f"pass each video as a source of its own: --source {self.root / videos[0]}"
                                     + (f" --source {self.root / videos[1]} ... (frames interleaved)" if len(videos) > 1 else ""))
            raise InputError(f"image folder {self.root} holds no images",
                             fix=f"put frames there as image files ({', '.join(IMAGE_SUFFIXES)}), in number order")
        for i, p in enumerate(files):  # the frame size, for the frames of unreadable files
            try:
                self._first = (i, read_image(p))
                break
            except EdgesegError as e:
                log.warning("%s", e)
        if self._first is None:
            raise InputError(f"image folder {self.root}: none of its {len(files)} images can be decoded",
                             fix="check that the files are images (not truncated or renamed files)")
        note = left_out(self.root, files)
        if note:
            log.warning("%s (frames: %s)", note, ", ".join(frame_suffixes()))
        self.files = files
        self.expected_frames = len(files)
        return self

    def _image(self, i: int, path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, str | None]:
        if self._first is not None and self._first[0] == i:
            image, self._first = self._first[1], None
            return image, None
        try:
            return read_image(path), None
        except EdgesegError as e:
            return np.zeros(shape, np.uint8), str(e)

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        period = 1.0 / self.fps
        shape = self._first[1].shape if self._first is not None else (1, 1, 3)
        t0 = time.perf_counter()
        for i, path in enumerate(self.files):
            if self._stopping.is_set():
                return
            image, error = self._image(i, path, shape)
            if error is None:
                shape = image.shape
            if self.realtime and (wait := t0 + i * period - time.perf_counter()) > 0:
                time.sleep(wait)
            meta: dict = {"stem": path.stem, "path": str(path)}
            if i == 0:
                meta["discontinuity"] = True
            if error is not None:
                meta["error"] = error
            yield Frame(image, int(round(i * period * 1e9)), i, self.source_id, meta)

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self.stop()
