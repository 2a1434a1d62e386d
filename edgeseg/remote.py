"""The client of ``edgeseg serve`` and the wire format both sides share (standard library + numpy/cv2).

::

    p = edgeseg.load("http://10.0.0.5:8000/shapes")      # or edgeseg.serve.RemotePredictor(url)
    result = p(rgb)                                       # the bundle's result, equal to local inference

It lives outside :mod:`edgeseg.serve` so that edge boxes can call a cluster without Ray installed,
and so that :func:`edgeseg.predictor.load` can return it without importing the server side.

Wire format (HTTP/1.1, keep-alive):

* ``POST /v1/bundles/{name}/predict`` with either an encoded image (``Content-Type: image/png`` or
  ``image/jpeg``; decoded to RGB) or raw RGB ``uint8`` bytes (``application/octet-stream`` with
  ``X-Edgeseg-Shape: H,W,3``). Raw is the default: lossless and the cheapest for a camera box.
* The answer is JSON, by ``task`` (:func:`encode_result`; arrays keep their dtype, bit for bit):

  - ``semantic``: ``shape`` [H, W], ``classes``, ``labels_png`` (base64 PNG of the uint8 label map;
    ``labels_npy`` instead when there are > 256 classes), ``confidence`` when the decoder gives it.
  - ``instance``: ``shape``, ``class_names``, ``boxes``/``scores``/``classes`` (and ``track_ids``,
    ``mask_boxes``) as ``{"dtype", "shape", "data": base64 raw bytes}``, ``masks``: the per-instance
    crops' bits (``np.packbits``, crop after crop), never full-frame masks; ``null`` for box-only.
  - ``panoptic``: ``shape``, ``segment_ids`` (a 8/16-bit PNG while ids fit, else raw, with the dtype),
    ``segments`` (``id``, ``category_id``, ``isthing``, ``area``, ``score``), ``class_names``, ``category_ids``.

* ``GET /healthz`` (the HTTP ingress is up), ``GET /readyz`` (every bundle's replicas answer; 503
  otherwise), ``GET /v1/bundles`` (names, tasks, classes, palettes), ``GET /v1/bundles/{name}/stats``.
"""
from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from .errors import EdgesegError, InputError, ServerUnavailable, UnsupportedError
from .structures import ImageShape, InstanceResult, PanopticResult, Segment, SemanticResult

log = logging.getLogger(__name__)

RAW = "application/octet-stream"
SHAPE_HEADER = "X-Edgeseg-Shape"
_RETRY_STATUS = (502, 503, 504)  # Serve's back-pressure and a replica that is (re)starting (and a 500 that
# is not edgeseg's JSON error: the proxy's answer when a replica's node died mid-request)


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


Result = Union[SemanticResult, InstanceResult, PanopticResult]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)


def _pack(a: np.ndarray) -> dict[str, Any]:
    """A numeric array -> ``{"dtype", "shape", "data"}`` (its raw bytes, base64): bit-exact, any dtype."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": _b64(a.tobytes())}


def _unpack(d: Any, ndim: int | None = None) -> np.ndarray:
    """:func:`_pack`'s dict -> a writable array; ``ValueError`` when it is not one."""
    dtype = np.dtype(d["dtype"])
    if dtype.kind not in "biuf":
        raise ValueError(f"dtype {dtype} is not a number type")
    shape = tuple(int(v) for v in d["shape"])
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"shape {list(shape)} is not {ndim}-dimensional")
    if min(shape, default=0) < 0:
        raise ValueError(f"shape {list(shape)} has a negative size")
    data = _unb64(d["data"])
    if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError(f"{len(data)} bytes do not hold {dtype} {list(shape)}")
    return np.frombuffer(data, dtype).reshape(shape).copy()


def _pack_map(a: np.ndarray) -> dict[str, Any]:
    """An integer ``[H, W]`` map -> a lossless PNG (8 or 16 bits) when its values fit ``0..65535``,
    else :func:`_pack`'s raw bytes; the dtype travels either way, so it comes back unchanged."""
    hi = int(a.max(initial=0))
    if a.size and int(a.min(initial=0)) >= 0 and hi < 65536:
        import cv2

        ok, buf = cv2.imencode(".png", np.ascontiguousarray(a.astype(np.uint8 if hi < 256 else np.uint16, copy=False)))
        if ok:
            return {"dtype": a.dtype.str, "shape": list(a.shape), "png": _b64(buf.tobytes())}
    return _pack(a)


def _unpack_map(d: Any) -> np.ndarray:
    if "png" not in d:
        return _unpack(d, ndim=2)
    import cv2

    dtype = np.dtype(d["dtype"])
    shape = [int(v) for v in d["shape"]]
    img = cv2.imdecode(np.frombuffer(_unb64(d["png"]), np.uint8), cv2.IMREAD_UNCHANGED)
    if dtype.kind not in "iu" or img is None or list(img.shape) != shape:
        raise ValueError(f"the PNG does not decode to {dtype} {shape}")
    return img.astype(dtype, copy=False)


def _json_float(x: float) -> float | str:
    """A float for JSON (strict JSON has no NaN or infinity: those travel as text)."""
    x = float(x)
    return x if np.isfinite(x) else repr(x)


def _crop_bits(crops: Any) -> str:
    """The crops' pixels, each in C order, one after another, 8 to a byte (``np.packbits``), base64."""
    flat = [np.asarray(c, bool).ravel() for c in crops]
    return _b64(np.packbits(np.concatenate(flat) if flat else np.zeros(0, bool)).tobytes())


def _crops_from_bits(text: Any, bounds: np.ndarray, image: ImageShape) -> tuple[np.ndarray, ...]:
    """:func:`_crop_bits` -> one ``bool [y1 - y0, x1 - x0]`` crop per row of ``bounds``, checked against the image."""
    b = bounds.astype(np.int64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"mask bounds must be [N, 4], got {list(b.shape)}")
    if len(b) and ((b[:, :2] < 0).any() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any()
                   or (b[:, 2] > image.width).any() or (b[:, 3] > image.height).any()):
        raise ValueError(f"mask bounds outside the {image} image")
    sizes = (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0])
    total = int(sizes.sum())
    packed = np.frombuffer(_unb64(text), np.uint8)
    if len(packed) != (total + 7) // 8:
        raise ValueError(f"{len(packed)} bytes of mask bits, expected {(total + 7) // 8}")
    flat = np.unpackbits(packed, count=total).astype(bool)
    cuts = np.cumsum(sizes)[:-1].tolist()
    return tuple(part.reshape(int(y1 - y0), int(x1 - x0))
                 for part, (x0, y0, x1, y1) in zip(np.split(flat, cuts), b.tolist()))


@functools.singledispatch
def encode_result(result: Any) -> dict[str, Any]:
    """A task result -> a JSON-able dict that :func:`decode_result` turns back into an equal result
    (arrays bit for bit, dtypes kept): semantic, instance and panoptic results."""
    raise UnsupportedError(f"edgeseg serve cannot send a {type(result).__name__} "
                           "(it sends SemanticResult, InstanceResult and PanopticResult)")


@encode_result.register
def _encode_semantic(result: SemanticResult) -> dict[str, Any]:
    """``labels_png`` (uint8 label maps) or ``labels_npy``; ``confidence`` (float32, raw) when the decoder gave it."""
    labels = result.labels
    out: dict[str, Any] = {"task": "semantic", "shape": list(labels.shape), "classes": list(result.classes)}
    if labels.dtype == np.uint8:
        import cv2

        ok, buf = cv2.imencode(".png", labels)
        assert ok, "cv2 could not PNG-encode a uint8 label map"
        out["labels_png"] = _b64(buf.tobytes())
    else:
        bio = io.BytesIO()
        np.save(bio, labels, allow_pickle=False)
        out["labels_npy"] = _b64(bio.getvalue())
    if result.confidence is not None:
        out["confidence"] = _pack(result.confidence)
    return out


@encode_result.register
def _encode_instance(result: InstanceResult) -> dict[str, Any]:
    """Boxes, scores, classes (and track ids, mask bounds) as raw arrays; masks as their crops' bits
    (``masks.bits``), never ``N x H x W``. A compact result's crops cover its ``mask_boxes`` and come back
    compact; a result holding full masks sends the crops of :meth:`InstanceResult.compact` (``masks.bounds``)
    and comes back with full masks; a box-only result has ``masks: null``."""
    out: dict[str, Any] = {"task": "instance", "shape": list(result.image_shape.hw), "class_names": list(result.class_names),
                           "boxes": _pack(result.boxes), "scores": _pack(result.scores), "classes": _pack(result.classes),
                           "track_ids": None if result.track_ids is None else _pack(result.track_ids),
                           "mask_boxes": None if result.mask_boxes is None else _pack(result.mask_boxes),
                           "masks": None}
    if result.mask_crops is not None:  # the truth whether or not `masks` was materialised from them
        out["masks"] = {"compact": True, "bits": _crop_bits(result.mask_crops)}
    elif result.has_masks:  # the result's own compact form (crops over bounds holding every true pixel)
        compact = result.compact()
        out["masks"] = {"compact": False, "bounds": _pack(compact.mask_boxes), "bits": _crop_bits(compact.mask_crops)}
    return out


@encode_result.register
def _encode_panoptic(result: PanopticResult) -> dict[str, Any]:
    """The segment id map (:func:`_pack_map`: PNG while ids fit 16 bits) and the segments as JSON."""
    segments = [{"id": int(s.id), "category_id": int(s.category_id), "isthing": bool(s.isthing), "area": int(s.area),
                 "score": _json_float(s.score)} for s in result.segments]
    return {"task": "panoptic", "shape": list(result.segment_ids.shape), "segment_ids": _pack_map(result.segment_ids),
            "segments": segments, "class_names": list(result.class_names),
            "category_ids": [int(c) for c in result.category_ids]}


def _decode_semantic(payload: dict[str, Any]) -> SemanticResult:
    if "labels_png" in payload:
        import cv2

        labels = cv2.imdecode(np.frombuffer(_unb64(payload["labels_png"]), np.uint8), cv2.IMREAD_UNCHANGED)
    else:
        labels = np.load(io.BytesIO(_unb64(payload["labels_npy"])), allow_pickle=False)
    if labels is None or list(labels.shape) != list(payload["shape"]):
        raise ValueError(f"the label map does not match the stated shape {payload.get('shape')}")
    conf = payload.get("confidence")
    return SemanticResult(labels=labels, classes=tuple(payload.get("classes", ())),
                          confidence=None if conf is None else _unpack(conf, ndim=2))


def _decode_instance(payload: dict[str, Any]) -> InstanceResult:
    image = ImageShape(*(int(v) for v in payload["shape"]))
    kw: dict[str, Any] = {"boxes": _unpack(payload["boxes"], 2), "scores": _unpack(payload["scores"], 1),
                          "classes": _unpack(payload["classes"], 1), "image_shape": image,
                          "class_names": tuple(str(c) for c in payload.get("class_names", ())),
                          "track_ids": None if payload.get("track_ids") is None else _unpack(payload["track_ids"], 1),
                          "mask_boxes": None if payload.get("mask_boxes") is None else _unpack(payload["mask_boxes"], 2)}
    masks = payload.get("masks")
    if masks is None:
        return InstanceResult(**kw)
    if masks["compact"]:
        if kw["mask_boxes"] is None:
            raise ValueError("compact masks need mask_boxes")
        return InstanceResult(**kw, mask_crops=_crops_from_bits(masks["bits"], kw["mask_boxes"], image))
    bounds = _unpack(masks["bounds"], 2)
    full = np.zeros((len(bounds), image.height, image.width), bool)
    for i, crop in enumerate(_crops_from_bits(masks["bits"], bounds, image)):
        x0, y0, x1, y1 = bounds[i].tolist()
        full[i, y0:y1, x0:x1] = crop
    return InstanceResult(**kw, masks=full)


def _decode_panoptic(payload: dict[str, Any]) -> PanopticResult:
    ids = _unpack_map(payload["segment_ids"])
    if list(ids.shape) != [int(v) for v in payload["shape"]]:
        raise ValueError(f"the segment id map does not match the stated shape {payload.get('shape')}")
    segments = tuple(Segment(id=int(s["id"]), category_id=int(s["category_id"]), isthing=bool(s["isthing"]),
                             area=int(s["area"]), score=float(s["score"])) for s in payload["segments"])
    return PanopticResult(segment_ids=ids, segments=segments, class_names=tuple(str(c) for c in payload.get("class_names", ())),
                          category_ids=tuple(int(c) for c in payload.get("category_ids", ())))


_DECODERS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "semantic": _decode_semantic, "instance": _decode_instance, "panoptic": _decode_panoptic}


def decode_result(payload: Any) -> Result:
    """The JSON of :func:`encode_result` -> the task's result (:class:`SemanticResult`,
    :class:`InstanceResult` or :class:`PanopticResult`); an :class:`EdgesegError` names what was wrong."""
    task = payload.get("task") if isinstance(payload, dict) else None
    decoder = _DECODERS.get(task) if isinstance(task, str) else None
    if decoder is None:
        raise EdgesegError(f"the server answered a task this client does not know: {task!r} "
                           f"(known: {', '.join(_DECODERS)})",
                           fix="use the same edgeseg version on the client and the server")
    try:
        return decoder(payload)
    except (KeyError, TypeError, ValueError, IndexError) as e:  # InputError too: a result's own checks
        what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise EdgesegError(f"the server's {task} result is malformed: {what}",
                           fix="use the same edgeseg version on the client and the server") from None


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

    timeout_s: per request (connect and read). retries: further attempts after a connection error,
    a timeout, a 502/503/504 or a 500 that is not edgeseg's own error (Ray Serve's proxy when the
    replica's node died mid-request), waiting ``backoff_s * 2**attempt`` (capped at 2 s) between them; then
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

    def __call__(self, rgb: np.ndarray) -> Result:
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
            if status in _RETRY_STATUS or (status == 500 and not _edgeseg_error(data)):
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
    return rgb
