"""Small helpers shared by the backend runners (numpy only)."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .base import TensorSpec

log = logging.getLogger("edgeseg.backends")


def dims(shape: Sequence[object], prefix: str = "d") -> tuple[int | str, ...]:
    """A runtime's shape (ints, None, -1 or symbolic names) -> ints and strings for dynamic axes."""
    out: list[int | str] = []
    for i, d in enumerate(shape):
        if isinstance(d, (int, np.integer)) and int(d) >= 0:
            out.append(int(d))
        elif isinstance(d, str) and d:
            out.append(d)
        else:
            out.append(f"{prefix}{i}")
    return tuple(out)


def warmup_feed(specs: Sequence[TensorSpec], hw: tuple[int, int] | None, layout: str = "NCHW") -> dict[str, np.ndarray] | None:
    """Zeros for every input: batch axis 1, dynamic spatial axes from ``hw`` (height, width) of the
    bundle's input spec. None when a dynamic axis cannot be resolved (warm-up is then skipped)."""
    spatial = (2, 3) if layout == "NCHW" else (1, 2)
    feed = {}
    for spec in specs:
        shape = []
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif axis == 0:
                shape.append(1)
            elif hw is not None and len(spec.shape) == 4 and axis in spatial:
                shape.append(hw[spatial.index(axis)])
            else:
                return None
        feed[spec.name] = np.zeros(shape, np.dtype(spec.dtype))
    return feed


def spatial_hw(bundle) -> tuple[int, int] | None:
    """The bundle's network size as (height, width) for a frame of its declared size, if it declares one (a
    ``fit`` rule's size bounds the frame: the network takes it scaled and padded to its multiple)."""
    if bundle is None or bundle.manifest.input.size is None:
        return None
    spec = bundle.manifest.input
    return spec.network_shape(spec.size).hw


def by_name(names: Sequence[str], values: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    return {n: np.asarray(v) for n, v in zip(names, values)}


def warm_up(runner, runs: int = 1) -> None:
    """Run ``runs`` inferences on zeros (best effort: a model with unusual dynamic shapes skips it)."""
    layout = runner.bundle.manifest.input.layout if runner.bundle is not None else "NCHW"
    feed = warmup_feed(runner.input_specs, spatial_hw(runner.bundle), layout)
    if feed is None:
        log.debug("%s: no warm-up (dynamic input axes without a known size)", runner.model_path.name)
        return
    for _ in range(runs):
        runner._infer_impl(feed)


