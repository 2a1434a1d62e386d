"""``export_bundle``: a PyTorch semantic model -> a verified bundle (model.onnx + manifest + report).

The parity check always runs; its numbers go to ``report.json["parity"]``, and a failing check
raises :class:`~edgeseg.errors.ExportError` before anything is written to ``out``.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..bundle import Bundle, Manifest, ModelFile, OutputSpec
from ..errors import ExportError
from ..structures import InputSpec
from .fold import fold_conv_bn
from .onnx_export import OPSET, export_onnx, output_name
from .parity import check_parity


def normalize_classes(classes: int | Sequence[str], num_classes: int | None, where: str) -> tuple[str, ...]:
    """An int N means ``class_0 .. class_{N-1}``; names must match the model's class count."""
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


def export_bundle(model: nn.Module, out: str | os.PathLike, *, name: str, classes: int | Sequence[str],
                  input_spec: InputSpec, palette=None, argmax_in_graph: bool = False, dynamic_batch: bool = False,
                  deform_conv: str = "onnx", roi_align: str = "onnx", overwrite: bool = False,
                  provenance: dict[str, Any] | None = None) -> Bundle:
    """Export ``model`` into a new bundle at ``out``: Conv-BN folded ONNX (opset 19), manifest
    (task semantic, classes, palette, input spec, outputs), parity numbers in the report."""
    model_name = str(getattr(model, "model_name", type(model).__name__))
    names = normalize_classes(classes, getattr(model, "num_classes", None), f"export of {model_name}")
    spec = replace(input_spec, name="images", dynamic_batch=dynamic_batch)
    kind = output_name(argmax_in_graph)
    model = model.eval()
    folded = fold_conv_bn(model)
    with tempfile.TemporaryDirectory(prefix="edgeseg-bundle-") as tmp:
        onnx_path = export_onnx(folded, Path(tmp) / "model.onnx", spec, argmax_in_graph=argmax_in_graph,
                                dynamic_batch=dynamic_batch, deform_conv=deform_conv, roi_align=roi_align)
        parity = check_parity(folded, onnx_path, spec, kind=kind, batch=2 if dynamic_batch else 1, source_model=model)
        if parity.failed_badly:
            raise ExportError(
                f"parity check failed for {model_name}: argmax agreement {parity.argmax_agreement:.4%}, "
                f"max relative logit error {parity.max_rel_logit_error}, agreement with the unfolded model "
                f"{parity.source_argmax_agreement:.4%}",
                fix="the ONNX graph computes something else than the PyTorch model; report this with the model name",
            )
        bundle = Bundle.create(out, _manifest(name, names, spec, kind, palette, model_name, argmax_in_graph,
                                              deform_conv, roi_align, provenance), overwrite=overwrite)
        bundle.add_model(ModelFile("model.onnx", "fp32", opset=OPSET), onnx_path)
    bundle.update_report("parity", parity.to_dict())
    return bundle


def _manifest(name: str, classes: tuple[str, ...], spec: InputSpec, kind: str, palette, model_name: str,
              argmax: bool, deform_conv: str, roi_align: str, extra: dict[str, Any] | None) -> Manifest:
    size = spec.size
    assert size is not None
    batch: int | str = "batch" if spec.dynamic_batch else 1
    if kind == "labels":
        output = OutputSpec("labels", "labels", "uint8", (batch, size.height, size.width))
    else:
        output = OutputSpec("logits", "logits", "float32", (batch, len(classes), size.height, size.width))
    provenance = {
        "source": "pytorch", "model": model_name, "torch": torch.__version__, "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=True)", "conv_bn_folded": True, "argmax_in_graph": argmax,
        "deform_conv": deform_conv, "roi_align": roi_align, **(extra or {}),
    }
    return Manifest(name=name, task="semantic", classes=classes, input=spec, outputs=(output,),
                    palette=_palette(palette, len(classes)), provenance=provenance)
