"""The Ray Serve application: one :class:`BundleReplica` deployment per bundle behind one :class:`Ingress`.

Imports Ray at module level: only :func:`edgeseg.serve.serve` (and Ray's workers) import this module.

* ``BundleReplica`` loads the bundle with :func:`edgeseg.predictor.load` (the runner and decoder of
  local inference) and gathers frames from all clients with ``@serve.batch``.
* ``Ingress`` is the HTTP side (routes in :mod:`edgeseg.remote`): it decodes request bodies, sends
  frames to the bundle's replicas through a deployment handle and answers JSON.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from ..errors import EdgesegError, InputError
from ..remote import SHAPE_HEADER, decode_frame, encode_result
from .batching import BatchStats, infer_batch

READY_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)


@serve.deployment
class BundleReplica:
    """One replica: a predictor for one bundle, fed batches of frames from many clients."""

    def __init__(self, bundle: str, backend: str, precision: str, threads: int, max_batch: int, batch_wait_s: float,
                 board: Any = None):
        from ..predictor import load

        self.predictor = load(bundle, backend=backend, precision=precision, threads=threads)
        self.predictor.runner.activate()
        self.predict_batch.set_max_batch_size(max_batch)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.board = board  # StatsBoard handle: counts of every replica, for /v1/bundles/NAME/stats

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def predict_batch(self, frames: list[np.ndarray]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        results = await asyncio.to_thread(self._run, frames)  # keeps the replica's event loop free to gather the next batch
        seconds = time.perf_counter() - t0
        if self.board is not None:  # not awaited: counting never delays an answer
            self.board.record.remote(self.predictor.manifest.name, self.replica, len(frames), seconds)
        return results

    def _run(self, frames: list[np.ndarray]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            results = infer_batch(self.predictor, frames)
        except InputError:  # one bad frame must not fail the others of its batch: answer frame by frame
            results = []
            for rgb in frames:
                try:
                    results.append(infer_batch(self.predictor, [rgb])[0])
                except InputError as e:
                    results.append(e)
        for r in results:
            out.append({"error": str(r), "status": 400} if isinstance(r, Exception) else encode_result(r))
        return out

    async def predict(self, rgb: np.ndarray) -> dict[str, Any]:
        return await self.predict_batch(rgb)

    def info(self) -> dict[str, Any]:
        p = self.predictor
        return {"name": p.manifest.name, "task": p.manifest.task, "classes": list(p.classes), "backend": p.backend,
                "precision": p.runner.precision, "input": p.manifest.input.to_dict()}


@serve.deployment
class StatsBoard:
    """Batch counts of every replica of every bundle (one replica of this deployment holds them all)."""

    def __init__(self):
        self.boards: dict[tuple[str, str], BatchStats] = {}

    def record(self, bundle: str, replica: str, size: int, seconds: float) -> None:
        self.boards.setdefault((bundle, replica), BatchStats()).record(size, seconds)

    def get(self, bundle: str) -> dict[str, Any]:
        mine = {r: s for (b, r), s in self.boards.items() if b == bundle}
        total = BatchStats()
        for s in mine.values():
            total.merge(s)
        return {**total.to_dict(), "replicas": {r: s.to_dict() for r, s in sorted(mine.items())}}


@serve.deployment
class Ingress:
    """The HTTP routes: ``/healthz``, ``/readyz``, ``/v1/bundles``, ``/v1/bundles/{name}/predict|stats``."""

    def __init__(self, replicas: dict[str, Any], board: Any):
        self.replicas = replicas  # bundle name -> DeploymentHandle of its BundleReplica deployment
        self.board = board

    async def __call__(self, request: Request):
        parts = [p for p in request.url.path.split("/") if p]
        try:
            if parts == ["healthz"]:
                return PlainTextResponse("ok")
            if parts == ["readyz"]:
                return await self._ready()
            if parts == ["v1", "bundles"]:
                infos = await asyncio.gather(*(h.info.remote() for h in self.replicas.values()))
                return JSONResponse({"bundles": infos})
            if len(parts) == 4 and parts[:2] == ["v1", "bundles"] and parts[3] in ("predict", "stats"):
                handle = self.replicas.get(parts[2])
                if handle is None:
                    return JSONResponse({"error": f"no bundle {parts[2]!r} here; served: {sorted(self.replicas)}"}, 404)
                if parts[3] == "stats":
                    return JSONResponse(await self.board.get.remote(parts[2]))
                if request.method != "POST":
                    return JSONResponse({"error": "predict takes POST with an image body"}, 405)
                rgb = decode_frame(await request.body(), request.headers.get("content-type", ""), request.headers.get(SHAPE_HEADER))
                answer = await handle.predict.remote(rgb)
                return JSONResponse(answer, answer.pop("status", 200))
            return JSONResponse({"error": f"no route {request.url.path!r}"}, 404)
        except InputError as e:
            return JSONResponse({"error": str(e)}, 400)
        except EdgesegError as e:
            return JSONResponse({"error": str(e)}, 500)
        except Exception as e:  # noqa: BLE001  (a replica's failure, wrapped by Ray: answer it, keep serving)
            log.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, 500)

    async def _ready(self):
        async def ask(name: str, handle: Any) -> tuple[str, str | None]:
            try:
                await asyncio.wait_for(handle.info.remote(), READY_TIMEOUT_S)
                return name, None
            except Exception as e:  # noqa: BLE001  (any failure means: not ready; say which and why)
                return name, f"{type(e).__name__}: {e}"

        answers = await asyncio.gather(*(ask(n, h) for n, h in self.replicas.items()))
        failed = {n: why for n, why in answers if why}
        body = {"ready": not failed, "bundles": {n: why or "ready" for n, why in answers}}
        return JSONResponse(body, 503 if failed else 200)


def build_app(bundles: dict[str, str], *, replicas: int, max_batch: int, batch_wait_s: float, backend: str,
              precision: str, threads: int, cpus_per_replica: float, gpus_per_replica: float):
    """The bound application: ``bundles`` maps each served name to what ``predictor.load`` opens."""
    board = StatsBoard.options(name="stats", num_replicas=1, max_ongoing_requests=1024,
                               ray_actor_options={"num_cpus": 0}).bind()
    handles = {}
    for name, source in bundles.items():
        handles[name] = BundleReplica.options(
            name=f"bundle-{name}", num_replicas=replicas, max_ongoing_requests=max(4 * max_batch, 16),
            ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        ).bind(source, backend, precision, threads, max_batch, batch_wait_s, board)
    return Ingress.options(name="ingress", max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0}).bind(handles, board)
