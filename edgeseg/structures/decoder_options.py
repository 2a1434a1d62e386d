"""Typed decoder options, one frozen dataclass per task, stored in the manifest's ``decoder`` field.

Like :class:`~edgeseg.structures.InputSpec`, the options are validated when a bundle is read (an
unknown key or a value out of range fails with a message naming the key), serialised with
:meth:`DecoderOptions.to_dict`, and overridden per call with :meth:`DecoderOptions.replace`::

    opts = decoder_options("instance", manifest.decoder)      # InstanceOptions
    opts = opts.replace(score_threshold=0.5)

Each task registers its class in :data:`DECODER_OPTIONS` under the task name; a decoder reads its
options from ``manifest.decoder_options`` and never from loose dictionary keys.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .._registry import Registry
from ..errors import InputError

DECODER_OPTIONS: Registry[type["DecoderOptions"]] = Registry("decoder options", error=InputError)


@dataclass(frozen=True)
class DecoderOptions:
    """Base class: ``from_dict`` rejects unknown keys, ``validate`` checks ranges."""

    task: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks of the task's fields (the base class has no fields to check)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DecoderOptions":
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown {cls.task} decoder option(s): {', '.join(unknown)}",
                             fix=f"the {cls.task} decoder takes: {', '.join(sorted(known))}")
        return cls(**d)

    def replace(self, **overrides: Any) -> "DecoderOptions":
        """A copy with the given fields changed; ``None`` values keep the current field."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown {self.task} decoder option(s): {', '.join(unknown)}",
                             fix=f"the {self.task} decoder takes: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes) if changes else self


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= float(value) <= hi):
        raise InputError(f"decoder option {name} must be within {lo:g}..{hi:g}, got {value!r}")


@DECODER_OPTIONS.register("semantic")
@dataclass(frozen=True)
class SemanticOptions(DecoderOptions):
    """``upsample``: ``logits`` (bilinear logits, then argmax: exact) or ``labels`` (argmax, then
    nearest: fast). ``confidence``: also return the chosen class's probability. ``logits_layout``:
    ``NCHW``/``NHWC``, or None to infer it from the class count."""

    task: ClassVar[str] = "semantic"
    upsample: Literal["logits", "labels"] = "logits"
    confidence: bool = False
    logits_layout: Literal["NCHW", "NHWC"] | None = None

    def validate(self) -> None:
        if self.upsample not in ("logits", "labels"):
            raise InputError(f"decoder option upsample must be logits or labels, got {self.upsample!r}")
        if self.logits_layout not in (None, "NCHW", "NHWC"):
            raise InputError(f"decoder option logits_layout must be NCHW or NHWC, got {self.logits_layout!r}")


INSTANCE_LAYOUTS = ("prototype", "dense", "roi")


@DECODER_OPTIONS.register("instance")
@dataclass(frozen=True)
class InstanceOptions(DecoderOptions):
    """How raw instance outputs become an :class:`InstanceResult`.

    layout:
      ``prototype``: one ``[1, 4+nc(+1)+nm, N]`` (or transposed) output of boxes, class scores
      (``prototype_format`` ``yolov8``: ``cx, cy, w, h, nc scores, nm coefficients``; ``yolov5``:
      an objectness score after the box) and one ``[1, nm, h, w]`` prototype output (YOLACT-style
      models, Ultralytics YOLOv5/v8/v11-seg exports).
      ``dense``: ``scores [1, K]``, ``classes [1, K]``, ``masks [1, K, h, w]`` probabilities covering
      the whole network input (SOLO), optional ``boxes [1, K, 4]`` (network pixels, xyxy).
      ``roi``: ``boxes [1, K, 4]``, ``scores``, ``classes`` and ``masks [1, K, M, M]`` probabilities
      covering each box (Mask R-CNN).
    score_threshold: detections below it are dropped. iou_threshold: NMS IoU (prototype layout;
    dense/roi models run their NMS in the graph). max_detections: cap after NMS.
    mask_threshold: probability above which a pixel belongs to the mask. class_agnostic: NMS
    across classes. pre_nms_top_k: candidates kept (by score) before NMS.
    """

    task: ClassVar[str] = "instance"
    layout: Literal["prototype", "dense", "roi"] = "dense"
    score_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_detections: int = 100
    mask_threshold: float = 0.5
    class_agnostic: bool = False
    pre_nms_top_k: int = 30000
    prototype_format: Literal["yolov8", "yolov5"] = "yolov8"
    num_masks: int = 32

    def validate(self) -> None:
        if self.layout not in INSTANCE_LAYOUTS:
            raise InputError(f"decoder option layout must be one of {', '.join(INSTANCE_LAYOUTS)}, got {self.layout!r}")
        if self.prototype_format not in ("yolov8", "yolov5"):
            raise InputError(f"decoder option prototype_format must be yolov8 or yolov5, got {self.prototype_format!r}")
        _in_range("score_threshold", self.score_threshold, 0.0, 1.0)
        _in_range("iou_threshold", self.iou_threshold, 0.0, 1.0)
        _in_range("mask_threshold", self.mask_threshold, 0.0, 1.0)
        for name in ("max_detections", "pre_nms_top_k", "num_masks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"decoder option {name} must be a positive integer, got {v!r}")


def decoder_options(task: str, d: dict[str, Any] | None = None) -> DecoderOptions:
    """The typed options of ``task`` from a manifest's ``decoder`` dictionary (validated)."""
    if task not in DECODER_OPTIONS:
        return DecoderOptions()
    return DECODER_OPTIONS.get(task).from_dict(d)
