"""COCO mask AP against pycocotools' COCOeval(iouType="segm"): all 12 stats (and the precision /
recall arrays) on random and hand-made cases, the real Cityscapes instance truth, and the
evaluate_instances / ``edgeseg eval`` path with a stand-in predictor."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from edgeseg.data import CocoInstances, InstanceTruth, write_image
from edgeseg.errors import InputError
from edgeseg.eval import (
    STAT_NAMES, MaskAPAccumulator, category_map, coco_results, evaluate_instances, mask_ap, mask_iou,
)
from edgeseg.structures import ImageShape, InstanceResult

mask_util = pytest.importorskip("pycocotools.mask")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

# ---- building cases and scoring them both ways -------------------------------------------------
# A case: images {id: (h, w)}, ground truth [(image, category, mask, iscrowd, area)],
# detections [(image, category, mask, score)], categories (ids).


def rle(mask: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def tight_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def reference(images, gts, dets, cats, with_bbox=False):
    """pycocotools' stats, precision and recall (its printing silenced)."""
    dataset = {
        "images": [{"id": i, "height": h, "width": w} for i, (h, w) in images.items()],
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
        "annotations": [{"id": n + 1, "image_id": i, "category_id": c, "segmentation": rle(m), "area": a,
                         "iscrowd": int(cr), "bbox": tight_xywh(m)} for n, (i, c, m, cr, a) in enumerate(gts)],
    }
    results = [{"image_id": i, "category_id": c, "segmentation": rle(m), "score": s} for i, c, m, s in dets]
    if with_bbox:
        for r, (_, _, m, _) in zip(results, dets):
            r["bbox"] = tight_xywh(m)
    return _cocoeval(dataset, results, "segm")


def _cocoeval(dataset: dict, results: list[dict], iou_type: str):
    """pycocotools' stats, precision and recall of ``results`` against the ground truth ``dataset``."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.array(ev.stats), ev.eval["precision"], ev.eval["recall"]


def truth_of(gts, image_id, shape) -> InstanceTruth:
    g = [x for x in gts if x[0] == image_id]
    n = len(g)
    return InstanceTruth(
        masks=np.array([x[2] for x in g], bool).reshape(n, *shape), classes=np.zeros(n, np.int32),
        category_ids=np.array([x[1] for x in g], np.int64), boxes=np.zeros((n, 4), np.float32),
        iscrowd=np.array([x[3] for x in g], bool), area=np.array([x[4] for x in g], np.float64),
        image_shape=ImageShape(*shape), ids=np.arange(1, n + 1),
    )


def prediction_of(dets, image_id, shape, class_of=lambda c: c) -> InstanceResult:
    d = [x for x in dets if x[0] == image_id]
    n = len(d)
    masks = np.array([x[2] for x in d], bool).reshape(n, *shape)
    boxes = np.array([tight_xywh(m) for m in masks], np.float32).reshape(n, 4)
    boxes[:, 2:] += boxes[:, :2]
    return InstanceResult(boxes=boxes, scores=np.array([x[3] for x in d], np.float32),
                          classes=np.array([class_of(x[1]) for x in d], np.int32), image_shape=ImageShape(*shape),
                          masks=masks)


def ours(images, gts, dets, cats, prediction_area="mask"):
    acc = MaskAPAccumulator({c: f"c{c}" for c in cats}, prediction_area=prediction_area)
    for i, shape in sorted(images.items(), key=lambda kv: -kv[0]):  # any order: images are sorted by id
        acc.add(i, prediction_of(dets, i, shape), truth_of(gts, i, shape))
    return acc.compute()


def assert_same(case, **kw):
    want, precision, recall = reference(*case, with_bbox=kw.get("prediction_area") == "box")
    got = ours(*case, **kw)
    assert len(got.stats) == 12
    np.testing.assert_allclose(got.stats, want, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.precision, precision)  # bit-identical in practice
    np.testing.assert_array_equal(got.recall, recall)
    return got


def box_mask(shape, y0, x0, y1, x1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return m


def random_case(seed, n_img=6, cats=(1, 2, 5), shape=(120, 160)):
    """Rectangles of every size class, crowds, perturbed copies as detections (some with the wrong
    class), false positives, areas off the pixel count, scores on a 0.1 grid (many ties)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    images, gts, dets = {}, [], []
    for i in range(1, n_img + 1):
        images[i] = shape
        for _ in range(rng.integers(0, 8)):
            s = int(rng.choice([4, 10, 30, 60, 140]))
            y, x = int(rng.integers(-5, h)), int(rng.integers(-5, w))
            m = box_mask(shape, y, x, y + int(rng.integers(1, s + 1)), x + int(rng.integers(1, s + 1)))
            gts.append((i, int(rng.choice(cats[:-1] or cats)), m, bool(rng.random() < 0.15),
                        float(m.sum()) + float(rng.choice([0, 0, 0.5, -3]))))
        for _, c, m, _, _ in [g for g in gts if g[0] == i]:
            for _ in range(rng.integers(0, 3)):
                p = np.roll(m, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), (0, 1))
                if rng.random() < 0.3:
                    p = p & (rng.random(p.shape) < 0.8)
                dets.append((i, c if rng.random() < 0.85 else int(rng.choice(cats)), p, float(np.round(rng.random(), 1))))
        for _ in range(rng.integers(0, 5)):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            dets.append((i, int(rng.choice(cats)), box_mask(shape, y, x, y + 12, x + 9), float(np.round(rng.random(), 1))))
    return images, gts, dets, cats


# ---- against pycocotools ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_equal_pycocotools(seed):
    case = random_case(seed, n_img=1 + seed % 7, cats=((1, 2, 5), (3,), (1, 7, 9, 11))[seed % 3])
    assert_same(case)


@pytest.mark.parametrize("seed", range(3))
def test_box_area_mode_equals_pycocotools_results_with_bbox(seed):
    """loadRes takes the detection area from ``bbox`` (w*h) when results carry one."""
    assert_same(random_case(100 + seed), prediction_area="box")


def test_crowd_regions_match_repeatedly_and_are_ignored():
    shape = (60, 60)
    person = box_mask(shape, 0, 0, 20, 20)
    crowd = box_mask(shape, 30, 0, 60, 60)
    gts = [(1, 1, person, False, 400.0), (1, 1, crowd, True, 1800.0)]
    on_crowd = [box_mask(shape, 30, 0, 40, 20), box_mask(shape, 45, 10, 60, 50)]  # IoU with the crowd = 1 (over their area)
    dets = [(1, 1, on_crowd[0], 0.95), (1, 1, on_crowd[1], 0.9), (1, 1, person, 0.8),
            (1, 1, box_mask(shape, 0, 40, 10, 60), 0.1)]  # the last: a false positive ranked below everything
    got = assert_same(({1: shape}, gts, dets, (1,)))
    # both detections on the crowd match it and are ignored: the person is the first counted detection
    assert got.stats[0] == pytest.approx(1.0) and got.per_class[0].num_gt == 1
    # without the crowd they are two false positives ahead of the true positive: precision 1/3 at recall 1
    assert ours({1: shape}, gts[:1], dets, (1,)).stats[1] == pytest.approx(1 / 3)


def test_empty_images_no_predictions_and_categories_without_gt():
    shape = (40, 50)
    a, b = box_mask(shape, 2, 2, 12, 12), box_mask(shape, 20, 20, 35, 45)
    images = {1: shape, 2: shape, 3: shape, 4: shape}
    gts = [(1, 1, a, False, 100.0), (2, 1, b, False, 375.0), (2, 2, a, False, 100.0)]  # image 3, 4: no objects
    dets = [(1, 1, a, 0.9), (3, 1, b, 0.95), (3, 4, a, 0.3), (4, 2, b, 0.5)]  # image 2: no predictions
    got = assert_same((images, gts, dets, (1, 2, 4, 8)))
    by_id = {c.category_id: c for c in got.per_class}
    assert by_id[4].ap == -1 and by_id[8].ap == -1 and by_id[8].num_gt == 0  # no ground truth: -1, left out of AP
    assert by_id[1].num_gt == 2 and by_id[2].ap == 0.0
    assert got.num_images == 4


def test_no_predictions_at_all():
    """pycocotools cannot load an empty result list; every category with ground truth scores 0."""
    shape = (30, 30)
    acc = MaskAPAccumulator([1, 2])
    acc.add(1, None, truth_of([(1, 1, box_mask(shape, 0, 0, 5, 5), False, 25.0)], 1, shape))
    acc.add(2, InstanceResult.empty(ImageShape(*shape)), truth_of([], 2, shape))
    got = acc.compute()
    assert got.stats[:3] == (0.0, 0.0, 0.0) and got.stats[3] == 0.0 and got.stats[4] == got.stats[5] == -1.0
    assert got.stats[6:9] == (0.0, 0.0, 0.0) and got.per_class[1].ap == -1.0


def test_score_ties_within_and_across_images():
    shape = (30, 30)
    m = [box_mask(shape, 0, 3 * k, 5, 3 * k + 3) for k in range(6)]
    images = {1: shape, 2: shape, 5: shape}
    gts = [(1, 1, m[0], False, 15.0), (2, 1, m[1], False, 15.0), (5, 1, m[2], False, 15.0)]
    dets = [(5, 1, m[2], 0.5), (1, 1, m[3], 0.5), (1, 1, m[0], 0.5), (2, 1, m[4], 0.5), (2, 1, m[1], 0.5),
            (5, 1, m[5], 0.5)]
    got = assert_same((images, gts, dets, (1,)))
    assert 0 < got.stats[0] < 1


def test_area_range_boundaries_are_inclusive():
    """Areas exactly 32^2 and 96^2 count in both neighbouring ranges, as in COCOeval."""
    shape = (200, 200)
    sq = [box_mask(shape, 0, 0, 32, 32), box_mask(shape, 100, 100, 196, 196), box_mask(shape, 40, 40, 50, 50)]
    gts = [(1, 1, sq[0], False, 1024.0), (1, 1, sq[1], False, 9216.0), (1, 1, sq[2], False, 100.0)]
    dets = [(1, 1, sq[0], 0.9), (1, 1, np.roll(sq[1], 3, 1), 0.8), (1, 1, box_mask(shape, 60, 0, 92, 32), 0.7)]
    got = assert_same(({1: shape}, gts, dets, (1,)))
    assert min(got.stats[3:6]) >= 0  # small, medium and large all have ground truth


def test_more_than_100_detections_per_image_and_category():
    shape = (100, 150)
    rng = np.random.default_rng(3)
    gts, dets = [], []
    for k in range(30):
        y, x = int(rng.integers(0, 90)), int(rng.integers(0, 140))
        gts.append((1, 1, box_mask(shape, y, x, y + 10, x + 10), k % 9 == 0, 100.0))
    for k in range(150):  # the best 100 by score count; maxDets 1 and 10 cut further
        y, x = int(rng.integers(0, 90)), int(rng.integers(0, 140))
        dets.append((1, 1, box_mask(shape, y, x, y + 10, x + 10), float(np.round(0.6 * rng.random(), 2))))
    for _, c, m, _, _ in gts[:20]:
        dets.append((1, c, np.roll(m, 1, 0), float(np.round(0.5 + 0.5 * rng.random(), 2))))
    got = assert_same(({1: shape, 2: shape}, gts, dets, (1,)))
    assert got.stats[6] < got.stats[7] < got.stats[8]  # AR1 < AR10 < AR100


# ---- box AP (COCOeval(iouType="bbox")) -----------------------------------------------------------


def box_case(seed):
    """A random case whose ground-truth boxes are off the masks' pixel grid by fractions (as COCO's are) and
    whose detections carry boxes of their own (float32, as InstanceResult holds them)."""
    images, gts, dets, cats = random_case(300 + seed, n_img=4 + seed % 4)
    rng = np.random.default_rng(seed)
    gt_boxes = [np.array(tight_xywh(m)) + np.round(rng.uniform(-1.5, 1.5, 4), 2) for _, _, m, _, _ in gts]
    det_boxes = [np.array(tight_xywh(m), np.float32) + rng.uniform(-2, 2, 4).astype(np.float32) for _, _, m, _ in dets]
    return images, gts, dets, cats, gt_boxes, det_boxes


def box_reference(images, gts, dets, cats, gt_boxes, det_boxes):
    dataset = {
        "images": [{"id": i, "height": h, "width": w} for i, (h, w) in images.items()],
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
        "annotations": [{"id": n + 1, "image_id": i, "category_id": c, "segmentation": rle(m), "area": a,
                         "iscrowd": int(cr), "bbox": [float(v) for v in b]}
                        for n, ((i, c, m, cr, a), b) in enumerate(zip(gts, gt_boxes))],
    }
    results = []
    for (i, c, _, sc), b in zip(dets, det_boxes):
        x1, y1, w, h = (float(v) for v in b)
        x2, y2 = np.float32(x1 + w), np.float32(y1 + h)  # the xyxy float32 corners an InstanceResult holds
        results.append({"image_id": i, "category_id": c, "score": sc,
                        "bbox": [x1, y1, float(x2) - x1, float(y2) - y1]})
    return _cocoeval(dataset, results, "bbox")


def box_ours(images, gts, dets, cats, gt_boxes, det_boxes):
    acc = MaskAPAccumulator({c: f"c{c}" for c in cats}, iou_type="bbox")
    for i, shape in images.items():
        g = [k for k, x in enumerate(gts) if x[0] == i]
        truth = truth_of(gts, i, shape)
        truth = InstanceTruth(**{**vars(truth), "xywh": np.array([gt_boxes[k] for k in g], np.float64).reshape(-1, 4)})
        d = [k for k, x in enumerate(dets) if x[0] == i]
        xyxy = np.array([det_boxes[k] for k in d], np.float32).reshape(-1, 4)
        xyxy[:, 2:] = xyxy[:, :2] + xyxy[:, 2:]
        pred = InstanceResult(boxes=xyxy, scores=np.array([dets[k][3] for k in d], np.float32),
                              classes=np.array([dets[k][1] for k in d], np.int32), image_shape=ImageShape(*shape))
        acc.add(i, pred, truth)
    return acc.compute()


@pytest.mark.parametrize("seed", range(8))
def test_box_ap_equals_pycocotools_bbox(seed):
    """Box AP (``edgeseg eval`` reports it beside mask AP) equals COCOeval(iouType="bbox") on the same
    detections, bit for bit: fractional ground-truth boxes, crowds, score ties, every area range; the
    predictions carry no masks."""
    case = box_case(seed)
    want, precision, recall = box_reference(*case)
    got = box_ours(*case)
    np.testing.assert_allclose(got.stats, want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.precision, precision)
    np.testing.assert_array_equal(got.recall, recall)
    assert 0 < got.stats[0] < 1


def test_box_iou_equals_pycocotools_with_crowd():
    from edgeseg.eval.instance import box_iou

    rng = np.random.default_rng(1)
    dt = np.round(rng.uniform(0, 40, (9, 4)), 2)
    gt = np.round(rng.uniform(0, 40, (6, 4)), 2)
    dt[0, 2] = 0.0  # an empty box
    crowd = np.array([0, 1, 0, 1, 0, 0], np.uint8)
    np.testing.assert_array_equal(box_iou(dt, gt, crowd.astype(bool)), mask_util.iou(dt, gt, crowd.tolist()))


def test_mask_iou_equals_pycocotools_with_crowd():
    rng = np.random.default_rng(0)
    shape = (40, 50)
    dt = np.array([box_mask(shape, int(a), int(b), int(a) + 15, int(b) + 20) for a, b in rng.integers(0, 35, (7, 2))])
    gt = np.array([box_mask(shape, int(a), int(b), int(a) + 12, int(b) + 25) for a, b in rng.integers(0, 35, (5, 2))])
    dt[0] = False  # an empty detection
    crowd = np.array([0, 1, 0, 1, 0], bool)
    want = mask_util.iou([rle(m) for m in dt], [rle(m) for m in gt], crowd.astype(np.uint8).tolist())
    np.testing.assert_array_equal(mask_iou(dt, gt, crowd), want)


# ---- class mapping, errors, the convenience call -----------------------------------------------


def test_class_to_category_maps_prediction_classes():
    """Predictions carry class indices; the map turns them into the (non-contiguous) category ids."""
    case = random_case(7, cats=(24, 26, 33))
    images, gts, dets, cats = case
    want, _, _ = reference(*case)
    index = {24: 0, 26: 1, 33: 2}
    acc = MaskAPAccumulator({24: "person", 26: "car", 33: "bicycle"}, class_to_category=[24, 26, 33, -1])
    for i, shape in images.items():
        acc.add(i, prediction_of(dets, i, shape, class_of=index.__getitem__), truth_of(gts, i, shape))
    got = acc.compute()
    np.testing.assert_allclose(got.stats, want, atol=1e-9)
    assert [c.name for c in got.per_class] == ["person", "car", "bicycle"]
    # a dropped class (-1) scores nothing: its detections are simply absent
    acc2 = MaskAPAccumulator([24, 26, 33], class_to_category={0: 24, 1: -1, 2: 33})
    for i, shape in images.items():
        acc2.add(i, prediction_of(dets, i, shape, class_of=index.__getitem__), truth_of(gts, i, shape))
    without_cars = [d for d in dets if d[1] != 26]
    np.testing.assert_allclose(acc2.compute().stats, reference(images, gts, without_cars, cats)[0], atol=1e-9)


def test_mask_ap_with_annotation_dicts_and_polygons():
    shape = (50, 60)
    anns = {1: [{"category_id": 3, "segmentation": [[5, 5, 30, 5, 30, 25, 5, 25]], "area": 500, "iscrowd": 0},
                {"category_id": 3, "segmentation": rle(box_mask(shape, 30, 30, 50, 60)), "area": 600, "iscrowd": 1}]}
    pred_mask = box_mask(shape, 5, 5, 25, 30)  # the polygon's pixels (centres inside)
    pred = InstanceResult(np.array([[5, 5, 30, 25]], np.float32), np.array([0.7], np.float32), np.array([3], np.int32),
                          ImageShape(*shape), masks=pred_mask[None])
    got = mask_ap({1: pred, 2: None}, anns, [3])
    assert got.stats[0] == pytest.approx(1.0) and got.num_images == 2  # 1 / (1 + eps)


def test_bad_input_raises_input_error():
    shape = (10, 10)
    acc = MaskAPAccumulator([1])
    truth = truth_of([(1, 1, box_mask(shape, 0, 0, 3, 3), False, 9.0)], 1, shape)
    wrong = InstanceResult(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.ones(1, np.int32), ImageShape(12, 10),
                           masks=np.ones((1, 12, 10), bool))
    with pytest.raises(InputError, match="prediction masks are"):
        acc.add(1, wrong, truth)
    acc.add(2, None, truth)
    with pytest.raises(InputError, match="added twice"):
        acc.add(2, None, truth)
    no_masks = InstanceResult(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.ones(1, np.int32), ImageShape(*shape))
    with pytest.raises(InputError, match="no masks"):
        acc.add(3, no_masks, truth)
    with pytest.raises(InputError, match="InstanceTruth"):
        acc.add(4, None, object())
    with pytest.raises(InputError):
        MaskAPAccumulator([1], prediction_area="polygon")


def test_category_map_by_name_explicit_and_index():
    cats = {24: "person", 25: "rider", 26: "car"}
    m = category_map(["Person", "car", "dog"], cats)
    assert m.to_category == (24, 26, -1) and m.by == "name" and m.dropped == ("dog",)
    m = category_map(["person", "cyclist", "car"], cats, {"cyclist": "rider"})
    assert m.to_category == (24, 25, 26) and m.pairs[1] == ("cyclist", "rider")
    m = category_map(["a", "b", "c"], cats)
    assert m.by == "index" and m.to_category == (24, 25, 26) and m.missing == ()
    # no name shared and the counts differ: by position, one class would be scored as another
    with pytest.raises(InputError, match="their counts differ") as e:
        category_map(["a", "b"], cats)
    assert "--class-map" in e.value.fix
    m = category_map(["person", "bike"], cats)  # matched by name: the categories left are named
    assert m.missing == ("rider", "car") and m.dropped == ("bike",)
    with pytest.raises(InputError, match="no class"):
        category_map(["person"], cats, {"bike": "rider"})
    with pytest.raises(InputError, match="no category"):
        category_map(["person"], cats, {"person": "pedestrian"})


# ---- evaluate_instances and `edgeseg eval` with a stand-in predictor ---------------------------


@pytest.fixture
def tiny_coco(tmp_path):
    """Three 40x60 images, two categories (ids 7 and 9), polygons, RLE and a crowd."""
    shape = (40, 60)
    images, anns = [], []
    for i in (1, 2, 3):
        write_image(tmp_path / "val" / f"im{i}.png", np.full((*shape, 3), 40 * i, np.uint8))
        images.append({"id": i, "file_name": f"im{i}.png", "height": shape[0], "width": shape[1]})
    anns.append({"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[2, 2, 20, 2, 20, 15, 2, 15]], "area": 234,
                 "bbox": [2, 2, 18, 13], "iscrowd": 0})
    anns.append({"id": 2, "image_id": 1, "category_id": 9, "segmentation": [[30, 5, 55, 5, 42, 30]], "area": 300,
                 "bbox": [30, 5, 25, 25], "iscrowd": 0})
    anns.append({"id": 3, "image_id": 2, "category_id": 7, "segmentation": rle(box_mask(shape, 20, 0, 40, 60)),
                 "area": 1200, "bbox": [0, 20, 60, 20], "iscrowd": 1})
    anns.append({"id": 4, "image_id": 2, "category_id": 7, "segmentation": [[5, 2, 25, 2, 25, 12, 5, 12]], "area": 200,
                 "bbox": [5, 2, 20, 10], "iscrowd": 0})
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 7, "name": "Person"}, {"id": 9, "name": "car"}]}))
    return path


class ShiftPredictor:
    """Stand-in for an instance bundle: the ground truth of the image (found by its grey level),
    shifted, with one extra false positive; model classes ("person", "car", "tree")."""

    classes = ("person", "car", "tree")

    def __init__(self, dataset):
        self.by_grey = {int(s.image()[0, 0, 0]): s.truth for s in dataset}

    def __call__(self, rgb):
        t = self.by_grey[int(rgb[0, 0, 0])]
        masks = np.concatenate([np.roll(t.masks, 1, 2), box_mask(t.masks.shape[1:], 30, 40, 38, 58)[None]])
        classes = np.concatenate([t.classes, [2]]).astype(np.int32)
        n = len(masks)
        boxes = np.array([tight_xywh(m) for m in masks], np.float32) + np.float32(0.37)  # off the pixel grid
        boxes[:, 2:] += boxes[:, :2]
        return InstanceResult(boxes, np.linspace(0.9, 0.3, n).astype(np.float32), classes, t.image_shape, masks=masks)


def test_evaluate_instances_and_saved_results_equal_pycocotools(tiny_coco):
    ds = CocoInstances(tiny_coco, tiny_coco.parent / "val")
    cmap = category_map(ShiftPredictor.classes, ds.categories)
    assert cmap.to_category == (7, 9, -1) and cmap.dropped == ("tree",)
    records: list[dict] = []
    got = evaluate_instances(ShiftPredictor(ds), ds, cmap.to_category, progress=False, results=records)
    assert {r["category_id"] for r in records} == {7, 9} and got.num_images == 3
    for with_bbox, area in ((False, "mask"), (True, "box")):
        res = [dict(r) for r in records]
        if not with_bbox:
            for r in res:
                r.pop("bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(tiny_coco))
            ev = COCOeval(gt, gt.loadRes(res), "segm")
            ev.evaluate(), ev.accumulate(), ev.summarize()
        scores = got if area == "mask" else evaluate_instances(ShiftPredictor(ds), ds, cmap.to_category, progress=False,
                                                               prediction_area="box")
        np.testing.assert_allclose(scores.stats, ev.stats, atol=1e-9)
    with contextlib.redirect_stdout(io.StringIO()):  # the box AP beside it, on the records as saved
        gt = COCO(str(tiny_coco))
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in records]), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose(got.box.stats, ev.stats, rtol=0, atol=1e-12)
    assert 0 < got.box.ap < 1 and got.box.ap != got.ap


def test_evaluate_instances_rejects_wrong_results(tiny_coco):
    ds = CocoInstances(tiny_coco, tiny_coco.parent / "val")
    from edgeseg.structures import SemanticResult

    with pytest.raises(InputError, match="not an InstanceResult"):
        evaluate_instances(lambda rgb: SemanticResult(np.zeros(rgb.shape[:2], np.uint8)), ds, [7], progress=False)
    small = InstanceResult.empty(ImageShape(20, 30))
    with pytest.raises(InputError, match="image's own size"):
        evaluate_instances(lambda rgb: small, ds, [7], progress=False)


class _FakeBundle:
    """What `edgeseg eval` needs of a loaded instance bundle (the real decoder is not part of this test)."""

    class manifest:  # noqa: N801
        task = "instance"

    class runner:  # noqa: N801
        precision = "fp32"

    backend = "shift"  # what --json records as the backend that ran

    def __init__(self, ds):
        self.predict = ShiftPredictor(ds)
        self.classes = ShiftPredictor.classes

    def __call__(self, rgb):
        return self.predict(rgb)

    def set_options(self, **overrides):
        self.options = overrides  # `edgeseg eval` lowers the score threshold for AP
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_eval_command_on_coco_instances(tiny_coco, tmp_path, monkeypatch, capsys):
    import edgeseg.predictor
    from edgeseg.cli import main

    ds = CocoInstances(tiny_coco, tiny_coco.parent / "val")
    monkeypatch.setattr(edgeseg.predictor, "load", lambda *a, **k: _FakeBundle(ds))
    out_json, dets = tmp_path / "ap.json", tmp_path / "dets.json"
    rc = main(["eval", "fake.edgeseg", "--data", f"coco-instance:{tiny_coco}", "--no-progress", "--json", str(out_json),
               "--save-predictions", str(dets), "--class-map", "tree=car"])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads(out_json.read_text())
    assert list(data["stats"]) == list(STAT_NAMES) and data["num_images"] == 3
    assert data["class_map"] == {"person": "Person", "car": "car", "tree": "car"} and data["dropped_model_classes"] == []
    assert set(data["per_class"]) == {"Person", "car"} and "AP50" in out
    saved = json.loads(dets.read_text())
    assert all(set(r) == {"image_id", "category_id", "segmentation", "score", "bbox"} for r in saved)
    for r in saved:
        r.pop("bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tiny_coco))
        ev = COCOeval(gt, gt.loadRes(saved), "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose([data["stats"][n] for n in STAT_NAMES], ev.stats, atol=1e-9)
    saved = json.loads(dets.read_text())  # box AP: the same saved detections, their bbox kept
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(saved), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose([data["box"]["stats"][n] for n in STAT_NAMES], ev.stats, rtol=0, atol=1e-12)
    assert set(data["box"]["per_class"]) == {"Person", "car"} and "box AP %" in out


def test_eval_command_names_categories_no_model_class_maps_to(tiny_coco, tmp_path, monkeypatch, capsys, caplog):
    """A dataset calling persons 'pedestrian': its instances all missed with no word but a 'dropped' note. And a
    JSON with no annotation, or two categories of one name, are said."""
    import edgeseg.predictor
    from edgeseg.cli import main

    data = json.loads(tiny_coco.read_text())
    data["categories"][0]["name"] = "pedestrian"
    renamed = tiny_coco.with_name("instances_renamed.json")
    renamed.write_text(json.dumps(data))
    ds = CocoInstances(tiny_coco, tiny_coco.parent / "val")
    monkeypatch.setattr(edgeseg.predictor, "load", lambda *a, **k: _FakeBundle(ds))
    assert main(["eval", "fake.edgeseg", "--data", f"coco-instance:{renamed},images={tiny_coco.parent / 'val'}",
                 "--no-progress"]) == 0
    out = capsys.readouterr().err  # (warnings on standard error since session 57)
    assert "dataset categories no model class maps to (each of their instances is a miss): pedestrian" in out
    assert "--class-map 'person=pedestrian'" in out
    data["annotations"] = []
    data["categories"].append({"id": 11, "name": "Car"})
    empty = tiny_coco.with_name("instances_empty.json")
    empty.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="edgeseg.data.coco_instances"):
        CocoInstances(empty, tiny_coco.parent / "val")
    assert "lists 3 images but no annotation" in caplog.text
    assert "category name(s) Car, car are used by more than one category id (car=9, Car=11)" in caplog.text


def test_eval_limit_needs_only_the_images_it_scores(tiny_coco, monkeypatch, capsys):
    """A partial download: `--limit 2` refused because the third image was missing (every listed image was
    checked up front). Without --limit the check still names it before any work."""
    import edgeseg.predictor
    from edgeseg.cli import main

    fake = _FakeBundle(CocoInstances(tiny_coco, tiny_coco.parent / "val"))  # (the stand-in reads every image now)
    (tiny_coco.parent / "val" / "im3.png").unlink()
    monkeypatch.setattr(edgeseg.predictor, "load", lambda *a, **k: fake)
    assert main(["eval", "fake.edgeseg", "--data", f"coco-instance:{tiny_coco}", "--no-progress"]) == 2
    assert "1 of 3 images listed" in capsys.readouterr().err
    assert main(["eval", "fake.edgeseg", "--data", f"coco-instance:{tiny_coco}", "--no-progress", "--limit", "2"]) == 0
    assert ", 2 images," in capsys.readouterr().out


def test_eval_command_refuses_semantic_bundle_on_instance_data(tiny_coco, monkeypatch, capsys):
    import edgeseg.predictor
    from edgeseg.cli import main

    ds = CocoInstances(tiny_coco, tiny_coco.parent / "val")
    fake = _FakeBundle(ds)
    fake.manifest = type("M", (), {"task": "semantic"})
    monkeypatch.setattr(edgeseg.predictor, "load", lambda *a, **k: fake)
    assert main(["eval", "sem.edgeseg", "--data", f"coco-instance:{tiny_coco}", "--no-progress"]) != 0
    assert "semantic bundle" in capsys.readouterr().err


# ---- the real Cityscapes instance truth ------------------------------------------------------------


def _perturb(mask: np.ndarray, op: int, rng) -> np.ndarray:
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    if op == 1:
        return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    if op == 2:
        return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
    if op == 3:
        dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
        out = np.zeros_like(mask)
        h, w = mask.shape
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
        return out
    return mask


@pytest.mark.data
def test_cityscapes_perturbed_truth_equals_pycocotools(data_root):
    path = data_root / "cityscapes_panoptic" / "instances_val.json"
    ds = CocoInstances(path)
    assert ds.category_ids == (24, 25, 26, 27, 28, 31, 32, 33)
    rng = np.random.default_rng(0)
    acc = MaskAPAccumulator(ds.categories, class_to_category=list(ds.category_ids))
    box_acc = MaskAPAccumulator(ds.categories, class_to_category=list(ds.category_ids), iou_type="bbox")
    records = []
    for s in ds:
        t = s.truth
        masks = [_perturb(m, int(rng.integers(0, 4)), rng) for m in t.masks]
        classes = [c if rng.random() < 0.9 else int(rng.integers(0, 8)) for c in t.classes.tolist()]
        for _ in range(int(rng.integers(0, 4))):  # false positives
            y, x = int(rng.integers(0, 300)), int(rng.integers(0, 600))
            masks.append(box_mask(t.masks.shape[1:], y, x, y + int(rng.integers(1, 40)), x + int(rng.integers(1, 40))))
            classes.append(int(rng.integers(0, 8)))
        n = len(masks)
        boxes = np.array([tight_xywh(m) for m in masks], np.float32).reshape(n, 4) + rng.normal(0, 1, (n, 4)).astype(np.float32)
        boxes[:, 2:] += boxes[:, :2]
        pred = InstanceResult(boxes, np.round(rng.random(n), 2).astype(np.float32),
                              np.array(classes, np.int32), t.image_shape, masks=np.array(masks, bool).reshape(n, *t.masks.shape[1:]))
        acc.add(s.image_id, pred, t)
        box_acc.add(s.image_id, pred, t)
        records += coco_results(s.image_id, pred, list(ds.category_ids))
    got = acc.compute()
    with contextlib.redirect_stdout(io.StringIO()):  # box AP on the records as saved, against the JSON's bbox
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in records]), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    boxes_got = box_acc.compute()
    np.testing.assert_allclose(boxes_got.stats, ev.stats, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(boxes_got.precision, ev.eval["precision"])
    for r in records:
        r.pop("bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(records), "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose(got.stats, ev.stats, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.precision, ev.eval["precision"])
    per_class = {c.name: c.ap for c in got.per_class}
    for k, c in enumerate(ds.category_ids):  # per-class AP as detectron2 reads it from COCOeval
        p = ev.eval["precision"][:, :, k, 0, -1]
        assert per_class[ds.categories[c]] == pytest.approx(np.mean(p[p > -1]), abs=1e-12)
    assert 0.1 < got.stats[0] < 0.9 and got.num_images == 224


def test_eval_command_leaves_an_unreadable_image_out_of_mask_ap(tiny_coco, tmp_path, monkeypatch, capsys):
    """A batch audit (semantic eval) and its review: one corrupt image ended the whole run with no score. Instance data
    too: the image and its truth are left out, named, the others' AP printed and written, exit 2; the AP equals that of
    the same data without the image."""
    import edgeseg.predictor
    from edgeseg.cli import main

    fake = _FakeBundle(CocoInstances(tiny_coco, tiny_coco.parent / "val"))  # (it reads every image)
    monkeypatch.setattr(edgeseg.predictor, "load", lambda *a, **k: fake)
    (tiny_coco.parent / "val" / "im3.png").write_bytes(b"")
    rc = main(["eval", "fake.edgeseg", "--data", f"coco-instance:{tiny_coco}", "--no-progress", "--json",
               str(tmp_path / "ap.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "1 sample(s) of coco-instance:" in err and "im3.png is empty (0 bytes)" in err
    data = json.loads((tmp_path / "ap.json").read_text())
    assert data["num_images"] == 2 and data["skipped"] == [{"index": 2, "error": data["skipped"][0]["error"]}]
    doc = json.loads(tiny_coco.read_text())  # the same data without image 3
    doc["images"] = [i for i in doc["images"] if i["id"] != 3]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 3]
    two = tmp_path / "two" / "instances_val.json"
    two.parent.mkdir()
    two.write_text(json.dumps(doc))
    import shutil

    shutil.copytree(tiny_coco.parent / "val", tmp_path / "two" / "val")
    assert main(["eval", "fake.edgeseg", "--data", f"coco-instance:{two}", "--no-progress", "--json",
                 str(tmp_path / "two.json")]) == 0
    assert json.loads((tmp_path / "two.json").read_text())["stats"] == data["stats"]
