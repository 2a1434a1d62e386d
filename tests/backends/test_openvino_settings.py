"""Every path that compiles an OpenVINO model uses one set of settings (issue 10, defect 2).

On CPUs with AMX or AVX-512 BF16 OpenVINO's default inference precision is bf16, under which the CPU
plugin failed to compile NNCF's INT8 graphs ("No suitable implementations") and the openvino backend
could not load ``model.int8.openvino.onnx``. Every compile now states its precision explicitly."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.backends.openvino.settings import compile_config

pytestmark = pytest.mark.openvino


def test_compile_config_states_the_precision_for_every_model_kind():
    assert compile_config("fp32") == {"INFERENCE_PRECISION_HINT": "f32"}
    assert compile_config("int8", threads=2) == {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
    assert compile_config("bf16", perf_count=True) == {"INFERENCE_PRECISION_HINT": "bf16", "PERF_COUNT": True}
    from edgeseg.errors import InputError

    with pytest.raises(InputError, match="fp32, bf16 or int8"):
        compile_config("fp16")


def test_backend_and_quant_paths_compile_with_the_same_settings(monkeypatch):
    ov = pytest.importorskip("openvino")
    from edgeseg.backends import BACKENDS
    from edgeseg.bundle import Bundle
    from edgeseg.quant import openvino as qov

    seen = []
    real = ov.Core.compile_model

    def recording(self, model, device=None, config=None, *a, **k):
        seen.append(dict(config or {}))
        return real(self, model, device, config or {}, *a, **k)

    monkeypatch.setattr(ov.Core, "compile_model", recording)
    road = Bundle.open("road")
    fp32, int8 = road.model_path("fp32"), road.model_path("int8", "cpu")
    x = {"images": np.zeros((1, 3, 360, 480), np.float32)}
    with BACKENDS.get("openvino").load(road, precision="fp32", threads=1) as r:
        assert r.model_path == fp32
    with BACKENDS.get("openvino").load(road, precision="int8", target="cpu", threads=1) as r:
        assert r.model_path == int8
    qov.compile_cpu(int8, threads=1)
    qov.OpenVinoSession(int8, threads=1)
    qov.openvino_latency_ms(fp32, x, threads=1, runs=1, warmup=0, precision="fp32")
    assert seen == [compile_config("fp32", 1), compile_config("int8", 1), compile_config("int8", 1),
                    compile_config("int8", 1), compile_config("fp32", 1)]


def test_int8_model_compiles_under_forced_bf16_where_the_cpu_has_bf16():
    """The AMX default path, reproducible on any CPU with BF16: an INT8 model compiled with edgeseg's
    settings runs (the f32 hint for its float layers), and bf16 is offered for the FP32 model."""
    pytest.importorskip("openvino")
    from edgeseg.backends import BACKENDS
    from edgeseg.backends.openvino.settings import precisions_here
    from edgeseg.bundle import Bundle

    if "bf16" not in precisions_here():
        pytest.skip("this CPU has no BF16 (OpenVINO lists no BF16 capability): the AMX/bf16 path cannot run here")
    road = Bundle.open("road")
    x = {"images": np.random.default_rng(0).normal(size=(1, 3, 360, 480)).astype(np.float32)}
    with BACKENDS.get("openvino").load(road, precision="int8", target="cpu", threads=1) as r:
        assert np.isfinite(r.infer(x)["logits"]).all()
    with BACKENDS.get("openvino").load(road, precision="bf16", threads=1) as r:
        assert r.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"


def test_bf16_is_refused_clearly_where_the_cpu_has_none():
    pytest.importorskip("openvino")
    from edgeseg.backends import BACKENDS
    from edgeseg.backends.openvino.settings import precisions_here
    from edgeseg.errors import BackendUnavailable

    if "bf16" in precisions_here():
        pytest.skip("this CPU has BF16")
    with pytest.raises(BackendUnavailable, match="no bf16 support"):
        BACKENDS.get("openvino").load("road", precision="bf16")


def test_bf16_gate_measures_accuracy_on_this_cpu(tmp_path):
    """Where the CPU has BF16 (AMX, AVX-512 BF16) the choice offers OpenVINO bf16 only after measuring
    it here: with the task metric on the bundle's recorded dataset where that opens (``shapes``: its
    generator, always), else by label agreement on the parity images (99.9 %+ for ``shapes`` on an
    AVX-512 BF16 EPYC; a runtime agrees with itself exactly). ``shapes-panoptic``'s verdict follows
    its measured PQ drop and budget (1.39 > 1.0 there: refused)."""
    pytest.importorskip("openvino")
    import re

    from edgeseg.backends import gates
    from edgeseg.backends.choice import Candidate
    from edgeseg.backends.openvino.settings import precisions_here
    from edgeseg.bundle import Bundle
    from handmade_bundles import made_elsewhere

    if "bf16" not in precisions_here():
        pytest.skip("this CPU has no BF16 (OpenVINO lists no BF16 capability)")
    shapes, panoptic = Bundle.open("shapes"), Bundle.open("shapes-panoptic")
    ok, why = gates.bf16_gate(shapes, threads=1)
    assert ok and why.startswith("bf16 mIoU ") and "on 40 frames of synthetic" in why
    ok, why = gates.bf16_gate(panoptic, threads=1)
    reduced, base = map(float, re.search(r"bf16 PQ ([\d.]+) vs FP32 ([\d.]+)", why).groups())
    assert ok == (base - reduced <= 1.0) and 0 < base - reduced < 5  # bf16 ran, and moved PQ
    fp32 = Candidate("openvino", "fp32")
    assert gates.label_agreement(shapes, fp32, fp32, threads=1) == 1.0
    agree = gates.label_agreement(shapes, fp32, Candidate("openvino", "bf16"), threads=1)
    assert gates.MIN_AGREEMENT <= agree < 1.0  # bf16 really ran (some border pixels flip) and stays accurate
    missing = f"camvid:{tmp_path / 'not-here'}"  # made on a machine whose dataset is not here: the proxy decides
    ok, why = gates.bf16_gate(made_elsewhere("shapes", tmp_path / "s.edgeseg", data=missing), threads=1)
    assert ok and f"{agree:.2%}" in why
    ok, why = gates.bf16_gate(made_elsewhere("shapes-panoptic", tmp_path / "p.edgeseg", data=missing), threads=1)
    assert not ok and "panoptic" in why


def test_checks_on_one_runtime_share_one_fp32_score():
    """The bf16 check and the INT8 re-checks on OpenVINO all compare with OpenVINO FP32 on the same 40
    frames: it is measured once per process (it was measured again for each, 1-2 s of a first run)."""
    pytest.importorskip("openvino")
    import re

    from edgeseg.backends import gates
    from edgeseg.bundle import Bundle

    shapes = Bundle.open("shapes")
    gates._BASELINES.clear()  # a cache: earlier tests may have measured this one
    verdicts = [gates.task_metric_gate(shapes, "int8", threads=1, target=t, backend="openvino")[1] for t in ("cpu", "tensorrt")]
    assert len(gates._BASELINES) == 1
    base = {re.search(r"vs FP32 ([\d.]+)", v).group(1) for v in verdicts}
    assert len(base) == 1 and float(base.pop()) > 80  # one FP32 mIoU, and a real one (shapes scores ~88)
