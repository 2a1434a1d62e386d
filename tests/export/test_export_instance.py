"""Instance models -> bundles: SOLOv2's dense layout exported under its own output names, parity on
decoded instances (torch vs ONNX Runtime), the manifest's decoder options, and the CLI route."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def _detecting_solo():
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=3)
    with torch.no_grad():
        model.head.cate_out.bias.fill_(2.0)  # every grid cell confident: instances to compare
    return model.eval()


def test_solov2_bundle_parity_and_decode(tmp_path):
    import edgeseg
    from edgeseg.decode.instance import decode_instance
    from edgeseg.export.instance_export import export_instance_bundle
    from edgeseg.export.parity import parity_images
    from edgeseg.structures import ImageShape, InputSpec

    model = _detecting_solo()
    spec = InputSpec(size=ImageShape(64, 96))
    b = export_instance_bundle(model, tmp_path / "solo.edgeseg", name="solo", input_spec=spec, classes=("a", "b", "c"))
    m = b.manifest
    assert m.task == "instance" and [o.name for o in m.outputs] == ["scores", "classes", "masks"]
    assert m.decoder_options.layout == "dense" and m.decoder_options.max_detections == model.max_detections
    parity = b.report["parity"]
    assert parity["passed"] and all(a == c and a > 0 for a, c in parity["instances_torch_onnx"])
    assert parity["min_mask_iou"] >= 0.95 and parity["max_score_diff"] < 1e-3
    # the bundle decodes what the torch model decodes, at the image's own size
    img = parity_images(ImageShape(120, 200), count=1)[0]
    predictor = edgeseg.load(b, backend="onnxruntime", precision="fp32")
    got = predictor(img)
    x, meta = spec.preprocess(img)
    with torch.no_grad():
        ref = decode_instance({k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}, meta, m)
    assert len(got) == len(ref) > 0 and got.masks.shape[1:] == (120, 200)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)


def test_export_cli_routes_instance_models(tmp_path):
    from edgeseg.cli import main
    from edgeseg.models import save_checkpoint

    model = _detecting_solo()
    ckpt = tmp_path / "solo.safetensors"
    save_checkpoint(model, ckpt, model_name="test_solov2", num_classes=3,
                    extra={"task": "instance", "classes": ["a", "b", "c"]})
    assert main(["export", str(ckpt), "--size", "96x64", "--out", str(tmp_path / "cli.edgeseg")]) == 0
    from edgeseg.bundle import Bundle

    assert Bundle.open(tmp_path / "cli.edgeseg").manifest.classes == ("a", "b", "c")
    assert main(["export", str(ckpt), "--size", "96x64", "--argmax-in-graph", "--out", str(tmp_path / "x")]) != 0


def test_mask_rcnn_bundle_dynamic_k_and_tensorrt_nms_graph(tmp_path):
    import onnx

    from edgeseg.export.instance_export import export_instance_bundle
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape, InputSpec

    torch.manual_seed(0)
    model = create_model("test_mask_rcnn", num_classes=3)
    b = export_instance_bundle(model, tmp_path / "m.edgeseg", name="m", input_spec=InputSpec(size=ImageShape(96, 128)),
                               nms="tensorrt", include_checkpoint=False)
    m = b.manifest
    assert m.decoder_options.layout == "roi" and [o.name for o in m.outputs] == ["boxes", "scores", "classes", "masks"]
    assert m.outputs[0].shape == (1, "detections", 4)  # K is dynamic
    assert b.report["parity"]["passed"]
    trt = onnx.load(str(b.root / "model.trt.onnx"))
    ops = [n.op_type for n in trt.graph.node]
    assert "EfficientNMS_TRT" in ops and "NonMaxSuppression" not in ops
    assert {mf.file: mf.target for mf in m.models} == {"model.onnx": None, "model.trt.onnx": "tensorrt"}
    # `edgeseg check BUNDLE --target tensorrt-X` checks the graph TensorRT runs (its runner picks model.trt.onnx);
    # before, it checked model.onnx and told TensorRT 8.4 users to re-export with --nms tensorrt
    from edgeseg.quant.check import check_bundle

    old_trt = check_bundle(b, "tensorrt-8.4")
    assert old_trt.model == "model.trt.onnx" and not [f for f in old_trt.findings if "NonMaxSuppression" in f.message
                                                      or "--nms tensorrt" in f.fix]
    assert check_bundle(b, "tensorrt-10.3").model == "model.trt.onnx"
    assert check_bundle(b, "onnxruntime").model == "model.onnx"
    assert check_bundle(b, "tensorrt-10.3", model_target="tensorrt").model == "model.trt.onnx"


def test_parity_pairs_instances_whose_tied_scores_swapped_ranks():
    """Matrix NMS turns 1e-7 differences between the runtimes into ~1e-4 score differences, enough to
    swap the ranks of two near-tied instances (seen exporting `street-instance` at 800x400): parity
    pairs each torch instance with the best tied ONNX instance of its class, not the one at its rank."""
    from edgeseg.export.instance_export import _paired_mask_iou
    from edgeseg.structures import ImageShape, InstanceResult

    masks = np.zeros((3, 4, 6), bool)
    masks[0, :2] = True              # 12 px
    masks[1, 2:, :3] = True          # 6 px
    masks[2, 2:, 3:] = True          # 6 px

    def result(order, scores, classes):
        return InstanceResult(boxes=np.zeros((3, 4), np.float32), scores=np.float32(scores),
                              classes=np.int32(classes), masks=masks[list(order)], image_shape=ImageShape(4, 6))

    a = result([0, 1, 2], [0.9, 0.09114, 0.09111], [0, 7, 0])
    b = result([0, 2, 1], [0.9, 0.09122, 0.091145], [0, 0, 7])      # ranks 1 and 2 swapped
    assert [_paired_mask_iou(a, b, i) for i in range(3)] == [1.0, 1.0, 1.0]
    # outside the tie, or of another class, the rank's own mask counts: IoU of disjoint masks is 0
    assert _paired_mask_iou(a, b, 1, tie=1e-6) == 0.0
    c = result([0, 2, 1], [0.9, 0.09122, 0.091145], [0, 0, 3])
    assert _paired_mask_iou(a, c, 1) == 0.0


@pytest.mark.parametrize("model,op,option", [("test_lpsnet", "DeformConv", "--deform-conv"),
                                             ("test_mask_rcnn", "RoiAlign", "--roi-align")])
def test_decomposed_forms_reach_panoptic_and_instance_exports(tmp_path, model, op, option):
    """Before: `edgeseg export` dropped --deform-conv and --roi-align for panoptic and instance models (only
    the semantic path passed them on): an LPSNet exported `--deform-conv decomposed` still held DeformConv,
    which OpenVINO cannot read."""
    import onnx

    from edgeseg.cli import main

    out = tmp_path / f"{op}.edgeseg"
    assert main(["export", model, "--size", "128x96", option, "decomposed", "--out", str(out), "--no-checkpoint"]) == 0
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert op not in ops


def test_raw_output_difference_ignores_order_and_sees_other_values():
    """Hand-made outputs: the same detections in another order agree (0); a changed value is its share of the range."""
    from edgeseg.export.instance_export import _raw_difference

    ref = {"scores": np.array([[0.9, 0.5, 0.2]], np.float32), "classes": np.array([[1, 0, 2]]),
           "masks": np.zeros((1, 3, 2, 2), np.float32)}
    assert _raw_difference(ref, {"scores": np.array([[0.2, 0.9, 0.5]], np.float32), "classes": np.array([[0, 0, 0]]),
                                 "masks": np.ones((1, 3, 2, 2), np.float32)}) == 0  # scores only: masks follow ranking
    assert _raw_difference({"logits": np.array([1.0, 2.0], np.float32)}, {"logits": np.array([1.0, 3.0], np.float32)}) \
        == pytest.approx(0.5)  # no score output: every float output
    assert _raw_difference(ref, {"scores": np.array([[0.9, 0.5, 0.29]], np.float32)}) == pytest.approx(0.1, rel=1e-4)
    assert _raw_difference(ref, {"scores": np.zeros((1, 2), np.float32)}) == 1.0  # another shape


def test_a_model_that_decodes_nothing_is_held_to_its_raw_outputs(tmp_path, caplog):
    """before: an untrained SOLOv2 decoding no instance on the parity frames 'passed' with nothing compared
    (instances [[0, 0], ...], smallest mask IoU 1.0)."""
    import logging

    from edgeseg.export.instance_export import export_instance_bundle
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape, InputSpec

    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=3).eval()
    with torch.no_grad():
        model.head.cate_out.bias.fill_(-20.0)  # no grid cell is confident: nothing decodes
    with caplog.at_level(logging.WARNING, logger="edgeseg.export"):
        b = export_instance_bundle(model, tmp_path / "s.edgeseg", name="s", input_spec=InputSpec(size=ImageShape(64, 96)),
                                   classes=("a", "b", "c"), include_checkpoint=False)
    parity = b.report["parity"]
    assert parity["instances_torch_onnx"] == [[0, 0]] * 3 and parity["compared"] == "raw outputs (no instance decoded)"
    assert parity["passed"] and parity["max_raw_difference"] < 1e-3 and "raw outputs only" in caplog.text
