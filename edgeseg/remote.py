"""The client of ``edgeseg serve`` and the wire format both sides share (standard library + numpy/cv2).

::

    p = edgeseg.load("http://10.0.0.5:8000/shapes")      # or edgeseg.serve.RemotePredictor(url)
    result = p(rgb)                                       # SemanticResult, equal to local inference

It lives outside :mod:`edgeseg.serve` so that edge boxes can call a cluster without Ray installed,
and so that :func:`edgeseg.predictor.load` can return it without importing the server side.

Wire format (HTTP/1.1, keep-alive):

* ``POST /v1/bundles/{name}/predict`` with either an encoded image (``Content-Type: image/png`` or
  ``image/jpeg``; decoded to RGB) or raw RGB ``uint8`` bytes (``application/octet-stream`` with
  ``X-Edgeseg-Shape: H,W,3``). Raw is the default: lossless and the cheapest for a camera box.
* The answer is JSON: ``{"task": "semantic", "shape": [H, W], "classes": [...], "labels_png":
  base64 PNG of the uint8 [H, W] label map}`` (``labels_npy`` instead when there are > 256 classes).
* ``GET /healthz`` (the HTTP ingress is up), ``GET /readyz`` (every bundle's replicas answer; 503
  otherwise), ``GET /v1/bundles`` (names and classes), ``GET /v1/bundles/{name}/stats``.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EdgesegError, InputError, ServerUnavailable
from .structures import SemanticResult

log = logging.getLogger(__name__)

RAW = "application/octet-stream"
SHAPE_HEADER = "X-Edgeseg-Shape"
_RETRY_STATUS = (502, 503, 504)  # Serve's back-pressure and a replica that is (re)starting


# ---- wire format (used by both sides) ------------------------------------------------------------
def encode_frame(rgb: np.ndarray, encoding: str = "raw") -> tuple[bytes, dict[str, str]]:
    """``uint8 [H, W, 3]`` RGB -> (request body, headers). ``encoding``: ``raw``, ``png`` or ``jpeg``."""
    if encoding == "raw":
        frame = np.ascontiguousarray(rgb)
        return frame.tobytes(), {"Content-Type": RAW, SHAPE_HEADER: ",".join(map(str, frame.shape))}
    if encoding not in ("png", "jpeg"):
        raise InputError(f"unknown frame encoding {encoding!r}", fix="use 'raw' (lossless, default), 'png' or 'jpeg'")
    import cv2

    ok, buf = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise InputError(f"could not encode a frame of shape {list(rgb.shape)} as {encoding}")
    return buf.tobytes(), {"Content-Type": f"image/{encoding}"}


def decode_frame(body: bytes, content_type: str, shape: str | None) -> np.ndarray:
    """A request body -> RGB ``uint8 [H, W, 3]``, or an :class:`InputError` saying what was wrong."""
    content_type = (content_type or RAW).split(";")[0].strip().lower()
    if content_type == RAW:
        try:
            dims = tuple(int(d) for d in (shape or "").split(","))
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) <= 0:
            raise InputError(f"raw frames need the header {SHAPE_HEADER}: H,W,3 (got {shape!r})")
        if len(body) != dims[0] * dims[1] * dims[2]:
            raise InputError(f"raw frame of {len(body)} bytes does not match {SHAPE_HEADER} {list(dims)} (uint8)")
        return np.frombuffer(body, np.uint8).reshape(dims)
    if content_type in ("image/png", "image/jpeg", "image/jpg"):
        import cv2

        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"could not decode the {content_type} body ({len(body)} bytes)")
        return np.ascontiguousarray(img[..., ::-1])
    raise InputError(f"unsupported Content-Type {content_type!r}",
                     fix=f"send image/png, image/jpeg, or {RAW} with the header {SHAPE_HEADER}: H,W,3")


def encode_result(result: Any) -> dict[str, Any]:
    """A task result -> JSON-able dict (semantic only for now)."""
    if not isinstance(result, SemanticResult):
        raise InputError(f"the server returns semantic results only, got {type(result).__name__}")
    labels = result.labels
    out: dict[str, Any] = {"task": "semantic", "shape": list(labels.shape), "classes": list(result.classes)}
    if labels.dtype == np.uint8:
        import cv2

        ok, buf = cv2.imencode(".png", labels)
        assert ok, "cv2 could not PNG-encode a uint8 label map"
        out["labels_png"] = base64.b64encode(buf.tobytes()).decode("ascii")
    else:
        bio = io.BytesIO()
        np.save(bio, labels, allow_pickle=False)
        out["labels_npy"] = base64.b64encode(bio.getvalue()).decode("ascii")
    return out


def decode_result(payload: dict[str, Any]) -> SemanticResult:
    """The JSON of :func:`encode_result` -> :class:`SemanticResult`."""
    if payload.get("task") != "semantic":
        raise EdgesegError(f"the server answered an unsupported task {payload.get('task')!r}")
    if "labels_png" in payload:
        import cv2

        labels = cv2.imdecode(np.frombuffer(base64.b64decode(payload["labels_png"]), np.uint8), cv2.IMREAD_UNCHANGED)
    else:
        labels = np.load(io.BytesIO(base64.b64decode(payload["labels_npy"])), allow_pickle=False)
    if labels is None or list(labels.shape) != list(payload["shape"]):
        raise EdgesegError(f"the server's label map does not match its stated shape {payload.get('shape')}")
    return SemanticResult(labels=labels, classes=tuple(payload.get("classes", ())))


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
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InputError(f"not a server URL: {url!r}", fix="use http://HOST:PORT or http://HOST:PORT/BUNDLE")
        path = u.path.strip("/")
        path = path[len("v1/bundles/"):] if path.startswith("v1/bundles/") else path
        if "/" in path:
            raise InputError(f"cannot read a bundle name from {url!r}", fix="use http://HOST:PORT/BUNDLE")
        return cls(u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80), path or None)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


class RemotePredictor:
    """A predictor whose work happens on an ``edgeseg serve`` cluster: ``p(rgb) -> SemanticResult``.

    timeout_s: per request (connect and read). retries: further attempts after a connection error,
    a timeout or a 502/503/504, waiting ``backoff_s * 2**attempt`` (capped at 2 s) between them; then
    :class:`ServerUnavailable` names the URL and the fix. encoding: how frames travel (``raw``,
    ``png``, ``jpeg``; JPEG is lossy, so results then match local inference on the decoded frame).
    Thread-safe: each thread keeps its own keep-alive connection.
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
    def info(self) -> dict[str, Any]:
        """The served bundle's name, classes, backend and precision (asked once)."""
        if self._info is None:
            bundles = self._request("GET", "/v1/bundles")["bundles"]
            name = self.endpoint.bundle
            if name is None:
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

    def __call__(self, rgb: np.ndarray) -> SemanticResult:
        body, headers = encode_frame(_check(rgb), self.encoding)
        t0 = time.perf_counter()
        result = decode_result(self._request("POST", f"/v1/bundles/{self.bundle_name}/predict", body, headers))
        self.runner.last_latency_s = time.perf_counter() - t0
        return result

    # ---- the three steps of a Predictor, so a stream runs it like one (edgeseg run --remote URL) --
    def preprocess(self, rgb: np.ndarray) -> tuple[dict[str, np.ndarray], None]:
        """Nothing to do here: the frame travels as it is (the replica preprocesses)."""
        return {"rgb": _check(rgb)}, None

    def postprocess(self, outputs: dict[str, Any], meta: None, image: np.ndarray | None = None) -> SemanticResult:
        """The server's result as it came (the replica decoded it, with the frame it was sent)."""
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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"RemotePredictor({self.url!r})"

    # ---- HTTP ----------------------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.endpoint.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self.endpoint.host, self.endpoint.port, timeout=self.timeout_s)
        return conn

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 attempts: int | None = None) -> dict[str, Any]:
        attempts = self.retries + 1 if attempts is None else attempts
        why = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(2.0, self.backoff_s * 2 ** (attempt - 1)))
            try:
                conn = self._conn()
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timeout, closed keep-alive
                self.close()
                why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                log.debug("%s %s%s: %s (attempt %d/%d)", method, self.endpoint.base, path, why, attempt + 1, attempts)
                continue
            if status in _RETRY_STATUS:
                why = f"HTTP {status} {data[:200].decode('utf-8', 'replace')}"
                continue
            return self._answer(status, data, path)
        raise ServerUnavailable(
            f"edgeseg server {self.endpoint.base} did not answer {method} {path} after {attempts} attempt(s): {why}",
            fix=f"check that `edgeseg serve` runs there and the port is reachable (curl {self.endpoint.base}/readyz)")

    def _answer(self, status: int, data: bytes, path: str) -> dict[str, Any]:
        text = data.decode("utf-8", "replace")
        try:
            payload = json.loads(text) if text else {}
        except json.JSONDecodeError:
            payload = {"error": text[:500]}
        if 200 <= status < 300:
            return payload
        message = payload.get("error", text[:500]) if isinstance(payload, dict) else text[:500]
        if 400 <= status < 500:
            raise InputError(f"edgeseg server {self.endpoint.base}{path} refused the request (HTTP {status}): {message}")
        raise EdgesegError(f"edgeseg server {self.endpoint.base}{path} failed (HTTP {status}): {message}",
                           fix="see the server's log (the replica's traceback)")


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
    return rgb
