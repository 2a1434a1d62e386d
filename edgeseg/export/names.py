"""A bundle's class names and palette as an export or an import gives them (torch-free: ``edgeseg import``
runs on a device without torch)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ExportError


def normalize_classes(classes: int | Sequence[str], num_classes: int | None, where: str) -> tuple[str, ...]:
    """An int N means ``class_0 .. class_{N-1}``; names must match the model's class count."""
    if isinstance(classes, int) and classes < 1:
        raise ExportError(f"{where}: --classes {classes}: a model has one class or more",
                          fix="give the number of classes the model outputs, or their names")
    names = tuple(f"class_{i}" for i in range(classes)) if isinstance(classes, int) else tuple(str(c) for c in classes)
    if not names:
        raise ExportError(f"{where}: no classes given")
    if num_classes is not None and len(names) != num_classes:
        raise ExportError(f"{where}: {len(names)} class names for a model with {num_classes} outputs",
                          fix="give one name per model output (or --num-classes matching the model)")
    return names


def _palette(palette: Any, n: int) -> tuple[tuple[int, int, int], ...]:
    if palette is None:
        return ()
    arr = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if len(arr) < n or arr.min() < 0 or arr.max() > 255:
        raise ExportError(f"palette needs {n} RGB colours in 0..255, got {len(arr)}")
    return tuple(tuple(int(v) for v in c) for c in arr[:n])
