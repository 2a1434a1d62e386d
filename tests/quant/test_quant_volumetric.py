"""Volumetric INT8 (V-Net): Dice by hand, the synthetic volumes, export parity, and the Dice gate on a
V-Net trained here for a few seconds (its Dice is scored again independently with PyTorch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.data.synthetic_volumes import synthetic_volume, synthetic_volumes
from edgeseg.errors import InputError, QuantizationError
from edgeseg.eval.volumetric import dice_per_volume, dice_score

SHAPE = (16, 32, 32)


def test_dice_by_hand():
    g = np.zeros((2, 4, 4, 4), np.uint8)
    p = np.zeros_like(g)
    g[0, :2] = 1          # 32 voxels
    p[0, 1:3] = 1         # 32 voxels, 16 shared: D = 2 * 16 / 64 = 0.5
    # volume 1: nothing to find and nothing found: 1
    np.testing.assert_allclose(dice_per_volume(p, g), [0.5, 1.0])
    assert dice_score(p, g) == pytest.approx(75.0)
    # three classes: the mean over classes 1 and 2
    g3, p3 = np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)
    g3[0], p3[0] = 1, 1   # class 1 perfect
    g3[1] = 2             # class 2 missed: 0
    assert dice_score(p3, g3, num_classes=3) == pytest.approx(50.0)
    with pytest.raises(InputError, match="differ"):
        dice_score(p, g[:1])


def test_synthetic_volumes_are_reproducible_and_labelled():
    v, lab = synthetic_volume(0, 3, SHAPE)
    v2, lab2 = synthetic_volume(0, 3, SHAPE)
    np.testing.assert_array_equal(v, v2)
    np.testing.assert_array_equal(lab, lab2)
    assert v.shape == SHAPE and v.dtype == np.float32 and set(np.unique(lab)) <= {0, 1}
    assert abs(float(v.mean())) < 1e-4 and float(v.std()) == pytest.approx(1.0, abs=1e-4)
    other, _ = synthetic_volume(1, 3, SHAPE)
    assert not np.array_equal(v, other)
    x, y = synthetic_volumes(0, 6, SHAPE)
    assert x.shape == (6, 1) + SHAPE and y.shape == (6,) + SHAPE
    assert all(y[i].any() for i in range(6))  # every volume has foreground
    assert x[:, 0][y == 1].mean() > x[:, 0][y == 0].mean() + 0.5  # bright objects
    with pytest.raises(InputError, match="too small"):
        synthetic_volume(0, 0, (4, 32, 32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """test_vnet trained 40 steps on 16x32x32 volumes, exported to ONNX."""
    from edgeseg.export.volumetric import export_volumetric
    from edgeseg.models import create_model
    from edgeseg.models.vnet import dice_loss

    torch.manual_seed(0)
    model = create_model("test_vnet", num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(40):
        x, y = synthetic_volumes(7, 4, SHAPE)  # the same four volumes: fits them quickly
        loss = dice_loss(model(torch.from_numpy(x))["logits"], torch.from_numpy(y.astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("vnet") / "vnet.onnx"
    parity = export_volumetric(model, path, SHAPE)
    return model.eval(), path, parity


def test_export_matches_pytorch(trained):
    import onnx

    import onnxruntime as ort

    model, path, parity = trained
    assert parity["max_abs_diff"] <= 1e-4 * max(parity["max_abs_logit"], 1.0)
    # independently of the exporter's own check: other volumes, a plain session, PyTorch's logits
    x = synthetic_volumes(99, 2, SHAPE)[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(["logits"], {"volumes": v[None]})[0] for v in x])
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4 * float(np.abs(ref).max()), rtol=1e-4)
    g = onnx.load(str(path))
    assert [i.name for i in g.graph.input] == ["volumes"] and [o.name for o in g.graph.output] == ["logits"]
    assert {"Conv", "ConvTranspose", "PRelu"} <= {n.op_type for n in g.graph.node}


def test_int8_gate_scores_dice_like_pytorch_and_holds_the_budget(trained, tmp_path):
    import onnx

    from edgeseg.quant.volumetric import onnx_dice, quantize_volumetric

    model, path, _ = trained
    calib = synthetic_volumes(7, 6, SHAPE)[0]
    volumes, labels = synthetic_volumes(7, 4, SHAPE)  # the volumes it fitted: Dice is high, margins real
    with torch.no_grad():
        ref = dice_score(model(torch.from_numpy(volumes))["logits"].argmax(1).numpy(), labels)
    assert ref > 60.0
    r = quantize_volumetric(path, tmp_path / "int8.onnx", calib, volumes, labels, max_drop=2.0)
    assert r.dice_fp32 == pytest.approx(ref, abs=0.05)  # ONNX Runtime FP32 = PyTorch on the same volumes
    assert r.drop <= 2.0 and r.dice_int8 == pytest.approx(onnx_dice(r.path, volumes, labels), abs=1e-9)
    kinds = {n.op_type for n in onnx.load(str(r.path)).graph.node}
    assert "QuantizeLinear" in kinds and "DequantizeLinear" in kinds
    assert r.quantized_layers > 0 and r.to_dict()["calibration_volumes"] == 6


def test_int8_gate_refuses_what_no_precision_mix_can_meet(trained, tmp_path):
    from edgeseg.quant.volumetric import quantize_volumetric

    _, path, _ = trained
    calib = synthetic_volumes(7, 4, SHAPE)[0]
    volumes, labels = synthetic_volumes(7, 2, SHAPE)
    with pytest.raises(QuantizationError, match="Dice points") as e:
        quantize_volumetric(path, tmp_path / "never.onnx", calib, volumes, labels, max_drop=-50.0)
    assert "FP32" in str(e.value) and not (tmp_path / "never.onnx").exists()


def test_bad_volumes_say_what_to_do(trained, tmp_path):
    from edgeseg.quant.volumetric import quantize_volumetric

    _, path, _ = trained
    volumes, labels = synthetic_volumes(7, 2, SHAPE)
    with pytest.raises(InputError, match=r"\[N, C, D, H, W\]"):
        quantize_volumetric(path, tmp_path / "q.onnx", volumes[:, 0], volumes, labels)
    with pytest.raises(InputError, match="do not match"):
        quantize_volumetric(path, tmp_path / "q.onnx", volumes, volumes, labels[:1])
    with pytest.raises(InputError, match="not found"):
        quantize_volumetric(tmp_path / "missing.onnx", tmp_path / "q.onnx", volumes, volumes, labels)


def test_training_batches_are_windows_of_the_stream():
    # tools/train_vnet.py draws step k's batch as volumes k*B .. k*B+B-1: the same as one long draw
    x, y = synthetic_volumes(5, 6, SHAPE)
    x2, y2 = synthetic_volumes(5, 2, SHAPE, start=4)
    np.testing.assert_array_equal(x[4:], x2)
    np.testing.assert_array_equal(y[4:], y2)


def test_train_script_resume_without_a_run_says_so(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("train_vnet", Path(__file__).parents[2] / "tools" / "train_vnet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path / "none"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no run.json" in err and "fix:" in err
