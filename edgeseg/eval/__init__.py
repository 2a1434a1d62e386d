"""Metrics: mIoU / mAcc / pixel accuracy / boundary F1 for semantic segmentation, PQ for panoptic,
COCO mask AP for instances.

Each agrees with its benchmark's reference implementation (cityscapesScripts for IoU, the COCO
panopticapi for PQ, pycocotools for mask AP); see the module docstrings for the exact definitions.
"""
from .boundary import DEFAULT_TOLERANCE, boundary, class_boundary_f1, image_boundary_f1, tolerance_px
from .classes import ClassMap, class_map
from .evaluate import evaluate, evaluate_instances
from .instance import (
    STAT_NAMES, CategoryMap, ClassAP, MaskAPAccumulator, MaskAPScores, category_map, coco_results, mask_ap, mask_iou,
)
from .panoptic import PanopticMetric, PanopticScores, PQClass, PQGroup, evaluate_panoptic
from .panoptic_io import PanopticWriter, read_panoptic_results, score_saved
from .semantic import SemanticMetric, SemanticScores
from .vos import VOSMetric, VOSScores, boundary_measure, evaluate_sequence, region_similarity

__all__ = [
    "SemanticMetric", "SemanticScores", "evaluate", "ClassMap", "class_map", "DEFAULT_TOLERANCE", "boundary",
    "class_boundary_f1", "image_boundary_f1", "tolerance_px", "PanopticMetric", "PanopticScores", "PQClass", "PQGroup",
    "evaluate_instances", "MaskAPAccumulator", "MaskAPScores", "ClassAP", "mask_ap", "mask_iou", "coco_results",
    "category_map", "CategoryMap", "STAT_NAMES", "VOSMetric", "VOSScores", "evaluate_sequence", "region_similarity",
    "boundary_measure", "evaluate_panoptic", "PanopticWriter", "read_panoptic_results", "score_saved",
]
