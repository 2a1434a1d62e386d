"""OpenVINO runner: ``BACKENDS.get("openvino")``.

Reads the bundle's ONNX with OpenVINO's ONNX frontend and compiles it for the CPU plugin with the
settings of :func:`~edgeseg.backends.openvino.settings.compile_config` (the one place they are
made): ``fp32`` pins f32 (results match ONNX Runtime), ``bf16`` runs the FP32 model in bf16 where the
CPU has it, ``int8`` runs a Q/DQ model's quantized layers in INT8 and the rest in f32.

Op support has one source of truth here: :func:`unsupported_ops` (what the CPU plugin does not take),
used by :meth:`OpenVinoRunner.supports` (``--backend auto``) and by ``edgeseg check --target openvino``.
A model read by :meth:`OpenVinoRunner.supports` that OpenVINO takes is handed to the first runner of
that file to activate (:data:`_READ_MODELS`), so ``--backend auto`` reads the model once, not twice.
"""
from __future__ import annotations

import functools
import importlib.util
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..._unwind import FIX as UNWIND_FIX
from ..._unwind import unwinder_hazard
from ...errors import EdgesegError, UnsupportedError, memory_error, out_of_memory
from ..base import BACKENDS, Runner, TensorSpec
from .._util import dims, warm_up
from .settings import compile_config, precisions_here

DEVICE = "CPU"


def explain_read_error(model: str, message: str) -> EdgesegError:
    """OpenVINO's conversion error -> ours, naming the op(s) it has no conversion rule for."""
    m = re.search(r"No conversion rule found for operations: ([^\n]+)", message)
    if m:
        return UnsupportedError(
            f"{model}: OpenVINO cannot convert op(s) {m.group(1).strip()}",
            fix="use --backend onnxruntime, or export with standard ONNX ops",
        )
    if out_of_memory(message):
        return memory_error(f"{model}: OpenVINO could not load the model", message)
    # OpenVINO's first lines are where it threw ("Exception from src/inference/src/cpp/core.cpp:117:"): its reason
    # follows them (before, only the first line was kept: "can't alloc" was lost)
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith("Exception from") and not re.match(r"^[\w/.-]+:\d+:?$", ln)]
    first = said[0] if said else lines[0] if lines else "unknown error"
    return EdgesegError(f"{model}: OpenVINO cannot load the model: {first}")


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """The process's one ``openvino.Core``: models are read, queried and compiled by the same Core,
    which outlives them (a model kept after the Core that read it is gone has crashed the process
    at a later fork)."""
    from ..._openvino import decline_telemetry

    decline_telemetry()
    import openvino as ov

    return ov.Core()


def read_model(model_path: str | Path, name: str | None = None) -> Any:
    """OpenVINO's ``Model`` for an ONNX file. A file it cannot read raises :func:`explain_read_error`'s
    error (naming ``name``, default the path, and the ops without a conversion rule); OpenVINO's own
    exception is chained as ``__cause__``."""
    try:
        return core().read_model(str(model_path))
    except Exception as e:  # OpenVINO raises RuntimeError with a long report
        raise explain_read_error(name or str(model_path), str(e)) from e


def unsupported_ops(model: Any, name: str | None = None) -> list[str]:
    """Friendly names of the operations of ``model`` (an ``openvino.Model``, or an ONNX path that is
    read with :func:`read_model`, which raises if OpenVINO cannot read it) that the CPU plugin does not
    take; empty when it takes every one."""
    if isinstance(model, (str, Path)):
        model = read_model(model, name)
    placed = core().query_model(model, DEVICE)
    return [op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name() not in placed]


def graph_port_names(model: Any, compiled: Any, wanted: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """The ONNX graph's own names of ``compiled``'s inputs and outputs: ``wanted`` (a bundle's input
    and output names) where a port carries one, else the names of ``model``'s ports (the
    ``openvino.Model`` it was compiled from, read from the ONNX file). A compiled port holds every name
    of the tensors OpenVINO's passes merged into it (an input and the Identity or Squeeze behind it)
    and ``get_any_name`` returns any of them: an imported model whose input was ``data`` (renamed
    ``images`` by the import, an Identity keeping ``data`` inside) was run as taking ``data``, and
    every frame failed."""
    def pick(ports, declared: list[str]) -> list[str]:
        return [next((n for n in (*wanted, *declared) if n in p.get_names()), p.get_any_name()) for p in ports]

    return (pick(compiled.inputs, [p.get_any_name() for p in model.inputs]),
            pick(compiled.outputs, [p.get_any_name() for p in model.outputs]))


#: the oldest OpenVINO whose ONNX reader takes the graphs edgeseg exports (opset 19)
MIN_OPENVINO = (2024, 3)


def openvino_too_old(version: str | None = None) -> str | None:
    """Why the installed OpenVINO (``version``: its release, read from the package metadata when not given) cannot
    run edgeseg's models, or None. Session 57 (a dependency audit): 2024.0-2024.2 read opset-19 ReduceMean (axes an
    input) as a reduction over every axis, so every shipped FP32 model failed to load (a channel-count error), where
    pyproject allowed 2024.0."""
    import re

    if version is None:
        try:
            from importlib.metadata import version as installed

            version = installed("openvino")
        except Exception:  # noqa: BLE001 - no metadata (a source build, JetPack's own): not judged
            return None
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None or (int(m.group(1)), int(m.group(2))) >= MIN_OPENVINO:
        return None
    return (f"openvino {version} is older than {MIN_OPENVINO[0]}.{MIN_OPENVINO[1]}, whose ONNX reader takes opset-19 "
            "ReduceMean (older ones reduce over every axis: edgeseg's models fail to load); "
            f"pip install -U 'openvino>={MIN_OPENVINO[0]}.{MIN_OPENVINO[1]}'")


class _ReadModels:
    """Models read by a support check, waiting for the runner that activates them: at most ``size``
    (oldest evicted), keyed by the file's resolved path and stamped with its size and mtime, so a file
    changed since it was read is read again. :meth:`take` removes the entry: a model is handed over
    once, then belongs to that runner."""

    def __init__(self, size: int = 2):
        self.size = size
        self._items: OrderedDict[str, tuple[tuple[int, int], Any]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _stamp(path: str | Path) -> tuple[str, tuple[int, int]] | None:
        try:
            st = Path(path).stat()
            return str(Path(path).resolve()), (st.st_size, st.st_mtime_ns)
        except OSError:
            return None

    def put(self, path: str | Path, model: Any) -> None:
        stamped = self._stamp(path)
        if stamped is None:
            return
        with self._lock:
            self._items[stamped[0]] = (stamped[1], model)
            self._items.move_to_end(stamped[0])
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def take(self, path: str | Path) -> Any | None:
        """The model read from ``path`` if it is still the same file, else None; the entry goes either way."""
        stamped = self._stamp(path)
        if stamped is None:
            return None
        with self._lock:
            stamp, model = self._items.pop(stamped[0], (None, None))
        return model if stamp == stamped[1] else None


_READ_MODELS = _ReadModels()


@BACKENDS.register("openvino", family="onnx")
class OpenVinoRunner(Runner):
    """Runs a bundle's ONNX model through OpenVINO's CPU plugin."""

    name = "openvino"
    model_targets = ("openvino", "cpu", None)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed; pip install 'edgeseg[openvino]'"
        too_old = openvino_too_old()
        if too_old is not None:
            return False, too_old
        hazard = unwinder_hazard()
        if hazard is not None:  # OpenVINO throws inside every compile_model: it would abort the process
            return False, f"{hazard}; fix: {UNWIND_FIX}"
        return True, ""

    @classmethod
    def supports(cls, model_path: str | Path) -> tuple[bool, str]:
        """Whether OpenVINO reads this ONNX and its CPU plugin takes every op (:func:`unsupported_ops`).
        Never raises. A model it takes is kept for the next runner of this file to activate."""
        try:
            model = read_model(model_path, Path(model_path).name)
            missing = unsupported_ops(model)
        except EdgesegError as e:
            return False, str(e)
        except Exception as e:  # never raises: a reason instead
            return False, str(explain_read_error(Path(model_path).name, str(e)))
        if missing:
            return False, f"the {DEVICE} plugin does not take {', '.join(missing[:5])}"
        _READ_MODELS.put(model_path, model)
        return True, ""

    @classmethod
    def select_model(cls, bundle, precision: str = "fp32", target: str | None = None) -> Path:
        """bf16 is OpenVINO running the FP32 model at reduced precision (on CPUs with BF16 only)."""
        if precision == "bf16":
            if "bf16" not in precisions_here():
                from ...errors import BackendUnavailable

                raise BackendUnavailable("this CPU has no bf16 support (OpenVINO's CPU plugin lists no BF16 capability)",
                                         fix="use --precision fp32 or int8, or --precision auto")
            return super().select_model(bundle, "fp32", None)
        return super().select_model(bundle, precision, target)

    def _activate_impl(self) -> None:
        model = _READ_MODELS.take(self.model_path)
        if model is None:
            try:
                model = read_model(self.model_path)
            except EdgesegError as e:
                raise e from None  # ours names the file and the ops; OpenVINO's long report stays out
        config = compile_config(self.precision, self.threads)
        try:
            self.compiled = core().compile_model(model, DEVICE, config)
        except Exception as e:
            raise explain_read_error(str(self.model_path), str(e)) from None
        m = self.bundle.manifest if self.bundle is not None else None
        wanted = (m.input.name, *(o.name for o in m.outputs)) if m is not None else ()
        inputs, outputs = graph_port_names(model, self.compiled, wanted)
        self.input_specs = tuple(self._spec(p, n) for p, n in zip(self.compiled.inputs, inputs))
        self.output_specs = tuple(self._spec(p, n) for p, n in zip(self.compiled.outputs, outputs))
        self._input_names = frozenset(s.name for s in self.input_specs)
        self._outputs = list(zip(self.compiled.outputs, outputs))
        self._requests, self._requests_lock = [self.compiled.create_infer_request()], threading.Lock()
        warm_up(self)

    @staticmethod
    def _spec(port, name: str) -> TensorSpec:
        shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        return TensorSpec(name, np.dtype(port.get_element_type().to_dtype()).name, dims(shape))

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One infer request per call in flight, from a pool: a request shared by threads returned other
        frames' labels (18 of 24 calls from 4 threads; OpenVINO does not refuse a busy synchronous request)."""
        names = self._input_names
        with self._requests_lock:
            request = self._requests.pop() if self._requests else None
        if request is None:
            request = self.compiled.create_infer_request()
        try:
            res = request.infer(feed if feed.keys() <= names else {k: v for k, v in feed.items() if k in names})
            return {name: np.array(res[port]) for port, name in self._outputs}  # copies: the request is reused
        finally:
            with self._requests_lock:
                self._requests.append(request)

    def _deactivate_impl(self) -> None:
        self._requests = []
        self.compiled = None
