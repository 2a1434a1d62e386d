"""Typed per-image results. Frozen dataclasses; shapes and dtypes are part of the contract.

Conventions: masks and label maps are at the **original image size** ``[H, W]``; boxes are
``float32 [N, 4]`` ``(x1, y1, x2, y2)`` in absolute pixels of that image. ``==`` compares every field,
arrays whole (the same dtype, shape and values).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from typing import Any

import numpy as np

from ..errors import InputError
from .shapes import ImageShape


def _check(cond: bool, what: str, fix: str | None = None) -> None:
    if not cond:
        raise InputError(what, fix=fix)


def _arrays(obj: Any, *names: str) -> None:
    """Each named field is a numpy array (a list would fail later, far from here, or compare wrongly)."""
    for name in names:
        v = getattr(obj, name)
        _check(isinstance(v, np.ndarray), f"{type(obj).__name__}.{name} must be a numpy array, got {type(v).__name__}",
               fix=f"np.asarray({name}) with the dtype the {type(obj).__name__} docstring gives")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b)))
    return bool(a == b)


def _results_equal(a: Any, b: Any) -> Any:
    """Dataclass equality with arrays compared whole (same dtype, shape and values): the generated ``==``
    asks numpy for the truth of an elementwise comparison and raises."""
    if a is b:
        return True
    if type(a) is not type(b):
        return NotImplemented
    return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if f.compare)


@dataclass(frozen=True, eq=False)  # its own __eq__ (arrays): unhashable, as a mutable value would be
class SemanticResult:
    """Per-pixel classes.

    labels:     integer ``[H, W]`` class ids, never negative (uint8 when there are at most 256 classes, else int32).
    confidence: optional ``float32 [H, W]`` probability of the chosen class.
    classes:    class names, index = class id.
    """

    labels: np.ndarray
    classes: tuple[str, ...] = ()
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.labels, np.ndarray) and self.labels.ndim == 2, "SemanticResult.labels must be [H, W]")
        _check(np.issubdtype(self.labels.dtype, np.integer), "SemanticResult.labels must be an integer array")
        if self.labels.dtype.kind == "i" and self.labels.size and (low := int(self.labels.min())) < 0:  # a pass for signed only
            raise InputError(f"SemanticResult.labels holds a negative class id ({low}): class ids are 0..N-1",
                             fix="give void or ignored pixels a class id of their own (e.g. 255, or len(classes)) "
                                 "instead of a negative one")
        if self.confidence is not None:
            _arrays(self, "confidence")
            _check(self.confidence.shape == self.labels.shape, "SemanticResult.confidence must match labels' shape")

    __eq__ = _results_equal

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the record ``edgeseg run --json-out`` writes per frame, masks as COCO RLE
        (:mod:`edgeseg.structures.records`)."""
        from .records import result_record

        return result_record(self)

    @property
    def shape(self) -> ImageShape:
        return ImageShape.of(self.labels)


def label_counts(labels: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Pixels per id of a label map: ``np.bincount(labels.ravel(), minlength)`` (int64), without its cast of every
    label to an 8-byte index for uint8 maps (1.15 GB for a 12000x12000 photo's; on every frame 0.76 ms at 960x540 where
    OpenCV's histogram takes 0.2). The histogram counts in float32, exact to 2**24 a bin: it goes by bands of rows."""
    a = np.asarray(labels)
    if a.dtype != np.uint8 or a.ndim != 2 or not a.size or a.shape[1] > 1 << 24:  # (a row past 2**24: one band inexact)
        return np.bincount(a.ravel(), minlength=minlength)
    import cv2

    hist = np.zeros(256, np.int64)
    rows = max(1, (1 << 24) // a.shape[1])
    for r in range(0, a.shape[0], rows):
        hist += cv2.calcHist([np.ascontiguousarray(a[r:r + rows])], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    present = np.flatnonzero(hist)
    return hist[:max(minlength, int(present[-1]) + 1 if present.size else 1)] if minlength <= 256 else \
        np.concatenate([hist, np.zeros(minlength - 256, np.int64)])


class _LazyMasks:
    """The ``masks`` field of :class:`InstanceResult` (a descriptor-typed dataclass field): what the
    constructor is given is kept as the materialised masks; reading it on a result built from
    ``mask_crops`` pastes the crops into ``bool [N, H, W]`` once and keeps that array."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return None  # the field's default
        cache = obj.__dict__.get("_masks_cache")
        if cache is None and obj.__dict__.get("mask_crops") is not None:
            cache = obj._materialise()
            cache.setflags(write=False)  # the crops stay the truth (records, overlays): an edit here would be lost
            obj.__dict__["_masks_cache"] = cache
        return cache

    def __set__(self, obj, value) -> None:
        obj.__dict__["_masks_cache"] = value


def _crop_shapes_ok(crops: tuple, bounds: np.ndarray, image: ImageShape) -> bool:
    b = np.asarray(bounds, np.int64)
    if len(b) and ((b[:, 0] < 0).any() or (b[:, 1] < 0).any() or (b[:, 2] > image.width).any()
                   or (b[:, 3] > image.height).any() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any()):
        return False
    want = np.stack([b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]], 1) if len(b) else np.zeros((0, 2), np.int64)
    got = np.array([c.shape if getattr(c, "ndim", 0) == 2 else (-1, -1) for c in crops], np.int64).reshape(-1, 2)
    return bool(np.array_equal(got, want))


@dataclass(frozen=True, eq=False)  # its own __eq__ (arrays): unhashable, as a mutable value would be
class InstanceResult:
    """Detected object instances, supporting boolean/integer indexing: ``r[r.scores > 0.5]``.

    boxes:   ``float32 [N, 4]`` xyxy absolute pixels.
    scores:  ``float32 [N]``.
    classes: ``int32 [N]`` class ids.
    masks:   ``bool [N, H, W]`` at image size, or None for box-only detectors. On a compact result
      (``mask_crops``, as the instance decoders give) it is pasted from the crops on first access
      and kept, read-only (the crops stay what records and overlays read: before, an edit of it was
      silently ignored by them); to edit masks: ``m = r.masks.copy()``, change ``m``, then
      ``dataclasses.replace(r, masks=m, mask_boxes=None)``. Consumers that only need each mask's
      pixels use :meth:`mask_crop` instead. A pickled compact result carries its crops only.
    image_shape: the image the pixels refer to.
    track_ids: optional ``int64 [N]`` identities across frames (video), -1 when unassigned.
    mask_boxes: optional ``int32 [N, 4]`` integer pixel bounds ``(x0, y0, x1, y1)`` (end-exclusive)
      that contain every true pixel of each mask, set by decoders so that consumers (RLE, overlays)
      touch only those pixels instead of ``N x H x W``; None: compute them from the masks.
    mask_crops: the compact form: one ``bool [y1 - y0, x1 - x0]`` array per instance covering
      exactly ``mask_boxes[i]`` (the mask is false outside it); needs ``mask_boxes``. Ignored when
      ``masks`` is given too (``masks`` is then the truth, e.g. after ``dataclasses.replace``).
      Not part of equality or the repr (``masks`` is).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    image_shape: ImageShape
    masks: np.ndarray | None = _LazyMasks()  # type: ignore[assignment]
    class_names: tuple[str, ...] = ()
    track_ids: np.ndarray | None = None
    mask_boxes: np.ndarray | None = None
    mask_crops: tuple[np.ndarray, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _arrays(self, "boxes", "scores", "classes")
        _check(isinstance(self.image_shape, ImageShape), f"InstanceResult.image_shape must be an ImageShape, "
               f"got {self.image_shape!r}", fix="ImageShape(height, width)")
        _check(self.scores.ndim == 1, f"InstanceResult.scores must be [N], got {list(self.scores.shape)}")
        n = len(self.scores)
        _check(self.boxes.shape == (n, 4), f"InstanceResult.boxes must be [{n}, 4], got {self.boxes.shape}")
        _check(self.classes.shape == (n,), f"InstanceResult.classes must be [{n}], got {self.classes.shape}")
        masks = self._masks_cache
        if masks is not None:
            _arrays(self, "masks")
            want = (n, self.image_shape.height, self.image_shape.width)
            _check(masks.shape == want, f"InstanceResult.masks must be {list(want)}, got {list(masks.shape)}")
            _check(masks.dtype == np.bool_, "InstanceResult.masks must be bool")
            if self.mask_crops is not None:  # masks win: crops given next to them may be stale
                object.__setattr__(self, "mask_crops", None)
        if self.track_ids is not None:
            _arrays(self, "track_ids")
            _check(self.track_ids.shape == (n,), "InstanceResult.track_ids must be [N]")
        if self.mask_boxes is not None:
            _arrays(self, "mask_boxes")
            _check(self.mask_boxes.shape == (n, 4), f"InstanceResult.mask_boxes must be [{n}, 4]")
        if self.mask_crops is not None:
            crops = tuple(self.mask_crops)
            object.__setattr__(self, "mask_crops", crops)
            _check(self.mask_boxes is not None, "InstanceResult.mask_crops needs mask_boxes (each crop's bounds)")
            _check(len(crops) == n, f"InstanceResult.mask_crops must hold {n} crops, got {len(crops)}")
            _check(all(isinstance(c, np.ndarray) and c.dtype == np.bool_ for c in crops),
                   "InstanceResult.mask_crops must be bool arrays")
            _check(_crop_shapes_ok(crops, self.mask_boxes, self.image_shape),
                   "InstanceResult.mask_crops[i] must be [y1 - y0, x1 - x0] of mask_boxes[i], inside the image")

    __eq__ = _results_equal

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the masks pasted from the crops (sent between processes: 23 KB instead of 1.9 MB for 9
        instances at 640x320); they are pasted again on first access."""
        state = dict(self.__dict__)
        if state.get("mask_crops") is not None:
            state.pop("_masks_cache", None)
        return state

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the record ``edgeseg run --json-out`` writes per frame, masks as COCO RLE
        (:mod:`edgeseg.structures.records`)."""
        from .records import result_record

        return result_record(self)

    @property
    def _masks_cache(self) -> np.ndarray | None:
        """The full-size masks if they exist (given, or materialised from the crops), else None:
        reading it never materialises."""
        return self.__dict__.get("_masks_cache")

    @property
    def has_masks(self) -> bool:
        """Whether there are masks (full-size or compact), without materialising them."""
        return self._masks_cache is not None or self.mask_crops is not None

    @property
    def is_compact(self) -> bool:
        """Whether the masks are held as crops only (``masks`` not materialised yet)."""
        return self._masks_cache is None and self.mask_crops is not None

    def _materialise(self) -> np.ndarray:
        h, w = self.image_shape.height, self.image_shape.width
        out = np.zeros((len(self.mask_crops), h, w), bool)
        for i, (crop, (x0, y0, x1, y1)) in enumerate(zip(self.mask_crops, self.mask_boxes.tolist())):
            out[i, y0:y1, x0:x1] = crop
        return out

    def mask_bounds(self, i: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` end-exclusive pixel bounds of mask ``i``'s true pixels (from
        ``mask_boxes`` when the decoder gave them, else from the mask; ``(0, 0, 0, 0)`` if empty)."""
        if not -len(self) <= int(i) < len(self):  # a box-only result answered (0, 0, 0, 0) for any i
            raise IndexError(f"instance {i} is out of range for {len(self)} instance(s)")
        if self.mask_boxes is not None:
            x0, y0, x1, y1 = (int(v) for v in self.mask_boxes[i])
            return x0, y0, x1, y1
        masks = self._masks_cache
        if masks is None:
            return 0, 0, 0, 0
        m = masks[i]
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if not len(rows):
            return 0, 0, 0, 0
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

    def mask_crop(self, i: int) -> tuple[int, int, int, int, np.ndarray]:
        """``(x0, y0, x1, y1, crop)``: mask ``i`` inside its bounds (:meth:`mask_bounds`), ``crop``
        ``bool [y1 - y0, x1 - x0]`` (a view when the masks are full-size; do not write to it); the mask
        is false outside. Never materialises ``masks``. Raises for box-only results."""
        if self.mask_crops is not None:  # the crops (also once materialised: same masks, cheaper)
            x0, y0, x1, y1 = self.mask_boxes[i].tolist()
            return x0, y0, x1, y1, self.mask_crops[i]
        masks = self._masks_cache
        _check(masks is not None, "InstanceResult.mask_crop: this result has no masks (box-only)")
        x0, y0, x1, y1 = self.mask_bounds(i)
        return x0, y0, x1, y1, masks[i, y0:y1, x0:x1]

    def iter_mask_crops(self):
        """``(x0, y0, x1, y1, crop)`` of every instance in order (:meth:`mask_crop`)."""
        if self.mask_crops is not None:  # the crops (also once materialised: same masks, cheaper)
            for (x0, y0, x1, y1), crop in zip(self.mask_boxes.tolist(), self.mask_crops):
                yield x0, y0, x1, y1, crop
            return
        for i in range(len(self)):
            yield self.mask_crop(i)

    def compact(self) -> "InstanceResult":
        """This result with its masks as crops (``mask_crops`` over ``mask_boxes``, computed as tight
        bounds when there are none); itself when already compact or box-only."""
        if self.mask_crops is not None or self._masks_cache is None:
            return self
        bounds = self.mask_boxes if self.mask_boxes is not None else \
            np.array([self.mask_bounds(i) for i in range(len(self))], np.int32).reshape(-1, 4)
        masks = self._masks_cache
        crops = tuple(masks[i, y0:y1, x0:x1].copy() for i, (x0, y0, x1, y1) in enumerate(bounds.tolist()))
        return InstanceResult(boxes=self.boxes, scores=self.scores, classes=self.classes, image_shape=self.image_shape,
                              class_names=self.class_names, track_ids=self.track_ids, mask_boxes=bounds,
                              mask_crops=crops)

    def replace(self, **changes: Any) -> "InstanceResult":
        """``dataclasses.replace`` that keeps a compact result compact when neither ``masks`` nor
        ``mask_boxes`` change (``dataclasses.replace`` reads ``masks``, which materialises them)."""
        if self.mask_crops is None or {"masks", "mask_boxes", "mask_crops"} & changes.keys():
            return dataclasses.replace(self, **changes)
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name != "masks"}
        return InstanceResult(**{**kw, **changes})

    def __len__(self) -> int:
        return int(len(self.scores))

    def _index(self, index: Any) -> Any:
        """``index`` as a slice or a 1-D integer/boolean array; an InputError for anything else (an
        out-of-range integer stays numpy's IndexError, which also ends ``for inst in result``)."""
        if isinstance(index, slice):
            return index
        idx = np.asarray(index)
        if idx.size == 0 and idx.dtype != np.bool_:
            idx = idx.astype(np.intp)  # [] selects nothing, as an empty integer array does
        n = len(self)
        if idx.dtype == np.bool_:
            _check(idx.shape == (n,) or (idx.shape == () and n == 1), f"a boolean index of an InstanceResult must have one value per instance ({n}), "
                   f"got shape {list(idx.shape)}", fix="index with a mask made from this result, e.g. r[r.scores > 0.5]")
        else:
            _check(np.issubdtype(idx.dtype, np.integer) and idx.ndim <= 1,
                   f"an InstanceResult is indexed by integers, a boolean mask or a slice, got {index!r:.60}",
                   fix="r[0], r[[0, 2]], r[r.scores > 0.5] or r[:5]")
        return idx[None] if idx.ndim == 0 else idx

    def __getitem__(self, index) -> "InstanceResult":
        idx = self._index(index)
        compact = self.mask_crops is not None  # stays compact (materialised or not), as cheap as the crops
        crops = None
        if compact:
            crops = tuple(self.mask_crops[j] for j in np.arange(len(self))[idx].tolist())
        masks = self._masks_cache
        return InstanceResult(
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            classes=self.classes[idx],
            image_shape=self.image_shape,
            masks=None if compact or masks is None else masks[idx],
            class_names=self.class_names,
            track_ids=None if self.track_ids is None else self.track_ids[idx],
            mask_boxes=None if self.mask_boxes is None else self.mask_boxes[idx],
            mask_crops=crops,
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


@dataclass(frozen=True, eq=False)  # its own __eq__ (arrays): unhashable, as a mutable value would be
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
        _arrays(self, "segment_ids")
        _check(self.segment_ids.ndim == 2, "PanopticResult.segment_ids must be [H, W]")
        _check(np.issubdtype(self.segment_ids.dtype, np.integer), "PanopticResult.segment_ids must be an integer array, "
               f"got {self.segment_ids.dtype}", fix="segment_ids.astype(np.int32)")
        object.__setattr__(self, "segments", tuple(self.segments))
        _check(all(isinstance(s, Segment) for s in self.segments), "PanopticResult.segments must be Segment objects",
               fix="Segment(id=..., category_id=..., isthing=...)")
        ids = [s.id for s in self.segments]
        _check(len(ids) == len(set(ids)), "PanopticResult.segments has duplicate ids")
        _check(0 not in ids, "segment id 0 is reserved for void")
        _check(all(i > 0 for i in ids), "PanopticResult segments' ids must be positive (0 and below: void pixels)",
               fix="number the segments 1, 2, ...")

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

    __eq__ = _results_equal

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the record ``edgeseg run --json-out`` writes per frame, masks as COCO RLE
        (:mod:`edgeseg.structures.records`)."""
        from .records import result_record

        return result_record(self)

    def semantic(self, void: int = 255) -> np.ndarray:
        """``int32 [H, W]`` category id per pixel (``void`` where unassigned)."""
        top = int(self.segment_ids.max(initial=0))
        if int(self.segment_ids.min(initial=0)) < 0 or top > max(1 << 24, self.segment_ids.size):
            return self._semantic_sparse(void)  # a table as long as the largest id would be huge, or -1 would wrap
        lut = np.full(top + 1, void, np.int32)
        for s in self.segments:
            if 0 <= s.id < len(lut):
                lut[s.id] = s.category_id
        return lut[self.segment_ids]

    def _semantic_sparse(self, void: int) -> np.ndarray:
        """:meth:`semantic` by searching the sorted segment ids: any integer ids (negative, or up to 2^63)."""
        ids = np.array([s.id for s in self.segments], np.int64)
        cats = np.array([s.category_id for s in self.segments], np.int32)
        order = np.argsort(ids)
        ids, cats = ids[order], cats[order]
        pos = np.minimum(np.searchsorted(ids, self.segment_ids), max(len(ids) - 1, 0))
        hit = (ids[pos] == self.segment_ids) if len(ids) else np.zeros(self.segment_ids.shape, bool)
        return np.where(hit, cats[pos] if len(ids) else void, void).astype(np.int32)


@dataclass(frozen=True, eq=False)  # its own __eq__ (arrays): unhashable, as a mutable value would be
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
        _arrays(self, "masks", "object_ids", "scores")
        _check(self.masks.ndim == 3 and self.masks.dtype == np.bool_, "TrackResult.masks must be bool [N, H, W]")
        _check(self.object_ids.shape == (self.masks.shape[0],), "TrackResult.object_ids must be [N]")

    __eq__ = _results_equal

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the record ``edgeseg run --json-out`` writes per frame, masks as COCO RLE
        (:mod:`edgeseg.structures.records`)."""
        from .records import result_record

        return result_record(self)

    @property
    def shape(self) -> ImageShape:
        return ImageShape(int(self.masks.shape[1]), int(self.masks.shape[2]))


@dataclass(frozen=True, eq=False)  # its own __eq__ (arrays): unhashable, as a mutable value would be
class PromptedResult:
    """A bundle's result and a prompt's propagated objects on the same frame (``edgeseg run --bundle B
    --prompt MASK.png``): ``result`` is what the bundle decoded (semantic, instance or panoptic; None
    when the bundle failed on this frame), ``objects`` the prompt's objects (:class:`TrackResult`)."""

    result: Any
    objects: TrackResult

    def __post_init__(self) -> None:
        _check(isinstance(self.objects, TrackResult), "PromptedResult.objects must be a TrackResult")

    __eq__ = _results_equal

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the record ``edgeseg run --json-out`` writes per frame, masks as COCO RLE
        (:mod:`edgeseg.structures.records`)."""
        from .records import result_record

        return result_record(self)
