"""Instance models (``task="instance"`` in the registry: SOLOv2, Mask R-CNN) -> a bundle.

The model's eval-mode output dict is exported under its own names: the ``dense`` layout
(``scores``, ``classes``, ``masks`` over the whole input: SOLOv2) or the ``roi`` layout (``boxes``,
``scores``, ``classes``, ``masks`` over each box: Mask R-CNN), told apart by a ``boxes`` output.
The manifest stores :class:`~edgeseg.structures.InstanceOptions` with that layout.

Parity: the ONNX graph (ONNX Runtime) and the Conv-BN-folded model (PyTorch) run on the same
parity frames; both outputs go through the runtime decoder, and the report gives the number of
instances on each side, the largest score difference and the smallest mask IoU between matched
instances (same rank after the decoder's sort; where scores tie within :data:`TIE_SCORE`, float noise
between the runtimes may swap ranks, so such an instance is matched to the best of the tied ones of its
class). A different instance count or a mask IoU below :data:`FAIL_MASK_IOU` fails the export.
"""
from __future__ import annotations

import os
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._ort import make_session
from ..bundle import Bundle
from ..errors import ExportError
from ..structures import InputSpec, InstanceOptions
from ..structures.manifest import Manifest, ModelFile, OutputSpec
from .bundle_export import CHECKPOINT_FILE, write_checkpoint
from .names import _palette, normalize_classes
from .fold import fold_conv_bn
from .onnx_export import OPSET, export_onnx
from .parity import parity_images

log = logging.getLogger("edgeseg.export")

FAIL_MASK_IOU = 0.95
PARITY_SCORE = 0.02
TIE_SCORE = 1e-3
FAIL_RAW_DIFF = 1e-3  # the runtimes' float outputs, as sorted values, relative to each output's range
TIE_SPREAD = 1e-2  # every decoded score within this of the others: an untrained model's, which NMS cannot rank
DENSE_OUTPUTS = ("scores", "classes", "masks")
ROI_OUTPUTS = ("boxes", "scores", "classes", "masks")


def instance_outputs(model: nn.Module, spec: InputSpec) -> tuple[str, tuple[str, ...]]:
    """``(layout, output names)`` from one eval-mode forward pass."""
    assert spec.size is not None
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, spec.size.height, spec.size.width))
    if not isinstance(out, dict) or not set(DENSE_OUTPUTS) <= set(out):
        raise ExportError(f"an instance model must return a dict with {', '.join(DENSE_OUTPUTS)} (and boxes for the roi "
                          f"layout) in eval mode; got {sorted(out) if isinstance(out, dict) else type(out).__name__}")
    return ("roi", ROI_OUTPUTS) if "boxes" in out else ("dense", DENSE_OUTPUTS)


def _manifest(name: str, names: tuple[str, ...], spec: InputSpec, shapes: dict[str, tuple], dtypes: dict[str, str],
              layout: str, palette, model_name: str, opset: int, provenance: dict[str, Any] | None,
              options: InstanceOptions) -> Manifest:
    outs = tuple(OutputSpec(k, k, dtypes[k], shapes[k]) for k in shapes)
    prov = {"source": "pytorch", "model": model_name, "opset": opset, **(provenance or {})}
    return Manifest(name=name, task="instance", classes=names, input=spec, outputs=outs,
                    palette=_palette(palette, len(names)), decoder=options.to_dict(), provenance=prov)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _paired_mask_iou(a, b, i: int, tie: float = TIE_SCORE) -> float:
    """Mask IoU of torch instance ``i`` with its ONNX counterpart: the one at the same rank, or, when
    scores tie within ``tie`` (float noise between the runtimes can swap their order), the best of the
    ONNX instances of the same class whose score is within ``tie`` of it."""
    best = _mask_iou(a.masks[i], b.masks[i])
    if best >= FAIL_MASK_IOU:
        return best
    near = np.flatnonzero((np.abs(b.scores - a.scores[i]) <= tie) & (b.classes == a.classes[i]))
    return max([best] + [_mask_iou(a.masks[i], b.masks[j]) for j in near if j != i])


def instance_parity(folded: nn.Module, onnx_path: Path, manifest: Manifest, images: list[np.ndarray]) -> dict[str, Any]:
    """Decoded torch vs ONNX Runtime results on ``images`` (module doc)."""
    from ..decode.instance import decode_instance

    session = make_session(str(onnx_path))
    names = [o.name for o in session.get_outputs()]
    # a low threshold: an untrained or lightly trained model still yields instances to compare
    options = manifest.decoder_options.replace(score_threshold=min(manifest.decoder_options.score_threshold, PARITY_SCORE))
    counts, score_diff, min_iou, raw_diff, torch_scores = [], 0.0, 1.0, 0.0, []
    for img in images:
        x, meta = manifest.input.preprocess(img)
        with torch.no_grad():
            ref = {k: v.numpy() for k, v in folded.eval()(torch.from_numpy(x)).items() if k in names}
        got = dict(zip(names, session.run(names, {"images": x})))
        raw_diff = max(raw_diff, _raw_difference(ref, got))
        a, b = decode_instance(ref, meta, manifest, options), decode_instance(got, meta, manifest, options)
        counts.append((len(a), len(b)))
        torch_scores.extend(a.scores.tolist())
        if len(a) == len(b) and len(a):
            score_diff = max(score_diff, float(np.abs(a.scores - b.scores).max()))
            min_iou = min(min_iou, min(_paired_mask_iou(a, b, i) for i in range(len(a))))
    same = all(x == y for x, y in counts)
    raw_ok = raw_diff <= FAIL_RAW_DIFF
    decoded_ok = same and min_iou >= FAIL_MASK_IOU
    nothing = all(x == 0 for x, _ in counts)  # no instance to compare on any frame: the raw outputs must agree
    spread = float(np.ptp(torch_scores)) if len(torch_scores) > 1 else 0.0
    return {"images": len(images), "instances_torch_onnx": counts, "same_instance_count": same,
            "max_score_diff": score_diff, "min_mask_iou": min_iou, "max_raw_difference": raw_diff,
            "compared": "raw outputs (no instance decoded)" if nothing else "decoded instances",
            # an untrained model's scores all tie: which detections NMS keeps then depends on float noise
            "scores_tie": bool(len(torch_scores) > 1 and spread < TIE_SPREAD and raw_ok),
            "passed": bool(raw_ok if nothing else decoded_ok),
            "thresholds": {"min_mask_iou": FAIL_MASK_IOU, "max_raw_difference": FAIL_RAW_DIFF}}


def _raw_difference(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """Largest difference between the two runtimes' score outputs (every float output where none is named like
    one), relative to each output's range, compared as sorted values (the same detections in another order agree);
    1.0 for outputs of different shapes. Scores only: where they tie, which boxes and masks are kept is float noise."""
    keys = [k for k in ref if "score" in k] or list(ref)
    worst = 0.0
    for k, r in ((k, ref[k]) for k in keys):
        g = got.get(k)
        if g is None or not np.issubdtype(r.dtype, np.floating):
            continue
        if g.shape != r.shape:
            return 1.0
        scale = max(float(np.abs(r).max()) if r.size else 0.0, 1e-3)  # not float noise on near-zero scores
        if r.size:
            worst = max(worst, float(np.abs(np.sort(r, axis=None) - np.sort(g.astype(r.dtype), axis=None)).max()) / scale)
    return worst


def export_instance_bundle(model: nn.Module, out: str | os.PathLike, *, name: str, input_spec: InputSpec,
                           classes=None, palette=None, overwrite: bool = False, opset: int = OPSET,
                           provenance: dict[str, Any] | None = None, include_checkpoint: bool = True,
                           model_kwargs: dict[str, Any] | None = None,
                           options: InstanceOptions | None = None, nms: str = "onnx", deform_conv: str = "onnx",
                           roi_align: str = "onnx") -> Bundle:
    """Export an instance model into a new bundle at ``out`` (module doc). ``classes``: the thing
    class names (default: ``model.classes``). ``nms="tensorrt"`` (Mask R-CNN): the bundle also gets
    ``model.trt.onnx`` (target ``tensorrt``), the same weights with TensorRT's ``EfficientNMS_TRT``
    plugin in place of ONNX ``NonMaxSuppression``; that graph cannot run in ONNX Runtime, so parity
    is checked on ``model.onnx`` (the ONNX form), which CPU runtimes use."""
    if nms not in ("onnx", "tensorrt"):
        raise ExportError(f"nms must be onnx or tensorrt, got {nms!r}")
    cfg = getattr(model, "cfg", None)
    if nms == "tensorrt" and not (cfg is not None and hasattr(cfg, "nms")):
        raise ExportError(f"--nms tensorrt applies to models with an NMS in the graph (Mask R-CNN), not "
                          f"{getattr(model, 'model_name', type(model).__name__)}", fix="drop --nms tensorrt")
    model_name = str(getattr(model, "model_name", type(model).__name__))
    names = normalize_classes(classes if classes is not None else getattr(model, "classes", None) or model.num_classes,
                              getattr(model, "num_classes", None), f"export of {model_name}")
    spec = replace(input_spec, name="images", dynamic_batch=False)
    model = model.eval()
    folded = fold_conv_bn(model)
    layout, outputs = instance_outputs(folded, spec)
    options = (options or InstanceOptions()).replace(layout=layout)
    max_det = getattr(model, "max_detections", None)
    if max_det:
        options = options.replace(max_detections=int(max_det))
    with tempfile.TemporaryDirectory(prefix="edgeseg-bundle-") as tmp:
        onnx_path = export_onnx(folded, Path(tmp) / "model.onnx", spec, opset=opset, outputs=outputs,
                                deform_conv=deform_conv, roi_align=roi_align)
        session = make_session(str(onnx_path))
        x, _ = spec.preprocess(parity_images(spec.size, count=1)[0])
        ys = session.run(None, {"images": x})
        shapes = {o.name: tuple(d if isinstance(d, int) else "detections" for d in o.shape) for o in session.get_outputs()}
        dtypes = {o.name: str(y.dtype) for o, y in zip(session.get_outputs(), ys)}
        manifest = _manifest(name, names, spec, shapes, dtypes, layout, palette, model_name, opset, provenance, options)
        parity = instance_parity(folded, onnx_path, manifest, parity_images(spec.size, count=3))
        if not parity["passed"] and parity["scores_tie"]:  # random weights: no decision to compare, nothing wrong
            log.warning("parity of %s's decoded instances cannot be judged: its scores all lie within %g of each other "
                        "(an untrained model), so which detections NMS and the thresholds keep depends on float noise; "
                        "its raw outputs agree (largest difference %.2g of their range). Export a trained checkpoint to "
                        "check the decoded results", model_name, TIE_SPREAD, parity["max_raw_difference"])
        elif not parity["passed"]:
            raise ExportError(f"parity check failed for {model_name}: torch/ONNX instances {parity['instances_torch_onnx']}, "
                              f"smallest mask IoU {parity['min_mask_iou']:.3f}, largest raw output difference "
                              f"{parity['max_raw_difference']:.2g} of the output's range",
                              fix="the ONNX graph computes something else than the PyTorch model; report this with the model name")
        elif parity["compared"].startswith("raw"):
            log.warning("no instance was decoded on the parity frames (an untrained model?): parity compared %s's raw "
                        "outputs only", model_name)
        checkpoint = None
        if include_checkpoint:
            extra = {"task": "instance", "classes": list(names), "input_spec": spec.to_dict()}
            checkpoint = write_checkpoint(model, Path(tmp) / CHECKPOINT_FILE, spec, extra=extra, model_kwargs=model_kwargs,
                                          compare="scores")
        trt_path = None
        if nms == "tensorrt":
            import copy

            plugin = copy.deepcopy(folded)
            plugin.cfg = replace(cfg, nms="tensorrt")
            trt_path = export_onnx(plugin, Path(tmp) / "model.trt.onnx", spec, opset=opset, outputs=outputs,
                                   deform_conv=deform_conv, roi_align=roi_align)
        with Bundle.writing(out, manifest, overwrite=overwrite) as bundle:
            bundle.add_model(ModelFile("model.onnx", "fp32", opset=opset), onnx_path)
            if trt_path is not None:
                bundle.add_model(ModelFile("model.trt.onnx", "fp32", target="tensorrt", opset=opset), trt_path)
            if checkpoint is not None:
                bundle.add_model(ModelFile(CHECKPOINT_FILE, "fp32", target="torch"), Path(tmp) / CHECKPOINT_FILE)
            bundle.update_report("parity", parity)
            if checkpoint is not None:
                bundle.update_report("checkpoint", checkpoint)
    return bundle
