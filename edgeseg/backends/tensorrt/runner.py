"""TensorRT runner: ``BACKENDS.get("tensorrt")``.

On activation the runner looks for a cached engine under ``bundle/engines/`` (key: ONNX sha256,
TensorRT version, GPU name and compute capability, precision, build options), builds one from the
bundle's ONNX when there is none (minutes on a Jetson; once), then runs it with
``IExecutionContext.set_tensor_address`` / ``execute_async_v3`` on a CUDA stream, device memory from
cuda-python. Outputs whose size depends on the data (a Mask R-CNN's detections: TensorRT reports -1 for
that axis until the engine has run) get their memory through an ``IOutputAllocator``. Written for
TensorRT 8.5 (JetPack 5) to 11; the version-dependent parts are plain functions in :mod:`.plan`, which
tests exercise without TensorRT. This package is the only place TensorRT is called.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from ...errors import BackendUnavailable, BundleError, EdgesegError
from ..base import BACKENDS, Runner
from .._util import warm_up
from .plan import (
    DeviceBuffers, EngineKey, GpuInfo, builder_plan, dla_core, engine_cache_path, engine_options, io_plan,
    profile_max_batch, shape_outside_profile, timing_cache_path,
)
from ..._compat import is_relative_to

log = logging.getLogger("edgeseg.backends")


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
    return GpuInfo(name, int(prop.major), int(prop.minor), int(getattr(prop, "totalGlobalMem", 0) or 0),
                   bool(getattr(prop, "integrated", 0)))


def output_allocator(trt: Any, buffers: DeviceBuffers) -> Any:
    """An ``IOutputAllocator`` serving data-dependent outputs from ``buffers``; the shapes TensorRT
    reports after a run are in its ``shapes`` (tensor name -> tuple)."""

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.error: BaseException | None = None  # an allocation that failed inside TensorRT's call

        def reallocate_output(self, tensor_name, memory, size, alignment):  # noqa: ARG002 - TensorRT 8.5-10
            try:  # an exception must not cross into TensorRT: a null pointer makes the run fail, then it is raised
                return buffers.get(tensor_name, int(size))
            except Exception as e:
                self.error = e
                return 0

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):  # noqa: ARG002 - 10.x, 11
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator()


@BACKENDS.register("tensorrt", family="onnx")
class TensorRTRunner(Runner):
    """Runs a bundle's ONNX as a TensorRT engine on an NVIDIA GPU."""

    name = "tensorrt"
    concurrent = False  # one execution context, stream and set of device buffers
    model_targets = ("tensorrt", None)  # INT8: the tensorrt target's only (select_model)

    @classmethod
    def select_model(cls, bundle, precision: str = "fp32", target: str | None = None):
        """As every backend, except: fp16 builds the FP32 graph (with FP16 kernels allowed) when the bundle has
        no FP16 one; INT8 means the ``tensorrt`` target's Q/DQ model only: the other targets' INT8 graphs
        (asymmetric uint8, INT32 bias) are ones TensorRT's parser refuses."""
        if precision == "fp16" and not any(m.precision == "fp16" and m.file.endswith(cls.file_suffixes)
                                           for m in bundle.manifest.models):
            return super().select_model(bundle, "fp32", None)  # the FP32 graph, built with FP16 kernels allowed
        if precision == "int8" and (target or "tensorrt") != "tensorrt":
            raise BundleError(f"the tensorrt backend runs INT8 models made for the tensorrt target, not {target!r}",
                              fix=f"edgeseg quantize {bundle.root} --target tensorrt --calib DATA, then run with --target tensorrt")
        if precision == "int8" and not any(m.precision == "int8" and m.target == "tensorrt" for m in bundle.manifest.models):
            has = ", ".join(sorted(m.precision + (f"/{m.target}" if m.target else "") for m in bundle.manifest.models))
            raise BundleError(f"bundle {bundle.root} has no int8/tensorrt model (it has: {has}); TensorRT cannot run "
                              "the INT8 models of other targets",
                              fix=f"edgeseg quantize {bundle.root} --target tensorrt --calib DATA")
        return super().select_model(bundle, precision, target)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        try:
            import tensorrt  # noqa: F401
        except Exception as e:
            return False, (f"no tensorrt module ({type(e).__name__}); on a machine with an NVIDIA GPU "
                           "pip install 'edgeseg[tensorrt]' (Jetson: JetPack ships it; use a venv with --system-site-packages)")
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
        from ...structures.manifest import sha256_file

        sha = None
        if self.bundle is not None and is_relative_to(self.model_path, self.bundle.root):
            sha = self.bundle.manifest.files.get(self.model_path.relative_to(self.bundle.root).as_posix())
        sha = sha or sha256_file(self.model_path)
        return EngineKey(sha, trt_version, gpu, self.precision, engine_options(self._input_spec(), gpu))

    def _input_spec(self):
        """The bundle's input spec (None for a bare ONNX file: sized as any-size)."""
        return self.bundle.manifest.input if self.bundle is not None else None

    def _load_engine(self, trt: Any, logger: Any, key: EngineKey):
        from . import loader

        root = self.bundle.root if self.bundle is not None else self.model_path.parent
        path = self.engine_path = engine_cache_path(root, key)
        data = path.read_bytes() if path.is_file() else None
        if data is not None:
            self._runtime, engine = loader.engine_from_bytes(trt, logger, data, dla_core())
            if engine is not None:
                return engine
        spec = self._input_spec()
        if spec is None:
            from ...structures import InputSpec

            spec = InputSpec(size_rule="any")
        limits = dict(key.options)
        cudart = self._cudart
        try:
            cuda = _call(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
            cache = timing_cache_path(key.gpu, key.trt_version, cuda)
        except Exception as e:  # noqa: BLE001 - only a later build's speed depends on the cache
            log.debug("no TensorRT timing cache: %s", e)
            cache = None
        plan = builder_plan(self.precision, trt_version=trt.__version__, dla=dla_core(), input_spec=self._input_spec())
        data = loader.build_serialized_engine(self.model_path, plan,
                                              spec, max_batch=int(limits["max_batch"]),
                                              max_side=int(limits.get("max_side", 2048)), logger=logger,
                                              timing_cache=cache)
        loader.save_engine(path, data)
        self._runtime, engine = loader.engine_from_bytes(trt, logger, data, plan.dla_core)
        if engine is None:
            raise EdgesegError(f"{path}: TensorRT built an engine it cannot deserialize")
        return engine

    def _activate_impl(self) -> None:
        self._stream = self._buffers = self._allocator = None
        self.context = self.engine = self._runtime = None
        try:
            self._activate_steps()
        except BaseException:  # what was made so far (stream, device buffers, engine) is released, not leaked
            self._release()
            raise

    def _activate_steps(self) -> None:
        import tensorrt as trt

        self._cudart = _cudart()
        logger = trt.Logger(trt.Logger.WARNING)
        if self.device == "cpu":
            raise BackendUnavailable("the tensorrt backend runs on a CUDA GPU, not device 'cpu'")
        # refuses what cannot be built, up front
        builder_plan(self.precision, trt_version=trt.__version__, dla=dla_core(), input_spec=self._input_spec())
        # the standard plugins (EfficientNMS_TRT, ROIAlign_TRT, the deformable convolution's): the ONNX parser
        # registers them while it parses, but a cached engine is deserialized without parsing anything
        trt.init_libnvinfer_plugins(logger, "")
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
        # the largest batch the engine's profile takes (the stream's batching stays within it); None: static
        self.max_batch = profile_max_batch([self._profile(b.name) for b in self.bindings
                                            if b.is_input and b.shape and b.shape[0] < 0])
        self._stream = _call(self._cudart, self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        cudart = self._cudart
        self._buffers = DeviceBuffers(lambda n: _call(cudart, cudart.cudaMalloc(n), f"cudaMalloc of {n} bytes"),
                                      cudart.cudaFree)
        # outputs with a dynamic axis: their shape may be known only after the run (data-dependent)
        self._dynamic_outputs = {b.name for b in self.bindings if not b.is_input and any(d < 0 for d in b.shape)}
        self._allocator = output_allocator(trt, self._buffers) if self._dynamic_outputs else None
        for name in self._dynamic_outputs:
            self.context.set_output_allocator(name, self._allocator)
        warm_up(self)

    # ---- inference ---------------------------------------------------------------------------
    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, ctx, stream, buffers = self._cudart, self.context, self._stream, self._buffers
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        keep = []
        for b in (b for b in self.bindings if b.is_input):
            arr = np.ascontiguousarray(feed[b.name], dtype=b.dtype)
            keep.append(arr)
            if not ctx.set_input_shape(b.name, arr.shape):
                raise shape_outside_profile(b.name, arr.shape, self._profile(b.name))
            ptr = buffers.get(b.name, arr.nbytes)
            _call(cudart, cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, stream), f"copy of {b.name}")
            ctx.set_tensor_address(b.name, ptr)
        static = {}
        for b in (b for b in self.bindings if not b.is_input and b.name not in self._dynamic_outputs):
            host = np.empty(tuple(ctx.get_tensor_shape(b.name)), b.dtype)
            ctx.set_tensor_address(b.name, buffers.get(b.name, host.nbytes))
            static[b.name] = host
        alloc = self._allocator
        if alloc is not None:
            alloc.shapes.clear()
            alloc.error = None
        if not ctx.execute_async_v3(int(stream)):
            if alloc is not None and alloc.error is not None:
                raise EdgesegError(f"{self.model_path.name}: no device memory for an output: {alloc.error}") from alloc.error
            raise EdgesegError(f"{self.model_path.name}: TensorRT execution failed (see the log above)")
        if alloc is not None:  # data-dependent sizes are known once the engine has run
            _call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        outputs = {}
        for b in (b for b in self.bindings if not b.is_input):
            if b.name in static:
                host = static[b.name]
            else:
                shape = alloc.shapes.get(b.name)
                if shape is None or any(d < 0 for d in shape):
                    raise EdgesegError(f"{self.model_path.name}: TensorRT did not report the shape of output {b.name!r} "
                                       f"(got {shape})", fix="export the model with static output shapes")
                host = np.empty(shape, b.dtype)
            if host.nbytes:
                _call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, buffers.ptr(b.name), host.nbytes, d2h, stream),
                      f"copy of {b.name}")
            outputs[b.name] = host
        _call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return outputs

    def _profile(self, name: str):
        try:
            return tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
        except Exception:  # a static engine has no profile
            return None

    def _deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free what exists, each step on its own: a failing one (a CUDA error) must neither hide the error that
        made an activation fail nor keep the next step from running."""
        steps = (lambda: self._buffers is not None and self._buffers.close(),
                 lambda: self._stream is not None and self._cudart.cudaStreamDestroy(self._stream))
        for step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - logged; the rest is still released
                log.warning("TensorRT runner: releasing %s failed: %s", self.model_path.name, e)
        self._stream = self._buffers = self._allocator = None
        self.context = self.engine = self._runtime = None
