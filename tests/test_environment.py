"""``edgeseg doctor`` / ``edgeseg.environment.report``: this machine as edgeseg sees it, against the components
themselves (GStreamer's registry and ranks, the runtimes' package versions, OpenCV's build), and the problems
a machine lacking a part gets, each with its fix."""
from __future__ import annotations

import json
from importlib import metadata

import pytest

from edgeseg import environment
from edgeseg.backends.device import device_info


@pytest.fixture
def gst():
    from edgeseg.stream import gst as gst_mod

    ok, why = gst_mod.available()
    if not ok:
        pytest.skip(why)
    return gst_mod.gst()


def test_the_report_says_what_the_components_say(gst):
    import cv2

    r = environment.report()
    d = device_info()
    assert r["cpu"] == {"model": d.cpu, "machine": d.machine, "cores": d.cores, "isa": list(d.isa),
                        "int8_arithmetic": d.int8_arithmetic}
    assert r["runtimes"]["onnxruntime"] == {"available": True, "version": metadata.version("onnxruntime"), "why_not": None}
    assert r["gstreamer"]["version"] == gst.version_string()
    for codec, decoders in r["gstreamer"]["decoders"].items():  # in the order decodebin tries them: by rank
        ranks = [gst.ElementFactory.find(x["name"]).get_rank() for x in decoders]
        assert ranks == sorted(ranks, reverse=True) and [x["rank"] for x in decoders] == ranks, codec
    h264 = [x["name"] for x in r["gstreamer"]["decoders"]["H.264"]]
    assert "avdec_h264" in h264
    assert "vp8alphadecodebin" not in [x["name"] for x in r["gstreamer"]["decoders"]["VP8"]]  # alpha streams only
    assert r["gstreamer"]["encoders"]["x264enc"] == {"usable": True, "why_not": None}
    assert r["gstreamer"]["encoders"]["nvh264enc"]["why_not"] == "this machine has no nvh264enc element"
    assert r["opencv"]["version"] == cv2.__version__
    ffmpeg = next(ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("FFMPEG:"))
    assert r["opencv"]["ffmpeg"] == ffmpeg.split(":", 1)[1].strip().startswith("YES")
    assert r["problems"] == []  # tools/setup.sh installs every part
    json.dumps(r)  # plain data


def test_hardware_decoders_are_marked_and_a_failed_one_is_not_used(gst, monkeypatch):
    from edgeseg.stream import gst as gst_mod

    rank = gst.ElementFactory.find("vp8dec").get_rank()
    monkeypatch.setattr(gst_mod, "HARDWARE_DECODERS", (("vp8dec", False),))
    monkeypatch.setattr(gst_mod, "_failed_decoders", {})
    try:
        vp8 = {x["name"]: x for x in environment.report()["gstreamer"]["decoders"]["VP8"]}
        assert vp8["vp8dec"]["hardware"] and vp8["vp8dec"]["used"] and vp8["vp8dec"]["rank"] > rank  # as a file raises it
        assert gst.ElementFactory.find("vp8dec").get_rank() == rank  # the report changed nothing
        gst_mod.disable_decoders(["vp8dec"])
        vp8 = {x["name"]: x for x in environment.report()["gstreamer"]["decoders"]["VP8"]}
        assert not vp8["vp8dec"]["used"] and vp8["avdec_vp8"]["used"]
    finally:
        gst.ElementFactory.find("vp8dec").set_rank(rank)


def test_a_machine_without_a_part_gets_the_fix(monkeypatch):
    from edgeseg.backends import auto
    from edgeseg.stream import gst as gst_mod

    # (as gst.available() says it: the error's own fix after its message; session 58: the problem nested it)
    monkeypatch.setattr(gst_mod, "available", lambda: (False, "no module named gi\n  fix: install GStreamer"))
    real = auto.availability()
    monkeypatch.setattr(auto, "availability", lambda: {**real, "openvino": (False, "no openvino module")})

    def broken():
        raise OSError("cpuinfo unreadable")

    monkeypatch.setattr(environment, "_opencv", broken)
    r = environment.report()
    assert r["gstreamer"] == {"available": False, "why_not": "no module named gi"}
    gst_problem = next(p for p in r["problems"] if p["what"].startswith("GStreamer does not work from Python"))
    assert "fix:" not in gst_problem["what"] and "libgirepository1.0-dev" in gst_problem["fix"]
    assert r["runtimes"]["openvino"] == {"available": False, "version": metadata.version("openvino"),
                                         "why_not": "no openvino module"}
    assert r["opencv"] == {"error": "OSError: cpuinfo unreadable"} and r["cpu"]["cores"] >= 1  # the rest still there
    fixes = {p["fix"] for p in r["problems"]}
    assert any(f.startswith("apt-get install gstreamer1.0-tools") for f in fixes)
    assert "pip install 'edgeseg[openvino]'" in fixes
    assert any(p["what"].startswith("opencv: cannot be inspected (OSError") for p in r["problems"])


def test_tensorrt_installed_without_cuda_python_is_a_problem(monkeypatch):
    """JetPack's TensorRT in a venv made with --system-site-packages, cuda-python not installed."""
    import importlib.util

    from edgeseg.backends import auto

    real_find, real = importlib.util.find_spec, auto.availability()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else real_find(name, *a))
    monkeypatch.setattr(auto, "availability", lambda: {**real, "tensorrt": (False, "no cuda-python module; pip install cuda-python")})
    problems = environment.report()["problems"]
    assert {"what": "TensorRT is installed but cannot run: no cuda-python module; pip install cuda-python",
            "fix": "pip install 'cuda-python==12.*' (the CUDA major of the driver; JetPack 5: 'cuda-python==11.8.*')"} in problems


def test_a_jetson_is_named_by_its_l4t_release(tmp_path):
    """/etc/nv_tegra_release as JetPack 5.1.2 and 6.0 write it; anything else is no Jetson."""
    rel = tmp_path / "nv_tegra_release"
    rel.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 "
                   "19:57:35 UTC 2023\n# KERNEL_VARIANT: oot\n")
    assert environment.jetson_release(str(rel)) == {"l4t": "R35.4.1", "jetpack": "5"}
    rel.write_text("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: Fri Jul 19\n")
    assert environment.jetson_release(str(rel)) == {"l4t": "R36.3.0", "jetpack": "6"}
    rel.write_text("hello\n")
    assert environment.jetson_release(str(rel)) is None
    assert environment.jetson_release(str(tmp_path / "absent")) is None


def test_doctor_command_prints_and_writes_the_report(gst, tmp_path, capsys, monkeypatch):
    from edgeseg.cli import main

    monkeypatch.setenv("EDGESEG_TRT_MAX_SIDE", "1280")  # a setting that changes what runs is shown
    out = tmp_path / "machine.json"
    assert main(["doctor", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["gstreamer"]["version"] == gst.version_string() and data["problems"] == []
    assert f"runtime   onnxruntime  {metadata.version('onnxruntime')}" in text
    assert "  encode  x264enc       yes" in text and text.rstrip().endswith("problems  none")
    assert "setting   EDGESEG_TRT_MAX_SIDE=1280" in text and data["cache"]["settings"]["EDGESEG_TRT_MAX_SIDE"] == "1280"
    monkeypatch.chdir(tmp_path)  # --json -: the report on standard output (it wrote a file named '-')
    assert main(["doctor", "--json", "-"]) == 0
    said = capsys.readouterr()  # standard output is the JSON alone, the report went to stderr (session 48)
    assert json.loads(said.out)["problems"] == [] and "problems  none" in said.err and not (tmp_path / "-").exists()


def test_settings_that_fail_later_are_problems_now(tmp_path, monkeypatch):
    """doctor said "problems none" beside a cache it had itself marked NOT writable, and echoed TensorRT settings
    that fail only when an engine is built."""
    import os

    from edgeseg.environment import report

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(ro / "cache"))
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("EDGESEG_TRT_DLA_CORE", "x")
    monkeypatch.setenv("EDGESEG_TRT_MAX_BATCH", "abc")
    monkeypatch.setenv("OMP_NUM_THREADS", "-3")
    try:
        what = " | ".join(p["what"] for p in report()["problems"])
    finally:
        ro.chmod(0o700)
    assert "EDGESEG_DATA=" in what and "OMP_NUM_THREADS='-3'" in what and "EDGESEG_TRT_DLA_CORE='x'" in what
    assert "EDGESEG_TRT_MAX_BATCH='abc'" in what
    if os.geteuid() != 0:  # root writes anywhere: the cache check is for other users
        assert "is not writable" in what


def test_doctor_shows_every_edgeseg_variable_the_code_reads():
    """A docs audit: `doctor`'s list of the variables edgeseg reads held EDGESEG_NNCF (a Python constant, read from no
    environment) and lacked EDGESEG_OPENVINO_TELEMETRY (read, and documented). The list is checked against the
    source now: every "EDGESEG_*" string of the package that names a variable it reads."""
    import re
    from pathlib import Path

    import edgeseg
    from edgeseg.environment import SETTINGS

    pkg = Path(edgeseg.__file__).parent
    read = {m for f in pkg.rglob("*.py") for m in re.findall(r'"(EDGESEG_[A-Z0-9_]+)"', f.read_text(encoding="utf-8"))}
    assert {s for s in SETTINGS if s.startswith("EDGESEG_")} == read


def test_two_onnx_runtime_builds_installed_together_are_a_problem(tmp_path, monkeypatch):
    """An audit (session 58): `onnxruntime` (edgeseg's own dependency) installed beside `onnxruntime-gpu` leaves one
    module with whichever files each install left; doctor said nothing, and the device key named only the first."""
    from edgeseg.backends.device import runtime_versions

    info = tmp_path / "onnxruntime_gpu-1.20.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.1\n")
    before = runtime_versions()
    monkeypatch.syspath_prepend(str(tmp_path))  # a real distribution's metadata, as pip leaves it
    assert metadata.version("onnxruntime-gpu") == "1.20.1"
    ort = f"onnxruntime=={metadata.version('onnxruntime')}"
    problem = next(p for p in environment.report()["problems"] if "ONNX Runtime packages are installed" in p["what"])
    assert problem["what"].startswith(f"2 ONNX Runtime packages are installed ({ort}, onnxruntime-gpu==1.20.1)")
    assert problem["fix"].startswith("pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    assert set(runtime_versions()) == {*before, "onnxruntime-gpu==1.20.1"}  # (the device key names both)
