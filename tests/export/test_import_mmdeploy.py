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
#: MMYOLO: its LetterResize (centred, 114) before the data_preprocessor's normalisation
MMYOLO = [{"type": "LetterResize", "scale": [640, 640], "allow_scale_up": False, "pad_val": {"img": 114}},
          {"type": "Normalize", "to_rgb": True, "mean": [0, 0, 0], "std": [255, 255, 255]},
          {"type": "Pad", "size_divisor": 1}, COLLECT]


def _work_dir(root, transforms, component="ResizeInstanceMask", net="end2end.onnx"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.json").write_text(json.dumps(_pipeline(transforms, component), indent=4))
    (root / "deploy.json").write_text(json.dumps({"version": "1.3.1", "task": "Detector", "models": [
        {"name": "model", "net": net, "weights": "", "backend": "onnxruntime", "precision": "FP32", "batch_size": 1,
         "dynamic_shape": False}], "customs": []}, indent=4))
    return root / "end2end.onnx"


@pytest.mark.parametrize("transforms, expected", [
    (RTMDET, dict(resize="letterbox", anchor="top-left", pad_value=114, color="BGR", mean=tuple(RTMDET_MEAN),
                  std=tuple(RTMDET_STD), scale=1.0)),
    # the pad after Normalize holds 0: the mean pixel, rounded (123.675, 116.28, 103.53)
    (MASK_RCNN, dict(resize="letterbox", anchor="top-left", pad_value=(124, 116, 104), color="RGB", mean=MMDET_MEAN,
                     std=MMDET_STD, scale=1.0)),
    (MASK_RCNN_STATIC, dict(resize="resize", color="RGB", mean=MMDET_MEAN, std=MMDET_STD, scale=1.0)),
    (MMSEG, dict(resize="resize", color="RGB", mean=MMDET_MEAN, std=MMDET_STD, scale=1.0)),
    (MMYOLO, dict(resize="letterbox", anchor="center", pad_value=114, color="RGB", mean=(0.0,) * 3, std=(255.0,) * 3,
                  scale=1.0)),
], ids=["rtmdet-ins", "mask-rcnn-dynamic", "mask-rcnn-static", "mmseg", "mmyolo"])
def test_pipeline_json_gives_the_sdks_preprocessing(tmp_path, transforms, expected):
    cfg = mmdeploy_config(_work_dir(tmp_path / "w", transforms))
    assert cfg.input == expected and cfg.problems == () and cfg.task == "instance"
    assert {p.rsplit("/", 1)[-1] for p in cfg.files} == {"pipeline.json", "deploy.json"}


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


@pytest.fixture(scope="module")
def mmdeploy_full(tmp_path_factory):
    import torch

    from edgeseg.models import create_model

    torch.manual_seed(0)
    path = _work_dir(tmp_path_factory.mktemp("mmdeploy") / "mask_rcnn", MASK_RCNN)
    export_foreign(create_model("test_mask_rcnn", num_classes=3), path, "mmdeploy-full", NET)
    return path


def test_a_work_directory_imports_with_its_pipeline_and_decodes_as_mmdetection(mmdeploy_full, tmp_path, caplog):
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
    assert "--preprocess rtmdet given: the pre-processing in pipeline.json is not used" in caplog.text
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
