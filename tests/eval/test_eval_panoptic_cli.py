"""``edgeseg eval`` on ``coco-panoptic:`` data end to end: a hand-built Panoptic-DeepLab-layout ONNX
bundle (ONNX Runtime), a tiny COCO-panoptic dataset, PQ by hand and from the reference
(cityscapesScripts' ``evaluatePanoptic``) on the predictions the command saved.

The bundle: ``semantic`` = 10 x the image's channels averaged over 4x4 cells (R -> road, B -> sky,
G -> car), ``center`` a constant heatmap with one peak (0.9), ``offset`` zeros, at 1/4 of the 64x64
input. One centre: every car pixel joins one instance. Image A: road (rows 0..31; the truth makes
rows 28..31 void), sky below, car A (12x12) and car B (4x4) in green, all on 4-pixel cells; image B:
road and sky. The prediction: road, sky, one car of both cars' 160 pixels -> car A matched with IoU
144/160 = 0.9, car B missed: car PQ 0.9 / 1.5 = 0.6, road and sky 1.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from edgeseg.data import write_image
from edgeseg.data.coco_panoptic import Category
from edgeseg.structures import ImageShape, InputSpec, PanopticResult, Segment

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("edgeseg.decode.panoptic", reason="DECODERS['panoptic'] (edgeseg/decode/panoptic.py) is not there yet")

S = 64
CATEGORIES = {7: Category(7, "road", False), 23: Category(23, "sky", False), 24: Category(24, "person", True),
              26: Category(26, "car", True)}


def center_bundle(path, category_ids=(7, 23, 26), classes=("road", "sky", "car")):
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.bundle import Bundle, Manifest, ModelFile, OutputSpec

    g = S // 4
    w = np.zeros((3, 3, 1, 1), np.float32)
    w[0, 0], w[1, 2], w[2, 1] = 10, 10, 10  # road <- R, sky <- B, car <- G
    heat = np.zeros((1, 1, g, g), np.float32)
    heat[0, 0, 11, 3] = 0.9
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["pooled", "w"], ["semantic"], kernel_shape=[1, 1]),
             helper.make_node("Identity", ["heat"], ["center"]),
             helper.make_node("Identity", ["zeros"], ["offset"])]
    graph = helper.make_graph(
        nodes, "center_layout", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, S, S])],
        [helper.make_tensor_value_info("semantic", TensorProto.FLOAT, [1, 3, g, g]),
         helper.make_tensor_value_info("center", TensorProto.FLOAT, [1, 1, g, g]),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 2, g, g])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(heat, "heat"),
                     numpy_helper.from_array(np.zeros((1, 2, g, g), np.float32), "zeros")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    outs = tuple(OutputSpec(n, n, "float32", (1, c, g, g)) for n, c in (("semantic", 3), ("center", 1), ("offset", 2)))
    manifest = Manifest(name="center", task="panoptic", classes=tuple(classes),
                        input=InputSpec(size=ImageShape(S, S), mean=(0, 0, 0), std=(1, 1, 1)), outputs=outs,
                        decoder={"layout": "center", "thing_classes": [2],
                                 **({"category_ids": list(category_ids)} if category_ids else {})})
    b = Bundle.create(path, manifest)
    b.add_model(ModelFile("model.onnx", "fp32", None, 19), model.SerializeToString())
    return path


def dataset(root):
    """``root/panoptic_val.json``, ``root/panoptic_val/*.png``, ``root/val/*.png`` (module doc)."""
    from edgeseg.eval.panoptic_io import PanopticWriter

    red, blue, green = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    with PanopticWriter(root / "panoptic_val.json", categories=CATEGORIES) as w:
        for k, cars in ((1, True), (2, False)):
            img = np.zeros((S, S, 3), np.uint8)
            img[:32], img[32:] = red, blue
            ids = np.zeros((S, S), np.int32)
            ids[: 28 if cars else 32], ids[32:] = 7, 23
            segs = [Segment(7, 7, False), Segment(23, 23, False)]
            if cars:
                img[40:52, 8:20] = img[40:44, 40:44] = green
                ids[40:52, 8:20], ids[40:44, 40:44] = 26000, 26001
                segs += [Segment(26000, 26, True), Segment(26001, 26, True)]
            write_image(root / "val" / f"im{k}.png", img)
            w.add(k, f"im{k}_gt.png", PanopticResult(ids, tuple(segs)), image_file_name=f"im{k}.png")
    return root / "panoptic_val.json"


def _eval(args, capsys):
    from edgeseg.cli import main

    rc = main(["eval", *map(str, args), "--backend", "onnxruntime", "--threads", "1", "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_eval_panoptic_bundle_by_hand_and_against_reference(tmp_path, capsys):
    bundle = center_bundle(tmp_path / "center.edgeseg")
    gt_json = dataset(tmp_path)
    rc, out, err = _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--save-predictions", tmp_path / "preds",
                          "--json", tmp_path / "pq.json"], capsys)
    assert rc == 0, out + err
    data = json.loads((tmp_path / "pq.json").read_text())
    assert data["num_images"] == 2 and data["ms_per_frame"] > 0 and data["latency"]["p50_ms"] > 0
    per = data["per_class"]
    assert set(per) == {"7", "23", "26"}  # person: neither in truth nor predicted
    close = lambda x: pytest.approx(x, abs=1e-12)  # noqa: E731
    assert per["26"] == {"name": "car", "isthing": True, "pq": close(0.6), "sq": close(0.9), "rq": close(2 / 3),
                         "tp": 1, "fp": 0, "fn": 1}
    assert per["7"]["pq"] == per["23"]["pq"] == 1.0 and per["7"]["tp"] == per["23"]["tp"] == 2
    assert data["all"]["pq"] == pytest.approx((1 + 1 + 0.6) / 3, abs=1e-12) and data["all"]["n"] == 3
    assert data["things"]["pq"] == pytest.approx(0.6, abs=1e-12) and data["stuff"]["pq"] == 1.0
    assert "things  PQ 60.00" in out and "car" in out and "ms per frame" in out

    # the saved predictions: COCO panoptic results the reference reads, giving the same numbers
    pred_json, pred_dir = tmp_path / "preds" / "panoptic_val_pred.json", tmp_path / "preds" / "panoptic_val_pred"
    assert data["predictions"] == {"json": str(pred_json), "png_dir": str(pred_dir)}
    anns = json.loads(pred_json.read_text())["annotations"]
    assert [(a["image_id"], a["file_name"]) for a in anns] == [(1, "im1_gt.png"), (2, "im2_gt.png")]
    car = [s for s in anns[0]["segments_info"] if s["category_id"] == 26]
    assert [(s["area"], s["bbox"]) for s in car] == [(160, [8, 40, 36, 12])]
    ref = pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling")
    with contextlib.redirect_stdout(io.StringIO()):
        want = ref.evaluatePanoptic(str(gt_json), str(tmp_path / "panoptic_val"), str(pred_json), str(pred_dir),
                                    str(tmp_path / "ref.json"))
    for group, name in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        for k in ("pq", "sq", "rq", "n"):
            assert abs(data[group][k] - want[name][k]) <= 1e-12
    for cat, got in per.items():
        for k in ("pq", "sq", "rq"):
            assert abs(got[k] - want["per_class"][int(cat)][k]) <= 1e-12


def test_eval_panoptic_refuses_foreign_categories_and_bundles(tmp_path, capsys):
    from handmade_bundles import conv_bundle

    gt_json = dataset(tmp_path)
    rc, _, err = _eval([center_bundle(tmp_path / "c99.edgeseg", (7, 23, 99), ("road", "sky", "truck")), "--data",
                        f"coco-panoptic:{gt_json}"], capsys)
    assert rc == 2 and "writes category ids the dataset does not list: truck=99" in err and "7 road" in err
    semantic = conv_bundle(tmp_path / "sem", 3).root
    rc, _, err = _eval([semantic, "--data", f"coco-panoptic:{gt_json}"], capsys)
    assert rc == 2 and "is a semantic bundle" in err and "holds panoptic segments" in err
    rc, _, err = _eval([tmp_path / "c99.edgeseg", "--data", f"coco-panoptic:{gt_json}", "--images", tmp_path / "nope"],
                       capsys)
    assert rc == 2 and "images folder" in err and "nope" in err
    assert not (tmp_path / "preds").exists()


# ---- --save-predictions: refused up front, and an earlier run's results kept whole (robustness audit) ----
def test_unwritable_save_predictions_is_refused_before_the_model_runs(tmp_path, capsys):
    """Was a NotADirectoryError / FileNotFoundError traceback at the first image's PNG."""
    gt_json = dataset(tmp_path)
    (tmp_path / "a-file").write_text("x")
    for target in (tmp_path / "a-file", tmp_path / "a-file" / "preds", "/proc/edgeseg-preds"):
        rc, _, err = _eval([tmp_path / "no-such.edgeseg", "--data", f"coco-panoptic:{gt_json}",
                            "--save-predictions", target], capsys)  # no bundle is loaded: the check comes first
        assert rc == 2 and "edgeseg eval: error: --save-predictions: cannot write" in err and "fix:" in err, err
    assert (tmp_path / "a-file").read_text() == "x"


def test_save_predictions_named_like_a_json_file_is_refused_for_panoptic_data(tmp_path, capsys):
    """It made a folder named preds.json."""
    gt_json = dataset(tmp_path)
    rc, _, err = _eval([center_bundle(tmp_path / "c.edgeseg"), "--data", f"coco-panoptic:{gt_json}",
                        "--save-predictions", tmp_path / "preds.json"], capsys)
    assert rc == 2 and "panoptic predictions are a folder" in err and "panoptic_val_pred.json" in err, err
    assert not (tmp_path / "preds.json").exists()


def test_a_failed_rerun_keeps_the_earlier_predictions(tmp_path, capsys):
    """The first image's PNG used to be replaced before the second image failed, leaving the earlier
    run's JSON beside a PNG it does not describe."""
    bundle = center_bundle(tmp_path / "center.edgeseg")
    gt_json = dataset(tmp_path / "a")
    preds = tmp_path / "preds"
    rc, out, err = _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--save-predictions", preds], capsys)
    assert rc == 0, out + err
    before = {p: p.read_bytes() for p in sorted(preds.rglob("*")) if p.is_file()}
    assert len(before) == 3
    # a second dataset of the same name whose images are the wrong size: no image scored, the run fails
    other = dataset(tmp_path / "b")
    for k in (1, 2):
        write_image(tmp_path / "b" / "val" / f"im{k}.png", np.zeros((S // 2, S, 3), np.uint8))
    rc, _, err = _eval([bundle, "--data", f"coco-panoptic:{other}", "--save-predictions", preds], capsys)
    assert rc == 2 and "im1.png is 64x32 but its panoptic PNG is 64x64" in err, err
    assert {p: p.read_bytes() for p in sorted(preds.rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in preds.iterdir()) == ["panoptic_val_pred", "panoptic_val_pred.json"]  # no staging left
    # only image 2 the wrong size (since session 52): left out and named, image 1's prediction saved with its scores
    img = np.zeros((S, S, 3), np.uint8)
    img[:32], img[32:] = (255, 0, 0), (0, 0, 255)
    write_image(tmp_path / "b" / "val" / "im1.png", img)
    rc, _, err = _eval([bundle, "--data", f"coco-panoptic:{other}", "--save-predictions", preds], capsys)
    assert rc == 2 and "1 sample(s)" in err and "im2.png is 64x32 but its panoptic PNG is 64x64" in err, err
    anns = json.loads((preds / "panoptic_val_pred.json").read_text())["annotations"]
    assert [a["image_id"] for a in anns] == [1] and sorted(p.name for p in (preds / "panoptic_val_pred").iterdir()) == \
        ["im1_gt.png"]


def test_a_rerun_with_fewer_images_leaves_only_its_own_pngs(tmp_path, capsys):
    """`--save-predictions P --limit 1` after a run over both images kept the other image's PNG beside a JSON that
    no longer listed it. A file the earlier JSON did not list is not ours: kept."""
    bundle = center_bundle(tmp_path / "center.edgeseg")
    gt_json = dataset(tmp_path)
    preds = tmp_path / "preds"
    assert _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--save-predictions", preds], capsys)[0] == 0
    png_dir = preds / "panoptic_val_pred"
    (png_dir / "notes.txt").write_text("mine")
    assert sorted(p.name for p in png_dir.iterdir()) == ["im1_gt.png", "im2_gt.png", "notes.txt"]
    assert _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--save-predictions", preds, "--limit", "1"],
                 capsys)[0] == 0
    listed = [a["file_name"] for a in json.loads((preds / "panoptic_val_pred.json").read_text())["annotations"]]
    assert listed == ["im1_gt.png"] and sorted(p.name for p in png_dir.iterdir()) == ["im1_gt.png", "notes.txt"]
    for broken in ('{"annotations": null}', '{"annotations": 5}', "[1, 2]", "not json"):  # never a traceback
        (preds / "panoptic_val_pred.json").write_text(broken)
        assert _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--save-predictions", preds, "--limit", "1"],
                     capsys)[0] == 0


def test_a_bundle_without_category_ids_is_matched_by_class_name(tmp_path, capsys):
    """An imported panoptic model has no dataset ids: its classes are the dataset's categories of the same
    names (case aside), and the scores are those of the bundle that carries the ids. Names that repeat,
    or one that is no category, leave the class indices, which the category check refuses by name."""
    gt_json = dataset(tmp_path)
    results = []
    for name, ids, classes in (("ids", (7, 23, 26), ("road", "sky", "car")), ("names", (), ("Road", "sky", "CAR"))):
        rc, out, err = _eval([center_bundle(tmp_path / f"{name}.edgeseg", ids, classes), "--data",
                              f"coco-panoptic:{gt_json}", "--json", tmp_path / f"{name}.json"], capsys)
        assert rc == 0, out + err
        results.append(json.loads((tmp_path / f"{name}.json").read_text()))
    assert "same names" in err
    assert results[0]["per_class"] == results[1]["per_class"] and results[0]["all"] == results[1]["all"]
    rc, _, err = _eval([center_bundle(tmp_path / "dup.edgeseg", (), ("road", "car", "Car")), "--data",
                        f"coco-panoptic:{gt_json}"], capsys)
    assert rc == 2 and "writes category ids the dataset does not list" in err and "--class-map" in err


def test_ids_that_name_other_categories_are_matched_by_name_or_named(tmp_path, capsys):
    """A bundle's own ids from another numbering of the same classes (ids swapped, or one the dataset does not
    list) were scored by id without a word: cars as 'sky'. Its classes are the dataset's categories of the same
    names now, with a warning; ids naming other categories that no name matches are scored by id, named."""
    gt_json = dataset(tmp_path)
    results = {}
    for name, ids in (("right", (7, 23, 26)), ("swapped", (7, 26, 23)), ("unlisted", (7, 23, 99))):
        rc, out, err = _eval([center_bundle(tmp_path / f"{name}.edgeseg", ids, ("road", "sky", "car")), "--data",
                              f"coco-panoptic:{gt_json}", "--json", tmp_path / f"{name}.json"], capsys)
        assert rc == 0, out + err
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
        assert ("name other categories in this dataset" in err) == (name != "right"), err
        named = {"swapped": "sky=26 ('car' here)", "unlisted": "car=99"}.get(name)
        assert named is None or named in err, err
    assert results["swapped"]["per_class"] == results["right"]["per_class"] == results["unlisted"]["per_class"]
    rc, out, err = _eval([center_bundle(tmp_path / "auto.edgeseg", (7, 23, 26), ("road", "sky", "automobile")),
                          "--data", f"coco-panoptic:{gt_json}", "--json", tmp_path / "auto.json"], capsys)
    assert rc == 0 and "have other names: automobile=26 ('car' here); scored by id" in err, out + err  # (warnings: stderr)
    assert json.loads((tmp_path / "auto.json").read_text())["per_class"] == results["right"]["per_class"]


def test_category_ids_by_name_in_python():
    from edgeseg.eval.panoptic import category_ids_by_name

    assert category_ids_by_name(("Road", "CAR", "sky"), CATEGORIES) == (7, 26, 23)
    assert category_ids_by_name(("road", "bus"), CATEGORIES) is None          # bus is no category
    assert category_ids_by_name(("road", "Road"), CATEGORIES) is None         # names repeat
    twice = {**CATEGORIES, 99: Category(99, "car", True)}
    assert category_ids_by_name(("road", "car"), twice) is None              # the dataset's names repeat


def _reference(gt_json, tmp_path):
    ref = pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling")
    with contextlib.redirect_stdout(io.StringIO()):
        return ref.evaluatePanoptic(str(gt_json), str(tmp_path / "panoptic_val"),
                                    str(tmp_path / "preds" / "panoptic_val_pred.json"),
                                    str(tmp_path / "preds" / "panoptic_val_pred"), str(tmp_path / "ref.json"))


def test_class_map_scores_a_bundle_of_other_categories(tmp_path, capsys):
    """Before: refused ('--class-map applies to instance datasets'); a bundle of other names and ids could only be
    mapped from Python. Now --class-map maps classes by name (the rest by equal name), CLASS=void leaves one out,
    and stuff classes sent to one category become one segment. Scores by hand and equal to the reference."""
    gt_json = dataset(tmp_path)
    foreign = center_bundle(tmp_path / "f.edgeseg", (3, 4, 99), ("road", "heaven", "auto"))
    common = ["--data", f"coco-panoptic:{gt_json}", "--save-predictions", tmp_path / "preds", "--json", tmp_path / "pq.json"]
    rc, out, err = _eval([foreign, *common, "--class-map", "heaven=sky,auto=car"], capsys)
    assert rc == 0, out + err
    data = json.loads((tmp_path / "pq.json").read_text())
    assert data["all"]["pq"] == pytest.approx((1 + 1 + 0.6) / 3, abs=1e-12)  # as the bundle of the dataset's ids
    assert "note: classes scored as categories by --class-map" in err

    rc, out, err = _eval([foreign, *common, "--class-map", "heaven=sky,auto=void"], capsys)
    assert rc == 0, out + err
    data = json.loads((tmp_path / "pq.json").read_text())
    assert data["per_class"]["26"]["tp"] == 0 and data["per_class"]["26"]["fp"] == 0 and data["per_class"]["26"]["fn"] == 2
    assert "left out as void: auto" in err
    anns = json.loads((tmp_path / "preds" / "panoptic_val_pred.json").read_text())["annotations"]
    assert all(s["category_id"] in (7, 23) for a in anns for s in a["segments_info"])
    want = _reference(gt_json, tmp_path)
    assert abs(data["all"]["pq"] - want["All"]["pq"]) <= 1e-12

    rc, out, err = _eval([foreign, *common, "--class-map", "road=sky,heaven=sky,auto=car"], capsys)
    assert rc == 0, out + err
    anns = json.loads((tmp_path / "preds" / "panoptic_val_pred.json").read_text())["annotations"]
    assert [(s["category_id"], s["area"]) for s in anns[1]["segments_info"]] == [(23, S * S)]  # one sky segment
    data, want = json.loads((tmp_path / "pq.json").read_text()), _reference(gt_json, tmp_path)
    for group, name in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        assert abs(data[group]["pq"] - want[name]["pq"]) <= 1e-12 and data[group]["n"] == want[name]["n"]


def test_class_map_mistakes_are_named(tmp_path, capsys):
    gt_json = dataset(tmp_path)
    foreign = center_bundle(tmp_path / "f.edgeseg", (3, 4, 99), ("road", "heaven", "auto"))
    for cmap, said in (("lorry=car", "names 'lorry', which the model's classes (road, heaven, auto) do not include"),
                       ("heaven=heaven", "maps to 'heaven', which the dataset's categories do not include"),
                       ("heaven=sky", "model classes with no dataset category of their name: auto")):
        rc, _, err = _eval([foreign, "--data", f"coco-panoptic:{gt_json}", "--class-map", cmap], capsys)
        assert rc == 2 and said in err, err
    assert "auto=void" in err and "road, sky, person, car" in err
    rc, _, err = _eval([foreign, "--data", f"coco-panoptic:{gt_json}"], capsys)  # no map: the fix names it
    assert rc == 2 and "--class-map CLASS=CATEGORY" in err, err


def test_remap_categories_by_hand():
    from edgeseg.eval.panoptic import remap_categories

    ids = np.array([[1, 1, 2, 5], [3, 3, 4, 0]], np.int32)
    segs = (Segment(1, 10, False, 2), Segment(2, 11, False, 1), Segment(3, 12, True, 2), Segment(4, 12, True, 1),
            Segment(5, 13, True, 1))
    out = remap_categories(PanopticResult(ids, segs), {10: 23, 11: 23, 12: 26, 13: None}, {23: False, 26: True})
    assert out.segment_ids.tolist() == [[1, 1, 1, 0], [3, 3, 4, 0]]
    assert [(s.id, s.category_id, s.isthing, s.area) for s in out.segments] == [(1, 23, False, 3), (3, 26, True, 2),
                                                                               (4, 26, True, 1)]


def test_an_unreadable_image_is_left_out_of_pq_and_named(tmp_path, capsys):
    """A batch audit and its review: one corrupt image ended the whole run with no score. Panoptic data too: the image
    and its truth are left out, named, the others' PQ printed and written (equal to the one image's own), exit 2; when
    no image can be read, the first reason with its own fix, as before."""
    bundle = center_bundle(tmp_path / "center.edgeseg")
    gt_json = dataset(tmp_path)
    rc, out, err = _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--limit", "1", "--json", tmp_path / "one.json"],
                         capsys)
    assert rc == 0, err
    (tmp_path / "val" / "im2.png").write_bytes(b"not a png")
    rc, out, err = _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--json", tmp_path / "pq.json"], capsys)
    assert rc == 2 and "1 sample(s) of coco-panoptic:" in err and "im2.png" in err
    data = json.loads((tmp_path / "pq.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert data["num_images"] == 1 and data["skipped"][0]["index"] == 1 and data["all"] == one["all"]
    (tmp_path / "val" / "im1.png").write_bytes(b"")
    rc, out, err = _eval([bundle, "--data", f"coco-panoptic:{gt_json}"], capsys)
    assert rc == 2 and "im1.png is empty (0 bytes)" in err and "sample(s)" not in err


def test_a_score_threshold_given_is_the_bundles_centre_threshold(tmp_path, capsys):
    """An option audit: eval took --score-threshold for panoptic data and used it nowhere. Given, it is the bundle's
    centre threshold, as in predict and run: above the one centre's 0.9 no car is found; not given, the bundle's own."""
    bundle = center_bundle(tmp_path / "center.edgeseg")
    gt_json = dataset(tmp_path)
    rc, out, err = _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--score-threshold", "0.95",
                          "--json", tmp_path / "high.json"], capsys)
    assert rc == 0, out + err
    high = json.loads((tmp_path / "high.json").read_text())
    assert high["score_threshold"] == 0.95 and high["per_class"]["26"]["tp"] == 0
    rc, out, err = _eval([bundle, "--data", f"coco-panoptic:{gt_json}", "--json", tmp_path / "own.json"], capsys)
    own = json.loads((tmp_path / "own.json").read_text())
    assert rc == 0 and own["score_threshold"] is None and own["per_class"]["26"]["tp"] == 1
    assert own["backend"] == "onnxruntime" and own["precision"] == "fp32"
