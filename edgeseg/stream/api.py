"""The public streaming API: options (from code, the CLI or a TOML recipe), pipeline assembly, and
the ``for frame, result in edgeseg.stream(source, bundle)`` generator.
"""
from __future__ import annotations

import atexit
import contextlib

import dataclasses
import difflib
import functools
import logging
import math
import numbers
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .._io import write_json
from ..errors import EdgesegError, InputError, StreamError
from .base import Packet, Sink, Source
from .overlay import Renderer
from .pipeline import ON_ERROR, Pipeline, decoder_threads, inference_threads, opencv_threads
from .recipe import RECIPE_KEYS, load_recipe  # noqa: F401  (re-exported: edgeseg.stream.load_recipe)
from .sinks import CallbackSink, DisplaySink, JsonLinesSink, LabelPngSink, Mp4Sink, RtspServerSink
from .sources import MultiSource, open_source
from .sources.awaited import with_cameras
from .sources.mux import _name, unique_names
from .stages import RenderStage, predictor_stages


@dataclass(frozen=True)
class StreamOptions:
    """Everything ``edgeseg run`` and ``edgeseg.stream`` accept. Paths are relative to the working directory
    (in a recipe, to the recipe file: see :mod:`edgeseg.stream.recipe`)."""

    source: Any = ""  # a URI / path / launch string, a Source, or a list of them (batched across sources)
    bundle: str | None = None
    backend: str = "auto"
    precision: str = "auto"
    target: str | None = None
    device: str = "auto"
    threads: int = 0  # inference threads (0: automatic, one fewer than the cores on <= 4 cores, else the runtime's)
    upsample: str | None = None  # semantic decoder: None (the bundle's), "logits" (accurate) or "labels" (fast)
    score_threshold: float | None = None  # instance decoder: None (the bundle's) or the minimum detection score
    class_agnostic: bool | None = None  # instance decoder: True: NMS across classes (None: the bundle's)
    classes: Any = None  # instance/panoptic: keep only these classes ("person,car", "0,2" or a list; a panoptic bundle's
    # numbers: its category ids); semantic: draw only these; None: all
    prompt: Any = None  # video object propagation (alone, or next to the bundle): an id mask PNG path or array (VosStage)
    track: bool = False  # stable ids across frames for instance/panoptic results (TrackStage after decode)
    keyframe_interval: int = 1  # > 1: run the bundle on keyframes only, flow-propagate between (KeyframeStage)
    keyframe_motion: float = 0.08  # with keyframes: a keyframe as soon as this fraction of the frame moved unexplained (0: off)
    keyframe_local: float = 0.4  # with keyframes: ... or this fraction of any window an eighth of the frame across (0: off)
    source_backend: str = "auto"  # auto | gstreamer | opencv
    realtime: bool = False
    sink: str | None = None  # MP4 path
    segment_s: float | None = None  # with sink: a new file every this many seconds of video (NAME.00000.mp4, ...)
    keep_segments: int | None = None  # with segment_s: keep only the newest this many files (loop recording)
    json_segments: bool = False  # with segment_s and json_out: the JSON lines cut into the same segments too
    png_segments: bool = False  # with segment_s and png_dir: the PNGs in one folder a segment (DIR/00000/, ...)
    encoder: str = "x264enc"
    rtsp_port: int | None = None
    rtsp_address: str = "127.0.0.1"
    rtsp_mount: str = "/edgeseg"
    show: bool = False
    json_out: str | None = None
    png_dir: str | None = None
    stats_json: str | None = None
    fps: float | None = None  # output frame rate (default: the source's, else 25)
    alpha: float = 0.5
    hud: bool = True  # the fps/latency line and the class legend drawn on the video (False: a clean overlay)
    max_frames: int | None = None
    on_error: str = "skip"
    queue_size: int = 4
    log_interval_s: float = 10.0
    max_batch: int = 1  # frames per inference batch, across sources (like nvstreammux batch-size)
    batch_timeout_ms: float = 10.0  # wait at most this long after a batch's first frame
    cv_threads: int | None = None  # OpenCV's threads while the stream runs (None: 1 on <= 4 cores; 0: OpenCV's own)
    decoder_threads: int | None = None  # a video source's software decoder threads (None: 1 on <= 4 cores; 0: its own)

    def replace(self, **changes: Any) -> "StreamOptions":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _is_predictor(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("preprocess", "runner", "postprocess"))


def load_predictor(bundle: Any, opts: StreamOptions) -> Any:
    if _is_predictor(bundle):
        return bundle
    if bundle is None:
        raise InputError("a stream needs a bundle", fix="pass --bundle PATH (or a shipped name such as 'road')")
    from ..predictor import is_remote, load

    return load(bundle, backend=opts.backend, precision=opts.precision, target=opts.target, device=opts.device,
                threads=opts.threads if is_remote(bundle) else inference_threads(opts.threads))  # a server sets its own


def build_sinks(opts: StreamOptions, fps: float | None = None) -> list[Sink]:
    """The sinks ``opts`` asks for. ``fps`` (or ``opts.fps``) fixes the video frame rate; left None,
    video sinks use the source's, read once it is open (:meth:`Sink.bind_source`)."""
    sinks: list[Sink] = []
    fps = opts.fps or fps
    for given, needs, applies in (("segment_s (--segment-s)", "sink (--sink)",
                                   opts.sink or opts.json_segments or opts.png_segments),
                                  ("keep_segments (--keep-segments)", "segment_s (--segment-s)", opts.segment_s),
                                  ("json_segments (--json-segments)", "segment_s (--segment-s) and json_out (--json-out)",
                                   opts.segment_s and opts.json_out),
                                  ("png_segments (--png-segments)", "segment_s (--segment-s) and png_dir (--png-dir)",
                                   opts.segment_s and opts.png_dir)):
        if getattr(opts, given.split()[0]) not in (None, False) and not applies:  # the Python API too (an audit)
            logging.getLogger("edgeseg.stream").warning("%s has no effect without %s", given, needs)
    if opts.sink:
        sinks.append(Mp4Sink(opts.sink, fps=fps, encoder=opts.encoder, segment_s=opts.segment_s,
                             keep_segments=opts.keep_segments))
    if opts.rtsp_port:
        rtsp_encoder = "x264enc-live" if opts.encoder == "x264enc" else opts.encoder  # a hardware one for both sinks
        sinks.append(RtspServerSink(opts.rtsp_port, opts.rtsp_mount, fps=fps, address=opts.rtsp_address,
                                    encoder=rtsp_encoder))
    if opts.show:
        sinks.append(DisplaySink(fps=fps))
    if opts.json_out:
        cut = bool(opts.json_segments)  # opt-in: a command line that kept every result still does
        sinks.append(JsonLinesSink(opts.json_out, segment_s=opts.segment_s if cut else None,
                                   keep_segments=opts.keep_segments if cut else None, fps=fps))
    if opts.png_dir:
        cut = bool(opts.png_segments)  # opt-in, as the JSON lines' segments
        sinks.append(LabelPngSink(opts.png_dir, segment_s=opts.segment_s if cut else None,
                                  keep_segments=opts.keep_segments if cut else None, fps=fps))
    return sinks


SOURCE_BACKENDS = ("auto", "gstreamer", "opencv")
NO_CLI_FLAG: tuple[str, ...] = ()  # options a recipe or the Python API sets, `edgeseg run` not (since session 57: none)
CLI_FLAGS = {"log_interval_s": "--log-interval"}  # fields whose flag is not their name with dashes


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_options(opts: StreamOptions) -> None:
    """An :class:`InputError` for settings that cannot mean anything, before a source opens or a bundle
    loads (a negative ``max_frames`` used to stop after one frame, a string port to fail as a ValueError)."""
    def refuse(name: str, want: str) -> None:
        cli = "" if name in NO_CLI_FLAG else f"{CLI_FLAGS.get(name) or '--' + name.replace('_', '-')} in the CLI, "
        raise InputError(f"stream option {name} must be {want}, got {getattr(opts, name)!r}",
                         fix=f"{cli}{_recipe_key(name)} in a recipe")

    if opts.max_frames is not None and (isinstance(opts.max_frames, bool) or not isinstance(opts.max_frames, int)
                                        or opts.max_frames < 1):
        refuse("max_frames", "an integer >= 1 (or None: every frame)")
    if isinstance(opts.queue_size, bool) or not isinstance(opts.queue_size, int) or opts.queue_size < 1:
        refuse("queue_size", "an integer >= 1")
    if not (_number(opts.alpha) and 0 <= opts.alpha <= 1):
        refuse("alpha", "a number from 0 (no overlay) to 1 (opaque)" + (
            f" (jetson-inference's 0..255 {opts.alpha:g} is {opts.alpha / 255:.2f} here)"
            if _number(opts.alpha) and 1 < opts.alpha <= 255 else ""))
    if opts.score_threshold is not None and not (_number(opts.score_threshold) and 0 <= opts.score_threshold <= 1):
        refuse("score_threshold", "a score from 0 to 1 (or None: the bundle's)")  # under its own name, whatever field
    if opts.class_agnostic is not None and not isinstance(opts.class_agnostic, bool):  # 'no' switched it on
        refuse("class_agnostic", "true or false (or None: the bundle's)")
    if opts.fps is not None and not (_number(opts.fps) and opts.fps > 0):
        refuse("fps", "a number > 0 (or None: the source's)")
    if not (_number(opts.batch_timeout_ms) and opts.batch_timeout_ms >= 0):  # inf hung a batching thread
        refuse("batch_timeout_ms", "a number of milliseconds >= 0")
    if opts.source_backend not in SOURCE_BACKENDS:
        refuse("source_backend", " or ".join(SOURCE_BACKENDS))
    if opts.on_error not in ON_ERROR:  # was refused by the pipeline, after the bundle had loaded
        refuse("on_error", " or ".join(repr(v) for v in ON_ERROR))
    if isinstance(opts.max_batch, bool) or not isinstance(opts.max_batch, numbers.Integral) or opts.max_batch < 1:
        refuse("max_batch", "an integer >= 1")
    if not (_number(opts.log_interval_s) and opts.log_interval_s >= 0):
        refuse("log_interval_s", "a number of seconds >= 0 (0: no periodic log)")
    if opts.segment_s is not None and not (_number(opts.segment_s) and opts.segment_s > 0):
        refuse("segment_s", "a number of seconds > 0 (or None: one file)")
    if opts.classes is not None and not (isinstance(opts.classes, str) or (
            isinstance(opts.classes, (list, tuple)) and all(isinstance(c, (str, int)) for c in opts.classes))):
        refuse("classes", "class names or indices: 'person,car', '0,2' or a list (or None: every class)")
    if not isinstance(opts.hud, bool):
        refuse("hud", "True or False")
    for flag in ("json_segments", "png_segments"):
        if not isinstance(getattr(opts, flag), bool):
            refuse(flag, "True or False")
    if opts.keep_segments is not None and (isinstance(opts.keep_segments, bool) or not isinstance(opts.keep_segments, int)
                                           or opts.keep_segments < 1):
        refuse("keep_segments", "an integer >= 1 (or None: keep every segment)")
    if opts.rtsp_port is not None and (isinstance(opts.rtsp_port, bool) or not isinstance(opts.rtsp_port, int)
                                       or not 1 <= opts.rtsp_port <= 65535):
        refuse("rtsp_port", "a port number 1..65535 (or None: no RTSP server)")
    for name in ("sink", "json_out", "png_dir", "stats_json"):
        if getattr(opts, name) is not None and not isinstance(getattr(opts, name), (str, os.PathLike)):
            refuse(name, "a path (or None)")
    if str(opts.json_out) == "-" and str(opts.stats_json) == "-":
        raise InputError("json_out (--json-out) and stats_json (--stats-json) are both standard output ('-'): their "
                         "JSON would be mixed", fix="write one of them to a file, e.g. --stats-json stats.json")
    if str(opts.json_out) == "-" and opts.json_segments:
        raise InputError("json_segments (--json-segments) cuts the JSON lines into files; json_out (--json-out) is "
                         "standard output ('-')", fix="give --json-out a file name, or drop --json-segments")
    sources = opts.source if isinstance(opts.source, (list, tuple)) else [opts.source]
    if opts.prompt is not None and len(sources) > 1:  # an audit: one camera's mask started every camera's objects
        raise InputError(f"one prompt for {len(sources)} sources: its object masks are one camera's first frame, and "
                         "every source's objects would start from them",
                         fix="run each camera with its own prompt in its own command (edgeseg run --source CAM "
                             "--prompt ITS_MASK.png), or drop --prompt")


def _recipe_key(field_name: str) -> str:
    """``[section] key`` of a StreamOptions field in a recipe."""
    return next((f"[{section}] {key}" for section, keys in RECIPE_KEYS.items() for key, f in keys.items()
                 if f == field_name), field_name)


def _check_source(source: Any) -> None:
    """A source is a URI, a path or a :class:`Source`: anything else is named here, not as a missing video file."""
    if isinstance(source, (str, os.PathLike, Source)):
        return
    if isinstance(source, np.ndarray):
        raise InputError(f"a stream reads frames from a source; got an image array {list(source.shape)}",
                         fix="for images call the predictor: edgeseg.load(bundle)(image); for a folder of images "
                             "give its path as the source")
    raise InputError(f"a source must be a path, a URI or a Source, got {type(source).__name__}",
                     fix="e.g. 'clip.mp4', 'rtsp://cam/1', 'frames/' or 'synthetic://?frames=10'")


def open_sources(opts: StreamOptions) -> Any:
    """One :class:`Source`, or a :class:`MultiSource` when ``opts.source`` lists several (each keeps its
    URI as ``source_id``; repeated URIs get ``#2``, ``#3``, ...)."""
    many = opts.source if isinstance(opts.source, (list, tuple)) else [opts.source]
    if not many or any(s is None or (isinstance(s, str) and not s.strip()) for s in many):
        raise InputError("no source", fix="pass --source URI (repeat it for several sources)")
    # a camera number, as OpenCV and `edgeseg run --source 0` take it: /dev/video0
    many = [str(s) if isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 else s for s in many]
    for s in many:
        _check_source(s)
    if len(many) == 1:
        return open_source(many[0], backend=opts.source_backend, realtime=opts.realtime, fps=opts.fps,
                           decoder_threads=opts.decoder_threads)
    names = unique_names([s if isinstance(s, str) else _name(s) for s in many])

    def make(s: Any, n: str) -> Any:
        return open_source(s, backend=opts.source_backend, realtime=opts.realtime, name=n, fps=opts.fps,
                           decoder_threads=opts.decoder_threads)

    # a camera whose device is not there yet waits for it while the others run, and one unplugged waits for it again
    # (session 56: one missing at start stopped every camera, one unplugged was lost): sources.awaited.with_cameras
    return MultiSource(with_cameras([(s, functools.partial(make, s, n), n) for s, n in zip(many, names)]))


def _semantic_classes(opts: StreamOptions, predictor: Any) -> tuple[Any, tuple[int, ...] | None]:
    """``opts.classes`` split by task: (the classes whose results are kept, for instance and panoptic bundles;
    the classes the overlay draws, for a semantic bundle, whose label maps give every pixel a class)."""
    manifest = getattr(predictor, "manifest", None)
    if opts.classes is None or manifest is None or manifest.task != "semantic":
        return opts.classes, None
    from ..structures.filters import class_ids

    return None, class_ids(opts.classes, manifest.classes)


def build_pipeline(opts: StreamOptions, predictor: Any = None, extra_sinks: tuple[Sink, ...] = (),
                   handle_signals: bool = True) -> Pipeline:
    """Source -> preprocess -> inference -> decode (-> track with ``opts.track``) (-> vos with ``opts.prompt``)
    (-> render when a video sink needs it) -> sinks; with ``opts.prompt`` and no bundle, source -> vos
    (:class:`~edgeseg.stream.vos_stage.VosStage`) (-> render) -> sinks. A prompt with a bundle adds the
    prompt's objects to the bundle's results (:class:`~edgeseg.structures.PromptedResult`)."""
    check_options(opts)
    opencv_threads(opts.cv_threads)  # bad settings fail before the source opens and the bundle loads
    decoder_threads(opts.decoder_threads)
    inference_threads(opts.threads)
    if opts.prompt is not None and predictor is None and not opts.bundle:
        return _vos_pipeline(opts, extra_sinks, handle_signals)
    keyframes = keyframe_config(opts)  # bad settings fail before the source opens
    vos = None
    if opts.prompt is not None:  # an empty or unreadable prompt fails before the source opens
        from .vos_stage import VosStage

        vos = VosStage(opts.prompt, with_bundle=True)
    source = open_sources(opts)
    source.open()  # before the bundle: a bad URI or a missing file fails first (Pipeline.run reopens: a no-op)
    try:  # until the pipeline holds the source, any refusal closes it (before, one after the bundle's load -- an option
        # its task does not take, a sink's path -- left the decoder thread running: "terminate called", exit 134)
        return _assemble(opts, source, predictor, vos, keyframes, extra_sinks, handle_signals)
    except BaseException:
        source.close()
        raise


def _assemble(opts: StreamOptions, source: Source, predictor: Any, vos: Any, keyframes: Any,
              extra_sinks: tuple[Sink, ...], handle_signals: bool) -> Pipeline:
    """:func:`build_pipeline` after the source opened: the bundle, the stages, the sinks."""
    predictor = load_predictor(predictor if predictor is not None else opts.bundle, opts)
    if opts.track:
        from .track_stage import check_trackable

        check_trackable(predictor)
    classes, only = _semantic_classes(opts, predictor)
    task = getattr(getattr(predictor, "manifest", None), "task", "instance")
    if opts.class_agnostic is not None and task != "instance":  # here, not after: the source is closed on it
        raise InputError(f"--class-agnostic applies to instance bundles; this is a {task} bundle",
                         fix="leave --class-agnostic out")
    sinks = build_sinks(opts)  # video sinks take the source's frame rate when the pipeline binds them
    video = any(isinstance(s, (Mp4Sink, RtspServerSink, DisplaySink)) for s in sinks)
    manifest = getattr(predictor, "manifest", None)
    renderer = Renderer(manifest.palette_array if manifest else None, manifest.classes if manifest else (),
                        alpha=opts.alpha, legend=opts.hud, hud=opts.hud, only=only) if video else None
    if only is not None and not video:
        logging.getLogger("edgeseg.stream").warning(
            "--classes of a semantic bundle limits the classes the overlay draws; without a video sink (--sink, "
            "--rtsp-port, --show) it changes nothing (label maps and JSON keep every pixel's class)")
    late = opts.track or vos is not None  # stages after decode: the overlay comes after them
    stages = predictor_stages(predictor, None if late else renderer, max_batch=opts.max_batch,
                              batch_timeout_s=opts.batch_timeout_ms / 1e3, upsample=opts.upsample,
                              score_threshold=opts.score_threshold, classes=classes,
                              class_agnostic=opts.class_agnostic)
    if keyframes is not None:  # keyframe-flow first; preprocess, inference, decode on keyframes only; then carry
        from .keyframe_stage import keyframe_stages

        stages = [*keyframe_stages(stages[:3], keyframes), *stages[3:]]
    if opts.track:  # ids before the overlay, which draws them
        from .track_stage import TrackStage

        stages.append(TrackStage())
    if vos is not None:
        stages.append(vos)
    if late and renderer is not None:
        stages.append(RenderStage(renderer))
    pipe = Pipeline([source, *stages, *sinks, *extra_sinks], queue_size=opts.queue_size, on_error=opts.on_error,
                    max_frames=opts.max_frames, log_interval_s=opts.log_interval_s, handle_signals=handle_signals,
                    cv_threads=opts.cv_threads)
    pipe.choice = getattr(predictor, "choice", None)  # the backend/precision decision (edgeseg.backends.choice)
    return pipe


def keyframe_config(opts: StreamOptions) -> Any:
    """The :class:`~edgeseg.video.keyframe.KeyframeConfig` ``opts`` asks for, or None (every frame runs the bundle)."""
    if opts.keyframe_interval == 1:
        return None
    from ..video.keyframe import KeyframeConfig

    if opts.max_batch > 1:
        raise InputError("keyframes run the bundle one frame at a time (each propagated frame needs the one before it); "
                         f"max_batch {opts.max_batch} cannot batch them", fix="drop --max-batch, or drop --keyframe-interval")
    return KeyframeConfig(interval=opts.keyframe_interval, motion=opts.keyframe_motion or None,
                          local=opts.keyframe_local or None)


def _vos_pipeline(opts: StreamOptions, extra_sinks: tuple[Sink, ...], handle_signals: bool) -> Pipeline:
    """Propagation only (a prompt, no bundle)."""
    from .vos_stage import VosStage

    if opts.keyframe_interval != 1:
        raise InputError("keyframes accelerate a bundle; a prompt's objects are already propagated on every frame",
                         fix="drop keyframe_interval with a prompt alone, or add the bundle it should accelerate")
    if opts.track:
        raise InputError("track (ids for detected instances) does not apply to a prompt's objects, which keep the "
                         "prompt's ids", fix="drop --track with --prompt, or track an instance bundle's detections")
    stage = VosStage(opts.prompt)  # an empty or unreadable prompt fails before the source opens
    sinks = build_sinks(opts)  # a bad sink path fails before the source opens
    stages: list[Any] = [stage]
    if any(isinstance(s, (Mp4Sink, RtspServerSink, DisplaySink)) for s in sinks):
        stages.append(RenderStage(Renderer(alpha=opts.alpha, legend=opts.hud, hud=opts.hud)))  # per-object colours
    source = open_sources(opts)
    source.open()
    try:  # as build_pipeline: the source closed on any refusal until the pipeline holds it
        pipe = Pipeline([source, *stages, *sinks, *extra_sinks], queue_size=opts.queue_size, on_error=opts.on_error,
                        max_frames=opts.max_frames, log_interval_s=opts.log_interval_s, handle_signals=handle_signals,
                        cv_threads=opts.cv_threads)
    except BaseException:
        source.close()
        raise
    pipe.choice = None
    return pipe


def stream(source: Any, bundle: Any = None, **options: Any) -> "Stream":
    """``for frame, result in edgeseg.stream("rtsp://cam/1", "road.edgeseg"): ...``

    Runs the whole pipeline (decode, preprocess, inference, decode, sinks) in background threads and
    yields ``(Frame, result)`` in source order; ``result`` is None for a frame a stage failed on
    (``on_error="skip"``). ``bundle`` is a bundle path/name or a loaded Predictor. ``options`` are
    :class:`StreamOptions` fields (``sink="out.mp4"``, ``json_out=...``, ``realtime=True``, ``max_frames``,
    ``backend``, ...). Breaking out of the loop stops the stream and finalizes every sink (or ``with
    edgeseg.stream(...) as s:``; ``s.stats`` once it has ended; a stream left open is closed at exit). With
    ``prompt=MASK`` (a path or an id array) and no bundle, results are the propagated
    :class:`~edgeseg.structures.TrackResult` of the prompt's objects; with a bundle too,
    :class:`~edgeseg.structures.PromptedResult` (``.result`` the bundle's, ``.objects`` the prompt's).
    """
    known = [f.name for f in dataclasses.fields(StreamOptions)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        close = [f"; {u}: did you mean {c[0]}?" for u in unknown if (c := difflib.get_close_matches(u, known, n=1))]
        raise InputError(f"edgeseg.stream: unknown option(s) {', '.join(unknown)}{''.join(close)}",
                         fix=f"options are the fields of StreamOptions: {', '.join(known)}")
    opts = StreamOptions(source=source, **options)
    check_options(opts)  # here, not at the first next(): a mistyped option failed only once the loop began
    return Stream(opts, bundle)


def keyframe_counts(pipe: Pipeline) -> dict | None:
    """The keyframe stage's counts, or None when every frame ran the bundle."""
    stage = next((s for s in pipe.stages if getattr(s, "name", "") == "keyframe"), None)
    return stage.summary() if stage is not None else None


def batch_sizes(pipe: Pipeline) -> dict[int, int]:
    """How many inference batches of each size ran (``{1: n}`` without batching)."""
    counts = next((getattr(s, "batch_sizes", None) for s in pipe.stages if getattr(s, "name", "") == "inference"), None)
    return {int(k): int(v) for k, v in sorted(counts.items())} if counts else {}


def stats_record(pipe: Pipeline, opts: StreamOptions, bundle: Any = None) -> dict[str, Any]:
    """What ``stats_json`` holds (``edgeseg run --stats-json``, ``edgeseg.stream(..., stats_json=)``): the run's
    frames, drops, errors and latencies, its batches and keyframes, and the backend chosen."""
    choice = getattr(pipe, "choice", None)
    segmented = [s for s in pipe.sinks if isinstance(s, (Mp4Sink, JsonLinesSink, LabelPngSink)) and s.segment_s]
    bundle = opts.bundle if bundle is None else bundle
    if _is_predictor(bundle):  # a loaded predictor: its bundle's name
        bundle = getattr(getattr(bundle, "bundle", None), "name", None)
    return {"source": source_names(opts.source), "bundle": None if bundle is None else str(bundle),
            "prompt": opts.prompt if isinstance(opts.prompt, str) else None,
            **(pipe.stats.to_dict() if pipe.stats is not None else {}),
            "batch_sizes": batch_sizes(pipe), "keyframes": keyframe_counts(pipe),
            "choice": choice.to_dict() if choice is not None else None,
            # several sources: each one's drops, gaps and failure (before: a source that died was only logged)
            **({"sources": _source_records(pipe)} if isinstance(pipe.source, MultiSource) else {}),
            **({"segments": [{"kind": "json" if isinstance(s, JsonLinesSink) else "png" if isinstance(s, LabelPngSink)
                              else "video", **r} for s in segmented for r in s.segment_records()]} if segmented else {})}


def _source_records(pipe: Pipeline) -> list[dict[str, Any]]:
    """Each source's record (:meth:`MultiSource.source_records`) with its processed frames, fps and end-to-end
    latency (:class:`~edgeseg.stream.metrics.SourceFigures`, as the run's own ``end_to_end``; 0 frames and no
    latency for a source none of whose frames came through)."""
    figures = pipe.stats.by_source if pipe.stats is not None else {}
    out = []
    for rec in pipe.source.source_records():
        fig = figures.get(rec["source"])
        rec.update(fig.to_dict() if fig is not None else {"processed": 0, "fps": 0.0, "end_to_end": None})
        out.append(rec)
    return out


def source_names(source: Any) -> Any:
    """``opts.source`` as the stats JSON names it: a URI or path as given, a :class:`Source` object by its id (an
    audit: ``edgeseg.stream(src, ..., stats_json=...)`` with a Source object ended in "not JSON serialisable" and
    no stats), a list item by item."""
    if isinstance(source, (list, tuple)):
        return [source_names(s) for s in source]
    if isinstance(source, Source):
        return _name(source)
    return os.fspath(source) if isinstance(source, os.PathLike) else source


def unstarted_record(opts: StreamOptions, reason: str, open_s: float, stopped_by: str = "signal") -> dict[str, Any]:
    """``stats_json`` of a run stopped before its first frame (Ctrl-C or SIGTERM while the bundle loaded; an output
    that cannot work, ``stopped_by="error"``): no frames, the reason, and how long the start-up had taken."""
    from .metrics import Recorder

    stats = Recorder().stats(stopped_by=stopped_by, fatal=reason, open_s=open_s)
    return {"source": source_names(opts.source), "bundle": None if opts.bundle is None else str(opts.bundle),
            "prompt": opts.prompt if isinstance(opts.prompt, str) else None, **stats.to_dict(),
            "batch_sizes": {}, "keyframes": None, "choice": None}


class Stream:
    """What :func:`stream` returns: an iterator of ``(Frame, result)``, and a context manager.

    ``close()`` (or leaving the ``with`` block, or breaking out of the loop and dropping the object) stops the
    source and finalizes every sink; from another thread than the one iterating it, ``close()`` stops the stream
    and waits for it to end (from the iterating thread itself, a signal handler say, it stops it and returns: the
    loop then ends). ``stats`` holds the run's :class:`~edgeseg.stream.metrics.Stats` once it has ended (also when
    closed early), and ``stats_json`` is written then. A stream still open when the program exits is closed first
    (before, the interpreter's exit killed its threads inside the runtimes: the process aborted and the MP4 stayed
    a ``.part`` file)."""

    def __init__(self, opts: StreamOptions, bundle: Any):
        self.options = opts
        # what the generator and this object share; it holds no reference back to this object: a cycle left the
        # generator to the cyclic GC, which finalized it in whatever thread it ran in (see _stream's finally)
        self._ended: dict[str, Any] = {"finished": threading.Event()}
        self._gen = _stream(opts, bundle, self._ended)
        with _OPEN_LOCK:
            _OPEN_STREAMS.add(self)

    @property
    def stats(self) -> Any:
        """The run's :class:`~edgeseg.stream.metrics.Stats` once it has ended, else None."""
        return self._ended.get("stats")

    @property
    def skipped(self) -> int:
        """A live source's results the loop never saw (a camera, a ``realtime`` replay): a newer one of the same source
        was ready before the loop asked for it (:mod:`~edgeseg.stream.handover`; ``stats_json``'s
        ``consumer_skipped``). A file's results all wait for the loop."""
        handover = self._ended.get("handover")
        return 0 if handover is None else handover.skipped

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> tuple[Any, Any]:
        self._ended["consumer"] = weakref.ref(threading.current_thread())
        try:
            return next(self._gen)
        except ValueError:  # "generator already executing": another thread's close() is finishing it
            if not self._ended.get("closing"):
                raise
            self._ended["finished"].wait()
            raise StopIteration from None

    def close(self, timeout_s: float | None = None) -> bool:
        """Stop the stream and finalize its sinks; True once it has ended (False: ``timeout_s`` passed first, or
        called from the thread inside ``next()``, which ends the stream when it gets back to its loop)."""
        ended = self._ended
        ended["closing"] = True  # a stream still building its pipeline stops as soon as it is built
        ended["closer"] = threading.get_ident()
        try:
            self._gen.close()
        except ValueError:  # "generator already executing": a thread is inside next(); stop the pipeline, and that
            stop = ended.get("stop")  # thread's loop ends the stream (before: nothing happened)
            if stop is not None:
                stop()
            consumer = ended.get("consumer")
            if consumer is not None and consumer() is threading.current_thread():
                return False  # that thread is this one (a signal handler): waiting here would wait on itself
        if "started" in ended and not _own_thread():  # (from a pipeline's thread, a callback: its finish needs it)
            ended["finished"].wait(timeout_s)
        done = ended["finished"].is_set() or "started" not in ended  # never started: nothing to end
        if done:
            with _OPEN_LOCK:
                _OPEN_STREAMS.discard(self)
        return done

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_OPEN_STREAMS: "weakref.WeakSet[Stream]" = weakref.WeakSet()
_OPEN_LOCK = threading.RLock()  # adds, discards and the exit's snapshot (a close from a signal handler may nest)
_FINISHING: "set[threading.Thread]" = set()  # finishes handed to threads of their own (see _stream's finally)


def _open_streams() -> "list[Stream]":
    """The open streams, read while other threads may open or end some (a WeakSet iterated while another thread adds
    or discards raises "Set changed size during iteration"; collected streams leave it safely meanwhile)."""
    with _OPEN_LOCK:
        return list(_OPEN_STREAMS)


def _close_open_streams(timeout_s: float = 30.0) -> None:
    """At exit, before the interpreter stops the streams' daemon threads mid-call: stop and finalize them, within
    ``timeout_s`` (a source that never answers cannot keep the program from exiting). Registered twice: with
    threading's exit hooks (before non-daemon threads are joined; a live non-daemon consumer's stream is left to
    it) and with atexit (after they are joined: what they left open)."""
    deadline = time.monotonic() + timeout_s

    def left_to_its_thread(s: Stream) -> bool:
        ref = s._ended.get("consumer")
        t = ref() if ref is not None else None
        return t is not None and t is not threading.current_thread() and t.is_alive() and not t.daemon \
            and t is not threading.main_thread()

    streams = [s for s in _open_streams() if not left_to_its_thread(s)]

    def close_all() -> None:
        for s in streams:
            with contextlib.suppress(Exception):
                s._ended["closing"] = True
                stop = s._ended.get("stop")
                if stop is not None:  # stopped first, so a close that must wait is bounded by the deadline
                    stop()
                s.close(max(0.0, deadline - time.monotonic()))

    if streams:
        try:
            closer = threading.Thread(target=close_all, name="edgeseg exit", daemon=True)  # not "edgeseg-": it waits
            closer.start()
            closer.join(timeout_s)
            hung = closer.is_alive()
        except RuntimeError:  # no new thread at this point of shutdown (Python 3.12.0-3.12.1): close here
            close_all()
            hung = False
        if hung:
            logging.getLogger("edgeseg.stream").warning(
                "%d stream(s) still open at exit did not stop within %.0f s: their sinks may be unfinished (close a "
                "stream, or use 'with edgeseg.stream(...) as s:', before the program ends)", len(streams), timeout_s)
    for t in list(_FINISHING):  # finishes handed to threads of their own (a stream dropped in a pipeline thread)
        t.join(max(0.0, deadline - time.monotonic()))


# first pass: threading's exit hooks (Python 3.9+), before the interpreter joins non-daemon threads; second pass:
# atexit, after it has joined them (what they left open; Python 3.8's only hook)
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_close_open_streams)
atexit.register(_close_open_streams)


def _own_thread() -> bool:
    """Whether this thread is one a pipeline runs (edgeseg's, or a GStreamer streaming thread calling into Python):
    a stream finalized there must not wait for its pipeline, which may be waiting for this very thread."""
    t = threading.current_thread()
    return t.name.startswith("edgeseg-") or isinstance(t, threading._DummyThread)


def _live_sources(source: Any) -> Callable[[Any], bool]:
    """Whether a frame's ``source_id`` is a live source's (each part of a :class:`MultiSource` on its own)."""
    parts = getattr(source, "sources", None)
    if parts:
        from .sources.mux import _name

        ids = {_name(s) for s in parts if s.live}
        return lambda sid: sid in ids
    live = bool(source.live)
    return lambda _sid: live


def _stream(opts: StreamOptions, bundle: Any, ended: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """:class:`Stream`'s generator: the pipeline runs from the first ``next()`` to the loop's end."""
    from .handover import HandOver

    done = object()
    ended["started"] = True
    out = HandOver(max(2, opts.queue_size))  # a file's results wait for the loop, a live source's never do
    try:
        to_loop = CallbackSink(lambda f, r: out.put(f.source_id, (f, r)))
        pipe = build_pipeline(opts, predictor=bundle, extra_sinks=(to_loop,), handle_signals=False)
    except BaseException:
        ended["finished"].set()
        raise
    out.is_live = _live_sources(pipe.source)  # (before the first frame: the sink thread starts with pipe.run below)
    if hasattr(pipe.source, "gate") and any(s.live for s in getattr(pipe.source, "sources", ())):
        pipe.source.gate, out.gated = out.wait_for_room, True  # a file beside a camera waits at its source
    ended["handover"] = out
    ended["stop"] = pipe.stop
    if ended.get("closing"):  # closed while the pipeline was being built (a slow model load): stop before a frame
        pipe.stop()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            pipe.run()
        except BaseException as e:  # handed to the consumer below
            failure.append(e)
        finally:
            out.put_end(done)

    thread = threading.Thread(target=run, name="edgeseg-stream", daemon=True)
    thread.start()

    def finish() -> None:
        try:
            while thread.is_alive():  # let the sink thread finish: drain what it still hands over
                with contextlib.suppress(queue.Empty):
                    out.get(timeout=0.05)
            thread.join()
            ended["stats"] = pipe.stats
            if out.skipped:
                logging.getLogger("edgeseg.stream").info(
                    "the loop was slower than the live source: %d results skipped (it got the freshest each time)",
                    out.skipped)
            if pipe.stats is not None and opts.stats_json:
                try:
                    write_json(opts.stats_json, {**stats_record(pipe, opts, bundle), "consumer_skipped": out.skipped})
                except (OSError, EdgesegError) as e:  # not in place of the run's own error, not from inside close()
                    logging.getLogger("edgeseg.stream").warning("could not write stats_json %s: %s", opts.stats_json, e)
        finally:
            ended.pop("stop", None)  # the pipeline (predictor, sinks) is not kept alive by the Stream
            ended["finished"].set()
            _FINISHING.discard(threading.current_thread())

    try:
        while True:
            item = out.get()
            if item is done:
                break
            yield item
    finally:
        pipe.stop()
        out.close()
        if not _own_thread():
            finish()
        else:  # finalized by the garbage collector in one of a pipeline's threads: finishing there would wait on it
            t = threading.Thread(target=finish, name="edgeseg-stream-close", daemon=True)
            _FINISHING.add(t)
            try:
                t.start()
            except RuntimeError:  # at shutdown on 3.12: no new thread; the pipeline was told to stop
                _FINISHING.discard(t)
    if failure:
        raise failure[0]
