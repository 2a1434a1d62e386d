"""Recordings keep their sources' time: each frame where its ``pts_ns`` says, segments cut by time.

An audit ("time in the outputs"): every written frame was at ``index / fps``, so 12 s of a 30 fps camera the model
took 10 fps of became a 4.4 s video, a variable-frame-rate clip with a 2 s pause lost the pause, and ``--segment-s 2``
wrote files of 4-6 s of real time. The files are read back by FFmpeg (OpenCV), not by the code that wrote them.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.stream import JsonLinesSink, Mp4Sink
from edgeseg.stream.sinks.segments import SegmentClock
from edgeseg.stream.sinks.video import Timeline
from edgeseg.structures.frame import Frame
from video_ref import decode_video_rgb

MS = 1_000_000


def read_times_ms(path) -> list[float]:
    """Each decoded frame's time in the file (FFmpeg's, through OpenCV), in ms."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        out.append(round(cap.get(cv2.CAP_PROP_POS_MSEC), 1))
    cap.release()
    return out


def frames_at(times_ms, size=(48, 64), source="cam", values=None):
    values = values or [0] * len(times_ms)
    return [Frame(np.full((*size, 3), v, np.uint8), int(t * MS) if t is not None else -1, i, source)
            for i, (t, v) in enumerate(zip(times_ms, values))]


def test_the_timeline_follows_source_time_and_never_goes_back():
    tl = Timeline(25.0)
    # from the first frame; a 2 s pause kept; a frame without a time a period on; a clock that restarted (a camera
    # that reconnected) goes on a period after the last frame, keeping its own spacing
    got = [tl.place(t) for t in (5000 * MS, 5040 * MS, 7040 * MS, -1, 100 * MS, 140 * MS, 140 * MS)]
    assert got == [0, 40 * MS, 2040 * MS, 2080 * MS, 2120 * MS, 2160 * MS, 2200 * MS]
    assert [Timeline(10.0).place(-1) for _ in range(2)] == [0, 0] and Timeline(30.0).period_ns == 33_333_333


@pytest.mark.parametrize("backend", ["gstreamer", "opencv"])
def test_a_recording_of_dropped_and_paused_frames_plays_in_real_time(backend, tmp_path):
    if backend == "gstreamer":
        pytest.importorskip("gi")
    # a 25 fps camera of which the model took every third frame, then a 2 s pause (the camera away), then every frame
    times = [0, 120, 240, 360, 2360, 2400, 2440]
    values = [0, 40, 80, 120, 160, 200, 240]  # each frame its own grey, to see which one shows when
    sink = Mp4Sink(tmp_path / "out.mp4", backend=backend)
    sink.bind_source(type("S", (), {"fps": 25.0, "parts": ()})())
    sink.open()
    for f in frames_at(times, values=values):
        sink.write(f, None)
    sink.close()
    got = read_times_ms(tmp_path / "out.mp4")
    greys = [int(round(float(np.mean(f)))) for f in decode_video_rgb(tmp_path / "out.mp4")]
    if backend == "gstreamer":  # each frame at its time (before: 0, 40, ... 240 ms: 2.4 s of camera in 0.28 s)
        assert got == [float(t) for t in times]
        shown = values
    else:  # OpenCV's writer is constant-rate: a gap is filled with the frame before it, so the times still hold
        assert len(got) == 2440 // 40 + 1 and got[-1] == 2440.0
        shown = [values[max(i for i, t in enumerate(times) if t <= 40 * k)] for k in range(len(got))]
    assert max(abs(g - v) for g, v in zip(greys, shown)) <= 6 and len(greys) == len(shown)
    assert sink.frames == len(times)


def test_an_output_rate_given_retimes_every_frame(tmp_path):
    pytest.importorskip("gi")
    sink = Mp4Sink(tmp_path / "out.mp4", fps=10)  # --fps 10: the user's rate, whatever the source's times
    sink.open()
    for f in frames_at([0, 500, 2000]):
        sink.write(f, None)
    sink.close()
    assert read_times_ms(tmp_path / "out.mp4") == [0.0, 100.0, 200.0]


def test_segments_are_cut_by_source_time_in_the_video_and_the_json_alike(tmp_path):
    pytest.importorskip("gi")
    # 30 fps camera, the model taking about 12 fps, irregularly: "1 s" segments hold 1 s of camera time each
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.choice([33.3, 66.7, 100.0], size=60)).round(1).tolist()
    video = Mp4Sink(tmp_path / "rec.mp4", segment_s=1.0)
    lines = JsonLinesSink(tmp_path / "rec.jsonl", segment_s=1.0)
    for sink in (video, lines):
        sink.bind_source(type("S", (), {"fps": 30.0, "parts": ()})())
        sink.open()
    for f in frames_at(times):
        video.write(f, None)
        lines.write(f, None)
    video.close()
    lines.close()
    segs = video.segments
    assert [s.frames for s in segs] == [s.frames for s in lines.segments]  # the same frames in both
    firsts = [s.first_frame for s in segs]
    for j, b in enumerate(firsts[1:], 1):  # cut at the first frame on or past each second of the camera's time (a grid)
        assert times[b - 1] - times[0] < 1000 * j - 1000 / 60 <= times[b] - times[0]
    assert len(segs) == int((times[-1] - times[0]) // 1000) + 1  # (a count of 30 frames each: 2 files of 5 s)
    for s in segs:
        got = read_times_ms(s.file)
        want = [round(t - times[s.first_frame], 1) for t in times[s.first_frame:s.first_frame + s.frames]]
        assert len(got) == s.frames and max(abs(g - w) for g, w in zip(got, want)) < 0.3  # (both rounded to 0.1 ms)
    json_firsts = [json.loads(open(s.file).readline())["index"] for s in lines.segments]
    assert json_firsts == firsts


def test_segment_clock_counts_frames_without_times_or_with_a_given_rate():
    no_time = frames_at([None] * 7)
    clock = SegmentClock(0.2, 10.0)  # 2 frames a segment at 10 fps
    cuts = []
    for f in no_time:
        if clock.full(f):
            cuts.append(f.index)
            clock.restart()
        clock.add(f)
    assert cuts == [2, 4, 6]
    timed = frames_at([0, 10, 20, 30, 250, 260])
    full = {}
    for by_time in (True, False):  # by time: full from 250 ms; with an output rate given (frames only): from the third
        clock, full[by_time] = SegmentClock(0.2, 10.0, by_time=by_time), []
        for f in timed:
            full[by_time].append(clock.full(f))
            clock.add(f)
    assert full == {True: [False] * 4 + [True, True], False: [False, False] + [True] * 4}


def test_json_lines_carry_the_wall_clock_time_each_frame_was_received_and_discontinuities(tmp_path):
    """An audit: nothing in the outputs carried a wall-clock time (a live source's ``pts_ns`` counts from its own
    pipeline's start), so frames could not be lined up with other sensors; and a reconnect's restarted ``pts_ns`` was
    not marked in the JSON (the Python API's ``frame.meta`` had it)."""
    import time

    import edgeseg

    t0 = time.time_ns()
    list(edgeseg.stream(["synthetic://?frames=5&size=64x48", "synthetic://?frames=5&size=64x48&seed=2"], "shapes",
                        json_out=str(tmp_path / "r.jsonl")))
    t1 = time.time_ns()
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 10
    for source in {r["source"] for r in rows}:
        mine = [r for r in rows if r["source"] == source]
        got = [r["received_ns"] for r in mine]
        assert t0 <= got[0] and got == sorted(got) and got[-1] <= t1
        assert [r.get("discontinuity", False) for r in mine] == [True, False, False, False, False]  # its first frame


def test_a_segment_keeps_its_time_when_the_sources_clock_restarts():
    """The review: after a camera's clock restarted (a reconnect, a looping file) the segment counted frames, then
    measured from the old first frame again: 10 s segments of a camera the model took 10 fps of were cut after 18 s."""
    clock = SegmentClock(10.0, 30.0)
    times = [t * 100 for t in range(31)] + [t * 100 for t in range(100)]  # 3 s, the clock back to 0, on
    cut = None
    for i, t in enumerate(frames_at(times)):
        if clock.full(t):
            cut = i
            break
        clock.add(t)
    # 3.0 s before the restart + a frame period (33 ms), then the frame at 7.0 s of the new clock (10.03 s in all;
    # the one at 6.9 s makes 9.93 s, under 10 s less half a frame period)
    assert cut == 31 + 70 and times[cut] == 7000


def test_each_source_s_json_segments_cut_by_its_own_rate():
    """Session 56 (the review of session 55): the JSON lines' one clock took the fastest source's rate for every source,
    where each source's MP4 takes its own: a 10 fps camera beside a 30 fps one, its 20th frame 30 ms early (1.97 s),
    was cut a frame later in the JSON lines than in its MP4. Hand values: 2 s less half a 10 fps period is 1.95 s."""
    from types import SimpleNamespace

    def cut(clock):
        times = [t * 100 for t in range(20)] + [1970, 2070]
        for i, t in enumerate(times):
            f = SimpleNamespace(source_id="slow", pts_ns=t * 1_000_000)
            if clock.full(f):
                return i
            clock.add(f)

    own = SegmentClock(2.0, 10.0)  # the slow source's own MP4
    shared = SegmentClock(2.0, 30.0, rate_of={"slow": 10.0, "fast": 30.0}.get)  # the JSON lines of both sources
    assert cut(own) == cut(shared) == 20
    assert cut(SegmentClock(2.0, 30.0)) == 21  # one rate for both, as before: 1.97 s < 2 s less 16.7 ms


def test_a_live_sources_frames_are_stamped_when_made_not_when_a_slow_model_takes_them():
    """The review: one live source's frames were stamped when the stream's source thread took them, after the source's
    own buffer (4 frames): behind a slow model up to 4 frame periods late. Now when the source made them."""
    import time

    from edgeseg.stream.base import RECEIVED
    from edgeseg.stream.sources import open_source

    src = open_source("synthetic://?frames=40&size=64x48&live=1&fps=50")
    late = []
    for frame in src:  # a consumer slower than the camera: frames wait in the source's buffer
        late.append((time.time_ns() - frame.meta[RECEIVED]) / 1e6)
        time.sleep(0.08)
        if len(late) == 6:
            break
    src.close()
    assert min(late[1:]) > 20, late  # they waited (stamped when taken, about 0)
