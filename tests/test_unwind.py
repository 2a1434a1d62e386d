"""GStreamer + a C++ runtime in one process (issue 10, defect 1; root cause in ``edgeseg/_unwind.py``).

Each case runs in a fresh interpreter, since the order in which libraries enter the process is the
point. Before the fix, cases 1-3 died with SIGABRT ("dlSym cannot locate method 'create_extensions'")
or SIGSEGV; the exit code is asserted, and what the process printed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.gst
REPO = Path(__file__).resolve().parents[1]


def _needs(*modules: str) -> None:
    for m in modules:
        pytest.importorskip(m)
    from edgeseg.stream.gst import available

    ok, why = available()
    if not ok:
        pytest.skip(why)


def gst_brings_libunwind() -> bool:
    """Whether this system's libgstreamer links libunwind (Debian's does): the hazard exists at all."""
    import ctypes.util
    import shutil

    lib = ctypes.util.find_library("gstreamer-1.0")
    if lib is None or shutil.which("ldd") is None:
        return False
    path = next((p for p in (f"/usr/lib/x86_64-linux-gnu/{lib}", f"/usr/lib/{lib}", f"/lib/x86_64-linux-gnu/{lib}")
                 if os.path.exists(p)), None)
    if path is None:
        return False
    return "libunwind" in subprocess.run(["ldd", path], capture_output=True, text=True).stdout


def _run(code: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    full = {**{k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=str(REPO))


def test_openvino_compiles_after_gstreamer_was_loaded():
    _needs("openvino")
    r = _run("""
        import edgeseg
        from edgeseg.stream.gst import gst
        gst()                                    # GStreamer (and its libunwind) enter the process first
        from edgeseg._unwind import unwinder_hazard
        assert unwinder_hazard() is None, unwinder_hazard()
        with edgeseg.load("road", backend="openvino", precision="fp32") as p:
            import numpy as np
            r = p(np.zeros((360, 480, 3), np.uint8))
        print("OK", p.backend, r.labels.shape)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK openvino (360, 480)" in r.stdout


def test_onnxruntime_error_after_gstreamer_is_an_exception_not_a_crash(tmp_path):
    _needs("onnxruntime")
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"not a model")
    r = _run(f"""
        import edgeseg
        from edgeseg.stream.gst import gst
        gst()
        from edgeseg._ort import make_session
        from edgeseg.errors import EdgesegError
        try:
            make_session({str(bad)!r})
        except EdgesegError as e:
            print("CAUGHT", type(e).__name__)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CAUGHT" in r.stdout


def test_gstreamer_file_source_feeding_openvino_in_one_process(tmp_path):
    """The failing run itself, with default options: a GStreamer file source opened first, then the
    automatic choice compiles and times OpenVINO and ONNX Runtime models in the same process."""
    _needs("openvino")
    video = tmp_path / "in.mp4"
    out = tmp_path / "out.mp4"
    make = _run(f"""
        from edgeseg.stream.gst import gst
        Gst = gst()
        p = Gst.parse_launch("videotestsrc num-buffers=12 pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 "
                             "! videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location={video}")
        p.set_state(Gst.State.PLAYING)
        msg = p.get_bus().timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        p.set_state(Gst.State.NULL)
        assert msg.type == Gst.MessageType.EOS
    """)
    assert make.returncode == 0, make.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "edgeseg", "run", "--bundle", "road", "--source", str(video),
                        "--source-backend", "gstreamer", "--sink", str(out)],  # default options: the choice runs
                       capture_output=True, text=True, timeout=300, cwd=str(REPO),
                       env={**{k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    from video_ref import decode_video_rgb

    assert len(decode_video_rgb(out)) == 12


def test_gstreamer_loaded_first_is_detected_and_openvino_is_skipped_with_the_reason():
    """An application that imported gi before edgeseg: nothing in-process can reorder the symbol scope,
    so OpenVINO (which throws inside every compile) is reported unavailable, auto falls back to ONNX
    Runtime, and an explicit openvino request is a clear error instead of an abort."""
    _needs("openvino", "onnxruntime")
    if not gst_brings_libunwind():
        pytest.skip("this system's libgstreamer does not link libunwind: no hazard to detect")
    r = _run("""
        import gi
        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
        Gst.init(None)
        import edgeseg
        from edgeseg._unwind import unwinder_hazard
        from edgeseg.backends import BACKENDS
        from edgeseg.errors import BackendUnavailable
        assert unwinder_hazard() is not None
        ok, why = BACKENDS.get("openvino").is_available()
        print("OV", ok, "libunwind" in why, "LD_PRELOAD=libgcc_s.so.1" in why)
        print("AUTO", edgeseg.load("road", precision="fp32").backend)
        try:
            edgeseg.load("road", backend="openvino", precision="fp32")
        except BackendUnavailable as e:
            print("REFUSED")
    """, EDGESEG_CACHE_DIR="")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OV False True True" in r.stdout
    assert "AUTO onnxruntime" in r.stdout
    assert "REFUSED" in r.stdout


def test_ld_preload_of_libgcc_removes_the_hazard_even_when_gstreamer_comes_first():
    _needs("openvino")
    r = _run("""
        import gi
        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
        Gst.init(None)
        import edgeseg
        from edgeseg._unwind import unwinder_hazard
        print("HAZARD", unwinder_hazard())
        with edgeseg.load("road", backend="openvino", precision="fp32") as p:
            print("OK", p.backend)
    """, LD_PRELOAD="libgcc_s.so.1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HAZARD None" in r.stdout and "OK openvino" in r.stdout
