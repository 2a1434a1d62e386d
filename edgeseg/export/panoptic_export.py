"""Panoptic models (``task="panoptic"`` in the registry: Panoptic-DeepLab, LPSNet) -> a bundle.

The model's eval-mode output dict is exported under its own names and tells the decoder layout:
``center`` (``semantic``, ``center``, ``offset``, plus ``centers``/``instance`` when the model groups
pixels inside the graph: Panoptic-DeepLab) or ``paste`` (``semantic``, ``boxes``, ``scores``,
``classes``: LPSNet). The manifest stores :class:`~edgeseg.structures.PanopticOptions` with that
layout, the model's thing classes and the dataset's category id of every class (so that decoded
segments carry the ids a COCO-panoptic evaluation expects).

Parity: the ONNX graph (ONNX Runtime) and the Conv-BN-folded model (PyTorch) run on the same parity
frames; both outputs go through the runtime decoder and are compared by :func:`panoptic_agreement`:
the share of pixels with the same category and the smallest IoU of a torch segment with its ONNX
counterpart. Pixel agreement below :data:`FAIL_PIXELS` or a segment IoU below
:data:`FAIL_SEGMENT_IOU` fails the export.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .._ort import make_session
from ..bundle import Bundle
from ..errors import ExportError
from ..structures import InputSpec, PanopticOptions
from ..structures.manifest import Manifest, ModelFile, OutputSpec
from .bundle_export import CHECKPOINT_FILE, write_checkpoint
from .names import _palette, normalize_classes
from .fold import fold_conv_bn
from .onnx_export import OPSET, export_onnx
from .parity import panoptic_agreement, parity_images

FAIL_SEGMENT_IOU = 0.9
FAIL_PIXELS = 0.99
LAYOUT_OUTPUTS = {"center": ("semantic", "center", "offset"), "paste": ("semantic", "boxes", "scores", "classes")}
GRAPH_GROUPING = ("centers", "instance")


def panoptic_outputs(model: nn.Module, spec: InputSpec) -> tuple[str, tuple[str, ...]]:
    """``(layout, output names)`` from one eval-mode forward pass."""
    assert spec.size is not None
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, spec.size.height, spec.size.width))
    keys = set(out) if isinstance(out, dict) else set()
    for layout, needed in LAYOUT_OUTPUTS.items():
        if set(needed) <= keys:
            extra = tuple(k for k in GRAPH_GROUPING if k in keys) if layout == "center" else ()
            return layout, needed + extra
    raise ExportError(f"a panoptic model must return a dict with {' + '.join(LAYOUT_OUTPUTS['center'])} (center layout) or "
                      f"{' + '.join(LAYOUT_OUTPUTS['paste'])} (paste layout) in eval mode; got "
                      f"{sorted(keys) if isinstance(out, dict) else type(out).__name__}")


def panoptic_parity(folded: nn.Module, onnx_path: Path, manifest: Manifest, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """Decoded torch vs ONNX Runtime results on ``images`` (module doc)."""
    from ..decode import decode

    session = make_session(str(onnx_path))
    names = [o.name for o in session.get_outputs()]
    pixels, ious, segments = [], [], []
    for img in images:
        x, meta = manifest.input.preprocess(img)
        with torch.no_grad():
            ref = {k: v.numpy() for k, v in folded.eval()(torch.from_numpy(x)).items() if k in names}
        got = dict(zip(names, session.run(names, {"images": x})))
        a, b = decode(ref, meta, manifest), decode(got, meta, manifest)
        p, iou = panoptic_agreement(a, b)
        pixels.append(p)
        ious.append(iou)
        segments.append((len(a.segments), len(b.segments)))
    low_pixels, low_iou = min(pixels, default=1.0), min(ious, default=1.0)
    return {"images": len(images), "segments_torch_onnx": segments, "min_pixel_agreement": low_pixels,
            "min_segment_iou": low_iou, "passed": bool(low_pixels >= FAIL_PIXELS and low_iou >= FAIL_SEGMENT_IOU),
            "thresholds": {"pixel_agreement": FAIL_PIXELS, "segment_iou": FAIL_SEGMENT_IOU}}


def _category_ids(category_ids: Sequence[int] | None, model: nn.Module, n: int) -> tuple[int, ...]:
    ids = tuple(int(c) for c in (category_ids if category_ids is not None else getattr(model, "category_ids", ()) or ()))
    if ids and len(ids) != n:
        raise ExportError(f"{len(ids)} category ids for {n} classes", fix="give one dataset category id per class")
    if len(set(ids)) != len(ids):
        raise ExportError(f"category ids {list(ids)} repeat", fix="give each class its own dataset category id")
    return ids


def export_panoptic_bundle(model: nn.Module, out: str | os.PathLike, *, name: str, input_spec: InputSpec,
                           classes=None, palette=None, category_ids: Sequence[int] | None = None,
                           overwrite: bool = False, opset: int = OPSET, provenance: dict[str, Any] | None = None,
                           include_checkpoint: bool = True, model_kwargs: dict[str, Any] | None = None,
                           options: PanopticOptions | None = None, deform_conv: str = "onnx",
                           roi_align: str = "onnx") -> Bundle:
    """Export a panoptic model into a new bundle at ``out`` (module doc). ``classes``: all class
    names, stuff and things (default: ``model.class_names``); ``category_ids``: the dataset's
    category id of each class (default: ``model.category_ids`` if set, else the class index).
    ``deform_conv``/``roi_align``: the ONNX form of those ops (:func:`~edgeseg.export.onnx_export.export_onnx`)."""
    model_name = str(getattr(model, "model_name", type(model).__name__))
    names = normalize_classes(classes if classes is not None else getattr(model, "class_names", None) or model.num_classes,
                              getattr(model, "num_classes", None), f"export of {model_name}")
    things = tuple(int(t) for t in getattr(model, "thing_classes", ()))
    if not things or min(things) < 0 or max(things) >= len(names):
        raise ExportError(f"{model_name}: thing classes {list(things)} are not indices into its {len(names)} classes",
                          fix="build the model with thing_classes=(indices of the thing classes); edgeseg export NAME --things I,J,...")
    spec = replace(input_spec, name="images", dynamic_batch=False)
    model = model.eval()
    folded = fold_conv_bn(model)
    layout, outputs = panoptic_outputs(folded, spec)
    options = (options or PanopticOptions()).replace(layout=layout, thing_classes=things,
                                                      category_ids=_category_ids(category_ids, model, len(names)) or None)
    with tempfile.TemporaryDirectory(prefix="edgeseg-bundle-") as tmp:
        onnx_path = export_onnx(folded, Path(tmp) / "model.onnx", spec, opset=opset, outputs=outputs,
                                deform_conv=deform_conv, roi_align=roi_align)
        session = make_session(str(onnx_path))
        x, _ = spec.preprocess(parity_images(spec.size, count=1)[0])
        ys = session.run(None, {"images": x})
        outs = tuple(OutputSpec(o.name, o.name, str(y.dtype), tuple(o.shape)) for o, y in zip(session.get_outputs(), ys))
        prov = {"source": "pytorch", "model": model_name, "opset": opset, **(provenance or {})}
        manifest = Manifest(name=name, task="panoptic", classes=names, input=spec, outputs=outs,
                            palette=_palette(palette, len(names)), decoder=options.to_dict(), provenance=prov)
        parity = panoptic_parity(folded, onnx_path, manifest, parity_images(spec.size, count=3))
        if not parity["passed"]:
            raise ExportError(f"parity check failed for {model_name}: smallest segment IoU of ONNX against PyTorch "
                              f"{parity['min_segment_iou']:.3f}, smallest pixel agreement {parity['min_pixel_agreement']:.4f}",
                              fix="the ONNX graph computes something else than the PyTorch model; report this with the model name")
        checkpoint = None
        if include_checkpoint:
            extra = {"task": "panoptic", "classes": list(names), "input_spec": spec.to_dict(),
                     "category_ids": list(options.category_ids)}
            checkpoint = write_checkpoint(model, Path(tmp) / CHECKPOINT_FILE, spec, extra=extra, model_kwargs=model_kwargs,
                                          compare="semantic")
        with Bundle.writing(out, manifest, overwrite=overwrite) as bundle:
            bundle.add_model(ModelFile("model.onnx", "fp32", opset=opset), onnx_path)
            if checkpoint is not None:
                bundle.add_model(ModelFile(CHECKPOINT_FILE, "fp32", target="torch"), Path(tmp) / CHECKPOINT_FILE)
            bundle.update_report("parity", parity)
            if checkpoint is not None:
                bundle.update_report("checkpoint", checkpoint)
    return bundle
