"""Where a panoptic frame's time goes: preprocessing, the network, and the panoptic decode (grouping
or pasting, mapping to the image, areas), per backend and precision, on real frames.

    python tools/bench/panoptic.py street-panoptic --images ../shared/data/cityscapes_panoptic/val \\
        --frames 40 --threads 2 --runs onnxruntime:fp32 onnxruntime:int8 openvino:fp32 --json p.json

The issue's budget: post-processing at most 15% of the frame time at 640x320 (peers' users report
host-side panoptic post-processing taking 4x the network time). Each configuration runs over the
same frames, one after another, after two warm-up frames; medians per step, and the decode share
of the frame's total. ``fps`` is 1000 / total ms of one frame (no overlap of steps: the stream
overlaps decode with the next frame's inference, so it is a floor).

Run from the repository root. A bundle that does not open stops the script before any frame is read
(exit 2, the reason on stderr). A configuration this machine cannot run (bf16 without BF16, say) is
a row with its error, printed under the table; if no configuration ran, the exit code is 1.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402


def _frames(folder: Path, n: int) -> list:
    from edgeseg.data.io import IMAGE_SUFFIXES, read_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
    if not files:
        raise SystemExit(f"no images in {folder}")
    return [read_image(p) for p in files]


def measure(bundle: str, backend: str, precision: str, frames: list, threads: int) -> dict:
    import edgeseg

    p = edgeseg.load(bundle, backend=backend, precision=precision, threads=threads)
    pre, net, dec = [], [], []
    with p:
        for i, img in enumerate(frames[:2] + frames):
            t0 = time.perf_counter()
            feed, meta = p.preprocess(img)
            t1 = time.perf_counter()
            out = p.runner.infer(feed)
            t2 = time.perf_counter()
            result = p.postprocess(out, meta)
            t3 = time.perf_counter()
            if i >= 2:
                pre.append(1e3 * (t1 - t0))
                net.append(1e3 * (t2 - t1))
                dec.append(1e3 * (t3 - t2))
    med = {k: statistics.median(v) for k, v in (("preprocess_ms", pre), ("network_ms", net), ("decode_ms", dec))}
    total = sum(med.values())
    return {"backend": backend, "precision": precision, "runner": repr(p), **med, "total_ms": total,
            "decode_share": med["decode_ms"] / total, "fps": 1e3 / total, "segments_last": len(result.segments)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--images", required=True, help="a folder of frames")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", nargs="+", default=["onnxruntime:fp32"], help="BACKEND:PRECISION pairs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import cv2

    from edgeseg.bundle import Bundle
    from edgeseg.errors import EdgesegError

    try:
        Bundle.open(args.bundle)
    except (EdgesegError, OSError, ValueError) as e:
        print(f"panoptic.py: bundle {args.bundle!r} does not open: {e}", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    frames = _frames(Path(args.images), args.frames)
    rows = []
    for run in args.runs:
        backend, _, precision = run.partition(":")
        try:
            rows.append(measure(args.bundle, backend, precision or "fp32", frames, args.threads))
        except Exception as e:  # noqa: BLE001 - a configuration this machine cannot run is reported, not fatal
            rows.append({"backend": backend, "precision": precision, "error": str(e).splitlines()[0]})
    table = [{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in r.items() if k != "runner"} for r in rows]
    print_table(table, ["backend", "precision", "preprocess_ms", "network_ms", "decode_ms", "total_ms", "decode_share", "fps"])
    for r in rows:
        if "error" in r:
            print(f"{r['backend']}:{r['precision'] or 'fp32'} not run: {r['error']}", file=sys.stderr)
    write_json(args.json, {"bundle": args.bundle, "frames": len(frames), "size": list(frames[0].shape[:2]),
                           "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                           "cpu_count": os.cpu_count(), "runs": rows})
    return 0 if any("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
