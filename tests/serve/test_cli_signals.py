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
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray Serve is not installed: pip install 'edgeseg[serve]'")
pytestmark = pytest.mark.serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    """(HTTP status, body); (0, why) where nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


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
    seen = []  # (/healthz, /readyz, a bundle's route) while it starts
    try:
        deadline = time.monotonic() + 180
        while True:
            base = f"http://127.0.0.1:{port}"
            seen.append((_get(f"{base}/healthz"), _get(f"{base}/readyz"), _get(f"{base}/v1/bundles/shapes/stats")))
            if seen[-1][1][0] == 200:
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "edgeseg serve did not get ready in 180 s"
            time.sleep(0.1)
        assert _ray_session(proc), "the local Ray instance's processes were not found"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    # session 58: the ingress is deployed before the bundles, so that a liveness probe has its answer while they load
    # (the proxy answered 404 to every path until the last application was up: 20-50 s on a first start)
    up = [(h, r, b) for h, r, b in seen if h[0] == 200]
    assert up and all(r[0] in (200, 503) for _, r, _ in up), seen[-5:]
    starting = [(r, b) for _, r, b in up if r[0] == 503]
    assert starting and all("starting" in r[1] for r, _ in starting), seen[-5:]
    # a bundle still starting: 503 with "starting" (edgeseg's client retries it) from the ingress, or, once its own route
    # is live, held by Serve's proxy until a replica runs (here: the 2 s read timeout); never "no bundle here" (404)
    assert all(b[0] in (200, 503, 0) and (b[0] == 200 or "starting" in b[1] or "timed out" in b[1])
               for _, b in starting), [b for _, b in starting if b[0] != 200]
    assert "interrupted (SIGTERM)" in err
    assert "SIGTERM received" not in err  # Ray's failure handler (stack dump, abort) never ran
    assert not _ready(f"http://127.0.0.1:{port}/readyz")
    deadline = time.monotonic() + 30
    while _ray_session(proc) and time.monotonic() < deadline:  # the raylet's children exit a moment later
        time.sleep(0.5)
    assert not _ray_session(proc)
