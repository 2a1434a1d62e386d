"""GPU benchmark: edgeseg's CUDA kernels vs torchvision.ops on the same inputs (float32 and float16).

    python tools/bench/ops_gpu.py --json /tmp/ops_gpu.json

Needs a CUDA GPU, PyTorch with CUDA, torchvision and CuPy (the kernels are compiled with NVRTC on
first use). Shapes are those of tools/bench/ops_cpu.py: DCNv2 3x3 layers of a 512x1024 panoptic
head, and 1000 RoIs over a 4-level FPN. Times are the median of --repeat runs after --warmup runs,
timed by edgeseg's shared loop (``edgeseg._timing.time_runs`` with ``sync=torch.cuda.synchronize``:
wall time of one call, launch included, up to the end of its GPU work); each row also reports the
largest difference from torchvision and, for each side, its largest error against torchvision in float32
on the same (half-rounded) inputs: in float16 the two differ by more than either errs (session 31 on an
H200: up to 0.64 for RoIAlign, whose torchvision kernel computes sample positions in half), so the
difference alone cannot say which side is off.
For RoIAlign torchvision has no multi-level op, so both sides pool each FPN level's boxes from that
level (the level assignment is done once, outside the timing).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ops_cpu import DCN_SHAPES, ROI_SHAPES, dcn_inputs, roi_inputs  # noqa: E402


def _cuda_ms(fn, warmup: int, repeat: int) -> float:
    """Median milliseconds of ``fn`` (CUDA work): the shared timing loop, synchronising the device."""
    import torch

    from edgeseg._timing import time_runs

    return time_runs(fn, repeat, warmup, sync=torch.cuda.synchronize).p50_ms


def _row(name, dtype, ours, theirs, reference, warmup, repeat) -> dict:
    """One table row; ``reference`` is torchvision's op in float32 on the same inputs upcast."""
    import torch

    with torch.no_grad():
        a, b, ref = ours().float(), theirs().float(), reference()
        errors = {"max_abs_diff": float((a - b).abs().max()), "edgeseg_err": float((a - ref).abs().max()),
                  "torchvision_err": float((b - ref).abs().max())}
        ours_ms, tv_ms = _cuda_ms(ours, warmup, repeat), _cuda_ms(theirs, warmup, repeat)
    return {"op": name, "dtype": str(dtype).replace("torch.", ""), "edgeseg_ms": ours_ms, "torchvision_ms": tv_ms,
            "speedup": tv_ms / ours_ms, **errors}


def bench_dcn(shape, dtype, warmup, repeat) -> dict:
    import torchvision

    import edgeseg.ops as ops

    x, offset, weight, bias, mask = dcn_inputs(shape, "cuda", dtype)
    x32, offset32, weight32, bias32, mask32 = (t.float() for t in (x, offset, weight, bias, mask))
    return _row(shape.name, dtype,
                lambda: ops.deform_conv2d(x, offset, weight, bias, mask, 1, 1, 1),
                lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask),
                lambda: torchvision.ops.deform_conv2d(x32, offset32, weight32, bias32, padding=1, mask=mask32),
                warmup, repeat)


def bench_roi(shape, dtype, warmup, repeat) -> dict:
    import torch
    import torchvision

    import edgeseg.ops as ops

    feats, boxes, scales = roi_inputs(shape, "cuda", dtype)
    levels = [round(-torch.log2(torch.tensor(s)).item()) for s in scales]
    assigned = ops.assign_fpn_levels(boxes[:, 1:].float(), levels[0], levels[-1])
    per_level = [boxes[assigned == i] for i in range(len(feats))]
    size, sr = (shape.output, shape.output), shape.sampling_ratio

    def ours():
        return torch.cat([ops.roi_align(f, b, size, s, sr, True) for f, b, s in zip(feats, per_level, scales)])

    def theirs(upcast=False):
        cast = (lambda t: t.float()) if upcast else (lambda t: t)
        return torch.cat([torchvision.ops.roi_align(cast(f), cast(b), size, s, sr, True)
                          for f, b, s in zip(feats, per_level, scales)])

    return _row(shape.name, dtype, ours, theirs, lambda: theirs(upcast=True), warmup, repeat)


COLUMNS = ["op", "dtype", "edgeseg_ms", "torchvision_ms", "speedup", "max_abs_diff", "edgeseg_err", "torchvision_err"]


def print_table(rows: list[dict]) -> None:
    def fmt(c, v):
        return v if isinstance(v, str) else (f"{v:.1e}" if c.endswith(("_diff", "_err")) else f"{v:.3f}")

    cells = [[fmt(c, r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    print(" | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))


def _missing() -> str | None:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to PyTorch (this benchmark needs an NVIDIA GPU)"
    for name, hint in (("torchvision", "pip install torchvision matching your torch"),
                       ("cupy", "pip install cupy-cuda12x (cupy-cuda11x on JetPack 5)")):
        try:
            __import__(name)
        except ImportError:
            return f"{name} is not installed: {hint}"
    from edgeseg.ops import _cuda

    if not _cuda.kernels_usable(torch.zeros(1, device="cuda")):
        return "edgeseg's CUDA kernels could not be compiled for this GPU (see the warning above)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=100, help="timed runs per case (median)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    why = _missing()
    if why:
        print(f"ops_gpu: cannot run: {why}.", file=sys.stderr)
        return 2
    import torch

    rows = []
    for dtype in (torch.float32, torch.float16):
        rows += [bench_dcn(s, dtype, args.warmup, args.repeat) for s in DCN_SHAPES]
        rows += [bench_roi(s, dtype, args.warmup, args.repeat) for s in ROI_SHAPES]
    print_table(rows)
    if args.json:
        meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                "cuda": torch.version.cuda, "warmup": args.warmup, "repeat": args.repeat}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
