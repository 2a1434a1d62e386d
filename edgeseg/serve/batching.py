"""Run a batch of frames through one predictor: the replica's work, without Ray (tests call it directly).

The replica gathers frames from many clients (``@serve.batch``) and hands them here. A bundle whose
model takes a dynamic batch gets one stacked ``runner.infer`` call per batch (frames of equal
preprocessed shape; in runs of at most the runner's ``max_batch``, a TensorRT engine's profile, when it has
one); a fixed batch-1 model (the shipped ones) gets one call per frame, which still amortises the request
hops and keeps results bit-identical to local inference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..backends.base import batch_limit


def infer_batch(predictor: Any, frames: Sequence[np.ndarray]) -> list[Any]:
    """RGB ``uint8 [H, W, 3]`` frames -> one task result per frame, in order (same steps as ``predictor(rgb)``)."""
    prepared = [predictor.preprocess(rgb) for rgb in frames]
    spec = predictor.manifest.input
    feeds = [feed for feed, _ in prepared]
    if len(feeds) > 1 and spec.dynamic_batch and len({feed[spec.name].shape for feed in feeds}) == 1:
        step = batch_limit(predictor.runner) or len(feeds)  # a TensorRT engine's profile: runs of at most that
        outputs = []
        for at in range(0, len(feeds), step):
            part = feeds[at:at + step]
            stacked = predictor.runner.infer({spec.name: np.concatenate([feed[spec.name] for feed in part])})
            outputs += [{k: v[i:i + 1] for k, v in stacked.items()} for i in range(len(part))]
    else:
        outputs = [predictor.runner.infer(feed) for feed in feeds]
    return [predictor.postprocess(out, meta, image=rgb) for out, (_, meta), rgb in zip(outputs, prepared, frames)]


@dataclass
class BatchStats:
    """What one replica has done: frames answered with a result, frames of a batch answered with an error (the
    model or the decoder failed on them; an image that does not decode is refused by the HTTP route before any
    batch, and not counted here), batches, the largest batch and a histogram of batch sizes."""

    frames: int = 0
    batches: int = 0
    max_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    busy_s: float = 0.0
    errors: int = 0

    def record(self, size: int, seconds: float, errors: int = 0) -> None:
        self.frames += size - errors
        self.errors += errors
        self.batches += 1
        self.max_batch = max(self.max_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1
        self.busy_s += seconds

    def merge(self, other: "BatchStats") -> None:
        self.frames += other.frames
        self.errors += other.errors
        self.batches += other.batches
        self.max_batch = max(self.max_batch, other.max_batch)
        for k, v in other.sizes.items():
            self.sizes[k] = self.sizes.get(k, 0) + v
        self.busy_s += other.busy_s

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "errors": self.errors, "batches": self.batches, "max_batch": self.max_batch,
                "mean_batch": (self.frames + self.errors) / self.batches if self.batches else 0.0,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}, "busy_s": self.busy_s}
