"""CLEAR-MOT counts (misses, false positives, identity switches, MOTA) and IDF1 of tracked instance
results against ground truth that carries true ids, a match being a mask IoU >= 0.5 (Bernardin &
Stiefelhagen 2008; Ristani et al. 2016). Used by ``tools/bench/track.py`` and the tracker's tests on
:class:`~edgeseg.data.SceneGenerator` truth. Matching reuses the tracker's box-cropped mask overlap
and its assignment (:mod:`edgeseg.video.tracker`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import InstanceResult
from .tracker import _crop_inter, _instance_detections, _overlaps, assign

@dataclass(frozen=True)
class MotCounts:
    """CLEAR-MOT counts and IDF1 over a sequence (Bernardin & Stiefelhagen 2008; Ristani et al. 2016).

    ``mota = 1 - (misses + false_positives + id_switches) / truth``; ``idf1 = 2 IDTP / (truth + predictions)``
    with IDTP the frames matched under the best one-to-one map of true ids to track ids.
    """

    frames: int
    truth: int  # true objects summed over frames
    predictions: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    idtp: int  # frames matched under the best id map
    truth_ids: int  # distinct true ids
    track_ids: int  # distinct predicted ids

    @property
    def mota(self) -> float:
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / self.truth if self.truth else 0.0

    @property
    def idf1(self) -> float:
        total = self.truth + self.predictions
        return 2.0 * self.idtp / total if total else 0.0

    def __add__(self, other: "MotCounts") -> "MotCounts":
        """The counts of two sequences together (ids of different sequences are different objects)."""
        return MotCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mota": self.mota, "idf1": self.idf1}


class MotAccumulator:
    """``acc.update(truth, tracked)`` per frame of one sequence (both :class:`InstanceResult` with masks and
    ``track_ids``; ``truth.track_ids`` are the true ids), then ``acc.counts()`` (add the counts of several
    sequences with ``+``).

    A match is a mask IoU >= ``iou``; a truth keeps last frame's partner while their IoU stays above it,
    the others are matched by the assignment of largest total IoU (CLEAR-MOT). An id switch is a truth
    matched to another id than at its previous match (each one listed in ``switches_at`` as ``(frame,
    true id, old id, new id)``, frames counted from 0). A prediction with id -1 is an identity of its own.
    """

    def __init__(self, iou: float = 0.5):
        self.iou = float(iou)
        self.frames = self.truth = self.predictions = self.matches = self.switches = 0
        self._partner: dict[int, int] = {}  # true id -> track id of its last match
        self._pairs: dict[tuple[int, int], int] = {}  # (true id, track id) -> frames with IoU >= iou
        self._truth_frames: dict[int, int] = {}
        self._track_frames: dict[int, int] = {}
        self._anon = 0
        self.switches_at: list[tuple[int, int, int, int]] = []

    def update(self, truth: InstanceResult, tracked: InstanceResult) -> None:
        if truth.track_ids is None or tracked.track_ids is None:
            raise InputError("MotAccumulator.update needs track_ids on both the truth and the tracked result")
        gt, pr = _instance_detections(truth), _instance_detections(tracked)
        hyp = tracked.track_ids.astype(np.int64).copy()
        for i in np.flatnonzero(hyp < 0):  # no identity: a fresh (negative) one each time
            self._anon -= 1
            hyp[i] = self._anon
        true = truth.track_ids.astype(np.int64)
        iou = np.zeros((len(true), len(hyp)))
        for g, h in zip(*np.nonzero(_overlaps(gt.bounds, pr.bounds))):
            inter = _crop_inter(gt.crops[g], int(gt.bounds[g, 0]), int(gt.bounds[g, 1]),
                                pr.crops[h], int(pr.bounds[h, 0]), int(pr.bounds[h, 1]))
            union = int(gt.areas[g]) + int(pr.areas[h]) - inter
            iou[g, h] = inter / union if union > 0 else 0.0
        self.frames += 1
        self.truth += len(true)
        self.predictions += len(hyp)
        for g, h in zip(*np.nonzero(iou >= self.iou)):
            key = (int(true[g]), int(hyp[h]))
            self._pairs[key] = self._pairs.get(key, 0) + 1
        for i in true.tolist():
            self._truth_frames[i] = self._truth_frames.get(i, 0) + 1
        for i in hyp.tolist():
            self._track_frames[i] = self._track_frames.get(i, 0) + 1
        kept: list[tuple[int, int]] = []  # last frame's correspondences that still hold
        col = {int(h): j for j, h in enumerate(hyp)}
        for g, t in enumerate(true.tolist()):
            j = col.get(self._partner.get(t))  # type: ignore[arg-type]
            if j is not None and iou[g, j] >= self.iou:
                kept.append((g, j))
        free_g = [g for g in range(len(true)) if g not in {a for a, _ in kept}]
        free_h = [j for j in range(len(hyp)) if j not in {b for _, b in kept}]
        new = [(free_g[a], free_h[b]) for a, b in assign(iou[np.ix_(free_g, free_h)], self.iou)] \
            if free_g and free_h else []
        for g, j in kept + new:
            t, h = int(true[g]), int(hyp[j])
            if t in self._partner and self._partner[t] != h:
                self.switches += 1
                self.switches_at.append((self.frames - 1, t, self._partner[t], h))
            self._partner[t] = h
        self.matches += len(kept) + len(new)

    def counts(self) -> MotCounts:
        misses, fps = self.truth - self.matches, self.predictions - self.matches
        gts, hyps = sorted(self._truth_frames), sorted(self._track_frames)
        idtp = 0
        if self._pairs:
            gi, hi = {g: k for k, g in enumerate(gts)}, {h: k for k, h in enumerate(hyps)}
            w = np.zeros((len(gts), len(hyps)))
            for (g, h), n in self._pairs.items():
                w[gi[g], hi[h]] = n
            idtp = int(sum(w[a, b] for a, b in assign(w, 1.0)))
        return MotCounts(frames=self.frames, truth=self.truth, predictions=self.predictions, matches=self.matches,
                         misses=misses, false_positives=fps, id_switches=self.switches, idtp=idtp,
                         truth_ids=len(gts), track_ids=len(hyps))
