"""The wire format of ``edgeseg serve``, shared by the server's replicas (:mod:`edgeseg.serve.app`) and
the client (:mod:`edgeseg.remote`): standard library + numpy/cv2, no Ray.

* A request is ``POST /v1/bundles/{name}/predict`` with either an encoded image (PNG or JPEG, known by
  its first bytes whatever the ``Content-Type`` says; decoded to RGB as ``edgeseg predict`` reads files,
  at most :data:`MAX_IMAGE_PIXELS`) or raw RGB ``uint8`` bytes (``application/octet-stream`` with
  ``X-Edgeseg-Shape: H,W,3``): :func:`encode_frame` / :func:`decode_frame`.
* The answer is JSON, by ``task`` (:func:`encode_result` / :func:`decode_result`; arrays keep their
  dtype, bit for bit):

  - ``semantic``: ``shape`` [H, W], ``classes``, ``labels_png`` (base64 PNG of the uint8 label map;
    ``labels_npy`` instead when there are > 256 classes or a side is over libpng's 1,000,000 pixels),
    ``confidence`` when the decoder gives it.
  - ``instance``: ``shape``, ``class_names``, ``boxes``/``scores``/``classes`` (and ``track_ids``,
    ``mask_boxes``) as ``{"dtype", "shape", "data": base64 raw bytes}``, ``masks``: the per-instance
    crops' bits (``np.packbits``, crop after crop), never full-frame masks; ``null`` for box-only.
  - ``panoptic``: ``shape``, ``segment_ids`` (a 8/16-bit PNG while ids fit, else raw, with the dtype),
    ``segments`` (``id``, ``category_id``, ``isthing``, ``area``, ``score``), ``class_names``, ``category_ids``.
"""
from __future__ import annotations

import base64
import functools
import io
from typing import Any, Callable, Union

import numpy as np

from ._imagefile import image_dimensions, swap_rb
from .errors import EdgesegError, InputError, UnsupportedError
from .structures import ImageShape, InstanceResult, PanopticResult, Segment, SemanticResult


RAW = "application/octet-stream"
SHAPE_HEADER = "X-Edgeseg-Shape"


# ---- wire format (used by both sides) ------------------------------------------------------------
def encode_frame(rgb: np.ndarray, encoding: str = "raw") -> tuple[bytes, dict[str, str]]:
    """``uint8 [H, W, 3]`` RGB -> (request body, headers). ``encoding``: ``raw``, ``png`` or ``jpeg``."""
    if encoding == "raw":
        frame = np.ascontiguousarray(rgb)
        return frame.tobytes(), {"Content-Type": RAW, SHAPE_HEADER: ",".join(map(str, frame.shape))}
    if encoding not in ("png", "jpeg"):
        raise InputError(f"unknown frame encoding {encoding!r}", fix="use 'raw' (lossless, default), 'png' or 'jpeg'")
    import cv2

    ok, buf = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", swap_rb(rgb))
    if not ok:
        raise InputError(f"could not encode a frame of shape {list(rgb.shape)} as {encoding}")
    return buf.tobytes(), {"Content-Type": f"image/{encoding}"}


MAX_IMAGE_PIXELS = 100_000_000  # an encoded frame decodes to 3 bytes a pixel: a 1 MB PNG of zeros can say 30000x30000
# (2.7 GB); raw frames are not capped (their bytes have already arrived)
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"RIFF", "WebP"))
_IMAGE_FIX = (f"send image/png or image/jpeg, or raw RGB bytes as {RAW} with the header {SHAPE_HEADER}: H,W,3 "
              "(curl: --data-binary @frame.png -H 'Content-Type: image/png')")


def _image_kind(body: bytes) -> str | None:
    """The image format of an encoded body by its first bytes (PNG, JPEG, ...), None when it is none of them."""
    for magic, kind in _SIGNATURES:
        if body.startswith(magic) and (kind != "WebP" or body[8:12] == b"WEBP") \
                and (kind != "BMP" or int.from_bytes(body[2:6], "little") == len(body)):  # "BM" alone is too common
            return kind
    return None


def decode_frame(body: bytes, content_type: str, shape: str | None) -> np.ndarray:
    """A request body -> RGB ``uint8 [H, W, 3]``, or an :class:`InputError` saying what was wrong.

    Raw RGB needs ``Content-Type: application/octet-stream`` (or none) and the header ``X-Edgeseg-Shape``.
    PNG and JPEG are known by their first bytes whatever the Content-Type says (curl sends
    ``application/x-www-form-urlencoded`` unless told otherwise), and decoded as ``edgeseg predict``
    reads image files: grey, 16-bit and RGBA images become RGB ``uint8``. Images over
    :data:`MAX_IMAGE_PIXELS` are refused before decoding."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if not body:
        raise InputError(f"the request body is empty (Content-Type {declared or 'none'!r}): no frame to segment",
                         fix=_IMAGE_FIX)
    if declared in ("", RAW) and shape is not None:
        return _raw_frame(body, shape)
    kind = _image_kind(body)
    if kind in ("PNG", "JPEG"):
        return _decode_image(body, kind)
    if kind is not None:
        raise InputError(f"the body is a {kind} image ({len(body)} bytes); edgeseg serve takes PNG or JPEG",
                         fix="convert it to PNG or JPEG, or send raw RGB bytes")
    if declared in ("", RAW):
        return _raw_frame(body, shape)
    if declared.startswith("image/"):
        raise InputError(f"could not decode the {declared} body ({len(body)} bytes): it is not a PNG or JPEG image "
                         f"(it starts {body[:8]!r})", fix=_IMAGE_FIX)
    raise InputError(f"unsupported Content-Type {declared!r} (and the body is not a PNG or JPEG image)", fix=_IMAGE_FIX)


def _raw_frame(body: bytes, shape: str | None) -> np.ndarray:
    try:
        dims = tuple(int(d) for d in (shape or "").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3:
        raise InputError(f"raw frames need the header {SHAPE_HEADER}: H,W,3 (got {shape!r})", fix=_IMAGE_FIX)
    if min(dims) <= 0:
        raise InputError(f"the raw frame's {SHAPE_HEADER} {shape!r} has a size of 0 or less: no frame to segment")
    if len(body) != dims[0] * dims[1] * dims[2]:
        raise InputError(f"raw frame of {len(body)} bytes does not match {SHAPE_HEADER} {list(dims)} (uint8)")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _decode_image(body: bytes, kind: str) -> np.ndarray:
    import cv2

    size = image_dimensions(body)  # (width, height) from the header, before decoding
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"the {kind} image is {size[0]}x{size[1]} ({size[0] * size[1]:,} pixels); edgeseg serve "
                         f"decodes at most {MAX_IMAGE_PIXELS:,} pixels a frame",
                         fix="resize the frame before sending it (the model runs at its own input size)")
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"could not decode the {kind} body ({len(body)} bytes): the image is truncated or corrupt",
                         fix="send the whole file; check it opens in an image viewer")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place, as read_image


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


_PNG_MAX_SIDE = 1_000_000  # libpng's default limit on either side (a 1 x 1,000,001 frame is still a frame)


def _pack_map(a: np.ndarray) -> dict[str, Any]:
    """An integer ``[H, W]`` map -> a lossless PNG (8 or 16 bits) when its values fit ``0..65535``,
    else :func:`_pack`'s raw bytes; the dtype travels either way, so it comes back unchanged."""
    hi = int(a.max(initial=0))
    if a.size and int(a.min(initial=0)) >= 0 and hi < 65536 and max(a.shape) <= _PNG_MAX_SIDE:
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


@encode_result.register(SemanticResult)  # by class: Python 3.8 cannot evaluate the annotations
def _encode_semantic(result: SemanticResult) -> dict[str, Any]:
    """``labels_png`` (uint8 label maps) or ``labels_npy``; ``confidence`` (float32, raw) when the decoder gave it."""
    labels = result.labels
    out: dict[str, Any] = {"task": "semantic", "shape": list(labels.shape), "classes": list(result.classes)}
    ok = False
    if labels.dtype == np.uint8 and max(labels.shape, default=0) <= _PNG_MAX_SIDE:
        import cv2

        ok, buf = cv2.imencode(".png", labels)
        if ok:
            out["labels_png"] = _b64(buf.tobytes())
    if not ok:  # > 256 classes, or a side PNG cannot hold (libpng: at most 1,000,000 pixels)
        bio = io.BytesIO()
        np.save(bio, labels, allow_pickle=False)
        out["labels_npy"] = _b64(bio.getvalue())
    if result.confidence is not None:
        out["confidence"] = _pack(result.confidence)
    return out


@encode_result.register(InstanceResult)
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


@encode_result.register(PanopticResult)
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
