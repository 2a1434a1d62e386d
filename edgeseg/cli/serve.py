"""``edgeseg serve BUNDLE...``: serve bundles over HTTP from a Ray Serve cluster (the extra ``edgeseg[serve]``)."""
from __future__ import annotations

import argparse

from ._common import add_runtime_options

NAME = "serve"
HELP = ("serve bundles over HTTP on Ray Serve: replicas batch frames from many cameras; "
        "clients: edgeseg.load(URL), edgeseg run --remote URL")
EXAMPLES = (
    "edgeseg serve shapes                                   # http://127.0.0.1:8000 (loopback only)",
    "edgeseg serve road.edgeseg --replicas 2 --max-batch 8 --backend onnxruntime --precision fp32",
    "edgeseg serve road --address 0.0.0.0 --port 8080       # reachable from the LAN: firewall it (docs/deployment.md)",
    "edgeseg serve road --ray-address auto                  # join a running cluster (ray start --head ...)",
    "edgeseg serve street-instance --score-threshold 0.4   # the server decodes: every client gets this threshold",
    "curl http://127.0.0.1:8000/readyz; curl --data-binary @street.png -H 'Content-Type: image/png' "
    "http://127.0.0.1:8000/v1/bundles/road/predict",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle paths or shipped names (each served under its manifest name)")
    p.add_argument("--address", default="127.0.0.1", help="where the HTTP ingress listens (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--replicas", type=int, default=1, help="replicas per bundle (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="most frames one replica runs at once (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="longest wait to fill a batch (default 5 ms)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="Ray CPUs reserved per replica (default 1)")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, help="Ray GPUs per replica, fractions allowed (default 0)")
    p.add_argument("--ray-address", default=None,
                   help="an existing Ray cluster ('auto', 'ray://head:10001'); default: start a local one on this machine")
    add_runtime_options(p)
    g = p.add_argument_group("decoding (the server decodes: remote clients cannot change these)")
    g.add_argument("--score-threshold", type=float, default=None, metavar="T",
                   help="instance and panoptic bundles: drop detections scoring below T (a Panoptic-DeepLab: centres "
                        "scoring at or below T); default: each bundle's")
    g.add_argument("--upsample", choices=["logits", "labels"], default=None,
                   help="semantic bundles: upsample logits then argmax (exact, default) or labels (fast)")


def run(args: argparse.Namespace) -> int:
    import time

    from ..serve import serve

    server = serve(args.bundles, address=args.address, port=args.port, replicas=args.replicas, max_batch=args.max_batch,
                   batch_wait_s=args.batch_wait_ms / 1e3, backend=args.backend, precision=args.precision,
                   threads=args.threads, target=args.target, device=args.device, cpus_per_replica=args.cpus_per_replica,
                   gpus_per_replica=args.gpus_per_replica, ray_address=args.ray_address,
                   decoder={"score_threshold": args.score_threshold, "upsample": args.upsample})
    # Ctrl-C (exit 130) and SIGTERM (exit 143; serve() hands it back from Ray's abort handler) stop the
    # applications and the local Ray instance cleanly
    print(f"serving {', '.join(server.bundles)} at {server.url}  (ready: {server.url}/readyz; Ctrl-C or SIGTERM stops)", flush=True)
    for name in server.bundles:
        print(f"  predict: POST {server.url}/v1/bundles/{name}/predict   client: edgeseg.load({server.url + '/' + name!r})")
    from ..serve.health import EVERY_S, HealthWatch

    try:  # a replica that crashes (and Serve restarts) is said in this log, not only in Ray's files
        watch = HealthWatch()
        while True:
            watch.poll()
            time.sleep(EVERY_S)
    finally:
        server.shutdown()
