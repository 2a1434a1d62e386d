"""``edgeseg fuse``: a semantic + an instance bundle -> one panoptic bundle (one ONNX graph).

The shipped ``shapes`` (semantic, 160x120) and ``shapes-instance`` (SOLOv2, 192x144) bundles are
fused; the fused graph resizes the frame in-graph for the semantic branch. Checked: the fused
bundle's result equals running both bundles apart and fusing with panopticapi's heuristics, its PQ
on the generator's exact panoptic truth, the class plan, and clear errors for bad pairs."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    from edgeseg.export.fuse import fuse_bundles

    return fuse_bundles("shapes", "shapes-instance", tmp_path_factory.mktemp("fuse") / "fused.edgeseg")


def test_class_plan_defaults_and_names():
    from edgeseg.errors import InputError
    from edgeseg.export.fuse import class_plan

    sem = ("sky", "ground", "road", "circle", "rectangle", "triangle")
    classes, things, sem_map, inst_map = class_plan(sem, ("circle", "rectangle", "triangle"))
    assert classes == ("sky", "ground", "road", "circle", "rectangle", "triangle") and things == (3, 4, 5)
    assert sem_map == (0, 1, 2, -1, -1, -1) and inst_map == (3, 4, 5)
    classes, things, sem_map, inst_map = class_plan(sem, ("Circle", "rectangle", "triangle"), stuff=["road", "SKY"],
                                                    things=["triangle"])
    assert classes == ("road", "sky", "triangle") and things == (2,)
    assert sem_map == (1, -1, 0, -1, -1, -1) and inst_map == (-1, -1, 2)
    with pytest.raises(InputError, match="'hexagon' is not one of"):
        class_plan(sem, ("circle",), things=["hexagon"])
    with pytest.raises(InputError, match="repeat"):
        class_plan(sem, ("circle",), stuff=["circle"])
    # an imported torchvision detector's names: label 0 is the background, the gaps of COCO's 91 ids are N/A;
    # none is a thing (the N/A entries repeat, which refused the fusion)
    classes, things, _, inst_map = class_plan(("sky", "road"), ("__background__", "person", "N/A", "car", "N/A"))
    assert classes == ("sky", "road", "person", "car") and things == (2, 3) and inst_map == (-1, 2, -1, 3, -1)
    # a semantic "background" class stays stuff beside such a detector (it was left out as "an instance class")
    classes, _, sem_map, _ = class_plan(("background", "road"), ("__background__", "background", "car"))
    assert classes == ("background", "road", "car") and sem_map == (0, 1)
    # --things leaving out an instance class named like a semantic one: that semantic class stays stuff (a COCO
    # detector's 'traffic light' with --things person,car; it was dropped, its pixels void)
    classes, things, sem_map, inst_map = class_plan(("road", "traffic light", "person", "car"),
                                                    ("person", "traffic light", "car"), things=["person", "car"])
    assert classes == ("road", "traffic light", "person", "car") and things == (2, 3)
    assert sem_map == (0, 1, -1, -1) and inst_map == (2, -1, 3)


def test_fused_bundle_equals_the_two_bundles_apart(fused):
    import edgeseg
    from edgeseg.data import SceneGenerator
    from edgeseg.decode.panoptic_fusion import fuse_results
    from edgeseg.export.parity import panoptic_agreement
    from edgeseg.structures import ImageShape

    m = fused.manifest
    assert m.task == "panoptic" and m.decoder_options.layout == "fusion"
    assert m.classes == ("sky", "ground", "road", "circle", "rectangle", "triangle")
    assert m.input.dtype == "uint8" and m.input.size == ImageShape(144, 192)
    assert {o.name for o in m.outputs} == {"sem/logits", "inst/scores", "inst/classes", "inst/masks"}
    assert fused.report["parity"]["passed"]
    gen = SceneGenerator(ImageShape(240, 320), seed=5)
    with edgeseg.load(fused, backend="onnxruntime", precision="fp32") as pf, \
            edgeseg.load("shapes", backend="onnxruntime", precision="fp32") as ps, \
            edgeseg.load("shapes-instance", backend="onnxruntime", precision="fp32") as pi:
        for t in (0, 40):
            img = gen.render(t).image
            got = pf(img)
            want = fuse_results(ps(img), pi(img), m.decoder_options, m)
            pixels, iou = panoptic_agreement(want, got)
            assert got.segment_ids.shape == (240, 320)
            assert pixels >= 0.98 and iou >= 0.9  # one in-graph resize vs cv2's: boundary pixels only
            assert {s.category_id for s in got.segments if s.isthing} <= {3, 4, 5}


def test_the_fused_score_threshold_reaches_the_instance_branch(fused):
    # shapes-instance decodes at 0.25 on its own; a fused bundle set to 0.1 must fuse the instances
    # scoring 0.1-0.25 too (frame 80 of this scene: one of them adds a segment, measured 2026-12-03)
    import edgeseg
    from edgeseg.data import SceneGenerator
    from edgeseg.decode.panoptic_fusion import fuse_results
    from edgeseg.export.parity import panoptic_agreement
    from edgeseg.structures import ImageShape

    img = SceneGenerator(ImageShape(240, 320), seed=5).render(80).image
    with edgeseg.load(fused, backend="onnxruntime", precision="fp32") as pf, \
            edgeseg.load("shapes", backend="onnxruntime", precision="fp32") as ps, \
            edgeseg.load("shapes-instance", backend="onnxruntime", precision="fp32") as pi:
        assert pi.options.score_threshold == 0.25
        pf.set_options(score_threshold=0.1)
        got = pf(img)
        semantic = ps(img)
        at_own = fuse_results(semantic, pi(img), pf.options, pf.manifest)  # the branch at its own 0.25
        pi.set_options(score_threshold=0.1)
        want = fuse_results(semantic, pi(img), pf.options, pf.manifest)
    pixels, iou = panoptic_agreement(want, got)
    assert pixels >= 0.98 and iou >= 0.9
    assert len(got.segments) == len(want.segments) == len(at_own.segments) + 1


def _pq_on_generator(bundle):
    """PQ of ``bundle`` (ONNX Runtime FP32) on 10 frames of the generator's exact panoptic truth."""
    import edgeseg
    from edgeseg.data import SceneGenerator
    from edgeseg.eval import PanopticMetric
    from edgeseg.structures import ImageShape

    gen = SceneGenerator(ImageShape(240, 320), seed=11)
    metric = PanopticMetric()
    with edgeseg.load(bundle, backend="onnxruntime", precision="fp32") as p:
        for t in range(0, 100, 10):
            frame = gen.render(t)
            metric.update(p(frame.image), frame.panoptic)
    return metric.compute()


def test_fused_bundle_pq_on_exact_truth(fused):
    r = _pq_on_generator(fused)
    # generator ids: stuff classes 0..2, things 3..5, as the fused classes; measured 2026-11-30
    assert r.stuff.n == 3 and r.things.n == 3
    assert r.pq > 0.6 and r.stuff.pq > 0.8


def test_a_panoptic_bundles_semantic_head_fuses_with_an_instance_model(tmp_path):
    # shapes-panoptic (Panoptic-DeepLab) lends its semantic head; shapes-instance gives the things
    import onnx

    from edgeseg._ort import make_session
    from edgeseg.bundle import Bundle
    from edgeseg.data import SceneGenerator
    from edgeseg.export.fuse import fuse_bundles, semantic_head
    from edgeseg.structures import ImageShape

    pan = Bundle.open("shapes-panoptic")
    head = semantic_head(pan, tmp_path / "head.edgeseg")
    m = head.manifest
    assert (m.task, m.classes, m.input, m.palette) == ("semantic", pan.manifest.classes, pan.manifest.input,
                                                      pan.manifest.palette)
    model = onnx.load(str(head.model_path("fp32")))
    assert [o.name for o in model.graph.output] == ["semantic"]
    assert len(model.graph.node) < len(onnx.load(str(pan.model_path("fp32"))).graph.node)  # centre/offset heads gone
    img = SceneGenerator(ImageShape(240, 320), seed=3).render(7).image
    x, _ = pan.manifest.input.preprocess(img)
    full = make_session(str(pan.model_path("fp32")))
    cut = make_session(str(head.model_path("fp32")))
    name = full.get_inputs()[0].name
    np.testing.assert_array_equal(cut.run(["semantic"], {name: x})[0], full.run(["semantic"], {name: x})[0])

    fused = fuse_bundles(pan, "shapes-instance", tmp_path / "f.edgeseg")
    assert fused.report["parity"]["passed"] and fused.manifest.classes == pan.manifest.classes
    assert fused.manifest.provenance["semantic"] == {"name": "shapes-panoptic-semantic",
                                                     "head_of": {"name": "shapes-panoptic", "root": str(pan.root)}}
    # the panoptic source's dataset category ids travel by class name
    assert fused.manifest.decoder_options.category_ids == pan.manifest.decoder_options.category_ids
    r = _pq_on_generator(fused)
    # measured 2026-12-01: PQ 78.7 (things 59.6, stuff 97.8); `shapes` + `shapes-instance` give ~75
    assert r.stuff.n == 3 and r.things.n == 3 and r.pq > 0.7 and r.stuff.pq > 0.9, r


def test_fuse_refuses_bad_pairs(tmp_path):
    from edgeseg.errors import InputError
    from edgeseg.export.fuse import fuse_bundles, semantic_head

    with pytest.raises(InputError, match="wrong order") as e:
        fuse_bundles("shapes-instance", "shapes", tmp_path / "x")
    assert "swap them: edgeseg fuse SEMANTIC INSTANCE" in str(e.value)
    with pytest.raises(InputError, match="first bundle must be semantic"):
        fuse_bundles("shapes-instance", "shapes-instance", tmp_path / "x")
    with pytest.raises(InputError, match="no semantic output"):
        semantic_head("shapes", tmp_path / "z")
    with pytest.raises(InputError, match="second bundle must be an instance one"):
        fuse_bundles("shapes", "road", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_letterboxed_models_fuse_only_with_the_same_anchor():
    """One frame is letterboxed once for both branches: a centred and a top-left letterbox of the same size
    put the image in different places, so they are refused, and the fix names the anchor (not the size)."""
    from edgeseg.errors import InputError
    from edgeseg.export.fuse import _check_geometry
    from edgeseg.structures import ImageShape, InputSpec

    centred = InputSpec(size=ImageShape(64, 64), resize="letterbox", pad_value=114)
    corner = InputSpec(size=ImageShape(64, 64), resize="letterbox", anchor="top-left", pad_value=114)
    assert _check_geometry(corner, corner) is False and _check_geometry(centred, centred) is False
    with pytest.raises(InputError, match="same size and geometry") as e:
        _check_geometry(centred, corner)
    assert "letterbox, center" in str(e.value) and "--anchor top-left" in e.value.fix
    with pytest.raises(InputError) as e:
        _check_geometry(InputSpec(size=ImageShape(32, 32), resize="letterbox"), corner)
    assert "edgeseg export WEIGHTS --size 64x64" in e.value.fix and "--anchor top-left" in e.value.fix
    # one letterboxes, the other stretches: the letterboxing one is named (a shipped semantic bundle + a YOLO import)
    with pytest.raises(InputError) as e:
        _check_geometry(InputSpec(size=ImageShape(360, 480)), InputSpec(size=ImageShape(320, 320), resize="letterbox"))
    assert "import the instance model again with --resize resize" in e.value.fix
    with pytest.raises(InputError) as e:
        _check_geometry(InputSpec(size=ImageShape(320, 320), resize="letterbox"), InputSpec(size=ImageShape(360, 480)))
    assert "import the semantic model again with --resize resize" in e.value.fix
    # plain resizes ignore the anchor
    plain = InputSpec(size=ImageShape(64, 64))
    assert _check_geometry(plain, InputSpec(size=ImageShape(64, 64), anchor="top-left")) is False


def test_fuse_cli(tmp_path, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    out = tmp_path / "f.edgeseg"
    assert main(["fuse", "shapes", "shapes-instance", "--things", "circle,triangle", "--stuff-area", "50",
                 "--out", str(out), "--json", str(tmp_path / "p.json")]) == 0
    m = Bundle.open(out).manifest
    # the semantic model's rectangle, not a chosen thing, stays stuff
    assert m.classes == ("sky", "ground", "road", "rectangle", "circle", "triangle")
    assert m.decoder_options.stuff_area == 50
    assert "things circle, triangle" in capsys.readouterr().out
    assert main(["fuse", "shapes", "shapes-instance", "--things", "hexagon", "--out", str(tmp_path / "g")]) != 0
    assert np.isfinite(Bundle.open(out).report["parity"]["min_pixel_agreement"])


def test_fuse_takes_the_datasets_category_ids_by_name(tmp_path, capsys):
    """``--categories JSON``: a semantic model trained on a dataset's label maps knows no category ids; the
    fused bundle predicts the JSON's, matched by class name (case aside); a class the JSON does not
    name, or a file that is not such a JSON, is a clear error."""
    import json

    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    cats = {"categories": [{"id": 40 + k, "name": n.upper(), "isthing": int(n in ("circle", "rectangle", "triangle"))}
                           for k, n in enumerate(("sky", "ground", "road", "circle", "rectangle", "triangle"))]}
    path = tmp_path / "panoptic_val.json"
    path.write_text(json.dumps(cats))
    out = tmp_path / "f.edgeseg"
    assert main(["fuse", "shapes", "shapes-instance", "--categories", str(path), "--out", str(out)]) == 0
    m = Bundle.open(out).manifest
    assert m.classes == ("sky", "ground", "road", "circle", "rectangle", "triangle")
    assert m.decoder_options.category_ids == (40, 41, 42, 43, 44, 45)
    from edgeseg.errors import InputError
    from edgeseg.export.fuse import fuse_bundles

    with pytest.raises(InputError, match="no category for the fused class.*triangle"):
        fuse_bundles("shapes", "shapes-instance", tmp_path / "g.edgeseg", category_ids={"sky": 1})
    capsys.readouterr()
    for content, message in ((json.dumps({"categories": cats["categories"][:5]}), "no category for the fused class"),
                              (json.dumps({"categories": []}), "lists no categories"),
                              (json.dumps({"images": []}), "is not a COCO panoptic file"),
                              ("{not json", "cannot read --categories file")):
        path.write_text(content)
        assert main(["fuse", "shapes", "shapes-instance", "--categories", str(path), "--out", str(tmp_path / "h")]) != 0
        assert message in capsys.readouterr().err
        assert not (tmp_path / "h").exists()
    assert main(["fuse", "shapes", "shapes-instance", "--categories", str(tmp_path / "nope.json"),
                 "--out", str(tmp_path / "h")]) != 0
    assert "--categories file not found" in capsys.readouterr().err


def test_class_score_thresholds_hold_back_one_class(fused, tmp_path):
    """A per-class threshold above every circle's score removes the circles and nothing else; one below
    the fused threshold lets that class's weaker instances in (the branch is decoded at the lowest)."""
    from collections import Counter

    import edgeseg
    from edgeseg.data import SceneGenerator
    from edgeseg.errors import InputError
    from edgeseg.structures import ImageShape

    img = SceneGenerator(ImageShape(240, 320), seed=5).render(80).image
    with edgeseg.load(fused, backend="onnxruntime", precision="fp32") as pf:
        base = pf(img)
        circle = pf.manifest.classes.index("circle")
        assert any(s.category_id == circle for s in base.segments)
        pf.set_options(class_score_thresholds={"circle": 1.0})
        held = pf(img)
        assert not any(s.category_id == circle for s in held.segments)
        kept = Counter(s.category_id for s in held.segments if s.isthing)
        # every other instance stays (one the circles had covered may now come in as well)
        assert kept >= Counter(s.category_id for s in base.segments if s.isthing and s.category_id != circle)
        pf.set_options(class_score_thresholds={}, score_threshold=0.1)
        low = pf(img)
        pf.set_options(score_threshold=0.3, class_score_thresholds={n: 0.1 for n in ("circle", "rectangle", "triangle")})
        assert [(s.category_id, s.area) for s in pf(img).segments] == [(s.category_id, s.area) for s in low.segments]
        pf.set_options(class_score_thresholds={"sky": 0.5})
        with pytest.raises(InputError, match="'sky', not a thing class") as e:
            pf(img)
        assert "circle, rectangle, triangle" in e.value.fix
    from edgeseg.export.fuse import fuse_bundles
    from edgeseg.structures import PanopticOptions

    out = tmp_path / "bad.edgeseg"
    with pytest.raises(InputError, match="the fused bundle: class_score_thresholds names 'hexagon', not a thing class"):
        fuse_bundles("shapes", "shapes-instance", out, options=PanopticOptions(class_score_thresholds={"hexagon": 0.5}))
    assert not out.exists()


@pytest.mark.parametrize("value, match", [("car", "not NAME=THRESHOLD"), ("car=high", "not NAME=THRESHOLD"),
                                          ("=0.3", "not NAME=THRESHOLD"), (",", "names no class")])
def test_class_score_thresholds_option_errors(value, match):
    from edgeseg.cli.fuse import class_score_thresholds
    from edgeseg.errors import InputError

    with pytest.raises(InputError, match=match):
        class_score_thresholds(value)


def test_class_score_thresholds_parse_and_validate():
    from edgeseg.cli.fuse import class_score_thresholds
    from edgeseg.errors import InputError
    from edgeseg.structures import PanopticOptions

    assert class_score_thresholds("rider=0.5, traffic light=0.2,car=.35") == {"rider": 0.5, "traffic light": 0.2, "car": 0.35}
    assert class_score_thresholds(None) is None
    assert PanopticOptions.from_dict({"class_score_thresholds": {"car": 1}}).class_score_thresholds == {"car": 1.0}
    with pytest.raises(InputError, match=r"class_score_thresholds\['car'\] must be within 0..1"):
        PanopticOptions(class_score_thresholds={"car": 1.5})
    with pytest.raises(InputError, match=r"score_threshold must be within 0..1, got nan") as e:
        PanopticOptions(score_threshold=float("nan"))
    assert e.value.fix == "give score_threshold a number from 0 to 1"
    with pytest.raises(InputError, match="must map thing class names to numbers"):
        PanopticOptions.from_dict({"class_score_thresholds": [["car", 0.3]]})


def test_sweep_class_thresholds_start_from_the_bundles_own(tmp_path):
    """tools/bench/panoptic_sweep.py's coordinate ascent starts from the per-class thresholds the bundle
    carries (its grid rows were decoded with them): what it returns scores the PQ it reports. Session 31
    found it starting from none: with nothing better, it returned {} and dropped the bundle's thresholds."""
    import sys
    from pathlib import Path

    import edgeseg
    from edgeseg.data import open_dataset
    from edgeseg.export.fuse import fuse_bundles
    from edgeseg.structures import PanopticOptions

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
    import panoptic_sweep

    held = fuse_bundles("shapes", "shapes-instance", tmp_path / "held.edgeseg",
                        options=PanopticOptions(class_score_thresholds={"circle": 1.0}))
    data = open_dataset("synthetic-panoptic:6,size=320x240")
    cats = data.categories.values()
    with edgeseg.load(held, backend="onnxruntime", precision="fp32") as pred:
        cached = panoptic_sweep._outputs(pred, data, None, spread=False)
        start = panoptic_sweep._pq(pred, cached, cats, {})["PQ"]
        free = panoptic_sweep._pq(pred, cached, cats, {"class_score_thresholds": {}})["PQ"]
        assert free != pytest.approx(start)  # the held-back circles count
        chosen = panoptic_sweep._class_thresholds(pred, cached, cats, {}, [1.0], start, rounds=1)
        assert chosen == {"circle": 1.0}  # holding every other class back too only loses
        assert panoptic_sweep._pq(pred, cached, cats, {"class_score_thresholds": chosen})["PQ"] == pytest.approx(start)


def test_a_float16_branch_fuses_and_the_report_says_why_its_threshold_is_relaxed(tmp_path):
    """A float16 instance model (Ultralytics' half=True and the like) beside a semantic model of the same size:
    apart, its frames are rounded to float16 on the host; in the fused graph ONNX Runtime may drop the adapter's
    Cast pair around ops it runs in float32 (an audit measured 99.24 % agreement for a half=True YOLO export,
    below the 99.9 % of a float32 pair). The fused bundle equals the two apart within the relaxed threshold, which
    the parity report names as applied for the float16 input alone."""
    import dataclasses

    import onnx
    from onnx import TensorProto, helper

    from edgeseg.bundle import Bundle, ModelFile
    from edgeseg.export import import_onnx
    from edgeseg.export.fuse import FAIL_PIXELS_HALF, fuse_bundles
    from edgeseg.structures import ImageShape, InputSpec

    from handmade_bundles import conv_model

    src = Bundle.open("shapes-instance")
    m = onnx.load(str(src.model_path("fp32")))
    x = m.graph.input[0]  # float16 in, as a half=True export takes it; the rest of the model unchanged
    x.type.tensor_type.elem_type = TensorProto.FLOAT16
    for n in m.graph.node:
        n.input[:] = [f"{x.name}_f32" if i == x.name else i for i in n.input]
    m.graph.node.insert(0, helper.make_node("Cast", [x.name], [f"{x.name}_f32"], to=TensorProto.FLOAT))
    onnx.save(m, str(tmp_path / "half.onnx"))
    man = dataclasses.replace(src.manifest, input=dataclasses.replace(src.manifest.input, dtype="float16"), models=(),
                              files={})
    half = Bundle.create(tmp_path / "half.edgeseg", man)
    half.add_model(ModelFile("model.onnx", "fp32", opset=src.model_entry("fp32").opset), tmp_path / "half.onnx")
    size = src.manifest.input.size  # a semantic model of the instance model's own size and resize: no in-graph resize
    conv_model(tmp_path / "sem.onnx", 3, size=ImageShape(size.height, size.width), dynamic=False)
    import_onnx(tmp_path / "sem.onnx", tmp_path / "sem.edgeseg", classes=("sky", "ground", "road"),
                input_spec=InputSpec(size=size))
    fused = fuse_bundles(tmp_path / "sem.edgeseg", tmp_path / "half.edgeseg", tmp_path / "fused.edgeseg")
    parity = fused.report["parity"]
    assert parity["passed"] and parity["min_pixel_agreement"] >= FAIL_PIXELS_HALF
    assert parity["thresholds"] == {"pixel_agreement": FAIL_PIXELS_HALF, "relaxed_for": ["float16 instance input"]}
    full = fuse_bundles(tmp_path / "sem.edgeseg", "shapes-instance", tmp_path / "full.edgeseg")
    assert "relaxed_for" not in full.report["parity"]["thresholds"]  # float32 pairs of one size keep 99.9 %


def test_bundles_of_two_domains_are_fused_with_a_warning(tmp_path, caplog):
    """An audit: `fuse street-semantic shapes-instance` (no class in common) was written without a word: person and
    car stuff, circle a thing."""
    from edgeseg.export.fuse import fuse_bundles

    with caplog.at_level("WARNING", logger="edgeseg.export"):
        fuse_bundles("street-semantic", "shapes-instance", tmp_path / "f.edgeseg", parity_frames=1)
    assert "share no class name" in caplog.text and "circle" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgeseg.export"):
        fuse_bundles("shapes", "shapes-instance", tmp_path / "g.edgeseg", parity_frames=1)
    assert "share no class name" not in caplog.text
