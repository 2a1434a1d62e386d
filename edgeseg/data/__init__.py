"""Datasets: CamVid, image+mask folders and a synthetic scene generator with exact ground truth.

``open_dataset("camvid:ROOT" | "folder:IMAGES,MASKS" | "synthetic:N", split="val")`` returns a
sequence of :class:`Sample` (RGB image, uint8 labels with :data:`IGNORE` for void, name) with
``classes``, ``palette`` and ``ignore_index``.
"""
from .base import DATASETS, IGNORE, DatasetSpec, Sample, SegmentationDataset, open_dataset
from .camvid import CamVid
from .coco_instances import CocoInstances, InstanceDataset, InstanceSample, InstanceTruth  # registers coco-instance
from .coco_panoptic import CocoPanoptic, PanopticSample, read_panoptic_png
from .davis import Davis, DavisFrame, DavisSequence, read_id_mask  # frame-sequence data (not a DATASETS kind)
from .folder import FolderDataset, read_class_names
from .io import read_image, read_label, write_image, write_label
from .synthetic import SceneGenerator, SyntheticDataset, SyntheticFrame
from .synthetic_instances import SyntheticInstances  # registers synthetic-instance
from .synthetic_panoptic import SyntheticPanoptic  # registers synthetic-panoptic
from .yolo_seg import YoloSeg  # registers yolo-seg

__all__ = [
    "IGNORE", "Sample", "SegmentationDataset", "DATASETS", "DatasetSpec", "open_dataset", "CamVid", "FolderDataset",
    "read_class_names", "read_image", "read_label", "write_image", "write_label", "SceneGenerator", "SyntheticDataset",
    "SyntheticFrame", "CocoPanoptic", "PanopticSample", "read_panoptic_png",
    "CocoInstances", "InstanceDataset", "InstanceSample", "InstanceTruth", "YoloSeg", "SyntheticInstances", "SyntheticPanoptic",
    "Davis", "DavisFrame", "DavisSequence", "read_id_mask",
]
