"""The pipeline runner: one thread per element, bounded queues between them.

::

    source ─q─> stage 1 ─q─> stage 2 ─q─> ... ─q─> sinks
    (decode)    (preprocess) (inference)  (decode, render)  (encode, write)

Every element runs concurrently, so throughput approaches the slowest element alone; the bounded
queues (``queue_size``) give back-pressure, which a file source feels as blocking and a live source
answers by dropping its oldest frame. One thread per element keeps the output in source order.

A stage that raises on a frame: with ``on_error="skip"`` the error is counted and the frame goes on to
the sinks without a result; with ``"stop"`` the pipeline drains and stops. :meth:`Pipeline.stop` (also
wired to SIGINT/SIGTERM while :meth:`run` runs in the main thread) stops the source and drains every
frame already read, so sinks finalize complete files holding every processed frame.

OpenCV's own thread pool (``cv_threads``): every stage already runs in a thread of its own, so on a
machine of few cores OpenCV splitting each resize or remap across the cores only adds synchronisation
(its workers spin and yield) to cores the other stages are using. By default a run on at most
:data:`FEW_CORES` usable cores sets OpenCV to one thread for its duration and restores the previous
setting afterwards (2-core Xeon, ``road`` on the dash-cam with keyframes every 5 / 6 frames: 22.2 / 20.1
instead of 23.0 / 21.1 ms of CPU per frame; per-frame inference unchanged; docs/video.md). Only 2 cores
were measured; the bound of 4 is a judgement (a 4-core machine still has every core busy with a stream's
source, flow, inference and carrying threads), and ``cv_threads`` overrides it.

Discontinuities (:data:`~edgeseg.stream.base.DISCONTINUITY`): the source thread marks the first frame
of each ``source_id``, and the first frame after its source reconnects; each stage thread calls
``stage.on_discontinuity(frame)`` (default ``reset()``) before a marked frame. A frame the source
could not read (``frame.meta["error"]``) is an error frame, like one a stage failed on.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Sequence

from ..errors import InputError, StreamError, memory_error, out_of_memory
from .base import DISCONTINUITY, FRAME_ERROR, RECEIVED, Packet, Sink, Source, Stage
from .metrics import Recorder, Stats
from .._compat import removeprefix

log = logging.getLogger("edgeseg.stream")
_END = object()
ON_ERROR = ("skip", "stop")
#: up to this many usable cores a run sets OpenCV to one thread by default (``cv_threads=None``)
FEW_CORES = 4


def _few_cores_threads(what: str, requested: int | None, fix: str, on_few: Callable[[int], int] = lambda cores: 1) -> int:
    """``requested`` checked (an integer >= 0), or (None) ``on_few(cores)`` on at most :data:`FEW_CORES` usable
    cores, else 0."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise InputError(f"{what} must be an integer >= 0 or None, got {requested!r}", fix=fix)
        return requested
    from ..backends.device import usable_cores

    cores = usable_cores()
    return on_few(cores) if cores <= FEW_CORES else 0


def opencv_threads(requested: int | None) -> int | None:
    """The OpenCV thread count a run uses: ``requested`` when given (0: leave OpenCV's own setting, None
    returned), else 1 on at most :data:`FEW_CORES` usable cores and OpenCV's own setting above."""
    return _few_cores_threads("cv_threads", requested, "1 (one OpenCV thread per stage), 0 (OpenCV's default), "
                              "or leave it unset (automatic)") or None


def decoder_threads(requested: int | None) -> int:
    """The threads a source's software video decoder gets (``avdec_*``, FFmpeg in OpenCV): ``requested``
    when given, else 1 on at most :data:`FEW_CORES` usable cores; 0: the decoder's own choice (FFmpeg's
    frame threads, one per core). On few cores every core is busy with a stream's other threads, and
    frame threading only adds work (2-core Xeon, ``road`` on the dash-cam, keyframes every 5 frames:
    docs/video.md)."""
    return _few_cores_threads("decoder_threads", requested, "1 (one decoding thread), 0 (the decoder's own "
                              "choice), or leave it unset (automatic)")


def inference_threads(requested: int) -> int:
    """The inference threads of a bundle a stream loads itself: ``requested`` when above 0; else (0, automatic)
    one fewer than the usable cores on at most :data:`FEW_CORES` of them (at least 1), and the runtime's
    own default (0) above. A stream keeps the other cores busy (decoding, pre- and post-processing,
    flow, encoding), and a runtime that spreads every inference over all the cores then waits on cores
    those threads hold: on the 2-core Xeon, ``road`` (OpenVINO bf16) on the dash-cam took 36.6 ms per
    inference with 2 threads in the stream (18.1 alone) and 29.5 with 1, and the whole stream (overlay,
    H.264 MP4) ran at 28.7-33.6 instead of 25.3-27.1 fps (docs/streaming.md). Only 2 cores were measured."""
    automatic = requested == 0 and type(requested) is int  # 0 means automatic here (a runtime's own default above)
    return _few_cores_threads("threads", None if automatic else requested, "N inference threads, or 0 (automatic)",
                              on_few=lambda cores: max(1, cores - 1))


#: a stage that fails frame after frame is said at its first failure, then once every this many seconds with the count,
#: and once when its frames go through again (:class:`FailureLog`)
FAILURES_SAID_EVERY_S = 30.0


class FailureLog:
    """The warnings of frames a stage fails on: the first of a run of failures in full (with its fix), then one line
    every :data:`FAILURES_SAID_EVERY_S` with how many failed since, and one when the stage works again. Session 57 (an
    operator's audit): each failed frame was a warning and its fix, so a remote server down for ten minutes wrote about
    30,000 lines at 25 fps. Every failure is still counted (``Stats.errors``) and its message kept (the first 20)."""

    def __init__(self, every_s: float = FAILURES_SAID_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | None = None):
        self.every_s, self._clock, self._log = every_s, clock, logger or log
        self._lock = threading.Lock()
        #: (stage, source id) -> [when last said, failures since, failures in this run]: per source, as one camera's
        #: frames may fail in a stage while another's pass (a review: a run per stage was ended by every other frame)
        self._runs: dict[tuple[str, Any], list] = {}

    def failed(self, stage: str, message: str, source: Any = None) -> None:
        now = self._clock()
        with self._lock:
            run = self._runs.get((stage, source))
            if run is None:
                self._runs[(stage, source)] = [now, 0, 1]
                say: str | None = message
            else:
                run[1] += 1
                run[2] += 1
                say = None
                if now - run[0] >= self.every_s:
                    say = (f"{message.splitlines()[0]} (the last of {run[1]} frames {stage} failed on in the last "
                           f"{now - run[0]:.0f} s; {run[2]} since its failures began)")
                    run[0], run[1] = now, 0
        if say is not None:
            self._log.warning("%s", say)

    def passed(self, stage: str, source: Any = None) -> None:
        if not self._runs:  # (the common case: no lock taken)
            return
        with self._lock:
            run = self._runs.pop((stage, source), None)
        if run is not None and run[2] > 1:
            self._log.warning("%s works again%s, after %d frames it failed on", stage,
                              f" on {source}" if source else "", run[2])


class Pipeline:
    """``Pipeline([source, stage..., sink...]).run() -> Stats``.

    The first element is a :class:`Source` (or a URI / launch string, opened with
    :func:`edgeseg.stream.sources.open_source`), then :class:`Stage` objects, then :class:`Sink` objects.
    """

    def __init__(self, elements: Sequence[Any], *, queue_size: int = 4, on_error: str = "skip",
                 max_frames: int | None = None, log_interval_s: float = 10.0, progress: bool | None = None,
                 handle_signals: bool = True, cv_threads: int | None = None):
        if not elements:
            raise InputError("a pipeline needs at least a source")
        if on_error not in ON_ERROR:
            raise InputError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        first = elements[0]
        if isinstance(first, str):
            from .sources import open_source

            first = open_source(first)
        if not isinstance(first, Source):
            raise InputError(f"a pipeline starts with a Source or a URI, got {type(first).__name__}")
        self.source: Source = first
        self.stages: list[Stage] = []
        self.sinks: list[Sink] = []
        for el in elements[1:]:
            if isinstance(el, Stage) and not self.sinks:
                self.stages.append(el)
            elif isinstance(el, Sink):
                self.sinks.append(el)
            else:
                raise InputError(f"pipeline element {el!r}: expected stages then sinks (a Stage after a Sink, or neither)")
        self.queue_size = max(1, int(queue_size))
        self.on_error = on_error
        self.max_frames = max_frames
        self.log_interval_s = log_interval_s
        self.progress = progress
        self.handle_signals = handle_signals
        self.cv_threads = opencv_threads(cv_threads)
        self.stats: Stats | None = None
        self._stop = threading.Event()
        self._hard = threading.Event()  # a second signal: the frames in flight are dropped, the sinks finish now
        self._stuck: set[int] = set()  # ids of stages whose threads were still in a call at the end
        self._signals = 0
        self._stopped_by = "eos"
        self._fatal: BaseException | None = None
        self._lock = threading.Lock()
        self._rec = Recorder()
        self._failures = FailureLog()

    # ---- control ---------------------------------------------------------------------------------
    def stop(self, reason: str = "stop") -> None:
        """Stop reading new frames; every frame already read is still processed and written."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stopped_by = reason
            self._stop.set()
        try:
            self.source.stop()
        except Exception as e:  # a source that fails to stop must not stop the drain
            log.warning("stopping the source failed: %s", e)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = exc
        self.stop("error")

    # ---- threads ---------------------------------------------------------------------------------
    def _source_loop(self, out: queue.Queue) -> None:
        n = 0
        marks = _Discontinuities(self.source)
        it = iter(self.source)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    break
                frame.meta.setdefault(RECEIVED, time.time_ns())
                marks.mark(frame)
                packet = Packet(frame)
                packet.timings["source"] = packet.t_created - t0
                self._rec.stage("source", packet.t_created - t0)
                self._rec.frame_in()
                if frame.meta.get(FRAME_ERROR):
                    self._stage_error("source", packet, StreamError(str(frame.meta[FRAME_ERROR])))
                else:
                    self._failures.passed("source", frame.source_id)
                out.put(packet)
                n += 1
                if self.max_frames is not None and n >= self.max_frames:
                    self.stop("max_frames")
        except Exception as e:  # StreamError from a broken stream, or anything a source raises
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            # (a source's own error names it already; several sources': the mux's names each that failed, with its
            # frames: "source mux(a, b) failed after 50 frames: camera b ..." named a and b's 50 frames, an audit)
            log.error("%s", text if text.startswith("source ") or getattr(self.source, "parts", ()) else
                      f"source {self.source.uri or type(self.source).__name__} failed after {n} frames: {text}")
            self._fail(e if isinstance(e, StreamError) else memory_error(f"source {self.source.uri!r}", e)
                       if out_of_memory(e) else StreamError(f"source {self.source.uri!r} failed: {e}"))
        finally:
            out.put(_END)

    def _stage_loop(self, stage: Stage, inq: queue.Queue, out: queue.Queue) -> None:
        name = getattr(stage, "name", type(stage).__name__)
        while True:
            packet = inq.get()
            if packet is _END:
                out.put(_END)
                return
            self._discontinuity(stage, name, packet)
            if packet.error is None:
                t0 = time.perf_counter()
                try:
                    result = stage.process(packet)
                    self._failures.passed(name, packet.frame.source_id)
                except Exception as e:
                    self._stage_error(name, packet, e)
                    result = packet
                dt = time.perf_counter() - t0
                self._rec.stage(name, dt)
                if result is None:  # the stage filtered this frame out
                    continue
                result.timings[name] = dt
                packet = result
            out.put(packet)

    def _batch_loop(self, stage: Stage, inq: queue.Queue, out: queue.Queue) -> None:
        """Like :meth:`_stage_loop` for stages with ``max_batch > 1``: collect up to ``max_batch`` packets,
        waiting at most ``batch_timeout_s`` after the first (a stream muxer's batching), then
        ``stage.process_batch(packets)`` once; packets leave in their arrival order."""
        name = getattr(stage, "name", type(stage).__name__)
        ended = False
        while not ended:
            first = inq.get()
            if first is _END:
                break
            batch = [first]
            deadline = time.perf_counter() + stage.batch_timeout_s
            while len(batch) < stage.max_batch:
                try:
                    item = inq.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is _END:
                    ended = True
                    break
                batch.append(item)
            for p in batch:
                self._discontinuity(stage, name, p)
            good = [p for p in batch if p.error is None]
            if good:
                t0 = time.perf_counter()
                try:
                    stage.process_batch(good)
                    for p in good:
                        self._failures.passed(name, p.frame.source_id)
                except Exception as e:
                    for p in good:
                        self._stage_error(name, p, e)
                dt = time.perf_counter() - t0
                for p in good:
                    self._rec.stage(name, dt)
                    p.timings[name] = dt
            for p in batch:
                out.put(p)
        out.put(_END)

    def _guarded(self, loop: Callable[..., None], args: tuple) -> None:
        """``loop(*args)``; when it dies of an error of its own (not a stage's, which are counted per frame) the
        run fails naming it, the end is passed downstream and what still comes from upstream is taken and
        dropped, so no thread waits forever on it (before: a stage thread that died left the run hanging,
        deaf to SIGINT)."""
        try:
            loop(*args)
        except BaseException as e:  # noqa: BLE001 - reported as the run's error
            name = removeprefix(threading.current_thread().name, "edgeseg-")
            log.error("the %s thread failed: %s: %s", name, type(e).__name__, e)
            self._fail(StreamError(f"the stream's {name} thread failed: {type(e).__name__}: {e}"))
            inq, out = args[-2:] if len(args) > 1 else (args[0], None)
            if out is not None:
                out.put(_END)
            idle = 0.0
            while idle < 1.0:  # upstream ends soon (the source was stopped); stop waiting once it is quiet
                try:
                    if inq.get(timeout=0.2) is _END:
                        return
                    idle = 0.0
                except queue.Empty:
                    idle += 0.2

    def _discontinuity(self, stage: Stage, name: str, packet: Packet) -> None:
        """``stage.on_discontinuity(frame)`` before a frame after a jump (even one that failed to read)."""
        if not packet.frame.meta.get(DISCONTINUITY):
            return
        try:
            stage.on_discontinuity(packet.frame)
        except Exception as e:
            self._stage_error(name, packet, e)

    def _stage_error(self, name: str, packet: Packet, exc: Exception) -> None:
        msg = f"{name} failed on frame {packet.frame.index} of {packet.frame.source_id or 'the source'}: {type(exc).__name__}: {exc}"
        packet.error = msg
        packet.result = None
        self._rec.error(msg)
        self._failures.failed(name, msg, packet.frame.source_id)
        if out_of_memory(exc):  # every later frame would fail the same way (a memory audit: 0 fps, then a hang)
            self._fail(memory_error(f"{name} on frame {packet.frame.index}", exc))
        elif self.on_error == "stop":
            self._fail(StreamError(msg, fix="pass on_error='skip' (--on-error skip) to count such frames and go on"))

    def _sink_loop(self, inq: queue.Queue) -> None:
        while True:
            packet = inq.get()
            if packet is _END:
                return
            if self._fatal is not None and isinstance(self._fatal, _SinkFailure):
                continue  # keep consuming so upstream never blocks on a dead sink
            for sink in self.sinks:
                t0 = time.perf_counter()
                try:
                    sink.write(packet.frame, packet.result, packet)
                except BrokenPipeError:  # `--json-out - | head`: its reader has what it wanted; a stop, not a failure
                    log.info("%s: its reader closed the pipe: stopping", getattr(sink, "name", type(sink).__name__))
                    self.stop("output closed")
                    continue
                except Exception as e:
                    self._fail(_SinkFailure(f"sink {getattr(sink, 'name', type(sink).__name__)} failed: {e}"))
                    break
                self._rec.stage(f"sink:{getattr(sink, 'name', type(sink).__name__)}", time.perf_counter() - t0)
            else:
                self._rec.frame_out(time.perf_counter() - packet.t_created, packet.frame.source_id)

    # ---- run -------------------------------------------------------------------------------------
    def run(self, raise_on_error: bool = True) -> Stats:
        """Run to the end of the stream (or :meth:`stop`); returns the :class:`Stats`.

        When the source breaks, a stage fails with ``on_error="stop"``, or a sink fails, every sink is
        still closed (files stay complete) and then the error is raised (``raise_on_error``) with
        :attr:`stats` set; otherwise it is recorded in ``Stats.fatal_error``. An element that cannot open
        (an unwritable sink path) raises before the first frame is read, also with :attr:`stats` set.
        """
        opened: list[Any] = []
        restore = self._install_signals()
        t_open = time.perf_counter()
        self._open_s = 0.0
        try:
            # the source first: a bad URI or a missing file fails before the model is activated and warmed up,
            # and a file's frame rate is known when the sinks are bound to it
            self.source.open()
            opened.append(self.source)
            for sink in self.sinks:
                sink.bind_source(self.source)
            for el in (*self.stages, *self.sinks):
                with _SHARED_RUNNERS.serialised(el):  # never while another pipeline closes the same runner
                    _SHARED_RUNNERS.use(el)
                    try:
                        el.open()
                    except BaseException:
                        _SHARED_RUNNERS.release(el, close=False)
                        raise
                opened.append(el)
            self._rec, self._failures = Recorder(), FailureLog()
            self._open_s = time.perf_counter() - t_open  # the source connected, the model loaded and warmed up
            with _opencv_pool(self.cv_threads):
                self._run_threads()
        except BaseException as e:  # e.g. a sink that cannot open: raised before any frame is read, stats say so
            if not self._open_s:  # a source that never connected: how long it was tried, not also as frame time
                self._open_s = time.perf_counter() - t_open
                self._rec = Recorder()
            self._stopped_by = "error"
            self.stats = self._stats(e)
            raise
        finally:
            self._close_all(opened)
            restore()
        fatal = self._fatal
        self.stats = self._stats(fatal)
        log.info("stream done: %s", self.stats.summary())
        if fatal is not None and raise_on_error:
            raise fatal
        return self.stats

    def _stats(self, fatal: BaseException | None) -> Stats:
        return self._rec.stats(drops=self.source.dropped, gaps=tuple(self.source.reconnect_gaps_s),
                               stopped_by=self._stopped_by, fatal=None if fatal is None else str(fatal),
                               open_s=getattr(self, "_open_s", 0.0), skipped=self.source.skipped_at_start,
                               outages=tuple(getattr(self.source, "outages_at_stop_s", ())))

    def _run_threads(self) -> None:
        queues = [queue.Queue(self.queue_size) for _ in range(len(self.stages) + 1)]
        threads = [threading.Thread(target=self._source_loop, args=(queues[0],), name="edgeseg-source", daemon=True)]
        for i, stage in enumerate(self.stages):
            loop = self._batch_loop if getattr(stage, "max_batch", 1) > 1 else self._stage_loop
            threads.append(threading.Thread(target=self._guarded, args=(loop, (stage, queues[i], queues[i + 1])),
                                            name=f"edgeseg-{getattr(stage, 'name', i)}", daemon=True))
        threads.append(threading.Thread(target=self._guarded, args=(self._sink_loop, (queues[-1],)), name="edgeseg-sinks",
                                        daemon=True))
        for t in threads:
            t.start()
        bar = self._progress_bar()
        last_log, last_processed = time.perf_counter(), 0
        unended = list(queues)
        try:
            while threads[-1].is_alive():
                threads[-1].join(0.1)
                if self._hard.is_set():  # every thread gets the end behind what its queue holds now
                    for q in list(unended):
                        with contextlib.suppress(queue.Full):
                            q.put_nowait(_END)
                            unended.remove(q)
                if bar is not None:
                    bar.update(self._rec.processed - bar.n)
                now = time.perf_counter()
                if self.log_interval_s and now - last_log >= self.log_interval_s:
                    # the rate of the last interval beside the run's average (which hides a slow-down hours in)
                    current = (self._rec.processed - last_processed) / (now - last_log)
                    last_log, last_processed = now, self._rec.processed
                    log.info("stream: %s; last %g s: %.1f fps", self._rec.stats(  # (its reconnects too: an audit)
                        drops=self.source.dropped, gaps=tuple(self.source.reconnect_gaps_s), by_source=False,
                        outages=tuple(getattr(self.source, "outages_at_stop_s", ()))).summary(),
                             self.log_interval_s, current)
        finally:
            if bar is not None:
                bar.close()
        for t in threads:  # (after a hard stop a thread may be stuck in a source or a stage: not waited for long)
            t.join(0.5 if self._hard.is_set() else 5.0)
        # a stage whose thread is still in a call (a hard stop): not closed under it (its runner would wait for the call)
        self._stuck = {id(stage) for stage, t in zip(self.stages, threads[1:-1]) if t.is_alive()}

    def _progress_bar(self):
        total = self.source.expected_frames
        show = self.progress if self.progress is not None else (total is not None and sys.stderr.isatty())
        if not show:
            return None
        from tqdm import tqdm

        if self.max_frames is not None and total is not None:
            total = min(total, self.max_frames)
        return tqdm(total=total, unit="frame", desc=self.source.uri or "stream", leave=False)

    def _close_all(self, opened: Iterable[Any]) -> None:
        order = [self.source, *self.stages, *self.sinks]
        if self._hard.is_set():  # the outputs first: a stage or a source may be stuck (what the hard stop is for)
            order = [*self.sinks, self.source, *(s for s in self.stages if id(s) not in self._stuck)]
            for s in self.stages:
                if id(s) in self._stuck:
                    log.warning("%s is still in a call: left as it is (its thread ends with the process)",
                                getattr(s, "name", type(s).__name__))
        for el in order:
            if el in opened or el is self.source:
                try:
                    if el in opened and _SHARED_RUNNERS.release(el, close=True):
                        continue
                    el.close()
                except Exception as e:
                    log.error("closing %s failed: %s", getattr(el, "name", type(el).__name__), e)
                    if isinstance(el, Sink):
                        self._fail(StreamError(f"sink {getattr(el, 'name', type(el).__name__)} could not finalize: {e}"))

    def _install_signals(self) -> Callable[[], None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}

        def handler(signum, _frame):
            name = signal.Signals(signum).name
            self._signals += 1
            if self._signals >= 3 or (self._signals == 2 and self._hard.is_set()):  # stuck even so: out at once
                log.error("%s a third time: exiting now (a recording keeps what it wrote in its .part file, up to its "
                          "last second)", name)
                os._exit(143 if signum == signal.SIGTERM else 130)
            if self._stop.is_set():
                # a drain that does not end (a source stuck in its decoder, a stage that never returns: a memory audit
                # saw 0 fps and two Ctrl-C that only said "still draining"): the sinks finish with what they have
                log.warning("%s again: stopping now; the frames in flight are dropped and the outputs finished with "
                            "what was written (a third %s exits at once)", name, name)
                self._hard.set()
                return
            log.warning("%s: stopping the source and draining the pipeline (again to stop at once)", name)
            self.stop("signal")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError) as e:  # refused by the interpreter: the embedding application owns signals
                log.debug("no %s handler installed (%s)", signal.Signals(sig).name, e)

        def restore() -> None:
            for sig, h in previous.items():
                signal.signal(sig, h)

        return restore


class _Discontinuities:
    """Sets ``frame.meta["discontinuity"]`` on the first frame of each ``source_id`` and on the first
    frame after its source's reconnect count (``reconnect_gaps_s``) grew, unless the source marks its reconnections
    itself (``Source.marks_reconnects``). Sources that know better (a seek, a new file) set the flag themselves; it
    is never cleared here."""

    def __init__(self, source: Source):
        parts = list(getattr(source, "parts", ()) or ()) or [source]
        self._by_id = {getattr(s, "source_id", getattr(s, "uri", "")): s for s in parts}
        self._seen: dict[str, int] = {}  # source_id -> reconnects seen

    def mark(self, frame: Any) -> None:
        sid = frame.source_id
        src = self._by_id.get(sid)
        reconnects = len(getattr(src, "reconnect_gaps_s", ()) or ()) if src is not None else 0
        if sid not in self._seen or reconnects > self._seen[sid] and not getattr(src, "marks_reconnects", False):
            frame.meta[DISCONTINUITY] = True
        self._seen[sid] = reconnects


class _SinkFailure(StreamError):
    """A sink failed to write: the run stops, the other frames are consumed and discarded."""


_CV_LOCK = threading.Lock()
_cv_users = 0  # runs inside _opencv_pool now (OpenCV's thread count is one setting for the whole process)
_cv_before: int | None = None  # the setting before the first of them


@contextlib.contextmanager
def _opencv_pool(threads: int | None):
    """OpenCV set to ``threads`` threads inside the block (None: untouched); the setting from before the first of
    the runs that overlap is restored when the last of them ends. (Each run restored the value it had found:
    two overlapping streams left OpenCV at 1 thread for the rest of the process.)"""
    global _cv_users, _cv_before
    if threads is None:
        yield
        return
    import cv2

    with _CV_LOCK:
        if _cv_users == 0:
            _cv_before = cv2.getNumThreads()
        _cv_users += 1
        cv2.setNumThreads(threads)
    try:
        yield
    finally:
        with _CV_LOCK:
            _cv_users -= 1
            if _cv_users == 0 and _cv_before is not None:
                cv2.setNumThreads(_cv_before)
                _cv_before = None


def _runner_stage(el: Any) -> Any:
    """The inference stage inside ``el`` (itself, or the ``inner`` stage a keyframe stage wraps), or None: a stage
    that activates its ``runner`` in ``open()`` when it is not active and deactivates it in ``close()``. Not for an
    edgeseg :class:`~edgeseg.backends.base.Runner`: it counts its holders itself (``hold``/``release``)."""
    for _ in range(4):
        if hasattr(el, "runner") and hasattr(el, "_activated") and hasattr(getattr(el, "runner"), "deactivate"):
            return None if hasattr(el.runner, "hold") else el
        el = getattr(el, "inner", None)
        if el is None:
            return None
    return None


class _SharedRunners:
    """The runners that running pipelines infer with, and how many use each. An inference stage deactivates at
    ``close()`` the runner it activated at ``open()``; with one predictor in two streams at once, the first to
    end deactivated it under the other, whose frames then failed ("runner ... is not active": 25 of 30 frames
    without a result). Now the last pipeline to close a shared runner deactivates it, if one of them activated it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the bookkeeping only (short)
        self._uses: dict[int, list[Any]] = {}  # id(runner) -> [runner, pipelines using it, activated by one of them]

    def _runner_lock(self, runner: Any) -> threading.RLock:
        """The runner's own lock for opening and closing stages that infer with it (kept on the runner)."""
        with self._lock:
            lock = getattr(runner, "_edgeseg_stage_lock", None)
            if lock is None:
                lock = threading.RLock()
                runner._edgeseg_stage_lock = lock
            return lock

    @contextlib.contextmanager
    def serialised(self, el: Any):
        """Held around opening or closing an inference stage, so that one pipeline's open (which sees the runner
        active and leaves it) never interleaves with the last user's close (which deactivates it). Per runner:
        a model loading in one pipeline never holds up pipelines of other models."""
        stage = _runner_stage(el)
        if stage is None:
            yield
            return
        with self._runner_lock(stage.runner):
            yield

    def use(self, el: Any) -> None:
        stage = _runner_stage(el)
        if stage is None:
            return
        with self._lock:
            entry = self._uses.setdefault(id(stage.runner), [stage.runner, 0, False])
            entry[1] += 1

    def release(self, el: Any, close: bool) -> bool:
        """One pipeline is done with ``el``'s runner; ``close``: close ``el`` here (True returned: closed)."""
        stage = _runner_stage(el)
        if stage is None:
            return False
        runner = stage.runner
        with self._runner_lock(runner):  # an open() of the same runner waits for this close (serialised)
            with self._lock:
                entry = self._uses.get(id(runner))
                if entry is None or entry[0] is not runner:
                    return False
                entry[1] -= 1
                entry[2] = entry[2] or bool(stage._activated)
                last = entry[1] <= 0
                if last:
                    del self._uses[id(runner)]
            if close:
                if not last:
                    stage._activated = False  # another running pipeline still infers with it
                elif entry[2]:
                    stage._activated = True  # activated by a pipeline that ended before: deactivated now
                el.close()
        return close


_SHARED_RUNNERS = _SharedRunners()
