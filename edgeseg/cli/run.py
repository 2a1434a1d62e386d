"""``edgeseg run``: run a bundle on a stream (file, camera, RTSP, test pattern) into sinks."""
from __future__ import annotations

import argparse
import sys
import time

from ._common import add_result_filters, add_runtime_options, print_table, write_json

NAME = "run"
HELP = "run a bundle on a video stream: file, camera, RTSP or test pattern -> MP4, RTSP, screen, JSON, PNG"
EXAMPLES = (
    "edgeseg run --bundle road --source ../shared/data/video/dashcam_960x540.mp4 --sink out.mp4 --stats-json stats.json",
    "edgeseg run --bundle road --source rtsp://127.0.0.1:8554/cam --rtsp-port 8555      # RTSP in, RTSP out",
    "edgeseg run --bundle road --source v4l2:///dev/video0 --show                          # webcam to screen",
    "edgeseg run --bundle road --source 'test://ball?live=1' --max-frames 300 --json-out r.jsonl",
    "edgeseg run pipelines/file_semantic.toml --max-frames 50                             # a recipe (+ overrides)",
    "edgeseg run --bundle city.edgeseg --source rtsp://cam1/s --source rtsp://cam2/s --max-batch 2 --json-out r.jsonl"
    "  # a bundle exported with --dynamic-batch",
    "edgeseg run --remote http://10.0.0.5:8000/road --source rtsp://cam1/s --json-out r.jsonl   # inference on a cluster",
    "edgeseg run --source frames/ --prompt first_mask.png --sink tracks.mp4 --png-dir ids/   # propagate objects, no bundle",
    "edgeseg run --bundle road --source dashcam.mp4 --prompt car_mask.png --json-out r.jsonl --sink out.mp4  # both",
    "edgeseg run --bundle shapes-instance --source 'synthetic://?frames=100' --track --json-out ids.jsonl  # ids across frames",
    "edgeseg run --bundle road --source ../shared/data/video/dashcam_960x540.mp4 --keyframe-interval 3 --sink out.mp4  # faster",
    "edgeseg run --bundle road --source rtsp://camera/stream --sink rec.mp4 --segment-s 600 --keep-segments 144  # a day in 10-min files",
)

# CLI option -> StreamOptions field (None means: keep the recipe's value / the default)
_FIELDS = ("hud", "bundle", "source", "sink", "segment_s", "keep_segments", "json_segments", "png_segments", "rtsp_port", "rtsp_address", "show", "json_out", "png_dir", "stats_json",
           "realtime", "max_frames", "on_error", "backend", "precision", "target", "threads", "device",
           "queue_size", "fps", "encoder", "source_backend", "alpha", "max_batch", "batch_timeout_ms", "upsample",
           "score_threshold", "class_agnostic", "classes", "prompt", "track", "keyframe_interval", "keyframe_motion", "keyframe_local", "cv_threads",
           "decoder_threads", "log_interval_s")


class _Once(argparse.Action):
    """An output option given twice is an error: argparse keeps the last, and the first output was silently
    never written."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        if before is not None and before != values:
            parser.error(f"{option_string} given twice ({before} and {values}): a run writes one; "
                         "copy the file afterwards for a second")
        setattr(namespace, self.dest, values)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", help="a pipeline recipe (pipelines/NAME.toml); options below override it")
    p.add_argument("--bundle", help="bundle directory, .zip, or shipped name")
    p.add_argument("--prompt", metavar="MASK.png",
                   help="propagate the objects of this id mask (0 background, k object k, 1..254; 255 is DAVIS's void; "
                        "drawn on the first frame) "
                        "through the stream; alone, or next to a --bundle/--remote's results (JSON lines: 'objects', "
                        "overlay: both); after a reconnect or seek the objects restart from this prompt")
    p.add_argument("--track", action="store_true", default=None,
                   help="give detected objects ids that stay with them across frames (instance and panoptic bundles; "
                        "JSON lines: track_id / segment id); one tracker per source, reset on a reconnect or seek")
    p.add_argument("--keyframe-interval", type=int, default=None, metavar="N",
                   help="run the bundle on keyframes only, at most N frames apart, and carry its result to the frames "
                        "in between by optical flow (default 1: every frame); see --keyframe-motion")
    p.add_argument("--keyframe-motion", type=float, default=None, metavar="F",
                   help="with --keyframe-interval: a keyframe as soon as this fraction of the frame is not explained "
                        "by the flow (new content, a cut, fast motion; default 0.08, 0: interval only)")
    p.add_argument("--keyframe-local", type=float, default=None, metavar="F",
                   help="with --keyframe-interval: a keyframe as soon as this fraction of any window an eighth of the "
                        "frame across is not explained by the flow (a small object moving faster than the flow "
                        "follows; default 0.4, 0: off)")
    p.add_argument("--remote", metavar="URL", help="send frames to an `edgeseg serve` server instead of running a bundle "
                   "here: http://HOST:PORT[/BUNDLE] (a lost server: frames counted as errors, retried, nothing crashes)")
    p.add_argument("--source", action="append", default=None,
                   help="file path, a folder of images (or dir://PATH; sorted by name, pts from --fps), file://, "
                        "rtsp:// or http(s):// (?timeout=S: seconds to the first frame; default: rtsp keeps trying, http 10), "
                        "v4l2:///dev/videoN (or /dev/videoN, or N), csi://N, test://PATTERN?width=&height=&fps=&frames=&live=1, "
                        "synthetic://?seed=&size=&frames=, - (a video piped in), or a GStreamer launch string; repeat for "
                        "several sources (frames taken in turn, batched with --max-batch; a camera of several that is "
                        "missing at start or unplugged joins when it appears, ?timeout=S to give up)")
    p.add_argument("--source-backend", choices=["auto", "gstreamer", "opencv"], default=None, help="how to read the source")
    p.add_argument("--realtime", action="store_true", default=None, help="replay a file at its frame rate, like a camera")
    g = p.add_argument_group("sinks")
    g.add_argument("--sink", metavar="OUT.mp4", action=_Once,
                   help="write the annotated video (H.264; .mp4, .m4v, .mov, .mkv or .avi by the name's suffix)")
    g.add_argument("--segment-s", type=float, default=None, metavar="SECONDS",
                   help="with --sink (and/or --json-out with --json-segments, --png-dir with --png-segments): a new file every SECONDS of the source's "
                        "time (frames the model could not take still count: 600 is 10 minutes of camera), "
                        "OUT.00000.mp4, OUT.00001.mp4, ... (each finished, playable, while the next records; numbering "
                        "goes on after an earlier run's files)")
    g.add_argument("--keep-segments", type=int, default=None, metavar="N",
                   help="with --segment-s: keep only the newest N files this run wrote, removing its older ones (loop "
                        "recording for runs of days; an earlier run's files are never removed)")
    g.add_argument("--json-segments", action="store_true", default=None,
                   help="with --segment-s and --json-out: cut the JSON lines alike, RESULTS.00000.jsonl, ... (and "
                        "--keep-segments keeps the newest N of them too); without it the JSON lines stay one file")
    g.add_argument("--png-segments", action="store_true", default=None,
                   help="with --segment-s and --png-dir: one folder of PNGs a segment, DIR/00000/, DIR/00001/, ... "
                        "(DIR/NNNNN.part/ while written; --keep-segments keeps the newest N folders: a run of days "
                        "no longer fills the disk); without it every PNG goes into DIR")
    g.add_argument("--encoder", default=None,
                   help="H.264 encoder of --sink and --rtsp-port: x264enc (default; the RTSP sink's low-latency "
                        "x264enc-live), nvv4l2h264enc (Jetson), nvh264enc; one that cannot start here falls back to x264")
    g.add_argument("--rtsp-port", type=int, default=None, help="serve the annotated video at rtsp://ADDRESS:PORT/edgeseg")
    g.add_argument("--rtsp-address", default=None, help="address the RTSP server binds (default 127.0.0.1)")
    g.add_argument("--show", action="store_true", default=None, help="show the annotated video on screen")
    g.add_argument("--json-out", metavar="F.jsonl", action=_Once, help="one JSON line per frame: classes, scores, COCO RLE masks, pts; - for standard "
                   "output (| jq: the tables then go to standard error)")
    g.add_argument("--png-dir", metavar="DIR", action=_Once, help="one label PNG per frame")
    g.add_argument("--stats-json", metavar="F", action=_Once, help="write the run's Stats (fps, latency percentiles, drops, errors)")
    g.add_argument("--log-interval", dest="log_interval_s", metavar="S", type=float, default=None,
                   help="log the stream's figures (fps, drops, errors, reconnects) every S seconds (default 10; 0: "
                        "only at the end)")
    g.add_argument("--fps", type=float, default=None,
                   help="output frame rate: the video's frames at index / FPS (default: each frame at its source time, "
                        "so dropped frames and pauses keep real time; the source's rate, else 25, where it has none)")
    g.add_argument("--alpha", type=float, default=None, help="overlay opacity (default 0.5)")
    g.add_argument("--no-hud", dest="hud", action="store_false", default=None,
                   help="draw neither the fps/latency line nor the class legend on the video (a clean overlay)")
    g.add_argument("--upsample", choices=["logits", "labels"], default=None,
                   help="semantic decode: upsample logits then argmax (exact, default) or argmax then upsample labels (fast)")
    add_result_filters(g, defaults_unset=True)
    g2 = p.add_argument_group("pipeline")
    g2.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (of all sources together)")
    g2.add_argument("--on-error", choices=["skip", "stop"], default=None,
                    help="a frame a stage fails on: count it and go on (skip, default) or stop")
    g2.add_argument("--queue-size", type=int, default=None, help="frames buffered between stages (default 4)")
    g2.add_argument("--max-batch", type=int, default=None, metavar="N",
                    help="run up to N frames (from all sources) as one inference batch, like DeepStream's "
                         "nvstreammux batch-size (default 1; needs a dynamic batch axis, else frames run one by one)")
    g2.add_argument("--batch-timeout-ms", type=float, default=None, metavar="T",
                    help="wait at most T ms after a batch's first frame for the rest (default 10)")
    g2.add_argument("--cv-threads", type=int, default=None, metavar="N",
                    help="OpenCV threads while the stream runs (default: 1 on up to 4 cores, where every stage "
                         "already has a thread of its own; 0: OpenCV's own default)")
    g2.add_argument("--decoder-threads", type=int, default=None, metavar="N",
                    help="threads of the source's software video decoder (default: 1 on up to 4 cores, where "
                         "the other stages keep every core busy; 0: the decoder's own, one per core)")
    add_runtime_options(p)
    for action in p._actions:  # recipe values win over the runtime options' defaults unless given
        if action.dest in ("backend", "precision", "threads", "device"):
            action.default = None
        if action.dest == "threads":
            action.help = ("inference threads (default: automatic, one fewer than the cores on up to 4 cores, where "
                           "the stream's other stages keep the rest busy; the runtime's own default above)")


def _check_recipe_is_no_source(args: argparse.Namespace) -> None:
    """``edgeseg run [--bundle B] in.mp4`` (jetson-inference's ``segnet in.mp4 out.mp4``): the positional argument is
    the recipe; a video, an image folder or a URL there was read as TOML (a UnicodeDecodeError traceback)."""
    from pathlib import Path

    from ..data.io import IMAGE_SUFFIXES
    from ..errors import InputError
    from ..stream.sources.uri import VIDEO_SUFFIXES

    text = str(args.recipe)
    p = Path(text)
    media = p.suffix.lower() in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES) or "://" in text or p.is_dir() or text == "-" \
        or text.isdigit() or text.startswith("/dev/video")
    if not media:
        return
    sink = " --sink out.mp4" if not (args.sink or args.json_out or args.png_dir or args.show or args.rtsp_port) else ""
    raise InputError(f"{text} is given where a pipeline recipe (a .toml file) goes; it looks like a source",
                     fix=f"edgeseg run --bundle {args.bundle or 'BUNDLE'} --source {text}{sink} (the input is --source, "
                         "the annotated video --sink, results --json-out)")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..stream.api import (StreamOptions, batch_sizes, build_pipeline, keyframe_counts, load_recipe, stats_record,
                              unstarted_record)

    if args.recipe:
        _check_recipe_is_no_source(args)
    opts = load_recipe(args.recipe) if args.recipe else StreamOptions()
    opts = opts.replace(**{f: getattr(args, f, None) for f in _FIELDS})
    if isinstance(opts.source, list) and len(opts.source) == 1:
        opts = opts.replace(source=opts.source[0])
    if args.remote:
        if args.bundle:
            raise InputError("pass --bundle (run here) or --remote URL (run on a server), not both")
        from ..predictor import is_remote

        if not is_remote(args.remote):  # it was looked for as a bundle path: 'bundle ... not found'
            guess = args.remote.split("://", 1)[-1]
            raise InputError(f"--remote {args.remote}: an edgeseg serve server is an http(s):// URL",
                             fix=f"e.g. --remote http://{guess} (http://HOST:PORT/BUNDLE); a bundle here is --bundle")
        opts = opts.replace(bundle=args.remote)  # predictor.load(URL) returns a RemotePredictor
    if not opts.source:
        raise InputError("no source", fix="pass --source URI or a recipe (edgeseg run pipelines/file_semantic.toml)")
    if opts.prompt is not None and not opts.bundle and opts.keyframe_interval != 1:
        raise InputError("--keyframe-interval accelerates a bundle; --prompt alone already propagates its objects on "
                         "every frame", fix="drop --keyframe-interval, or add the --bundle it should accelerate")
    if opts.prompt is not None and not opts.bundle and opts.track:
        raise InputError("--track gives ids to a bundle's detections; --prompt's objects keep the prompt's ids",
                         fix="drop --track, or add an instance or panoptic --bundle to track")
    if not opts.bundle and opts.prompt is None:
        raise InputError("no bundle", fix="pass --bundle PATH (or a shipped name such as 'road'), or --prompt MASK.png")
    _check_paths(opts)
    _warn_unused(args, opts)
    if not (opts.sink or opts.json_out or opts.png_dir or opts.show or opts.rtsp_port):  # predict refuses; a speed run
        print("note: no output asked for (--sink OUT.mp4, --json-out FILE, --png-dir DIR, --show, --rtsp-port): the "
              "frames are segmented and timed, nothing is written", file=sys.stderr)
    started = time.perf_counter()
    if opts.rtsp_port:  # a port in use is refused before the bundle loads (its stats written as the sink's refusal)
        from ..errors import StreamError
        from ..stream.sinks.rtsp import check_bindable

        try:
            check_bindable(opts.rtsp_address, opts.rtsp_port)
        except StreamError as e:
            write_json(opts.stats_json, unstarted_record(opts, str(e).splitlines()[0], time.perf_counter() - started,
                                                         stopped_by="error"))
            raise
    try:
        pipe = build_pipeline(opts)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM while the bundle loads: the stats say so (0 frames)
        write_json(opts.stats_json, unstarted_record(opts, f"interrupted ({str(e) or 'SIGINT'}) before the first frame",
                                                     time.perf_counter() - started))
        raise
    try:
        stats = pipe.run()
    finally:
        if pipe.stats is not None:
            write_json(opts.stats_json, stats_record(pipe, opts))
    rows = [{"stage": k, "count": v.count, "p50_ms": v.p50_ms, "p95_ms": v.p95_ms, "p99_ms": v.p99_ms}
            for k, v in {**stats.stages, "end_to_end": stats.end_to_end}.items()]
    print_table(rows)
    choice = getattr(pipe, "choice", None)
    if choice is not None:
        print(f"model: {choice.candidate.label} ({choice.how}: {choice.reason})")
    print(stats.summary())
    kf = keyframe_counts(pipe)
    if kf:
        print(f"keyframes: {kf['keyframes']} of {kf['frames']} frames ({100 * kf['key_fraction']:.0f} %; "
              f"{kf['by_interval']} by interval, {kf['by_motion']} by motion, "
              f"{kf.get('by_local', 0)} by local motion, the rest first frames)")
    if opts.max_batch > 1:
        print("inference batches (size: count):", ", ".join(f"{k}: {v}" for k, v in sorted(batch_sizes(pipe).items())))
    if stats.frames and stats.errors >= stats.frames:  # an audit: a server down for the whole run exited 0
        first = (stats.error_messages or ["?"])[0].splitlines()[0]
        print(f"edgeseg run: error: every one of the {stats.frames} frames failed (the first: {first}); the outputs hold "
              "the frames without results", file=sys.stderr)
        return 2
    return 0


_OUTPUTS = (("--sink", "sink", "out.mp4"), ("--json-out", "json_out", "results.jsonl"), ("--png-dir", "png_dir", None),
            ("--stats-json", "stats_json", "stats.json"))


def _check_paths(opts) -> None:
    """Before the bundle loads: no output is a URL or (but ``--png-dir``) a folder, no two outputs name one
    path (one would overwrite the other), no output is an input (the source video or folder of frames, the
    prompt: writing it would destroy it; the sinks check the source too, for the API), the prompt is not
    inside the folder of frames (it would be one more frame), and ``--stats-json``, which this command
    writes after the run, can be written."""
    import os
    from pathlib import Path

    from ..errors import InputError
    from ..stream.sources import parse_source
    from ._common import check_output

    def real(path) -> Path:
        return Path(path).expanduser().resolve()

    inputs = [("--prompt", real(opts.prompt))] if isinstance(opts.prompt, (str, os.PathLike)) else []
    for source in opts.source if isinstance(opts.source, (list, tuple)) else [opts.source]:
        try:
            spec = parse_source(source) if isinstance(source, (str, os.PathLike)) else None
        except InputError:  # synthetic:// (parsed by its own source), or an error the source names when it opens
            spec = None
        if spec is not None and spec.scheme in ("file", "folder"):
            inputs.append(("--source", real(spec.target)))
            if spec.scheme == "folder" and inputs[0][0] == "--prompt" and inputs[0][1].parent == inputs[-1][1]:
                raise InputError(f"the --prompt {opts.prompt} is inside the --source folder {source}: it would be "
                                 "read as a frame of the video", fix="move the prompt out of the folder of frames")
    seen: dict[Path, str] = {}
    for opt, field, example in _OUTPUTS:
        path = getattr(opts, field)
        if not isinstance(path, (str, os.PathLike)):
            continue
        text = os.fspath(path)
        if "://" in text:  # before: a file ./rtsp:/HOST:PORT/x.mp4, in new folders
            raise InputError(f"{opt} {text}: {opt} writes files, not to a URL",
                             fix="serve the video over RTSP with --rtsp-port PORT (rtsp://127.0.0.1:PORT/edgeseg)"
                             if opt == "--sink" else f"give {opt} a path on this machine")
        if example and text.endswith(("/", os.sep)):  # before: a file named like the folder
            raise InputError(f"{opt} {text} names a folder; it writes one file", fix=f"name the file, e.g. {Path(text) / example}")
        key = real(text)
        for what, inp in inputs:
            if key == inp:
                raise InputError(f"{opt} {text} is the {what} {inp}: writing there would destroy the input",
                                 fix=f"give {opt} a path of its own")
        if key in seen:
            raise InputError(f"{seen[key]} and {opt} both name {text}: one would overwrite the other",
                             fix=f"give {opt} a path of its own")
        seen[key] = opt
    if opts.stats_json is not None:
        check_output(str(opts.stats_json), "--stats-json")


def _warn_unused(args: argparse.Namespace, opts) -> None:
    """Options given on the command line that do nothing with the others: said (a user who passes --encoder
    expects an encoded file), not silently dropped."""
    import logging

    video = bool(opts.sink or opts.rtsp_port or opts.show)
    for option, needs, applies in (("--encoder", "--sink or --rtsp-port", bool(opts.sink or opts.rtsp_port)),
                                   ("--rtsp-address", "--rtsp-port", bool(opts.rtsp_port)),
                                   ("--alpha", "a video output (--sink, --rtsp-port or --show)", video),
                                   ("--keyframe-motion", "--keyframe-interval N (N > 1)", opts.keyframe_interval != 1),
                                   ("--keyframe-local", "--keyframe-interval N (N > 1)", opts.keyframe_interval != 1),
                                   ("--batch-timeout-ms", "--max-batch N (N > 1)", opts.max_batch > 1)):
        if getattr(args, option[2:].replace("-", "_"), None) is not None and not applies:
            logging.getLogger("edgeseg.cli").warning("%s has no effect without %s", option, needs)
    if isinstance(opts.json_out, str) and opts.json_out.lower().endswith(".json"):  # json.load of it fails: "Extra data"
        logging.getLogger("edgeseg.cli").warning(
            "--json-out %s: the file holds JSON lines (one object per frame, written as they come, so that a stopped "
            "run keeps its frames), not one JSON document: read it line by line (json.loads per line, pandas "
            "read_json(lines=True), jq -c); name it .jsonl to say so", opts.json_out)
