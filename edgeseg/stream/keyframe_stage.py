"""Keyframe acceleration inside a stream: ``source -> KeyframeStage -> (track) -> (render) -> sinks``.

:class:`KeyframeStage` replaces the preprocess, inference and decode stages: it runs them, in its own
thread, on keyframes only and carries their result to the frames in between by optical flow
(:class:`~edgeseg.video.keyframe.Keyframes`: every ``interval`` frames at most, sooner when the flow
stops explaining the frame), with one :class:`~edgeseg.video.keyframe.Keyframes` per ``source_id``.
Propagation needs the previous frame's result to process the next, so the segmenter cannot run
ahead in a thread of its own: the stage is one stateful step, like the VOS stage (the layering rule
in docs/architecture.md). Results keep the bundle's type, so tracking, overlays and every sink work
unchanged; ``packet.timings["keyframe"]`` is 1.0 on keyframes and 0.0 on propagated frames.

Discontinuities (reconnect, seek, new file) reset that source's state: its next frame is a keyframe.
"""
from __future__ import annotations

import collections
from typing import Any

from ..structures.frame import Frame
from ..video.keyframe import KeyframeConfig, Keyframes, KeyframeStats
from .base import STAGES, Packet, Stage


@STAGES.register("keyframe")
class KeyframeStage(Stage):
    """``packet.frame`` -> ``packet.result`` with ``inner`` (preprocess, inference, decode stages) on keyframes."""

    name = "keyframe"

    def __init__(self, inner: list[Stage], config: KeyframeConfig | None = None):
        self.inner = list(inner)
        self.config = config or KeyframeConfig()
        self.states: dict[str, Keyframes] = {}
        self._closed: list[KeyframeStats] = []  # the counts of states dropped by close()
        self._packet: Packet | None = None

    @property
    def stats(self) -> dict[str, KeyframeStats]:
        """Per ``source_id``: frames, keyframes and why each ran."""
        return {sid: kf.stats for sid, kf in self.states.items()}

    def open(self) -> None:
        for st in self.inner:
            st.open()

    def _segment(self, rgb: Any) -> Any:
        packet = self._packet
        for st in self.inner:
            packet = st.process(packet)
        return packet.result

    def process(self, packet: Packet) -> Packet:
        sid = packet.frame.source_id
        kf = self.states.get(sid)
        if kf is None:
            kf = self.states[sid] = Keyframes(self._segment, self.config)
        self._packet = packet
        try:
            packet.result = kf(packet.frame.image)
        finally:
            self._packet = None
        return packet

    def on_discontinuity(self, frame: Frame) -> None:
        kf = self.states.get(frame.source_id)
        if kf is not None:
            kf.reset()

    def reset(self) -> None:
        for kf in self.states.values():
            kf.reset()

    def close(self) -> None:
        for st in self.inner:
            st.close()
        self._closed += [kf.stats for kf in self.states.values()]
        self.states.clear()

    def summary(self) -> dict[str, Any]:
        """Keyframe counts over all sources (also after the pipeline closed the stage), for the run's statistics."""
        total = collections.Counter(frames=0, keyframes=0, by_interval=0, by_motion=0)
        for s in [*self._closed, *(kf.stats for kf in self.states.values())]:
            total.update(frames=s.frames, keyframes=s.keyframes, by_interval=s.by_interval, by_motion=s.by_motion)
        frames = total["frames"]
        return {**dict(total), "key_fraction": total["keyframes"] / frames if frames else 0.0}
