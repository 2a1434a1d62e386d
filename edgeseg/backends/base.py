"""The backend contract (Polygraphy-style runners).

::

    runner = BACKENDS.get("onnxruntime").load(bundle, precision="int8", device="cpu")   # lazy, cheap
    with runner:                                # activate: session/engine, buffers, warm-up
        outputs = runner.infer({"images": x})   # dict of numpy in, dict of numpy out
        runner.input_specs, runner.output_specs, runner.last_latency_s
    BACKENDS.get("tensorrt").is_available()     # (ok, reason); never raises

Public methods validate; ``_activate_impl`` / ``_infer_impl`` / ``_deactivate_impl`` do the work.
Runtimes are imported inside the ``_impl`` methods, never at module import.
"""
from __future__ import annotations

import abc
import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from .._registry import Registry
from .._timing import counted_inference
from ..errors import BackendUnavailable, BundleError, EdgesegError, InputError

if TYPE_CHECKING:
    from ..bundle import Bundle


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype (numpy name) and shape (ints; strings or -1 for dynamic axes) of a model IO."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def matches(self, array: np.ndarray) -> str | None:
        """None if ``array`` fits, else a sentence saying why not."""
        if str(array.dtype) != self.dtype:
            return f"dtype {array.dtype}, expected {self.dtype}"
        if len(array.shape) != len(self.shape):
            return f"rank {array.ndim} {list(array.shape)}, expected {list(self.shape)}"
        for got, want in zip(array.shape, self.shape):
            if isinstance(want, int) and want > 0 and got != want:
                return f"shape {list(array.shape)}, expected {list(self.shape)}"
        return None


def batch_limit(runner: Any) -> int | None:
    """``runner.max_batch`` when it is a batch size (callers split larger batches), else None (no limit; a runner
    made elsewhere need not have the attribute)."""
    most = getattr(runner, "max_batch", None)
    return most if isinstance(most, int) and most >= 1 else None


class Runner(abc.ABC):
    """Base of every backend runner. Subclasses set ``name`` and implement the ``_impl`` methods."""

    name: ClassVar[str] = "base"
    #: model file suffixes this backend runs, and the INT8 targets it prefers (in order) when none is asked for
    file_suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    model_targets: ClassVar[tuple[str | None, ...]] = (None,)
    #: whether ``_infer_impl`` may run in several threads at once (ONNX Runtime sessions, OpenVINO with one
    #: request per call in flight, torch modules); when not (one TensorRT execution context and its device
    #: buffers), :meth:`infer` runs one call at a time, so a predictor shared by threads stays correct
    concurrent: ClassVar[bool] = True

    def __init__(self, model_path: Path, *, precision: str = "fp32", device: str = "auto", threads: int = 0,
                 bundle: "Bundle | None" = None):
        self.model_path = Path(model_path)
        self.precision = precision
        self.device = device
        self.threads = threads
        self.bundle = bundle
        self.input_specs: tuple[TensorSpec, ...] = ()
        self.output_specs: tuple[TensorSpec, ...] = ()
        self.last_latency_s: float = float("nan")
        self.cpu_seconds = 0.0  # this runner's calls' wall time x cpu_threads, summed (LoadProbe leaves them out)
        #: the largest batch one ``infer`` call takes (a TensorRT engine's profile, set at activation); None: any
        self.max_batch: int | None = None
        self._active = False
        self._turns = threading.RLock()  # activation, and inference when not ``concurrent``
        #: calls of a ``concurrent`` runner in flight: deactivate() waits for them (it set the session to None
        #: under a call that had passed the active check: "'NoneType' object has no attribute 'run'")
        self._in_flight = 0
        self._closing = False  # deactivate() waits for those calls: new calls and activations wait for it
        self._calls_done = threading.Condition(self._turns)
        #: who keeps the session: ``activate()`` until ``deactivate()`` (a predictor's lazy first call and its
        #: close()), and each holder (a with-block, a stream's inference stage) until it releases; the session is
        #: freed when neither remains (before: a user's with-block or close() freed it under a running stream)
        self._standing = False
        self._holders = 0
        self._calling = threading.local()  # .depth: this thread's calls in progress (a close inside one refused)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        """(True, "") when this backend can run here, else (False, why). Never raises."""
        return True, ""

    @classmethod
    def load(cls, bundle: "Bundle | str | Path", precision: str = "fp32", device: str = "auto", threads: int = 0,
             target: str | None = None) -> "Runner":
        """A lazy runner for a bundle's model (nothing heavy happens until activation)."""
        from ..bundle import Bundle

        ok, why = cls.is_available()
        if not ok:
            raise BackendUnavailable(f"backend {cls.name!r} is not available: {why}")
        b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        return cls(cls.select_model(b, precision, target), precision=precision, device=device, threads=threads, bundle=b)

    @classmethod
    def select_model(cls, bundle: "Bundle", precision: str = "fp32", target: str | None = None) -> Path:
        """The bundle's model file this backend should run.

        ``target`` names one of several INT8 models (tensorrt, cpu, openvino), so it only counts for
        ``precision="int8"``: an FP32 model is the same graph for every target and is chosen as if no
        target were given. Otherwise: the first of ``model_targets`` present, else any model of that
        precision with one of ``file_suffixes``."""
        if target is not None and precision == "int8":
            return bundle.model_path(precision, target)
        cands = [m for m in bundle.manifest.models
                 if m.precision == precision and m.file.endswith(cls.file_suffixes)]
        for want in cls.model_targets:
            for m in cands:
                if m.target == want:
                    return bundle.root / m.file
        if cands:
            return bundle.root / cands[0].file
        bundle.model_entry(precision)  # raises BundleError listing what the bundle has
        raise BundleError(  # a model of that precision exists, but in another file type
            f"bundle {bundle.root} has no {precision} model that the {cls.name} backend runs "
            f"(it needs a {' or '.join(cls.file_suffixes)} file)"
        )

    # ---- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        """Open the session (if not open) and keep it until :meth:`deactivate`."""
        with self._turns:  # two threads' first calls build one session
            self._open_session()
            self._standing = True
        return self

    def deactivate(self) -> None:
        """End what :meth:`activate` keeps: the session is freed (after the calls in flight) unless a holder
        (:meth:`hold`: a with-block, a running stream) still keeps it; then it is freed when the last one leaves."""
        with self._turns:
            self._standing = False
            if not self._holders:
                self._close_session()

    def leave_open(self) -> None:
        """End what :meth:`activate` keeps but leave the session open: the next :meth:`release` or
        :meth:`deactivate` with no holder left frees it (a runner activated to be timed, handed to a predictor)."""
        with self._turns:
            self._standing = False

    def hold(self) -> "Runner":
        """Open the session (if not open) and keep it until a matching :meth:`release`."""
        with self._turns:
            self._open_session()
            self._holders += 1
        return self

    def release(self) -> None:
        with self._turns:
            self._holders = max(0, self._holders - 1)
            if not self._holders and not self._standing:
                self._close_session()

    def _open_session(self) -> None:
        """(Holding ``_turns``.)"""
        self._wait_closed()
        if not self._active:
            self._activate_impl()
            self._active = True
            self.__dict__.pop("_cpu_threads", None)  # where the new session runs decides what its calls load

    def _close_session(self) -> None:
        """(Holding ``_turns``.) Free the session once the calls in flight have ended; calls and activations
        arriving meanwhile wait for it."""
        if getattr(self._calling, "depth", 0):  # it would wait for its own call, or free the session under it
            raise EdgesegError(f"{self.name} runner for {self.model_path.name}: closed from inside one of its own calls",
                               fix="close the predictor or runner after the call returns")
        self._wait_closed()
        # a close that waited behind another one: a holder or an activation may have opened the session meanwhile
        if not self._active or self._holders or self._standing:
            return
        self._closing = True
        try:
            while self._in_flight:  # calls of a concurrent runner that passed the active check end first
                self._calls_done.wait()
            self._deactivate_impl()
            self._active = False
        finally:
            self._closing = False
            self._calls_done.notify_all()

    def _wait_closed(self) -> None:
        """(Holding ``_turns``) until a deactivation waiting for calls in flight has ended."""
        while self._closing:
            self._calls_done.wait()

    def __enter__(self) -> "Runner":
        return self.hold()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def is_active(self) -> bool:
        return self._active

    # ---- inference ---------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray], check: bool = True, *, activate: bool = False) -> dict[str, np.ndarray]:
        """``activate``: :meth:`activate` first (open the session if it is not, and keep it until :meth:`deactivate`:
        a predictor's calls outside with-blocks), in one step with the call, so that a deactivation from another
        thread cannot come between the two."""
        turn = self._turns if not self.concurrent else self._counted_call(activate)
        with turn:
            if activate and not (self._active and self._standing):  # not concurrent: this thread holds _turns
                self.activate()  # kept until deactivate(), also when a holder opened it
            self._check_active()
            if check:
                self._check_feed(feed)
            threads = self.cpu_threads  # seen by a backend choice timed meanwhile (LoadProbe.own_inference)
            self._calling.depth = getattr(self._calling, "depth", 0) + 1
            try:
                with counted_inference(threads):
                    t0 = time.perf_counter()
                    out = self._infer_impl(feed)
                    latency = time.perf_counter() - t0
            finally:
                self._calling.depth -= 1
            with self._turns:  # calls of a concurrent runner finish together: no update lost
                self.last_latency_s = latency
                self.cpu_seconds += latency * threads
            return out

    def _check_active(self) -> None:
        if not self._active:
            raise EdgesegError(f"{self.name} runner for {self.model_path.name} is not active", fix="use it inside 'with runner:'")

    @contextlib.contextmanager
    def _counted_call(self, activate: bool = False):
        """One call of a concurrent runner: counted while it runs, so a deactivation waits for it."""
        with self._turns:
            self._wait_closed()
            if activate and not (self._active and self._standing):
                self.activate()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._turns:
                self._in_flight -= 1
                if not self._in_flight:
                    self._calls_done.notify_all()

    @property
    def cpu_threads(self) -> float:
        """CPU threads a call of this runner keeps busy: its thread count (0: the runtime's, all usable cores);
        0 on a GPU. Found once (usable_cores reads the affinity and the cgroup quota)."""
        n = self.__dict__.get("_cpu_threads")
        if n is None:
            from .._timing import usable_cores

            n = self._cpu_threads = 0.0 if self.on_gpu() else float(
                self.threads if self.threads and self.threads > 0 else usable_cores())
        return n

    def on_gpu(self) -> bool:
        """Whether this runner's calls run on a GPU: TensorRT, ``device="cuda"``, or an active session or module
        placed there (ONNX Runtime's CUDA/TensorRT providers, torch on CUDA, ``device="auto"`` included)."""
        if self.device == "cuda" or self.name == "tensorrt":
            return True
        providers = getattr(self, "active_providers", None) or []
        if providers and providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"):
            return True
        device = getattr(self, "_device", None)
        return getattr(device, "type", None) == "cuda"

    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        names = {s.name for s in self.input_specs}
        if not isinstance(feed, Mapping):
            raise InputError(f"{self.model_path.name}: infer takes a dict {{input name: array}}, got {type(feed).__name__}",
                             fix=f"pass {{{next(iter(sorted(names)), 'images')!r}: array}} (inputs: {sorted(names)})")
        missing = names - set(feed)
        if missing:
            raise InputError(f"{self.model_path.name}: missing input(s) {sorted(missing)}; the model takes {sorted(names)}, "
                             f"the feed gives {sorted(feed)}")
        for spec in self.input_specs:
            arr = feed[spec.name]
            if not isinstance(arr, np.ndarray):
                raise InputError(f"{self.model_path.name}: input {spec.name!r} must be a numpy array, got {type(arr).__name__}")
            why = spec.matches(arr)
            if why:
                raise InputError(f"{self.model_path.name}: input {spec.name!r} has {why}")

    # ---- to implement ------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> None:
        """Create the session/engine, allocate buffers, fill input_specs/output_specs, warm up."""

    @abc.abstractmethod
    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference on a validated feed."""

    def _deactivate_impl(self) -> None:
        """Free the session/engine and buffers (default: let garbage collection do it)."""


BACKENDS: Registry[type[Runner]] = Registry("backend", error=BackendUnavailable)
