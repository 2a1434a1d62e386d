"""Building and loading TensorRT engines (TensorRT 8.5 to 11 Python API; what differs between versions is
decided by :func:`~edgeseg.backends.tensorrt.plan.builder_plan`). Imported only on activation.

Loaders are plain functions over a ``tensorrt`` module and a logger, in Polygraphy's spirit:
``network_from_onnx`` -> ``build_serialized_engine`` -> ``engine_from_bytes``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...errors import EdgesegError
from ...structures import InputSpec
from .._util import dims
from .plan import TRT_TO_NUMPY, BuildProgress, BuilderPlan, describe_parser_errors, profile_shapes, progress_monitor
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
    logged (TensorRT 10+; Ctrl-C cancels the build: ``KeyboardInterrupt``), reading and then updating the
    builder's timing cache at ``timing_cache`` when given (a cache TensorRT refuses is started afresh)."""
    trt = trt_module()
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = network_from_onnx(trt, builder, logger, onnx_path, plan)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
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
    monitor = None
    if hasattr(trt, "IProgressMonitor"):  # TensorRT 10.0+; before, the log's own lines are all there is
        monitor = progress_monitor(trt, progress)
        config.progress_monitor = monitor
    log.info("building a TensorRT %s engine for %s (once for this GPU and TensorRT version; minutes on a Jetson)",
             plan.precision, Path(onnx_path).name)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None and progress.cancelled:
        raise KeyboardInterrupt
    if serialized is not None and cache is not None:
        _save_timing_cache(config, timing_cache)
    if serialized is None:
        raise EdgesegError(f"{onnx_path}: TensorRT could not build a {plan.precision} engine (see the log above)",
                           fix="try another --precision, or a larger workspace")
    return bytes(serialized)


def engine_from_bytes(trt: Any, logger: Any, data: bytes):
    """Deserialize an engine; None when it was built by another TensorRT version or for another GPU."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    return runtime, engine


def _timing_cache(config: Any, path: Path | None) -> Any:
    """The timing cache read from ``path`` (empty when there is none or it cannot be read), set on ``config``."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes() if Path(path).is_file() else b""
    except OSError as e:
        log.warning("%s: TensorRT timing cache not read (%s); starting an empty one", path, e)
        data = b""
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # noqa: BLE001 - a damaged file: TensorRT raises or returns None, by version
        cache = None
    if cache is None and data:
        log.warning("%s: TensorRT refused this timing cache; starting an empty one", path)
        cache = config.create_timing_cache(b"")
    if cache is not None:
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config: Any, path: Path) -> None:
    from ..._io import atomic_write_bytes

    try:
        atomic_write_bytes(Path(path), bytes(memoryview(config.get_timing_cache().serialize())))
    except OSError as e:  # only a later build's speed depends on it
        log.warning("%s: TensorRT timing cache not saved (%s)", path, e)


def save_engine(path: Path, data: bytes) -> None:
    from ..._io import atomic_write_bytes

    atomic_write_bytes(path, data)
