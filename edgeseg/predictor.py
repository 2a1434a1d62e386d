"""``edgeseg.load(bundle) -> Predictor``: preprocessing, a backend runner and the task's decoder.

::

    predictor = edgeseg.load("road.edgeseg")           # a Bundle, a path, or a shipped name
    result = predictor(rgb)                            # SemanticResult at the image's own size
    with edgeseg.load("road", backend="onnxruntime", threads=2) as p:   # activate once, reuse
        for rgb in images:
            labels = p(rgb).labels

The pieces are public so streams and benchmarks can overlap them:
``feed, meta = p.preprocess(rgb)``; ``outputs = p.runner.infer(feed)``; ``p.postprocess(outputs, meta)``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import _memory
from .backends import BACKENDS, Runner, select_backend
from .bundle import Bundle
from .decode import decode
from .errors import InputError
from .structures import DecoderOptions, PreprocessMeta
from .structures.manifest import Manifest


def check_image(image: Any) -> np.ndarray:
    """An RGB ``uint8 [H, W, 3]`` array, or an :class:`InputError` saying what is wrong and how to fix it."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected an RGB image as a numpy array uint8 [H, W, 3], got {type(image).__name__}",
                         fix=_not_an_array_fix(image))
    if image.ndim == 2:
        raise InputError(f"expected an RGB image [H, W, 3], got a single-channel image {list(image.shape)}",
                         fix="grey pixels: np.repeat(img[..., None], 3, axis=2); the indices of a palette ('P') "
                             "image: Image.open(path).convert('RGB'), or edgeseg.data.read_image(path)")
    if image.ndim != 3 or image.shape[2] not in (3,):
        raise InputError(f"expected an RGB image [H, W, 3], got shape {list(image.shape)}", fix=_shape_fix(image.shape))
    if image.dtype != np.uint8:
        raise InputError(f"expected a uint8 image (0..255), got {image.dtype}", fix=_dtype_fix(image))
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the image is empty: shape {list(image.shape)}",
                         fix="check where it comes from (a crop outside the frame, a failed decode): skip empty images")
    return image


#: memory segmenting an image already in memory takes at least, a pixel, beyond the image: 0.8 x the least measured
#: (12000x12000 arrays, flat and textured, peak RSS, session 54: `road` 2.5-3.5 bytes, `street-panoptic` 4.1-4.9,
#: `street-instance` 0.25-1.1 with its compact masks), so that nothing that would fit is refused
TASK_BYTES_PER_PIXEL = {"semantic": 2.0, "panoptic": 3.2, "instance": 0.2}


def check_room(image: np.ndarray, task: str) -> None:
    """An :class:`InputError` when segmenting ``image`` (16 megapixels or more) surely takes more memory than is left
    (a container's limit included): the kernel would kill the process. Files are checked before decoding
    (:func:`edgeseg.data.read_image`); arrays here."""
    h, w = image.shape[:2]
    short = _memory.shortfall(h * w, TASK_BYTES_PER_PIXEL.get(task, 0.0))
    if short is not None:
        need, free = short
        raise InputError(f"the image is {w}x{h} ({h * w / 1e6:,.0f} megapixels): segmenting it takes at least "
                         f"{_memory.mib(need)} more and {_memory.mib(free)} is free (a container's limit included)",
                         fix="downscale it first (cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)), "
                             "or cut it into tiles; or run where more memory is free")


def _not_an_array_fix(image: Any) -> str | None:
    module = type(image).__module__.split(".")[0]
    if isinstance(image, (str, os.PathLike)):
        return "read it first: edgeseg.data.io.read_image(path)"
    if module == "PIL":  # as edgeseg reads files: the EXIF orientation applied (a phone photo held sideways)
        return "np.asarray(ImageOps.exif_transpose(img).convert('RGB')) (from PIL import ImageOps), or " \
               "edgeseg.data.read_image(path)"
    if module == "torch":
        return "img.cpu().numpy() ([H, W, 3] uint8; a CHW 0..1 tensor: (t.permute(1, 2, 0) * 255).round().byte())"
    if isinstance(image, (list, tuple)):
        return "np.asarray(img, np.uint8) for one [H, W, 3] image; call the predictor once per image"
    if image is None:
        return "a frame reader that failed returns None (OpenCV: ok, frame = cap.read(); check ok, and imread's result)"
    return None


def _shape_fix(shape: tuple[int, ...]) -> str | None:
    """The fix for a wrong shape (only on the error path)."""
    if len(shape) == 3 and shape[2] == 4:
        return "RGBA: drop the alpha channel, img[..., :3]; a CMYK JPEG read by PIL: Image.open(path).convert('RGB'), " \
               "or edgeseg.data.read_image(path)"
    if len(shape) == 3 and shape[2] == 1:
        return "np.repeat(img, 3, axis=2)"
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return "this looks channels-first [C, H, W]: img.transpose(1, 2, 0) (and [..., :3] for 4 channels)"
    if len(shape) == 4 and shape[3] == 3:
        return "one image per call: [predictor(img) for img in batch]"
    return None


def _dtype_fix(image: np.ndarray) -> str:
    """The conversion to uint8 that keeps the picture, judged from the values (only on the error path)."""
    if image.dtype == np.bool_:
        return "a mask is not an image: img.astype(np.uint8) * 255 if you mean black and white"
    if image.dtype.kind not in "fiu":
        return "convert it to numbers 0..255: img.astype(np.uint8)"
    lo, hi = (float(v) for v in (np.min(image), np.max(image))) if image.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "the image holds NaN or infinite values: fix its source (np.nan_to_num) before converting to uint8"
    if image.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return "its values are 0..1: (img * 255).round().astype(np.uint8)"
    if lo >= 0 and hi <= 255:
        return "its values are already 0..255: img.round().astype(np.uint8)" if image.dtype.kind == "f" \
            else "its values are already 0..255: img.astype(np.uint8)"
    if image.dtype == np.uint16:
        return "a 16-bit image: (img // 257).astype(np.uint8)"
    return f"its values span {lo:g}..{hi:g}: scale them to 0..255 first, then .astype(np.uint8)"


class Predictor:
    """A bundle, a runner for one backend, and the task's decoder."""

    def __init__(self, bundle: Bundle, runner: Runner):
        self.bundle = bundle
        self.runner = runner
        self.choice = None  # set by load(): edgeseg.backends.choice.Choice (what was chosen, how and why)
        self.options: DecoderOptions = bundle.manifest.decoder_options  # the task's decoder options
        self._blocks = 0  # with-blocks of this predictor open now, in any thread
        self._blocks_lock = threading.Lock()

    def set_options(self, **overrides: Any) -> "Predictor":
        """Change decoder options for this predictor only (``score_threshold=0.5`` for instance
        bundles, ``upsample="labels"`` for semantic ones); ``None`` values are ignored. A Panoptic-DeepLab's
        ``score_threshold`` is its centre score's (``center_threshold``: its things' scores)."""
        from .structures.decoder_options import score_overrides

        options = self.options.replace(**score_overrides(self.options, overrides))
        layout = getattr(options, "layout", None)
        if overrides.get("class_score_thresholds") and layout != "fusion":  # only the fused decoder reads them
            one = "center_threshold" if layout == "center" else "score_threshold"
            raise InputError(f"bundle {self.manifest.name!r}: class_score_thresholds apply to fused bundles "
                             f"('edgeseg fuse') only; this {layout} decoder would ignore them",
                             fix=f"use {one} (one for all classes)")
        self.options = options
        return self

    def __reduce__(self):
        """Pickled as what loads it again (multiprocessing with spawn, Ray tasks): the bundle's path, the backend,
        precision, INT8 target, device and threads it runs with, and its decoder options; never the session itself
        (before: ``cannot pickle '_thread.RLock' object``)."""
        target = getattr(getattr(self.choice, "candidate", None), "target", None)
        return (_unpickle, (str(self.bundle.root), self.runner.name, self.runner.precision, target, self.runner.device,
                            self.runner.threads, self.options.to_dict()))

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    @property
    def palette(self) -> np.ndarray:
        """``uint8 [K, 3]`` RGB colour per class."""
        return self.manifest.palette_array

    @property
    def backend(self) -> str:
        return self.runner.name

    # ---- the three steps ---------------------------------------------------------------------
    def preprocess(self, rgb: np.ndarray) -> tuple[dict[str, np.ndarray], PreprocessMeta]:
        """RGB ``uint8 [H, W, 3]`` -> (``{input name: tensor [1, ...]}``, how it was mapped)."""
        spec = self.manifest.input
        check_room(check_image(rgb), self.manifest.task)
        x, meta = spec.preprocess(rgb)
        return {spec.name: x}, meta

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, image: np.ndarray | None = None):
        """Raw outputs -> the task's result at the original image size (``image``: the frame, for
        decoders that look at it: the semantic CRF)."""
        return decode(outputs, meta, self.manifest, self.options, image=image)

    def __call__(self, rgb: np.ndarray, *, bgr: bool = False):
        """``rgb``: ``uint8 [H, W, 3]`` in RGB order; ``bgr=True`` for a frame in OpenCV's order (``cv2.imread``,
        ``cv2.VideoCapture.read``), converted here (before: a BGR frame passed as RGB ran silently, road agreeing with
        its RGB result on 40 % of the pixels)."""
        if bgr:
            import cv2

            rgb = cv2.cvtColor(check_image(rgb), cv2.COLOR_BGR2RGB)
        feed, meta = self.preprocess(rgb)
        # a call while no with-block is open keeps the session until close() (opened here if it is not, in one step
        # with the call, so that close() from another thread never comes between the two); one while a block is open
        # (in this thread or another: a pool of workers inside the block) leaves it to the block
        out = self.runner.infer(feed, activate=not self._blocks)
        return self.postprocess(out, meta, image=rgb)

    # ---- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Predictor":
        self.runner.hold()
        with self._blocks_lock:
            self._blocks += 1
        return self

    def __exit__(self, *exc) -> None:
        # the block's own hold only (README): calls made outside blocks, before it or by another thread meanwhile,
        # keep the session until close(); before, the end of a block closed it, so a thread looping `with p:` beside
        # another thread's plain calls closed and reopened the session at every block (an engine deserialised each
        # time on TensorRT)
        try:
            with self._blocks_lock:
                self._blocks = max(0, self._blocks - 1)
        finally:
            self.runner.release()

    def close(self) -> None:
        """Free the model's session (after the calls in flight); a later call opens it again. A stream running
        with this predictor keeps it until the stream ends."""
        self.runner.deactivate()

    def __repr__(self) -> str:
        return f"Predictor({self.bundle.root.name!r}, backend={self.backend!r}, precision={self.runner.precision!r})"


def is_remote(bundle: Any) -> bool:
    """Whether ``bundle`` names an ``edgeseg serve`` server (``http(s)://``) rather than a bundle here."""
    return isinstance(bundle, str) and bundle[:8].lower().startswith(("http://", "https://"))


#: threads above max(64, this many per usable core) are refused: ONNX Runtime starts them all (1000 on 2 cores: > 30 s)
MAX_THREADS_PER_CORE = 8


PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def _check_load_args(bundle: Any, backend: Any, precision: Any, device: Any, threads: Any) -> None:
    """An :class:`InputError` for arguments of :func:`load` that cannot mean anything (before any work)."""
    if not isinstance(bundle, (Bundle, str, os.PathLike)):
        fix = "it is loaded already: call it, predictor(image)" if isinstance(bundle, Predictor) else \
            "give a bundle folder or .zip path, a shipped name such as 'shapes', or an edgeseg.bundle.Bundle"
        raise InputError(f"edgeseg.load: expected a bundle path or name, got {type(bundle).__name__}", fix=fix)
    if isinstance(bundle, str) and not bundle.strip():
        raise InputError("edgeseg.load: the bundle name is empty",
                         fix="give a bundle path or a shipped name such as 'shapes'")
    for name, value in (("backend", backend), ("precision", precision)):
        if not isinstance(value, str):
            raise InputError(f"edgeseg.load: {name} must be a string, got {value!r}",
                             fix=f"{name}='auto' chooses it here")
    if precision.strip().lower() not in PRECISIONS:  # before: "bundle has no fp8 model" (a BundleError, no fix)
        raise InputError(f"edgeseg.load: unknown precision {precision!r}",
                         fix=f"one of {', '.join(PRECISIONS)} ('auto' chooses here among what the bundle and this "
                             "machine support; bf16 runs on OpenVINO, fp16 on TensorRT)")
    import re

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda", device.strip().lower()):
        # cuda:N is refused, not run elsewhere: the runners take "cuda" (ORT, torch) or the current GPU (TensorRT)
        raise InputError(f"edgeseg.load: unknown device {device!r}",
                         fix="device='cuda' (the first GPU; choose another with CUDA_VISIBLE_DEVICES=N), 'cpu' or 'auto'")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise InputError(f"threads must be an integer >= 0 (0: the runtime's default), got {threads!r}")
    if threads > 64:
        from ._timing import usable_cores

        cores = usable_cores()
        if threads > max(64, MAX_THREADS_PER_CORE * cores):
            raise InputError(f"threads={threads} on {cores} usable cores: starting them all would take minutes",
                             fix=f"use at most {max(64, MAX_THREADS_PER_CORE * cores)} (usually the core count), "
                             "or 0 for the runtime's default")


def _check_target(b: Bundle, target: Any, precision: str) -> Any:
    """``target`` for the choice: with ``precision="auto"``, a target the bundle has no INT8 model for (a typo,
    or a bundle not quantized for it) is said in a warning and dropped (it used to be dropped silently; scripts
    run over bundles of which only some are quantized rely on the fall-back). ``int8`` asks for that model: its
    absence stays an error, raised where the model is looked up."""
    if target is None or precision != "auto":
        return target
    have = sorted({m.target for m in b.manifest.models if m.precision == "int8" and m.target})
    if target in have:
        return target
    import logging

    logging.getLogger("edgeseg").warning("bundle %r has no INT8 model for target %r (it has: %s); choosing among "
                                         "its other models", b.name, target, ", ".join(have) or "none")
    return None


def _unpickle(root: str, backend: str, precision: str, target: str | None, device: str, threads: int,
              options: dict[str, Any]) -> "Predictor":
    """:meth:`Predictor.__reduce__`'s other half: the same bundle on the same backend and precision, its options."""
    from .structures import decoder_options

    p = load(root, backend=backend, precision=precision, target=target, device=device, threads=threads)
    p.options = decoder_options(p.manifest.task, options)
    return p


def load(bundle: Bundle | str | os.PathLike, backend: str = "auto", precision: str = "auto", target: str | None = None,
         device: str = "auto", threads: int = 0) -> Predictor:
    """A predictor for a bundle (a :class:`Bundle`, a path, or a shipped name such as ``"road"``).

    backend: ``torch``, ``onnxruntime``, ``openvino``, ``tensorrt`` or ``auto``. precision: ``fp32``,
    ``bf16`` (OpenVINO on CPUs with BF16), ``fp16`` (TensorRT), ``int8`` or ``auto``. Whatever is
    ``auto`` is chosen on this device (:mod:`edgeseg.backends.choice`): the fastest of what the bundle
    verifiably supports here, INT8 only where its accuracy passed the gate, by a short side-by-side
    timing that is cached per device and model; giving both a backend and a precision pins the choice.
    ``predictor.choice`` says what was chosen and why. Nothing else heavy happens until the first call
    or ``with`` (a just-timed winner stays active).
    """
    if is_remote(bundle):  # an `edgeseg serve` server
        from .remote import RemotePredictor

        if (backend, precision, target, device, threads) != ("auto", "auto", None, "auto", 0):
            import logging

            logging.getLogger("edgeseg").warning(
                "%s: backend/precision/target/device/threads are chosen by the server (edgeseg serve --backend ...), "
                "not by the client; ignoring them", bundle)
        return RemotePredictor(bundle)
    from .backends.choice import choose

    _check_load_args(bundle, backend, precision, device, threads)
    backend, precision, device = (v.strip().lower() for v in (backend, precision, device))  # "ONNXRuntime", "FP32"
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(Path(bundle) if not isinstance(bundle, str) else bundle)
    target = _check_target(b, target, precision)
    choice, runner = choose(b, backend, precision, target, device, threads)
    if runner is None:
        c = choice.candidate
        if choice.how == "pinned":  # validated as before: unknown or unusable backends are clear errors
            select_backend(b, c.backend, c.precision, c.target, device)
        runner = BACKENDS.get(c.backend).load(b, precision=c.precision, device=device, threads=threads, target=c.target)
    if runner.is_active:  # timed just now: open for the first call, but kept by nothing (a with-block frees it)
        runner.leave_open()
    predictor = Predictor(b, runner)
    predictor.choice = choice
    return predictor
