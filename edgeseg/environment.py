"""What this machine offers edgeseg, as one report: ``edgeseg doctor`` prints it, :func:`report` returns it.

Deploying to a new machine (a Jetson image, a container, a CPU of another kind) goes wrong in ways the
first stream only half says: no H.264 decoder, an NVENC that exists and cannot start, OpenVINO missing so
the INT8 model runs on ONNX Runtime, GStreamer imported before edgeseg. The report gathers, without
running a model: the CPU as the backend choice keys it (model, ISA flags, INT8 arithmetic), each runtime
with its version or why it cannot run, the GPU TensorRT would build for, GStreamer's decoders per codec in
the order ``decodebin`` tries them (hardware ones marked), the H.264 encoders the sinks can use, RTSP,
OpenCV's video I/O and the cache; and a list of problems, each with its fix. Every section is gathered on
its own and never raises: a broken part is reported, not fatal.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
import platform
import sys
from importlib import metadata
from typing import Any, Callable

log = logging.getLogger("edgeseg")

#: codecs and the caps a decoder for them takes (what ``decodebin`` autoplugs for a camera or file)
CODECS = (("H.264", "video/x-h264"), ("H.265", "video/x-h265"), ("VP8", "video/x-vp8, codec-alpha=(boolean)false"),
          ("VP9", "video/x-vp9, codec-alpha=(boolean)false"),
          ("AV1", "video/x-av1"), ("MJPEG", "image/jpeg"), ("MPEG-4", "video/mpeg, mpegversion=(int)4"))
#: Debian's package for what a stream needs and this machine lacks
PACKAGES = {"H.264": "gstreamer1.0-libav", "H.265": "gstreamer1.0-libav", "x264enc": "gstreamer1.0-plugins-ugly",
            "rtsp": "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp",
            "gstreamer": "gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
                         "gstreamer1.0-libav gir1.2-gstreamer-1.0 and pip install 'edgeseg[gst]' (PyGObject, built from source "
                         "where no wheel fits: first apt-get install libgirepository1.0-dev libcairo2-dev pkg-config "
                         "gcc; on Python 3.8 / JetPack 5: apt install python3-gi and a venv made with "
                         "--system-site-packages)"}


#: what to do when a section cannot be gathered at all (its part is missing or broken)
SECTION_FIXES = {"opencv": "pip install opencv-python-headless (edgeseg's own dependency: reinstall edgeseg)",
                 "cpu": "edgeseg -v doctor shows the traceback", "gpu": "edgeseg -v doctor shows the traceback"}


def _section(name: str, gather: Callable[[], dict], problems: list[dict]) -> dict:
    try:
        return gather()
    except Exception as e:  # noqa: BLE001 - a report of a broken part, never a crash
        log.debug("doctor: %s section failed", name, exc_info=True)
        problems.append({"what": f"{name}: cannot be inspected ({type(e).__name__}: {e})",
                         "fix": SECTION_FIXES.get(name, "edgeseg -v doctor shows the traceback")})
        return {"error": f"{type(e).__name__}: {e}"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


#: L4T release major -> JetPack major (the L4T release is what a Jetson's /etc/nv_tegra_release says)
JETPACK = {32: "4", 35: "5", 36: "6", 38: "7"}


def jetson_release(path: str = "/etc/nv_tegra_release") -> dict | None:
    """A Jetson's L4T release (``# R35 (release), REVISION: 4.1, ...`` -> ``R35.4.1``) and its JetPack major, or
    None off a Jetson (no such file, or one that does not read as a release)."""
    import re

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.readline()
    except OSError:
        return None
    m = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if m is None:
        return None
    major = int(m.group(1))
    return {"l4t": f"R{major}.{m.group(2)}", "jetpack": JETPACK.get(major)}


def _edgeseg() -> dict:
    from . import __version__

    return {"version": __version__, "python": platform.python_version(), "executable": sys.executable,
            "platform": platform.platform(), "jetson": jetson_release()}


def _cpu() -> dict:
    from .backends.device import device_info

    d = device_info()
    return {"model": d.cpu, "machine": d.machine, "cores": d.cores, "isa": list(d.isa),
            "int8_arithmetic": d.int8_arithmetic}


def _runtimes(problems: list[dict]) -> dict:
    from .backends.auto import availability
    from .backends.device import RUNTIME_DISTS as dists, architecture

    out = {}
    for name, (ok, why) in availability().items():
        version = next((v for v in map(_version, dists.get(name, (name,))) if v), None)
        out[name] = {"available": ok, "version": version, "why_not": None if ok else why}
    if "onnxruntime" in out and not out["onnxruntime"]["available"]:
        problems.append({"what": "ONNX Runtime cannot run here: no bundle can run on the CPU",
                         "fix": "pip install onnxruntime"})
    ort = [f"{d}=={v}" for d, v in ((d, _version(d)) for d in dists.get("onnxruntime", ())) if v]
    if len(ort) > 1:  # edgeseg's own dependency pulls `onnxruntime` in beside a GPU build (an audit, session 58)
        gpu = next((d.split("==")[0] for d in ort if d.split("==")[0] != "onnxruntime"), "onnxruntime-gpu")
        problems.append({"what": f"{len(ort)} ONNX Runtime packages are installed ({', '.join(ort)}): they share one "
                                 "onnxruntime module, whose files are those each install left (the GPU's providers may "
                                 "be missing, or the two builds mixed)",
                         "fix": f"pip uninstall -y {' '.join(d.split('==')[0] for d in ort)} && pip install {gpu} "
                                "(the build for this machine); install edgeseg itself with pip install --no-deps, which "
                                "does not pull onnxruntime in again (docs/jetson.md)"})
    trt = out.get("tensorrt", {})
    if not trt.get("available") and importlib.util.find_spec("tensorrt") is not None:  # JetPack's, in a venv
        jetpack = (jetson_release() or {}).get("jetpack")
        pin = {"5": "pip install 'cuda-python==11.8.*' (JetPack 5's CUDA 11)",
               "6": "pip install 'cuda-python==12.*' (JetPack 6's CUDA 12)"}.get(
            jetpack, "pip install 'cuda-python==12.*' (the CUDA major of the driver; JetPack 5: 'cuda-python==11.8.*')")
        problems.append({"what": f"TensorRT is installed but cannot run: {trt.get('why_not')}", "fix": pin})
    if out.get("openvino", {}).get("available"):
        from .backends.openvino.settings import precisions_here

        out["openvino"]["precisions"] = sorted(precisions_here())
    elif "openvino" in out and architecture(platform.machine()) == "x86_64" and not trt.get("available"):
        problems.append({"what": "OpenVINO is not available: INT8 and bf16 models run on ONNX Runtime, often slower",
                         "fix": "pip install 'edgeseg[openvino]'"})
    return out


def _gpu() -> dict:
    from .backends import BACKENDS

    ok, why = BACKENDS.get("tensorrt").is_available()
    if not ok:
        return {"available": False, "why_not": why}
    from .backends.tensorrt.plan import profile_limits
    from .backends.tensorrt.runner import _cudart, current_gpu

    gpu = current_gpu(_cudart())
    batch, side = profile_limits(gpu)
    return {"available": True, "name": gpu.name, "compute_capability": gpu.compute_capability,
            "memory_gib": round(gpu.memory_bytes / 2**30, 1), "integrated": gpu.integrated,
            "dynamic_profile": {"max_batch": batch, "max_side": side}}


def _decoders(Gst: Any, caps_text: str, ranks: dict[str, int]) -> list[dict]:
    """The decoders for ``caps_text`` in the order a file source's ``decodebin`` tries them (``ranks``: those a
    file source gives the hardware ones, :func:`edgeseg.stream.gst.file_decoder_ranks`; nothing is changed)."""
    from .stream import gst as _gst

    caps = Gst.Caps.from_string(caps_text)
    kinds = Gst.ELEMENT_FACTORY_TYPE_DECODER | Gst.ELEMENT_FACTORY_TYPE_MEDIA_VIDEO | Gst.ELEMENT_FACTORY_TYPE_MEDIA_IMAGE
    found = [f for f in Gst.ElementFactory.list_get_elements(kinds, Gst.Rank.NONE) if f.can_sink_any_caps(caps)]
    rank = {f.get_name(): ranks.get(f.get_name(), int(f.get_rank())) for f in found}
    found.sort(key=lambda f: (-rank[f.get_name()], f.get_name()))
    return [{"name": f.get_name(), "rank": rank[f.get_name()], "hardware": _gst.is_hardware_decoder(f),
             "used": rank[f.get_name()] >= int(Gst.Rank.MARGINAL)} for f in found]


def _gstreamer(problems: list[dict]) -> dict:
    from .stream import gst as _gst

    ok, why = _gst.available()
    if not ok:
        why = why.split("\n  fix:")[0]  # (the problem's own fix below: the error's would nest a second one)
        problems.append({"what": f"GStreamer does not work from Python ({why}): the OpenCV reader and writer are "
                                 "used (no RTSP output, no hardware decoders or encoders)",
                         "fix": f"apt-get install {PACKAGES['gstreamer']}"})
        return {"available": False, "why_not": why}
    Gst = _gst.gst()
    import gi

    from .stream.sources.gst_source import NVMM_CONVERTERS

    ranks = _gst.file_decoder_ranks()
    decoders = {name: _decoders(Gst, caps, ranks) for name, caps in CODECS}
    for codec in ("H.264", "H.265"):
        if not any(d["used"] for d in decoders[codec]):
            problems.append({"what": f"no {codec} decoder GStreamer would use", "fix": f"apt-get install {PACKAGES[codec]}"})
    from .stream.sinks.video import ENCODERS, encoder_problem

    encoders = {}
    for name in ENCODERS:
        if name.endswith("-live"):
            continue
        problem = encoder_problem(ENCODERS.get(name))
        encoders[name] = {"usable": problem is None, "why_not": problem}
    if not encoders.get("x264enc", {}).get("usable"):
        problems.append({"what": "x264enc cannot run: MP4 and RTSP sinks have no software H.264 encoder",
                         "fix": f"apt-get install {PACKAGES['x264enc']}"})
    try:
        _gst.gst_module("GstRtspServer")
        rtsp = {"server": True, "why_not": None}
    except Exception as e:  # noqa: BLE001 - reported
        rtsp = {"server": False, "why_not": str(e)}
        problems.append({"what": "no RTSP server bindings: --rtsp-port cannot serve", "fix": f"apt-get install {PACKAGES['rtsp']}"})
    return {"available": True, "version": Gst.version_string(), "pygobject": getattr(gi, "__version__", None),
            "decoders": decoders, "encoders": encoders, "rtsp": rtsp,
            "nvidia_converter": next((n for n, _ in NVMM_CONVERTERS if _gst.has_element(n)), None)}


def _opencv() -> dict:
    import cv2

    info = cv2.getBuildInformation()

    def says(name: str) -> bool:
        line = next((ln for ln in info.splitlines() if ln.strip().startswith(f"{name}:")), "")
        return line.split(":", 1)[-1].strip().upper().startswith("YES")

    return {"version": cv2.__version__, "ffmpeg": says("FFMPEG"), "gstreamer": says("GStreamer"),
            "threads": cv2.getNumThreads()}


def _process(problems: list[dict]) -> dict:
    from ._unwind import unwinder_hazard

    hazard = unwinder_hazard()
    if hazard:
        problems.append({"what": hazard, "fix": "import edgeseg before gi/GStreamer, or LD_PRELOAD=libgcc_s.so.1"})
    return {"unwinder_hazard": hazard}


#: the environment variables edgeseg reads (their values are shown when set: they change what runs)
SETTINGS = ("EDGESEG_CACHE_DIR", "EDGESEG_CACHE", "EDGESEG_BUNDLE_CACHE_DAYS", "EDGESEG_DATA", "EDGESEG_TRT_MAX_BATCH", "EDGESEG_TRT_MAX_SIDE",
            "EDGESEG_TRT_DLA_CORE", "EDGESEG_OPS_CUDA", "EDGESEG_OPENVINO_TELEMETRY", "EDGESEG_LOG_LEVEL", "EDGESEG_LOG_TIME",
            "OMP_NUM_THREADS", "LD_PRELOAD")


def _cache(problems: list[dict] | None = None) -> dict:
    from .paths import cache_dir

    path = cache_dir()
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), path)
    writable = os.access(probe, os.W_OK)
    if problems is not None:
        _settings_problems(path, writable, problems)
    return {"dir": str(path), "writable": writable, "exists": path.exists(), "bundles": _unpacked(path, problems),
            "settings": {k: os.environ[k] for k in SETTINGS if os.environ.get(k)}}


def _unpacked(cache: Path, problems: list[dict] | None) -> dict:
    """The unpacked ``.zip`` bundles in the cache: how many, their size, and how long an unused one is kept."""
    from .paths import cache_days
    from .errors import EdgesegError

    entries = [p for p in (cache / "bundles").glob("[!.]*") if p.is_dir()]
    size = sum(f.stat().st_size for p in entries for f in p.rglob("*") if f.is_file())
    try:
        days = cache_days()
    except EdgesegError as e:
        days = None
        if problems is not None:
            problems.append({"what": str(e).splitlines()[0], "fix": e.fix})
    return {"count": len(entries), "mb": round(size / 1e6, 1), "kept_unused_days": days}


def _settings_problems(cache: Path, writable: bool, problems: list[dict]) -> None:
    """Settings that fail later, where they are used (a .zip bundle, a TensorRT engine build), said here: doctor
    printed "problems none" beside a cache it had itself marked NOT writable."""
    from .errors import EdgesegError

    if not writable:
        problems.append({"what": f"the cache {cache} is not writable: .zip bundles cannot be unpacked and backend "
                                 "choices are not remembered (timed again each run)",
                         "fix": "set EDGESEG_CACHE_DIR to a writable folder"})
    data = os.environ.get("EDGESEG_DATA", "").strip()
    if data and not Path(data).expanduser().is_dir():
        problems.append({"what": f"EDGESEG_DATA={data} is not a folder", "fix": "point it at the data folder, or unset it"})
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp and not (omp.isdigit() and int(omp) > 0):
        problems.append({"what": f"OMP_NUM_THREADS={omp!r} is not a positive whole number",
                         "fix": "e.g. OMP_NUM_THREADS=2, or unset it"})
    try:  # the TensorRT settings' own checks, which otherwise run only when an engine is built
        from .backends.tensorrt.plan import GpuInfo, dla_core, profile_limits
    except Exception:  # noqa: BLE001 - the checks cannot run here: nothing to say about the settings
        return
    for check in (dla_core, lambda: profile_limits(GpuInfo(name="any", major=0, minor=0))):
        try:
            check()
        except EdgesegError as e:
            problems.append({"what": str(e).splitlines()[0], "fix": e.fix or "unset it"})
        except Exception as e:  # noqa: BLE001 - a check that cannot run here says nothing about the settings
            log.debug("doctor: a TensorRT settings check could not run (%s: %s)", type(e).__name__, e)


def report() -> dict:
    """This machine as edgeseg sees it (module doc); ``problems`` lists what is missing with its fix."""
    problems: list[dict] = []
    out = {
        "edgeseg": _section("edgeseg", _edgeseg, problems),
        "cpu": _section("cpu", _cpu, problems),
        "runtimes": _section("runtimes", lambda: _runtimes(problems), problems),
        "gpu": _section("gpu", _gpu, problems),
        "gstreamer": _section("gstreamer", lambda: _gstreamer(problems), problems),
        "opencv": _section("opencv", _opencv, problems),
        "process": _section("process", lambda: _process(problems), problems),
        "cache": _section("cache", lambda: _cache(problems), problems),
    }
    out["problems"] = problems
    return out
