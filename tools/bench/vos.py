#!/usr/bin/env python
"""Video object segmentation on DAVIS: J, F, J&F, speed and memory of the propagator and the baselines.

Every sequence under ``--root`` (a DAVIS folder: ``JPEGImages/480p/SEQ``, ``Annotations/480p/SEQ``)
is read into memory, then each method propagates the first frame's annotation to the last frame,
timed per step (frame decoding excluded). J and F are the official DAVIS measures
(``edgeseg.eval.vos``: first and last frames left out, mean over objects). The two baselines of
issue 13 run side by side: ``copy-first`` (36.7 on the three DAVIS-2016 sequences of
``../shared/data``) and ``flow-warp`` (53.5). ``--ablate`` adds the propagator with one component
switched off at a time, so each component's contribution is measured, not assumed.

    python tools/bench/vos.py --threads 2 --json bench_vos.json
    python tools/bench/vos.py --ablate --methods propagator --json ablation.json
    python tools/bench/vos.py --sequences blackswan --set band_px=6 --set flow_preset=fast
    python tools/bench/vos.py --root runs/composite_vos --methods propagator   # tools/make_composite_vos.py
"""
from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg._io import write_json  # noqa: E402
from edgeseg.cli._common import print_table  # noqa: E402

ABLATIONS = {  # name -> PropagatorConfig changes
    "no object flow": {"object_flow": False},
    "no motion veto": {"motion_veto": False},
    "no veto inside the mask": {"veto_interior": False},
    "no growth where moving": {"grow_moving": False},
    "growth: band only, no weaker prior": {"grow_reliability": False},
    "growth: reliability every frame": {"grow_rel_fixed": False},
    "session-9 propagator (no interior veto, no growth)": {"veto_interior": False, "grow_moving": False},
    "no local colour": {"local_colour": False},
    "no global colour": {"global_colour": False},
    "no colour at all": {"local_colour": False, "global_colour": False},
    "no guided filter": {"refine": False},
    "no component rule": {"components": False},
    "+ hole filling": {"fill_holes": 0.1},
    "+ photometric test": {"photometric": True},
    "flow preset fast": {"flow_preset": "fast"},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="DAVIS root (default: the data folder's davis2016/)")
    p.add_argument("--resolution", default="480p")
    p.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all)")
    p.add_argument("--methods", default="copy-first,flow-warp,propagator",
                   help="comma-separated: copy-first, flow-warp, propagator")
    p.add_argument("--ablate", action="store_true", help="also run the propagator with each component switched off")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="PropagatorConfig override (repeatable)")
    p.add_argument("--threads", type=int, default=2, help="OpenCV threads (default 2)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def _rss_mb() -> float:
    """The process's current resident set size (Linux), MB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _config(overrides: list[str]):
    from edgeseg.video import PropagatorConfig

    types = {f.name: f.type for f in fields(PropagatorConfig)}
    kw = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"unknown PropagatorConfig field {key!r}; known: {', '.join(types)}")
        t = str(types[key])
        if value.lower() == "none" and "None" in t:  # optional fields ("float | None") take none
            kw[key] = None
            continue
        convert = {"bool": lambda v: v.lower() in ("1", "true", "yes"), "int": int, "float": float}.get(t.split(" |")[0], str)
        kw[key] = convert(value)
    return PropagatorConfig(**kw)


def state_mb(obj, seen=None) -> float:
    """MB of the numpy arrays an object holds (recursively): a propagator's state."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0.0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes / 2**20
    if isinstance(obj, dict):
        return sum(state_mb(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_mb(v, seen) for v in obj)
    return state_mb(vars(obj), seen) if hasattr(obj, "__dict__") else 0.0


def run_sequence(make, frames: list[np.ndarray], prompt: np.ndarray) -> tuple[list[np.ndarray], float, float, float]:
    """Propagate; returns (id masks per frame, fps of the steps, RSS growth MB from frame 10 to the end,
    state MB at the end). Predictions are kept PNG-encoded so that they do not count as growth."""
    import cv2

    prop = make()
    out, steps = [], 0.0
    rss_early = None
    for i, rgb in enumerate(frames):
        if i == 0:
            r = prop.start(rgb, prompt)
        else:
            t = time.perf_counter()
            r = prop.step(rgb)
            steps += time.perf_counter() - t
        ids = np.zeros(rgb.shape[:2], np.uint8)
        for m, k in zip(r.masks, r.object_ids):
            ids[m] = int(k)
        out.append(cv2.imencode(".png", ids)[1])
        if i == min(10, len(frames) - 1):
            rss_early = _rss_mb()
    fps = (len(frames) - 1) / steps if steps else float("nan")
    growth = _rss_mb() - rss_early
    return [cv2.imdecode(b, cv2.IMREAD_UNCHANGED) for b in out], fps, growth, state_mb(prop)


def main(argv=None) -> int:
    import cv2

    from edgeseg.data.davis import Davis
    from edgeseg.eval.vos import VOSMetric
    from edgeseg.paths import data_root
    from edgeseg.video import CopyFirstMask, FlowWarp, Propagator

    args = parse_args(argv)
    cv2.setNumThreads(args.threads)
    root = Path(args.root) if args.root else (data_root() or Path("../shared/data")) / "davis2016"
    seqs = [s for s in args.sequences.split(",") if s] if args.sequences else None
    davis = Davis(root, args.resolution, sequences=seqs)
    config = _config(args.set)
    methods = {"copy-first": CopyFirstMask, "flow-warp": FlowWarp, "propagator": lambda: Propagator(config)}
    runs = [(m, methods[m]) for m in args.methods.split(",") if m]
    if args.ablate:
        runs += [(name, (lambda c: lambda: Propagator(c))(replace(config, **change))) for name, change in ABLATIONS.items()]
    data = [(seq.name, list(seq.frames())) for seq in davis]
    rows, results = [], []
    for method, make in runs:
        metric, fps_all = VOSMetric(), []
        for name, frames in data:
            images = [f.image for f in frames]
            pred, fps, growth, state = run_sequence(make, images, frames[0].mask)
            objs = metric.update(name, [f.mask for f in frames], pred, [f.name for f in frames])
            j = float(np.mean([o.j_stats.mean for o in objs]))
            f = float(np.mean([o.f_stats.mean for o in objs]))
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            rows.append({"method": method, "sequence": name, "frames": len(frames), "J": 100 * j, "F": 100 * f,
                         "J&F": 50 * (j + f), "fps": fps, "peak RSS MB": peak, "RSS growth MB": growth,
                         "state MB": state})
            fps_all.append((len(frames) - 1, fps))
        s = metric.compute()
        n = sum(k for k, _ in fps_all)
        mean_fps = n / sum(k / v for k, v in fps_all)  # frames over total time
        rows.append({"method": method, "sequence": "ALL", "frames": n + len(fps_all), "J": 100 * s.j_mean,
                     "F": 100 * s.f_mean, "J&F": 100 * s.jf, "fps": mean_fps})
        results.append({"method": method, "summary": s.summary(), "per_object": s.per_object(), "fps": mean_fps})
        print(f"{method}: J&F {100 * s.jf:.1f}", file=sys.stderr)
    print(f"DAVIS {root} ({len(data)} sequences, {args.resolution}), {args.threads} OpenCV threads, "
          f"{platform.processor() or platform.machine()}")
    print_table(rows)
    write_json(args.json, {"root": str(root), "threads": args.threads, "machine": platform.platform(),
                           "processor": platform.processor(), "config": asdict(config), "rows": rows, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
