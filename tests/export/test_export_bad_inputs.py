"""``edgeseg export`` / ``edgeseg import`` on bad or unusual input: an error line naming the thing and a
``fix:`` line (exit 2), nothing written at ``--out``. Inputs are made for real in tmp_path: a run folder of
``edgeseg train``, a file of random bytes, ONNX models built with ``onnx.helper`` (no mocks)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgeseg.cli import main  # noqa: E402


def test_a_size_the_model_cannot_run_at_is_a_clear_error(tmp_path, capsys):
    """Before: 'torch.onnx.export failed ... Failed to export the model with torch.export. [96mThis is step
    1/3...' after pages of torch's own logged tracebacks."""
    out = tmp_path / "tiny.edgeseg"
    assert main(["export", "test_fcn8s", "--num-classes", "3", "--size", "1x1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "edgeseg export: error: model 'test_fcn8s' cannot run at 1x1 (WxH)" in err and "Output size is too small" in err
    assert "fix: give a larger --size" in err and "Traceback" not in err
    assert not out.exists()


def test_a_runs_last_pt_is_named_a_training_checkpoint(tmp_path, capsys):
    """Before: 'no metadata file last.pt.json next to it', as if it were a bare state dict."""
    run = tmp_path / "run"
    assert main(["train", "test_fcn8s", "--data", "synthetic:4,size=64x48", "--size", "64x48", "--epochs", "1",
                 "--batch", "2", "--threads", "1", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "b.edgeseg"
    assert main(["export", str(run / "last.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a training checkpoint (edgeseg train's last.pt" in err and "model.safetensors" in err and "fix:" in err
    assert not out.exists()
    assert main(["export", str(run / "model.safetensors"), "--out", str(out)]) == 0  # what the fix says works


def test_a_plain_state_dict_exports_with_the_sidecar_the_error_shows(tmp_path, capsys):
    """A user's torch.save(model.state_dict()) .pt: the error pointed at edgeseg's source for the sidecar's form,
    and a hand-written one without the 'format' fields was refused. The JSON the fix shows works as written."""
    import json

    import torch

    from edgeseg.bundle import Bundle
    from edgeseg.models import create_model

    sd = tmp_path / "mine.pt"
    torch.save(create_model("test_fcn8s", num_classes=5).state_dict(), sd)
    assert main(["export", str(sd), "--out", str(tmp_path / "b.edgeseg")]) == 2
    err = capsys.readouterr().err
    assert f"write {sd}.json holding" in err and '"model_name":' in err and "edgeseg models lists them" in err
    (tmp_path / "mine.pt.json").write_text(json.dumps({"model_name": "test_fcn8s", "num_classes": 5,
                                                      "extra": {"classes": list("abcde")}}))
    assert main(["export", str(sd), "--size", "64x48", "--out", str(tmp_path / "b.edgeseg")]) == 0
    assert Bundle.open(tmp_path / "b.edgeseg").manifest.classes == tuple("abcde")


def test_a_garbage_safetensors_file_has_a_fix(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 500, dtype=np.uint8).tobytes())
    assert main(["export", str(bad), "--out", str(tmp_path / "b.edgeseg")]) == 2
    err = capsys.readouterr().err
    assert "not a readable safetensors file" in err and "fix: the file is corrupt or truncated" in err


def _conv_onnx(path, out_channels: int, extra_input: bool = False):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((out_channels, 3, 1, 1)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 48, 64])]
    out = "y"
    if extra_input:
        nodes.append(helper.make_node("Add", ["y", "b"], ["z"]))
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, out_channels, 1, 1]))
        out = "z"
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                                                  [1, out_channels, 48, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_import_of_a_one_channel_sigmoid_model_is_refused_with_the_fix(tmp_path, capsys):
    """Before: imported as 1 class; every pixel of every prediction was class 0."""
    src = _conv_onnx(tmp_path / "binary.onnx", 1)
    out = tmp_path / "b.edgeseg"
    assert main(["import", str(src), "--classes", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has one score channel: a binary (sigmoid) model" in err and "--classes 2" in err
    assert not out.exists()


@pytest.mark.parametrize("sigmoid", [False, True])
def test_a_one_channel_model_given_two_classes_labels_where_its_score_says(tmp_path, sigmoid):
    """Following the fix ('--classes 2') gave the generic 'check --classes' error; only Ultralytics' one-class models
    were read as two channels. Now any: a logit x as [-x, x] (the class where x > 0), a Sigmoid's p as [1 - p, p]
    (the class where p > 0.5), the same labels either way."""
    import onnx
    from onnx import helper

    import edgeseg
    from edgeseg.bundle import Bundle

    src = _conv_onnx(tmp_path / "binary.onnx", 1)
    if sigmoid:
        m = onnx.load(str(src))
        last = m.graph.output[0].name
        m.graph.node.append(helper.make_node("Sigmoid", [last], ["prob"]))
        m.graph.output[0].name = "prob"
        onnx.save(m, str(src))
    out = tmp_path / "b.edgeseg"
    assert main(["import", str(src), "--names", "background,person", "--size", "64x48", "--out", str(out)]) == 0
    assert Bundle.open(out).manifest.decoder_options.scores == ("probabilities" if sigmoid else "logits")
    rgb = np.random.default_rng(2).integers(0, 255, (48, 64, 3), np.uint8)
    from edgeseg._ort import make_session

    m = onnx.load(str(src))
    raw = make_session(m.SerializeToString()).run(None, {m.graph.input[0].name: Bundle.open(out).manifest.input
                                                         .preprocess(rgb)[0]})[0][0, 0]
    want = (raw > 0.5) if sigmoid else (raw > 0)
    labels = edgeseg.load(out, backend="onnxruntime")(rgb).labels
    assert labels.shape == (48, 64) and np.array_equal(labels == 1, want)


def test_import_of_a_model_with_two_inputs_has_a_fix(tmp_path, capsys):
    src = _conv_onnx(tmp_path / "two.onnx", 3, extra_input=True)
    assert main(["import", str(src), "--classes", "3", "--out", str(tmp_path / "b.edgeseg")]) == 2
    err = capsys.readouterr().err
    assert "takes one image input, this one takes ['x', 'b']" in err and "fix:" in err


def _external_data_model(folder):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).random((3, 3, 3, 3), np.float32), "W")
    node = helper.make_node("Conv", ["images", "W"], ["logits"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 32, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return w


def test_import_of_a_model_with_external_weights_embeds_them_or_names_the_missing_file(tmp_path, capsys):
    """Models over 2 GB (and some exporters' defaults) keep their weights in a file beside model.onnx."""
    from onnx import numpy_helper

    from edgeseg.bundle import Bundle

    w = _external_data_model(tmp_path)
    assert main(["import", str(tmp_path / "model.onnx"), "--classes", "3", "--out", str(tmp_path / "a.edgeseg")]) == 0
    b = Bundle.open(tmp_path / "a.edgeseg")
    inside = onnx.load(str(b.root / "model.onnx"), load_external_data=False)  # the weights travel in the bundle
    assert np.array_equal(numpy_helper.to_array(inside.graph.initializer[0]), numpy_helper.to_array(w))
    (tmp_path / "weights.bin").unlink()
    capsys.readouterr()
    assert main(["import", str(tmp_path / "model.onnx"), "--classes", "3", "--out", str(tmp_path / "b.edgeseg")]) == 2
    err = capsys.readouterr().err
    assert "weights are stored in a separate file that is not beside it: weights.bin" in err and "fix: copy weights.bin" in err
