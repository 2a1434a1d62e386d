"""``edgeseg.video.flow.object_flow`` against hand-computed cases and an independent numpy form of the
normalised convolution it computes (interior kept, Gaussian-spread interior flow nearby, the
interior's mean far away)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeseg.video.flow import object_flow


def reference(flow: np.ndarray, interior: np.ndarray, sigma: float, factor: int) -> np.ndarray:
    """The same steps with numpy broadcasting (the form object_flow had before it moved to OpenCV)."""
    h, w = interior.shape
    wt = interior.astype(np.float32)
    mean = flow[interior].mean(0)
    sw, sh = max(1, w // factor), max(1, h // factor)
    f_s = cv2.resize(flow * wt[..., None], (sw, sh), interpolation=cv2.INTER_AREA).reshape(sh, sw, 2)
    w_s = cv2.resize(wt, (sw, sh), interpolation=cv2.INTER_AREA)
    sig = sigma * sw / w
    num = cv2.GaussianBlur(f_s, (0, 0), sig).reshape(sh, sw, 2)
    den = cv2.GaussianBlur(w_s, (0, 0), sig)
    near = np.clip(den / 0.05, 0.0, 1.0)[..., None]
    spread = near * (num / np.maximum(den, 1e-6)[..., None]) + (1.0 - near) * mean
    spread = cv2.resize(spread.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 2)
    return np.where(interior[..., None], flow, spread).astype(np.float32)


def test_uniform_interior_flow_spreads_unchanged_and_interior_is_kept():
    # an interior moving by (3, -2) px: every pixel gets (3, -2) (near: num/den = the flow; far: the mean)
    flow = np.zeros((60, 80, 2), np.float32)
    interior = np.zeros((60, 80), bool)
    interior[20:40, 30:50] = True
    flow[interior] = (3.0, -2.0)
    flow[~interior] = (-7.0, 5.0)  # the raw flow outside is replaced
    out = object_flow(flow, interior, sigma=5.0, factor=2)
    np.testing.assert_allclose(out, np.broadcast_to(np.float32([3.0, -2.0]), out.shape), atol=1e-4)
    # no interior: the flow itself
    assert object_flow(flow, np.zeros_like(interior), 5.0) is flow
    # an integer mask means the same as the bool one
    np.testing.assert_array_equal(object_flow(flow, interior.astype(np.int64), 5.0, factor=2), out)


@pytest.mark.parametrize("h, w, factor", [(228, 265, 2), (100, 80, 4), (5, 7, 2), (1, 9, 2)])
def test_matches_the_broadcast_reference(h, w, factor):
    rng = np.random.default_rng(h)
    flow = (rng.normal(size=(h, w, 2)) * 3).astype(np.float32)
    interior = np.zeros((h, w), bool)
    interior[h // 4:max(h // 4 + 1, 3 * h // 4), w // 3:2 * w // 3] = True
    out = object_flow(flow, interior, 5.0, factor)
    assert out.shape == flow.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(flow, interior, 5.0, factor), atol=1e-5)
    np.testing.assert_array_equal(out[interior], flow[interior])
    # far from the interior (a Gaussian of sigma 5 px is ~0 at 60 px): the interior's mean flow
    if h > 200:
        np.testing.assert_allclose(out[-1, -1], flow[interior].mean(0), atol=1e-4)
