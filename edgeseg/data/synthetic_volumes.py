"""Synthetic volumes with exact voxel labels, for volumetric models (V-Net): the 3-D counterpart of
the shapes scenes, so that a volumetric model can be trained, quantized and gated on a task metric
(Dice) on this machine, where no medical volume can be downloaded.

A volume ``float32 [D, H, W]`` holds 1-3 bright ellipsoids (the foreground, label 1), 0-2 dark ones
(distractors, label 0: an intensity threshold on the absolute contrast would take them), a smooth
background (a few random 3-D sinusoids) and Gaussian noise strong enough that single voxels are
ambiguous (the model must pool over neighbours), normalised to zero mean and unit variance. Every
volume is a pure function of ``(seed, index)``: training streams and held-out sets never overlap
when their seeds differ.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

#: default (D, H, W): a multiple of 16 on every axis (V-Net halves four times)
VOLUME_SHAPE = (32, 64, 64)


def synthetic_volume(seed: int, index: int, shape: tuple[int, int, int] = VOLUME_SHAPE,
                     noise: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """``(volume float32 [D, H, W], labels uint8 [D, H, W])`` number ``index`` of stream ``seed``.
    Labels are exact: a voxel (centre ``(z, y, x)``) is 1 iff it lies inside a bright ellipsoid."""
    d, h, w = (int(s) for s in shape)
    if min(d, h, w) < 8:
        raise InputError(f"synthetic volume shape {tuple(shape)} is too small", fix="use at least 8 voxels per axis")
    rng = np.random.default_rng([int(seed), int(index)])
    z, y, x = np.meshgrid(np.arange(d, dtype=np.float32), np.arange(h, dtype=np.float32),
                          np.arange(w, dtype=np.float32), indexing="ij")
    vol = np.zeros((d, h, w), np.float32)
    for _ in range(3):  # smooth background: random plane waves of 12-40 voxels
        k = rng.normal(size=3)
        k *= 2 * np.pi / (np.linalg.norm(k) * rng.uniform(12, 40))
        vol += np.float32(rng.uniform(0.2, 0.5)) * np.cos(k[0] * z + k[1] * y + k[2] * x + rng.uniform(0, 2 * np.pi))
    labels = np.zeros((d, h, w), np.uint8)
    bright, dark = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    for i in range(bright + dark):
        radii = rng.uniform(0.08, 0.2, 3) * (d, h, w) + 1.5
        centre = rng.uniform(0.15, 0.85, 3) * (d, h, w)
        inside = (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                  + ((x - centre[2]) / radii[2]) ** 2) <= 1.0
        contrast = np.float32(rng.uniform(0.8, 1.6))
        if i < bright:
            vol[inside] += contrast
            labels[inside] = 1
        else:
            vol[inside] -= contrast
    vol += rng.normal(0.0, noise, vol.shape).astype(np.float32)
    vol -= vol.mean()
    vol /= max(float(vol.std()), 1e-6)
    return vol, labels


def synthetic_volumes(seed: int, count: int, shape: tuple[int, int, int] = VOLUME_SHAPE,
                      start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Volumes ``start .. start + count - 1`` of stream ``seed`` stacked: ``(float32 [count, 1, D, H, W],
    uint8 [count, D, H, W])``."""
    pairs = [synthetic_volume(seed, start + i, shape) for i in range(int(count))]
    return np.stack([v for v, _ in pairs])[:, None], np.stack([lab for _, lab in pairs])
