"""Run a predictor over a dataset and score it: :func:`evaluate` for semantic label maps,
:func:`evaluate_instances` for instance masks (COCO mask AP)."""
from __future__ import annotations

import dataclasses

import itertools
import sys
from collections.abc import Sequence
from typing import Any, Callable

from ..errors import InputError
from ..structures import InstanceResult
from .instance import MaskAPAccumulator, MaskAPScores, coco_results
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
    skipped: list | None = None,
) -> SemanticScores:
    """Score ``predictor`` on ``dataset`` (a sequence of ``Sample``) over the dataset's own classes.

    The predictor must return labels at the image's size. ``limit`` scores the first N samples.
    The tqdm progress bar shows only when ``progress`` is true and stderr is a terminal (elsewhere, a line every
    30 s). ``skipped``: a list to which each sample that cannot be read (a :class:`DataError`: an empty image, a mask
    of another size) is added as ``{"index", "error"}`` and left out of the scores, instead of raising (a batch audit:
    one bad pair at 1,854 of 1,872 ended an 86 s run with no score); when none could be read, the first error is
    raised as it is (label masks saved as JPEGs: its fix says to save PNGs). ``metric``: the caller's, which holds
    what was scored so far if the run is interrupted.
    """
    from tqdm import tqdm

    from ..errors import DataError

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
    show = progress and sys.stderr.isatty()
    logged = _log_progress(total, progress)
    errors: list[Exception] = []

    def samples():
        if skipped is None or not hasattr(dataset, "__getitem__"):
            yield from itertools.islice(iter(dataset), total)
            return
        for i in range(total):  # by index: a sample that cannot be read is left out, the next one read
            try:
                yield dataset[i]
            except (DataError, InputError) as e:  # a mask that does not fit, an empty or corrupt image
                errors.append(e)
                skipped.append({"index": i, "error": str(e).splitlines()[0]})

    for sample in tqdm(samples(), total=total, desc="eval", unit="img", disable=not show, leave=False):
        logged.update(1)
        result = predictor(sample.image)
        labels = getattr(result, "labels", result)
        if not hasattr(labels, "shape"):  # an InstanceResult, a PanopticResult: not a label map
            raise InputError(f"prediction for {sample.name!r} is {type(result).__name__}, not a label map "
                             "(a SemanticResult or an integer [H, W] array)",
                             fix="evaluate() scores semantic predictors; score instance predictors with "
                                 "evaluate_instances() and panoptic ones with evaluate_panoptic()")
        if getattr(labels, "shape", None) != sample.labels.shape:
            raise InputError(
                f"prediction for {sample.name!r} is {list(getattr(labels, 'shape', []))}, "
                f"the image is {list(sample.labels.shape)}",
                fix="the predictor must return labels at the image's own size",
            )
        metric.update(labels, sample.labels)
    if errors and not metric.images_scored:  # nothing could be read: the first reason, with its own fix
        raise errors[0]
    return metric.compute()


def _log_progress(total: int, progress: bool):
    """Progress lines for a log (stderr not a terminal), every 30 s."""
    from .._progress import LogProgress

    return LogProgress("eval", total, enabled=progress and total >= 2)


def evaluate_instances(
    predictor: Predictor,
    dataset: Sequence,
    class_to_category: Sequence[int],
    *,
    progress: bool = True,
    limit: int | None = None,
    prediction_area: str = "mask",
    results: list[dict] | None = None,
    box: bool = True,
    skipped: list | None = None,
) -> MaskAPScores:
    """COCO mask AP of ``predictor`` (RGB ``uint8 [H, W, 3]`` -> :class:`InstanceResult` at the
    image's size) on an instance dataset (``InstanceSample``s with ``image_id``, ``image()`` and
    ``truth``; ``categories`` id -> name). ``class_to_category``: model class index -> category id
    (-1 drops it; see :func:`~edgeseg.eval.instance.category_map`). ``limit`` scores the first N
    images. When ``results`` is a list, each image's detections are appended to it as COCO result
    records (:func:`~edgeseg.eval.instance.coco_results`). ``box``: the box AP of the same detections as
    well (``scores.box``, equal to ``COCOeval(iouType="bbox")``). ``skipped``: as :func:`evaluate`'s (an image that
    cannot be read is left out, its truth with it)."""
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    acc = MaskAPAccumulator(dataset.categories, class_to_category=class_to_category, prediction_area=prediction_area)
    boxes = MaskAPAccumulator(dataset.categories, class_to_category=class_to_category, iou_type="bbox") if box else None
    total = len(dataset) if limit is None else min(limit, len(dataset))
    for sample, image in readable_samples(dataset, total, progress, skipped):
        result = predictor(image)
        if not isinstance(result, InstanceResult):
            raise InputError(f"prediction for {sample.name!r} is a {type(result).__name__}, not an InstanceResult",
                             fix="mask AP needs an instance bundle (manifest task 'instance')")
        if (result.image_shape.height, result.image_shape.width) != image.shape[:2]:
            raise InputError(
                f"prediction for {sample.name!r} is {result.image_shape.width}x{result.image_shape.height}, "
                f"the image is {image.shape[1]}x{image.shape[0]}",
                fix="the predictor must return masks at the image's own size",
            )
        acc.add(sample.image_id, result, sample.truth)
        if boxes is not None:
            boxes.add(sample.image_id, result, sample.truth)
        if results is not None:
            results.extend(coco_results(sample.image_id, result, class_to_category))
    if skipped and len(skipped) == total:  # nothing could be read: the first reason, with its own fix
        raise skipped[0]["exception"]
    scores = acc.compute()
    return dataclasses.replace(scores, box=boxes.compute()) if boxes is not None else scores


def readable_samples(dataset: Sequence, total: int, progress: bool, skipped: list | None):
    """``(sample, sample.image())`` of the first ``total`` samples of an instance or panoptic dataset, with tqdm's
    bar on a terminal and progress lines elsewhere; with a ``skipped`` list, a sample whose image cannot be read (a
    corrupt or empty file) is added to it (``{"index", "error", "exception"}``) and passed over."""
    from tqdm import tqdm

    from ..errors import DataError

    logged = _log_progress(total, progress)
    show = progress and sys.stderr.isatty()
    for i, sample in enumerate(tqdm(itertools.islice(iter(dataset), total), total=total, desc="eval", unit="img",
                                    disable=not show, leave=False)):
        logged.update(1)
        if skipped is None:
            yield sample, sample.image()
            continue
        try:
            image = sample.image()
        except (DataError, InputError) as e:
            skipped.append({"index": i, "error": str(e).splitlines()[0], "exception": e})
            continue
        yield sample, image
