"""Stream metrics: per-stage and end-to-end latency percentiles, throughput, drops, errors, reconnects.

Latencies are kept in a bounded ring per stage (the last ``window`` samples), so memory stays flat on
endless camera streams; totals (frames, errors, drops) are exact counters. Percentiles are computed by
:class:`edgeseg._timing.Latency` (re-exported here), the one implementation the benchmarks use too.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._timing import Latency

__all__ = ["Latency", "Recorder", "SourceFigures", "Stats"]  # Latency lives in edgeseg._timing, shared with the benchmarks


@dataclass(frozen=True)
class Stats:
    """What a pipeline run did.

    frames: frames the source delivered; processed: frames that reached every sink; fps: processed per
    second of wall time; stages: latency per stage (name -> Latency); end_to_end: from the source
    handing a frame over to the last sink finishing with it; drops: frames a live source discarded
    under back-pressure; errors: frames a stage failed on (they still reach the sinks, without result);
    reconnect_gaps_s: the time without frames around each reconnection of a live source; outages_at_stop_s: the
    time without frames, at the stop, of each live source lost and not back then (not a reconnection); by_source: each
    source's processed frames, fps and end-to-end latency (source id -> :class:`SourceFigures`; one with one source).
    """

    frames: int
    processed: int
    wall_s: float
    fps: float
    stages: dict[str, Latency]
    end_to_end: Latency
    drops: int
    errors: int
    error_messages: tuple[str, ...] = ()
    reconnect_gaps_s: tuple[float, ...] = ()
    stopped_by: str = "eos"  # eos | stop | max_frames | error
    fatal_error: str | None = None
    open_s: float = 0.0  # before the first frame: the source opened (connected), the model loaded and warmed up
    skipped_at_start: int = 0  # frames a live source sent while the model loaded (Source.skipped_at_start): not drops
    by_source: dict[str, "SourceFigures"] = field(default_factory=dict)
    outages_at_stop_s: tuple[float, ...] = ()

    @property
    def reconnects(self) -> int:
        return len(self.reconnect_gaps_s)

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON types; ``by_source`` is left out (``--stats-json`` puts each source's figures in its
        ``sources`` record, :func:`edgeseg.stream.api.stats_record`)."""
        d = asdict(self)
        d.pop("by_source")
        d["reconnects"] = self.reconnects
        return d

    def summary(self) -> str:
        e = self.end_to_end
        opened = f" (after {self.open_s:.1f}s opening the source and the model)" if self.open_s >= 1.0 else ""
        if self.skipped_at_start:
            opened += f" ({self.skipped_at_start} live frames skipped meanwhile)"
        def ms(v: float) -> str:  # (no frame: no latency, "n/a" rather than "nan ms")
            return f"{v:.1f} ms" if v == v else "n/a"

        return (f"{self.processed} frames in {self.wall_s:.1f}s{opened} = {self.fps:.1f} fps, end-to-end p50 {ms(e.p50_ms)} "
                f"p99 {ms(e.p99_ms)}, drops {self.drops}, errors {self.errors}, reconnects {self.reconnects}"
                + "".join(f", a source without frames for the last {g:.1f}s" for g in self.outages_at_stop_s))


MAX_SOURCES = 256  # sources whose own figures a run keeps


@dataclass(frozen=True)
class SourceFigures:
    """One source's part of a run with several: frames that reached every sink, their rate over the run's wall
    time, and their end-to-end latency (session 56: only the run's totals were kept, so a camera starved by the
    others, or one whose frames waited longest, did not show)."""

    processed: int
    fps: float
    end_to_end: Latency

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Ring:
    size: int
    values: np.ndarray = field(init=False)
    n: int = 0

    def __post_init__(self) -> None:
        self.values = np.zeros(self.size, np.float64)

    def add(self, v: float) -> None:
        self.values[self.n % self.size] = v
        self.n += 1

    def snapshot(self) -> np.ndarray:
        return self.values[: min(self.n, self.size)].copy()


class Recorder:
    """Thread-safe collector the pipeline threads report into; :meth:`stats` freezes it."""

    def __init__(self, window: int = 20000, max_messages: int = 20):
        self._lock = threading.Lock()
        self._window = window
        self._stages: dict[str, _Ring] = {}
        self._e2e = _Ring(window)
        self._by_source: dict[str, tuple[list[int], _Ring]] = {}  # source id -> ([processed], latencies)
        self._max_messages = max_messages
        self.frames = 0
        self.processed = 0
        self.errors = 0
        self.messages: list[str] = []
        self.t_start = time.perf_counter()
        self.t_first_out: float | None = None

    def stage(self, name: str, seconds: float) -> None:
        with self._lock:
            ring = self._stages.get(name)
            if ring is None:
                ring = self._stages[name] = _Ring(self._window)
            ring.add(seconds)

    def frame_in(self) -> None:
        with self._lock:
            self.frames += 1

    def frame_out(self, e2e_seconds: float, source_id: str | None = None) -> None:
        with self._lock:
            self.processed += 1
            self._e2e.add(e2e_seconds)
            mine = self._by_source.get(source_id) if source_id is not None else None
            if mine is None and source_id is not None and len(self._by_source) < MAX_SOURCES:
                # a ring per source, smaller (an application's own source may tag every frame anew: at most 256 kept)
                mine = self._by_source[source_id] = ([0], _Ring(min(self._window, 2000)))
            if mine is not None:
                mine[0][0] += 1
                mine[1].add(e2e_seconds)

    def error(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            if len(self.messages) < self._max_messages:
                self.messages.append(message)

    def stats(self, *, drops: int = 0, gaps: tuple[float, ...] = (), stopped_by: str = "eos",
              fatal: str | None = None, open_s: float = 0.0, skipped: int = 0, by_source: bool = True,
              outages: tuple[float, ...] = ()) -> Stats:
        """The figures so far; ``by_source=False`` leaves each source's own out (a periodic log line's look)."""
        with self._lock:
            wall = time.perf_counter() - self.t_start
            stages = {k: Latency.of(v.snapshot()) for k, v in self._stages.items()}
            return Stats(
                frames=self.frames, processed=self.processed, wall_s=wall,
                fps=self.processed / wall if wall > 0 else 0.0, stages=stages,
                end_to_end=Latency.of(self._e2e.snapshot()), drops=drops, errors=self.errors,
                error_messages=tuple(self.messages), reconnect_gaps_s=tuple(gaps), stopped_by=stopped_by,
                fatal_error=fatal, open_s=open_s, skipped_at_start=skipped, outages_at_stop_s=tuple(outages),
                by_source={
                    sid: SourceFigures(n[0], n[0] / wall if wall > 0 else 0.0, Latency.of(ring.snapshot()))
                    for sid, (n, ring) in self._by_source.items()} if by_source else {},
            )
