"""``edgeseg demo``: accuracy against the generator's exact truth (computed in a sink), the annotated MP4,
precision fallback, clear errors, the shipped ``shapes`` bundle when it is there."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeseg.bundle import Bundle, Manifest, ModelFile, OutputSpec
from edgeseg.data.synthetic import CLASSES, PALETTE, SceneGenerator, split_stream
from edgeseg.demo import DemoOptions, GroundTruthSink, choose_precision, format_report, resolve_bundle, run_demo
from edgeseg.errors import BundleError, InputError
from edgeseg.eval import SemanticMetric
from edgeseg.structures import Frame, ImageShape, InputSpec, SemanticResult
from handmade_bundles import conv_model


def _shapes_like_bundle(root: Path, classes=CLASSES, int8: bool = False) -> Bundle:
    """A 1x1-conv bundle with the generator's classes and palette (60x80 input, dynamic batch)."""
    spec = InputSpec(size=ImageShape(60, 80))
    onnx_path = conv_model(root.parent / f"{root.stem}.onnx", len(classes), size=spec.size)
    b = Bundle.create(root, Manifest(name=root.stem, task="semantic", classes=tuple(classes), input=spec,
                                     outputs=(OutputSpec("logits", "logits", "float32", ("N", len(classes), "H", "W")),),
                                     palette=tuple(map(tuple, PALETTE.tolist()))))
    b.add_model(ModelFile("model.onnx", "fp32", None, 19), onnx_path)
    if int8:  # an entry is enough for choose_precision
        b.add_model(ModelFile("model.int8.onnx", "int8", "cpu", 19), onnx_path)
    return b


@pytest.fixture(scope="module")
def dev_bundle(tmp_path_factory):
    return _shapes_like_bundle(tmp_path_factory.mktemp("demo") / "shapes_dev.edgeseg")


def _frame(labels: np.ndarray, i: int = 0, classes=CLASSES) -> Frame:
    return Frame(np.zeros((*labels.shape, 3), np.uint8), i, i, "t", {"labels": labels, "classes": classes})


# ---- the accuracy sink -------------------------------------------------------------------------
def test_oracle_prediction_scores_one():
    gen = SceneGenerator(ImageShape(48, 64), 1)
    sink = GroundTruthSink(CLASSES)
    for t in range(4):
        _, labels = gen.render_semantic(t)
        sink.write(_frame(labels, t), SemanticResult(labels.copy(), CLASSES))
    s = sink.scores()
    assert s.miou == 1.0 and s.pixel_acc == 1.0 and s.num_images == 4 and sink.frames_scored == 4


def test_classes_matched_by_name_and_failures_count_as_wrong():
    gt = np.array([[0, 0], [1, 2]], np.uint8)  # sky sky / ground road
    model_classes = ("road", "sky", "ground", "lamp")  # another order, plus a class the truth lacks
    sink = GroundTruthSink(model_classes)
    sink.write(_frame(gt), SemanticResult(np.array([[1, 3], [2, 0]], np.uint8), model_classes))  # sky lamp / ground road
    sink.write(_frame(gt, 1), None)  # a stage failed on this frame
    sink.write(Frame(np.zeros((2, 2, 3), np.uint8)), SemanticResult(gt))  # no truth: skipped
    s = sink.scores()
    assert (sink.frames_scored, sink.frames_failed, sink.frames_without_truth) == (2, 1, 1)
    assert s.pixel_acc == 3 / 8  # 3 right of 4, then 0 of 4
    # sky: TP 1, FN 3 -> 1/4; ground: 1/2; road: 1/2; things absent -> NaN, left out
    assert s.per_class_iou[:3] == (0.25, 0.5, 0.5) and s.miou == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert sink.shared_classes == ("road", "sky", "ground")


# ---- the whole demo on a bundle made here --------------------------------------------------------
def test_demo_numbers_match_a_sequential_reference(dev_bundle, tmp_path):
    import cv2

    import edgeseg

    opts = DemoOptions(bundle=str(dev_bundle.root), frames=12, size=ImageShape(72, 96), seed=4, out=str(tmp_path / "o"),
                       backend="onnxruntime", threads=1)
    r = run_demo(opts)
    assert r.precision == "fp32" and "no INT8 model" in r.notes[0]  # fallback, said
    assert r.source == "synthetic://?seed=4&size=96x72&fps=25&frames=12"
    s = r.stats
    assert s.frames == s.processed == r.video_frames == 12 and s.errors == 0 and s.drops == 0
    # the MP4 plays and holds every processed frame
    cap = cv2.VideoCapture(str(r.video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12 and (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 72)
    # accuracy: the same confusion matrix as scoring the predictor frame by frame on the generator
    ref = SemanticMetric(len(CLASSES), boundary=False, classes=CLASSES)
    gen = SceneGenerator(ImageShape(72, 96), (4, split_stream("demo")))
    with edgeseg.load(dev_bundle, backend="onnxruntime", threads=1) as p:
        for t in range(12):
            image, labels = gen.render_semantic(t)
            ref.update(p(image).labels, labels)
    want = ref.compute()
    np.testing.assert_array_equal(r.accuracy.confusion, want.confusion)
    assert r.accuracy.miou == want.miou and r.accuracy.pixel_acc == want.pixel_acc
    d = json.loads(r.stats_json.read_text())
    assert d["accuracy"]["miou"] == pytest.approx(want.miou) and d["stats"]["processed"] == 12
    text = format_report(r)
    assert f"mIoU {100 * want.miou:.1f}%" in text and "view the video: " in text and str(r.video) in text and "p95" in text


def test_cli_demo_on_a_user_source_has_no_accuracy(dev_bundle, tmp_path, capsys):
    import cv2

    from edgeseg.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((40, 56, 3), 40 * i, np.uint8))
    out, js = tmp_path / "o", tmp_path / "demo.json"
    code = main(["demo", "--bundle", str(dev_bundle.root), "--source", str(folder), "--out", str(out),
                 "--backend", "onnxruntime", "--threads", "1", "--json", str(js)])
    assert code == 0
    text = capsys.readouterr().out
    assert "accuracy: not measured" in text and str(out / "demo.mp4") in text
    d = json.loads(js.read_text())
    assert d["accuracy"] is None and d["video_frames"] == d["stats"]["processed"] == 5
    assert main(["demo", "--bundle", str(dev_bundle.root), "--source", str(folder), "--size", "64x48"]) == 2
    assert "--size sets the size of the generated stream" in capsys.readouterr().err


def test_precision_choice_and_missing_bundle(dev_bundle, tmp_path):
    precision, note = choose_precision(dev_bundle, "int8")
    assert precision == "fp32" and "no INT8 model" in note and f"edgeseg quantize {dev_bundle.root}" in note
    assert choose_precision(dev_bundle, "fp32") == ("fp32", None)
    with_int8 = _shapes_like_bundle(tmp_path / "q.edgeseg", int8=True)
    assert choose_precision(with_int8, "int8") == ("int8", None)
    with pytest.raises(BundleError, match="tools/train_default.py no_such_default"):
        resolve_bundle("no_such_default")
    with pytest.raises(BundleError, match="does not exist"):
        resolve_bundle(str(tmp_path / "nowhere.edgeseg"))
    with pytest.raises(InputError, match="--frames must be >= 1"):
        run_demo(DemoOptions(bundle=str(dev_bundle.root), frames=0))


# ---- the shipped default -------------------------------------------------------------------------
def test_shipped_shapes_demo(tmp_path):
    from edgeseg.paths import shipped_bundle

    if shipped_bundle("shapes") is None:
        pytest.skip("the shapes bundle is not built yet (python tools/train_default.py shapes)")
    from edgeseg.bundle import Bundle

    from edgeseg.backends.auto import availability, choose_int8_backend

    bundle = Bundle.open("shapes")
    int8_targets = {m.target for m in bundle.manifest.models if m.precision == "int8"}
    assert {"cpu", "tensorrt"} <= int8_targets  # the shipped default carries INT8 for both profiles
    r = run_demo(DemoOptions(frames=20, out=str(tmp_path), threads=1))
    assert r.precision == "int8" and not any("no INT8 model" in n for n in r.notes)
    # auto follows the INT8 model's target: ONNX Runtime runs the cpu profile unless TensorRT is here
    assert r.backend == choose_int8_backend(availability(), int8_targets)
    assert json.loads((tmp_path / "stats.json").read_text())["precision"] == "int8"
    assert r.stats.processed == r.video_frames == 20 and r.stats.errors == 0
    # a trained model: on held-out generated scenes (another seed stream, 3x the training resolution)
    # it scores close to the held-out mIoU recorded when the bundle was trained
    recorded = bundle.report["training"]["final"]["miou"]
    print(f"demo mIoU {r.accuracy.miou:.4f}, recorded val mIoU {recorded:.4f}")
    assert r.accuracy.miou > recorded - 0.05 and r.accuracy.pixel_acc > 0.9


def test_hints_offer_a_camera_when_one_is_present(monkeypatch, tmp_path):
    import edgeseg.demo as demo

    video = tmp_path / "demo.mp4"
    monkeypatch.setattr(demo, "CAMERA", tmp_path / "video0")
    assert not any("v4l2://" in n for n in demo.hints(DemoOptions(), video, "shapes", True))
    (tmp_path / "video0").touch()
    notes = demo.hints(DemoOptions(), video, "shapes", True)
    assert f"edgeseg demo --source v4l2://{tmp_path / 'video0'} --bundle road" in notes[1]
    user = demo.hints(DemoOptions(source="clip.mp4"), video, "shapes", False)
    assert "pass --bundle road" in user[-1] and str(video) in user[0]


def test_panoptic_demo_scores_pq_as_a_sequential_reference(tmp_path):
    """A panoptic bundle (shapes + shapes-instance fused) in the demo: PQ against the generator's
    exact panoptic truth equals scoring the predictor frame by frame."""
    import edgeseg
    from edgeseg.eval import PanopticMetric
    from edgeseg.export.fuse import fuse_bundles

    fused = fuse_bundles("shapes", "shapes-instance", tmp_path / "fused.edgeseg")
    opts = DemoOptions(bundle=str(fused.root), frames=6, size=ImageShape(144, 192), seed=2, out=str(tmp_path / "o"),
                       backend="onnxruntime", threads=1)
    r = run_demo(opts)
    assert "truth=full" in r.source and r.stats.processed == 6
    ref = PanopticMetric()
    gen = SceneGenerator(ImageShape(144, 192), (2, split_stream("demo")))
    with edgeseg.load(fused, backend="onnxruntime", threads=1) as p:
        for t in range(6):
            frame = gen.render(t)
            ref.update(p(frame.image), frame.panoptic)  # fused classes are the generator's, in its order
    want = ref.compute()
    assert r.accuracy.pq == pytest.approx(want.pq, abs=1e-12) and r.accuracy.things.n == want.things.n
    assert f"PQ {100 * want.pq:.1f}%" in format_report(r)
