"""backend="auto": the pure choice and its use on this machine."""
from __future__ import annotations

import pytest

from edgeseg.backends import choose_backend
from edgeseg.errors import BackendUnavailable

ALL = {"tensorrt": (True, ""), "openvino": (True, ""), "onnxruntime": (True, ""), "torch": (True, "")}
NO_TRT = {**ALL, "tensorrt": (False, "no tensorrt module")}
ORT_ONLY = {**NO_TRT, "openvino": (False, "not installed")}


def test_tensorrt_first():
    assert choose_backend(ALL) == "tensorrt"
    assert choose_backend(ALL, device="cuda") == "tensorrt"
    assert choose_backend(ALL, device="cpu") == "openvino"


def test_openvino_on_x86_when_graph_ok():
    assert choose_backend(NO_TRT, machine="x86_64") == "openvino"
    assert choose_backend(NO_TRT, machine="AMD64") == "openvino"
    assert choose_backend(NO_TRT, machine="x86_64", openvino_graph_ok=False) == "onnxruntime"
    assert choose_backend(NO_TRT, machine="aarch64") == "onnxruntime"


def test_onnxruntime_fallback_and_torch_never_auto():
    assert choose_backend(ORT_ONLY) == "onnxruntime"
    with pytest.raises(BackendUnavailable, match=r"(?s)tensorrt: no tensorrt module.*openvino: not installed.*onnxruntime: gone"):
        choose_backend({**ORT_ONLY, "onnxruntime": (False, "gone")})


def test_explicit_preference():
    assert choose_backend(ORT_ONLY, "torch") == "torch"
    assert choose_backend(ALL, "onnxruntime") == "onnxruntime"
    with pytest.raises(BackendUnavailable, match="backend 'tensorrt' is not available: no tensorrt module"):
        choose_backend(NO_TRT, "tensorrt")
    with pytest.raises(BackendUnavailable, match="unknown backend 'onnx'"):
        choose_backend(ALL, "onnx")


def test_select_backend_here(tmp_path):
    from edgeseg.backends import select_backend
    from edgeseg.backends.auto import availability
    from edgeseg.structures import ImageShape, InputSpec
    from handmade_bundles import conv_bundle, custom_op_model, make_bundle

    avail = availability()
    bundle = conv_bundle(tmp_path, input_spec=InputSpec(size=ImageShape(8, 12)))
    got = select_backend(bundle)
    assert got == choose_backend(avail, machine=__import__("platform").machine(), openvino_graph_ok=True)
    if avail["openvino"][0] and not avail["tensorrt"][0]:
        custom = make_bundle(tmp_path / "c.edgeseg", custom_op_model(tmp_path / "c.onnx"),
                             input_spec=InputSpec(size=ImageShape(4, 4)), num_classes=3)
        assert select_backend(custom) == "onnxruntime"  # OpenVINO cannot take FancyOp


# ---- INT8: the backend follows the target the model was quantized and timed for -------------------
def test_int8_follows_the_model_target():
    assert choose_backend(ALL, precision="int8", int8_targets=["cpu"]) == "onnxruntime"  # never OpenVINO for cpu
    assert choose_backend(ALL, precision="int8", int8_targets=[None]) == "onnxruntime"
    assert choose_backend(ALL, precision="int8", int8_targets=["openvino"]) == "openvino"
    assert choose_backend(ALL, precision="int8", int8_targets=["tensorrt"]) == "tensorrt"
    assert choose_backend(NO_TRT, precision="int8", int8_targets=["tensorrt"]) == "onnxruntime"
    assert choose_backend(ALL, precision="int8", int8_targets=["tensorrt"], device="cpu") == "onnxruntime"
    assert choose_backend(ORT_ONLY, precision="int8", int8_targets=["openvino"]) == "onnxruntime"
    # OpenVINO runs its own INT8 model on any machine (the x86 rule is for the FP32 automatic choice)
    assert choose_backend(NO_TRT, precision="int8", int8_targets=["openvino"], machine="aarch64") == "openvino"


def test_int8_without_a_target_prefers_a_usable_accelerated_model():
    shipped = ("cpu", "tensorrt")  # what the shapes bundle carries
    assert choose_backend(ALL, precision="int8", int8_targets=shipped) == "tensorrt"
    assert choose_backend(NO_TRT, precision="int8", int8_targets=shipped) == "onnxruntime"
    assert choose_backend(NO_TRT, precision="int8", int8_targets=("cpu", "openvino")) == "openvino"
    assert choose_backend(ALL, precision="int8", int8_targets=()) == "onnxruntime"  # none: ORT says why later
    assert choose_backend(ALL, "openvino", precision="int8", int8_targets=shipped) == "openvino"  # asked for
    with pytest.raises(BackendUnavailable, match=r"(?s)INT8.*tensorrt: no tensorrt module.*onnxruntime: gone"):
        choose_backend({**NO_TRT, "onnxruntime": (False, "gone")}, precision="int8", int8_targets=["tensorrt"])


def test_shipped_int8_runs_the_model_of_the_target_it_was_chosen_for():
    import edgeseg
    from edgeseg.backends.auto import availability, choose_int8_backend

    bundle = edgeseg.Bundle.open("shapes")
    targets = {m.target for m in bundle.manifest.models if m.precision == "int8"}
    assert {"cpu", "tensorrt"} <= targets
    avail = availability()
    assert choose_int8_backend(avail, targets) == ("tensorrt" if avail["tensorrt"][0] else "onnxruntime")
    # --precision int8 alone: the runtimes that run an INT8 model here are timed side by side, so which wins depends
    # on the CPU and its load (a helper, session 56: OpenVINO won 4 of 6 starts on a busy AVX2 EPYC, and the test
    # expecting the static preference failed); whichever it is runs the model of the target it was chosen for
    p = edgeseg.load(bundle, precision="int8")
    chosen = p.choice.candidate
    assert p.backend == chosen.backend and avail[chosen.backend][0] and chosen.target in targets
    assert p.runner.model_path.name == f"model.int8.{chosen.target}.onnx"
    cpu = edgeseg.load(bundle, precision="int8", target="cpu")
    # (either runtime that runs the cpu target's model: OpenVINO won the timing 4.1 ms to 6.7 on this AVX2 EPYC in
    # session 57, ONNX Runtime on others)
    assert cpu.backend in ("onnxruntime", "openvino") and cpu.runner.model_path.name == "model.int8.cpu.onnx"


def test_openvino_support_is_asked_once_per_model_file(tmp_path, monkeypatch):
    """The graph query (OpenVINO read_model + query_model) runs once per model sha256 in a process:
    the same bundle loaded again, or a copy of it elsewhere, does not re-read the model."""
    import platform
    import shutil

    from edgeseg.backends import BACKENDS, select_backend
    from edgeseg.backends import auto
    from edgeseg.bundle import Bundle
    from edgeseg.structures import ImageShape, InputSpec
    from handmade_bundles import conv_bundle

    avail = auto.availability()
    if not avail["openvino"][0] or avail["tensorrt"][0] or platform.machine().lower() not in auto.X86:
        pytest.skip("needs OpenVINO on x86 without TensorRT (the case where auto asks OpenVINO about the graph)")
    ov = BACKENDS.get("openvino")
    calls = []
    real = ov.supports.__func__

    def counting(cls, path):
        calls.append(path)
        return real(cls, path)

    monkeypatch.setattr(ov, "supports", classmethod(counting))
    monkeypatch.setattr(auto, "_SUPPORT_CACHE", {})
    bundle = conv_bundle(tmp_path / "a", input_spec=InputSpec(size=ImageShape(8, 12)), seed=5)
    copy = Bundle.open(shutil.copytree(bundle.root, tmp_path / "copy.edgeseg"))
    assert [select_backend(b) for b in (bundle, bundle, copy)] == ["openvino"] * 3
    assert calls == [bundle.root / "model.onnx"]
    assert auto._SUPPORT_CACHE == {bundle.manifest.files["model.onnx"]: (True, "")}
    other = conv_bundle(tmp_path / "b", input_spec=InputSpec(size=ImageShape(8, 12)), seed=6)  # other weights
    assert select_backend(other) == "openvino" and len(calls) == 2
    assert select_backend(bundle, precision="int8") == "onnxruntime" and len(calls) == 2  # INT8: by target, no query


def test_a_runner_that_is_not_concurrent_runs_one_call_at_a_time(tmp_path):
    """TensorRT's runner (one execution context, stream and device buffers) cannot run here: the base
    class's rule is checked with a runner of the same kind whose inference notices overlapping calls."""
    import threading
    import time

    import numpy as np

    from edgeseg.backends.base import Runner
    from handmade_bundles import conv_bundle

    class OneAtATime(Runner):
        name = "one-at-a-time"
        concurrent = False

        def _activate_impl(self):
            self.inside, self.overlaps = 0, 0

        def _infer_impl(self, feed):
            self.inside += 1
            self.overlaps += self.inside > 1
            time.sleep(0.002)
            self.inside -= 1
            return {"y": feed["x"]}

    def overlaps(runner) -> int:  # 4 threads, 20 calls each
        threads = [threading.Thread(target=lambda: [runner.infer({"x": np.zeros(1)}, check=False) for _ in range(20)])
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return runner.overlaps

    assert overlaps(OneAtATime(conv_bundle(tmp_path).root / "model.onnx").activate()) == 0
    OneAtATime.concurrent = True  # the same runner without the rule overlaps: the test can see it
    assert overlaps(OneAtATime(conv_bundle(tmp_path / "b").root / "model.onnx").activate()) > 0


def test_deactivating_a_concurrent_runner_waits_for_its_calls_in_flight(tmp_path):
    """CI failed once on a predictor closed while three threads called it: ONNX Runtime's runner set its session to
    None under a call that had passed the active check ("'NoneType' object has no attribute 'run'"). Made certain
    here: a call holds inside inference until deactivate() has started; deactivate() now waits for it, and a call
    arriving meanwhile waits for the deactivation and then finds the runner inactive (a named error, no crash)."""
    import threading

    import numpy as np

    from edgeseg.backends.base import Runner
    from edgeseg.errors import EdgesegError
    from handmade_bundles import conv_bundle

    inside, release = threading.Event(), threading.Event()

    class Sessioned(Runner):
        name = "sessioned"

        def _activate_impl(self):
            self.session = lambda x: x + 1

        def _infer_impl(self, feed):
            inside.set()
            release.wait(10)
            return {"y": self.session(feed["x"])}

        def _deactivate_impl(self):
            self.session = None

    runner = Sessioned(conv_bundle(tmp_path).root / "model.onnx").activate()
    got, errors = [], []

    def call():
        try:
            got.append(runner.infer({"x": np.zeros(1)}, check=False)["y"][0])
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    first = threading.Thread(target=call)
    first.start()
    assert inside.wait(10)
    closer = threading.Thread(target=runner.deactivate)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and runner.is_active  # waiting for the call in flight
    late = threading.Thread(target=call)
    late.start()
    release.set()
    for t in (first, closer, late):
        t.join(10)
    assert got == [1.0] and not runner.is_active
    assert [type(e) for e in errors] == [EdgesegError] and "not active" in str(errors[0])


def test_a_runner_is_freed_when_the_last_of_its_holders_and_its_activation_end(tmp_path):
    """Holders (with-blocks, a stream's inference stage) and activate()/deactivate() keep one session: it opens once
    and is freed when none of them remains, whatever the order (a with-block's end freed it under a stream before)."""
    from edgeseg.backends.base import Runner
    from handmade_bundles import conv_bundle

    class Counted(Runner):
        name = "counted"
        opened = closed = 0

        def _activate_impl(self):
            Counted.opened += 1

        def _infer_impl(self, feed):
            return {}

        def _deactivate_impl(self):
            Counted.closed += 1

    r = Counted(conv_bundle(tmp_path).root / "model.onnx")
    with r:
        r.activate()
        with r:
            assert r._holders == 2 and r._standing
        r.deactivate()
        assert r.is_active  # the outer with-block still holds it
    assert not r.is_active and (Counted.opened, Counted.closed) == (1, 1)
    r.hold()
    r.activate()
    r.release()
    assert r.is_active  # activate() keeps it until deactivate()
    r.deactivate()
    assert not r.is_active and (Counted.opened, Counted.closed) == (2, 2)
    assert r.infer({}, check=False, activate=True) == {} and r.is_active  # a predictor's call keeps it open
    r.deactivate()
    assert (Counted.opened, Counted.closed) == (3, 3)


def _gated_runner(tmp_path, concurrent: bool = True):
    """A runner whose calls can be held inside inference (``inside`` set, until ``release`` is), and whose session
    is a callable that closing sets to None (as ONNX Runtime's runner does)."""
    import threading

    from edgeseg.backends.base import Runner
    from handmade_bundles import conv_bundle

    class Gated(Runner):
        name = "gated"
        inside, gate = threading.Event(), threading.Event()

        def _activate_impl(self):
            self.session = lambda x: x + 1

        def _infer_impl(self, feed):
            Gated.inside.set()
            Gated.gate.wait(10)
            return {"y": self.session(feed["x"])}

        def _deactivate_impl(self):
            self.session = None

    Gated.concurrent = concurrent
    Gated.gate.set()
    return Gated(conv_bundle(tmp_path).root / "model.onnx")


def test_a_close_that_waited_behind_another_keeps_what_a_holder_opened_meanwhile(tmp_path):
    """Review of the holder count: a second close, waiting while the first waited for a call in flight, freed the
    session that a with-block opened after the first close ("runner ... is not active" inside the with-block)."""
    import threading
    import time

    import numpy as np

    r = _gated_runner(tmp_path)
    r.activate()
    r.gate.clear()
    call = threading.Thread(target=r.infer, args=({"x": np.zeros(1)},), kwargs={"check": False})
    call.start()
    assert r.inside.wait(10)
    first = threading.Thread(target=r.deactivate)  # waits for the call
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=r.deactivate)  # waits for the first close
    second.start()
    got = []

    def holder():
        with r:  # waits for the first close, then opens a new session
            time.sleep(0.3)  # the second close runs meanwhile
            got.append(r.infer({"x": np.zeros(1)}, check=False)["y"][0])

    h = threading.Thread(target=holder)
    h.start()
    time.sleep(0.1)
    r.gate.set()
    for t in (call, first, second, h):
        t.join(10)
    assert got == [1.0] and not r.is_active and (r._holders, r._standing, r._closing, r._in_flight) == (0, False, False, 0)
    # which waiter takes the lock first is the scheduler's choice: the rule itself, where the close re-checks
    with r:
        with r._turns:
            r._close_session()  # a close decided before this holder came, run after it
        assert r.is_active
    r.activate()
    with r._turns:
        r._close_session()  # before an activation that came meanwhile
    assert r.is_active
    r.deactivate()
    assert not r.is_active


@pytest.mark.parametrize("concurrent", [True, False])
def test_closing_a_runner_from_inside_its_own_call_is_refused_not_a_hang(tmp_path, concurrent):
    """Review: deactivate() from inside a call on the same thread (a hook in a backend) waited for its own call for
    ever (a concurrent runner), or freed the session under it (TensorRT's kind). Now a named error; the runner works on."""
    import numpy as np

    from edgeseg.errors import EdgesegError

    r = _gated_runner(tmp_path, concurrent).activate()
    session_call = r._infer_impl
    errors = []

    def closing_inside(feed):
        try:
            r.deactivate()
        except EdgesegError as e:
            errors.append(str(e))
        return session_call(feed)

    r._infer_impl = closing_inside
    assert r.infer({"x": np.zeros(1)}, check=False)["y"][0] == 1.0
    assert errors and "closed from inside one of its own calls" in errors[0]
    r._infer_impl = session_call
    assert r.is_active and r.infer({"x": np.zeros(1)}, check=False)["y"][0] == 1.0
    r.deactivate()
    assert not r.is_active


def test_a_stream_stage_whose_open_fails_after_the_hold_gives_the_hold_back(tmp_path, monkeypatch):
    """Review: a Ctrl-C in an inference stage's open() after it took its hold left the holder counted for ever (the
    pipeline never closes an element whose open() failed), so the predictor's close() could not free the session."""
    from edgeseg.stream.stages import InferenceStage

    r = _gated_runner(tmp_path)
    stage = InferenceStage(r)

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(InferenceStage, "_batchable", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage.open()
    assert (r._holders, r.is_active) == (0, False)
