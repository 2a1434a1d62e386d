#!/usr/bin/env python
"""Streaming throughput: the full pipeline (GStreamer decode -> preprocess -> inference -> decode
[-> render -> MP4] [-> JSON lines]) next to the runner alone, same bundle, same run.

The runner-only figure is ``runner.infer`` on one preprocessed frame of the video, back to back; the
end-to-end figure is frames out of the last sink per second of wall time. Every stage's p50/p95/p99
is printed so the hot spot shows. Goals (issue 5): end-to-end >= 0.9x runner-only, end-to-end p99
<= 2x p50. The default bundle is ``shapes`` (shipped in edgeseg/zoo); ``--bundle handmade`` builds a
CPU-heavy hand-made bundle (six 3x3 convolutions at 272x480, 11 classes, random weights) so the
runner, not the host, is the slowest stage. Optionally ``--rss-frames N`` runs N frames of a test
pattern and reports RSS growth.

    python tools/bench/stream.py --json bench_stream.json
    python tools/bench/stream.py --bundle road.edgeseg --threads 2 --render --sink /tmp/out.mp4
    python tools/bench/stream.py --json-out /tmp/out.jsonl --upsample labels
    python tools/bench/stream.py --rss-frames 10000
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.paths import data_root  # noqa: E402

_DATA = data_root()
VIDEO = (_DATA / "video" / "dashcam_960x540.mp4") if _DATA is not None else Path("dashcam_960x540.mp4")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="shapes",
                   help="bundle path or shipped name (default: shapes); 'handmade' builds the CPU-heavy benchmark bundle")
    p.add_argument("--video", default=str(VIDEO), help="input video (default: the shared dash-cam clip)")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1, help="runner intra-op threads (default 1)")
    p.add_argument("--runner-runs", type=int, default=100, help="runner-only timed runs (default 100)")
    p.add_argument("--render", action="store_true", help="also draw the overlay (render stage)")
    p.add_argument("--sink", default=None, help="also encode an MP4 here (implies --render)")
    p.add_argument("--json-out", default=None, metavar="PATH", help="also write JSON lines (COCO RLE per class) here")
    p.add_argument("--upsample", default=None, choices=("logits", "labels"),
                   help="semantic decoder upsampling (default: the bundle's; logits = accurate, labels = fast)")
    p.add_argument("--repeat", type=int, default=1, help="stream the video this many times (default 1)")
    p.add_argument("--rss-frames", type=int, default=0, help="also run this many test-pattern frames and report RSS growth")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def bench_bundle(root: Path, height: int = 272, width: int = 480, classes: int = 11, width_ch: int = 32):
    """Conv3x3(s2)+ReLU, 4x Conv3x3+ReLU, Conv1x1 -> logits at 1/2 resolution: CPU-bound, no model family needed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.bundle import Bundle, Manifest, ModelFile, OutputSpec
    from edgeseg.structures import ImageShape, InputSpec

    rng = np.random.default_rng(0)
    nodes, inits, x, cin = [], [], "images", 3
    layers = [(width_ch, 3, 2)] + [(width_ch, 3, 1)] * 4 + [(classes, 1, 1)]
    for i, (cout, k, s) in enumerate(layers):
        w = (rng.normal(size=(cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        y = f"c{i}" if i < len(layers) - 1 else "logits"
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], kernel_shape=[k, k], strides=[s, s],
                                      pads=[k // 2] * 4))
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [y], [f"r{i}"]))
            y = f"r{i}"
        x, cin = y, cout
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, height // 2, width // 2])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx_path = root / "bench.onnx"
    onnx.save(model, str(onnx_path))
    spec = InputSpec(size=ImageShape(height, width))
    b = Bundle.create(root / "bench.edgeseg", Manifest(name="bench", task="semantic", classes=tuple(f"c{i}" for i in range(classes)),
                                                        input=spec, outputs=(OutputSpec("logits", "logits"),),
                                                        decoder={"upsample": "labels"}))
    b.add_model(ModelFile("model.onnx", "fp32", None, 19), onnx_path)
    return b


def runner_only(predictor, image: np.ndarray, runs: int) -> dict:
    from edgeseg._timing import time_runs

    feed, _ = predictor.preprocess(image)
    lat = time_runs(lambda: predictor.runner.infer(feed), runs, 3)
    return {"fps": 1e3 / lat.mean_ms, "p50_ms": lat.p50_ms, "p99_ms": lat.p99_ms}  # back to back: runs / their total time


def end_to_end(predictor, args) -> "Stats":
    from edgeseg.stream import GstSource, JsonLinesSink, Mp4Sink, Pipeline, Renderer, predictor_stages

    renderer = Renderer(predictor.manifest.palette_array, predictor.manifest.classes) if (args.render or args.sink) else None
    stats = None
    for _ in range(args.repeat):
        sinks = ([Mp4Sink(args.sink)] if args.sink else []) + ([JsonLinesSink(args.json_out)] if args.json_out else [])
        stats = Pipeline([GstSource(args.video), *predictor_stages(predictor, renderer, upsample=args.upsample), *sinks],
                         handle_signals=False, log_interval_s=0).run()
    return stats


def rss_growth(predictor, frames: int) -> dict:
    """RSS after the first 10% of frames vs at the end, on a test-pattern source."""
    import resource  # noqa: F401  (Linux only, like /proc)

    from edgeseg.stream import CallbackSink, GstSource, Pipeline, predictor_stages

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    marks: dict[str, float] = {}

    def watch(frame, result):
        if frame.index == frames // 10:
            marks["start"] = rss_mb()
    src = GstSource(f"test://ball?frames={frames}&width=320&height=240&fps=30")
    stats = Pipeline([src, *predictor_stages(predictor), CallbackSink(watch)], handle_signals=False, log_interval_s=0).run()
    end = rss_mb()
    return {"frames": stats.processed, "rss_start_mb": marks["start"], "rss_end_mb": end,
            "growth_pct": 100 * (end - marks["start"]) / marks["start"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2

    from edgeseg.predictor import load

    tmp = tempfile.TemporaryDirectory()
    bundle = bench_bundle(Path(tmp.name)).root if args.bundle == "handmade" else args.bundle
    cap = cv2.VideoCapture(args.video)
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        sys.exit(f"cannot read {args.video}")
    with load(bundle, backend=args.backend, precision=args.precision, threads=args.threads) as predictor:
        ro = runner_only(predictor, np.ascontiguousarray(bgr[..., ::-1]), args.runner_runs)
        st = end_to_end(predictor, args)
        rss = rss_growth(predictor, args.rss_frames) if args.rss_frames else None
    rows = [{"what": "runner only", "fps": ro["fps"], "p50_ms": ro["p50_ms"], "p95_ms": float("nan"), "p99_ms": ro["p99_ms"], "drops": 0}]
    for name, lat in sorted(st.stages.items(), key=lambda kv: -kv[1].p50_ms):  # the hot spot first
        rows.append({"what": f"stage {name}", "fps": float("nan"), "p50_ms": lat.p50_ms, "p95_ms": lat.p95_ms, "p99_ms": lat.p99_ms, "drops": ""})
    e = st.end_to_end
    rows.append({"what": "end to end", "fps": st.fps, "p50_ms": e.p50_ms, "p95_ms": e.p95_ms, "p99_ms": e.p99_ms, "drops": st.drops})
    print_table(rows)
    ratio, tail = st.fps / ro["fps"], e.p99_ms / e.p50_ms
    print(f"\nend-to-end / runner-only = {ratio:.2f} (goal >= 0.9); end-to-end p99 / p50 = {tail:.2f} (goal <= 2); "
          f"{st.processed} frames, drops {st.drops}, errors {st.errors}")
    if rss:
        print(f"RSS over {rss['frames']} frames: {rss['rss_start_mb']:.1f} -> {rss['rss_end_mb']:.1f} MB ({rss['growth_pct']:+.2f}%)")
    write_json(args.json, {"machine": platform.node(), "cpu": platform.processor(), "bundle": str(bundle),
                           "video": args.video, "threads": args.threads, "render": bool(args.render or args.sink),
                           "json_out": bool(args.json_out), "upsample": args.upsample, "precision": args.precision,
                           "runner_only": ro, "end_to_end": st.to_dict(), "ratio": ratio, "p99_over_p50": tail, "rss": rss})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
