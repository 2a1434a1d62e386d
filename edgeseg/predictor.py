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
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .backends import BACKENDS, Runner, select_backend
from .bundle import Bundle, Manifest
from .decode import decode
from .errors import InputError
from .structures import DecoderOptions, PreprocessMeta


def check_image(image: Any) -> np.ndarray:
    """An RGB ``uint8 [H, W, 3]`` array, or an :class:`InputError` saying what is wrong and how to fix it."""
    if not isinstance(image, np.ndarray):
        fix = "read it first: edgeseg.data.io.read_image(path)" if isinstance(image, (str, os.PathLike)) else None
        raise InputError(f"expected an RGB image as a numpy array uint8 [H, W, 3], got {type(image).__name__}", fix=fix)
    if image.ndim == 2:
        raise InputError(f"expected an RGB image [H, W, 3], got a single-channel image {list(image.shape)}",
                         fix="convert it: np.repeat(img[..., None], 3, axis=2)")
    if image.ndim != 3 or image.shape[2] not in (3,):
        fix = "drop the alpha channel: img[..., :3]" if image.ndim == 3 and image.shape[2] == 4 else None
        raise InputError(f"expected an RGB image [H, W, 3], got shape {list(image.shape)}", fix=fix)
    if image.dtype != np.uint8:
        raise InputError(f"expected a uint8 image (0..255), got {image.dtype}",
                         fix="scale and convert it: (img * 255).clip(0, 255).astype(np.uint8) for 0..1 floats")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the image is empty: shape {list(image.shape)}")
    return image


class Predictor:
    """A bundle, a runner for one backend, and the task's decoder."""

    def __init__(self, bundle: Bundle, runner: Runner):
        self.bundle = bundle
        self.runner = runner
        self.choice = None  # set by load(): edgeseg.backends.choice.Choice (what was chosen, how and why)
        self.options: DecoderOptions = bundle.manifest.decoder_options  # the task's decoder options

    def set_options(self, **overrides: Any) -> "Predictor":
        """Change decoder options for this predictor only (``score_threshold=0.5`` for instance
        bundles, ``upsample="labels"`` for semantic ones); ``None`` values are ignored."""
        self.options = self.options.replace(**overrides)
        return self

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
        x, meta = spec.preprocess(check_image(rgb))
        return {spec.name: x}, meta

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, image: np.ndarray | None = None):
        """Raw outputs -> the task's result at the original image size (``image``: the frame, for
        decoders that look at it: the semantic CRF)."""
        return decode(outputs, meta, self.manifest, self.options, image=image)

    def __call__(self, rgb: np.ndarray):
        if not self.runner.is_active:
            self.runner.activate()  # stays active until close() / the end of a with-block
        feed, meta = self.preprocess(rgb)
        return self.postprocess(self.runner.infer(feed), meta, image=rgb)

    # ---- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Predictor":
        self.runner.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.runner.deactivate()

    def __repr__(self) -> str:
        return f"Predictor({self.bundle.root.name!r}, backend={self.backend!r}, precision={self.runner.precision!r})"


def is_remote(bundle: Any) -> bool:
    """Whether ``bundle`` names an ``edgeseg serve`` server (``http(s)://``) rather than a bundle here."""
    return isinstance(bundle, str) and bundle[:8].lower().startswith(("http://", "https://"))


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

    if threads < 0:
        raise InputError(f"threads must be >= 0 (0: the runtime's default), got {threads}")
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(Path(bundle) if not isinstance(bundle, str) else bundle)
    choice, runner = choose(b, backend, precision, target, device, threads)
    if runner is None:
        c = choice.candidate
        if choice.how == "pinned":  # validated as before: unknown or unusable backends are clear errors
            select_backend(b, c.backend, c.precision, c.target, device)
        runner = BACKENDS.get(c.backend).load(b, precision=c.precision, device=device, threads=threads, target=c.target)
    predictor = Predictor(b, runner)
    predictor.choice = choice
    return predictor
