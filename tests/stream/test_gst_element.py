"""The native ``edgeseg`` GStreamer element, run by gst-launch-1.0 through gst-python's plugin loader
(Debian's embedded libpython 3.11 with this venv's packages on PYTHONPATH)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeseg.stream import GstSource, Renderer
from edgeseg.stream.gst_plugin import environment

pytestmark = pytest.mark.gst




def test_element_draws_the_same_overlay_as_the_sdk(launch_env, bundle, predictor, tmp_path):
    w, h, n = 50, 36, 4  # width 50: RGB rows padded from 150 to 152 bytes
    raw = tmp_path / "out.rgb"
    cmd = ["gst-launch-1.0", "-q", "videotestsrc", "pattern=smpte", f"num-buffers={n}", "!",
           f"video/x-raw,width={w},height={h},framerate=25/1", "!", "videoconvert", "!", "video/x-raw,format=RGB", "!",
           "edgeseg", f"bundle={bundle.root}", "backend=onnxruntime", "alpha=0.5", "!", "filesink", f"location={raw}"]
    done = subprocess.run(cmd, env=launch_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stride = (w * 3 + 3) & ~3
    data = np.frombuffer(raw.read_bytes(), np.uint8)
    assert data.size == n * stride * h
    got = data.reshape(n, h, stride)[:, :, : w * 3].reshape(n, h, w, 3)
    renderer = Renderer(bundle.manifest.palette_array, bundle.manifest.classes, alpha=0.5, hud=False)
    src = GstSource(f"test://smpte?frames={n}&width={w}&height={h}&fps=25")
    for frame, out in zip(src, got):
        np.testing.assert_array_equal(out, renderer(frame.image, predictor(frame.image)))
    src.close()


def test_element_without_bundle_fails_clearly(launch_env):
    cmd = ["gst-launch-1.0", "videotestsrc", "num-buffers=2", "!", "videoconvert", "!", "edgeseg", "!", "fakesink"]
    done = subprocess.run(cmd, env=launch_env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "needs bundle=PATH" in done.stdout + done.stderr


def test_environment_takes_virtualenv_bins_off_path(tmp_path):
    """The loader's embedded Python would take an activated venv's prefix from PATH and fail."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    env = environment(path=f"{venv / 'bin'}:/usr/local/bin:/usr/bin")
    assert env["PATH"] == "/usr/local/bin:/usr/bin"


def test_the_exports_say_on_stderr_that_an_active_venv_breaks_the_loader(tmp_path):
    """A docs audit: with the venv activated (README: `source .venv/bin/activate`), streaming.md's commands failed
    (`no element "edgeseg"`) and the printed hint was a comment inside the exports, which `eval "$(...)"` swallows.
    It is on standard error now, and the exports stay what eval runs."""
    import os
    import sys

    venv = Path(sys.prefix)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "edgeseg.stream.gst_plugin"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    if not (venv / "pyvenv.cfg").is_file():
        pytest.skip("the tests run outside a virtual environment")
    assert "a virtual environment is active: run gst-launch-1.0 after 'deactivate'" in done.stderr
    assert "env PATH=/usr/bin:/bin gst-launch-1.0" in done.stderr and "registry" in done.stderr
    assert [ln.split("=")[0] for ln in done.stdout.splitlines() if not ln.startswith("#")] == [
        "export GST_PLUGIN_PATH", "export PYTHONPATH", "export LD_PRELOAD"]


@pytest.mark.openvino
def test_element_runs_openvino_inside_gst_launch(launch_env, tmp_path):
    """gst-launch-1.0 links libgstreamer and so libunwind before any Python runs: environment()'s
    LD_PRELOAD puts GCC's unwinder first, and OpenVINO compiles (it aborted the process before)."""
    pytest.importorskip("openvino")
    cmd = ["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=2", "!", "video/x-raw,width=96,height=64", "!",
           "videoconvert", "!", "video/x-raw,format=RGB", "!", "edgeseg", "bundle=road", "backend=openvino", "!", "fakesink"]
    done = subprocess.run(cmd, env=launch_env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    from test_unwind import gst_brings_libunwind

    if not gst_brings_libunwind():
        return  # no libunwind in this system's libgstreamer: nothing to detect without the preload
    without = {k: v for k, v in launch_env.items() if k != "LD_PRELOAD"}
    done = subprocess.run(cmd, env=without, capture_output=True, text=True, timeout=180)
    assert done.returncode not in (-6, -11, 134, 139), done.stderr[-2000:]  # a clear error, never an abort
    assert done.returncode != 0 and "LD_PRELOAD=libgcc_s.so.1" in done.stdout + done.stderr
