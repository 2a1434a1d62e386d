"""Ultralytics' semantic segmentation exports (YOLO26-sem: ``task`` metadata ``semantic``) imported with no options:
names, size and pre-processing from the metadata, decoded as Ultralytics' ``SemanticSegmentationPredictor`` does
(letterbox, then ``scale_masks``: the padding cut from the logits, bilinear to the image, argmax), written here
independently in torch from its documented steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.errors import InputError
from edgeseg.structures import ImageShape

NAMES = ("road", "car", "sky")
H, W = 256, 512  # imgsz [h, w]


class _TinySem(torch.nn.Module):
    """Smooth colour-to-class logits at 1/4 of the input (as a stride-4 head gives them); ``argmax``: the class map
    baked into the graph, int64 [1, H, W] at the input's size (the other form Ultralytics' predictor takes)."""

    def __init__(self, argmax: bool = False):
        super().__init__()
        self.pool = torch.nn.AvgPool2d(4)
        self.head = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[[[4.0]], [[-2.0]], [[-2.0]]], [[[-2.0]], [[4.0]], [[-2.0]]],
                                                 [[[-2.0]], [[-2.0]], [[4.0]]]]))
            self.head.bias.zero_()
        self.argmax = argmax

    def forward(self, x):
        y = self.head(self.pool(x) - 0.5)
        if self.argmax:
            return torch.nn.functional.interpolate(y, scale_factor=4, mode="bilinear").argmax(1)
        return y


class _Binary(torch.nn.Module):
    """One logit per pixel (a one-class model): red minus the other channels."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(2 * x[:, :1] - x[:, 1:].sum(1, keepdim=True), 4)


def _export(path, argmax=False, task="semantic", binary=False):
    import onnx

    net = _Binary() if binary else _TinySem(argmax)
    torch.onnx.export(net.eval(), torch.zeros(1, 3, H, W), str(path), input_names=["images"],
                      output_names=["output0"], opset_version=17, dynamo=False)
    m = onnx.load(str(path))
    meta = {"description": "Ultralytics YOLO26n-sem model trained on cityscapes.yaml", "author": "Ultralytics",
            "version": "8.4.1", "task": task, "stride": "32", "batch": "1", "imgsz": f"[{H}, {W}]",
            "names": str({0: "crack"} if binary else dict(enumerate(NAMES))), "channels": "3"}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))
    return path


def _reference(session, rgb: np.ndarray) -> np.ndarray:
    """Ultralytics' steps: LetterBox(auto=False, center=True, pad 114), /255, the model, then scale_masks (padding
    cut at the mask's own scale, bilinear to the image, align_corners False) and argmax."""
    from instance_ref import letterbox

    canvas, _, _ = letterbox(rgb, (H, W))
    x = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255.0
    pred = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    h0, w0 = rgb.shape[:2]
    if pred.is_floating_point():
        mh, mw = pred.shape[2:]
        gain = min(mh / h0, mw / w0)
        pad_w, pad_h = (mw - w0 * gain) / 2, (mh - h0 * gain) / 2
        top, left = round(pad_h - 0.1), round(pad_w - 0.1)
        bottom, right = mh - round(pad_h + 0.1), mw - round(pad_w + 0.1)
        pred = torch.nn.functional.interpolate(pred[:, :, top:bottom, left:right], (h0, w0), mode="bilinear",
                                               align_corners=False)
        return pred[0].argmax(0).numpy()
    mh, mw = pred.shape[1:]
    gain = min(mh / h0, mw / w0)
    pad_w, pad_h = (mw - w0 * gain) / 2, (mh - h0 * gain) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = mh - round(pad_h + 0.1), mw - round(pad_w + 0.1)
    cut = pred[None, :, top:bottom, left:right].float()
    return torch.nn.functional.interpolate(cut, (h0, w0), mode="nearest")[0, 0].long().numpy()


def _near_border(labels: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of a pixel of another class."""
    import cv2

    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    lab = labels.astype(np.uint8)
    return cv2.dilate(lab, kernel) != cv2.erode(lab, kernel)


@pytest.mark.parametrize("argmax", [False, True], ids=["logits-at-1/4", "class-map-in-graph"])
def test_ultralytics_semantic_export_imports_with_no_options_and_decodes_as_its_predictor(tmp_path, argmax, capsys,
                                                                                        caplog):
    import onnxruntime as ort

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.data.synthetic import SceneGenerator

    src = _export(tmp_path / "yolo26n-sem.onnx", argmax)
    assert main(["import", str(src), "--out", str(tmp_path / "sem.edgeseg")]) == 0
    b = Bundle.open(tmp_path / "sem.edgeseg")
    m = b.manifest
    assert m.classes == NAMES and m.input.size == ImageShape(H, W)
    assert m.provenance["exporter"] == {"author": "Ultralytics", "version": "8.4.1", "task": "semantic",
                                        "imgsz": f"[{H}, {W}]", "stride": "32"}  # which export the bundle came from
    assert (m.input.resize, m.input.pad_value, m.input.scale, m.input.mean, m.input.std, m.input.color) == \
        ("letterbox", 114, 1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB")
    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    p = edgeseg.load(b, backend="onnxruntime", precision="fp32", threads=1)
    for seed, shape in ((0, ImageShape(300, 400)), (1, ImageShape(200, 640))):  # letterboxed both ways
        rgb = SceneGenerator(shape, seed=seed).render(0).image
        ours = p(rgb).labels
        ref = _reference(session, rgb)
        assert ours.shape == ref.shape == (shape.height, shape.width)
        # equal away from class borders; at them the two round the letterbox's padding differently at the
        # output's own scale (edgeseg crops the content box, Ultralytics the padding computed there) and
        # resize a class map nearest-exact against torch's legacy nearest: at most one output cell apart
        cell = int(np.ceil(max(shape.height / (H / 4), shape.width / (W / 4)))) if not argmax else 2
        border = _near_border(ref, cell)
        assert np.mean(ours == ref) > 0.98 and (ours == ref)[~border].all(), seed
    # the Python API takes the same defaults
    from edgeseg.export import import_onnx

    api = import_onnx(src, tmp_path / "api.edgeseg", classes=None, input_spec=None)
    assert api.manifest.input == m.input and api.manifest.classes == NAMES


def test_options_replace_single_fields_and_other_ultralytics_tasks_are_named(tmp_path, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    src = _export(tmp_path / "m.onnx")
    assert main(["import", str(src), "--names", "a,b,c", "--pad-value", "0", "--out", str(tmp_path / "o.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "o.edgeseg").manifest
    assert m.classes == ("a", "b", "c") and m.input.pad_value == 0 and m.input.resize == "letterbox"
    seg = _export(tmp_path / "seg.onnx", task="segment")
    assert main(["import", str(seg), "--out", str(tmp_path / "s.edgeseg")]) == 2
    err = capsys.readouterr().err
    assert "is an Ultralytics segment model, not a semantic segmentation one" in err and "--task instance" in err
    with pytest.raises(InputError, match="Ultralytics pose model"):
        from edgeseg.export import import_onnx

        import_onnx(_export(tmp_path / "pose.onnx", task="pose"), tmp_path / "p.edgeseg", classes=None, input_spec=None)


def test_a_one_class_model_is_background_and_its_class_where_the_logit_is_above_zero(tmp_path):
    """(found by the review) Ultralytics' predictor labels a one-channel model's class where its logit is above 0
    (``pred.gt(0)``) and its validator counts background and the class: such a model was refused."""
    import onnxruntime as ort

    import edgeseg
    from edgeseg.data.synthetic import SceneGenerator

    from edgeseg.export import import_onnx

    src = _export(tmp_path / "bin.onnx", binary=True)
    b = import_onnx(src, tmp_path / "bin.edgeseg", classes=None, input_spec=None)
    assert b.manifest.classes == ("background", "crack")
    rgb = SceneGenerator(ImageShape(300, 400), seed=3).render(0).image
    from instance_ref import letterbox

    canvas, _, _ = letterbox(rgb, (H, W))
    x = (torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255.0).numpy()
    logit = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    ours = edgeseg.load(b, backend="onnxruntime", precision="fp32", threads=1)(canvas).labels  # the letterboxed frame
    ref = torch.nn.functional.interpolate(torch.from_numpy(logit), (H, W), mode="bilinear")[0, 0].gt(0).numpy()
    assert 0.05 < ref.mean() < 0.95 and np.mean(ours == ref) > 0.995
    named = import_onnx(src, tmp_path / "named.edgeseg", classes=("road", "crack"), input_spec=None)
    assert named.manifest.classes == ("road", "crack")  # two names given: the same two channels
    assert (edgeseg.load(named, backend="onnxruntime", precision="fp32", threads=1)(canvas).labels == ours).all()


def test_hugging_face_files_beside_an_ultralytics_export_do_not_replace_its_conventions(tmp_path):
    """(found by the review) a config.json and preprocessor_config.json lying in the same folder gave the
    Ultralytics model ImageNet normalisation under its letterbox."""
    import json

    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    src = _export(tmp_path / "m.onnx")
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b", "2": "c"}}))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.485, 0.456, 0.406],
                                                                    "image_std": [0.229, 0.224, 0.225],
                                                                    "rescale_factor": 1 / 255, "do_normalize": True}))
    assert main(["import", str(src), "--out", str(tmp_path / "o.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "o.edgeseg").manifest
    assert m.classes == NAMES and (m.input.mean, m.input.std, m.input.resize) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                                                                                  "letterbox")


def test_three_commands_on_an_ultralytics_semantic_model_and_its_dataset(tmp_path, capsys):
    """Import (no options), INT8 gated by mIoU on an Ultralytics semantic dataset (``yolo-semantic:``), then predict:
    the path a YOLO26-sem user takes. The dataset's masks are the float model's own labels by Ultralytics' steps
    (edgeseg's differ at class borders only, so its FP32 mIoU is about 97) and the gate compares INT8 with it."""
    import json

    import cv2
    import onnxruntime as ort

    from edgeseg.cli import main
    from edgeseg.data.synthetic import SceneGenerator

    src = _export(tmp_path / "yolo26n-sem.onnx")
    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    ds = tmp_path / "ds"
    for split in ("train", "val"):
        (ds / "images" / split).mkdir(parents=True)
        (ds / "masks" / split).mkdir(parents=True)
        for k in range(6):
            rgb = SceneGenerator(ImageShape(240, 320), seed=100 * (split == "val") + k).render(0).image
            cv2.imwrite(str(ds / "images" / split / f"{k}.png"), rgb[..., ::-1])
            cv2.imwrite(str(ds / "masks" / split / f"{k}.png"), _reference(session, rgb).astype(np.uint8))
    (ds / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nmasks_dir: masks\n"
                                  "names:\n  0: road\n  1: car\n  2: sky\n")
    bundle = tmp_path / "sem.edgeseg"
    assert main(["import", str(src), "--out", str(bundle)]) == 0
    report = tmp_path / "q.json"
    assert main(["quantize", str(bundle), "--calib", str(ds / "images" / "train"), "--target", "cpu", "--eval",
                 f"yolo-semantic:{ds / 'data.yaml'}", "--max-drop", "1.0", "--no-progress", "--json", str(report)]) == 0
    q = json.loads(report.read_text())
    assert q["metric"] == "mIoU" and q["fp32"] > 95 and q["fp32"] - q["int8"] <= 1.0
    out = tmp_path / "pred.json"
    assert main(["predict", str(bundle), str(ds / "images" / "val" / "0.png"), "--precision", "int8", "--backend",
                 "onnxruntime", "--json", str(out)]) == 0
    got = json.loads(out.read_text())["images"][0]
    assert got["image"].endswith("0.png") and sum(got["class_pixels"].values()) == 320 * 240
