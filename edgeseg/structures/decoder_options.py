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
import difflib
import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from .._registry import Registry
from ..errors import InputError

DECODER_OPTIONS: Registry[type["DecoderOptions"]] = Registry("decoder options", error=InputError)


@dataclass(frozen=True)
class DecoderOptions:
    """Base class: ``from_dict`` rejects unknown keys, ``validate`` checks ranges."""

    task: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # numpy scalars -> Python numbers; wrong types named here
            object.__setattr__(self, f.name, _typed(f.name, f.type, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Range checks of the task's fields (the base class has no fields to check)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DecoderOptions":
        d = dict(d or {})
        _refuse_unknown(cls, d)
        return cls(**d)

    def replace(self, **overrides: Any) -> "DecoderOptions":
        """A copy with the given fields changed; ``None`` values keep the current field."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        _refuse_unknown(type(self), changes)
        return dataclasses.replace(self, **changes) if changes else self


def _typed(name: str, kind: Any, value: Any) -> Any:
    """A ``float``/``int``/``bool`` field's value as that Python type (numpy scalars too), or an InputError
    naming the option: a string, a list or ``"no"`` must not reach a decoder (``"no"`` is true)."""
    if kind == "float":
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise InputError(f"decoder option {name} must be a number, got {value!r}", fix=f"e.g. {name}=0.5")
    if kind == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # anything else: validate() names the range
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
            return bool(value)
        raise InputError(f"decoder option {name} must be true or false, got {value!r}", fix=f"{name}=True or {name}=False")
    return value


def _refuse_unknown(cls: type[DecoderOptions], given: dict[str, Any]) -> None:
    """An InputError for keys that are not fields of ``cls``, with the close name or the task they belong to."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        other = [t for t in DECODER_OPTIONS if t != cls.task and name in DECODER_OPTIONS.get(t).__dataclass_fields__]
        close = difflib.get_close_matches(name, known, n=1)
        if other:
            hints.append(f"{name} is an option of the {other[0]} decoder")
        elif close:
            hints.append(f"{name}: did you mean {close[0]}?")
    raise InputError(f"unknown {cls.task} decoder option(s): {', '.join(unknown)}" + "".join(f"; {h}" for h in hints),
                     fix=f"the {cls.task} decoder takes: {', '.join(known)}")


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= float(value) <= hi):
        raise InputError(f"decoder option {name} must be within {lo:g}..{hi:g}, got {value!r}",
                         fix=f"give {name} a number from {lo:g} to {hi:g}")


@DECODER_OPTIONS.register("semantic")
@dataclass(frozen=True)
class SemanticOptions(DecoderOptions):
    """``upsample``: ``logits`` (bilinear logits, then argmax: exact) or ``labels`` (argmax, then
    nearest: fast). ``confidence``: also return the chosen class's probability. ``logits_layout``:
    ``NCHW``/``NHWC``, or None to infer it from the class count.

    ``crf_iterations`` > 0 refines the logits with a fully connected CRF (:mod:`edgeseg.decode.crf`,
    pydensecrf's model) at the logits' resolution, on the image resized to it; 0 (default) is off.
    ``crf_method``: ``lattice`` (permutohedral, as pydensecrf; seconds per 480x360 frame), ``exact``
    (O(N^2), tiny outputs only) or ``fast`` (an approximation for streams: mean field on a grid of
    long side about ``crf_fast_size`` pixels, then back to the logits' resolution). Smoothness
    kernel ``crf_gaussian_sxy``/``crf_gaussian_compat``, appearance kernel
    ``crf_bilateral_sxy``/``crf_bilateral_srgb``/``crf_bilateral_compat`` (pixels of the logits grid,
    0..255 colour units). Defaults 3/1 and 80/20/5 were chosen on the first 50 CamVid val frames (by
    name) for the ``road`` bundle (+2.5 mIoU there with pydensecrf); pydensecrf's common 3/3 and 80/13/10
    (:class:`~edgeseg.decode.crf.CRFParams`' defaults) lowered it. Protocol and the held-out figures:
    ``tools/bench/crf.py``.

    ``scores``: what the ``logits`` output holds: ``logits`` (the confidence is their softmax) or
    ``probabilities`` (non-negative class scores, e.g. an imported MaskFormer's class sums: the confidence is
    the chosen score over their sum; the class bias and the CRF read their ``log``).
    ``class_bias``: one number per class added to the logits before the argmax (and the CRF): a prior
    correction, e.g. of the lean towards rare classes that class-weighted training leaves (``road``'s,
    chosen on training frames by ``tools/bench/class_bias.py``); empty (default): none. Its length must
    be the bundle's class count (checked when a frame is decoded). Models whose graph ends in an argmax
    (a ``labels`` output) have no logits to bias: there it does nothing."""

    task: ClassVar[str] = "semantic"
    upsample: Literal["logits", "labels"] = "logits"
    confidence: bool = False
    logits_layout: Literal["NCHW", "NHWC"] | None = None
    scores: Literal["logits", "probabilities"] = "logits"
    crf_iterations: int = 0
    crf_method: Literal["lattice", "exact", "fast"] = "lattice"
    crf_fast_size: int = 128
    crf_gaussian_sxy: float = 3.0
    crf_gaussian_compat: float = 1.0
    crf_bilateral_sxy: float = 80.0
    crf_bilateral_srgb: float = 20.0
    crf_bilateral_compat: float = 5.0
    class_bias: tuple[float, ...] = ()

    def __post_init__(self) -> None:  # a JSON list -> a tuple of floats, before the range checks
        b = self.class_bias.tolist() if isinstance(self.class_bias, np.ndarray) and self.class_bias.ndim == 1 \
            else self.class_bias
        if isinstance(b, (str, bytes)) or not isinstance(b, (list, tuple)) or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in b):
            raise InputError(f"decoder option class_bias must be a list of finite numbers (one per class), got {b!r}")
        object.__setattr__(self, "class_bias", tuple(float(v) for v in b))
        super().__post_init__()

    def validate(self) -> None:
        if self.upsample not in ("logits", "labels"):
            raise InputError(f"decoder option upsample must be logits or labels, got {self.upsample!r}")
        if self.logits_layout not in (None, "NCHW", "NHWC"):
            raise InputError(f"decoder option logits_layout must be NCHW or NHWC, got {self.logits_layout!r}")
        if self.scores not in ("logits", "probabilities"):
            raise InputError(f"decoder option scores must be logits or probabilities, got {self.scores!r}")
        _positive_int("crf_iterations", self.crf_iterations, lo=0)
        if self.crf_method not in ("lattice", "exact", "fast"):
            raise InputError(f"decoder option crf_method must be lattice, exact or fast, got {self.crf_method!r}")
        _positive_int("crf_fast_size", self.crf_fast_size, lo=8)
        for name in ("crf_gaussian_sxy", "crf_bilateral_sxy", "crf_bilateral_srgb"):
            _in_range(name, getattr(self, name), 1e-3, 1e6)
        for name in ("crf_gaussian_compat", "crf_bilateral_compat"):
            _in_range(name, getattr(self, name), 0.0, 1e6)


INSTANCE_LAYOUTS = ("prototype", "dense", "roi")
PROTOTYPE_FORMATS = ("yolov8", "yolov5", "end2end")


@DECODER_OPTIONS.register("instance")
@dataclass(frozen=True)
class InstanceOptions(DecoderOptions):
    """How raw instance outputs become an :class:`InstanceResult`.

    layout:
      ``prototype``: one ``[1, 4+nc(+1)+nm, N]`` (or transposed) output of boxes, class scores
      (``prototype_format`` ``yolov8``: ``cx, cy, w, h, nc scores, nm coefficients``; ``yolov5``:
      an objectness score after the box; ``end2end``: ``[1, K, 6+nm]`` rows of ``x1, y1, x2, y2,
      score, class id, nm coefficients``, already free of duplicates, as YOLO26 and ``nms=True``
      exports give) and one ``[1, nm, h, w]`` prototype output (YOLACT-style models, Ultralytics
      YOLOv5/v8/v11/26-seg exports).
      ``dense``: ``scores [1, K]``, ``classes [1, K]``, ``masks [1, K, h, w]`` probabilities covering
      the whole network input (SOLO), optional ``boxes [1, K, 4]`` (network pixels, xyxy).
      ``roi``: ``boxes [1, K, 4]``, ``scores``, ``classes`` and ``masks [1, K, M, M]`` probabilities
      covering each box (Mask R-CNN).
    score_threshold: detections below it are dropped. iou_threshold: NMS IoU (prototype layout;
    dense/roi models and ``end2end`` prototype outputs ran theirs in the graph). max_detections: cap after NMS.
    mask_threshold: probability above which a pixel belongs to the mask. class_agnostic: NMS
    across classes (dense/roi: after the graph's per-class NMS, a mask overlapping a better one's of any class by
    more than ``iou_threshold`` is dropped). pre_nms_top_k: candidates kept (by score) before NMS.
    """

    task: ClassVar[str] = "instance"
    layout: Literal["prototype", "dense", "roi"] = "dense"
    score_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_detections: int = 100
    mask_threshold: float = 0.5
    class_agnostic: bool = False
    pre_nms_top_k: int = 30000
    prototype_format: Literal["yolov8", "yolov5", "end2end"] = "yolov8"
    num_masks: int = 32

    def validate(self) -> None:
        if self.layout not in INSTANCE_LAYOUTS:
            raise InputError(f"decoder option layout must be one of {', '.join(INSTANCE_LAYOUTS)}, got {self.layout!r}")
        if self.prototype_format not in PROTOTYPE_FORMATS:
            raise InputError(f"decoder option prototype_format must be one of {', '.join(PROTOTYPE_FORMATS)}, "
                             f"got {self.prototype_format!r}")
        _in_range("score_threshold", self.score_threshold, 0.0, 1.0)
        _in_range("iou_threshold", self.iou_threshold, 0.0, 1.0)
        _in_range("mask_threshold", self.mask_threshold, 0.0, 1.0)
        for name in ("max_detections", "pre_nms_top_k", "num_masks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"decoder option {name} must be a positive integer, got {v!r}")


PANOPTIC_LAYOUTS = ("center", "paste", "query", "fusion")
QUERY_CONVENTIONS = ("mask2former", "maskformer", "transformers")


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """A JSON list (or tuple) of non-negative integers -> a tuple, else an InputError naming ``name``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InputError(f"decoder option {name} must be a list of integers, got {value!r}")
    out = []
    for v in value:
        try:
            if isinstance(v, bool):
                raise TypeError
            i = operator.index(v)
        except TypeError:
            raise InputError(f"decoder option {name} must hold integers, got {v!r} in {list(value)!r}") from None
        if i < 0:
            raise InputError(f"decoder option {name} must hold non-negative integers, got {i} in {list(value)!r}")
        out.append(int(i))
    return tuple(out)


def _positive_int(name: str, value: Any, lo: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise InputError(f"decoder option {name} must be an integer >= {lo}, got {value!r}")


@DECODER_OPTIONS.register("panoptic")
@dataclass(frozen=True)
class PanopticOptions(DecoderOptions):
    """How raw panoptic outputs become a :class:`PanopticResult` (``edgeseg.decode.panoptic``).

    layout:
      ``center`` (Panoptic-DeepLab): ``semantic [1, C, h, w]`` logits, ``center [1, 1, h, w]``
      heatmap, ``offset [1, 2, h, w]`` (dy, dx in network-input pixels), optionally the in-graph
      grouping ``centers [1, K, 3]`` (score, y, x) and ``instance`` int64 ``[1, h, w]``.
      ``paste`` (LPSNet): ``semantic`` logits plus ``boxes [1, K, 4]`` (xyxy network pixels),
      ``scores [1, K]``, ``classes [1, K]``, optionally ``masks [1, K, M, M]`` probabilities per box.
      ``query`` (mask classification: MaskFormer, Mask2Former): ``class_logits [1, Q, C+1]``
      (the last class is "no object") and ``mask_logits [1, Q, h, w]``; see
      :mod:`edgeseg.decode.panoptic_query`.
    thing_classes: class indices (into the manifest's classes) that are things; all others are stuff.
    category_ids: the dataset category id of each class, written into ``Segment.category_id``
      (empty: the class index). Segment id 0 is void.
    center_threshold: a centre peak counts when its score is above it (Panoptic-DeepLab's ``>``).
    nms_kernel: odd max-pool window of the centre NMS (output pixels). top_k: most centres kept.
    stuff_area: smallest stuff segment, in pixels of the **original image** (smaller ones become void).
    score_threshold: boxes (paste) and queries (query) scoring at or below it are dropped.
    overlap_threshold: a box (paste) or instance (fusion) is dropped when more than this share of
      its pixels is already taken by better ones.
    mask_threshold: probability above which a pixel of a paste layout's optional per-box mask counts
      (query: at or above which a query's mask covers a pixel).
    mask_area_ratio: (query) a segment is kept when the pixels it wins are more than (``transformers``)
      or at least (the authors' code) this share of its own mask's area (their ``overlap_threshold``,
      transformers' ``overlap_mask_area_threshold``).
    query_convention: (query) whose post-processing to reproduce: ``mask2former`` or ``maskformer`` (their
      authors' code, Detectron2 projects) or ``transformers`` (Hugging Face's image processors);
      :mod:`edgeseg.decode.panoptic_query`.
    ``fusion`` (``edgeseg fuse``: a semantic and an instance model in one graph, outputs ``sem/...``
    and ``inst/...``): ``branches`` holds each branch's manifest (``semantic``, ``instance``),
    ``fusion_semantic`` maps each semantic class to a class of this bundle (-1: not kept) and
    ``fusion_instance`` each instance class (-1: dropped); see :mod:`edgeseg.decode.panoptic_fusion`.
    class_score_thresholds: (fusion) thing class name -> the score its instances need instead of
      ``score_threshold`` (panoptic_sweep.py chooses them on training frames; names are checked against
      the bundle's thing classes when a frame is decoded).
    """

    task: ClassVar[str] = "panoptic"
    layout: Literal["center", "paste", "query"] = "center"
    thing_classes: tuple[int, ...] = ()
    category_ids: tuple[int, ...] = ()
    center_threshold: float = 0.1
    nms_kernel: int = 7
    top_k: int = 100
    stuff_area: int = 128
    score_threshold: float = 0.3
    overlap_threshold: float = 0.5
    mask_threshold: float = 0.5
    mask_area_ratio: float = 0.8
    query_convention: Literal["mask2former", "maskformer", "transformers"] = "mask2former"
    fusion_semantic: tuple[int, ...] = ()
    fusion_instance: tuple[int, ...] = ()
    branches: dict[str, Any] = dataclasses.field(default_factory=dict)
    class_score_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:  # JSON lists -> tuples, before the range checks
        object.__setattr__(self, "thing_classes", _int_tuple("thing_classes", self.thing_classes))
        object.__setattr__(self, "category_ids", _int_tuple("category_ids", self.category_ids))
        for name in ("fusion_semantic", "fusion_instance"):  # -1 = not kept: shift to reuse the check
            shifted = _int_tuple(name, [v + 1 if isinstance(v, int) and not isinstance(v, bool) else v
                                        for v in getattr(self, name)])
            object.__setattr__(self, name, tuple(v - 1 for v in shifted))
        if not isinstance(self.branches, dict):
            raise InputError(f"decoder option branches must be an object, got {type(self.branches).__name__}")
        t = self.class_score_thresholds
        if not isinstance(t, dict) or not all(isinstance(k, str) and k and isinstance(v, numbers.Real)
                                              and not isinstance(v, bool) for k, v in t.items()):
            raise InputError(f"decoder option class_score_thresholds must map thing class names to numbers, got {t!r}",
                             fix='e.g. {"car": 0.35, "rider": 0.5}')
        object.__setattr__(self, "class_score_thresholds", {k: float(v) for k, v in t.items()})
        super().__post_init__()

    def validate(self) -> None:
        if self.layout not in PANOPTIC_LAYOUTS:
            raise InputError(f"decoder option layout must be one of {', '.join(PANOPTIC_LAYOUTS)}, got {self.layout!r}")
        if len(set(self.thing_classes)) != len(self.thing_classes):
            raise InputError(f"decoder option thing_classes repeats a class: {list(self.thing_classes)}")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise InputError(f"decoder option category_ids repeats an id: {list(self.category_ids)}",
                             fix="give each class its own dataset category id")
        for name in ("center_threshold", "score_threshold", "overlap_threshold", "mask_threshold", "mask_area_ratio"):
            _in_range(name, getattr(self, name), 0.0, 1.0)
        if self.query_convention not in QUERY_CONVENTIONS:
            raise InputError(f"decoder option query_convention must be one of {', '.join(QUERY_CONVENTIONS)}, "
                             f"got {self.query_convention!r}")
        for name, value in self.class_score_thresholds.items():
            _in_range(f"class_score_thresholds[{name!r}]", value, 0.0, 1.0)
        _positive_int("nms_kernel", self.nms_kernel)
        if self.nms_kernel % 2 == 0:
            raise InputError(f"decoder option nms_kernel must be odd, got {self.nms_kernel}", fix="use 3, 5, 7, ...")
        _positive_int("top_k", self.top_k)
        _positive_int("stuff_area", self.stuff_area, lo=0)
        if self.layout == "fusion" and not (self.fusion_semantic and self.fusion_instance and
                                            {"semantic", "instance"} <= set(self.branches)):
            raise InputError("a fusion layout needs fusion_semantic, fusion_instance and both branch manifests",
                             fix="create fused bundles with 'edgeseg fuse SEMANTIC INSTANCE --out OUT'")


def score_overrides(options: DecoderOptions, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with a user's minimum score (``score_threshold``: ``--score-threshold``) on the field that
    holds it for ``options``: a Panoptic-DeepLab (``center`` layout) scores its things by their centre peak, so
    ``center_threshold`` there (its ``score_threshold`` is read by no decoder); unchanged otherwise."""
    if overrides.get("score_threshold") is not None and isinstance(options, PanopticOptions) \
            and options.layout == "center" and overrides.get("center_threshold") is None:  # an explicit one wins
        overrides = dict(overrides)
        overrides["center_threshold"] = overrides.pop("score_threshold")
    return overrides


def overridden(options: DecoderOptions, overrides: dict[str, Any], task: str, name: str) -> DecoderOptions:
    """``options`` with a run's ``upsample``/``score_threshold`` (``None`` values ignored), each on the field that
    holds it for this decoder; one the task's decoder does not have is an :class:`InputError` naming the task (used by
    the stream and by ``edgeseg serve``, which checks them before any replica starts)."""
    overrides = score_overrides(options, {k: v for k, v in overrides.items() if v is not None})
    fields = set(options.to_dict())
    wrong = [k for k in overrides if k not in fields]
    if wrong:
        raise InputError(f"{', '.join(wrong)} does not apply to {task} bundles", fix=f"leave it unset for {name!r}")
    return options.replace(**overrides)


def decoder_options(task: str, d: dict[str, Any] | None = None) -> DecoderOptions:
    """The typed options of ``task`` from a manifest's ``decoder`` dictionary (validated)."""
    if task not in DECODER_OPTIONS:
        return DecoderOptions()
    return DECODER_OPTIONS.get(task).from_dict(d)
