"""Panoptic decode cost on this CPU at a street-scene size, per path, and what grouping on the stride-4
grid costs in PQ against grouping at full resolution.

    python tools/bench/panoptic_decode.py --size 640x320 --instances 20 100 --repeats 50 --json p.json

Scenes come from :class:`edgeseg.data.SceneGenerator` (exact ground truth) with ``--instances``
objects at once, at a network input of the image's size, with 19 classes (the generator's 3 stuff
and 3 thing classes plus 13 stuff classes that never win, so the argmax costs what Cityscapes' 19
classes cost). Model outputs are what a well-trained model would give, derived from the truth at
stride 4: ``semantic`` logits = log of the area-averaged one-hot classes, ``center`` = a Gaussian
(sigma 2 cells, plus noise of sigma 0.01 as real heatmaps have) at each instance's centre of mass,
``offset`` = the area-averaged exact offsets; LPSNet ``boxes`` = the instances' boxes; fusion gets
the true labels and masks at image size (with ``mask_boxes``, as the instance decoders give them).

Paths: ``center (host)`` groups on the host; ``center (graph outputs)`` reads ``centers``/``instance``
as a model with in-graph grouping gives them (K = 100); ``center (full res)`` is Panoptic-DeepLab's
reference inference (logits, heatmap and offsets upsampled bilinearly to the network input, NMS
window scaled by 4, grouping there), for comparison; ``paste``; ``fusion`` (:func:`fuse_panoptic`).
PQ is against the scene's truth, over ``--frames`` frames. Timings: medians over ``--repeats``
runs, single thread (``cv2.setNumThreads(1)``), after one warm-up run.

On real data, ``--bundle B --data coco-panoptic:JSON [--limit N]`` runs a center-layout bundle (the
backend and precision ``edgeseg.load`` picks, or ``--backend``/``--precision``) and scores the grid
decode against the full-resolution reference on the same outputs: PQ (all, things, stuff) and the
mean decode ms of each.

    python tools/bench/panoptic_decode.py --bundle runs/street-panoptic.edgeseg \
        --data coco-panoptic:../shared/data/cityscapes_panoptic/panoptic_val.json --json real.json
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.bundle import Manifest  # noqa: E402
from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.data import SceneGenerator  # noqa: E402
from edgeseg.decode import decode, fuse_panoptic  # noqa: E402
from edgeseg.decode.panoptic import decode_center, grid_map, nearest_center  # noqa: E402
from edgeseg.eval import PanopticMetric  # noqa: E402
from edgeseg.structures import ImageShape, InputSpec, PanopticOptions  # noqa: E402

STRIDE = 4
NUM_CLASSES = 19


def _manifest(layout: str, image: ImageShape, things: tuple[int, ...], **opts) -> Manifest:
    return Manifest(name=layout, task="panoptic", classes=tuple(f"c{i}" for i in range(NUM_CLASSES)),
                    input=InputSpec(size=image), outputs=(),
                    decoder=PanopticOptions(layout=layout, thing_classes=things, **opts).to_dict())


def _area(x: np.ndarray, grid: ImageShape) -> np.ndarray:
    import cv2

    return cv2.resize(np.ascontiguousarray(x, np.float32), grid.wh, interpolation=cv2.INTER_AREA)


def model_outputs(frame, grid: ImageShape, rng) -> dict[str, np.ndarray]:
    """Stride-4 ``semantic``/``center``/``offset`` outputs derived from a frame's truth (module doc)."""
    pan, labels = frame.panoptic, frame.labels
    h, w = labels.shape
    logits = np.empty((1, NUM_CLASSES, *grid.hw), np.float32)
    for c in range(NUM_CLASSES):
        p = _area(labels == c, grid) if c < 6 else np.zeros(grid.hw, np.float32)
        logits[0, c] = np.log(p + 1e-3) + rng.normal(0, 0.05, grid.hw)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    off = np.zeros((2, h, w), np.float32)
    heat = np.zeros(grid.hw, np.float32)
    gy, gx = np.mgrid[0:grid.height, 0:grid.width].astype(np.float32)
    seg = pan.segment_ids
    for s in pan.segments:
        if not s.isthing:
            continue
        m = seg == s.id
        cy, cx = yy[m].mean(), xx[m].mean()
        off[0][m], off[1][m] = cy - yy[m], cx - xx[m]
        ry, rx = round((cy - 1.5) / STRIDE), round((cx - 1.5) / STRIDE)
        np.maximum(heat, np.exp(-((gy - ry) ** 2 + (gx - rx) ** 2) / 8.0), out=heat)
    heat += rng.normal(0, 0.01, grid.hw).astype(np.float32)  # no exact ties between neighbours, as in real outputs
    offset = np.stack([_area(off[0], grid), _area(off[1], grid)])
    return {"semantic": logits, "center": heat[None, None], "offset": offset[None]}


def graph_outputs(out: dict, meta, opts: PanopticOptions, k: int = 100) -> dict[str, np.ndarray]:
    """What an in-graph grouping adds: the top-K peaks (score 0 padding) and every cell's nearest one."""
    from edgeseg.decode.panoptic import find_centers

    heat, off = out["center"][0, 0], out["offset"][0]
    h, w = heat.shape
    scores, yx = find_centers(heat, opts.center_threshold, opts.nms_kernel, k)
    gm = grid_map(meta, ImageShape(h, w))
    cy, cx = gm.positions(yx)
    centers = np.zeros((1, k, 3), np.float32)
    centers[0, :len(scores)] = np.stack([scores, cy, cx], 1)
    py, px = gm.positions(np.stack(np.divmod(np.arange(h * w), w), 1))
    near = nearest_center(py + off[0].ravel(), px + off[1].ravel(), cy, cx) if len(scores) else np.zeros(h * w, np.intp)
    return {**out, "centers": centers, "instance": near.reshape(1, h, w).astype(np.int64)}


def paste_outputs(frame, out: dict, rng) -> dict[str, np.ndarray]:
    inst = frame.instances
    scores = rng.uniform(0.5, 1, (1, len(inst))).astype(np.float32)
    return {"semantic": out["semantic"], "boxes": inst.boxes[None], "scores": scores,
            "classes": inst.classes.astype(np.int64)[None]}


def full_resolution(out: dict, meta, manifest: Manifest):
    """Panoptic-DeepLab's reference inference: maps upsampled to the network input, grouping there."""
    import cv2

    net = meta.network
    up = {k: np.stack([cv2.resize(p, net.wh, interpolation=cv2.INTER_LINEAR) for p in out[k][0]])[None]
          for k in ("semantic", "center", "offset")}
    opts = manifest.decoder_options
    return decode_center(up, meta, manifest, opts.replace(nms_kernel=opts.nms_kernel * STRIDE + 1))


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench(image: ImageShape, n: int, args) -> list[dict]:
    things = SceneGenerator.thing_class_ids
    gen = SceneGenerator(image, seed=(7, n), max_objects=n, object_size=(0.05, 0.14) if n <= 30 else (0.03, 0.07))
    grid = ImageShape(image.height // STRIDE, image.width // STRIDE)
    rng = np.random.default_rng(0)
    man_c = _manifest("center", image, things, stuff_area=args.stuff_area)
    man_p = _manifest("paste", image, things, stuff_area=args.stuff_area)
    stuff_map, thing_map = {c: c for c in range(3)}, {c: c for c in things}
    paths = {
        "center (host)": lambda f, o, m: decode(o, m, man_c),
        "center (graph outputs)": lambda f, o, m: decode(o["graph"], m, man_c),
        "center (full res)": lambda f, o, m: full_resolution(o, m, man_c),
        "paste": lambda f, o, m: decode(o["paste"], m, man_p),
        "fusion": lambda f, o, m: fuse_panoptic(f.labels, o["instances"], stuff_map=stuff_map, thing_map=thing_map,
                                                stuff_area=args.stuff_area),
    }
    metrics = {k: PanopticMetric() for k in paths}
    frames = []
    for t in range(args.frames):
        f = gen.render(30 + 7 * t)
        _, meta = man_c.input.preprocess(f.image)
        o = model_outputs(f, grid, rng)
        o["graph"] = graph_outputs(o, meta, man_c.decoder_options)
        o["paste"] = paste_outputs(f, o, rng)
        o["instances"] = replace(f.instances, mask_boxes=f.instances.boxes.astype(np.int32))  # as decoders give them
        frames.append((f, o, meta))
        for name, fn in paths.items():
            metrics[name].update(fn(f, o, meta), f.panoptic)
    f, o, meta = frames[0]
    repeats = lambda name: max(5, args.repeats // 5) if "full" in name else args.repeats  # noqa: E731
    rows = []
    for name, fn in paths.items():
        rows.append({"path": name, "image": f"{image.width}x{image.height}", "objects": n,
                     "instances": sum(s.isthing for s in f.panoptic.segments),
                     "decode ms": _median_ms(lambda: fn(f, o, meta), repeats(name)),
                     "PQ": 100 * metrics[name].compute().pq})
    return rows


def real_data(args) -> list[dict]:
    """Grid decode against the full-resolution reference on a bundle's outputs for a panoptic dataset."""
    import edgeseg
    from edgeseg.data import open_dataset

    ds = open_dataset(args.data)
    cats = list(ds.categories.values())
    pred = edgeseg.load(args.bundle, backend=args.backend, precision=args.precision)
    paths = {"center (grid, the decoder)": lambda out, meta: pred.postprocess(out, meta),
             "center (full res)": lambda out, meta: full_resolution(out, meta, pred.manifest)}
    metrics = {k: PanopticMetric({c.id: c.isthing for c in cats}, {c.id: c.name for c in cats}) for k in paths}
    spent = dict.fromkeys(paths, 0.0)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    with pred:
        for i in range(n):
            sample = ds[i]
            feed, meta = pred.preprocess(sample.image())
            out = pred.runner.infer(feed)
            for k, fn in paths.items():
                t0 = time.perf_counter()
                result = fn(out, meta)
                spent[k] += time.perf_counter() - t0
                metrics[k].update(result, sample.panoptic, sample.crowd_ids)
    rows = []
    for k, m in metrics.items():
        d = m.compute().to_dict()
        rows.append({"path": k, "bundle": Path(args.bundle).name, "backend": f"{pred.backend}/{pred.runner.precision}",
                     "frames": n, "decode ms": 1e3 * spent[k] / max(n, 1), "PQ": 100 * d["all"]["pq"],
                     "things PQ": 100 * d["things"]["pq"], "stuff PQ": 100 * d["stuff"]["pq"]})
    return rows


def main(argv=None) -> int:
    import cv2

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x320", help="image (= network input) size WxH (default 640x320)")
    p.add_argument("--instances", type=int, nargs="+", default=[20, 100], help="objects per scene (default 20 100)")
    p.add_argument("--frames", type=int, default=4, help="frames scored for PQ (default 4)")
    p.add_argument("--stuff-area", type=int, default=128)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--bundle", default=None, help="a center-layout panoptic bundle: score it on --data instead")
    p.add_argument("--data", default=None, help="with --bundle: coco-panoptic:PATH/panoptic_val.json")
    p.add_argument("--limit", type=int, default=None, help="with --bundle: the first N images")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    if args.bundle:
        if not args.data:
            p.error("--bundle needs --data coco-panoptic:PATH/panoptic_val.json")
        rows = real_data(args)
        print(f"panoptic decode on real data, {platform.processor() or platform.machine()}, 1 decode thread; PQ (%)")
        print_table(rows)
        write_json(args.json, {"machine": platform.node(), "cpus": os.cpu_count(), "args": vars(args), "rows": rows})
        return 0
    image = ImageShape.parse(args.size)
    rows = [r for n in args.instances for r in bench(image, n, args)]
    print(f"panoptic decode, {platform.processor() or platform.machine()}, 1 thread; PQ (%) against the scene's truth")
    print_table(rows)
    write_json(args.json, {"machine": platform.node(), "cpus": os.cpu_count(), "cpu": platform.processor(),
                           "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
