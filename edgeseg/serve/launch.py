"""``edgeseg.serve.serve(bundles, ...)``: start (or join) Ray, deploy the bundles, return a :class:`Server`."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..bundle import Bundle
from ..errors import BackendUnavailable, InputError, UnsupportedError

log = logging.getLogger(__name__)

APP_NAME = "edgeseg"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    """A running deployment: its URL, the bundles it serves, and how to stop it."""

    url: str
    bundles: tuple[str, ...]
    started_ray: bool  # shutdown() stops Ray too only when serve() started it

    def shutdown(self) -> None:
        """Stop the Serve application and proxy (and the local Ray instance serve() started)."""
        import ray
        from ray import serve

        if not ray.is_initialized():  # already stopped (a second call is a no-op)
            return
        serve.shutdown()
        if self.started_ray:
            ray.shutdown()


def _ray():
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise BackendUnavailable(f"edgeseg serve needs Ray Serve, which is not installed ({e})",
                                 fix='pip install "edgeseg[serve]"  (ray[serve] >= 2.40)') from None
    return ray, serve


def _names(bundles: Sequence[str | os.PathLike]) -> dict[str, str]:
    """Served name (the manifest's) -> what the replicas open (a shipped name or an absolute path)."""
    if not bundles:
        raise InputError("serve needs at least one bundle", fix="edgeseg serve shapes  (or a bundle path)")
    out: dict[str, str] = {}
    for spec in bundles:
        text = os.fspath(spec)
        source = text if not Path(text).exists() else str(Path(text).resolve())  # workers may run elsewhere: no relative paths
        manifest = Bundle.open(Path(source) if Path(source).exists() else source).manifest
        if manifest.task != "semantic":
            raise UnsupportedError(f"edgeseg serve answers semantic results only; {text} is a {manifest.task} bundle",
                                   fix="run it locally (edgeseg run / edgeseg.load) for now")
        name = manifest.name
        if name in out:
            raise InputError(f"two bundles are both named {name!r} ({out[name]} and {source})",
                             fix="serve them from separate servers, or rename one bundle")
        out[name] = source
    return out


def serve(bundles: Sequence[str | os.PathLike], address: str = LOOPBACK, port: int = 8000, replicas: int = 1,
          max_batch: int = 8, *, batch_wait_s: float = 0.005, backend: str = "auto", precision: str = "auto",
          threads: int = 0, cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0,
          ray_address: str | None = None, num_cpus: int | None = None) -> Server:
    """Deploy ``bundles`` on Ray Serve and return once every replica is ready.

    address/port: where the HTTP ingress listens (loopback by default; ``0.0.0.0`` exposes it, see
    docs/deployment.md). replicas: per bundle. max_batch: the most frames one replica runs at once
    (``@serve.batch``), waiting at most ``batch_wait_s`` to fill a batch. backend/precision/threads:
    as :func:`edgeseg.load`, resolved in each replica. ray_address: an existing cluster (``"auto"``,
    ``"ray://head:10001"``); None starts a local Ray instance (``num_cpus`` logical CPUs) that
    :meth:`Server.shutdown` stops again.
    """
    if replicas < 1 or max_batch < 1 or batch_wait_s < 0 or not 0 < port < 65536:
        raise InputError(f"need replicas >= 1, max_batch >= 1, batch_wait_s >= 0 and a port in 1..65535 "
                         f"(got {replicas}, {max_batch}, {batch_wait_s}, {port})")
    names = _names(bundles)
    ray, rs = _ray()
    from .app import build_app

    started = False
    if not ray.is_initialized():
        ray.init(address=ray_address or "local", include_dashboard=False, num_cpus=num_cpus, log_to_driver=False,
                 configure_logging=False)
        started = ray_address is None
    rs.start(http_options={"host": address, "port": port})
    app = build_app(names, replicas=replicas, max_batch=max_batch, batch_wait_s=batch_wait_s, backend=backend,
                    precision=precision, threads=threads, cpus_per_replica=cpus_per_replica,
                    gpus_per_replica=gpus_per_replica)
    t0 = time.monotonic()
    rs.run(app, name=APP_NAME, route_prefix="/", blocking=False)  # returns once the replicas are running
    host = LOOPBACK if address in ("0.0.0.0", "::") else address
    server = Server(url=f"http://{host}:{port}", bundles=tuple(names), started_ray=started)
    log.info("serving %s at %s (%d replica(s) each, batches up to %d) after %.1f s", ", ".join(names), server.url,
             replicas, max_batch, time.monotonic() - t0)
    return server
