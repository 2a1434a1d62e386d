"""PyTorch -> ONNX: Conv-BN folding, ``torch.onnx.export(dynamo=True, opset_version=19)``, optional
in-graph argmax (uint8 labels) and dynamic batch, edgeseg custom ops through their translation
table, graph clean-up, one self-contained ``.onnx`` file.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ExportError
from ..structures import InputSpec
from ..models.base import check_runs_at
from .fold import fold_conv_bn
from .graph import clean_graph, save_single_file

OPSET = 19  # default: DeformConv needs 19; TensorRT 8.5 (JetPack 5) parses up to 17
MIN_OPSET = 17
INPUT_NAME = "images"
log = logging.getLogger(__name__)


class _ExportHead(nn.Module):
    """Wraps a model: images -> logits tensor, or -> uint8 labels (ArgMax + Cast in the graph), or
    (``outputs``) the named entries of the model's output dict, in that order (instance models)."""

    def __init__(self, model: nn.Module, argmax: bool, outputs: tuple[str, ...] | None = None):
        super().__init__()
        self.model = model
        self.argmax = argmax
        self.outputs = outputs

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        if self.outputs is not None:
            return tuple(out[k] for k in self.outputs)
        logits = out["logits"]
        return logits.argmax(1).to(torch.uint8) if self.argmax else logits


def output_name(argmax_in_graph: bool) -> str:
    return "labels" if argmax_in_graph else "logits"


def check_export_spec(spec: InputSpec) -> None:
    if spec.layout != "NCHW" or spec.dtype != "float32":
        raise ExportError(f"PyTorch models export with NCHW float32 input; the input spec says {spec.layout} {spec.dtype}",
                          fix="use InputSpec(layout='NCHW', dtype='float32', ...)")
    if spec.size is None or spec.size_rule != "fixed":
        raise ExportError(f"export needs a fixed input size; the input spec has size_rule={spec.size_rule!r}, size={spec.size}",
                          fix="pass InputSpec(size=ImageShape(h, w)) (on the command line: --size WxH)")


def _translation_table(deform_conv: str, roi_align: str) -> dict:
    """edgeseg.ops' translation table (always passed: a model may call the op functions directly)."""
    try:
        from ..ops import onnx_translation_table
    except ImportError as e:  # pragma: no cover - edgeseg.ops ships with the package
        raise ExportError(f"the model uses edgeseg.ops but they cannot be imported ({e})") from None
    from ..models.detection import detection_translation_table  # NMS of detectors (Mask R-CNN)

    return {**onnx_translation_table(deform_conv=deform_conv, roi_align=roi_align), **detection_translation_table()}


def export_onnx(model: nn.Module, path: str | os.PathLike, input_spec: InputSpec, *, argmax_in_graph: bool = False,
                dynamic_batch: bool = False, deform_conv: str = "onnx", roi_align: str = "onnx",
                opset: int = OPSET, outputs: tuple[str, ...] | None = None) -> Path:
    """Fold Conv-BN and export ``model`` to ``path`` (opset 19 unless ``opset`` says otherwise, input
    ``images``, output ``logits`` float ``[N, C, H, W]`` or, with ``argmax_in_graph``, ``labels``
    uint8 ``[N, H, W]``; ``outputs``: these entries of the model's output dict, under their names)."""
    import onnx

    check_export_spec(input_spec)
    check_opset(opset)
    num_classes = getattr(model, "num_classes", None)
    if argmax_in_graph and num_classes is not None and num_classes > 256:
        raise ExportError(f"in-graph argmax writes uint8 labels; the model has {num_classes} classes", fix="export logits")
    folded = fold_conv_bn(model)
    head = _ExportHead(folded, argmax_in_graph, outputs).eval()
    size = input_spec.size
    example = torch.zeros(2 if dynamic_batch else 1, 3, size.height, size.width)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    table = _translation_table(deform_conv, roi_align)
    # one eager pass first: a size the model cannot run at fails here with torch's plain reason
    check_runs_at(head, size, ExportError, batch=example.shape[0], name=getattr(model, "model_name", type(model).__name__))
    with tempfile.TemporaryDirectory(prefix="edgeseg-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        progress = io.StringIO()
        try:
            with torch.no_grad(), contextlib.redirect_stdout(progress), _quiet_exporter_logs():
                torch.onnx.export(
                    head, (example,), str(raw), dynamo=True, opset_version=max(opset, 18), input_names=[INPUT_NAME],
                    output_names=list(outputs) if outputs else [output_name(argmax_in_graph)], dynamic_shapes=dynamic,
                    custom_translation_table=table, optimize=True, verbose=False, report=False,
                )
        except Exception as e:  # the exporter raises many types; keep the first line for the user
            name = getattr(model, "model_name", type(model).__name__)
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportError(f"torch.onnx.export failed for model {name!r} at {size}: {first}",
                              fix="run with -v for the full trace; check the model traces with torch.export") from e
        finally:
            log.debug("torch.onnx.export:\n%s", progress.getvalue())
        graph = onnx.load(str(raw), load_external_data=True)
    graph = clean_graph(graph)
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0] if graph.graph.input else None
    if dynamic_batch and batch_dim is not None and not batch_dim.dim_param:
        # the model's code turned the batch into a number (int(x.shape[0])): the graph takes batch 2 only, and the
        # parity check, run at the example's batch 2, would pass it (before: SETR and Lawin bundles failed on 1 image)
        name = getattr(model, "model_name", type(model).__name__)
        raise ExportError(f"--dynamic-batch: model {name!r} fixes the batch size in its code (the exported graph takes "
                          f"batch {batch_dim.dim_value} only)",
                          fix="export without --dynamic-batch (one frame per call), or keep the batch symbolic in "
                              "the model (no int() on x.shape[0])")
    if opset < 19 and any(n.op_type == "DeformConv" for n in graph.graph.node):
        raise ExportError(f"the model has a deformable convolution; ONNX DeformConv needs opset 19, not {opset}",
                          fix="export with --deform-conv decomposed (GridSample + Conv), which runs at opset 17")
    if opset < 19:
        graph = to_opset(graph, opset)
    from ..models.detection import finalize_plugin_nodes

    finalize_plugin_nodes(graph)  # TensorRT plugin nodes (EfficientNMS_TRT) into the default domain
    _describe(graph, model)
    return save_single_file(graph, Path(path))


def default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def to_opset(model, opset: int):
    """``model`` at exactly ``opset`` of the default domain, valid for it.

    The dynamo exporter writes opset 18 at the least (so edgeseg asks it for 18 and converts here: asked for 17,
    it warned, tried its own conversion and warned again), and its own down-conversion leaves some graphs at
    18 (the Reduce ops of MobileNetV3's squeeze-excite: their ``axes`` became an input in 18), which
    TensorRT 8.5 then refuses. ONNX's version converter moves them down; attributes the target opset's
    schemas do not define (``noop_with_empty_axes`` on ReduceMean before 18, Cast's ``saturate`` from
    19, which the custom-op translations write) are dropped, as they were defaults; the result must
    pass the full ONNX checker, or the export fails here rather than in the user's runtime."""
    import onnx
    from onnx import defs, version_converter

    if default_opset(model) > opset:
        try:
            model = version_converter.convert_version(model, opset)
        except Exception as e:  # noqa: BLE001  (the converter raises several types)
            raise ExportError(f"the exported graph cannot be converted to opset {opset}: {str(e).splitlines()[0][:200]}",
                              fix=f"export at opset {OPSET}, or report the model name") from e
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = defs.get_schema(node.op_type, max_inclusive_version=opset)
        except Exception:  # noqa: BLE001  (unknown op: the checker below reports it)
            continue
        keep = [a for a in node.attribute if a.name in schema.attributes]
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"the graph converted to opset {opset} is invalid: {str(e).splitlines()[0][:200]}",
                          fix=f"export at opset {OPSET}, or report the model name") from e
    if default_opset(model) != opset:
        raise ExportError(f"the exported graph is at opset {default_opset(model)}, not the {opset} asked for",
                          fix=f"export at opset {OPSET}, or report the model name")
    return model


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= OPSET:
        raise ExportError(f"opset {opset} is not supported for export (edgeseg exports opset {MIN_OPSET} to {OPSET})",
                          fix=f"use --opset {OPSET} (default), or {MIN_OPSET} for TensorRT 8.5 / JetPack 5")


@contextlib.contextmanager
def _quiet_exporter_logs():
    """The exporter's libraries log every pass at INFO and warn about torchvision ops (unused
    here, "ambiguous attribute" from max-unpooling); keep errors only, unless run with -v (DEBUG)."""
    names = {"torch.onnx._internal.exporter._registration": logging.ERROR, "onnx_ir": logging.ERROR,
             "onnxscript": logging.WARNING}
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        names = {}
    loggers = {n: logging.getLogger(n) for n in names}
    old = {n: lg.level for n, lg in loggers.items()}
    for n, lg in loggers.items():
        lg.setLevel(names[n])
    try:
        with warnings.catch_warnings():  # torch-internal deprecation notices (pytree LeafSpec)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for n, lg in loggers.items():
            lg.setLevel(old[n])


def _describe(graph, model: nn.Module) -> None:
    """Self-describing artifact: the source model's name travels in the ONNX metadata."""
    import onnx

    graph.producer_name = "edgeseg"
    meta = {"edgeseg.model": str(getattr(model, "model_name", type(model).__name__)),
            "edgeseg.num_classes": str(getattr(model, "num_classes", "")), "torch": torch.__version__}
    keep = [p for p in graph.metadata_props if p.key not in meta]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep + [onnx.StringStringEntryProto(key=k, value=v) for k, v in meta.items()])
