"""The accuracy gate on a quickly trained model: pass, mixed precision, fail with the best numbers.

The model is a tiny conv net trained in the fixture for a few seconds on a colour -> class task
(never random weights), exported and bundled; its FP32 mIoU is ~97 on held-out scenes.
"""
import json
import shutil

import pytest

from edgeseg.bundle import Bundle
from edgeseg.errors import QuantizationError
from edgeseg.quant import quantize_bundle
from edgeseg.quant.check import check_bundle
from edgeseg.quant.trt_cache import read_cache

import quant_tiny as qt


@pytest.fixture
def bundle(trained, tmp_path):
    dst = tmp_path / "b.edgeseg"
    shutil.copytree(trained, dst)
    return dst


VAL = qt.scenes(12, seed=7)
GOOD = [s.image for s in qt.scenes(16, seed=5)]
DARK = [s.image // 16 for s in qt.scenes(16, seed=5)]  # unrepresentative: 16x too dark


def test_tensorrt_int8_within_budget_and_deployable(bundle):
    r = quantize_bundle(bundle, GOOD, target="tensorrt", method="minmax", eval_dataset=VAL, max_drop=1.0, progress=False,
                        eval_spec="synthetic:12,seed=7", eval_split="val")
    assert r.fp32_score > 90  # the model is trained
    assert r.met_budget and r.drop <= 1.0 and not r.float_nodes
    b = Bundle.open(bundle)  # hashes verified
    assert b.model_entry("int8", "tensorrt").file == "model.int8.tensorrt.onnx"
    rep = b.report["int8"]["tensorrt"]
    assert rep["fp32"] == pytest.approx(r.fp32_score) and rep["int8"] == pytest.approx(r.int8_score)
    assert rep["latency_ms"]["fp32"] > 0 and rep["size_bytes"]["int8"] > 0
    assert rep["calibration"]["source"] == "frames" and rep["calibration"]["frames"] == 16  # what calibrated it
    assert rep["gate_data"] == {"dataset": "synthetic:12,seed=7", "split": "val", "samples": 12}  # what scored it
    calib = json.loads((bundle / "calibration.json").read_text())["targets"]["tensorrt"]
    assert calib["method"] == "minmax" and calib["frames"] == 16
    cache = read_cache(bundle / "calibration.tensorrt-8.5.cache")
    assert cache.version_code == 8502
    assert cache.scales["images"] == pytest.approx(calib["tensors"]["images"]["amax"] / 127, rel=1e-6)
    assert check_bundle(b, "tensorrt-10.3", "int8").ok


def test_mixed_precision_keeps_the_most_sensitive_layers_in_float(bundle):
    # sensitivity=True: the ranking is made even where full INT8 meets the budget (session 58's CI: the trained model's
    # full INT8 came within 0.5 on that run, so no ranking was made and the test's last checks had nothing to check)
    r = quantize_bundle(bundle, GOOD, target="cpu", method="minmax", eval_dataset=VAL, max_drop=0.5, progress=False,
                        latency=False, sensitivity=True)
    assert r.met_budget and r.fp32_score - r.int8_score <= 0.5
    full_int8 = r.curve[0][1]
    mixed = [f for f in r.float_nodes if f.reason.startswith("mixed precision")]
    if r.fp32_score - full_int8 > 0.5:
        assert mixed, "the budget was missed at full INT8, so some layer must be in float"
        # the layers kept in float are the top of the sensitivity ranking
        assert [f.name for f in mixed] == [s.name for s in r.sensitivity[: len(mixed)]]
    assert r.sensitivity and r.sensitivity[0].gain >= r.sensitivity[-1].gain
    assert (bundle / "sensitivity.cpu.png").read_bytes()[:4] == b"\x89PNG"
    names = {f["name"] for f in Bundle.open(bundle).report["int8"]["cpu"]["float_nodes"]}
    assert names == {f.name for f in r.float_nodes}
    # a new model without a sensitivity search: the earlier model's plot leaves the bundle (it stayed, listed)
    assert len(r.curve) > 1 and "sensitivity.cpu.png" in Bundle.open(bundle).manifest.files
    again = quantize_bundle(bundle, GOOD, target="cpu", method="minmax", eval_dataset=VAL, max_drop=100.0,
                            progress=False, latency=False)
    assert again.met_budget and len(again.curve) <= 1
    b = Bundle.open(bundle)  # hashes verified: the manifest no longer lists it
    assert "sensitivity.cpu.png" not in b.manifest.files and not (bundle / "sensitivity.cpu.png").exists()


def test_gate_fails_with_best_numbers_when_unreachable(bundle):
    with pytest.raises(QuantizationError, match=r"FP32 \d+\.\d+, best INT8 \d+\.\d+"):
        quantize_bundle(bundle, DARK, target="cpu", method="minmax", eval_dataset=VAL, max_drop=0.5, progress=False,
                        latency=False)
    b = Bundle.open(bundle)
    assert not [m for m in b.manifest.models if m.precision == "int8"]
    rep = b.report["int8"]["cpu"]
    assert rep["met_budget"] is False and rep["fp32"] - rep["int8"] > 0.5


def test_quantize_cli_with_image_folder(bundle, tmp_path, capsys):
    import cv2

    from edgeseg.cli import main

    d = tmp_path / "calib"
    d.mkdir()
    for i, img in enumerate(GOOD[:8]):
        cv2.imwrite(str(d / f"{i}.png"), img[..., ::-1])
    out = tmp_path / "r.json"
    rc = main(["quantize", str(bundle), "--calib", str(d), "--target", "tensorrt", "--method", "percentile",
               "--no-progress", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["frames"] == 8 and data["method"] == "percentile" and data["model"] == "model.int8.tensorrt.onnx"
    printed = capsys.readouterr().out
    assert "speed-up" in printed and ("gate:" in printed) == bool(data["gate_data"])
    # agreement with FP32 on held-out frames is the score when no labelled set is given
    assert data["metric"] is None or data["int8"] > 90
    assert data["gate_data"] == ({} if data["metric"] is None else {"agreement_frames": 8 - data["frames"]})


def test_clipping_ranges_that_miss_the_budget_fall_back_to_minmax(bundle, tmp_path):
    """Percentile ranges clipped at the 60th percentile flatten the activations the classes live in;
    the gate then tries minmax ranges before keeping any layer in float, goes on with them (they score
    higher; a layer or two may still stay in float to meet the budget) and records both scores."""
    from edgeseg.data.io import write_image
    from edgeseg.quant.calibration import CalibrationRecipe

    for i, img in enumerate(GOOD):
        write_image(tmp_path / "frames" / f"{i:03d}.png", img)
    recipe = CalibrationRecipe(source=str(tmp_path / "frames"), frames=16, method="percentile", percentile=60.0)
    r = quantize_bundle(bundle, recipe, target="cpu", eval_dataset=VAL, max_drop=1.0, progress=False, latency=False,
                        latency_guard=False)
    fb = Bundle.open(bundle).report["int8"]["cpu"]["calibration"]["method_fallback"]
    assert fb["method"] == "percentile" and fb["minmax"] > fb["int8"] + 1.0  # clipping cost more than the budget
    assert r.method == "minmax" and r.curve[0][1] == pytest.approx(fb["minmax"])  # the gate went on from minmax
    assert r.met_budget and r.fp32_score - r.int8_score <= 1.0
    calib = json.loads((bundle / "calibration.json").read_text())["targets"]["cpu"]
    assert calib["method"] == "minmax"  # the ranges written are the ones the model was quantized with


def test_quantize_cli_records_and_prints_what_the_gate_scored(bundle, tmp_path, capsys):
    """``--eval`` on a folder of labelled frames: the report names the spec, split and sample count."""
    from edgeseg.cli import main
    from edgeseg.data.io import write_image, write_label

    (tmp_path / "names.txt").write_text("\n".join(qt.CLASSES) + "\n")
    for i, s in enumerate(VAL[:6]):
        write_image(tmp_path / "img" / f"{i}.png", s.image)
        write_label(tmp_path / "mask" / f"{i}.png", s.labels)
    spec = f"folder:{tmp_path / 'img'},{tmp_path / 'mask'},classes={tmp_path / 'names.txt'}"
    out = tmp_path / "r.json"
    rc = main(["quantize", str(bundle), "--calib", str(tmp_path / "img"), "--target", "tensorrt",
               "--method", "minmax", "--eval", spec, "--max-drop", "5", "--no-progress", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["gate_data"] == {"dataset": spec, "split": "val", "samples": 6}
    assert data["fp32"] > 90  # the trained model, scored on the labelled frames
    assert f"gate: mIoU on {spec} (val), 6 samples" in capsys.readouterr().out
    assert Bundle.open(bundle).report["int8"]["tensorrt"]["gate_data"] == data["gate_data"]


def test_keep_float_layers_stay_float_in_every_model_and_a_typo_is_an_error(bundle):
    """--keep-float: the named layers are float in the shipped model (no DequantizeLinear feeds them) with
    their reason recorded; an unknown name fails before any work, naming the layers there are."""
    import re

    import onnx

    from edgeseg.errors import InputError
    from edgeseg.quant.api import KEEP_FLOAT_REASON
    from edgeseg.quant.quantize import compute_nodes

    first = compute_nodes(onnx.load(str(bundle / "model.onnx")))[0][0]
    r = quantize_bundle(bundle, GOOD, target="tensorrt", method="minmax", eval_dataset=VAL, max_drop=1.0,
                        progress=False, latency=False, keep_float=[first, ""])
    assert [(f.name, f.reason) for f in r.float_nodes if f.reason == KEEP_FLOAT_REASON] == [(first, KEEP_FLOAT_REASON)]
    q = onnx.load(str(bundle / "model.int8.tensorrt.onnx"))
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    node = next(n for n in q.graph.node if n.name == first)
    assert not any(producers.get(i) == "DequantizeLinear" for i in node.input)
    others = [n for n in q.graph.node if n.op_type == node.op_type and n.name != first]
    assert any(producers.get(i) == "DequantizeLinear" for n in others for i in n.input)  # the rest is INT8
    rep = Bundle.open(bundle).report["int8"]["tensorrt"]
    assert {"name": first, "op_type": node.op_type, "reason": KEEP_FLOAT_REASON}.items() <= next(
        f for f in rep["float_nodes"] if f["name"] == first).items()
    with pytest.raises(InputError, match=rf"(?s)no quantizable layer named 'conv_typo'.*{re.escape(first)}"):
        quantize_bundle(bundle, GOOD, target="cpu", method="minmax", progress=False, latency=False,
                        keep_float=["conv_typo"])
    assert "cpu" not in Bundle.open(bundle).report["int8"]
