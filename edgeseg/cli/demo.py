"""``edgeseg demo``: the shipped INT8 ``shapes`` model on a generated stream, through the real streaming
pipeline, into an annotated MP4, with fps, latency and accuracy against exact ground truth."""
from __future__ import annotations

import argparse

from ._common import add_json_option, add_runtime_options, check_output, write_json

NAME = "demo"
HELP = ("run the main job on an embedded default: INT8 'shapes' model on a generated stream -> annotated MP4, "
        "fps, latency p50/p95/p99, mIoU against exact ground truth")
EXAMPLES = (
    "edgeseg demo                                            # 150 generated frames -> out/demo/demo.mp4",
    "edgeseg demo --frames 500 --size 640x480 --realtime     # paced at 25 fps, like a camera",
    "edgeseg demo --source ../shared/data/video/dashcam_960x540.mp4 --bundle road",
    "edgeseg demo --source v4l2:///dev/video0 --bundle road --frames 300",
    "edgeseg demo --precision fp32 --json demo.json",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default="shapes", help="a shipped name (shapes, road) or a bundle path (default shapes)")
    p.add_argument("--source", default=None, metavar="URI",
                   help="a video file, v4l2:///dev/videoN, rtsp://..., synthetic://?seed=&size=&fps=&frames=, ... "
                        "(default: a generated scene stream with exact ground truth)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to run (default 150 generated frames; the whole --source)")
    p.add_argument("--size", default=None, metavar="WxH", help="size of the generated frames (default 480x360)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the generated stream (default 25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scenes (default 0)")
    p.add_argument("--out", default="out/demo", metavar="DIR", help="where demo.mp4 and stats.json go (default out/demo)")
    p.add_argument("--realtime", action="store_true",
                   help="pace the stream at its frame rate, like a camera (late frames are dropped and counted)")
    p.add_argument("--source-backend", choices=["auto", "gstreamer", "opencv"], default="auto",
                   help="how to read --source (default: GStreamer when installed)")
    add_runtime_options(p)
    for action in p._actions:
        if action.dest == "precision":
            action.default = "int8"
            action.help = "model precision (default int8; fp32 when the bundle has no INT8 model)"
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, format_report, run_demo
    from ..structures import ImageShape

    check_output(args.out, "--out", "folder")  # before the model loads (an unwritable working folder: a container's)
    if args.json is not None:
        check_output(args.json, "--json")
    opts = DemoOptions(
        bundle=args.bundle, precision=args.precision, source=args.source, frames=args.frames,
        size=ImageShape.parse(args.size) if args.size else None, fps=args.fps, seed=args.seed, out=args.out,
        realtime=args.realtime, backend=args.backend, target=args.target, threads=args.threads, device=args.device,
        source_backend=args.source_backend,
    )
    result = run_demo(opts)
    print(format_report(result))
    write_json(args.json, result.to_dict())
    return 0
