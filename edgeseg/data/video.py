"""The one OpenCV video reader: RGB frames and their presentation times from a file or a capture device.

Shared by the calibration readers (:mod:`edgeseg.quant.calibration`, uniform and scene-change
sampling of video files) and the OpenCV stream source (:mod:`edgeseg.stream.sources.opencv_source`);
it lives in ``data`` because that is the lowest package both may import (tests/test_layering.py).

    with VideoReader("clip.mp4") as video:        # raises DataError (or the error asked for) if unopenable
        video.frame_count, video.fps               # what the container announces (None when it does not)
        for f in video.frames():                   # VideoFrame(index, image RGB uint8 [H, W, 3], pts_ns)
            ...
    count_frames("clip.mp4")                       # frames that really decode (containers can be wrong)

OpenCV is imported when a reader is opened (``import edgeseg`` stays light).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import DataError, EdgesegError


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: ``index`` (0-based decode order), ``image`` RGB ``uint8 [H, W, 3]``,
    ``pts_ns`` (the capture's position in nanoseconds when the frame was read)."""

    index: int
    image: np.ndarray
    pts_ns: int


_FFMPEG_ONCE = threading.Lock()
_ffmpeg_read = False  # OpenCV has opened a capture in this process (and read OPENCV_FFMPEG_LOGLEVEL)


def _open_capture(cv2: Any, target: Any, params: list) -> Any:
    """``cv2.VideoCapture``; the process's first one with FFmpeg quieted (:func:`_quiet_ffmpeg`), the variable
    removed again once OpenCV has read it (child processes keep their own FFmpeg messages). One thread sets it."""
    global _ffmpeg_read
    if not _ffmpeg_read:
        with _FFMPEG_ONCE:
            if not _ffmpeg_read:
                quieted = _quiet_ffmpeg()
                try:
                    return cv2.VideoCapture(target, cv2.CAP_ANY, params)
                finally:
                    _ffmpeg_read = True
                    if quieted:
                        os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    return cv2.VideoCapture(target, cv2.CAP_ANY, params)


def _quiet_ffmpeg() -> bool:
    """FFmpeg's own lines (``[h264 @ 0x...] error while decoding MB ...``, dozens for one damaged stretch)
    kept off the terminal: the reader reports what they mean (``decoded N of the M frames``). OpenCV reads
    ``OPENCV_FFMPEG_LOGLEVEL`` when it opens its first capture; a value the user set is kept, and with debug
    logging (``--verbose``) FFmpeg speaks. True when it set the variable (the caller removes it once the
    capture is open, so child processes do not inherit it)."""
    import logging

    if logging.getLogger("edgeseg").isEnabledFor(logging.DEBUG) or "OPENCV_FFMPEG_LOGLEVEL" in os.environ:
        return False
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "8"  # AV_LOG_FATAL: errors of single frames stay quiet
    return True


class VideoReader:
    """``cv2.VideoCapture`` on a file path, a device path or a device index, giving RGB frames.

    error/name/fix: the exception type, how its message names the thing (default ``video TARGET``) and
    the fix, so each caller's error names what the user gave it (calibration: ``DataError`` naming the
    calibration video; the stream source: ``StreamError`` naming the source URI). ``threads``: FFmpeg's
    decoding threads (``CAP_PROP_N_THREADS``; 0 or None: OpenCV's choice).
    """

    def __init__(self, target: str | int | Path, *, error: type[EdgesegError] = DataError, name: str | None = None,
                 fix: str = "check the path (or device) and that OpenCV can decode it (codec, container)",
                 threads: int | None = None):
        import cv2

        self.target = target
        params = [cv2.CAP_PROP_N_THREADS, int(threads)] if threads else []
        self._cap: Any = _open_capture(cv2, target if isinstance(target, int) else str(target), params)
        if not self._cap.isOpened():
            self._cap.release()
            self._cap = None
            raise error(f"OpenCV cannot open {name or f'video {target}'}", fix=fix)
        n, fps = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(self._cap.get(cv2.CAP_PROP_FPS))
        #: frames the container announces (None when it does not say; live devices say nothing useful)
        self.frame_count: int | None = n if n > 0 else None
        #: the stream's nominal frame rate, or None
        self.fps: float | None = fps if fps > 0 else None

    def frames(self, stop: Callable[[], bool] | None = None) -> Iterator[VideoFrame]:
        """Frames in decode order until the end of the video (or until ``stop()`` is true)."""
        import cv2

        index = 0
        while self._cap is not None and not (stop is not None and stop()):
            ok, bgr = self._cap.read()
            if not ok:
                return
            pts = int(self._cap.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
            yield VideoFrame(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pts)
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_video(path: str | Path, **kw: Any) -> Iterator[VideoFrame]:
    """Every frame of a video file, opened and closed around the iteration (``kw``: :class:`VideoReader`'s)."""
    with VideoReader(path, **kw) as video:
        yield from video.frames()


def count_frames(path: str | Path, **kw: Any) -> int:
    """How many frames of the file really decode (the container's count can be wrong)."""
    return sum(1 for _ in read_video(path, **kw))
