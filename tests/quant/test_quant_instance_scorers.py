"""The accuracy gate's instance scorers: mask AP on an instance dataset equals ``edgeseg eval``'s
number for the same model, and agreement with FP32 is AP against the FP32 detections (FP32: 100)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data import open_dataset, write_image
from handmade_bundles import red_instance_bundle

H, W = 96, 128


def _yolo_folder(root, n=3):
    """Red rectangles with their YOLO polygon labels (class 0 = 'red')."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        x0, y0 = int(rng.integers(0, 60)), int(rng.integers(0, 40))
        x1, y1 = x0 + int(rng.integers(24, 60)), y0 + int(rng.integers(20, 50))
        img[y0:y1, x0:x1, 0] = 255
        write_image(root / "images" / f"{i}.png", img)
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        (root / "labels" / f"{i}.txt").write_text("0 " + " ".join(f"{x / W:.6f} {y / H:.6f}" for x, y in pts) + "\n")
    (root / "names.txt").write_text("red\nrest\n")
    return root


def test_instance_dataset_scorer_equals_eval_and_agreement_is_100_for_fp32(tmp_path):
    import edgeseg
    from edgeseg.eval import category_map, evaluate_instances
    from edgeseg.quant.accuracy import AP_SCORE_THRESHOLD, InstanceAgreementScorer, InstanceDatasetScorer

    bundle = red_instance_bundle(tmp_path)
    ds = open_dataset(f"yolo-seg:{_yolo_folder(tmp_path / 'ds')},names={tmp_path / 'ds' / 'names.txt'}")
    model = bundle.root / "model.onnx"
    gate = InstanceDatasetScorer(ds, bundle.manifest)(model)
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32").set_options(score_threshold=AP_SCORE_THRESHOLD)
    with predictor:
        ref = evaluate_instances(predictor, ds, category_map(bundle.manifest.classes, ds.categories).to_category,
                                 progress=False).stats[0]
    assert gate == pytest.approx(100 * ref) and gate > 50
    frames = [s.image() for s in ds]
    assert InstanceAgreementScorer(frames, bundle.manifest, model)(model) == pytest.approx(100.0)
