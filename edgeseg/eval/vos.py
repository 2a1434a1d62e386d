"""J&F for semi-supervised video object segmentation, as the DAVIS benchmark computes it.

Perazzi et al., "A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation",
CVPR 2016; the numbers follow the official ``davis2017-evaluation`` code (``davis2017/metrics.py``,
``utils.db_statistics``, ``evaluation.py``), which reuses DAVIS-2016's ``measures/f_boundary.py``.

What is computed, exactly:

* **J** (region similarity) of one object on one frame is the IoU of the predicted and the true
  binary masks; when both are empty it is 1.
* **F** (contour accuracy) of one object on one frame:

  1. boundaries by :func:`seg2bmap` (a pixel is on the boundary when it differs from its right,
     lower or lower-right neighbour; pixels past the image count as background, except along the
     last row/column, which only compare with the right/lower neighbour, and the bottom-right
     pixel, which never is a boundary);
  2. a tolerance of ``bound_pix = ceil(0.008 * sqrt(H^2 + W^2))`` pixels (8 at 854x480);
  3. each boundary dilated by a disk of that radius (:func:`disk`, ``skimage.morphology.disk``:
     the offsets ``(dy, dx)`` with ``dy^2 + dx^2 <= r^2``);
  4. precision = predicted boundary pixels inside the dilated true boundary / predicted boundary
     pixels; recall = true boundary pixels inside the dilated predicted boundary / true boundary
     pixels; with only the prediction's boundary empty P = 1, R = 0; with only the truth's empty
     P = 0, R = 1; with both empty P = R = 1;
  5. ``F = 2PR / (P + R)``, 0 when ``P + R = 0``.

* Objects are the ids ``1..max(first annotation)``; a prediction's object is ``pred == id``.
* Per object and sequence, the **first and the last frame are left out** (the first is the
  prompt), as ``davis2017-evaluation`` does for the semi-supervised task. Of the remaining
  per-frame values: Mean = nanmean; Recall = fraction of frames > 0.5; Decay = mean of the first
  quarter minus mean of the last (bin edges ``round(linspace(1, n, 5)) - 1``, each bin including
  its right edge, as the official code slices them).
* The summary averages each statistic over all objects of all sequences (one object of a
  two-object sequence weighs as much as a one-object sequence), and ``J&F = (J-Mean + F-Mean) / 2``.

Two deliberate differences from the reference code, both invisible on DAVIS: the decay bin edges
are computed in int64 (the official code casts them to uint8, which wraps past 256 frames), and a
void label (255) in the annotation is background, which is what the reference does after its
reader zeroes 255.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError

BOUND_TH = 0.008
"""Boundary tolerance as a fraction of the image diagonal (``bound_th`` of the official code)."""


def disk(radius: float) -> np.ndarray:
    """``uint8 [2r+1, 2r+1]`` disk footprint, ``skimage.morphology.disk(r)``: ``dy^2 + dx^2 <= r^2``."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx <= radius * radius).astype(np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """``bool [H, W]`` one-pixel-wide boundary of a binary mask, offset half a pixel towards the origin.

    David Martin's ``seg2bmap`` (BSDS) as DAVIS uses it (output size = input size).
    """
    s = np.asarray(seg).astype(bool)
    if s.ndim != 2:
        raise InputError(f"seg2bmap takes a 2-D mask, got shape {list(s.shape)}")
    e = np.zeros_like(s)
    so = np.zeros_like(s)
    se = np.zeros_like(s)
    e[:, :-1] = s[:, 1:]
    so[:-1, :] = s[1:, :]
    se[:-1, :-1] = s[1:, 1:]
    b = (s ^ e) | (s ^ so) | (s ^ se)
    b[-1, :] = s[-1, :] ^ e[-1, :]
    b[:, -1] = s[:, -1] ^ so[:, -1]
    b[-1, -1] = False
    return b


def bound_pixels(shape: tuple[int, int], bound_th: float = BOUND_TH) -> float:
    """The F tolerance in pixels for a ``(height, width)`` frame (``bound_th >= 1`` is already pixels)."""
    if isinstance(bound_th, bool) or not isinstance(bound_th, (int, float, np.number)) or not math.isfinite(bound_th) \
            or bound_th < 0:
        raise InputError(f"the J&F boundary tolerance must be a finite number >= 0, got {bound_th!r}",
                         fix=f"a fraction of the frame's diagonal below 1 ({BOUND_TH}, DAVIS's) or pixels from 1 up")
    diagonal = math.hypot(shape[0], shape[1])
    # a radius past the diagonal reaches every pixel already (1e6 asked numpy for a 58 TiB disk)
    return float(min(bound_th, np.ceil(diagonal))) if bound_th >= 1 else float(np.ceil(bound_th * diagonal))


def _pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    for what, m in (("ground truth", gt), ("prediction", pred)):
        m = np.asarray(m)
        if m.dtype.kind in "fc" and not np.isfinite(m).all():  # NaN read as foreground
            raise InputError(f"J&F: the {what} mask holds NaN or infinite values", fix="give binary masks (bool or 0/1)")
    g, p = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    if g.shape != p.shape or g.ndim != 2 or not g.size:
        raise InputError(f"J&F compares two 2-D masks of one size: ground truth {list(g.shape)}, prediction {list(p.shape)}"
                         + (" (empty)" if g.shape == p.shape and g.ndim == 2 else ""))
    return g, p


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J: IoU of two binary masks, 1.0 when both are empty."""
    g, p = _pair(gt, pred)
    union = int(np.count_nonzero(g | p))
    return 1.0 if union == 0 else int(np.count_nonzero(g & p)) / union


def boundary_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: the DAVIS contour F-measure of two binary masks (see the module docstring)."""
    import cv2

    g, p = _pair(gt, pred)
    fg_b, gt_b = seg2bmap(p), seg2bmap(g)
    n_fg, n_gt = int(np.count_nonzero(fg_b)), int(np.count_nonzero(gt_b))
    if n_fg == 0 or n_gt == 0:
        return 1.0 if n_fg == n_gt else 0.0  # P, R = (1, 0) or (0, 1): F = 0; both empty: F = 1
    fp = disk(bound_pixels(g.shape, bound_th))
    fg_dil = cv2.dilate(fg_b.view(np.uint8), fp) > 0
    gt_dil = cv2.dilate(gt_b.view(np.uint8), fp) > 0
    precision = np.count_nonzero(fg_b & gt_dil) / n_fg
    recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


@dataclass(frozen=True)
class Statistics:
    """DAVIS per-object statistics of per-frame values: mean, recall (> 0.5) and decay."""

    mean: float
    recall: float
    decay: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Statistics":
        v = np.asarray(values, np.float64)
        if v.size == 0:
            return cls(math.nan, math.nan, math.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = float(np.nanmean(v))
            recall = float(np.nanmean(v > 0.5))
            ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
            bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
            decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
        return cls(mean, recall, decay)


@dataclass(frozen=True)
class ObjectScores:
    """J and F of one object over the scored frames of one sequence.

    j, f: ``float64 [T]`` per-frame values; ``frames`` their frame names (first and last left out).
    """

    sequence: str
    object_id: int
    j: np.ndarray = field(repr=False)
    f: np.ndarray = field(repr=False)
    frames: tuple[str, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        """``SEQUENCE_ID``, as the official per-object table names it."""
        return f"{self.sequence}_{self.object_id}"

    @property
    def j_stats(self) -> Statistics:
        return Statistics.of(self.j)

    @property
    def f_stats(self) -> Statistics:
        return Statistics.of(self.f)

    @property
    def jf(self) -> float:
        return (self.j_stats.mean + self.f_stats.mean) / 2


def _id_masks(frames: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    out = []
    for i, m in enumerate(frames):
        a = np.asarray(m)
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"{what} frame {i}: expected an integer [H, W] mask of object ids, got {a.dtype} {list(a.shape)}")
        out.append(a)
    return out


def evaluate_sequence(
    name: str, gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], frame_names: Sequence[str] = (),
    bound_th: float = BOUND_TH,
) -> list[ObjectScores]:
    """Score one sequence: ``gt``/``pred`` are id masks (``[H, W]`` integers, 0 background) per frame.

    The objects are ``1..max(gt[0])``; ``gt[0]`` is the prompt. Void (255) in ``gt`` counts as
    background. A prediction id above the number of objects is an error, as in the official code.
    So is an id below ``max(gt[0])`` that no annotation holds (ids 1, 5, 200): the official code would
    score each missing id as a perfectly tracked object (J = F = 1 on every frame). A prediction of
    another size than its annotation is an error naming the frame.
    """
    gt, pred = _id_masks(gt, f"{name} ground truth"), _id_masks(pred, f"{name} prediction")
    if len(gt) != len(pred):
        raise InputError(f"sequence {name}: {len(gt)} annotated frames but {len(pred)} predicted ones")
    if not gt:
        raise InputError(f"sequence {name} has no frames to score")
    first = np.where(gt[0] == 255, 0, gt[0])
    n_obj = int(first.max())
    names = tuple(frame_names) or tuple(f"{i:05d}" for i in range(len(gt)))
    for t, (g, p) in enumerate(zip(gt, pred)):
        if g.shape != p.shape:
            raise InputError(f"sequence {name}, frame {names[t]}: the prediction is {p.shape[1]}x{p.shape[0]} but the "
                             f"annotation {g.shape[1]}x{g.shape[0]}",
                             fix="write each prediction at its annotation's size (the frames' resolution)")
    _check_ids_present(name, gt, n_obj)
    top = max((int(p.max()) for p in pred), default=0)
    if top > max(n_obj, 0):
        raise InputError(
            f"sequence {name}: the prediction holds object id {top} but the first annotation has {n_obj} object(s)",
            fix="write object ids 1..K as in the prompt (0 background)",
        )
    if len(gt) < 3:  # DAVIS scores neither the first frame (the prompt) nor the last: nothing left (NaN before)
        raise InputError(f"sequence {name} has {len(gt)} frame(s): J&F scores the frames between the first (the "
                         "prompt) and the last, as the DAVIS evaluation does, so it needs at least 3",
                         fix="score sequences of 3 frames or more")
    keep = range(1, len(gt) - 1)
    scores = []
    for k in range(1, n_obj + 1):
        j = np.array([region_similarity(gt[t] == k, pred[t] == k) for t in keep], np.float64)
        f = np.array([boundary_measure(gt[t] == k, pred[t] == k, bound_th) for t in keep], np.float64)
        scores.append(ObjectScores(name, k, j, f, tuple(names[t] for t in keep)))
    return scores


def _check_ids_present(name: str, gt: Sequence[np.ndarray], n_obj: int) -> None:
    """Refuse object ids ``1..n_obj`` that no annotation of the sequence holds (see :func:`evaluate_sequence`)."""
    if n_obj <= 1:
        return
    seen = np.zeros(n_obj + 1, bool)
    for g in gt:
        ids = np.bincount(np.clip(g.ravel().astype(np.int64), 0, n_obj + 1), minlength=n_obj + 2)[: n_obj + 1] > 0
        seen |= ids
    absent = [k for k in range(1, n_obj + 1) if not seen[k]]
    if absent:
        shown = ", ".join(map(str, absent[:8])) + (" ..." if len(absent) > 8 else "")
        raise InputError(
            f"sequence {name}: the first annotation's largest object id is {n_obj}, but no annotation holds "
            f"{len(absent)} of the ids below it ({shown}); DAVIS's J&F would score each as a perfectly tracked object",
            fix="number the objects 1..K without gaps, in the annotations and in the predictions alike",
        )


@dataclass(frozen=True)
class VOSScores:
    """Scores of a set of sequences: one :class:`ObjectScores` per object, and the DAVIS summary."""

    objects: tuple[ObjectScores, ...]

    def _avg(self, which: str, stat: str) -> float:
        vals = [getattr(getattr(o, f"{which}_stats"), stat) for o in self.objects]
        return float(np.mean(vals)) if vals else math.nan

    @property
    def j_mean(self) -> float:
        return self._avg("j", "mean")

    @property
    def j_recall(self) -> float:
        return self._avg("j", "recall")

    @property
    def j_decay(self) -> float:
        return self._avg("j", "decay")

    @property
    def f_mean(self) -> float:
        return self._avg("f", "mean")

    @property
    def f_recall(self) -> float:
        return self._avg("f", "recall")

    @property
    def f_decay(self) -> float:
        return self._avg("f", "decay")

    @property
    def jf(self) -> float:
        """J&F-Mean: ``(J-Mean + F-Mean) / 2``."""
        return (self.j_mean + self.f_mean) / 2

    def summary(self) -> dict[str, float]:
        """The official global table: J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay."""
        return {
            "J&F-Mean": self.jf, "J-Mean": self.j_mean, "J-Recall": self.j_recall, "J-Decay": self.j_decay,
            "F-Mean": self.f_mean, "F-Recall": self.f_recall, "F-Decay": self.f_decay,
        }

    def per_object(self) -> list[dict[str, Any]]:
        rows = []
        for o in self.objects:
            js, fs = o.j_stats, o.f_stats
            rows.append({
                "sequence": o.sequence, "object": o.object_id, "frames": len(o.j), "J&F-Mean": o.jf,
                "J-Mean": js.mean, "J-Recall": js.recall, "J-Decay": js.decay,
                "F-Mean": fs.mean, "F-Recall": fs.recall, "F-Decay": fs.decay,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        clean = lambda d: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}  # noqa: E731
        return {"summary": clean(self.summary()), "per_object": [clean(r) for r in self.per_object()],
                "num_objects": len(self.objects), "num_sequences": len({o.sequence for o in self.objects})}


class VOSMetric:
    """Accumulates sequences: ``m.update(name, gt_frames, pred_frames)``, then ``m.compute()``."""

    def __init__(self, bound_th: float = BOUND_TH):
        self.bound_th = bound_th
        self._objects: list[ObjectScores] = []

    def update(self, name: str, gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
               frame_names: Sequence[str] = ()) -> list[ObjectScores]:
        got = evaluate_sequence(name, gt, pred, frame_names, self.bound_th)
        self._objects.extend(got)
        return got

    def extend(self, scores: Iterable[ObjectScores]) -> None:
        self._objects.extend(scores)

    def compute(self) -> VOSScores:
        return VOSScores(tuple(self._objects))
