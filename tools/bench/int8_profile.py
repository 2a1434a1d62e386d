"""Where INT8 is slower than float, per layer: FP32 vs INT8 profiles on ONNX Runtime or OpenVINO.

    python tools/bench/int8_profile.py BUNDLE --target cpu --backend onnxruntime --threads 1 --json p.json
    python tools/bench/int8_profile.py --fp32 model.onnx --int8 model.int8.cpu.onnx --int8 other.onnx \
        --backend openvino --frames camvid:../shared/data/camvid --json p.json
    python tools/bench/int8_profile.py --make-espnet /tmp/espnet.edgeseg --calib synthetic:8 --frames synthetic:4

Per-layer times come from the runtime's own profiler:

* ONNX Runtime: ``SessionOptions.enable_profiling``; the JSON trace's ``Node`` events
  (``<node>_kernel_time``, ``args.op_name``, ``args.provider``), median over the timed runs;
* OpenVINO: ``compile_model(..., {"PERF_COUNT": True})`` and ``InferRequest.profiling_info``
  (node name, node type, exec type such as ``jit_avx2_I8`` / ``jit_avx2_FP32``, real time), median over
  the timed runs of the executed nodes.

Kernels are grouped into op families (``QLinearConv`` and ``FusedConv`` count as ``Conv``;
Quantize/DequantizeLinear, OpenVINO's FakeQuantize and Convert as ``Q/DQ``; layout Reorder /
Transpose / ReorderInput as ``layout``), and the table shows each family's FP32 and INT8 time, then
the layers INT8 makes slower (matched by node name) and the conversions INT8 adds. The models take
turns (``--rounds``) so a shared machine's load touches them alike; end-to-end wall time is measured
without the profiler, the models alternating run by run (median and minimum). ``--frames``: argmax
agreement of each INT8 model with FP32 on those frames.

``--make-espnet OUT``: the user's case of issue 10, an ESPNet (ESPNet-C encoder p=2 q=8 with
ESPNet's decoder: 20 PReLU, dilated ESP blocks, 3 ConvTranspose, 11 classes, 480x360), random
weights, exported as a bundle and quantized for ``--target`` through ``edgeseg.quant.quantize_bundle``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from edgeseg.structures import InputSpec

from edgeseg._timing import time_runs

#: runtime kernel / node type -> op family (anything else is its own family)
FAMILIES = {
    "QLinearConv": "Conv", "FusedConv": "Conv", "NchwcConv": "Conv", "Convolution": "Conv", "GroupConvolution": "Conv",
    "ConvTranspose": "ConvTranspose", "Deconvolution": "ConvTranspose", "ConvolutionBackpropData": "ConvTranspose",
    "AvgPool": "AveragePool",
    "QLinearAdd": "Add", "QLinearMul": "Mul", "QLinearConcat": "Concat", "Concatenation": "Concat",
    "QLinearLeakyRelu": "LeakyRelu", "QLinearSigmoid": "Sigmoid", "QLinearAveragePool": "AveragePool",
    "QLinearGlobalAveragePool": "GlobalAveragePool", "NchwcAveragePool": "AveragePool",
    "NchwcMaxPool": "MaxPool", "NchwcUpsample": "Resize", "Interpolate": "Resize",
    "QuantizeLinear": "Q/DQ", "DequantizeLinear": "Q/DQ", "FakeQuantize": "Q/DQ", "Convert": "Q/DQ",
    "Transpose": "layout", "ReorderInput": "layout", "ReorderOutput": "layout", "Reorder": "layout",
}
#: families that only convert between precisions or layouts: the price of mixing INT8 and float
OVERHEAD = ("Q/DQ", "layout")


@dataclass(frozen=True)
class LayerTime:
    """One executed kernel: ``name`` as the runtime reports it, its kernel/node type, how it ran
    (ORT: the execution provider; OpenVINO: the exec type, e.g. ``jit_avx2_I8``) and its median time."""

    name: str
    op_type: str
    exec_type: str
    ms: float

    @property
    def family(self) -> str:
        return FAMILIES.get(self.op_type, self.op_type)


@dataclass(frozen=True)
class ModelProfile:
    """Per-layer times and end-to-end latency of one model on one backend."""

    label: str
    path: str
    layers: tuple[LayerTime, ...]
    wall_ms: float
    argmax_agreement: float | None = None  # fraction of pixels agreeing with FP32 (INT8 models)
    wall_min_ms: float | None = None  # fastest single run (wall_ms is the median)

    def by_family(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.layers:
            out[t.family] = out.get(t.family, 0.0) + t.ms
        return out

    def exec_types(self, family: str) -> list[str]:
        return sorted({t.exec_type for t in self.layers if t.family == family and t.exec_type})

    def to_dict(self) -> dict:
        return {"label": self.label, "path": self.path, "wall_ms": round(self.wall_ms, 3),
                "wall_min_ms": None if self.wall_min_ms is None else round(self.wall_min_ms, 3),
                "profiled_ms": round(sum(t.ms for t in self.layers), 3), "argmax_agreement": self.argmax_agreement,
                "families": {k: round(v, 4) for k, v in sorted(self.by_family().items())},
                "layers": [{**asdict(t), "ms": round(t.ms, 4), "family": t.family} for t in self.layers]}


# ---- ONNX Runtime -------------------------------------------------------------------------------
def parse_ort_trace(events: Sequence[Mapping]) -> list[LayerTime]:
    """Node kernel times of an ONNX Runtime profiling trace (the list ``end_profiling()``'s file holds):
    per node, the median ``dur`` (microseconds) of its ``<node>_kernel_time`` events (one per run), in
    ms. The median, not the mean: on a shared machine a few runs are slowed down by other processes."""
    durs: dict[str, list[float]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for ev in events:
        name = str(ev.get("name", ""))
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        args = ev.get("args", {})
        durs.setdefault(node, []).append(float(ev.get("dur", 0)))
        meta[node] = (str(args.get("op_name", "?")), str(args.get("provider", "")))
    return [LayerTime(n, meta[n][0], meta[n][1], float(np.median(us)) / 1000.0) for n, us in durs.items()]


class OrtProfiler:
    """Two sessions on one model: one with ONNX Runtime's profiler (per-layer), one without (wall time)."""

    def __init__(self, path: str | Path, threads: int, tmp: Path):
        import onnxruntime as ort

        from edgeseg._ort import _session_options

        so = _session_options(threads=threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp / Path(path).stem)
        self._prof = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self._plain = ort.InferenceSession(str(path), _session_options(threads=threads), providers=["CPUExecutionProvider"])
        self._warm = False

    def warmup(self, feed: Mapping[str, np.ndarray], n: int = 2) -> None:
        for _ in range(n):
            self._prof.run(None, dict(feed))
        self._warm = True

    def profile(self, feed: Mapping[str, np.ndarray], runs: int) -> None:
        for _ in range(runs):
            self._prof.run(None, dict(feed))

    def once(self, feed: Mapping[str, np.ndarray]) -> float:
        return time_runs(lambda: self._plain.run(None, dict(feed)), 1, warmup=0).p50_ms

    def run(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._plain.run(None, dict(feed))[0]

    def layers(self, warmup_runs: int) -> list[LayerTime]:
        events = json.loads(Path(self._prof.end_profiling()).read_text())
        # the warm-up runs are in the trace too: drop each node's first ``warmup_runs`` events
        seen: dict[str, int] = {}
        kept = []
        for ev in events:
            if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
                seen[ev["name"]] = seen.get(ev["name"], 0) + 1
                if seen[ev["name"]] <= warmup_runs:
                    continue
            kept.append(ev)
        return parse_ort_trace(kept)


# ---- OpenVINO -----------------------------------------------------------------------------------
def parse_openvino_counters(runs_counters: Sequence[Sequence]) -> list[LayerTime]:
    """Median per-node ``real_time`` (ms) of executed nodes over runs of ``InferRequest.profiling_info``
    (``openvino.ProfilingInfo``: node_name, node_type, exec_type, real_time timedelta, status)."""
    times: dict[str, list[float]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for counters in runs_counters:
        for c in counters:
            if str(c.status).split(".")[-1] != "EXECUTED":
                continue
            times.setdefault(c.node_name, []).append(c.real_time.total_seconds() * 1000.0)
            meta[c.node_name] = (str(c.node_type), str(c.exec_type))
    return [LayerTime(k, meta[k][0], meta[k][1], float(np.median(v))) for k, v in times.items()]


class OpenVinoProfiler:
    """One OpenVINO CPU compile with ``PERF_COUNT`` (per-layer) and one without (wall time), with the
    compile settings every edgeseg OpenVINO path uses (``f32`` for float layers)."""

    def __init__(self, path: str | Path, threads: int, tmp: Path, precision: str = "fp32"):
        from edgeseg.quant.openvino import compile_cpu

        self._prof = compile_cpu(str(path), threads, precision, perf_count=True).create_infer_request()
        self._plain = compile_cpu(str(path), threads, precision).create_infer_request()
        self._counters: list = []

    def warmup(self, feed: Mapping[str, np.ndarray], n: int = 2) -> None:
        for _ in range(n):
            self._prof.infer(dict(feed))

    def profile(self, feed: Mapping[str, np.ndarray], runs: int) -> None:
        for _ in range(runs):
            self._prof.infer(dict(feed))
            self._counters.append(list(self._prof.profiling_info))

    def once(self, feed: Mapping[str, np.ndarray]) -> float:
        return time_runs(lambda: self._plain.infer(dict(feed)), 1, warmup=0).p50_ms

    def run(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._plain.infer(dict(feed))[0])

    def layers(self, warmup_runs: int) -> list[LayerTime]:
        return parse_openvino_counters(self._counters)


PROFILERS = {"onnxruntime": OrtProfiler, "openvino": OpenVinoProfiler}


def profile_models(models: Sequence[tuple[str, str]], backend: str, feed: Mapping[str, np.ndarray], *,
                   threads: int = 1, runs: int = 10, rounds: int = 3,
                   frames: Sequence[Mapping[str, np.ndarray]] = ()) -> list[ModelProfile]:
    """Profile ``models`` (label, path; the first is the FP32 reference) on ``backend``: ``runs``
    profiled runs per model per round, the models taking turns; then the wall time without the
    profiler, the models taking turns run by run (``rounds * runs`` each; median). Argmax agreement
    of every later model with the first on ``frames``."""
    with tempfile.TemporaryDirectory(prefix="edgeseg-prof-") as tmp:
        profs = []
        for label, path in models:
            kw = {"precision": "fp32" if not profs else "int8"} if backend == "openvino" else {}
            profs.append(PROFILERS[backend](path, threads, Path(tmp), **kw))
        for p in profs:
            p.warmup(feed)
            p.once(feed)
        for _ in range(rounds):
            for p in profs:
                p.profile(feed, runs)
        walls: list[list[float]] = [[] for _ in profs]
        for _ in range(rounds * runs):
            for i, p in enumerate(profs):
                walls[i].append(p.once(feed))
        refs = [profs[0].run(f) for f in frames]
        out = []
        for i, ((label, path), p) in enumerate(zip(models, profs)):
            agree = None
            if i and refs:
                got = [p.run(f) for f in frames]
                agree = float(np.mean([(g.argmax(1) == r.argmax(1)).mean() for g, r in zip(got, refs)]))
            out.append(ModelProfile(label, str(path), tuple(sorted(p.layers(2), key=lambda t: -t.ms)),
                                    float(np.median(walls[i])), agree, float(np.min(walls[i]))))
        return out


# ---- comparison ---------------------------------------------------------------------------------
def _base_name(name: str) -> str:
    """The source node's name in a runtime's name for it (ORT adds ``_quant``/``_token_N``; fused
    OpenVINO nodes keep the first node's name)."""
    for suffix in ("_quant", "_nchwc"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.split("_token_")[0]


def slower_layers(fp32: ModelProfile, int8: ModelProfile, top: int = 15) -> list[dict]:
    """Layers (matched by node name) whose INT8 kernel takes longer than their FP32 kernel, plus
    every INT8-only conversion (Q/DQ, layout) over 0.01 ms, most time lost first."""
    ref: dict[str, LayerTime] = {}
    for t in fp32.layers:
        ref.setdefault(_base_name(t.name), t)
    rows = []
    for t in int8.layers:
        f = ref.get(_base_name(t.name))
        if t.family in OVERHEAD and (f is None or f.family not in OVERHEAD):
            if t.ms > 0.01:
                rows.append({"layer": t.name, "op": t.op_type, "exec": t.exec_type, "fp32_ms": 0.0, "int8_ms": t.ms,
                             "extra_ms": t.ms, "why": "conversion INT8 adds"})
        elif f is not None and t.ms > f.ms:
            rows.append({"layer": t.name, "op": t.op_type, "exec": t.exec_type, "fp32_ms": f.ms, "int8_ms": t.ms,
                         "extra_ms": t.ms - f.ms, "why": f"{f.op_type} ({f.exec_type}) slower in INT8"})
    return sorted(rows, key=lambda r: -r["extra_ms"])[:top]


def family_table(profiles: Sequence[ModelProfile]) -> list[dict]:
    fams = {f for p in profiles for f in p.by_family()}
    sums = [p.by_family() for p in profiles]
    rows = [{"family": f, **{p.label: s.get(f, 0.0) for p, s in zip(profiles, sums)},
             "exec": {p.label: p.exec_types(f) for p in profiles}} for f in fams]
    return sorted(rows, key=lambda r: -max(r[p.label] for p in profiles))


def format_report(backend: str, profiles: Sequence[ModelProfile]) -> str:
    labels = [p.label for p in profiles]
    lines = [f"backend {backend}: per op family, ms (profiler's kernel time; median per inference)",
             f"{'op family':22s}" + "".join(f"{lb:>14s}" for lb in labels) + "   exec types (last model)"]
    for r in family_table(profiles):
        execs = ",".join(r["exec"][labels[-1]])[:60]
        lines.append(f"{r['family']:22s}" + "".join(f"{r[lb]:14.3f}" for lb in labels) + "   " + execs)
    lines.append(f"{'sum of layers':22s}" + "".join(f"{sum(t.ms for t in p.layers):14.3f}" for p in profiles))
    lines.append(f"{'wall median (no prof.)':22s}" + "".join(f"{p.wall_ms:14.3f}" for p in profiles))
    if all(p.wall_min_ms is not None for p in profiles):
        lines.append(f"{'wall min':22s}" + "".join(f"{p.wall_min_ms:14.3f}" for p in profiles))
    lines.append(f"{'speed-up vs ' + labels[0]:22s}" + "".join(f"{profiles[0].wall_ms / p.wall_ms:14.2f}" for p in profiles))
    if any(p.argmax_agreement is not None for p in profiles):
        lines.append(f"{'argmax agreement %':22s}" + "".join(
            f"{100 * p.argmax_agreement:14.2f}" if p.argmax_agreement is not None else f"{'-':>14s}" for p in profiles))
    for p in profiles[1:]:
        lines.append(f"\n{p.label}: where INT8 costs more than {labels[0]} (ms)")
        for r in slower_layers(profiles[0], p):
            lines.append(f"  {r['layer'][:48]:48s} {r['op'][:18]:18s} {r['exec'][:22]:22s} "
                         f"{r['fp32_ms']:7.3f} -> {r['int8_ms']:7.3f}  +{r['extra_ms']:.3f}  {r['why']}")
    return "\n".join(lines)


# ---- the ESPNet-like model (issue 10's case) -----------------------------------------------------
def build_espnet(classes: int = 11, p: int = 2, q: int = 8, seed: int = 0):
    """ESPNet (Mehta et al., ECCV 2018, "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions"):
    ESPNet-C encoder (CBR = Conv-BN-PReLU, ESP blocks with dilations 1..16 and hierarchical
    feature fusion, input reinforcement) and ESPNet's decoder (ConvTranspose x3). p=2, q=8: 20
    per-channel PReLU. Random weights with BN statistics and PReLU slopes drawn so activations stay
    in range (timing and FP32-vs-INT8 parity only)."""
    import torch
    from torch import nn

    def cbr(i, o, k, s=1, d=1, act=True):
        layers = [nn.Conv2d(i, o, k, s, padding=(k - 1) // 2 * d, dilation=d, bias=False), nn.BatchNorm2d(o, eps=1e-3)]
        return nn.Sequential(*layers, nn.PReLU(o)) if act else nn.Sequential(*layers)

    def br(o):
        return nn.Sequential(nn.BatchNorm2d(o, eps=1e-3), nn.PReLU(o))

    class ESP(nn.Module):
        def __init__(self, i, o, down=False, add=True):
            super().__init__()
            n = o // 5
            self.c1 = nn.Conv2d(i, n, 3 if down else 1, 2 if down else 1, 1 if down else 0, bias=False)
            self.d = nn.ModuleList([nn.Conv2d(n, o - 4 * n if d == 1 else n, 3, 1, d, dilation=d, bias=False)
                                    for d in (1, 2, 4, 8, 16)])
            self.add = add and not down and i == o
            self.br = br(o)

        def forward(self, x):
            y = self.c1(x)
            outs = [conv(y) for conv in self.d]
            for k in range(2, 5):
                outs[k] = outs[k] + outs[k - 1]
            y = torch.cat(outs, 1)
            return self.br(x + y if self.add else y)

    class ESPNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.level1 = cbr(3, 16, 3, 2)
            self.pool = nn.AvgPool2d(3, 2, 1)
            self.b1 = br(19)
            self.level2_0 = ESP(19, 64, down=True)
            self.level2 = nn.Sequential(*[ESP(64, 64) for _ in range(p)])
            self.b2 = br(131)
            self.level3_0 = ESP(131, 128, down=True)
            self.level3 = nn.Sequential(*[ESP(128, 128) for _ in range(q)])
            self.b3 = br(256)
            self.classifier_l3 = nn.Conv2d(256, classes, 1, bias=False)
            self.br_l3 = nn.BatchNorm2d(classes, eps=1e-3)
            self.up_l3 = nn.ConvTranspose2d(classes, classes, 2, 2, bias=False)
            self.level3_c = nn.Conv2d(131, classes, 1, bias=False)
            self.combine = nn.Sequential(br(2 * classes), ESP(2 * classes, classes, add=False))
            self.up_l2 = nn.Sequential(nn.ConvTranspose2d(classes, classes, 2, 2, bias=False), br(classes))
            self.conv = cbr(19 + classes, classes, 3)
            self.classifier = nn.ConvTranspose2d(classes, classes, 2, 2, bias=False)

        def forward(self, x):
            x1 = self.pool(x)
            x2 = self.pool(x1)
            o0 = self.b1(torch.cat([self.level1(x), x1], 1))
            o1_0 = self.level2_0(o0)
            o1 = self.b2(torch.cat([self.level2(o1_0), o1_0, x2], 1))
            o2_0 = self.level3_0(o1)
            o2 = self.b3(torch.cat([o2_0, self.level3(o2_0)], 1))
            up3 = self.up_l3(self.br_l3(self.classifier_l3(o2)))
            up2 = self.up_l2(self.combine(torch.cat([self.level3_c(o1), up3], 1)))
            return {"logits": self.classifier(self.conv(torch.cat([up2, o0], 1)))}  # edgeseg's model contract

    torch.manual_seed(seed)
    net = ESPNet()
    net.num_classes = classes
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            elif isinstance(m, nn.PReLU):  # trained PReLU slopes spread around the 0.25 init, some negative
                m.weight.copy_(-0.1 + 0.7 * torch.rand(m.num_parameters, generator=g))
    return net.eval()


def make_espnet_bundle(out: Path, calib: str, frames: int, target: str, threads: int, latency_guard: bool) -> Path:
    from edgeseg.export import export_bundle
    from edgeseg.quant import quantize_bundle
    from edgeseg.structures import CAMVID_CLASSES, ImageShape, InputSpec

    net = build_espnet(classes=len(CAMVID_CLASSES))
    spec = InputSpec(size=ImageShape(360, 480))
    export_bundle(net, out, name="espnet_like", classes=CAMVID_CLASSES, input_spec=spec, overwrite=True,
                  include_checkpoint=False)
    quantize_bundle(out, calib, target=target, method="minmax", frames=frames, threads=threads, latency=False,
                    latency_guard=latency_guard, progress=False)
    return out


# ---- CLI ------------------------------------------------------------------------------------------
def _feeds(bundle_spec, frames_arg: str | None, n: int) -> list[dict[str, np.ndarray]]:
    from edgeseg.quant.calibration import collect_frames, resolve_calibration

    if not frames_arg:
        return []
    recipe = resolve_calibration(frames_arg, frames=n)
    return [{bundle_spec.name: bundle_spec.preprocess(f)[0]} for f in collect_frames(recipe, progress=False)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("bundle", nargs="?", help="a bundle: its FP32 model vs model.int8.<target>.onnx")
    ap.add_argument("--target", default="cpu", help="which INT8 model of the bundle (default cpu)")
    ap.add_argument("--fp32", help="FP32 ONNX (instead of a bundle)")
    ap.add_argument("--int8", action="append", default=[], help="INT8 ONNX, [LABEL=]PATH; repeat to compare several")
    ap.add_argument("--backend", choices=sorted(PROFILERS), action="append", help="default: onnxruntime (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10, help="profiled runs per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", help="frames for argmax agreement (recipe or source, e.g. synthetic:4)")
    ap.add_argument("--n-frames", type=int, default=4)
    ap.add_argument("--make-espnet", type=Path, metavar="OUT", help="make the ESPNet-like bundle first, then profile it")
    ap.add_argument("--calib", default="synthetic:8", help="calibration for --make-espnet")
    ap.add_argument("--calib-frames", type=int, default=8)
    ap.add_argument("--latency-guard", action="store_true", help="--make-espnet: run the cpu target's per-layer guard")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    if args.make_espnet:
        args.bundle = str(make_espnet_bundle(args.make_espnet, args.calib, args.calib_frames, args.target, args.threads,
                                             args.latency_guard))
    if not args.bundle and not (args.fp32 and args.int8):
        ap.error("give a BUNDLE, --make-espnet OUT, or --fp32 and --int8")
    models, spec = _models(args)
    feeds = _feeds(spec, args.frames, args.n_frames)
    noise = np.random.default_rng(0).integers(0, 256, (spec.size.height, spec.size.width, 3), dtype=np.uint8)
    feed = feeds[0] if feeds else {spec.name: spec.preprocess(noise)[0]}
    report = {"machine": _cpu_name(), "threads": args.threads, "runs": args.runs, "rounds": args.rounds, "backends": {}}
    for backend in args.backend or ["onnxruntime"]:
        profiles = profile_models(models, backend, feed, threads=args.threads, runs=args.runs, rounds=args.rounds,
                                  frames=feeds)
        print(format_report(backend, profiles), end="\n\n")
        report["backends"][backend] = {"models": [p.to_dict() for p in profiles],
                                       "families": family_table(profiles),
                                       "slower_in_int8": {p.label: slower_layers(profiles[0], p, top=50) for p in profiles[1:]}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def _models(args) -> tuple[list[tuple[str, str]], "InputSpec"]:
    """(label, path) of the models to profile, FP32 first, and the input spec to feed them."""
    import onnx

    from edgeseg.bundle import Bundle
    from edgeseg.structures import ImageShape, InputSpec

    if args.bundle:
        b = Bundle.open(args.bundle)
        models = [("fp32", str(b.model_path("fp32"))), (f"int8.{args.target}", str(b.root / f"model.int8.{args.target}.onnx"))]
        spec = b.manifest.input
    else:
        models = [("fp32", args.fp32)]
        inp = onnx.load(args.fp32, load_external_data=False).graph.input[0]
        dims = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        spec = InputSpec(size=ImageShape(dims[2], dims[3]), name=inp.name)
    for item in args.int8:
        label, _, path = item.rpartition("=")
        models.append((label or Path(path).stem, path))
    return models, spec


def _cpu_name() -> str:
    from edgeseg.backends.device import device_info

    return device_info().describe()


if __name__ == "__main__":
    sys.exit(main())
