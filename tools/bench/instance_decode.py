"""Instance decode cost on this CPU: N instances at an image size, per layout, plus what a stream does
with them afterwards (JSON record with COCO RLE masks, overlay drawing).

    python tools/bench/instance_decode.py --instances 100 --size 640x360 --repeats 50 --json d.json
    python tools/bench/instance_decode.py --against HEAD~1     # before/after a change, interleaved

Outputs are synthetic but shaped like real models' (YOLOv8-seg at 640x640 with 8400 anchors and
160x160 prototypes; SOLO-style dense masks at 1/4 of a 640x384 input; an imported torchvision or
RTMDet-Ins model's boxes and full-size masks; Mask R-CNN 28x28 RoI masks; since session 39 the roi
case draws other random boxes, as the full-size case draws before it),
with boxes of street-scene sizes (10-25% of the image side). Timings are medians (``--stat min``: the
fastest run, less sensitive to other work on the machine) over ``--repeats`` runs, single thread
(``cv2.setNumThreads(1)``), after one warm-up run. Decoders give compact results (per-instance mask
crops); the JSON record and the overlay use the crops; "full masks ms" is what materialising
``bool [N, H, W]`` costs when a consumer asks for ``result.masks``. ``--against REV`` instead times
``edgeseg/decode/instance.py`` as it was at git revision REV and as it is now, alternating runs in one
process (this VM's medians move with its neighbours' load; side by side the ratio holds), and counts
the mask pixels on which the two differ.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.bundle import Manifest, OutputSpec  # noqa: E402
from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.decode import decode  # noqa: E402
from edgeseg.structures import ImageShape, InputSpec, InstanceOptions  # noqa: E402


def _manifest(layout: str, nc: int, spec: InputSpec, boxes: bool = False, **opts) -> Manifest:
    kinds = {"prototype": ("detections", "prototypes"), "dense": ("scores", "classes", "masks"),
             "roi": ("boxes", "scores", "classes", "masks")}[layout]
    kinds = ("boxes", *kinds) if boxes and "boxes" not in kinds else kinds
    return Manifest(name=layout, task="instance", classes=tuple(f"c{i}" for i in range(nc)), input=spec,
                    outputs=tuple(OutputSpec(k, k, "float32", (1,)) for k in kinds),
                    decoder=InstanceOptions(layout=layout, **opts).to_dict())


def _boxes(rng, n: int, net: ImageShape) -> np.ndarray:
    wh = rng.uniform(0.1, 0.25, (n, 2)) * (net.width, net.height)
    xy = rng.uniform(0, 1, (n, 2)) * ((net.width, net.height) - wh)
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def cases(n: int, rng) -> dict:
    nc = 80
    out = {}
    # YOLOv8-seg at 640: 8400 anchors, n of them well above the threshold and far apart
    net = ImageShape(640, 640)
    spec = InputSpec(size=net, resize="letterbox", pad_value=114, mean=(0, 0, 0), std=(1, 1, 1))
    anchors, nm = 8400, 32
    det = np.zeros((4 + nc + nm, anchors), np.float32)
    det[:4] = rng.uniform(0, 640, (4, anchors))
    det[4:4 + nc] = rng.uniform(0, 0.2, (nc, anchors))
    b = _boxes(rng, n, net)
    pick = rng.choice(anchors, n, replace=False)
    det[0, pick], det[1, pick] = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    det[2, pick], det[3, pick] = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    det[4 + rng.integers(0, nc, n), pick] = rng.uniform(0.5, 1.0, n)
    det[4 + nc:] = rng.normal(size=(nm, anchors))
    import cv2  # smooth prototypes, as trained ones are (white noise would draw thousands of contours)

    protos = np.stack([cv2.resize(rng.normal(size=(12, 12)).astype(np.float32), (160, 160), interpolation=cv2.INTER_CUBIC)
                       for _ in range(nm)])[None]
    out["prototype (YOLOv8-seg 640)"] = (_manifest("prototype", nc, spec, num_masks=nm, max_detections=n, iou_threshold=1.0),
                                         {"detections": det[None], "prototypes": protos})
    # SOLO: dense masks at 1/4 of a 640x384 input
    net = ImageShape(384, 640)
    spec = InputSpec(size=net, mean=(0, 0, 0), std=(1, 1, 1))
    masks = np.zeros((1, n, 96, 160), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(_boxes(rng, n, net) / 4):
        masks[0, k, int(y1):int(y2), int(x1):int(x2)] = 0.9
    out["dense (SOLO 1/4)"] = (_manifest("dense", nc, spec, max_detections=n),
                               {"scores": rng.uniform(0.5, 1, (1, n)).astype(np.float32),
                                "classes": rng.integers(0, nc, (1, n)), "masks": masks})
    # an imported torchvision / RTMDet-Ins model: its boxes and masks at the network input's full size
    full = np.zeros((1, n, 384, 640), np.float32)
    fb = _boxes(rng, n, net)
    for k, (x1, y1, x2, y2) in enumerate(fb):
        full[0, k, int(y1):int(y2), int(x1):int(x2)] = 0.9
    out["dense + boxes (full-size masks)"] = (
        _manifest("dense", nc, spec, boxes=True, max_detections=n),
        {"boxes": fb[None], "scores": rng.uniform(0.5, 1, (1, n)).astype(np.float32),
         "classes": rng.integers(0, nc, (1, n)), "masks": full})
    # Mask R-CNN: 28x28 RoI masks
    out["roi (Mask R-CNN 28x28)"] = (_manifest("roi", nc, spec, max_detections=n),
                                     {"boxes": _boxes(rng, n, net)[None], "scores": rng.uniform(0.5, 1, (1, n)).astype(np.float32),
                                      "classes": rng.integers(0, nc, (1, n)),
                                      "masks": np.broadcast_to(_blob(28), (1, n, 28, 28)).copy()})
    return out


def _blob(size: int) -> np.ndarray:
    """A smooth object-like probability map (an ellipse fading out), as trained mask heads give."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    return np.clip(1.2 - np.hypot(x / 0.8, y / 0.95), 0, 1).astype(np.float32)


def _median_ms(fn, repeats: int, stat: str = "median") -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * (min(times) if stat == "min" else statistics.median(times))


def decoder_at(rev: str) -> types.ModuleType:
    """``edgeseg/decode/instance.py`` as it was at git revision ``rev``, loaded beside the current one
    (unregistered: its layout functions are called directly)."""
    root = Path(__file__).resolve().parents[2]
    src = subprocess.run(["git", "show", f"{rev}:edgeseg/decode/instance.py"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    old = types.ModuleType("edgeseg.decode._instance_at_rev")
    old.__package__ = "edgeseg.decode"
    exec(compile(src.replace('@DECODERS.register("instance")', ""), f"{rev}:instance.py", "exec"), old.__dict__)
    return old


def against(rev: str, items, frame, repeats: int) -> list[dict]:
    """Old (``rev``) and current decoders alternating on each case: medians, fastest runs, differing pixels."""
    from edgeseg.decode import instance as new

    old = decoder_at(rev)
    rows = []
    for name, (manifest, outputs) in items:
        _, meta = manifest.input.preprocess(frame)
        opts = manifest.decoder_options
        fo, fn = getattr(old, f"decode_{opts.layout}"), getattr(new, f"decode_{opts.layout}")
        ro, rn = fo(outputs, meta, manifest, opts), fn(outputs, meta, manifest, opts)
        times: dict = {fo: [], fn: []}
        for r in range(repeats):
            for f in (fo, fn) if r % 2 else (fn, fo):
                t0 = time.perf_counter()
                f(outputs, meta, manifest, opts)
                times[f].append(time.perf_counter() - t0)
        rows.append({"layout": name, "instances": len(rn),
                     f"{rev} ms": 1e3 * statistics.median(times[fo]), "now ms": 1e3 * statistics.median(times[fn]),
                     f"{rev} fastest": 1e3 * min(times[fo]), "now fastest": 1e3 * min(times[fn]),
                     "differing px": int((ro.masks != rn.masks).sum()), "mask px": int(rn.masks.sum())})
    return rows


def main(argv=None) -> int:
    import cv2

    from edgeseg.stream.overlay import Renderer
    from edgeseg.structures.records import instance_record

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--size", default="640x360", help="image size WxH (default 640x360)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--stat", choices=("median", "min"), default="median")
    p.add_argument("--against", default=None, metavar="REV",
                   help="time the decoder at git revision REV against the current one, interleaved")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    image = ImageShape.parse(args.size)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (image.height, image.width, 3), dtype=np.uint8)
    if args.against:
        rows = against(args.against, cases(args.instances, rng).items(), frame, args.repeats)
        print(f"instance decode at {args.against} vs now, {args.instances} instances, {image.width}x{image.height}, 1 thread")
        print_table(rows)
        write_json(args.json, {"machine": platform.node(), "cpus": os.cpu_count(), "args": vars(args), "rows": rows})
        return 0
    rows = []
    for name, (manifest, outputs) in cases(args.instances, rng).items():
        _, meta = manifest.input.preprocess(frame)
        result = decode(outputs, meta, manifest)
        renderer = Renderer(manifest.palette_array, manifest.classes, hud=False, legend=False)
        few = max(5, args.repeats // 5)
        rows.append({"layout": name, "image": f"{image.width}x{image.height}", "instances": len(result),
                     "decode ms": _median_ms(lambda: decode(outputs, meta, manifest), args.repeats, args.stat),
                     "JSON record ms": _median_ms(lambda: instance_record(result), few, args.stat),
                     "overlay ms": _median_ms(lambda: renderer(frame, result), few, args.stat),
                     "full masks ms": _median_ms(lambda: result.replace(track_ids=None).masks, few, args.stat)})
    print(f"instance decode, {args.instances} instances, {platform.processor() or platform.machine()}, 1 thread, {args.stat}")
    print_table(rows)
    write_json(args.json, {"machine": platform.node(), "cpus": os.cpu_count(), "cpu": platform.processor(),
                           "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
