"""``cityscapes:ROOT``: Cityscapes as its download lays it out, scored as cityscapesScripts' own pixel-level
evaluation scores it (the benchmark's reference implementation, run here on the same predictions)."""
from __future__ import annotations

import hashlib
import types

import cv2
import numpy as np
import pytest

from edgeseg.data import open_dataset
from edgeseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, TRAIN_IDS
from edgeseg.errors import DataError

labels_mod = pytest.importorskip("cityscapesscripts.helpers.labels")

FRAMES = {"val": [("lindau", "000000_000019"), ("lindau", "000001_000019"), ("munster", "000000_000019")],
          "train": [("aachen", "000000_000019")]}


THINGS = (24, 25, 26, 27, 28, 31, 32, 33)


def _label_ids(rng, h=64, w=128) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of random Cityscapes label ids (0-33: evaluated and void ones alike) on a void background, and the
    instance ids as the download has them (``label * 1000 + k`` for an object, the label id for stuff and for a
    crowd of things)."""
    ids, inst = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint16)
    for k in range(14):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        label = int(rng.choice(THINGS)) if k % 2 else int(rng.integers(0, 34))
        block = np.s_[y:y + rng.integers(6, 30), x:x + rng.integers(6, 50)]
        ids[block] = label
        inst[block] = label * 1000 + k if label in THINGS and k % 3 else label
    return ids, inst


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A Cityscapes tree: val with ``_labelIds.png`` (and ``_color.png`` beside, as the download has), train with
    ``_labelTrainIds.png`` only (what createTrainIdLabelImgs writes)."""
    r = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    to_train = np.full(256, 255, np.uint8)
    for k, v in TRAIN_IDS.items():
        to_train[k] = v
    for split, frames in FRAMES.items():
        for city, seq in frames:
            stem = f"{city}_{seq}"
            (r / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (r / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(r / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"),
                        rng.integers(0, 256, (64, 128, 3), dtype=np.uint8))
            ids, inst = _label_ids(rng)
            gt = r / "gtFine" / split / city
            if split == "val":
                cv2.imwrite(str(gt / f"{stem}_gtFine_labelIds.png"), ids)
                cv2.imwrite(str(gt / f"{stem}_gtFine_instanceIds.png"), inst)
                cv2.imwrite(str(gt / f"{stem}_gtFine_color.png"), np.zeros((64, 128, 3), np.uint8))
            else:
                cv2.imwrite(str(gt / f"{stem}_gtFine_labelTrainIds.png"), to_train[ids])
    return r


def test_the_class_table_is_cityscapes_own():
    evaluated = [lab for lab in labels_mod.labels if 0 <= lab.trainId < 19]
    assert {lab.id: lab.trainId for lab in evaluated} == TRAIN_IDS
    assert tuple(lab.name for lab in sorted(evaluated, key=lambda lab: lab.trainId)) == CITYSCAPES_CLASSES
    assert [tuple(lab.color) for lab in sorted(evaluated, key=lambda lab: lab.trainId)] == [tuple(c) for c in CITYSCAPES_PALETTE]
    assert all(lab.ignoreInEval for lab in labels_mod.labels if 0 <= lab.id <= 33 and lab.id not in TRAIN_IDS)


def test_frames_labels_and_options(root):
    ds = open_dataset(f"cityscapes:{root}", split="val")
    assert len(ds) == 3 and ds.classes == CITYSCAPES_CLASSES and ds[0].name == "lindau_000000_000019"
    raw = cv2.imread(str(root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
    want = np.array([TRAIN_IDS.get(int(v), 255) for v in raw.ravel()], np.uint8).reshape(raw.shape)
    np.testing.assert_array_equal(ds[0].labels, want)
    assert ds[0].image.shape == (64, 128, 3)
    train = open_dataset(f"cityscapes:{root}", split="train")  # _labelTrainIds.png read as they are
    assert len(train) == 1 and set(np.unique(train[0].labels)) <= set(range(19)) | {255}
    assert [s.name for s in open_dataset(f"cityscapes:{root},cities=munster", split="val")] == ["munster_000000_000019"]
    # CamVid's 11 classes, by the table cityscapes-camvid: uses (wall -> building, truck -> car, terrain void, ...)
    from edgeseg.data.cityscapes_camvid import CITYSCAPES_TO_CAMVID
    from edgeseg.structures import CAMVID_CLASSES

    cam = open_dataset(f"cityscapes:{root},classes=camvid", split="val")
    assert cam.classes == CAMVID_CLASSES
    lut = np.full(256, 255, np.uint8)
    for k, name in enumerate(CITYSCAPES_CLASSES):
        if CITYSCAPES_TO_CAMVID[name] is not None:
            lut[k] = CAMVID_CLASSES.index(CITYSCAPES_TO_CAMVID[name])
    np.testing.assert_array_equal(cam[0].labels, lut[ds[0].labels])


def test_miou_equals_cityscapes_own_evaluation(root, tmp_path):
    """Predictions (the truth with a third of the pixels changed, some to void ids) scored by edgeseg.eval and,
    written as label-id PNGs, by cityscapesScripts' evaluateImgLists: every class IoU and the mean equal."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ref

    from edgeseg.eval import evaluate

    ds = open_dataset(f"cityscapes:{root}", split="val")
    rng = np.random.default_rng(5)
    train_to_id = np.zeros(256, np.uint8)  # void predictions become label id 0 (unlabeled)
    for k, v in TRAIN_IDS.items():
        train_to_id[v] = k
    preds, pred_files, gt_files = {}, [], []
    for s in ds:
        p = s.labels.copy()
        noise = rng.random(p.shape) < 0.33
        p[noise] = rng.integers(0, 19, noise.sum())
        p[(rng.random(p.shape) < 0.02)] = 255  # a few pixels the model calls void
        p[p == 255] = rng.integers(0, 19)  # edgeseg predicts a class everywhere
        preds[hashlib.sha1(s.image.tobytes()).hexdigest()] = p
        f = tmp_path / f"{s.name}_pred.png"
        cv2.imwrite(str(f), train_to_id[p])
        pred_files.append(str(f))
        city = s.name.split("_")[0]
        gt_files.append(str(root / "gtFine" / "val" / city / f"{s.name}_gtFine_labelIds.png"))
    ours = evaluate(lambda img: preds[hashlib.sha1(img.tobytes()).hexdigest()], ds, progress=False, boundary=False)
    args = types.SimpleNamespace(**vars(ref.args))
    args.evalInstLevelScore, args.JSONOutput, args.quiet, args.printRow, args.evalPixelAccuracy = False, False, True, 0, False
    result = ref.evaluateImgLists(pred_files, gt_files, args)
    theirs = result["classScores"]
    for k, name in enumerate(CITYSCAPES_CLASSES):
        if np.isnan(theirs[name]):
            assert np.isnan(ours.per_class_iou[k]), name
        else:
            assert ours.per_class_iou[k] == pytest.approx(theirs[name], abs=1e-12), name
    assert ours.miou == pytest.approx(ref.getScoreAverage(theirs, args), abs=1e-12)


def test_users_mistakes_are_named(root, tmp_path):
    with pytest.raises(DataError, match="leftImg8bit.*not found"):
        open_dataset(f"cityscapes:{tmp_path}", split="val")
    with pytest.raises(DataError, match="not found"):
        open_dataset(f"cityscapes:{root}", split="test")
    with pytest.raises(DataError, match="classes=ade is not one of"):
        open_dataset(f"cityscapes:{root},classes=ade", split="val")
    with pytest.raises(DataError, match="cities=bremen"):
        open_dataset(f"cityscapes:{root},cities=bremen", split="val")
    lonely = tmp_path / "c"
    (lonely / "leftImg8bit" / "val" / "ulm").mkdir(parents=True)
    (lonely / "gtFine" / "val" / "ulm").mkdir(parents=True)
    cv2.imwrite(str(lonely / "leftImg8bit/val/ulm/ulm_000000_000019_leftImg8bit.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="(?s)1 frame\\(s\\) have no label file.*gtFine_trainvaltest"):
        open_dataset(f"cityscapes:{lonely}", split="val")


def test_edgeseg_eval_scores_a_camvid_model_on_cityscapes_in_camvid_classes(root, tmp_path, capsys):
    """The issue-14 measurement on a user's own Cityscapes download: ``edgeseg eval road --data
    cityscapes:ROOT,classes=camvid``; the JSON's mIoU is evaluate()'s on the same predictor."""
    import json

    import edgeseg
    from edgeseg.cli import main
    from edgeseg.eval import evaluate

    out = tmp_path / "s.json"
    assert main(["eval", "road", "--data", f"cityscapes:{root},classes=camvid", "--backend", "onnxruntime",
                 "--precision", "fp32", "--threads", "1", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    want = evaluate(edgeseg.load("road", backend="onnxruntime", precision="fp32", threads=1),
                    open_dataset(f"cityscapes:{root},classes=camvid", split="val"), progress=False)
    assert got["miou"] == pytest.approx(want.miou, abs=1e-9)


def test_cityscapes_own_panoptic_conversion_opens_with_the_frames_in_their_city_folders(root, tmp_path):
    """cityscapesScripts' createPanopticImgs (what Detectron2's and most Cityscapes panoptic setups run) names the
    frames without their city folder: ``coco-panoptic:...,images=ROOT/leftImg8bit/val`` finds them one folder down
    (before: every image was missing)."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    convert2panoptic(str(root / "gtFine"), str(tmp_path), setNames=["val"])
    ds = open_dataset(f"coco-panoptic:{tmp_path}/cityscapes_panoptic_val.json,images={root}/leftImg8bit/val")
    assert len(ds) == 3
    for s in ds:
        city = s.name.split("_")[0]
        assert s.image_path == root / "leftImg8bit" / "val" / city / f"{s.name.replace('_gtFine_panoptic', '')}_leftImg8bit.png"
        assert s.image().shape == (64, 128, 3)
        inst = cv2.imread(str(root / "gtFine" / "val" / city / f"{s.name.replace('_panoptic', '_instanceIds')}.png"),
                          cv2.IMREAD_UNCHANGED)
        kept = [int(v) for v in np.unique(inst) if not labels_mod.id2label[int(v) if v < 1000 else int(v) // 1000].ignoreInEval]
        assert sorted(seg.id for seg in s.panoptic.segments) == kept  # the converter's segments, read back
        assert s.crowd_ids == frozenset(v for v in kept if v in THINGS)  # a crowd of things: id < 1000


def test_coco_instance_json_naming_frames_without_their_city_folder(root, tmp_path):
    import json

    frame = "lindau_000000_000019_leftImg8bit.png"
    data = {"images": [{"id": 1, "file_name": frame, "height": 64, "width": 128}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 26, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0,
                             "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
            "categories": [{"id": 26, "name": "car"}]}
    (tmp_path / "instances_val.json").write_text(json.dumps(data))
    ds = open_dataset(f"coco-instance:{tmp_path}/instances_val.json,images={root}/leftImg8bit/val")
    assert ds[0].image_path == root / "leftImg8bit" / "val" / "lindau" / frame and ds[0].image().shape == (64, 128, 3)
