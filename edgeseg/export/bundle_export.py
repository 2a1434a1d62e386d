"""``export_bundle``: a PyTorch semantic model -> a verified bundle (model.onnx + manifest + report,
and by default the source weights as ``model.safetensors`` for the ``torch`` backend).

The parity check always runs; its numbers go to ``report.json["parity"]``, and a failing check
raises :class:`~edgeseg.errors.ExportError` before anything is written to ``out``.

The PyTorch checkpoint (``include_checkpoint=True``) holds the **unfolded** source model — the one
``edgeseg.models.create_model`` builds, BatchNorms included — in the format of
:mod:`edgeseg.models.checkpoint` (safetensors, never a pickle; model name, class count, model kwargs,
classes, palette and input spec in its metadata). Unfolded, because that is the only form
``load_checkpoint`` can rebuild (folding replaces BNs by identities and gives convs new biases);
the parity check already holds the ONNX graph to it (``source_argmax_agreement``,
``source_max_rel_logit_error``). Before anything is written, the checkpoint is rebuilt exactly as
the torch runner will rebuild it and its logits are compared with the source model's on a parity
frame; the result goes to ``report.json["checkpoint"]``. It is listed in the manifest as
``ModelFile("model.safetensors", "fp32", target="torch")``; ONNX backends choose their model by the
``.onnx`` suffix and never pick it.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bundle import Bundle
from ..errors import ExportError
from ..structures import InputSpec
from ..structures.manifest import Manifest, ModelFile, OutputSpec
from .fold import fold_conv_bn
from .names import _palette, normalize_classes
from .onnx_export import OPSET, export_onnx, output_name
from .parity import check_parity, parity_images

CHECKPOINT_FILE = "model.safetensors"
CHECKPOINT_MAX_REL_DIFF = 1e-5   # the rebuilt checkpoint vs the source model (both PyTorch, same ops)


def export_bundle(model: nn.Module, out: str | os.PathLike, *, name: str, classes: int | Sequence[str],
                  input_spec: InputSpec, palette=None, argmax_in_graph: bool = False, dynamic_batch: bool = False,
                  deform_conv: str = "onnx", roi_align: str = "onnx", overwrite: bool = False,
                  provenance: dict[str, Any] | None = None, include_checkpoint: bool = True,
                  model_kwargs: dict[str, Any] | None = None, opset: int = OPSET) -> Bundle:
    """Export ``model`` into a new bundle at ``out``: Conv-BN folded ONNX (opset 19, or ``opset``), manifest
    (task semantic, classes, palette, input spec, outputs), parity numbers in the report.

    ``include_checkpoint``: also store the unfolded weights as ``model.safetensors`` (target
    ``torch``) so ``--backend torch`` can run the bundle. It needs a registered edgeseg model;
    ``model_kwargs`` are the extra ``create_model`` arguments it was built with (default: those of
    the checkpoint it was loaded from, else ``model.model_kwargs`` if set, else none)."""
    model_name = str(getattr(model, "model_name", type(model).__name__))
    names = normalize_classes(classes, getattr(model, "num_classes", None), f"export of {model_name}")
    spec = replace(input_spec, name="images", dynamic_batch=dynamic_batch)
    kind = output_name(argmax_in_graph)
    model = model.eval()
    folded = fold_conv_bn(model)
    with tempfile.TemporaryDirectory(prefix="edgeseg-bundle-") as tmp:
        onnx_path = export_onnx(folded, Path(tmp) / "model.onnx", spec, argmax_in_graph=argmax_in_graph,
                                dynamic_batch=dynamic_batch, deform_conv=deform_conv, roi_align=roi_align,
                                opset=opset)
        parity = check_parity(folded, onnx_path, spec, kind=kind, batch=2 if dynamic_batch else 1, source_model=model)
        if parity.failed_badly:
            raise ExportError(
                f"parity check failed for {model_name}: argmax agreement {parity.argmax_agreement:.4%}, "
                f"max relative logit error {parity.max_rel_logit_error}, agreement with the unfolded model "
                f"{parity.source_argmax_agreement:.4%}",
                fix="the ONNX graph computes something else than the PyTorch model; report this with the model name",
            )
        checkpoint = None
        if include_checkpoint:
            extra = {"classes": list(names), "input_spec": spec.to_dict(),
                     **({"palette": [list(c) for c in _palette(palette, len(names))]} if palette is not None else {})}
            checkpoint = write_checkpoint(model, Path(tmp) / CHECKPOINT_FILE, spec, extra=extra, model_kwargs=model_kwargs)
        manifest = _manifest(name, names, spec, kind, palette, model_name, argmax_in_graph, deform_conv, roi_align,
                             provenance, opset)
        with Bundle.writing(out, manifest, overwrite=overwrite) as bundle:
            bundle.add_model(ModelFile("model.onnx", "fp32", opset=opset), onnx_path)
            if checkpoint is not None:
                bundle.add_model(ModelFile(CHECKPOINT_FILE, "fp32", target="torch"), Path(tmp) / CHECKPOINT_FILE)
            bundle.update_report("parity", parity.to_dict())
            if checkpoint is not None:
                bundle.update_report("checkpoint", checkpoint)
    return bundle


def _checkpoint_meta_source(model: nn.Module, model_kwargs: dict[str, Any] | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(registered model name, create_model kwargs, extra metadata of the checkpoint it came from)."""
    from ..models import list_models

    model_name = str(getattr(model, "model_name", type(model).__name__))
    if model_name not in list_models():
        raise ExportError(
            f"cannot store a PyTorch checkpoint for {model_name}: it is not a registered edgeseg model, so the "
            "torch backend could not rebuild it",
            fix="register it with edgeseg.models.register_model, or pass include_checkpoint=False (--no-checkpoint)",
        )
    meta = getattr(model, "checkpoint_meta", None)
    if model_kwargs is None:
        model_kwargs = dict(meta.model_kwargs) if meta is not None else dict(getattr(model, "model_kwargs", None) or {})
    return model_name, dict(model_kwargs), dict(meta.extra) if meta is not None else {}


def write_checkpoint(model: nn.Module, path: Path, spec: InputSpec, *, extra: dict[str, Any],
                     model_kwargs: dict[str, Any] | None = None, compare: str = "logits") -> dict[str, Any]:
    """Save ``model`` (unfolded) as an edgeseg safetensors checkpoint at ``path``, rebuild it with
    ``load_checkpoint`` and check it computes the same ``compare`` output (``logits``; instance
    models: ``scores``) as ``model`` on a parity frame.
    Returns the numbers for ``report.json["checkpoint"]``; raises ExportError if the rebuild differs."""
    from ..errors import ModelError
    from ..models import load_checkpoint, save_checkpoint

    model_name, kwargs, source_extra = _checkpoint_meta_source(model, model_kwargs)
    num_classes = int(getattr(model, "num_classes", len(extra["classes"])))
    try:
        save_checkpoint(model, path, model_name=model_name, num_classes=num_classes,
                        extra={**source_extra, **extra}, model_kwargs=kwargs)
        rebuilt = load_checkpoint(path)
    except ModelError as e:
        why = str(e).splitlines()[0]
        raise ExportError(f"export of {model_name}: the PyTorch checkpoint does not rebuild the model: {why}",
                          fix="pass model_kwargs= with the create_model arguments the model was built with, "
                              "or include_checkpoint=False (--no-checkpoint)") from None
    assert spec.size is not None
    x = torch.from_numpy(spec.preprocess(parity_images(spec.size, count=1)[0])[0])
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    key = compare
    with torch.no_grad():
        ref = model.eval()(x.to(device))[key].float().cpu()
        got = rebuilt.to(device)(x.to(device))[key].float().cpu()
    scale = max(float(ref.abs().max()), 1e-12)
    rel = float((got - ref).abs().max()) / scale if got.shape == ref.shape else float("inf")
    if not rel <= CHECKPOINT_MAX_REL_DIFF:
        raise ExportError(
            f"export of {model_name}: the model rebuilt from its checkpoint computes other logits than the source "
            f"(max relative difference {rel:.3g}, shapes {list(got.shape)} vs {list(ref.shape)})",
            fix="pass model_kwargs= with the create_model arguments the model was built with (e.g. output_stride), "
                "or include_checkpoint=False (--no-checkpoint)",
        )
    return {"file": CHECKPOINT_FILE, "format": "edgeseg.checkpoint v1 (safetensors)", "model": model_name,
            "num_classes": num_classes, "model_kwargs": kwargs, "weights": "unfolded (Conv-BN as trained)",
            "bytes": path.stat().st_size, "rebuild_max_rel_logit_diff": rel}


def _manifest(name: str, classes: tuple[str, ...], spec: InputSpec, kind: str, palette, model_name: str,
              argmax: bool, deform_conv: str, roi_align: str, extra: dict[str, Any] | None,
              opset: int = OPSET) -> Manifest:
    size = spec.size
    if size is None:  # export_onnx already requires a fixed size; keep the manifest honest if that changes
        raise ExportError("a bundle's manifest needs the fixed input size the model was exported at")
    batch: int | str = "batch" if spec.dynamic_batch else 1
    if kind == "labels":
        output = OutputSpec("labels", "labels", "uint8", (batch, size.height, size.width))
    else:
        output = OutputSpec("logits", "logits", "float32", (batch, len(classes), size.height, size.width))
    provenance = {
        "source": "pytorch", "model": model_name, "torch": torch.__version__, "opset": opset,
        "exporter": "torch.onnx.export(dynamo=True)", "conv_bn_folded": True, "argmax_in_graph": argmax,
        "deform_conv": deform_conv, "roi_align": roi_align, **(extra or {}),
    }
    return Manifest(name=name, task="semantic", classes=classes, input=spec, outputs=(output,),
                    palette=_palette(palette, len(classes)), provenance=provenance)
