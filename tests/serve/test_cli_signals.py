"""``edgeseg serve`` stops cleanly on SIGTERM (systemctl stop, docker stop): the Serve applications and
the local Ray instance it started are shut down and it exits 143, where Ray's own C++ handler used to
dump a stack trace and abort (exit 134) with nothing shut down."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray Serve is not installed: pip install 'edgeseg[serve]'")
pytestmark = pytest.mark.serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _ray_session(proc: subprocess.Popen) -> list[int]:
    """PIDs of the Ray processes whose command line names the session ``proc`` started."""
    tag = f"_{proc.pid}/".encode()  # Ray's session folder ends in the driver's PID: session_DATE_TIME_MICROS_PID
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and tag in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # exited meanwhile
            continue
    return pids


def test_sigterm_shuts_the_server_down_and_exits_143(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "edgeseg", "serve", "shapes", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while not _ready(f"http://127.0.0.1:{port}/readyz"):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "edgeseg serve did not get ready in 180 s"
            time.sleep(1)
        assert _ray_session(proc), "the local Ray instance's processes were not found"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted (SIGTERM)" in err
    assert "SIGTERM received" not in err  # Ray's failure handler (stack dump, abort) never ran
    assert not _ready(f"http://127.0.0.1:{port}/readyz")
    deadline = time.monotonic() + 30
    while _ray_session(proc) and time.monotonic() < deadline:  # the raylet's children exit a moment later
        time.sleep(0.5)
    assert not _ray_session(proc)
