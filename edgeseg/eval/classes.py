"""Matching a model's classes to a dataset's, the one rule every scorer uses (``edgeseg eval``, the
INT8 accuracy gate, the demo's ground-truth sink).

Rule: when the two class lists share at least one name (compared case-insensitively, surrounding
spaces ignored), model class ``i`` maps to the dataset class of the same name; otherwise model class
``i`` maps to dataset class ``i``. Model classes with no counterpart (an extra ``void`` class, a
name the dataset does not have, an id past the dataset's classes) map to the **miss** id
``len(dataset_classes)``, which :class:`~edgeseg.eval.SemanticMetric` counts as a miss (a false
negative for the ground-truth class, nobody's true or false positive).

    cmap = class_map(predictor.classes, dataset.classes)
    metric.update(cmap(result.labels), sample.labels)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class ClassMap:
    """Model class id -> dataset class id.

    lut: ``int64 [M + 1]`` for M model classes; ``lut[i]`` is the dataset id of model class ``i``
    and ``lut[M] == miss``. by: ``"name"`` or ``"id"``. unmatched: model classes mapped to ``miss``.
    unpredictable: dataset classes no model class maps to (they can only score 0 IoU).
    """

    lut: np.ndarray
    by: str
    miss: int
    unmatched: tuple[str, ...]
    unpredictable: tuple[str, ...]

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """Model label map (integer ``[H, W]``) -> dataset label map (``int64``); ids outside the
        model's classes become ``miss``."""
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"class_map needs an integer label map, got {labels.dtype}")
        top = len(self.lut) - 1
        if labels.dtype.kind == "u":
            return self.lut[np.minimum(labels, top)]
        return self.lut[np.where((labels >= 0) & (labels < top), labels, top)]

    def notes(self, model: Sequence[str], data: Sequence[str]) -> list[tuple[str, str]]:
        """``(level, text)`` per way this map is not one-to-one by the same names (level ``warning`` or
        ``note``), for the commands that score a model on a dataset to say so."""
        out = []
        if self.by == "id" and tuple(model) != tuple(data):
            out.append(("warning", f"no class name is shared: model {list(model)} vs dataset {list(data)}; "
                                   "scoring by class id"))
        if self.unmatched:
            out.append(("note", f"model classes the dataset does not have count as misses: {', '.join(self.unmatched)}"))
        if self.unpredictable:
            first = self.unpredictable[0]
            number = first.rsplit("_", 1)[-1] if first.rsplit("_", 1)[-1].isdigit() else "ID"
            out.append(("warning", f"dataset classes the model cannot predict score 0: {', '.join(self.unpredictable)}"
                                   f" (if {first} is the dataset's void/ignore label, say so: folder data takes "
                                   f",void={number} in --data, and its pixels are not scored)"))
        return out


def _key(name: str) -> str:
    return str(name).strip().casefold()


def class_map(model_classes: Sequence[str], dataset_classes: Sequence[str]) -> ClassMap:
    """Map ``model_classes`` onto ``dataset_classes``: by name when the names overlap, else by id;
    unmatched model classes -> the miss id ``len(dataset_classes)`` (see the module doc)."""
    model, data = tuple(str(c) for c in model_classes), tuple(str(c) for c in dataset_classes)
    if not data:
        raise InputError("class_map: the dataset declares no classes", fix="give the dataset's class names")
    miss = len(data)
    index: dict[str, int] = {}
    for j, n in enumerate(data):
        index.setdefault(_key(n), j)  # a repeated dataset name: its first id
    by_name = any(_key(n) in index for n in model)
    lut = np.full(len(model) + 1, miss, np.int64)
    for i, n in enumerate(model):
        lut[i] = index.get(_key(n), miss) if by_name else (i if i < miss else miss)
    hit = set(lut[:-1].tolist()) - {miss}
    return ClassMap(
        lut=lut,
        by="name" if by_name else "id",
        miss=miss,
        unmatched=tuple(n for n, j in zip(model, lut) if j == miss),
        unpredictable=tuple(n for j, n in enumerate(data) if j not in hit),
    )
