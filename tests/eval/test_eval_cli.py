"""``edgeseg eval`` end to end: a hand-built ONNX bundle (ONNX Runtime), a folder dataset, JSON out."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.data import write_image, write_label

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _constant_class_bundle(path, num_classes=3, winner=1):
    """A 1x1 Conv with zero weights and a bias that makes ``winner`` the argmax everywhere."""
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.bundle import Bundle, Manifest, ModelFile, OutputSpec
    from edgeseg.structures import InputSpec

    w = numpy_helper.from_array(np.zeros((num_classes, 3, 1, 1), np.float32), "w")
    bias = np.zeros(num_classes, np.float32)
    bias[winner] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w", "b"], ["logits"])],
        "const",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, num_classes, "h", "w"])],
        [w, numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    manifest = Manifest(
        name="const", task="semantic", classes=("background", "thing", "void")[:num_classes],
        input=InputSpec(size_rule="any"), outputs=(OutputSpec("logits", "logits", "float32", (1, num_classes, "h", "w")),),
    )
    b = Bundle.create(path, manifest)
    b.add_model(ModelFile("model.onnx", "fp32", None, 17), model.SerializeToString())
    return path


@pytest.fixture
def dataset_dir(tmp_path):
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    for name in ("x", "y"):
        write_image(tmp_path / "i" / f"{name}.png", np.full((2, 4, 3), 100, np.uint8))
        write_label(tmp_path / "m" / f"{name}.png", gt)
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    return tmp_path


def test_eval_command(tmp_path, dataset_dir, capsys):
    from edgeseg.cli import main

    bundle = _constant_class_bundle(tmp_path / "const.edgeseg")
    spec = f"folder:{dataset_dir / 'i'},{dataset_dir / 'm'},classes={dataset_dir / 'classes.txt'}"
    rc = main(["eval", str(bundle), "--data", spec, "--backend", "onnxruntime", "--threads", "1",
               "--json", str(tmp_path / "scores.json"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # everything predicted "thing": background IoU 0, thing IoU 8/16; mIoU 0.25, pixel acc 0.5, mAcc 0.5
    assert "mIoU        25.00" in out and "pixel acc   50.00" in out and "mAcc        50.00" in out
    assert "thing" in out and "boundary F1" in out
    data = json.loads((tmp_path / "scores.json").read_text())
    assert data["miou"] == 0.25 and data["pixel_acc"] == 0.5 and data["num_images"] == 2
    assert data["per_class"]["thing"]["iou"] == 0.5 and data["per_class"]["background"]["iou"] == 0.0
    assert data["backend"] == "onnxruntime" and data["split"] == "val"


def test_eval_json_says_what_ran_and_a_score_threshold_on_semantic_data_is_refused(tmp_path, dataset_dir, capsys):
    """An option audit: --json recorded the backend asked for ("auto"), not the one that scored; --score-threshold on
    semantic data was taken, recorded, and used by nothing."""
    from edgeseg.cli import main

    bundle = _constant_class_bundle(tmp_path / "const.edgeseg")
    spec = f"folder:{dataset_dir / 'i'},{dataset_dir / 'm'},classes={dataset_dir / 'classes.txt'}"
    assert main(["eval", str(bundle), "--data", spec, "--threads", "1", "--json", str(tmp_path / "s.json"),
                 "--no-progress"]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["backend"] == "onnxruntime" and data["precision"] == "fp32" and "score_threshold" not in data
    capsys.readouterr()
    assert main(["eval", str(bundle), "--data", spec, "--score-threshold", "0.5", "--json", str(tmp_path / "t.json")]) == 2
    assert "--score-threshold 0.5: " in capsys.readouterr().err and not (tmp_path / "t.json").exists()


def test_eval_extra_model_class_counts_as_miss(tmp_path, dataset_dir, capsys):
    from edgeseg.cli import main

    bundle = _constant_class_bundle(tmp_path / "void.edgeseg", winner=2)  # predicts the model-only "void"
    spec = f"folder:{dataset_dir / 'i'},{dataset_dir / 'm'},classes={dataset_dir / 'classes.txt'}"
    rc = main(["eval", str(bundle), "--data", spec, "--limit", "1", "--no-boundary", "--no-progress",
               "--json", str(tmp_path / "s.json")])
    assert rc == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["miou"] == 0.0 and data["pixel_acc"] == 0.0 and data["num_images"] == 1
    assert data["confusion"] == [[0, 0, 4], [0, 0, 4]]


def test_eval_errors(tmp_path, capsys):
    from edgeseg.cli import main

    bundle = _constant_class_bundle(tmp_path / "b.edgeseg")
    assert main(["eval", str(bundle), "--data", "camvid:" + str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.edgeseg"), "--data", "synthetic:1"]) == 2
    assert "missing.edgeseg" in capsys.readouterr().err


def test_unwritable_outputs_are_refused_before_the_model_runs(tmp_path, capsys):
    """--save-predictions (instance: a JSON file) and --json were written only after the whole run:
    a path that cannot take a file ended in an OSError traceback and the scores were lost."""
    from edgeseg.cli import main

    write_image(tmp_path / "val" / "a.png", np.zeros((8, 8, 3), np.uint8))
    gt = tmp_path / "instances_val.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}], "annotations": [],
                              "categories": [{"id": 1, "name": "car"}]}))
    (tmp_path / "a-file").write_text("x")
    for option, target in (("--save-predictions", tmp_path / "a-file" / "dets.json"), ("--save-predictions", tmp_path),
                           ("--save-predictions", "/proc/edgeseg-dets.json"), ("--json", tmp_path / "a-file" / "ap.json")):
        rc = main(["eval", str(tmp_path / "no-such.edgeseg"), "--data", f"coco-instance:{gt}", option, str(target),
                   "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and f"edgeseg eval: error: {option}: cannot write" in err and "fix:" in err, err
    assert (tmp_path / "a-file").read_text() == "x"
