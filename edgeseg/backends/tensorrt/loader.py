"""Building and loading TensorRT engines (TensorRT 8.5 to 11 Python API; what differs between versions is
decided by :func:`~edgeseg.backends.tensorrt.plan.builder_plan`). Imported only on activation.

Loaders are plain functions over a ``tensorrt`` module and a logger, in Polygraphy's spirit:
``network_from_onnx`` -> ``build_serialized_engine`` -> ``engine_from_bytes``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import EdgesegError
from ...structures import InputSpec
from .._util import dims
from .plan import TRT_TO_NUMPY, BuilderPlan, describe_parser_errors, profile_shapes
from ..base import TensorSpec


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
                            max_side: int = 2048, logger: Any = None) -> bytes:
    """Build an engine for ``plan`` (precision flags, workspace) with one optimization profile."""
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
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgesegError(f"{onnx_path}: TensorRT could not build a {plan.precision} engine (see the log above)",
                           fix="try another --precision, or a larger workspace")
    return bytes(serialized)


def engine_from_bytes(trt: Any, logger: Any, data: bytes):
    """Deserialize an engine; None when it was built by another TensorRT version or for another GPU."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    return runtime, engine


def save_engine(path: Path, data: bytes) -> None:
    from ..._io import atomic_write_bytes

    atomic_write_bytes(path, data)
