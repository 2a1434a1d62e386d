"""Building and loading TensorRT engines (TensorRT 8.5 to 11 Python API; what differs between versions is
decided by :func:`~edgeseg.backends.tensorrt.plan.builder_plan`). Imported only on activation.

Loaders are plain functions over a ``tensorrt`` module and a logger, in Polygraphy's spirit:
``network_from_onnx`` -> ``build_serialized_engine`` -> ``engine_from_bytes``.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from ...errors import EdgesegError
from ...structures import InputSpec
from .._util import dims
from .plan import (
    DLA_ENV, TRT_TO_NUMPY, BuildProgress, BuilderPlan, describe_parser_errors, profile_shapes, progress_monitor,
)
from ..base import TensorSpec

log = logging.getLogger("edgeseg.backends")


def trt_module():
    import tensorrt as trt

    return trt


def network_from_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path, plan: BuilderPlan):
    """Parse the ONNX file into a network created with ``plan.network_flags`` (``EXPLICIT_BATCH`` before
    TensorRT 10, whose ONNX parser refuses an implicit-batch network; ``STRONGLY_TYPED`` for fp32 in 10.x)."""
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            op = e.node_operator() if hasattr(e, "node_operator") else ""
            node = e.node_name() if hasattr(e, "node_name") else str(e.node())
            errors.append((op, node, e.desc()))
        raise describe_parser_errors(str(onnx_path), errors)
    return network, parser


def network_input_specs(network: Any) -> tuple[TensorSpec, ...]:
    out = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        out.append(TensorSpec(t.name, TRT_TO_NUMPY.get(t.dtype.name, t.dtype.name), dims(tuple(t.shape))))
    return tuple(out)


def build_serialized_engine(onnx_path: Path, plan: BuilderPlan, input_spec: InputSpec, *, max_batch: int = 8,
                            max_side: int = 2048, logger: Any = None, timing_cache: Path | None = None) -> bytes:
    """Build an engine for ``plan`` (precision flags, workspace) with one optimization profile, its progress
    logged where TensorRT has ``IProgressMonitor``, reading and then updating the builder's timing cache at
    ``timing_cache`` when given. The build runs in a worker thread while this one waits in Python, so Ctrl-C
    (or SIGTERM, which the CLI raises as ``KeyboardInterrupt``) reaches it whichever threads TensorRT calls
    back on: the build is cancelled at its next step and the interrupt raised here once it has stopped."""
    trt = trt_module()
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = network_from_onnx(trt, builder, logger, onnx_path, plan)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if plan.dla_core is not None:
        cores = int(getattr(builder, "num_DLA_cores", 0))
        if plan.dla_core >= cores:
            raise EdgesegError(f"DLA core {plan.dla_core} asked for ({DLA_ENV}), this device has {cores}",
                               fix=f"{DLA_ENV}=0{' or 1' if cores > 1 else ''}" if cores else f"unset {DLA_ENV}: no DLA here")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    shapes = profile_shapes(network_input_specs(network), input_spec, max_batch=max_batch, max_side=max_side)
    if shapes:
        profile = builder.create_optimization_profile()
        for s in shapes:
            profile.set_shape(s.name, s.min, s.opt, s.max)
        config.add_optimization_profile(profile)
    cache = _timing_cache(config, timing_cache)
    progress = BuildProgress(log.info)
    if hasattr(trt, "IProgressMonitor"):  # the Python API's since 9.x; before, the log's own lines are all there is
        try:
            config.progress_monitor = progress_monitor(trt, progress)  # the config keeps it alive
            progress.monitored = True
        except (AttributeError, TypeError) as e:
            log.debug("no TensorRT build progress: %s", e)
    log.info("building a TensorRT %s engine for %s (once for this GPU and TensorRT version; minutes on a Jetson)",
             plan.precision, Path(onnx_path).name)
    serialized = run_cancellable(lambda: builder.build_serialized_network(network, config), progress)
    if progress.interrupt is not None:  # even when the build got to its end first: the user asked to stop
        raise progress.interrupt
    if serialized is not None and cache is not None:
        save_timing_cache(config, timing_cache)
    if serialized is None:
        raise EdgesegError(f"{onnx_path}: TensorRT could not build a {plan.precision} engine (see the log above)",
                           fix="try another --precision, or a larger workspace")
    return bytes(serialized)


_Thread = threading.Thread  # the build's thread (tests give it a stand-in)


def run_cancellable(build: Callable[[], Any], progress: BuildProgress, poll_s: float = 0.25) -> Any:
    """``build()`` in a worker thread; a ``KeyboardInterrupt`` reaching this thread meanwhile cancels it
    (:meth:`BuildProgress.cancel`) and the wait goes on until the build has returned (TensorRT is still
    using the network and config). Returns what ``build`` returned; its exception is raised here."""
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["value"] = build()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            out["error"] = e

    worker = _Thread(target=work, name="edgeseg-trt-build", daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            worker.join(poll_s)
        except KeyboardInterrupt as e:
            progress.cancel(e)
            log.warning("stopping the TensorRT engine build at its next step" if progress.monitored else
                        "this TensorRT cannot cancel a build (no IProgressMonitor): it stops when the build ends")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def engine_from_bytes(trt: Any, logger: Any, data: bytes, dla: int | None = None):
    """Deserialize an engine; None when it was built by another TensorRT version or for another GPU. ``dla``:
    the DLA core an engine built for one runs on (the runtime must name it before deserializing)."""
    runtime = trt.Runtime(logger)
    if dla is not None:
        runtime.DLA_core = dla
    engine = runtime.deserialize_cuda_engine(data)
    return runtime, engine


def _timing_cache(config: Any, path: Path | None) -> Any:
    """The timing cache read from ``path`` (empty when there is none, it cannot be read or TensorRT refuses it:
    another version's, another device's, a damaged file), set on ``config``; None when TensorRT takes none."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes() if Path(path).is_file() else b""
    except OSError as e:
        log.warning("%s: TensorRT timing cache not read (%s); starting an empty one", path, e)
        data = b""
    for blob in ((data, b"") if data else (b"",)):
        try:
            cache = config.create_timing_cache(blob)
            if cache is not None and config.set_timing_cache(cache, False) is not False:
                return cache
        except Exception as e:  # noqa: BLE001 - only the build's speed depends on the cache
            log.debug("TensorRT timing cache: %s", e)
        if blob:
            log.warning("%s: TensorRT refused this timing cache; starting an empty one", path)
    return None


def save_timing_cache(config: Any, path: Path) -> None:
    """The config's timing cache merged with what the file holds now (another process's build may have
    written it meanwhile) and written atomically, under a lock file; a failure is a warning (only a later
    build's speed depends on it)."""
    from ..._io import atomic_write_bytes

    path = Path(path)
    try:
        cache = config.get_timing_cache()
        if cache is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except (ImportError, OSError) as e:  # no POSIX locks here: the last writer wins
                log.debug("%s: written unlocked (%s)", path, e)
            if path.is_file():
                try:
                    on_disk = config.create_timing_cache(path.read_bytes())
                    if on_disk is not None:
                        cache.combine(on_disk, False)
                except Exception as e:  # noqa: BLE001 - a damaged file: replaced by this build's cache
                    log.debug("%s: not merged (%s)", path, e)
            atomic_write_bytes(path, bytes(memoryview(cache.serialize())))
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("%s: TensorRT timing cache not saved (%s)", path, e)


def save_engine(path: Path, data: bytes) -> None:
    from ..._io import atomic_write_bytes

    atomic_write_bytes(path, data)
