"""RTSP against real GStreamer on 127.0.0.1: the server sink serves what the pipeline renders, and an
RTSP source survives its server going away and coming back (reconnect with back-off, gap recorded)."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
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


def test_rtsp_server_sink_serves_the_frames(gst):
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


def test_rtsp_source_reconnects_and_records_the_gap(gst):
    port = free_port()
    server = start_server(port)
    times: list[float] = []
    src = GstSource(f"rtsp://127.0.0.1:{port}/cam?latency=0", backoff_s=(0.1, 0.5), stall_timeout_s=2.0)
    pipe = Pipeline([src, CallbackSink(lambda f, r: times.append(time.monotonic()))], handle_signals=False)
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: len(times) >= 10, 20), "no frames from the RTSP server"
        server.kill()
        server.wait()
        t_down = time.monotonic()
        time.sleep(1.0)
        n_down = len(times)
        server = start_server(port)
        assert wait_for(lambda: len(times) >= n_down + 10, 20), "no frames after the server came back"
    finally:
        pipe.stop()
        runner.join(10)
        server.kill()
        server.wait()
    stats = pipe.stats
    assert stats is not None and stats.fatal_error is None and stats.stopped_by == "stop"
    assert stats.reconnects >= 1
    gap = max(stats.reconnect_gaps_s)
    assert 1.0 <= gap < 10.0  # at least the time the server was away
    # frames resumed after the outage: there is a hole of about `gap` in the arrival times
    holes = np.diff(times)
    assert holes.max() == pytest.approx(gap, abs=0.5)
    assert t_down < times[-1]
