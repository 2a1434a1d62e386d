"""The bundles shipped in ``edgeseg/zoo``: they verify, stay small, and reproduce the accuracy their
reports record (FP32 and every INT8 target) on the data available here."""
from __future__ import annotations

import pytest

import edgeseg
from edgeseg.backends.choice import int8_arithmetic_risk, weights_fit_7bit
from edgeseg.backends.device import device_info, int8_arithmetic


def ort_arithmetic_risk_known(bundle, target) -> bool:
    """The automatic choice knows this model's gate does not hold here (and leaves it out)."""
    return int8_arithmetic_risk(bundle, target, device_info()) is not None
from edgeseg.bundle import Bundle
from edgeseg.data import open_dataset
from edgeseg.eval import class_map, evaluate
from edgeseg.paths import data_root, shipped_bundle_names
from edgeseg.structures import SemanticResult

NAMES = shipped_bundle_names()
# FP32 + two or three INT8 models; a panoptic model (three heads) is 2 M parameters, and street-panoptic
# carries an OpenVINO INT8 model too (2.2x its float model on AMX)
MAX_BYTES = 18 * 1024 * 1024


def _dataset(spec: str, split: str):
    kind, _, rest = spec.partition(":")
    if kind == "camvid":  # recorded with the trainer's absolute path: use this machine's data folder
        if data_root() is None:
            pytest.skip("CamVid not found: set EDGESEG_DATA or place it at ../shared/data")
        spec = "camvid:"
    elif "/shared/data/" in rest:  # real data recorded with the builder's absolute path: this machine's copy
        if data_root() is None:
            pytest.skip(f"{kind} data not found: set EDGESEG_DATA or place it at ../shared/data")
        spec = f"{kind}:{data_root()}/{rest.split('/shared/data/', 1)[1]}"
    return open_dataset(spec, split=split)


def _score(bundle: Bundle, dataset, **load) -> float:
    """The bundle's task metric in percent: mIoU, mask AP for instance bundles, PQ for panoptic ones (as recorded)."""
    predictor = edgeseg.load(bundle, **{"backend": "onnxruntime", "precision": "fp32", **load})
    if bundle.manifest.task == "panoptic":
        from edgeseg.eval import evaluate_panoptic

        with predictor:
            return 100.0 * evaluate_panoptic(predictor, dataset, progress=False).pq
    if bundle.manifest.task == "instance":
        from edgeseg.eval import category_map, evaluate_instances
        from edgeseg.quant.accuracy import AP_SCORE_THRESHOLD

        predictor.set_options(score_threshold=AP_SCORE_THRESHOLD)
        with predictor:
            ap = evaluate_instances(predictor, dataset, category_map(predictor.classes, dataset.categories).to_category,
                                    progress=False).stats[0]
        return 100.0 * ap
    cmap = class_map(predictor.classes, dataset.classes)
    with predictor:
        scores = evaluate(lambda rgb: SemanticResult(cmap(predictor(rgb).labels)), dataset, progress=False,
                          boundary=False)
    return 100.0 * scores.miou


def test_shipped_bundles_exist():
    assert "shapes" in NAMES, "edgeseg/zoo/shapes.edgeseg is missing: python tools/train_default.py shapes"


@pytest.mark.parametrize("name", NAMES)
def test_shipped_bundle_verifies_and_is_small(name):
    b = Bundle.open(name)  # verifies every sha256
    size = sum((b.root / rel).stat().st_size for rel in b.manifest.files)
    assert size < MAX_BYTES, f"{name}: {size / 1e6:.1f} MB"
    assert {(m.precision, m.target) for m in b.manifest.models} >= {("fp32", None), ("int8", "cpu"), ("int8", "tensorrt")}


@pytest.mark.parametrize("name", NAMES)
def test_shipped_bundle_reproduces_its_report(name):
    b = Bundle.open(name)
    acc = b.report["accuracy"]["fp32"]
    data = _dataset(acc["data"], acc["split"])
    recorded = acc[{"instance": "mask_ap", "panoptic": "pq"}.get(b.manifest.task, "miou")]
    assert _score(b, data) == pytest.approx(100 * recorded, abs=0.05)
    for target, rec in b.report["int8"].items():
        assert rec["met_budget"] and rec["int8"] >= rec["fp32"] - rec["max_drop"]
        gate = rec.get("gate_data") or {}  # the data the gate scored, where it differs from the FP32 record's
        gated_on = _dataset(gate["dataset"], gate.get("split", "val")) if "dataset" in gate else data
        if "dataset" in gate:
            assert _score(b, gated_on) == pytest.approx(rec["fp32"], abs=0.05), target
        gated = int8_arithmetic((rec.get("rescored") or rec).get("device", {}).get("isa"))  # where the scores were measured
        if target == "openvino":  # gated in OpenVINO, whose CPU plugin picks its INT8 kernels per ISA
            if gated in ("unknown", device_info().int8_arithmetic):
                score = _score(b, gated_on, precision="int8", target=target, backend="openvino")
                assert score == pytest.approx(rec["int8"], abs=0.05), target
            else:  # another INT8 arithmetic: OpenVINO's results differ, so the choice re-gates it here or leaves it out
                risk = int8_arithmetic_risk(b, target, device_info(), backend="openvino")
                assert risk is not None and "re-quantize" in risk, target
            continue
        score = _score(b, gated_on, precision="int8", target=target)
        if gated in ("unknown", device_info().int8_arithmetic):  # the INT8 arithmetic the gate ran on
            assert score == pytest.approx(rec["int8"], abs=0.05), target
        elif weights_fit_7bit(b.model_path("int8", target)):  # the same int32 sums; requantization may round apart
            assert score == pytest.approx(rec["int8"], abs=0.15), target
        elif gated == "saturating":  # gated where int16 sums saturate; here exact sums, as TensorRT computes
            # them: the result moves (shapes-panoptic's tensorrt model 79.40 -> 79.16 PQ on a VNNI EPYC) and
            # the choice keeps the model, so its budget must still hold here
            assert score >= rec["fp32"] - rec["max_drop"], target
            assert abs(score - rec["int8"]) < 1.0, target
        else:  # 8-bit weights gated on exact sums, saturating here: the choice knows and leaves it out
            assert ort_arithmetic_risk_known(b, target), target
            assert abs(score - rec["int8"]) < 1.0, target
