"""``edgeseg predict --save-txt``: instance masks as YOLO-seg polygon labels (Ultralytics' ``save_txt``), read back
by edgeseg's YOLO-seg reader (pycocotools' polygon fill) as the masks they came from."""
from __future__ import annotations

import numpy as np

from edgeseg.data.coco_instances import polygon_to_mask
from edgeseg.structures.polygons import mask_polygon, yolo_lines


def test_a_mask_in_two_parts_is_one_polygon_that_fills_both_by_hand():
    """Two 10x10 squares 20 pixels apart: one polygon, bridged at their closest corners; filled even-odd the bridge
    is empty and each square comes back as its boundary pixels' centres enclose it, 9x9 (a 10x10 block's outline
    through pixel centres 0..9), and nothing between them."""
    m = np.zeros((40, 60), bool)
    m[5:15, 5:15] = True
    m[5:15, 35:45] = True
    poly = mask_polygon(m[2:30, 1:50], 1, 2)  # a crop at image pixel (1, 2): the offset added back
    assert poly.shape[1] == 2 and len(poly) == 4 + 4 + 2  # two rings of 4 corners, the bridge's point repeated
    back = polygon_to_mask(poly.reshape(-1), 40, 60)
    assert back[5:14, 5:14].all() and back[5:14, 35:44].all() and back.sum() == 2 * 81
    assert not back[:, 15:35].any()
    assert mask_polygon(np.zeros((4, 4), bool)).shape == (0, 2)
    for rows, cols in ((slice(4, 5), slice(3, 4)), (slice(4, 5), slice(3, 8)), (slice(2, 9), slice(6, 7))):
        thin = np.zeros((12, 12), bool)
        thin[rows, cols] = True  # a dot and lines: fewer than 3 corners (a review: left out of the labels)
        assert (polygon_to_mask(mask_polygon(thin).reshape(-1), 12, 12) == thin).all()


def test_thin_parts_of_any_shape_read_back_pixel_for_pixel():
    """A part with no pixel whose 8 neighbours are all in it (a diagonal, an L, a kinked line, a 2-pixel stripe):
    the outline of its pixels' squares, which the reader's even-odd fill gives back exactly (an audit, session 50: a
    10-pixel diagonal was written as its 10x10 bounding box, read back as 100 pixels, IoU 0.10)."""
    shapes = {"diagonal": [(2 + i, 2 + i) for i in range(10)],
              "L": [(y, 4) for y in range(3, 12)] + [(11, x) for x in range(4, 10)],
              "kink": [(5, 5), (6, 6), (6, 7), (5, 8)],
              "stripe": [(y, x) for y in (2, 3) for x in range(1, 19)],
              "anti-diagonal at the border": [(i, 19 - i) for i in range(6)]}
    for name, pixels in shapes.items():
        m = np.zeros((20, 20), bool)
        m[tuple(np.array(pixels).T)] = True
        back = polygon_to_mask(mask_polygon(m).reshape(-1), 20, 20)
        assert (back == m).all(), name
    m = np.zeros((20, 20), bool)  # beside a block (outlined through its boundary pixels' centres, as before)
    m[4:10, 4:10] = True
    m[15, 3:9] = True
    back = polygon_to_mask(mask_polygon(m).reshape(-1), 20, 20)
    assert (back[15] == m[15]).all() and back[4:9, 4:9].all() and back.sum() == 25 + 6


def test_yolo_lines_are_ultralytics_save_txt():
    poly = np.array([[0, 0], [64, 0], [64, 32], [0, 32]], np.float64)
    assert yolo_lines([2, 1], [poly, poly[:2]], 128, 64) == ["2 0 0 0.5 0 0.5 0.5 0 0.5"]  # 2 points: no polygon
    assert yolo_lines([0], [poly], 128, 64, scores=[0.87654]) == ["0 0 0 0.5 0 0.5 0.5 0 0.5 0.87654"]


def test_predict_save_txt_gives_a_dataset_that_reads_back_as_the_predictions(tmp_path, capsys):
    from edgeseg.cli import main
    from edgeseg.data.io import write_image
    from edgeseg.data.synthetic_instances import SyntheticInstances
    from edgeseg.data.yolo_seg import YoloSeg
    from edgeseg.structures import ImageShape
    import edgeseg

    images = tmp_path / "images"
    images.mkdir()
    for i, sample in enumerate(SyntheticInstances(3, ImageShape(240, 320), seed=5)):
        write_image(images / f"s{i}.png", sample.image())
    assert main(["predict", "shapes-instance", str(images), "--out", str(tmp_path / "pred"), "--save-txt",
                 "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    (tmp_path / "labels").mkdir()
    for f in (tmp_path / "pred" / "labels").iterdir():  # Ultralytics' layout: images/ beside labels/
        (tmp_path / "labels" / f.name).write_text(f.read_text())
    p = edgeseg.load("shapes-instance", backend="onnxruntime", precision="fp32")
    ds = YoloSeg(images, names=p.classes)
    checked = 0
    for sample in ds:
        r = p(sample.image())
        truth = sample.truth
        assert truth.classes.tolist() == r.classes.tolist()
        for a, b in zip(r.masks, truth.masks):
            iou = (a & b).sum() / (a | b).sum()
            assert iou > (0.85 if a.sum() > 400 else 0.6), iou  # the outline through boundary pixels' centres
            checked += 1
    assert checked >= 5
    assert main(["predict", "shapes-instance", str(images), "--json", str(tmp_path / "x.json"), "--save-txt"]) == 2
    assert "it needs --out DIR" in capsys.readouterr().err
