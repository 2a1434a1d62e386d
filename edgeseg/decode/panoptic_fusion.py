"""The ``fusion`` panoptic layout: a fused bundle's two branches (``edgeseg fuse``,
:mod:`edgeseg.export.fuse`) decoded as their own bundles would, then combined by
:func:`edgeseg.decode.panoptic.fuse_panoptic` (panopticapi's heuristics: instances by score, then
stuff on what is left).

The fused manifest's :class:`~edgeseg.structures.PanopticOptions` carry each branch's manifest
(``branches``), the semantic class -> fused class table (``fusion_semantic``, -1 = not a stuff
class of the fused bundle) and the instance class -> fused class table (``fusion_instance``, -1 =
dropped). Outputs of the semantic branch are named ``sem/<name>``, of the instance branch
``inst/<name>``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import InputError, UnsupportedError

if TYPE_CHECKING:
    from ..structures import InstanceResult, PanopticOptions, PanopticResult, PreprocessMeta, SemanticResult
    from ..structures.manifest import Manifest

SEM, INST = "sem/", "inst/"


_BRANCHES: dict[int, tuple["PanopticOptions", tuple["Manifest", "Manifest"]]] = {}


def branch_manifests(options: "PanopticOptions") -> tuple["Manifest", "Manifest"]:
    """(semantic, instance) manifests of a fused bundle's branches, parsed once per options object
    (a predictor keeps its options: no per-frame parsing)."""
    from ..structures.manifest import SCHEMA_VERSION, Manifest

    hit = _BRANCHES.get(id(options))
    if hit is not None and hit[0] is options:
        return hit[1]
    b = options.branches or {}
    if "semantic" not in b or "instance" not in b:
        raise UnsupportedError("a fusion panoptic bundle must carry its semantic and instance branch manifests",
                               fix="re-create it with 'edgeseg fuse SEMANTIC INSTANCE --out OUT'")
    parsed = tuple(Manifest.from_dict({"schema_version": SCHEMA_VERSION, **b[k]}, where=f"fused {k} branch")
                   for k in ("semantic", "instance"))
    if len(_BRANCHES) > 32:
        _BRANCHES.clear()
    _BRANCHES[id(options)] = (options, parsed)
    return parsed  # type: ignore[return-value]


def _category(options: "PanopticOptions", cls: int) -> int:
    return int(options.category_ids[cls]) if options.category_ids else int(cls)


def check_threshold_names(named: Mapping[str, float], thing_names: list[str], where: str) -> None:
    """An error naming the thing classes when ``class_score_thresholds`` names another class."""
    unknown = sorted(set(named) - set(thing_names))
    if unknown:
        raise InputError(f"{where}: class_score_thresholds names {', '.join(map(repr, unknown))}, not a thing "
                         f"class of it", fix=f"its thing classes: {', '.join(thing_names)}")


def class_thresholds(options: "PanopticOptions", manifest: "Manifest") -> dict[int, float]:
    """Instance class index -> its score threshold, from ``class_score_thresholds`` (thing class names
    of the fused bundle; another name is an error naming the bundle's thing classes)."""
    named = options.class_score_thresholds
    if not named:
        return {}
    by_name = {manifest.classes[j]: k for k, j in enumerate(options.fusion_instance) if j >= 0}
    check_threshold_names(named, list(by_name), f"bundle {manifest.name!r}")
    return {by_name[name]: t for name, t in named.items()}


def fuse_results(semantic: "SemanticResult", instances: "InstanceResult", options: "PanopticOptions",
                 manifest: "Manifest") -> "PanopticResult":
    """A semantic and an instance result of one frame -> the fused bundle's panoptic result."""
    from dataclasses import replace

    from .panoptic import fuse_panoptic

    stuff_map = {k: _category(options, j) for k, j in enumerate(options.fusion_semantic) if j >= 0}
    thing_map = {k: _category(options, j) for k, j in enumerate(options.fusion_instance) if j >= 0}
    result = fuse_panoptic(np.asarray(semantic.labels), instances, stuff_map=stuff_map, thing_map=thing_map,
                           score_threshold=options.score_threshold, overlap_threshold=options.overlap_threshold,
                           stuff_area=options.stuff_area, class_score_thresholds=class_thresholds(options, manifest))
    return replace(result, class_names=tuple(manifest.classes), category_ids=tuple(options.category_ids))


def decode_fusion(outputs: Mapping[str, np.ndarray], meta: "PreprocessMeta", manifest: "Manifest",
                  options: "PanopticOptions") -> "PanopticResult":
    from . import decode

    sem_m, inst_m = branch_manifests(options)
    sem_out: dict[str, Any] = {k[len(SEM):]: v for k, v in outputs.items() if k.startswith(SEM)}
    inst_out: dict[str, Any] = {k[len(INST):]: v for k, v in outputs.items() if k.startswith(INST)}
    if not sem_out or not inst_out:
        raise UnsupportedError(f"bundle {manifest.name!r}: a fusion bundle's outputs are named sem/... and inst/...; "
                               f"got {sorted(outputs)}", fix="re-create it with 'edgeseg fuse'")
    sem_meta = meta
    if sem_m.input.size is not None and sem_m.input.size != meta.network:  # resized in-graph (both resize, no letterbox)
        from ..structures import PreprocessMeta

        sem_meta = PreprocessMeta(meta.original, sem_m.input.size, sem_m.input.size)
    # the fused bundle's score threshold is the one knob: the instance branch is decoded at it (with its
    # own threshold, a lower fused one would keep nothing more: street-instance's 0.25 hid every
    # instance between 0.2 and 0.25 from the fusion)
    inst_opts = inst_m.decoder_options.replace(
        score_threshold=min([options.score_threshold, *options.class_score_thresholds.values()]))
    return fuse_results(decode(sem_out, sem_meta, sem_m), decode(inst_out, meta, inst_m, inst_opts), options, manifest)
