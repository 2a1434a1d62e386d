"""``edgeseg demo``: the main job on an embedded default, with nothing of the user's.

The shipped INT8 ``shapes`` bundle runs on a generated ``synthetic://`` stream (scenes from
:class:`~edgeseg.data.synthetic.SceneGenerator`, held out from training) through the real streaming
pipeline (GStreamer when installed, else OpenCV), into an annotated MP4 and a stats JSON, and is
scored against the generator's exact ground truth, frame by frame, in a sink
(:class:`GroundTruthSink`, side effects stay in sinks)::

    from edgeseg.demo import DemoOptions, run_demo, format_report
    result = run_demo(DemoOptions(frames=150))
    print(format_report(result))          # fps, latency p50/p95/p99, mIoU, pixel accuracy, where the MP4 is

With ``source="clip.mp4", bundle="road"`` it runs that bundle on the user's video (no accuracy:
there is no ground truth).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_json
from .bundle import Bundle
from .errors import BundleError, InputError
from .structures import ImageShape
from .stream.base import Packet, Sink
from .structures.frame import Frame

log = logging.getLogger("edgeseg.demo")

DEFAULT_BUNDLE = "shapes"
DEFAULT_FRAMES = 150
DEFAULT_SIZE = ImageShape(360, 480)
DEFAULT_FPS = 25.0
CAMERA = Path("/dev/video0")
_CALIB = {"shapes": "synthetic", "road": "street", "road-camvid": "camvid"}  # calibration recipes of the shipped bundles


# ---- accuracy against ground truth carried by the frames -----------------------------------------
class GroundTruthSink(Sink):
    """Scores each frame's semantic result against ``frame.meta["labels"]`` (a ``synthetic://`` source
    puts the generator's exact truth there) with :class:`~edgeseg.eval.SemanticMetric`.

    Model classes are matched to the truth's classes (``frame.meta["classes"]``) by name; a predicted
    class the truth does not know counts as a miss. A frame a stage failed on (no result) counts as
    wrong on every pixel. Frames without truth are counted in ``frames_without_truth`` and skipped.
    """

    name = "accuracy"

    def __init__(self, model_classes: tuple[str, ...], boundary: bool = False, task: str = "semantic"):
        self.model_classes = tuple(model_classes)
        self.task = task
        self.boundary = boundary
        self.metric: Any = None
        self.truth_classes: tuple[str, ...] = ()
        self.frames_scored = 0
        self.frames_failed = 0
        self.frames_without_truth = 0
        self.class_map: Any = None

    def _start(self, truth_classes: tuple[str, ...]) -> None:
        from .eval import SemanticMetric, class_map

        self.truth_classes = tuple(truth_classes)
        self.class_map = class_map(self.model_classes, self.truth_classes)  # by name; unmatched -> a miss
        self.metric = SemanticMetric(len(self.truth_classes), boundary=self.boundary, classes=self.truth_classes)

    @property
    def shared_classes(self) -> tuple[str, ...]:
        if self.class_map is None or self.class_map.by != "name":
            return ()
        return tuple(n for n in self.model_classes if n not in self.class_map.unmatched)

    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        if self.task == "panoptic":
            self._write_panoptic(frame, result)
            return
        gt = frame.meta.get("labels")
        if gt is None:
            self.frames_without_truth += 1
            return
        if self.metric is None:
            self._start(tuple(frame.meta.get("classes") or self.model_classes))
        labels = getattr(result, "labels", None)
        if labels is None:  # the frame failed in a stage: every pixel is wrong
            self.frames_failed += 1
            pred = np.full(gt.shape, len(self.truth_classes), np.int64)
        else:
            if labels.shape != gt.shape:
                raise InputError(f"result {list(labels.shape)} and ground truth {list(gt.shape)} of frame "
                                 f"{frame.index} of {frame.source_id} differ in size")
            pred = self.class_map(labels)
        self.metric.update(pred, gt)
        self.frames_scored += 1

    def _write_panoptic(self, frame: Frame, result: Any) -> None:
        """PQ against ``meta["truth"].panoptic`` (``truth=full``): predicted segments take the truth's
        class index of their class name; a class the truth does not know is void."""
        from dataclasses import replace

        from .eval import PanopticMetric
        from .structures import PanopticResult

        truth = frame.meta.get("truth")
        if truth is None:
            self.frames_without_truth += 1
            return
        gt = truth.panoptic
        if self.metric is None:
            self.truth_classes = tuple(frame.meta.get("classes") or gt.class_names)
            self.metric = PanopticMetric(names={i: n for i, n in enumerate(self.truth_classes)})
        if not isinstance(result, PanopticResult):  # the frame failed in a stage: every segment missed
            self.frames_failed += 1
            result = PanopticResult(np.zeros_like(gt.segment_ids))
        index = {n: i for i, n in enumerate(self.truth_classes)}
        keep = [replace(s, category_id=index[result.class_name(s.category_id)]) for s in result.segments
                if result.class_name(s.category_id) in index]
        ids = np.where(np.isin(result.segment_ids, [s.id for s in keep]), result.segment_ids, 0)
        self.metric.update(PanopticResult(ids, tuple(keep)), gt)
        self.frames_scored += 1

    def scores(self) -> Any:
        """:class:`~edgeseg.eval.SemanticScores` (:class:`~edgeseg.eval.PanopticScores` for a panoptic
        bundle), or None when no frame had ground truth."""
        return None if self.metric is None or self.frames_scored == 0 else self.metric.compute()


# ---- options and result ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoOptions:
    """What ``edgeseg demo`` takes. ``source=None``: the generated stream (``seed``, ``size``, ``fps``).
    ``frames=None``: 150 generated frames, or the whole user source."""

    bundle: str = DEFAULT_BUNDLE
    precision: str = "int8"
    source: str | None = None
    frames: int | None = None
    size: ImageShape | None = None
    fps: float = DEFAULT_FPS
    seed: int = 0
    out: str = "out/demo"
    realtime: bool = False
    backend: str = "auto"
    target: str | None = None
    threads: int = 0
    device: str = "auto"
    source_backend: str = "auto"


@dataclass(frozen=True)
class DemoResult:
    """What a demo run did. ``stats`` is the pipeline's :class:`~edgeseg.stream.Stats`; ``accuracy``
    the :class:`~edgeseg.eval.SemanticScores` against the generator's truth (None without truth)."""

    bundle: str
    bundle_path: str
    precision: str
    backend: str
    source: str
    video: Path
    video_frames: int
    video_writer: str  # gstreamer | opencv
    stats_json: Path
    stats: Any
    accuracy: Any = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    live: bool = False  # the source was paced like a camera (else read as fast as the pipeline takes it)

    def to_dict(self) -> dict[str, Any]:
        acc = self.accuracy.to_dict() if self.accuracy is not None else None
        if acc is not None:
            acc.pop("confusion", None)
        return {"bundle": self.bundle, "bundle_path": self.bundle_path, "precision": self.precision,
                "backend": self.backend, "source": self.source, "video": str(self.video),
                "video_frames": self.video_frames, "video_writer": self.video_writer, "live": self.live,
                "stats": self.stats.to_dict(), "accuracy": acc, "notes": list(self.notes)}


# ---- steps -----------------------------------------------------------------------------------------
def resolve_bundle(name_or_path: str) -> Bundle:
    """A bundle path, or a shipped name; a missing shipped bundle says how to make it."""
    from .paths import shipped_bundle

    p = Path(name_or_path)
    if p.exists():
        return Bundle.open(p)
    if os.sep not in name_or_path and not name_or_path.endswith((".edgeseg", ".zip")):
        found = shipped_bundle(name_or_path)
        if found is not None:
            return Bundle.open(found)
        if name_or_path not in _CALIB:  # not a default bundle: a typo, or a name of something else
            import difflib

            from .paths import shipped_bundle_names

            names = shipped_bundle_names()
            close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.6)
            raise BundleError(f"bundle {name_or_path!r} is neither a path nor a shipped bundle"
                              + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""),
                              fix=f"shipped bundles: {', '.join(names) or '(none in this installation)'}; or pass "
                                  "--bundle PATH to a bundle directory or .zip of yours; or, if it is a default model "
                                  f"of tools/train_default.py, create it: python tools/train_default.py {name_or_path}")
        raise BundleError(
            f"the default bundle {name_or_path!r} is not in this installation (edgeseg/zoo/{name_or_path}.edgeseg is missing)",
            fix=f"create it: python tools/train_default.py {name_or_path}  (then add INT8: edgeseg quantize "
                f"edgeseg/zoo/{name_or_path}.edgeseg --calib {_CALIB.get(name_or_path, 'RECIPE_OR_SOURCE')} --target cpu), "
                "or pass --bundle PATH to a bundle of yours",
        )
    raise BundleError(f"bundle {name_or_path} does not exist", fix="pass --bundle with a bundle directory, .zip or shipped name")


def choose_precision(bundle: Bundle, wanted: str) -> tuple[str, str | None]:
    """``wanted`` if the bundle has a model of that precision, else fp32 with a note saying so."""
    have = {m.precision for m in bundle.manifest.models}
    if wanted == "auto" or wanted in have or (wanted == "bf16" and "fp32" in have):
        return wanted, None
    if "fp32" in have:
        return "fp32", (f"bundle {bundle.name!r} has no {wanted.upper()} model; running FP32 instead "
                        f"(add one with: edgeseg quantize {bundle.root} --calib "
                        f"{_CALIB.get(bundle.name, 'RECIPE_OR_SOURCE')} --target cpu)")
    raise BundleError(f"bundle {bundle.root} has neither a {wanted} nor an fp32 model (it has: {', '.join(sorted(have)) or 'none'})")


def demo_source(opts: DemoOptions, full_truth: bool = False) -> tuple[str, int | None]:
    """(source URI, max_frames for the pipeline). ``full_truth``: the generated frames carry their
    panoptic truth too."""
    from .stream.sources.synthetic import check_size, synthetic_uri

    if opts.frames is not None and opts.frames < 1:
        raise InputError(f"--frames must be >= 1, got {opts.frames}")
    if not (math.isfinite(opts.fps) and 0 < opts.fps <= 1000):
        raise InputError(f"--fps must be a frame rate above 0 and at most 1000, got {opts.fps:g}", fix="e.g. --fps 25")
    if opts.source is None:
        check_size(opts.size or DEFAULT_SIZE, "--size")
        return synthetic_uri(opts.seed, opts.size or DEFAULT_SIZE, opts.fps, opts.frames or DEFAULT_FRAMES,
                             truth="full" if full_truth else None), None
    if opts.size is not None:
        raise InputError("--size sets the size of the generated stream; it does not apply to --source",
                         fix="leave out --size, or leave out --source to run the generated stream")
    return opts.source, opts.frames


def view_command(video: Path) -> str:
    """A command that plays the video with a player installed here (ffplay when none is found)."""
    import shutil

    for player, args in (("ffplay", "-autoexit"), ("gst-play-1.0", ""), ("mpv", ""), ("vlc", "")):
        if shutil.which(player):
            return " ".join(x for x in (player, args, str(video)) if x)
    return f"ffplay {video}"


def hints(opts: DemoOptions, video: Path, bundle: str, scored: bool) -> tuple[str, ...]:
    notes = [f"view the video: {view_command(video)}  (or open it in any video player)"]
    if opts.source is None and CAMERA.exists():
        notes.append(f"a camera is present: edgeseg demo --source v4l2://{CAMERA} --bundle road")
    if opts.source is None:
        notes.append("your own video: edgeseg demo --source FILE_OR_URI --bundle road")
    elif bundle == DEFAULT_BUNDLE and not scored:
        notes.append("the shapes model knows synthetic scenes only; for road scenes pass --bundle road")
    return tuple(notes)


def run_demo(opts: DemoOptions = DemoOptions()) -> DemoResult:
    """Run the demo (see the module docstring); writes ``OUT/demo.mp4`` and ``OUT/stats.json``."""
    from .predictor import load
    from .stream.api import StreamOptions, build_pipeline
    from .stream.sinks import Mp4Sink

    bundle = resolve_bundle(opts.bundle)
    precision, note = choose_precision(bundle, opts.precision)
    source, max_frames = demo_source(opts, full_truth=bundle.manifest.task == "panoptic")
    out = Path(opts.out)
    video, stats_json = out / "demo.mp4", out / "stats.json"
    sopts = StreamOptions(source=source, sink=str(video), realtime=opts.realtime, max_frames=max_frames,
                          source_backend=opts.source_backend)
    predictor = load(bundle, backend=opts.backend, precision=precision, target=opts.target, device=opts.device,
                     threads=opts.threads)
    truth = GroundTruthSink(predictor.classes, task=bundle.manifest.task)
    with predictor:
        pipe = build_pipeline(sopts, predictor=predictor, extra_sinks=(truth,))
        stats = pipe.run()
    mp4 = next(s for s in pipe.sinks if isinstance(s, Mp4Sink))
    scores = truth.scores()
    notes = ((note,) if note else ()) + hints(opts, video, opts.bundle, scores is not None)
    if scores is not None and truth.task == "semantic" and not truth.shared_classes:
        notes += (f"the bundle's classes share no name with the ground truth's ({', '.join(truth.truth_classes)}): "
                  "scored by class id",)
    result = DemoResult(bundle=bundle.name, bundle_path=str(bundle.root), precision=predictor.runner.precision,
                        backend=predictor.backend, source=source, video=video, video_frames=mp4.frames,
                        video_writer=mp4.backend, stats_json=stats_json, stats=stats, accuracy=scores, notes=notes,
                        live=pipe.source.live)
    write_json(stats_json, result.to_dict())
    return result


# ---- text ------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def format_report(r: DemoResult) -> str:
    """The lines ``edgeseg demo`` prints."""
    s, e = r.stats, r.stats.end_to_end
    inf = s.stages.get("inference")
    lines = [
        f"edgeseg demo: bundle {r.bundle} ({r.precision.upper()}, {r.backend}) on {r.source}",
        f"  speed:    {s.processed} frames in {s.wall_s:.1f} s = {s.fps:.1f} fps; drops {s.drops}, errors {s.errors}",
        f"  latency:  end-to-end p50 {e.p50_ms:.1f} ms, p95 {e.p95_ms:.1f} ms, p99 {e.p99_ms:.1f} ms"
        + (f"; inference p50 {inf.p50_ms:.1f} ms, p99 {inf.p99_ms:.1f} ms" if inf is not None and inf.count else ""),
        "            per stage p50: " + ", ".join(f"{k} {v.p50_ms:.1f} ms" for k, v in s.stages.items() if v.count),
    ]
    if not r.live:
        lines.append("            (end-to-end includes queueing: frames are read as fast as the pipeline takes them; "
                     "--realtime paces them like a camera)")
    a = r.accuracy
    if a is not None and hasattr(a, "pq"):
        per = ", ".join(f"{c.name or c.category_id} {_pct(c.pq)}" for c in a.per_class)
        lines += [f"  accuracy: PQ {_pct(a.all.pq)} (things {_pct(a.things.pq)}, stuff {_pct(a.stuff.pq)}), SQ "
                  f"{_pct(a.all.sq)}, RQ {_pct(a.all.rq)} over {a.num_images} frames, against the generator's exact "
                  "ground truth", f"            PQ per class: {per}"]
    elif a is not None:
        per = ", ".join(f"{n} {_pct(v)}" for n, v in zip(a.class_names(), a.per_class_iou))
        lines += [f"  accuracy: mIoU {_pct(a.miou)}, pixel accuracy {_pct(a.pixel_acc)}, mean class accuracy "
                  f"{_pct(a.macc)} over {a.num_images} frames, against the generator's exact ground truth",
                  f"            IoU per class: {per}"]
    else:
        lines.append("  accuracy: not measured (this source has no ground truth)")
    lines += [f"  output:   {r.video} ({r.video_frames} frames, written with {r.video_writer}); stats: {r.stats_json}"]
    lines += [f"  note:     {n}" for n in r.notes]
    return "\n".join(lines)


__all__ = ["DemoOptions", "DemoResult", "GroundTruthSink", "run_demo", "format_report", "resolve_bundle",
           "choose_precision", "DEFAULT_BUNDLE", "DEFAULT_FRAMES", "DEFAULT_SIZE"]
