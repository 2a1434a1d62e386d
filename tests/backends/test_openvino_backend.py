"""OpenVINO runner (CPU plugin) against numpy and ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.backends import BACKENDS
from edgeseg.errors import UnsupportedError
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle, custom_op_model, reference_logits

pytestmark = pytest.mark.openvino
pytest.importorskip("openvino")


def test_outputs_match_numpy(tmp_path):
    bundle = conv_bundle(tmp_path, 5, input_spec=InputSpec(size=ImageShape(8, 12), dynamic_batch=True))
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 12)).astype(np.float32)
    with BACKENDS.get("openvino").load(bundle, threads=1) as runner:
        assert runner.input_specs[0].name == "images" and runner.input_specs[0].shape[1:] == (3, 8, 12)
        assert isinstance(runner.input_specs[0].shape[0], str)  # dynamic batch
        out = runner.infer({"images": x})
    np.testing.assert_allclose(out["logits"], reference_logits(x, 5), rtol=1e-4, atol=1e-4)


def test_labels_graph(tmp_path):
    bundle = conv_bundle(tmp_path, 4, input_spec=InputSpec(size=ImageShape(8, 12)), argmax=True)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 12)).astype(np.float32)
    with BACKENDS.get("openvino").load(bundle) as runner:
        out = runner.infer({"images": x})["labels"]
    assert out.dtype == np.uint8 and np.array_equal(out, reference_logits(x, 4).argmax(1))


def test_unsupported_op(tmp_path):
    path = custom_op_model(tmp_path / "custom.onnx")
    runner_cls = BACKENDS.get("openvino")
    ok, why = runner_cls.supports(path)
    assert not ok and "FancyOp" in why
    with pytest.raises(UnsupportedError, match="FancyOp"):
        runner_cls(path).activate()


def test_auto_reads_the_model_once_on_the_first_load(tmp_path, monkeypatch):
    """backend="auto": the support check's read (read_model + query_model) is the runner's read too."""
    import platform

    import openvino as ov

    import edgeseg
    from edgeseg.backends import auto
    from edgeseg.backends.openvino import runner as ov_runner
    from edgeseg.backends.openvino import settings

    avail = auto.availability()
    if avail["tensorrt"][0] or platform.machine().lower() not in auto.X86:
        pytest.skip("needs x86 without TensorRT (the case where auto asks OpenVINO about the graph)")
    reads = []
    real = ov.Core.read_model

    def counting(self, model, *args, **kw):
        reads.append(str(model))
        return real(self, model, *args, **kw)

    monkeypatch.setattr(ov.Core, "read_model", counting)
    monkeypatch.setattr(auto, "_SUPPORT_CACHE", {})
    monkeypatch.setattr(ov_runner, "_READ_MODELS", ov_runner._ReadModels())
    # FP32 only, as on a CPU without BF16: where the CPU has it, precision auto also runs the bf16 gate,
    # whose own FP32 and bf16 runners read the file again and may choose bf16 (not FP32's numbers)
    monkeypatch.setattr(settings, "precisions_here", lambda: ("fp32",))
    bundle = conv_bundle(tmp_path, 5, input_spec=InputSpec(size=ImageShape(8, 12)), seed=3)
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 12)).astype(np.float32)
    with edgeseg.load(bundle, backend="openvino", threads=1) as p:  # precision auto: the graph check reads it
        assert p.backend == "openvino"
        out = p.runner.infer({"images": x})["logits"]
    assert reads == [str(bundle.root / "model.onnx")]  # one read: the check's model compiled by the runner
    np.testing.assert_allclose(out, reference_logits(x, 5, seed=3), rtol=1e-4, atol=1e-4)
    assert len(ov_runner._READ_MODELS._items) == 0  # handed over, not kept
    with edgeseg.load(bundle, backend="openvino", threads=1) as p:  # support is cached by sha256: the runner reads it
        np.testing.assert_allclose(p.runner.infer({"images": x})["logits"], out, rtol=0, atol=0)
    assert len(reads) == 2


def test_read_models_hand_over_once_evict_oldest_and_see_changed_files(tmp_path):
    import os

    from edgeseg.backends.openvino.runner import _ReadModels

    files = [tmp_path / f"m{i}.onnx" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 10)
    cache = _ReadModels(size=2)
    for i, f in enumerate(files):
        cache.put(f, f"model-{i}")
    assert cache.take(files[0]) is None  # evicted: at most 2 kept
    assert cache.take(files[2]) == "model-2" and cache.take(files[2]) is None  # handed over once
    st = files[1].stat()
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # the file changed since it was read
    assert cache.take(files[1]) is None
    cache.put(tmp_path / "missing.onnx", "x")
    assert len(cache._items) == 0


def test_a_predictor_shared_by_threads_returns_each_frames_own_result():
    """Before: one infer request served every thread; with 4 threads calling one `road` predictor, 18 of 24
    results were another frame's labels, silently. Now a request per call in flight (a pool)."""
    import threading

    import edgeseg

    p = edgeseg.load("shapes", backend="openvino", precision="fp32", threads=1)
    rng = np.random.default_rng(0)
    h, w = p.manifest.input.size.height, p.manifest.input.size.width
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    ref = [p(im).labels.copy() for im in images]
    assert len({r.tobytes() for r in ref}) == 4  # four different answers to tell apart
    wrong, errors = [], []

    def work(k):
        for i in range(12):
            j = (k + i) % 4
            try:
                if not np.array_equal(p(images[j]).labels, ref[j]):
                    wrong.append(j)
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == []
    assert 1 <= len(p.runner._requests) <= 4


def test_an_openvino_older_than_2024_3_is_not_offered(monkeypatch):
    """Session 57 (a dependency audit): pyproject allowed openvino 2024.0, whose ONNX reader reduces opset-19
    ReduceMean over every axis, so every shipped FP32 model failed to load with a channel-count error. Now such a
    release is not a backend here, and says why and the fix."""
    import importlib.metadata

    pytest.importorskip("openvino")
    from edgeseg.backends.openvino import runner

    assert "older than 2024.3" in runner.openvino_too_old("2024.0.0") and runner.openvino_too_old("2024.2.1")
    assert runner.openvino_too_old("2024.3.0") is None and runner.openvino_too_old("2026.4.1") is None
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2024.1.0")
    ok, why = runner.OpenVinoRunner.is_available()
    assert not ok and "pip install -U 'openvino>=2024.3'" in why
