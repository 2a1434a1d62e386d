"""The TensorRT backend's logic (no TensorRT needed): builder plans, profiles, cache keys, IO plans."""
from __future__ import annotations

import pytest

from edgeseg.backends import BACKENDS, TensorSpec
from edgeseg.backends.tensorrt.plan import (
    DeviceBuffers, EngineKey, GpuInfo, IOBinding, ProfileShape, builder_plan, describe_parser_errors, engine_cache_path,
    io_plan, profile_limits, profile_shapes, shape_outside_profile, trt_version_tuple,
)
from edgeseg.errors import InputError, UnsupportedError
from edgeseg.structures import ImageShape, InputSpec

H100 = GpuInfo("NVIDIA H100 80GB HBM3", 9, 0)
ORIN = GpuInfo("Orin", 8, 7)


@pytest.mark.parametrize("version,precision,network,strongly,flags", [
    # 8.5 (JetPack 5), 8.6 (JetPack 6.0), 9.x: the ONNX parser refuses an implicit-batch network
    ("8.5.2.2", "fp32", ("EXPLICIT_BATCH",), False, ()),
    ("8.6.2", "fp16", ("EXPLICIT_BATCH",), False, ("FP16",)),
    ("9.3.0", "int8", ("EXPLICIT_BATCH",), False, ("INT8", "FP16")),
    # 10.x: EXPLICIT_BATCH is ignored (not set); fp32 strongly typed
    ("10.3.0.30", "fp32", ("STRONGLY_TYPED",), True, ()),
    ("10.3", "fp16", (), False, ("FP16",)),
    ("10.15.1", "int8", (), False, ("INT8", "FP16")),
    # 11.x: strongly typed always, no FP16/INT8 builder flags
    ("11.0.0", "fp32", (), True, ()),
    ("11.4", "int8", (), True, ()),
])
def test_builder_plan(version, precision, network, strongly, flags):
    plan = builder_plan(precision, workspace_mib=512, trt_version=version)
    assert (plan.network_flags, plan.strongly_typed, plan.flags, plan.workspace_bytes) == (
        network, strongly, flags, 512 * 1024 * 1024)


def test_fp16_on_tensorrt_11_is_refused_with_the_way_out():
    with pytest.raises(UnsupportedError, match="TensorRT 11.0 has no FP16 builder flag") as e:
        builder_plan("fp16", trt_version="11.0.1")
    assert "--precision fp32 or int8" in e.value.fix


def test_trt_version_tuple_reads_what_tensorrt_and_jetpack_print():
    assert [trt_version_tuple(v) for v in ("8.5.2.2", "10.3.0.30", "10", " 8.6.1", "11.4.0.7")] == [
        (8, 5), (10, 3), (10, 0), (8, 6), (11, 4)]
    with pytest.raises(UnsupportedError, match="cannot read the TensorRT version 'dev'"):
        trt_version_tuple("dev")


def test_device_buffers_grow_reuse_and_never_hand_out_a_null_pointer():
    """The runner's buffers (also behind the output allocator): reused while large enough, replaced when
    a call needs more, one byte for a zero-byte request (a Mask R-CNN frame with no detection)."""
    allocated, freed = [], []

    def malloc(n):
        allocated.append(n)
        return 0x1000 * len(allocated)

    buf = DeviceBuffers(malloc, freed.append)
    empty = buf.get("boxes", 0)  # zero detections: before, no buffer was stored and reading it back failed
    assert empty == 0x1000 and buf.ptr("boxes") == empty and allocated == [1]
    assert buf.get("boxes", 1) == empty and allocated == [1]  # fits: reused
    grown = buf.get("boxes", 400 * 16)  # 400 detections
    assert grown == 0x2000 and freed == [0x1000] and allocated == [1, 6400]
    assert buf.get("boxes", 16) == grown  # fewer again: the larger buffer stays
    buf.get("masks", 8)
    buf.close()
    assert sorted(freed) == [0x1000, 0x2000, 0x3000]


def test_a_shape_outside_the_profile_names_the_input_and_the_range():
    err = shape_outside_profile("images", (16, 3, 360, 480), ((1, 3, 360, 480), (1, 3, 360, 480), (8, 3, 360, 480)))
    assert isinstance(err, InputError)
    assert "TensorRT input 'images': shape 16x3x360x480 is outside the engine's profile (1x3x360x480 .. 8x3x360x480)" in str(err)
    assert "refused shape 2x3" in str(shape_outside_profile("x", (2, 3), None))


def test_builder_plan_rejects():
    with pytest.raises(UnsupportedError, match="unknown precision 'int4'"):
        builder_plan("int4")
    with pytest.raises(UnsupportedError, match="workspace"):
        builder_plan("fp32", workspace_mib=0)


def test_profile_static_is_empty():
    specs = [TensorSpec("images", "float32", (1, 3, 360, 480))]
    assert profile_shapes(specs, InputSpec(size=ImageShape(360, 480))) == ()


def test_profile_dynamic_batch_fixed_size():
    specs = [TensorSpec("images", "float32", ("N", 3, 360, 480))]
    (p,) = profile_shapes(specs, InputSpec(size=ImageShape(360, 480), dynamic_batch=True), max_batch=4, opt_batch=2)
    assert p == ProfileShape("images", (1, 3, 360, 480), (2, 3, 360, 480), (4, 3, 360, 480))


def test_profile_dynamic_spatial_nchw_fixed_rule():
    specs = [TensorSpec("images", "float32", ("N", 3, "H", "W"))]
    (p,) = profile_shapes(specs, InputSpec(size=ImageShape(360, 480)), max_batch=8)
    assert p.min == (1, 3, 360, 480) and p.opt == (1, 3, 360, 480) and p.max == (8, 3, 360, 480)


def test_profile_multiple_rule_nhwc():
    specs = [TensorSpec("x", "uint8", (1, "h", "w", 3))]
    spec = InputSpec(layout="NHWC", dtype="uint8", size=ImageShape(360, 480), size_rule="multiple", multiple=32)
    (p,) = profile_shapes(specs, spec, max_side=1000)
    # height: min 32, opt 360 -> 352 (multiple of 32), max 1000 -> 992; width: 32, 480, 992
    assert p.min == (1, 32, 32, 3) and p.opt == (1, 352, 480, 3) and p.max == (1, 992, 992, 3)


def test_profile_fit_rule_covers_every_frame_it_can_make():
    """A fit rule's inputs are bounded exactly: 1333x800 padded to 32 is at most 1344 on either side (a portrait
    frame too), whatever the device's side limit; the optimum is a landscape frame of the bounds' own aspect."""
    specs = [TensorSpec("input", "float32", (1, 3, "h", "w"))]
    spec = InputSpec(size=ImageShape(1333, 800), size_rule="fit", multiple=32)
    (p,) = profile_shapes(specs, spec, max_side=1280)  # a 4 GB Jetson's limit: the fit rule's own bound wins
    assert p.min == (1, 3, 32, 32) and p.opt == (1, 3, 800, 1344) and p.max == (1, 3, 1344, 1344)
    for hw in ((1080, 1920), (1920, 1080), (480, 640), (7, 300)):
        net = spec.network_shape(ImageShape(*hw))
        assert all(lo <= v <= hi for lo, v, hi in zip(p.min[2:], net.hw, p.max[2:])), (hw, net)


def test_profile_any_rule_without_size():
    specs = [TensorSpec("images", "float32", (1, 3, "H", "W"))]
    (p,) = profile_shapes(specs, InputSpec(size_rule="any"), max_side=1024)
    assert p.min == (1, 3, 32, 32) and p.opt == (1, 3, 512, 512) and p.max == (1, 3, 1024, 1024)


def test_profile_rejects_unsizable_axis():
    with pytest.raises(UnsupportedError, match=r"input 'tokens'.*dynamic axis 1"):
        profile_shapes([TensorSpec("tokens", "int64", (1, "T"))], InputSpec(size_rule="any"))
    with pytest.raises(UnsupportedError, match="opt_batch"):
        profile_shapes([TensorSpec("images", "float32", ("N", 3, 8, 8))], InputSpec(size_rule="any"), max_batch=2, opt_batch=3)


def test_engine_key_changes_with_every_component():
    base = EngineKey("a" * 64, "10.3.0", H100, "fp16", (("max_batch", "8"),))
    variants = [
        EngineKey("b" * 64, "10.3.0", H100, "fp16", (("max_batch", "8"),)),
        EngineKey("a" * 64, "10.4.0", H100, "fp16", (("max_batch", "8"),)),
        EngineKey("a" * 64, "10.3.0", ORIN, "fp16", (("max_batch", "8"),)),
        EngineKey("a" * 64, "10.3.0", GpuInfo("NVIDIA H100 80GB HBM3", 9, 1), "fp16", (("max_batch", "8"),)),
        EngineKey("a" * 64, "10.3.0", H100, "int8", (("max_batch", "8"),)),
        EngineKey("a" * 64, "10.3.0", H100, "fp16", (("max_batch", "4"),)),
    ]
    digests = {base.digest, *(v.digest for v in variants)}
    assert len(digests) == 7 and all(len(d) == 16 for d in digests)
    assert base.digest == EngineKey("a" * 64, "10.3.0", H100, "fp16", (("max_batch", "8"),)).digest  # stable
    assert base.filename == f"fp16-nvidia_h100_80gb_hbm3-sm90-trt10.3.0-{base.digest}.engine"
    assert ORIN.compute_capability == "8.7" and ORIN.slug == "orin-sm87"


def test_engine_cache_path(tmp_path):
    key = EngineKey("a" * 64, "10.3.0", ORIN, "int8")
    root = tmp_path / "road.edgeseg"
    root.mkdir()
    assert engine_cache_path(root, key) == root / "engines" / key.filename
    read_only = engine_cache_path(root, key, fallback=tmp_path / "cache", writable=lambda p: False)
    assert read_only == tmp_path / "cache" / "road.edgeseg" / key.filename


def test_runner_engine_key_uses_the_bundle_hash(tmp_path):
    from edgeseg.backends.tensorrt import TensorRTRunner
    from edgeseg.bundle import sha256_file
    from handmade_bundles import conv_bundle

    bundle = conv_bundle(tmp_path, input_spec=InputSpec(size=ImageShape(8, 12)))
    runner = TensorRTRunner(bundle.model_path(), bundle=bundle, precision="int8")  # construction imports nothing
    key = runner.engine_key(ORIN, "10.3.0")
    assert key.onnx_sha256 == bundle.manifest.files["model.onnx"] == sha256_file(bundle.model_path())
    assert key.precision == "int8" and engine_cache_path(bundle.root, key).parent == bundle.root / "engines"
    assert key.options == (("max_batch", "8"),)  # a static model: the key engines cached before session 40 had


GiB = 2**30


@pytest.mark.parametrize("gpu,limits", [
    (GpuInfo("NVIDIA H100 80GB HBM3", 9, 0, 80 * GiB), (8, 2048)),
    (GpuInfo("NVIDIA GeForce RTX 4060", 8, 9, 8 * GiB), (2, 2048)),  # discrete: the side stays (2048-wide frames)
    (GpuInfo("Tesla T4", 7, 5, 15 * GiB), (4, 2048)),
    (GpuInfo("Orin", 8, 7, int(3.3 * GiB), integrated=True), (1, 1280)),  # Orin Nano 4GB
    (GpuInfo("Orin", 8, 7, int(7.4 * GiB), integrated=True), (2, 1920)),  # Orin Nano 8GB reports ~7.4 GiB
    (GpuInfo("Orin", 8, 7, int(15.3 * GiB), integrated=True), (4, 1920)),  # Orin NX 16GB
    (GpuInfo("Orin", 8, 7, int(61.3 * GiB), integrated=True), (8, 2048)),  # AGX Orin 64GB
    (GpuInfo("Orin", 8, 7, 0, integrated=True), (2, 1920)),  # a Jetson that did not say: the smallest
])
def test_profile_limits_follow_the_gpus_memory(gpu, limits):
    """A dynamic engine's activation memory is sized for its profile's largest shape: 8 x 3 x 2048 x 2048 on an
    8 GB Jetson (memory shared with the CPU) would not leave room to run."""
    assert profile_limits(gpu, env={}) == limits


def test_profile_limits_are_overridden_and_checked():
    small = GpuInfo("Orin", 8, 7, 8 * GiB, integrated=True)
    assert profile_limits(small, env={"EDGESEG_TRT_MAX_BATCH": "6"}) == (6, 1920)  # six cameras in one batch
    assert profile_limits(H100, env={"EDGESEG_TRT_MAX_SIDE": " 3840 ", "EDGESEG_TRT_MAX_BATCH": ""}) == (8, 3840)
    for var, text in (("EDGESEG_TRT_MAX_BATCH", "0"), ("EDGESEG_TRT_MAX_SIDE", "big"), ("EDGESEG_TRT_MAX_SIDE", "16")):
        with pytest.raises(InputError, match=var) as e:
            profile_limits(small, env={var: text})
        assert "unset it" in e.value.fix


@pytest.mark.parametrize("spec,dynamic", [
    (InputSpec(size=ImageShape(8, 12)), False),
    (InputSpec(size=ImageShape(8, 12), dynamic_batch=True), True),
    (InputSpec(size=ImageShape(8, 12), size_rule="multiple", multiple=32), True),
    (None, True),
])
def test_only_a_dynamic_engines_key_names_its_profile(tmp_path, monkeypatch, spec, dynamic):
    """Another limit is another engine for a model with dynamic axes; a static model's engine has no profile
    and keeps the key it had before the limits existed (cached engines are found again)."""
    from edgeseg.backends.tensorrt import TensorRTRunner
    from handmade_bundles import conv_bundle

    bundle = conv_bundle(tmp_path, input_spec=spec or InputSpec(size=ImageShape(8, 12)))
    runner = TensorRTRunner(bundle.model_path(), bundle=None if spec is None else bundle)
    jetson = GpuInfo("Orin", 8, 7, 8 * GiB, integrated=True)
    a, big = runner.engine_key(jetson, "10.3.0"), runner.engine_key(H100, "10.3.0")
    monkeypatch.setenv("EDGESEG_TRT_MAX_SIDE", "1280")
    b = runner.engine_key(jetson, "10.3.0")
    if dynamic:
        assert a.options == (("max_batch", "2"), ("max_side", "1920")) and b.options[1] == ("max_side", "1280")
        assert a.filename != b.filename
        # the default limits (a large GPU): the key such engines had before the limits, so they are found again
        assert big.options == (("max_batch", "8"),)
    else:
        assert a.options == b.options == (("max_batch", "8"),)


def test_io_plan_maps_dtypes_and_orders_inputs_first():
    plan = io_plan([
        ("logits", False, "HALF", (1, 11, 360, 480)),
        ("images", True, "DataType.FLOAT", (-1, 3, 360, 480)),
        ("labels", False, "UINT8", (1, 360, 480)),
        ("count", False, "INT64", (1,)),
    ])
    assert [b.name for b in plan] == ["images", "logits", "labels", "count"]
    assert [b.dtype for b in plan] == ["float32", "float16", "uint8", "int64"]
    assert plan[1].nbytes() == 11 * 360 * 480 * 2 and plan[2].nbytes() == 360 * 480
    assert plan[0].nbytes((2, 3, 360, 480)) == 2 * 3 * 360 * 480 * 4
    assert plan[0].spec == TensorSpec("images", "float32", ("d0", 3, 360, 480))
    with pytest.raises(UnsupportedError, match="not resolved"):
        plan[0].nbytes()


def test_io_plan_rejects_types_without_numpy():
    with pytest.raises(UnsupportedError, match=r"'x' has type BF16"):
        io_plan([("x", True, "BF16", (1,))])
    assert IOBinding("b", True, "bool", (2, 2)).nbytes() == 4


def test_describe_parser_errors():
    err = describe_parser_errors("m.onnx", [("DeformConv", "dcn_1", "no importer"), ("", "n2", "bad attr")])
    text = str(err)
    assert "op(s) DeformConv" in text and "node dcn_1" in text and "bad attr" in text and "fix:" in text
    assert "--target tensorrt-MAJOR.MINOR" in text  # a target edgeseg check knows (plain 'tensorrt' is not one)


def test_is_available_says_why_and_never_raises():
    ok, why = BACKENDS.get("tensorrt").is_available()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert not ok and "tensorrt" in why
    else:  # pragma: no cover - only on machines with TensorRT
        assert ok or "CUDA" in why


@pytest.mark.tensorrt
def test_engine_matches_onnxruntime(tmp_path, monkeypatch):  # pragma: no cover - needs TensorRT and a GPU
    import numpy as np

    from edgeseg.backends.tensorrt import TensorRTRunner
    from handmade_bundles import conv_bundle, reference_logits

    ok, why = TensorRTRunner.is_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    bundle = conv_bundle(tmp_path, 5, input_spec=InputSpec(size=ImageShape(8, 12), dynamic_batch=True))
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 12)).astype(np.float32)
    with TensorRTRunner.load(bundle) as runner:
        out = runner.infer({"images": x})["logits"]
        assert runner.engine_path.parent == bundle.root / "engines" and runner.engine_path.is_file()
        assert len(list((tmp_path / "cache" / "tensorrt").glob("timing-*.cache"))) == 1  # kept for the next build
    np.testing.assert_allclose(out, reference_logits(x, 5), rtol=1e-3, atol=1e-3)
    with TensorRTRunner.load(bundle) as again:  # from the cache
        np.testing.assert_allclose(again.infer({"images": x})["logits"], out, rtol=0, atol=0)


def test_output_allocator_serves_buffers_and_keeps_a_failed_allocation_out_of_tensorrt():
    """The callbacks TensorRT calls for data-dependent outputs (a Mask R-CNN's detections), with a stand-in
    for the ``trt`` module's base class: buffers come from DeviceBuffers, shapes are recorded, and a failed
    allocation returns a null pointer (TensorRT then fails the run) instead of raising inside TensorRT."""
    import types

    from edgeseg.backends.tensorrt.runner import output_allocator

    trt = types.SimpleNamespace(IOutputAllocator=type("IOutputAllocator", (), {"__init__": lambda self: None}))
    sizes = []

    def malloc(n):
        if n > 1 << 20:
            raise MemoryError(f"cudaMalloc of {n} bytes: out of memory")
        sizes.append(n)
        return 0x1000 * len(sizes)

    alloc = output_allocator(trt, DeviceBuffers(malloc, lambda p: None))
    assert alloc.reallocate_output("boxes", 0, 0, 256) == 0x1000  # no detection: still a valid buffer
    assert alloc.reallocate_output_async("masks", 0, 4 * 28 * 28, 256, 0) == 0x2000  # the TensorRT 10 form
    alloc.notify_shape("boxes", (0, 4))
    assert alloc.shapes == {"boxes": (0, 4)} and alloc.error is None
    assert alloc.reallocate_output("masks", 0, 2 << 20, 256) == 0
    assert isinstance(alloc.error, MemoryError)


def test_fp16_builds_the_fp32_graph_when_the_bundle_has_no_fp16_model(tmp_path):
    from handmade_bundles import conv_bundle

    b = conv_bundle(tmp_path, 3, input_spec=InputSpec(size=ImageShape(8, 12)))
    assert BACKENDS.get("tensorrt").select_model(b, "fp16") == b.root / "model.onnx"  # before: "no fp16 model"


def test_build_progress_reports_phases_and_throttles_its_lines():
    """TensorRT 10's IProgressMonitor calls, as a build makes them (phase names from TensorRT's own log)."""
    from edgeseg.backends.tensorrt.plan import BuildProgress

    lines, now = [], [0.0]
    p = BuildProgress(lines.append, every=30.0, clock=lambda: now[0])
    p.phase_start("Building engine", None, 5)
    p.phase_start("Tactic selection", "Building engine", 120)
    for step in range(40):
        now[0] += 1.0
        assert p.step_complete("Tactic selection", step) is True
    assert lines == ["building the TensorRT engine: Building engine started (0 s so far)",
                     "building the TensorRT engine: Building engine 0/5 > Tactic selection 30/120 (30 s so far)"]
    p.phase_finish("Tactic selection")
    now[0] = 200.0
    p.phase_finish("Building engine")
    assert lines[-1] == "building the TensorRT engine: Building engine done (3 min so far)"
    assert p.describe() == "starting" and not p.phases


def _monitor(trt_base=None):
    import types

    from edgeseg.backends.tensorrt.plan import BuildProgress, progress_monitor

    class IProgressMonitor:  # the base class TensorRT's Python package provides
        def __init__(self):
            self.base_initialised = True

    trt = types.SimpleNamespace(IProgressMonitor=trt_base or IProgressMonitor)
    lines = []
    p = BuildProgress(lines.append, every=1e9)
    return p, progress_monitor(trt, p), lines


def test_ctrl_c_inside_a_build_callback_cancels_the_build():
    """TensorRT cannot take a Python exception through its C++ frames: KeyboardInterrupt raised in a callback
    is caught there and the next step_complete returns False, which stops the build."""
    p, m, lines = _monitor()
    assert m.base_initialised
    m.phase_start("Building engine", None, 3)
    assert m.step_complete("Building engine", 0) is True

    def interrupted(*_):
        raise KeyboardInterrupt("SIGTERM")

    p.report = interrupted
    m.phase_finish("Building engine")  # a top-level phase reports: the interrupt lands here
    assert p.cancelled and str(p.interrupt) == "SIGTERM"  # the CLI's SIGTERM stays a SIGTERM
    assert m.step_complete("Building engine", 1) is False


def test_a_failing_progress_report_never_cancels_the_build(caplog):
    p, m, _ = _monitor()

    def broken(*_):
        raise OSError("log file gone")

    p.report = broken
    m.phase_start("Building engine", None, 3)
    assert m.step_complete("Building engine", 0) is True and not p.cancelled
    m.phase_finish("Building engine")
    assert caplog.text.count("TensorRT build progress not shown: log file gone") == 1


@pytest.mark.parametrize("monitored", [True, False])
def test_ctrl_c_while_waiting_cancels_the_build_and_is_raised_once_it_stopped(monkeypatch, caplog, monitored):
    """The build runs in a worker thread; the interrupt reaches the waiting thread, cancels the build (its next
    step_complete says False, where TensorRT calls it back) and is raised when the build has returned. Without a
    monitor (TensorRT 8.5/8.6) the build runs to its end, and the log says so."""
    import threading

    import edgeseg.backends.tensorrt.loader as loader_mod
    from edgeseg.backends.tensorrt.loader import run_cancellable
    from edgeseg.backends.tensorrt.plan import BuildProgress

    p = BuildProgress(lambda line: None)
    p.monitored = monitored
    steps, stepped = [], threading.Event()

    def build():  # a stand-in for build_serialized_network: steps until a step says stop
        for i in range(300):
            if monitored and not p.step_complete("Building engine", i):
                return None
            steps.append(i)
            stepped.set()
            threading.Event().wait(0.001)
        return b"engine"

    interrupts = iter([KeyboardInterrupt("SIGINT")])

    class Worker(threading.Thread):
        def join(self, timeout=None):  # the interrupt arriving while the waiting thread is in join
            stepped.wait(10)
            super().join(timeout)
            for e in interrupts:
                raise e

    monkeypatch.setattr(loader_mod, "_Thread", Worker)
    assert run_cancellable(build, p, poll_s=0.01) == (None if monitored else b"engine")
    assert p.cancelled and str(p.interrupt) == "SIGINT"
    assert (0 < len(steps) < 300) if monitored else len(steps) == 300
    assert ("at its next step" if monitored else "cannot cancel a build") in caplog.text
    monkeypatch.undo()
    assert run_cancellable(lambda: b"engine", BuildProgress(lambda line: None)) == b"engine"
    with pytest.raises(ValueError, match="parser"):
        run_cancellable(lambda: (_ for _ in ()).throw(ValueError("parser")), BuildProgress(lambda line: None))


def test_timing_cache_is_kept_per_device_and_versions_in_the_user_cache(tmp_path, monkeypatch):
    from edgeseg.backends.tensorrt.plan import timing_cache_path

    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path))
    assert timing_cache_path(ORIN, "10.3.0", 12060) == tmp_path / "tensorrt" / "timing-orin-sm87-trt10.3.0-cuda12060.cache"
    assert timing_cache_path(ORIN, "10.3.0", 11080) != timing_cache_path(ORIN, "10.3.0", 12060)


class _Cache:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return self.data

    def combine(self, other, ignore_mismatch):
        self.data = b"+".join(sorted({*self.data.split(b"+"), *other.data.split(b"+")} - {b""}))
        return True


class _Config:
    """A stand-in for IBuilderConfig's timing-cache calls, with TensorRT's failure modes."""

    def __init__(self, refuse_set: bool = False):
        self.set, self.refuse_set = None, refuse_set

    def create_timing_cache(self, data):
        return None if data.startswith(b"junk") else _Cache(bytes(data))  # None: a blob TensorRT cannot read

    def set_timing_cache(self, cache, ignore_mismatch):
        if self.refuse_set and cache.data:
            return False  # another device's cache
        self.set = cache
        return True

    def get_timing_cache(self):
        return self.set


def test_a_timing_cache_tensorrt_refuses_is_started_afresh(tmp_path, caplog):
    from edgeseg.backends.tensorrt.loader import _timing_cache, save_timing_cache

    path = tmp_path / "tensorrt" / "timing.cache"
    assert _timing_cache(_Config(), None) is None
    c = _Config()
    assert _timing_cache(c, path).data == b"" and c.set is not None  # none yet: an empty one
    c.set.data = b"a"
    save_timing_cache(c, path)
    assert path.read_bytes() == b"a"
    for junk, config in ((b"junk", _Config()), (b"b", _Config(refuse_set=True))):
        path.write_bytes(junk)
        caplog.clear()
        assert _timing_cache(config, path).data == b"" and "refused this timing cache" in caplog.text


def test_timing_caches_of_two_builds_are_merged_not_overwritten(tmp_path):
    """Two processes building at once: the second to save keeps the first one's timings."""
    from edgeseg.backends.tensorrt.loader import save_timing_cache

    path = tmp_path / "timing.cache"
    for mine in (b"x", b"y"):
        c = _Config()
        c.set = _Cache(mine)
        save_timing_cache(c, path)
    assert path.read_bytes() == b"x+y"
    c = _Config()  # no cache on the config: nothing written, no error
    save_timing_cache(c, tmp_path / "none.cache")
    assert not (tmp_path / "none.cache").exists()


@pytest.mark.parametrize("version,precision,problem", [
    ("8.5.2.2", "fp16", None),  # JetPack 5
    ("10.3.0", "fp16", None),  # JetPack 6
    ("10.3.0", "int8", "explicitly quantized"),  # edgeseg's INT8 models are Q/DQ graphs
    ("8.5", "fp32", "is FP32"),
    ("10.8", "fp16", "no DLA from 10.8"),
    ("11.4.1", "fp16", "strongly typed FP16 networks only"),
])
def test_dla_builds_fp16_on_the_tensorrt_versions_that_have_it(version, precision, problem):
    from edgeseg.backends.tensorrt.plan import dla_problem

    why = dla_problem(precision, version)
    assert (why is None) if problem is None else (problem in why)
    if problem is None:
        plan = builder_plan(precision, trt_version=version, dla=1)
        assert (plan.dla_core, plan.flags, plan.strongly_typed) == (1, ("FP16", "GPU_FALLBACK"), False)
        assert plan.network_flags == builder_plan(precision, trt_version=version).network_flags
    else:
        with pytest.raises(UnsupportedError, match="EDGESEG_TRT_DLA_CORE=1") as e:
            builder_plan(precision, trt_version=version, dla=1)
        assert "unset EDGESEG_TRT_DLA_CORE" in e.value.fix


def test_the_dla_takes_static_shapes_only():
    """A dynamic batch or size would put every layer back on the GPU (GPU fallback), silently."""
    from edgeseg.backends.tensorrt.plan import dla_problem

    assert dla_problem("fp16", "10.3", InputSpec(size=ImageShape(360, 480))) is None
    for spec in (InputSpec(size=ImageShape(360, 480), dynamic_batch=True), InputSpec(size_rule="any")):
        assert "no dynamic dimensions" in dla_problem("fp16", "10.3", spec)
        with pytest.raises(UnsupportedError, match="no dynamic dimensions") as e:
            builder_plan("fp16", trt_version="10.3", dla=0, input_spec=spec)
        assert "fixed-size bundle" in e.value.fix


def test_the_dla_core_is_read_checked_and_part_of_the_engine_key():
    from edgeseg.backends.tensorrt.plan import dla_core, engine_options

    assert dla_core({}) is None and dla_core({"EDGESEG_TRT_DLA_CORE": " "}) is None
    assert dla_core({"EDGESEG_TRT_DLA_CORE": "1"}) == 1
    with pytest.raises(InputError, match="'dla0' is not a DLA core number"):
        dla_core({"EDGESEG_TRT_DLA_CORE": "dla0"})
    static = InputSpec(size=ImageShape(8, 12))
    assert engine_options(static, ORIN, {}) == (("max_batch", "8"),)
    assert engine_options(static, ORIN, {"EDGESEG_TRT_DLA_CORE": "0"}) == (("max_batch", "8"), ("dla_core", "0"))
