"""Small objects: the propagator works at twice its usual size, with the flow fine on a crop around
each object (edgeseg.video.flow.refined_flow) and the camera's motion fitted on the coarse flow."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgeseg.video import Propagator, PropagatorConfig  # noqa: E402
from edgeseg.video.flow import BackwardFlow, FlowField, background_homography, refined_flow  # noqa: E402


def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(20, 235, (h // 8, w // 8)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_refined_flow_is_the_fine_flow_inside_the_boxes_and_the_coarse_flow_elsewhere():
    big = _texture(140, 180)
    prev, cur = big[20:116, 20:148], big[20:116, 22:150]  # the scene moved 2 px left: backward flow +2 in x
    box = (40, 30, 90, 70)
    flow, coarse = refined_flow(BackwardFlow("medium", 0.5, 2), BackwardFlow("medium", 1.0, 2), cur, prev, [box])
    assert flow.small.shape == (96, 128, 2) and flow.full == (96, 128) and coarse.small.shape == (48, 64, 2)
    x0, y0, x1, y1 = box
    fine = BackwardFlow("medium", 1.0, 2)(np.ascontiguousarray(cur[y0:y1, x0:x1]), np.ascontiguousarray(prev[y0:y1, x0:x1]),
                                          (y1 - y0, x1 - x0)).small
    np.testing.assert_array_equal(flow.small[y0:y1, x0:x1], fine)
    up = cv2.resize(coarse.small, (128, 96), interpolation=cv2.INTER_LINEAR) * np.float32(2.0)
    outside = np.ones((96, 128), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_allclose(flow.small[outside], up[outside], rtol=0, atol=1e-5)
    inner = flow.small[20:76, 20:108]  # away from the borders DIS cannot see past
    assert abs(float(np.median(inner[..., 0])) - 2.0) < 0.25 and abs(float(np.median(inner[..., 1]))) < 0.25


def test_camera_fitted_on_the_coarse_grid_is_the_fine_grid_homography():
    """A known camera motion (zoom about a point plus a shift): the homography fitted on the half-size
    flow and mapped to the full-size grid equals the one fitted on the full-size flow."""
    A = np.array([[1.02, 0.0, -1.5], [0.0, 1.02, 0.8], [0.0, 0.0, 1.0]])  # current -> previous, fine pixels

    def flow_of(h, w, scale):
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        fx, fy = (xs + 0.5) / scale - 0.5, (ys + 0.5) / scale - 0.5  # pixel centres on the fine grid
        px, py = A[0, 0] * fx + A[0, 1] * fy + A[0, 2], A[1, 0] * fx + A[1, 1] * fy + A[1, 2]
        return np.stack([(px + 0.5) * scale - 0.5 - xs, (py + 0.5) * scale - 0.5 - ys], -1).astype(np.float32)

    fine, coarse = flow_of(96, 128, 1.0), flow_of(48, 64, 0.5)
    prop = Propagator()
    got = prop._camera(FlowField(fine, (96, 128)), FlowField(coarse, (96, 128)), [])
    direct = background_homography(fine, np.zeros((96, 128), bool))
    np.testing.assert_allclose(got / got[2, 2], A, atol=2e-3)
    np.testing.assert_allclose(got / got[2, 2], direct / direct[2, 2], atol=2e-3)


def _frames(n, r, size=(480, 854), big=0):
    """A textured background panning 2 px a frame and a disc of radius ``r`` moving 4 px a frame (object 1);
    with ``big``, a second, still disc of that radius (object 2)."""
    h, w = size
    bg = np.dstack([_texture(h + 40, w + 2 * n + 40, s) for s in (1, 2, 3)])
    frames, ids = [], []
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(n):
        img = bg[20:20 + h, 2 * t:2 * t + w].copy()
        m = (xx - 300 - 4 * t) ** 2 + (yy - 240) ** 2 <= r * r
        img[m] = (220, 40, 60)
        ids.append(m.astype(np.uint8))
        if big:
            b = (xx - 650) ** 2 + (yy - 240) ** 2 <= big * big
            img[b] = (40, 60, 220)
            ids[-1][b] = 2
        frames.append(img)
    return frames, ids


@pytest.mark.parametrize("radius, frac, finer", [(40, 0.03, True), (90, 0.03, False), (40, 0.0, False), (40, None, False)])
def test_small_objects_make_the_working_size_finer(radius, frac, finer):
    frames, ids = _frames(4, radius)
    prop = Propagator(PropagatorConfig() if frac is None else PropagatorConfig(small_object_frac=frac))  # None: default, off
    prop.start(frames[0], ids[0])  # a disc of radius 40: 1.2 % of 854x480; of 90: 6.2 %
    assert (prop._shape.width, prop._shape.height) == ((854, 480) if finer else (427, 240))
    for f, m in zip(frames[1:], ids[1:]):
        r = prop.step(f)
        assert r.masks.shape == (1, 480, 854)
        inter, union = (r.masks[0] & (m == 1)).sum(), (r.masks[0] | (m == 1)).sum()
        assert inter / union > 0.9


def test_a_large_object_beside_a_small_one_keeps_the_usual_size():
    """At twice the size a large object is slower and less accurate (DAVIS forced so: 79.2 vs 82.0 J&F, 14 fps)."""
    frames, ids = _frames(2, 40, big=90)
    prop = Propagator(PropagatorConfig(small_object_frac=0.03))
    prop.start(frames[0], ids[0])
    assert (prop._shape.width, prop._shape.height) == (427, 240)


@pytest.mark.data
def test_small_deforming_person_is_tracked_better_in_the_small_object_mode(data_root, tmp_path):
    """A real person cut-out (Cityscapes), 2.8 % of the frame, swinging its legs over a panned street
    (edgeseg.data.composite_vos, seed 0, sequence 7): mean J over the frames between the first and the
    last, the small-object mode against the usual working size (measured: 0.795 against 0.659)."""
    from edgeseg.data.composite_vos import cutouts_from_instances, make_composite_davis
    from edgeseg.data.davis import Davis
    from edgeseg.data.io import read_image
    from edgeseg.eval.vos import region_similarity

    city = data_root / "cityscapes_panoptic"
    cuts = cutouts_from_instances(city / "instances_train.json", count=60, seed=0)
    stills = sorted((city / "train").glob("*.jpg"))
    names = make_composite_davis(tmp_path, cutouts=cuts, video=None, stills=lambda k: read_image(stills[k % len(stills)]),
                                 sequences=8, frames=24, seed=0)
    seq = Davis(tmp_path)[names[7]]
    frames, truth = [f.image for f in seq], seq.masks()
    assert 0.02 < (seq.prompt() > 0).mean() < 0.03
    mean_j = {}
    for frac in (0.0, 0.03):
        prop = Propagator(PropagatorConfig(small_object_frac=frac))
        prop.start(frames[0], seq.prompt())
        mean_j[frac] = np.mean([region_similarity(m > 0, prop.step(f).masks[0]) for f, m in zip(frames[1:-1], truth[1:-1])])
    assert mean_j[0.03] > mean_j[0.0] + 0.08, mean_j
