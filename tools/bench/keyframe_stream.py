#!/usr/bin/env python
"""Keyframe acceleration, end to end: the whole stream (file decode -> keyframe stages -> [render ->
MP4] -> sinks) at each keyframe interval, against every frame running the bundle, same bundle, same
video, modes interleaved per round (the speed-ups are side by side, not across runs).

``tools/bench/keyframe.py`` times the keyframe step alone (model + flow + warps) and scores its
accuracy; this one measures what a user's stream gains once the work every frame costs anyway
(decoding the video, drawing, encoding, writing) is counted. Besides frames per second (wall time, which
on a shared or virtual machine varies by 10 % from run to run), each run's CPU time per frame (all of the
process's threads): with every core busy, throughput is the cores over it, and it varies far less.

    python tools/bench/keyframe_stream.py --bundle road --intervals 1,4,6,8 --sinks none,mp4 --rounds 3 --json kf_stream.json
    python tools/bench/keyframe_stream.py --intervals 1,5 --sinks none --cv-threads auto,0 --rounds 9
    python tools/bench/keyframe_stream.py --repeat 4 --intervals 1,5 --sinks none --decoder-threads 1,0 --rounds 5

``--repeat K``: the video played K times back to back, re-encoded once into one H.264 file (x264enc, 2 Mbit/s,
made before timing): longer runs, so start-up and scheduling hiccups weigh less in each run's fps.
``--cv-threads``: OpenCV's thread setting while the stream runs (``StreamOptions.cv_threads``: ``auto`` the
stream's default, 0 OpenCV's own, N threads), each setting interleaved with the others; speed-ups are
against interval 1 at the same setting. ``--decoder-threads``: the source's H.264 decoding threads
(``StreamOptions.decoder_threads``: ``auto`` the stream's default, 0 the decoder's own, N threads), the same way.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.paths import data_root  # noqa: E402

_DATA = data_root()
VIDEO = (_DATA / "video" / "dashcam_960x540.mp4") if _DATA is not None else Path("dashcam_960x540.mp4")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="road", help="bundle path or shipped name (default: road)")
    p.add_argument("--video", default=str(VIDEO), help="input video (default: the shared dash-cam clip)")
    p.add_argument("--intervals", default="1,4,6,8", help="keyframe intervals, comma-separated (1: every frame)")
    p.add_argument("--sinks", default="none,mp4", help="comma-separated: none (results only), mp4 (overlay + H.264), jsonl")
    p.add_argument("--cv-threads", default="auto", help="comma-separated OpenCV thread settings: auto (the stream's "
                   "default), 0 (OpenCV's own), N (default auto)")
    p.add_argument("--decoder-threads", default="auto", help="comma-separated decoder thread settings: auto (the "
                   "stream's default), 0 (the decoder's own), N (default auto)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (default 0: automatic, as edgeseg run)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--repeat", type=int, default=1, help="play the video K times back to back in one file (default 1)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def _cpu_s() -> float:
    """CPU seconds this process used so far, all threads (GStreamer's decoding and encoding included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(predictor, video: str, interval: int, sink: str, tmp: Path, cv: int | None = None,
         dec: int | None = None) -> tuple[float, float]:
    """``(fps, CPU ms per frame)`` of one whole stream."""
    from edgeseg.stream import StreamOptions, build_pipeline

    opts = StreamOptions(source=video, keyframe_interval=interval, keyframe_motion=0, log_interval_s=0, cv_threads=cv,
                         decoder_threads=dec,
                         sink=str(tmp / "out.mp4") if sink == "mp4" else None,
                         json_out=str(tmp / "out.jsonl") if sink == "jsonl" else None)
    pipe = build_pipeline(opts, predictor=predictor, handle_signals=False)
    cpu = _cpu_s()
    stats = pipe.run()
    cpu = _cpu_s() - cpu
    if stats.errors:
        raise SystemExit(f"interval {interval}, sink {sink}: {stats.errors} frame errors")
    return stats.fps, 1000 * cpu / max(1, stats.processed)


def repeated(video: str, times: int, tmp: Path) -> str:
    """``video`` ``times`` times back to back, re-encoded into one H.264 MP4 in ``tmp`` (GStreamer's concat)."""
    import subprocess

    if not Path(video).is_file():
        raise SystemExit(f"video {video} does not exist: pass --video PATH")
    out = tmp / f"repeated_{times}.mp4"
    args = ["gst-launch-1.0", "-q", "concat", "name=c", "!", "videoconvert", "!", "video/x-raw,format=I420", "!",
            "x264enc", "bitrate=2000", "key-int-max=250", "!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={out}"]
    for _ in range(times):  # one argument per token: paths with spaces need no quoting
        args += ["filesrc", f"location={Path(video).resolve()}", "!", "decodebin", "!", "c."]
    for _ in range(3):  # concat + decodebin now and then fails to link a copy in time: "Buffer has no PTS"
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode == 0:
            return str(out)
    raise SystemExit(f"could not re-encode {video} {times} times with gst-launch-1.0: {done.stdout[-500:]}{done.stderr[-500:]}")


def main(argv=None) -> int:
    args = parse_args(argv)
    intervals = [int(v) for v in args.intervals.split(",")]
    sinks = args.sinks.split(",")
    cvs = args.cv_threads.split(",")
    decs = args.decoder_threads.split(",")
    settings = [(c, d) for c in cvs for d in decs]
    if 1 not in intervals:
        intervals.insert(0, 1)
    from edgeseg.stream import StreamOptions
    from edgeseg.stream.api import load_predictor

    # loaded as `edgeseg run` loads it (automatic inference threads: one fewer than the cores on few cores)
    predictor = load_predictor(args.bundle, StreamOptions(threads=args.threads))
    fps: dict[tuple[int, str, tuple[str, str]], list[float]] = {(n, s, cd): [] for n in intervals for s in sinks for cd in settings}
    cpu: dict[tuple[int, str, tuple[str, str]], list[float]] = {k: [] for k in fps}
    with tempfile.TemporaryDirectory(prefix="edgeseg-kf-") as tmp:
        video = repeated(args.video, args.repeat, Path(tmp)) if args.repeat > 1 else args.video
        for r in range(args.rounds):
            for s in sinks:
                for n in intervals:
                    for c, d in settings:
                        f, ms = _run(predictor, video, n, s, Path(tmp), None if c == "auto" else int(c),
                                     None if d == "auto" else int(d))
                        fps[(n, s, (c, d))].append(f)
                        cpu[(n, s, (c, d))].append(ms)
                        print(f"round {r + 1}: interval {n}, sink {s}, cv threads {c}, decoder threads {d}: {f:.1f} fps, "
                              f"{ms:.1f} CPU ms/frame", file=sys.stderr)
    rows = []
    for s in sinks:
        for c, d in settings:
            for n in intervals:
                k = (n, s, (c, d))
                ratios = [a / b for a, b in zip(fps[k], fps[(1, s, (c, d))])]  # side by side, round by round
                cpu_ratios = [b / a for a, b in zip(cpu[k], cpu[(1, s, (c, d))])]
                rows.append({"sink": s, "cv threads": c, "decoder threads": d, "interval": n,
                             "fps (median)": round(statistics.median(fps[k]), 1),
                             "speed-up (median of rounds)": round(statistics.median(ratios), 2),
                             "speed-up range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                             "CPU ms/frame (median)": round(statistics.median(cpu[k]), 1),
                             "CPU speed-up (median)": round(statistics.median(cpu_ratios), 2)})
    print_table(rows)
    if args.json:
        write_json(args.json, {"bundle": args.bundle, "video": args.video, "repeat": args.repeat, "rounds": args.rounds,
                               "inference_threads": getattr(predictor.runner, "threads", None),
                               "choice": str(getattr(predictor, "choice", "")), "machine": platform.machine(),
                               "processor": platform.processor(), "rows": rows,
                               "fps": {f"{n}:{s}:{c}:{d}": v for (n, s, (c, d)), v in fps.items()},
                               "cpu_ms_per_frame": {f"{n}:{s}:{c}:{d}": v for (n, s, (c, d)), v in cpu.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
