"""Pipeline core: order, results equal to the sequential predictor, overlap, error policy, drops, stop."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgeseg.errors import InputError, StreamError
from edgeseg.stream import CallbackSink, FrameBuffer, Packet, Pipeline, Stage, predictor_stages, stream
from stream_helpers import ListSource, make_images


class Sleep(Stage):
    """A stage that takes a fixed time (like a model of known latency)."""

    def __init__(self, name: str, seconds: float):
        self.name, self.seconds = name, seconds

    def process(self, packet: Packet) -> Packet:
        time.sleep(self.seconds)
        return packet


class FailOn(Stage):
    """Raises on chosen frame indices (fault injection)."""

    name = "inference"

    def __init__(self, bad: set[int]):
        self.bad = bad

    def process(self, packet: Packet) -> Packet:
        if packet.frame.index in self.bad:
            raise RuntimeError(f"boom on {packet.frame.index}")
        return packet


def test_stream_results_equal_sequential_predictor(bundle, predictor):
    images = make_images(12)
    got = list(stream(ListSource(images), predictor))
    assert [f.index for f, _ in got] == list(range(12))  # order preserved
    for (frame, result), img in zip(got, images):
        assert frame.image is img
        ref = predictor(img)
        np.testing.assert_array_equal(result.labels, ref.labels)
        assert result.labels.shape == (48, 64)


def test_stream_with_bundle_path_and_stats(bundle):
    images = make_images(8, seed=3)
    seen = []
    pipe_results = list(stream(ListSource(images), str(bundle.root), backend="onnxruntime", threads=1))
    for f, r in pipe_results:
        seen.append(f.index)
        assert r.classes == bundle.manifest.classes
    assert seen == list(range(8))


def test_stages_overlap_so_throughput_follows_the_slowest_stage():
    n, dt = 24, 0.02
    out = []
    stages = [Sleep("a", dt), Sleep("b", dt), Sleep("c", dt)]
    stats = Pipeline([ListSource(make_images(n)), *stages, CallbackSink(lambda f, r: out.append(f.index))],
                     handle_signals=False).run()
    assert out == list(range(n))
    assert stats.frames == stats.processed == n
    sequential = n * 3 * dt
    # overlapped: about n * dt + pipeline fill (2 * dt); sequential would be 3x that
    assert stats.wall_s < 0.6 * sequential, (stats.wall_s, sequential)
    for name in "abc":
        assert stats.stages[name].count == n
        assert dt * 0.9 <= stats.stages[name].p50_ms / 1e3 < dt * 3
    assert stats.end_to_end.p50_ms >= 3 * dt * 1e3 * 0.9  # at least the three stages


def test_error_in_one_frame_is_counted_and_the_stream_goes_on():
    out = []
    stats = Pipeline([ListSource(make_images(10)), FailOn({3, 7}), Sleep("after", 0.0),
                      CallbackSink(lambda f, r: out.append((f.index, r)))], handle_signals=False).run()
    assert [i for i, _ in out] == list(range(10))  # failed frames still reach the sinks
    assert stats.errors == 2 and stats.processed == 10
    assert "boom on 3" in stats.error_messages[0] and "frame 3" in stats.error_messages[0]
    assert stats.stages["after"].count == 8  # later stages skip the failed frames


def test_on_error_stop_drains_and_raises():
    out = []
    pipe = Pipeline([ListSource(make_images(200)), FailOn({5}), CallbackSink(lambda f, r: out.append(f.index))],
                    on_error="stop", handle_signals=False, queue_size=2)
    with pytest.raises(StreamError, match="frame 5"):
        pipe.run()
    assert pipe.stats.errors == 1 and pipe.stats.stopped_by == "error"
    assert out == list(range(len(out))) and 6 <= len(out) < 200  # drained in order, then stopped


def test_stop_from_another_thread_drains_everything_read():
    out = []
    pipe = Pipeline([ListSource(make_images(500)), Sleep("slow", 0.005), CallbackSink(lambda f, r: out.append(f.index))],
                    handle_signals=False)
    threading.Timer(0.1, pipe.stop).start()
    stats = pipe.run()
    assert stats.stopped_by == "stop"
    assert 0 < stats.processed < 500
    assert stats.frames == stats.processed == len(out)  # nothing read was lost
    assert out == list(range(len(out)))


def test_max_frames():
    stats = Pipeline([ListSource(make_images(50)), Sleep("s", 0.0)], max_frames=7, handle_signals=False).run()
    assert stats.frames == stats.processed == 7 and stats.stopped_by == "max_frames"


def test_frame_buffer_drops_oldest_and_counts():
    buf = FrameBuffer(3, drop_oldest=True)
    for i in range(10):
        assert buf.put(i)
    assert buf.dropped == 7
    assert [buf.get(0), buf.get(0), buf.get(0)] == [7, 8, 9]  # the newest survive
    buf.close()
    with pytest.raises(EOFError):
        buf.get(0)


def test_frame_buffer_blocks_for_files():
    buf = FrameBuffer(2, drop_oldest=False)
    buf.put(0), buf.put(1)
    t = threading.Thread(target=buf.put, args=(2,))
    t.start()
    time.sleep(0.05)
    assert t.is_alive() and len(buf) == 2  # the producer waits
    assert buf.get(0) == 0
    t.join(1)
    assert not t.is_alive() and buf.dropped == 0 and [buf.get(0), buf.get(0)] == [1, 2]


def test_pipeline_checks_its_elements(predictor):
    with pytest.raises(InputError, match="on_error"):
        Pipeline([ListSource([])], on_error="ignore")
    with pytest.raises(InputError, match="Stage after a Sink"):
        Pipeline([ListSource([]), CallbackSink(print), *predictor_stages(predictor)])
    with pytest.raises(InputError, match="unknown option"):
        next(stream(ListSource([]), predictor, colour="red"))


def test_batching_across_sources_matches_single_frame_results(predictor):
    from edgeseg.stream import InferenceStage, MultiSource

    a, b = make_images(9, seed=1), make_images(7, seed=2)
    mux = MultiSource([ListSource(a, "cam-a"), ListSource(b, "cam-b")])
    stages = predictor_stages(predictor, max_batch=4, batch_timeout_s=0.05)
    inference = next(s for s in stages if isinstance(s, InferenceStage))
    got = []
    stats = Pipeline([mux, *stages, CallbackSink(lambda f, r: got.append((f.source_id, f.index, r)))],
                     handle_signals=False).run()
    assert stats.processed == 16 and stats.errors == 0
    for sid, images in (("cam-a", a), ("cam-b", b)):
        mine = [(i, r) for s, i, r in got if s == sid]
        assert [i for i, _ in mine] == list(range(len(images)))  # per-source order kept
        for i, r in mine:
            np.testing.assert_array_equal(r.labels, predictor(images[i]).labels)
    assert sum(k * v for k, v in inference.batch_sizes.items()) == 16
    assert max(inference.batch_sizes) > 1  # frames really ran as batches


class CvThreads(Stage):
    """Records OpenCV's thread setting while the stream runs."""

    name = "cv"

    def __init__(self):
        self.seen: list[int] = []

    def process(self, packet: Packet) -> Packet:
        import cv2

        self.seen.append(cv2.getNumThreads())
        return packet


def test_opencv_threads_are_set_for_the_run_and_restored(monkeypatch):
    import cv2

    from edgeseg.stream import pipeline as pl

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        for cores, requested, during in ((2, None, 1), (4, None, 1), (16, None, 3), (16, 2, 2), (2, 0, 3)):
            monkeypatch.setattr("edgeseg.backends.device.usable_cores", lambda c=cores: c)
            stage = CvThreads()
            Pipeline([ListSource(make_images(3)), stage], cv_threads=requested, handle_signals=False).run()
            assert stage.seen == [during] * 3, (cores, requested)
            assert cv2.getNumThreads() == 3  # restored after the run
        for bad in (-1, 1.5, True):
            with pytest.raises(InputError, match="cv_threads"):
                pl.opencv_threads(bad)
        from edgeseg.stream import StreamOptions, build_pipeline

        with pytest.raises(InputError, match="cv_threads"):  # before the (missing) source is opened
            build_pipeline(StreamOptions(source="/nonexistent.mp4", bundle="shapes", cv_threads=-1), handle_signals=False)
    finally:
        cv2.setNumThreads(before)


def test_decoder_threads_follow_the_cores_and_reach_the_source(monkeypatch, tmp_path):
    from edgeseg.stream import StreamOptions, build_pipeline
    from edgeseg.stream.api import open_sources
    from edgeseg.stream.pipeline import decoder_threads
    from edgeseg.stream.recipe import load_recipe

    for cores, requested, want in ((2, None, 1), (4, None, 1), (16, None, 0), (16, 3, 3), (2, 0, 0)):
        monkeypatch.setattr("edgeseg.backends.device.usable_cores", lambda c=cores: c)
        assert decoder_threads(requested) == want, (cores, requested)
    with pytest.raises(InputError, match="decoder_threads"):  # before the (missing) source is opened
        build_pipeline(StreamOptions(source="/nonexistent.mp4", bundle="shapes", decoder_threads=-1), handle_signals=False)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[source]\nuri = "clip.mp4"\n[pipeline]\ndecoder_threads = 2\n')
    opts = load_recipe(recipe)
    assert opts.decoder_threads == 2
    video = tmp_path / "clip.mp4"
    import cv2

    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for img in make_images(3):
        w.write(img)
    w.release()
    src = open_sources(opts.replace(source=str(video), source_backend="opencv"))
    assert src.decoder_threads == 2
    folder = open_sources(StreamOptions(source=str(tmp_path), decoder_threads=2))  # image folders take no decoder setting
    assert type(folder).__name__ == "FolderSource"


def test_a_stream_on_few_cores_leaves_a_core_to_its_other_stages(monkeypatch):
    """Automatic inference threads: one fewer than the cores on up to FEW_CORES of them, the runtime's own
    default above; a given number is kept; the bundle the stream loads gets them."""
    from edgeseg.stream import StreamOptions
    from edgeseg.stream.api import load_predictor
    from edgeseg.stream.pipeline import inference_threads

    for cores, requested, want in ((1, 0, 1), (2, 0, 1), (4, 0, 3), (5, 0, 0), (16, 0, 0), (2, 2, 2), (16, 3, 3)):
        monkeypatch.setattr("edgeseg.backends.device.usable_cores", lambda c=cores: c)
        assert inference_threads(requested) == want, (cores, requested)
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="threads"):
            inference_threads(bad)
    from edgeseg.stream import build_pipeline

    with pytest.raises(InputError, match="threads"):  # before the (missing) source is opened
        build_pipeline(StreamOptions(source="/nonexistent.mp4", bundle="shapes", threads=-1), handle_signals=False)
    monkeypatch.setattr("edgeseg.backends.device.usable_cores", lambda: 2)
    predictor = load_predictor("shapes", StreamOptions(backend="onnxruntime", precision="fp32"))
    assert predictor.runner.threads == 1
    predictor = load_predictor("shapes", StreamOptions(backend="onnxruntime", precision="fp32", threads=2))
    assert predictor.runner.threads == 2


def test_stats_say_how_long_the_source_took_to_open():
    """A camera that took 3 s to (not) connect was reported as '0 frames in 0.1s': the wait went unsaid."""
    import time as _time

    from edgeseg.stream import CallbackSink, Pipeline
    from stream_helpers import ListSource, make_images

    class SlowToOpen(ListSource):
        def open(self) -> None:
            _time.sleep(1.2)
            super().open()

    stats = Pipeline([SlowToOpen(make_images(2, shape=(8, 8))), CallbackSink(lambda f, r: None)],
                     handle_signals=False).run()
    assert stats.processed == 2 and 1.2 <= stats.open_s < 5 and stats.wall_s < stats.open_s
    assert f"(after {stats.open_s:.1f}s opening the source and the model)" in stats.summary()
    assert stats.to_dict()["open_s"] == stats.open_s


class StuckFrom(Stage):
    """Hangs on every frame from ``index`` on, until ``release`` is set (a stage that never returns); its close()
    waits for the call in flight, as an inference stage's runner does."""

    name = "inference"

    def __init__(self, index: int):
        self.index, self.release, self.closed = index, threading.Event(), False

    def process(self, packet: Packet) -> Packet:
        if packet.frame.index >= self.index:
            self.release.wait(60)
        return packet

    def close(self) -> None:
        self.release.wait(60)
        self.closed = True


def test_a_second_signal_stops_a_drain_that_does_not_end():
    """A memory audit: a stream whose source or stage was stuck ran at 0 fps, and SIGTERM and two SIGINTs only said
    "still draining" (SIGKILL alone ended it). Now a second signal finishes the sinks with what reached them, a third
    exits at once; the first still drains every frame read."""
    import os
    import signal

    stuck = StuckFrom(5)
    seen = []

    class Recording(CallbackSink):
        closed_at = None

        def close(self):
            Recording.closed_at = time.monotonic()

    pipe = Pipeline([ListSource(make_images(50)), stuck, Recording(lambda f, r, p=None: seen.append(f.index))],
                    handle_signals=True, queue_size=2)

    def signals():
        deadline = time.monotonic() + 20
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(2):
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=signals)
    t.start()
    try:
        t0 = time.monotonic()
        stats = pipe.run(raise_on_error=False)
        assert time.monotonic() - t0 < 15
    finally:
        stuck.release.set()
        t.join(10)
    assert seen == list(range(5)) and stats.stopped_by == "signal"  # what reached the sink, in order
    assert Recording.closed_at is not None and Recording.closed_at - t0 < 15  # the outputs finished (the review: the
    assert not stuck.closed  # stuck stage's close waited for its call, and the sinks after it were never closed)


def test_out_of_memory_in_a_stage_stops_the_stream_naming_it():
    """A memory audit: every frame failed on MemoryError and was counted as a skipped frame (on_error skip), the
    stream going on at 0 fps. Out of memory now stops it with an edgeseg error naming memory and the fix."""
    from edgeseg.errors import OutOfMemory

    class NoMemory(Stage):
        name = "inference"

        def process(self, packet: Packet) -> Packet:
            if packet.frame.index >= 3:
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : ... std::bad_alloc")
            return packet

    seen = []
    pipe = Pipeline([ListSource(make_images(40)), NoMemory(), CallbackSink(lambda f, r, p=None: seen.append(r is None))],
                    queue_size=2)
    with pytest.raises(OutOfMemory, match="inference on frame 3: out of memory") as e:
        pipe.run()
    assert "--threads 1" in e.value.fix and pipe.stats.processed < 40


def test_a_command_out_of_memory_says_so_with_the_fix(monkeypatch, capsys):
    """MemoryError, ONNX Runtime's std::bad_alloc and a library the loader could not map were tracebacks (exit 1)."""
    from edgeseg import bundle as bundle_module
    from edgeseg.backends.openvino.runner import explain_read_error
    from edgeseg.cli import main

    for exc in (MemoryError("Unable to allocate 7.25 MiB for an array with shape (1, 11, 360, 480)"),
                RuntimeError("Conv node 'node_conv2d_56' ... std::bad_alloc"),
                ImportError("libopenblasp-r0.so: failed to map segment from shared object")):
        def no_memory(*a, _exc=exc, **k):
            raise _exc

        monkeypatch.setattr(bundle_module.Bundle, "open", no_memory)
        assert main(["info", "road"]) == 2
        err = capsys.readouterr().err
        assert "edgeseg info: error: the command: out of memory (" in err and "fix: free memory" in err
    monkeypatch.undo()
    monkeypatch.setattr(bundle_module.Bundle, "open", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):  # anything else is not called memory
        main(["info", "road"])
    # OpenVINO's reason follows the lines that say where it threw: kept, and named as memory
    e = explain_read_error("m.onnx", "Exception from src/inference/src/cpp/core.cpp:117:\n"
                                     "Exception from src/inference/src/dev/plugin.cpp:54:\ncan't alloc\n")
    assert "out of memory (can't alloc)" in str(e)
    e = explain_read_error("m.onnx", "Exception from src/inference/src/cpp/core.cpp:117:\nUnsupported thing X\n")
    assert str(e) == "m.onnx: OpenVINO cannot load the model: Unsupported thing X"


def test_each_source_s_figures_are_kept_apart():
    """Session 56: a run kept only its totals, so a camera the others starved, or whose frames waited longest, did not
    show. Each source's processed frames, fps over the run's wall time and end-to-end latency, against hand values."""
    from edgeseg.stream.metrics import MAX_SOURCES, Latency, Recorder

    rec = Recorder()
    for s in (0.010, 0.020, 0.030):
        rec.frame_out(s, "A")
    rec.frame_out(0.200, "B")
    rec.frame_out(0.5)  # a frame without a source id: in the totals only
    stats = rec.stats()
    assert stats.processed == 5 and set(stats.by_source) == {"A", "B"}
    a, b = stats.by_source["A"], stats.by_source["B"]
    assert (a.processed, b.processed) == (3, 1)
    assert a.fps == pytest.approx(3 / stats.wall_s, rel=0.05) and b.fps == pytest.approx(1 / stats.wall_s, rel=0.05)
    assert (a.end_to_end.count, a.end_to_end.p50_ms, a.end_to_end.mean_ms) == (3, pytest.approx(20.0), pytest.approx(20.0))
    assert a.end_to_end == Latency.of([0.010, 0.020, 0.030]) and b.end_to_end.p99_ms == pytest.approx(200.0)
    assert "by_source" not in stats.to_dict() and stats.to_dict()["processed"] == 5
    for i in range(MAX_SOURCES + 10):  # an application tagging every frame anew: the figures stay bounded
        rec.frame_out(0.001, f"frame-{i}")
    assert len(rec.stats().by_source) == MAX_SOURCES and rec.stats().processed == 5 + MAX_SOURCES + 10


def test_a_run_of_failed_frames_is_said_once_then_counted_then_its_end(caplog):
    """Session 57 (an operator's audit): every failed frame was a warning and its fix (a remote server down ten
    minutes: ~30,000 lines at 25 fps). Now the first failure of a run is said in full, then one line every 30 s with
    the count, and one when frames go through again; every failure is still counted in the stats."""
    import logging

    from edgeseg.stream.pipeline import FailureLog

    bad = set(range(2, 42))  # 40 frames in a row fail, then the stage works again
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        stats = Pipeline([ListSource(make_images(50)), FailOn(bad), CallbackSink(lambda f, r: None)],
                         handle_signals=False).run()
    said = [r.getMessage() for r in caplog.records if r.name == "edgeseg.stream"]
    assert stats.errors == 40 and len(said) == 2, said  # (before: 40 warnings)
    assert "inference failed on frame 2" in said[0] and "boom on 2" in said[0]
    assert said[1].startswith("inference works again") and said[1].endswith(", after 40 frames it failed on")
    # per source: one camera's frames failing while another's pass (a review: each pass ended the run of failures)
    two = FailureLog(every_s=30.0, clock=lambda: 0.0, logger=(quiet := logging.getLogger("test.failures.two")))
    quiet.addHandler(counted := logging.Handler())
    told: list[str] = []
    counted.emit = lambda record: told.append(record.getMessage())  # type: ignore[method-assign]
    for i in range(100):
        two.failed("inference", f"inference failed on frame {i} of b: boom", "b")
        two.passed("inference", "a")
    two.passed("inference", "b")
    assert told == ["inference failed on frame 0 of b: boom", "inference works again on b, after 100 frames it failed on"]
    # the periodic count, on a clock of its own: frames fail at 0, 10, 20, ... 70 s
    now = [0.0]
    lines: list[str] = []
    sink = logging.getLogger("test.failures")
    sink.addHandler(handler := logging.Handler())
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    fails = FailureLog(every_s=30.0, clock=lambda: now[0], logger=sink)
    for t in range(0, 80, 10):
        now[0] = float(t)
        fails.failed("inference", f"inference failed on frame {t}: ConnectionError: refused\n  fix: start the server")
    fails.passed("inference")
    fails.passed("inference")  # (once)
    assert lines == ["inference failed on frame 0: ConnectionError: refused\n  fix: start the server",
                     "inference failed on frame 30: ConnectionError: refused (the last of 3 frames inference failed "
                     "on in the last 30 s; 4 since its failures began)",
                     "inference failed on frame 60: ConnectionError: refused (the last of 3 frames inference failed "
                     "on in the last 30 s; 7 since its failures began)",
                     "inference works again, after 8 frames it failed on"]


def test_a_run_without_frames_says_n_a_not_nan():
    """Session 57: a run that got no frame summed up its latency as 'p50 nan ms p99 nan ms'."""
    stats = Pipeline([ListSource([]), CallbackSink(lambda f, r: None)], handle_signals=False).run()
    assert stats.processed == 0 and "end-to-end p50 n/a p99 n/a, drops 0" in stats.summary()


def test_the_run_table_of_a_run_without_frames_says_n_a_not_nan(capsys):
    """Session 58: the summary line said n/a since session 57, but `edgeseg run`'s table beside it still printed nan."""
    from edgeseg.cli._common import print_table

    stats = Pipeline([ListSource([]), CallbackSink(lambda f, r: None)], handle_signals=False).run()
    e = stats.end_to_end
    print_table([{"stage": "end_to_end", "count": e.count, "p50_ms": e.p50_ms, "p95_ms": e.p95_ms, "p99_ms": 2.5}])
    assert capsys.readouterr().out.splitlines()[-1].split() == ["end_to_end", "0", "n/a", "n/a", "2.5"]
