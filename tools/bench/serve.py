#!/usr/bin/env python
"""Scale-out throughput: ``edgeseg serve`` on a local Ray cluster, many synthetic camera clients.

For each replica count (default 1 and 2) and batch size (default 1, 4, 8) the bundle is redeployed
on the same Ray instance and ``--clients`` threads, each one a camera with its own keep-alive
connection, send ``--frames`` synthetic frames each as fast as answers come back. Reported:
frames/s, client-side latency p50/p95, the mean batch the replicas actually ran, and the per-frame
overhead of the remote path against local inference of the same bundle/backend/precision
(one client sending ``--one-client-frames`` frames: remote p50 minus local p50; that is HTTP, the
frame and result encodings, and the Ray hop proxy -> replica). ``--bundle`` takes any task: shapes-instance, shapes-panoptic.

Everything (clients, proxy, replicas) shares this machine's CPUs, so on a small box the figures
measure the serving overhead more than a cluster's capacity; give the replicas their own nodes to
measure scale-out (docs/deployment.md).

    python tools/bench/serve.py --json bench_serve.json
    python tools/bench/serve.py --replicas 1 --batches 1 8 --clients 32 --frames 20
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402
from edgeseg.data.synthetic import SceneGenerator  # noqa: E402
from edgeseg.structures import ImageShape  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="shapes", help="bundle path or shipped name (default: shapes)")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1, help="runner intra-op threads per replica (default 1)")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replica counts (default 1 2)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], help="max batch sizes (default 1 4 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="longest wait to fill a batch (default 5)")
    p.add_argument("--clients", type=int, default=16, help="concurrent synthetic cameras (default 16)")
    p.add_argument("--frames", type=int, default=10, help="frames per client per configuration (default 10)")
    p.add_argument("--one-client-frames", type=int, default=50, metavar="N",
                   help="frames of the single client whose p50 gives the overhead column (default 50: a p50 of "
                        "10 moves by 10-20 ms on a busy machine)")
    p.add_argument("--size", default="160x120", help="frame size WxH (default 160x120)")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of the local Ray instance (default: all)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frames(n: int, size: ImageShape) -> list[np.ndarray]:
    return [f.image for f in SceneGenerator(size, seed=7).frames(n)]


def local_p50(args, frames) -> float:
    import edgeseg

    with edgeseg.load(args.bundle, backend=args.backend, precision=args.precision, threads=args.threads) as p:
        for rgb in frames[:5]:
            p(rgb)
        times = []
        for rgb in frames:
            t0 = time.perf_counter()
            p(rgb)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def drive(url: str, clients: int, frames: list[np.ndarray], per_client: int) -> dict:
    """``clients`` threads, each sending ``per_client`` frames back to back; latencies and wall time."""
    from edgeseg.remote import RemotePredictor

    remote = RemotePredictor(url, timeout_s=60.0)
    for rgb in frames[:2]:  # warm: connections, replicas, Serve's routing tables
        remote(rgb)
    before = remote.stats()

    def camera(k: int) -> list[float]:
        out = []
        for i in range(per_client):
            t0 = time.perf_counter()
            remote(frames[(k + i) % len(frames)])
            out.append(time.perf_counter() - t0)
        remote.close()
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = [t for times in pool.map(camera, range(clients)) for t in times]
    wall = time.perf_counter() - t0
    time.sleep(0.5)  # replicas report their batch counts without delaying answers
    after = remote.stats()  # over every replica of the bundle
    n, b = after["frames"] - before["frames"], after["batches"] - before["batches"]
    return {"fps": len(lat) / wall, "p50_ms": 1e3 * float(np.median(lat)), "p95_ms": 1e3 * float(np.percentile(lat, 95)),
            "mean_batch": n / b if b else float("nan")}


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    from edgeseg.serve import serve

    w, h = (int(v) for v in args.size.lower().split("x"))
    frames = _frames(32, ImageShape(h, w))
    local = local_p50(args, frames)
    ray.init(address="local", include_dashboard=False, num_cpus=args.num_cpus, log_to_driver=False, configure_logging=False)
    port, rows = _free_port(), []
    try:
        for replicas in args.replicas:
            for batch in args.batches:
                server = serve([args.bundle], port=port, replicas=replicas, max_batch=batch,
                               batch_wait_s=args.batch_wait_ms / 1e3, backend=args.backend, precision=args.precision,
                               threads=args.threads, cpus_per_replica=0.5)
                one = drive(server.url, 1, frames, args.one_client_frames)
                many = drive(server.url, args.clients, frames, args.frames)
                rows.append({"replicas": replicas, "max batch": batch, "clients": args.clients, "fps": many["fps"],
                             "p50 ms": many["p50_ms"], "p95 ms": many["p95_ms"], "mean batch": many["mean_batch"],
                             "1-client p50 ms": one["p50_ms"], "overhead ms": one["p50_ms"] - 1e3 * local})
                print(f"replicas {replicas}, batch {batch}: {many['fps']:.1f} frames/s", flush=True)
    finally:
        from ray import serve as rs

        rs.shutdown()
        ray.shutdown()
    print(f"\nlocal inference p50 {1e3 * local:.2f} ms/frame ({args.bundle}, {args.backend} {args.precision}, "
          f"{args.threads} thread(s)); host {platform.node()}, {os.cpu_count()} CPUs")
    print_table(rows)
    write_json(args.json, {"machine": platform.node(), "cpus": os.cpu_count(), "cpu": platform.processor(),
                           "bundle": args.bundle, "backend": args.backend, "precision": args.precision,
                           "size": args.size, "local_p50_ms": 1e3 * local, "ray": ray.__version__, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
