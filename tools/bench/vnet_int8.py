"""V-Net's row of the model family table: export with parity, INT8 gated by Dice, speed, TensorRT verdicts.

    python tools/train_vnet.py --out runs/vnet --steps 300            # the trained model (about 40 min, 1 thread)
    python tools/bench/vnet_int8.py runs/vnet/model.safetensors --threads 2 --json runs/vnet/bench.json

Volumes come from :mod:`edgeseg.data.synthetic_volumes` on streams the training never drew: calibration
on seed 2000, the Dice gate and the scores on seed 3000 (training: seed 0, its held-out watch: 1000).
Steps: export (:func:`edgeseg.export.volumetric.export_volumetric`: ONNX Runtime vs PyTorch), INT8
for the ``cpu`` target (:func:`edgeseg.quant.volumetric.quantize_volumetric`: all layers, then
mixed precision if the all-INT8 model loses more than ``--max-drop`` Dice points), Dice of ONNX
Runtime FP32 / INT8 and OpenVINO FP32 / INT8 (the ``openvino`` target's Q/DQ file; bf16 too where
the CPU has it), latency of each per volume in
interleaved rounds (one warm-up), and ``edgeseg check``'s TensorRT verdicts on the FP32 file (8.5: an opset-17 export, as the 2-D rows).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, run_tool, write_json  # noqa: E402

CALIB_SEED, EVAL_SEED = 2000, 3000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a V-Net checkpoint (tools/train_vnet.py's model.safetensors)")
    p.add_argument("--out", default=None, help="folder for vnet.onnx / vnet_int8.onnx (default: beside the checkpoint)")
    p.add_argument("--calib", type=int, default=16, help="calibration volumes (default 16)")
    p.add_argument("--eval", type=int, default=16, help="volumes the gate and the scores use (default 16)")
    p.add_argument("--max-drop", type=float, default=0.5, help="Dice points INT8 may lose (default 0.5)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH")
    return p.parse_args(argv)


def gmacs(model, shape) -> float:
    """Multiply-adds of one ``[1, C, *shape]`` forward pass, from the convolutions (hooks)."""
    import torch

    total = [0]

    def hook(m, inputs, out):
        k = m.weight[0].numel()  # Cin/groups * kD * kH * kW (Conv); Cout/groups * k^3 (ConvTranspose)
        total[0] += (inputs[0].numel() if isinstance(m, torch.nn.ConvTranspose3d) else out.numel()) * k

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.no_grad():
        model(torch.zeros(1, int(getattr(model, "in_channels", 1)), *shape))
    for h in hooks:
        h.remove()
    return total[0] / 1e9


def main(argv=None) -> int:
    return run_tool("vnet_int8", bench, parse_args(argv))


def bench(args: argparse.Namespace) -> int:
    from edgeseg.backends.openvino.settings import cpu_capabilities
    from edgeseg.data.synthetic_volumes import VOLUME_SHAPE, synthetic_volumes
    from edgeseg.export.volumetric import export_volumetric
    from edgeseg.models import load_checkpoint, read_checkpoint_meta
    from edgeseg.quant.accuracy import make_session
    from edgeseg.quant.check import check_model
    from edgeseg.quant.volumetric import quantize_volumetric, session_dice

    ckpt = Path(args.checkpoint)
    meta = read_checkpoint_meta(ckpt)
    shape = tuple(meta.extra.get("shape", VOLUME_SHAPE))
    out = Path(args.out or ckpt.parent)
    out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(ckpt).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    macs = gmacs(model, shape)
    fp32 = out / "vnet.onnx"
    parity = export_volumetric(model, fp32, shape)
    print(f"exported {fp32} ({parity['max_abs_diff']:.2e} max |ORT - PyTorch| on {parity['volumes']} volumes)")
    calib = synthetic_volumes(CALIB_SEED, args.calib, shape)[0]
    volumes, labels = synthetic_volumes(EVAL_SEED, args.eval, shape)
    t0 = time.time()
    q = quantize_volumetric(fp32, out / "vnet_int8.onnx", calib, volumes, labels, max_drop=args.max_drop,
                            threads=args.threads)
    print(f"INT8 cpu ({time.time() - t0:.0f} s): " + "; ".join(q.steps))
    qov = quantize_volumetric(fp32, out / "vnet_int8_openvino.onnx", calib, volumes, labels, target="openvino",
                              max_drop=args.max_drop, threads=args.threads)
    print("INT8 openvino: " + "; ".join(qov.steps[-2:]))
    runs = {"ORT FP32": (fp32, "onnxruntime", None), "ORT INT8 (cpu target)": (q.path, "onnxruntime", None),
            "OpenVINO FP32": (fp32, "openvino", "fp32"), "OpenVINO INT8 (openvino target)": (qov.path, "openvino", "int8")}
    if "BF16" in cpu_capabilities():
        runs["OpenVINO bf16"] = (fp32, "openvino", "bf16")
    sessions, dice = {}, {}
    for name, (path, runtime, precision) in runs.items():
        if runtime == "openvino":
            from edgeseg.quant.openvino import OpenVinoSession

            sessions[name] = OpenVinoSession(path, args.threads, precision)
        else:
            sessions[name] = make_session(path, args.threads)
        dice[name] = session_dice(sessions[name], volumes, labels)
    times = {name: [] for name in runs}
    x = volumes[:1]
    for name, s in sessions.items():  # warm-up
        s.run(None, {s.get_inputs()[0].name: x})
    for r in range(args.rounds):
        for name in (list(sessions) if r % 2 == 0 else list(reversed(sessions))):
            s = sessions[name]
            t = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[name].append(time.perf_counter() - t)
    opset17 = out / "vnet_opset17.onnx"  # TensorRT 8.5 (JetPack 5) parses opsets up to 17
    export_volumetric(model, opset17, shape, opset=17)
    verdicts = {"tensorrt-8.5": check_model(opset17, "tensorrt-8.5"), "tensorrt-10.3": check_model(fp32, "tensorrt-10.3")}
    rows = [{"runtime": name, "Dice": round(dice[name], 2), "ms per volume": round(1e3 * statistics.median(times[name]), 1),
             "vs ORT FP32": round(statistics.median(times[name]) / statistics.median(times["ORT FP32"]), 2)}
            for name in runs]
    print(f"V-Net {meta.model_name}: {params:.3f} M parameters, {macs:.2f} GMACs ({2 * macs:.2f} GFLOPs) at "
          f"{'x'.join(map(str, shape))}; INT8 cpu: {len(q.float_layers)} layer(s) in float, Dice FP32 "
          f"{q.dice_fp32:.2f} -> INT8 {q.dice_int8:.2f} (all INT8 {q.dice_int8_all:.2f}, budget {args.max_drop}); "
          f"TensorRT 8.5 {'OK' if verdicts['tensorrt-8.5'].ok else 'BLOCKED'}, 10.3 "
          f"{'OK' if verdicts['tensorrt-10.3'].ok else 'BLOCKED'}; {platform.processor() or platform.machine()}, "
          f"threads {args.threads or 'default'}")
    print_table(rows)
    write_json(args.json, {"model": meta.model_name, "checkpoint": str(ckpt), "shape": list(shape), "params_M": params,
                           "gmacs": macs, "gflops": 2 * macs, "parity": parity, "int8": q.to_dict(),
                           "int8_openvino": qov.to_dict(), "rows": rows,
                           "tensorrt": {t: v.to_dict() for t, v in verdicts.items()}, "threads": args.threads,
                           "cpu_capabilities": sorted(cpu_capabilities()), "machine": platform.node()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
