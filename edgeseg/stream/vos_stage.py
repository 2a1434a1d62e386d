"""Video object mask propagation inside a stream: ``source -> VosStage -> sinks``.

:class:`VosStage` carries the objects of one prompt (an id mask: 0 background, k object k) through
every source of the stream, with one :class:`~edgeseg.video.Propagator` per ``source_id``: the first
frame of a source starts its propagator from the prompt (that frame's result is the prompt itself),
each later frame is a ``step``; ``packet.result`` is a :class:`~edgeseg.structures.TrackResult`, which
the JSON lines (RLE per object), PNG (object ids) and video (per-object overlay) sinks handle.

After a bundle's stages (``with_bundle=True``: ``edgeseg run --bundle B --prompt MASK.png``) the stage
keeps the bundle's result and adds the objects: ``packet.result`` becomes a
:class:`~edgeseg.structures.PromptedResult` (the JSON lines get ``"objects"``, the overlay draws both,
the PNGs stay the bundle's). A frame the bundle failed on is an error frame for both (the pipeline
runs no later stage on it); the objects then move on from the last good frame to the next one.

Discontinuities (a reconnect, a seek, a new file; ``frame.meta["discontinuity"]``): the objects are
lost, since the prompt only describes them where they were. There is no way to prompt again inside
the stream, so the stage forgets that source's state (logged as a warning) and re-starts from the
same prompt on the frame after the jump, which is right when the scene starts over (a looped file,
a camera that came back) and wrong when the objects moved. Frames of another size than the frames
the prompt was first used on are not re-started: they are error frames (no result), until the size
comes back. A prompt that fits no frame (another aspect ratio) is the
:class:`~edgeseg.errors.InputError` of :func:`~edgeseg.video.prompt.prompt_ids`, on each frame.
"""
from __future__ import annotations

import collections
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import ImageShape, PromptedResult
from ..structures.frame import Frame
from ..video import Propagator, PropagatorConfig, prompt_ids
from .base import STAGES, Packet, Stage

log = logging.getLogger("edgeseg.stream")


def read_prompt(prompt: Any) -> tuple[np.ndarray, str]:
    """A prompt given as a path (PNG of object ids; DAVIS palette, 0/255 and colour-coded masks work) or an array ->
    ``(ids [H, W], name for messages)``; an empty prompt is refused here (before the stream starts)."""
    if isinstance(prompt, (str, os.PathLike)):
        from ..data.davis import read_prompt_mask

        ids, what = read_prompt_mask(Path(prompt)), f"prompt {prompt}"
    else:
        ids, what = np.asarray(prompt), "prompt"
    ids = prompt_ids(ids, ImageShape(*ids.shape[:2]) if ids.ndim >= 2 else ImageShape(1, 1), what=what)
    return ids, what


@STAGES.register("vos")
class VosStage(Stage):
    """``packet.frame`` -> ``packet.result`` (:class:`~edgeseg.structures.TrackResult`), one propagator per source.

    ``starts``/``resets`` count, per ``source_id``, the (re)starts from the prompt and the discontinuities
    that dropped a running propagator.
    """

    name = "vos"

    def __init__(self, prompt: Any, config: PropagatorConfig | None = None, with_bundle: bool = False):
        self.prompt, self.prompt_name = read_prompt(prompt)
        self.with_bundle = with_bundle
        self.config = config
        self.propagators: dict[str, Propagator] = {}
        self._shapes: dict[str, ImageShape] = {}  # the frame size each source was first started at
        self.starts: collections.Counter = collections.Counter()
        self.resets: collections.Counter = collections.Counter()

    def process(self, packet: Packet) -> Packet:
        if not self.with_bundle:
            return self._objects(packet)
        bundle_result = packet.result
        packet.result = None
        self._objects(packet)
        packet.result = PromptedResult(bundle_result, packet.result)
        return packet

    def _objects(self, packet: Packet) -> Packet:
        frame = packet.frame
        prop = self.propagators.get(frame.source_id)
        if prop is None:
            prop = self.propagators[frame.source_id] = Propagator(self.config)
        if prop.started:
            packet.result = prop.step(frame.image)
            return packet
        first = self._shapes.get(frame.source_id)
        if first is not None and frame.shape != first:
            raise InputError(
                f"{frame.source_id or 'the source'}: frames are {frame.shape.width}x{frame.shape.height} after a "
                f"discontinuity, the prompt was used on {first.width}x{first.height} frames: its objects are lost",
                fix="run again with a prompt drawn on the new frames")
        if first is None and frame.index > 0:  # the first frames failed to decode (or were dropped)
            log.warning("%s: the prompt %s starts the objects on frame %d, the first frame that reached the tracker; "
                        "it is meant for frame 0: expect its objects to be off by what moved since",
                        frame.source_id or "source", self.prompt_name, frame.index)
        packet.result = prop.start(frame.image, prompt_ids(self.prompt, frame.shape, what=self.prompt_name))
        self._shapes.setdefault(frame.source_id, frame.shape)
        self.starts[frame.source_id] += 1
        return packet

    def on_discontinuity(self, frame: Frame) -> None:
        prop = self.propagators.get(frame.source_id)
        if prop is None or not prop.started:
            return
        prop.reset()
        self.resets[frame.source_id] += 1
        log.warning("%s: discontinuity at frame %d: the tracked objects are lost; re-starting from the prompt "
                    "(a prompt cannot be given again inside a stream)", frame.source_id or "source", frame.index)

    def reset(self) -> None:
        for sid, prop in self.propagators.items():
            if prop.started:
                self.resets[sid] += 1
            prop.reset()

    def close(self) -> None:
        self.propagators.clear()
