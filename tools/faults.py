#!/usr/bin/env python
"""Fault suite (issue 10, "never crash"): every fault below is made and run for real, then one row
per fault says what happened, the error a user sees (the actual message) and what was lost.

    python tools/faults.py --json faults.json                     # all rows (about 6 minutes on 2 cores)
    python tools/faults.py --only sigint,truncated --json f.json  # some rows
    python tools/faults.py --soak-frames 2000 --markdown table.md # a shorter soak; the docs table

Rows: SIGINT / SIGTERM mid-run of ``edgeseg run`` (the MP4 holds every processed frame), truncated
and corrupt MP4 sources (GStreamer and OpenCV readers), an RTSP server stopped and restarted,
garbage ONNX and unsupported opset/op given to ``edgeseg import`` / ``edgeseg.load``, wrong input
shape/dtype, a tampered bundle file, a manifest with path traversal, an empty calibration folder,
an unwritable sink path, and a soak on ``synthetic://`` with resident memory sampled from outside
the process. Every ``edgeseg`` command runs in its own process (a crash cannot take this script
down) with ``--backend onnxruntime --precision fp32`` pinned, or with ``--auto`` as a user runs it
(backend and precision chosen on this device: OpenVINO beside a GStreamer source on some CPUs).
Needs GStreamer for the video rows and the real dash-cam clip (``$EDGESEG_DATA`` or ../shared/data)
for rows 1-4.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # quiet FFmpeg while counting frames of damaged files
sys.path.insert(0, str(REPO))

from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.paths import data_root  # noqa: E402

PINNED = ("--backend", "onnxruntime", "--precision", "fp32")
RTSP_SERVER = REPO / "tests" / "stream" / "rtsp_test_server.py"
RTSP_FPS = 30.0  # the test server's frame rate


@dataclass(frozen=True)
class Row:
    """One fault: what happened, the message a user sees, what was lost, whether the goal was met
    (a clear edgeseg error or a clean finish, nothing processed lost), and the measured numbers."""

    fault: str
    happened: str
    error: str
    lost: str
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ctx:
    work: Path
    video: Path | None
    soak_frames: int
    signal_after_s: float
    outage_s: float
    pinned: tuple[str, ...] = PINNED  # () with --auto: the backend and precision edgeseg chooses here


FAULTS: dict[str, tuple[str, Callable[[Ctx], Row]]] = {}


def fault(name: str, title: str):
    def register(fn: Callable[[Ctx], Row]) -> Callable[[Ctx], Row]:
        FAULTS[name] = (title, fn)
        return fn
    return register


# ---- helpers --------------------------------------------------------------------------------------
def edgeseg_cmd(*args: Any) -> list[str]:
    return [sys.executable, "-m", "edgeseg", *map(str, args)]


def run_cli(*args: Any, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run(edgeseg_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def spawn(log: Path, *args: Any) -> subprocess.Popen:
    """``edgeseg ARGS`` in the background, its stderr to ``log`` (a pipe nobody reads could fill and block it)."""
    with open(log, "w") as f:
        return subprocess.Popen(edgeseg_cmd(*args), stdout=subprocess.DEVNULL, stderr=f, text=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """Wait for a spawned command; its stderr. One still running after ``timeout`` hung: it is killed
    (a negative exit code, so the row fails) and the log says so."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return log.read_text() + f"\n[faults.py: no exit {timeout:g} s after the fault: hung, killed]"
    return log.read_text()


def user_error(stderr: str) -> str:
    """The ``edgeseg CMD: error: ...`` message and its fix line, as the user sees them; else the last line."""
    lines = [x for x in stderr.splitlines() if x.strip() and not x.startswith("[h264 @")]
    for i, line in enumerate(lines):
        if ": error: " in line:
            return " / ".join(x.strip() for x in lines[i:i + 2])
    return lines[-1].strip() if lines else ""


def crashed(returncode: int | None, stderr: str) -> bool:
    """Killed by a signal, hung, or a Python traceback: what the suite must never see."""
    return returncode is None or returncode < 0 or "Traceback (most recent call last)" in stderr


def count_frames(path: Path, read_on: int = 0) -> int:
    """Frames OpenCV (FFmpeg) decodes from ``path``; ``read_on``: failed reads in a row tolerated
    before stopping, to count the frames after a damaged stretch too."""
    import cv2

    cap, n, misses = cv2.VideoCapture(str(path)), 0, 0
    while misses <= read_on:
        if cap.grab():
            n, misses = n + 1, 0
        else:
            misses += 1
    cap.release()
    return n


def count_frames_gst(path: Path, threads: int) -> int:
    """Frames plain GStreamer (``filesrc ! decodebin ! fakesink``) decodes from ``path`` with the decoder
    threads ``edgeseg run`` gives its software decoders: on a damaged file FFmpeg's single-threaded and
    frame-threaded decoders disagree by a frame (on the dash-cam's noise stretch: 214 and 215), so each
    reader is held to what its own decoder yields."""
    from edgeseg.stream import gst as _gst
    from edgeseg.stream.sources.gst_source import decoder_threads_setter

    Gst = _gst.gst()
    pipe = Gst.parse_launch(f'filesrc location="{path}" ! decodebin ! fakesink name=count signal-handoffs=true sync=false')
    n = [0]
    pipe.get_by_name("count").connect("handoff", lambda *_: n.__setitem__(0, n[0] + 1))
    pipe.connect("deep-element-added", decoder_threads_setter(threads))  # as `edgeseg run` sets them
    pipe.set_state(Gst.State.PLAYING)
    pipe.get_bus().timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    return n[0]


def fresh(*paths: Path) -> None:
    """Remove what an earlier run left in a reused --workdir (a stale JSON-lines file would count)."""
    for path in paths:
        path.unlink(missing_ok=True)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def lines_in(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def wait_for(cond: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def copy_bundle(name: str, dest: Path) -> Path:
    from edgeseg.bundle import Bundle

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(Bundle.open(name).root, dest)
    return dest


def need_video(ctx: Ctx) -> Path:
    if ctx.video is None or not ctx.video.is_file():
        raise Skip("the dash-cam clip is not here (set EDGESEG_DATA or place it at ../shared/data)")
    return ctx.video


class Skip(Exception):
    """A row that cannot run here (no data, no GStreamer RTSP server): reported, not failed."""


# ---- 1-2: signals ---------------------------------------------------------------------------------
def ran_on(stats: dict) -> str:
    """The backend/precision an ``edgeseg run`` used, from its stats JSON (chosen on the device or pinned)."""
    return (stats.get("choice") or {}).get("label", "?")


def _signal_run(ctx: Ctx, sig: signal.Signals) -> Row:
    video = need_video(ctx)
    out, stats_path = ctx.work / f"{sig.name.lower()}.mp4", ctx.work / f"{sig.name.lower()}.json"
    part = out.with_name(f"{out.stem}.part.mp4")
    fresh(out, stats_path, part)
    log = ctx.work / f"{sig.name.lower()}.log"
    proc = spawn(log, "run", "--bundle", "road", "--source", video, "--sink", out, "--stats-json", stats_path, *ctx.pinned)
    started = wait_for(lambda: part.is_file() and part.stat().st_size > 0, 120, proc)
    time.sleep(ctx.signal_after_s if started else 0)
    t0 = time.monotonic()
    proc.send_signal(sig)
    stderr = finish(proc, log, 300)
    exit_s = time.monotonic() - t0
    stats = load_json(stats_path)
    in_mp4 = count_frames(out) if out.is_file() else 0
    read, processed = stats.get("frames", -1), stats.get("processed", -1)
    ok = (proc.returncode == 0 and stats.get("stopped_by") == "signal" and in_mp4 == read == processed > 0
          and not part.exists() and "Traceback" not in stderr)
    said = next((x.split(": ", 1)[1] for x in stderr.splitlines() if sig.name in x), "")
    return Row(f"{sig.name} mid-run of edgeseg run (road, dash-cam -> MP4)",
               f"drained and finalized {exit_s:.1f} s after the signal, exit {proc.returncode}; "
               f"{read} frames read, {processed} processed, {in_mp4} in the MP4 (OpenCV decode); .part left: {part.exists()}; "
               f"ran on {ran_on(stats)}",
               said, f"{read - in_mp4} frames", ok,
               {"ran_on": ran_on(stats), "exit": proc.returncode, "frames": read, "processed": processed, "mp4_frames": in_mp4,
                "stopped_by": stats.get("stopped_by"), "exit_after_signal_s": round(exit_s, 2)})


@fault("sigint", "SIGINT mid-run")
def sigint(ctx: Ctx) -> Row:
    return _signal_run(ctx, signal.SIGINT)


@fault("sigterm", "SIGTERM mid-run")
def sigterm(ctx: Ctx) -> Row:
    return _signal_run(ctx, signal.SIGTERM)


# ---- 3-4: damaged files ---------------------------------------------------------------------------
def _damaged_source(ctx: Ctx, name: str, damaged: Path, what: str) -> Row:
    from edgeseg.stream.pipeline import decoder_threads

    total = count_frames(need_video(ctx))
    threads = decoder_threads(None)  # what `edgeseg run` gives GStreamer's software decoders here
    decodable = {"opencv": count_frames(damaged, read_on=300), "gstreamer": count_frames_gst(damaged, threads)}
    parts, data, ok, message = [], {"container_frames": total, "decodable_frames": decodable}, True, ""
    for reader in ("gstreamer", "opencv"):
        out, stats_path = ctx.work / f"{name}-{reader}.mp4", ctx.work / f"{name}-{reader}.json"
        fresh(out, stats_path)
        p = run_cli("run", "--bundle", "shapes", "--source", damaged, "--source-backend", reader, "--sink", out,
                    "--stats-json", stats_path, *ctx.pinned)
        stats, in_mp4 = load_json(stats_path), (count_frames(out) if out.is_file() else 0)
        processed = stats.get("processed", -1)
        ok &= not crashed(p.returncode, p.stderr) and p.returncode == 2 and in_mp4 == processed == decodable[reader]
        message = message or user_error(p.stderr)
        parts.append(f"{reader}: exit {p.returncode}, {processed} processed, {in_mp4} in the MP4")
        data[reader] = {"ran_on": ran_on(stats), "exit": p.returncode, "processed": processed, "mp4_frames": in_mp4, "error": user_error(p.stderr)}
    lost = max(decodable[r] - data[r]["mp4_frames"] for r in ("gstreamer", "opencv"))
    return Row(f"{what} as source (edgeseg run --sink)",
               f"of {total} frames, {decodable['opencv']} decodable by OpenCV's FFmpeg and {decodable['gstreamer']} by "
               f"GStreamer ({threads or 'auto'} decoder thread(s)); " + "; ".join(parts), message,
               f"{lost} decodable frames ({total - min(decodable.values())} undecodable in the file)", ok, data)


@fault("truncated", "truncated MP4")
def truncated(ctx: Ctx) -> Row:
    data = need_video(ctx).read_bytes()
    bad = ctx.work / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 2])
    return _damaged_source(ctx, "truncated", bad, "truncated MP4 (first half of the bytes)")


@fault("corrupt", "corrupt MP4")
def corrupt(ctx: Ctx) -> Row:
    import numpy as np

    data = bytearray(need_video(ctx).read_bytes())
    mid = len(data) // 2
    data[mid:mid + 65536] = np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes()
    bad = ctx.work / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    return _damaged_source(ctx, "corrupt", bad, "corrupt MP4 (64 KiB of noise mid-file)")


# ---- 5: RTSP server away and back -----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rtsp_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(RTSP_SERVER), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise Skip(f"the loopback RTSP server does not start: {proc.communicate()[1].strip()[-200:]}")
    return proc


@fault("rtsp", "RTSP source vanishes mid-stream")
def rtsp(ctx: Ctx) -> Row:
    try:
        import gi

        gi.require_version("GstRtspServer", "1.0")
    except (ImportError, ValueError) as e:
        raise Skip(f"no GStreamer RTSP server ({e})") from None
    port = _free_port()
    server = _rtsp_server(port)
    out, stats_path = ctx.work / "rtsp.jsonl", ctx.work / "rtsp.json"
    fresh(out, stats_path)
    log = ctx.work / "rtsp.log"
    proc = spawn(log, "run", "--bundle", "shapes", "--source", f"rtsp://127.0.0.1:{port}/cam?latency=0",
                 "--json-out", out, "--stats-json", stats_path, *ctx.pinned)
    try:
        wait_for(lambda: out.is_file() and lines_in(out) >= 30, 60, proc)
        server.kill()
        server.wait()
        t_down = time.monotonic()
        time.sleep(ctx.outage_s)
        before = lines_in(out)
        server = _rtsp_server(port)
        away = time.monotonic() - t_down  # the outage plus the server's own start-up
        back = wait_for(lambda: lines_in(out) >= before + 30, 60, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        stderr = finish(proc, log, 120)
        server.kill()
        server.wait()
    stats, written = load_json(stats_path), lines_in(out)
    gaps = stats.get("reconnect_gaps_s", [])
    gap = max(gaps, default=0.0)
    ok = back and not crashed(proc.returncode, stderr) and proc.returncode == 0 and stats.get("reconnects", 0) >= 1 \
        and written == stats.get("processed") == stats.get("frames")
    said = next((x.split(": ", 2)[-1] for x in stderr.splitlines() if "reconnected after" in x), "")
    late = max(0.0, gap - away)
    return Row(f"RTSP server killed, restarted {ctx.outage_s:g} s later (edgeseg run --json-out)",
               f"reconnected {stats.get('reconnects', 0)}x; no frames for {gap:.2f} s, of which the server was unreachable "
               f"{away:.2f} s (outage + its start-up) and reconnecting took {late:.2f} s more; run went on, "
               f"{stats.get('processed')} frames processed, {written} written, exit {proc.returncode}",
               said, f"0 received frames; ~{round(late * RTSP_FPS)} sent after the server was back but before the reconnect "
               f"(at {RTSP_FPS:g} fps); {stats.get('drops', 0)} dropped under back-pressure (counted)", ok,
               {"ran_on": ran_on(stats), "reconnects": stats.get("reconnects"), "gaps_s": gaps, "outage_s": ctx.outage_s, "unreachable_s": round(away, 2),
                "processed": stats.get("processed"), "written": written, "drops": stats.get("drops")})


# ---- 6-8: models and inputs -----------------------------------------------------------------------
_API = """
import json, sys
import numpy as np
import edgeseg
from edgeseg.errors import EdgesegError
cases = {}
def case(name, fn):
    try:
        fn()
        cases[name] = {"type": None, "message": ""}
    except Exception as e:
        cases[name] = {"type": type(e).__name__, "edgeseg": isinstance(e, EdgesegError), "message": str(e)}
"""


def api_calls(body: str, timeout: float = 300) -> dict[str, dict]:
    """Run ``body`` (calls to ``case(name, fn)``) in a fresh interpreter; ``{name: {type, edgeseg, message}}``."""
    code = _API + body + "\nprint('@@' + json.dumps(cases))\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    line = next((x for x in p.stdout.splitlines() if x.startswith("@@")), None)
    if line is None:
        return {"crash": {"type": f"exit {p.returncode}", "edgeseg": False, "message": p.stderr.strip()[-400:]}}
    return json.loads(line[2:])


def _rehashed_bundle(ctx: Ctx, name: str, model: Path) -> Path:
    """A copy of the shapes bundle whose model.onnx is ``model``, hashes updated (so only the model is bad)."""
    root = copy_bundle("shapes", ctx.work / name)
    shutil.copy(model, root / "model.onnx")
    m = json.loads((root / "manifest.json").read_text())
    m["files"]["model.onnx"] = hashlib.sha256((root / "model.onnx").read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(m, indent=1))
    return root


def _onnx_file(path: Path, op: str, domain: str, opset: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 120, 160])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 120, 160])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([helper.make_node(op, ["images"], ["logits"], domain=domain)], "g", [x], [y]),
                              opset_imports=imports)
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _model_row(ctx: Ctx, what: str, files: dict[str, Path], loads: tuple[str, ...] = ()) -> Row:
    """``edgeseg import`` of each file must be refused; ``edgeseg.load`` of a bundle around it too, except
    for the labels in ``loads`` (a model the runtime can run, though import refuses it)."""
    parts, data, ok, message = [], {}, True, ""
    for label, onnx_path in files.items():
        p = run_cli("import", onnx_path, "--classes", "3", "--size", "160x120", "--out", ctx.work / f"imported-{label}",
                    "--overwrite")
        bundle = _rehashed_bundle(ctx, f"bundle-{label}", onnx_path)
        api = api_calls(f"case('load', lambda: edgeseg.load({str(bundle)!r}, backend='onnxruntime', precision='fp32')"
                        f"(np.zeros((120, 160, 3), np.uint8)))\n")
        load = next(iter(api.values()))
        ok &= not crashed(p.returncode, p.stderr) and p.returncode == 2 and (load["type"] is None if label in loads else bool(load.get("edgeseg")))
        if not message:
            load_said = load["message"].replace("\n", " /") if load["type"] else "(runs)"
            message = f"{user_error(p.stderr)}; edgeseg.load: {load['type'] or ''} {load_said}".strip()
        parts.append(f"{label}: import exit {p.returncode}; load -> {load['type'] or 'runs'}")
        data[label] = {"import_exit": p.returncode, "import_error": user_error(p.stderr), "load": load}
    return Row(what, "; ".join(parts), message, "none (refused before anything was written)", ok, data)


@fault("garbage-onnx", "garbage ONNX")
def garbage_onnx(ctx: Ctx) -> Row:
    import numpy as np

    path = ctx.work / "garbage.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return _model_row(ctx, "garbage ONNX (4 KiB of noise) to edgeseg import / edgeseg.load", {"garbage": path})


@fault("unsupported-onnx", "unsupported op / opset")
def unsupported_onnx(ctx: Ctx) -> Row:
    return _model_row(ctx, "ONNX with an unknown op (com.example:FancySeg) / opset 99 / opset 7 to edgeseg import / edgeseg.load",
                      {"custom-op": _onnx_file(ctx.work / "custom_op.onnx", "FancySeg", "com.example", 17),
                       "opset99": _onnx_file(ctx.work / "opset99.onnx", "Relu", "", 99),
                       "opset7": _onnx_file(ctx.work / "opset7.onnx", "Relu", "", 7)}, loads=("opset7",))


_BAD_INPUTS = """
p = edgeseg.load("shapes", backend="onnxruntime", precision="fp32")
img = np.zeros((120, 160, 3), np.uint8)
case("float image", lambda: p(img.astype(np.float32)))
case("grey image", lambda: p(img[..., 0]))
case("RGBA image", lambda: p(np.zeros((120, 160, 4), np.uint8)))
case("batch of images", lambda: p(np.stack([img, img])))
case("empty image", lambda: p(img[:0]))
case("path not array", lambda: p("street.png"))
p.runner.activate()
case("feed float64", lambda: p.runner.infer({"images": np.zeros((1, 3, 120, 160))}))
case("feed NHWC", lambda: p.runner.infer({"images": np.zeros((1, 120, 160, 3), np.float32)}))
case("feed wrong name", lambda: p.runner.infer({"x": np.zeros((1, 3, 120, 160), np.float32)}))
case("feed bare array", lambda: p.runner.infer(np.zeros((1, 3, 120, 160), np.float32)))
"""


@fault("bad-input", "wrong input shape/dtype")
def bad_input(ctx: Ctx) -> Row:
    cases = api_calls(_BAD_INPUTS)
    clear = {k: v for k, v in cases.items() if v["type"] == "InputError"}
    raw = {k: v for k, v in cases.items() if v["type"] != "InputError"}
    happened = f"{len(clear)} of {len(cases)} cases raise InputError"
    if raw:
        happened += "; not InputError: " + ", ".join(f"{k} -> {v['type']}: {v['message'][:60]}" for k, v in raw.items())
    return Row("wrong input shape/dtype to a predictor / runner", happened, cases.get("feed NHWC", {}).get("message", ""),
               "none", not raw, cases)


# ---- 9-10: bundles --------------------------------------------------------------------------------
@fault("tampered-bundle", "tampered bundle file")
def tampered_bundle(ctx: Ctx) -> Row:
    root = copy_bundle("road", ctx.work / "tampered.edgeseg")
    model = bytearray((root / "model.onnx").read_bytes())
    model[len(model) // 2] ^= 0x01
    (root / "model.onnx").write_bytes(bytes(model))
    p = run_cli("run", "--bundle", root, "--source", "synthetic://?frames=5&size=160x120", "--json-out",
                ctx.work / "tampered.jsonl", *ctx.pinned)
    ok = not crashed(p.returncode, p.stderr) and p.returncode == 2 and "model.onnx" in p.stderr and "sha256 mismatch" in p.stderr
    return Row("one byte of model.onnx changed (copy of the road bundle), edgeseg run", f"refused, exit {p.returncode}",
               user_error(p.stderr), "none (refused before the first frame)", ok, {"exit": p.returncode})


@fault("traversal", "manifest path traversal")
def traversal(ctx: Ctx) -> Row:
    root = copy_bundle("shapes", ctx.work / "traversal.edgeseg")
    m = json.loads((root / "manifest.json").read_text())
    m["models"][0]["file"] = "../../etc/passwd"
    m["files"]["../../etc/passwd"] = m["files"].pop("model.onnx")
    (root / "manifest.json").write_text(json.dumps(m, indent=1))
    z = ctx.work / "traversal.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("../../escaped.txt", "outside")
    p = run_cli("run", "--bundle", root, "--source", "synthetic://?frames=5&size=160x120", "--json-out",
                ctx.work / "traversal.jsonl", *ctx.pinned)
    api = api_calls(f"import os\nos.environ['EDGESEG_CACHE_DIR'] = {str(ctx.work / 'cache')!r}\n"
                    f"case('zip', lambda: edgeseg.load({str(z)!r}, backend='onnxruntime', precision='fp32'))\n")
    zip_refused = api["zip"].get("type") == "BundleError" and not (ctx.work / "escaped.txt").exists()
    ok = not crashed(p.returncode, p.stderr) and p.returncode == 2 and "points outside the bundle" in p.stderr and zip_refused
    return Row("manifest model file '../../etc/passwd'; a .zip with a '../' member",
               f"manifest: refused, exit {p.returncode}; zip: {api['zip']['type']}: {api['zip']['message'][:90]}",
               user_error(p.stderr), "none (nothing read outside the bundle)", ok, {"exit": p.returncode, "zip": api["zip"]})


# ---- 11-12: calibration and sinks -----------------------------------------------------------------
@fault("empty-calib", "empty calibration folder")
def empty_calib(ctx: Ctx) -> Row:
    root = copy_bundle("shapes", ctx.work / "calib.edgeseg")
    (ctx.work / "frames").mkdir(exist_ok=True)
    before = (root / "manifest.json").read_bytes()
    runs = {arg: run_cli("quantize", root, "--calib", arg, "--target", "cpu", "--no-progress", cwd=ctx.work)
            for arg in ("frames", str(ctx.work / "frames"))}
    untouched = (root / "manifest.json").read_bytes() == before and not (root / "model.int8.cpu.onnx.tmp").exists()
    ok = untouched and all(not crashed(p.returncode, p.stderr) and p.returncode == 2 and "holds no images" in p.stderr for p in runs.values())
    return Row("empty calibration folder to edgeseg quantize (--calib frames, and its absolute path)",
               "; ".join(f"--calib {'./frames' if a == 'frames' else 'ABS'}: exit {p.returncode}" for a, p in runs.items())
               + f"; bundle untouched: {untouched}", user_error(runs["frames"].stderr), "none", ok,
               {a: {"exit": p.returncode, "error": user_error(p.stderr)} for a, p in runs.items()})


@fault("unwritable-sink", "sink path not writable")
def unwritable_sink(ctx: Ctx) -> Row:
    blocker = ctx.work / "a-file"
    blocker.write_text("not a folder")
    parts, data, ok, message = [], {}, True, ""
    for label, sink in (("<file>/out.mp4", blocker / "out.mp4"), ("/proc/out.mp4", Path("/proc/out.mp4"))):
        stats_path = ctx.work / f"unwritable-{len(data)}.json"
        fresh(stats_path)
        p = run_cli("run", "--bundle", "shapes", "--source", "synthetic://?frames=50&size=160x120", "--sink", sink,
                    "--stats-json", stats_path, *ctx.pinned)
        stats = load_json(stats_path)
        ok &= not crashed(p.returncode, p.stderr) and p.returncode == 2 and str(sink) in p.stderr and stats.get("frames") == 0
        message = message or user_error(p.stderr)
        parts.append(f"{label}: exit {p.returncode}, frames read {stats.get('frames')}")
        data[label] = {"exit": p.returncode, "frames_read": stats.get("frames"), "error": user_error(p.stderr)}
    return Row("--sink under a regular file / in /proc (root ignores chmod)", "refused when the sink opens, before the "
               "source is read; " + "; ".join(parts), message, "none (0 frames read)", ok, data)


# ---- 13: soak -------------------------------------------------------------------------------------
def rss_kb(pid: int) -> int | None:
    """Resident memory of a process in KiB (/proc, Linux), or None once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@fault("soak", "soak on synthetic://")
def soak(ctx: Ctx) -> Row:
    n = ctx.soak_frames
    out, mp4, stats_path = ctx.work / "soak.jsonl", ctx.work / "soak.mp4", ctx.work / "soak.json"
    fresh(out, mp4, stats_path)
    log = ctx.work / "soak.log"
    proc = spawn(log, "run", "--bundle", "shapes", "--source", f"synthetic://?frames={n}&size=160x120",
                 "--json-out", out, "--sink", mp4, "--stats-json", stats_path, *ctx.pinned)
    samples: list[tuple[int, int]] = []  # (frames written so far, RSS kB)
    offset, written = 0, 0
    while proc.poll() is None:
        time.sleep(0.5)
        if out.is_file():
            with open(out, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset, written = offset + len(chunk), written + chunk.count(b"\n")
        kb = rss_kb(proc.pid)
        if kb is not None and written < n:  # not while finalizing
            samples.append((written, kb))
    stderr = finish(proc, log, 60)
    stats = load_json(stats_path)
    warm = next((kb for frames, kb in samples if frames >= n // 10), None)
    after = [kb for frames, kb in samples if frames >= n // 10]
    if warm is None or not after:
        return Row(f"{n}-frame soak", f"no RSS samples after warm-up (exit {proc.returncode})", user_error(stderr),
                   "?", False, {"samples": samples})
    last, peak = after[-1], max(after)
    growth, peak_growth = 100 * (last - warm) / warm, 100 * (peak - warm) / warm
    in_mp4 = count_frames(mp4) if mp4.is_file() else 0
    ok = proc.returncode == 0 and stats.get("processed") == n == lines_in(out) == in_mp4 and peak_growth < 5
    return Row(f"{n}-frame soak on synthetic:// (shapes, JSON lines + MP4)",
               f"RSS {warm / 1024:.1f} MB after {n // 10} frames -> {last / 1024:.1f} MB at the end ({growth:+.2f}%), "
               f"peak {peak / 1024:.1f} MB ({peak_growth:+.2f}%); {stats.get('fps', 0):.0f} fps on {ran_on(stats)}, exit {proc.returncode}",
               "", f"{n - in_mp4} frames (processed {stats.get('processed')}, JSON lines {lines_in(out)}, MP4 {in_mp4})", ok,
               {"frames": n, "rss_warm_kb": warm, "rss_last_kb": last, "rss_peak_kb": peak, "growth_pct": round(growth, 2),
                "peak_growth_pct": round(peak_growth, 2), "samples": samples[:: max(1, len(samples) // 50)],
                "fps": stats.get("fps"), "processed": stats.get("processed"), "mp4_frames": in_mp4, "ran_on": ran_on(stats)})


# ---- main -----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), platform.processor())
    import onnxruntime

    import edgeseg

    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "edgeseg": getattr(edgeseg, "__version__", "?"), "onnxruntime": onnxruntime.__version__}


def run_faults(names: list[str], ctx: Ctx) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(names, 1):
        title, fn = FAULTS[name]
        print(f"[{i}/{len(names)}] {title} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            row = fn(ctx)
        except Skip as e:
            row = Row(title, f"skipped: {e}", "", "", True, {"skipped": str(e)})
        except Exception as e:  # noqa: BLE001 - a fault that breaks the harness is a finding, not a stop
            row = Row(title, f"HARNESS FAILED: {type(e).__name__}: {e}", "", "?", False)
        rows.append({"name": name, **asdict(row), "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def cell(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    out = ["| # | fault | what happened | error a user sees | lost | goal met |", "|---|---|---|---|---|---|"]
    out += [f"| {i} | {cell(r['fault'])} | {cell(r['happened'])} | {cell(r['error']) or '(none)'} | {cell(r['lost'])} | "
            f"{'yes' if r['ok'] else '**no**'} |" for i, r in enumerate(rows, 1)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--only", default=None, help=f"comma-separated rows (default all): {','.join(FAULTS)}")
    p.add_argument("--video", default=None, help="clean source clip (default: the dash-cam clip in the data folder)")
    p.add_argument("--soak-frames", type=int, default=10_000, help="frames in the soak (default 10000)")
    p.add_argument("--signal-after", type=float, default=3.0, help="seconds of output before the signal (default 3)")
    p.add_argument("--outage", type=float, default=2.0, help="seconds the RTSP server stays down (default 2)")
    p.add_argument("--workdir", default=None, help="where the damaged files and outputs go (default: a temp folder, removed)")
    p.add_argument("--auto", action="store_true",
                   help="run edgeseg commands with the backend and precision chosen on this device (default: ONNX Runtime FP32)")
    p.add_argument("--json", default=None, help="write the rows and the machine here")
    p.add_argument("--markdown", default=None, help="write the table as Markdown here")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(FAULTS)}")
    root = data_root()
    video = Path(args.video) if args.video else (root / "video" / "dashcam_960x540.mp4" if root else None)
    with tempfile.TemporaryDirectory(prefix="edgeseg-faults-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = run_faults(names, Ctx(work, video, args.soak_frames, args.signal_after, args.outage,
                                      () if args.auto else PINNED))
    print_table([{"#": i, "fault": r["name"], "ok": r["ok"], "lost": r["lost"], "happened": r["happened"][:110]}
                 for i, r in enumerate(rows, 1)])
    for r in rows:
        if r["error"]:
            print(f"{r['name']}: {r['error']}")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, onnxruntime {info['onnxruntime']}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows))
    write_json(args.json, {"machine": info, "command": " ".join(["python", "tools/faults.py", *(argv or sys.argv[1:])]),
                           "rows": rows})
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
