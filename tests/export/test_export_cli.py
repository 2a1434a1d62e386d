"""The export / import / models commands, run in-process through edgeseg.cli.main."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeseg.bundle import Bundle
from edgeseg.cli import main
from edgeseg.models import create_model, save_checkpoint
from edgeseg.structures import CAMVID_CLASSES


def test_export_registered_model(tmp_path, capsys):
    out, js = tmp_path / "road.edgeseg", tmp_path / "p.json"
    rc = main(["export", "test_fcn32s", "--classes", "camvid", "--size", "64x48", "--argmax-in-graph",
               "--out", str(out), "--json", str(js)])
    assert rc == 0
    b = Bundle.open(out)
    assert b.manifest.name == "road" and b.manifest.classes == CAMVID_CLASSES
    assert b.manifest.input.size.hw == (48, 64) and b.manifest.outputs[0].kind == "labels"
    data = json.loads(js.read_text())
    assert data["model"] == "test_fcn32s" and data["parity"] == b.report["parity"]
    assert data["parity"]["argmax_agreement"] >= 0.999
    assert "argmax agreement" in capsys.readouterr().out


def test_export_checkpoint_uses_its_classes_and_input_spec(tmp_path):
    torch.manual_seed(0)
    model = create_model("test_unet", num_classes=2)
    spec = {"size": {"height": 40, "width": 56}, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    ckpt = save_checkpoint(model, tmp_path / "best.safetensors", model_name="test_unet", num_classes=2,
                           extra={"classes": ["bg", "fg"], "input_spec": spec})
    out = tmp_path / "fg.edgeseg"
    assert main(["export", str(ckpt), "--out", str(out), "--dynamic-batch"]) == 0
    m = Bundle.open(out).manifest
    assert m.classes == ("bg", "fg") and m.input.size.hw == (40, 56) and m.input.mean == (0.5, 0.5, 0.5)
    assert m.input.dynamic_batch and m.provenance["checkpoint"] == "best.safetensors"
    assert main(["export", str(ckpt), "--out", str(tmp_path / "x"), "--num-classes", "3"]) == 2  # 2 in the checkpoint


def test_import_command(tmp_path):
    h, w = 16, 20
    wts = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["in", "w"], ["o"])],
                              "g", [helper.make_tensor_value_info("in", TensorProto.FLOAT, [1, h, w, 3])],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, h, w, 5])], [numpy_helper.from_array(wts, "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, tmp_path / "m.onnx")
    classes = tmp_path / "classes.txt"
    classes.write_text("# five classes\nsky\nroad\ncar\nperson\ntree\n")
    out, js = tmp_path / "imp.edgeseg", tmp_path / "imp.json"
    rc = main(["import", str(tmp_path / "m.onnx"), "--classes", str(classes), "--layout", "NHWC", "--color", "BGR",
               "--mean", "103.94,116.78,123.68", "--std", "1,1,1", "--scale", "1", "--out", str(out), "--json", str(js)])
    assert rc == 0
    man = Bundle.open(out).manifest
    assert man.classes == ("sky", "road", "car", "person", "tree")
    assert man.input.size.hw == (h, w)  # taken from the model's fixed input
    assert (man.input.layout, man.input.color, man.input.scale, man.input.std) == ("NHWC", "BGR", 1.0, (1.0, 1.0, 1.0))
    assert json.loads(js.read_text())["manifest"]["outputs"][0]["shape"] == [1, 5, h, w]


def test_models_command_lists_parameter_counts(tmp_path, capsys):
    js = tmp_path / "models.json"
    assert main(["models", "segnet*", "--json", str(js)]) == 0
    rows = {r["name"]: r for r in json.loads(js.read_text())["models"]}
    assert rows["segnet_vgg16"]["params_M"] == pytest.approx(29.44, abs=0.01)  # the paper: 29.5M
    assert "test_segnet" not in rows or rows["test_segnet"]["params_M"] < 0.1
    assert "segnet_vgg16" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["export", "fcn9s", "--out", "{tmp}/x"], "unknown model 'fcn9s'"),
    (["export", "test_unet", "--size", "64", "--out", "{tmp}/x"], "cannot read image size"),
    (["export", "{tmp}/missing.safetensors", "--out", "{tmp}/x"], "missing.safetensors not found"),
    (["import", "{tmp}/nope.onnx", "--classes", "3", "--size", "8x8", "--out", "{tmp}/x"], "not found"),
    (["import", "{tmp}/nope.onnx", "--classes", "3", "--mean", "1,2", "--size", "8x8", "--out", "{tmp}/x"], "--mean needs three"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert rc == 2
    assert message in capsys.readouterr().err
