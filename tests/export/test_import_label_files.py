"""Names and colours beside a model, as jetson-inference (``classes.txt``, ``colors.txt`` next to
``fcn_resnet18.onnx``) and DeepStream (``labels.txt``) keep them: ``edgeseg import`` takes them when it is given
no names, and says so."""
from __future__ import annotations

import numpy as np

from edgeseg.export.label_files import labels_beside

#: jetson-inference's FCN-ResNet18-Cityscapes-512x256 folder lists 21 classes this way (first ones)
CLASSES = "void\nego_vehicle\nground\nroad\n"
COLORS = "0 0 0\n128 64 128 255\n81 0 81\n0x80 64 128\n"  # sscanf's %i: an optional alpha, hex too


def _jetson_folder(root):
    import onnx
    from onnx import TensorProto, helper

    root.mkdir()
    # jetson-inference's exports: input_0 [1, 3, H, W], output_0 class scores on a coarse grid
    g = helper.make_graph([helper.make_node("AveragePool", ["input_0"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
                           helper.make_node("Concat", ["pooled", "pooled_b"], ["output_0"], axis=1)], "fcn",
                          [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 3, 32, 64])],
                          [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [1, 4, 8, 16])],
                          [helper.make_tensor("pooled_b", TensorProto.FLOAT, [1, 1, 8, 16], np.zeros(128).tolist())])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(root / "fcn_resnet18.onnx"))
    (root / "classes.txt").write_text(CLASSES)
    (root / "colors.txt").write_text(COLORS)
    return root / "fcn_resnet18.onnx"


def test_names_and_colours_beside_the_model(tmp_path):
    onnx_path = _jetson_folder(tmp_path / "net")
    side = labels_beside(onnx_path)
    assert side.names == ("void", "ego_vehicle", "ground", "road")
    assert side.palette == ((0, 0, 0), (128, 64, 128), (81, 0, 81), (128, 64, 128)) and side.problems == ()
    # read as segNet's loadClassColors reads them (sscanf "%i %i %i %i"): a value it cannot read is 255, an
    # octal 064 is 52, classes past the file's end keep segNet's red, a transparent class is named
    (tmp_path / "net" / "colors.txt").write_text("0 0 0 0\n1 2\n064 0 0\n")
    side = labels_beside(onnx_path)
    assert side.palette == ((0, 0, 0), (1, 2, 255), (52, 0, 0), (255, 0, 0))
    assert "3 colours for 4 classes" in side.problems[0] and "classes 0 are transparent" in side.problems[1]
    # a blank line is a class, as segNet counts it; closing blank lines are not
    (tmp_path / "net" / "classes.txt").write_text("void\n\nground\nroad\n\n\n")
    assert labels_beside(onnx_path).names == ("void", "class_1", "ground", "road")
    (tmp_path / "net" / "classes.txt").write_text(CLASSES)
    # DeepStream's labels.txt, the one-line form too; no name file: None
    (tmp_path / "net" / "classes.txt").unlink()
    (tmp_path / "net" / "colors.txt").unlink()
    (tmp_path / "net" / "labels.txt").write_text("background;person\n")
    assert labels_beside(onnx_path).names == ("background", "person")
    (tmp_path / "net" / "labels.txt").unlink()
    assert labels_beside(onnx_path) is None


def test_a_jetson_inference_model_imports_with_no_options(tmp_path, caplog, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    onnx_path = _jetson_folder(tmp_path / "net")
    assert main(["import", str(onnx_path), "--out", str(tmp_path / "j.edgeseg")]) == 0
    assert "4 class names from classes.txt and colours from colors.txt" in caplog.text
    m = Bundle.open(tmp_path / "j.edgeseg").manifest
    assert m.classes == ("void", "ego_vehicle", "ground", "road")
    assert m.palette == ((0, 0, 0), (128, 64, 128), (81, 0, 81), (128, 64, 128))
    # segNet's pre-processing for ONNX models: RGB stretched to the input, pixel / 255, ImageNet mean and std
    i = m.input
    assert (i.color, i.resize, i.scale, i.mean, i.std) == ("RGB", "resize", 1 / 255, (0.485, 0.456, 0.406),
                                                           (0.229, 0.224, 0.225))
    # names given on the command line win; the files are not read
    caplog.clear()
    assert main(["import", str(onnx_path), "--names", "a,b,c,d", "--out", str(tmp_path / "n.edgeseg")]) == 0
    assert "class names from" not in caplog.text and Bundle.open(tmp_path / "n.edgeseg").manifest.palette != m.palette
    # names that do not fit the model: the error says where they came from
    (tmp_path / "net" / "classes.txt").write_text("a\nb\nc\n")
    capsys.readouterr()
    assert main(["import", str(onnx_path), "--out", str(tmp_path / "w.edgeseg")]) != 0
    err = capsys.readouterr().err
    assert "the 3 class names came from" in err and "classes.txt" in err and "--names" in err
    # without any name file the error says where names can come from
    (tmp_path / "net" / "classes.txt").unlink()
    capsys.readouterr()
    assert main(["import", str(onnx_path), "--out", str(tmp_path / "x.edgeseg")]) != 0
    assert "classes.txt or labels.txt beside the ONNX" in capsys.readouterr().err


def test_a_classes_file_saved_with_a_bom_names_its_first_class_without_it(tmp_path):
    """Session 50's fuzzing: the byte-order mark of a classes.txt saved by Windows' Notepad became part of the first
    class name ('\\ufeffvoid')."""
    onnx_path = _jetson_folder(tmp_path / "net")
    (tmp_path / "net" / "classes.txt").write_bytes(b"\xef\xbb\xbf" + CLASSES.encode())
    assert labels_beside(onnx_path).names == ("void", "ego_vehicle", "ground", "road")
