"""Rare-class copy-paste for semantic training: pixels of rare classes pasted from another frame.

Poles, signs and pedestrians cover a few percent of a street frame; a uniform shuffle shows the network
few of them, and class weights only rescale the loss of those it does see. Copy-paste (Ghiasi et al.,
"Simple Copy-Paste", CVPR 2021, for instances; ClassMix, Olsson et al., WACV 2021, for class masks)
adds them to other frames instead. With probability ``probability`` a training sample gets a donor
frame, drawn uniformly among the frames holding a rare class on at least ``min_share`` of their
labelled pixels and augmented on its own; the donor's pixels labelled with a rare class replace the
sample's (image and labels), where they lie in the donor. Rare classes are those whose share of the
training set's labelled pixels is below uniform (``1 / C``), unless named. Draws are a pure function
of ``(seed, epoch, sample index)``, so resume sees the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .class_weights import class_shares


def paste_classes(image: np.ndarray, labels: np.ndarray, donor_image: np.ndarray, donor_labels: np.ndarray,
                  classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image``/``labels`` with the donor's pixels of ``classes`` (class indices) pasted where they lie."""
    if image.shape != donor_image.shape or labels.shape != donor_labels.shape:
        raise InputError(f"copy-paste needs frames of one size, got {image.shape} and {donor_image.shape}")
    m = np.isin(donor_labels, classes)
    return np.where(m[..., None], donor_image, image), np.where(m, donor_labels, labels)


@dataclass(frozen=True)
class RareClassPaste:
    """What :class:`edgeseg.train.data.TrainSet` pastes: ``classes`` (int64 indices), the candidate
    ``donors`` (frame indices) and the per-sample ``probability``."""

    probability: float
    classes: np.ndarray
    donors: np.ndarray

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, probability: float, classes=None,
                    min_share: float = 1e-3) -> "RareClassPaste":
        """From per-frame class pixel counts ``int64 [N, C]`` (:func:`edgeseg.train.class_weights.frame_class_pixels`)."""
        if not 0.0 < probability <= 1.0:
            raise InputError(f"copy-paste probability must be in (0, 1], got {probability}",
                             fix="e.g. --copy-paste 0.5, or leave it out")
        pixels, share, frame_share = class_shares(pixels, "copy-paste")
        if classes is None:
            classes = np.flatnonzero((share > 0) & (share < 1.0 / pixels.shape[1]))
        classes = np.asarray(classes, np.int64)
        if classes.size == 0 or classes.min() < 0 or classes.max() >= pixels.shape[1]:
            raise InputError(f"copy-paste classes {classes.tolist()} are not class indices 0..{pixels.shape[1] - 1}")
        donors = np.flatnonzero(frame_share[:, classes].max(axis=1) >= min_share)
        if donors.size == 0:
            raise InputError(f"copy-paste: no training frame holds classes {classes.tolist()}",
                             fix="name classes present in the data, or leave copy-paste out")
        return cls(float(probability), classes, donors)

    def donor(self, rng: np.random.Generator) -> int | None:
        """The donor frame of one sample (None: no paste for it), drawn from ``rng``."""
        if rng.random() >= self.probability:
            return None
        return int(self.donors[int(rng.integers(0, self.donors.size))])
