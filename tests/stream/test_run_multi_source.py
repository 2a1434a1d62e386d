"""``edgeseg run`` with several ``--source`` options: interleaved frames batched across sources
(``--max-batch``/``--batch-timeout-ms``), every result tagged with its source."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.errors import InputError
from edgeseg.stream import MultiSource, StreamOptions, build_pipeline
from edgeseg.stream.sources.synthetic import SyntheticSource
from edgeseg.structures import rle_decode

A = "synthetic://?seed=1&size=64x48&frames=11"
B = "synthetic://?seed=2&size=80x60&frames=7"


def test_cli_two_sources_batched(bundle, predictor, tmp_path, capsys):
    jsonl, stats = tmp_path / "r.jsonl", tmp_path / "s.json"
    code = main(["run", "--bundle", str(bundle.root), "--backend", "onnxruntime", "--threads", "1",
                 "--source", A, "--source", B, "--source", A, "--max-batch", "4", "--batch-timeout-ms", "50",
                 "--json-out", str(jsonl), "--stats-json", str(stats)])
    assert code == 0
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    by_source: dict[str, list[dict]] = {}
    for rec in lines:
        by_source.setdefault(rec["source"], []).append(rec)
    # per-source frame counts and order; a repeated URI gets its own source_id
    assert {k: [r["index"] for r in v] for k, v in by_source.items()} == {
        A: list(range(11)), B: list(range(7)), A + "#2": list(range(11))}
    d = json.loads(stats.read_text())
    assert d["frames"] == d["processed"] == 29 and d["errors"] == 0 and d["source"] == [A, B, A]
    # each source's own figures (session 56): its frames, their rate over the run and their latency
    by = {r["source"]: r for r in d["sources"]}
    assert {k: r["processed"] for k, r in by.items()} == {A: 11, B: 7, A + "#2": 11}
    for r in by.values():
        assert r["fps"] == pytest.approx(r["processed"] / d["wall_s"], rel=0.01)
        assert r["end_to_end"]["count"] == r["processed"] and 0 < r["end_to_end"]["p50_ms"] <= d["end_to_end"]["max_ms"]
    sizes = {int(k): v for k, v in d["batch_sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) == 29 and max(sizes) > 1  # really batched, nothing lost
    assert "inference batches" in capsys.readouterr().out
    # batched results equal single-frame inference on the same frames
    frames = {A: list(SyntheticSource(A)), B: list(SyntheticSource(B))}
    for sid, recs in by_source.items():
        for rec in recs[::3]:
            want = predictor(frames[sid.split("#")[0]][rec["index"]].image).labels
            got = np.zeros(want.shape, np.int64)
            for seg in rec["segments"]:
                got[rle_decode(seg["rle"]).astype(bool)] = seg["class_id"]
            np.testing.assert_array_equal(got, want)


def test_options_build_a_multisource_and_batching_stage(predictor):
    opts = StreamOptions(source=[A, B], max_batch=3, batch_timeout_ms=20)
    pipe = build_pipeline(opts, predictor=predictor, handle_signals=False)
    assert isinstance(pipe.source, MultiSource) and pipe.source.expected_frames == 18
    inference = next(s for s in pipe.stages if s.name == "inference")
    assert (inference.max_batch, inference.batch_timeout_s) == (3, 0.02)
    got = []
    from edgeseg.stream import CallbackSink

    pipe.sinks.append(CallbackSink(lambda f, r: got.append((f.source_id, f.index))))
    stats = pipe.run()
    assert stats.processed == 18
    assert sorted(i for s, i in got if s == A) == list(range(11)) and sorted(i for s, i in got if s == B) == list(range(7))


def test_recipe_lists_sources_and_batching(tmp_path):
    from edgeseg.stream import load_recipe

    recipe = tmp_path / "two.toml"
    recipe.write_text(f'[source]\nuri = ["{A}", "{B}"]\n[pipeline]\nmax_batch = 2\nbatch_timeout_ms = 5\n')
    opts = load_recipe(recipe)
    assert (opts.source, opts.max_batch, opts.batch_timeout_ms) == ([A, B], 2, 5)


def test_a_video_sink_writes_one_file_per_source_at_its_own_rate(bundle, tmp_path):
    """before: several sources' rendered frames went into one MP4, interleaved, at the fastest source's rate
    (two cameras flickered frame by frame, each playing at the wrong speed). Now each source has its own file."""
    import cv2

    fast, slow = "synthetic://?seed=1&size=64x48&frames=9&fps=30", "synthetic://?seed=2&size=80x60&frames=5&fps=10"
    out = tmp_path / "out.mp4"
    assert main(["run", "--bundle", str(bundle.root), "--backend", "onnxruntime", "--threads", "1",
                 "--source", fast, "--source", slow, "--source", fast, "--sink", str(out)]) == 0
    assert not out.exists() and not list(tmp_path.glob("*.part.*"))
    got = {}
    for f in sorted(tmp_path.glob("out.*.mp4")):
        cap = cv2.VideoCapture(str(f))
        n = 0
        while cap.read()[0]:
            n += 1
        got[f.name] = (n, round(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        cap.release()
    assert got == {"out.synthetic_seed_1_size_64x48_frames_9_fps_30.mp4": (9, 30, 64),
                   "out.synthetic_seed_1_size_64x48_frames_9_fps_30_2.mp4": (9, 30, 64),  # the repeated URI's "#2"
                   "out.synthetic_seed_2_size_80x60_frames_5_fps_10.mp4": (5, 10, 80)}


def test_stats_json_names_the_source_that_failed(bundle, tmp_path):
    """before: with several sources, one that died was only logged; --stats-json said nothing of it."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    stats = tmp_path / "s.json"
    main(["run", "--bundle", str(bundle.root), "--backend", "onnxruntime", "--threads", "1", "--source", A,
          "--source", str(bad), "--json-out", str(tmp_path / "r.jsonl"), "--stats-json", str(stats)])
    d = json.loads(stats.read_text())
    by = {s["source"]: s for s in d["sources"]}
    assert set(by) == {A, str(bad)} and "failed" not in by[A] and by[A]["dropped"] == 0
    assert (by[A]["processed"], by[str(bad)]["processed"], by[str(bad)]["end_to_end"]) == (11, 0, None)
    assert by[str(bad)]["frames_before_failure"] == 0 and str(bad) in by[str(bad)]["failed"]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 11  # the other source's frames are all kept


def test_per_source_file_names_are_fixed_by_the_source_order_and_unique(tmp_path):
    """A review: a dotted --sink stem (out.v2.mp4) let two sources share one file, an address's '.10' was taken for a
    suffix, and names followed which source gave the first frame."""
    from edgeseg.stream.sinks.video import per_source_names

    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "clip.mkv").write_bytes(b"")
    a, b = str(tmp_path / "clip.mp4"), str(tmp_path / "clip.mkv")
    names = per_source_names([a, b, "rtsp://192.168.1.10", "rtsp://192.168.1.11", a + "#2"])
    from edgeseg.stream.sinks.files import source_folder

    base = source_folder(a[:-len(".mp4")], set())
    assert names == {a: base, b: base + "-2", "rtsp://192.168.1.10": "rtsp_192.168.1.10",
                     "rtsp://192.168.1.11": "rtsp_192.168.1.11", a + "#2": base + "_2"}
    assert per_source_names(["rtsp://192.168.1.11", "rtsp://192.168.1.10"])["rtsp://192.168.1.10"] == "rtsp_192.168.1.10"


def test_per_source_records_count_the_frames_the_mux_dropped():
    """A review: a camera's frames the shared buffer dropped while a file was read counted in the total only
    (the per-source records said 0)."""
    import time

    live, file_ = "synthetic://?live=1&fps=100&frames=300&size=32x24", "synthetic://?frames=40&size=32x24"
    m = MultiSource([live, file_], buffer_size=4)
    for _ in m:
        time.sleep(0.03)
    recs = {r["source"]: r for r in m.source_records()}
    by = {k: r["dropped"] for k, r in recs.items()}
    assert by[file_] == 0 and by[live] > 0 and sum(by.values()) == m.dropped  # a file loses no frame
    assert recs[file_]["frames"] == 40 and 0 < recs[live]["frames"] == 300 - by[live]  # the frames each handed on


def test_another_run_writing_one_sources_file_is_refused_before_any_frame(bundle, tmp_path, capsys):
    """A multi-source sink's per-source files were claimed at each source's first frame: a second run writing one of
    them was found mid-run, the other sources' files already begun. Each is probed when the sink opens."""
    import fcntl
    import os

    fast, slow = "synthetic://?seed=1&size=64x48&frames=9&fps=30", "synthetic://?seed=2&size=80x60&frames=5&fps=10"
    out = tmp_path / "out.mp4"
    held = tmp_path / "out.synthetic_seed_2_size_80x60_frames_5_fps_10.part.mp4"
    fd = os.open(held, os.O_RDWR | os.O_CREAT)  # another run writing the second source's file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert main(["run", "--bundle", str(bundle.root), "--backend", "onnxruntime", "--threads", "1",
                     "--source", fast, "--source", slow, "--sink", str(out)]) == 2
        assert f"{held}: another run is writing it now" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == [held.name]  # no other file begun


def test_max_batch_on_a_model_with_a_fixed_batch_is_said_and_runs_frame_by_frame(caplog):
    """An audit: every shipped bundle has a batch of 1, and --max-batch 2 ran frame by frame with nothing said, each
    frame waiting up to the batch timeout for a batch that could never form."""
    import logging

    import edgeseg

    p = edgeseg.load("shapes", backend="onnxruntime", precision="fp32")
    assert all(isinstance(s.shape[0], int) and s.shape[0] == 1 for s in p.runner.input_specs if s.shape) or \
        pytest.skip("this shapes bundle batches")
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        got = list(edgeseg.stream(["synthetic://?frames=6&size=64x48", "synthetic://?frames=6&size=64x48&seed=3"], p,
                                  max_batch=2, batch_timeout_ms=200))
    assert len(got) == 12 and "max batch 2 has no effect: the model's batch size is fixed at 1" in caplog.text


@pytest.mark.parametrize("camera_first", [True, False])
def test_a_camera_missing_at_start_joins_when_it_appears_while_the_others_run(tmp_path, camera_first):
    """Session 56: one camera of several missing at start (a USB camera not plugged in yet) stopped every camera. Now
    the others start, and the missing one's frames join the stream once its device appears (a real file standing in
    for the device node, made after the other source's 10th frame; a synthetic source standing in for its reader).
    The review: listed first, the camera gave up at once (the other readers were not started yet); a device node
    there before it opens (udev sets its permissions after) is tried again; its rate is the camera's once it joined."""
    from edgeseg.errors import StreamError
    from edgeseg.stream import CallbackSink, Pipeline
    from edgeseg.stream.sources.awaited import AwaitedCamera

    device = tmp_path / "video9"
    late = "synthetic://?seed=3&size=64x48&frames=6&fps=15"
    tries = []

    def make():
        tries.append(1)
        if len(tries) == 1:
            raise StreamError("cannot start source 'v4l2:///x/video9': Permission denied")
        return SyntheticSource(late, name="cam")

    camera = AwaitedCamera("v4l2:///x/video9", str(device), InputError("camera x does not exist", fix="plug it in"),
                           make, name="cam")
    other = SyntheticSource("synthetic://?seed=1&size=64x48&frames=60&fps=30&live=1", name="other")
    got: list[tuple[str, int]] = []

    def seen(frame, result):
        got.append((frame.source_id, frame.index))
        if len(got) == 10:
            device.write_bytes(b"")

    assert camera.fps is None
    mux = MultiSource([camera, other] if camera_first else [other, camera])
    stats = Pipeline([mux, CallbackSink(seen)], handle_signals=False).run()
    assert stats.fatal_error is None and len(tries) == 2
    assert [i for s, i in got if s == "cam"] == list(range(6))  # every frame of the camera that came late
    assert [s for s, _ in got[:10]] == ["other"] * 10  # the other source ran meanwhile
    assert camera.fps == 15.0 and camera.dropped == 0


def test_an_awaited_camera_stopped_while_it_opens_closes_what_it_opened(tmp_path):
    """The review: stop() while the camera's device was being opened was lost (the reader went on for seconds)."""
    import threading

    from edgeseg.stream.sources.awaited import AwaitedCamera

    device = tmp_path / "video9"
    device.write_bytes(b"")
    opened, closed = threading.Event(), []

    class Slow(SyntheticSource):
        def open(self):
            opened.set()
            time.sleep(0.5)
            return super().open()

        def close(self):
            closed.append(1)
            super().close()

    camera = AwaitedCamera("v4l2:///x/video9", str(device), InputError("camera x does not exist"),
                           lambda: Slow("synthetic://?seed=3&size=64x48&fps=30&live=1", name="cam"), name="cam")
    frames = []
    reader = threading.Thread(target=lambda: frames.extend(camera), daemon=True)
    reader.start()
    assert opened.wait(5)
    camera.stop()
    reader.join(3)
    assert not reader.is_alive() and frames == [] and closed


def test_a_camera_that_joined_late_counts_among_the_others():
    """The review: two cameras missing and a file; once one camera had joined, the other still gave up with the file
    ("until no other source was left") although a camera ran."""
    from types import SimpleNamespace

    from edgeseg.stream.sources.awaited import AwaitedCamera

    err = InputError("camera x does not exist")
    a, b = (AwaitedCamera(f"v4l2:///x/{n}", f"/nonexistent/{n}", err, lambda: None, name=n) for n in "ab")
    mux = MultiSource([a, b, SyntheticSource("synthetic://?frames=1", name="file")])
    alive = SimpleNamespace(ident=1, is_alive=lambda: True)
    dead = SimpleNamespace(ident=1, is_alive=lambda: False)
    not_started = SimpleNamespace(ident=None, is_alive=lambda: False)
    mux._threads = [alive, alive, not_started]
    assert a.others_running()  # a reader not started yet counts as running
    mux._threads = [alive, alive, dead]
    assert not a.others_running()  # b still waits: not counted
    b._source = SyntheticSource("synthetic://?frames=1")  # b joined
    assert a.others_running() and not b.others_running()


def test_a_camera_that_never_comes_gives_up_with_the_others_or_its_timeout(bundle, tmp_path, capsys):
    """The missing camera's wait ends when no other source is left (a file's end) or after its ?timeout=S, named with the
    cameras here; every frame of the others is kept. Alone (or with only missing cameras) it is refused at once, as
    before: a typo must not wait for ever."""
    from edgeseg.stream.api import open_sources

    missing = "/dev/video97"
    jsonl, stats = tmp_path / "r.jsonl", tmp_path / "s.json"
    assert main(["run", "--bundle", str(bundle.root), "--backend", "onnxruntime", "--threads", "1", "--source", A,
                 "--source", missing, "--json-out", str(jsonl), "--stats-json", str(stats)]) != 0
    err = capsys.readouterr().err
    assert f"camera {missing} does not exist (waited" in err and "until no other source was left" in err
    assert len(jsonl.read_text().splitlines()) == 11
    by = {r["source"]: r for r in json.loads(stats.read_text())["sources"]}
    assert by[A]["processed"] == 11 and by[missing]["frames"] == 0 and "does not exist" in by[missing]["failed"]
    # a timeout: it gives up while the other (a live, endless source) goes on
    from edgeseg.stream import CallbackSink, Pipeline

    src = open_sources(StreamOptions(source=["synthetic://?seed=1&size=64x48&fps=30&live=1",
                                             f"v4l2://{missing}?timeout=0.5"]))
    got: list[str] = []
    pipe = Pipeline([src, CallbackSink(lambda f, r: got.append(f.source_id))], max_frames=40, handle_signals=False)
    pipe.run(raise_on_error=False)
    rec = {r["source"]: r for r in src.source_records()}[f"v4l2://{missing}?timeout=0.5"]
    assert "timeout=0.5" in rec["failed"] and len(got) == 40  # it gave up at 0.5 s; the other ran on (40 frames: 1.3 s)
    for alone in ([missing], [missing, "/dev/video98"]):
        with pytest.raises(InputError, match=f"camera {missing} does not exist"):
            open_sources(StreamOptions(source=alone))


def test_a_camera_unplugged_during_the_run_waits_for_its_device_and_goes_on_numbered_and_timed(tmp_path):
    """Session 56: a camera of several that was unplugged was lost for the rest of the run. Now it waits for its device
    while the others go on; back, its frames continue its index and its time (the outage kept), the outage counts as
    a reconnection and its first frame is marked a discontinuity. A failure with the device still there is a failure."""
    import threading

    from edgeseg.errors import StreamError
    from edgeseg.stream import CallbackSink, Pipeline
    from edgeseg.stream.base import DISCONTINUITY, Source
    from edgeseg.stream.sources.awaited import AwaitedCamera
    from edgeseg.structures.frame import Frame

    device = tmp_path / "video9"
    device.write_bytes(b"")
    image = np.zeros((48, 64, 3), np.uint8)

    class Camera(Source):  # 5 frames at 30 fps from its own clock's 0, then the cable pulled (or a failure)
        live = True

        def __init__(self, unplug=True):
            super().__init__()
            self.uri, self.unplug = "v4l2:///x/video9", unplug

        def __iter__(self):
            for i in range(5):
                time.sleep(1 / 30)
                yield Frame(image, int(i * 1e9 / 30), i, "cam")
            if self.unplug:
                device.unlink()
                threading.Timer(0.6, device.write_bytes, (b"",)).start()  # plugged back 0.6 s later
            raise StreamError("camera v4l2:///x/video9: Could not read from resource")

    made = []

    def make():
        made.append(Camera(unplug=len(made) == 0))
        return made[-1]

    camera = AwaitedCamera("v4l2:///x/video9", str(device), InputError("camera x does not exist"), make, name="cam",
                           source=make())
    other = SyntheticSource("synthetic://?seed=1&size=64x48&frames=60&fps=30&live=1", name="other")
    got = []
    pipe = Pipeline([MultiSource([camera, other]), CallbackSink(lambda f, r: got.append(f))], handle_signals=False)
    stats = pipe.run(raise_on_error=False)
    mine = [f for f in got if f.source_id == "cam"]
    assert [f.index for f in mine] == list(range(10)) and len(made) == 2  # 5, unplugged, 5, then a failure
    steps = np.diff([f.pts_ns for f in mine]) / 1e9
    assert (steps > 0).all() and 0.6 <= steps[4] < 1.5 and steps[4] == pytest.approx(camera.reconnect_gaps_s[0], abs=0.05)
    assert [i for i, f in enumerate(mine) if f.meta.get(DISCONTINUITY)] == [0, 5]
    assert len(camera.reconnect_gaps_s) == 1 and "Could not read from resource" in stats.fatal_error
    assert len([f for f in got if f.source_id == "other"]) > 20  # the other camera went on meanwhile


@pytest.mark.parametrize("how", ["error, then the node goes", "the stream ends (OpenCV's reader)"])
def test_an_unplugged_camera_is_told_from_a_failure_by_its_node_going_within_a_grace(tmp_path, how):
    """The second review: the node was looked at once, at the error; a USB disconnect fails the stream before the
    kernel removes the node (a busy machine: a plain failure, the camera lost), and OpenCV's reader ends a camera's
    stream without an error (no wait at all). The first frame after, with no time of its own, kept the time from going
    back only by luck: time now waits for a frame with one. And the rejoined frame carries the discontinuity itself."""
    import threading

    from edgeseg.errors import StreamError
    from edgeseg.stream.base import DISCONTINUITY, Source
    from edgeseg.stream.sources.awaited import AwaitedCamera
    from edgeseg.structures.frame import Frame

    device = tmp_path / "video9"
    device.write_bytes(b"")
    image = np.zeros((8, 8, 3), np.uint8)

    class Camera(Source):
        live = True

        def __init__(self, first):
            super().__init__()
            self.first = first

        def __iter__(self):
            for i in range(3):
                yield Frame(image, -1 if not self.first and i == 0 else int(i * 1e9 / 30), i, "cam")
            if self.first:
                threading.Timer(0.1, device.unlink).start()  # the node goes 100 ms after the stream fails or ends
                threading.Timer(0.5, device.write_bytes, (b"",)).start()  # and is back
                if how.startswith("error"):
                    raise StreamError("Could not read from resource")

    made = []
    camera = AwaitedCamera("v4l2:///x/video9", str(device), InputError("camera x does not exist"),
                           lambda: made.append(Camera(first=not made)) or made[-1], name="cam", timeout_s=3)
    frames = []
    for f in camera:
        frames.append(f)
        if len(frames) == 6:
            camera.stop()
    assert [f.index for f in frames] == list(range(6)) and len(made) == 2
    assert [f.pts_ns for f in frames][3] == -1 and [bool(f.meta.get(DISCONTINUITY)) for f in frames] == [
        False, False, False, True, False, False]
    timed = [f.pts_ns for f in frames if f.pts_ns >= 0]
    assert all(b > a for a, b in zip(timed, timed[1:])) and timed[3] - timed[2] >= 0.4e9  # the outage kept


def test_a_timeout_given_waits_that_long_whatever_the_others_and_the_python_mux_waits_for_cameras_too(tmp_path):
    """The second review: with ?timeout=S every camera still gave up at once when no other source was left (a hub
    glitch unplugging all of them); and MultiSource([...]) built by an application did not wait for cameras."""
    from edgeseg.stream.sources.awaited import AwaitedCamera

    device = tmp_path / "video9"
    camera = AwaitedCamera("v4l2:///x/video9?timeout=0.5", str(device), InputError("camera x does not exist"),
                           lambda: SyntheticSource("synthetic://?frames=2"), name="cam", timeout_s=0.5)
    camera.others_running = lambda: False
    t0 = time.monotonic()
    with pytest.raises(Exception, match="timeout=0.5"):
        list(camera)
    assert time.monotonic() - t0 >= 0.5
    mux = MultiSource(["/dev/video97", "synthetic://?frames=2"])
    assert isinstance(mux.sources[0], AwaitedCamera) and mux.sources[0].waiting
    with pytest.raises(InputError, match="camera /dev/video97 does not exist"):
        MultiSource(["/dev/video97", "/dev/video98"])


def test_a_multi_camera_audit_s_findings(bundle, tmp_path, monkeypatch):
    """Session 56's black-box audit of several cameras: (1) ``stats_json`` with a Source object (not a URI) ended the
    run in "not JSON serialisable" and wrote nothing; (2) ``/dev/video7?timeout=2`` kept its options in the device's
    path (never found; the timeout ignored), and ``/dev/v4l/by-id/...`` (a rig's stable names) was a file; (3) two
    sources of one URI were one source in the stats, the JSON lines and the MP4s."""
    import logging

    import edgeseg
    from edgeseg.stream import open_source, parse_source
    from edgeseg.stream.sources import gst_source

    stats = tmp_path / "s.json"
    for source in (open_source(A), [open_source(A), B]):
        list(edgeseg.stream(source, str(bundle.root), backend="onnxruntime", threads=1, stats_json=str(stats)))
        assert json.loads(stats.read_text())["source"] == ([A, B] if isinstance(source, list) else A)
    spec = parse_source("/dev/video7?timeout=2&width=640")
    assert (spec.scheme, spec.target, spec.options) == ("v4l2", "/dev/video7", {"timeout": "2", "width": "640"})
    assert parse_source("/dev/v4l/by-id/usb-Cam_123-video-index0").scheme == "v4l2"
    assert [s.source_id for s in MultiSource([A, A, B]).sources] == [A, A + "#2", B]
    twins = MultiSource([SyntheticSource(A), SyntheticSource(A)])
    assert [s.source_id for s in twins.sources] == [A, A + "#2"]
    assert {f.source_id for f in twins} == {A, A + "#2"}
    # (4) an RTSP camera that stays away: its attempts said three times, then every 30 s (was a line a second)
    src = gst_source.GstSource("test://ball")
    levels = [src._attempt_level(100.0) for _ in range(6)]
    assert levels == [logging.WARNING] * 3 + [logging.DEBUG] * 3
    monkeypatch.setattr(gst_source, "SAID_EVERY_S", 0.0)
    assert src._attempt_level(100.0) == logging.WARNING and src._attempt_level(200.0) == logging.WARNING  # a new outage


def test_a_camera_away_when_the_run_stops_is_an_outage_at_the_stop(tmp_path):
    """Session 57: a camera unplugged and not back when the run stopped left no trace in the stats (its outage had
    not ended, so it was no reconnection); now the stats and its source record carry ``outages_at_stop_s``."""
    from edgeseg.errors import StreamError
    from edgeseg.stream import CallbackSink, Pipeline
    from edgeseg.stream.base import Source
    from edgeseg.stream.sources.awaited import AwaitedCamera
    from edgeseg.structures.frame import Frame

    device = tmp_path / "video9"
    device.write_bytes(b"")
    image = np.zeros((48, 64, 3), np.uint8)
    last: list[float] = []

    class Camera(Source):  # 5 frames, then unplugged for good
        live = True

        def __iter__(self):
            for i in range(5):
                time.sleep(1 / 30)
                last[:] = [time.perf_counter()]
                yield Frame(image, int(i * 1e9 / 30), i, "cam")
            device.unlink()
            raise StreamError("Could not read from resource")

    camera = AwaitedCamera("v4l2:///x/video9", str(device), InputError("camera x does not exist"), Camera,
                           name="cam", source=Camera())
    other = SyntheticSource("synthetic://?seed=1&size=64x48&frames=300&fps=30&live=1", name="other")
    mux = MultiSource([camera, other])
    pipe = Pipeline([mux, CallbackSink(lambda f, r: None)], max_frames=45, handle_signals=False)
    stats = pipe.run(raise_on_error=False)
    away = time.perf_counter() - last[0]
    assert stats.reconnects == 0 and len(stats.outages_at_stop_s) == 1 and stats.fatal_error is None
    assert 0.5 < stats.outages_at_stop_s[0] <= away + 0.05  # its last frame to the stop (~1 s of the other's 40 frames)
    rec = {r["source"]: r for r in mux.source_records()}
    assert rec["cam"]["outages_at_stop_s"] and rec["other"]["outages_at_stop_s"] == []
