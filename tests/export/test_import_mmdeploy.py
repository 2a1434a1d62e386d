"""``edgeseg import`` of a model in an MMDeploy work directory (``tools/deploy.py ... --dump-info``): the
pre-processing comes from its ``pipeline.json``, reproduced as MMDeploy's SDK runs its transforms
(``csrc/mmdeploy/preprocess/transform``: ``Resize`` keeps the aspect ratio rounding half up, ``Pad`` fills the
bottom and right, ``Normalize`` converts the SDK's BGR frames when ``to_rgb``). The ``pipeline.json`` files
below are written as MMDeploy 1.x's ``export2SDK`` writes them for each codebase's test pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from boxmask_ref import MMDET_MEAN, MMDET_STD, export_foreign, reference
from edgeseg.export.mmdeploy_config import mmdeploy_config
from edgeseg.structures import ImageShape, InputSpec
from instance_ref import assert_same_detections

NET = (96, 128)
RTMDET_MEAN, RTMDET_STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]
COLLECT = {"type": "Collect", "keys": ["img"], "meta_keys": ["ori_shape", "img_shape", "pad_shape", "scale_factor"]}


def _pipeline(transforms: list, component: str) -> dict:
    return {"pipeline": {"input": ["img"], "output": ["post_output"], "tasks": [
        {"type": "Task", "module": "Transform", "name": "Preprocess", "input": ["img"], "output": ["prep_output"],
         "transforms": [{"type": "LoadImageFromFile"}, *transforms]},
        {"name": "model", "type": "Task", "module": "Net", "input": ["prep_output"], "output": ["infer_output"],
         "input_map": {"img": "input"}},
        {"type": "Task", "module": "mmdet", "name": "postprocess", "component": component, "params": {},
         "output": ["post_output"], "input": ["prep_output", "infer_output"]}]}}


#: MMDetection 3.x's RTMDet-Ins test pipeline (Resize keep_ratio, Pad to 640 with 114) and data_preprocessor
#: (BGR mean/std, bgr_to_rgb False, pad_size_divisor 1), in the order export2SDK inserts them
RTMDET = [{"type": "Resize", "keep_ratio": True, "size": [640, 640]},
          {"type": "Pad", "size": [640, 640], "pad_val": {"img": [114, 114, 114]}},
          {"type": "Normalize", "to_rgb": False, "mean": RTMDET_MEAN, "std": RTMDET_STD},
          {"type": "Pad", "size_divisor": 1}, {"type": "DefaultFormatBundle"}, COLLECT]
#: Mask R-CNN, dynamic shape: keep-ratio resize to 1333x800, normalised, padded to a multiple of 32 with 0
MASK_RCNN = [{"type": "Resize", "keep_ratio": True, "size": [1333, 800]},
             {"type": "Normalize", "to_rgb": True, "mean": list(MMDET_MEAN), "std": list(MMDET_STD)},
             {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"}, COLLECT]
#: a static export: MMDeploy's process_model_config sets keep_ratio False and the input shape as the scale
MASK_RCNN_STATIC = [{"type": "Resize", "keep_ratio": False, "size": [128, 96]}, *MASK_RCNN[1:]]
#: MMSegmentation 1.x: Resize (its scale reversed into size), Normalize from the data_preprocessor, no pad
MMSEG = [{"type": "Resize", "keep_ratio": True, "size": [512, 1024]},
         {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True},
         {"type": "ImageToTensor", "keys": ["img"]}, {**COLLECT, "type": "PackSegInputs"}]
#: MMYOLO: its LetterResize (centred, 114) before the data_preprocessor's normalisation; its pipelines keep scopes
MMYOLO = [{"type": "mmdet.LoadAnnotations", "with_bbox": True}, {"type": "LetterResize", "scale": [640, 640],
                                                                 "allow_scale_up": False, "pad_val": {"img": 114}},
          {"type": "Normalize", "to_rgb": True, "mean": [0, 0, 0], "std": [255, 255, 255]},
          {"type": "Pad", "size_divisor": 1}, COLLECT]


def _work_dir(root, transforms, component="ResizeInstanceMask", net="end2end.onnx"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.json").write_text(json.dumps(_pipeline(transforms, component), indent=4))
    (root / "deploy.json").write_text(json.dumps({"version": "1.3.1", "task": "Detector", "models": [
        {"name": "model", "net": net, "weights": "", "backend": "onnxruntime", "precision": "FP32", "batch_size": 1,
         "dynamic_shape": False}], "customs": []}, indent=4))
    return root / "end2end.onnx"


@pytest.mark.parametrize("transforms, expected, sizes", [
    (RTMDET, dict(resize="letterbox", anchor="top-left", pad_value=114, color="BGR", mean=tuple(RTMDET_MEAN),
                  std=tuple(RTMDET_STD), scale=1.0), dict(size=ImageShape(640, 640), size_rule="fixed")),
    # the pad after Normalize holds 0: the mean pixel, rounded (123.675, 116.28, 103.53); a dynamic export is fed
    # each frame scaled into 1333x800 (either way round) and padded to a multiple of 32
    (MASK_RCNN, dict(resize="letterbox", anchor="top-left", pad_value=(124, 116, 104), color="RGB", mean=MMDET_MEAN,
                     std=MMDET_STD, scale=1.0), dict(size=ImageShape(1333, 800), size_rule="fit", multiple=32)),
    # MMDeploy's versions read a plain Resize's size in different orders: a dynamic export needs --size
    (MASK_RCNN_STATIC, dict(resize="resize", color="RGB", mean=MMDET_MEAN, std=MMDET_STD, scale=1.0), {}),
    (MMSEG, dict(resize="resize", color="RGB", mean=MMDET_MEAN, std=MMDET_STD, scale=1.0),
     dict(size=ImageShape(512, 1024), size_rule="fit", multiple=1)),
    (MMYOLO, dict(resize="letterbox", anchor="center", pad_value=114, color="RGB", mean=(0.0,) * 3, std=(255.0,) * 3,
                  scale=1.0), dict(size=ImageShape(640, 640), size_rule="fixed")),
], ids=["rtmdet-ins", "mask-rcnn-dynamic", "mask-rcnn-static", "mmseg", "mmyolo"])
def test_pipeline_json_gives_the_sdks_preprocessing(tmp_path, transforms, expected, sizes):
    cfg = mmdeploy_config(_work_dir(tmp_path / "w", transforms))
    assert cfg.input == expected and cfg.task == "instance"
    assert cfg.sizes == sizes
    # MMYOLO's test configs pad frames smaller than the scale instead of scaling them up: named, not reproduced
    assert [p.split(": ", 1)[1] for p in cfg.problems] == ([] if transforms is not MMYOLO else [
        "LetterResize allow_scale_up False is not reproduced (frames smaller than its scale are scaled up by edgeseg)"])
    assert {p.rsplit("/", 1)[-1] for p in cfg.files} == {"pipeline.json", "deploy.json"}


def test_an_mmdeploy_0x_pipeline_is_read_too(tmp_path):
    """MMDeploy 0.x's SDK files (its demo's retinanet_ort): the Resize size as [h, w], ImageToTensor, and a
    post-processing module without a component. Read the same way; its task is not named."""
    old = {"pipeline": {"input": ["img"], "output": ["bboxes"], "tasks": [
        {"name": "preprocess", "type": "Task", "module": "Transform", "input": ["img"], "output": ["prep_res"],
         "transforms": [{"type": "LoadImageFromFile"}, {"type": "Resize", "size": [800, 1333], "keep_ratio": True},
                        {"type": "Normalize", "mean": list(MMDET_MEAN), "std": list(MMDET_STD), "to_rgb": True},
                        {"type": "Pad", "size_divisor": 32}, {"type": "ImageToTensor", "keys": ["img"]},
                        {"type": "Collect", "keys": ["img"], "meta_keys": ["ori_shape", "img_shape", "scale_factor"]}]},
        {"name": "retinanet", "type": "Task", "module": "Net", "input": ["prep_res"], "output": ["infer_res"],
         "input_map": {"img": "input"}},
        {"name": "retinanet_post", "type": "Task", "module": "MMDetPostprocess", "postprocess_type": "SingleStagePost",
         "input": ["prep_res", "infer_res"], "output": ["bboxes"], "score_thr": 0.3}]}}
    (tmp_path / "pipeline.json").write_text(json.dumps(old))
    (tmp_path / "deploy.json").write_text(json.dumps({"version": "0.1.0", "models": [
        {"name": "retinanet", "net": "end2end.onnx", "weights": "", "backend": "onnxruntime", "precision": "FP32",
         "batch_size": 1, "dynamic_shape": True}], "customs": []}))
    cfg = mmdeploy_config(tmp_path / "end2end.onnx")
    assert cfg.task is None and cfg.problems == ()
    assert cfg.input == dict(resize="letterbox", anchor="top-left", pad_value=(124, 116, 104), color="RGB",
                             mean=MMDET_MEAN, std=MMDET_STD, scale=1.0)
    assert cfg.sizes == dict(size=ImageShape(800, 1333), size_rule="fit", multiple=32)


def test_files_that_are_not_this_models_or_not_mmdeploys(tmp_path):
    assert mmdeploy_config(tmp_path / "model.onnx") is None  # no pipeline.json
    # a deploy.json naming another model file: the work directory of another export
    assert mmdeploy_config(_work_dir(tmp_path / "a", RTMDET, net="other.onnx")) is None
    onnx_path = _work_dir(tmp_path / "b", RTMDET)
    (tmp_path / "b" / "pipeline.json").write_text("{not json")
    cfg = mmdeploy_config(onnx_path)
    assert cfg.input == {} and "not a readable JSON file" in cfg.problems[0]
    (tmp_path / "b" / "pipeline.json").write_text(json.dumps({"pipeline": {"tasks": [{"module": "Net"}]}}))
    assert "no Transform task" in mmdeploy_config(onnx_path).problems[0]
    # a transform edgeseg does not reproduce, and a broken Normalize, are named; the rest is still read
    odd = [{"type": "CenterCrop", "crop_size": 224}, {"type": "Normalize", "mean": [1, 2], "std": [1, 1, 1]},
           *RTMDET[:2]]
    cfg = mmdeploy_config(_work_dir(tmp_path / "c", odd))
    assert any("'CenterCrop' is not reproduced" in p for p in cfg.problems)
    assert any("are not three numbers" in p for p in cfg.problems)
    assert cfg.input["resize"] == "letterbox" and cfg.input["pad_value"] == 114
    # entries of the wrong type are named or read as MMDeploy's SDK would read them, never a traceback
    broken = ["Resize", {"type": "Resize", "keep_ratio": "false", "size": "big"},
              {"type": "Pad", "size_divisor": "x", "pad_val": {"img": "grey"}}, {"type": 7},
              {"type": "Normalize", "mean": [0, 0, 0], "std": [0, 1, 1]}]
    cfg = mmdeploy_config(_work_dir(tmp_path / "d", broken))
    assert cfg.input["resize"] == "resize" and cfg.sizes == {}  # keep_ratio "false" is false
    assert len(cfg.problems) == 5, cfg.problems
    # a segmentation map's pad level is not the image's (the SDK refuses it); a centred CenterNet pad is named
    odd = [RTMDET[0], {"type": "Pad", "size": [640, 640], "pad_val": {"seg": 255}},
           {"type": "Pad", "logical_or_val": 127, "add_pix_val": 1}]
    cfg = mmdeploy_config(_work_dir(tmp_path / "e", odd))
    assert cfg.input["pad_value"] == 0 and len(cfg.problems) == 2, cfg.problems
    # a TensorRT work directory names its engine beside end2end.onnx: the same model
    assert mmdeploy_config(_work_dir(tmp_path / "f", RTMDET, net="end2end.engine")).input["pad_value"] == 114
    # a deploy.json whose net is no file name: read as naming none
    w = _work_dir(tmp_path / "g", RTMDET)
    (tmp_path / "g" / "deploy.json").write_text(json.dumps({"models": [{"net": ["a", "b"]}, "x"]}))
    assert mmdeploy_config(w).input["pad_value"] == 114


@pytest.fixture(scope="module")
def mmdeploy_full(tmp_path_factory):
    import torch

    from edgeseg.models import create_model

    torch.manual_seed(0)
    path = _work_dir(tmp_path_factory.mktemp("mmdeploy") / "mask_rcnn", MASK_RCNN)
    export_foreign(create_model("test_mask_rcnn", num_classes=3), path, "mmdeploy-full", NET)
    return path


def test_a_work_directory_imports_with_its_pipeline_and_decodes_as_mmdetection(mmdeploy_full, tmp_path, caplog, capsys):
    """Without pipeline.json this static export is stretched to 128x96 (MMDeploy's static configs); with the
    dynamic pipeline's keep-ratio Resize and bottom-right Pad beside it, frames are letterboxed as the SDK
    pads them, and the detections equal MMDetection's decode of the same letterboxed input."""
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    assert main(["import", str(mmdeploy_full), "--task", "instance", "--names", "a,b,c",
                 "--out", str(tmp_path / "m.edgeseg")]) == 0
    assert "from MMDeploy's pipeline.json and deploy.json: color RGB" in caplog.text
    assert "assuming MMDetection's pre-processing" not in caplog.text  # read, not assumed
    i = Bundle.open(tmp_path / "m.edgeseg").manifest.input
    assert (i.resize, i.anchor, i.pad_value, i.color, i.mean, i.std, i.scale) == \
        ("letterbox", "top-left", (124, 116, 104), "RGB", MMDET_MEAN, MMDET_STD, 1.0)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m.edgeseg")]) == 0
    assert "(fixed, letterbox top-left, pad [124, 116, 104])" in capsys.readouterr().out
    for bad in ("1,2", "300", "grey"):  # --pad-value: a grey level or three
        assert main(["import", str(mmdeploy_full), "--task", "instance", "--names", "a,b,c", "--pad-value", bad,
                     "--out", str(tmp_path / "bad.edgeseg")]) != 0
        err = capsys.readouterr().err
        assert "pad value" in err.replace("-", " ") and "fix: e.g." in err, err
    session = make_session(mmdeploy_full.read_bytes())
    predictor = edgeseg.load(tmp_path / "m.edgeseg", backend="onnxruntime")
    rng = np.random.default_rng(3)
    total = 0
    for hw in ((150, 200), (120, 300), (64, 64)):
        rgb = rng.integers(0, 255, (*hw, 3), np.uint8)
        total += assert_same_detections(predictor(rgb), reference(session, rgb, "mmdeploy-full", NET, letterbox=True),
                                        f"{hw}", 0.95, min_mask_area=30)
    assert total > 10
    # the command line still replaces single fields, and --preprocess replaces the files' pre-processing
    caplog.clear()
    assert main(["import", str(mmdeploy_full), "--task", "instance", "--names", "a,b,c", "--anchor", "center",
                 "--pad-value", "0", "--out", str(tmp_path / "c.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "c.edgeseg").manifest.input
    assert (i.resize, i.anchor, i.pad_value, i.mean) == ("letterbox", "center", 0, MMDET_MEAN)
    assert main(["import", str(mmdeploy_full), "--task", "instance", "--names", "a,b,c", "--preprocess", "rtmdet",
                 "--out", str(tmp_path / "r.edgeseg")]) == 0
    assert "--preprocess rtmdet given: the pre-processing in pipeline.json and deploy.json is not used" in caplog.text
    i = Bundle.open(tmp_path / "r.edgeseg").manifest.input
    assert (i.color, i.pad_value, i.anchor) == ("BGR", 114, "top-left")


def test_an_mmsegmentation_work_directory_imports_with_its_normalisation(tmp_path, caplog):
    """An MMSegmentation model exported with its class map (``with_argmax``) and a BGR pipeline: the bundle
    feeds what MMDeploy's SDK feeds, and labels each pixel as the model does on the SDK's input."""
    import onnx
    from onnx import TensorProto, helper

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    mean, std = [100.0, 120.0, 140.0], [50.0, 60.0, 70.0]
    bgr = [{"type": "Resize", "keep_ratio": False, "size": [48, 64]},
           {"type": "Normalize", "mean": mean, "std": std, "to_rgb": False}, {"type": "ImageToTensor", "keys": ["img"]}]
    path = _work_dir(tmp_path / "seg", bgr, component="ResizeMask")
    # the class of each pixel: the channel (in the model's order) with the largest normalised value
    g = helper.make_graph([helper.make_node("ArgMax", ["input"], ["am"], axis=1, keepdims=1),
                           helper.make_node("Cast", ["am"], ["output"], to=TensorProto.INT64)], "seg",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 48, 64])],
                          [helper.make_tensor_value_info("output", TensorProto.INT64, [1, 1, 48, 64])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["import", str(path), "--names", "b,g,r", "--out", str(tmp_path / "s.edgeseg")]) == 0
    assert "describes a" not in caplog.text  # a semantic model imported as one
    i = Bundle.open(tmp_path / "s.edgeseg").manifest.input
    assert (i.color, i.mean, i.std, i.scale, i.resize) == ("BGR", tuple(mean), tuple(std), 1.0, "resize")
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 255, (48, 64, 3), np.uint8)
    ref = np.argmax((rgb[..., ::-1].astype(np.float32) - mean) / std, axis=2)  # the SDK: BGR, normalised
    assert np.array_equal(edgeseg.load(tmp_path / "s.edgeseg", backend="onnxruntime")(rgb).labels, ref)
    # imported as the wrong task, the pipeline's own word is named
    caplog.clear()
    main(["import", str(path), "--task", "instance", "--names", "b,g,r", "--out", str(tmp_path / "x.edgeseg")])
    assert "describes a semantic model, imported as --task instance" in caplog.text


@pytest.mark.parametrize("hw", [(1080, 1920), (1920, 1080), (427, 640), (30, 50), (800, 1333)])
def test_fit_rule_is_the_sdks_keep_ratio_resize_and_divisor_pad(hw):
    """A dynamic MMDetection export: MMDeploy's SDK scales each frame into 1333x800 either way round (MMCV's
    long/short edge rule, rounded half up) and pads it below and to the right to a multiple of 32, with 0 after
    normalising. ``size_rule="fit"`` feeds the same tensor (the padding: the mean pixel, rounded)."""
    import cv2

    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (*hw, 3), np.uint8)
    spec = InputSpec(size=ImageShape(1333, 800), size_rule="fit", multiple=32, resize="letterbox", anchor="top-left",
                     pad_value=(124, 116, 104), mean=MMDET_MEAN, std=MMDET_STD, scale=1.0)
    x, meta = spec.preprocess(img)
    s = min(1333 / max(hw), 800 / min(hw))
    dh, dw = int(hw[0] * s + 0.5), int(hw[1] * s + 0.5)
    ph, pw = -(-dh // 32) * 32, -(-dw // 32) * 32
    resized = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR) if (dh, dw) != hw else img
    ref = np.zeros((3, ph, pw), np.float32)  # Normalize, then Pad with 0
    ref[:, :dh, :dw] = ((resized.astype(np.float32) - MMDET_MEAN) / MMDET_STD).transpose(2, 0, 1)
    assert x.shape == (1, 3, ph, pw) and (meta.content, meta.pad_top, meta.pad_left) == (ImageShape(dh, dw), 0, 0)
    np.testing.assert_allclose(x[0, :, :dh, :dw], ref[:, :dh, :dw], atol=1e-4)
    assert np.abs(x[0] - ref).max() < 0.01  # the padding: the mean pixel rounded to whole levels
    if hw == (1080, 1920):
        assert (dh, dw, ph, pw) == (750, 1333, 768, 1344)


def test_a_dynamic_mmsegmentation_export_runs_at_the_pipelines_scale(tmp_path, caplog):
    """MMDeploy's default MMSegmentation config is dynamic: its SDK scales each frame into the test pipeline's
    scale (here 128x64) keeping the aspect ratio and feeds it unpadded. Imported without --size, the bundle does
    the same; with --size it letterboxes to that size."""
    import onnx
    from onnx import TensorProto, helper

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    keep = [{"type": "Resize", "keep_ratio": True, "size": [64, 128]},
            {"type": "Normalize", "mean": [100.0, 120.0, 140.0], "std": [50.0, 60.0, 70.0], "to_rgb": True}]
    path = _work_dir(tmp_path / "seg", keep, component="ResizeMask")
    g = helper.make_graph([helper.make_node("ArgMax", ["input"], ["am"], axis=1, keepdims=1),
                           helper.make_node("Cast", ["am"], ["output"], to=TensorProto.INT64)], "seg",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
                          [helper.make_tensor_value_info("output", TensorProto.INT64, [1, 1, "h", "w"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["import", str(path), "--names", "r,g,b", "--out", str(tmp_path / "s.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "s.edgeseg").manifest.input
    assert (i.size_rule, i.size, i.multiple, i.resize, i.anchor) == ("fit", ImageShape(64, 128), 1, "letterbox",
                                                                      "top-left")
    rgb = np.random.default_rng(4).integers(0, 255, (30, 50, 3), np.uint8)
    x, meta = i.preprocess(rgb)
    assert x.shape == (1, 3, 64, 107) and meta.content == ImageShape(64, 107)  # 50 * 64/30 = 106.7 -> 107
    labels = edgeseg.load(tmp_path / "s.edgeseg", backend="onnxruntime")(rgb).labels
    assert labels.shape == (30, 50) and set(np.unique(labels)) <= {0, 1, 2}
    assert main(["import", str(path), "--names", "r,g,b", "--size", "96x96", "--out", str(tmp_path / "f.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "f.edgeseg").manifest.input
    assert (i.size_rule, i.size, i.resize) == ("fixed", ImageShape(96, 96), "resize")


# ---- PaddleSeg: deploy.yaml beside a paddle2onnx export -------------------------------------------------------
#: PP-HumanSegV2-Lite's deploy.yaml as PaddleSeg's export writes it (published beside the model)
HUMANSEG = "Deploy:\n  model: model.pdmodel\n  params: model.pdiparams\n  transforms:\n  - target_size:\n    - 256\n" \
           "    - 144\n    type: Resize\n  - type: Normalize\n"


def test_paddleseg_deploy_yaml_gives_its_preprocessing(tmp_path):
    from edgeseg.export.paddleseg_config import paddleseg_config

    (tmp_path / "deploy.yaml").write_text(HUMANSEG)
    cfg = paddleseg_config(tmp_path / "model.onnx")
    # Compose converts to RGB; Normalize: (pixel / 255 - 0.5) / 0.5; Resize's target_size is [w, h]
    assert cfg.input == dict(color="RGB", mean=(0.5,) * 3, std=(0.5,) * 3, scale=1 / 255, resize="resize")
    assert cfg.sizes == dict(size=ImageShape(144, 256), size_rule="fixed") and cfg.problems == ()
    (tmp_path / "deploy.yaml").write_text("Deploy:\n  transforms:\n  - type: ResizeByLong\n    long_size: 512\n"
                                          "  - type: Normalize\n    mean: [0.485, 0.456, 0.406]\n"
                                          "    std: [0.229, 0.224, 0.225]\n  - type: ResizeByShort\n    short_size: 9\n")
    cfg = paddleseg_config(tmp_path / "model.onnx")
    assert cfg.sizes == dict(size=ImageShape(512, 512), size_rule="fit", multiple=1)
    assert cfg.input["mean"] == (0.485, 0.456, 0.406) and cfg.input["resize"] == "letterbox"
    assert len(cfg.problems) == 1 and "'ResizeByShort' is not reproduced" in cfg.problems[0]
    # ResizeByLong then Padding (PaddleSeg pads the bottom and right with 127.5): a top-left letterbox
    (tmp_path / "deploy.yaml").write_text("Deploy:\n  transforms:\n  - type: ResizeByLong\n    long_size: 512\n"
                                          "  - type: Padding\n    target_size: [512, 384]\n  - type: Normalize\n"
                                          "    mean: [0.5]\n    std: [0.5]\n")
    cfg = paddleseg_config(tmp_path / "model.onnx")
    assert cfg.sizes == dict(size=ImageShape(384, 512), size_rule="fixed") and cfg.problems == ()
    assert (cfg.input["resize"], cfg.input["anchor"], cfg.input["pad_value"]) == ("letterbox", "top-left", 128)
    assert cfg.input["mean"] == (0.5,) * 3 and cfg.input["std"] == (0.5,) * 3  # one value: every channel
    # no transforms at all: raw RGB pixels
    (tmp_path / "deploy.yaml").write_text("Deploy:\n  model: model.pdmodel\n  transforms: null\n")
    assert paddleseg_config(tmp_path / "model.onnx").input == dict(color="RGB", mean=(0.0,) * 3, std=(1.0,) * 3,
                                                                   scale=1.0, resize="resize")
    # no Normalize: raw 0-255 pixels, as PaddleSeg feeds them
    (tmp_path / "deploy.yaml").write_text("Deploy:\n  transforms:\n  - type: Resize\n    target_size: [8, 4]\n")
    assert paddleseg_config(tmp_path / "model.onnx").input["scale"] == 1.0
    # another tool's deploy.yaml, and a broken one
    (tmp_path / "deploy.yaml").write_text("model: yolo.pt\nstages: [a, b]\n")
    assert paddleseg_config(tmp_path / "model.onnx") is None
    (tmp_path / "deploy.yaml").write_text("Deploy: [\n")
    assert "not a readable YAML file" in paddleseg_config(tmp_path / "model.onnx").problems[0]


def test_a_paddleseg_export_imports_with_no_options_and_labels_as_paddleseg(tmp_path, caplog):
    """paddle2onnx's export of a PaddleSeg model with ``--output_op argmax``: input ``x`` [-1, 3, -1, -1], an
    int32 class map out. Imported with only its names, it is fed at the deploy.yaml's size, RGB, normalised as
    PaddleSeg normalises, and labels every pixel as the model labels PaddleSeg's input."""
    import onnx
    from onnx import TensorProto, helper

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    (tmp_path / "deploy.yaml").write_text("Deploy:\n  model: model.pdmodel\n  transforms:\n  - type: Resize\n"
                                          "    target_size: [64, 48]\n  - type: Normalize\n    mean: [0.5, 0.4, 0.3]\n"
                                          "    std: [0.2, 0.25, 0.3]\n")
    g = helper.make_graph([helper.make_node("ArgMax", ["x"], ["am"], axis=1, keepdims=0),
                           helper.make_node("Cast", ["am"], ["argmax_0.tmp_0"], to=TensorProto.INT32)], "pp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("argmax_0.tmp_0", TensorProto.INT32, ["n", "h", "w"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]), str(tmp_path / "model.onnx"))
    assert main(["import", str(tmp_path / "model.onnx"), "--names", "r,g,b", "--out", str(tmp_path / "p.edgeseg")]) == 0
    assert "from PaddleSeg's deploy.yaml" in caplog.text
    i = Bundle.open(tmp_path / "p.edgeseg").manifest.input
    assert (i.size, i.size_rule, i.resize, i.color, i.mean, i.std) == (ImageShape(48, 64), "fixed", "resize", "RGB",
                                                                         (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    rgb = np.random.default_rng(6).integers(0, 255, (48, 64, 3), np.uint8)
    ref = np.argmax((rgb.astype(np.float32) / 255 - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.3], axis=2)
    assert np.array_equal(edgeseg.load(tmp_path / "p.edgeseg", backend="onnxruntime")(rgb).labels, ref)


def test_a_fit_bundle_quantizes_on_frames_of_several_sizes(tmp_path, caplog):
    """A dynamic export fed at each frame's own shape: ONNX Runtime's histogram calibrators stack every frame's
    tensors, so frames of several sizes were a numpy traceback ("inhomogeneous shape"); they are brought to the
    most common size, and said so."""
    import cv2
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.cli import main
    from edgeseg.quant.calibration import one_network_shape

    keep = [{"type": "Resize", "keep_ratio": True, "size": [64, 128]},
            {"type": "Normalize", "mean": [100.0, 120.0, 140.0], "std": [50.0, 60.0, 70.0], "to_rgb": True},
            {"type": "Pad", "size_divisor": 32}]
    path = _work_dir(tmp_path / "seg", keep, component="ResizeMask")
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])], "seg",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "h", "w"])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["import", str(path), "--names", "a,b,c", "--out", str(tmp_path / "q.edgeseg")]) == 0
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(1)
    sizes = [(48, 64), (48, 64), (64, 48), (30, 50)]
    for k, hw in enumerate(sizes):
        cv2.imwrite(str(calib / f"{k}.png"), rng.integers(0, 255, (*hw, 3), np.uint8))
    from edgeseg.bundle import Bundle

    spec = Bundle.open(tmp_path / "q.edgeseg").manifest.input
    frames = one_network_shape([rng.integers(0, 255, (*hw, 3), np.uint8) for hw in sizes], spec)
    assert [f.shape[:2] for f in frames] == [(48, 64)] * 4
    assert main(["quantize", str(tmp_path / "q.edgeseg"), "--calib", str(calib), "--target", "cpu"]) == 0
    assert "2 of 4 resized to 64x48 (the most common size)" in caplog.text
    assert (tmp_path / "q.edgeseg" / "model.int8.cpu.onnx").is_file()


@pytest.mark.parametrize("masks", ["roi", "full"])
def test_a_dynamic_instance_export_maps_its_detections_back_through_the_fit_rule(tmp_path, masks):
    """MMDeploy's dynamic Mask R-CNN configs: the SDK scales each frame into the pipeline's scale (here 160x96, the
    long and short edge), pads it below and to the right to a multiple of 32, and divides the detections by the
    scale factor. A hand-made graph of that output form with one fixed detection in network pixels (the box
    ``[32, 16, 96, 64]``; its mask the whole box: 28x28 ones, or the box's pixels of a whole-input mask) must come
    back as that box divided by the frame's scale factor, with its mask the box's pixels, at every frame size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    keep = [{"type": "Resize", "keep_ratio": True, "size": [160, 96]},
            {"type": "Normalize", "to_rgb": True, "mean": list(MMDET_MEAN), "std": list(MMDET_STD)},
            {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"}, COLLECT]
    path = _work_dir(tmp_path / "mask_rcnn", keep)
    box = np.array([32.0, 16.0, 96.0, 64.0], np.float32)
    dets = numpy_helper.from_array(np.array([[[*box, 0.9]]], np.float32), "dets_c")
    labels = numpy_helper.from_array(np.array([[1]], np.int64), "labels_c")
    nodes = [helper.make_node("Identity", ["dets_c"], ["dets"]), helper.make_node("Identity", ["labels_c"], ["labels"])]
    if masks == "roi":
        init = [dets, labels, numpy_helper.from_array(np.ones((1, 1, 28, 28), np.float32), "masks_c")]
        nodes.append(helper.make_node("Identity", ["masks_c"], ["masks"]))
        mask_info = helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, "n", 28, 28])
    else:  # a boolean whole-input mask: the input's own height and width, the box's pixels on:
        # rows y in [16, 64) and columns x in [32, 96): a Range over the input's own size compared with the box
        nodes += [
            helper.make_node("ReduceMean", ["input"], ["plane"], axes=[1], keepdims=0),         # [1, H, W]
            helper.make_node("Shape", ["plane"], ["shp"]),
            helper.make_node("Gather", ["shp", "one"], ["H"]), helper.make_node("Gather", ["shp", "two"], ["W"]),
            helper.make_node("Range", ["zero_i", "H", "one_i"], ["ry"]),
            helper.make_node("Range", ["zero_i", "W", "one_i"], ["rx"]),
            helper.make_node("GreaterOrEqual", ["ry", "y0"], ["ya"]), helper.make_node("Less", ["ry", "y1"], ["yb"]),
            helper.make_node("And", ["ya", "yb"], ["yin"]),
            helper.make_node("GreaterOrEqual", ["rx", "x0"], ["xa"]), helper.make_node("Less", ["rx", "x1"], ["xb"]),
            helper.make_node("And", ["xa", "xb"], ["xin"]),
            helper.make_node("Unsqueeze", ["yin", "ax1"], ["ycol"]),                             # [H, 1]
            helper.make_node("And", ["ycol", "xin"], ["inbox"]),                                 # [H, W]
            helper.make_node("Unsqueeze", ["inbox", "ax01"], ["masks"]),                         # [1, 1, H, W]
        ]
        scalar = lambda n, v: numpy_helper.from_array(np.array(v, np.int64), n)  # noqa: E731
        init = [dets, labels, scalar("one", 1), scalar("two", 2), scalar("zero_i", 0), scalar("one_i", 1),
                scalar("y0", 16), scalar("y1", 64), scalar("x0", 32), scalar("x1", 96),
                numpy_helper.from_array(np.array([1], np.int64), "ax1"),
                numpy_helper.from_array(np.array([0, 1], np.int64), "ax01")]
        mask_info = helper.make_tensor_value_info("masks", TensorProto.BOOL, [1, "n", "h", "w"])
    g = helper.make_graph(nodes, "mask_rcnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             [1, 3, "h", "w"])],
                          [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, "n", 5]),
                           helper.make_tensor_value_info("labels", TensorProto.INT64, [1, "n"]), mask_info], init)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["import", str(path), "--task", "instance", "--names", "a,b,c", "--out", str(tmp_path / "m.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "m.edgeseg").manifest.input
    assert (i.size_rule, i.size, i.multiple, i.anchor) == ("fit", ImageShape(160, 96), 32, "top-left")
    predictor = edgeseg.load(tmp_path / "m.edgeseg", backend="onnxruntime")
    rng = np.random.default_rng(5)
    for hw in ((48, 80), (96, 160), (120, 100), (300, 500)):
        rgb = rng.integers(0, 255, (*hw, 3), np.uint8)
        x, meta = i.preprocess(rgb)
        s = min(160 / max(hw), 96 / min(hw))  # MMCV's rescale factor; the SDK divides the boxes by it
        dh, dw = int(hw[0] * s + 0.5), int(hw[1] * s + 0.5)
        assert x.shape == (1, 3, -(-dh // 32) * 32, -(-dw // 32) * 32)
        r = predictor(rgb)
        assert len(r) == 1 and r.class_names[r.classes[0]] == "b" and r.scores[0] == pytest.approx(0.9)
        # the box over the frame: the network box divided by each axis' own scale (the rounded size over the frame's)
        sy, sx = dh / hw[0], dw / hw[1]
        want = np.minimum(box / [sx, sy, sx, sy], [hw[1], hw[0], hw[1], hw[0]])
        np.testing.assert_allclose(r.boxes[0], want, atol=1e-3)
        x0, y0, x1, y1 = want
        ys, xs = np.nonzero(r.masks[0])
        assert r.masks[0].shape == hw and ys.size > 0
        # the mask covers the box, to a pixel at its edges (resampling of the mask to the frame)
        assert ys.min() >= np.floor(y0) - 1 and ys.max() <= np.ceil(y1) and xs.min() >= np.floor(x0) - 1
        assert xs.max() <= np.ceil(x1)
        inner = r.masks[0][int(np.ceil(y0)) + 1:int(y1) - 1, int(np.ceil(x0)) + 1:int(x1) - 1]
        assert inner.size > 0 and inner.all()
