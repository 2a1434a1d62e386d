"""Mask R-CNN: the roi instance layout in eval mode, NMS (ONNX NonMaxSuppression and TensorRT's
EfficientNMS_TRT rules) against hand-computed cases and ONNX Runtime, ONNX export with a dynamic
detection count (K > 0 and K = 0) against ONNX Runtime, the TensorRT-plugin graph's structure, the
decoder on the exported outputs, and a short training run that lowers the losses."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

from edgeseg.data.synthetic import THING_CLASSES, SceneGenerator
from edgeseg.errors import InputError, ModelError
from edgeseg.models import create_model, list_models, load_checkpoint, model_info, save_checkpoint
from edgeseg.models.detection import (BoxCoder, detection_translation_table, efficient_nms, efficient_nms_reference,
                                      finalize_plugin_nodes, grid_anchors, nms)
from edgeseg.models.mask_rcnn import InstanceTarget
from edgeseg.structures import ImageShape, InputSpec

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
SIZE = ImageShape(128, 160)
OUTPUTS = ("boxes", "scores", "classes", "masks")
THINGS = list(THING_CLASSES)


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model("test_mask_rcnn", num_classes=3, thing_classes=THINGS, **kw).eval()


def _biased(**kw):
    """Random weights made decisive: objectness spread out (no near-ties between runtimes), class
    logits spread out and the background favoured, so that a textured input gives a handful of
    detections above the 0.5 threshold and a blank (all-zero) one gives none."""
    model = _tiny(score_threshold=0.5, **kw)
    with torch.no_grad():
        model.rpn.logits.weight.mul_(50)
        model.box_head.cls.weight.mul_(10)
        model.box_head.cls.bias[-1] = 6.0
    return model


def _textured() -> torch.Tensor:
    return torch.randn(1, 3, *SIZE.hw, generator=torch.Generator().manual_seed(1))


# ---- registry and the eager contract ------------------------------------------------------------
def test_registered_as_instance_models():
    names = list_models("mask_rcnn*", task="instance")
    assert names == ["mask_rcnn_mbv2_fpn", "mask_rcnn_r18_fpn", "mask_rcnn_r50_fpn"]
    assert model_info("test_mask_rcnn").tiny and model_info("test_mask_rcnn").task == "instance"
    assert {model_info(n).arch for n in names} == {"mask_rcnn"}
    assert model_info("mask_rcnn_r18_fpn").encoder == "resnet18"
    m = _tiny()
    assert m.task == "instance" and m.classes == THING_CLASSES and m.num_classes == 3
    with pytest.raises(ModelError, match="2 thing class names for 3"):
        create_model("test_mask_rcnn", num_classes=3, thing_classes=["a", "b"])
    with pytest.raises(ModelError, match="nms must be one of"):
        create_model("test_mask_rcnn", nms="cuda")


def test_eval_outputs_roi_layout():
    model = _biased()
    with torch.no_grad():
        out = model(_textured())
    k = out["scores"].shape[1]
    assert 0 < k < model.cfg.max_detections  # data-dependent, not padded
    assert out["boxes"].shape == (1, k, 4) and out["boxes"].dtype == torch.float32
    assert out["classes"].shape == (1, k) and out["classes"].dtype == torch.int64
    assert out["masks"].shape == (1, k, 28, 28) and out["masks"].dtype == torch.float32
    s, b = out["scores"][0], out["boxes"][0]
    assert (s[:-1] >= s[1:]).all() and (s > 0.5).all()
    assert ((out["classes"] >= 0) & (out["classes"] < 3)).all()
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= SIZE.width).all() and (b[:, 3] <= SIZE.height).all()
    assert ((out["masks"] >= 0) & (out["masks"] <= 1)).all()
    with pytest.raises(InputError, match="one image at a time"):
        model(torch.zeros(2, 3, *SIZE.hw))


def test_max_detections_cap_and_blank_frame():
    model = _tiny(max_detections=3)  # at init every class scores 1/4 > 0.05: far more candidates than 3
    with torch.no_grad():
        assert model(_textured())["scores"].shape == (1, 3)
        empty = _biased()(torch.zeros(1, 3, *SIZE.hw))
    assert {k: tuple(v.shape) for k, v in empty.items()} == {"boxes": (1, 0, 4), "scores": (1, 0), "classes": (1, 0),
                                                              "masks": (1, 0, 28, 28)}


def test_tensorrt_form_gives_the_same_detections_eagerly():
    ref, trt = _biased(), _biased(nms="tensorrt")
    x = _textured()
    with torch.no_grad():
        a, b = ref(x), trt(x)
    for k in OUTPUTS:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_anchors_and_box_coder():
    (a,) = grid_anchors([(2, 3)], (16,), (32.0,), (0.5, 1.0, 2.0))
    assert a.shape == (2 * 3 * 3, 4)
    # location (y=1, x=2) is row 5 of the grid: centre (32, 16); the 1:1 anchor is 32 x 32
    assert a[5 * 3 + 1].tolist() == [16.0, 0.0, 48.0, 32.0]
    w, h = a[0, 2] - a[0, 0], a[0, 3] - a[0, 1]  # ratio 0.5 = height / width, area 32^2
    assert float(h / w) == pytest.approx(0.5) and float(w * h) == pytest.approx(1024.0)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 6.0, 9.0]])
    dst = torch.tensor([[2.0, -1.0, 14.0, 25.0], [4.0, 4.0, 8.0, 8.0]])
    assert torch.allclose(coder.decode(coder.encode(src, dst), src)[:, 0], dst, atol=1e-5)
    # dw = 5 * log(12 / 10): hand-computed
    assert float(coder.encode(src, dst)[0, 2]) == pytest.approx(5 * np.log(1.2), abs=1e-6)
    huge = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), src[:1])[0, 0]
    assert float(huge[2] - huge[0]) == pytest.approx(1000.0 / 16 * 10, rel=1e-5)  # dw clamped at log(1000/16)


def test_instance_target_from_synthetic_frame():
    frame = SceneGenerator(ImageShape(64, 64), seed=0).render(3)
    t = InstanceTarget.from_result(frame.instances, THINGS)
    names = [frame.instances.class_names[c] for c in frame.instances.classes]
    assert t.classes.tolist() == [THINGS.index(n) for n in names]
    assert t.masks.shape == (len(names), 64, 64) and t.masks.dtype == torch.bool
    assert torch.equal(t.boxes, torch.from_numpy(frame.instances.boxes))
    with pytest.raises(InputError, match="not among the model's thing classes"):
        InstanceTarget.from_result(frame.instances, ["circle"])


def test_checkpoint_round_trip_keeps_classes_and_config(tmp_path):
    model = _tiny(max_detections=7, nms="tensorrt")
    path = save_checkpoint(model, tmp_path / "m.safetensors", model_name="test_mask_rcnn", num_classes=3,
                           model_kwargs=model.model_kwargs)
    rebuilt = load_checkpoint(path)
    assert rebuilt.classes == THING_CLASSES and rebuilt.cfg == model.cfg


# ---- NMS rules ----------------------------------------------------------------------------------------
# A [0,0,10,10] .9; B shifted by 1 (IoU 81/119) .8; C apart .7; D = A's top half (IoU exactly 0.5) .6;
# E a zero-area box .95 (never suppresses nor is suppressed); F = A at score 0.1 (the score threshold)
BOXES = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5], [5, 5, 5, 5], [0, 0, 10, 10]],
                     dtype=torch.float32)
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95, 0.1])


def _ort_nms(boxes, scores, iou, score_threshold, max_output):
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph([h.make_node("NonMaxSuppression", ["b", "s", "m", "i", "t"], ["o"])], "nms",
                     [h.make_tensor_value_info("b", T.FLOAT, None), h.make_tensor_value_info("s", T.FLOAT, None)],
                     [h.make_tensor_value_info("o", T.INT64, None)],
                     [h.make_tensor("m", T.INT64, [1], [max_output]), h.make_tensor("i", T.FLOAT, [1], [iou]),
                      h.make_tensor("t", T.FLOAT, [1], [score_threshold])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 19)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"b": boxes.numpy()[None], "s": scores.numpy()[None, None]})[0][:, 2].tolist()


def test_nms_hand_computed_and_equal_to_onnxruntime():
    # ONNX rules: score > 0.1 drops F; IoU(A, B) = 0.68 > 0.5 drops B; IoU(A, D) = 0.5 is not > 0.5
    assert nms(BOXES, SCORES, 0.5, 0.1, 100).tolist() == [4, 0, 2, 3]
    assert nms(BOXES, SCORES, 0.5, 0.1, 2).tolist() == [4, 0]
    assert nms(BOXES, SCORES, 0.7, 0.0, 100).tolist() == [4, 0, 1, 2, 3]  # 0.68 <= 0.7; F duplicates A
    assert nms(BOXES, SCORES, 0.5, 0.99, 100).tolist() == []
    assert nms(BOXES[:0], SCORES[:0], 0.5, 0.0, 100).tolist() == []
    ties = torch.tensor([0.5, 0.5, 0.5])
    far = torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]])
    assert nms(far, ties, 0.5, 0.0, 10).tolist() == [0, 1, 2]  # equal scores: index order
    for args in ((0.5, 0.1, 100), (0.5, 0.1, 2), (0.7, 0.0, 100), (0.5, 0.99, 100)):
        assert nms(BOXES, SCORES, *args).tolist() == _ort_nms(BOXES, SCORES, *args), args
    assert nms(far, ties, 0.5, 0.0, 10).tolist() == _ort_nms(far, ties, 0.5, 0.0, 10)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=g) * 40], 1)
    scores = torch.rand(300, generator=g)
    assert nms(boxes, scores, 0.45, 0.2, 60).tolist() == _ort_nms(boxes, scores, 0.45, 0.2, 60)


def test_efficient_nms_reference_hand_computed():
    # EfficientNMS_TRT rules: score >= threshold keeps F (0.1), IoU >= 0.5 drops D, classes apart;
    # class 1 holds C again (score 0.75) and A (0.85): another class, so neither is suppressed
    scores = torch.zeros(1, 6, 2)
    scores[0, :, 0] = SCORES
    scores[0, 2, 1], scores[0, 0, 1] = 0.75, 0.85
    num, boxes, sc, cls = efficient_nms(BOXES[None], scores, 0.1, 0.5, 8)
    assert num.dtype == torch.int32 and num.tolist() == [[5]]
    assert sc[0].tolist() == pytest.approx([0.95, 0.9, 0.85, 0.75, 0.7, 0, 0, 0])
    assert cls.dtype == torch.int32 and cls[0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    assert torch.equal(boxes[0, :5], BOXES[[4, 0, 0, 2, 2]]) and not boxes[0, 5:].any()  # zero padding
    # a score equal to the threshold is kept, one just below is not
    only = torch.zeros(1, 6, 1)
    only[0, 5, 0], only[0, 1, 0] = 0.1, 0.0999
    num, _, sc, _ = efficient_nms_reference(BOXES[None], only, 0.1, 0.5, 8)
    assert num.tolist() == [[1]] and float(sc[0, 0]) == pytest.approx(0.1)
    # per-class boxes [B, N, C, 4]: class c reads its own box; the cap holds
    per_class = torch.stack([BOXES, BOXES + 100], 1)[None]
    num, boxes, _, cls = efficient_nms(per_class, scores, 0.1, 0.5, 3)
    assert num.tolist() == [[3]] and cls[0].tolist() == [0, 0, 1]
    assert torch.equal(boxes[0], torch.stack([BOXES[4], BOXES[0], BOXES[0] + 100]))


# ---- ONNX export ------------------------------------------------------------------------------------------
def _export(model, path, opset: int = 19):
    from edgeseg.export import fold_conv_bn
    from edgeseg.ops import onnx_translation_table

    folded = fold_conv_bn(model)
    table = {**onnx_translation_table(), **detection_translation_table()}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(folded, (torch.zeros(1, 3, *SIZE.hw),), str(path), dynamo=True, opset_version=opset,
                          input_names=["images"], output_names=list(OUTPUTS), custom_translation_table=table,
                          optimize=True, verbose=False, report=False, external_data=False)
    graph = onnx.load(str(path))
    finalize_plugin_nodes(graph)
    onnx.save(graph, str(path))
    return folded


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _biased()
    path = tmp_path_factory.mktemp("mask_rcnn") / "mask_rcnn.onnx"
    folded = _export(model, path)
    return model, folded, path


@pytest.fixture(scope="module")
def exported_trt(tmp_path_factory):
    """The plugin form at opset 17 (TensorRT 8.5/8.6, JetPack 5): the version converter must pass it."""
    model = _biased(nms="tensorrt")
    path = tmp_path_factory.mktemp("mask_rcnn_trt") / "mask_rcnn_trt.onnx"
    _export(model, path, opset=17)
    return model, path


def _run(path, x: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"images": x.numpy()})))


def _assert_close(got: dict, ref: dict, atol: float = 1e-3) -> None:
    for k in OUTPUTS:
        r = ref[k].numpy()
        assert got[k].shape == r.shape and got[k].dtype == r.dtype, (k, got[k].shape, r.shape)
        if r.size:
            assert np.abs(got[k].astype(np.float64) - r).max() <= atol, (k, np.abs(got[k] - r).max())


def test_onnx_graph_has_a_dynamic_detection_count(exported):
    _, _, path = exported
    g = onnx.load(str(path))
    assert g.opset_import[0].version == 19
    shapes = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in g.graph.output}
    k = shapes["boxes"][1]
    assert isinstance(k, str) and shapes == {"boxes": [1, k, 4], "scores": [1, k], "classes": [1, k],
                                             "masks": [1, k, 28, 28]}
    ops = [n.op_type for n in g.graph.node]
    assert ops.count("NonMaxSuppression") == 2 and "RoiAlign" in ops and "BatchNormalization" not in ops


@pytest.mark.parametrize("frame", ["textured", "blank"])
def test_onnxruntime_equals_pytorch(exported, frame):
    model, folded, path = exported
    x = _textured() if frame == "textured" else torch.zeros(1, 3, *SIZE.hw)
    got = _run(path, x)
    with torch.no_grad():
        ref, ref_unfolded = folded(x), model(x)
    k = got["scores"].shape[1]
    assert (0 < k < model.cfg.max_detections) if frame == "textured" else k == 0
    _assert_close(got, ref)
    _assert_close(got, ref_unfolded)


def test_decoder_reads_the_exported_outputs(exported):
    from edgeseg.bundle import Manifest, OutputSpec
    from edgeseg.decode.instance import decode_instance
    from edgeseg.structures import InstanceOptions

    _, _, path = exported
    spec = InputSpec(size=SIZE)
    manifest = Manifest(name="mask_rcnn", task="instance", classes=THING_CLASSES, input=spec,
                        outputs=tuple(OutputSpec(k, k, "float32", (1, "K")) for k in OUTPUTS),
                        decoder=InstanceOptions(layout="roi", score_threshold=0.0).to_dict())
    original = ImageShape(96, 120)  # resized to 128 x 160 by preprocessing: 0.75 in both axes
    meta = spec.preprocess(np.zeros((*original.hw, 3), np.uint8))[1]
    outputs = _run(path, _textured())
    k = outputs["scores"].shape[1]
    result = decode_instance(outputs, meta, manifest)
    assert len(result) == k and result.image_shape == original and result.masks.shape == (k, *original.hw)
    np.testing.assert_allclose(result.boxes, outputs["boxes"][0] * 0.75, atol=1e-4)
    assert result.classes.tolist() == outputs["classes"][0].tolist()
    assert result.masks.any(axis=(1, 2)).sum() > 0
    empty = decode_instance(_run(path, torch.zeros(1, 3, *SIZE.hw)), meta, manifest)
    assert len(empty) == 0 and empty.masks.shape == (0, *original.hw)


def test_tensorrt_graph_uses_the_efficient_nms_plugin(exported_trt):
    model, path = exported_trt
    g = onnx.load(str(path))
    assert [(o.domain, o.version) for o in g.opset_import] == [("", 17)]
    assert not [n for n in g.graph.node if n.op_type == "NonMaxSuppression"]
    plugins = [n for n in g.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(plugins) == 2 and {n.domain for n in plugins} == {""}  # proposals, then detections
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in plugins]
    final = [a for a in attrs if a["max_output_boxes"] == model.cfg.max_detections]
    assert len(final) == 1
    assert final[0] == {"score_threshold": pytest.approx(0.5), "iou_threshold": pytest.approx(0.5),
                        "max_output_boxes": 20, "background_class": -1, "score_activation": 0, "box_coding": 0,
                        "plugin_version": b"1"}
    rpn = [a for a in attrs if a["max_output_boxes"] == model.cfg.rpn_post_nms][0]
    # a reviewer, against efficientNMSPlugin.cpp: the creator validates scoreThreshold >= 0; the RPN's -1 made the
    # parser fail on newer TensorRT (JetPack 6), and `edgeseg check` said OK
    assert rpn["iou_threshold"] == pytest.approx(0.7) and rpn["score_threshold"] == 0.0
    from edgeseg.quant.trt_ops import restriction_hits

    assert not restriction_hits(plugins, (10, 3))
    bad = onnx.helper.make_node("EfficientNMS_TRT", ["b", "s"], ["n", "x", "y", "z"], score_threshold=-1.0,
                                iou_threshold=0.7, max_output_boxes=50, background_class=-1, score_activation=0,
                                box_coding=0, plugin_version="1")
    hits = restriction_hits([bad], (10, 3))
    assert len(hits) == 1 and hits[0].level == "warning" and "score_threshold >= 0" in hits[0].message
    good = onnx.helper.make_node("EfficientNMS_TRT", ["b", "s"], ["n", "x", "y", "z"], score_threshold=0.0,
                                 iou_threshold=0.7, max_output_boxes=50, background_class=-1, score_activation=0,
                                 box_coding=0)
    assert not restriction_hits([good], (8, 5))
    del good.attribute[-1]  # box_coding left out: the creator needs all six
    assert restriction_hits([good], (8, 5)) and "--nms tensorrt" in restriction_hits([good], (8, 5))[0].fix
    # four outputs: num_detections, boxes, scores, classes; the graph outputs stay the roi layout
    assert all(len(n.output) == 4 and len(n.input) == 2 for n in plugins)
    shapes = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in g.graph.output}
    assert shapes["masks"][2:] == [28, 28] and isinstance(shapes["scores"][1], str)


def test_check_flags_nms_by_tensorrt_version(exported, exported_trt):
    from edgeseg.quant.check import check_model

    def unsupported(path, target):
        return {op for f in check_model(path, target).findings if f.code == "unsupported-op"
                for op in [f.message.split()[0]]}

    onnx_path, trt_path = exported[2], exported_trt[1]
    report = check_model(onnx_path, "tensorrt-8.4")
    nms_finding = [f for f in report.findings if f.message.startswith("NonMaxSuppression")]
    assert nms_finding and nms_finding[0].level == "error" and "--nms tensorrt" in nms_finding[0].fix
    assert "NonMaxSuppression" not in unsupported(onnx_path, "tensorrt-8.5")
    assert not {"NonMaxSuppression", "EfficientNMS_TRT"} & unsupported(trt_path, "tensorrt-8.4")
    assert not [f for f in check_model(trt_path, "tensorrt-10.3").findings if f.code == "custom-op"]


# ---- training -----------------------------------------------------------------------------------------------
def test_a_few_training_steps_lower_the_losses():
    torch.set_num_threads(1)
    size = ImageShape(128, 128)
    gen, spec = SceneGenerator(size, seed=1), InputSpec(size=size)
    frames = [gen.render(t) for t in (0, 7, 14, 21)]
    images = torch.from_numpy(np.concatenate([spec.preprocess(f.image)[0] for f in frames]))
    targets = [InstanceTarget.from_result(f.instances, THINGS) for f in frames]
    torch.manual_seed(0)
    model = create_model("test_mask_rcnn", num_classes=3, thing_classes=THINGS).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    history = []
    for step in range(40):
        i = 2 * (step % 2)
        losses = model.forward_train(images[i:i + 2], targets[i:i + 2])
        assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[:6], history[-6:]

    def mean(rows, key=None):
        return float(np.mean([sum(r.values()) if key is None else r[key] for r in rows]))

    assert mean(last) < 0.7 * mean(first), (mean(first), mean(last))
    assert mean(last, "loss_rpn_cls") < mean(first, "loss_rpn_cls") and mean(last, "loss_cls") < mean(first, "loss_cls")
    assert mean(last, "loss_mask") < mean(first, "loss_mask")
    with pytest.raises(ModelError, match="forward_train"):
        model(images[:1])


def test_training_with_an_image_without_objects():
    size = ImageShape(64, 64)
    gen, spec = SceneGenerator(size, seed=2), InputSpec(size=size)
    frame, blank = gen.render(0), SceneGenerator(size, seed=2, max_objects=0).render(0)
    images = torch.from_numpy(np.concatenate([spec.preprocess(f.image)[0] for f in (frame, blank)]))
    targets = [InstanceTarget.from_result(frame.instances, THINGS),
               {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long),
                "masks": torch.zeros(0, *size.hw, dtype=torch.bool)}]
    torch.manual_seed(0)
    model = create_model("test_mask_rcnn", num_classes=3, thing_classes=THINGS).train()
    losses = model.forward_train(images, targets)
    assert all(torch.isfinite(v.detach()) for v in losses.values())
    sum(losses.values()).backward()
    assert model.mask_head.predictor.weight.grad is not None
    only_blank = model.forward_train(images[1:], targets[1:])  # no foreground at all: zero box and mask losses
    assert float(only_blank["loss_box"].detach()) == 0 and float(only_blank["loss_mask"].detach()) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_r18_fpn", "mask_rcnn_mbv2_fpn"])
def test_real_variants_at_640x320(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 320, 640))
    assert out["masks"].shape[2:] == (28, 28) and out["boxes"].shape[1] <= 100
