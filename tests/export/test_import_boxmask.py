"""``edgeseg import --task instance`` on box-and-mask models made elsewhere: MMDeploy's ``dets/labels/masks``
(per-box 28x28 masks, or whole-input boolean masks) and torchvision's ``boxes/labels/scores/masks`` with a
``[3, H, W]`` input. The graphs are a Mask R-CNN written in each exporter's form (``tests/boxmask_ref.py``);
the bundle's detections must equal an independent decode written from MMDetection's and torchvision's
post-processing, on ONNX Runtime and on OpenVINO."""
from __future__ import annotations

import numpy as np
import pytest

from boxmask_ref import FORMS, export_foreign, reference
from edgeseg.errors import EdgesegError, ExportError, InputError
from edgeseg.export.import_boxmask import detect_boxmask_layout
from edgeseg.structures import ImageShape
from instance_ref import assert_same_detections

NET = (96, 128)


@pytest.fixture(scope="module")
def mask_rcnn():
    import torch

    from edgeseg.models import create_model

    torch.manual_seed(0)
    return create_model("test_mask_rcnn", num_classes=3)


@pytest.fixture(scope="module")
def foreign(mask_rcnn, tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    paths = {}
    for form in FORMS:
        paths[form] = root / f"{form}.onnx"
        export_foreign(mask_rcnn, paths[form], form, NET)
    return paths


def _images():
    rng = np.random.default_rng(7)
    yield "noise 150x200", rng.integers(0, 255, (150, 200, 3), np.uint8)
    yield "noise 64x64", rng.integers(0, 255, (64, 64, 3), np.uint8)  # smaller than the network input
    img = np.zeros((120, 300, 3), np.uint8)  # wide, with two flat blocks
    img[20:90, 30:120] = (200, 40, 40)
    img[50:110, 180:260] = (30, 160, 220)
    yield "blocks 120x300", img


@pytest.mark.parametrize("form", FORMS)
def test_import_matches_an_independent_decode(foreign, form, tmp_path):
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.export.importer import import_onnx

    names = ("__background__", "a", "b", "c") if form == "torchvision" else ("a", "b", "c")
    bundle = import_onnx(foreign[form], tmp_path / "m.edgeseg", task="instance", classes=names, input_spec=None)
    m = bundle.manifest
    assert m.decoder_options.layout == ("dense" if form in ("mmdeploy-full", "torchvision") else "roi")
    assert [o.name for o in m.outputs] == ["boxes", "scores", "classes", "masks"]
    # MMDeploy's static exports stretch (keep_ratio=False); torchvision's and Detectron2's models keep the ratio
    letterbox = form in ("torchvision", "detectron2")
    assert m.input.size == ImageShape(*NET) and m.input.color == ("BGR" if form == "detectron2" else "RGB")
    assert (m.input.resize, m.input.pad_value, m.input.anchor) == (
        ("letterbox" if letterbox else "resize", (124, 116, 104), "top-left"))  # padded as their batching pads
    if form == "torchvision":  # normalised inside torchvision's graph: 0..1 in
        assert (m.input.mean, m.input.std, m.input.scale) == ((0.0,) * 3, (1.0,) * 3, 1 / 255)
        assert m.provenance["original_input"] == "image [3, H, W]"
    elif form == "detectron2":  # normalised inside Detectron2's graph: BGR 0-255 in
        assert (m.input.mean, m.input.std, m.input.scale) == ((0.0,) * 3, (1.0,) * 3, 1.0)
        assert bundle.report["import"]["source_layout"] == "detectron2"
    else:  # MMDetection's data_preprocessor
        assert (m.input.mean, m.input.std, m.input.scale) == ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), 1.0)
        assert m.provenance["original_outputs"]["scores"] == "dets"
    session = make_session(foreign[form].read_bytes())
    total = 0
    for backend in ("onnxruntime", "openvino"):
        predictor = edgeseg.load(bundle.root, backend=backend, precision="fp32")
        for where, rgb in _images():
            ref = reference(session, rgb, form, NET, letterbox=letterbox)
            # OpenVINO's kernels round differently: its scores agree to 1e-5, not bit for bit
            total += assert_same_detections(predictor(rgb), ref, f"{form} {backend} {where}", 0.95, min_mask_area=30)
    assert total > 40  # the untrained model detects on every frame: the comparison is not vacuous


def test_layout_detection_from_outputs():
    net = ImageShape(96, 128)
    f, i = np.float32, np.int64
    mm = {"dets": np.zeros((1, 7, 5), f), "labels": np.zeros((1, 7), i), "masks": np.zeros((1, 7, 28, 28), f)}
    r = detect_boxmask_layout(mm, net, "m")
    assert (r.boxes, r.scores, r.labels, r.masks, r.batched, r.layout) == ("dets", None, "labels", "masks", True, "roi")
    full = {**mm, "masks": np.zeros((1, 7, 96, 128), bool)}
    assert detect_boxmask_layout(full, net, "m").layout == "dense"
    # zero detections (a blank test frame) are still recognised, from the ranks
    empty = {"dets": np.zeros((1, 0, 5), f), "labels": np.zeros((1, 0), np.int32), "masks": np.zeros((1, 0, 28, 28), f)}
    assert detect_boxmask_layout(empty, net, "m").layout == "roi"
    tv = {"boxes": np.zeros((0, 4), f), "labels": np.zeros((0,), i), "scores": np.zeros((0,), f),
          "masks": np.zeros((0, 1, 96, 128), f)}
    r = detect_boxmask_layout(tv, net, "m")
    assert (r.boxes, r.scores, r.batched, r.mask_rank, r.layout) == ("boxes", "scores", False, 4, "dense")
    # Detectron2's traced outputs: unnamed, the image size [2] (int64) after the fields, none detected too
    for k in (5, 0):
        d2 = {"3001": np.zeros((k, 4), f), "3002": np.zeros((k,), i), "3003": np.zeros((k, 1, 28, 28), f),
              "3004": np.zeros((k,), f), "3005": np.array([96, 128], i)}
        r = detect_boxmask_layout(d2, net, "m")
        assert (r.boxes, r.labels, r.masks, r.scores, r.layout) == ("3001", "3002", "3003", "3004", "roi")
    # separate scores beside 4-column boxes, any output names
    anon = {"o1": np.zeros((1, 3, 4), f), "o2": np.zeros((1, 3), f), "o3": np.zeros((1, 3), i), "o4": np.zeros((1, 3, 14, 14), f)}
    r = detect_boxmask_layout(anon, net, "m")
    assert (r.boxes, r.scores, r.labels, r.masks) == ("o1", "o2", "o3", "o4")
    # no integer output: another family (the prototype detection runs)
    assert detect_boxmask_layout({"o0": np.zeros((1, 116, 2100), f), "o1": np.zeros((1, 32, 80, 80), f)}, net, "m") is None


@pytest.mark.parametrize("outs,why", [
    ({"dets": (1, 7, 5, "f"), "labels": (1, 7, "i")}, "no masks"),
    ({"boxes": (1, 7, 4, "f"), "labels": (1, 7, "i"), "masks": (1, 7, 28, 28, "f")}, "no scores"),
    ({"dets": (2, 7, 5, "f"), "labels": (2, 7, "i"), "masks": (2, 7, 28, 28, "f")}, "a batch of 2"),
    ({"dets": (1, 7, 5, "f"), "labels": (1, 7, "i"), "masks": (1, 7, 400, 400, "f")}, "neither cover"),
    ({"dets": (1, 7, 5, "f"), "labels": (1, 7, "i"), "classes": (1, 7, "i"), "masks": (1, 7, 28, 28, "f")},
     "could be the class labels"),
])
def test_misfit_outputs_are_named(outs, why):
    arrays = {k: np.zeros(v[:-1], np.float32 if v[-1] == "f" else np.int64) for k, v in outs.items()}
    with pytest.raises(ExportError, match=why) as e:
        detect_boxmask_layout(arrays, ImageShape(96, 128), "model.onnx")
    for name, v in outs.items():  # every output, its dtype and shape
        assert f"{name} {'float32' if v[-1] == 'f' else 'int64'} {list(v[:-1])}" in str(e.value)


def test_dynamic_torchvision_input_feeds_frames_as_they_are(tmp_path):
    """torchvision's exports with dynamic axes resize inside the graph: the bundle feeds each frame at
    its own size (size rule ``any``) and its outputs are in the frame's pixels. A hand-made graph of that
    form: one detection, the box ``[W/4, H/4, 3W/4, 3H/4]``, the mask the pixels whose red is above 0.5."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgeseg
    from edgeseg.export.importer import import_onnx

    def c(name, v):
        return numpy_helper.from_array(np.asarray(v), name)

    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Gather", ["shape", "hw_idx"], ["hw"]),              # [H, W]
        helper.make_node("Cast", ["hw"], ["hwf"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["hwf", "yx"], ["whwh"]),                  # [W, H, W, H]
        helper.make_node("Mul", ["whwh", "quarters"], ["box"]),
        helper.make_node("Unsqueeze", ["box", "ax0"], ["boxes"]),            # [1, 4]
        helper.make_node("Gather", ["image", "red"], ["r"], axis=0),          # [1, H, W]
        helper.make_node("Greater", ["r", "half"], ["on"]),
        helper.make_node("Cast", ["on"], ["onf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["onf", "ax0"], ["masks"]),            # [1, 1, H, W]
    ]
    graph = helper.make_graph(
        nodes, "tv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "height", "width"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None]),
         helper.make_tensor_value_info("masks", TensorProto.FLOAT, [None, 1, "height", "width"])],
        [c("hw_idx", np.array([1, 2], np.int64)), c("yx", np.array([1, 0, 1, 0], np.int64)),
         c("quarters", np.array([0.25, 0.25, 0.75, 0.75], np.float32)), c("ax0", np.array([0], np.int64)),
         c("red", np.array([0], np.int64)), c("half", np.float32(0.5)),
         c("labels", np.array([2], np.int64)), c("scores", np.array([0.9], np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "tv.onnx"
    onnx.save(model, str(src))
    bundle = import_onnx(src, tmp_path / "tv.edgeseg", task="instance", classes=("__background__", "person", "car"),
                         input_spec=None)
    m = bundle.manifest
    assert m.input.size_rule == "any" and m.decoder_options.layout == "dense"
    p = edgeseg.load(bundle.root, backend="onnxruntime")
    for h, w in ((120, 200), (333, 517)):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[h // 3: h // 2, w // 5: w // 2, 0] = 255
        r = p(rgb)
        assert len(r) == 1 and r.class_names[r.classes[0]] == "car" and r.scores[0] == pytest.approx(0.9)
        np.testing.assert_allclose(r.boxes[0], [w / 4, h / 4, 3 * w / 4, 3 * h / 4], rtol=1e-6)
        assert r.image_shape == ImageShape(h, w) and np.array_equal(r.masks[0], rgb[..., 0] > 127)


def test_cli_import_and_errors(foreign, tmp_path, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    src = foreign["mmdeploy-roi"]
    # no names: box-and-mask exports carry none
    assert main(["import", str(src), "--task", "instance", "--out", str(tmp_path / "a.edgeseg")]) != 0
    err = capsys.readouterr().err
    assert "carries no class names" in err and "--names" in err
    assert not (tmp_path / "a.edgeseg").exists()
    # a single override keeps the rest of MMDetection's conventions
    assert main(["import", str(src), "--task", "instance", "--names", "car,person,bike", "--std", "1,1,1",
                 "--out", str(tmp_path / "b.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "b.edgeseg").manifest
    assert (m.input.mean, m.input.std, m.input.scale, m.input.resize) == ((123.675, 116.28, 103.53), (1.0, 1.0, 1.0),
                                                                          1.0, "resize")
    assert m.classes == ("car", "person", "bike") and m.decoder_options.layout == "roi"
    # a names list that does not match is the user's to know; a size the graph does not take is refused
    assert main(["import", str(src), "--task", "instance", "--names", "a,b,c", "--size", "64x64",
                 "--out", str(tmp_path / "c.edgeseg")]) != 0
    assert "fixed at 128x96" in capsys.readouterr().err


def test_openvino_runs_imports_whose_input_had_another_name(tmp_path):
    """The import renames a graph's input to ``images`` (an Identity keeps the old name inside). OpenVINO
    merges the two names on its compiled port, and the runner took ``get_any_name()``: a model whose input
    was ``data`` was run as taking ``data`` and every frame failed ("missing input(s) ['data']")."""
    import edgeseg
    from edgeseg.export.importer import import_onnx
    from edgeseg.structures import InputSpec
    from handmade_bundles import conv_model

    src = conv_model(tmp_path / "data.onnx", 4, size=ImageShape(32, 48), input_name="data", dynamic=False)
    bundle = import_onnx(src, tmp_path / "d.edgeseg", classes=4, input_spec=InputSpec(size=ImageShape(32, 48)))
    rgb = np.random.default_rng(1).integers(0, 255, (32, 48, 3), np.uint8)
    ov = edgeseg.load(bundle.root, backend="openvino", precision="fp32")
    ort = edgeseg.load(bundle.root, backend="onnxruntime")
    assert np.array_equal(ov(rgb).labels, ort(rgb).labels)
    assert ov.runner.input_specs[0].name == "images" and ov.runner.output_specs[0].name == "logits"
    # the accuracy scorers' OpenVINO session names them the same way
    from edgeseg.quant.openvino import OpenVinoSession

    s = OpenVinoSession(bundle.root / "model.onnx")
    assert [p.name for p in s.get_inputs()] == ["images"] and [p.name for p in s.get_outputs()] == ["logits"]


def test_not_an_instance_model_is_still_named(tmp_path):
    """A semantic model given --task instance: neither family fits, and the error names its output."""
    from edgeseg.export.importer import import_onnx
    from handmade_bundles import conv_model

    src = conv_model(tmp_path / "sem.onnx", 4, size=ImageShape(32, 32), input_name="x", dynamic=False)
    with pytest.raises((ExportError, InputError, EdgesegError), match=r"logits \[1, 4, 32, 32\]"):
        import_onnx(src, tmp_path / "x.edgeseg", task="instance", classes=("a",), input_spec=None)
    assert not (tmp_path / "x.edgeseg").exists()


def test_mmdeploy_custom_ops_get_mmdeploy_advice(tmp_path):
    """MMDeploy's TensorRT exports end in its own TRTBatchedNMS: ONNX Runtime cannot load them, and the
    error says which export to make instead."""
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.export.importer import import_onnx

    graph = helper.make_graph([helper.make_node("TRTBatchedNMS", ["x", "x"], ["dets", "labels"], domain="mmdeploy")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, 100, 5]),
                               helper.make_tensor_value_info("labels", TensorProto.INT32, [1, 100])])
    src = tmp_path / "trt.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("mmdeploy", 1)]),
              str(src))
    with pytest.raises(ExportError, match="mmdeploy::TRTBatchedNMS") as e:
        import_onnx(src, tmp_path / "x.edgeseg", task="instance", classes=("a",), input_spec=None)
    assert "exported for TensorRT" in e.value.fix and "onnxruntime deploy config" in e.value.fix
    # at run time (a bundle whose graph has them, or another path to ONNX Runtime) the session error says the same
    from edgeseg._ort import make_session
    from edgeseg.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="mmdeploy:TRTBatchedNMS") as e:
        make_session(src.read_bytes())
    assert "onnxruntime deploy config" in e.value.fix


def _const_graph(path, outputs: dict[str, np.ndarray], size=(64, 96)) -> None:
    """A graph that takes an image ``[1, 3, h, w]`` and writes ``outputs`` (constants; the image only
    scales them by 1, so the graph has a real input)."""
    import onnx
    from onnx import helper, numpy_helper

    nodes, inits, outs = [helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0)], [], []
    nodes.append(helper.make_node("Mul", ["peak", "zero"], ["nothing"]))
    inits.append(numpy_helper.from_array(np.float32(0), "zero"))
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value, f"{name}_value"))
        if value.dtype.kind == "f":  # value + 0 * max(image), in the output's own type
            nodes.append(helper.make_node("CastLike", ["nothing", f"{name}_value"], [f"{name}_zero"]))
            nodes.append(helper.make_node("Add", [f"{name}_value", f"{name}_zero"], [name]))
        else:
            nodes.append(helper.make_node("Identity", [f"{name}_value"], [name]))
        outs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, *size])],
                              outs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("placeholder", ["whole frame", "zeros"])
def test_solo_exports_placeholder_boxes_and_quarter_masks(tmp_path, placeholder):
    """MMDeploy's SOLO writes ``[0, 0, w, h]`` for every box and SOLOv2 zeros (the masks carry the
    geometry), and their ONNX Runtime configs leave the masks at the 1/4 feature map. Here also fp16
    dets and float class ids: the bundle's boxes are the masks' tight boxes, its masks the 1/4 maps
    upsampled."""
    import edgeseg
    from edgeseg.export.importer import import_onnx

    h, w = 64, 96
    box = [0, 0, w, h] if placeholder == "whole frame" else [0, 0, 0, 0]
    dets = np.array([[box + [0.9], box + [0.6], [0, 0, 0, 0, 0]]], np.float16)  # MMDeploy's zero padding row
    masks = np.zeros((1, 3, h // 4, w // 4), np.float32)
    masks[0, 0, 2:6, 3:9] = 1.0     # image pixels 8..24 x 12..36
    masks[0, 1, 10:14, 15:20] = 1.0  # 40..56 x 60..80
    src = tmp_path / "solo.onnx"
    _const_graph(src, {"dets": dets, "labels": np.array([[1.0, 0.0, 0.0]], np.float32), "masks": masks}, (h, w))
    bundle = import_onnx(src, tmp_path / "s.edgeseg", task="instance", classes=("person", "car"), input_spec=None)
    assert bundle.manifest.decoder_options.layout == "dense"
    r = edgeseg.load(bundle.root, backend="onnxruntime")(np.zeros((h, w, 3), np.uint8))
    assert r.classes.tolist() == [1, 0] and np.allclose(r.scores, [0.9, 0.6], atol=1e-3)
    # a 1/4 map's pixel covers 4x4 image pixels; bilinear upsampling keeps the block's own pixels (the first
    # ones sample 0.625 of it) but its four corners (0.625 * 0.625 < 0.5)
    np.testing.assert_array_equal(r.boxes, [[12, 8, 36, 24], [60, 40, 80, 56]])
    assert r.masks[0].sum() == 16 * 24 - 4 and r.masks[0][9:23, 12:36].all() and not r.masks[0][8, 12]


def test_rtmdet_preprocess_and_torchvision_names(foreign, tmp_path, caplog, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    assert main(["import", str(foreign["mmdeploy-full"]), "--task", "instance", "--names", "a,b,c", "--preprocess",
                 "rtmdet", "--out", str(tmp_path / "r.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "r.edgeseg").manifest.input
    assert (i.color, i.mean, i.std, i.scale, i.resize, i.pad_value) == \
        ("BGR", (103.53, 116.28, 123.675), (57.375, 57.12, 58.395), 1.0, "letterbox", 114)
    # without it, the warning names the preset for RTMDet-Ins (whole-input masks)
    caplog.clear()
    assert main(["import", str(foreign["mmdeploy-full"]), "--task", "instance", "--names", "a,b,c",
                 "--out", str(tmp_path / "m.edgeseg")]) == 0
    assert "--preprocess rtmdet" in caplog.text
    assert main(["import", str(foreign["mmdeploy-full"]), "--preprocess", "rtmdet", "--classes", "3",
                 "--out", str(tmp_path / "x.edgeseg")]) != 0
    assert "--preprocess applies to --task instance" in capsys.readouterr().err
    # torchvision labels count from 1: names without the background are named in a warning
    caplog.clear()
    assert main(["import", str(foreign["torchvision"]), "--task", "instance", "--names", "a,b,c,d",
                 "--out", str(tmp_path / "t.edgeseg")]) == 0
    assert "count labels from 1" in caplog.text and "'a'" in caplog.text


def test_torchvision_input_named_images_and_outputs_read_by_a_subgraph(tmp_path):
    """``images`` is a common input name: the batched input edgeseg adds has that name, so the original
    becomes ``edgeseg_inner_images`` (it was written twice: "Duplicate definition of name (images)").
    torchvision's mask pasting exports as a Loop reading the outer ``boxes``: renaming an output must
    reach the bodies that read it, or they read the batched ``[1, K, 4]`` one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgeseg
    from edgeseg.export.importer import import_onnx

    def c(name, v):
        return numpy_helper.from_array(np.asarray(v), name)

    # If(true) { masks_inner = boxes-shaped ones... } : a body that reads the outer "boxes"
    then = helper.make_graph(
        [helper.make_node("Shape", ["boxes"], ["kshape"]),
         helper.make_node("Gather", ["kshape", "zero_idx"], ["k"]),
         helper.make_node("Concat", ["k", "one_hw"], ["mshape"], axis=0),
         helper.make_node("ConstantOfShape", ["mshape"], ["masks_body"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
        "then", [], [helper.make_tensor_value_info("masks_body", TensorProto.FLOAT, [None, 1, 32, 48])],
        [c("zero_idx", np.array([0], np.int64)), c("one_hw", np.array([1, 32, 48], np.int64))])
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["box_value", "nothing"], ["boxes"]),
        helper.make_node("Add", ["score_value", "nothing"], ["scores"]),
        helper.make_node("Identity", ["label_value"], ["labels"]),
        helper.make_node("If", ["true"], ["masks"], then_branch=then, else_branch=then),
    ]
    graph = helper.make_graph(
        nodes, "tv", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [3, 32, 48])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("masks", TensorProto.FLOAT, [None, 1, 32, 48])],
        [c("zero", np.float32(0)), c("true", np.array(True)),
         c("box_value", np.array([[4, 4, 20, 20], [10, 2, 40, 30]], np.float32)),
         c("score_value", np.array([0.9, 0.8], np.float32)), c("label_value", np.array([1, 2], np.int64))])
    src = tmp_path / "tv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    bundle = import_onnx(src, tmp_path / "tv.edgeseg", task="instance", classes=("__background__", "a", "b"),
                         input_spec=None)
    assert bundle.manifest.provenance["original_input"] == "images [3, H, W]"
    r = edgeseg.load(bundle.root, backend="onnxruntime")(np.zeros((32, 48, 3), np.uint8))
    assert r.classes.tolist() == [1, 2] and r.masks.all()
    np.testing.assert_allclose(r.boxes, [[4, 4, 20, 20], [10, 2, 40, 30]])


def test_masks_that_fit_both_readings_go_by_roi_align():
    """56x56 masks of a 224x224 input are SOLO's 1/4 maps or a fine Mask R-CNN head's per-box masks:
    a graph with RoiAlign crops per box; one without covers the input."""
    from edgeseg.export.import_boxmask import whole_input_masks

    net = ImageShape(224, 224)
    assert whole_input_masks((56, 56), net, roi_align=True) is False
    assert whole_input_masks((56, 56), net, roi_align=False) is True
    assert whole_input_masks((28, 28), ImageShape(320, 640)) is False and whole_input_masks((80, 160), ImageShape(320, 640))
    assert whole_input_masks((33, 33), ImageShape(320, 640)) is None


def test_int8_of_an_imported_mask_rcnn_keeps_its_post_processing_float(foreign, tmp_path):
    """`edgeseg quantize` on an MMDeploy Mask R-CNN import: the network in INT8, everything after the NMS
    (boxes, scores, the mask gather) in float; the INT8 model decodes to the FP32 model's detections on
    the calibration frames' kind of input."""
    import json

    import edgeseg
    from edgeseg.cli import main
    from edgeseg.export.importer import import_onnx

    bundle = import_onnx(foreign["mmdeploy-roi"], tmp_path / "m.edgeseg", task="instance", classes=("a", "b", "c"),
                         input_spec=None)
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    rng = np.random.default_rng(0)
    for k in range(6):
        cv2.imwrite(str(frames / f"{k}.png"), rng.integers(0, 255, (150, 200, 3), np.uint8))
    assert main(["quantize", str(bundle.root), "--calib", str(frames), "--frames", "6", "--target", "cpu",
                 "--no-latency-guard", "--no-progress", "--json", str(tmp_path / "q.json")]) == 0
    report = json.loads((tmp_path / "q.json").read_text())
    floats = " ".join(json.dumps(report).split("float_nodes")[1:])
    assert "NonMaxSuppression" in floats and "QuantizeLinear" not in floats
    fp32 = edgeseg.load(bundle.root, backend="onnxruntime", precision="fp32")
    int8 = edgeseg.load(bundle.root, backend="onnxruntime", precision="int8")
    rgb = rng.integers(0, 255, (150, 200, 3), np.uint8)
    a, b = fp32(rgb), int8(rgb)
    assert len(a) and abs(len(a) - len(b)) <= 2  # an untrained network: INT8 moves scores near the threshold


@pytest.mark.data
def test_street_instance_written_as_mmdeploy_solo_scores_the_same(data_root, tmp_path):
    """The shipped ``street-instance`` (SOLOv2, masks at the 1/4 map) rewritten into MMDeploy's SOLO form
    (``dets`` with whole-frame placeholder boxes, int64 ``labels``, ``masks [1, K, 80, 160]``, input
    ``input``) and imported without any pre-processing option: MMDetection's normalisation is the
    bundle's ImageNet one in 0-255 units, so on real street frames of unseen cities the import's
    detections equal the shipped bundle's, and ``edgeseg eval`` reports the same mask AP."""
    import json

    import onnx
    from onnx import helper, numpy_helper

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.data.io import read_image
    from edgeseg.export.importer import import_onnx

    shipped = Bundle.open("street-instance")
    g = onnx.load(str(shipped.root / "model.onnx"))
    k = 100
    g.graph.initializer.extend([
        numpy_helper.from_array(np.tile(np.array([0, 0, 640, 320], np.float32), (1, k, 1)), "placeholder"),
        numpy_helper.from_array(np.array([-1], np.int64), "last")])
    g.graph.node.extend([helper.make_node("Unsqueeze", ["scores", "last"], ["score_col"]),
                         helper.make_node("Concat", ["placeholder", "score_col"], ["dets"], axis=2),
                         helper.make_node("Cast", ["classes"], ["labels"], to=onnx.TensorProto.INT64)])
    masks = next(o for o in g.graph.output if o.name == "masks")
    del g.graph.output[:]
    g.graph.output.extend([helper.make_tensor_value_info("dets", onnx.TensorProto.FLOAT, [1, k, 5]),
                           helper.make_tensor_value_info("labels", onnx.TensorProto.INT64, [1, k]), masks])
    g.graph.input[0].name = "input"
    for n in g.graph.node:
        n.input[:] = ["input" if i == "images" else i for i in n.input]
    src = tmp_path / "end2end.onnx"
    onnx.save(g, str(src))
    bundle = import_onnx(src, tmp_path / "solo.edgeseg", task="instance", classes=shipped.manifest.classes,
                         input_spec=None)
    assert bundle.manifest.decoder_options.layout == "dense" and bundle.manifest.input.resize == "resize"
    ours, theirs = (edgeseg.load(b, backend="onnxruntime", precision="fp32") for b in (bundle.root, shipped.root))
    root = data_root / "cityscapes_panoptic"
    frames = sorted((root / "val").iterdir())[:6]
    total = 0
    for path in frames:
        rgb = read_image(path)
        a, b = ours(rgb), theirs(rgb)
        assert len(a) == len(b) and a.classes.tolist() == b.classes.tolist(), path.name
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_array_equal(a.boxes, b.boxes)  # the placeholders fell back to the masks' boxes
        assert np.array_equal(a.masks, b.masks), path.name
        total += len(a)
    assert total >= 6
    scores = []
    for b in (bundle.root, shipped.root):
        out = tmp_path / f"{len(scores)}.json"
        assert main(["eval", str(b), "--data", f"coco-instance:{root / 'instances_val.json'}", "--limit", "12",
                     "--backend", "onnxruntime", "--precision", "fp32", "--no-progress", "--json", str(out)]) == 0
        scores.append(json.loads(out.read_text()))
    assert scores[0]["stats"] == scores[1]["stats"] and scores[1]["stats"]["AP"] > 0.01  # mask AP, AP50, ..., AR
    assert scores[0]["box"]["stats"] == scores[1]["box"]["stats"]
