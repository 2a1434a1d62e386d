"""The client of ``edgeseg serve`` (standard library + numpy/cv2; the wire format is :mod:`edgeseg.wire`).

::

    p = edgeseg.load("http://10.0.0.5:8000/shapes")      # or edgeseg.serve.RemotePredictor(url)
    result = p(rgb)                                       # the bundle's result, equal to local inference

It lives outside :mod:`edgeseg.serve` so that edge boxes can call a cluster without Ray installed,
and so that :func:`edgeseg.predictor.load` can return it without importing the server side.

Endpoints (HTTP/1.1, keep-alive): ``POST /v1/bundles/{name}/predict`` (:mod:`edgeseg.wire`),
``GET /healthz`` (the HTTP ingress is up), ``GET /readyz`` (every bundle's replicas answer; 503
otherwise), ``GET /v1/bundles`` (names, tasks, classes, palettes), ``GET /v1/bundles/{name}/stats``.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EdgesegError, InputError, ServerUnavailable
from .wire import RAW, SHAPE_HEADER, Result, decode_frame, decode_result, encode_frame, encode_result  # noqa: F401

__all__ = ["Endpoint", "RemotePredictor", "RemoteRunner", "ServedManifest",
           # the wire format, also importable from here as before
           "RAW", "SHAPE_HEADER", "decode_frame", "decode_result", "encode_frame", "encode_result"]

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1 << 30  # the most the client reads of one answer (a 100 MP frame's float confidence is 0.5 GiB)
_RETRY_STATUS = (502, 503, 504)  # Serve's back-pressure and a replica that is (re)starting (and a 500 that
# is not edgeseg's JSON error: the proxy's answer when a replica's node died mid-request)


# ---- client ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """Where a bundle is served: ``http(s)://host:port`` plus the bundle's name (None: the only one)."""

    scheme: str
    host: str
    port: int
    bundle: str | None

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        """``http://host:port`` (the server's only bundle), ``http://host:port/NAME`` or ``.../v1/bundles/NAME``."""
        try:
            u = urllib.parse.urlsplit(url)
            port = u.port  # ValueError: out of 0..65535, or not a number
        except ValueError as e:
            raise InputError(f"not a server URL: {url!r} ({e})", fix="use http://HOST:PORT (PORT 1..65535) or "
                                                                     "http://HOST:PORT/BUNDLE") from None
        if u.scheme not in ("http", "https") or not u.hostname or port == 0:
            raise InputError(f"not a server URL: {url!r}", fix="use http://HOST:PORT or http://HOST:PORT/BUNDLE")
        path = u.path.strip("/")
        path = path[len("v1/bundles/"):] if path.startswith("v1/bundles/") else path
        if "/" in path:
            raise InputError(f"cannot read a bundle name from {url!r}", fix="use http://HOST:PORT/BUNDLE")
        return cls(u.scheme, u.hostname, port or (443 if u.scheme == "https" else 80), path or None)

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class ServedManifest:
    """What the server says about its bundle: the manifest fields a stream needs (the overlay's
    palette and class names, the task for ``--track``). Decoder options stay on the server."""

    name: str
    task: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] = ()

    @property
    def palette_array(self) -> np.ndarray | None:
        """``uint8 [K, 3]``, or None when the server did not send one (the overlay's default palette)."""
        return np.asarray(self.palette, np.uint8).reshape(-1, 3) if self.palette else None


class RemotePredictor:
    """A predictor whose work happens on an ``edgeseg serve`` cluster: ``p(rgb)`` -> the bundle's
    :class:`SemanticResult`, :class:`InstanceResult` or :class:`PanopticResult`, equal to local inference.

    timeout_s: per request (to connect, then for the whole exchange). retries: further attempts after a connection error,
    a timeout (not of a predict POST that was sent: the server may still be working on it), a 502/503/504, a 500
    that is not edgeseg's own error (Ray Serve's proxy when the replica's node died mid-request) or the proxy's 404
    for routes not deployed yet, waiting ``backoff_s * 2**attempt`` (capped at 2 s) between them; then
    :class:`ServerUnavailable` names the URL and the fix. encoding: how frames travel (``raw``,
    ``png``, ``jpeg``; JPEG is lossy, so results then match local inference on the decoded frame).
    Thread-safe: each thread keeps its own keep-alive connection; :meth:`close` closes every thread's.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.1,
                 encoding: str = "raw"):
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise InputError(f"timeout_s must be > 0, retries and backoff_s >= 0 (got {timeout_s}, {retries}, {backoff_s})")
        encode_frame(np.zeros((1, 1, 3), np.uint8), encoding)  # validates the encoding now
        self.url = url
        self.endpoint = Endpoint.parse(url)
        self.timeout_s, self.retries, self.backoff_s, self.encoding = timeout_s, retries, backoff_s, encoding
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        # every thread's connection, for close(); weak, so a finished thread's goes with its thread-local storage
        self._conns: weakref.WeakSet = weakref.WeakSet()
        self._conns_pid = os.getpid()  # a forked child starts a set (and lock) of its own
        self._busy: set = set()  # ids of the connections in a request now (close() shuts them down, not closes them)
        self._shut: set = set()  # ids of those close() shut down in a request: closed by their thread at its end
        self._info: dict[str, Any] | None = None
        self.runner = RemoteRunner(self)

    # ---- what a Predictor offers ---------------------------------------------------------------
    @property
    def bundle_name(self) -> str:
        return self.info["name"]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.info["classes"])

    @property
    def backend(self) -> str:
        return f"remote:{self.info.get('backend', '?')}"

    @property
    def manifest(self) -> ServedManifest | None:
        """The served bundle's name, task, classes and palette (from ``GET /v1/bundles``); None while the
        server cannot be reached, so that a stream still starts (it counts the frames nobody serves, like
        a lost camera's) with the overlay's default colours."""
        try:
            info = self.info
        except ServerUnavailable as e:
            log.warning("%s: cannot ask the server about its bundle now (%s)", self.url, str(e).splitlines()[0])
            return None
        return ServedManifest(name=info["name"], task=str(info.get("task", "?")), classes=tuple(info["classes"]),
                              palette=tuple(tuple(int(v) for v in c) for c in info.get("palette", ())))

    @property
    def info(self) -> dict[str, Any]:
        """The served bundle's name, classes, backend and precision (asked once)."""
        if self._info is None:
            bundles = self._bundles()
            name = self.endpoint.bundle
            if name is None:
                if not bundles:
                    raise InputError(f"{self.endpoint.base} serves no bundle", fix="start it with edgeseg serve BUNDLE")
                if len(bundles) != 1:
                    raise InputError(f"{self.endpoint.base} serves {len(bundles)} bundles ({', '.join(b['name'] for b in bundles)})",
                                     fix=f"name one: {self.endpoint.base}/BUNDLE")
                self._info = bundles[0]
            else:
                found = [b for b in bundles if b["name"] == name]
                if not found:
                    raise InputError(f"{self.endpoint.base} does not serve a bundle {name!r}",
                                     fix=f"served: {', '.join(b['name'] for b in bundles) or 'none'}")
                self._info = found[0]
        return self._info

    def _bundles(self) -> list[dict[str, Any]]:
        """``GET /v1/bundles``, checked: each entry names its bundle and classes (else this is not edgeseg)."""
        bundles = self._request("GET", "/v1/bundles").get("bundles")
        if not isinstance(bundles, list) or not all(
                isinstance(b, dict) and isinstance(b.get("name"), str) and isinstance(b.get("classes"), list) for b in bundles):
            raise InputError(f"{self.endpoint.base}/v1/bundles is not edgeseg's list of bundles "
                             f"(got {_excerpt(json.dumps(bundles))}): is this an `edgeseg serve` server?", fix=self._url_fix())
        return bundles

    def __call__(self, rgb: np.ndarray, *, bgr: bool = False) -> Result:
        """As :meth:`edgeseg.predictor.Predictor.__call__` (``bgr=True``: an OpenCV frame, converted here)."""
        if bgr:
            import cv2

            rgb = cv2.cvtColor(_check(rgb), cv2.COLOR_BGR2RGB)
        body, headers = encode_frame(_check(rgb), self.encoding)
        t0 = time.perf_counter()
        result = decode_result(self._request("POST", f"/v1/bundles/{self.bundle_name}/predict", body, headers))
        self.runner.last_latency_s = time.perf_counter() - t0
        return result

    # ---- the three steps of a Predictor, so a stream runs it like one (edgeseg run --remote URL) --
    def preprocess(self, rgb: np.ndarray) -> tuple[dict[str, np.ndarray], None]:
        """Nothing to do here: the frame travels as it is (the replica preprocesses)."""
        return {"rgb": _check(rgb)}, None

    def postprocess(self, outputs: dict[str, Any], meta: None, image: np.ndarray | None = None) -> Result:
        """The server's result as it came (the replica decoded it, with the frame it was sent): semantic,
        instance or panoptic, as the bundle's task."""
        return outputs["result"]

    def stats(self) -> dict[str, Any]:
        """Batch counts over every replica of the bundle (frames, batches, sizes; ``replicas``: per replica)."""
        return self._request("GET", f"/v1/bundles/{self.bundle_name}/stats")

    def ready(self) -> bool:
        """True when the server says every bundle's replicas answer (``/readyz``)."""
        try:
            self._request("GET", "/readyz", attempts=1)
            return True
        except EdgesegError:
            return False

    def __enter__(self) -> "RemotePredictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the keep-alive connection of every thread that used this predictor (before: only the calling
        thread's; a predictor shared by 8 worker threads kept 8 sockets, and the server 8 connections, open).
        The predictor stays usable: a later call connects again. A connection in the middle of another thread's
        request is shut down, not closed: that thread gets a connection error (and retries as for any dropped
        connection) and closes it itself, so its socket's file descriptor is never freed, and perhaps reused by
        another file, under a call still using it."""
        if getattr(self._local, "pid", None) == os.getpid():  # not a forked child's copy of the parent's
            self._drop()
        lock, registered, busy = self._registry()
        with lock:  # held while closing: a thread starting a request marks its connection busy under it first
            for conn in list(registered):  # other threads' (their HTTPConnection objects are theirs: only sockets here)
                sock = conn.sock
                if sock is None:
                    continue
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # a thread reading an answer on it gets a connection error
                if id(conn) in busy:
                    self._shut.add(id(conn))  # its thread closes it when its request ends (_exchange)
                else:
                    with contextlib.suppress(OSError):
                        sock.close()  # an idle one finds it closed at its next call and connects again (_exchange)

    def _registry(self) -> tuple[threading.Lock, weakref.WeakSet, set]:
        """The lock, the set of this process's connections and the ids of those in a request now; a forked child
        starts its own (a parent's thread may have held the lock at the fork, and the parent's connections are
        not the child's to close)."""
        if self._conns_pid != os.getpid():
            self._conns_lock, self._conns, self._conns_pid = threading.Lock(), weakref.WeakSet(), os.getpid()
            self._busy, self._shut = set(), set()
        return self._conns_lock, self._conns, self._busy

    def _drop(self) -> None:
        """Close this thread's connection only (after an error on it: the other threads' requests go on)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"RemotePredictor({self.url!r})"

    # ---- HTTP ----------------------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            # a forked child must not share the parent's keep-alive socket: each could read the other's answer
            # (dropped, not closed: closing it would end the parent's connection too)
            cls = http.client.HTTPSConnection if self.endpoint.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self.endpoint.host, self.endpoint.port, timeout=self.timeout_s)
            self._local.pid = os.getpid()
            lock, registered, _ = self._registry()
            with lock:
                registered.add(conn)
        return conn

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 attempts: int | None = None) -> dict[str, Any]:
        attempts = self.retries + 1 if attempts is None else attempts
        why, kind = "", "down"
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(2.0, self.backoff_s * 2 ** (attempt - 1)))
            try:
                status, ctype, data = self._exchange(method, path, body, headers)
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timeout, closed keep-alive
                self._drop()
                why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                log.debug("%s %s%s: %s (attempt %d/%d)", method, self.endpoint.base, path, why, attempt + 1, attempts)
                # (socket.timeout is TimeoutError from Python 3.10 on; on JetPack 5's 3.8 it is not)
                kind = "slow" if isinstance(e, (TimeoutError, socket.timeout)) else "down"
                if kind == "slow" and method == "POST":  # the server may still be working on it: sent again, it
                    break  # works twice (a connect that timed out is CannotConnect: nothing was sent, retried)
                continue
            if status in _RETRY_STATUS or (status == 500 and not _edgeseg_error(data)):
                why, kind = f"HTTP {status} {data[:200].decode('utf-8', 'replace')}", "down"
                continue
            if status == 404 and _serve_proxy_404(ctype, data):  # Ray Serve's proxy before the apps are deployed
                why, kind = f"HTTP 404 {_excerpt(data.decode('utf-8', 'replace'))}", "starting"
                continue
            return self._answer(status, ctype, data, path)
        fix = {"slow": f"the server did not finish within timeout_s={self.timeout_s:g} s: it is busy or the frame is "
                       "large; give a longer timeout (edgeseg.remote.RemotePredictor(url, timeout_s=...)) or send smaller frames",
               "starting": f"the server answers but serves no bundle routes yet (starting, or redeploying), or it is "
                           f"not `edgeseg serve`: wait until curl {self.endpoint.base}/readyz says ready"}.get(
            kind, f"check that `edgeseg serve` runs there and the port is reachable (curl {self.endpoint.base}/readyz)")
        raise ServerUnavailable(
            f"edgeseg server {self.endpoint.base} did not answer {method} {path} after {attempt + 1} attempt(s): {why}",
            fix=fix)

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> tuple[int, str, bytes]:
        """One request: (status, content type, body). The connection is made within ``timeout_s``, then the
        whole exchange (the request sent, the whole answer read) must end within ``timeout_s``: the
        socket's timeout bounds each read only, so a server that sends a byte now and then (or an endless
        body) would hold the caller for ever; the watchdog closes the connection at the deadline."""
        conn = self._conn()
        lock, _, busy = self._registry()
        with lock:  # from here close() from another thread shuts this connection down but leaves closing it to us
            busy.add(id(conn))
            if conn.sock is not None and conn.sock.fileno() == -1:  # closed by close() from another thread while idle
                conn.close()  # (connects again below)
        try:
            return self._exchange_on(conn, method, path, body, headers)
        finally:
            with lock:
                busy.discard(id(conn))
                if id(conn) in self._shut:  # shut down by close() after its answer was read: closed, so that the
                    self._shut.discard(id(conn))  # next call connects again rather than send on a dead socket
                    conn.close()

    def _exchange_on(self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
                     headers: dict[str, str] | None) -> tuple[int, str, bytes]:
        if conn.sock is None:
            try:
                conn.connect()
            except OSError as e:  # nothing was sent: safe to send again, whatever the method (a timeout here too)
                raise CannotConnect(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        expired = threading.Event()
        token = _WATCHDOG.arm(conn.sock, time.monotonic() + self.timeout_s, expired)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            length = resp.getheader("Content-Length", "")
            announced, read = (int(length) if length.isdigit() else 0), 0
            chunks: list[bytes] = []
            while max(announced, read) <= MAX_ANSWER_BYTES and (chunk := resp.read(1 << 20)):
                chunks.append(chunk)
                read += len(chunk)
            if max(announced, read) > MAX_ANSWER_BYTES:  # not a result: an endless or enormous body
                self._drop()
                raise InputError(f"{self.endpoint.base}{path} answered more than {MAX_ANSWER_BYTES >> 20} MiB, the most "
                                 "this client reads: not an edgeseg result, or one for a frame far over 100 MP",
                                 fix=self._url_fix() + "; send smaller frames")
            if expired.is_set():  # the watchdog cut the answer short
                raise TimeoutError(f"no complete answer within {self.timeout_s:g} s")
            return resp.status, resp.getheader("Content-Type", ""), b"".join(chunks)
        except (OSError, http.client.HTTPException):
            if expired.is_set():
                raise TimeoutError(f"no complete answer within {self.timeout_s:g} s") from None
            raise
        finally:
            _WATCHDOG.disarm(token)

    def _answer(self, status: int, ctype: str, data: bytes, path: str) -> dict[str, Any]:
        text = data.decode("utf-8", "replace")
        try:
            payload = json.loads(text) if text else None
        except json.JSONDecodeError:
            payload = None
        where = f"{self.endpoint.base}{path}"
        if not isinstance(payload, dict) or (status >= 300 and not isinstance(payload.get("error"), str)) \
                or not (200 <= status < 300 or 400 <= status < 600):
            raise InputError(f"{where} answered HTTP {status} ({ctype or 'no Content-Type'}: {_excerpt(text)}), "
                             "not edgeseg's JSON: is this an `edgeseg serve` server?", fix=self._url_fix())
        if 200 <= status < 300:
            return payload
        if 400 <= status < 500:
            raise InputError(f"edgeseg server {where} refused the request (HTTP {status}): {payload['error']}")
        raise EdgesegError(f"edgeseg server {where} failed (HTTP {status}): {payload['error']}",
                           fix="see the server's log (the replica's traceback)")

    def _url_fix(self) -> str:
        return (f"point the client at `edgeseg serve` (http://HOST:PORT or http://HOST:PORT/BUNDLE); "
                f"curl {self.endpoint.base}/readyz should answer JSON")


class _Watchdog:
    """One daemon thread that shuts down the connections of exchanges past their deadline, for every
    client in the process (a ``threading.Timer`` per request cost 0.4 ms, a new thread each time; arming
    this costs a lock and, only when the new deadline is the earliest, a wake-up). It holds the socket
    object, not the connection (``http.client`` drops ``conn.sock`` on a ``Connection: close`` answer while
    its reader still uses the socket); a forked child starts afresh (see :meth:`_reset`)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """A new lock, nothing armed, no thread: after ``fork`` the child must not wait on a lock a parent's
        thread held, nor shut down the sockets of the parent's requests (which it shares)."""
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, socket.socket, threading.Event]] = {}
        self._next, self._wake_at, self._thread = 0, float("inf"), None

    def arm(self, sock: socket.socket, deadline: float, expired: threading.Event) -> int:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._wake_at = float("inf")
                self._thread = threading.Thread(target=self._run, name="edgeseg-client-deadlines", daemon=True)
                self._thread.start()
            self._next += 1
            self._armed[self._next] = (deadline, sock, expired)
            if deadline < self._wake_at:
                self._cond.notify()
            return self._next

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, sock, expired) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        expired.set()
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                self._wake_at = min((d for d, _, _ in self._armed.values()), default=now + 1.0)
                self._cond.wait(max(0.0, self._wake_at - now))


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG._reset)


def _serve_proxy_404(ctype: str, data: bytes) -> bool:
    """Ray Serve's proxy answering for a route no application serves yet (``Path '/v1/...' not found. Ping
    http://.../-/routes``): a server that is starting or redeploying. Any other 404 that is not edgeseg's JSON is a
    foreign server (``python -m http.server``), named as such at once."""
    return ctype.split(";")[0].strip().lower() in ("text/plain", "") and (
        b"/-/routes" in data or (data.startswith(b"Path '") and b"not found" in data))


class CannotConnect(ConnectionError):
    """The connection could not be made (refused, unreachable, or not within the timeout): no request was sent."""


def _excerpt(text: str, n: int = 120) -> str:
    one = " ".join(text.split())
    return repr(one[:n] + ("..." if len(one) > n else "")) if one else "empty"


def _edgeseg_error(data: bytes) -> bool:
    """Whether a 500 body is edgeseg's own JSON error (the replica ran and failed: retrying repeats it),
    not the plain-text answer of Ray Serve's proxy when the replica died mid-request (retried)."""
    try:
        payload = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(payload, dict) and "error" in payload


class RemoteRunner:
    """The runner face of a :class:`RemotePredictor` for stream stages: ``infer({"rgb": frame}) -> {"result": ...}``.
    Always active (a server needs no activation); ``input_specs`` is empty, so streams send frame by frame
    and the server's replicas do the batching."""

    name = "remote"
    is_active = True
    input_specs: tuple = ()

    def __init__(self, predictor: RemotePredictor):
        self._predictor = predictor
        self.last_latency_s = float("nan")

    @property
    def precision(self) -> str:
        return str(self._predictor.info.get("precision", "?"))

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"result": self._predictor(feed["rgb"])}

    def activate(self) -> None:
        """Nothing to do here: the server's replicas hold the active model."""

    def deactivate(self) -> None:
        self._predictor.close()


def _check(rgb: Any) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        what = f"{rgb.dtype} {list(rgb.shape)}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"expected an RGB image as a numpy array uint8 [H, W, 3], got {what}")
    if rgb.size == 0:  # the server would answer only that the shape header is bad
        raise InputError(f"the image is empty: shape {list(rgb.shape)}")
    return rgb
