"""Identities across frames for instance and panoptic results: a mask-IoU tracker with motion.

    tracker = Tracker()                          # explicit per-source state
    for image in frames:
        result = tracker.update(predictor(image))    # InstanceResult: ``track_ids`` filled (int64, >= 1)
                                                     # PanopticResult: thing segments keep their ids
    tracker.reset()                              # discontinuity (seek, new file, reconnect): forget the tracks
    to_track_result(result)                      # either, as a TrackResult (masks, object_ids, scores)

Per frame (SORT's recipe with masks in place of Kalman-filtered boxes, and no optical flow):

1. **Prediction.** A track keeps the mask it had when last seen, cropped to its bounding box, and a
   velocity (px/frame). It is predicted at that mask shifted by ``velocity x frames since seen``
   (rounded to whole pixels): a constant-velocity, flow-free mask shift. ``motion=False`` predicts
   it where it was last seen.
2. **Gate.** Only pairs of the same class whose boxes (predicted track, detection) overlap are
   compared: a box test on ``[T, N]`` arrays at once, so the cost follows the objects that touch.
3. **Mask IoU** of each gated pair, counted on the overlap of the two boxes only (masks live as crops
   of their box, from ``InstanceResult.mask_bounds``; box-only detections count as full boxes).
4. **Assignment** maximizes the total IoU over pairs with ``IoU >= iou_threshold`` (Hungarian, the
   Kuhn-Munkres shortest augmenting path, run only on the connected groups of competing pairs; most
   groups are one track and one detection). Pure Python: no SciPy on the device.
5. **Partial views.** The tracks and detections left over are matched three more times, twice on a
   *cover* (the share of the smaller of the two inside the other, ``>= cover_threshold``), where IoU
   fails because the visible part of an object grows or shrinks: (a) the masks, the track's where
   predicted or where last seen (a mask held at the frame border or at an occluder's edge stays put
   while the object slides in or out); (b) boxes, the track's predicted *extent* (the largest box it
   had recently, hung from the edge that last moved as predicted) against the detection's box: an
   object that comes out from behind another is not the sliver it was when it went in; (c) when nothing
   overlaps at all, the distance between box centres (the track's predicted or last-seen centre,
   whichever is nearer), within a gate: one object diagonal (``distance_gate``) while a track has no
   velocity yet, then at most 1.5 x its recent peak speed x the frames since seen + 0.15 of a diagonal;
   a detection over 3 x the track's extent is not it. An object moving more than about a third of its
   size a frame, or bouncing, otherwise never overlapped its prediction and took a new id on every frame
   (session 54's audit on exact truth: 101-111 ID switches on such sequences, 0 now).
6. **Update.** A matched track takes the detection's mask; its velocity is smoothed (``momentum``)
   from the displacement of whichever box edge moved as predicted (or the centre; edges on the frame
   border do not count): when one side of an object is hidden, the other edge still shows its
   motion, while the centre of the visible part would not. A measurement off the velocity by more than
   half the object's size (a bounce, a sharp turn) replaces it: the average would predict neither.
   Unmatched tracks age; a track unseen for
   more than ``max_age`` frames (or predicted wholly outside the frame) is dropped, so an object
   hidden for ``max_age`` frames or fewer keeps its id. A detection left over starts a new track
   with the next id. A class never changes within a track: a detection of another class cannot take
   a track's id (a model that flips an object's class between frames gives it two ids).

``motion=False``, ``partial_views=False`` and ``distance_gate=0`` switch steps 1 (the shift), 5 and 5c off, for
ablations; their
effect on ID switches is measured on :class:`~edgeseg.data.SceneGenerator` truth by ``tools/bench/track.py``.

Ids start at 1 and are never reused by one tracker, not even after :meth:`Tracker.reset`, so a
consumer never sees one id for two objects.

**Panoptic** results: each thing segment is a detection (its class is its category); the result is
renumbered so that a tracked thing has segment id ``thing_offset + track id`` on every frame, and each
stuff category the fixed id ``category_id + 1`` (several segments of one stuff category are merged).

**Evaluation**: :mod:`edgeseg.video.mot` (CLEAR-MOT counts and IDF1 against true ids).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import ImageShape, InstanceResult, PanopticResult, Segment, TrackResult
from ..structures.coco_panoptic import RUNS_PER_PIXEL, map_runs, run_spans

_EMPTY = np.zeros((0, 0), bool)


# ---- matching ------------------------------------------------------------------------------------
def _hungarian(cost: list[list[float]]) -> list[tuple[int, int]]:
    """Minimum-cost assignment of every row of an ``n x m`` cost matrix (``n <= m``) to a column
    (Kuhn-Munkres with potentials, shortest augmenting paths: O(n^2 m))."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    p, way = [0] * (m + 1), [0] * (m + 1)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            row = cost[i0 - 1]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return [(p[j] - 1, j - 1) for j in range(1, m + 1) if p[j]]


def assign(weights: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """Row/column pairs of ``weights [R, C]`` that maximize the total weight, using only entries
    ``>= minimum`` (``minimum > 0``), each row and column at most once; sorted by row.

    The allowed entries split into connected groups (rows and columns linked by an allowed entry);
    a group of one row and one column is taken as is, others are solved exactly by :func:`_hungarian`.
    """
    if minimum <= 0:
        raise InputError(f"assign: minimum must be > 0, got {minimum}")
    rows, cols = np.nonzero(weights >= minimum)
    if not len(rows):
        return []
    n_rows = weights.shape[0]
    parent = list(range(n_rows + weights.shape[1]))  # union-find over rows, then columns

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for r, c in zip(rows.tolist(), cols.tolist()):
        parent[find(r)] = find(n_rows + c)
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for r, c in zip(rows.tolist(), cols.tolist()):
        g = groups.setdefault(find(r), ([], []))
        if r not in g[0]:
            g[0].append(r)
        if c not in g[1]:
            g[1].append(c)
    pairs: list[tuple[int, int]] = []
    for rs, cs in groups.values():
        if len(rs) == 1 and len(cs) == 1:
            pairs.append((rs[0], cs[0]))
            continue
        sub = weights[np.ix_(rs, cs)]
        sub = np.where(sub >= minimum, -sub, 0.0)  # max weight = min cost; disallowed pairs cost nothing
        flip = len(rs) > len(cs)
        found = _hungarian((sub.T if flip else sub).tolist())
        for a, b in found:
            r, c = (b, a) if flip else (a, b)
            if weights[rs[r], cs[c]] >= minimum:
                pairs.append((rs[r], cs[c]))
    return sorted(pairs)


def _crop_inter(a: np.ndarray, ax: int, ay: int, b: np.ndarray, bx: int, by: int) -> int:
    """Pixels shared by two masks given as crops placed at ``(ax, ay)`` and ``(bx, by)``: only the
    overlap of their boxes is read."""
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + a.shape[1], bx + b.shape[1]), min(ay + a.shape[0], by + b.shape[0])
    if x0 >= x1 or y0 >= y1:
        return 0
    return int(np.count_nonzero(a[y0 - ay : y1 - ay, x0 - ax : x1 - ax] & b[y0 - by : y1 - by, x0 - bx : x1 - bx]))


def _overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``bool [A, B]``: whether the integer boxes ``a [A, 4]`` and ``b [B, 4]`` (end-exclusive) overlap."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return (w > 0) & (h > 0)


def _box_cover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float [A, B]`` intersection over the smaller of the two xyxy boxes."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.where(smaller > 0, w * h / np.maximum(smaller, 1e-9), 0.0)


# ---- detections ----------------------------------------------------------------------------------
@dataclass
class _Detections:
    """One frame's objects: class, integer bounds ``(x0, y0, x1, y1)`` end-exclusive, the mask cropped
    to them (a view), its area and score."""

    classes: np.ndarray  # int64 [N]
    bounds: np.ndarray  # int64 [N, 4]
    crops: list[np.ndarray]
    areas: np.ndarray  # int64 [N]
    scores: np.ndarray  # float32 [N]


def _instance_detections(r: InstanceResult) -> _Detections:
    n, (h, w) = len(r), r.image_shape.hw
    bounds = np.zeros((n, 4), np.int64)
    masked = r.has_masks
    crops: list[np.ndarray] = []
    for i in range(n):
        if masked:  # the crops of a compact result, views of full masks: never pasted full-size here
            x0, y0, x1, y1, crop = r.mask_crop(i)
        else:  # a box-only detector: the box is the mask
            x0, y0 = (int(np.clip(np.floor(v), 0, m)) for v, m in zip(r.boxes[i, :2], (w, h)))
            x1, y1 = (int(np.clip(np.ceil(v), 0, m)) for v, m in zip(r.boxes[i, 2:], (w, h)))
            x1, y1 = max(x0, x1), max(y0, y1)
            crop = np.ones((y1 - y0, x1 - x0), bool)
        bounds[i] = (x0, y0, x1, y1)
        crops.append(crop)
    areas = np.array([np.count_nonzero(c) for c in crops], np.int64)
    return _Detections(r.classes.astype(np.int64), bounds, crops, areas, r.scores.astype(np.float32))


def _thing_detections(r: PanopticResult, things: list[Segment]) -> _Detections:
    """The thing segments as detections: their areas and bounds from the id map's row-major runs (pixel by pixel,
    with a radix sort by thing, where the runs are short: noise), their crops by comparing the map inside the
    bounds with their ids."""
    ids, n = np.ascontiguousarray(r.segment_ids), len(things)
    lut = np.full(max(int(ids.max(initial=0)), max((s.id for s in things), default=0)) + 1, -1,
                  np.int16 if n < 2**15 else np.int32)
    lut[[s.id for s in things]] = np.arange(n)
    # from the map's row-major runs (a run inside one row gives its columns; one that wraps onto later rows
    # spans every column): no full-resolution index map, sort of every thing pixel or divmod per pixel
    flat, w = ids.ravel(), ids.shape[1]
    starts, ends = map_runs(flat)
    bounds = np.zeros((n, 4), np.int64)
    if len(starts) > flat.size // RUNS_PER_PIXEL:  # runs of a few pixels (noise): per pixel is faster
        index = np.where(ids >= 0, lut[np.maximum(ids, 0)], -1)  # a negative id (void) is no thing
        where = np.flatnonzero(index >= 0)
        k = index.ravel()[where]
        order = np.argsort(k, kind="stable")  # a radix sort for int16
        k, where = k[order], where[order]
        ys, xs = np.divmod(where, w)
        counts = np.bincount(k, minlength=n)
        first = np.cumsum(counts) - counts
        seen = np.flatnonzero(counts)
        if len(seen):
            st = first[seen]
            bounds[seen] = np.stack([np.minimum.reduceat(xs, st), ys[st], np.maximum.reduceat(xs, st) + 1,
                                     ys[st + counts[seen] - 1] + 1], axis=1)
    else:
        v = flat[starts]
        k = np.where(v >= 0, lut[np.maximum(v, 0)], -1)  # a negative id (void) is no thing: lut[-1] was the last one
        keep = k >= 0
        k, starts, ends = k[keep], starts[keep], ends[keep]
        counts = np.zeros(n, np.int64)
        np.add.at(counts, k, ends - starts + 1)
        ys, ye, xs, xe = run_spans(starts, ends, w)
        seen = np.flatnonzero(counts)
        if len(seen):
            lo, hi = np.full((n, 2), np.iinfo(np.int64).max), np.full((n, 2), -1)
            np.minimum.at(lo, k, np.stack([xs, ys], 1))
            np.maximum.at(hi, k, np.stack([xe, ye], 1))
            bounds[seen] = np.concatenate([lo[seen], hi[seen] + 1], axis=1)
    sid = [s.id for s in things]  # where a thing has pixels its id maps to it: ids == its id is its index's pixels
    crops = [ids[y0:y1, x0:x1] == sid[i] if counts[i] else _EMPTY for i, (x0, y0, x1, y1) in enumerate(bounds.tolist())]
    return _Detections(np.array([s.category_id for s in things], np.int64), bounds, crops, counts.astype(np.int64),
                       np.array([s.score for s in things], np.float32))


# ---- tracks --------------------------------------------------------------------------------------
@dataclass
class _Track:
    """One identity: where and how it was last seen (bounded state, whatever the video length)."""

    id: int
    cls: int
    bounds: list[int]  # (x0, y0, x1, y1) where last seen
    crop: np.ndarray  # bool [h, w] its mask then (a copy)
    area: int
    extent: list[float]  # (w, h): the largest box it had recently (for lost tracks)
    vel: list[float] = field(default_factory=lambda: [0.0, 0.0])  # px/frame (x, y)
    anchor: list[int] = field(default_factory=lambda: [0, 0])  # per axis, the edge that moved as predicted:
    #                                                            -1 the low one, 1 the high one, 0 both
    age: int = 0  # frames since last seen
    hits: int = 1
    speed: float = 0.0  # px/frame, the largest recent (decays 0.8 per update): a bounce keeps it


@dataclass(frozen=True)
class TrackStats:
    """What the last :meth:`Tracker.update` did (ids, for logs and tests)."""

    matched: tuple[int, ...] = ()  # tracks matched by mask IoU
    covered: tuple[int, ...] = ()  # then by mask cover (the smaller mask mostly inside the other)
    extended: tuple[int, ...] = ()  # then by box cover with their predicted extent
    started: tuple[int, ...] = ()  # new ids
    dropped: tuple[int, ...] = ()  # tracks unseen for more than max_age frames, forgotten
    near: tuple[int, ...] = ()  # matched by the distance of box centres after the covers (nothing overlapped)


class Tracker:
    """Stable ids for the instances (or panoptic things) of one video source; see the module docstring.

    iou_threshold: least mask IoU (predicted track vs detection) for a match.
    max_age: frames a track survives unseen.
    motion: predict by constant velocity (else: where last seen).
    momentum: weight of the newest velocity measurement.
    cover_threshold: least cover for the partial-view matches (step 5; ``partial_views=False``: none).
    distance_gate: the centre-distance match's gate for a track without a velocity, in object diagonals
        (step 5c; 0: none).
    thing_offset: panoptic thing segment id = ``thing_offset + track id`` (stuff: ``category_id + 1``).
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 15, motion: bool = True, momentum: float = 0.5,
                 cover_threshold: float = 0.5, partial_views: bool = True, thing_offset: int = 1000,
                 distance_gate: float = 1.0):
        if not 0.0 < iou_threshold <= 1.0:
            raise InputError(f"Tracker iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_age < 0:
            raise InputError(f"Tracker max_age must be >= 0 frames, got {max_age}")
        if not 0.0 < cover_threshold <= 1.0:
            raise InputError(f"Tracker cover_threshold must be in (0, 1], got {cover_threshold}")
        if not 0.0 < momentum <= 1.0:
            raise InputError(f"Tracker momentum must be in (0, 1], got {momentum}")
        if thing_offset < 1:
            raise InputError(f"Tracker thing_offset must be >= 1, got {thing_offset}")
        if not 0.0 <= distance_gate < float("inf"):
            raise InputError(f"Tracker distance_gate must be >= 0 object diagonals (0: off), got {distance_gate}")
        self.iou_threshold, self.max_age, self.motion = float(iou_threshold), int(max_age), bool(motion)
        self.momentum, self.cover_threshold = float(momentum), float(cover_threshold)
        self.partial_views, self.thing_offset = bool(partial_views), int(thing_offset)
        self.distance_gate = float(distance_gate)  # 0: off (step 5c)
        self.tracks: list[_Track] = []
        self.last = TrackStats()
        self.frames = 0  # frames seen since the last reset
        self._next_id = 1
        self._shape: ImageShape | None = None

    def reset(self) -> None:
        """Forget every track (a discontinuity: the next frame's objects all get new ids)."""
        self.tracks = []
        self.last = TrackStats()
        self.frames = 0
        self._shape = None

    @functools.singledispatchmethod
    def update(self, result: Any) -> Any:
        """The result of the next frame with ids: an :class:`InstanceResult` with ``track_ids``, or a
        :class:`PanopticResult` renumbered (module docstring)."""
        raise InputError(f"Tracker.update takes an InstanceResult or a PanopticResult, got {type(result).__name__}",
                         fix="track instance or panoptic results (semantic results have no objects to tell apart)")

    @update.register(InstanceResult)  # by class: Python 3.8 cannot evaluate the annotations
    def _(self, result: InstanceResult) -> InstanceResult:
        ids = self._step(_instance_detections(result), result.image_shape)
        return result.replace(track_ids=ids)  # keeps a compact result compact

    @update.register(PanopticResult)
    def _(self, result: PanopticResult) -> PanopticResult:
        things = [s for s in result.segments if s.isthing]
        for s in result.segments:
            if not s.isthing and s.category_id + 1 >= self.thing_offset:
                raise InputError(f"panoptic stuff category {s.category_id} would take segment id {s.category_id + 1}, "
                                 f"which is in the range of thing ids (from thing_offset {self.thing_offset})",
                                 fix=f"Tracker(thing_offset=...) above {s.category_id + 1}")
        dets = _thing_detections(result, things)
        ids = self._step(dets, result.shape)
        return _renumber(result, things, ids, self.thing_offset)

    # ---- one frame -------------------------------------------------------------------------------
    def _step(self, dets: _Detections, shape: ImageShape) -> np.ndarray:
        if self._shape is not None and shape != self._shape:
            self.reset()  # another frame size: the positions of the tracks mean nothing there
        self._shape = shape
        self.frames += 1
        pred = self._predict()
        tracks = self.tracks
        n = len(dets.classes)
        det_of: dict[int, int] = {}  # track index -> detection index
        matched = covered = extended = near = ()
        if tracks and n:
            every = list(range(len(tracks)))
            inter, t_area = self._intersections(pred, every, dets, list(range(n)), shape)
            union = t_area[:, None] + dets.areas[None, :] - inter
            pairs = assign(np.where(union > 0, inter / np.maximum(union, 1), 0.0), self.iou_threshold)
            det_of.update(pairs)
            matched = tuple(tracks[t].id for t, _ in pairs)
            if self.partial_views:
                covered = self._leftovers(lambda rows, cols: self._cover(pred, rows, dets, cols, shape), det_of, n)
                extended = self._leftovers(lambda rows, cols: self._extent_cover(pred, rows, dets, cols), det_of, n)
            if self.distance_gate > 0:  # (c) no overlap at all: fast, turning or bouncing objects, first frames
                near = self._leftovers(lambda rows, cols: self._nearness(pred, rows, dets, cols), det_of, n,
                                       minimum=1e-3)
        ids = np.full(n, -1, np.int64)
        for t, d in det_of.items():
            self._update_track(tracks[t], dets, d, shape)
            ids[d] = tracks[t].id
        kept, dropped = [], []
        for t, tr in enumerate(tracks):
            if t not in det_of:
                tr.age += 1
                if tr.age > self.max_age or not _inside(pred[t], shape):
                    dropped.append(tr.id)
                    continue
            kept.append(tr)
        started = []
        for d in np.flatnonzero(ids < 0).tolist():
            if dets.areas[d] == 0:
                continue  # an empty mask: nothing to follow (its id stays -1)
            x0, y0, x1, y1 = b = dets.bounds[d].tolist()
            kept.append(_Track(self._next_id, int(dets.classes[d]), b, dets.crops[d].copy(), int(dets.areas[d]),
                               [float(x1 - x0), float(y1 - y0)]))
            ids[d] = self._next_id
            started.append(self._next_id)
            self._next_id += 1
        self.tracks = kept
        self.last = TrackStats(matched, covered, extended, tuple(started), tuple(dropped), near)
        return ids

    def _predict(self) -> np.ndarray:
        """``int64 [T, 4]`` each track's bounds shifted by its velocity over the frames since it was seen."""
        if not self.tracks:
            return np.zeros((0, 4), np.int64)
        bounds = np.array([t.bounds for t in self.tracks], np.int64)
        if not self.motion:
            return bounds
        shift = np.rint([[t.vel[0] * (t.age + 1), t.vel[1] * (t.age + 1)] for t in self.tracks]).astype(np.int64)
        return bounds + np.concatenate([shift, shift], axis=1)

    def _intersections(self, pos: np.ndarray, rows: list[int], dets: _Detections, cols: list[int],
                       shape: ImageShape) -> tuple[np.ndarray, np.ndarray]:
        """``(int64 [R, C]`` pixels shared by track ``rows[r]``'s mask placed at ``pos[rows[r]]`` and detection
        ``cols[c]`` (0 outside the gate: another class, or boxes apart), ``int64 [R]`` those masks' areas
        inside the frame)."""
        tracks = [self.tracks[t] for t in rows]
        pos = pos[rows]
        cls = np.array([t.cls for t in tracks], np.int64)
        gate = _overlaps(pos, dets.bounds[cols]) & (cls[:, None] == dets.classes[cols][None, :])
        inter = np.zeros(gate.shape, np.int64)
        inside = (pos[:, 0] >= 0) & (pos[:, 1] >= 0) & (pos[:, 2] <= shape.width) & (pos[:, 3] <= shape.height)
        areas = np.array([tr.area if ok else _area_inside(tr.crop, int(p[0]), int(p[1]), shape)
                          for tr, p, ok in zip(tracks, pos, inside.tolist())], np.int64)
        for r, c in zip(*np.nonzero(gate)):
            d = cols[c]
            inter[r, c] = _crop_inter(tracks[r].crop, int(pos[r, 0]), int(pos[r, 1]),
                                      dets.crops[d], int(dets.bounds[d, 0]), int(dets.bounds[d, 1]))
        return inter, areas

    def _cover(self, pred: np.ndarray, rows: list[int], dets: _Detections, cols: list[int],
               shape: ImageShape) -> np.ndarray:
        """``float [R, C]`` the share of the smaller mask (track, detection) inside the other, the track's
        mask where predicted or where last seen, whichever covers more. Where last seen catches what the
        shift cannot: a mask held at one side (by the frame border, by an occluder) that grows or
        shrinks from the other as the object enters or leaves."""
        out = np.zeros((len(rows), len(cols)))
        for pos in (pred, np.array([t.bounds for t in self.tracks], np.int64)):
            inter, t_area = self._intersections(pos, rows, dets, cols, shape)
            smaller = np.minimum(t_area[:, None], dets.areas[cols][None, :])
            out = np.maximum(out, np.where(smaller > 0, inter / np.maximum(smaller, 1), 0.0))
        return out

    def _extent_cover(self, pred: np.ndarray, rows: list[int], dets: _Detections, cols: list[int]) -> np.ndarray:
        """``float [R, C]`` share of the smaller box (a track's predicted extent, a detection's box) inside
        the other (same class only)."""
        boxes = np.empty((len(rows), 4))
        for k, t in enumerate(rows):
            tr = self.tracks[t]
            cx, cy = self._anchor_centre(tr, pred[t])
            boxes[k] = (cx - tr.extent[0] / 2, cy - tr.extent[1] / 2, cx + tr.extent[0] / 2, cy + tr.extent[1] / 2)
        cover = _box_cover(boxes, dets.bounds[cols].astype(float))
        cls = np.array([self.tracks[t].cls for t in rows], np.int64)
        cover[cls[:, None] != dets.classes[cols][None, :]] = 0.0
        return cover

    def _nearness(self, pred: np.ndarray, rows: list[int], dets: _Detections, cols: list[int]) -> np.ndarray:
        """``float [R, C]`` ``1 - d / gate`` (0 beyond the gate or across classes): ``d`` the distance from the
        detection's box centre to the track's, predicted or where last seen (the nearer), ``gate`` =
        ``distance_gate`` x the diagonal of the track's extent while it has no velocity (one frame seen), then
        at most 1.5 x its speed x the frames since seen + 0.15 x that diagonal. A detection much larger than the track's
        extent (3x the area) is not it."""
        db = dets.bounds[cols].astype(float)
        dc = np.stack([(db[:, 0] + db[:, 2]) / 2, (db[:, 1] + db[:, 3]) / 2], 1)
        dwh = np.stack([db[:, 2] - db[:, 0], db[:, 3] - db[:, 1]], 1)
        out = np.zeros((len(rows), len(cols)))
        for k, t in enumerate(rows):
            tr = self.tracks[t]
            ex, ey = tr.extent
            diag = float(np.hypot(ex, ey))
            gate = self.distance_gate * diag  # no velocity yet: anywhere within one object size
            if tr.hits >= 2:  # a measured velocity: the miss is bounded by the motion (a bounce, a turn)
                gate = min(gate, 1.5 * max(float(np.hypot(*tr.vel)), tr.speed) * (tr.age + 1) + 0.15 * diag)
            if gate <= 0:
                continue
            d = np.full(len(cols), np.inf)
            for b in (pred[t], tr.bounds):
                c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], float)
                d = np.minimum(d, np.hypot(*(dc - c).T))
            ok = (dets.classes[cols] == tr.cls) & (dwh[:, 0] * dwh[:, 1] <= 3 * ex * ey)
            out[k] = np.where(ok & (d < gate), 1 - d / gate, 0.0)
        return out

    def _leftovers(self, weigh: Any, det_of: dict[int, int], n_dets: int,
                   minimum: float | None = None) -> tuple[int, ...]:
        """Match the tracks still unmatched to the detections still free on ``weigh(rows, cols) >= minimum``
        (default ``cover_threshold``); adds to ``det_of``, returns the ids matched."""
        taken = set(det_of.values())
        rows = [t for t in range(len(self.tracks)) if t not in det_of]
        cols = [d for d in range(n_dets) if d not in taken]
        if not rows or not cols:
            return ()
        pairs = assign(weigh(rows, cols), self.cover_threshold if minimum is None else minimum)
        for a, b in pairs:
            det_of[rows[a]] = cols[b]
        return tuple(self.tracks[rows[a]].id for a, _ in pairs)

    @staticmethod
    def _anchor_centre(tr: _Track, pred: np.ndarray) -> tuple[float, float]:
        """The predicted centre of a track's whole extent: the visible box it was last seen with may be a
        part of it; the extent hangs from the edge that last moved as predicted (else the centre)."""
        c = []
        for axis in (0, 1):
            lo, hi, size = float(pred[axis]), float(pred[axis + 2]), float(tr.extent[axis])
            a = tr.anchor[axis]
            c.append(lo + size / 2 if a < 0 else hi - size / 2 if a > 0 else (lo + hi) / 2)
        return c[0], c[1]

    def _update_track(self, tr: _Track, dets: _Detections, d: int, shape: ImageShape) -> None:
        """Take detection ``d``'s mask; velocity from the edges that moved as predicted (module docstring)."""
        new, old, vel = dets.bounds[d].tolist(), tr.bounds, tr.vel
        gap = tr.age + 1
        obs = list(vel)
        for axis, extent in ((0, shape.width), (1, shape.height)):
            lo, hi = new[axis] - old[axis], new[axis + 2] - old[axis + 2]  # edge displacements
            # an edge on the frame border is the border's, not the object's
            lo_ok, hi_ok = min(old[axis], new[axis]) > 0, max(old[axis + 2], new[axis + 2]) < extent
            cands = [(lo, -1)] * lo_ok + [(hi, 1)] * hi_ok + [((lo + hi) / 2, 0)] * (lo_ok and hi_ok)
            if not cands:
                continue
            if tr.hits < 2:  # no velocity yet: the centre, or the one real edge
                value, which = cands[-1]
            else:
                want = vel[axis] * gap
                value, which = min(cands, key=lambda c: abs(c[0] - want))
            obs[axis] = value / gap
            tr.anchor[axis] = 0 if lo_ok and hi_ok and abs(hi - lo) <= 1 else which
        m = 1.0 if tr.hits < 2 else self.momentum
        if self.distance_gate > 0 and np.hypot(obs[0] - vel[0], obs[1] - vel[1]) > 0.5 * max(tr.extent):
            m = 1.0  # the motion changed (a bounce, a sharp turn): averaging would predict neither the old nor the new
        tr.vel = [vel[0] + m * (obs[0] - vel[0]), vel[1] + m * (obs[1] - vel[1])]
        tr.speed = max(float(np.hypot(*obs)), 0.8 * tr.speed)
        # the largest recent box, slowly forgotten
        tr.extent = [max(new[2] - new[0], tr.extent[0] * 0.97), max(new[3] - new[1], tr.extent[1] * 0.97)]
        tr.bounds, tr.crop, tr.area = new, dets.crops[d].copy(), int(dets.areas[d])
        tr.age, tr.hits = 0, tr.hits + 1


def _inside(b: np.ndarray, shape: ImageShape) -> bool:
    """Whether the box overlaps the frame at all."""
    return b[2] > 0 and b[3] > 0 and b[0] < shape.width and b[1] < shape.height


def _area_inside(crop: np.ndarray, x: int, y: int, shape: ImageShape) -> int:
    x0, y0 = max(0, -x), max(0, -y)
    x1, y1 = min(crop.shape[1], shape.width - x), min(crop.shape[0], shape.height - y)
    return int(np.count_nonzero(crop[y0:y1, x0:x1])) if x0 < x1 and y0 < y1 else 0


def _renumber(r: PanopticResult, things: list[Segment], track_ids: np.ndarray, thing_offset: int) -> PanopticResult:
    """Thing k -> ``thing_offset + track_ids[k]``; stuff -> ``category_id + 1`` (merged per category);
    pixels of an id no segment describes -> 0 (void)."""
    old = np.array([s.id for s in r.segments], np.int64)
    lut = np.zeros(max(int(r.segment_ids.max(initial=0)), int(old.max(initial=0))) + 1, np.int32)
    tid = {s.id: int(t) for s, t in zip(things, track_ids)}
    segments: dict[int, Segment] = {}
    for s in r.segments:
        if s.isthing:
            if tid[s.id] < 0:  # an empty thing segment: no pixels to renumber, nothing to track
                continue
            new = thing_offset + tid[s.id]
            segments[new] = dataclasses.replace(s, id=new)
        else:
            new = s.category_id + 1
            prev = segments.get(new)
            segments[new] = dataclasses.replace(s, id=new) if prev is None else \
                dataclasses.replace(prev, area=prev.area + s.area, score=max(prev.score, s.score))
        lut[s.id] = new
    return dataclasses.replace(r, segment_ids=lut[r.segment_ids], segments=tuple(segments.values()))


def to_track_result(result: InstanceResult | PanopticResult) -> TrackResult:
    """A tracked result as a :class:`TrackResult`: one mask per object, ``object_ids`` = track ids
    (instances with ``track_ids >= 0``) or thing segment ids (panoptic: ``thing_offset + track id``)."""
    if isinstance(result, InstanceResult):
        if result.masks is None or result.track_ids is None:
            raise InputError("to_track_result needs an InstanceResult with masks and track_ids",
                             fix="pass the result of Tracker.update on a mask-producing (instance) model")
        keep = result.track_ids >= 0
        return TrackResult(result.masks[keep], result.track_ids[keep].astype(np.int64),
                           result.scores[keep].astype(np.float32))
    if isinstance(result, PanopticResult):
        things = [s for s in result.segments if s.isthing]
        ids = np.array([s.id for s in things], np.int64)
        masks = result.segment_ids[None] == ids[:, None, None] if len(things) else \
            np.zeros((0, *result.segment_ids.shape), bool)
        return TrackResult(masks, ids, np.array([s.score for s in things], np.float32))
    raise InputError(f"to_track_result takes an InstanceResult or a PanopticResult, got {type(result).__name__}")
