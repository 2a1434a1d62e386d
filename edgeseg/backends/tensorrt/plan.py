"""The TensorRT backend's logic, as plain functions that run (and are tested) without TensorRT.

- :func:`builder_plan`: network creation flags and ``IBuilderConfig`` flags per precision and TensorRT
  version (8.5/8.6 on JetPack 5/6.0 need explicit batch; 10.x types fp32 strongly; 11.x has no weak
  typing: no FP16/INT8 builder flags).
- :func:`profile_shapes`: optimization-profile (min, opt, max) shapes from the model's input and
  the bundle's :class:`~edgeseg.structures.InputSpec` (dynamic batch, size rules); :func:`profile_limits`:
  the largest batch and side a dynamic engine takes on this GPU.
- :class:`EngineKey` / :func:`engine_cache_path`: engines are cached under ``bundle/engines/`` keyed
  by (ONNX sha256, TensorRT version, GPU name and compute capability, precision, build options).
- :func:`io_plan`: names, numpy dtypes and shapes of the engine's IO tensors (TensorRT dtype names
  mapped to numpy), and byte sizes for the device buffers.
- :func:`describe_parser_errors`: the ONNX parser's errors as one message naming ops and nodes.
- :class:`DeviceBuffers`: device buffers per tensor, grown on demand (also behind the output allocator
  of data-dependent outputs, such as a Mask R-CNN's detection count).
- :func:`shape_outside_profile`: the error when ``set_input_shape`` refuses a shape.
- :class:`BuildProgress`: what TensorRT's ``IProgressMonitor`` (Python API 9.x+) reports while it builds an
  engine (minutes on a Jetson), as log lines, and Ctrl-C as a cancelled build; :func:`timing_cache_path`:
  where the builder's timing cache is kept between builds.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..._timing import format_remaining
from ...errors import InputError, UnsupportedError
from ...structures import ImageShape, InputSpec
from ..base import TensorSpec

# ---- builder configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class BuilderPlan:
    """How to build an engine for one precision on one TensorRT version.

    network_flags: names of ``trt.NetworkDefinitionCreationFlag`` members the network is created with.
    strongly_typed: tensor types follow the ONNX graph (``STRONGLY_TYPED`` in 10.x, always in 11.x);
    builder precision flags are then not allowed.
    flags: names of ``trt.BuilderFlag`` members to set.
    dla_core: the Jetson DLA core the layers it takes run on (the rest on the GPU), or None (:func:`dla_core`).
    """

    precision: str
    strongly_typed: bool
    flags: tuple[str, ...]
    workspace_bytes: int
    network_flags: tuple[str, ...] = ()
    dla_core: int | None = None


# precision -> builder flags of a weakly typed network. fp32: no flag (TensorRT may still use TF32
# math). fp16: FP16 kernels allowed. int8: the Q/DQ graph fixes where INT8 runs (explicit
# quantization); FP16 is allowed for the layers left in float.
_WEAK_FLAGS: dict[str, tuple[str, ...]] = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}


def trt_version_tuple(version: str) -> tuple[int, int]:
    """``"8.5.2.2"`` (``trt.__version__``, JetPack's) -> ``(8, 5)``; ``"10"`` -> ``(10, 0)``."""
    m = re.match(r"\s*(\d+)(?:\.(\d+))?", str(version))
    if m is None:
        raise UnsupportedError(f"cannot read the TensorRT version {version!r}", fix="give it as MAJOR.MINOR, e.g. 10.3")
    return int(m.group(1)), int(m.group(2) or 0)


#: the Jetson DLA core to build engines for (Xavier, Orin AGX and NX have two; Orin Nano none), as DeepStream's
#: ``use-dla-core``; unset: the GPU
DLA_ENV = "EDGESEG_TRT_DLA_CORE"


def dla_core(env: Mapping[str, str] | None = None) -> int | None:
    """The DLA core :data:`DLA_ENV` asks for, or None (unset or empty: the GPU)."""
    text = (os.environ if env is None else env).get(DLA_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise InputError(f"{DLA_ENV}={text!r} is not a DLA core number", fix=f"{DLA_ENV}=0 or 1, or unset it for the GPU")
    return int(text)


def dla_problem(precision: str, trt_version: str, input_spec: InputSpec | None = None) -> str | None:
    """Why an engine of ``precision`` for a model of ``input_spec`` cannot be built for the DLA on TensorRT
    ``trt_version``, else None. The DLA computes in FP16 and INT8 only, takes INT8 from calibration (implicit
    quantization; NVIDIA's qdq-translator turns a Q/DQ model into such a cache), not from the Q/DQ graphs
    edgeseg's INT8 models are, and has no dynamic dimensions (a dynamic batch or size would put every layer
    back on the GPU). TensorRT 10.7 was the last with DLA until 11.4.1, which runs strongly typed networks
    only (an FP16-typed ONNX; no FP16 flag) and on JetPack 7.2.2 only."""
    if precision != "fp16":
        return (f"the DLA runs this bundle in fp16 only (its {precision} model " + (
            "is explicitly quantized, Q/DQ, which the DLA takes only as a calibration cache: NVIDIA's qdq-translator "
            "makes one)" if precision == "int8" else "is FP32)"))
    version = trt_version_tuple(trt_version)
    if version >= (10, 8):
        return (f"TensorRT {version[0]}.{version[1]} builds no DLA engine from an FP32 ONNX graph (no DLA from 10.8 "
                "to 11.4.0; 11.4.1 on JetPack 7.2.2 takes strongly typed FP16 networks only)")
    if input_spec is not None and not _static(input_spec):
        return "the DLA has no dynamic dimensions and this bundle's batch or size is dynamic (every layer would run on the GPU)"
    return None


def _static(spec: InputSpec) -> bool:
    return spec.size is not None and spec.size_rule == "fixed" and not spec.dynamic_batch


def builder_plan(precision: str, workspace_mib: int = 1024, trt_version: str = "10.3",
                 dla: int | None = None, input_spec: InputSpec | None = None) -> BuilderPlan:
    """The network and builder flags for ``precision`` on TensorRT ``trt_version``:

    - before 10 (8.5/8.6: JetPack 5 and 6.0; 9.x): ``EXPLICIT_BATCH`` (the ONNX parser refuses an
      implicit-batch network), weakly typed, precision flags as in :data:`_WEAK_FLAGS`;
    - 10.x: fp32 ``STRONGLY_TYPED`` (types exactly as exported), fp16 and int8 weakly typed with flags
      (``EXPLICIT_BATCH`` is ignored there and not set);
    - 11 and later: every network is strongly typed and the FP16/INT8 builder flags are gone: int8 runs
      its Q/DQ graph as typed; fp16 needs a model exported in FP16."""
    if precision not in _WEAK_FLAGS:
        raise UnsupportedError(f"TensorRT backend: unknown precision {precision!r}", fix=f"use one of {', '.join(_WEAK_FLAGS)}")
    if workspace_mib <= 0:
        raise UnsupportedError(f"TensorRT workspace must be positive, got {workspace_mib} MiB")
    if dla is not None:  # fp16 on TensorRT 8.5-10.7: weakly typed with FP16, the DLA's layers there, the rest on the GPU
        why = dla_problem(precision, trt_version, input_spec)
        if why:
            raise UnsupportedError(f"{DLA_ENV}={dla}: {why}",
                                   fix=f"--precision fp16 on TensorRT 8.5-10.7 (JetPack 5, 6) with a fixed-size bundle, "
                                       f"or unset {DLA_ENV}")
        plan = builder_plan(precision, workspace_mib, trt_version)
        return BuilderPlan(precision, False, ("FP16", "GPU_FALLBACK"), plan.workspace_bytes, plan.network_flags, dla)
    major, minor = trt_version_tuple(trt_version)
    ws = int(workspace_mib) << 20
    if major < 10:
        return BuilderPlan(precision, False, _WEAK_FLAGS[precision], ws, ("EXPLICIT_BATCH",))
    if major == 10:
        if precision == "fp32":
            return BuilderPlan(precision, True, (), ws, ("STRONGLY_TYPED",))
        return BuilderPlan(precision, False, _WEAK_FLAGS[precision], ws)
    if precision == "fp16":
        raise UnsupportedError(
            f"TensorRT {major}.{minor} has no FP16 builder flag (every network is strongly typed): an fp16 engine "
            "needs a model whose graph is FP16",
            fix="run the bundle with --precision fp32 or int8 (its tensorrt Q/DQ model), or convert the ONNX to FP16 "
                "(e.g. TensorRT Model Optimizer's AutoCast) and import that",
        )
    return BuilderPlan(precision, True, (), ws)


# ---- optimization profiles ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileShape:
    """``IOptimizationProfile.set_shape(name, min, opt, max)`` for one input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def _spatial_range(spec: InputSpec, axis_hw: int, max_side: int) -> tuple[int, int, int]:
    """(min, opt, max) for the height (0) or width (1) axis of a dynamic-size input."""
    if spec.size is not None and spec.size_rule == "fixed":
        v = spec.size.hw[axis_hw]
        return v, v, v
    if spec.size is not None and spec.size_rule == "fit":  # the largest input is known: the long side, padded up
        m = spec.multiple
        hi = -(-max(spec.size.hw) // m) * m
        landscape = spec.network_shape(ImageShape(min(spec.size.hw), max(spec.size.hw)))  # most cameras' frames
        return m, min(hi, landscape.hw[axis_hw]), hi
    step = spec.multiple if spec.size_rule == "multiple" else 1
    lo = max(step, 32 if step == 1 else step)
    opt = spec.size.hw[axis_hw] if spec.size is not None else 512
    opt = max(lo, (opt // step) * step)
    hi = max(opt, (max_side // step) * step)
    return lo, opt, hi


#: the largest frames a dynamic engine's profile takes: TensorRT sizes an execution context's activation memory
#: for the profile's largest shape, and 8 x 3 x 2048 x 2048 does not fit a Jetson's 4-16 GB shared with the CPU.
#: (max batch, max side) for GPUs with at most that much memory, first match; a discrete card keeps the side
#: (2048-wide frames, Cityscapes', ran on it before) and takes the tier's batch (the stream splits larger ones)
PROFILE_TIERS = ((4 * 2**30, 1, 1280), (8 * 2**30, 2, 1920), (16 * 2**30, 4, 1920))
PROFILE_DEFAULT = (8, 2048)
PROFILE_ENV = ("EDGESEG_TRT_MAX_BATCH", "EDGESEG_TRT_MAX_SIDE")


def profile_limits(gpu: GpuInfo, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(max batch, max side) of the optimization profile of an engine with dynamic axes built for ``gpu``:
    :data:`PROFILE_DEFAULT` on a large discrete GPU, a smaller batch on a small card, and a smaller batch and
    side on a Jetson (:data:`PROFILE_TIERS`; a 1920 side still takes 1080p frames whole); ``EDGESEG_TRT_MAX_BATCH`` / ``EDGESEG_TRT_MAX_SIDE``
    override either (a multi-camera batch, 4K frames). Static engines (the shipped bundles) have no profile."""
    env = os.environ if env is None else env
    batch, side = PROFILE_DEFAULT
    memory = gpu.memory_bytes or (8 * 2**30 if gpu.integrated else 0)  # a Jetson of unknown memory: the 8 GB tier
    for most, b, s in PROFILE_TIERS:
        if memory and memory <= most:
            batch, side = b, (s if gpu.integrated else side)
            break
    out = []
    for var, default, least in zip(PROFILE_ENV, (batch, side), (1, 32)):
        text = env.get(var, "").strip()
        if not text:
            out.append(default)
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < least:
            raise InputError(f"{var}={text!r} is not a whole number >= {least}",
                             fix=f"e.g. {var}={default} (this GPU's default), or unset it")
        out.append(value)
    return out[0], out[1]


def engine_options(input_spec: InputSpec | None, gpu: GpuInfo,
                   env: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The build options in an engine's cache key: the profile limits (:func:`profile_limits`) for a model
    with a dynamic batch or size (``input_spec`` None: not known, taken as dynamic); a static model's engine
    has no profile, so its key stays what it was before the limits existed (``max_batch`` 8) and engines
    cached then are found again, whatever the limits are set to."""
    static = input_spec is not None and _static(input_spec)
    dla = dla_core(env)
    on_dla = () if dla is None else (("dla_core", str(dla)),)  # another device: another engine
    batch, side = profile_limits(gpu, env)
    if static or (batch, side) == PROFILE_DEFAULT:  # the key engines had before the limits existed: found again
        return (("max_batch", str(PROFILE_DEFAULT[0])),) + on_dla
    return (("max_batch", str(batch)), ("max_side", str(side))) + on_dla


def profile_max_batch(profiles: Sequence[Sequence[Sequence[int]] | None]) -> int | None:
    """The largest batch every dynamic-batch input's (min, opt, max) profile takes (``get_tensor_profile_shape
    (name, 0)`` of each input whose engine shape is -1 on axis 0; None for one without); None when none has a
    profile (a static engine)."""
    most = [int(p[2][0]) for p in profiles if p and len(p) == 3 and len(p[2])]
    return min(most) if most else None


def profile_shapes(inputs: Sequence[TensorSpec], input_spec: InputSpec, *, max_batch: int = 8,
                   opt_batch: int = 1, max_side: int = 2048) -> tuple[ProfileShape, ...]:
    """One optimization profile's shapes for the model's inputs; empty when every axis is static.

    Axis 0 is the batch (dynamic: 1 .. ``max_batch``, optimised for ``opt_batch``); the spatial axes
    of a 4-D image input follow ``input_spec.layout`` and its size rule."""
    if not 1 <= opt_batch <= max_batch:
        raise UnsupportedError(f"TensorRT profile: need 1 <= opt_batch ({opt_batch}) <= max_batch ({max_batch})")
    if all(isinstance(d, int) and d > 0 for s in inputs for d in s.shape):
        return ()
    spatial = (2, 3) if input_spec.layout == "NCHW" else (1, 2)
    out = []
    for s in inputs:
        lo, opt, hi = [], [], []
        for axis, d in enumerate(s.shape):
            if isinstance(d, int) and d > 0:
                r = (d, d, d)
            elif axis == 0:
                r = (1, opt_batch, max_batch)
            elif len(s.shape) == 4 and axis in spatial:
                r = _spatial_range(input_spec, spatial.index(axis), max_side)
            elif len(s.shape) == 4:
                r = (3, 3, 3)  # the colour axis
            else:
                raise UnsupportedError(
                    f"TensorRT profile: input {s.name!r} {list(s.shape)} has a dynamic axis {axis} edgeseg cannot size",
                    fix="export with static shapes except the batch axis",
                )
            lo.append(r[0]); opt.append(r[1]); hi.append(r[2])  # noqa: E702
        out.append(ProfileShape(s.name, tuple(lo), tuple(opt), tuple(hi)))
    return tuple(out)


# ---- engine cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for (engines are not portable across GPU models or TRT versions).
    ``memory_bytes`` (0: unknown) and ``integrated`` (a Jetson: memory shared with the CPU) size the
    optimization profile (:func:`profile_limits`)."""

    name: str
    major: int
    minor: int
    memory_bytes: int = 0
    integrated: bool = False

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def slug(self) -> str:
        base = re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_") or "gpu"
        return f"{base}-sm{self.major}{self.minor}"


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt_version: str
    gpu: GpuInfo
    precision: str
    options: tuple[tuple[str, str], ...] = ()  # build options that change the engine (max batch, workspace)

    @property
    def digest(self) -> str:
        doc = {"onnx": self.onnx_sha256, "trt": self.trt_version, "gpu": self.gpu.name,
               "cc": self.gpu.compute_capability, "precision": self.precision, "options": list(map(list, self.options))}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def filename(self) -> str:
        return f"{self.precision}-{self.gpu.slug}-trt{self.trt_version}-{self.digest}.engine"


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def engine_cache_path(bundle_root: Path, key: EngineKey, fallback: Path | None = None,
                      writable: Callable[[Path], bool] = _writable) -> Path:
    """``bundle/engines/<key>.engine``; when the bundle is read-only (shipped inside a package), a
    per-user cache ``~/.cache/edgeseg/engines/<bundle dir name>/`` instead."""
    engines = Path(bundle_root) / "engines"
    if writable(engines if engines.is_dir() else Path(bundle_root)):
        return engines / key.filename
    from ...paths import cache_dir

    base = fallback or cache_dir() / "engines"
    return base / Path(bundle_root).name / key.filename


def timing_cache_path(gpu: GpuInfo, trt_version: str, cuda_version: int | str, root: Path | None = None) -> Path:
    """The builder's timing cache, one per GPU, TensorRT and CUDA version (NVIDIA: a cache holds kernel timings
    valid for that device and those versions, whatever the model or precision), in the per-user cache
    (``cache_dir()/tensorrt``) so that every bundle's build on the device reads what earlier ones timed."""
    if root is None:
        from ...paths import cache_dir

        root = cache_dir() / "tensorrt"
    return Path(root) / f"timing-{gpu.slug}-trt{trt_version}-cuda{cuda_version}.cache"


# ---- build progress ----------------------------------------------------------------------------


class BuildProgress:
    """An engine build's progress from TensorRT's ``IProgressMonitor`` callbacks (``phase_start``,
    ``step_complete``, ``phase_finish``; in TensorRT's Python API since 9.x, called from its threads, so
    guarded by a lock), told through ``report`` (``log.info``): a line when a top-level phase starts and ends,
    and at most every ``every`` seconds the phases under way with their steps, e.g. ``building the TensorRT
    engine: Building engine 2/5 > Tactic selection 40/120 (3 min so far)``. :meth:`cancel` (Ctrl-C, kept in
    :attr:`interrupt`) makes the next ``step_complete`` return False, which stops the build
    (``build_serialized_network`` returns None)."""

    def __init__(self, report: Callable[[str], None], *, every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.report, self.every, self.clock = report, float(every), clock
        self.phases: dict[str, list] = {}  # name -> [parent, steps, done], in the order they started
        self.interrupt: BaseException | None = None
        self.monitored = False  # TensorRT calls it back (IProgressMonitor), so cancel() stops the build
        self.t0 = self.last = clock()
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self.interrupt is not None

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        with self._lock:
            self.phases[name] = [parent, max(int(steps), 1), 0]
            if parent is None:
                self._say(f"{name} started")

    def step_complete(self, name: str, step: int) -> bool:
        with self._lock:
            if name in self.phases:
                self.phases[name][2] = int(step) + 1
            if self.clock() - self.last >= self.every:
                self._say(self.describe())
            return not self.cancelled

    def phase_finish(self, name: str) -> None:
        with self._lock:
            parent = self.phases.pop(name, [None])[0]
            if parent is None:
                self._say(f"{name} done")

    def cancel(self, interrupt: BaseException | None = None) -> None:
        """Stop the build at its next step; ``interrupt`` (``KeyboardInterrupt("SIGTERM")``...) is raised
        when it has stopped."""
        self.interrupt = interrupt or self.interrupt or KeyboardInterrupt()

    def describe(self) -> str:
        """The newest phase under way and its parents, outermost first, with their steps."""
        chain, name = [], next(reversed(self.phases), None)
        while name is not None and name in self.phases and len(chain) < 8:
            parent, steps, done = self.phases[name]
            chain.append(f"{name} {done}/{steps}")
            name = parent
        return " > ".join(reversed(chain)) or "starting"

    def _say(self, what: str) -> None:
        self.last = now = self.clock()
        self.report(f"building the TensorRT engine: {what} ({format_remaining(now - self.t0)} so far)")


def progress_monitor(trt: Any, progress: BuildProgress) -> Any:
    """A ``trt.IProgressMonitor`` passing TensorRT's callbacks to ``progress``. TensorRT cannot take an
    exception through its C++ frames (its trampoline turns one in ``step_complete`` into a cancelled build and
    drops the others): a Ctrl-C landing in a callback cancels the build; any other error is logged once and
    the build goes on (progress lines are not worth a build)."""
    failed: list[BaseException] = []

    def guarded(call: Callable[[], Any], default: Any) -> Any:
        try:
            return call()
        except KeyboardInterrupt as e:
            progress.cancel(e)
            return False
        except Exception as e:  # noqa: BLE001 - see the docstring
            if not failed:
                failed.append(e)
                logging.getLogger("edgeseg.backends").warning("TensorRT build progress not shown: %s", e)
            return default

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            guarded(lambda: progress.phase_start(phase_name, parent_phase, num_steps), None)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return bool(guarded(lambda: progress.step_complete(phase_name, step), not progress.cancelled))

        def phase_finish(self, phase_name: str) -> None:
            guarded(lambda: progress.phase_finish(phase_name), None)

    return Monitor()


# ---- IO bindings -------------------------------------------------------------------------------

# trt.DataType member names -> numpy dtype names (BF16/FP8/INT4 have no numpy type)
TRT_TO_NUMPY = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
                "BOOL": "bool", "UINT8": "uint8"}


@dataclass(frozen=True)
class IOBinding:
    """One engine IO tensor: numpy dtype name and shape (-1 on dynamic axes)."""

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]

    def nbytes(self, shape: Sequence[int] | None = None) -> int:
        s = tuple(shape) if shape is not None else self.shape
        if any(d < 0 for d in s):
            raise UnsupportedError(f"TensorRT tensor {self.name!r}: shape {list(s)} is not resolved yet")
        return int(np.prod(s, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, tuple(d if d >= 0 else f"d{i}" for i, d in enumerate(self.shape)))


def io_plan(tensors: Sequence[tuple[str, bool, str, Sequence[int]]]) -> tuple[IOBinding, ...]:
    """``(name, is_input, trt dtype name, shape)`` per engine tensor -> bindings, inputs first."""
    out = []
    for name, is_input, trt_dtype, shape in tensors:
        key = str(trt_dtype).split(".")[-1].upper()
        if key not in TRT_TO_NUMPY:
            raise UnsupportedError(
                f"TensorRT tensor {name!r} has type {key}, which has no numpy equivalent",
                fix="export the model's inputs and outputs as float32, float16, int32/int64 or uint8",
            )
        out.append(IOBinding(name, bool(is_input), TRT_TO_NUMPY[key], tuple(int(d) for d in shape)))
    return tuple(sorted(out, key=lambda b: not b.is_input))


# ---- parser errors -----------------------------------------------------------------------------


def describe_parser_errors(model: str, errors: Sequence[tuple[str, str, str]]) -> UnsupportedError:
    """``(op type, node name, description)`` per ONNX-parser error -> one error naming them."""
    ops = sorted({op for op, _, _ in errors if op})
    lines = [f"{op or '?'} (node {node or '?'}): {desc}" for op, node, desc in errors[:5]]
    what = f"op(s) {', '.join(ops)}" if ops else "the graph"
    return UnsupportedError(
        f"{model}: TensorRT's ONNX parser cannot take {what}:\n    " + "\n    ".join(lines),
        fix="edgeseg check BUNDLE --target tensorrt-MAJOR.MINOR (the device's version) names each op it cannot take "
        "and the export option that avoids it; or load the plugin library that implements the op",
    )


# ---- shapes and device buffers at run time -----------------------------------------------------


def shape_outside_profile(name: str, shape: Sequence[int], profile: Sequence[Sequence[int]] | None) -> InputError:
    """The error for ``IExecutionContext.set_input_shape`` refusing ``shape`` for input ``name``;
    ``profile`` is the engine's (min, opt, max) for it (``get_tensor_profile_shape(name, 0)``)."""
    got = "x".join(map(str, shape))
    if profile:
        lo, _, hi = ("x".join(map(str, s)) for s in profile)
        return InputError(f"TensorRT input {name!r}: shape {got} is outside the engine's profile ({lo} .. {hi})",
                          fix="feed frames the bundle's preprocessing makes (edgeseg.load(...).predict does), "
                              "or export the model for that size; a dynamic engine's largest batch and side are "
                              f"{PROFILE_ENV[0]} and {PROFILE_ENV[1]} (then the engine is built again)")
    return InputError(f"TensorRT input {name!r}: the engine refused shape {got}",
                      fix="feed the shape the bundle's manifest gives for its input")


class DeviceBuffers:
    """One device buffer per tensor name, reused while large enough and replaced (freed, then allocated
    at the new size) when a call needs more. ``malloc(nbytes) -> int`` and ``free(ptr)`` are the
    device's (cuda-python's ``cudaMalloc``/``cudaFree`` in the runner); a zero-byte request (a Mask
    R-CNN frame without detections) still gets a valid one-byte buffer."""

    def __init__(self, malloc: Callable[[int], int], free: Callable[[int], object]):
        self._malloc, self._free = malloc, free
        self._buffers: dict[str, tuple[int, int]] = {}

    def get(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if ptr == 0 or nbytes > size:
            if ptr:
                self._free(ptr)
                del self._buffers[name]
            size = max(int(nbytes), 1)
            ptr = int(self._malloc(size))
            self._buffers[name] = (ptr, size)
        return ptr

    def ptr(self, name: str) -> int:
        return self._buffers[name][0]

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._free(ptr)
        self._buffers = {}
