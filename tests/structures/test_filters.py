"""``--classes``: keeping some classes of instance and panoptic results (Ultralytics' ``classes=0,2``), drawing some
classes of a semantic label map (jetson-inference's ``--ignore-class`` the other way round), by hand and through
``edgeseg predict`` / ``edgeseg run``."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.structures import ImageShape, InstanceResult, PanopticResult, Segment
from edgeseg.structures.filters import class_ids, keep_classes

CLASSES = ("person", "car", "bus")


def test_class_ids_read_names_and_indices_and_name_the_bundle_s_classes():
    assert class_ids("Person, bus", CLASSES) == (0, 2) and class_ids("1,0", CLASSES) == (0, 1)
    assert class_ids(["car", 2], CLASSES) == (1, 2)
    with pytest.raises(InputError, match="'truck', '7' is no class") as e:
        class_ids("truck,7", CLASSES)
    assert "0 person, 1 car, 2 bus" in e.value.fix
    with pytest.raises(InputError, match="empty"):
        class_ids(" , ", CLASSES)


def test_numbers_of_a_panoptic_bundle_are_its_category_ids_as_its_records_say():
    """An audit: ``--classes 7`` of street-panoptic (Cityscapes ids) kept index 7, traffic sign, where its JSON calls
    road 7; ``--classes 26`` (car's class_id in the JSON) was refused."""
    names, ids = ("road", "car", "person"), (7, 26, 24)
    assert class_ids("7,26", names, ids) == (0, 1) and class_ids("Person,7", names, ids) == (0, 2)
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("edgeseg.structures.filters").addHandler(handler)
    try:  # a number that was an index before (a review: recipes would change meaning without a word)
        assert class_ids("2", ("a", "b", "c"), (2, 0, 1)) == (0,)
    finally:
        logging.getLogger("edgeseg.structures.filters").removeHandler(handler)
    assert "2 is a, not the class at index 2 (c)" in records[0].getMessage()
    with pytest.raises(InputError, match="'1' is no class") as e:
        class_ids("1", names, ids)
    assert "category ids (the class_id of its records) of its classes: 7 road, 26 car, 24 person" in e.value.fix


def test_keep_classes_of_instances_and_panoptic_segments_by_hand():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 2, 2] = True
    inst = InstanceResult(boxes=np.zeros((3, 4), np.float32), scores=np.array([0.9, 0.8, 0.7], np.float32),
                          classes=np.array([0, 1, 2], np.int32), masks=masks, image_shape=ImageShape(4, 5))
    kept = keep_classes(inst, (0, 2))
    assert kept.classes.tolist() == [0, 2] and kept.scores.tolist() == pytest.approx([0.9, 0.7])
    assert len(keep_classes(inst, (1,))) == 1
    ids = np.array([[1, 1, 2], [3, 3, 2]], np.int32)
    pan = PanopticResult(ids, (Segment(1, 7, False, 2), Segment(2, 26, True, 2), Segment(3, 24, True, 2)),
                         class_names=("road", "car", "person"), category_ids=(7, 26, 24))
    out = keep_classes(pan, (0, 2))  # road and person: the car's pixels become void
    assert out.segment_ids.tolist() == [[1, 1, 0], [3, 3, 0]] and [s.id for s in out.segments] == [1, 3]
    assert keep_classes(pan, (0, 1, 2)) is pan


def test_predict_and_run_keep_the_classes_asked_for(tmp_path):
    """The shipped shapes-instance model on generated scenes of circles, rectangles and triangles."""
    run = [sys.executable, "-m", "edgeseg", "run", "--bundle", "shapes-instance", "--source",
           "synthetic://?frames=4&size=320x240", "--backend", "onnxruntime"]
    r = subprocess.run([*run, "--json-out", "all.jsonl"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*run, "--json-out", "circles.jsonl", "--classes", "circle"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    every = [json.loads(line)["segments"] for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    circles = [json.loads(line)["segments"] for line in (tmp_path / "circles.jsonl").read_text().splitlines()]
    assert {s["class"] for f in every for s in f} == {"circle", "rectangle", "triangle"}
    assert circles == [[s for s in f if s["class"] == "circle"] for f in every] and any(circles)
    r = subprocess.run([*run[:5], "shapes", *run[6:], "--classes", "circle"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)  # a semantic bundle without a video sink: said, nothing changes
    assert r.returncode == 0 and "without a video sink (--sink" in r.stderr, r.stderr
    from edgeseg.cli import main
    from edgeseg.data.io import write_image
    from edgeseg.data.synthetic_instances import SyntheticInstances

    write_image(tmp_path / "a.png", SyntheticInstances(1, ImageShape(240, 320), seed=3)[0].image())
    for name, extra in (("all", []), ("tri", ["--classes", "2"])):
        assert main(["predict", "shapes-instance", str(tmp_path / "a.png"), "--json", str(tmp_path / f"{name}.json"),
                     "--backend", "onnxruntime", *extra]) == 0
    got = {n: json.loads((tmp_path / f"{n}.json").read_text())["images"][0]["instances"] for n in ("all", "tri")}
    assert got["tri"] == [d for d in got["all"] if d["class"] == "triangle"]



def test_a_semantic_overlay_draws_only_the_classes_asked_for_and_the_label_maps_keep_every_class(tmp_path):
    """Before: ``--classes`` refused semantic bundles (jetson-inference users hide a class with ``--ignore-class``).
    Now the kept classes' pixels are drawn exactly as without it, every other pixel is the image's own, and the
    legend lists only them; the label PNG and the JSON are unchanged."""
    from edgeseg.cli import main
    from edgeseg.data.io import read_image, read_label, write_image
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.stream.overlay import Renderer
    from edgeseg.structures import SemanticResult

    labels = np.zeros((40, 60), np.uint8)
    labels[:, 20:40], labels[:, 40:] = 1, 2
    image = np.full((40, 60, 3), 90, np.uint8)
    palette = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)
    full = Renderer(palette, ("a", "b", "c"), alpha=0.5, legend=False, hud=False)(image, SemanticResult(labels))
    some = Renderer(palette, ("a", "b", "c"), alpha=0.5, legend=False, hud=False, only=(2,))(image, SemanticResult(labels))
    assert (some[:, 40:] == full[:, 40:]).all() and (some[:, 40:] == [45, 45, 145]).all()  # (90 + 200) / 2, by hand
    assert (some[:, :40] == 90).all()
    wide = SemanticResult(np.where(labels == 2, 300, labels).astype(np.int32))  # int32 labels: np.isin, same pixels
    assert (Renderer(np.zeros((301, 3), np.uint8), alpha=1.0, legend=False, hud=False, only=(300,))(image, wide)[:, :40]
            == 90).all()

    from edgeseg.stream.overlay import present_classes

    assert present_classes(SemanticResult(labels), (2, 5)) == [2] and present_classes(SemanticResult(labels)) == [0, 1, 2]
    write_image(tmp_path / "a.png", next(iter(SceneGenerator(ImageShape(120, 160), seed=4).frames(1))).image)
    for name, extra in (("all", []), ("circles", ["--classes", "circle"])):
        assert main(["predict", "shapes", str(tmp_path / "a.png"), "--out", str(tmp_path / name), "--json",
                     str(tmp_path / f"{name}.json"), "--backend", "onnxruntime", *extra]) == 0
    got = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("all", "circles")}
    assert got["all"]["images"][0]["class_pixels"] == got["circles"]["images"][0]["class_pixels"]
    row = got["all"]["images"][0]  # the keys instance and panoptic rows have (an audit: only the table's before)
    assert (row["file"], row["height"], row["width"]) == (str(tmp_path / "a.png"), 120, 160)
    lab = read_label(tmp_path / "all" / "a_labels.png")
    assert (read_label(tmp_path / "circles" / "a_labels.png") == lab).all() and (lab == 3).any()
    src, every, circles = (read_image(p) for p in (tmp_path / "a.png", tmp_path / "all" / "a_overlay.png",
                                                   tmp_path / "circles" / "a_overlay.png"))
    body = np.zeros(lab.shape, bool)
    body[:, 70:] = True  # right of the legend
    assert (circles[(lab == 3) & body] == every[(lab == 3) & body]).all()
    assert (circles[(lab != 3) & body] == src[(lab != 3) & body]).all()


def test_one_class_number_is_taken_as_a_list_of_one():
    """``keep_classes(result, 2)`` in Python raised "'int' object is not iterable"."""
    assert class_ids(2, ("a", "b", "c")) == (2,) == class_ids("c", ("a", "b", "c"))
