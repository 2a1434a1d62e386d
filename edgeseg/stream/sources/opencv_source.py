"""OpenCV sources: video files, V4L2 devices and image-folder sequences (used when GStreamer is absent).

Devices are live: a reader thread keeps grabbing and a :class:`FrameBuffer` drops the oldest frame
when the pipeline is slower than the camera. Files and folders block (nothing is lost). Videos and
devices are read by :class:`edgeseg.data.video.VideoReader`, the OpenCV reader calibration uses too.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...data.io import IMAGE_SUFFIXES, frame_files, read_image
from ...data.video import VideoReader
from ...errors import InputError, StreamError
from ...structures.frame import Frame
from ..base import RECEIVED, FrameBuffer, Source
from .uri import camera_device, parse_source, video_file

log = logging.getLogger("edgeseg.stream")

MAX_SKIPPED = 300  # failed reads in a row tried past a damaged stretch of a file before giving up


class OpenCVSource(Source):
    """``OpenCVSource("clip.mp4")``, ``OpenCVSource("v4l2:///dev/video0")``, ``OpenCVSource("frames/")``.

    ``realtime=True`` replays a file or folder at ``fps`` (the file's rate, else 25) with live semantics.
    ``decoder_threads``: FFmpeg's decoding threads (:func:`~edgeseg.stream.pipeline.decoder_threads`).
    """

    def __init__(self, uri: str, *, name: str | None = None, realtime: bool = False, buffer_size: int = 4,
                 fps: float | None = None, decoder_threads: int | None = None):
        from ..pipeline import decoder_threads as _decoder_threads

        super().__init__()
        self.decoder_threads = _decoder_threads(decoder_threads)
        self.spec = parse_source(uri)
        self.uri = str(uri)
        self.source_id = name or self.uri
        if self.spec.scheme not in ("file", "folder", "v4l2"):
            raise InputError(f"OpenCVSource reads files, image folders and V4L2 devices, not {self.spec.scheme!r} ({uri})",
                             fix="install GStreamer for rtsp://, test://, csi:// and launch strings")
        self.realtime = realtime
        self.live = realtime or self.spec.scheme == "v4l2"
        self.fps = fps
        self._buf = FrameBuffer(buffer_size, drop_oldest=True)
        self._video: VideoReader | None = None
        self._files: list[Path] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def open(self) -> "OpenCVSource":
        if self._video is not None or self._files:
            return self
        if self.spec.scheme == "folder":
            root = Path(self.spec.target)
            self._files = frame_files(root)
            if not self._files:
                raise InputError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            self.expected_frames = len(self._files)
            return self
        target: Any = self.spec.target
        if self.spec.scheme == "file":
            video_file(target)
        if self.spec.scheme == "v4l2":
            camera_device(target)
            target = int(target.rsplit("video", 1)[-1]) if target.rsplit("video", 1)[-1].isdigit() else target
        self._video = VideoReader(target, error=StreamError, name=repr(self.uri), threads=self.decoder_threads,
                                  fix="check the path/device and that the codec is supported")
        self.expected_frames = self._video.frame_count if self.spec.scheme == "file" else None
        self.fps = self.fps or self._video.fps
        return self

    def _read_all(self) -> Iterator[tuple[np.ndarray, int]]:
        if self._files:
            period = 1e9 / (self.fps or 25.0)
            for i, p in enumerate(self._files):
                yield read_image(p), int(i * period)  # InputError naming the file; non-ASCII paths work
            return
        assert self._video is not None  # opened by __iter__
        n = misses = runs = 0
        last_pts = -1
        while not self._stopping.is_set():
            got = 0
            for f in self._video.frames(stop=self._stopping.is_set):
                got += 1
                last_pts = f.pts_ns
                yield f.image, f.pts_ns
            n, misses, runs = n + got, (0 if got else misses + 1), runs + (got > 0)
            if not self._skips_damage(n, misses):
                break
        if not self._stopping.is_set():
            self._check_truncated(n, unbroken=runs <= 1, last_pts=last_pts)

    def _skips_damage(self, n: int, misses: int) -> bool:
        """Whether to read on after a failed read: a file that announces more frames may only be damaged
        there (a corrupt stretch), and FFmpeg decodes the frames after it. Reads past the real end fail
        at once, so trying up to the announced count (at most ``MAX_SKIPPED``) costs nothing."""
        want = self.expected_frames
        return self.spec.scheme == "file" and bool(want) and n < want and misses <= min(want - n, MAX_SKIPPED)

    def _check_truncated(self, n: int, unbroken: bool = False, last_pts: int = -1) -> None:
        """Fewer frames than the container announces is a truncated or corrupt file, unless the count was
        only an estimate (Matroska/WebM: duration x frame rate) of a variable-frame-rate file: the frames
        decoded in one run (no read failed before the end, as one does at corrupt data) and the last one
        is at the end of the duration (a truncated file's stops early)."""
        want = self.expected_frames
        if self.spec.scheme != "file" or not want or n >= want - 1:
            return
        fps = self._video.fps if self._video is not None else None
        if unbroken and fps and last_pts >= 0:
            slack = max(2, want // 100)
            if last_pts + (slack + 1) * 1e9 / fps >= want * 1e9 / fps:
                log.info("%s: %d frames, not the %d that duration x frame rate suggests: a variable frame rate",
                         self.spec.target, n, want)
                return
        raise StreamError(f"video file {self.spec.target} decoded {n} of the {want} frames its "
                          "container announces: the file is truncated or corrupt",
                          fix="every frame that decoded was processed; re-copy or re-record the file")

    def _pace(self) -> Iterator[tuple[np.ndarray, int]]:
        t0, pts0 = time.perf_counter(), None
        for image, pts in self._read_all():
            if self.realtime and self.spec.scheme != "v4l2":
                pts0 = pts if pts0 is None else pts0
                wait = (pts - pts0) / 1e9 - (time.perf_counter() - t0)
                if wait > 0:
                    time.sleep(wait)
            yield image, pts

    def _reader(self) -> None:
        try:
            for item in self._pace():
                if self._stopping.is_set() or not self._buf.put((*item, time.time_ns())):  # received, before the buffer
                    break
        except BaseException as e:
            self._error = e
        finally:
            self._buf.close()

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        index = 0
        if not self.live:
            for image, pts in self._read_all():
                if self._stopping.is_set():
                    return
                yield Frame(image, pts, index, self.source_id)
                index += 1
            return
        self._thread = threading.Thread(target=self._reader, name="edgeseg-opencv-source", daemon=True)
        self._thread.start()
        while True:
            try:
                (image, pts, received), dropped = self._buf.get_counted()
            except EOFError:
                break
            frame = Frame(image, pts, index + dropped, self.source_id)  # drops (older frames) leave gaps
            frame.meta[RECEIVED] = received
            yield frame
            index += 1
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stopping.set()
        self._buf.close()

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._video is not None:
            self._video.close()
            self._video = None
