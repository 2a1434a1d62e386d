"""``edgeseg import --task instance`` on a real prototype-mask model made elsewhere (Ultralytics
YOLOv8n-seg, COCO, INT8 ConvInteger, opset 20) and on hand-made graphs of each layout variant."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import ExportError, InputError
from edgeseg.export.import_instance import anchor_count, detect_prototype_layout, head_strides
from edgeseg.structures import ImageShape
from instance_ref import assert_same_detections


def test_layout_detection_from_shapes():
    net = ImageShape(320, 320)
    assert anchor_count(net) == 2100
    # Ultralytics v8: [1, 4 + 80 + 32, 2100]; transposed exports too
    assert detect_prototype_layout({"o0": (1, 116, 2100), "o1": (1, 32, 80, 80)}, None, net, "m") == \
        ("o0", "o1", "yolov8", 80, 32)
    assert detect_prototype_layout({"o0": (1, 2100, 116), "o1": (1, 32, 80, 80)}, 80, net, "m")[2:] == ("yolov8", 80, 32)
    # YOLOv5-seg: objectness after the box, 3 anchors per cell
    assert detect_prototype_layout({"o0": (1, 6300, 117), "o1": (1, 32, 80, 80)}, 80, net, "m")[2:] == ("yolov5", 80, 32)
    # declared classes that do not fit: the error names every output and shape
    with pytest.raises(ExportError, match=r"o0 \[1, 116, 2100\], o1 \[1, 32, 80, 80\]"):
        detect_prototype_layout({"o0": (1, 116, 2100), "o1": (1, 32, 80, 80)}, 20, net, "m")
    with pytest.raises(ExportError, match="one rank-3 and one rank-4"):
        detect_prototype_layout({"o0": (1, 116, 2100)}, None, net, "m")


@pytest.mark.data
def test_yolov8_seg_import_matches_an_independent_decode(data_root, tmp_path, capsys):
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.data.io import read_image
    from edgeseg.export.importer import import_onnx
    from instance_ref import yolo_seg_reference

    src = data_root / "models" / "yolov8n_seg_int8_320.onnx"
    bundle = import_onnx(src, tmp_path / "yolo.edgeseg", task="instance", classes=None, input_spec=None)
    m = bundle.manifest
    assert m.task == "instance" and m.num_classes == 80 and m.classes[:3] == ("person", "bicycle", "car")
    assert (m.input.resize, m.input.pad_value, m.input.scale, m.input.mean, m.input.size) == \
        ("letterbox", 114, 1 / 255, (0.0, 0.0, 0.0), ImageShape(320, 320))
    opts = m.decoder_options
    assert (opts.layout, opts.prototype_format, opts.num_masks) == ("prototype", "yolov8", 32)
    with pytest.raises(InputError, match="metadata names 80 classes, but 20 were given"):
        import_onnx(src, tmp_path / "bad", task="instance", classes=20, input_spec=None)
    from edgeseg.cli import main

    # the command line: an Ultralytics segment model asked for as panoptic is named for what it is
    capsys.readouterr()
    assert main(["import", str(src), "--task", "panoptic", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "is an Ultralytics segment model, not a panoptic one" in err and "edgeseg fuse SEMANTIC INSTANCE" in err
    assert main(["import", str(src), "--task", "instance", "--classes", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--classes 0: a model has one class or more" in capsys.readouterr().err

    session = make_session(str(src))
    images = sorted((data_root / "cityscapes_panoptic" / "val").glob("*.jpg"))[:4]
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32")
    total = 0
    with predictor:
        for path in images:
            rgb = read_image(path)
            # same algorithm as Ultralytics' retina masks; the reference resizes the cut prototype plane
            # with torch, ours samples the same bilinear map per instance with OpenCV
            total += assert_same_detections(predictor(rgb), yolo_seg_reference(session, rgb, retina=True), path.name, 0.97)
    assert total >= 5  # the frames have cars and people


def test_end_to_end_layout_detection():
    """YOLO26-seg's default export and nms=True exports: [1, K, 6 + nm] final detections."""
    net = ImageShape(320, 320)
    e2e = {"output0": (1, 300, 38), "output1": (1, 32, 80, 80)}
    assert detect_prototype_layout(e2e, 80, net, "m") == ("output0", "output1", "end2end", 80, 32)
    assert detect_prototype_layout(e2e, 80, net, "m", end2end=True)[2] == "end2end"
    assert detect_prototype_layout({"o": (1, 38, 100), "p": (1, 32, 80, 80)}, 3, net, "m")[2:] == ("end2end", 3, 32)
    # no names: the class count cannot come from the shapes
    with pytest.raises(ExportError, match="class count is unknown") as e:
        detect_prototype_layout(e2e, None, net, "m")
    assert "--classes" in e.value.fix and "output0 [1, 300, 38]" in str(e.value)
    # a two-class raw v8 head has 4 + 2 + 32 = 38 features too: its anchor count tells it apart
    assert detect_prototype_layout({"o": (1, 38, 2100), "p": (1, 32, 80, 80)}, None, net, "m")[2:] == ("yolov8", 2, 32)
    # metadata that says end-to-end over a raw head: the shapes win
    assert detect_prototype_layout({"o": (1, 116, 2100), "p": (1, 32, 80, 80)}, 80, net, "m", end2end=True)[2] == "yolov8"


def test_end_to_end_decode_keeps_the_graph_detections():
    """Rows above the threshold, best first, capped; no NMS (two overlapping boxes both stay); class
    ids outside the model's classes are a layout error naming the outputs."""
    from edgeseg.bundle import Manifest, OutputSpec
    from edgeseg.decode.instance import decode_instance
    from edgeseg.errors import UnsupportedError
    from edgeseg.structures import InputSpec, InstanceOptions

    spec = InputSpec(size=ImageShape(64, 64), resize="letterbox", pad_value=114, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), scale=1 / 255)
    opts = InstanceOptions(layout="prototype", prototype_format="end2end", num_masks=2, max_detections=2)
    m = Manifest(name="e2e", task="instance", classes=("a", "b", "c"), input=spec,
                 outputs=(OutputSpec("detections", "detections"), OutputSpec("prototypes", "prototypes")),
                 decoder=opts.to_dict())
    det = np.zeros((1, 5, 8), np.float32)
    det[0, 0] = [8, 8, 40, 40, 0.9, 2, 1, 0]
    det[0, 1] = [10, 10, 42, 42, 0.8, 2, 1, 0]  # overlaps the first (IoU 0.78): kept, no NMS
    det[0, 2] = [0, 0, 16, 16, 0.7, 0, 1, 0]    # beyond max_detections = 2
    det[0, 3] = [0, 0, 16, 16, 0.1, 1, 1, 0]    # under the score threshold
    protos = np.zeros((1, 2, 16, 16), np.float32)
    protos[0, 0] = 5.0  # mask logit 5 everywhere: the mask is the box
    _, meta = spec.preprocess(np.zeros((64, 64, 3), np.uint8))
    r = decode_instance({"detections": det, "prototypes": protos}, meta, m)
    assert r.classes.tolist() == [2, 2] and np.allclose(r.scores, [0.9, 0.8])
    np.testing.assert_allclose(r.boxes, [[8, 8, 40, 40], [10, 10, 42, 42]])
    assert r.masks[0].sum() == 32 * 32 and r.masks[0][8:40, 8:40].all()
    det[0, 1, 5] = 7  # not one of the 3 classes
    with pytest.raises(UnsupportedError, match=r"class id 7 is not one of the model's 3 classes.*"):
        decode_instance({"detections": det, "prototypes": protos}, meta, m)


@pytest.mark.data
def test_end_to_end_seg_import_matches_an_independent_decode(data_root, tmp_path):
    """The shared YOLOv8n-seg rewritten into YOLO26's end-to-end output ([1, 300, 38] + prototypes,
    end2end=True in its metadata): imported without options, decoded as Ultralytics' predictor
    decodes such a model (confidence filter only)."""
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.data.io import read_image
    from edgeseg.export.importer import import_onnx
    from instance_ref import make_end2end, yolo_seg_reference

    src = tmp_path / "yolo_e2e.onnx"
    make_end2end(data_root / "models" / "yolov8n_seg_int8_320.onnx", src)
    bundle = import_onnx(src, tmp_path / "e2e.edgeseg", task="instance", classes=None, input_spec=None)
    m = bundle.manifest
    assert m.num_classes == 80 and m.decoder_options.prototype_format == "end2end"
    assert bundle.report["import"]["format"] == "end2end"
    session = make_session(str(src))
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32")
    total = 0
    with predictor:
        for path in sorted((data_root / "cityscapes_panoptic" / "val").glob("*.jpg"))[:4]:
            rgb = read_image(path)
            ref = yolo_seg_reference(session, rgb, retina=True, end2end=True, max_det=100)
            total += assert_same_detections(predictor(rgb), ref, path.name, 0.97)
    assert total >= 5


class _TinyYolact:
    """A YOLACT-shaped network (random weights) exported to ONNX with YOLACT's outputs: ``conf``
    (softmax, background first), ``boxes`` (relative x1, y1, x2, y2) or ``loc`` + ``priors``,
    ``mask`` (tanh coefficients) and ``proto`` (channels last)."""

    @staticmethod
    def export(path, priors: bool, size=(96, 128), nc: int = 3, nm: int = 8, half: bool = False) -> None:
        """``half``: as Ultralytics' ``half=True`` exports (``model.half()``, a float16 input)."""
        import torch
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU())
                self.down = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
                self.proto = nn.Conv2d(16, nm, 3, 1, 1)
                self.conf = nn.Conv2d(16, nc + 1, 1)
                self.box = nn.Conv2d(16, 4, 1)
                self.coef = nn.Conv2d(16, nm, 1)
                h, w = size[0] // 8, size[1] // 8
                ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
                self.register_buffer("cells", torch.stack([xs, ys], -1).reshape(1, -1, 2))

            def forward(self, x):
                f4 = self.stem(x)
                f8 = self.down(f4)
                flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
                conf = torch.softmax(flat(self.conf(f8)) * 3.0, -1)
                raw = flat(self.box(f8))
                coef = torch.tanh(flat(self.coef(f8)))
                proto = torch.relu(self.proto(f4)).permute(0, 2, 3, 1)
                if priors:
                    p = torch.cat([self.cells, torch.full_like(self.cells, 0.3)], -1)[0]
                    return raw, conf, coef, p, proto
                c = self.cells + 0.05 * torch.tanh(raw[..., :2])
                half = 0.05 + 0.2 * torch.sigmoid(raw[..., 2:])
                return conf, torch.cat([c - half, c + half], -1), coef, proto

        torch.manual_seed(3)
        net = Net().eval()
        dtype = torch.float16 if half else torch.float32
        names = ["loc", "conf", "mask", "priors", "proto"] if priors else ["conf", "boxes", "mask", "proto"]
        torch.onnx.export(net.to(dtype), torch.zeros(1, 3, *size, dtype=dtype), str(path), input_names=["input.1"],
                          output_names=names, opset_version=17, dynamo=False)


@pytest.mark.parametrize("priors", [False, True], ids=["decoded-boxes", "prior-offsets"])
def test_yolact_import_matches_an_independent_decode(tmp_path, priors):
    """YOLACT's own output layout (as Open Model Zoo's and the ONNX-branch conversions give it) is
    recognised, rewritten into the prototype layout inside the graph, given YOLACT's pre-processing,
    and decodes like YOLACT's post-processing written independently in torch."""
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.export.importer import import_onnx
    from instance_ref import yolact_reference

    src = tmp_path / "yolact.onnx"
    _TinyYolact.export(src, priors)
    bundle = import_onnx(src, tmp_path / "y.edgeseg", task="instance", classes=None, input_spec=None)
    m = bundle.manifest
    assert m.num_classes == 3 and m.decoder_options.prototype_format == "yolov8" and m.decoder_options.num_masks == 8
    assert (m.input.resize, m.input.scale, m.input.mean) == ("resize", 1.0, (123.68, 116.78, 103.94))
    assert bundle.report["import"]["source_layout"] == "yolact"
    with pytest.raises(InputError, match="3 object classes"):
        import_onnx(src, tmp_path / "bad", task="instance", classes=4, input_spec=None)
    session = make_session(str(src))
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32").set_options(
        score_threshold=0.25, iou_threshold=0.5, max_detections=100)
    total = 0
    with predictor:
        for seed in range(3):
            rgb = SceneGenerator(ImageShape(150, 200), seed=seed).render(0).image  # another size than the network's
            ref = yolact_reference(session, rgb, priors=priors)
            total += assert_same_detections(predictor(rgb), ref, f"scene {seed}", 0.95, min_mask_area=50)
    assert total >= 3


@pytest.mark.parametrize("priors", [False, True], ids=["decoded-boxes", "prior-offsets"])
def test_half_precision_yolact_detects_as_its_float32_export(tmp_path, priors):
    """float16 YOLACT exports (a ``.half()`` model; onnxconverter-common's with float32 edges, which leaves the
    priors initializer float16 under a float32 output): the appended box arithmetic ran on float16 tensors
    with float32 constants and ONNX Runtime refused the graph. Each now imports and detects as the float32
    export does (which the test above checks against YOLACT's post-processing)."""
    import onnx

    import edgeseg
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.export.importer import import_onnx

    _TinyYolact.export(tmp_path / "f32.onnx", priors)
    _TinyYolact.export(tmp_path / "f16.onnx", priors, half=True)
    variants = ["f16"]
    float16 = pytest.importorskip("onnxconverter_common.float16")
    onnx.save(float16.convert_float_to_float16(onnx.load(str(tmp_path / "f32.onnx")), keep_io_types=True),
              str(tmp_path / "f16io32.onnx"))
    variants.append("f16io32")
    opts = dict(score_threshold=0.25, iou_threshold=0.5, max_detections=100)
    ref = edgeseg.load(import_onnx(tmp_path / "f32.onnx", tmp_path / "f32.edgeseg", task="instance", classes=None,
                                   input_spec=None), backend="onnxruntime", precision="fp32").set_options(**opts)
    scenes = [SceneGenerator(ImageShape(150, 200), seed=seed).render(0).image for seed in range(2)]
    expected = [ref(rgb) for rgb in scenes]
    assert sum(len(e) for e in expected) >= 3
    for v in variants:
        bundle = import_onnx(tmp_path / f"{v}.onnx", tmp_path / f"{v}.edgeseg", task="instance", classes=None,
                             input_spec=None)
        assert bundle.manifest.input.dtype == ("float16" if v == "f16" else "float32")
        p = edgeseg.load(bundle, backend="onnxruntime", precision="fp32").set_options(**opts)
        for rgb, want in zip(scenes, expected):
            got = p(rgb)
            assert len(got) == len(want) and sorted(got.classes) == sorted(want.classes), v
            np.testing.assert_allclose(got.scores, want.scores, atol=2e-3)
            # each detection matches one of the same class and score (float16 ties may swap equal scores)
            for k in range(len(got)):
                same = (want.classes == got.classes[k]) & (np.abs(want.scores - got.scores[k]) <= 2e-3)
                iou = (want.masks[same] & got.masks[k]).sum((1, 2)) / np.maximum((want.masks[same] | got.masks[k]).sum((1, 2)), 1)
                assert iou.max() > 0.95, (v, k)


def test_yolact_layout_detection_from_shapes_and_names():
    from edgeseg.export.import_yolact import detect_yolact_layout

    def fail(why):
        return ExportError(why)

    # Open Model Zoo's yolact-resnet50-fpn (COCO, 550x550)
    omz = {"conf": (1, 19248, 81), "boxes": (1, 19248, 4), "mask": (1, 19248, 32), "proto": (1, 138, 138, 32)}
    r = detect_yolact_layout(omz, fail)
    assert (r.conf, r.boxes, r.coefficients, r.prototypes, r.priors, r.nc, r.nm, r.channels_last) == \
        ("conf", "boxes", "mask", "proto", None, 80, 32, True)
    # the same with anonymous names: the shapes alone decide (81 classes vs 4 box values vs 32 coefficients)
    anon = {"o1": (1, 19248, 81), "o2": (1, 19248, 4), "o3": (1, 19248, 32), "o4": (1, 32, 138, 138), "o5": (19248, 4)}
    r = detect_yolact_layout(anon, fail)
    assert (r.conf, r.boxes, r.coefficients, r.priors, r.nc, r.channels_last) == ("o1", "o2", "o3", "o5", 80, False)
    # three object classes: conf is [1, N, 4] like the boxes; only names tell them apart
    three = {"a": (1, 100, 4), "b": (1, 100, 4), "c": (1, 100, 8), "p": (1, 16, 16, 8)}
    with pytest.raises(ExportError, match="ambiguous"):
        detect_yolact_layout(three, fail)
    named = {"conf": (1, 100, 4), "boxes": (1, 100, 4), "mask": (1, 100, 8), "proto": (1, 16, 16, 8)}
    assert detect_yolact_layout(named, fail).nc == 3
    # not YOLACT: a two-output Ultralytics head is left to the prototype detection
    assert detect_yolact_layout({"o0": (1, 116, 2100), "o1": (1, 32, 80, 80)}, fail) is None
    with pytest.raises(ExportError, match="same N"):
        detect_yolact_layout({"conf": (1, 10, 81), "boxes": (1, 11, 4), "mask": (1, 10, 32), "proto": (1, 8, 8, 32)}, fail)


def test_wrong_class_count_says_how_many_the_outputs_fit(tmp_path, capsys):
    """A metadata-less YOLOv8-seg export with a names file of the wrong length: the error says the
    outputs fit 80 classes (before the audit it named only the split it could not make)."""
    net = ImageShape(320, 320)
    with pytest.raises(ExportError, match=r"box \+ 3 classes \+ 32 coefficients \(they fit 80 classes"):
        detect_prototype_layout({"o0": (1, 116, 2100), "o1": (1, 32, 80, 80)}, 3, net, "m")
    with pytest.raises(ExportError, match=r"they fit 80 classes"):  # transposed, YOLOv5's 3 anchors a cell
        detect_prototype_layout({"o0": (1, 6300, 117), "o1": (1, 32, 80, 80)}, 20, net, "m")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # a single [1, 10] output (no prototype layout at all): a clear error from the command, not a traceback
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["r"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["r", "w"], ["out"])], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 10], [1.0] * 30)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    from edgeseg.cli import main

    rc = main(["import", str(tmp_path / "tiny.onnx"), "--task", "instance", "--classes", "3", "--out",
               str(tmp_path / "t.edgeseg")])
    err = capsys.readouterr().err
    assert rc == 2 and "out [1, 10]" in err and "need exactly one rank-3 and one rank-4 output" in err and "fix:" in err
    assert not (tmp_path / "t.edgeseg").exists()


def test_names_option_names_the_classes_of_a_model_without_metadata(tmp_path, capsys):
    """Issue 11's ``--names``: before, only ``--classes FILE`` took names ("unrecognized arguments: --names").
    A comma-separated list or a file; given with --classes it is refused."""
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    src = tmp_path / "yolact.onnx"
    _TinyYolact.export(src, False)
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    for names, out in (("car,person,bicycle", "a.edgeseg"), (str(tmp_path / "names.txt"), "b.edgeseg")):
        assert main(["import", str(src), "--task", "instance", "--names", names, "--out", str(tmp_path / out)]) == 0
    assert Bundle.open(tmp_path / "a.edgeseg").manifest.classes == ("car", "person", "bicycle")
    assert Bundle.open(tmp_path / "b.edgeseg").manifest.classes == ("cat", "dog", "bird")
    capsys.readouterr()
    assert main(["import", str(src), "--task", "instance", "--names", "car,,bike", "--out", str(tmp_path / "c")]) == 2
    assert "an empty name" in capsys.readouterr().err
    assert main(["import", str(src), "--task", "instance", "--names", "a,b,c", "--classes", "3",
                 "--out", str(tmp_path / "d")]) == 2
    assert "give the classes once" in capsys.readouterr().err
    # one name is a list of one (it was read as a missing file); a missing names file is still named
    from edgeseg.cli.import_ import _names

    assert _names("person", list_only=True) == (("person",), None) and _names("3", list_only=True)[0] == ("3",)
    assert main(["import", str(src), "--task", "instance", "--names", "labels.txt", "--out", str(tmp_path / "e")]) == 2
    assert "class file labels.txt not found" in capsys.readouterr().err


def test_metadata_stride_gives_the_head_strides_of_p6_models():
    """Ultralytics' ``stride`` metadata (64 for the P6 seg variants) was copied into the provenance but never
    used: the anchor count of a P6 head (8,500 at 640x640) matched no stride set, and without names the
    YOLOv8/YOLOv5 split of its features was ambiguous. Now the strides come from it."""
    assert head_strides({"stride": "64"}) == (8, 16, 32, 64) and head_strides({"stride": "32"}) == (8, 16, 32)
    assert head_strides({}) == head_strides({"stride": "abc"}) == head_strides({"stride": "48"}) == (8, 16, 32)
    shapes, net = {"o0": (1, 116, 8500), "o1": (1, 32, 160, 160)}, ImageShape(640, 640)
    with pytest.raises(ExportError, match="ambiguous"):
        detect_prototype_layout(shapes, None, net, "m")
    assert detect_prototype_layout(shapes, None, net, "m", strides=head_strides({"stride": "64"})) == \
        ("o0", "o1", "yolov8", 80, 32)


def test_a_class_count_one_off_is_refused_not_read_as_another_layout():
    """Session 50's fuzzing: 79 names for an 80-class YOLOv8 head ([1, 116, 2100] at 320x320) split its features as a
    YOLOv5 head's (116 = 5 + 79 + 32) although the anchor count is not YOLOv5's: imported, then 0 detections."""
    shapes, net = {"o0": (1, 116, 2100), "o1": (1, 32, 80, 80)}, ImageShape(320, 320)
    assert detect_prototype_layout(shapes, 80, net, "m") == ("o0", "o1", "yolov8", 80, 32)
    with pytest.raises(ExportError, match="79 classes split the features only into a layout whose anchor count is not "
                                          "the head's; the head fits 80 classes"):
        detect_prototype_layout(shapes, 79, net, "m")


def test_metadata_values_of_the_wrong_kind_read_as_absent():
    """Session 50's fuzzing: `names` with mixed keys, `imgsz` of [None, None] or [0, 0], `stride` inf ended in
    TypeError/ValueError/OverflowError tracebacks; they now read as absent (the model's own shapes decide)."""
    from edgeseg.export.import_instance import ultralytics_imgsz, ultralytics_names

    assert ultralytics_names({"names": "{0: 'a', 'x': 'b'}"}) is None
    assert ultralytics_names({"names": "{1: 'b', 0: 'a'}"}) == ("a", "b")
    assert ultralytics_names({"names": "{'10': 'k', '2': 'c', '0': 'a'}"}) == ("a", "c", "k")  # string keys: by number
    for text in ("[None, None]", "[0, 0]", "['a', 'b']", "[1e9, 2]", "-3", "[" * 200 + "]" * 200):
        assert ultralytics_imgsz({"imgsz": text}) is None, text
    assert ultralytics_imgsz({"imgsz": "[320, 640]"}) == ImageShape(320, 640)
    assert ultralytics_imgsz({"imgsz": "640"}) == ImageShape(640, 640)
    assert head_strides({"stride": "inf"}) == head_strides({"stride": "1e400"}) == (8, 16, 32)


def test_single_field_overrides_keep_the_recognised_conventions(tmp_path, caplog):
    """Before session 39 an instance import given any of --size/--mean/... started from Ultralytics'
    conventions: a YOLACT model imported with --size was fed letterboxed /255 pixels. Each option now
    replaces its own field of the exporter's conventions, and the warning shows what the bundle got."""
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    src = tmp_path / "yolact.onnx"
    _TinyYolact.export(src, False)
    assert main(["import", str(src), "--task", "instance", "--size", "128x96", "--color", "BGR",
                 "--out", str(tmp_path / "y.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "y.edgeseg").manifest.input
    assert (i.resize, i.scale, i.mean, i.std, i.color) == ("resize", 1.0, (123.68, 116.78, 103.94),
                                                           (58.40, 57.12, 57.38), "BGR")
    assert "resize, BGR, mean 123.68,116.78,103.94" in caplog.text  # the effective values, BGR included
    # --preprocess names another convention; a field given on top still wins
    assert main(["import", str(src), "--task", "instance", "--preprocess", "ultralytics", "--pad-value", "0",
                 "--out", str(tmp_path / "u.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "u.edgeseg").manifest.input
    assert (i.resize, i.pad_value, i.scale, i.mean) == ("letterbox", 0, 1 / 255, (0.0, 0.0, 0.0))
    # every deciding field given: nothing is assumed, nothing to warn about
    caplog.clear()
    assert main(["import", str(src), "--task", "instance", "--resize", "resize", "--mean", "0,0,0", "--std", "1,1,1",
                 "--scale", "1", "--out", str(tmp_path / "g.edgeseg")]) == 0
    assert "assuming" not in caplog.text
    # the Python API: a whole input_spec excludes the single-field forms
    from edgeseg.export.importer import import_onnx
    from edgeseg.structures import InputSpec

    with pytest.raises(InputError, match="input_spec is the whole pre-processing"):
        import_onnx(src, tmp_path / "x.edgeseg", task="instance", classes=None,
                    input_spec=InputSpec(size=ImageShape(96, 128)), preprocess="yolact")


def test_query_options_are_refused_for_other_instance_models(tmp_path, capsys):
    """--things, --query-convention and --score-threshold at import are for MaskFormer/Mask2Former exports
    (tests/export/test_import_query.py); a YOLACT's import names its outputs instead of ignoring them."""
    from edgeseg.cli import main

    src = tmp_path / "yolact.onnx"
    _TinyYolact.export(src, False)
    for extra in (["--things", "car"], ["--score-threshold", "0.4"], ["--query-convention", "maskformer"]):
        assert main(["import", str(src), "--task", "instance", "--names", "car,person,bicycle", *extra,
                     "--out", str(tmp_path / "y.edgeseg")]) == 2
        err = capsys.readouterr().err
        assert "apply to mask-classification models" in err and "this one's outputs are" in err
    assert not (tmp_path / "y.edgeseg").exists()


def test_nan_outputs_are_refused_and_a_constant_head_is_said(tmp_path, caplog):
    """Session 50's fuzzing: an instance export whose detections or prototypes are NaN imported and then found nothing
    (or 8 empty masks), and one whose detections are all zero imported without a word."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.export import import_onnx

    def model(name, scale):
        # detections [1, 4 + 2 + 4, 2100] and prototypes [1, 4, 80, 80] at 320x320, from the image's mean
        g = helper.make_graph(
            [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "s"], ["ms"]),
             helper.make_node("Expand", ["ms", "dshape"], ["detections"]),
             helper.make_node("Expand", ["ms", "pshape"], ["prototypes"])], "y",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 320])],
            [helper.make_tensor_value_info("detections", TensorProto.FLOAT, [1, 10, 2100]),
             helper.make_tensor_value_info("prototypes", TensorProto.FLOAT, [1, 4, 80, 80])],
            [numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array([1, 10, 2100], np.int64), "dshape"),
             numpy_helper.from_array(np.array([1, 4, 80, 80], np.int64), "pshape")])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / f"{name}.onnx"))
        return tmp_path / f"{name}.onnx"

    with pytest.raises(ExportError, match="hold NaN on a test frame"):
        import_onnx(model("nan", np.nan), tmp_path / "nan.edgeseg", task="instance", classes=2, input_spec=None)
    with caplog.at_level("WARNING"):
        import_onnx(model("zero", 0.0), tmp_path / "zero.edgeseg", task="instance", classes=2, input_spec=None)
    assert "are one constant value on a test frame" in caplog.text
    twice = onnx.load(str(model("twice", 1.0)))  # an output listed twice: ONNX Runtime refused the renamed graph
    twice.graph.output.append(twice.graph.output[1])
    onnx.save(twice, str(tmp_path / "twice.onnx"))
    b = import_onnx(tmp_path / "twice.onnx", tmp_path / "twice.edgeseg", task="instance", classes=2, input_spec=None)
    assert [o.name for o in b.manifest.outputs] == ["detections", "prototypes"]
