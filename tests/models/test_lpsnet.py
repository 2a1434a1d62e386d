"""LPSNet: registry and class contract, train/eval outputs, the in-graph decode against a loop-based
reference, and ONNX export (opset 19, DeformConv as the standard op and decomposed) against ONNX Runtime."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeseg.data.synthetic import CLASSES, SceneGenerator
from edgeseg.errors import ModelError
from edgeseg.models import create_model, list_models, load_checkpoint, model_info, save_checkpoint
from edgeseg.models.lpsnet import default_size_ranges, level_points
from edgeseg.structures import ImageShape, InputSpec

from .tester import randomize_batchnorm

SIZE = ImageShape(64, 96)
OUTPUTS = ("semantic", "boxes", "scores", "classes")


def _tiny(**kw):
    torch.manual_seed(0)
    return randomize_batchnorm(create_model("test_lpsnet", class_names=list(CLASSES), **kw))


def _frame(t: int = 40) -> torch.Tensor:
    image = SceneGenerator(SIZE, seed=3).render(t).image
    return torch.from_numpy(InputSpec(size=SIZE).preprocess(image)[0])


# ---- registry and contract ----------------------------------------------------------------------
def test_registered_as_panoptic_models():
    assert list_models("lpsnet*", task="panoptic") == ["lpsnet_mobilenetv3_small", "lpsnet_resnet18"]
    assert "test_lpsnet" in list_models(task="panoptic") and model_info("test_lpsnet").tiny
    assert model_info("lpsnet_resnet18").arch == "lpsnet" and model_info("lpsnet_resnet18").encoder == "resnet18"
    m = create_model("test_lpsnet", class_names=list(CLASSES))
    assert m.task == "panoptic" and m.num_classes == 6 and m.class_names == CLASSES
    assert m.thing_classes == (3, 4, 5) and m.num_things == 3 and m.top_k == 100
    assert m.model_name == "test_lpsnet" and m.strides == (8, 16, 32)
    assert m.size_ranges == ((0.0, 64.0), (64.0, 128.0), (128.0, math.inf)) == default_size_ranges(3)
    m = create_model("test_lpsnet", num_classes=4, thing_classes=[2, 0], top_k=7)
    assert m.thing_classes == (2, 0) and m.top_k == 7 and m.class_names == ("class_0", "class_1", "class_2", "class_3")


@pytest.mark.parametrize("kw, match", [
    ({"num_classes": 4}, "no thing classes"),  # not the variant's default classes: things must be named
    ({"thing_classes": (3, 6)}, r"distinct indices in 0\.\.5"),
    ({"thing_classes": (3, 3)}, "distinct"),
    ({"class_names": ["a", "b"]}, "2 class names for 6 classes"),
    ({"top_k": 0}, "top_k"),
    ({"size_ranges": ((0, 64), (32, 16))}, "size_ranges"),
])
def test_bad_arguments_raise_model_errors(kw, match):
    with pytest.raises(ModelError, match=match):
        create_model("test_lpsnet", **kw)


def test_level_points_are_pixel_centres_with_the_fcos_offset():
    pts = level_points((2, 3), 8)
    expected = [[4.5, 4.5], [12.5, 4.5], [20.5, 4.5], [4.5, 12.5], [12.5, 12.5], [20.5, 12.5]]
    assert torch.equal(pts, torch.tensor(expected))


def test_train_mode_outputs_per_level():
    model = _tiny().train()
    out = model(torch.randn(2, 3, *SIZE.hw))
    assert set(out) == {"cls_logits", "box_ltrb", "border_logits", "semantic"}
    shapes = [(8, 12), (4, 6), (2, 3)]
    assert [tuple(c.shape) for c in out["cls_logits"]] == [(2, 3, *s) for s in shapes]
    assert [tuple(c.shape) for c in out["box_ltrb"]] == [(2, 4, *s) for s in shapes]
    assert [tuple(c.shape) for c in out["border_logits"]] == [(2, 1, *s) for s in shapes]
    assert out["semantic"].shape == (2, 6, 16, 24)
    assert all(float(b.detach().min()) > 0 for b in out["box_ltrb"])  # exp(.) * stride: positive distances
    assert out["semantic"].requires_grad and all(c.requires_grad for c in out["cls_logits"])


def test_eval_outputs_fixed_shapes_and_types():
    model = _tiny().eval()
    with torch.no_grad():
        out = model(torch.cat([_frame(), _frame(90)]))
    assert set(out) == set(OUTPUTS)
    assert out["semantic"].shape == (2, 6, 16, 24) and out["semantic"].dtype == torch.float32
    assert out["boxes"].shape == (2, 100, 4) and out["boxes"].dtype == torch.float32
    assert out["scores"].shape == (2, 100) and out["scores"].dtype == torch.float32
    assert out["classes"].shape == (2, 100) and out["classes"].dtype == torch.int64
    s, b = out["scores"], out["boxes"]
    assert (s[:, :-1] >= s[:, 1:]).all() and (s > 0).all() and (s < 1).all()
    assert set(out["classes"].unique().tolist()) <= {3, 4, 5}
    assert (b[..., 0] >= 0).all() and (b[..., 2] <= SIZE.width).all() and (b[..., 1] >= 0).all()
    assert (b[..., 3] <= SIZE.height).all() and (b[..., 2] >= b[..., 0]).all() and (b[..., 3] >= b[..., 1]).all()
    assert not torch.equal(s[0], s[1])  # no batch mixing


def _reference_decode(model, x: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """Top-k (score, box, class) by an explicit loop over levels, locations and thing classes."""
    with torch.no_grad():
        feats = model.encoder(x)
        pyramid = model.fpn([feats[i] for i in model.taps[1:]], extra=False)
        maps = [model.box_head(p, level) for level, p in enumerate(pyramid)]
    h, w = x.shape[-2:]
    cands = []
    for (cls, ltrb, border), s in zip(maps, model.strides):
        c, d, o = cls[0].double().numpy(), ltrb[0].double().numpy(), border[0, 0].double().numpy()
        for i in range(c.shape[1]):
            for j in range(c.shape[2]):
                px, py = j * s + s // 2 + 0.5, i * s + s // 2 + 0.5
                box = [min(max(px - d[0, i, j], 0), w), min(max(py - d[1, i, j], 0), h),
                       min(max(px + d[2, i, j], 0), w), min(max(py + d[3, i, j], 0), h)]
                for t, cls_index in enumerate(model.thing_classes):
                    sig = 1 / (1 + math.exp(-c[t, i, j]))
                    cands.append((math.sqrt(sig / (1 + math.exp(-o[i, j]))), box, cls_index))
    cands.sort(key=lambda e: -e[0])
    top = cands[:k]
    return {"scores": np.array([[e[0] for e in top]], np.float32), "boxes": np.array([[e[1] for e in top]], np.float32),
            "classes": np.array([[e[2] for e in top]], np.int64)}


def _assert_detections_equal(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float = 1e-4,
                             box_atol: float = 1e-4):
    """Scores equal within ``atol``; each detection equals (class, box within ``box_atol``) one of its
    score near-ties in the reference (the float summation order may swap near-equal scores)."""
    assert np.abs(got["scores"] - ref["scores"]).max() <= atol
    for i, s in enumerate(got["scores"][0]):
        ties = np.flatnonzero(np.abs(ref["scores"][0] - s) <= atol)
        assert any(got["classes"][0, i] == ref["classes"][0, j]
                   and np.abs(got["boxes"][0, i] - ref["boxes"][0, j]).max() <= box_atol for j in ties), (i, s)


def test_in_graph_decode_matches_a_loop_reference():
    model = _tiny().eval()
    x = _frame()
    with torch.no_grad():
        out = model(x)
    ref = _reference_decode(model, x, 100)
    _assert_detections_equal({k: out[k].numpy() for k in ("scores", "boxes", "classes")}, ref, atol=1e-6)


def test_fewer_candidates_than_top_k_are_zero_padded():
    model = _tiny(top_k=500).eval()  # 8*12 + 4*6 + 2*3 = 126 locations x 3 things = 378 candidates
    with torch.no_grad():
        out = model(_frame())
    assert out["scores"].shape == (1, 500)
    assert (out["scores"][0, :378] > 0).all() and (out["scores"][0, 378:] == 0).all()
    assert (out["boxes"][0, 378:] == 0).all() and (out["classes"][0, 378:] == 0).all()


def test_checkpoint_round_trip_keeps_classes(tmp_path):
    model = create_model("test_lpsnet", num_classes=5, class_names=list("abcde"), thing_classes=[4, 1], top_k=20)
    model = randomize_batchnorm(model)
    path = save_checkpoint(model, tmp_path / "m.safetensors", model_name="test_lpsnet", num_classes=5,
                           model_kwargs=model.model_kwargs)
    rebuilt = load_checkpoint(path)
    assert rebuilt.thing_classes == (4, 1) and rebuilt.class_names == tuple("abcde") and rebuilt.top_k == 20
    x = torch.randn(1, 3, *SIZE.hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), rebuilt(x)
    assert all(torch.equal(a[k], b[k]) for k in OUTPUTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lpsnet_mobilenetv3_small", "lpsnet_resnet18"])
def test_real_variants_at_640x320(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 320, 640))
    assert out["semantic"].shape == (1, 133, 80, 160) and out["boxes"].shape == (1, 100, 4)
    assert int(out["classes"].max()) < 80  # COCO panoptic (Detectron2 order): the things are 0..79


# ---- ONNX ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["onnx", "decomposed"])
def exported(request, tmp_path_factory):
    from edgeseg.export.onnx_export import export_onnx

    model = _tiny().eval()
    x = _frame()
    with torch.no_grad():  # the DCN offsets are live (randomize_batchnorm gave the zero-init predictor weights)
        feats = model.encoder(x)
        p3 = model.fpn([feats[i] for i in model.taps[1:]], extra=False)[0]
        offsets = model.semantic_head.deform[0].offset_conv(p3)[:, :18]
    assert float(offsets.abs().max()) > 0.5
    path = tmp_path_factory.mktemp("lpsnet") / f"lpsnet_{request.param}.onnx"
    export_onnx(model, path, InputSpec(size=SIZE), outputs=OUTPUTS, deform_conv=request.param)
    return request.param, model, path


def test_onnx_graph_is_static_and_nms_free(exported):
    import onnx

    form, _, path = exported
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert ("DeformConv" in ops) == (form == "onnx") and ("GridSample" in ops) == (form == "decomposed")
    assert "NonMaxSuppression" not in ops and "TopK" in ops
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [19]
    outs = {o.name: ([d.dim_value for d in o.type.tensor_type.shape.dim], o.type.tensor_type.elem_type)
            for o in graph.graph.output}
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    assert outs == {"semantic": ([1, 6, 16, 24], f32), "boxes": ([1, 100, 4], f32), "scores": ([1, 100], f32),
                    "classes": ([1, 100], i64)}


def test_onnx_runtime_equals_pytorch(exported):
    ort = pytest.importorskip("onnxruntime")
    _, model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for t in (40, 90):
        x = _frame(t)
        with torch.no_grad():
            ref = {k: v.numpy() for k, v in model(x).items()}
        got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"images": x.numpy()})))
        for k in OUTPUTS:
            assert got[k].shape == ref[k].shape and got[k].dtype == ref[k].dtype, k
        assert np.abs(got["semantic"] - ref["semantic"]).max() <= 1e-4
        _assert_detections_equal(got, ref, atol=1e-4)
