"""COCO instance reader: polygon rasterisation equal to pycocotools (random polygons and the real
Cityscapes JSON), RLE in both forms, the ``coco-instance`` spec and its errors."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from edgeseg.data import CocoInstances, InstanceSample, open_dataset, write_image
from edgeseg.data.coco_instances import polygon_to_mask, segmentation_to_mask
from edgeseg.errors import DataError

mask_util = pytest.importorskip("pycocotools.mask")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2


def annotation_mask(segm, h, w) -> np.ndarray:
    """pycocotools' annToMask for one segmentation."""
    if isinstance(segm, list):
        r = mask_util.merge(mask_util.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):
        r = mask_util.frPyObjects(segm, h, w)
    else:
        r = segm
    return mask_util.decode(r).astype(bool)


def random_polygon(rng, h, w, mode):
    k = int(rng.integers(3, 12))
    span = max(h, w)
    if mode == 0:  # float vertices, some outside the image
        xy = rng.uniform(-5, span + 5, (k, 2))
    elif mode == 1:  # integer vertices
        xy = rng.integers(-2, span + 2, (k, 2)).astype(float)
    elif mode == 2:  # half-pixel vertices: rounding ties
        xy = np.round(rng.uniform(-3, span + 3, (k, 2)) * 2) / 2
    else:  # a repeated vertex (a zero-length edge)
        xy = rng.uniform(0, span, (k, 2))
        xy[1] = xy[0]
    return xy.ravel().tolist()


@pytest.mark.parametrize("mode", range(4))
def test_random_polygons_equal_pycocotools(mode):
    rng = np.random.default_rng(mode)
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        poly = random_polygon(rng, h, w, mode)
        assert np.array_equal(polygon_to_mask(poly, h, w), annotation_mask([poly], h, w)), (h, w, poly)


def test_multi_part_polygons_and_large_images_equal_pycocotools():
    rng = np.random.default_rng(9)
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(200, 1100, 2))
        parts = [random_polygon(rng, h, w, int(rng.integers(0, 3))) for _ in range(int(rng.integers(1, 4)))]
        np.testing.assert_array_equal(segmentation_to_mask(parts, h, w), annotation_mask(parts, h, w))


def test_polygon_covers_pixel_centres_inside():
    """Pixel (r, c) is inside when its centre (c + .5, r + .5) is: a rectangle and a triangle by hand."""
    rect = polygon_to_mask([2, 1, 6, 1, 6, 4, 2, 4], 8, 8)
    want = np.zeros((8, 8), bool)
    want[1:4, 2:6] = True
    np.testing.assert_array_equal(rect, want)
    tri = polygon_to_mask([0, 0, 8, 0, 0, 8], 8, 8)
    r, c = np.mgrid[:8, :8]
    np.testing.assert_array_equal(tri, r + c + 1 < 8)


def test_rle_forms_equal_pycocotools():
    rng = np.random.default_rng(1)
    m = rng.random((23, 31)) < 0.4
    compressed = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode()
    runs, value, n = [], False, 0  # column-major runs, starting with 0s
    for v in m.ravel(order="F"):
        if v != value:
            runs.append(n)
            value, n = v, 0
        n += 1
    uncompressed = {"size": [23, 31], "counts": runs + [n]}
    for segm in (compressed, uncompressed):
        np.testing.assert_array_equal(segmentation_to_mask(segm, 23, 31), m)
        np.testing.assert_array_equal(segmentation_to_mask(segm, 23, 31), annotation_mask(segm, 23, 31))


def _write_coco(tmp_path, annotations, images=None, categories=None, name="instances_val.json"):
    images = images if images is not None else [{"id": 5, "file_name": "a.png", "height": 20, "width": 30},
                                                 {"id": 9, "file_name": "b.png", "height": 20, "width": 30}]
    for im in images:
        write_image(tmp_path / "val" / im["file_name"], np.zeros((im["height"], im["width"], 3), np.uint8))
    categories = categories if categories is not None else [{"id": 33, "name": "bicycle"}, {"id": 24, "name": "person"}]
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


GOOD = [
    {"id": 1, "image_id": 5, "category_id": 24, "segmentation": [[1, 1, 10, 1, 10, 8, 1, 8]], "area": 63.0,
     "bbox": [1, 1, 9, 7], "iscrowd": 0},
    {"id": 2, "image_id": 5, "category_id": 33, "segmentation": [[12, 2, 20, 2, 16, 9], [22, 10, 28, 10, 28, 18]],
     "area": 50.5, "bbox": [12, 2, 16, 16], "iscrowd": 0},
    {"id": 3, "image_id": 9, "category_id": 24, "segmentation": {"size": [20, 30], "counts": [30, 10, 560]},
     "area": 10, "bbox": [1, 10, 1, 10], "iscrowd": 1},
]


def test_reader_layout_classes_and_masks(tmp_path):
    path = _write_coco(tmp_path, GOOD)
    ds = open_dataset(f"coco-instance:{path}")  # images: val/ beside the JSON
    assert isinstance(ds, CocoInstances) and ds.task == "instance" and len(ds) == 2
    assert ds.category_ids == (24, 33) and ds.classes == ("person", "bicycle")  # sorted by category id
    assert ds.categories == {24: "person", 33: "bicycle"}
    s = ds[0]
    assert isinstance(s, InstanceSample) and s.image_id == 5 and s.name == "a" and s.image().shape == (20, 30, 3)
    t = s.truth
    assert t.classes.tolist() == [0, 1] and t.category_ids.tolist() == [24, 33] and t.iscrowd.tolist() == [False, False]
    assert t.area.tolist() == [63.0, 50.5] and t.ids.tolist() == [1, 2]
    np.testing.assert_array_equal(t.boxes[0], [1, 1, 10, 8])  # bbox xywh -> xyxy
    for k, ann in enumerate(GOOD[:2]):
        np.testing.assert_array_equal(t.masks[k], annotation_mask(ann["segmentation"], 20, 30))
    t9 = ds[1].truth
    assert t9.iscrowd.tolist() == [True] and t9.masks[0].sum() == 10 and t9.masks[0][10:, 1].all()
    assert open_dataset(str(f"coco-instance:{tmp_path}"), split="val").image_ids == (5, 9)  # a folder + the split


def test_images_option_and_coco_annotations_layout(tmp_path):
    ann_dir = tmp_path / "annotations"
    ann_dir.mkdir()
    path = _write_coco(tmp_path, GOOD, name="annotations/instances_val.json")  # images in ../val, COCO style
    assert open_dataset(f"coco-instance:{path}")[0].image_path == tmp_path / "val" / "a.png"
    other = tmp_path / "elsewhere"
    (tmp_path / "val").rename(other)
    with pytest.raises(DataError, match="images=DIR"):
        open_dataset(f"coco-instance:{path}")
    assert open_dataset(f"coco-instance:{path},images={other}")[1].image_path == other / "b.png"


@pytest.mark.parametrize("annotations, match", [
    ([{"id": 7, "image_id": 5, "category_id": 24}], "annotation 7 has no segmentation"),
    ([{"id": 7, "image_id": 5, "category_id": 99, "segmentation": []}], "category 99"),
    ([{"id": 7, "image_id": 6, "category_id": 24, "segmentation": []}], "image 6"),
    # session 50's fuzzing: a ValueError/TypeError traceback when the masks were read
    ([{"id": "abc", "image_id": 5, "category_id": 24, "segmentation": []}], "its id is 'abc', not an integer"),
    ([{"id": None, "image_id": 5, "category_id": 24, "segmentation": []}], "its id is None"),
    ([{"id": [1], "image_id": 5, "category_id": 24, "segmentation": []}], r"its id is \[1\]"),
])
def test_malformed_annotations_fail_at_open(tmp_path, annotations, match):
    path = _write_coco(tmp_path, annotations)
    with pytest.raises(DataError, match=match) as e:
        CocoInstances(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("segmentation, match", [
    ([[1, 1, 5, 5]], "at least 3"),
    ([[1, 1, 5, 5, 9]], "at least 3"),
    ([[1, 1, 5, 5, 9, "x"]], "not numeric"),
    ({"size": [10, 30], "counts": [300]}, "does not match the image"),
    ({"size": [20, 30], "counts": [10, 10]}, "corrupt COCO RLE"),
    ("polygon", "expected polygons"),
])
def test_bad_segmentations_name_the_annotation(tmp_path, segmentation, match):
    path = _write_coco(tmp_path, [{"id": 42, "image_id": 9, "category_id": 24, "segmentation": segmentation, "area": 1}])
    ds = CocoInstances(path)
    with pytest.raises(DataError, match=match) as e:
        ds[1]
    assert "annotation 42 of image 9" in str(e.value) and str(path) in str(e.value)


def test_missing_json_missing_image_and_bad_spec(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_dataset(f"coco-instance:{tmp_path / 'instances_val.json'}")
    path = _write_coco(tmp_path, GOOD)
    (tmp_path / "val" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png") as e:
        open_dataset(f"coco-instance:{path}")
    assert "images=DIR" in str(e.value)
    ds = CocoInstances(path, tmp_path / "val")  # without the up-front check, reading the image says it
    with pytest.raises(DataError, match="b.png"):
        ds[1].image()
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(f"coco-instance:{path},classes=x.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        CocoInstances(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="not a COCO instance file"):
        CocoInstances(tmp_path / "list.json")


def test_image_size_must_match_the_annotations(tmp_path):
    path = _write_coco(tmp_path, GOOD)
    write_image(tmp_path / "val" / "a.png", np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(DataError, match="same size"):
        CocoInstances(path, tmp_path / "val")[0].image()


@pytest.mark.data
def test_cityscapes_masks_equal_ann_to_mask(data_root):
    from pycocotools.coco import COCO

    root = data_root / "cityscapes_panoptic"
    ds = open_dataset(f"coco-instance:{root / 'instances_val.json'}")
    assert len(ds) == 224 and ds.image_dir == root / "val"
    assert ds.classes == ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
    assert ds.category_ids == (24, 25, 26, 27, 28, 31, 32, 33)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(root / "instances_val.json"))
    n = crowd = 0
    for s in ds:
        t = s.truth
        anns = [coco.anns[i] for i in t.ids.tolist()]
        if anns:
            want = mask_util.decode([coco.annToRLE(a) for a in anns]).astype(bool).transpose(2, 0, 1)
            assert np.array_equal(t.masks, want), s.name
        assert t.area.tolist() == [a["area"] for a in anns] and t.iscrowd.tolist() == [bool(a["iscrowd"]) for a in anns]
        assert [ds.category_ids[c] for c in t.classes] == [a["category_id"] for a in anns]
        n += len(t)
        crowd += int(t.iscrowd.sum())
    assert n == len(coco.anns) == 3227 and crowd == 66
    assert ds[0].image().shape == (320, 640, 3)


# ---- bad input found by the instance/panoptic robustness audit -------------------------------------
@pytest.mark.parametrize("edit, match", [
    (lambda d: d["images"][0].update(width=-5), r"image 5 \(a\.png\) has size -5x20"),  # was a numpy traceback
    (lambda d: d["images"][0].update(height=0), r"image 5 \(a\.png\) has size 30x0"),  # was blamed on the RLE
    (lambda d: d["images"].append(dict(d["images"][0])), "image id 5 is listed twice"),  # was found after inference
    (lambda d: d.update(categories=[]), "lists no categories"),
    (lambda d: d.update(annotations={}), "'annotations' is a dict, not a list"),  # was read as no annotations
    (lambda d: d["annotations"][0].pop("segmentation"), "annotation 1 has no segmentation .a box-only annotation"),
    (lambda d: d["annotations"][0].update(iscrowd="yes"), "annotation 1: iscrowd is 'yes'"),  # pycocotools: ValueError
])
def test_malformed_files_are_refused_at_open_naming_the_fault(tmp_path, edit, match):
    path = _write_coco(tmp_path, [dict(a) for a in GOOD])
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=match) as e:
        CocoInstances(path)
    assert str(path) in str(e.value) and e.value.fix


def test_polygon_far_outside_the_image_is_an_error_not_a_memory_blowup(tmp_path):
    """A polygon's outline is walked point by point (as pycocotools' rleFrPoly): a vertex at 1e9 asked
    for a 112 GiB array and ended in a numpy MemoryError traceback. Slightly outside stays exact."""
    far = [[1e9, 1e9, 2e9, 1e9, 2e9, 2e9]]
    path = _write_coco(tmp_path, [{"id": 4, "image_id": 5, "category_id": 24, "segmentation": far, "area": 1}])
    with pytest.raises(DataError, match=r"annotation 4 of image 5.*polygon 0: point \(1e\+09, 1e\+09\) lies more than"):
        CocoInstances(path)[0]
    for poly in ([-95.0, -15.0, 125.0, -15.0, 125.0, 35.0, -95.0, 35.0], [-99.0, 5.0, 129.0, 10.0, 10.0, 119.0]):
        np.testing.assert_array_equal(segmentation_to_mask([poly], 20, 30), annotation_mask([poly], 20, 30))


def test_cli_reports_a_bad_file_without_a_traceback(tmp_path, capsys):
    from edgeseg.cli import main

    path = _write_coco(tmp_path, GOOD, images=[{"id": 5, "file_name": "a.png", "height": 20, "width": 30},
                                               {"id": 9, "file_name": "b.png", "height": 20, "width": 30}])
    data = json.loads(path.read_text())
    data["images"][1]["width"] = -30
    path.write_text(json.dumps(data))
    rc = main(["eval", "shapes-instance", "--data", f"coco-instance:{path}", "--threads", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "edgeseg eval: error:" in err and "image 9 (b.png) has size -30x20" in err and "fix:" in err
