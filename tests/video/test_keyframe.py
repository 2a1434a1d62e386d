"""Keyframe acceleration: when the segmenter runs, and how results are carried between keyframes."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.structures import ImageShape, InstanceResult, PanopticResult, Segment, SemanticResult
from edgeseg.video.flow import FlowField
from edgeseg.video.keyframe import (
    KeyframeConfig, KeyframeFlow, Keyframes, compose_flow, finest_level, full_maps, local_unexplained,
    unexplained_fraction, warp_instances, warp_panoptic, warp_semantic,
)


def _translation(h: int, w: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """Backward maps of a scene moved by (dx, dy): pixel (x, y) was at (x - dx, y - dy)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx - dx, gy - dy


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (0, 0), 2.0)
    g = cv2.normalize(g, None, 0, 255, cv2.NORM_MINMAX)
    return np.repeat(g[..., None], 3, axis=2)


def test_semantic_labels_move_with_the_scene():
    labels = np.zeros((40, 60), np.uint8)
    labels[10:20, 5:25] = 3
    conf = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    out = warp_semantic(SemanticResult(labels, ("a", "b", "c", "d"), conf), _translation(40, 60, 7, -3))
    want = np.zeros_like(labels)
    want[7:17, 12:32] = 3
    assert np.array_equal(out.labels, want) and out.labels.dtype == np.uint8
    assert np.allclose(out.confidence[:-3, 7:], conf[3:, :-7])  # out(x, y) = in(x - 7, y + 3)
    assert out.classes == ("a", "b", "c", "d")


def test_instances_move_leave_and_keep_their_ids():
    H, W = 40, 60
    masks = np.zeros((2, H, W), bool)
    masks[0, 10:20, 10:20] = True
    masks[1, 5:15, 54:60] = True  # at the right border: leaves the frame when the scene moves right by 8
    res = InstanceResult(boxes=np.array([[10, 10, 20, 20], [54, 5, 60, 15]], np.float32),
                         scores=np.array([0.9, 0.8], np.float32), classes=np.array([1, 2], np.int32),
                         image_shape=ImageShape(H, W), masks=masks, track_ids=np.array([7, 8]))
    out = warp_instances(res, _translation(H, W, 8, 2))
    assert len(out.scores) == 1 and out.track_ids.tolist() == [7] and out.classes.tolist() == [1]
    want = np.zeros((H, W), bool)
    want[12:22, 18:28] = True
    assert np.array_equal(out.masks[0], want)
    assert out.boxes.tolist() == [[18, 12, 28, 22]] and out.mask_boxes.tolist() == [[18, 12, 28, 22]]


def test_warped_crops_equal_warping_each_full_mask():
    """Sub-pixel, non-uniform flow: each warped crop equals a nearest remap of the whole full-size mask
    (the reference), for full-size and compact inputs alike; the output stays compact."""
    import cv2

    rng = np.random.default_rng(3)
    H, W, n = 48, 64, 6
    yy, xx = np.mgrid[0:H, 0:W]
    masks = np.zeros((n, H, W), bool)
    for k in range(n):
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(3, 10)
        masks[k] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    masks[2] = False  # an empty mask is dropped
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    mx = gx - 3.4 + 1.7 * np.sin(gy / 7).astype(np.float32)
    my = gy + 2.6 - 1.3 * np.cos(gx / 9).astype(np.float32)
    full = InstanceResult(boxes=np.zeros((n, 4), np.float32), scores=np.linspace(0.9, 0.4, n).astype(np.float32),
                          classes=np.arange(n, dtype=np.int32), image_shape=ImageShape(H, W), masks=masks)
    ref = [cv2.remap(m.view(np.uint8), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
           .astype(bool) for m in masks]
    kept = [k for k in range(n) if ref[k].any()]
    for inp in (full, full.compact()):
        out = warp_instances(inp, (mx, my))
        assert out.is_compact and out.classes.tolist() == kept
        for j, k in enumerate(kept):
            assert np.array_equal(out.masks[j], ref[k]), k
            ys, xs = np.nonzero(ref[k])
            assert out.mask_boxes[j].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_panoptic_ids_move_and_areas_are_recounted():
    ids = np.zeros((30, 30), np.int32)
    ids[:, :] = 1
    ids[5:10, 5:10] = 300  # an id above 255: remapped exactly
    ids[0:4, 26:30] = 301  # leaves the frame
    res = PanopticResult(ids, (Segment(1, 0, False, 900 - 41), Segment(300, 1, True, 25), Segment(301, 1, True, 16)))
    out = warp_panoptic(res, _translation(30, 30, 5, 0))
    assert out.segment_ids[5:10, 10:15].tolist() == [[300] * 5] * 5
    assert [s.id for s in out.segments] == [1, 300]
    assert {s.id: s.area for s in out.segments} == {1: 900 - 25 - 150, 300: 25}  # 5 columns entered as void
    assert (out.segment_ids[:, :5] == 0).all()


def test_full_maps_rescale_small_flow_vectors():
    flow = np.zeros((10, 20, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.0, -0.5  # in small pixels: 2 and -1 full pixels at half size
    mx, my = full_maps(flow, (20, 40))
    assert np.allclose(mx - np.arange(40)[None, :], 2.0) and np.allclose(my - np.arange(20)[:, None], -1.0)


def test_flow_reach_bounds_the_full_maps_displacement():
    # a random small flow at an uneven scale: the bound holds and is reached (hand case: 1.0 small px at
    # 2x = 2 full px, -0.5 at 2x = 1), and instances warped with it equal those warped with the measured one
    from edgeseg.video.keyframe import flow_reach

    flow = np.zeros((10, 20, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.0, -0.5
    assert flow_reach(flow, (20, 40)) == 2.0
    rng = np.random.default_rng(4)
    flow = rng.normal(0, 3, (17, 31, 2)).astype(np.float32)
    mx, my = full_maps(flow, (50, 93))
    measured = max(np.abs(mx - np.arange(93)).max(), np.abs(my - np.arange(50)[:, None]).max())
    assert measured <= flow_reach(flow, (50, 93)) + 1e-4
    assert measured >= 0.9 * flow_reach(flow, (50, 93))  # not loose: the largest vector lands on a pixel
    masks = np.zeros((3, 50, 93), bool)
    masks[0, 5:20, 10:30], masks[1, 30:48, 60:90], masks[2, 0:4, 0:5] = True, True, True
    res = InstanceResult(boxes=np.array([[10, 5, 30, 20], [60, 30, 90, 48], [0, 0, 5, 4]], np.float32),
                         scores=np.array([0.9, 0.8, 0.7], np.float32), classes=np.zeros(3, np.int32),
                         image_shape=ImageShape(50, 93), masks=masks)
    a, b = warp_instances(res, (mx, my)), warp_instances(res, (mx, my), flow_reach(flow, (50, 93)))
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.boxes, b.boxes)


def test_unexplained_fraction_counts_what_the_flow_misses():
    cur = _texture(32, 32)[..., 0]
    zero = np.zeros((32, 32, 2), np.float32)
    assert unexplained_fraction(cur, cur, zero, 24) == 0.0
    other = cur.copy()
    other[:8] = 255 - other[:8]  # a quarter of the frame changed, far beyond the residual where it is not mid-grey
    frac = unexplained_fraction(cur, other, zero, 24)
    changed = np.count_nonzero(np.abs(cur[:8].astype(int) - (255 - cur[:8].astype(int))) > 24) / cur.size
    assert frac == pytest.approx(changed)


def test_local_unexplained_is_the_densest_window():
    """Hand-counted: a 4x4 block of unexplained cells in a 20x20 grid fills a 3x3 window (0.15 x 20 = 3 cells);
    a window of 0.3 (6 cells) holds 16 of 36; one the grid cannot hold is the whole-grid fraction. A band half a
    window wide along the edges is left out (2 cells for the 3-cell window, 3 for the 6-cell one)."""
    bad = np.zeros((20, 20), np.uint8)
    bad[5:9, 11:15] = 1
    assert local_unexplained(bad, 0.15) == 1.0
    assert local_unexplained(bad, 0.3) == 16 / 36
    assert local_unexplained(bad, 1.0) == 16 / 400
    assert local_unexplained(np.zeros((20, 20), np.uint8), 0.15) == 0.0
    edge = np.zeros((20, 20), np.uint8)
    edge[:, :2] = 1  # new content along the left edge
    assert local_unexplained(edge, 0.15) == 0.0 and local_unexplained(edge, 1.0) == 40 / 400


def test_a_small_object_the_flow_loses_is_a_keyframe_and_a_pan_is_not():
    """Session 54's audit: a small object jumping further than the flow follows never made 8 % of the frame, so its
    carried mask lagged it until the next interval (and the tracker gave it a new id there). The share of unexplained
    pixels in a window about its size triggers a keyframe; a camera pan (the flow explains it) does not."""
    background = _texture(120, 320, seed=5)

    def frames(jump: int, pan: int):
        for t in range(8):
            f = background[:, 80 - pan * t: 80 - pan * t + 160].copy()
            x = 10 + jump * t
            f[50:62, x:x + 12] = (255, 255, 255) if t % 2 else (0, 0, 0)  # a small object, 2x its size a frame
            yield f

    for local, want in ((0.4, True), (None, False)):
        kf = Keyframes(_Counter(), KeyframeConfig(interval=30, motion=0.08, local=local))
        for f in frames(jump=20, pan=0):
            kf(f)
        assert (kf.stats.by_local > 0) == want and kf.stats.by_motion == 0, (local, kf.stats)
    kf = Keyframes(_Counter(), KeyframeConfig(interval=30, motion=0.08))
    for t in range(8):
        kf(background[:, 80 - 6 * t: 80 - 6 * t + 160].copy())  # a pan of 6 px a frame, nothing else moving
    assert kf.stats.keyframes == 1 and kf.stats.by_local == 0
    # the review: at 640x360 a pan of 24-32 px a frame filled a window at the edge it enters from (new content the
    # flow never explains); the edges' band is left to the whole-frame check
    import cv2

    grey = cv2.GaussianBlur(np.random.default_rng(6).integers(0, 256, (360, 1000), dtype=np.uint8), (0, 0), 4)
    wide = np.repeat(cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX)[..., None], 3, axis=2)
    for pan in (24, 32):
        kf = Keyframes(_Counter(), KeyframeConfig(interval=30))
        for t in range(10):
            kf(np.ascontiguousarray(wide[:, 20 + pan * t: 20 + pan * t + 640]))
        assert kf.stats.by_local == 0 and kf.stats.local < 0.2, (pan, kf.stats)  # (the whole-frame check may fire)


class _Counter:
    """A segmenter that labels the frame with its call count (so the test sees which frames ran it)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        return SemanticResult(np.full(rgb.shape[:2], self.calls, np.uint8))


def test_interval_schedule_and_reset():
    seg = _Counter()
    kf = Keyframes(seg, KeyframeConfig(interval=4, motion=None))
    frame = _texture(48, 64)
    keys = []
    for _ in range(10):
        kf(frame)
        keys.append(kf.last_key)
    assert keys == [True, False, False, False, True, False, False, False, True, False]
    assert kf.stats.keyframes == 3 and kf.stats.by_interval == 2 and kf.stats.frames == 10
    kf.reset()
    kf(frame)
    assert kf.last_key and seg.calls == 4
    # the frames in between carry the keyframe's labels (a still scene: unchanged)
    kf(frame)
    assert not kf.last_key


def test_a_cut_or_new_size_triggers_a_keyframe():
    seg = _Counter()
    kf = Keyframes(seg, KeyframeConfig(interval=30, motion=0.1))
    a, b = _texture(48, 64, seed=1), _texture(48, 64, seed=2)
    assert [bool(kf(a) is not None and kf.last_key) for _ in range(3)] == [True, False, False]
    kf(b)  # a scene cut: the flow explains little of it
    assert kf.last_key and kf.stats.by_motion == 1 and kf.stats.unexplained > 0.1
    kf(_texture(40, 64))  # another frame size
    assert kf.last_key and seg.calls == 3


def test_moving_scene_is_propagated_close_to_truth():
    """A textured scene translating 3 px per frame: labels propagated by DIS flow over 5 frames stay
    within a thin band of the true, moved labels."""
    big = _texture(120, 200, seed=3)
    truth = np.zeros((120, 200), np.uint8)
    truth[30:80, 40:120] = 1

    def frame(t):
        return big[:, 60 - 3 * t: 60 - 3 * t + 120].copy(), truth[:, 60 - 3 * t: 60 - 3 * t + 120]

    kf = Keyframes(lambda rgb: SemanticResult(frame(0)[1].copy()), KeyframeConfig(interval=6, motion=None, flow_scale=1.0))
    for t in range(6):
        img, lab = frame(t)
        out = kf(img)
    assert not kf.last_key
    assert (out.labels != lab).mean() < 0.01


def test_bad_configuration_is_refused():
    for bad in (dict(interval=0), dict(interval=2.5), dict(motion=0.0), dict(motion=2), dict(preset="x"), dict(flow_scale=2),
                dict(flow_cells=-1), dict(flow_cells=2.5), dict(flow_cells=True), dict(local=0.0), dict(local=1.5),
                dict(window=0.0), dict(window=2)):
        with pytest.raises(InputError):
            KeyframeConfig(**bad)
    with pytest.raises(InputError, match="uint8 RGB"):
        Keyframes(_Counter())(np.zeros((4, 4), np.float32))


# ---- composed maps: the keyframe's result sampled once per frame -----------------------------------------
def test_composed_flow_is_the_chain_of_both_displacements():
    """``compose_flow(f, e)(x) = f(x) + e(x + f(x))``: with ``e`` affine (bilinear sampling is exact on it)
    and ``f`` a constant sub-pixel shift, every pixel whose sample stays inside the frame is exact."""
    h, w = 20, 30
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    earlier = np.stack([0.1 * gx - 0.05 * gy + 1.5, 0.02 * gx + 0.2 * gy - 2.0], -1).astype(np.float32)
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.25, -0.5
    out = compose_flow(flow, earlier)
    px, py = gx + 1.25, gy - 0.5  # where each pixel was in the previous frame
    want_x = 1.25 + 0.1 * px - 0.05 * py + 1.5
    want_y = -0.5 + 0.02 * px + 0.2 * py - 2.0
    inside = (px <= w - 1) & (py >= 0)
    assert inside.sum() == (w - 2) * (h - 1)
    assert np.allclose(out[..., 0][inside], want_x[inside], atol=1e-4)
    assert np.allclose(out[..., 1][inside], want_y[inside], atol=1e-4)
    # composing with zero leaves a flow unchanged; a zero flow leaves the earlier map unchanged
    assert np.array_equal(compose_flow(flow, np.zeros_like(flow)), flow)
    assert np.allclose(compose_flow(np.zeros_like(flow), earlier), earlier)


class _GivenFlow:
    """A stand-in for the DIS flow: every frame pair gets the same backward flow (full resolution)."""

    def __init__(self, flow: np.ndarray):
        self.flow = flow

    def frame(self, rgb):
        return rgb[..., 0]

    def __call__(self, cur, prev, full):
        return FlowField(self.flow, full)


def _carry(compose: bool, flow: np.ndarray, labels: np.ndarray, frames: int) -> list[np.ndarray]:
    kf = Keyframes(lambda rgb: SemanticResult(labels.copy()), KeyframeConfig(interval=100, motion=None, compose=compose))
    kf.planner._flow = _GivenFlow(flow)
    frame = np.zeros((*labels.shape, 3), np.uint8)
    return [kf(frame).labels for _ in range(frames)]


def test_sub_pixel_motion_is_carried_without_drift():
    """A one-pixel line moving 0.4 px per frame: composed, frame t shows it where it truly is,
    round(0.4 t) px on; warped frame to frame (nearest), each frame rounds the 0.4 px away and the
    line never moves."""
    h, w = 12, 40
    labels = np.zeros((h, w), np.uint8)
    labels[:, 10] = 1
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = -0.4  # backward: pixel x was at x - 0.4
    composed, chained = _carry(True, flow, labels, 8), _carry(False, flow, labels, 8)
    for t in range(8):
        col = 10 + int(np.floor(0.4 * t + 0.5))
        assert np.flatnonzero(composed[t][0]).tolist() == [col], t
        assert (composed[t] == composed[t][0]).all()
        assert np.flatnonzero(chained[t][0]).tolist() == [10], t


def test_thin_line_survives_a_shear_when_sampled_once():
    """A one-pixel horizontal line under a smooth vertical shear (rows moving 0.3-0.7 px per frame,
    varying along the line): composed over 6 frames, every column still has exactly one line pixel,
    where the exact accumulated motion puts it; warped frame to frame, rounding on every frame breaks it."""
    h, w = 40, 64
    labels = np.zeros((h, w), np.uint8)
    labels[12] = 1
    flow = np.zeros((h, w, 2), np.float32)
    xs = np.arange(w, dtype=np.float32)
    flow[..., 1] = -(0.5 + 0.2 * np.sin(xs / 5.0))[None, :]  # backward: each column moves down at its own speed
    n = 6
    composed, chained = _carry(True, flow, labels, n + 1), _carry(False, flow, labels, n + 1)
    last = composed[n]
    want = 12 + np.floor(n * (0.5 + 0.2 * np.sin(xs / 5.0)) + 0.5)
    rows = [np.flatnonzero(last[:, x]) for x in range(w)]
    assert all(len(r) == 1 for r in rows)
    assert np.abs(np.array([r[0] for r in rows]) - want).max() <= 1
    broken = sum(np.count_nonzero(chained[n][:, x]) != 1 for x in range(w))
    assert broken > 0


def test_composed_instances_follow_an_object_further_than_any_box_margin():
    """A small object that moved 40 px since the keyframe (more than its size plus the old fixed 16 px
    margin around its box): the warp looks as far as the largest displacement and keeps it."""
    H, W = 60, 100
    masks = np.zeros((1, H, W), bool)
    masks[0, 20:26, 10:16] = True
    res = InstanceResult(boxes=np.array([[10, 20, 16, 26]], np.float32), scores=np.array([0.9], np.float32),
                         classes=np.array([1], np.int32), image_shape=ImageShape(H, W), masks=masks)
    mx, my = _translation(H, W, 0, 0)
    mx[15:31, 45:61] -= 40.0  # only around its new place the flow points back to where it was
    mx[15:31, 5:21] += 30.0  # its old place shows background that was 30 px to the right
    out = warp_instances(res, (mx, my))
    want = np.zeros((H, W), bool)
    want[20:26, 50:56] = True
    assert len(out.scores) == 1 and np.array_equal(out.masks[0], want)


def test_box_only_instances_are_moved_frame_to_frame():
    """Box-only results are not resampled: they follow the flow at their centres frame after frame, also
    with composed maps (a composed map sampled at the keyframe's box would lose a fast object)."""
    H, W = 40, 200
    res = InstanceResult(boxes=np.array([[10, 10, 20, 20]], np.float32), scores=np.array([0.9], np.float32),
                         classes=np.array([1], np.int32), image_shape=ImageShape(H, W))
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = -6.0  # everything moves 6 px right per frame
    kf = Keyframes(lambda rgb: res, KeyframeConfig(interval=100, motion=None))
    kf.planner._flow = _GivenFlow(flow)
    frame = np.zeros((H, W, 3), np.uint8)
    boxes = [kf(frame).boxes[0].tolist() for _ in range(4)]
    assert boxes == [[10, 10, 20, 20], [16, 10, 26, 20], [22, 10, 32, 20], [28, 10, 38, 20]]


def test_flow_cells_choose_the_finest_dis_level():
    import cv2

    # ultrafast: patches every 4 px, finest level 2 at most; 16 cells across a square of as many cells
    # (flow at half size): 960x540 and 1280x720 keep level 2, 640x360 and 320x240 go to level 1
    sizes = ((1920, 1080), (1280, 720), (960, 540), (640, 480), (640, 360), (320, 240), (160, 120))
    assert [finest_level(w // 2, h // 2, 4, 16, 2) for w, h in sizes] == [2, 2, 2, 2, 1, 1, 0]
    # at the boundary: 256x256 is a 64x64 grid of 4-px patches, exactly 16 cells, at level 2
    assert finest_level(256, 256, 4, 16, 2) == 2 and finest_level(255, 256, 4, 16, 2) == 1
    assert finest_level(10_000, 10_000, 4, 16, 2) == 2 and finest_level(480, 270, 4, 40, 2) == 1
    gray = np.zeros((240, 320), np.uint8)  # 160x120 at the flow's half scale
    for cells, level in ((16, 1), (8, 2), (40, 0), (0, 2)):
        flow = KeyframeFlow("ultrafast", 0.5, cells)
        assert flow.small_gray(gray).shape == (120 >> level, 160 >> level) and flow.level == level, cells
    rgb = _texture(240, 320, seed=3)
    flow = KeyframeFlow("ultrafast", 0.5, 16)  # a colour frame shrunk before it is made grey: the same pixels
    assert np.array_equal(flow.frame(rgb), flow.small_gray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)))
    tiny = KeyframeFlow("ultrafast", 1.0, 0)  # level 2 of 24x40 would be 6x10, smaller than a patch
    assert tiny.small_gray(np.zeros((24, 40), np.uint8)).shape == (12, 20) and tiny.level == 1


def test_flow_on_the_finest_grid_is_dis_at_its_finest_level():
    """DIS run directly on its finest level's grid gives the field DIS itself estimates there (and returns
    upsampled bilinearly to its input's size): the same vectors, in the grid's pixels."""
    import cv2

    big = _texture(200, 400, seed=5)[..., 0]
    prev, cur = big[:, 40:360], big[:, 36:356]  # the scene moved 4 px right: pixel x was at x - 4
    flow = KeyframeFlow("ultrafast", 1.0, 0)
    grid = flow(flow.small_gray(cur), flow.small_gray(prev), cur.shape).small
    assert flow.level == 2 and grid.shape == (200 >> 2, 320 >> 2, 2)
    inner = (slice(2, -2), slice(2, -2))
    assert np.median(grid[inner][..., 0]) == pytest.approx(-1.0, abs=0.05)  # -4 px at full size, -1 grid px
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # finest level 2, its own pyramid
    dense = dis.calc(cur, prev, None)
    back = cv2.resize(grid, (320, 200), interpolation=cv2.INTER_LINEAR) * np.float32([320 / 80, 200 / 50])
    assert np.abs(back - dense)[8:-8, 8:-8].mean() < 0.05
    fine = KeyframeFlow("ultrafast", 1.0, 1000)  # 1000 cells across: level 0, the frame's own pixels
    assert fine(fine.small_gray(cur), fine.small_gray(prev), cur.shape).small.shape == (200, 320, 2)


def test_unexplained_fraction_on_the_flow_grid():
    """The motion check runs on the flow's grid (here a quarter of the half-size frame): a cut in
    the right half is unexplained there (its 4x4 averages still differ on about 2 pixels in 5), an 8-px shift is explained by a flow of one grid pixel."""
    kf = KeyframeFlow("ultrafast", 0.5, 8)
    cur = _texture(240, 640, seed=6)[..., 0]
    other = _texture(240, 640, seed=7)[..., 0]
    half = cur.copy()
    half[:, 320:] = other[:, 320:]  # a cut in the right half
    g_cur, g_half = kf.small_gray(cur), kf.small_gray(half)
    assert kf.level == 2 and g_cur.shape == (30, 80)
    zero = np.zeros((30, 80, 2), np.float32)
    assert 0.1 < unexplained_fraction(g_half, g_cur, zero, 24) <= 0.5  # the default motion threshold: 0.08
    assert unexplained_fraction(g_cur, g_cur, zero, 24) == 0.0
    shifted = kf.small_gray(np.ascontiguousarray(np.roll(cur, 8, axis=1)))  # 8 px at full size: 1 grid px
    flow = zero.copy()
    flow[..., 0] = -1.0
    assert unexplained_fraction(shifted, g_cur, flow, 24) < 0.05 < unexplained_fraction(shifted, g_cur, zero, 24)
    with pytest.raises(InputError, match="one size"):
        unexplained_fraction(g_cur, g_cur, np.zeros((60, 160, 2), np.float32), 24)
