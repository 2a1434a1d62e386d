"""``edgeseg export``: a registered model or a checkpoint -> a verified bundle."""
from __future__ import annotations

import argparse

from ._common import add_json_option, write_json
from .._compat import removesuffix

NAME = "export"
HELP = "export a model or checkpoint to a bundle (ONNX opset 19, Conv-BN folded, parity-checked)"
EXAMPLES = (
    "edgeseg export deeplabv3plus_mobilenetv3_large --classes camvid --size 480x360 --out road.edgeseg",
    "edgeseg export runs/best.safetensors --out road.edgeseg --argmax-in-graph",
    "edgeseg export pspnet_resnet18 --num-classes 19 --size 512x256 --dynamic-batch --out city.edgeseg --json parity.json",
    "edgeseg export runs/best.safetensors --out small.edgeseg --no-checkpoint   # ONNX only, no torch backend",
    "edgeseg export pspnet_mobilenetv2 --num-classes 11 --opset 17 --out jp5.edgeseg   # TensorRT 8.5 (JetPack 5)",
    "edgeseg export runs/solo/model.safetensors --size 320x240 --out shapes-instance.edgeseg   # an instance model",
    "edgeseg export mask_rcnn_r18_fpn --num-classes 8 --size 640x320 --nms tensorrt --out street.edgeseg",
    "edgeseg export runs/segnet/best.safetensors --unpool switches --out segnet-trt.edgeseg   # SegNet for TensorRT",
    "edgeseg export runs/panoptic/model.safetensors --out street-panoptic.edgeseg   # a panoptic model",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT",
                   help="a registered model name (random weights; see 'edgeseg models') or a checkpoint file")
    p.add_argument("--out", required=True, help="bundle directory to create")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--num-classes", type=int, default=None, help="number of classes (names class_0..; default: the model's own, 21 for most, said)")
    g.add_argument("--classes", default=None, help="'camvid', or a file with one class name per line")
    p.add_argument("--size", default=None, help="network input size WxH (default: the checkpoint's, else 480x360)")
    p.add_argument("--name", default=None, help="bundle name (default: from --out)")
    p.add_argument("--argmax-in-graph", action="store_true", help="output uint8 labels [N,H,W] instead of logits")
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch axis dynamic")
    p.add_argument("--deform-conv", choices=["onnx", "decomposed"], default="onnx", help="ONNX form of deformable convs")
    p.add_argument("--roi-align", choices=["onnx", "decomposed"], default="onnx", help="ONNX form of RoIAlign")
    p.add_argument("--unpool", choices=["indices", "switches"], default=None,
                   help="SegNet's unpooling: indices (MaxPool indices + MaxUnpool, the default) or switches "
                        "(index-free: Slice/Max/Equal/DepthToSpace, which TensorRT parses)")
    p.add_argument("--nms", choices=["onnx", "tensorrt"], default="onnx",
                   help="detectors (Mask R-CNN): tensorrt also writes model.trt.onnx with TensorRT's EfficientNMS_TRT "
                        "plugin next to the ONNX NonMaxSuppression graph (CPU runtimes); both need TensorRT >= 8.5")
    p.add_argument("--opset", type=int, default=19, choices=[17, 18, 19],
                   help="ONNX opset (default 19; 17 for TensorRT 8.5 / JetPack 5, with --deform-conv decomposed)")
    p.add_argument("--no-checkpoint", dest="checkpoint", action="store_false",
                   help="leave the PyTorch weights (model.safetensors) out of the bundle: smaller, but "
                        "'--backend torch' cannot run it")
    p.add_argument("--things", default=None, metavar="I,J,...",
                   help="panoptic models (Panoptic-DeepLab, LPSNet) built by name: the class indices that are things "
                        "(default: Cityscapes' 11-18 with 19 classes); a checkpoint carries its own")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    add_json_option(p)


def read_classes(value: str) -> tuple[tuple[str, ...], object]:
    """(names, palette or None) from 'camvid' or a text file (one name per line; '#' comments)."""
    from pathlib import Path

    from ..errors import InputError
    from ..structures import CAMVID_CLASSES, CAMVID_PALETTE

    if value.lower() == "camvid":
        return tuple(CAMVID_CLASSES), CAMVID_PALETTE
    path = Path(value)
    if not path.is_file():
        raise InputError(f"class file {path} not found", fix="give 'camvid', a number (import) or a text file with one name per line")
    from ..data.folder import class_names_from_lines

    try:
        names = class_names_from_lines(path.read_text().splitlines(), path)
    except UnicodeDecodeError:
        raise InputError(f"class file {path} is not text") from None
    if not names:
        raise InputError(f"class file {path} lists no classes")
    return names, None


def _source(args: argparse.Namespace, num_classes: int | None):
    """(model, checkpoint metadata extra or {}, provenance)."""
    from pathlib import Path

    from ..models import create_model, load_checkpoint
    from ..models.checkpoint import read_checkpoint_meta

    looks_like_file = "/" in args.model or Path(args.model).suffix in (".safetensors", ".pt", ".pth")
    if Path(args.model).suffix.lower() == ".onnx":  # before: asked for a checkpoint's metadata file beside it
        from ..errors import InputError

        raise InputError(f"{args.model} is an ONNX model: edgeseg export takes a registered model or PyTorch weights",
                         fix=f"edgeseg import {args.model} --task semantic|instance|panoptic --out MODEL.edgeseg")
    if getattr(args, "things", None):  # only where it means thing-class indices: a panoptic model built by name
        from ..errors import InputError
        from ..models.registry import model_info

        if Path(args.model).is_file() or looks_like_file:
            raise InputError("--things: a checkpoint carries its model's thing classes", fix="drop --things")
        task = model_info(args.model).task
        if task != "panoptic":
            raise InputError(f"--things applies to panoptic models; {args.model} is {'an' if task[0] in 'aeiou' else 'a'} "
                             f"{task} model", fix="drop --things")
    if Path(args.model).is_file() or looks_like_file:
        build = _unpool_build(args, lambda: read_checkpoint_meta(args.model).model_name)
        model = load_checkpoint(args.model, **build)  # raises "checkpoint ... not found" for a missing file
        return model, dict(model.checkpoint_meta.extra), {"checkpoint": Path(args.model).name}
    import logging

    from ..models.registry import model_info

    model_info(args.model)  # an unknown name is refused before the random-weights warning
    logging.getLogger("edgeseg.export").warning("exporting %s with random weights (no checkpoint given)", args.model)
    kwargs = {"thing_classes": _things(args.things)} if getattr(args, "things", None) else {}
    kwargs.update(_unpool_build(args, lambda: args.model))
    model = create_model(args.model, num_classes=num_classes, **kwargs)
    if num_classes is None:  # an audit: 21 classes (the model's default) came out without a word
        logging.getLogger("edgeseg.export").warning(
            "no --num-classes or --classes: %s is built with its default %d classes (class_0..); give --num-classes N "
            "or --classes FILE for your dataset's", args.model, model.num_classes)
    return model, {}, {"weights": "random"}


def _unpool_build(args: argparse.Namespace, model_name) -> dict:
    """``--unpool``: SegNet's form of max-unpooling, chosen while the model is built (the same weights either way)."""
    if getattr(args, "unpool", None) is None:
        return {}
    from ..errors import InputError
    from ..models.registry import model_info

    name = model_name()
    if model_info(name).arch != "segnet":
        raise InputError(f"--unpool applies to SegNet (max-unpooling with pooling indices); {name} does not unpool "
                         "with indices", fix="drop --unpool")
    return {"unpool": args.unpool}


def _things(text: str) -> tuple[int, ...]:
    from ..errors import InputError

    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise InputError(f"--things {text!r}: give the thing classes' indices", fix="e.g. --things 11,12,13") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..export import export_bundle
    from ..structures import ImageShape, InputSpec

    names, palette = read_classes(args.classes) if args.classes else (None, None)
    num_classes = len(names) if names else args.num_classes
    model, extra, provenance = _source(args, num_classes)
    if num_classes is not None and num_classes != model.num_classes:
        from ..errors import InputError

        raise InputError(f"{args.model} has {model.num_classes} classes, but {num_classes} were given",
                         fix="drop --num-classes/--classes, or give matching ones")
    if names is None:
        names = tuple(extra.get("classes") or ()) or model.num_classes
        palette = extra.get("palette")
    spec = InputSpec.from_dict(extra["input_spec"]) if extra.get("input_spec") else InputSpec(size=ImageShape(360, 480))
    if args.size:
        spec = InputSpec.from_dict({**spec.to_dict(), "size": ImageShape.parse(args.size).hw, "size_rule": "fixed"})
    out = Path(args.out)
    task = extra.get("task") or getattr(model, "task", None) or _registered_task(model)
    if task in (None, "semantic") and model.num_classes == 1:  # before: exported, and every pixel came out class 0
        from ..errors import InputError

        raise InputError(f"{args.model} with one class: a semantic model's label is the argmax over its class channels, "
                         "so one channel labels every pixel class 0",
                         fix="export with --num-classes 2 (background and the class); a one-channel sigmoid model made "
                             "elsewhere enters with edgeseg import --classes 2")
    if task == "instance":
        return _run_instance(args, model, names, palette, spec, out, provenance)
    if task == "panoptic":
        return _run_panoptic(args, model, names, palette, spec, out, provenance, extra.get("category_ids"))
    if task not in (None, "semantic"):
        from ..errors import UnsupportedError

        raise UnsupportedError(f"{model.model_name} is a {task} model; bundles (and the stream) carry 2-D semantic, "
                               "instance and panoptic models", fix="export the ONNX file with "
                               "edgeseg.export.volumetric.export_volumetric(model, path, (D, H, W)) and quantize it "
                               "with edgeseg.quant.volumetric.quantize_volumetric (tools/bench/vnet_int8.py does both)")
    if args.nms != "onnx":
        from ..errors import InputError

        raise InputError(f"--nms applies to detectors; {args.model} is a semantic model", fix="drop --nms")
    bundle = export_bundle(
        model, out, name=args.name or removesuffix(out.name, ".edgeseg"), classes=names, input_spec=spec,
        palette=palette, argmax_in_graph=args.argmax_in_graph, dynamic_batch=args.dynamic_batch,
        deform_conv=args.deform_conv, roi_align=args.roi_align, overwrite=args.overwrite, provenance=provenance,
        include_checkpoint=args.checkpoint, opset=args.opset,
    )
    parity = bundle.report["parity"]
    rel = parity["max_rel_logit_error"]
    print(f"wrote {bundle.source} ({model.model_name}, {len(bundle.manifest.classes)} classes, input {spec.size})")
    print(f"parity vs PyTorch on {parity['images']} frames: argmax agreement {parity['argmax_agreement']:.4%}"
          + (f", max relative logit error {rel:.2e}" if rel is not None else "")
          + f" (unfolded model: {parity['source_argmax_agreement']:.4%})")
    checkpoint = bundle.report.get("checkpoint")
    if checkpoint:
        print(f"PyTorch weights: {checkpoint['file']} ({checkpoint['bytes'] / 1e6:.2f} MB, for --backend torch)")
    write_json(args.json, {"bundle": str(bundle.root), "model": model.model_name, "parity": parity,
                           "checkpoint": checkpoint})
    return 0


def _registered_task(model) -> str | None:
    from ..models import model_info

    try:
        return model_info(str(getattr(model, "model_name", ""))).task
    except Exception:  # not a registered name (a custom module): the semantic path
        return None


def _only_semantic_flags(args: argparse.Namespace, model, task: str, nms: bool = True) -> None:
    from ..errors import InputError

    if args.argmax_in_graph or args.dynamic_batch:
        raise InputError("--argmax-in-graph and --dynamic-batch apply to semantic models",
                         fix=f"drop them for the {task} model {model.model_name}")
    if nms and args.nms != "onnx":
        raise InputError(f"--nms applies to detectors with NMS in the graph; {model.model_name} is a {task} model",
                         fix="drop --nms")


def _run_panoptic(args: argparse.Namespace, model, names, palette, spec, out, provenance, category_ids) -> int:
    from ..export.panoptic_export import export_panoptic_bundle

    _only_semantic_flags(args, model, "panoptic")
    bundle = export_panoptic_bundle(model, out, name=args.name or removesuffix(out.name, ".edgeseg"),
                                    classes=names if not isinstance(names, int) else None, input_spec=spec,
                                    palette=palette, category_ids=category_ids or None, overwrite=args.overwrite,
                                    opset=args.opset, provenance=provenance, include_checkpoint=args.checkpoint,
                                    deform_conv=args.deform_conv, roi_align=args.roi_align)
    parity = bundle.report["parity"]
    m = bundle.manifest
    print(f"wrote {bundle.source} ({model.model_name}, panoptic, {m.decoder_options.layout} layout, "
          f"{len(m.classes)} classes, input {spec.size})")
    print(f"parity vs PyTorch on {parity['images']} frames: segments {parity['segments_torch_onnx']}, "
          f"smallest segment IoU {parity['min_segment_iou']:.4f}, "
          f"smallest pixel agreement {parity['min_pixel_agreement']:.4%}")
    write_json(args.json, {"bundle": str(bundle.root), "model": model.model_name, "parity": parity,
                           "checkpoint": bundle.report.get("checkpoint")})
    return 0


def _run_instance(args: argparse.Namespace, model, names, palette, spec, out, provenance) -> int:
    from ..export.instance_export import export_instance_bundle

    _only_semantic_flags(args, model, "instance", nms=False)
    bundle = export_instance_bundle(model, out, name=args.name or removesuffix(out.name, ".edgeseg"),
                                    classes=names if not isinstance(names, int) else None, input_spec=spec,
                                    palette=palette, overwrite=args.overwrite, opset=args.opset,
                                    provenance=provenance, include_checkpoint=args.checkpoint, nms=args.nms,
                                    deform_conv=args.deform_conv, roi_align=args.roi_align)
    parity = bundle.report["parity"]
    m = bundle.manifest
    print(f"wrote {bundle.source} ({model.model_name}, instance, {m.decoder_options.layout} layout, "
          f"{len(m.classes)} classes, input {spec.size})")
    print(f"parity vs PyTorch on {parity['images']} frames: instances {parity['instances_torch_onnx']}, "
          f"max score difference {parity['max_score_diff']:.2e}, smallest mask IoU {parity['min_mask_iou']:.4f}")
    write_json(args.json, {"bundle": str(bundle.root), "model": model.model_name, "parity": parity,
                           "checkpoint": bundle.report.get("checkpoint")})
    return 0
