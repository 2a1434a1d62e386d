"""``edgeseg.stream(...)`` works whether or not ``edgeseg.stream`` (the package) was imported first."""
import subprocess
import sys

import pytest

CODE = """
import numpy as np
{pre}
import edgeseg
from handmade_bundles import conv_bundle
p = __import__('pathlib').Path({tmp!r}); p.mkdir(parents=True); b = conv_bundle(p)
n = sum(1 for _ in edgeseg.stream('synthetic://?seed=0&size=64x48&frames=3', b))
print(n)
"""


def _run(pre, tmp_path):
    code = CODE.format(pre=pre, tmp=str(tmp_path))
    tests = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_stream_function_before_and_after_package_import(tmp_path):
    assert _run("", tmp_path / "a") == 3
    assert _run("import edgeseg.stream.pipeline", tmp_path / "b") == 3


HELD = """
import edgeseg
p = edgeseg.load("shapes", backend="onnxruntime", precision="fp32", threads=1)
g = edgeseg.stream("synthetic://?frames=200&size=96x72", p, sink={mp4!r}, max_frames=100, stats_json={stats!r})
for f, r in g:
    break
print("loop left")  # the program ends with the stream still referenced: exit closes it
"""


def test_a_program_that_exits_with_a_stream_still_open_finalizes_it(tmp_path):
    """before: `terminate called without an active exception` (exit 134) in 5 of 6 runs: the interpreter's exit
    stopped the stream's daemon threads inside the runtimes, and the MP4 stayed an empty .part file."""
    import json

    import cv2

    mp4, stats = tmp_path / "held.mp4", tmp_path / "stats.json"
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", HELD.format(mp4=str(mp4), stats=str(stats))],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0 and "loop left" in out.stdout, out.stderr[-2000:]
        assert mp4.is_file() and not list(tmp_path.glob("*.part.*"))
        cap = cv2.VideoCapture(str(mp4))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        record = json.loads(stats.read_text())
        assert 1 <= n == record["frames"] < 100 and record["bundle"] == "shapes"  # stopped early, every frame kept


def test_a_stream_is_a_context_manager_with_its_stats(tmp_path):
    """`with edgeseg.stream(...) as s:` closes it; `s.stats` holds the run's figures (before: a bare generator had
    neither, and `stats_json=` was accepted and never written)."""
    import json

    import edgeseg

    with edgeseg.stream("synthetic://?frames=5&size=64x48", "shapes", backend="onnxruntime", precision="fp32",
                        stats_json=str(tmp_path / "s.json")) as s:
        assert s.stats is None
        got = [frame.index for frame, _ in s]
    assert got == [0, 1, 2, 3, 4] and s.stats.frames == 5 and s.stats.errors == 0
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 5
    with edgeseg.stream("synthetic://?frames=50&size=64x48", "shapes", backend="onnxruntime", precision="fp32") as s:
        next(s)
    assert s.stats is not None and s.stats.frames < 50  # left the block after one frame: stopped there


WORKER = """
import threading, time
import edgeseg
p = edgeseg.load("shapes", backend="onnxruntime", precision="fp32", threads=1)
s = edgeseg.stream("synthetic://?frames=100000&size=96x72&fps=20", p, realtime=True, sink={mp4!r}, stats_json={stats!r})
def consume():
    for f, r in s:
        pass
threading.Thread(target=consume, daemon=True).start()
time.sleep(1.0)
print("main ends")  # the consumer (a daemon thread) is still iterating
"""

CYCLE = """
import gc, threading, time
import edgeseg
from edgeseg.stream.sinks import files
collect_now = threading.Event()
write = files.CallbackSink.write
def collecting_write(self, frame, result, packet=None):  # the cyclic GC runs in the pipeline's sink thread
    if collect_now.is_set() and threading.current_thread().name == "edgeseg-sinks":
        collect_now.clear()
        gc.collect()
    return write(self, frame, result, packet)
files.CallbackSink.write = collecting_write
p = edgeseg.load("shapes", backend="onnxruntime", precision="fp32", threads=1)
class App:
    def __init__(self):
        self.s = edgeseg.stream("synthetic://?frames=100000&size=96x72", p, sink={mp4!r})
        self.me = self  # an ordinary cycle of an application's
gc.disable()
app = App()
next(app.s)
del app
collect_now.set()
deadline = time.time() + 20
while time.time() < deadline and any(t.name.startswith("edgeseg-") for t in threading.enumerate()):
    time.sleep(0.1)
print("left:", sorted(t.name for t in threading.enumerate() if t.name.startswith("edgeseg-")))
"""

DROPPED = """
import threading
import edgeseg
s = edgeseg.stream("synthetic://?frames=100000&size=96x72", "shapes", backend="onnxruntime", precision="fp32",
                   sink={mp4!r})
def worker():
    for i, _ in enumerate(s):
        if i == 10:
            break
t = threading.Thread(target=worker)
t.start()
t.join()
del s  # the last reference dropped in the main thread, not the one that iterated it; then the program ends
print("main ends")
"""

SIGNALLED = """
import os, signal, threading
import edgeseg
s = edgeseg.stream("synthetic://?frames=100000&size=64x48&fps=20", "shapes", backend="onnxruntime", precision="fp32",
                   realtime=True)
def on_term(*a):
    print("close:", s.close())  # in the thread that is inside next(): it must not wait on itself
signal.signal(signal.SIGTERM, on_term)
threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
n = sum(1 for _ in s)
print("loop ended", n >= 1, s.stats is not None)
"""


def test_a_stream_iterated_by_a_daemon_thread_is_finalized_at_exit(tmp_path):
    """before (review): close() from the exit hook did nothing while another thread was inside next(): the MP4 stayed
    a .part file and stats_json was never written."""
    import json

    mp4, stats = tmp_path / "w.mp4", tmp_path / "w.json"
    out = subprocess.run([sys.executable, "-c", WORKER.format(mp4=str(mp4), stats=str(stats))],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "main ends" in out.stdout, out.stderr[-2000:]
    assert mp4.is_file() and not list(tmp_path.glob("*.part.*")) and json.loads(stats.read_text())["frames"] >= 1


def test_close_from_another_thread_stops_the_stream_that_thread_iterates():
    import threading
    import time

    import edgeseg

    s = edgeseg.stream("synthetic://?frames=100000&size=64x48&fps=20", "shapes", backend="onnxruntime",
                       precision="fp32", realtime=True)
    got = []
    worker = threading.Thread(target=lambda: got.extend(f.index for f, _ in s), daemon=True)
    worker.start()
    time.sleep(1.0)
    assert s.close(timeout_s=30) is True  # before: returned at once, and frames kept coming
    worker.join(10)
    assert not worker.is_alive() and s.stats is not None and s.stats.frames == len(got) >= 1


def test_a_stream_in_an_applications_reference_cycle_is_finalized_not_deadlocked(tmp_path):
    """before (review): the cyclic GC finalized the generator in a pipeline thread, whose finally waited on the
    pipeline's own threads: the stream hung for good and the MP4 stayed a .part file."""
    mp4 = tmp_path / "c.mp4"
    out = subprocess.run([sys.executable, "-c", CYCLE.format(mp4=str(mp4))], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "left: []" in out.stdout, (out.stdout, out.stderr[-2000:])
    assert mp4.is_file() and not list(tmp_path.glob("*.part.*"))


def test_a_stream_dropped_by_another_thread_than_its_consumer_is_finalized_at_exit(tmp_path):
    """A second review: a stream iterated in a worker and dropped by the main thread just before exit was finished in
    a daemon thread the exit killed (abort, .part left)."""
    mp4 = tmp_path / "d.mp4"
    out = subprocess.run([sys.executable, "-c", DROPPED.format(mp4=str(mp4))], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "main ends" in out.stdout, out.stderr[-2000:]
    assert mp4.is_file() and not list(tmp_path.glob("*.part.*"))


def test_close_from_a_signal_handler_in_the_iterating_thread_stops_the_loop():
    """A second review: close() inside a signal handler of the thread blocked in next() waited on itself forever."""
    out = subprocess.run([sys.executable, "-c", SIGNALLED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "close: False" in out.stdout and "loop ended True True" in out.stdout, \
        (out.stdout, out.stderr[-2000:])


def test_close_while_the_pipeline_is_being_built_stops_it_before_a_frame(monkeypatch):
    """A second review: close() from another thread during the first next() (a slow model load) found nothing to stop
    and waited; the stream then ran on."""
    import threading
    import time

    import edgeseg
    from edgeseg.stream import api

    build = api.build_pipeline

    def slow_build(*a, **k):
        time.sleep(1.0)
        return build(*a, **k)

    monkeypatch.setattr(api, "build_pipeline", slow_build)
    s = edgeseg.stream("synthetic://?frames=100000&size=64x48", "shapes", backend="onnxruntime", precision="fp32")
    got = []
    worker = threading.Thread(target=lambda: got.extend(f.index for f, _ in s), daemon=True)
    worker.start()
    time.sleep(0.3)  # inside build_pipeline
    assert s.close(timeout_s=30) is True
    worker.join(10)
    assert not worker.is_alive() and len(got) <= 2 * api.StreamOptions(source="x").queue_size + 4


@pytest.mark.gst
def test_a_slow_loop_over_a_live_source_gets_fresh_results_and_sees_the_gaps():
    """An audit (a robot's 5 Hz control loop over a 25 fps camera): every result waited for the loop, every stage
    queue filled behind it, and the loop got frames 1.8-2.5 s old (4.7 s after 60 frames here), numbered without
    gaps. Now a live source's results never wait: the loop gets the freshest (the others counted in
    ``Stream.skipped``), and ``index`` counts the frames the source dropped, as ``pts_ns`` does."""
    import time

    import edgeseg

    p = edgeseg.load("edgeseg/zoo/shapes.edgeseg", backend="onnxruntime", precision="fp32", threads=1)
    seen = []
    with edgeseg.stream("test://ball?width=160&height=120&fps=50&live=1", p, max_frames=60) as s:
        for f, _ in s:
            seen.append((time.monotonic(), f.pts_ns, f.index))
            time.sleep(0.1)  # a loop at 10 Hz, a source at 50
    assert s.skipped > 0 and len(seen) + s.skipped == s.stats.frames == 60
    t0, p0, _ = seen[0]
    ages_ms = [(t - t0) * 1e3 - (pts - p0) / 1e6 for t, pts, _ in seen]
    assert max(ages_ms) < 1000, ages_ms  # before: growing by ~80 ms a frame seen (over 2 s by the tenth)
    steps = [(i2 - i1, round((q2 - q1) / 20e6)) for (_, q1, i1), (_, q2, i2) in zip(seen, seen[1:])]
    assert all(di == dp for di, dp in steps) and any(di > 1 for di, _ in steps), steps


@pytest.mark.gst
def test_a_slow_loop_over_a_file_beside_a_camera_gets_every_file_result_and_fresh_camera_ones(tmp_path):
    """Session 50's audit: a file beside a camera held the pipeline's sink thread while its results waited for the
    loop, so the camera's results queued behind the file's (8 against the file's 40, up to 6 s old). Now the file
    waits at its source: the loop takes the two in turn, every file frame and camera results as fresh as alone."""
    import time

    import numpy as np

    import edgeseg
    from stream_helpers import write_mp4

    clip = write_mp4(tmp_path / "clip.mp4", [np.full((120, 160, 3), 10 * i, np.uint8) for i in range(20)])
    p = edgeseg.load("edgeseg/zoo/shapes.edgeseg", backend="onnxruntime", precision="fp32", threads=1)
    seen = []
    with edgeseg.stream([str(clip), "test://ball?width=160&height=120&fps=25&live=1"], p) as s:
        for f, _ in s:
            seen.append((time.monotonic(), f.pts_ns, f.source_id, f.index))
            if sum(1 for x in seen if x[2] == str(clip)) == 20:
                break
            time.sleep(0.1)  # a 10 Hz loop
    files = [x for x in seen if x[2] == str(clip)]
    cams = [x for x in seen if x[2] != str(clip)]
    assert [x[3] for x in files] == list(range(20))  # none lost
    assert len(cams) >= 15, "".join("F" if x[2] == str(clip) else "C" for x in seen)  # in turn (before: 1 in 5)
    t0, p0 = cams[0][0], cams[0][1]
    ages_ms = [(t - t0) * 1e3 - (pts - p0) / 1e6 for t, pts, _, _ in cams]
    assert max(ages_ms) < 1000, ages_ms
