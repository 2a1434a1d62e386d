"""A generated stream with exact ground truth: ``synthetic://`` frames from
:class:`edgeseg.data.synthetic.SceneGenerator`.

::

    synthetic://?seed=0&size=480x360&fps=25&frames=150&objects=6&split=demo&live=0&truth=semantic

Frame ``t`` is ``SceneGenerator(size, seed=(seed, split_stream(split)), max_objects=objects).render(t)``
(``t`` from ``start``, default 0), so a run is reproducible and its ground truth is exact. The split
(default ``demo``) gives the scenes their own seed stream: they are never the scenes the ``shapes``
model was trained (``train``) or validated (``val``) on. Each frame carries its truth in
``Frame.meta``:

* ``meta["labels"]``: ``uint8 [H, W]`` semantic class ids (index into ``meta["classes"]``, no void);
* ``meta["classes"]``: the generator's class names (``sky, ground, road, circle, rectangle, triangle``);
* ``meta["truth"]``: the whole :class:`~edgeseg.data.synthetic.SyntheticFrame` (instances, panoptic),
  only with ``truth=full`` (it costs instance masks per frame).

``pts_ns = round(t * 1e9 / fps)``. By default the source behaves like a file (it blocks, nothing is
lost); ``live=1`` (or ``realtime=True``) produces frames on a clock at ``fps`` from a thread and drops
the oldest buffered frame when the pipeline is slower (counted in ``dropped``; ``frames + dropped``
equals the frames generated). Without ``frames`` the stream is endless.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

from ...errors import InputError
from ...structures import ImageShape
from ...structures.frame import Frame
from ..base import RECEIVED, FrameBuffer, Source

SCHEME = "synthetic"
DEFAULT_SIZE = ImageShape(360, 480)
DEFAULT_FPS = 25.0
_OPTIONS = ("seed", "size", "fps", "frames", "start", "objects", "split", "live", "truth")
TRUTH_LEVELS = ("semantic", "full")
#: the largest generated frame, in pixels (8K UHD, 7680x4320): the generator's int64 work arrays for a larger
#: one take gigabytes (100000x100000 asked 74.5 GiB and ended in a MemoryError traceback)
MAX_PIXELS = 7680 * 4320


def is_synthetic_uri(uri: Any) -> bool:
    return isinstance(uri, str) and uri.strip().lower().startswith(f"{SCHEME}://")


def synthetic_uri(seed: int = 0, size: ImageShape = DEFAULT_SIZE, fps: float = DEFAULT_FPS,
                  frames: int | None = None, **extra: Any) -> str:
    """``synthetic://?seed=..&size=WxH&fps=..[&frames=N][&key=value...]``."""
    parts = [f"seed={int(seed)}", f"size={size.width}x{size.height}", f"fps={fps:g}"]
    if frames is not None:
        parts.append(f"frames={int(frames)}")
    parts += [f"{k}={v}" for k, v in extra.items() if v is not None]
    return f"{SCHEME}://?" + "&".join(parts)


def check_size(size: ImageShape, what: str) -> None:
    """Refuse generated frames over :data:`MAX_PIXELS`, naming ``what``."""
    if size.height * size.width > MAX_PIXELS:
        raise InputError(f"{what} {size.width}x{size.height} is too large to generate (at most 33.2 million pixels, 8K: 7680x4320)",
                         fix="e.g. 1920x1080; a larger frame takes gigabytes to generate")


def _parse(uri: str) -> dict[str, str]:
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != SCHEME:
        raise InputError(f"{uri!r} is not a {SCHEME}:// source")
    opts = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise InputError(f"source {uri!r}: unknown option(s) {', '.join(unknown)}",
                         fix=f"{SCHEME}:// takes {', '.join(_OPTIONS)}")
    return opts


def _number(uri: str, opts: dict[str, str], key: str, kind: type, default: Any, minimum: float) -> Any:
    if key not in opts:
        return default
    try:
        value = kind(opts[key])
    except ValueError:
        raise InputError(f"source {uri!r}: option {key}={opts[key]!r} is not a{'n integer' if kind is int else ' number'}") from None
    if kind is float and not math.isfinite(value):
        raise InputError(f"source {uri!r}: option {key}={opts[key]!r} is not a finite number")
    if value < minimum:
        raise InputError(f"source {uri!r}: option {key} must be >= {minimum:g}, got {opts[key]}")
    return value


class SyntheticSource(Source):
    """``SyntheticSource("synthetic://?seed=0&size=480x360&fps=25&frames=150")`` (see the module docstring).

    ``realtime=True`` is the same as ``live=1``; ``fps`` (keyword) overrides the URI's rate; ``name``
    becomes the frames' ``source_id`` (default: the URI).
    """

    def __init__(self, uri: str = f"{SCHEME}://", *, name: str | None = None, realtime: bool = False,
                 buffer_size: int = 4, fps: float | None = None, **_: Any):
        super().__init__()
        from ...data.synthetic import SceneGenerator, split_stream

        opts = _parse(uri)
        self.uri = str(uri)
        self.source_id = name or self.uri
        try:
            self.size = ImageShape.parse(opts["size"]) if "size" in opts else DEFAULT_SIZE
        except Exception as e:
            raise InputError(f"source {uri!r}: size={opts['size']!r} is not WxH ({e})") from None
        check_size(self.size, f"source {uri!r}: size")
        self.fps = float(fps or _number(uri, opts, "fps", float, DEFAULT_FPS, 1e-3))
        self.seed = _number(uri, opts, "seed", int, 0, 0)
        self.start = _number(uri, opts, "start", int, 0, 0)
        self.frames: int | None = _number(uri, opts, "frames", int, None, 0)
        self.split = opts.get("split", "demo") or "demo"
        self.truth = opts.get("truth", "semantic")
        if self.truth not in TRUTH_LEVELS:
            raise InputError(f"source {uri!r}: truth={self.truth!r}", fix=f"use one of {', '.join(TRUTH_LEVELS)}")
        self.live = realtime or opts.get("live", "0").lower() in ("1", "true", "yes", "on")
        self.expected_frames = self.frames
        self.generator = SceneGenerator(self.size, (self.seed, split_stream(self.split)),
                                        _number(uri, opts, "objects", int, 6, 0))
        self._buffer_size = buffer_size
        self._buf: FrameBuffer | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._generated = 0

    # ---- frames -------------------------------------------------------------------------------
    def frame(self, t: int) -> Frame:
        """Frame ``t`` with its ground truth in ``meta`` (pure: the same whatever came before)."""
        meta: dict[str, Any] = {"classes": self.generator.classes, "t": int(t)}
        if self.truth == "full":
            truth = self.generator.render(t)
            image, meta["labels"], meta["truth"] = truth.image, truth.labels, truth
        else:
            image, meta["labels"] = self.generator.render_semantic(t)
        return Frame(image, int(round(t * 1e9 / self.fps)), t - self.start, self.source_id, meta)

    def _times(self) -> Iterator[int]:
        t = self.start
        while (self.frames is None or t < self.start + self.frames) and not self._stopping.is_set():
            yield t
            t += 1

    @property
    def generated(self) -> int:
        """Frames rendered so far (delivered + dropped)."""
        return self._generated

    def __iter__(self) -> Iterator[Frame]:
        self._stopping.clear()
        if not self.live:
            for t in self._times():
                self._generated += 1
                yield self.frame(t)
            return
        self._buf = FrameBuffer(self._buffer_size, drop_oldest=True)
        self._thread = threading.Thread(target=self._produce, name="edgeseg-synthetic", daemon=True)
        self._thread.start()
        while True:
            try:
                yield self._buf.get()
            except EOFError:
                return

    def _produce(self) -> None:
        """Live mode: frame t is due at ``t0 + (t - start) / fps``; a slow consumer loses the oldest."""
        assert self._buf is not None
        t0 = time.perf_counter()
        try:
            for t in self._times():
                wait = t0 + (t - self.start) / self.fps - time.perf_counter()
                if wait > 0 and self._stopping.wait(wait):
                    break
                self._generated += 1
                frame = self.frame(t)
                frame.meta[RECEIVED] = time.time_ns()  # made now: a slow consumer takes it later
                if not self._buf.put(frame):
                    break
        finally:
            self._buf.close()

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self._stopping.set()
        if self._buf is not None:
            self._buf.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
            self._thread = None
