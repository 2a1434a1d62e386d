"""Several sources as one stream (the first half of a DeepStream-style stream muxer).

Each source runs in its own reader thread; frames arrive interleaved in arrival order, each keeping
its own ``source_id`` and per-source ``index``. Batching them for the model is the inference stage's
job (``InferenceStage(max_batch=N, batch_timeout_s=T)``). When any source is live the shared buffer
drops the oldest frame under back-pressure (counted); otherwise it blocks. A source that fails is
logged and the others go on; the first failure is raised when all have ended.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Iterator, Sequence

from ...errors import InputError
from ...structures.frame import Frame
from ..base import FrameBuffer, Source

log = logging.getLogger("edgeseg.stream")


class MultiSource(Source):
    def __init__(self, sources: Sequence[Source | str], buffer_size: int = 8, **options: Any):
        super().__init__()
        from . import open_source

        if not sources:
            raise InputError("MultiSource needs at least one source")
        self.sources = [open_source(s, **options) if isinstance(s, str) else s for s in sources]
        self.uri = "mux(" + ", ".join(s.uri or type(s).__name__ for s in self.sources) + ")"
        self.live = any(s.live for s in self.sources)
        self._buf = FrameBuffer(buffer_size, drop_oldest=self.live)
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        counts = [s.expected_frames for s in self.sources]
        self.expected_frames = sum(counts) if all(c is not None for c in counts) else None  # type: ignore[arg-type]

    @property
    def parts(self) -> Sequence[Source]:
        """The merged sources: ``dropped`` and ``reconnect_gaps_s`` (from :class:`Source`) add theirs."""
        return getattr(self, "sources", ())

    def open(self) -> "MultiSource":
        for s in self.sources:
            s.open()
        self.fps = max((s.fps for s in self.sources if s.fps), default=None)
        return self

    def _read(self, source: Source) -> None:
        try:
            for frame in source:
                if not self._buf.put(frame):
                    return
        except Exception as e:
            log.error("source %s failed: %s", source.uri, e)
            self._errors.append(e)

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        self._threads = [threading.Thread(target=self._read, args=(s,), name=f"edgeseg-mux-{i}", daemon=True)
                         for i, s in enumerate(self.sources)]
        for t in self._threads:
            t.start()
        closer = threading.Thread(target=self._close_when_done, daemon=True)
        closer.start()
        while True:
            try:
                yield self._buf.get()
            except EOFError:
                break
        if self._errors:
            raise self._errors[0]

    def _close_when_done(self) -> None:
        for t in self._threads:
            t.join()
        self._buf.close()

    def stop(self) -> None:
        for s in self.sources:
            s.stop()
        self._buf.close()

    def close(self) -> None:
        self._buf.close()
        for s in self.sources:
            s.close()
        for t in self._threads:
            t.join(2.0)
