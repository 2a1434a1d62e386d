"""``edgeseg.serve.serve(bundles, ...)``: start (or join) Ray, deploy the bundles, return a :class:`Server`.

Three kinds of Serve application (:mod:`edgeseg.serve.app`): ``edgeseg-stats`` (the batch counts),
one ``edgeseg-bundle-NAME`` per bundle on the route ``/v1/bundles/NAME`` (its replicas answer predict
requests straight from the proxy), and ``edgeseg`` on ``/`` (health, readiness, the bundle list).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..bundle import Bundle
from ..errors import BackendUnavailable, EdgesegError, InputError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: how long a stopping server waits for the predict requests in flight (Docker's default stop timeout is 10 s, and Ray
#: takes a few seconds more to stop)
DRAIN_S = 5.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one URL path segment, as it is: /v1/bundles/NAME/predict


@dataclass(frozen=True)
class Server:
    """A running deployment: its URL, the bundles it serves, and how to stop it."""

    url: str
    bundles: tuple[str, ...]
    started_ray: bool  # shutdown() stops Ray too only when serve() started it

    def shutdown(self, drain_s: float = DRAIN_S) -> None:
        """Stop the Serve application and proxy (and the local Ray instance serve() started), after the predict
        requests in flight are answered (at most ``drain_s``; ``/readyz`` answers 503 meanwhile)."""
        import ray
        from ray import serve

        if not ray.is_initialized():  # already stopped (a second call is a no-op)
            return
        _drain(drain_s)
        serve.shutdown()
        if self.started_ray:
            ray.shutdown()


def _drain(drain_s: float) -> None:
    """Answer the requests in flight before Serve stops: ``/readyz`` turns 503 (load balancers send no more), then the
    board's count of predict requests in flight is watched until it has been 0 for 0.2 s, at most ``drain_s``. An
    operator's audit (session 57): SIGTERM with 12 requests in flight answered 2 of them (40: none), the others cut off
    (``RemoteDisconnected``). Never raises: a server that cannot be asked stops at once, as before."""
    from ray import serve

    from .app import APP_NAME, STATS_APP

    if not drain_s or drain_s <= 0:
        return
    try:
        serve.get_app_handle(APP_NAME).drain.remote().result(timeout_s=2.0)
        board = serve.get_app_handle(STATS_APP)
        deadline, quiet_since, said = time.monotonic() + drain_s, None, False
        while time.monotonic() < deadline:
            n = board.in_flight.remote().result(timeout_s=2.0)
            now = time.monotonic()
            if n > 0:
                quiet_since = None
                if not said:
                    log.warning("stopping: %d request(s) in flight, answered first (at most %g s)", n, drain_s)
                    said = True
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 0.2:  # (a request between the proxy and its replica is not counted yet)
                return
            time.sleep(0.05)
        log.warning("stopping: requests still in flight after %g s are cut off", drain_s)
    except Exception as e:  # noqa: BLE001 - not reachable, or its applications gone: stop now
        log.warning("stopping without answering the requests in flight first: %s", e)


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
        name = manifest.name
        if not _NAME.fullmatch(name):
            raise InputError(f"{text}: the bundle's name {name!r} cannot be a URL path segment (/v1/bundles/NAME)",
                             fix="rename the bundle (manifest 'name') to letters, digits, '.', '_' and '-'")
        if name in out:
            raise InputError(f"two bundles are both named {name!r} ({out[name]} and {source})",
                             fix="serve them from separate servers, or rename one bundle")
        out[name] = source
    return out


def serve(bundles: Sequence[str | os.PathLike], address: str = LOOPBACK, port: int = 8000, replicas: int = 1,
          max_batch: int = 8, *, batch_wait_s: float = 0.005, backend: str = "auto", precision: str = "auto",
          threads: int = 0, target: str | None = None, device: str = "auto", cpus_per_replica: float = 1.0,
          gpus_per_replica: float = 0.0, ray_address: str | None = None, num_cpus: int | None = None,
          decoder: dict[str, Any] | None = None) -> Server:
    """Deploy ``bundles`` on Ray Serve and return once every replica is ready.

    address/port: where the HTTP ingress listens (loopback by default; ``0.0.0.0`` exposes it, see
    docs/deployment.md). replicas: per bundle. max_batch: the most frames one replica runs at once
    (``@serve.batch``), waiting at most ``batch_wait_s`` to fill a batch. backend/precision/threads/
    target/device: as :func:`edgeseg.load`, resolved in each replica; a replica that cannot load its
    bundle so is an :class:`EdgesegError` naming the bundle and the replica's reason. decoder: decoder options every
    replica applies (``{"score_threshold": 0.4}``, ``{"upsample": "labels"}``: ``--score-threshold``, ``--upsample``;
    a remote client cannot set them), checked against each bundle's task before Ray starts. ray_address: an existing cluster (``"auto"``,
    ``"ray://head:10001"``); None starts a local Ray instance (``num_cpus`` logical CPUs) that
    :meth:`Server.shutdown` stops again.
    """
    for bad, what, fix in ((replicas < 1, f"--replicas must be >= 1, got {replicas}", "e.g. --replicas 1"),
                           (max_batch < 1, f"--max-batch must be >= 1, got {max_batch}", "e.g. --max-batch 8"),
                           (not 0 <= batch_wait_s < 60, f"--batch-wait-ms must be 0 to 60000, got {batch_wait_s * 1e3}",
                            "an infinite or NaN batch wait never answers a request: e.g. --batch-wait-ms 10"),
                           (not 0 < port < 65536, f"--port must be 1..65535, got {port}", "e.g. --port 8000")):
        if bad:  # one message per value, its own fix (a bad port's fix was about the batch wait); NaN fails too
            raise InputError(what, fix=fix)
    for name, v in (("cpus_per_replica", cpus_per_replica), ("gpus_per_replica", gpus_per_replica)):
        if v is not None and not 0 <= float(v) < 1e6:  # Ray's traceback, after it started, named neither (NaN too)
            raise InputError(f"{name} must be a number >= 0, got {v}",
                             fix=f"--{name.replace('_', '-')} 1 (a replica's share of the machine)")
    backend, precision, device = _check_runtime(backend, precision, threads, device)
    names = _names(bundles)
    decoder = {k: v for k, v in (decoder or {}).items() if v is not None}
    _check_decoder(names, decoder)
    ray, rs = _ray()
    from .app import APP_NAME, STATS_APP, bundle_app, bundle_apps, bundle_route, ingress_app, stats_app

    started = False
    if not ray.is_initialized():
        if ray_address is not None:
            _check_reachable(ray_address)
        else:  # a fresh local Serve binds this port itself (joining a cluster: its proxy may already hold it)
            _check_port(address, port)
        if ray_address is None:
            _decline_usage_stats()
            _patient_proxy()
        sigterm = _sigterm_handler()
        try:
            ray.init(address=ray_address or "local", include_dashboard=False, num_cpus=num_cpus,
                     log_to_driver=False, configure_logging=False)
        finally:  # also when ray.init raises: Ray's C++ handler may already be installed
            _restore_sigterm(sigterm)
        started = ray_address is None
        if started:
            _check_fits(ray, len(names) * replicas, cpus_per_replica, gpus_per_replica)
    server = Server(url=f"http://{LOOPBACK if address in ('0.0.0.0', '::') else address}:{port}", bundles=tuple(names),
                    started_ray=started)
    t0 = time.monotonic()
    try:
        rs.start(http_options={"host": address, "port": port})
        _drop_other_bundles(rs, {bundle_app(n) for n in names})
        # each run returns once its replicas are running; the bundles' replicas get the board's handle,
        # the ingress every bundle's
        board = rs.run(stats_app(), name=STATS_APP, route_prefix=None)
        # the ingress first: /healthz answers (and /readyz says "starting") while the bundles' replicas load
        rs.run(ingress_app(list(names)), name=APP_NAME, route_prefix="/")
        apps = bundle_apps(names, board, replicas=replicas, max_batch=max_batch, batch_wait_s=batch_wait_s,
                           backend=backend, precision=precision, threads=threads, target=target, device=device,
                           cpus_per_replica=cpus_per_replica, gpus_per_replica=gpus_per_replica, decoder=decoder)
        _run_all(rs, [(bundle_app(n), bundle_route(n), app) for n, app in apps.items()])
    except Exception as e:  # a replica that cannot load its bundle, a proxy that cannot bind: say which and why
        error = _deploy_error(rs, e, list(names), address, port)
        if started:  # leave no local Ray instance behind (a joined cluster keeps the failed application's status)
            with contextlib.suppress(Exception):
                server.shutdown()
        if error is None:
            raise
        raise error from None
    log.info("serving %s at %s (%d replica(s) each, batches up to %d) after %.1f s", ", ".join(names), server.url,
             replicas, max_batch, time.monotonic() - t0)
    return server


def _check_decoder(names: dict[str, str], decoder: dict[str, Any]) -> None:
    """Each bundle takes the decoder options asked for (a semantic bundle has no score threshold), before Ray starts."""
    if not decoder:
        return
    from ..bundle import Bundle
    from ..structures.decoder_options import overridden

    for name, source in names.items():
        m = Bundle.open(source, verify=False).manifest
        try:
            overridden(m.decoder_options, decoder, m.task, m.name)
        except InputError as e:
            raise InputError(f"{name}: {str(e).splitlines()[0]}",
                             fix="serve bundles that take it, or start one server per setting"
                             if "does not apply" in str(e) else e.fix) from None


def _check_runtime(backend: str, precision: str, threads: int, device: str) -> tuple[str, str, str]:
    """What every replica would refuse when loading its bundle, refused here before Ray starts; returns
    (backend, precision, device) spelt as :func:`edgeseg.load` reads them (case and surrounding spaces
    ignored: ``"ONNXRuntime"``, ``"FP32"``, ``"CPU"``)."""
    from ..backends import BACKENDS
    from ..backends.choice import PRECISIONS

    for what, value in (("backend", backend), ("precision", precision), ("device", device)):
        if not isinstance(value, str):
            raise InputError(f"{what} must be a string, got {value!r}", fix=f"{what}='auto' chooses it on each replica")
    backend, precision, device = (v.strip().lower() for v in (backend, precision, device))  # as edgeseg.load
    if backend != "auto" and backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", fix=f"use one of auto, {', '.join(BACKENDS)}")
    if precision != "auto" and precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", fix=f"use one of auto, {', '.join(PRECISIONS)}")
    if threads < 0:
        raise InputError(f"threads must be >= 0 (0: the runtime's default), got {threads}")
    if device not in ("auto", "cpu", "cuda"):  # the runners know these three (a GPU per replica: --gpus-per-replica)
        raise InputError(f"unknown device {device!r}", fix="use auto, cpu or cuda")
    return backend, precision, device


def _check_port(address: str, port: int) -> None:
    """Refuse an HTTP address/port this machine cannot listen on before Ray starts: Serve's proxy
    would fail to bind after ~10 s with a Ray traceback (``RuntimeError: Failed to bind``)."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"--address {address!r} is not a host name or IP address here ({e.strerror})",
                         fix="use 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of this machine's IPs") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server does: TIME_WAIT does not hold a port
        try:
            s.bind(sockaddr)
        except OSError as e:
            message, fix = _bind_problem(address, port, e)
            raise InputError(message, fix=fix) from None


def _bind_problem(address: str, port: int, e: OSError | None) -> tuple[str, str]:
    """(message, fix) for an address/port the HTTP proxy cannot listen on."""
    if e is not None and e.errno == errno.EACCES:
        return (f"port {port} needs root privileges to listen on", "use a port above 1023, e.g. --port 8000")
    if e is not None and e.errno == errno.EADDRNOTAVAIL:
        return (f"--address {address} is not an address of this machine",
                "use 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of this machine's IPs (ip addr)")
    return (f"{address}:{port} is already in use by another program" if e is None or e.errno == errno.EADDRINUSE
            else f"cannot listen on {address}:{port}: {e.strerror or e}",
            f"choose another --port, or stop the program listening there (ss -ltnp 'sport = :{port}')")


def _deploy_error(rs, e: Exception, names: Sequence[str], address: str, port: int) -> EdgesegError | None:
    """The edgeseg error a failed deployment means, or None when it is not one we can name: a replica
    that could not load its bundle (Ray says only "Failed to update the deployments"; the replica's own
    error is in ``serve.status()``) or a proxy that could not bind its port."""
    if isinstance(e, EdgesegError):
        return e
    if "Failed to bind" in str(e):
        message, fix = _bind_problem(address, port, None)
        return InputError(message, fix=fix)
    try:
        apps = rs.status().applications
    except Exception:  # noqa: BLE001  (Serve is gone too: nothing more to say than Ray's error)
        return None
    from .app import bundle_app

    for name in names:
        app = apps.get(bundle_app(name))
        for dep in (app.deployments.values() if app is not None else ()):
            if str(dep.status).endswith("DEPLOY_FAILED"):
                return _replica_error(name, dep.message or str(e))
    return None


_ERROR_LINE = re.compile(r"^edgeseg\.errors\.(\w+): (.*)$", re.M)


def _replica_error(bundle: str, message: str) -> EdgesegError:
    """A replica's failure (the traceback Serve keeps) as the edgeseg error it raised, naming the bundle."""
    from .. import errors

    found = list(_ERROR_LINE.finditer(message))
    if not found:  # not one of ours: the traceback's last line says what it was
        last = [line.strip() for line in message.splitlines() if line.strip()][-1:] or ["(no message)"]
        return EdgesegError(f"the replicas of bundle {bundle!r} failed to start: {last[0]}",
                            fix="see the replica's traceback in the Ray logs (/tmp/ray/session_latest/logs/serve/)")
    cls = getattr(errors, found[-1].group(1), None)
    cls = cls if isinstance(cls, type) and issubclass(cls, EdgesegError) else EdgesegError
    text, _, fix = message[found[-1].start(2):].partition("\n  fix: ")
    return cls(f"the replicas of bundle {bundle!r} cannot load it: {text.strip()}",
               fix=fix.strip().splitlines()[0] if fix.strip() else None)


def _sigterm_handler():
    """The program's SIGTERM handler, or None where this thread cannot own signals."""
    import signal
    import threading

    return signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None


def _restore_sigterm(handler) -> None:
    """Give SIGTERM back to the program: ``ray.init`` installs Ray's C++ failure handler for it, which
    dumps a stack trace and aborts the process (exit 134, ray 2.60), so ``systemctl stop`` or ``docker
    stop`` looked like a crash and no ``finally`` ran (the Serve application was never shut down)."""
    import signal

    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _decline_usage_stats() -> None:
    """A Ray this process starts sends no usage stats unless the user chose to: Ray collects them by default (a
    report to Anyscale from the head); ``RAY_USAGE_STATS_ENABLED=0`` for this process and the Ray processes it starts,
    unless the variable is set or ``~/.ray/config.json`` holds a choice (``ray enable-usage-stats``)."""
    import json

    if os.environ.get("RAY_USAGE_STATS_ENABLED") is not None:
        return
    try:
        chosen = "usage_stats" in json.loads((Path.home() / ".ray" / "config.json").read_text())
    except (OSError, ValueError, RuntimeError, TypeError):
        chosen = False
    if not chosen:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


#: how long the Ray this process starts gives Serve's HTTP proxy to come up (Ray's default, 5 s, killed it on a loaded
#: 2-core machine, where Ray's own start-up took 46-136 s: `serve` failed with "ProxyActor ... killed by ray.kill")
PROXY_READY_S = "60"


def _patient_proxy() -> None:
    """Give the proxy of a Ray this process starts :data:`PROXY_READY_S` to come up, unless the user set it (the
    controller reads the variable in a process the local Ray starts, which inherits this environment)."""
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", PROXY_READY_S)


def _check_reachable(ray_address: str, timeout_s: float = 5.0) -> None:
    """Refuse a cluster address whose GCS port does not answer: ``ray.init`` retries it for ever (ray
    2.60: still retrying after 10 minutes, logging a warning every few seconds). Checks the address
    ``ray.init`` will dial: Ray turns ``127.0.0.1``/``localhost`` into this machine's routable IP, so a
    head started with ``--node-ip-address 127.0.0.1`` (its GCS then listens on loopback only) is
    unreachable through any address."""
    if ray_address == "local" or ray_address.startswith("ray://"):
        return
    try:
        from ray._private.services import canonicalize_bootstrap_address

        dialled = canonicalize_bootstrap_address(ray_address)  # "auto": the address `ray start` recorded here
    except ConnectionError as e:  # "auto" with no cluster: Ray's text says "--address", edgeseg's HTTP bind address
        raise BackendUnavailable(f"no Ray cluster is running on this machine (--ray-address {ray_address}): "
                                 f"{str(e).splitlines()[0][:120]}",
                                 fix="start one with 'ray start --head', give its address (--ray-address HEAD:6379), "
                                     "or leave out --ray-address to start a local one") from None
    except Exception:  # noqa: BLE001  (another Ray version: ray.init says why)
        return
    host, _, port = (dialled or "").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BackendUnavailable(
            f"cannot reach the Ray cluster at {dialled} (--ray-address {ray_address}): {e}",
            fix="check the head's address and port (ray status --address HEAD:PORT); a head started with "
                "--node-ip-address 127.0.0.1 cannot be joined: Ray dials this machine's IP for 127.0.0.1, "
                "so start the head on its LAN address (docs/deployment.md)") from None


def _check_fits(ray, n: int, cpus: float, gpus: float) -> None:
    """On a local Ray instance (a fixed size, no autoscaler), refuse replicas that could never all be
    placed: Serve would wait for them forever."""
    have = ray.cluster_resources()
    for what, per, flag in (("CPU", cpus, "--cpus-per-replica"), ("GPU", gpus, "--gpus-per-replica")):
        if per > 0 and n * per > have.get(what, 0.0) + 1e-9:
            ray.shutdown()
            raise InputError(f"{n} replica(s) x {per:g} {what} need {n * per:g} {what}s; this machine's Ray has "
                             f"{have.get(what, 0.0):g}", fix=f"lower {flag} (fractions allowed) or --replicas, or join "
                                                            "a larger cluster (--ray-address)")


def _run_all(rs, apps: list[tuple[str, str, object]]) -> list:
    """Deploy (name, route prefix, application) triples together (their replicas start side by side);
    one after another on a Ray without ``serve.run_many``. Returns once all run."""
    run_many = getattr(rs, "run_many", None)
    if run_many is None:
        return [rs.run(app, name=name, route_prefix=route) for name, route, app in apps]
    return run_many([rs.RunTarget(target=app, name=name, route_prefix=route) for name, route, app in apps])


def _drop_other_bundles(rs, keep: set[str]) -> None:
    """Delete the bundle applications of an earlier ``serve()`` on this cluster that this one does not
    serve: their routes would otherwise still answer."""
    from .app import BUNDLE_APP_PREFIX

    for name in rs.status().applications:
        if name.startswith(BUNDLE_APP_PREFIX) and name not in keep:
            log.info("deleting the application %s of an earlier edgeseg serve", name)
            rs.delete(name)
