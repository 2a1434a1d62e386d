"""Rare-class sampling: which training frames an epoch visits, weighted towards rare classes.

A uniform shuffle shows a street model thousands of road pixels for every pedestrian or pole pixel;
class weights (``wce``) rescale the loss but not what the network sees. Rare-class sampling (Hoyer et
al., "DAFormer", CVPR 2022, section 3.3) changes the frames drawn instead: each draw first picks a
class ``c`` with probability

    P(c) = exp((1 - f_c) / T) / sum_k exp((1 - f_k) / T)

where ``f_c`` is class ``c``'s share of all labelled pixels in the training set and ``T`` the
temperature (DAFormer: 0.01; a larger ``T`` is closer to uniform over classes), then a frame uniformly
among the frames in which ``c`` covers at least ``min_share`` of the labelled pixels. A dataset repeated
in a mix (``4*camvid:...``) keeps its weight: each copy is a candidate. An epoch has as many draws as
the dataset has frames, and its draws are a pure function of ``(seed, epoch)`` (resume-safe).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .class_weights import class_shares


@dataclass(frozen=True)
class RareClassSampler:
    """Frame draws weighted towards rare classes (see the module docstring).

    ``pixels``: ``int64 [N, C]`` from :func:`edgeseg.train.class_weights.frame_class_pixels`. ``class_probs[c]`` is ``P(c)``;
    ``frames[c]`` the candidate frame indices of class ``c`` (empty for a class absent from the data,
    whose probability is 0).
    """

    class_probs: np.ndarray
    frames: tuple[np.ndarray, ...]
    size: int

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, temperature: float, min_share: float = 1e-3) -> "RareClassSampler":
        if not temperature > 0:
            raise InputError(f"rare-class sampling temperature must be > 0, got {temperature}",
                             fix="give --rare-sampling T with T > 0 (DAFormer uses 0.01), or leave it out")
        pixels, share, frame_share = class_shares(pixels, "rare-class sampling")
        enough = frame_share >= min_share
        frames = []
        for c in range(pixels.shape[1]):
            idx = np.flatnonzero(enough[:, c])
            if idx.size == 0:  # the class only ever appears in small patches: any frame holding it
                idx = np.flatnonzero(pixels[:, c] > 0)
            frames.append(idx)
        present = np.array([f.size > 0 for f in frames])
        logits = np.where(present, (1.0 - share) / temperature, -np.inf)
        probs = np.exp(logits - logits[present].max())
        probs /= probs.sum()
        return cls(probs, tuple(frames), int(pixels.shape[0]))

    def indices(self, seed: int, epoch: int, n: int | None = None) -> list[int]:
        """``n`` (default: the dataset size) frame indices for ``epoch``: a pure function of ``(seed, epoch)``."""
        n = self.size if n is None else int(n)
        rng = np.random.default_rng((int(seed), 11, int(epoch)))
        classes = rng.choice(len(self.class_probs), size=n, p=self.class_probs)
        picks = rng.random(n)
        return [int(self.frames[c][int(u * self.frames[c].size)]) for c, u in zip(classes, picks)]

    def frame_probs(self) -> np.ndarray:
        """The probability of drawing each frame, ``float64 [N]`` (for reports and tests)."""
        p = np.zeros(self.size, np.float64)
        for c, idx in enumerate(self.frames):
            if idx.size:
                p[idx] += self.class_probs[c] / idx.size
        return p
