"""Several semantic datasets as one, each repeated a whole number of times: ``"SPEC;K*SPEC"``.

Training on more than one source (CamVid's sequences and Cityscapes' cities, issue 14) keeps a model
from fitting one camera. A small set is weighted against a large one by repeating it::

    4*camvid:ROOT,exclude=0006R0;cityscapes-camvid:ROOT     # 4 x 266 CamVid + 2,074 Cityscapes frames

Parts are separated by ``;``; ``K*`` in front of a part repeats it K times (an integer >= 1). Every
part must have the same classes in the same order. Sample names keep their source's (a part that is
repeated yields the same sample again: augmentation makes each repeat differ).
"""
from __future__ import annotations

import bisect
import re
from typing import Callable, Sequence

from ..errors import DataError
from .base import Sample, SegmentationDataset

_REPEAT = re.compile(r"^\s*(\d+)\s*\*\s*(.+)$")


def is_mixture(spec: str) -> bool:
    """Whether ``spec`` names several datasets or a repeated one."""
    return ";" in str(spec) or bool(_REPEAT.match(str(spec)))


def parse_mixture(spec: str) -> list[tuple[str, int]]:
    """``[(part spec, repeats)]`` of a mixture spec."""
    parts = []
    for raw in str(spec).split(";"):
        if not raw.strip():
            raise DataError(f"dataset mixture {spec!r} has an empty part", fix="write SPEC;SPEC or K*SPEC;SPEC")
        m = _REPEAT.match(raw)
        k, part = (int(m.group(1)), m.group(2).strip()) if m else (1, raw.strip())
        if k < 1:
            raise DataError(f"dataset mixture {spec!r}: repeat {k} of {part!r} must be at least 1")
        parts.append((part, k))
    return parts


class Mixture(SegmentationDataset):
    """The concatenation of ``parts`` (each ``(dataset, repeats)``), with the parts' common classes."""

    def __init__(self, parts: Sequence[tuple[Sequence, int]], specs: Sequence[str] = ()):
        if not parts:
            raise DataError("a dataset mixture needs at least one part")
        self.parts = [(ds, int(k)) for ds, k in parts]
        self.specs = list(specs) or [repr(ds) for ds, _ in self.parts]
        first = tuple(self.parts[0][0].classes)
        for (ds, _), spec in zip(self.parts[1:], self.specs[1:]):
            if tuple(ds.classes) != first:
                raise DataError(f"dataset mixture: {spec} has classes {tuple(ds.classes)}, {self.specs[0]} has {first}",
                                fix="mix datasets with the same classes in the same order (map them first, "
                                    "e.g. cityscapes-camvid: for Cityscapes in CamVid's classes)")
        self.classes = first
        self.palette = getattr(self.parts[0][0], "palette", SegmentationDataset.palette)
        self.ignore_index = getattr(self.parts[0][0], "ignore_index", SegmentationDataset.ignore_index)
        self._ends = []
        total = 0
        for ds, k in self.parts:
            total += len(ds) * k
            self._ends.append(total)

    def with_parts(self, fn: Callable[[Sequence], Sequence]) -> "Mixture":
        """The same mixture with every part replaced by ``fn(part)`` (e.g. decoded into memory once,
        however often it repeats)."""
        return Mixture([(fn(ds), k) for ds, k in self.parts], self.specs)

    def __len__(self) -> int:
        return self._ends[-1]

    def part_of(self, index: int) -> int:
        """Which part (0-based, in the spec's order) sample ``index`` comes from."""
        return bisect.bisect_right(self._ends, index)

    def _load(self, index: int) -> Sample:
        p = self.part_of(index)
        start = self._ends[p - 1] if p else 0
        ds, _ = self.parts[p]
        return ds[(index - start) % len(ds)]

    def __repr__(self) -> str:
        return f"Mixture({' ; '.join(f'{k}*{s}' for (_, k), s in zip(self.parts, self.specs))}, len={len(self)})"


def open_mixture(spec: str, split: str, open_one: Callable[[str, str], Sequence]) -> Mixture:
    parts = parse_mixture(spec)
    return Mixture([(open_one(s, split), k) for s, k in parts], [s for s, _ in parts])
