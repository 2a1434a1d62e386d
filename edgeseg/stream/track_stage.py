"""Instance identities inside a stream: ``source -> preprocess -> inference -> decode -> TrackStage -> sinks``.

:class:`TrackStage` follows the decode stage of an instance or panoptic bundle and gives every object
an id that stays with it across frames (:class:`~edgeseg.video.Tracker`: mask IoU with constant-velocity
prediction, tracks surviving ``max_age`` frames unseen), with one tracker per ``source_id``, so the
sources of a multi-source stream never share ids or tracks. ``packet.result`` stays the decoder's
type: an :class:`~edgeseg.structures.InstanceResult` with ``track_ids`` (JSON lines ``track_id``,
overlay ``#id``), or a :class:`~edgeseg.structures.PanopticResult` whose thing segments keep their
segment id (JSON lines ``id``; stuff: ``category_id + 1``).

Discontinuities (a reconnect, a seek, a new file; ``frame.meta["discontinuity"]``): the objects
before the jump have nothing to do with those after it, so that source's tracker forgets its tracks
(:meth:`~edgeseg.video.Tracker.reset`; counted in ``resets``); ids are never reused, so an id on the
far side of a jump is a new object. A frame without a result (a stage failed on it) is not seen by the
tracker: its tracks age by one frame more at the next result.
"""
from __future__ import annotations

import collections
import logging
from typing import Any

from ..errors import InputError
from ..structures import InstanceResult, PanopticResult
from ..structures.frame import Frame
from ..video import Tracker
from .base import STAGES, Packet, Stage

log = logging.getLogger("edgeseg.stream")
TRACKABLE_TASKS = ("instance", "panoptic")


def check_trackable(predictor: Any) -> None:
    """Refuse, before the stream starts, a predictor whose results have no objects to track."""
    manifest = getattr(predictor, "manifest", None)
    task = getattr(manifest, "task", None)
    if task not in TRACKABLE_TASKS:
        what = f"{manifest.name!r} is a {task} bundle" if manifest is not None else "this predictor's task is unknown"
        raise InputError(f"--track follows objects of instance or panoptic results; {what}",
                         fix="pass an instance or panoptic bundle (e.g. --bundle shapes-instance), or drop --track")


@STAGES.register("track")
class TrackStage(Stage):
    """``packet.result`` -> the same result with stable ids, one :class:`~edgeseg.video.Tracker` per source.

    ``tracker_options`` are :class:`~edgeseg.video.Tracker` keyword arguments (``iou_threshold``,
    ``max_age``, ``motion``, ...). ``resets`` counts, per ``source_id``, the discontinuities that
    dropped a source's tracks.
    """

    name = "track"

    def __init__(self, **tracker_options: Any):
        Tracker(**tracker_options)  # bad options fail here, before the stream starts
        self.tracker_options = tracker_options
        self.trackers: dict[str, Tracker] = {}
        self.resets: collections.Counter = collections.Counter()

    def process(self, packet: Packet) -> Packet:
        result = packet.result
        if not isinstance(result, (InstanceResult, PanopticResult)):
            raise InputError(f"the track stage got a {type(result).__name__}, not an instance or panoptic result",
                             fix="put the track stage after the decode stage of an instance or panoptic bundle")
        sid = packet.frame.source_id
        tracker = self.trackers.get(sid)
        if tracker is None:
            tracker = self.trackers[sid] = Tracker(**self.tracker_options)
        packet.result = tracker.update(result)
        return packet

    def on_discontinuity(self, frame: Frame) -> None:
        tracker = self.trackers.get(frame.source_id)
        if tracker is None or not tracker.tracks:
            return
        tracker.reset()
        self.resets[frame.source_id] += 1
        log.info("%s: discontinuity at frame %d: tracks forgotten, objects get new ids",
                 frame.source_id or "source", frame.index)

    def reset(self) -> None:
        for sid, tracker in self.trackers.items():
            if tracker.tracks:
                self.resets[sid] += 1
            tracker.reset()

    def close(self) -> None:
        self.trackers.clear()
