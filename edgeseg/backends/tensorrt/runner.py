"""TensorRT runner: ``BACKENDS.get("tensorrt")``.

On activation the runner looks for a cached engine under ``bundle/engines/`` (key: ONNX sha256,
TensorRT version, GPU name and compute capability, precision, build options), builds one from the
bundle's ONNX when there is none (minutes on a Jetson; once), then runs it with
``IExecutionContext.set_tensor_address`` / ``execute_async_v3`` on a CUDA stream, device memory from
cuda-python. Written against the TensorRT 10 API; this package is the only place TensorRT is called.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ...errors import BackendUnavailable, EdgesegError
from ..base import BACKENDS, Runner
from .._util import warm_up
from .plan import EngineKey, GpuInfo, builder_plan, engine_cache_path, io_plan

MAX_BATCH = 8


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _call(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result, raising on error."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EdgesegError(f"CUDA error in {what}: {cudart.cudaGetErrorName(err)[1]!r}")
    return rest[0] if len(rest) == 1 else rest


def current_gpu(cudart: Any) -> GpuInfo:
    dev = _call(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    prop = _call(cudart, cudart.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name, int(prop.major), int(prop.minor))


@BACKENDS.register("tensorrt", family="onnx")
class TensorRTRunner(Runner):
    """Runs a bundle's ONNX as a TensorRT engine on an NVIDIA GPU."""

    name = "tensorrt"
    concurrent = False  # one execution context, stream and set of device buffers
    model_targets = ("tensorrt", None, "cpu")

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        try:
            import tensorrt  # noqa: F401
        except Exception as e:
            return False, (f"no tensorrt module ({type(e).__name__}); on a machine with an NVIDIA GPU "
                           "pip install 'edgeseg[tensorrt]' (Jetson: JetPack ships it)")
        try:
            cudart = _cudart()
        except Exception:
            return False, "no cuda-python module; pip install cuda-python"
        try:
            err, count = cudart.cudaGetDeviceCount()
        except Exception as e:
            return False, f"no CUDA driver ({e})"
        if err != cudart.cudaError_t.cudaSuccess or count == 0:
            return False, f"no CUDA driver or GPU (cudaGetDeviceCount: {err}, {count} devices)"
        return True, ""

    # ---- engine ------------------------------------------------------------------------------
    def engine_key(self, gpu: GpuInfo, trt_version: str) -> EngineKey:
        from ...bundle import sha256_file

        sha = None
        if self.bundle is not None and self.model_path.is_relative_to(self.bundle.root):
            sha = self.bundle.manifest.files.get(self.model_path.relative_to(self.bundle.root).as_posix())
        sha = sha or sha256_file(self.model_path)
        return EngineKey(sha, trt_version, gpu, self.precision, (("max_batch", str(MAX_BATCH)),))

    def _load_engine(self, trt: Any, logger: Any, key: EngineKey):
        from . import loader

        root = self.bundle.root if self.bundle is not None else self.model_path.parent
        path = self.engine_path = engine_cache_path(root, key)
        data = path.read_bytes() if path.is_file() else None
        if data is not None:
            self._runtime, engine = loader.engine_from_bytes(trt, logger, data)
            if engine is not None:
                return engine
        spec = self.bundle.manifest.input if self.bundle is not None else None
        if spec is None:
            from ...structures import InputSpec

            spec = InputSpec(size_rule="any")
        data = loader.build_serialized_engine(self.model_path, builder_plan(self.precision), spec,
                                              max_batch=MAX_BATCH, logger=logger)
        loader.save_engine(path, data)
        self._runtime, engine = loader.engine_from_bytes(trt, logger, data)
        if engine is None:
            raise EdgesegError(f"{path}: TensorRT built an engine it cannot deserialize")
        return engine

    def _activate_impl(self) -> None:
        import tensorrt as trt

        self._cudart = _cudart()
        logger = trt.Logger(trt.Logger.WARNING)
        if self.device == "cpu":
            raise BackendUnavailable("the tensorrt backend runs on a CUDA GPU, not device 'cpu'")
        key = self.engine_key(current_gpu(self._cudart), trt.__version__)
        self.engine = self._load_engine(trt, logger, key)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.bindings = io_plan([
            (n, self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT, self.engine.get_tensor_dtype(n).name,
             tuple(self.engine.get_tensor_shape(n)))
            for n in names
        ])
        self.input_specs = tuple(b.spec for b in self.bindings if b.is_input)
        self.output_specs = tuple(b.spec for b in self.bindings if not b.is_input)
        self._stream = _call(self._cudart, self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}
        warm_up(self)

    # ---- inference ---------------------------------------------------------------------------
    def _device_buffer(self, name: str, nbytes: int) -> int:
        cudart = self._cudart
        ptr, size = self._buffers.get(name, (0, 0))
        if nbytes > size:
            if ptr:
                _call(cudart, cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_call(cudart, cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc for {name}"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, ctx, stream = self._cudart, self.context, self._stream
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        keep = []
        for b in (b for b in self.bindings if b.is_input):
            arr = np.ascontiguousarray(feed[b.name], dtype=b.dtype)
            keep.append(arr)
            ctx.set_input_shape(b.name, arr.shape)
            ptr = self._device_buffer(b.name, arr.nbytes)
            _call(cudart, cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, stream), f"copy of {b.name}")
            ctx.set_tensor_address(b.name, ptr)
        outputs = {}
        for b in (b for b in self.bindings if not b.is_input):
            host = np.empty(tuple(ctx.get_tensor_shape(b.name)), b.dtype)
            ctx.set_tensor_address(b.name, self._device_buffer(b.name, host.nbytes))
            outputs[b.name] = host
        if not ctx.execute_async_v3(int(stream)):
            raise EdgesegError(f"{self.model_path.name}: TensorRT execution failed (see the log above)")
        for name, host in outputs.items():
            ptr = self._buffers[name][0]
            _call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, stream), f"copy of {name}")
        _call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return outputs

    def _deactivate_impl(self) -> None:
        cudart = self._cudart
        for ptr, _ in self._buffers.values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        cudart.cudaStreamDestroy(self._stream)
        self.context = self.engine = self._runtime = None
