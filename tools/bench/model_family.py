#!/usr/bin/env python
"""The model family table (docs/models.md): every architecture after a short CamVid training.

For each entry of :data:`FAMILY` (one light, real variant per architecture), in its own run folder,
each step a separate ``edgeseg`` command (so one model's failure never stops the others) and skipped
when its output already exists (re-run to resume):

1. ``edgeseg train`` on CamVid ``train`` (480x360, random 256x192 crops, batch 8, ``wce+0.5*lovasz``,
   SGD + poly; ``--export`` the FP32 bundle) for :func:`epochs_for` epochs: 2 up to 25 GFLOPs at
   480x360, none above (those rows have random weights: sizes and verdicts, with ``--heavy`` latency);
2. ``edgeseg quantize --target cpu`` calibrated on CamVid frames, gated by mIoU on ``val`` (before
   and after are in its JSON; without the gate for untrained rows);
3. ``edgeseg bench --all`` (ONNX Runtime FP32 / INT8 and OpenVINO, side by side, this machine);
4. ``edgeseg check --target tensorrt-10.3`` on the bundle and ``tensorrt-8.5`` on an opset-17 export
   of the same model (TensorRT 8.5 parses opset <= 17);
5. parameters and GFLOPs at 480x360 (:func:`edgeseg.train.count_flops`).

    python tools/bench/model_family.py --runs runs/family --json out/family.json          # all
    python tools/bench/model_family.py --only linknet,fpn --epochs-scale 0.5 --threads 1

The table it prints is the one in docs/models.md. The short schedules measure what INT8 costs on
trained weights and how the architectures compare at equal (small) training budgets; they are not
the architectures' reachable accuracy. CamVid ``val`` shares its sequence with ``train`` (issue 14).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGESEG_DATA", ROOT.parent / "shared" / "data")) / "camvid"

# (architecture, registered variant, learning rate): one light real variant per architecture
FAMILY: tuple[tuple[str, str, float], ...] = (
    ("DeepLab v1 (VGG-16 LargeFOV, BN)", "deeplabv1_vgg16_bn", 0.02),
    ("DeepLab v2 (ASPP-L)", "deeplabv2_mobilenetv2", 0.05),
    ("DeconvNet", "deconvnet_vgg16", 0.01),
    ("FC-DenseNet56 (Tiramisu)", "fc_densenet56", 0.05),
    ("UNet++", "unetpp_resnet18", 0.05),
    ("LinkNet", "linknet_resnet18", 0.05),
    ("FPN (Panoptic FPN semantic branch)", "fpn_mobilenetv3_large", 0.05),
    ("FastFCN (JPU + ASPP)", "jpu_resnet18", 0.05),
    ("HRNetV2-W18-Small", "hrnetv2_w18_small", 0.05),
    ("DANet", "danet_mobilenetv2", 0.05),
    ("OCR", "ocr_mobilenetv3_large", 0.05),
    ("GloRe", "glore_resnet18", 0.02),
    ("GCU", "gcu_resnet18", 0.02),
    ("SETR-Naive", "setr_naive_vit_tiny", 0.01),
    ("SETR-PUP", "setr_pup_vit_small", 0.01),
    ("SETR-MLA", "setr_mla_vit_small", 0.01),
    ("Lawin", "lawin_mobilenetv3_large", 0.05),
    ("CRF-as-RNN (DeepLabV3+)", "crfasrnn_deeplabv3plus_mobilenetv3_small", 0.05),
)

# wrappers trained stage-wise, as their papers do: (the wrapped model, trained first in its own run folder
# with the same budget and its own lr, the wrapper's lr on top). CRF-as-RNN from scratch reached 2.0 mIoU
# in that budget (the CRF's messages swamp an untrained FCN's logits); Zheng et al. train the FCN first.
STAGEWISE: dict[str, tuple[str, float, float]] = {
    "crfasrnn_deeplabv3plus_mobilenetv3_small": ("deeplabv3plus_mobilenetv3_small", 0.05, 0.01),
}

# the training budget, by cost (GFLOPs at 480x360): on this project's 2-core CPU an epoch at 256x192 crops
# takes about 1.5 min for a 10-GFLOP model and half an hour for a 165-GFLOP one, so heavier models get no
# training here (parameters, GFLOPs and TensorRT verdicts only; --heavy also times and quantizes them):
# they are for the device machine
EPOCHS_BY_GFLOPS = ((25.0, 2),)


def epochs_for(gflops: float, scale: float = 1.0, train_up_to: float = 0.0) -> int:
    """Epochs of the short training for a model of ``gflops`` (0: too heavy to train here). Models up to
    ``train_up_to`` GFLOPs beyond the budget table get the lightest budget's epochs (a faster machine)."""
    for limit, epochs in EPOCHS_BY_GFLOPS:
        if gflops <= limit:
            return max(1, round(epochs * scale))
    if gflops <= train_up_to:
        return max(1, round(EPOCHS_BY_GFLOPS[-1][1] * scale))
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "family", help="run folders (default runs/family)")
    p.add_argument("--data", type=Path, default=DATA, help="CamVid root (default ../shared/data/camvid)")
    p.add_argument("--only", default="", help="comma-separated variants (default: every entry)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the epochs of trained rows (>= 1 epoch)")
    p.add_argument("--train-up-to", type=float, default=0.0, metavar="GFLOPS",
                   help="also train heavier rows up to this many GFLOPs at 480x360 (default: none beyond 25)")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    p.add_argument("--steps", default="train,quantize,bench,check", help="which steps to run (default all)")
    p.add_argument("--heavy", action="store_true", help="also quantize (no gate) and time the untrained heavy rows")
    p.add_argument("--json", type=Path, help="also write the table here")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: print the markdown table of what the run folders hold")
    return p.parse_args(argv)


def edgeseg(*args: str, log: Path) -> int:
    """Run ``edgeseg ARGS`` with the current interpreter, output appended to ``log``; its exit status."""
    with open(log, "a") as f:
        f.write(f"\n$ edgeseg {' '.join(args)}\n")
        f.flush()
        return subprocess.call([sys.executable, "-m", "edgeseg", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def size_of(model_name: str) -> dict:
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape
    from edgeseg.train import count_flops

    model = create_model(model_name, num_classes=11).eval()
    return {"params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "gflops_480x360": round(count_flops(model, ImageShape(360, 480)).gflops, 2)}



def train(name: str, lr: float, epochs: int, out: Path, threads: str, data: Path, *, log: Path, export: Path | None,
          extra: list[str] | tuple[str, ...] = ()) -> int:
    """The short training of one model (the table's protocol); ``edgeseg train``'s exit status."""
    out.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (out / "last.pt").exists() else []
    exported = ["--export", str(export)] if export is not None else []
    return edgeseg("train", name, "--data", f"camvid:{data}", "--epochs", str(epochs), "--out", str(out),
                   "--size", "480x360", "--crop", "256x192", "--batch", "8", "--lr", str(lr), "--weight-decay", "4e-5",
                   "--warmup", "1", "--loss", "wce+0.5*lovasz", "--cache", "--threads", threads,
                   "--eval-every", str(epochs), "--no-progress", *exported, "--json", str(out / "train.json"),
                   *(extra if not resume else ()), *resume, log=log)


def run_one(arch: str, name: str, lr: float, args: argparse.Namespace) -> dict:
    out = args.runs / name
    out.mkdir(parents=True, exist_ok=True)
    log = out / "family.log"
    bundle = args.runs / f"{name}.edgeseg"
    row: dict = {"architecture": arch, "model": name, **size_of(name)}
    epochs = row["epochs"] = epochs_for(row["gflops_480x360"], args.epochs_scale, args.train_up_to)
    steps = set(args.steps.split(","))
    threads = str(args.threads)
    # untrained rows: random weights, exported for the verdicts (and --heavy latency); the verdicts do not
    # depend on the input size (static shapes either way), so without --heavy they export at 240x180
    check_size = "480x360" if epochs or args.heavy else "240x180"
    if epochs == 0 and not (bundle / "manifest.json").exists():
        edgeseg("export", name, "--classes", "camvid", "--size", check_size, "--out", str(bundle), log=log)
    if "train" in steps and epochs and not (bundle / "manifest.json").exists():
        t0 = time.time()
        init: list[str] = []
        if name in STAGEWISE:  # the wrapped model first, same budget, then the wrapper from its weights
            inner, inner_lr, lr = STAGEWISE[name]
            inner_out = args.runs / inner
            if not (inner_out / "model.safetensors").exists() and train(inner, inner_lr, epochs, inner_out, threads, args.data,
                                                                        log=log, export=None):
                row["error"] = f"training {inner} (the wrapped model) failed, see {log}"
                return row
            init = ["--init", str(inner_out / "model.safetensors")]
            row["init"] = inner
        if train(name, lr, epochs, out, threads, args.data, log=log, export=bundle, extra=init):
            row["train_s"] = round(time.time() - t0)
            row["error"] = f"train failed, see {log}"
            return row
        row["train_s"] = round(time.time() - t0)
    if not (bundle / "manifest.json").exists():
        row["error"] = "no bundle (train not run)"
        return row
    q = out / "quantize_cpu.json"
    if "quantize" in steps and not q.exists() and (epochs or args.heavy):
        # untrained rows: INT8 for latency only (no gate), few calibration frames (a 300-GFLOP model runs seconds a frame)
        gate = ["--eval", f"camvid:{args.data}", "--split", "val", "--max-drop", "0.5", "--frames", "32"] if epochs \
            else ["--frames", "16"]
        edgeseg("quantize", str(bundle), "--target", "cpu", "--calib", "camvid", *gate, "--threads", threads,
                "--no-progress", "--json", str(q), log=log)
    b = out / "bench.json"
    if "bench" in steps and not b.exists() and (epochs or args.heavy):
        edgeseg("bench", str(bundle), "--all", "--threads", threads, "--runs", "10", "--json", str(b), log=log)
    jp5 = out / "opset17.edgeseg"  # TensorRT 8.5 parses opset <= 17: its verdict is on an opset-17 export
    if "check" in steps and not (jp5 / "manifest.json").exists():
        edgeseg("export", name, "--classes", "camvid", "--size", check_size, "--opset", "17", "--no-checkpoint",
                "--overwrite", "--out", str(jp5), log=log)
    for trt, b in (("tensorrt-8.5", jp5), ("tensorrt-10.3", bundle)):
        c = out / f"check_{trt}.json"
        if "check" in steps and not c.exists():
            edgeseg("check", str(b), "--target", trt, "--json", str(c), log=log)
    row.update(collect(out))
    return row


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(out: Path) -> dict:
    """The table's figures from a run folder's JSON files (missing steps leave their cells empty)."""
    row: dict = {}
    q = _load(out / "quantize_cpu.json") or {}
    for key, value in (("miou_fp32", q.get("fp32")), ("miou_int8_cpu", q.get("int8"))):
        row[key] = None if value is None else round(100 * value if value <= 1 else value, 2)
    row["int8_float_nodes"] = len(q.get("float_nodes", [])) if q else None
    if row["miou_fp32"] is None:  # quantization not run (or not finished): the exported bundle's own score
        acc = (_load(out / "train.json") or {}).get("bundle_accuracy") or {}
        row["miou_fp32"] = None if acc.get("miou") is None else round(100 * acc["miou"], 2)
    b = _load(out / "bench.json") or {}
    if b.get("device"):  # the milliseconds are this CPU's: AVX2 and AVX-512 machines differ by 2x and more
        isa = set(b["device"].get("isa", ()))
        row["cpu"] = "AVX-512" + (" BF16" if "avx512_bf16" in isa else "") if "avx512f" in isa else \
            ("AVX2" if "avx2" in isa else b["device"].get("machine"))
    for r in b.get("results", []):
        key = {("onnxruntime", "fp32"): "ort_fp32_ms", ("onnxruntime", "int8"): "ort_int8_ms",
               ("openvino", "fp32"): "openvino_fp32_ms", ("openvino", "bf16"): "openvino_bf16_ms"}.get(
            (r.get("backend"), r.get("precision")))
        if key and not (key == "ort_int8_ms" and r.get("target") not in (None, "cpu")):
            row[key] = round(r["median_ms"], 2)
    for trt in ("tensorrt-8.5", "tensorrt-10.3"):
        c = _load(out / f"check_{trt}.json")
        errors = [f["code"] for f in (c or {}).get("findings", []) if f.get("level") == "error"]
        row[trt] = None if c is None else ("OK" if c.get("ok") else "BLOCKED: " + ", ".join(sorted(set(errors))))
    return row


COLUMNS = (("architecture", "architecture"), ("model", "variant"), ("params_M", "params (M)"),
           ("gflops_480x360", "GFLOPs 480x360"), ("epochs", "epochs"), ("steps", "steps"), ("miou_fp32", "mIoU FP32"),
           ("miou_int8_cpu", "mIoU INT8 cpu"), ("ort_fp32_ms", "ORT FP32 ms"), ("ort_int8_ms", "ORT INT8 ms"),
           ("openvino_fp32_ms", "OpenVINO FP32 ms"), ("openvino_bf16_ms", "OpenVINO bf16 ms"), ("cpu", "CPU of the ms"),
           ("tensorrt-8.5", "TensorRT 8.5"), ("tensorrt-10.3", "TensorRT 10.3"))


def markdown(rows: list[dict]) -> str:
    """The table as docs/models.md shows it (empty cells: not measured)."""
    def cell(v):
        return "" if v is None else (f"`{v}`" if isinstance(v, str) and "_" in v and " " not in v else str(v))

    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    from edgeseg.cli._common import print_table
    from edgeseg._io import write_json

    args = parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.collect:
        rows = []
        for arch, name, _ in FAMILY:
            if (not only or name in only) and (args.runs / name).is_dir():
                row = {"architecture": arch, "model": name, **size_of(name)}
                row["epochs"] = epochs_for(row["gflops_480x360"], args.epochs_scale, args.train_up_to)
                train = (_load(args.runs / name / "train.json") or {}).get("training", {})
                if train.get("epochs") is not None:
                    row["epochs"], row["steps"] = train["epochs"], train.get("steps")
                rows.append({**row, **collect(args.runs / name)})
        print(markdown(rows))
        write_json(args.json, {"rows": rows})
        return 0
    rows = []
    for arch, name, lr in FAMILY:
        if only and name not in only:
            continue
        print(f"== {arch}: {name}", flush=True)
        rows.append(run_one(arch, name, lr, args))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    write_json(args.json, {"rows": rows, "threads": args.threads})
    return 0


if __name__ == "__main__":
    sys.exit(main())
