"""``edgeseg deepstream BUNDLE --out DIR``: a semantic bundle as DeepStream's nvinfer takes it."""
from __future__ import annotations

import argparse

NAME = "deepstream"
HELP = "write a semantic bundle for DeepStream's nvinfer: model.onnx (normalisation baked in), labels, config file"
EXAMPLES = (
    "edgeseg deepstream road --out ds_road/                  # FP32; nvinfer builds its engine at first run",
    "edgeseg deepstream road --out ds_road_fp16/ --precision fp16",
    "edgeseg deepstream road17.edgeseg --out ds_jp5/ --precision int8 --trt-version 8.5.2   # JetPack 5.1: a bundle "
    "exported with --opset 17, then edgeseg quantize ... --target tensorrt",
    "deepstream-app ... [primary-gie] config-file=ds_road/config_infer_primary_road.txt",
    "# YAML pipelines (Service Maker, deepstream-app -c app.yml): config-file-path: ds_road/config_infer_primary_road.yml",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a semantic bundle (directory, .zip or shipped name)")
    p.add_argument("--out", required=True, help="folder to write model.onnx, labels.txt and config_infer_primary_*.txt (and its .yml form)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="nvinfer's network-mode (int8: the bundle's TensorRT calibration cache, from edgeseg quantize "
                        "--target tensorrt)")
    p.add_argument("--trt-version", default=None,
                   help="TensorRT version that builds the engine (default 10.3: JetPack 6, DeepStream 7.1; 8.5.2: "
                        "JetPack 5.1, DeepStream 6.2; 8.6: DeepStream 6.3-7.0): the model's opset is checked against "
                        "its parser, and with --precision int8 the calibration cache is the one written for it "
                        "(TensorRT skips a cache written for another version)")
    p.add_argument("--overwrite", action="store_true", help="replace the files in an existing --out folder")


def run(args: argparse.Namespace) -> int:
    from ..bundle import Bundle
    from ..quant.deepstream import write_deepstream

    config = write_deepstream(Bundle.open(args.bundle), args.out, precision=args.precision,
                              trt_version=args.trt_version or "10.3", overwrite=args.overwrite)
    print(f"wrote {config} (with model.onnx, labels.txt and the same in YAML, {config.with_suffix('.yml').name}, "
          f"beside it): in a deepstream-app configuration, [primary-gie] config-file={config.resolve()}")
    return 0
