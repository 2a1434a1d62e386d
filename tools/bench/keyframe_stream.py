#!/usr/bin/env python
"""Keyframe acceleration, end to end: the whole stream (file decode -> keyframe stages -> [render ->
MP4] -> sinks) at each keyframe interval, against every frame running the bundle, same bundle, same
video, modes interleaved per round (the speed-ups are side by side, not across runs).

``tools/bench/keyframe.py`` times the keyframe step alone (model + flow + warps) and scores its
accuracy; this one measures what a user's stream gains once the work every frame costs anyway
(decoding the video, drawing, encoding, writing) is counted.

    python tools/bench/keyframe_stream.py --bundle road --intervals 1,4,6,8 --sinks none,mp4 --rounds 3 --json kf_stream.json
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
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def _run(predictor, video: str, interval: int, sink: str, tmp: Path) -> float:
    from edgeseg.stream import StreamOptions, build_pipeline

    opts = StreamOptions(source=video, keyframe_interval=interval, keyframe_motion=0, log_interval_s=0,
                         sink=str(tmp / "out.mp4") if sink == "mp4" else None,
                         json_out=str(tmp / "out.jsonl") if sink == "jsonl" else None)
    stats = build_pipeline(opts, predictor=predictor, handle_signals=False).run()
    if stats.errors:
        raise SystemExit(f"interval {interval}, sink {sink}: {stats.errors} frame errors")
    return stats.fps


def main(argv=None) -> int:
    import edgeseg

    args = parse_args(argv)
    intervals = [int(v) for v in args.intervals.split(",")]
    sinks = args.sinks.split(",")
    if 1 not in intervals:
        intervals.insert(0, 1)
    predictor = edgeseg.load(args.bundle)
    fps: dict[tuple[int, str], list[float]] = {(n, s): [] for n in intervals for s in sinks}
    with tempfile.TemporaryDirectory(prefix="edgeseg-kf-") as tmp:
        for r in range(args.rounds):
            for s in sinks:
                for n in intervals:
                    fps[(n, s)].append(_run(predictor, args.video, n, s, Path(tmp)))
                    print(f"round {r + 1}: interval {n}, sink {s}: {fps[(n, s)][-1]:.1f} fps", file=sys.stderr)
    rows = []
    for s in sinks:
        for n in intervals:
            ratios = [a / b for a, b in zip(fps[(n, s)], fps[(1, s)])]  # side by side, round by round
            rows.append({"sink": s, "interval": n, "fps (median)": round(statistics.median(fps[(n, s)]), 1),
                         "speed-up (median of rounds)": round(statistics.median(ratios), 2),
                         "speed-up range": f"{min(ratios):.2f}-{max(ratios):.2f}"})
    print_table(rows)
    if args.json:
        write_json(args.json, {"bundle": args.bundle, "video": args.video, "rounds": args.rounds,
                               "choice": str(getattr(predictor, "choice", "")), "machine": platform.machine(),
                               "processor": platform.processor(), "rows": rows,
                               "fps": {f"{n}:{s}": v for (n, s), v in fps.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
