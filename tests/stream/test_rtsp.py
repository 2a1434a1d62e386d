"""RTSP against real GStreamer on 127.0.0.1: the server sink serves what the pipeline renders, and an
RTSP source survives its server going away and coming back (reconnect with back-off, gap recorded)."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgeseg.stream import CallbackSink, GstSource, Pipeline, RtspServerSink
from edgeseg.structures import Frame

pytestmark = pytest.mark.gst
SERVER = Path(__file__).with_name("rtsp_test_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_rtsp_server_sink_serves_the_frames(gst, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="edgeseg.stream")
    port = free_port()
    sink = RtspServerSink(port, "/out", fps=30)
    sink.open()
    stop = threading.Event()
    image = np.zeros((96, 128, 3), np.uint8)
    image[:, :64] = (255, 0, 0)  # left half red, right half black

    def feed():
        i = 0
        while not stop.is_set():
            sink.write(Frame(image, index=i), None)
            i += 1
            time.sleep(1 / 30)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert wait_for(lambda: sink._server is not None, 5)
        got = []
        src = GstSource(f"rtsp://127.0.0.1:{port}/out?latency=0", reconnect=False)
        pipe = Pipeline([src, CallbackSink(lambda f, r: got.append(f.image))], max_frames=10, handle_signals=False)
        stats = pipe.run()
    finally:
        stop.set()
        feeder.join(2)
        sink.close()
    assert stats.processed == 10 and sink.sent >= 10
    last = got[-1].astype(int)
    assert last.shape == (96, 128, 3)
    assert np.abs(last[:, 8:56] - [255, 0, 0]).mean() < 25  # H.264 round trip keeps the colours
    assert np.abs(last[:, 72:120]).mean() < 25
    # its viewer's coming and going logged (session 57, an operator's audit: never said)
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("RTSP viewer 127.0.0.1 connected to rtsp://") for m in said), said


def test_the_rtsp_sink_is_registered_by_name():
    """A review (session 58): a helper put between the registry's decorator and the class registered the helper."""
    from edgeseg.stream import SINKS

    assert SINKS.get("rtsp") is RtspServerSink


def test_a_viewer_that_vanishes_leaves_no_session_behind(gst, monkeypatch):
    """A soak (session 58): a viewer killed without a TEARDOWN (or a network drop) left its session in the server's
    pool for good, nothing ever removing expired sessions (0.3 KB each, unbounded). The pool is now cleaned on a
    timer; here with a 2 s session timeout and a 1 s cleanup (60 s and 10 s in a run)."""
    import shutil
    import signal

    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 is not installed")
    monkeypatch.setattr(RtspServerSink, "SESSION_TIMEOUT_S", 2)
    monkeypatch.setattr(RtspServerSink, "CLEANUP_S", 1)
    port = free_port()
    sink = RtspServerSink(port, "/v", fps=15)
    sink.open()
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            sink.write(Frame(np.zeros((64, 96, 3), np.uint8), index=i), None)
            i += 1
            time.sleep(1 / 15)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    viewer = None
    try:
        assert wait_for(lambda: sink._server is not None, 5)
        pool = sink._bound.get_session_pool()
        viewer = subprocess.Popen(["gst-launch-1.0", "-q", "rtspsrc", f"location=rtsp://127.0.0.1:{port}/v",
                                   "latency=0", "!", "fakesink"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: pool.get_n_sessions() == 1, 20), "the viewer never got a session"
        time.sleep(1.0)  # (playing)
        viewer.send_signal(signal.SIGKILL)  # gone without a word, as a crashed client or a dropped network
        viewer.wait()
        assert wait_for(lambda: pool.get_n_sessions() == 0, 10), f"{pool.get_n_sessions()} session(s) left"
    finally:
        if viewer is not None and viewer.poll() is None:
            viewer.kill()
        stop.set()
        feeder.join(2)
        sink.close()


@dataclass
class Outage:
    """A run through a server outage: arrival times of the frames, and when the server went and came back."""

    pipe: Pipeline
    times: list[float]
    pts: list[int]  # the frames' pts_ns
    n_down: int  # frames that arrived before the server came back
    t_down: float
    t_back: float


def run_through_outage(outage_s: float, frames: int = 10, **source_options) -> Outage:
    """A GstSource on the loopback server: ``frames`` frames, the server killed for ``outage_s``, restarted,
    ``frames`` frames more, then the pipeline stopped."""
    port = free_port()
    server = start_server(port)
    times: list[float] = []
    pts: list[int] = []

    def record(frame, result):
        pts.append(frame.pts_ns)
        times.append(time.monotonic())

    src = GstSource(f"rtsp://127.0.0.1:{port}/cam?latency=0", stall_timeout_s=2.0, **source_options)
    pipe = Pipeline([src, CallbackSink(record)], handle_signals=False)
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: len(times) >= frames, 20), "no frames from the RTSP server"
        server.kill()
        server.wait()
        t_down = time.monotonic()
        time.sleep(outage_s)
        n_down = len(times)
        server = start_server(port)
        t_back = time.monotonic()
        assert wait_for(lambda: len(times) >= n_down + frames, 20), "no frames after the server came back"
    finally:
        pipe.stop()
        runner.join(10)
        server.kill()
        server.wait()
    return Outage(pipe, times, pts, n_down, t_down, t_back)


def test_rtsp_source_reconnects_and_records_the_gap(gst):
    run = run_through_outage(1.0, backoff_s=(0.1, 0.5))
    stats = run.pipe.stats
    assert stats is not None and stats.fatal_error is None and stats.stopped_by == "stop"
    assert stats.reconnects >= 1
    gap = max(stats.reconnect_gaps_s)
    assert 1.0 <= gap < 10.0  # at least the time the server was away
    # frames resumed after the outage: there is a hole of about `gap` in the arrival times
    holes = np.diff(run.times)
    assert holes.max() == pytest.approx(gap, abs=0.5)
    assert run.t_down < run.times[-1]
    # the frames' time runs on across the reconnect and keeps the outage (session 56: the new connection's pts
    # started again near 0, so the JSON lines' time ran backwards and an MP4 left the outage out)
    steps = np.diff(run.pts) / 1e9
    assert (steps > 0).all()
    assert steps.max() == pytest.approx(holes.max(), abs=0.3)  # stamped in the source, not at the sink
    assert int(np.argmax(steps)) == int(np.argmax(holes))


def test_default_backoff_reconnects_within_a_second_of_the_server_coming_back(gst):
    """Retries (with their 0.3 s wait for a refusal) come 0.25, 1.05, 2.35, 4.65, 8.95 s after the loss with
    the old 4 s back-off ceiling, so a server back after ~5.5 s was not asked again for ~3.5 s; with the
    1 s ceiling a retry comes within 1.3 s."""
    run = run_through_outage(4.8, frames=5)  # the default back-off; + ~0.7 s for the server to start
    assert run.pipe.stats.reconnects == 1
    # a retry within 1.3 s of it being back, + connect and keyframe (the old 4 s ceiling gave ~3.5 s + that)
    assert run.times[run.n_down] - run.t_back < 3.0


def test_an_outage_under_way_when_the_run_stops_is_reported(gst):
    """Session 57: a run stopped while its camera's server was away reported no outage at all (``reconnect_gaps_s``
    has only outages that ended); now ``Stats.outages_at_stop_s`` has it, from the last frame to the stop, and the
    summary says it. A reconnect after it (none here) would not be counted twice: the outage ends there."""
    port = free_port()
    server = start_server(port)
    arrived: list[float] = []
    src = GstSource(f"rtsp://127.0.0.1:{port}/cam?latency=0", stall_timeout_s=2.0, backoff_s=(0.1, 0.5))
    pipe = Pipeline([src, CallbackSink(lambda f, r: arrived.append(time.perf_counter()))], handle_signals=False)
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: len(arrived) >= 5, 20), "no frames from the RTSP server"
        server.kill()
        server.wait()
        time.sleep(1.5)
        stopped = time.perf_counter()
        pipe.stop()
        runner.join(10)
    finally:
        server.kill()
        server.wait()
    stats = pipe.stats
    assert stats.reconnects == 0 and len(stats.outages_at_stop_s) == 1
    assert stats.outages_at_stop_s[0] == pytest.approx(stopped - arrived[-1], abs=0.5)  # from its last frame
    assert "without frames for the last" in stats.summary() and stats.to_dict()["outages_at_stop_s"]

