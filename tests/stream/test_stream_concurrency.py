"""Many streams in one process, at once and one after another, and multi-source runs where a source fails
or ends early: every result is the right frame's, nothing leaks (threads, file descriptors, OpenCV's global
thread setting, an active runner), a failure stays in its own run and is named.

The ``shapes`` bundle at 160x120 on ``synthetic://`` sources, one inference thread. Every test runs under a
deadline (:func:`within`): a hang fails the test instead of blocking the suite.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgeseg
from edgeseg.cli import main
from edgeseg.errors import StreamError
from edgeseg.stream import CallbackSink, Source, StreamOptions, build_pipeline
from edgeseg.stream.sources.synthetic import SyntheticSource
from edgeseg.structures import rle_decode
from edgeseg.structures.frame import Frame
from deadline import within

U = "synthetic://?seed={}&size=160x120&frames={}"
RUNTIME = {"backend": "onnxruntime", "precision": "fp32", "threads": 1}


@pytest.fixture(scope="module")
def local():
    """The reference: the shapes bundle run here, frame by frame."""
    with edgeseg.load("shapes", **RUNTIME) as p:
        yield p


def _labels_from_json(rec: dict, shape) -> np.ndarray:
    got = np.zeros(shape, np.int64)
    for seg in rec["segments"]:
        got[rle_decode(seg["rle"]).astype(bool)] = seg["class_id"]
    return got


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t is not threading.current_thread()
                  and not t.name.startswith("test-"))


def _settle(base_threads: list[str], base_fds: int, limit_s: float = 3.0) -> tuple[list[str], int]:
    """Threads and fds once whatever is still stopping has stopped (a thread joined with a timeout may take a moment)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and (_threads() != base_threads or _fds() > base_fds):
        time.sleep(0.05)
    return _threads(), _fds()


# ---- (b) streams at the same time in one process --------------------------------------------------------
@within(120)
def test_two_streams_sharing_one_predictor_both_keep_every_result(local):
    # before: the stream that activated the shared runner deactivated it when it ended, under the other
    # stream, whose later frames all failed ("onnxruntime runner ... is not active"): 16 of 30 results here
    p = edgeseg.load("shapes", **RUNTIME)  # lazy: the first stream to open activates it
    assert not p.runner.is_active
    a_running, b_running, a_done = threading.Event(), threading.Event(), threading.Event()
    got: dict[str, list] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def stream_a():
        try:
            for k, (f, r) in enumerate(edgeseg.stream(U.format(1, 20), p)):  # more than the queues hold
                got["a"].append(r is not None and np.array_equal(r.labels, local(f.image).labels))
                if k == 0:
                    a_running.set()
                    assert b_running.wait(30)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            a_done.set()

    def stream_b():
        try:
            assert a_running.wait(30)  # A holds the runner it activated
            for k, (f, r) in enumerate(edgeseg.stream(U.format(2, 30), p)):
                got["b"].append(r is not None and np.array_equal(r.labels, local(f.image).labels))
                if k == 0:
                    b_running.set()
                    assert a_done.wait(30)  # A ends (and closes its stages) while B still runs
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=stream_a), threading.Thread(target=stream_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert (sum(got["a"]), len(got["a"])) == (20, 20)
    assert (sum(got["b"]), len(got["b"])) == (30, 30)
    assert not p.runner.is_active  # the last stream to end deactivated what the first one activated


@within(120)
def test_a_with_block_or_close_of_the_predictor_a_stream_runs_does_not_stop_the_stream(local):
    """A race audit: user code calling `with p: p(img)` (the documented pattern) or `p.close()` beside a stream that
    runs the same predictor deactivated the runner under the stream: 109 of 120 frames without a result ("runner ...
    is not active"). The runner now counts its holders (the stream's inference stage, each with-block) and frees the
    session when the last one leaves; close() ends only the predictor's own activation."""
    p = edgeseg.load("shapes", **RUNTIME)
    img = np.zeros((120, 160, 3), np.uint8)
    same = []
    with edgeseg.stream(U.format(3, 40), p) as s:  # more frames than the queues hold
        for k, (f, r) in enumerate(s):
            same.append(r is not None and np.array_equal(r.labels, local(f.image).labels))
            if k == 2:
                with p:
                    p(img)
            if k == 5:
                p(img)
                p.close()
    assert (sum(same), len(same)) == (40, 40)
    assert not p.runner.is_active  # the stream, the last holder, freed it
    with p:
        assert p(img).labels.shape == (120, 160)
    assert not p.runner.is_active


@within(120)
def test_overlapping_streams_give_opencv_its_thread_setting_back():
    # before: each run restored the value it found: A set 1 (found 3), B set 1 (found 1), A restored 3 under
    # B, B restored 1: OpenCV kept 1 thread for the rest of the process
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        a_running, b_running, a_done = threading.Event(), threading.Event(), threading.Event()
        seen: dict[str, int] = {}

        def stream_a():
            try:
                # 40 frames: more than the queues hold, so the run is still going while its consumer waits
                for k, _ in enumerate(edgeseg.stream(U.format(3, 40), "shapes", cv_threads=1, **RUNTIME)):
                    if k == 0:
                        a_running.set()
                        b_running.wait(30)
            finally:
                a_done.set()

        def stream_b():
            a_running.wait(30)
            for k, _ in enumerate(edgeseg.stream(U.format(4, 40), "shapes", cv_threads=1, **RUNTIME)):
                if k == 0:
                    b_running.set()
                    a_done.wait(30)
                    seen["b after a ended"] = cv2.getNumThreads()

        threads = [threading.Thread(target=stream_a), threading.Thread(target=stream_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert seen == {"b after a ended": 1}  # B's setting holds until B ends
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


class _Unplugged(Source):
    """A camera that gives ``n`` frames, then fails (raises from its iterator)."""

    def __init__(self, n: int, uri: str = "boom://cam2", pause_s: float = 0.0):
        super().__init__()
        self.uri = self.source_id = uri
        self.n, self.pause_s = n, pause_s

    def __iter__(self):
        rng = np.random.default_rng(len(self.uri))
        for i in range(self.n):
            yield Frame(rng.integers(0, 256, (120, 160, 3), np.uint8), i * 40_000_000, i, self.source_id, {})
            time.sleep(self.pause_s)
        raise RuntimeError("camera unplugged")


@within(180)
def test_three_streams_at_once_are_right_and_a_failing_one_stops_only_itself(local, tmp_path):
    # correct before: each run has its own pipeline, queues and sinks
    outcome: dict[str, object] = {}

    def good(name, seed, n, **sinks):
        try:
            ok = 0
            for f, r in edgeseg.stream(U.format(seed, n), "shapes", **RUNTIME, **sinks):
                ok += r is not None and np.array_equal(r.labels, local(f.image).labels)
            outcome[name] = ok
        except BaseException as e:  # noqa: BLE001
            outcome[name] = e

    def bad(kind):
        try:
            if kind == "source":
                list(edgeseg.stream(_Unplugged(5, pause_s=0.02), "shapes", **RUNTIME))
            else:
                for k, _ in enumerate(edgeseg.stream(U.format(9, 40), "shapes", **RUNTIME)):
                    if k == 3:
                        raise ValueError("the consumer's own bug")
            outcome[kind] = "no error"
        except BaseException as e:  # noqa: BLE001
            outcome[kind] = e

    for kind in ("source", "consumer"):
        outcome.clear()
        jsonl, pngs = tmp_path / f"{kind}.jsonl", tmp_path / f"{kind}-png"
        threads = [threading.Thread(target=good, args=("json", 5, 20), kwargs={"json_out": str(jsonl)}),
                   threading.Thread(target=good, args=("png", 6, 20), kwargs={"png_dir": str(pngs)}),
                   threading.Thread(target=bad, args=(kind,))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert (outcome["json"], outcome["png"]) == (20, 20), outcome
        want = {"source": (StreamError, "camera unplugged"), "consumer": (ValueError, "the consumer's own bug")}[kind]
        assert isinstance(outcome[kind], want[0]) and want[1] in str(outcome[kind]), outcome[kind]
        frames = list(SyntheticSource(U.format(5, 20)))
        recs = [json.loads(x) for x in jsonl.read_text().splitlines()]
        assert [r["index"] for r in recs] == list(range(20))
        for rec in recs[::4]:
            want_labels = local(frames[rec["index"]].image).labels
            np.testing.assert_array_equal(_labels_from_json(rec, want_labels.shape), want_labels)
        frames6 = list(SyntheticSource(U.format(6, 20)))
        assert len(list(pngs.glob("*.png"))) == 20
        for i in (0, 19):
            np.testing.assert_array_equal(cv2.imread(str(pngs / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED),
                                          local(frames6[i].image).labels)


@within(240)
def test_twenty_runs_one_after_another_leak_no_threads_and_no_file_descriptors(local, tmp_path):
    # correct before: every run joins its threads and closes its files, also when broken off or failing
    p = edgeseg.load("shapes", **RUNTIME)
    p.runner.activate()
    list(edgeseg.stream(U.format(0, 2), p))  # first-use imports and caches
    base_threads, base_fds = _settle(_threads(), _fds())
    kinds = ("sinks", "multi-live", "break-live", "source-fails")
    for i in range(20):
        kind = kinds[i % len(kinds)]
        if kind == "sinks":
            n = len(list(edgeseg.stream(U.format(i, 3), p, json_out=str(tmp_path / f"{i}.jsonl"),
                                        png_dir=str(tmp_path / f"png{i}"))))
            assert n == 3 and len((tmp_path / f"{i}.jsonl").read_text().splitlines()) == 3
        elif kind == "multi-live":
            got = list(edgeseg.stream([U.format(i, 3) + "&live=1&fps=100", U.format(i, 2)], p, max_batch=2))
            assert 2 <= len(got) <= 5 and all(r is not None for _, r in got)  # a live source may drop
        elif kind == "break-live":
            for k, _ in enumerate(edgeseg.stream([U.format(i, 500) + "&live=1&fps=200", U.format(i, 500)], p)):
                if k == 2:
                    break
        else:
            with pytest.raises(StreamError, match="camera unplugged"):
                list(edgeseg.stream([U.format(i, 3), _Unplugged(2)], p))
    threads, fds = _settle(base_threads, base_fds)
    assert threads == base_threads, f"threads left behind: {sorted(set(threads) - set(base_threads))}"
    assert fds <= base_fds, f"{fds - base_fds} file descriptors left open after 20 runs"
    p.close()


# ---- (c) several sources: one fails or ends early ------------------------------------------------------
A = "synthetic://?seed=1&size=160x120&frames=30"
SHORT = "synthetic://?seed=2&size=160x120&frames=3"


def _by_source(jsonl: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["source"], []).append(rec["index"])
    return out


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["run", "--bundle", "shapes", "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1", *args])
    return code, capsys.readouterr().err


@within(120)
def test_cli_a_source_that_ends_early_does_not_cut_the_others(tmp_path, capsys):
    # correct before
    jsonl = tmp_path / "r.jsonl"
    code, _ = _cli(["--source", A, "--source", SHORT, "--json-out", str(jsonl)], capsys)
    assert code == 0
    assert _by_source(jsonl) == {A: list(range(30)), SHORT: list(range(3))}


def _cut_avi(tmp_path: Path, frames: int = 40) -> Path:
    """An MJPG AVI of ``frames`` frames whose last 40% were cut off (its header still announces them all)."""
    whole = tmp_path / "whole.avi"
    w = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    for i in range(frames):
        img = np.zeros((120, 160, 3), np.uint8)
        cv2.circle(img, (20 + 3 * i, 60), 15, (0, 0, 255), -1)
        w.write(img)
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    return cut


@within(120)
def test_cli_a_truncated_file_among_sources_is_named_and_every_frame_read_is_written(tmp_path, capsys):
    # correct before (OpenCV reader): the other source finishes, the file's frames before the cut are kept
    cut = _cut_avi(tmp_path)
    jsonl, stats = tmp_path / "r.jsonl", tmp_path / "s.json"
    code, err = _cli(["--source", A, "--source", str(cut), "--source-backend", "opencv", "--json-out", str(jsonl),
                      "--stats-json", str(stats)], capsys)
    assert code == 2 and f"video file {cut} decoded" in err and "truncated or corrupt" in err
    got = _by_source(jsonl)
    d = json.loads(stats.read_text())
    assert got[A] == list(range(30))
    assert 10 < len(got[str(cut)]) < 40 and got[str(cut)] == list(range(len(got[str(cut)])))
    assert d["frames"] == d["processed"] == 30 + len(got[str(cut)]) and str(cut) in d["fatal_error"]


@within(120)
def test_sources_that_fail_in_a_mux_are_each_named_and_the_others_finish():
    # before: StreamError "source 'mux(synthetic://..., boom://cam2, boom://cam3)' failed: camera unplugged":
    # neither which camera nor the second failure
    p = edgeseg.load("shapes", **RUNTIME)
    pipe = build_pipeline(StreamOptions(source=[A, _Unplugged(4), _Unplugged(2, "boom://cam3")]), predictor=p,
                          handle_signals=False)
    got: list[tuple[str, int, bool]] = []
    pipe.sinks.append(CallbackSink(lambda f, r: got.append((f.source_id, f.index, r is not None))))
    with pytest.raises(StreamError) as info:
        pipe.run()
    text = str(info.value)
    assert "2 of 3 sources failed" in text
    assert "source 'boom://cam2' failed after 4 frame(s): camera unplugged" in text
    assert "source 'boom://cam3' failed after 2 frame(s): camera unplugged" in text
    assert "other 1 source(s)" in info.value.fix
    for sid, n in ((A, 30), ("boom://cam2", 4), ("boom://cam3", 2)):
        assert [(i, ok) for s, i, ok in got if s == sid] == [(i, True) for i in range(n)], sid
    assert pipe.stats.processed == 36


@within(120)
def test_a_file_read_beside_a_live_source_loses_no_frame(tmp_path, capsys):
    # before: one live source made the mux's whole buffer drop its oldest frame: the file-like source, read
    # as fast as it decodes, lost frames: 15 of its 30 were written here (17 of 30 beside a camera that never gave one)
    live = "synthetic://?seed=3&size=160x120&frames=4&live=1&fps=20"
    jsonl, stats = tmp_path / "r.jsonl", tmp_path / "s.json"
    code, _ = _cli(["--source", A, "--source", live, "--json-out", str(jsonl), "--stats-json", str(stats)], capsys)
    assert code == 0
    got = _by_source(jsonl)
    assert got[A] == list(range(30))
    d = json.loads(stats.read_text())
    assert len(got.get(live, [])) + d["drops"] == 4 and len(got.get(live, [])) >= 1  # the camera's frames: kept or counted


@within(120)
def test_one_unreachable_camera_among_sources_is_named_and_the_others_finish(gst, tmp_path, capsys):
    # before: 17 of the 30 frames of the other source were written (the mux, live because of the camera,
    # dropped the rest); the RTSP source gives up after its timeout, named
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    dead = f"rtsp://127.0.0.1:{port}/cam?timeout=1"
    jsonl = tmp_path / "r.jsonl"
    code, err = _cli(["--source", A, "--source", dead, "--json-out", str(jsonl)], capsys)
    assert code == 2 and f"cannot connect to '{dead}'" in err
    assert _by_source(jsonl) == {A: list(range(30))}


def test_a_camera_faster_than_the_model_does_not_starve_a_file_in_the_mux():
    """Review of the mux buffer: a camera at 100 fps beside a file, the consumer at 33 fps: the live frames
    refilled every slot the consumer freed, and the file's frames never got in (cam 100, file 0 after 3 s).
    Now the camera holds one slot (its newest frame) while the file reads: every file frame arrives."""
    import time as _time

    import numpy as _np

    from edgeseg.stream.sources.mux import _MuxBuffer
    from edgeseg.structures.frame import Frame as _Frame

    buf = _MuxBuffer(8, 1, files=1)
    img = _np.zeros((2, 2, 3), _np.uint8)
    stop = threading.Event()

    def camera():
        i = 0
        while not stop.is_set():
            buf.put_from(_Frame(img, i, i, "cam"), live=True)
            i += 1
            _time.sleep(0.01)

    def file():
        for i in range(30):
            if not buf.put_from(_Frame(img, i, i, "file"), live=False):
                return
        buf.file_done()

    threading.Thread(target=camera, daemon=True).start()
    _time.sleep(0.2)
    threading.Thread(target=file, daemon=True).start()
    got = {"cam": 0, "file": 0}
    t0 = _time.monotonic()
    while _time.monotonic() - t0 < 2.5:
        got[buf.get(timeout=1).source_id] += 1
        _time.sleep(0.03)
    stop.set()
    buf.close()
    assert got["file"] == 30 and got["cam"] > 10 and buf.dropped > 0, got


@pytest.mark.parametrize("cameras, want", [
    # four cameras at 15 fps behind a model taking 60 ms a frame (about 17 fps): first in, first out gave 289, 4, 0
    # and 7 of 300 frames (an audit); in turn, a quarter each
    ({"A": (67, 0), "B": (67, 1), "C": (67, 2), "D": (67, 3)}, {"A": 250, "B": 250, "C": 250, "D": 250}),
    # 30 fps and 10 fps sharing 16.7 fps: 8.3 each (FIFO gave the fast one 12 fps against 0.9); a slower camera
    # (4 fps) gets every frame and the fast one the rest
    ({"fast": (33, 0), "slow": (100, 5)}, {"fast": 500, "slow": 500}),
    ({"fast": (33, 0), "slow": (250, 5)}, {"fast": 760, "slow": 240}),
])
def test_cameras_faster_than_the_model_share_it_in_turn(cameras, want):
    """The mux's live frames are taken from each source in turn (round robin, DeepStream's ``nvstreammux``); the
    buffer on a simulated clock (a frame every ``period`` ms from ``phase``, the model taking one every 60 ms for
    60 s): each camera gets its share, and its frames stay in its own order."""
    from types import SimpleNamespace

    from edgeseg.stream.sources.mux import _MuxBuffer

    buf = _MuxBuffer(8, live=len(cameras), files=0)
    got = dict.fromkeys(cameras, 0)
    last = dict.fromkeys(cameras, -1)
    sent = dict.fromkeys(cameras, 0)
    for ms in range(60000):
        for cam, (period, phase) in cameras.items():
            if ms % period == phase:
                buf.put_from(SimpleNamespace(source_id=cam, index=sent[cam]), live=True)
                sent[cam] += 1
        if ms % 60 == 0 and len(buf):
            f = buf.get(0)
            assert f.index > last[f.source_id]
            last[f.source_id] = f.index
            got[f.source_id] += 1
    for cam, n in want.items():
        assert abs(got[cam] - n) <= 0.04 * n, got
    assert buf.taken_by == got and all(buf.dropped_by.get(c, 0) == sent[c] - got[c] - sum(
        1 for f in buf._items if f.source_id == c) for c in cameras)


def test_a_pipeline_opening_while_the_last_user_closes_the_shared_runner_keeps_it_active():
    """Review of the shared-runner count: pipeline A (the last user) released the runner and deactivated it
    after the lock; pipeline B, opening meanwhile, saw it active, left it, and then every frame of B failed
    ('runner is not active'). Opening and closing an inference stage are now serialised."""
    import time as _time

    from edgeseg.stream.pipeline import _SHARED_RUNNERS
    from edgeseg.stream.stages import InferenceStage

    class SlowToClose:  # a session whose release takes a moment, as a real one's does
        def __init__(self):
            self._active = False

        @property
        def is_active(self):
            return self._active

        def activate(self):
            self._active = True

        def deactivate(self):
            _time.sleep(0.2)
            self._active = False

        def infer(self, feed):
            if not self._active:
                raise RuntimeError("runner is not active")
            return {}

    runner = SlowToClose()
    a = InferenceStage(runner)
    with _SHARED_RUNNERS.serialised(a):
        _SHARED_RUNNERS.use(a)
        a.open()
    closing = threading.Thread(target=_SHARED_RUNNERS.release, args=(a, True))
    closing.start()
    _time.sleep(0.05)
    b = InferenceStage(runner)
    with _SHARED_RUNNERS.serialised(b):
        _SHARED_RUNNERS.use(b)
        b.open()
    closing.join()
    assert runner.is_active and runner.infer({}) == {}
    _SHARED_RUNNERS.release(b, close=True)
    assert not runner.is_active


def test_a_model_loading_in_one_pipeline_does_not_hold_up_pipelines_of_other_models():
    """Second review: the open/close serialisation was one lock for the process, so a pipeline closing its own
    model waited for another pipeline's unrelated model load (2.8 s here; a TensorRT engine build: minutes)."""
    import time as _time

    from edgeseg.stream.pipeline import _SHARED_RUNNERS
    from edgeseg.stream.stages import InferenceStage

    class Loads:
        def __init__(self, seconds):
            self.is_active, self.seconds = False, seconds

        def activate(self):
            _time.sleep(self.seconds)
            self.is_active = True

        def deactivate(self):
            self.is_active = False

    slow, quick = InferenceStage(Loads(2.0)), InferenceStage(Loads(0.0))
    with _SHARED_RUNNERS.serialised(quick):
        _SHARED_RUNNERS.use(quick)
        quick.open()

    def open_slow():
        with _SHARED_RUNNERS.serialised(slow):
            _SHARED_RUNNERS.use(slow)
            slow.open()

    loading = threading.Thread(target=open_slow)
    loading.start()
    _time.sleep(0.2)
    t0 = _time.monotonic()
    _SHARED_RUNNERS.release(quick, close=True)
    assert _time.monotonic() - t0 < 1.0 and not quick.runner.is_active
    loading.join()
    _SHARED_RUNNERS.release(slow, close=True)
