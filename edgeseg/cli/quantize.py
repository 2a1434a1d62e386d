"""edgeseg quantize: INT8 post-training quantization of a bundle for a target runtime."""
from __future__ import annotations

import argparse

NAME = "quantize"
HELP = "compress a bundle to INT8 (Q/DQ ONNX per target), gated by the task metric"
EXAMPLES = (
    "edgeseg quantize road.edgeseg --calib camvid --target tensorrt",
    "edgeseg quantize road.edgeseg --calib camvid --target cpu --eval camvid:../shared/data/camvid --split val --max-drop 1.0",
    "edgeseg quantize road.edgeseg --calib ../shared/data/video/dashcam_960x540.mp4 --frames 100 --method percentile --target tensorrt",
    "edgeseg quantize road.edgeseg --calib synthetic:64 --target cpu --sensitivity --json int8.json",
    "edgeseg quantize big.edgeseg --calib camvid --target cpu --eval camvid:../shared/data/camvid --max-drop 0.5 --ranking error",
    "edgeseg quantize road.edgeseg --calib camvid --target openvino --eval camvid:../shared/data/camvid",
    "edgeseg quantize road.edgeseg --calib street --target openvino --keep-float node_conv2d,node_conv2d_1 "
    "--eval cityscapes-camvid:../shared/data/cityscapes_panoptic --split val --max-drop 0.5",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_json_option

    p.add_argument("bundle", help="bundle directory (or .zip / shipped name)")
    p.add_argument("--calib", required=True, metavar="RECIPE_OR_SOURCE",
                   help="calibration/*.toml recipe, a recipe name (camvid, dashcam, street, synthetic), an image folder, a video, or a dataset spec")
    p.add_argument("--target", default="tensorrt", help="tensorrt | cpu | openvino (default tensorrt)")
    p.add_argument("--method", default=None, choices=["entropy", "percentile", "minmax", "mse"], help="range algorithm (default: the recipe's)")
    p.add_argument("--engine", default=None, choices=["ort", "nncf"],
                   help="who places Q/DQ: ort (edgeseg's ranges + ONNX Runtime's quantizer) or nncf (OpenVINO's NNCF; "
                        "default for --target openvino when installed)")
    p.add_argument("--frames", type=int, default=None, help="number of calibration frames (default: the recipe's)")
    p.add_argument("--eval", default=None, metavar="DATASET", help="labelled set for the task metric, e.g. camvid:ROOT")
    p.add_argument("--split", default="val", help="split of --eval (default val)")
    p.add_argument("--max-drop", type=float, default=None, metavar="D",
                   help="keep the most sensitive layers in float until the metric is within D of FP32; exit 2 if impossible")
    p.add_argument("--sensitivity", action="store_true", help="rank layers by INT8 sensitivity and plot metric vs float layers")
    p.add_argument("--ranking", default="auto", choices=["auto", "task", "error"],
                   help="how --sensitivity and --max-drop rank layers: task (the metric with each layer alone in float: "
                        "one quantization and scoring per layer), error (the quantization noise each layer adds: two "
                        "inference passes), auto (task up to 24 layers, else error; default)")
    p.add_argument("--keep-float", default="", metavar="NAME[,NAME...]",
                   help="layers kept in float in every model tried, before --max-drop searches (node names as the "
                        "sensitivity table and the report's float_nodes print them)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads for scoring and latency (0: default)")
    p.add_argument("--no-latency-guard", action="store_true",
                   help="cpu target: do not time layers to leave those INT8 makes slower in float")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    from ..quant import quantize_bundle
    from ._common import print_table, write_json

    eval_ds = None
    if args.eval:
        from ..data import open_dataset

        eval_ds = open_dataset(args.eval, split=args.split)
    from ..errors import QuantizationError

    try:
        r = quantize_bundle(args.bundle, args.calib, target=args.target, method=args.method, eval_dataset=eval_ds,
                            max_drop=args.max_drop, sensitivity=args.sensitivity, frames=args.frames,
                            threads=args.threads, progress=not args.no_progress, engine=args.engine,
                            latency_guard=not args.no_latency_guard, ranking=args.ranking,
                            eval_spec=args.eval, eval_split=args.split if args.eval else None,
                            keep_float=args.keep_float.split(","))
    except QuantizationError as e:
        failed = getattr(e, "report", None)
        if failed is not None:  # a missed --max-drop: its best numbers still go to --json
            write_json(args.json, failed.to_dict())
        raise
    if r.sensitivity:
        task = r.sensitivity[0].measure == "task metric"
        print(f"per-layer sensitivity ({f'{r.metric} gained with the layer alone in float' if task else r.sensitivity[0].measure}):")
        print_table([{"rank": i + 1, "layer": s.name, "op": s.op_type, "score": s.score, "gain": s.gain}
                     for i, s in enumerate(r.sensitivity)])
    rows = [{"": "fp32", r.metric or "metric": r.fp32_score, "latency ms": r.latency_ms.get("fp32"), "MB": r.size_bytes["fp32"] / 1e6},
            {"": f"int8/{r.target}", r.metric or "metric": r.int8_score, "latency ms": r.latency_ms.get("int8"), "MB": r.size_bytes["int8"] / 1e6}]
    print_table(rows)
    g = r.gate_data
    if "dataset" in g:
        print(f"gate: {r.metric} on {g['dataset']}" + (f" ({g['split']})" if g.get("split") else "")
              + (f", {g['samples']} samples" if "samples" in g else ""))
    elif "agreement_frames" in g:
        print(f"gate: agreement with FP32 on {g['agreement_frames']} held-out calibration frames")
    if r.speedup:
        runtime = "OpenVINO CPU" if r.latency_ms.get("runtime") == "openvino-cpu" else "ONNX Runtime CPU"
        print(f"speed-up {r.speedup:.2f}x ({runtime})")
        if r.speedup < 1 and r.target == "tensorrt":
            print("note: a tensorrt model's speed is TensorRT's on the GPU; this CPU timing of its Q/DQ graph says "
                  "nothing of it")
        elif r.speedup < 1:
            print(f"note: INT8 ran slower than FP32 on this CPU ({r.speedup:.2f}x): the model is kept (other CPUs, "
                  "with VNNI or AMX, may run it faster), and edgeseg run / edgeseg.load time both here and take the "
                  "faster, FP32 on this one")
    if r.execution:
        print(f"OpenVINO runs {r.execution['int8_layers']} compute layers in INT8 (others: {r.execution['other_layers']})")
    if r.layer_latency.get("decision"):
        print(f"per-layer latency: {r.layer_latency['decision']}")
    by_reason: dict[str, list] = {}
    for f in r.float_nodes:
        by_reason.setdefault(f.reason, []).append(f)
    for reason, nodes in by_reason.items():  # one line per reason when many share it (a graph's post-processing)
        if len(nodes) > 3:
            print(f"float: {len(nodes)} nodes ({', '.join(sorted({f.op_type for f in nodes}))}): {reason} "
                  "(names: --json, float_nodes)")
        else:
            for f in nodes:
                print(f"float: {f.name} ({f.op_type}): {f.reason}")
    print(f"wrote {', '.join(r.files)} to {args.bundle}")
    write_json(args.json, r.to_dict())
    return 0
