"""``edgeseg import`` and pixel normalisation: a 0-255 mean needs --scale 1 (refused otherwise, with the
fix), and a mean/std given for a model that takes uint8 pixels is reported as ignored."""
from __future__ import annotations

import logging

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeseg.bundle import Bundle  # noqa: E402
from edgeseg.cli import main  # noqa: E402

H, W, C = 8, 12, 3
CAFFE = "103.94,116.78,123.68"


def _model(path, dtype=TensorProto.FLOAT):
    """NCHW input (cast to float when uint8) -> 1x1 Conv -> logits."""
    w = np.random.default_rng(0).normal(size=(C, 3, 1, 1)).astype(np.float32)
    nodes, x = [], "x"
    if dtype == TensorProto.UINT8:
        nodes, x = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)], "xf"
    nodes.append(helper.make_node("Conv", [x, "w"], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, [1, 3, H, W])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, H, W])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, path)
    return path, w


def test_0_255_mean_without_scale_is_refused_with_the_fix(tmp_path, capsys):
    src, w = _model(tmp_path / "f.onnx")
    out = tmp_path / "f.edgeseg"
    assert main(["import", str(src), "--classes", str(C), "--mean", CAFFE, "--std", "1,1,1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "0-255 units but scale is 0.00392" in err and "pass --scale 1" in err
    assert not out.exists()
    assert main(["import", str(src), "--classes", str(C), "--mean", CAFFE, "--std", "1,1,1", "--scale", "1",
                 "--out", str(out)]) == 0
    spec = Bundle.open(out).manifest.input
    px = np.full((H, W, 3), 120, np.uint8)
    x = spec.preprocess(px)[0]
    np.testing.assert_allclose(x[0, :, 0, 0], 120 - np.array([103.94, 116.78, 123.68]), rtol=1e-5)


def test_mean_std_for_a_uint8_model_are_reported_as_ignored(tmp_path, caplog):
    src, _ = _model(tmp_path / "u.onnx", TensorProto.UINT8)
    with caplog.at_level(logging.WARNING, logger="edgeseg.import"):
        assert main(["import", str(src), "--classes", str(C), "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2",
                     "--out", str(tmp_path / "u.edgeseg")]) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "edgeseg.import" and r.levelno == logging.WARNING]
    assert len(warned) == 1 and "takes uint8 pixels, so --mean and --std are ignored" in warned[0]
    spec = Bundle.open(tmp_path / "u.edgeseg").manifest.input
    px = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert spec.dtype == "uint8" and np.array_equal(spec.preprocess(px)[0][0], px.transpose(2, 0, 1))  # raw pixels
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeseg.import"):  # nothing given: nothing to warn about
        assert main(["import", str(src), "--classes", str(C), "--out", str(tmp_path / "v.edgeseg")]) == 0
    assert not [r for r in caplog.records if r.name == "edgeseg.import"]


def test_out_under_a_file_is_refused_before_importing(tmp_path, capsys):
    """``--out`` below a regular file: Bundle.create's mkdir raised NotADirectoryError (a traceback)
    after the import had run; now refused first, naming the file in the way."""
    from edgeseg.cli import main

    (tmp_path / "a-file").write_text("x")
    for cmd in (["import", str(tmp_path / "any.onnx"), "--task", "instance", "--classes", "2"],
                ["fuse", "shapes", "shapes-instance"]):
        rc = main([*cmd, "--out", str(tmp_path / "a-file" / "b.edgeseg")])
        err = capsys.readouterr().err
        assert rc == 2 and "error: --out: cannot write" in err and "a-file is a file, not a folder" in err, err
    assert (tmp_path / "a-file").read_text() == "x"
