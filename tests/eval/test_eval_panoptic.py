"""PQ / SQ / RQ as the COCO panopticapi defines them: GT vs GT, perturbed predictions by hand, bad
input (clear errors naming the image), the COCO-panoptic writer and the ``coco-panoptic:`` spec."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edgeseg.data import CocoPanoptic, SceneGenerator
from edgeseg.errors import DataError, InputError
from edgeseg.eval import PanopticMetric, PQGroup
from edgeseg.structures import ImageShape, PanopticResult, Segment


@pytest.fixture(scope="module")
def coco(data_root):
    root = data_root / "panoptic_coco"
    return CocoPanoptic(root / "panoptic_examples.json", root / "panoptic_examples", root / "input_images")


@pytest.mark.data
def test_coco_ground_truth_against_itself(coco):
    assert len(coco) == 2
    m = PanopticMetric({c.id: c.isthing for c in coco.categories.values()})
    n_segments = 0
    for s in coco:
        for seg in s.panoptic.segments:  # areas in the JSON equal the PNG's pixel counts
            assert seg.area == int((s.panoptic.segment_ids == seg.id).sum())
        m.update(s.panoptic, s.panoptic, s.crowd_ids)
        n_segments += len(s.panoptic.segments) - len(s.crowd_ids)
    r = m.compute()
    assert r.pq == r.all.sq == r.all.rq == 1.0 and r.things.pq == 1.0 and r.stuff.pq == 1.0
    assert sum(c.tp for c in r.per_class) == n_segments and all(c.fp == c.fn == 0 for c in r.per_class)
    assert coco[0].image().shape == coco[0].panoptic.segment_ids.shape + (3,)


@pytest.mark.data
def test_coco_perturbed_prediction_by_hand(coco):
    s = coco[0]  # 000000142238: 13 persons + a person crowd, a sports ball (37), stuff 184, 187, 193
    assert s.name == "000000142238" and s.crowd_ids == {3153362}
    ids = s.panoptic.segment_ids.copy()
    segs = {seg.id: seg for seg in s.panoptic.segments}
    ids[ids == 4917453] = 0  # (a) a person deleted -> FN
    del segs[4917453]
    segs[11829830] = replace(segs[11829830], category_id=193)  # (b) stuff 187 called 193 -> FN 187, FP 193
    ys, xs = np.nonzero(ids == 2035955)  # (c) half of a person (2301 px) set to void: IoU 1151/2301 > 0.5
    ids[ys[:1150], xs[:1150]] = 0
    pred = PanopticResult(ids, tuple(segs.values()))
    m = PanopticMetric({c.id: c.isthing for c in coco.categories.values()})
    m.update(pred, s.panoptic, s.crowd_ids)
    r = {c.category_id: c for c in m.compute().per_class}
    person_iou = 11 + 1151 / 2301
    assert (r[1].tp, r[1].fp, r[1].fn) == (12, 0, 1)
    assert r[1].pq == pytest.approx(person_iou / 12.5, rel=1e-12)
    assert r[1].sq == pytest.approx(person_iou / 12, rel=1e-12) and r[1].rq == 12 / 12.5
    assert (r[187].tp, r[187].fp, r[187].fn, r[187].pq, r[187].sq) == (0, 0, 1, 0.0, 0.0)
    assert (r[193].tp, r[193].fp, r[193].fn) == (1, 1, 0) and r[193].pq == pytest.approx(2 / 3)
    assert r[37].pq == r[184].pq == 1.0
    out = m.compute()
    assert out.things.n == 2 and out.things.pq == pytest.approx((person_iou / 12.5 + 1) / 2, rel=1e-12)
    assert out.stuff.n == 3 and out.stuff.pq == pytest.approx((1 + 0 + 2 / 3) / 3, rel=1e-12)
    assert out.all.pq == pytest.approx((person_iou / 12.5 + 1 + 1 + 0 + 2 / 3) / 5, rel=1e-12)


def test_void_and_crowd_rules_tiny():
    gt_ids = np.array([[1, 1, 1, 1], [2, 2, 0, 0], [3, 3, 3, 3]], np.int32)
    gt = PanopticResult(gt_ids, (Segment(1, 5, True), Segment(2, 5, True), Segment(3, 9, False)))
    pred_ids = np.array([[7, 7, 7, 8], [8, 8, 8, 8], [3, 3, 3, 3]], np.int32)
    pred = PanopticResult(pred_ids, (Segment(7, 5, True), Segment(8, 5, True), Segment(3, 9, False)))
    m = PanopticMetric()
    m.update(pred, gt, gt_crowd_ids={2})
    r = {c.category_id: c for c in m.compute().per_class}
    # seg 7 vs gt 1: inter 3, union 3+4-3-0 = 4 -> IoU 0.75 TP. Pred 8 (5 px): 1 on gt 1, 2 on crowd 2,
    # 2 on void -> 4/5 on void+crowd of its class -> not FP. Crowd gt 2 is never a FN.
    assert (r[5].tp, r[5].fp, r[5].fn) == (1, 0, 0) and r[5].pq == 0.75
    assert (r[9].tp, r[9].pq) == (1, 1.0)


def test_synthetic_panoptic_truth_scores_one():
    gen = SceneGenerator(ImageShape(72, 96), seed=2)
    m = PanopticMetric()
    for t in (0, 25, 50):
        p = gen.render(t).panoptic
        m.update(p, p)
    r = m.compute()
    assert r.pq == 1.0 and r.things.n == 3 and r.stuff.n == 3


# ---- bad input: clear errors, or the reference's counting ----------------------------------------
def _tiny():
    gt = PanopticResult(np.array([[1, 1, 0], [2, 2, 2]], np.int32), (Segment(1, 5, True), Segment(2, 9, False)))
    return gt, {5: True, 9: False}


def test_unknown_category_is_refused_naming_it_and_the_image():
    gt, cats = _tiny()
    pred = PanopticResult(gt.segment_ids, (Segment(1, 7, True), Segment(2, 9, False)))
    m = PanopticMetric(cats)
    with pytest.raises(InputError, match=r"'frame_7'.*segment 1 has category 7.*\(5, 9\)"):
        m.update(pred, gt, name="'frame_7'")
    # a listed segment without pixels is skipped, whatever its category (panopticapi never sees it)
    m.update(PanopticResult(gt.segment_ids, (*gt.segments, Segment(3, 7, True))), gt)
    assert [(c.category_id, c.tp, c.fp, c.fn) for c in m.compute().per_class] == [(5, 1, 0, 0), (9, 1, 0, 0)]
    # without the dataset's categories any category counts (as a false positive here)
    m = PanopticMetric()
    m.update(pred, gt)
    got = {c.category_id: (c.tp, c.fp, c.fn) for c in m.compute().per_class}
    assert got == {5: (0, 0, 1), 7: (0, 1, 0), 9: (1, 0, 0)}


def test_unknown_category_reference_raises_too(tmp_path):
    ref = pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling")
    from edgeseg.data.coco_panoptic import Category
    from edgeseg.eval.panoptic_io import PanopticWriter

    gt, _ = _tiny()
    cats = {5: Category(5, "thing", True), 9: Category(9, "stuff", False)}
    pred = PanopticResult(gt.segment_ids, (Segment(1, 7, True), Segment(2, 9, False)))
    with pytest.raises(InputError, match=r"image 1 \(a\.png\).*segment 1 has category 7"):
        PanopticWriter(tmp_path / "p.json", categories=cats).add(1, "a.png", pred)
    with PanopticWriter(tmp_path / "gt.json", categories=cats) as w:
        w.add(1, "a.png", gt)
    with PanopticWriter(tmp_path / "p.json") as w:  # no categories given: written as is
        w.add(1, "a.png", pred)
    gt_ann, pred_ann = (json.loads((tmp_path / f).read_text())["annotations"][0] for f in ("gt.json", "p.json"))
    with pytest.raises(KeyError, match="unknown category_id 7"):
        ref.pq_compute_single_core(0, [(gt_ann, pred_ann)], str(tmp_path / "gt"), str(tmp_path / "p"),
                                   {5: {"isthing": 1}, 9: {"isthing": 0}})


def test_void_only_truth_and_empty_prediction_by_hand():
    gt, cats = _tiny()
    void = PanopticResult(np.zeros((2, 3), np.int32))
    m = PanopticMetric(cats)
    m.update(gt, void)  # every predicted pixel on void: nothing is a false positive
    assert m.compute().per_class == () and m.compute().all == PQGroup(0.0, 0.0, 0.0, 0)
    m.update(void, gt)  # nothing predicted: each truth segment a miss
    r = m.compute()
    assert [(c.category_id, c.tp, c.fp, c.fn, c.pq) for c in r.per_class] == [(5, 0, 0, 1, 0.0), (9, 0, 0, 1, 0.0)]
    assert r.num_images == 2 and (r.things.n, r.stuff.n) == (1, 1)


def test_ids_without_segment_and_size_mismatch_name_the_image(tmp_path):
    from edgeseg.eval.panoptic_io import PanopticWriter, read_panoptic_results, write_panoptic_png

    gt, cats = _tiny()
    stray = PanopticResult(np.array([[1, 1, 4], [2, 2, 2]], np.int32), gt.segments)
    with pytest.raises(InputError, match=r"of 'x'.*segment id\(s\) \[4\]"):
        PanopticMetric(cats).update(stray, gt, name="'x'")
    with pytest.raises(InputError, match=r"image 3 \(x\.png\).*segment id\(s\) \[4\]"):
        PanopticWriter(tmp_path / "w.json").add(3, "x.png", stray)
    # a results file by someone else: the PNG has an id its segments_info does not list
    write_panoptic_png(tmp_path / "r" / "x.png", stray.segment_ids)
    (tmp_path / "r.json").write_text(json.dumps({"annotations": [{"image_id": 3, "file_name": "x.png", "segments_info": [
        {"id": 1, "category_id": 5, "iscrowd": 0}, {"id": 2, "category_id": 9, "iscrowd": 0}]}]}))
    with pytest.raises(InputError, match=r"image 3 \(x\.png\) has segment id\(s\) \[4\]"):
        read_panoptic_results(tmp_path / "r.json")
    big = PanopticResult(np.zeros((3, 3), np.int32))
    with pytest.raises(InputError, match=r"of 'x' is \[3, 3\] and its ground truth \[2, 3\]"):
        PanopticMetric(cats).update(big, gt, name="'x'")


def test_writer_is_atomic_and_writes_json_only_after_a_clean_run(tmp_path):  # PNGs staged until close() since the audit
    from edgeseg.data import read_panoptic_png
    from edgeseg.eval.panoptic_io import PanopticWriter

    gt, _ = _tiny()
    with pytest.raises(RuntimeError):
        with PanopticWriter(tmp_path / "p.json") as w:
            w.add(1, "a.png", gt)
            raise RuntimeError("interrupted")
    assert not (tmp_path / "p.json").exists() and not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.*"))  # the staged PNG went with the run
    with PanopticWriter(tmp_path / "p.json") as w:
        w.add(1, "a.png", gt)
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "p" / "a.png"), gt.segment_ids)
    assert (tmp_path / "p.json").is_file() and not list(tmp_path.glob(".p.*"))
    with pytest.raises(InputError, match="relative path"):
        PanopticWriter(tmp_path / "q.json").add(1, "../escape.png", gt)


# ---- the coco-panoptic: dataset spec ---------------------------------------------------------
def _panoptic_files(root, *, images=True):
    from edgeseg.data import write_image
    from edgeseg.data.coco_panoptic import Category
    from edgeseg.eval.panoptic_io import PanopticWriter

    gt, _ = _tiny()
    cats = {5: Category(5, "thing", True), 9: Category(9, "stuff", False)}
    with PanopticWriter(root / "panoptic_val.json", categories=cats) as w:
        for k in (1, 2):
            w.add(k, f"im{k}.png", gt, image_file_name=f"im{k}.jpg" if images else None)
    for k in (1, 2):
        write_image(root / "val" / (f"im{k}.jpg" if images else f"im{k}.png"), np.full((2, 3, 3), 40 * k, np.uint8))
    return root / "panoptic_val.json"


def test_spec_opens_the_panopticapi_layout(tmp_path):
    from edgeseg.data import open_dataset

    path = _panoptic_files(tmp_path)
    for spec in (f"coco-panoptic:{path}", f"coco-panoptic:{tmp_path}", f"coco-panoptic:{path},images={tmp_path / 'val'}"):
        ds = open_dataset(spec, split="val")
        assert (ds.task, len(ds), ds.category_ids, ds.classes) == ("panoptic", 2, (5, 9), ("thing", "stuff"))
        s = ds[1]
        assert (s.image_id, s.file_name, s.name, s.image_path.name) == (2, "im2.png", "im2", "im2.jpg")
        assert s.image().shape == (2, 3, 3)
        np.testing.assert_array_equal(s.panoptic.segment_ids, _tiny()[0].segment_ids)


def test_spec_without_images_entries_finds_images_by_png_name(tmp_path):
    from edgeseg.data import open_dataset

    path = _panoptic_files(tmp_path, images=False)
    assert "images" not in json.loads(path.read_text())
    ds = open_dataset(f"coco-panoptic:{path}")
    assert ds[0].image_path == tmp_path / "val" / "im1.png" and int(ds[0].image()[0, 0, 0]) == 40
    (tmp_path / "val" / "im2.png").unlink()
    with pytest.raises(DataError, match=r"1 of 2 images.*not in .*val: im2\.png(.|\n)*--images DIR"):
        open_dataset(f"coco-panoptic:{path}")


def test_spec_missing_files_and_folders_name_the_path_and_the_fix(tmp_path):
    from edgeseg.data import open_dataset

    path = _panoptic_files(tmp_path)
    (tmp_path / "panoptic_val" / "im1.png").unlink()
    with pytest.raises(DataError, match=r"1 of 2 panoptic PNGs .* are not in .*panoptic_val: im1\.png"):
        open_dataset(f"coco-panoptic:{path}")
    with pytest.raises(DataError, match=r"panoptic PNG not found: .*im1\.png"):
        CocoPanoptic(path)[0]
    with pytest.raises(DataError, match=r"images folder .*nowhere not found(.|\n)*--images DIR"):
        open_dataset(f"coco-panoptic:{path},images={tmp_path / 'nowhere'}")
    (tmp_path / "val" / "im1.jpg").rename(tmp_path / "im1.jpg")
    (tmp_path / "val" / "im2.jpg").unlink()
    (tmp_path / "val").rmdir()
    with pytest.raises(DataError, match=r"no image folder 'val' beside(.|\n)*--images DIR"):
        open_dataset(f"coco-panoptic:{path}")
    for p in (tmp_path / "panoptic_val").iterdir():
        p.unlink()
    (tmp_path / "panoptic_val").rmdir()
    with pytest.raises(DataError, match=r"PNG folder .*panoptic_val not found \(named like panoptic_val\.json"):
        open_dataset(f"coco-panoptic:{path}")
    with pytest.raises(DataError, match=r"annotations not found: .*panoptic_test\.json"):
        open_dataset(f"coco-panoptic:{tmp_path}", split="test")


def test_a_failed_run_leaves_the_earlier_results_whole(tmp_path):
    """A second run into the same place that fails half way must not mix its PNGs with the first
    run's JSON (before the fix, image 1's PNG was replaced and the old JSON no longer described it)."""
    from edgeseg.eval.panoptic_io import PanopticWriter, read_panoptic_results

    gt, cats = _tiny()
    with PanopticWriter(tmp_path / "p.json") as w:
        w.add(1, "a.png", gt)
        w.add(2, "b.png", gt)
    before = {f: f.read_bytes() for f in (tmp_path / "p.json", tmp_path / "p" / "a.png", tmp_path / "p" / "b.png")}
    other = PanopticResult(np.where(gt.segment_ids > 0, 3, 0).astype(np.int32), (Segment(3, 9, False),))
    with pytest.raises(RuntimeError):
        with PanopticWriter(tmp_path / "p.json") as w:
            w.add(1, "a.png", other)
            raise RuntimeError("image 2 failed")
    assert {f: f.read_bytes() for f in before} == before and not list(tmp_path.glob(".p.*"))
    assert read_panoptic_results(tmp_path / "p.json")  # still a consistent results file


# ---- bad ground truth found by the instance/panoptic robustness audit ----------------------------
def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["annotations"][1].update(segments_info=None), r"annotation #1 \(im2\.png\): segments_info is a NoneType"),
    (lambda d: d["annotations"][1]["segments_info"][1].update(id=1), r"\(im2\.png\): segment id 1 is listed twice"),
    (lambda d: d["annotations"][0].update(file_name=7), r"annotation #0: its file_name is 7"),  # a TypeError before
    (lambda d: d["annotations"][0].update(file_name=""), r"annotation #0: its file_name is ''"),
])
def test_malformed_segments_info_is_refused_at_open(tmp_path, edit, match):
    from edgeseg.data import open_dataset
    from edgeseg.errors import DataError

    path = _panoptic_files(tmp_path)
    _edit_json(path, edit)
    with pytest.raises(DataError, match=match) as e:
        open_dataset(f"coco-panoptic:{path}")
    assert e.value.fix


@pytest.mark.parametrize("edit_png, edit, ids", [
    (lambda ids: ids.__setitem__((0, 0), 7), None, r"\[7\]"),  # a stray id in the PNG
    (None, lambda d: d["annotations"][1].update(segments_info=[]), r"\[1, 2\]"),  # no segments, a labelled PNG
])
def test_truth_png_ids_missing_from_segments_info_are_an_error(tmp_path, edit_png, edit, ids):
    """panopticapi scores such pixels as nobody's, silently, and with the JSON's areas, so the result
    depends on a file pair that does not belong together; edgeseg names the PNG and the ids."""
    from edgeseg.data import open_dataset, read_panoptic_png
    from edgeseg.errors import DataError
    from edgeseg.eval.panoptic_io import write_panoptic_png

    path = _panoptic_files(tmp_path)
    if edit_png is not None:
        png = tmp_path / "panoptic_val" / "im2.png"
        segment_ids = read_panoptic_png(png)
        edit_png(segment_ids)
        write_panoptic_png(png, segment_ids)
    if edit is not None:
        _edit_json(path, edit)
    ds = open_dataset(f"coco-panoptic:{path}")
    assert ds[0].panoptic.segment_ids.shape == (2, 3)  # the other image reads
    with pytest.raises(DataError, match=rf"im2\.png has segment id\(s\) {ids} that its segments_info") as e:
        ds[1]
    assert str(path) in str(e.value) and e.value.fix


def test_void_only_truth_still_reads(tmp_path):
    from edgeseg.data import open_dataset
    from edgeseg.eval.panoptic_io import write_panoptic_png

    path = _panoptic_files(tmp_path)
    write_panoptic_png(tmp_path / "panoptic_val" / "im2.png", np.zeros((2, 3), np.int32))
    _edit_json(path, lambda d: d["annotations"][1].update(segments_info=[]))
    s = open_dataset(f"coco-panoptic:{path}")[1]
    assert s.panoptic.segments == () and not s.panoptic.segment_ids.any()


def test_json_areas_that_are_not_the_pngs_pixel_counts_are_warned_about(caplog):
    """PQ counts pixels; panopticapi takes ground-truth areas from the JSON: when they disagree (PNGs
    resized without their JSON) the scores would differ, so the metric says so once and counts them."""
    gt, cats = _tiny()  # segment 1 has 2 pixels, segment 2 has 3
    m = PanopticMetric(cats)
    m.update(gt, PanopticResult(gt.segment_ids, (Segment(1, 5, True, 2), Segment(2, 9, False, 3))))
    assert m.stale_areas == 0 and not caplog.records
    stale = PanopticResult(gt.segment_ids, (Segment(1, 5, True, 8), Segment(2, 9, False, 12)))
    with caplog.at_level("WARNING", logger="edgeseg.eval"):
        m.update(gt, stale, name="'x'")
        m.update(gt, stale, name="'y'")
    assert m.stale_areas == 4
    assert len(caplog.records) == 1 and "segment 1 has area 8 in the JSON but 2 pixels" in caplog.text
    assert m.compute().pq == 1.0  # the pixels decide
