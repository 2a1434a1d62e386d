"""The Ray Serve applications: one per bundle, whose replicas take predict requests straight from the
HTTP proxy (one Ray hop), plus a small ingress for everything else.

Imports Ray at module level: only :func:`edgeseg.serve.serve` (and Ray's workers) import this module.

* ``BundleReplica`` (application ``edgeseg-bundle-NAME``, route prefix ``/v1/bundles/NAME``) loads
  the bundle with :func:`edgeseg.predictor.load` (the runner and decoder of local inference), takes
  ``POST .../predict`` itself (decodes the body, gathers frames from all clients with ``@serve.batch``,
  answers JSON) and ``GET .../stats``.
* ``Ingress`` (application ``edgeseg``, route prefix ``/``, deployed before the bundles): ``/healthz``, ``/readyz``,
  ``/v1/bundles``, a 503 for a bundle still starting (its predict lands here until its own route is live), and a 404
  naming the served bundles for any other path (an unknown bundle's predict lands here).
* ``StatsBoard`` (application ``edgeseg-stats``, no route): the batch counts of every replica.

Routes: :mod:`edgeseg.remote` (the client); the wire format: :mod:`edgeseg.wire`. The proxy sends a path to the application with the
longest matching route prefix, so a predict request goes proxy -> replica, not proxy -> ingress ->
replica (each Ray hop costs ~10 ms on a small VM; docs/deployment.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any, Awaitable, Callable

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..errors import EdgesegError, InputError
from ..wire import MAX_IMAGE_PIXELS, RAW, SHAPE_HEADER, decode_frame, encode_result
from .batching import BatchStats, infer_batch

READY_TIMEOUT_S = 5.0
APP_NAME = "edgeseg"  # the ingress application (route "/")
STATS_APP = "edgeseg-stats"
BUNDLE_APP_PREFIX = "edgeseg-bundle-"
log = logging.getLogger(__name__)


def bundle_app(name: str) -> str:
    """The Serve application that serves bundle ``name``."""
    return BUNDLE_APP_PREFIX + name


def bundle_route(name: str) -> str:
    """The route prefix of bundle ``name``'s application: its replicas answer every path below it."""
    return f"/v1/bundles/{name}"


async def _answer(request: Request, route: Callable[[], Awaitable[Response]]) -> Response:
    """Run a route; edgeseg errors become 400 (bad input) or 500 answers, anything else a logged 500."""
    try:
        return await route()
    except _HttpError as e:
        return JSONResponse({"error": str(e)}, e.status)
    except InputError as e:
        return JSONResponse({"error": str(e)}, 400)
    except EdgesegError as e:
        return JSONResponse({"error": str(e)}, 500)
    except Exception as e:  # noqa: BLE001  (a replica's failure, wrapped by Ray: answer it, keep serving)
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"{type(e).__name__}: {e}"}, 500)


#: the largest request body a frame can need: a 16-bit RGB PNG at :data:`~edgeseg.wire.MAX_IMAGE_PIXELS` (twice raw
#: RGB at the cap), and some slack
MAX_BODY_BYTES = 6 * MAX_IMAGE_PIXELS + (1 << 20)
#: a body may pause this long between its bytes, and after :data:`BODY_GRACE_S` must have come at least this fast on
#: average (16 KB/s: a tenth of a slow cellular uplink; the remote client's own timeout_s bounds the whole request)
BODY_IDLE_S, BODY_GRACE_S, BODY_MIN_RATE = 5.0, 10.0, 16 * 1024


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def _read_body(request: Request) -> bytes:
    """The request body, or a 413 (longer than any frame can be) / 408 (stalled: no byte for :data:`BODY_IDLE_S`, or
    slower than :data:`BODY_MIN_RATE` once :data:`BODY_GRACE_S` have passed). A replica holds a request's slot while
    its body arrives: 32 clients sending 10 bytes and then nothing held every slot, and the server answered no one,
    ``/readyz`` included, until they hung up (session 50's fuzzing); a 150 MB body was read whole before it was
    refused."""
    length = request.headers.get("content-length")
    try:
        declared = int(length) if length is not None else None
    except ValueError:
        declared = None
    if declared is not None and declared > MAX_BODY_BYTES:
        raise _HttpError(413, f"the request body is {declared:,} bytes; a frame needs at most {MAX_BODY_BYTES:,} "
                              f"(a 16-bit PNG at {MAX_IMAGE_PIXELS:,} pixels)")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    started = time.monotonic()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), BODY_IDLE_S)
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise _HttpError(408, f"the request body stalled: no byte for {BODY_IDLE_S:g} s after {size:,} of "
                                  f"{declared if declared is not None else '?'} bytes") from None
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _HttpError(413, f"the request body is over {MAX_BODY_BYTES:,} bytes, more than a frame needs")
        chunks.append(chunk)
        elapsed = time.monotonic() - started
        if elapsed > BODY_GRACE_S and size < BODY_MIN_RATE * elapsed:
            raise _HttpError(408, f"the request body is arriving at {size / elapsed / 1024:.1f} KB/s, below the "
                                  f"{BODY_MIN_RATE // 1024} KB/s a frame's upload needs")


def _frame_error(e: Exception, bundle: str) -> dict[str, Any]:
    """One frame's failure as its JSON answer: 400 for bad input, 500 (logged with its traceback) otherwise."""
    if isinstance(e, InputError):
        return {"error": str(e), "status": 400}
    if not isinstance(e, EdgesegError):
        log.error("bundle %s: a frame failed", bundle, exc_info=e)
    return {"error": str(e) if isinstance(e, EdgesegError) else f"{type(e).__name__}: {e}", "status": 500}


@serve.deployment
class BundleReplica:
    """One replica: a predictor for one bundle, fed batches of frames from many clients; the HTTP
    side of ``/v1/bundles/NAME/predict`` and ``/v1/bundles/NAME/stats``."""

    def __init__(self, name: str, bundle: str, backend: str, precision: str, threads: int, max_batch: int,
                 batch_wait_s: float, board: Any = None, target: str | None = None, device: str = "auto",
                 decoder: dict[str, Any] | None = None):
        from ..predictor import load
        from ..structures.decoder_options import overridden

        self.name = name
        self.predictor = load(bundle, backend=backend, precision=precision, target=target, device=device, threads=threads)
        if decoder:  # edgeseg serve --score-threshold / --upsample: checked by serve() before Ray started
            m = self.predictor.manifest
            self.predictor.options = overridden(self.predictor.options, decoder, m.task, m.name)
        self.predictor.runner.activate()
        self.predict_batch.set_max_batch_size(max_batch)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.board = board  # StatsBoard handle: counts of every replica, for /v1/bundles/NAME/stats

    def _in_flight(self, k: int) -> None:
        """A predict request began (+1) or was answered (-1): told to the board, which a stopping server asks how many
        are still in flight (:meth:`edgeseg.serve.launch.Server.shutdown` drains them). Not awaited."""
        if self.board is not None:
            self.board.in_flight.remote(k)

    async def __call__(self, request: Request) -> Response:
        return await _answer(request, lambda: self._route(request))

    async def _route(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]  # the full path: /v1/bundles/NAME/...
        action = parts[3] if len(parts) == 4 and parts[:3] == ["v1", "bundles", self.name] else None
        if action == "stats":
            if self.board is None:
                return JSONResponse({"error": "this deployment keeps no batch counts"}, 404)
            return JSONResponse(await self.board.get.remote(self.name))
        if action != "predict":
            return JSONResponse({"error": f"no route {request.url.path!r}",
                                 "routes": [f"POST /v1/bundles/{self.name}/predict", f"GET /v1/bundles/{self.name}/stats"]},
                                404)
        if request.method != "POST":
            return JSONResponse({"error": "predict takes POST with an image body"}, 405)
        self._in_flight(1)
        try:
            return await self._predict(request)
        finally:
            self._in_flight(-1)

    async def _predict(self, request: Request) -> Response:
        body, ctype = await _read_body(request), request.headers.get("content-type", "")
        shape = request.headers.get(SHAPE_HEADER)
        if ctype.split(";")[0].strip().lower() in ("", RAW):  # a view of the body: no work to move off the loop
            rgb = decode_frame(body, ctype, shape)
        else:  # PNG/JPEG decoding takes ms: keep the event loop free to gather batches
            rgb = await asyncio.to_thread(decode_frame, body, ctype, shape)
        answer = await self.predict_batch(rgb)
        return JSONResponse(answer, answer.pop("status", 200))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def predict_batch(self, frames: list[np.ndarray]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        results = await asyncio.to_thread(self._run, frames)  # keeps the replica's event loop free to gather the next batch
        seconds = time.perf_counter() - t0
        if self.board is not None:  # not awaited: counting never delays an answer; answered errors counted apart
            failed = sum(1 for r in results if isinstance(r, dict) and "error" in r and r.get("status", 200) >= 400)
            self.board.record.remote(self.name, self.replica, len(frames), seconds, failed)
        return results

    def _run(self, frames: list[np.ndarray]) -> list[dict[str, Any]]:
        try:
            results: list[Any] = infer_batch(self.predictor, frames)
        except Exception as e:  # noqa: BLE001  one bad frame must not fail the others of its batch: answer frame by frame
            results = [e] if len(frames) == 1 else [self._one(rgb) for rgb in frames]
        out: list[dict[str, Any]] = []
        for r in results:
            if isinstance(r, Exception):
                out.append(_frame_error(r, self.name))
                continue
            try:
                out.append(encode_result(r))
            except Exception as e:  # noqa: BLE001  this frame fails (400: its input; 500: ours), the batch goes on
                out.append(_frame_error(e, self.name))
        return out

    def _one(self, rgb: np.ndarray) -> Any:
        try:
            return infer_batch(self.predictor, [rgb])[0]
        except Exception as e:  # noqa: BLE001  (answered as this frame's error)
            return e

    async def predict(self, rgb: np.ndarray) -> dict[str, Any]:
        """One frame through the batch, for callers holding a deployment handle (the result's JSON)."""
        return await self.predict_batch(rgb)

    def info(self) -> dict[str, Any]:
        p = self.predictor
        m = p.manifest
        return {"name": self.name, "task": m.task, "classes": list(p.classes), "backend": p.backend,
                "precision": p.runner.precision, "input": m.input.to_dict(), "palette": [list(c) for c in m.palette]}


@serve.deployment
class StatsBoard:
    """Batch counts of every replica of every bundle (one replica of this deployment holds them all)."""

    def __init__(self):
        self.boards: dict[tuple[str, str], BatchStats] = {}
        self._requests = 0  # predict requests in flight, every replica's (+1/-1 told in any order: a sum)
        self._lock = threading.Lock()

    def in_flight(self, k: int | None = None) -> int:
        """Add ``k`` (a replica's +1 or -1) to the requests in flight; the count (without ``k``: just read it)."""
        with self._lock:
            self._requests += k or 0
            return self._requests

    def record(self, bundle: str, replica: str, size: int, seconds: float, errors: int = 0) -> None:
        self.boards.setdefault((bundle, replica), BatchStats()).record(size, seconds, errors)

    def get(self, bundle: str) -> dict[str, Any]:
        mine = {r: s for (b, r), s in self.boards.items() if b == bundle}
        total = BatchStats()
        for s in mine.values():
            total.merge(s)
        return {**total.to_dict(), "replicas": {r: s.to_dict() for r, s in sorted(mine.items())}}


@serve.deployment
class Ingress:
    """``/healthz``, ``/readyz``, ``/v1/bundles``; 404 for the rest (each bundle's own routes go to its replicas).

    Deployed before the bundles (session 58): ``/healthz`` answers 200 while their replicas load (20-50 s on a first
    start), where the proxy answered 404 to every path until the last application was up (a liveness probe without
    an initial delay killed the server it was waiting for), ``/readyz`` 503 with each bundle's state, and a predict
    request to a bundle still starting a 503 (which edgeseg's client retries) instead of "no bundle here"."""

    def __init__(self, names: list[str]):
        self.names = list(names)  # the served bundles' names, in order
        self.handles: dict[str, Any] = {}  # name -> its application's handle, once the application exists
        self.draining = False  # the server is stopping: /readyz answers 503 so that load balancers send no more

    def drain(self) -> None:
        self.draining = True

    async def __call__(self, request: Request) -> Response:
        return await _answer(request, lambda: self._route(request))

    async def _route(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        if parts == ["healthz"]:
            return PlainTextResponse("ok")
        if parts == ["readyz"]:
            return await self._ready()
        if parts == ["v1", "bundles"]:
            handles = [await self._handle(n) for n in self.names]
            if None in handles:
                return _starting([n for n, h in zip(self.names, handles) if h is None])
            infos = await asyncio.gather(*(h.info.remote() for h in handles))
            return JSONResponse({"bundles": infos})
        if len(parts) >= 3 and parts[:2] == ["v1", "bundles"]:
            if parts[2] in self.names:  # its own route is not live yet: its application is still being deployed
                return _starting([parts[2]])
            return JSONResponse({"error": f"no bundle {parts[2]!r} here; served: {sorted(self.names)}"}, 404)
        return JSONResponse({"error": f"no route {request.url.path!r}"}, 404)

    async def _handle(self, name: str) -> Any | None:
        """The handle of bundle ``name``'s application; None while it does not exist yet."""
        handle = self.handles.get(name)
        if handle is None:
            try:  # (a controller call: off the event loop)
                handle = await asyncio.get_running_loop().run_in_executor(None, serve.get_app_handle, bundle_app(name))
            except Exception:  # noqa: BLE001  (not deployed yet: starting)
                return None
            self.handles[name] = handle
        return handle

    async def _ready(self) -> Response:
        if self.draining:
            return JSONResponse({"ready": False, "draining": True}, 503)
        states = await asyncio.get_running_loop().run_in_executor(None, _app_states)

        async def ask(name: str) -> tuple[str, str | None]:
            state, message = states.get(bundle_app(name), ("", "")) if states is not None else ("RUNNING", "")
            if not state:
                return name, "starting: its application is not deployed yet"
            if state == "DEPLOY_FAILED":
                return name, f"its replicas failed to start: {message}".strip()
            handle = await self._handle(name)
            if handle is None:
                return name, "starting: its application is not deployed yet"
            timeout = READY_TIMEOUT_S if state != "DEPLOYING" else STARTING_TIMEOUT_S
            try:
                await asyncio.wait_for(handle.info.remote(), timeout)
                return name, None
            except asyncio.TimeoutError:  # (its text is empty: "TimeoutError: " said nothing, an audit)
                if state == "DEPLOYING":
                    return name, "starting: its replicas are loading the bundle"
                return name, f"its replicas gave no answer within {READY_TIMEOUT_S:g} s (starting, or restarting)"
            except Exception as e:  # noqa: BLE001  (any failure means: not ready; say which and why)
                return name, f"{type(e).__name__}: {e}"

        answers = await asyncio.gather(*(ask(n) for n in self.names))
        failed = {n: why for n, why in answers if why}
        body = {"ready": not failed, "bundles": {n: why or "ready" for n, why in answers}}
        return JSONResponse(body, 503 if failed else 200)


#: how long /readyz waits for a replica of a bundle whose application is still being deployed
STARTING_TIMEOUT_S = 0.5


def _app_states() -> dict[str, tuple[str, str]] | None:
    """Serve's applications: name -> (status, message); None where the controller cannot be asked (then each bundle
    is asked as if running)."""
    try:
        return {name: (str(getattr(app.status, "value", app.status)), app.message or "")
                for name, app in serve.status().applications.items()}
    except Exception:  # noqa: BLE001
        return None


def _starting(names: list[str]) -> Response:
    """503 for a request that reached the ingress because bundle ``names`` are still starting (retried by the client
    after ``Retry-After``)."""
    return JSONResponse({"error": f"bundle(s) {', '.join(names)} still starting: their replicas are loading; try again "
                                  f"shortly (GET /readyz says when they are ready)"}, 503, headers={"Retry-After": "2"})


def stats_app():
    """The application holding the :class:`StatsBoard` (no HTTP route)."""
    return StatsBoard.options(name="stats", num_replicas=1, max_ongoing_requests=1024,
                              ray_actor_options={"num_cpus": 0}).bind()


#: requests queued per caller (the HTTP proxy) beyond the ongoing ones, as a multiple of those
QUEUE_PER_ONGOING = 2


def bundle_apps(bundles: dict[str, str], board: Any, *, replicas: int, max_batch: int, batch_wait_s: float,
                backend: str, precision: str, threads: int, cpus_per_replica: float,
                gpus_per_replica: float, target: str | None = None, device: str = "auto",
                decoder: dict[str, Any] | None = None) -> dict[str, Any]:
    """Served name -> the bound application of its replicas (``bundles`` maps each name to what
    ``predictor.load`` opens; ``board``: the StatsBoard's handle)."""
    ongoing = max(4 * max_batch, 16)
    # a bound queue (an operator's audit, session 57: 150 requests at once to one replica all waited, p50 11.7 s, past
    # the client's 10 s): past it the proxy answers 503 at once, which edgeseg's client retries with back-off
    return {name: BundleReplica.options(
        name="bundle", num_replicas=replicas, max_ongoing_requests=ongoing, max_queued_requests=QUEUE_PER_ONGOING * ongoing,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
    ).bind(name, source, backend, precision, threads, max_batch, batch_wait_s, board, target, device, decoder)
        for name, source in bundles.items()}


def ingress_app(names: list[str]):
    """The ingress application of the bundles named ``names`` (it finds their applications by name)."""
    return Ingress.options(name="ingress", max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0}).bind(names)
