"""Targets and losses for LPSNet (Hong et al., "LPSNet: A Lightweight Solution for Fast Panoptic
Segmentation", CVPR 2021), whose box head is FCOS (Tian et al., ICCV 2019).

Trained by :class:`edgeseg.train.panoptic.PanopticTrainer` (the shared loop: augmentation, resume,
checkpoints, PQ) through :class:`LPSNetTraining`, its strategy for this architecture::

    model = create_model("lpsnet_mobilenetv3_small", num_classes=19, class_names=NAMES, thing_classes=THINGS)
    trainer = PanopticTrainer(model, PanopticTrainConfig(size=ImageShape(320, 640), crop=ImageShape(256, 512)),
                              category_ids=CATEGORY_IDS, out_dir="runs/lpsnet")
    trainer.fit(lambda start: dataset_stream(dataset, seed=0, start=start))

**Samples.** A :class:`~edgeseg.structures.PanopticResult` at the network input size (in training:
an augmented crop, :func:`edgeseg.train.panoptic.augment_panoptic`) becomes a
:class:`PanopticSample`: the semantic label image over all classes (``category_to_class`` maps
category ids to class indices; void and categories mapped to 255 are ignored), one mask and thing
index per non-crowd thing segment, and the crowd region. Crowd segments keep their class in the
semantic target; in the box head their locations are neither positive nor negative (ignored).

**Box-head targets** (per level, locations as :mod:`edgeseg.models.lpsnet` places them: the centre of
pixel ``(i*s + s//2, j*s + s//2)``):

* *mask-based positives* (LPSNet): a location is a candidate for an instance when that pixel lies
  in the instance's **mask** — FCOS asks only for its box — and, as in FCOS, the level's size range
  holds ``max(l, t, r, b)``, the distances from the location to the instance's box sides (box =
  the mask's extent, ``x2 = last column + 1``). A location with several candidates (masks that
  overlap, which a panoptic result never has) goes to the one of smallest mask area. Instances too
  small to hold any location of their level get no positive (as in FCOS).
* box target: ``(l, t, r, b)`` in pixels.
* *border-ness* (replaces FCOS's centre-ness). The public text of the paper names the idea — how
  deep inside the instance a location lies, measured from the mask border instead of the box
  centre, which suits mask-based positives far from the box centre — without a formula usable
  here, so edgeseg defines it as::

      borderness = min(1, d / (min(w, h) / 2))

  with ``d`` the Euclidean distance from the location to the mask border (:func:`border_distance`:
  distance from the pixel centre to the nearest pixel centre outside the mask, minus half a pixel;
  the image edge counts as border) and ``w, h`` the instance's box size. For a box-shaped mask
  ``d = min(l, t, r, b)``: border-ness is 1 at the centre of a filled box or disc (``1 - 1/min(w, h)``
  at the deepest pixel centres when the short side is even) and falls linearly to ``1/min(w, h)`` at
  the border pixels; thin or concave shapes stay below 1. At inference the score is
  ``sqrt(p_class * p_borderness)``.

**Losses** (FCOS's, with border-ness for centre-ness): sigmoid focal loss (alpha 0.25, gamma 2)
over all non-ignored locations and thing classes, normalised by the number of positives (at least
1); GIoU loss of the ``(l, t, r, b)`` boxes and BCE of the border-ness logits, both averaged over the
positives; cross-entropy (ignore 255) of the semantic logits, upsampled bilinearly to the label size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..structures import PanopticResult, Segment
from .instance import sigmoid_focal_loss

if TYPE_CHECKING:
    from .panoptic import PanopticTrainConfig

IGNORE = 255  # semantic label that the loss ignores
IGNORE_LOCATION = -1  # box-head label of a location the loss ignores (crowd)


# ---- samples ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanopticSample:
    """One image's annotation at the network input size.

    semantic: int64 ``[H, W]`` class index over all classes, 255 = ignore.
    masks:    bool ``[n, H, W]`` non-crowd thing instances. labels: int64 ``[n]`` thing indices
              (positions in the model's ``thing_classes``).
    crowd:    bool ``[H, W]`` crowd regions (ignored by the box head).
    """

    semantic: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray

    def __post_init__(self) -> None:
        h, w = self.semantic.shape
        if self.masks.ndim != 3 or self.masks.shape[1:] != (h, w) or self.masks.dtype != np.bool_:
            raise InputError(f"PanopticSample.masks must be bool [n, {h}, {w}], got {self.masks.dtype} "
                             f"{self.masks.shape}", fix="one bool mask per instance, at the semantic label's size")
        if self.labels.shape != (self.masks.shape[0],) or self.crowd.shape != (h, w):
            raise InputError(f"PanopticSample: labels must be [{self.masks.shape[0]}] and crowd [{h}, {w}], got "
                             f"{self.labels.shape} and {self.crowd.shape}", fix="build it with panoptic_sample()")


def panoptic_sample(panoptic: PanopticResult, category_to_class: Mapping[int, int], thing_classes: Sequence[int],
                    crowd_ids: Sequence[int] = ()) -> PanopticSample:
    """A :class:`PanopticSample` from ``panoptic`` (already at the network size). ``category_to_class``:
    category id -> class index (255: ignore); ``thing_classes``: the model's thing class indices;
    ``crowd_ids``: segment ids that are crowd regions."""
    seg = panoptic.segment_ids
    things = [int(c) for c in thing_classes]
    crowd_set = {int(i) for i in crowd_ids}
    semantic = np.full(seg.shape, IGNORE, np.int64)
    crowd = np.zeros(seg.shape, bool)
    masks, labels = [], []
    for s in panoptic.segments:
        if s.category_id not in category_to_class:
            raise InputError(f"panoptic segment {s.id}: category {s.category_id} is not in the category -> class map",
                             fix="add it to category_to_class (map it to 255 to ignore it)")
        cls = int(category_to_class[s.category_id])
        region = seg == s.id
        semantic[region] = cls
        if s.id in crowd_set:
            crowd |= region
            continue
        if cls == IGNORE or not region.any():
            continue
        if bool(s.isthing) != (cls in things):
            kind = "a thing" if s.isthing else "stuff"
            raise InputError(f"panoptic segment {s.id} is {kind} but its class {cls} is "
                             f"{'not ' if s.isthing else ''}one of the model's thing classes {things}",
                             fix="build the model with thing_classes matching the data's things")
        if s.isthing:
            masks.append(region)
            labels.append(things.index(cls))
    m = np.stack(masks) if masks else np.zeros((0, *seg.shape), bool)
    return PanopticSample(semantic, m, np.asarray(labels, np.int64), crowd)


# ---- targets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LPSNetTargets:
    """One image's box-head targets over all locations (levels fine to coarse, row-major), ``N`` of them.

    labels:  int64 ``[N]`` thing index of positives, ``num_things`` = background, -1 = ignored.
    owner:   int64 ``[N]`` index of the instance (into the sample's masks) a positive belongs to, else -1.
    ltrb:    float32 ``[N, 4]`` box distances of positives (0 elsewhere), pixels.
    border:  float32 ``[N]`` border-ness of positives (0 elsewhere).
    semantic: int64 ``[H, W]`` the semantic target (255 = ignore).
    """

    labels: np.ndarray
    owner: np.ndarray
    ltrb: np.ndarray
    border: np.ndarray
    semantic: np.ndarray

    @property
    def positive(self) -> np.ndarray:
        return np.flatnonzero(self.owner >= 0)


def location_pixels(shape: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column ``int64 [h * w]`` of the pixel under each location of a level, row-major."""
    h, w = int(shape[0]), int(shape[1])
    rows = np.arange(h, dtype=np.int64) * stride + stride // 2
    cols = np.arange(w, dtype=np.int64) * stride + stride // 2
    return np.repeat(rows, w), np.tile(cols, h)


def border_distance(mask: np.ndarray) -> np.ndarray:
    """float32 ``[H, W]``: for each pixel of bool ``mask``, the Euclidean distance from its centre to
    the nearest pixel centre outside the mask (the image edge counts as outside) minus 0.5 — the
    distance to the mask border; 0 outside the mask."""
    import cv2

    padded = np.pad(mask.astype(np.uint8), 1)
    edt = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return np.where(mask, edt - 0.5, 0.0).astype(np.float32)


def borderness(distance: np.ndarray | float, box_w: np.ndarray | float, box_h: np.ndarray | float) -> np.ndarray:
    """``min(1, distance / (min(w, h) / 2))`` (module docstring), float32."""
    half = 0.5 * np.minimum(box_w, box_h)
    return np.clip(np.asarray(distance, np.float64) / np.maximum(half, 1e-6), 0.0, 1.0).astype(np.float32)


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """float64 ``[n, 4]`` xyxy extents of bool masks ``[n, H, W]`` (``x2`` = last column + 1)."""
    boxes = np.zeros((len(masks), 4))
    for i, m in enumerate(masks):
        ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def lpsnet_targets(sample: PanopticSample, shapes: Sequence[tuple[int, int]], strides: Sequence[int],
                   size_ranges: Sequence[tuple[float, float]], num_things: int) -> LPSNetTargets:
    """Mask-based FCOS assignment with border-ness (module docstring) on levels of ``shapes``."""
    if not len(shapes) == len(strides) == len(size_ranges):
        raise InputError(f"LPSNet targets: {len(shapes)} level shapes, {len(strides)} strides and "
                         f"{len(size_ranges)} size ranges must agree",
                         fix="pass the model's strides and size_ranges with the output's level shapes")
    height, width = sample.semantic.shape
    keep = sample.masks.any(axis=(1, 2))  # (no reshape: a crop may hold no instance, masks [0, H, W])
    masks, inst_labels = sample.masks[keep], sample.labels[keep]
    kept = np.flatnonzero(keep)
    boxes = _mask_boxes(masks)
    areas = masks.sum(axis=(1, 2), dtype=np.float64)
    # border distances within each box: the pixel outside a mask nearest to one inside lies in the box
    # grown by one pixel (where border_distance's zero padding puts it), so the window gives the image's values
    windows = boxes.astype(np.int64)
    dists = [border_distance(m[y0:y1, x0:x1]) for m, (x0, y0, x1, y1) in zip(masks, windows)]
    labels, owners, ltrbs, borders = [], [], [], []
    for shape, stride, (lo, hi) in zip(shapes, strides, size_ranges):
        rows, cols = location_pixels(shape, stride)
        inside = (rows < height) & (cols < width)
        r, c = np.minimum(rows, height - 1), np.minimum(cols, width - 1)
        x, y = cols + 0.5, rows + 0.5
        d = np.stack([x[:, None] - boxes[None, :, 0], y[:, None] - boxes[None, :, 1],
                      boxes[None, :, 2] - x[:, None], boxes[None, :, 3] - y[:, None]], -1)  # [L, n, 4]
        far = d.max(-1)
        cand = masks[:, r, c].T & inside[:, None] & (far >= lo) & (far <= hi)  # [L, n]
        owner = np.where(cand, areas[None, :], np.inf).argmin(1) if len(masks) else np.zeros(len(rows), np.int64)
        pos = cand.any(1)
        lab = np.full(len(rows), num_things, np.int64)
        lab[~pos & inside & sample.crowd[r, c]] = IGNORE_LOCATION
        ltrb = np.zeros((len(rows), 4), np.float32)
        border = np.zeros(len(rows), np.float32)
        if pos.any():
            p, o = np.flatnonzero(pos), owner[pos]
            lab[p] = inst_labels[o]
            ltrb[p] = d[p, o]
            y0, x0 = windows[o, 1], windows[o, 0]
            depth = np.array([dists[k][r[q] - y, c[q] - x] for q, k, y, x in zip(p, o, y0, x0)], np.float32)
            border[p] = borderness(depth, boxes[o, 2] - boxes[o, 0], boxes[o, 3] - boxes[o, 1])
        labels.append(lab)
        owners.append(np.where(pos, kept[owner] if len(masks) else -1, -1))
        ltrbs.append(ltrb)
        borders.append(border)
    return LPSNetTargets(np.concatenate(labels), np.concatenate(owners).astype(np.int64), np.concatenate(ltrbs),
                         np.concatenate(borders), sample.semantic)


# ---- losses -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LPSNetLossConfig:
    """Loss weights and focal-loss parameters (FCOS's values; semantic weight 1)."""

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cls_weight: float = 1.0
    box_weight: float = 1.0
    border_weight: float = 1.0
    semantic_weight: float = 1.0


def giou_loss_ltrb(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - GIoU`` per row (Rezatofighi et al., CVPR 2019) of two boxes given as positive distances
    ``[P, 4]`` = ``(l, t, r, b)`` from the same location."""
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    area_p = (pl + pr) * (pt + pb)
    area_t = (tl + tr) * (tt + tb)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = area_p + area_t - inter
    enclose = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb))
    giou = inter / union.clamp(min=1e-6) - (enclose - union) / enclose.clamp(min=1e-6)
    return 1.0 - giou


def _flat(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per-level ``[B, K, h, w]`` -> ``[B, N, K]`` (levels fine to coarse, row-major)."""
    return torch.cat([m.flatten(2) for m in maps], 2).transpose(1, 2)


def lpsnet_loss(outputs: dict[str, Any], targets: Sequence[LPSNetTargets],
                cfg: LPSNetLossConfig = LPSNetLossConfig()) -> dict[str, torch.Tensor]:
    """``{"loss", "cls", "box", "border", "semantic"}`` for a training-mode output and one target per image."""
    cls, ltrb = _flat(outputs["cls_logits"]), _flat(outputs["box_ltrb"])
    border = _flat(outputs["border_logits"])[..., 0]
    semantic = outputs["semantic"]
    b, n, t = cls.shape
    device = cls.device
    if len(targets) != b or any(len(tg.labels) != n for tg in targets):
        raise InputError(f"LPSNet loss: {len(targets)} targets of {[len(tg.labels) for tg in targets]} locations "
                         f"for a batch of {b} with {n} locations", fix="build targets from the output's level shapes")
    labels = torch.stack([torch.as_tensor(tg.labels, device=device) for tg in targets])
    valid = labels >= 0
    pos = valid & (labels < t)
    num_pos = int(pos.sum())
    onehot = F.one_hot(labels.clamp(min=0), t + 1)[..., :t].to(cls.dtype)
    loss_cls = sigmoid_focal_loss(cls[valid], onehot[valid], cfg.focal_alpha, cfg.focal_gamma) / max(num_pos, 1)
    if num_pos:
        box_t = torch.stack([torch.as_tensor(tg.ltrb, device=device) for tg in targets])[pos]
        border_t = torch.stack([torch.as_tensor(tg.border, device=device) for tg in targets])[pos]
        loss_box = giou_loss_ltrb(ltrb[pos], box_t).mean()
        loss_border = F.binary_cross_entropy_with_logits(border[pos], border_t)
    else:
        loss_box = loss_border = (ltrb.sum() + border.sum()) * 0.0
    sem_t = torch.stack([torch.as_tensor(tg.semantic, device=device) for tg in targets])
    logits = F.interpolate(semantic, size=tuple(sem_t.shape[-2:]), mode="bilinear", align_corners=False)
    if bool((sem_t != IGNORE).any()):
        loss_sem = F.cross_entropy(logits, sem_t, ignore_index=IGNORE)
    else:
        loss_sem = logits.sum() * 0.0
    total = (cfg.cls_weight * loss_cls + cfg.box_weight * loss_box + cfg.border_weight * loss_border
             + cfg.semantic_weight * loss_sem)
    return {"loss": total, "cls": loss_cls.detach(), "box": loss_box.detach(), "border": loss_border.detach(),
            "semantic": loss_sem.detach()}


# ---- the strategy for the shared panoptic trainer ----------------------------------------------
@dataclass(frozen=True)
class LPSNetEpoch:
    """One epoch of LPSNet history: mean losses over its steps, the last learning rate, wall seconds."""

    epoch: int
    loss: float
    cls: float
    box: float
    border: float
    semantic: float
    lr: float
    seconds: float
    steps: int


def batch_targets(model: torch.nn.Module, outputs: dict[str, Any],
                  samples: Sequence[PanopticSample]) -> list[LPSNetTargets]:
    """Targets for ``samples`` on the levels of a training-mode ``outputs`` of ``model``."""
    shapes = [tuple(int(v) for v in c.shape[-2:]) for c in outputs["cls_logits"]]
    return [lpsnet_targets(s, shapes, model.strides, model.size_ranges, model.num_things) for s in samples]


class LPSNetTraining:
    """LPSNet's part of :class:`edgeseg.train.panoptic.PanopticTrainer` (its ``PanopticStrategy``).

    ``targets``: the :class:`PanopticSample` of an augmented segment-id map (categories outside
    ``class_of`` are ignored like void); ``loss``: :func:`lpsnet_loss` on targets assigned on the
    output's pyramid levels, FCOS's weights with the config's ``semantic_weight``.
    """

    parts = ("cls", "box", "border", "semantic")
    epoch_type = LPSNetEpoch

    def __init__(self, model: torch.nn.Module, config: "PanopticTrainConfig", class_of: Mapping[int, int]):
        self.model, self.class_of = model, dict(class_of)
        self.loss_config = LPSNetLossConfig(semantic_weight=float(config.semantic_weight))

    def targets(self, ids: np.ndarray, segments: Sequence[Segment], crowd: Sequence[int]) -> PanopticSample:
        to_class = {s.category_id: self.class_of.get(s.category_id, IGNORE) for s in segments}
        return panoptic_sample(PanopticResult(ids, tuple(segments)), to_class, self.model.thing_classes, tuple(crowd))

    def loss(self, outputs: dict[str, Any], targets: list[PanopticSample]) -> dict[str, torch.Tensor]:
        return lpsnet_loss(outputs, batch_targets(self.model, outputs, targets), self.loss_config)
