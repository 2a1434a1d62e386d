"""What a recording keeps when the process cannot finish it: killed (``kill -9``, the OOM killer, a power cut),
or stopped by a full disk. A plain MP4 has its index at the end, so such a ``.part.mp4`` held every frame
and none could be read; the GStreamer writer now writes 1 s fragments (and a plain file at a normal end).
Also: phone clips stored sideways with a rotation in the container are read upright by both readers."""
from __future__ import annotations

import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.stream import GstSource, OpenCVSource


def _readable_frames(path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


def _run(sink, frames=3000) -> list[str]:
    return [sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes", "--source",
            f"synthetic://?frames={frames}&size=320x240", "--sink", str(sink), "--threads", "1"]


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_a_killed_recording_keeps_its_frames_up_to_the_last_second(gst, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    part = out.with_name(f"out.part{suffix}")
    proc = subprocess.Popen(_run(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and (not part.exists() or part.stat().st_size < 600_000):
            time.sleep(0.05)  # a few seconds of video at 320x240
        assert part.exists() and part.stat().st_size >= 600_000, "the run wrote too little to test"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert not out.exists() and _readable_frames(part) >= 25  # a second or more; before (.mp4, .mov): 0


def test_a_second_run_writing_the_same_files_is_refused_and_the_first_keeps_them_whole(gst, tmp_path):
    """A cross-process audit: two `edgeseg run --sink same.mp4 --json-out same.jsonl` at once wrote one .part file
    together (one failed at its end, the other said "wrote" of an MP4 with the first's frame size that did not
    decode) and interleaved the JSON lines (7 of them broken). Now the second is refused before any work."""
    import json

    out, lines = tmp_path / "same.mp4", tmp_path / "same.jsonl"
    first = subprocess.Popen(_run(out, frames=100_000) + ["--json-out", str(lines)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # ended by SIGINT below
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None and not (
                out.with_name("same.part.mp4").exists() and lines.exists() and lines.stat().st_size > 10_000):
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second started"
        for extra in ([], ["--json-out", str(lines)]):  # the video; the JSON lines to a fresh video
            sink = out if not extra else tmp_path / "other.mp4"
            second = subprocess.run(_run(sink, frames=30) + extra, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr[-2000:]
            written = f"{out.with_name('same.part.mp4') if not extra else lines}: another run is writing it now"
            assert written in second.stderr and "give this run another path" in second.stderr, second.stderr[-2000:]
        assert not (tmp_path / "other.mp4").exists()
    finally:
        first.send_signal(signal.SIGINT)  # the first run drains and finishes its files
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in lines.read_text().splitlines()]  # every line whole, all the first run's
    assert [r["index"] for r in records] == list(range(len(records))) and {r["width"] for r in records} == {320}
    assert _readable_frames(out) == len(records)


def test_a_full_disk_stops_the_run_naming_the_frames_kept(gst, small_disk):
    full_disk = small_disk(2)
    out = full_disk / "out.mp4"
    run = subprocess.run(_run(out), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "No space left" in run.stderr and f"frames written before are in {full_disk / 'out.part.mp4'}" in run.stderr
    assert "Traceback" not in run.stderr
    assert _readable_frames(full_disk / "out.part.mp4") >= 50  # before: 0 of the 283 frames written


def _rotated_clip(gst, path, frames=6) -> None:
    """An H.264 MP4 of 320x240 frames whose track matrix says "rotate 90 degrees" (as phones store portrait
    clips): the display matrix written into ``tkhd`` by hand, as FFmpeg's ``-metadata:s:v rotate=90`` does."""
    import subprocess as sp

    sp.run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}", "pattern=smpte", "!",
            "video/x-raw,width=320,height=240,framerate=30/1", "!", "videoconvert", "!", "video/x-raw,format=I420", "!",
            "x264enc", "!", "mp4mux", "!", "filesink", f"location={path}"], check=True)
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    matrix = i + 8 + (32 if version == 1 else 20) + 8 + 8  # after times, track id, duration; reserved, layer...
    data[matrix:matrix + 36] = struct.pack(">9I", 0, 65536, 0, (-65536) & 0xFFFFFFFF, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def test_a_clip_with_a_rotation_tag_is_read_upright_by_both_readers(gst, tmp_path):
    """Before: the GStreamer reader (the default) gave the stored 320x240 frames, sideways, while OpenCV's
    applied the rotation; a model then segmented a sideways street."""
    clip = tmp_path / "phone.mp4"
    _rotated_clip(gst, clip)
    got = {}
    for name, cls in (("gstreamer", GstSource), ("opencv", OpenCVSource)):
        src = cls(str(clip)).open()
        try:
            got[name] = np.stack([f.image for f in src]).astype(int)
        finally:
            src.close()
    assert got["gstreamer"].shape == got["opencv"].shape == (6, 320, 240, 3)
    assert np.abs(got["gstreamer"] - got["opencv"]).mean() < 4  # turned the same way (the other way: > 100)


# ---- session 46: standard input as a phone clip, audio longer than the picture -------------------------------------
def _read_stdin(stdin, timeout=120) -> subprocess.CompletedProcess:
    code = ("import logging, sys; logging.basicConfig(); from edgeseg.stream import GstSource\n"
            "src = GstSource('-'); frames = list(src); src.close()\n"
            "print(len(frames), *frames[0].image.shape[:2])")
    return subprocess.run([sys.executable, "-c", code], stdin=stdin, capture_output=True, text=True, timeout=timeout)


def test_standard_input_is_turned_upright_and_a_redirected_file_is_read_whole(gst, tmp_path):
    """before: `--source -` skipped the rotation a file's path honours (a phone clip came out sideways), and read even a
    redirected file (< clip.mp4) through a pipe, where GStreamer's MP4 demuxer cannot seek: this clip (its index at
    the end, as mp4mux writes it) gave 1 of its 6 frames, without a word."""
    clip = tmp_path / "phone.mp4"
    _rotated_clip(gst, clip)
    with open(clip, "rb") as f:
        r = _read_stdin(f)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["6", "320", "240"]  # every frame, upright
    spools = lambda: set(Path(tempfile.gettempdir()).glob("edgeseg-stdin-*"))  # noqa: E731
    before = spools()
    piped = subprocess.Popen(["cat", str(clip)], stdout=subprocess.PIPE)
    r = _read_stdin(piped.stdout)
    piped.wait()
    assert r.returncode == 0, r.stderr
    # session 58: through a pipe too, every frame (before: 1 of 6, with a warning): the MP4 is read whole into a file
    assert r.stdout.split() == ["6", "320", "240"], r.stderr
    assert "an MP4/MOV read from a pipe" not in r.stderr and spools() <= before  # (its copy never has a name)


@pytest.mark.data
def test_a_dash_cam_file_redirected_into_standard_input_gives_every_frame(gst, data_root):
    with open(data_root / "video" / "dashcam_960x540.mp4", "rb") as f:
        r = _read_stdin(f)
    assert r.returncode == 0 and r.stdout.split() == ["221", "540", "960"], r.stderr
    piped = subprocess.Popen(["cat", str(data_root / "video" / "dashcam_960x540.mp4")], stdout=subprocess.PIPE)
    r = _read_stdin(piped.stdout)  # through a pipe: 175 before session 58
    piped.wait()
    assert r.returncode == 0 and r.stdout.split() == ["221", "540", "960"], r.stderr


def test_a_clip_whose_audio_outlasts_its_picture_is_not_called_truncated(gst, tmp_path):
    """before: GStreamer's duration is the container's (its longest track, the audio): 10 frames of 0.4 s with 1.5 s
    of audio were 'decoded 10 of the 38 frames its container announces: the file is truncated', exit 2. The video
    track's own duration (tkhd) now sets the count."""
    from edgeseg.stream import gst as _gst
    from edgeseg.stream.sources.containers import mp4_video_duration_ns

    if not _gst.has_element("avenc_aac"):
        pytest.skip("no AAC encoder in this GStreamer")
    clip = tmp_path / "av.mp4"
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=10", "!",
                    "video/x-raw,width=64,height=48,framerate=25/1", "!", "x264enc", "!", "h264parse", "!", "mux.",
                    "audiotestsrc", "num-buffers=70", "samplesperbuffer=1024", "!", "audio/x-raw,rate=48000", "!",
                    "audioconvert", "!", "avenc_aac", "!", "aacparse", "!", "mux.", "mp4mux", "name=mux", "!",
                    "filesink", f"location={clip}"], check=True, timeout=60)
    assert mp4_video_duration_ns(str(clip)) == 400_000_000  # 10 frames at 25 fps; the file lasts 1.5 s
    src = GstSource(str(clip))
    frames = list(src)
    src.close()
    assert len(frames) == 10 and src.expected_frames == 10
    assert mp4_video_duration_ns(str(tmp_path / "nothing.mp4")) is None  # (cut files: test_gst_io.py, test_odd_files.py)
    with open(clip, "rb") as f:  # redirected into standard input: read as that file, its tracks too (a review)
        r = _read_stdin(f)
    assert r.returncode == 0 and r.stdout.split() == ["10", "48", "64"], r.stderr
    assert "container announces" not in r.stderr and "truncated" not in r.stderr
