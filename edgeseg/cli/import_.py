"""``edgeseg import``: an ONNX model made elsewhere -> a bundle that honours its conventions."""
from __future__ import annotations

import argparse
import logging

from ._common import add_json_option, write_json
from .._compat import removesuffix

NAME = "import"
HELP = "turn an ONNX segmentation model made elsewhere (opset >= 9) into a bundle"
EXAMPLES = (
    "edgeseg import seg.onnx --classes 21 --size 512x512 --out voc.edgeseg",
    "edgeseg import tf_deeplab.onnx --classes labels.txt --layout NHWC --color BGR "
    "--mean 103.94,116.78,123.68 --std 1,1,1 --scale 1 --size 513x513 --out tf.edgeseg",
    "edgeseg import yolov8n-seg.onnx --task instance --out yolo.edgeseg   # names, size, letterbox from its metadata",
    "edgeseg import yolo26n-sem.onnx --out sem.edgeseg   # Ultralytics semantic: names, size, letterbox from its metadata",
    "edgeseg import yolo26n-seg.onnx --task instance --out yolo26.edgeseg  # end-to-end [1, 300, 38] output: no NMS",
    "edgeseg import yolact_resnet50.onnx --task instance --classes coco.txt --out yolact.edgeseg  # conf/boxes/mask/proto",
    "edgeseg import custom-seg.onnx --task instance --names names.txt --size 640x384 --out custom.edgeseg  # no metadata",
    "edgeseg import custom-seg.onnx --task instance --names car,person,bicycle --out custom.edgeseg",
    "edgeseg import mmdeploy_mask_rcnn/end2end.onnx --task instance --names coco.txt --out mrcnn.edgeseg  # dets/labels/masks",
    "edgeseg import rtmdet_ins/end2end.onnx --task instance --names coco.txt --out rtmdet.edgeseg  # with MMDeploy's "
    "pipeline.json beside it (--dump-info): its Resize/Pad/Normalize; without: add --preprocess rtmdet",
    "edgeseg import mmseg_work_dir/end2end.onnx --names cityscapes.txt --out seg.edgeseg  # MMSegmentation via MMDeploy",
    "edgeseg import pp_humanseg/model.onnx --names background,person --out human.edgeseg  # PaddleSeg: its deploy.yaml",
    "edgeseg import config_infer_primary_seg.txt --out seg.edgeseg  # DeepStream's nvinfer file: model, labels, scaling",
    "edgeseg import config_infer_primary_seg.yml --out seg.edgeseg  # its YAML form",
    "edgeseg import FCN-ResNet18-Cityscapes-512x256/fcn_resnet18.onnx --out city.edgeseg  # jetson-inference: classes.txt",
    "edgeseg import panoptic_deeplab.onnx --task panoptic --names cityscapes.txt --things person,rider,car,truck,bus,"
    "train,motorcycle,bicycle --size 1024x512 --out pdl.edgeseg",
    "edgeseg import torchvision_maskrcnn.onnx --task instance --names coco91.txt --out tv.edgeseg  # [3, H, W] input",
    "edgeseg import segformer/model.onnx --size 512x512 --out segformer.edgeseg  # names, mean/std from its config files",
    "edgeseg import mask2former/model.onnx --task panoptic --things person,rider,car,truck,bus,train,motorcycle,bicycle "
    "--out m2f.edgeseg  # one MaskFormer/Mask2Former export serves all three tasks",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", metavar="MODEL.onnx", help="the ONNX file, or a DeepStream nvinfer configuration file "
                                                     "(config_infer_*.txt or .yml) naming it")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--task", default=None, choices=["semantic", "instance", "panoptic"],
                   help="what the model does (default semantic, or an nvinfer file's network-type); instance: prototype-mask models (YOLACT's conf/boxes/mask/"
                        "proto outputs, Ultralytics YOLOv5/v8/v11-seg, and YOLO26-seg's or nms=True end-to-end "
                        "exports) and box-and-mask models after their own NMS (Mask R-CNN, RTMDet-Ins, SOLO as MMDeploy "
                        "exports them: dets/labels/masks; torchvision's boxes/labels/scores/masks), recognised from "
                        "their output shapes; panoptic: Panoptic-DeepLab's semantic logits, centre heatmap and offsets "
                        "(with --things); MaskFormer/Mask2Former exports (class and mask logits per "
                        "query) for any of the three")
    p.add_argument("--classes", default=None,
                   help="number of classes, 'camvid', or a file with one name per line (required for semantic; "
                        "models exported by Ultralytics carry their names; a Hugging Face export's "
                        "config.json beside the ONNX file gives them, and its preprocessor_config.json the "
                        "mean/std/scale/size)")
    p.add_argument("--names", default=None, metavar="FILE|A,B,...",
                   help="class names: a file with one name per line, or a comma-separated list (instead of --classes; "
                        "for models without Ultralytics' names metadata)")
    pan = p.add_argument_group("panoptic imports (--task panoptic)")
    pan.add_argument("--things", default=None, metavar="NAME,...",
                     help="the thing classes (names or indices, comma-separated); the others are stuff (required; "
                          "--task instance of a MaskFormer/Mask2Former trained for panoptic output: the classes "
                          "kept as instances, as its authors' code keeps them)")
    pan.add_argument("--offset-order", default="yx", choices=["yx", "xy"],
                     help="the order of the offset channels (default yx, Panoptic-DeepLab's)")
    pan.add_argument("--offset-scale", type=float, default=1.0,
                     help="multiply the offsets (the map stride, for heads exported before the upsampling that scales "
                          "them to input pixels; default 1)")
    for flag, kind, what in (("--center-threshold", float, "centre peaks above it count (default 0.1"),
                             ("--nms-kernel", int, "odd centre NMS window in map cells (default 7"),
                             ("--top-k", int, "most centres kept (default 200"),
                             ("--stuff-area", int, "stuff segments smaller than this many pixels of the original "
                                                   "frame become void (default 2048")):
        pan.add_argument(flag, type=kind, default=None, help=f"{what}, Panoptic-DeepLab's; 0 for MaskFormer/Mask2Former)"
                         if flag == "--stuff-area" else f"{what}, Panoptic-DeepLab's)")
    from ..structures.decoder_options import QUERY_CONVENTIONS

    q = p.add_argument_group("mask-classification imports (MaskFormer, Mask2Former: --task panoptic or instance)")
    q.add_argument("--query-convention", default=None, choices=QUERY_CONVENTIONS,
                   help="whose post-processing to reproduce (default: transformers for outputs named "
                        "class_queries_logits, else mask2former: the authors' Detectron2 code)")
    q.add_argument("--score-threshold", type=float, default=None,
                   help="queries (panoptic) or detections (instance) scoring at or below it are dropped (default: "
                        "0.8 panoptic / none instance for the authors' code, 0.5 for transformers)")
    pre = p.add_argument_group("pre-processing (instance imports: the exporter's conventions, each option replacing "
                               "its own field)")
    pre.add_argument("--preprocess", default=None,
                     choices=["ultralytics", "yolact", "mmdet", "rtmdet", "torchvision", "detectron2"],
                   help="instance imports: the exporter whose pre-processing the model expects, when its outputs do not "
                        "tell (rtmdet: MMDetection's RTMDet-Ins, BGR with its own mean/std, letterboxed with 114); "
                        "--mean/--std/... still replace single fields")
    pre.add_argument("--layout", default=None, choices=["NCHW", "NHWC"], help="input layout (default NCHW)")
    pre.add_argument("--color", default=None, choices=["RGB", "BGR"],
                   help="channel order the model expects (default RGB; instance imports: the exporter's)")
    pre.add_argument("--mean", default=None,
                   help="per-channel mean, in --color order, in the units of pixel*scale (default ImageNet 0.485,0.456,0.406; "
                        "instance imports: the exporter's, each of these options replacing only its own field)")
    pre.add_argument("--std", default=None, help="per-channel std (default ImageNet 0.229,0.224,0.225)")
    pre.add_argument("--scale", type=float, default=None,
                   help="pixel multiplier before mean/std: input = (pixel*scale - mean)/std (default 1/255; "
                        "pass 1 with a mean/std in 0-255 units such as 103.94,116.78,123.68)")
    pre.add_argument("--resize", default=None, choices=["resize", "letterbox"],
                   help="how images reach the network size (default: resize; instance imports: the exporter's, "
                        "letterbox for Ultralytics models, resize for YOLACT, MMDeploy and torchvision ones)")
    pre.add_argument("--pad-value", default=None,
                   help="letterbox padding: a grey level, or R,G,B levels (default 0; Ultralytics and RTMDet models: 114; "
                        "MMDetection, Detectron2 and torchvision ones: the mean pixel 124,116,104)")
    pre.add_argument("--anchor", default=None, choices=["center", "top-left"],
                   help="where a letterboxed image sits: center (Ultralytics, the default) or top-left, padded below and "
                        "to the right (MMDetection, MMSegmentation, MMDeploy, Detectron2, transformers)")
    pre.add_argument("--size", default=None, help="network input size WxH (default: the model's fixed size)")
    p.add_argument("--name", default=None, help="bundle name (default: from --out)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    add_json_option(p)


def _names(value: str, list_only: bool = False) -> tuple[tuple[str, ...], object]:
    """(names, palette or None) from 'camvid', a names file, or a comma-separated list (``car,person,bike``);
    ``list_only`` (``--names``): a value that is no file is a list, one name too (``--names person``), unless it
    looks like a path (a missing names file is named as such)."""
    from pathlib import Path

    from .export import read_classes

    looks_like_path = "/" in value or Path(value).suffix.lower() in (".txt", ".names", ".yaml", ".json")
    if ("," in value or (list_only and not looks_like_path and value.lower() != "camvid")) and not Path(value).is_file():
        names = tuple(n.strip() for n in value.split(","))
        if not all(names):
            from ..errors import InputError

            raise InputError(f"class names {value!r}: an empty name", fix="e.g. --names car,person,bicycle")
        return names, None
    return read_classes(value)


def _pad(text: str | None) -> int | tuple[int, ...] | None:
    """``--pad-value``: ``114`` or ``124,116,104`` (range checked by :class:`InputSpec`)."""
    from ..errors import InputError

    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) not in (1, 3):
        raise InputError(f"--pad-value needs a grey level or three comma-separated levels, got {text!r}",
                         fix="e.g. --pad-value 114 or --pad-value 124,116,104")
    return vals[0] if len(vals) == 1 else vals


def _triple(text: str, what: str) -> tuple[float, float, float]:
    from ..errors import InputError

    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise InputError(f"--{what} needs three comma-separated numbers, got {text!r}", fix=f"e.g. --{what} 0.5,0.5,0.5")
    return vals  # type: ignore[return-value]


def _pipeline_input(args: argparse.Namespace, nvinfer=None) -> dict:
    """The pre-processing fields of the export the model lies in (MMDeploy's work directory, its
    ``pipeline.json``; PaddleSeg's, its ``deploy.yaml``) or of the DeepStream configuration ``nvinfer`` (a
    :class:`PipelineConfig`) that the command line leaves open; {} without one, or with ``--preprocess`` (the
    user's choice wins)."""
    from pathlib import Path

    from ..export.mmdeploy_config import mmdeploy_config
    from ..export.paddleseg_config import paddleseg_config

    cfg, who = nvinfer, "DeepStream's"
    if cfg is None:
        cfg, who = mmdeploy_config(args.onnx), "MMDeploy's"
    if cfg is None:
        cfg, who = paddleseg_config(args.onnx), "PaddleSeg's"
    if cfg is None:
        return {}
    log = logging.getLogger("edgeseg.import")
    for problem in cfg.problems:
        log.warning("%s", problem)
    read = " and ".join(Path(f).name for f in cfg.files) or "files"
    if args.preprocess:
        log.warning("%s: --preprocess %s given: the pre-processing in %s is not used", args.onnx, args.preprocess, read)
        return {}
    if cfg.task and cfg.task != args.task:
        log.warning("%s: %s %s describes a%s %s model, imported as --task %s", args.onnx, who, read,
                    "n" if cfg.task[0] in "aeiou" else "", cfg.task, args.task)
    given = {"mean": args.mean, "std": args.std, "scale": args.scale, "resize": args.resize,
             "pad_value": args.pad_value, "anchor": args.anchor, "color": args.color}
    fields = {k: v for k, v in cfg.input.items() if given.get(k) is None}
    if cfg.sizes and not args.size:
        from ..export.importer import onnx_input_size

        if onnx_input_size(args.onnx, args.layout or "NCHW") is None:  # a dynamic export: the pipeline's sizes
            fields.update(cfg.sizes)
            if cfg.sizes["size_rule"] == "fit":  # keep-ratio, padded below and to the right (if at all)
                fields.update({k: v for k, v in (("resize", "letterbox"), ("anchor", "top-left")) if given[k] is None})
    if fields:
        log.warning("%s: from %s %s: %s", args.onnx, who, read, ", ".join(f"{k} {v}" for k, v in fields.items()))
    return fields


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bundle import check_target
    from ..errors import EdgesegError, InputError
    from ..export.hf_config import huggingface_config
    from ..export.importer import import_onnx, onnx_input_size
    from ..structures import ImageShape, InputSpec

    nvinfer, nv_names = None, None
    from ..export.nvinfer_config import looks_like_nvinfer_config, read_nvinfer_config

    if looks_like_nvinfer_config(args.onnx):  # DeepStream's config_infer_*.txt: the model, its labels and conventions
        from ..export.mmdeploy_config import PipelineConfig

        nv = read_nvinfer_config(args.onnx, read_labels=args.classes is None and args.names is None)
        if args.task is not None and args.task != nv.task:
            logging.getLogger("edgeseg.import").warning("%s: network-type says %s, imported as --task %s", args.onnx,
                                                        nv.task, args.task)
        args.task, args.onnx, args.layout = args.task or nv.task, str(nv.onnx), args.layout or nv.layout
        nv_names = nv.names if args.classes is None and args.names is None else None
        nvinfer = PipelineConfig(nv.input, nv.task, nv.files, nv.problems,
                                 {"size": nv.size, "size_rule": "fixed"} if nv.size else {})
        logging.getLogger("edgeseg.import").warning(
            "%s: imports %s as a %s model%s", nv.path, nv.onnx, nv.task,
            f" named by {Path(nv.files[1]).name} ({len(nv.names)} classes)" if nv.names and nv_names else "")
    args.task = args.task or "semantic"
    if args.task == "panoptic":  # an Ultralytics model is never panoptic: say what it is, not which option is missing
        from ..export.import_instance import ULTRALYTICS_TASKS, ultralytics_task

        kind = ultralytics_task(args.onnx)
        if kind is not None:
            how = {"instance": "import it with --task instance, then fuse it with a semantic bundle for panoptic "
                               "output: edgeseg fuse SEMANTIC INSTANCE --out panoptic.edgeseg",
                   "semantic": "import it with --task semantic"}.get(ULTRALYTICS_TASKS.get(kind, ""),
                                                                      "edgeseg imports Ultralytics' segment and semantic models")
            raise InputError(f"{args.onnx} is an Ultralytics {kind} model, not a panoptic one", fix=how)
    names_given = args.names is not None
    if names_given:
        if args.classes is not None:
            raise InputError(f"--classes {args.classes} and --names {args.names}: give the classes once",
                             fix="--names for their names, or --classes N for a count")
        args.classes = args.names
    given_input = {k for k in ("mean", "std", "scale", "size") if getattr(args, k, None) is not None}
    ultra = None
    if args.task == "semantic" and nvinfer is None:  # an Ultralytics semantic export (YOLO26-sem) carries its names,
        from ..export.import_instance import ultralytics_semantic  # size and conventions (an nvinfer file given
        # explicitly says how DeepStream feeds the model: its pre-processing wins)
        ultra = ultralytics_semantic(args.onnx)
    # the file's own Ultralytics metadata wins over Hugging Face files that happen to lie beside it
    hf = huggingface_config(args.onnx) if ultra is None and (args.classes is None or len(given_input) < 4) else None
    mmd = _pipeline_input(args, nvinfer) if ultra is None else {}
    hf_names = hf.names if hf is not None and args.classes is None else None
    if hf is not None:
        for problem in hf.problems:
            logging.getLogger("edgeseg.import").warning("%s", problem)
    if ultra is not None and args.classes is None and ultra["names"]:
        hf_names = ultra["names"]
    side = None  # jetson-inference's classes.txt/colors.txt, DeepStream's labels.txt beside the model
    if args.classes is None and hf_names is None and nv_names is None and args.task in ("semantic", "panoptic"):
        from ..export.label_files import labels_beside

        side = labels_beside(args.onnx)
        if side is not None:
            for problem in side.problems:
                logging.getLogger("edgeseg.import").warning("%s", problem)
            logging.getLogger("edgeseg.import").warning("%s: %d class names from %s", args.onnx, len(side.names),
                                                        " and colours from ".join(Path(f).name for f in side.files))
            nv_names = side.names
    if args.classes is None and hf_names is None and nv_names is None and args.task in ("semantic", "panoptic"):
        if not Path(args.onnx).exists():  # an audit: "--classes is required" came first for a file that is not there
            raise InputError(f"ONNX file {args.onnx} not found", fix="give the path of an ONNX model (or a DeepStream "
                                                                     "nvinfer configuration file naming one)")
        if hf is not None and hf.names_error:
            raise InputError(hf.names_error, fix="repair it, or give the names with --names / --classes FILE")
        raise InputError(f"--classes is required for a {args.task} model",
                         fix="e.g. --classes 21, --classes camvid, --classes names.txt or --names road,car,... "
                             "(a Hugging Face export's config.json, or a classes.txt or labels.txt beside the ONNX "
                             "file gives them too)")
    if args.classes is None and hf is not None and hf.names_error and hf_names is None:
        logging.getLogger("edgeseg.import").warning("%s (not used)", hf.names_error)
    if args.task == "panoptic" and not (args.things or "").replace(",", "").strip():
        raise InputError("--things is required for a panoptic model", fix="name its thing classes, e.g. --things person,car")
    query_options = {k: v for k, v in (("query_convention", getattr(args, "query_convention", None)),
                                       ("score_threshold", getattr(args, "score_threshold", None))) if v is not None}
    if query_options and args.task == "semantic":
        raise InputError("--query-convention and --score-threshold apply to --task panoptic or instance",
                         fix="drop them for a semantic import")
    panoptic_only = [f for f, v in (("--things", args.things and args.task != "instance"),
                                    ("--center-threshold", getattr(args, "center_threshold", None)),
                                    ("--nms-kernel", getattr(args, "nms_kernel", None)), ("--top-k", getattr(args, "top_k", None)),
                                    ("--stuff-area", getattr(args, "stuff_area", None)),
                                    ("--offset-order", getattr(args, "offset_order", "yx") != "yx" or None),
                                    ("--offset-scale", getattr(args, "offset_scale", 1.0) != 1.0 or None)) if v]
    if panoptic_only and args.task != "panoptic":
        raise InputError(f"{', '.join(panoptic_only)} apply to --task panoptic", fix=f"drop {panoptic_only[0]}")
    instance = args.task == "instance"  # the instance import takes the files' names and fields for query models only
    classes, palette = (None if instance else hf_names, None) if args.classes is None else (
        _names(args.classes, list_only=True) if names_given else
        (int(args.classes), None) if args.classes.isdigit() else _names(args.classes))
    if nv_names is not None:  # the nvinfer file's label file, or the name files beside the model
        classes, palette = nv_names, (side.palette if side is not None else None)
    norm = {k: _triple(v, k) for k, v in (("mean", args.mean), ("std", args.std)) if v is not None}
    given_norm = set(norm)  # the uint8 warning names what the command line gave
    explicit = {k: v for k, v in (("scale", args.scale), ("resize", args.resize), ("pad_value", _pad(args.pad_value)),
                                  ("anchor", args.anchor)) if v is not None}
    fixed = None if instance or args.size else onnx_input_size(args.onnx, args.layout or "NCHW")
    from_hf = {k: v for k, v in (hf.input if hf is not None else {}).items()
               if k not in given_input and not (k == "size" and fixed is not None)}  # a fixed size wins
    if hf is not None and not instance and (hf_names or from_hf):
        logging.getLogger("edgeseg.import").warning(
            "%s: from %s: %s", args.onnx, " and ".join(Path(f).name for f in hf.files),
            ", ".join(([f"{len(hf_names)} class names"] if hf_names else []) +
                      [f"{k} {v}" for k, v in from_hf.items()]))
    spec, overrides = None, None
    if args.preprocess and not instance:
        raise InputError("--preprocess applies to --task instance", fix="give a semantic model's --mean/--std/--scale/--resize")
    if instance:  # the import recognises the exporter's conventions; what was given replaces them
        overrides = {**mmd, **norm, **explicit, **({"size": ImageShape.parse(args.size)} if args.size else {}),
                     **({"layout": args.layout} if args.layout else {}),
                     **({"color": args.color} if args.color else {})}
    else:
        norm.update({k: v for k, v in from_hf.items() if k in ("mean", "std")})
        explicit.update({k: v for k, v in from_hf.items() if k == "scale"})
        norm.update({k: v for k, v in mmd.items() if k in ("mean", "std")})  # MMDeploy's SDK pipeline, where given
        explicit.update({k: v for k, v in mmd.items() if k in ("scale", "resize", "pad_value", "anchor")})
        args.color = args.color or mmd.get("color")
        if ultra is not None:  # each option given replaces its own field of Ultralytics' conventions
            applied = {k: v for k, v in ultra["input"].items()
                       if k not in norm and k not in explicit and not (k == "color" and args.color)}
            norm.update({k: v for k, v in applied.items() if k in ("mean", "std")})
            explicit.update({k: v for k, v in applied.items() if k in ("scale", "resize", "pad_value", "anchor")})
            args.color = args.color or applied.get("color")
            found = ([f"{len(classes)} class names"] if ultra["names"] and classes == ultra["names"] else []) + \
                ([f"size {ultra['size']}"] if ultra["size"] and not args.size and fixed is None else [])
            logging.getLogger("edgeseg.import").warning("%s: an Ultralytics semantic model: %s", args.onnx, ", ".join(
                found + [f"{k} {v}" for k, v in applied.items()]))
        size = (ImageShape.parse(args.size) if args.size else fixed or from_hf.get("size")
                or (ultra["size"] if ultra is not None else None) or mmd.get("size"))
        if size is None:
            raise InputError(f"{args.onnx}: the model's input size is dynamic", fix="pass --size WxH")
        rule = {k: mmd[k] for k in ("size_rule", "multiple") if k in mmd and size == mmd.get("size")}
        spec = InputSpec(layout=args.layout or "NCHW", color=args.color or "RGB", size=size, **rule, **norm, **explicit)
    out = Path(args.out)
    check_target(args.out, "--out", overwrite=args.overwrite)
    try:
        bundle = import_onnx(args.onnx, out, task=args.task, classes=classes, input_spec=spec, palette=palette,
                             name=args.name or removesuffix(out.name, ".edgeseg"), overwrite=args.overwrite,
                             input_overrides=overrides, preprocess=args.preprocess,
                             things=[t.strip() for t in args.things.split(",") if t.strip()] if args.things else None,
                             offset_order=args.offset_order, offset_scale=args.offset_scale,
                             panoptic_options={k: v for k, v in (("center_threshold", args.center_threshold),
                                                                 ("nms_kernel", args.nms_kernel), ("top_k", args.top_k),
                                                                 ("stuff_area", args.stuff_area)) if v is not None},
                             query_options=query_options or None,
                             hf_config=hf if instance else None)
    except EdgesegError as e:
        if "class" not in str(e).lower():
            raise  # (a failure that is not about the classes: their source would mislead)
        if nv_names is not None and classes is nv_names:
            src = (side or nvinfer).files[0]  # the names were not the user's: say where they came from
        elif hf is not None and hf_names is not None and classes is hf_names and hf.files:
            src = next((f for f in hf.files if f.endswith("config.json") and "preprocessor" not in f), hf.files[0])
        else:
            raise
        raise type(e)(f"{e.args[0].splitlines()[0]} (the {len(classes)} class names came from {src})",
                      fix=f"{e.fix + '; or ' if e.fix else ''}give the model's own names with --names") from None
    m = bundle.manifest
    if m.input.dtype == "uint8" and given_norm:
        logging.getLogger("edgeseg.import").warning(
            "%s: the model takes uint8 pixels, so --%s %s ignored: edgeseg feeds raw 0-255 pixels and the model "
            "normalises them itself", args.onnx, " and --".join(sorted(given_norm)),
            "are" if len(given_norm) > 1 else "is")
    outs = ", ".join(f"{o.kind} {list(o.shape)}" for o in m.outputs)
    print(f"wrote {bundle.source}: {m.task}, {m.num_classes} classes, input {m.input.layout} {m.input.color} {m.input.dtype} "
          f"{f'{m.input.size} ({m.input.resize})' if m.input.size else 'any size (frames fed as they are)'}, outputs {outs}, "
          f"opset {m.models[0].opset}")
    write_json(args.json, {"bundle": str(bundle.root), "manifest": m.to_dict(), "import": bundle.report.get("import")})
    return 0
