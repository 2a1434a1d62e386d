"""edgeseg check: will a bundle deploy on a given runtime version (ops, Q/DQ, opset, shapes)?"""
from __future__ import annotations

import argparse

NAME = "check"
HELP = "check a bundle against a runtime: op support by version, Q/DQ conformance, opset, shapes"
EXAMPLES = (
    "edgeseg check road17.edgeseg --target tensorrt-8.5      # JetPack 5.1: a bundle exported with --opset 17",
    "edgeseg check road.edgeseg --target tensorrt-10.3 --precision int8 --json check.json",
    "edgeseg check road.edgeseg --target onnxruntime",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_json_option

    p.add_argument("bundle", help="bundle directory (or .zip / shipped name)")
    p.add_argument("--target", required=True, help="tensorrt-8.5 | tensorrt-10.3 | tensorrt-11 | tensorrt-X.Y | onnxruntime (or cpu) | openvino")
    p.add_argument("--precision", default="fp32", type=str.lower, choices=["fp32", "fp16", "int8"], help="which model of the bundle (default fp32)")
    p.add_argument("--model-target", default=None, help="which INT8 model when the bundle has several (tensorrt, cpu, openvino)")
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    from ..quant.check import check_bundle
    from ._common import check_output, write_json

    if args.json:
        check_output(args.json, "--json")
    report = check_bundle(args.bundle, args.target, args.precision, args.model_target)
    print(report.format())
    write_json(args.json, report.to_dict())
    return 0 if report.ok else 1
