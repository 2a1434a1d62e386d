"""``edgeseg import --task panoptic``: Panoptic-DeepLab exports made elsewhere (semantic logits, centre
heatmap, offsets; NCHW or NHWC, offsets ``(dy, dx)`` or ``(dx, dy)``). The shipped ``shapes-panoptic``
written out in those forms, with other names, must import to a bundle whose results equal the shipped
bundle's, segment for segment."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import ExportError, InputError
from edgeseg.export.import_panoptic import detect_center_outputs


def _foreign(src, dst, channels_last: bool, xy: bool) -> None:
    """``src``'s graph with Panoptic-DeepLab-style names (input ``input``), optionally channels-last
    outputs and ``(dx, dy)`` offsets, as TensorFlow exports and other conventions give them."""
    import onnx
    from onnx import helper, numpy_helper

    g = onnx.load(str(src))
    rename = {"semantic": "semantic_logits", "center": "center_heatmap", "offset": "offset_map"}
    for n in g.graph.node:
        n.output[:] = [rename.get(o, o) if not (channels_last or xy) else o for o in n.output]
        n.input[:] = ["input" if i == "images" else i for i in n.input]
    g.graph.input[0].name = "input"
    outs = []
    for o in list(g.graph.output):
        name = rename[o.name]
        x = o.name if (channels_last or xy) else name
        if o.name == "offset" and xy:
            g.graph.initializer.append(numpy_helper.from_array(np.array([1, 0], np.int64), "swap"))
            g.graph.node.append(helper.make_node("Gather", [x, "swap"], ["offset_xy"], axis=1))
            x = "offset_xy"
        if channels_last:
            g.graph.node.append(helper.make_node("Transpose", [x], [name], perm=[0, 2, 3, 1]))
        elif x != name:
            g.graph.node.append(helper.make_node("Identity", [x], [name]))
        outs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, None, None, None]))
    del g.graph.output[:]
    g.graph.output.extend(outs)
    onnx.save(g, str(dst))


@pytest.mark.parametrize("channels_last,xy", [(False, False), (True, True), (False, True), (True, False)],
                         ids=["nchw-yx", "nhwc-xy", "nchw-xy", "nhwc-yx"])
def test_import_equals_the_shipped_bundle(tmp_path, channels_last, xy):
    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.data import SceneGenerator
    from edgeseg.export.importer import import_onnx
    from edgeseg.structures import ImageShape

    shipped = Bundle.open("shapes-panoptic")
    src = tmp_path / "pdl.onnx"
    _foreign(shipped.root / "model.onnx", src, channels_last, xy)
    m = shipped.manifest
    o = m.decoder_options
    same = dict(center_threshold=o.center_threshold, nms_kernel=o.nms_kernel, top_k=o.top_k, stuff_area=o.stuff_area)
    bundle = import_onnx(src, tmp_path / "p.edgeseg", task="panoptic", classes=m.classes,
                         things=["circle", "rectangle", "5"], input_spec=m.input, offset_order="xy" if xy else "yx",
                         panoptic_options=same)
    assert bundle.manifest.decoder_options.thing_classes == (3, 4, 5)
    assert bundle.report["import"]["channels_last"] is channels_last
    assert bundle.manifest.provenance["original_outputs"] == {"center": "center_heatmap", "offset": "offset_map",
                                                              "semantic": "semantic_logits"}
    ours = edgeseg.load(bundle.root, backend="onnxruntime", precision="fp32")
    theirs = edgeseg.load(shipped.root, backend="onnxruntime", precision="fp32")
    things = 0
    for seed in range(3):
        rgb = SceneGenerator(ImageShape(150, 200), seed=seed).render(0).image  # another size than the network's
        a, b = ours(rgb), theirs(rgb)
        assert np.array_equal(a.segment_ids, b.segment_ids)
        assert [(s.id, s.category_id, s.isthing, s.area) for s in a.segments] == \
            [(s.id, s.category_id, s.isthing, s.area) for s in b.segments]
        things += sum(s.isthing for s in a.segments)
    assert things >= 3  # instances were grouped: the offsets were read the right way round


def test_center_outputs_detection_and_errors():
    f = np.float32
    maps = {"a": np.zeros((1, 19, 64, 128), f), "b": np.zeros((1, 1, 64, 128), f), "c": np.zeros((1, 2, 64, 128), f)}
    assert detect_center_outputs(maps, 19, "m") == ({"center": "b", "offset": "c", "semantic": "a"}, False)
    nhwc = {k: np.moveaxis(v, 1, 3) for k, v in maps.items()}
    assert detect_center_outputs(nhwc, 19, "m")[1] is True
    # two classes: the semantic map and the offsets both have 2 channels; names tell them apart
    two = {"semantic": np.zeros((1, 2, 8, 8), f), "center": np.zeros((1, 1, 8, 8), f), "offset": np.zeros((1, 2, 8, 8), f)}
    assert detect_center_outputs(two, 2, "m")[0] == {"center": "center", "offset": "offset", "semantic": "semantic"}
    with pytest.raises(ExportError, match=r"a float32 \[1, 19, 64, 128\].*no three maps"):
        detect_center_outputs({"a": maps["a"], "b": maps["b"]}, 19, "m")
    # DeepLab2: NHWC, logits and probabilities with C channels each, a squeezed [1, h, w] heatmap
    dl2 = {"semantic_probs": np.zeros((1, 8, 8, 19), f), "semantic_logits": np.zeros((1, 8, 8, 19), f),
           "center_heatmap": np.zeros((1, 8, 8), f), "offset_map": np.zeros((1, 8, 8, 2), f)}
    assert detect_center_outputs(dl2, 19, "m") == (
        {"center": "center_heatmap", "offset": "offset_map", "semantic": "semantic_logits"}, True)
    # two unnamed candidates: the error names the tie, not "no maps"
    with pytest.raises(ExportError, match="several outputs fit one role .semantic: a, d"):
        detect_center_outputs({**maps, "d": maps["a"]}, 19, "m")
    # a semantic map of another size is no Panoptic-DeepLab output set
    with pytest.raises(ExportError, match="no three maps of one size"):
        detect_center_outputs({**maps, "a": np.zeros((1, 19, 32, 64), f)}, 19, "m")


def test_cli_needs_things_and_names_them(tmp_path, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    shipped = Bundle.open("shapes-panoptic")
    src = tmp_path / "pdl.onnx"
    _foreign(shipped.root / "model.onnx", src, False, False)
    base = ["import", str(src), "--task", "panoptic", "--names", ",".join(shipped.manifest.classes), "--size", "160x120",
            "--out", str(tmp_path / "p.edgeseg")]
    assert main(base) != 0 and "--things is required" in capsys.readouterr().err
    assert main(base + ["--things", "circle,hexagon"]) != 0
    assert "'hexagon' is not one of the classes" in capsys.readouterr().err
    assert not (tmp_path / "p.edgeseg").exists()
    assert main(base + ["--things", "circle,rectangle,triangle"]) == 0
    o = Bundle.open(tmp_path / "p.edgeseg").manifest.decoder_options
    # Panoptic-DeepLab's post-processing defaults, not edgeseg's own models'
    assert (o.thing_classes, o.center_threshold, o.nms_kernel, o.top_k, o.stuff_area) == ((3, 4, 5), 0.1, 7, 200, 2048)
    assert main(base + ["--things", "circle", "--stuff-area", "64", "--top-k", "50", "--overwrite"]) == 0
    o = Bundle.open(tmp_path / "p.edgeseg").manifest.decoder_options
    assert (o.stuff_area, o.top_k) == (64, 50)
    with pytest.raises(InputError, match="--things apply to --task panoptic"):
        from edgeseg.cli.import_ import run
        import argparse

        run(argparse.Namespace(onnx=str(src), task="semantic", things="a", names=None, classes="6", preprocess=None))


@pytest.mark.data
def test_street_panoptic_imported_scores_the_same_pq(data_root, tmp_path):
    """The shipped ``street-panoptic`` written out channels-last with (dx, dy) offsets and imported from the
    command line scores the shipped bundle's PQ on unseen-city frames."""
    import json

    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    shipped = Bundle.open("street-panoptic")
    m = shipped.manifest
    src = tmp_path / "pdl.onnx"
    _foreign(shipped.root / "model.onnx", src, True, True)
    (tmp_path / "names.txt").write_text("\n".join(m.classes) + "\n")
    things = ",".join(m.classes[k] for k in m.decoder_options.thing_classes)
    o = m.decoder_options
    assert main(["import", str(src), "--task", "panoptic", "--names", str(tmp_path / "names.txt"), "--things", things,
                 "--offset-order", "xy", "--size", f"{m.input.size.width}x{m.input.size.height}",
                 "--center-threshold", str(o.center_threshold), "--nms-kernel", str(o.nms_kernel), "--top-k",
                 str(o.top_k), "--stuff-area", str(o.stuff_area), "--out", str(tmp_path / "p.edgeseg")]) == 0
    scores = []
    for b in (tmp_path / "p.edgeseg", shipped.root):
        out = tmp_path / f"{len(scores)}.json"
        assert main(["eval", str(b), "--data", f"coco-panoptic:{data_root / 'cityscapes_panoptic' / 'panoptic_val.json'}",
                     "--limit", "8", "--backend", "onnxruntime", "--precision", "fp32", "--no-progress",
                     "--json", str(out)]) == 0
        scores.append(json.loads(out.read_text()))
    for k in ("all", "things", "stuff", "per_class"):  # PQ, SQ, RQ of each group and class
        assert scores[0][k] == scores[1][k], k
    assert scores[1]["all"]["pq"] > 0.05


def test_half_precision_squeezed_heatmap_and_quarter_maps(tmp_path, caplog):
    """fp16 outputs are cast to float32 (declared float32 they failed to load), a ``[1, h, w]`` heatmap is
    unsqueezed, and maps at 1/4 of the input with offsets in grid units are scaled by --offset-scale (the
    import warns when the maps are smaller than the input and no scale was given)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgeseg
    from edgeseg.export.importer import import_onnx
    from edgeseg.structures import ImageShape, InputSpec

    h, w = 16, 24  # maps of a 64x96 input
    sem = np.zeros((1, 3, h, w), np.float16)
    sem[0, 0] = 5.0                     # stuff everywhere
    sem[0, 2, 4:10, 4:20] = 9.0         # two touching cars: columns 4..15 and 16..19
    heat = np.zeros((1, h, w), np.float16)
    heat[0, 7, 4] = heat[0, 7, 17] = 1.0  # the first car's centre at its left end, the second's inside it
    off = np.zeros((1, 2, h, w), np.float16)  # grid units: each pixel points at its car's centre
    yy, xx = np.mgrid[0:h, 0:w]
    cx = np.where(xx < 16, 4, 17)
    off[0, 0], off[0, 1] = 7 - yy, cx - xx
    nodes, outs, inits = [helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
                          helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
                          helper.make_node("Cast", ["nothing"], ["nothing16"], to=TensorProto.FLOAT16)], [], \
        [numpy_helper.from_array(np.float32(0), "zero")]
    for name, v in (("sem_seg", sem), ("center", heat), ("offset", off)):
        inits.append(numpy_helper.from_array(v, name + "_v"))
        nodes.append(helper.make_node("Add", [name + "_v", "nothing16"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT16, list(v.shape)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 96])],
                              outs, inits)
    src = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    spec = InputSpec(size=ImageShape(64, 96))
    unscaled = import_onnx(src, tmp_path / "unscaled.edgeseg", task="panoptic", classes=("road", "sky", "car"),
                           things=["car"], input_spec=spec, panoptic_options={"stuff_area": 1})
    assert "--offset-scale 4" in caplog.text
    b = import_onnx(src, tmp_path / "q.edgeseg", task="panoptic", classes=("road", "sky", "car"), things=["car"],
                    input_spec=spec, offset_scale=4.0, panoptic_options={"stuff_area": 1})
    assert [o.dtype for o in b.manifest.outputs] == ["float32"] * 3
    rgb = np.zeros((64, 96, 3), np.uint8)
    cars = sorted(s.area for s in edgeseg.load(b.root, backend="onnxruntime")(rgb).segments if s.isthing)
    assert cars == [6 * 4 * 16, 6 * 12 * 16]  # 4x4 image pixels per map cell
    # read as input pixels, the grid-unit offsets fall short: the first car's right end joins the second
    wrong = [s.area for s in sorted(edgeseg.load(unscaled.root, backend="onnxruntime")(rgb).segments, key=lambda s: s.id)
             if s.isthing]
    assert len(wrong) == 2 and sum(wrong) == sum(cars) and max(wrong) < 6 * 12 * 16 and min(wrong) > 6 * 4 * 16


def test_python_api_dynamic_spec_and_things_string(tmp_path):
    """``import_onnx(task="panoptic")`` with a spec that feeds frames at their own size (no size) and the
    things as one comma-separated string: both worked only from the command line."""
    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.export.importer import import_onnx
    from edgeseg.structures import InputSpec

    shipped = Bundle.open("shapes-panoptic")
    src = tmp_path / "pdl.onnx"
    _foreign(shipped.root / "model.onnx", src, False, False)
    with pytest.raises(InputError, match="offset scale must be a number"):
        import_onnx(src, tmp_path / "x", task="panoptic", classes=shipped.manifest.classes, things="circle",
                    input_spec=shipped.manifest.input, offset_scale="two")
    with pytest.raises(InputError, match="nms_kernel"):  # refused before the model is read
        import_onnx(tmp_path / "missing.onnx", tmp_path / "x", task="panoptic", classes=shipped.manifest.classes,
                    things="circle", input_spec=shipped.manifest.input, panoptic_options={"nms_kernel": 4})
    # a graph of any size: one 1x1 convolution split into 3 class logits, the heatmap and the offsets
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(6, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["all"]),
         helper.make_node("Split", ["all", "parts"], ["logits", "heat", "offs"], axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, "h", "w"])
         for n, c in (("logits", 3), ("heat", 1), ("offs", 2))],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([3, 1, 2], np.int64), "parts")])
    dyn = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(dyn))
    b = import_onnx(dyn, tmp_path / "d.edgeseg", task="panoptic", classes=("road", "car", "person"),
                    things="car, person", input_spec=InputSpec(size=None, size_rule="any"))
    assert b.manifest.decoder_options.thing_classes == (1, 2)
    assert b.manifest.outputs[0].shape == (1, 3, "height", "width")
    p = edgeseg.load(b.root, backend="onnxruntime")
    for hw in ((48, 64), (37, 91)):
        assert p(np.random.default_rng(1).integers(0, 255, (*hw, 3), np.uint8)).segment_ids.shape == hw
