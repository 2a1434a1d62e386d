"""A video sink in segments (``--segment-s``, ``--keep-segments``): before, a run of days was one MP4 growing for
ever (finished, and indexed, only when the run ended). Each segment is checked frame by frame: the frames are flat
grey levels 8 apart, which H.264 and mp4v keep to within 3, so a decoded frame says which input frame it is."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgeseg.errors import InputError, StreamError
from edgeseg.stream import Mp4Sink
from edgeseg.stream.api import StreamOptions, check_options
from edgeseg.stream.sinks.segments import next_free_index, segment_frames, segment_path
from edgeseg.structures import Frame
from stream_helpers import decode_mp4_frames


def _levels(n: int) -> list[np.ndarray]:
    return [np.full((48, 64, 3), 20 + 8 * i, np.uint8) for i in range(n)]


def _decoded_levels(path) -> list[int]:
    return [int(round((float(f.mean()) - 20) / 8)) for f in decode_mp4_frames(path)]


def _record(sink: Mp4Sink, images) -> None:
    sink.open()
    for i, image in enumerate(images):
        sink.write(Frame(image, index=i), None)
    sink.close()


@pytest.mark.parametrize("backend", ["gstreamer", "opencv"])
def test_each_segment_is_a_whole_file_of_its_frames(tmp_path, backend):
    if backend == "gstreamer":
        pytest.importorskip("gi")
    sink = Mp4Sink(tmp_path / "out.mp4", fps=10, backend=backend, segment_s=1)
    _record(sink, _levels(23))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out.00000.mp4", "out.00001.mp4", "out.00002.mp4"]  # no .part left, no out.mp4
    assert [_decoded_levels(tmp_path / n) for n in names] == [list(range(0, 10)), list(range(10, 20)), [20, 21, 22]]
    records = sink.segment_records()
    assert [(r["first_frame"], r["frames"], r["state"]) for r in records] == [(0, 10, "finished"), (10, 10, "finished"),
                                                                              (20, 3, "finished")]
    assert sink.paths == [tmp_path / n for n in names]


def test_keep_segments_removes_only_the_run_s_oldest_and_numbering_goes_on(tmp_path):
    pytest.importorskip("gi")
    (tmp_path / "out.mp4").write_bytes(b"the user's own file")
    (tmp_path / "out.00004.mp4").write_bytes(b"an earlier run's segment")
    sink = Mp4Sink(tmp_path / "out.mp4", fps=10, backend="gstreamer", segment_s=1, keep_segments=2)
    _record(sink, _levels(23))
    assert (tmp_path / "out.mp4").read_bytes() == b"the user's own file"  # neither replaced nor counted
    assert (tmp_path / "out.00004.mp4").read_bytes() == b"an earlier run's segment"
    assert not (tmp_path / "out.00005.mp4").exists()  # the run's oldest of three
    assert _decoded_levels(tmp_path / "out.00006.mp4") == list(range(10, 20))
    assert _decoded_levels(tmp_path / "out.00007.mp4") == [20, 21, 22]
    assert [r["state"] for r in sink.segment_records()] == ["removed", "finished", "finished"]
    assert sink.paths == [tmp_path / "out.00006.mp4", tmp_path / "out.00007.mp4"]


def test_a_segment_that_cannot_be_finished_is_named_and_the_others_are_whole(tmp_path):
    """The first segment's .part file removed while it records (a clean-up script, a user): its rename fails in the
    background; the error names it, and the segments after it are still finished."""
    pytest.importorskip("gi")
    sink = Mp4Sink(tmp_path / "out.mp4", fps=10, backend="gstreamer", segment_s=1)
    sink.open()
    images = _levels(23)
    for i, image in enumerate(images[:10]):
        sink.write(Frame(image, index=i), None)
    os.remove(tmp_path / "out.00000.part.mp4")
    failed = None
    for i, image in enumerate(images[10:], 10):  # the failure is said at a write after it happened, or at the close
        try:
            sink.write(Frame(image, index=i), None)
        except StreamError as e:
            failed = e
            break
    if failed is None:
        with pytest.raises(StreamError) as e:
            sink.close()
        failed = e.value
    else:
        sink.close()
    assert "out.00000" in str(failed)
    assert sink.segment_records()[0]["state"] == "failed"
    assert _decoded_levels(tmp_path / "out.00001.mp4")[:1] == [10]


def test_segment_names_and_lengths():
    from pathlib import Path

    assert segment_path(Path("/v/cam.front.mkv"), 12) == Path("/v/cam.front.00012.mkv")
    assert segment_path(Path("out.mp4"), 123456).name == "out.123456.mp4"  # a sixth digit, not a wrap
    assert segment_frames(600, 30) == 18000 and segment_frames(0.01, 25) == 1 and segment_frames(1, 29.97) == 30


def test_next_free_index_skips_parts_and_other_names(tmp_path):
    from pathlib import Path

    for name in ("out.00002.part.mp4", "out.00001.mp4", "out.0003.mp4", "outx.00009.mp4", "out.00007.mkv", "out.mp4"):
        (tmp_path / name).write_bytes(b"")
    assert next_free_index(tmp_path / "out.mp4") == 3
    assert next_free_index(tmp_path / "none.mp4") == 0
    assert next_free_index(Path("/no/such/folder/out.mp4")) == 0


@pytest.mark.parametrize("field,value", [("segment_s", 0), ("segment_s", -5), ("segment_s", float("nan")),
                                         ("keep_segments", 0), ("keep_segments", True), ("keep_segments", 2.5)])
def test_bad_segment_settings_are_refused_by_name(field, value):
    with pytest.raises(InputError, match=f"stream option {field} must be"):
        check_options(StreamOptions(source="synthetic://", sink="out.mp4", **{field: value}))


def test_run_cli_writes_segments_and_lists_them_in_its_stats(tmp_path):
    pytest.importorskip("gi")
    cmd = [sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes", "--source", "synthetic://?frames=60",
           "--fps", "20", "--sink", "out.mp4", "--segment-s", "1", "--keep-segments", "2", "--stats-json", "s.json"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert [(s["file"], s["first_frame"], s["frames"], s["state"]) for s in stats["segments"]] == [
        ("out.00000.mp4", 0, 20, "removed"), ("out.00001.mp4", 20, 20, "finished"), ("out.00002.mp4", 40, 20, "finished")]
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out.00001.mp4", "out.00002.mp4"]
    assert len(decode_mp4_frames(tmp_path / "out.00002.mp4")) == 20
    r = subprocess.run([sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes", "--source", "synthetic://?frames=2",
                        "--keep-segments", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "keep_segments (--keep-segments) has no effect without segment_s (--segment-s)" in r.stderr


def test_two_runs_with_one_sink_never_write_into_each_other_s_segments(tmp_path):
    """A review: the numbers were counted from the first, so a second run started beside a first (a restart while the
    old one finishes) and the first's next segment took the same file. Each segment's .part is claimed when it starts."""
    pytest.importorskip("gi")
    first = Mp4Sink(tmp_path / "rec.mp4", fps=10, backend="gstreamer", segment_s=1)
    second = Mp4Sink(tmp_path / "rec.mp4", fps=10, backend="gstreamer", segment_s=1)
    a, b = _levels(23)[:12], _levels(23)[12:]
    first.open()
    for i, image in enumerate(a[:10]):
        first.write(Frame(image, index=i), None)  # rec.00000
    second.open()
    second.write(Frame(b[0], index=0), None)  # rec.00001, while the first still records
    for i, image in enumerate(a[10:], 10):
        first.write(Frame(image, index=i), None)  # its second segment: rec.00002, not the second run's 00001
    second.close()
    first.close()
    assert [r["file"].rsplit("/", 1)[-1] for r in first.segment_records()] == ["rec.00000.mp4", "rec.00002.mp4"]
    assert [r["file"].rsplit("/", 1)[-1] for r in second.segment_records()] == ["rec.00001.mp4"]
    assert _decoded_levels(tmp_path / "rec.00000.mp4") == list(range(10))
    assert _decoded_levels(tmp_path / "rec.00001.mp4") == [12]
    assert _decoded_levels(tmp_path / "rec.00002.mp4") == [10, 11]


def test_a_huge_segment_length_is_one_file_and_no_claimed_part_is_left(tmp_path):
    """An audit: --segment-s 1e308 (or --fps 1e308) raised 'cannot convert float infinity to integer' after claiming
    rec.00000.part.mp4, which stayed (empty, unlisted) and made every later run skip that number."""
    pytest.importorskip("gi")
    sink = Mp4Sink(tmp_path / "rec.mp4", fps=10, backend="gstreamer", segment_s=1e308)
    _record(sink, _levels(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.00000.mp4"]
    assert _decoded_levels(tmp_path / "rec.00000.mp4") == [0, 1, 2, 3, 4]
    assert segment_frames(1e308, 1e308) > 10 ** 15 and segment_frames(2, float("inf")) > 10 ** 15


def test_segment_options_without_what_they_need_are_said_in_the_python_api_too(caplog):
    from edgeseg.stream.api import build_sinks

    with caplog.at_level("WARNING", logger="edgeseg.stream"):
        build_sinks(StreamOptions(source="synthetic://", segment_s=5))
    assert "segment_s (--segment-s) has no effect without sink (--sink)" in caplog.text


def _json_record(sink, n: int) -> None:
    sink.open()
    for i in range(n):
        sink.write(Frame(np.zeros((4, 6, 3), np.uint8), index=i, pts_ns=i * 100_000_000), None)
    sink.close()


def test_json_lines_in_segments(tmp_path):
    """Session 47 left the JSON lines one file for ever (a day of 25 fps semantic records is ~0.4 GB; instance RLEs
    more). With segment_s they are cut as the MP4 is: the same frames per file, .part while written, keep_segments."""
    from edgeseg.stream import JsonLinesSink

    (tmp_path / "res.00000.jsonl").write_text("an earlier run's\n")
    sink = JsonLinesSink(tmp_path / "res.jsonl", segment_s=1, keep_segments=2, fps=10)
    _json_record(sink, 23)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.00000.jsonl", "res.00002.jsonl", "res.00003.jsonl"]
    assert (tmp_path / "res.00000.jsonl").read_text() == "an earlier run's\n"  # never the run's to remove
    lines = [[json.loads(x)["index"] for x in (tmp_path / f"res.0000{k}.jsonl").read_text().splitlines()] for k in (2, 3)]
    assert lines == [list(range(10, 20)), [20, 21, 22]]
    assert [(r["file"].rsplit("/", 1)[-1], r["first_frame"], r["frames"], r["state"]) for r in sink.segment_records()] \
        == [("res.00001.jsonl", 0, 10, "removed"), ("res.00002.jsonl", 10, 10, "finished"),
            ("res.00003.jsonl", 20, 3, "finished")]
    assert sink.paths == [tmp_path / "res.00002.jsonl", tmp_path / "res.00003.jsonl"]
    # while a segment is written it is a .part, its lines already on disk (a kill keeps them)
    live = JsonLinesSink(tmp_path / "live.jsonl", segment_s=1, fps=10)
    live.open()
    for i in range(12):
        live.write(Frame(np.zeros((4, 6, 3), np.uint8), index=i), None)
    assert sorted(p.name for p in tmp_path.glob("live*")) == ["live.00000.jsonl", "live.00001.part.jsonl"]
    assert len((tmp_path / "live.00001.part.jsonl").read_text().splitlines()) == 2
    live.close()
    assert sorted(p.name for p in tmp_path.glob("live*")) == ["live.00000.jsonl", "live.00001.jsonl"]
    # two cameras interleaved: a segment holds 1 s of each (session 48 cut them at 0.5 s: frames were counted together)
    two = JsonLinesSink(tmp_path / "two.jsonl", segment_s=1, fps=10)
    two.open()
    for i in range(25):
        two.write(Frame(np.zeros((4, 6, 3), np.uint8), index=i // 2, source_id="ab"[i % 2]), None)
    two.close()
    assert [r["frames"] for r in two.segment_records()] == [20, 5]


def test_run_cli_cuts_video_and_json_lines_alike(tmp_path):
    pytest.importorskip("gi")
    cmd = [sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes", "--source", "synthetic://?frames=50",
           "--fps", "20", "--sink", "out.mp4", "--json-out", "res.jsonl", "--segment-s", "1", "--json-segments",
           "--stats-json", "s.json"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    got = sorted((s["kind"], s["file"], s["first_frame"], s["frames"]) for s in stats["segments"])
    assert got == sorted((kind, f"{stem}.0000{k}.{ext}", 20 * k, min(20, 50 - 20 * k)) for kind, stem, ext in
                         (("video", "out", "mp4"), ("json", "res", "jsonl")) for k in range(3))
    for k in range(3):
        lines = (tmp_path / f"res.0000{k}.jsonl").read_text().splitlines()
        assert [json.loads(x)["index"] for x in lines] == list(range(20 * k, min(20 * k + 20, 50)))
        assert len(decode_mp4_frames(tmp_path / f"out.0000{k}.mp4")) == len(lines)
    # opt-in (a review): --segment-s and --keep-segments alone leave the JSON lines one file, all of it kept
    r = subprocess.run([sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes", "--source", "synthetic://?frames=45",
                        "--fps", "20", "--sink", "v.mp4", "--json-out", "one.jsonl", "--segment-s", "1",
                        "--keep-segments", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "one.jsonl").read_text().splitlines()) == 45 and not list(tmp_path.glob("one.0*"))
    r = subprocess.run([sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes", "--source", "synthetic://?frames=2",
                        "--json-out", "two.jsonl", "--json-segments"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "json_segments (--json-segments) has no effect without segment_s" in r.stderr


def test_cuts_stay_on_the_run_s_grid_after_an_outage():
    """Session 57: each segment was measured from its own first frame, so after an outage (a camera away 5.3 s) every
    later cut moved by it (6.3, 8.3, 10.3 s). Now cuts fall on the first frame at or past each grid line of the
    source's time, as ffmpeg's segment muxer cuts: the segment the outage follows ends before it, the next is short,
    and the cuts after it are at 8 and 10 s again. Hand-computed: 10 fps, 2 s segments (lines at 1.95, 3.95, ... s)."""
    from edgeseg.stream.sinks.segments import SegmentClock

    times_s = [i / 10 for i in range(11)] + [round(6.3 + i / 10, 1) for i in range(57)]  # 0-1.0 s, away, 6.3-11.9 s
    clock = SegmentClock(2.0, 10.0)
    starts = []
    for t in times_s:
        f = Frame(np.zeros((2, 2, 3), np.uint8), pts_ns=int(round(t * 1e9)), index=len(starts))
        if not starts or clock.full(f):
            clock.restart()
            starts.append(t)
        clock.add(f)
    assert starts == [0.0, 6.3, 8.0, 10.0]
    # a source without times: whole segments of frames, as before
    clock, n = SegmentClock(2.0, 10.0), []
    for i in range(45):
        f = Frame(np.zeros((2, 2, 3), np.uint8), pts_ns=-1, index=i)
        if not n or clock.full(f):
            clock.restart()
            n.append(i)
        clock.add(f)
    assert n == [0, 20, 40]


def test_the_grid_is_one_source_s_and_a_first_frame_without_time_does_not_untime_the_run():
    """The review of session 57: one JSON-lines file of several sources cut at every source's grid lines (a camera
    joining 30 s late: a cut every 30 s of 60 s segments); and a first frame without a time left the source counted in
    frames for the whole run (a camera declaring 10 fps that gives 5: 20 s files). Hand-computed cuts."""
    from edgeseg.stream.sinks.segments import SegmentClock

    def cuts(clock, frames):
        out = []
        for sid, t in frames:
            f = Frame(np.zeros((2, 2, 3), np.uint8), pts_ns=-1 if t is None else int(round(t * 1e9)), index=0,
                      source_id=sid)
            if out and clock.full(f) or not out:
                clock.restart()
                out.append((sid, t))
            clock.add(f)
        return out

    a = [("a", i / 2) for i in range(0, 480)]  # 0-239.5 s at 2 fps
    b = [("b", i / 2) for i in range(0, 420)]  # its own clock from 0, joining 30 s later
    both = sorted(a + [(sid, t) for sid, t in b], key=lambda st: st[1] + (30 if st[0] == "b" else 0))
    got = cuts(SegmentClock(60.0, 2.0), both)
    assert [t + (30 if sid == "b" else 0) for sid, t in got] == [0.0, 60.0, 120.0, 180.0]  # every 60 s, as before
    # 5 frames a second where 10 were declared, its first frame without a time: 10 s segments of 50 frames
    camera = [("c", None)] + [("c", i / 5) for i in range(1, 200)]
    assert [t for _, t in cuts(SegmentClock(10.0, 10.0), camera)] == [None, 20.0, 30.0]


def test_png_labels_in_segment_folders(tmp_path):
    """Session 58 (the left-open pass): --png-dir never rotated, so a days-long run filled the disk (one PNG a frame,
    ~2.6 million a day at 30 fps). With segment_s: one folder a segment (NNNNN.part while written), the same cuts as
    the MP4s and JSON lines, keep_segments removing this run's oldest folders, numbering on after an earlier run's."""
    import cv2

    from edgeseg.stream import LabelPngSink
    from edgeseg.structures import SemanticResult

    (tmp_path / "00000").mkdir()
    (tmp_path / "00000" / "mine.png").write_bytes(b"an earlier run's")
    sink = LabelPngSink(tmp_path, segment_s=1, keep_segments=2, fps=10)
    sink.open()
    for i in range(23):
        labels = np.full((4, 6), i % 7, np.uint8)
        sink.write(Frame(np.zeros((4, 6, 3), np.uint8), index=i, pts_ns=i * 100_000_000),
                   SemanticResult(labels))
        if i == 11:  # while a segment is written it is a .part folder, its PNGs already on disk
            assert sorted(p.name for p in tmp_path.iterdir()) == ["00000", "00001", "00002.part"]
            assert sorted(p.name for p in (tmp_path / "00002.part").iterdir()) == ["000010.png", "000011.png"]
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000", "00002", "00003"]  # 00001 removed (keep 2)
    assert (tmp_path / "00000" / "mine.png").read_bytes() == b"an earlier run's"  # never the run's to remove
    assert sorted(p.name for p in (tmp_path / "00003").iterdir()) == ["000020.png", "000021.png", "000022.png"]
    assert int(cv2.imread(str(tmp_path / "00003" / "000022.png"), cv2.IMREAD_UNCHANGED)[0, 0]) == 22 % 7
    assert [(r["file"].rsplit("/", 1)[-1], r["first_frame"], r["frames"], r["state"]) for r in sink.segment_records()] \
        == [("00001", 0, 10, "removed"), ("00002", 10, 10, "finished"), ("00003", 20, 3, "finished")]
    assert sink.paths == [tmp_path / "00002", tmp_path / "00003"]


def test_run_cli_png_segments_with_panoptic_json_per_folder(tmp_path):
    pytest.importorskip("gi")
    cmd = [sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes-panoptic", "--source", "synthetic://?frames=50",
           "--fps", "20", "--png-dir", "pngs", "--segment-s", "1", "--png-segments", "--stats-json", "s.json"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert [(s["kind"], s["file"], s["frames"]) for s in stats["segments"]] == [
        ("png", f"pngs/0000{k}", n) for k, n in enumerate((20, 20, 10))]
    for k, n in enumerate((20, 20, 10)):  # each folder a whole COCO-panoptic set: its PNGs and their annotations
        folder = tmp_path / "pngs" / f"0000{k}"
        coco = json.loads((folder / "panoptic.json").read_text())
        pngs = sorted(p.name for p in folder.glob("*.png"))
        assert len(pngs) == n and sorted(a["file_name"] for a in coco["annotations"]) == pngs
    r = subprocess.run([sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes", "--source", "synthetic://?frames=2",
                        "--png-dir", "p2", "--png-segments"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "png_segments (--png-segments) has no effect without segment_s" in r.stderr
