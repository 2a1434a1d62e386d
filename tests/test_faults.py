"""Faults (issue 10, "never crash"): each one ends in a clear edgeseg error or a clean finish, and
nothing already read is lost. The full suite with figures is ``tools/faults.py`` (docs/reliability.md);
these are its fast cases, plus the faults it found (each test failed before its fix). Signals, RTSP
reconnects, truncated files and memory are also covered in tests/stream/, hashes and traversal in
tests/test_bundle.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import DataError, InputError, StreamError

REPO = Path(__file__).resolve().parents[1]


# ---- unwritable sink paths: refused when the sink opens, before the source gives a frame -----------
def _sink_cases(tmp_path: Path) -> dict[str, tuple[object, str]]:
    from edgeseg.stream import JsonLinesSink, LabelPngSink, Mp4Sink

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    return {
        "mp4 under a file": (Mp4Sink(blocker / "out.mp4", fps=25), f"{blocker} is a file, not a folder"),
        "mp4 in /proc": (Mp4Sink("/proc/out.mp4", fps=25), "the folder /proc does not take new files"),
        "mp4 path is a folder": (Mp4Sink(tmp_path / "a-folder", fps=25), "it is a folder"),
        "jsonl under a file": (JsonLinesSink(blocker / "sub" / "r.jsonl"), f"{blocker} is a file, not a folder"),
        "png dir in /proc": (LabelPngSink("/proc/edgeseg-pngs"), "cannot create the folder /proc/edgeseg-pngs"),
    }


@pytest.mark.parametrize("case", ["mp4 under a file", "mp4 in /proc", "mp4 path is a folder", "jsonl under a file",
                                  "png dir in /proc"])
def test_unwritable_sink_is_refused_before_the_first_frame(tmp_path, case):
    if case.endswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    from edgeseg.stream import Pipeline
    from edgeseg.stream.sources import SyntheticSource

    sink, message = _sink_cases(tmp_path)[case]
    source = SyntheticSource("synthetic://?frames=20&size=32x24")
    pipe = Pipeline([source, sink], handle_signals=False)
    with pytest.raises(InputError, match="cannot write") as err:
        pipe.run()
    assert message in str(err.value) and "fix:" in str(err.value)
    assert source.generated == 0  # not one frame was read, so none was lost
    assert pipe.stats is not None and pipe.stats.frames == 0 and pipe.stats.stopped_by == "error"
    assert "cannot write" in pipe.stats.fatal_error


def test_unwritable_sink_from_the_cli_writes_stats_with_no_frame_read(tmp_path, capsys):
    from edgeseg.cli import main

    (tmp_path / "a-file").write_text("x")
    stats = tmp_path / "stats.json"
    code = main(["run", "--bundle", "shapes", "--source", "synthetic://?frames=10&size=160x120",
                 "--sink", str(tmp_path / "a-file" / "out.mp4"), "--stats-json", str(stats),
                 "--backend", "onnxruntime", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 2 and "edgeseg run: error: cannot write" in err and "a-file is a file, not a folder" in err
    d = json.loads(stats.read_text())
    assert d["frames"] == d["processed"] == 0 and d["stopped_by"] == "error"


# ---- calibration -----------------------------------------------------------------------------------
def test_calibration_folder_named_like_a_recipe_is_read_as_a_folder(tmp_path, monkeypatch):
    """``--calib frames`` with ./frames present used to fail as "recipe 'frames' not found"."""
    import cv2

    from edgeseg.quant.calibration import collect_frames, resolve_calibration

    monkeypatch.chdir(tmp_path)
    (tmp_path / "frames").mkdir()
    recipe = resolve_calibration("frames")
    assert recipe.source == "frames"
    with pytest.raises(DataError, match="calibration folder frames holds no images") as err:
        collect_frames(recipe, progress=False)
    assert "fix:" in str(err.value)
    images = [np.full((6, 8, 3), (10 * i, 20, 30), np.uint8) for i in range(3)]
    for i, img in enumerate(images):
        cv2.imwrite(str(tmp_path / "frames" / f"{i}.png"), img[..., ::-1])
    got = collect_frames(resolve_calibration("frames", frames=8), progress=False)
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, images))


def test_empty_calibration_folder_from_the_cli(tmp_path, monkeypatch, capsys):
    from edgeseg.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "frames").mkdir()
    from edgeseg.paths import shipped_bundle

    code = main(["quantize", str(shipped_bundle("shapes")), "--calib", "frames", "--target", "cpu", "--no-progress"])
    assert code == 2 and "calibration folder frames holds no images" in capsys.readouterr().err


# ---- bundles -----------------------------------------------------------------------------------------
def test_zip_member_escaping_into_a_sibling_folder_is_refused(tmp_path, monkeypatch):
    """The zip guard compared path strings, so ``../bundle-x2/..`` passed as inside ``bundle-x``."""
    from edgeseg.bundle import Bundle
    from edgeseg.errors import BundleError

    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(cache))
    extract_to = cache / "bundles" / "bundle-x"
    extract_to.mkdir(parents=True)
    monkeypatch.setattr("edgeseg.bundle.tempfile.mkdtemp", lambda **kw: str(extract_to))
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("../bundle-x2/planted.txt", "outside the bundle")
    with pytest.raises(BundleError, match=r"unsafe path '\.\./bundle-x2/planted\.txt'"):
        Bundle.open(z)
    assert not (cache / "bundles" / "bundle-x2").exists()


# ---- wrong inputs ------------------------------------------------------------------------------------
def test_runner_infer_with_a_bare_array_is_an_input_error():
    import edgeseg

    with edgeseg.load("shapes", backend="onnxruntime", precision="fp32") as p:
        with pytest.raises(InputError, match="images"):
            p.runner.infer(np.zeros((1, 3, 120, 160), np.float32))


# ---- damaged video files -----------------------------------------------------------------------------
def _corrupt_copy(data_root: Path, tmp_path: Path) -> Path:
    data = bytearray((data_root / "video" / "dashcam_960x540.mp4").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 65536] = np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.data
def test_opencv_source_reads_on_past_a_corrupt_stretch(data_root, tmp_path):
    """The OpenCV reader stopped at the first undecodable frame (111 of 221 here); FFmpeg decodes the
    frames after the damage, and GStreamer's reader always delivered them (215)."""
    import cv2

    from edgeseg.stream import OpenCVSource

    bad = _corrupt_copy(data_root, tmp_path)
    cap, decodable, misses = cv2.VideoCapture(str(bad)), 0, 0
    while misses < 300:  # the reference: every frame FFmpeg decodes, reading on past failures
        ok = cap.grab()
        decodable, misses = decodable + ok, 0 if ok else misses + 1
    src = OpenCVSource(str(bad))
    got = []
    with pytest.raises(StreamError, match=rf"decoded {decodable} of the 221 frames .* truncated or corrupt") as err:
        for f in src:
            got.append(f.index)
    src.close()
    assert decodable == 215 and got == list(range(215))
    assert "every frame that decoded was processed" in str(err.value)


@pytest.mark.data
def test_ffmpegs_own_lines_stay_off_the_terminal_unless_verbose(data_root, tmp_path):
    """Before: the OpenCV reader let FFmpeg print dozens of '[h264 @ 0x...] Invalid NAL unit size' lines for
    one damaged stretch, above edgeseg's own message that says what they mean. --verbose keeps them."""
    bad = _corrupt_copy(data_root, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"} | {"OMP_NUM_THREADS": "1"}
    run = ["run", "--bundle", "shapes", "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1",
           "--source-backend", "opencv", "--source", str(bad), "--json-out", str(tmp_path / "r.jsonl")]
    quiet = subprocess.run([sys.executable, "-m", "edgeseg", *run], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 2 and "decoded 215 of the 221 frames" in quiet.stderr, quiet.stderr
    assert "[h264 @" not in quiet.stderr and len((tmp_path / "r.jsonl").read_text().splitlines()) == 215
    verbose = subprocess.run([sys.executable, "-m", "edgeseg", "--verbose", *run], capture_output=True, text=True,
                             timeout=300, env=env)
    assert "[h264 @" in verbose.stderr and "decoded 215 of the 221 frames" in verbose.stderr
    # in a process, the variable is set for the process's first capture and gone once it is open: child
    # processes keep their FFmpeg messages (checked on a fresh process, where the first capture is this one)
    child = subprocess.run([sys.executable, "-c", (
        "import os, cv2, edgeseg.data.video as v\n"
        "seen = []\n"
        "real = cv2.VideoCapture\n"
        "cv2.VideoCapture = lambda *a: (seen.append(os.environ.get('OPENCV_FFMPEG_LOGLEVEL')), real(*a))[1]\n"
        f"with v.VideoReader({str(bad)!r}) as video:\n"
        "    print(video.frame_count, seen, os.environ.get('OPENCV_FFMPEG_LOGLEVEL'))\n")],
        capture_output=True, text=True, timeout=120, env=env)
    assert child.stdout.split() == ["221", "['8']", "None"], child.stdout + child.stderr


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.gst
def test_fault_suite_rows_lose_nothing(data_root, tmp_path):
    """tools/faults.py end to end on the rows that touch video: SIGINT, corrupt file, unwritable sink."""
    pytest.importorskip("gi")
    out = tmp_path / "faults.json"
    p = subprocess.run([sys.executable, str(REPO / "tools" / "faults.py"), "--only", "sigint,corrupt,unwritable-sink",
                        "--json", str(out), "--workdir", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert p.returncode == 0, p.stdout + p.stderr
    sig = rows["sigint"]["data"]
    assert sig["mp4_frames"] == sig["frames"] == sig["processed"] > 0 and sig["stopped_by"] == "signal"
    bad = rows["corrupt"]["data"]
    # each reader writes every frame its own decoder yields: OpenCV's FFmpeg 215; GStreamer's avdec_h264 on one
    # thread (edgeseg's default on <= 4 cores) 214, frame-threaded 215 (FFmpeg's concealment of the noise differs)
    assert bad["opencv"]["mp4_frames"] == bad["decodable_frames"]["opencv"] == 215
    assert bad["gstreamer"]["mp4_frames"] == bad["decodable_frames"]["gstreamer"] in (214, 215)
    assert all(v["frames_read"] == 0 for v in rows["unwritable-sink"]["data"].values())
