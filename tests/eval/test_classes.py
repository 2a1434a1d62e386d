"""class_map: model class ids -> dataset class ids, by name when names overlap, else by id."""
import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.eval import SemanticMetric, class_map


def test_by_name_reorders_and_sends_unknown_names_to_the_miss_id():
    cm = class_map(["Background", "car", "void", "road "], ["road", "background", "car", "sign"])
    assert cm.by == "name" and cm.miss == 4
    assert cm.lut.tolist() == [1, 2, 4, 0, 4]  # last entry: ids past the model's classes
    assert cm.unmatched == ("void",) and cm.unpredictable == ("sign",)
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    assert cm(labels).tolist() == [[1, 2, 4, 0], [0, 4, 2, 1]]
    assert cm(np.array([[7, 255]], np.uint8)).tolist() == [[4, 4]]
    assert cm(np.array([[-1, 3, 9]], np.int32)).tolist() == [[4, 0, 4]]


def test_by_id_when_no_name_is_shared():
    cm = class_map(["a", "b", "c"], ["x", "y"])
    assert cm.by == "id" and cm.lut.tolist() == [0, 1, 2, 2] and cm.unmatched == ("c",) and cm.unpredictable == ()
    same = class_map(["x", "y"], ["x", "y"])
    assert same.by == "name" and same.lut.tolist() == [0, 1, 2]


def test_extra_model_class_counts_as_miss_in_the_metric():
    # model: bg, thing, void; dataset: thing, bg. Prediction: everything "void" on row 0, correct on row 1
    cm = class_map(["bg", "thing", "void"], ["thing", "bg"])
    gt = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], np.uint8)       # dataset ids: bg bg thing thing
    pred = np.array([[2, 2, 2, 2], [0, 0, 1, 1]], np.uint8)     # model ids
    m = SemanticMetric(2, boundary=False)
    m.update(cm(pred), gt)
    s = m.compute()
    # confusion rows gt (thing, bg), columns pred (thing, bg, miss): thing 2 right 2 missed, bg same
    assert s.confusion.tolist() == [[2, 0, 2], [0, 2, 2]]
    assert s.miou == pytest.approx(0.5) and s.pixel_acc == pytest.approx(0.5)


def test_dataset_without_classes_is_an_error():
    with pytest.raises(InputError, match="no classes"):
        class_map(["a"], [])


def test_eval_cli_matches_classes_by_name(tmp_path, capsys):
    """The dataset lists the classes in the other order: ``edgeseg eval`` must follow the names."""
    pytest.importorskip("onnxruntime")
    import json

    from edgeseg.cli import main
    from edgeseg.data import write_image, write_label
    from test_eval_cli import _constant_class_bundle

    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)  # dataset ids: 0 = thing, 1 = background
    write_image(tmp_path / "i" / "x.png", np.full((2, 4, 3), 100, np.uint8))
    write_label(tmp_path / "m" / "x.png", gt)
    (tmp_path / "classes.txt").write_text("thing\nbackground\n")
    bundle = _constant_class_bundle(tmp_path / "const.edgeseg", winner=1)  # predicts model class 1, "thing"
    spec = f"folder:{tmp_path / 'i'},{tmp_path / 'm'},classes={tmp_path / 'classes.txt'}"
    rc = main(["eval", str(bundle), "--data", spec, "--backend", "onnxruntime", "--threads", "1", "--no-boundary",
               "--no-progress", "--json", str(tmp_path / "s.json")])
    captured = capsys.readouterr()
    out = captured.out + captured.err  # (the class notes on standard error since session 57)
    assert rc == 0, out
    data = json.loads((tmp_path / "s.json").read_text())
    # "thing" predicted everywhere: thing IoU 4/8, background IoU 0 (by id it would be the reverse)
    assert data["per_class"]["thing"]["iou"] == 0.5 and data["per_class"]["background"]["iou"] == 0.0
    assert data["confusion"] == [[4, 0, 0], [4, 0, 0]] and data["class_match"] == "name"
    assert "void" in out  # the model-only class is named in the note
