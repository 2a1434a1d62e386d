"""CPU benchmark of edgeseg's custom ops: PyTorch reference vs ONNX Runtime (standard op) vs the
decomposed ONNX graph, on the shapes of a 512x1024 panoptic model.

    .venv/bin/python tools/bench/ops_cpu.py --threads 2 --json /tmp/ops_cpu.json

Shapes (shared with tools/bench/ops_gpu.py):
  * DCNv2 3x3 layers of a panoptic head at 512x1024 input: 256 ch at stride 8 (64x128) and
    128 ch at stride 4 (128x256).
  * 1000 RoIs over a 4-level FPN (strides 4..32, 256 ch), 7x7 box head and 14x14 mask head,
    sampling_ratio 2, boxes assigned to levels by area.
Prints a table (median milliseconds) and writes JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class DcnShape:
    name: str
    batch: int
    channels: int
    height: int
    width: int
    kernel: int = 3
    offset_groups: int = 1


@dataclass(frozen=True)
class RoiShape:
    name: str
    boxes: int
    channels: int
    output: int
    image_height: int = 512
    image_width: int = 1024
    strides: tuple = (4, 8, 16, 32)
    sampling_ratio: int = 2


DCN_SHAPES = [DcnShape("dcn 256ch 64x128 (stride 8)", 1, 256, 64, 128),
              DcnShape("dcn 128ch 128x256 (stride 4)", 1, 128, 128, 256)]
ROI_SHAPES = [RoiShape("roi 1000 boxes 7x7, 4-level FPN", 1000, 256, 7),
              RoiShape("roi 1000 boxes 14x14, 4-level FPN", 1000, 256, 14)]


def dcn_inputs(shape: DcnShape, device="cpu", dtype=None, seed=0):
    """``(x, offset, weight, bias, mask)`` for one DCNv2 layer with padding 1."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n, c, h, w, k = shape.batch, shape.channels, shape.height, shape.width, shape.kernel
    taps = k * k * shape.offset_groups
    tensors = (torch.randn(n, c, h, w, generator=g), torch.randn(n, 2 * taps, h, w, generator=g) * 2,
               torch.randn(c, c, k, k, generator=g) * 0.02, torch.randn(c, generator=g),
               torch.rand(n, taps, h, w, generator=g))
    return tuple(t.to(device=device, dtype=dtype or torch.float32) for t in tensors)


def roi_inputs(shape: RoiShape, device="cpu", dtype=None, seed=0):
    """``(features, boxes [K, 5], scales)``: random FPN maps and boxes whose sizes span all levels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, shape.channels, shape.image_height // s, shape.image_width // s, generator=g)
             for s in shape.strides]
    size = torch.exp(torch.rand(shape.boxes, 2, generator=g) * 4.5 + 2.5)  # ~12..1100 px
    corner = torch.rand(shape.boxes, 2, generator=g) * torch.tensor([shape.image_width, shape.image_height])
    xyxy = torch.cat([corner, corner + size], 1)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, shape.image_width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, shape.image_height)
    boxes = torch.cat([torch.zeros(shape.boxes, 1), xyxy], 1)
    dt = dtype or torch.float32
    return [f.to(device, dt) for f in feats], boxes.to(device, dt), [1.0 / s for s in shape.strides]


def _median_ms(fn, repeat: int) -> float:
    """Median of ``repeat`` timed calls after one warm-up (:func:`edgeseg._timing.time_runs`)."""
    from edgeseg._timing import time_runs

    return time_runs(fn, repeat, 1).p50_ms


def _export(module, args, path: Path, dynamic_shapes=None, **forms) -> None:
    import torch

    from edgeseg.ops import onnx_translation_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=19, verbose=False,
                          dynamic_shapes=dynamic_shapes, custom_translation_table=onnx_translation_table(**forms))


def _ort_runner(path: Path, arrays, threads: int):
    from edgeseg._ort import make_session

    sess = make_session(path, threads=threads)
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
    return lambda: sess.run(None, feeds)[0]


def _modules():
    import torch

    import edgeseg.ops as ops

    class Dcn(torch.nn.Module):
        def __init__(self, weight, bias):
            super().__init__()
            self.weight, self.bias = torch.nn.Parameter(weight), torch.nn.Parameter(bias)

        def forward(self, x, offset, mask):
            return ops.deform_conv2d(x, offset, self.weight, self.bias, mask, 1, 1, 1)

    class Fpn(torch.nn.Module):
        def __init__(self, shape: RoiShape):
            super().__init__()
            self.pool = ops.MultiScaleRoIAlign(shape.output, [1.0 / s for s in shape.strides], shape.sampling_ratio)

        def forward(self, p2, p3, p4, p5, boxes):
            return self.pool([p2, p3, p4, p5], boxes)

    return Dcn, Fpn


def bench_dcn(shape: DcnShape, tmp: Path, threads: int, repeat: int) -> dict:
    import numpy as np
    import torch

    Dcn, _ = _modules()
    x, offset, weight, bias, mask = dcn_inputs(shape)
    model = Dcn(weight, bias)
    row = {"op": shape.name}
    with torch.no_grad():
        ref = model(x, offset, mask)
        row["torch_ref_ms"] = _median_ms(lambda: model(x, offset, mask), repeat)
    arrays = [t.numpy() for t in (x, offset, mask)]
    for form in ("onnx", "decomposed"):
        path = tmp / f"dcn_{form}.onnx"
        _export(model, (x, offset, mask), path, deform_conv=form)
        run = _ort_runner(path, arrays, threads)
        row[f"ort_{form}_ms"] = _median_ms(run, repeat)
        row[f"ort_{form}_max_abs_err"] = float(np.abs(run() - ref.numpy()).max())
    return row


def bench_roi(shape: RoiShape, tmp: Path, threads: int, repeat: int) -> dict:
    import numpy as np
    import torch

    _, Fpn = _modules()
    feats, boxes, _ = roi_inputs(shape)
    model = Fpn(shape)
    row = {"op": shape.name}
    with torch.no_grad():
        ref = model(*feats, boxes)
        row["torch_ref_ms"] = _median_ms(lambda: model(*feats, boxes), repeat)
    arrays = [t.numpy() for t in (*feats, boxes)]
    dyn = (None, None, None, None, {0: torch.export.Dim.DYNAMIC})
    for form in ("onnx", "decomposed"):
        path = tmp / f"roi_{form}.onnx"
        _export(model, (*feats, boxes), path, dynamic_shapes=dyn, roi_align=form)
        run = _ort_runner(path, arrays, threads)
        row[f"ort_{form}_ms"] = _median_ms(run, repeat)
        row[f"ort_{form}_max_abs_err"] = float(np.abs(run() - ref.numpy()).max())
    return row


COLUMNS = ["op", "torch_ref_ms", "ort_onnx_ms", "ort_decomposed_ms", "ort_onnx_max_abs_err",
           "ort_decomposed_max_abs_err"]


def print_table(rows: list[dict]) -> None:
    cells = [[r["op"], *(f"{r[c]:.1f}" if c.endswith("_ms") else f"{r[c]:.1e}" for c in COLUMNS[1:])] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    print(" | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and ONNX Runtime")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (median), after one warm-up")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in DCN_SHAPES:
            rows.append(bench_dcn(shape, Path(tmp), args.threads, args.repeat))
        for shape in ROI_SHAPES:
            rows.append(bench_roi(shape, Path(tmp), args.threads, args.repeat))
    print_table(rows)
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
                "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "threads": args.threads,
                "repeat": args.repeat, "dcn_shapes": [asdict(s) for s in DCN_SHAPES],
                "roi_shapes": [asdict(s) for s in ROI_SHAPES]}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
