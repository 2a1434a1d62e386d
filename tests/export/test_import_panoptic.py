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


@pytest.mark.parametrize("channels_last,xy", [(False, False), (True, True)], ids=["nchw-yx", "nhwc-xy"])
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
    bundle = import_onnx(src, tmp_path / "p.edgeseg", task="panoptic", classes=m.classes,
                         things=["circle", "rectangle", "5"], input_spec=m.input, offset_order="xy" if xy else "yx")
    assert bundle.manifest.decoder_options.thing_classes == (3, 4, 5)
    assert bundle.report["import"]["channels_last"] is channels_last
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
    assert Bundle.open(tmp_path / "p.edgeseg").manifest.decoder_options.thing_classes == (3, 4, 5)
    with pytest.raises(InputError, match="--things applies to --task panoptic"):
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
    assert main(["import", str(src), "--task", "panoptic", "--names", str(tmp_path / "names.txt"), "--things", things,
                 "--offset-order", "xy", "--size", f"{m.input.size.width}x{m.input.size.height}",
                 "--out", str(tmp_path / "p.edgeseg")]) == 0
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
