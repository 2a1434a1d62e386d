"""``edgeseg import config_infer_primary.txt``: a DeepStream nvinfer configuration file gives the model, its labels
and its pre-processing (``y = net-scale-factor * (x - offsets)``, ``model-color-format``, ``maintain-aspect-ratio``
and ``symmetric-padding``), as Gst-nvinfer's configuration specification defines them."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.export.nvinfer_config import looks_like_nvinfer_config, read_nvinfer_config
from edgeseg.structures import ImageShape

#: a semantic segmentation config in the form DeepStream's segmentation samples use
CONFIG = """[property]
gpu-id=0
net-scale-factor=0.007843
model-color-format=1
offsets=127.5;127.5;127.5
onnx-file=seg.onnx
model-engine-file=seg.onnx_b1_gpu0_fp32.engine
labelfile-path=labels.txt
infer-dims=3;48;64
batch-size=1
## 0=FP32, 1=INT8, 2=FP16 mode
network-mode=0
num-detected-classes=3
interval=0
gie-unique-id=1
network-type=2
output-blob-names=logits
segmentation-threshold=0.0
maintain-aspect-ratio=1
symmetric-padding=0
scaling-filter=1
"""


def _write(tmp_path, config=CONFIG, labels="red\ngreen\nblue\n"):
    import onnx
    from onnx import TensorProto, helper

    (tmp_path / "config_infer_primary_seg.txt").write_text(config)
    if labels is not None:
        (tmp_path / "labels.txt").write_text(labels)
    # logits = the network input itself: each pixel's class is its largest normalised channel
    g = helper.make_graph([helper.make_node("Identity", ["input_1"], ["logits"])], "seg",
                          [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 3, "h", "w"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, "h", "w"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "seg.onnx"))
    return tmp_path / "config_infer_primary_seg.txt"


def test_the_config_gives_model_labels_and_preprocessing(tmp_path):
    path = _write(tmp_path)
    assert looks_like_nvinfer_config(path) and not looks_like_nvinfer_config(tmp_path / "seg.onnx")
    cfg = read_nvinfer_config(path)
    assert cfg.onnx == tmp_path / "seg.onnx" and cfg.task == "semantic" and cfg.names == ("red", "green", "blue")
    # y = 0.007843 * (x - 127.5) = (x - 127.5) / (1 / 0.007843); BGR; top-left black padding
    assert cfg.input == dict(color="BGR", scale=1.0, mean=(127.5,) * 3, std=(1 / 0.007843,) * 3,
                             resize="letterbox", pad_value=0, anchor="top-left")
    assert cfg.size == ImageShape(48, 64) and cfg.layout == "NCHW" and cfg.problems == ()
    # defaults: RGB, no scaling, a stretch; nvinfer's default nearest-neighbour scaling is named
    path.write_text("[property]\nonnx-file=seg.onnx\nnetwork-type=3\nsymmetric-padding=1\n")
    cfg = read_nvinfer_config(path)
    assert cfg.task == "instance" and cfg.names is None and cfg.size is None
    assert cfg.input == dict(color="RGB", scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3, resize="resize")
    assert len(cfg.problems) == 1 and "its default filter (nearest-neighbour)" in cfg.problems[0]
    # the old forms: input-dims (its fourth field orders a UFF input only), labels on one line separated by ';'
    path.write_text("[property]\nonnx-file=seg.onnx\nnetwork-type=2\ninput-dims=3;32;40;1\nlabelfile-path=l.txt\n"
                    "maintain-aspect-ratio=1\nsymmetric-padding=1\nscaling-filter=1\n")
    (tmp_path / "l.txt").write_text("road;car;sky\n")
    cfg = read_nvinfer_config(path)
    assert (cfg.size, cfg.layout, cfg.names, cfg.input["anchor"]) == (ImageShape(32, 40), "NCHW", ("road", "car", "sky"),
                                                                       "center")
    # as GKeyFile reads keys: integers up to a space (comments after them), true/false, indented lines
    path.write_text("[property]\n  onnx-file=seg.onnx\nnetwork-type=2 # segmentation\n"
                    "model-color-format=1 # 0: RGB # 1: BGR\n  maintain-aspect-ratio=true\n  symmetric-padding=false\n"
                    "scaling-filter=1\nnet-scale-factor=0.01735207357279195\noffsets=123.675;116.28;103.53;\n"
                    "process-mode=2\n")
    cfg = read_nvinfer_config(path)
    assert cfg.onnx == tmp_path / "seg.onnx" and cfg.task == "semantic" and cfg.input["color"] == "BGR"
    assert (cfg.input["resize"], cfg.input["anchor"]) == ("letterbox", "top-left")
    assert cfg.input["mean"] == (123.675, 116.28, 103.53) and cfg.input["std"] == (1 / 0.01735207357279195,) * 3
    assert len(cfg.problems) == 1 and "object crops" in cfg.problems[0]
    from edgeseg.structures import InputSpec  # ImageNet's offsets with a small factor make a valid spec

    InputSpec(size=ImageShape(8, 8), **cfg.input)
    # a classifier written the old way
    path.write_text("[property]\nonnx-file=seg.onnx\nis-classifier=1\n")
    with pytest.raises(InputError, match="is a classifier"):
        read_nvinfer_config(path)


#: CONFIG in DeepStream's YAML form, as its parser reads it: the same keys under property:, lists as ';' strings,
#: switches as 0/1 integers
YAML_CONFIG = """# the segmentation sample's configuration, as a .yml file
property:
  gpu-id: 0
  net-scale-factor: 0.007843
  model-color-format: 1   # BGR
  offsets: 127.5;127.5;127.5
  onnx-file: seg.onnx
  labelfile-path: labels.txt
  infer-dims: 3;48;64
  network-mode: 0
  num-detected-classes: 3
  network-type: 2
  output-blob-names: logits
  segmentation-threshold: 0.0
  maintain-aspect-ratio: 1
  symmetric-padding: 0
  scaling-filter: 1
class-attrs-all:
  pre-cluster-threshold: 0.2
"""


def test_the_yaml_form_gives_what_the_key_file_gives(tmp_path, caplog):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    key_file = read_nvinfer_config(_write(tmp_path))
    path = tmp_path / "config_infer_primary_seg.yml"
    path.write_text(YAML_CONFIG)
    assert looks_like_nvinfer_config(path)
    cfg = read_nvinfer_config(path)
    assert (cfg.onnx, cfg.task, cfg.names, cfg.input, cfg.size, cfg.layout, cfg.problems) == \
        (key_file.onnx, key_file.task, key_file.names, key_file.input, key_file.size, key_file.layout, ())
    # lenient: a YAML list and true/false read the same, and are named (DeepStream's own parser would refuse them)
    path.write_text(YAML_CONFIG.replace("127.5;127.5;127.5", "[127.5, 127.5, 127.5]")
                    .replace("aspect-ratio: 1", "aspect-ratio: true").replace("padding: 0", "padding: false"))
    lenient = read_nvinfer_config(path)
    assert lenient.input == key_file.input and len(lenient.problems) == 1
    assert "offsets: [127.5, 127.5, 127.5]" in lenient.problems[0] and "nvinfer itself would refuse" in lenient.problems[0]
    # a byte-order mark, and the flow style, are YAML too
    path.write_text("\ufeff" + YAML_CONFIG)
    assert looks_like_nvinfer_config(path) and read_nvinfer_config(path).input == key_file.input
    path.write_text("property: {onnx-file: seg.onnx, network-type: 2, model-color-format: 1}\n")
    assert looks_like_nvinfer_config(path) and read_nvinfer_config(path).input["color"] == "BGR"
    # the .yaml suffix too, imported by the CLI
    (tmp_path / "seg.yaml").write_text(YAML_CONFIG)
    assert main(["import", str(tmp_path / "seg.yaml"), "--out", str(tmp_path / "y.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "y.edgeseg").manifest
    assert m.classes == ("red", "green", "blue") and m.input.color == "BGR" and m.input.anchor == "top-left"
    # a YAML file that is not an nvinfer configuration (PaddleSeg's deploy.yaml) is not taken for one
    (tmp_path / "deploy.yaml").write_text("Deploy:\n  model: model.pdmodel\n")
    assert not looks_like_nvinfer_config(tmp_path / "deploy.yaml")


@pytest.mark.parametrize("text, match", [
    ("Deploy:\n  model: m.pdmodel\n", "no property: mapping"),
    ("property: [1, 2]\n", "no property: mapping"),
    ("property:\n  onnx-file: seg.onnx\n  network-type: 2\n offsets: 1\n", "not a DeepStream nvinfer configuration"),
    ("property:\n  onnx-file: seg.onnx\n  network-type: 2\n  offsets: [1, 2]\n", "gives 2 values, not 3"),
    ("property:\n  model-engine-file: a.engine\n  network-type: 2\n", "names no onnx-file"),
    ("property:\n  onnx-file: seg.onnx\n  network-type: 0\n", "is a detector"),
])
def test_bad_yaml_configs_are_named(tmp_path, text, match):
    path = tmp_path / "c.yml"
    path.write_text(text)
    (tmp_path / "seg.onnx").write_bytes(b"")  # named by the configs (only its existence is checked here)
    with pytest.raises(InputError, match=match):
        read_nvinfer_config(path)


@pytest.mark.parametrize("text, match", [
    ("[property]\nmodel-engine-file=a.engine\nnetwork-type=2\n", r"names no onnx-file \(only model-engine-file\)"),
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=0\n", "is a detector, not a segmentation model"),
    ("[property]\nonnx-file=seg.onnx\n", "network-type=0 is a detector"),  # nvinfer's default type
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\nmodel-color-format=2\n", "grey"),
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\noffsets=1;2\n", "gives 2 values, not 3"),
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\nnet-scale-factor=abc\n", "is not a number"),
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=two\n", "is not an integer"),
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\nmaintain-aspect-ratio=yes\n", "neither true nor false"),
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\ninfer-dims=3;x;64\n", "is not C;H;W"),
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\ninfer-dims=3;inf;64\n", "is not C;H;W"),  # OverflowError
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\noffsets=nan;1;2\n", "are not pixel means"),  # blamed on --mean
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\noffsets=1e300;1;2\n", "are not pixel means"),  # on the model
    ("[property]\nonnx-file=seg.onnx\nnetwork-type=2\nlabelfile-path=missing.txt\n", "cannot read the label file"),
    ("[application]\nenable-perf-measurement=1\n", "no \\[property\\] group"),
    ("[property]\nonnx-file=missing.onnx\nnetwork-type=2\n", "onnx-file=missing.onnx names .* which does not exist"),
])
def test_bad_configs_are_named(tmp_path, text, match):
    path = tmp_path / "c.txt"
    path.write_text(text)
    if "missing.onnx" not in text:
        (tmp_path / "seg.onnx").write_bytes(b"")  # named by the configs (only its existence is checked here)
    with pytest.raises(InputError, match=match):
        read_nvinfer_config(path)


def test_a_config_and_labels_saved_with_a_bom_and_a_broken_yml_are_read_as_configs(tmp_path):
    """Session 50's fuzzing: a config saved with a byte-order mark (Windows' Notepad) was taken for an ONNX file
    ("not a valid ONNX file ... re-export it"), a .yml that is not YAML too, and a labels file's BOM became part of
    the first class name."""
    path = _write(tmp_path, labels=None)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (tmp_path / "labels.txt").write_bytes(b"\xef\xbb\xbfred\ngreen\nblue\n")
    assert looks_like_nvinfer_config(path)
    assert read_nvinfer_config(path).names == ("red", "green", "blue")
    (tmp_path / "bad.yml").write_text("property:\n  onnx-file: [seg.onnx\n")
    assert looks_like_nvinfer_config(tmp_path / "bad.yml")
    with pytest.raises(InputError, match="bad.yml"):
        read_nvinfer_config(tmp_path / "bad.yml")


def test_import_from_the_config_labels_pixels_as_nvinfer_feeds_them(tmp_path, caplog, capsys):
    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    path = _write(tmp_path)
    assert main(["import", str(path), "--out", str(tmp_path / "s.edgeseg")]) == 0
    assert "imports" in caplog.text and "named by labels.txt (3 classes)" in caplog.text
    m = Bundle.open(tmp_path / "s.edgeseg").manifest
    assert m.classes == ("red", "green", "blue") and m.task == "semantic"
    i = m.input
    assert (i.size, i.color, i.std, i.resize, i.anchor, i.pad_value) == (ImageShape(48, 64), "BGR", (1 / 0.007843,) * 3,
                                                                         "letterbox", "top-left", 0)
    # a 24x64 frame fills the top half of the 48x64 input (black below); the model's classes over the frame are
    # the largest of 0.007843 * (x - 127.5) per BGR channel
    rgb = np.random.default_rng(8).integers(0, 255, (24, 64, 3), np.uint8)
    x, meta = i.preprocess(rgb)
    bgr = rgb[..., ::-1].astype(np.float32)
    np.testing.assert_allclose(x[0, :, :24], (0.007843 * (bgr - 127.5)).transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_allclose(x[0, :, 24:], 0.007843 * (0 - 127.5), atol=1e-5)  # black, normalised
    labels = edgeseg.load(tmp_path / "s.edgeseg", backend="onnxruntime")(rgb).labels
    assert np.array_equal(labels, np.argmax(bgr, axis=2))  # the same scale and offset on every channel
    # offsets differ per channel (in the model's BGR order), and a 12x32 frame is scaled 2x into the top half
    (tmp_path / "config_infer_primary_seg.txt").write_text(CONFIG.replace("offsets=127.5;127.5;127.5",
                                                                          "offsets=10;120;240"))
    assert main(["import", str(path), "--out", str(tmp_path / "o.edgeseg"), "--overwrite"]) == 0
    i = Bundle.open(tmp_path / "o.edgeseg").manifest.input
    small = rgb[::2, ::2].copy()
    x, meta = i.preprocess(small)
    assert (meta.content, meta.pad_top, meta.pad_left) == (ImageShape(24, 64), 0, 0)
    import cv2

    up = cv2.resize(small, (64, 24), interpolation=cv2.INTER_LINEAR)[..., ::-1].astype(np.float32)  # BGR
    np.testing.assert_allclose(x[0, :, :24], (0.007843 * (up - [10, 120, 240])).transpose(2, 0, 1), atol=1e-4)
    # the command line still wins, field by field; --task against network-type is named
    caplog.clear()
    assert main(["import", str(path), "--names", "a,b,c", "--anchor", "center", "--out", str(tmp_path / "c.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "c.edgeseg").manifest
    assert m.classes == ("a", "b", "c") and m.input.anchor == "center" and m.input.color == "BGR"
    main(["import", str(path), "--task", "instance", "--out", str(tmp_path / "i.edgeseg")])
    assert "network-type says semantic, imported as --task instance" in caplog.text
    # with --names the label file is not needed
    (tmp_path / "labels.txt").unlink()
    assert main(["import", str(path), "--names", "a,b,c", "--out", str(tmp_path / "n.edgeseg")]) == 0
    # an engine-only config: the error names what to give
    path.write_text("[property]\nmodel-engine-file=seg.engine\nnetwork-type=2\n")
    capsys.readouterr()
    assert main(["import", str(path), "--out", str(tmp_path / "e.edgeseg")]) != 0
    assert "names no onnx-file (only model-engine-file)" in capsys.readouterr().err
    assert not (tmp_path / "e.edgeseg").exists()
