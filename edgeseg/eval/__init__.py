"""Metrics: mIoU / mAcc / pixel accuracy / boundary F1 for semantic segmentation, PQ for panoptic.

Each agrees with its benchmark's reference implementation (cityscapesScripts for IoU, the COCO
panopticapi for PQ); see the module docstrings for the exact definitions.
"""
from .boundary import DEFAULT_TOLERANCE, boundary, class_boundary_f1, image_boundary_f1, tolerance_px
from .classes import ClassMap, class_map
from .evaluate import evaluate
from .panoptic import PanopticMetric, PanopticScores, PQClass, PQGroup
from .semantic import SemanticMetric, SemanticScores

__all__ = [
    "SemanticMetric", "SemanticScores", "evaluate", "ClassMap", "class_map", "DEFAULT_TOLERANCE", "boundary",
    "class_boundary_f1", "image_boundary_f1", "tolerance_px", "PanopticMetric", "PanopticScores", "PQClass", "PQGroup",
]
