"""Custom ops with one exact semantics and a path to every runtime: deformable convolution
(DCN v1/v2), InternImage's DCNv3 and RoIAlign (single- and multi-level).

Each op is a registered PyTorch custom op (``torch.ops.edgeseg.deform_conv2d``,
``torch.ops.edgeseg.roi_align``) with a vectorised pure-PyTorch reference and autograd, CUDA
kernels for CUDA tensors (``edgeseg/ops/cuda/*.cu``, loaded at run time), and two ONNX forms
(standard op or decomposed), picked with :func:`onnx_translation_table` at export. DCNv3
(:mod:`.dcnv3`, channels last) is plain PyTorch around ``grid_sample`` and exports to standard
ONNX (``GridSample``) without a translation.

This package imports torch; ``import edgeseg`` never imports it.
"""
from __future__ import annotations

from .dcnv3 import DCNv3, dcnv3_core, dcnv3_point_grid
from .deform_conv import deform_conv2d, deform_conv2d_reference, deform_conv_output_size
from .modules import DeformConv2d, ModulatedDeformConv2d, MultiScaleRoIAlign, RoIAlign
from .onnx_export import FORMS, onnx_translation_table
from .roi_align import assign_fpn_levels, multi_scale_roi_align, roi_align, roi_align_reference

__all__ = [
    "DCNv3",
    "FORMS",
    "DeformConv2d",
    "ModulatedDeformConv2d",
    "MultiScaleRoIAlign",
    "RoIAlign",
    "assign_fpn_levels",
    "dcnv3_core",
    "dcnv3_point_grid",
    "deform_conv2d",
    "deform_conv2d_reference",
    "deform_conv_output_size",
    "multi_scale_roi_align",
    "onnx_translation_table",
    "roi_align",
    "roi_align_reference",
]
