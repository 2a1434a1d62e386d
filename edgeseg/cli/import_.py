"""``edgeseg import``: an ONNX model made elsewhere -> a bundle that honours its conventions."""
from __future__ import annotations

import argparse
import logging

from ._common import add_json_option, write_json

NAME = "import"
HELP = "turn an ONNX segmentation model made elsewhere (opset >= 9) into a bundle"
EXAMPLES = (
    "edgeseg import seg.onnx --classes 21 --size 512x512 --out voc.edgeseg",
    "edgeseg import tf_deeplab.onnx --classes labels.txt --layout NHWC --color BGR "
    "--mean 103.94,116.78,123.68 --std 1,1,1 --scale 1 --size 513x513 --out tf.edgeseg",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", metavar="MODEL.onnx", help="the ONNX file")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--task", default="semantic", choices=["semantic"], help="what the model does (default semantic)")
    p.add_argument("--classes", required=True, help="number of classes, 'camvid', or a file with one name per line")
    p.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"], help="input layout (default NCHW)")
    p.add_argument("--color", default="RGB", choices=["RGB", "BGR"], help="channel order the model expects (default RGB)")
    p.add_argument("--mean", default=None,
                   help="per-channel mean, in --color order, in the units of pixel*scale (default ImageNet 0.485,0.456,0.406)")
    p.add_argument("--std", default=None, help="per-channel std (default ImageNet 0.229,0.224,0.225)")
    p.add_argument("--scale", type=float, default=1.0 / 255.0,
                   help="pixel multiplier before mean/std: input = (pixel*scale - mean)/std (default 1/255; "
                        "pass 1 with a mean/std in 0-255 units such as 103.94,116.78,123.68)")
    p.add_argument("--size", default=None, help="network input size WxH (default: the model's fixed size)")
    p.add_argument("--name", default=None, help="bundle name (default: from --out)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    add_json_option(p)


def _triple(text: str, what: str) -> tuple[float, float, float]:
    from ..errors import InputError

    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise InputError(f"--{what} needs three comma-separated numbers, got {text!r}", fix=f"e.g. --{what} 0.5,0.5,0.5")
    return vals  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..export.importer import import_onnx, onnx_input_size
    from ..structures import ImageShape, InputSpec
    from .export import read_classes

    classes, palette = (int(args.classes), None) if args.classes.isdigit() else read_classes(args.classes)
    size = ImageShape.parse(args.size) if args.size else onnx_input_size(args.onnx, args.layout)
    if size is None:
        raise InputError(f"{args.onnx}: the model's input size is dynamic", fix="pass --size WxH")
    norm = {k: _triple(v, k) for k, v in (("mean", args.mean), ("std", args.std)) if v is not None}
    spec = InputSpec(layout=args.layout, color=args.color, size=size, scale=args.scale, **norm)
    out = Path(args.out)
    bundle = import_onnx(args.onnx, out, task=args.task, classes=classes, input_spec=spec, palette=palette,
                         name=args.name or out.name.removesuffix(".edgeseg"), overwrite=args.overwrite)
    m = bundle.manifest
    if m.input.dtype == "uint8" and norm:
        logging.getLogger("edgeseg.import").warning(
            "%s: the model takes uint8 pixels, so --%s %s ignored: edgeseg feeds raw 0-255 pixels and the model "
            "normalises them itself", args.onnx, " and --".join(norm), "are" if len(norm) > 1 else "is")
    print(f"wrote {bundle.root}: input {m.input.layout} {m.input.color} {m.input.dtype} {m.input.size}, "
          f"output {m.outputs[0].kind} {list(m.outputs[0].shape)}, opset {m.models[0].opset}")
    write_json(args.json, {"bundle": str(bundle.root), "manifest": m.to_dict(), "import": bundle.report.get("import")})
    return 0
