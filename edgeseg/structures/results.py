"""Typed per-image results. Frozen dataclasses; shapes and dtypes are part of the contract.

Conventions: masks and label maps are at the **original image size** ``[H, W]``; boxes are
``float32 [N, 4]`` ``(x1, y1, x2, y2)`` in absolute pixels of that image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from typing import Any

import numpy as np

from ..errors import InputError
from .shapes import ImageShape


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise InputError(what)


@dataclass(frozen=True)
class SemanticResult:
    """Per-pixel classes.

    labels:     integer ``[H, W]`` class ids (uint8 when there are at most 256 classes, else int32).
    confidence: optional ``float32 [H, W]`` probability of the chosen class.
    classes:    class names, index = class id.
    """

    labels: np.ndarray
    classes: tuple[str, ...] = ()
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.labels, np.ndarray) and self.labels.ndim == 2, "SemanticResult.labels must be [H, W]")
        _check(np.issubdtype(self.labels.dtype, np.integer), "SemanticResult.labels must be an integer array")
        if self.confidence is not None:
            _check(self.confidence.shape == self.labels.shape, "SemanticResult.confidence must match labels' shape")

    @property
    def shape(self) -> ImageShape:
        return ImageShape.of(self.labels)


@dataclass(frozen=True)
class InstanceResult:
    """Detected object instances, supporting boolean/integer indexing: ``r[r.scores > 0.5]``.

    boxes:   ``float32 [N, 4]`` xyxy absolute pixels.
    scores:  ``float32 [N]``.
    classes: ``int32 [N]`` class ids.
    masks:   ``bool [N, H, W]`` at image size, or None for box-only detectors.
    image_shape: the image the pixels refer to.
    track_ids: optional ``int64 [N]`` identities across frames (video), -1 when unassigned.
    mask_boxes: optional ``int32 [N, 4]`` integer pixel bounds ``(x0, y0, x1, y1)`` (end-exclusive)
      that contain every true pixel of each mask, set by decoders so that consumers (RLE, overlays)
      touch only those pixels instead of ``N x H x W``; None: compute them from the masks.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    image_shape: ImageShape
    masks: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    track_ids: np.ndarray | None = None
    mask_boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.scores)
        _check(self.boxes.shape == (n, 4), f"InstanceResult.boxes must be [{n}, 4], got {self.boxes.shape}")
        _check(self.classes.shape == (n,), f"InstanceResult.classes must be [{n}], got {self.classes.shape}")
        if self.masks is not None:
            want = (n, self.image_shape.height, self.image_shape.width)
            _check(self.masks.shape == want, f"InstanceResult.masks must be {list(want)}, got {list(self.masks.shape)}")
            _check(self.masks.dtype == np.bool_, "InstanceResult.masks must be bool")
        if self.track_ids is not None:
            _check(self.track_ids.shape == (n,), "InstanceResult.track_ids must be [N]")
        if self.mask_boxes is not None:
            _check(self.mask_boxes.shape == (n, 4), f"InstanceResult.mask_boxes must be [{n}, 4]")

    def mask_bounds(self, i: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` end-exclusive pixel bounds of mask ``i``'s true pixels (from
        ``mask_boxes`` when the decoder gave them, else from the mask; ``(0, 0, 0, 0)`` if empty)."""
        if self.mask_boxes is not None:
            x0, y0, x1, y1 = (int(v) for v in self.mask_boxes[i])
            return x0, y0, x1, y1
        if self.masks is None:
            return 0, 0, 0, 0
        m = self.masks[i]
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if not len(rows):
            return 0, 0, 0, 0
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

    def __len__(self) -> int:
        return int(len(self.scores))

    def __getitem__(self, index) -> "InstanceResult":
        idx = np.asarray(index) if not isinstance(index, slice) else index
        if isinstance(idx, np.ndarray) and idx.ndim == 0:
            idx = idx[None]
        return InstanceResult(
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            classes=self.classes[idx],
            image_shape=self.image_shape,
            masks=None if self.masks is None else self.masks[idx],
            class_names=self.class_names,
            track_ids=None if self.track_ids is None else self.track_ids[idx],
            mask_boxes=None if self.mask_boxes is None else self.mask_boxes[idx],
        )

    @classmethod
    def empty(cls, image_shape: ImageShape, with_masks: bool = True) -> "InstanceResult":
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            classes=np.zeros((0,), np.int32),
            image_shape=image_shape,
            masks=np.zeros((0, image_shape.height, image_shape.width), bool) if with_masks else None,
        )


@dataclass(frozen=True)
class Segment:
    """One panoptic segment: ``id`` as it appears in the id map; ``isthing`` per COCO-panoptic."""

    id: int
    category_id: int
    isthing: bool
    area: int = 0
    score: float = 1.0


@dataclass(frozen=True)
class PanopticResult:
    """Panoptic segmentation: every pixel belongs to one segment (0 = void / unassigned).

    segment_ids: ``int32 [H, W]`` segment ids; ``segments`` describes each id.
    class_names: the model's classes; ``category_ids``: the dataset category id of each class (a
    ``Segment.category_id`` is one of them), empty when category ids are the class indices.
    """

    segment_ids: np.ndarray
    segments: tuple[Segment, ...] = ()
    class_names: tuple[str, ...] = ()
    category_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(self.segment_ids.ndim == 2, "PanopticResult.segment_ids must be [H, W]")
        ids = [s.id for s in self.segments]
        _check(len(ids) == len(set(ids)), "PanopticResult.segments has duplicate ids")
        _check(0 not in ids, "segment id 0 is reserved for void")

    @property
    def shape(self) -> ImageShape:
        return ImageShape.of(self.segment_ids)

    def class_index(self, category_id: int) -> int:
        """The class index of a category id (the id itself without ``category_ids``; -1 if unknown)."""
        if not self.category_ids:
            return int(category_id)
        try:
            return self.category_ids.index(int(category_id))
        except ValueError:
            return -1

    def class_name(self, category_id: int) -> str:
        i = self.class_index(category_id)
        return self.class_names[i] if 0 <= i < len(self.class_names) else str(category_id)

    def semantic(self, void: int = 255) -> np.ndarray:
        """``int32 [H, W]`` category id per pixel (``void`` where unassigned)."""
        lut = np.full(int(self.segment_ids.max(initial=0)) + 1, void, np.int32)
        for s in self.segments:
            if s.id < len(lut):
                lut[s.id] = s.category_id
        return lut[self.segment_ids]


@dataclass(frozen=True)
class TrackResult:
    """Video object masks propagated across frames.

    masks:     ``bool [N, H, W]`` one mask per tracked object.
    object_ids: ``int64 [N]`` stable ids given at the prompt (or by the tracker).
    scores:    ``float32 [N]`` confidence of each mask on this frame.
    """

    masks: np.ndarray
    object_ids: np.ndarray
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __post_init__(self) -> None:
        _check(self.masks.ndim == 3 and self.masks.dtype == np.bool_, "TrackResult.masks must be bool [N, H, W]")
        _check(self.object_ids.shape == (self.masks.shape[0],), "TrackResult.object_ids must be [N]")

    @property
    def shape(self) -> ImageShape:
        return ImageShape(int(self.masks.shape[1]), int(self.masks.shape[2]))


@dataclass(frozen=True)
class PromptedResult:
    """A bundle's result and a prompt's propagated objects on the same frame (``edgeseg run --bundle B
    --prompt MASK.png``): ``result`` is what the bundle decoded (semantic, instance or panoptic; None
    when the bundle failed on this frame), ``objects`` the prompt's objects (:class:`TrackResult`)."""

    result: Any
    objects: TrackResult

    def __post_init__(self) -> None:
        _check(isinstance(self.objects, TrackResult), "PromptedResult.objects must be a TrackResult")
