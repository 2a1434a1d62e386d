"""Keeping some classes of a result: ``edgeseg predict/run --classes person,car`` (Ultralytics' ``classes=0,2``,
jetson-inference's ``--ignore-class`` the other way round).

:func:`class_ids` reads a list of class names (any case) or indices against a bundle's classes; :func:`keep_classes`
keeps an instance result's detections of those classes, or a panoptic result's segments of them (the others'
pixels become void, 0). A semantic label map gives every pixel a class, so it is refused, naming why.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import logging

import numpy as np

from ..errors import InputError
from .results import InstanceResult, PanopticResult

log = logging.getLogger(__name__)


def class_ids(spec: str | Iterable[Any], classes: Sequence[str], category_ids: Sequence[int] = ()) -> tuple[int, ...]:
    """``"person,car"``, ``"0,2"`` or a list of names/numbers -> the class indices, sorted; a name or number the
    bundle does not have raises :class:`InputError` listing its classes. Numbers are class indices, or, given a
    panoptic bundle's ``category_ids``, its category ids: the ``class_id`` its records carry (an audit: ``--classes
    7`` of a Cityscapes panoptic bundle kept index 7, traffic sign, where its JSON calls road 7)."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):  # one class: classes=2 ('int' not iterable)
        spec = [spec]
    items = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else [str(p).strip() for p in spec]
    items = [p for p in items if p]
    if not items:
        raise InputError("--classes is empty", fix="give class names or numbers, e.g. --classes person,car or 0,2")
    lower = {c.lower(): k for k, c in enumerate(classes)}
    numbers = {int(c): k for k, c in enumerate(category_ids)} if category_ids else {k: k for k in range(len(classes))}
    out, bad, moved = set(), [], []
    for item in items:
        if item.lower() in lower:
            out.add(lower[item.lower()])
        elif item.lstrip("-").isdigit() and int(item) in numbers:
            out.add(numbers[int(item)])
            if category_ids and int(item) < len(classes) and numbers[int(item)] != int(item):
                moved.append(f"{item} is {classes[numbers[int(item)]]}, not the class at index {item} "
                             f"({classes[int(item)]})")
        else:
            bad.append(item)
    if moved:  # a number that was an index before session 49: said, so a recipe's old --classes is noticed
        log.warning("--classes of a panoptic bundle reads numbers as its category ids (its records' class_id): %s; "
                    "names say it either way", "; ".join(moved))
    if bad:
        names = [(n, classes[k] if k < len(classes) else str(k)) for n, k in numbers.items()]
        listed = ", ".join(f"{n} {c}" for n, c in names[:40]) + (" ..." if len(names) > 40 else "")
        kind = "category ids (the class_id of its records)" if category_ids else "indices"
        raise InputError(f"--classes: {', '.join(map(repr, bad))} is no class of the bundle",
                         fix=f"give names or {kind} of its classes: {listed}")
    return tuple(sorted(out))


def keep_classes(result: Any, keep: Iterable[int]) -> Any:
    """``result`` with only the classes ``keep`` (indices): an :class:`InstanceResult`'s detections, a
    :class:`PanopticResult`'s segments (the others' pixels void). Other results raise :class:`InputError`."""
    wanted = {int(k) for k in keep}
    if isinstance(result, InstanceResult):
        return result[np.isin(np.asarray(result.classes), sorted(wanted))]
    if isinstance(result, PanopticResult):
        kept = tuple(s for s in result.segments if result.class_index(s.category_id) in wanted)
        if len(kept) == len(result.segments):
            return result
        ids = np.asarray(result.segment_ids)
        kept_ids = {s.id for s in kept}
        dropped = np.asarray([s.id for s in result.segments if s.id not in kept_ids], ids.dtype)
        return replace(result, segment_ids=np.where(np.isin(ids, dropped), 0, ids).astype(ids.dtype), segments=kept)
    kind = type(result).__name__
    raise InputError(f"--classes keeps detections or segments of some classes; a {kind} has neither (a semantic "
                     "label map gives every pixel a class)",
                     fix="leave --classes out for semantic bundles (the overlay's --alpha, or --png-dir label maps "
                         "you mask yourself)")
