"""Keyframe acceleration inside a stream, pipelined:

    source -> keyframe-flow -> preprocess* -> inference* -> decode* -> keyframe -> (track) -> (render) -> sinks

(``*``: on keyframes only; other frames pass through untouched). The two halves of
:mod:`edgeseg.video.keyframe` run as stages of their own, each in its own thread like every stage:

* :class:`KeyframePlanStage` (``keyframe-flow``) decides which frames are keyframes and measures the
  flow from each frame back to the previous one, composed back to the keyframe. It needs the frames
  only, so it runs *ahead*: while the segmenter still works on keyframe k, the flows of frames k+1,
  k+2, ... are being computed on the other core.
* :class:`KeyframeOnly` wraps the bundle's preprocess, inference and decode stages so that they run
  on keyframes only, each still in its own thread (a keyframe's inference overlaps the next
  keyframe's preprocessing and the last one's decoding, as without keyframes).
* :class:`KeyframeCarryStage` (``keyframe``) keeps each source's keyframe result and carries it to
  the frames in between. Packets reach it in order, so a keyframe's result is always there before
  the frames that follow it.

Results keep the bundle's type, so tracking, overlays and every sink work unchanged; per packet,
``packet.keyplan`` tells whether it was a keyframe. One planner and one carrier per ``source_id``;
a discontinuity (reconnect, seek, new file) resets that source's state in both: its next frame is a
keyframe. When a keyframe fails (its error is counted like any frame's), the frames planned on it
cannot be carried: they are counted as errors too, and the carrier asks the planner for a keyframe
at once instead of at the next interval.
"""
from __future__ import annotations

import collections
from typing import Any

from ..errors import StreamError
from ..structures.frame import Frame
from ..video.keyframe import KeyframeCarrier, KeyframeConfig, KeyframePlanner, KeyframeStats
from .base import STAGES, Packet, PerSourceStage, Stage


def keyframe_stages(inner: list[Stage], config: KeyframeConfig | None = None) -> list[Stage]:
    """The stages that replace ``inner`` (preprocess, inference, decode) in a keyframe stream."""
    plan = KeyframePlanStage(config)
    return [plan, *(KeyframeOnly(st) for st in inner), KeyframeCarryStage(plan)]


@STAGES.register("keyframe-flow")
class KeyframePlanStage(PerSourceStage):
    """``packet.frame`` -> ``packet.keyplan`` (:class:`~edgeseg.video.keyframe.KeyPlan`): keyframe or not, and
    the flow that carries the keyframe's result to this frame. One :class:`KeyframePlanner` per source."""

    name = "keyframe-flow"

    def __init__(self, config: KeyframeConfig | None = None):
        super().__init__()
        self.config = config or KeyframeConfig()
        self._closed: list[KeyframeStats] = []  # the counts of planners dropped by close()

    def process(self, packet: Packet) -> Packet:
        planner = self.state(packet.frame.source_id, lambda: KeyframePlanner(self.config))
        packet.keyplan = planner(packet.frame.image)
        return packet

    def force_key(self, source_id: str) -> None:
        """The next frame of ``source_id`` is a keyframe (called from the carry stage's thread: a flag)."""
        planner = self.states.get(source_id)
        if planner is not None:
            planner.force_key()

    @property
    def stats(self) -> dict[str, KeyframeStats]:
        """Per ``source_id``: frames, keyframes and why each ran."""
        return {sid: p.stats for sid, p in self.states.items()}

    def close(self) -> None:
        self._closed += [p.stats for p in self.states.values()]
        super().close()

    def summary(self) -> dict[str, Any]:
        """Keyframe counts over all sources (also after the pipeline closed the stage), for the run's statistics."""
        total = collections.Counter(frames=0, keyframes=0, by_interval=0, by_motion=0, by_local=0)
        for s in [*self._closed, *(p.stats for p in self.states.values())]:
            total.update(frames=s.frames, keyframes=s.keyframes, by_interval=s.by_interval, by_motion=s.by_motion,
                         by_local=s.by_local)
        frames = total["frames"]
        return {**dict(total), "key_fraction": total["keyframes"] / frames if frames else 0.0}


class KeyframeOnly(Stage):
    """``inner`` on keyframes (and on packets no planner saw); other packets pass through untouched."""

    def __init__(self, inner: Stage):
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)

    def open(self) -> None:
        self.inner.open()

    def process(self, packet: Packet) -> Packet | None:
        plan = packet.keyplan
        return self.inner.process(packet) if plan is None or plan.key else packet

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> None:
        self.inner.reset()

    def on_discontinuity(self, frame: Frame) -> None:
        self.inner.on_discontinuity(frame)


@STAGES.register("keyframe")
class KeyframeCarryStage(PerSourceStage):
    """``packet.result``: the segmenter's on keyframes (kept), the keyframe's carried on the frames between.
    One :class:`KeyframeCarrier` per source."""

    name = "keyframe"

    def __init__(self, plan: KeyframePlanStage):
        super().__init__()
        self.plan = plan

    def process(self, packet: Packet) -> Packet:
        plan = packet.keyplan
        if plan is None:
            raise StreamError("a frame reached the keyframe stage without a keyframe plan",
                              fix="build keyframe streams with keyframe_stages() (keyframe-flow first)")
        sid = packet.frame.source_id
        carrier = self.state(sid, KeyframeCarrier)
        if plan.key:
            carrier.keyframe(plan, packet.result)
            return packet
        try:
            packet.result = carrier.carry(plan, packet.frame.image.shape[:2])
        except StreamError:
            self.plan.force_key(sid)
            raise
        return packet

    def summary(self) -> dict[str, Any]:
        """The planner's keyframe counts (:meth:`KeyframePlanStage.summary`)."""
        return self.plan.summary()
