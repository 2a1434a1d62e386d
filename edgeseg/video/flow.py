"""Motion for mask propagation: dense backward optical flow (DIS), an object's own motion field, and
the camera's (background) motion.

* :class:`BackwardFlow` computes, for every pixel ``x`` of the current frame, where it was in the
  previous frame, ``x + f(x)``, with OpenCV's DIS (Kroeger et al., "Fast Optical Flow using Dense
  Inverse Search", ECCV 2016) at a reduced resolution. Warping the previous mask by sampling it at
  ``x + f(x)`` (backward warping) leaves no holes.
* :func:`object_flow` replaces the flow around an object by the flow of the object's own interior,
  spread outwards by normalised convolution. Dense flow is smooth across object boundaries, so at
  the boundary it mixes object and background motion; warped with it, a moving object drags
  background along its trailing edge (the uncovered background still carries the old label) and
  thin parts stick to the background. Warping the object's mask with the object's own motion is
  the layered view: the object's layer moves as the object does.
* :func:`background_homography` fits the camera motion (a homography, RANSAC) to flow samples
  away from the objects; :func:`motion_veto` turns "this pixel moves like the background, and
  the object does not" into negative evidence for the object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRESETS = ("ultrafast", "fast", "medium")


def dis_preset(name: str) -> int:
    import cv2

    return {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[name]


MIN_FLOW_SIDE = 16  # DIS flow needs at least 12 pixels a side; tinier frames are upsampled to this for the flow


def flow_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """``(width, height)`` of a frame of ``h`` x ``w`` at the flow's ``scale``, at least :data:`MIN_FLOW_SIDE`
    on each side (OpenCV's DIS flow refuses frames under 12 pixels: a 2x2 video's propagation crashed)."""
    return max(MIN_FLOW_SIDE, round(w * scale)), max(MIN_FLOW_SIDE, round(h * scale))


def to_flow_scale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` (grey or colour) at :func:`flow_size`: shrunk with ``INTER_AREA``, enlarged with
    ``INTER_LINEAR``, itself when the size is already right."""
    import cv2

    size = flow_size(image.shape[0], image.shape[1], scale)
    if size == (image.shape[1], image.shape[0]):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if size[0] < image.shape[1] else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class FlowField:
    """Backward flow of one frame pair, kept at the computing resolution.

    small: ``float32 [h, w, 2]`` (dx, dy) in small-resolution pixels: small pixel ``(x, y)`` of the
    current frame was at ``(x + dx, y + dy)`` in the previous one. full: the frame's ``(H, W)``.
    """

    small: np.ndarray
    full: tuple[int, int]

    @property
    def scale(self) -> float:
        """small / full (width ratio)."""
        return self.small.shape[1] / self.full[1]

    def small_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The small-resolution box covering the full-resolution ``box`` (x0, y0, x1, y1)."""
        (H, W), (h, w) = self.full, self.small.shape[:2]
        sx, sy = w / W, h / H
        x0, y0, x1, y1 = box
        return (max(0, int(x0 * sx) - 1), max(0, int(y0 * sy) - 1),
                min(w, int(np.ceil(x1 * sx)) + 1), min(h, int(np.ceil(y1 * sy)) + 1))

    def to_full(self, a: np.ndarray, sbox: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> np.ndarray:
        """Bilinear upsampling of ``a`` (an array on the small-resolution ``sbox``) to the full-resolution
        ``box``, pixel centres aligned. Values are not rescaled."""
        import cv2

        (H, W), (h, w) = self.full, self.small.shape[:2]
        sx, sy = w / W, h / H
        x0, y0, x1, y1 = box
        mx = ((np.arange(x0, x1, dtype=np.float32) + 0.5) * sx - 0.5 - sbox[0])[None, :]
        my = ((np.arange(y0, y1, dtype=np.float32) + 0.5) * sy - 0.5 - sbox[1])[:, None]
        mx, my = np.broadcast_to(mx, (y1 - y0, x1 - x0)), np.broadcast_to(my, (y1 - y0, x1 - x0))
        return cv2.remap(a, np.ascontiguousarray(mx), np.ascontiguousarray(my), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def full_units(self, f: np.ndarray) -> np.ndarray:
        """Small-resolution flow vectors in full-resolution pixels (in place)."""
        (H, W), (h, w) = self.full, self.small.shape[:2]
        f[..., 0] *= W / w
        f[..., 1] *= H / h
        return f

    def crop(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """``float32 [y1-y0, x1-x0, 2]``: the flow on the full-resolution ``box``, in full-resolution pixels."""
        x0, y0, x1, y1 = box
        if self.small.shape[:2] == self.full:
            return self.small[y0:y1, x0:x1].copy()
        sbox = self.small_box(box)
        return self.full_units(self.to_full(self.small[sbox[1]:sbox[3], sbox[0]:sbox[2]], sbox, box))


class BackwardFlow:
    """DIS optical flow from the current frame back to the previous one, at ``scale`` of the frame size."""

    def __init__(self, preset: str = "medium", scale: float = 0.5, refinement_iterations: int | None = None):
        import cv2

        self.scale = float(scale)
        self._dis = cv2.DISOpticalFlow_create(dis_preset(preset))
        if refinement_iterations is not None:  # variational refinement (medium: 5); 2 is as accurate here, 40 % faster
            self._dis.setVariationalRefinementIterations(int(refinement_iterations))

    def small_gray(self, gray: np.ndarray) -> np.ndarray:
        """The grey frame at the flow's resolution (kept by the caller as the next 'previous')."""
        return to_flow_scale(gray, self.scale)

    def small_size(self, h: int, w: int) -> tuple[int, int]:
        """``(width, height)`` of a frame of ``h`` x ``w`` at the flow's resolution (:func:`flow_size`)."""
        return flow_size(h, w, self.scale)

    def __call__(self, cur_small: np.ndarray, prev_small: np.ndarray, full_shape: tuple[int, int]) -> FlowField:
        return FlowField(self._dis.calc(cur_small, prev_small, None), (int(full_shape[0]), int(full_shape[1])))


def refined_flow(coarse: BackwardFlow, fine: BackwardFlow, cur: np.ndarray, prev: np.ndarray,
                 boxes: list[tuple[int, int, int, int]]) -> tuple[FlowField, FlowField]:
    """The backward flow of grey frames ``cur``/``prev`` at their own resolution, computed finely only
    where it matters: ``coarse``'s flow (at its smaller scale) upsampled over the whole frame, and inside
    each of ``boxes`` (x0, y0, x1, y1 on ``cur``) ``fine``'s flow of that crop. Small objects need the
    fine flow (their parts move a few pixels against each other); the camera's motion does not.
    Returns (that flow, the coarse flow alone)."""
    import cv2

    h, w = cur.shape
    coarse_field = coarse(coarse.small_gray(cur), coarse.small_gray(prev), (h, w))
    c = coarse_field.small
    flow = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= w / c.shape[1]
    flow[..., 1] *= h / c.shape[0]
    for x0, y0, x1, y1 in boxes:
        if x1 - x0 >= 16 and y1 - y0 >= 16:
            flow[y0:y1, x0:x1] = fine(np.ascontiguousarray(cur[y0:y1, x0:x1]), np.ascontiguousarray(prev[y0:y1, x0:x1]),
                                      (y1 - y0, x1 - x0)).small
    return FlowField(flow, (h, w)), coarse_field


def object_flow(flow: np.ndarray, interior: np.ndarray, sigma: float, factor: int = 4) -> np.ndarray:
    """``float32 [h, w, 2]``: ``flow`` inside ``interior`` (bool), elsewhere the interior's flow spread by a
    Gaussian of ``sigma`` px (normalised convolution), fading to the interior's mean flow far away.
    The spreading is computed at 1/``factor`` resolution (it is smooth by construction). Two-channel
    work goes through OpenCV or per-channel planes: numpy broadcasting ``[h, w, 2]`` against
    ``[h, w, 1]`` runs a length-2 inner loop, 20x slower (3.3 ms a call on a DAVIS object's box, now 1.4)."""
    import cv2

    h, w = interior.shape
    interior = np.asarray(interior, bool)  # no copy for the bool masks the propagator passes
    mask = interior.view(np.uint8)
    total = int(np.count_nonzero(mask))
    if total == 0:
        return flow
    flow = np.ascontiguousarray(flow, np.float32)
    mean_x, mean_y = cv2.mean(flow, mask)[:2]
    sw, sh = max(1, w // factor), max(1, h // factor)
    f_s = cv2.resize(cv2.copyTo(flow, mask), (sw, sh), interpolation=cv2.INTER_AREA)  # flow x weight (0 outside)
    w_s = cv2.resize(interior.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    sig = sigma * sw / w
    num_x, num_y = cv2.split(cv2.GaussianBlur(f_s, (0, 0), sig).reshape(sh, sw, 2))
    den = cv2.GaussianBlur(w_s, (0, 0), sig)
    near = np.clip(den / 0.05, 0.0, 1.0)
    inv = near / np.maximum(den, 1e-6)
    far = 1.0 - near
    spread = cv2.merge([num_x * inv + far * mean_x, num_y * inv + far * mean_y]).astype(np.float32)
    spread = cv2.resize(spread.reshape(sh, sw, 2), (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 2)
    return cv2.copyTo(flow, mask, spread)  # the interior keeps its own flow (in place)


def background_homography(small_flow: np.ndarray, objects: np.ndarray, stride: int = 6) -> np.ndarray | None:
    """The camera motion as a 3x3 homography mapping current to previous positions (small-flow pixels),
    fitted with RANSAC to flow samples where ``objects`` (bool, same size) is False; None if it fails."""
    import cv2

    h, w = small_flow.shape[:2]
    ys, xs = np.mgrid[0:h:stride, 0:w:stride]
    keep = ~objects[ys, xs]
    if keep.sum() < 12:
        return None
    src = np.stack([xs[keep], ys[keep]], -1).astype(np.float32)
    dst = src + small_flow[ys[keep], xs[keep]]
    H, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 1.0)
    if H is None or inliers is None or inliers.sum() < 0.3 * len(src):
        return None
    return H


def homography_flow(H: np.ndarray, box: tuple[int, int, int, int], scale: float) -> np.ndarray:
    """``float32 [h, w, 2]``: the flow a small-resolution homography ``H`` gives on the full-resolution
    ``box`` (x0, y0, x1, y1)."""
    import cv2

    x0, y0, x1, y1 = box
    S = np.diag([scale, scale, 1.0])
    Hf = np.linalg.inv(S) @ H @ S
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    pts = np.stack([xs, ys], -1).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(pts, Hf).reshape(y1 - y0, x1 - x0, 2)
    return (moved - np.stack([xs, ys], -1)).astype(np.float32)


def independent_flow(flow: np.ndarray, interior: np.ndarray, camera: np.ndarray, tol: float, sigma: float) -> np.ndarray:
    """``float32 [h, w, 2]``: the motion the object has of its own, for the motion veto.

    The object's pixels that move like the camera (flow within ``tol`` px of ``camera``) are left
    out; every pixel gets the flow of the object's other (independently moving) pixels near it, as
    :func:`object_flow` spreads it. Inside the mask, a region that moves with the camera while the
    rest of the object does not (background taken in on earlier frames) is then vetoed like
    background outside it; the raw flow there (what :func:`object_flow` keeps) never vetoes anything.
    Where nothing of the object moves independently, the camera's motion (no veto at all).
    """
    d = flow - camera
    moving = interior & (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] > tol * tol)
    if not moving.any():
        return camera
    return object_flow(flow, moving, sigma, factor=2)


def motion_reliability(moving: np.ndarray, ring: np.ndarray) -> float:
    """How far "moves unlike the camera" singles out the object around it: ``1 - 2 * m`` clipped to
    [0, 1], with ``m`` the share of the ``ring`` (bool: pixels just outside the object) where
    ``moving`` (bool) is set. 1: nothing around the object moves; 0: half the ring or more does
    (water, a shadow that moves with the object, flow smeared over the background). 0 without a ring."""
    n = int(np.count_nonzero(ring))
    if n == 0:
        return 0.0
    return max(0.0, 1.0 - 2.0 * int(np.count_nonzero(moving & ring)) / n)


def motion_veto(flow: np.ndarray, own: np.ndarray, background: np.ndarray, sigma_px: float, cap: float) -> np.ndarray:
    """``float32 [h, w]`` log-odds <= 0: how much better the background's motion explains each pixel's
    flow than the object's own motion does (Gaussian residuals of ``sigma_px``), capped at ``-cap``."""
    ex, ey = flow[..., 0] - background[..., 0], flow[..., 1] - background[..., 1]
    ox, oy = flow[..., 0] - own[..., 0], flow[..., 1] - own[..., 1]
    d_bg, d_own = ex * ex + ey * ey, ox * ox + oy * oy
    return np.clip((d_bg - d_own) / (2.0 * sigma_px * sigma_px), -cap, 0.0).astype(np.float32)


def photometric(cur: np.ndarray, prev: np.ndarray, own: tuple[np.ndarray, np.ndarray],
                camera: tuple[np.ndarray, np.ndarray], sigma: float, cap_against: float, cap_for: float) -> np.ndarray:
    """``float32 [h, w]`` log-odds: does the object's motion or the camera's explain each pixel's brightness?

    cur: ``[h, w]`` current grey values; prev: the previous grey frame; own/camera: (map_x, map_y) of
    where each pixel was under the object's and under the camera's motion. Gaussian residuals of
    ``sigma`` grey levels; clipped to ``[-cap_against, cap_for]``. Off by default: it finds what moves
    with the object, and a shadow does (DAVIS car-shadow loses 30 points; dance-twirl gains 13).
    """
    import cv2

    c = cur.astype(np.float32)
    e_own = c - cv2.remap(prev, own[0], own[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    e_cam = c - cv2.remap(prev, camera[0], camera[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    return np.clip((e_cam * e_cam - e_own * e_own) / (2.0 * sigma * sigma), -cap_against, cap_for).astype(np.float32)
