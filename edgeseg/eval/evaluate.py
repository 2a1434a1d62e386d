"""Run a predictor over a dataset and score it."""
from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from typing import Any, Callable

from ..errors import InputError
from .semantic import SemanticMetric, SemanticScores

Predictor = Callable[[Any], Any]  # RGB uint8 [H, W, 3] -> SemanticResult (or an integer [H, W] label map)


def evaluate(
    predictor: Predictor,
    dataset: Sequence,
    *,
    progress: bool = True,
    limit: int | None = None,
    boundary: bool = True,
    metric: SemanticMetric | None = None,
) -> SemanticScores:
    """Score ``predictor`` on ``dataset`` (a sequence of ``Sample``) over the dataset's own classes.

    The predictor must return labels at the image's size. ``limit`` scores the first N samples.
    The tqdm progress bar shows only when ``progress`` is true and stderr is a terminal.
    """
    from tqdm import tqdm

    classes = tuple(getattr(dataset, "classes", ()))
    if metric is None:
        if not classes:
            raise InputError("the dataset declares no classes", fix="give evaluate() a SemanticMetric(num_classes)")
        metric = SemanticMetric(
            len(classes), getattr(dataset, "ignore_index", 255), boundary=boundary, classes=classes
        )
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    total = len(dataset) if limit is None else min(limit, len(dataset))
    samples = itertools.islice(iter(dataset), total)
    show = progress and sys.stderr.isatty()
    for sample in tqdm(samples, total=total, desc="eval", unit="img", disable=not show, leave=False):
        result = predictor(sample.image)
        labels = getattr(result, "labels", result)
        if getattr(labels, "shape", None) != sample.labels.shape:
            raise InputError(
                f"prediction for {sample.name!r} is {list(getattr(labels, 'shape', []))}, "
                f"the image is {list(sample.labels.shape)}",
                fix="the predictor must return labels at the image's own size",
            )
        metric.update(labels, sample.labels)
    return metric.compute()
