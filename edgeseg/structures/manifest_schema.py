"""Which manifest schema a bundle's manifest needs, so that an older edgeseg refuses what it cannot read by its
version ("unknown schema_version 2 ... upgrade edgeseg") rather than by a field it does not know, whose message
invited deleting the field (which changes what the bundle does): an upgrade audit.

Schema 1 is what every edgeseg since typed decoder options takes: the input spec fields and values of the first
release, the semantic and instance decoder options of commit b9cfb0c, the panoptic ones of 7948fca (readers before
those ignore a task's decoder options, and vos has none). A manifest using any other field or value needs schema 2:
an allowlist, so a field added later needs schema 2 without anyone remembering to list it. A fused panoptic bundle's
branches (``decoder.branches``) are manifests of their own, checked alike; ``edgeseg fuse`` writes options added
since (``mask_area_ratio``, ``query_convention``, ``class_score_thresholds``), so its bundles are schema 2, and the
``fusion`` layout is left out of schema 1 on purpose (its decoding changed after readers first took it)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Union

Allowed = Union[None, tuple, Callable[[Any], bool]]  # None: any value; a tuple: those values; a callable: a test


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: field -> the values schema-1 readers take, per part of the manifest (``input``, and each task's ``decoder``)
SCHEMA_1: Mapping[str, Mapping[str, Allowed]] = {
    "input": {"name": None, "layout": ("NCHW", "NHWC"), "color": ("RGB", "BGR"), "dtype": ("float32", "float16", "uint8"),
              "size": None, "size_rule": ("fixed", "multiple", "any"), "multiple": None, "resize": ("resize", "letterbox"),
              "pad_value": _int, "mean": None, "std": None, "scale": None, "dynamic_batch": None},
    "semantic": {"upsample": ("logits", "labels"), "confidence": None, "logits_layout": ("NCHW", "NHWC", None)},
    "instance": {"layout": ("prototype", "dense", "roi"), "score_threshold": None, "iou_threshold": None,
                 "max_detections": None, "mask_threshold": None, "class_agnostic": None, "pre_nms_top_k": None,
                 "prototype_format": ("yolov8", "yolov5"), "num_masks": None},
    "panoptic": {"layout": ("center", "paste"), "thing_classes": None, "category_ids": None, "center_threshold": None,
                 "nms_kernel": None, "top_k": None, "stuff_area": None, "score_threshold": None,
                 "overlap_threshold": None, "mask_threshold": None, "fusion_semantic": None, "fusion_instance": None,
                 "branches": None},
}


def manifest_schema(task: str, input_spec: Mapping[str, Any], decoder: Mapping[str, Any]) -> int:
    """1 when a manifest's input spec and decoder options (and a fused bundle's branches') are all schema 1's, else 2."""
    parts = [("input", input_spec), (task, decoder)]
    branches = decoder.get("branches") if task == "panoptic" and isinstance(decoder, Mapping) else None
    for branch in (branches.values() if isinstance(branches, Mapping) else ()):
        if isinstance(branch, Mapping):
            parts += [("input", branch.get("input") or {}), (str(branch.get("task")), branch.get("decoder") or {})]
    for part, fields in parts:
        allowed = SCHEMA_1.get(part)
        if allowed is None or not isinstance(fields, Mapping):  # a task without decoder options (vos): none to read
            continue
        for name, value in fields.items():
            if name not in allowed or not _takes(allowed[name], value):
                return 2
    return 1


def _takes(allowed: Allowed, value: Any) -> bool:
    if allowed is None:
        return True
    if callable(allowed):
        return bool(allowed(value))
    return any(value == a and type(value) is type(a) for a in allowed)
