"""The pipeline's processing stages, each run in its own thread.

``preprocess`` (image -> network feed), ``inference`` (any :class:`~edgeseg.backends.Runner`),
``decode`` (raw outputs -> typed result), ``render`` (overlay for video sinks). They take the pieces of
a :class:`~edgeseg.predictor.Predictor` (or any object with ``preprocess``, ``runner`` and
``postprocess``), so everything that belongs at load time happens once, in ``open()``.
"""
from __future__ import annotations

import collections
import functools
import logging
import math
import time
from typing import Any, Callable, Mapping

import numpy as np

from ..backends.base import batch_limit
from ..decode import decode
from ..errors import InputError
from .base import STAGES, Packet, Stage
from .overlay import Renderer

log = logging.getLogger("edgeseg.stream")


@STAGES.register("preprocess")
class PreprocessStage(Stage):
    """``packet.frame.image`` -> ``packet.feed, packet.meta`` with ``preprocess(rgb) -> (feed, meta)``."""

    name = "preprocess"

    def __init__(self, preprocess: Callable[[np.ndarray], tuple[Any, Any]]):
        self._fn = preprocess

    def process(self, packet: Packet) -> Packet:
        packet.feed, packet.meta = self._fn(packet.frame.image)
        return packet


@STAGES.register("inference")
class InferenceStage(Stage):
    """``packet.feed`` -> ``packet.outputs`` with ``runner.infer``. Activates the runner in ``open()``
    (session creation and warm-up stay out of the per-frame path) unless it is already active.

    ``max_batch > 1`` batches frames (from one or several sources) like DeepStream's stream muxer:
    up to ``max_batch`` frames, waiting at most ``batch_timeout_s`` after the first; feeds of equal
    shape are concatenated along the batch axis when the model's batch axis is dynamic, else run one
    by one, and in runs of at most the runner's own largest batch (``runner.max_batch``: a TensorRT
    engine's profile, which a Jetson's memory keeps small) when it has one. ``batch_sizes`` counts the
    batches actually run."""

    name = "inference"

    def __init__(self, runner: Any, max_batch: int = 1, batch_timeout_s: float = 0.01):
        self.runner = runner
        self.max_batch = max(1, int(max_batch))
        if not (isinstance(batch_timeout_s, (int, float)) and math.isfinite(batch_timeout_s) and batch_timeout_s >= 0):
            raise InputError(f"batch timeout must be a number of seconds >= 0, got {batch_timeout_s!r}",
                             fix="--batch-timeout-ms T with T a number >= 0 (e.g. 10)")
        self.batch_timeout_s = float(batch_timeout_s)
        self.batch_sizes: collections.Counter = collections.Counter()
        self._activated = False  # a runner of another kind (duck-typed): activated here, deactivated at close
        self._held = False
        self._can_batch = False
        self._runner_batch: int | None = None

    def open(self) -> None:
        if hasattr(self.runner, "hold"):  # an edgeseg runner counts its holders: freed when the last one leaves
            self.runner.hold()
            self._held = True
        elif hasattr(self.runner, "is_active") and not self.runner.is_active:
            self.runner.activate()
            self._activated = True
        try:
            self._can_batch = self._batchable()  # input specs are known once active; fixed for the run
            self._runner_batch = batch_limit(self.runner)
            if self.max_batch > 1 and not self._can_batch and getattr(self.runner, "input_specs", ()):
                # an audit: every shipped model has a batch of 1, and --max-batch 2 ran frame by frame, each frame
                # waiting up to the batch timeout for a batch that could never form, with nothing said
                log.warning("max batch %d has no effect: the model's batch size is fixed at 1, so frames run one by "
                            "one (edgeseg export --dynamic-batch makes a model that batches frames)", self.max_batch)
                self.max_batch = 1
        except BaseException:  # the pipeline does not close an element whose open() failed (a Ctrl-C here)
            self.close()
            raise

    def process(self, packet: Packet) -> Packet:
        feed: Mapping[str, np.ndarray] = packet.feed
        packet.outputs = self.runner.infer(feed)
        return packet

    def _batchable(self) -> bool:
        """Whether every input's batch axis is dynamic (then equal-shape feeds may be concatenated)."""
        specs = getattr(self.runner, "input_specs", ())
        return bool(specs) and all(not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in specs if s.shape)

    def process_batch(self, packets: list[Packet]) -> None:
        groups: list[list[Packet]] = []
        most = self._runner_batch or len(packets)
        for p in packets:  # consecutive packets with the same feed shapes run together, up to the runner's batch
            key = {k: v.shape for k, v in p.feed.items()}
            if groups and self._can_batch and len(groups[-1]) < most \
                    and {k: v.shape for k, v in groups[-1][0].feed.items()} == key:
                groups[-1].append(p)
            else:
                groups.append([p])
        for group in groups:
            self.batch_sizes[len(group)] += 1
            if len(group) == 1:
                group[0].outputs = self.runner.infer(group[0].feed)
                continue
            feed = {k: np.concatenate([p.feed[k] for p in group]) for k in group[0].feed}
            outputs = self.runner.infer(feed)
            for i, p in enumerate(group):
                p.outputs = {k: (v[i : i + 1] if getattr(v, "ndim", 0) and v.shape[0] == len(group) else v)
                             for k, v in outputs.items()}

    def close(self) -> None:
        if self._held:
            self._held = False
            self.runner.release()
        if self._activated:
            self.runner.deactivate()
            self._activated = False


@STAGES.register("decode")
class DecodeStage(Stage):
    """``packet.outputs`` -> ``packet.result`` with ``postprocess(outputs, meta, image=frame)``; frees the tensors."""

    name = "decode"

    def __init__(self, postprocess: Callable[[Any, Any], Any]):
        self._fn = postprocess

    def process(self, packet: Packet) -> Packet:
        packet.result = self._fn(packet.outputs, packet.meta, image=packet.frame.image)
        packet.feed = packet.outputs = None  # large tensors are not needed downstream
        return packet


@STAGES.register("render")
class RenderStage(Stage):
    """Draws the result on the frame into ``packet.rendered`` (for video, RTSP and display sinks), with a
    heads-up line: output fps (moving average) and the latency of this frame so far."""

    name = "render"

    def __init__(self, renderer: Renderer | None = None, hud: bool = True):
        self.renderer = renderer or Renderer()
        self.hud = hud
        self._last = None
        self._interval = None

    def reset(self) -> None:
        self._last = self._interval = None

    def process(self, packet: Packet) -> Packet:
        now = time.perf_counter()
        text = None
        if self.hud:
            if self._last is not None:
                dt = now - self._last
                self._interval = dt if self._interval is None else 0.9 * self._interval + 0.1 * dt
            self._last = now
            fps = 1.0 / self._interval if self._interval else 0.0
            text = f"{fps:5.1f} fps  {1e3 * (now - packet.t_created):6.1f} ms"
        packet.rendered = self.renderer(packet.frame.image, packet.result, text)
        return packet


def _keeping(postprocess: Callable[..., Any], predictor: Any, classes: Any) -> Callable[..., Any]:
    """``postprocess`` followed by :func:`~edgeseg.structures.filters.keep_classes` (the class list read once, here:
    a name the bundle does not have is refused before the first frame)."""
    from ..structures.filters import class_ids, keep_classes

    manifest = getattr(predictor, "manifest", None)
    if manifest is None:
        raise InputError("--classes needs the bundle's classes; a remote predictor decodes on the server",
                         fix="filter the results on the client, or leave --classes out")
    if manifest.task not in ("instance", "panoptic"):
        raise InputError(f"--classes keeps detections or segments of some classes; {manifest.name} is a "
                         f"{manifest.task} bundle (its label maps give every pixel a class)", fix="leave --classes out")
    keep = class_ids(classes, manifest.classes, getattr(getattr(predictor, "options", None), "category_ids", ()))

    def decode_and_keep(*args: Any, **kwargs: Any) -> Any:
        return keep_classes(postprocess(*args, **kwargs), keep)

    return decode_and_keep


def predictor_stages(predictor: Any, render: Renderer | None = None, max_batch: int = 1,
                     batch_timeout_s: float = 0.01, upsample: str | None = None,
                     score_threshold: float | None = None, classes: Any = None,
                     class_agnostic: bool | None = None) -> list[Stage]:
    """preprocess -> inference -> decode (-> render) for a predictor. ``upsample`` overrides a semantic
    bundle's decoder upsampling (``"logits"``: bilinear logits, accurate; ``"labels"``: nearest labels, fast);
    ``score_threshold`` an instance bundle's. Each is a field of the task's decoder options: asking for
    one the bundle's task does not have is an error naming the task. ``classes``: only these classes' detections
    or segments are kept (:mod:`~edgeseg.structures.filters`; refused for a semantic bundle)."""
    postprocess = predictor.postprocess
    overrides = {k: v for k, v in (("upsample", upsample), ("score_threshold", score_threshold),
                                   ("class_agnostic", class_agnostic)) if v is not None}
    if overrides:
        manifest = getattr(predictor, "manifest", None)
        options = getattr(predictor, "options", None)
        if manifest is None or options is None:
            raise InputError(f"{', '.join(overrides)} cannot be changed for this predictor (a remote one decodes on the server)",
                             fix="start the server with them: edgeseg serve BUNDLE --score-threshold T / --upsample "
                                 "labels; or leave them unset")
        from ..structures.decoder_options import overridden

        opts = overridden(options, overrides, manifest.task, manifest.name)
        postprocess = functools.partial(decode, manifest=manifest, options=opts)
    if classes is not None:
        postprocess = _keeping(postprocess, predictor, classes)
    stages: list[Stage] = [PreprocessStage(predictor.preprocess), InferenceStage(predictor.runner, max_batch, batch_timeout_s),
                           DecodeStage(postprocess)]
    if render is not None:
        stages.append(RenderStage(render))
    return stages
