"""SOLOv2: output contract in train and eval modes, Matrix NMS against hand-computed numbers and the
reference implementation, ONNX export (opset 19, Conv-BN folded) against ONNX Runtime."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeseg.data.synthetic import THING_CLASSES, SceneGenerator
from edgeseg.errors import ModelError
from edgeseg.models import create_model, list_models, load_checkpoint, model_info, save_checkpoint
from edgeseg.models.matrix_nms import matrix_nms
from edgeseg.models.solov2 import points_nms, scale_ranges
from edgeseg.structures import ImageShape, InputSpec

from .tester import randomize_batchnorm

ort = pytest.importorskip("onnxruntime")
SIZE = ImageShape(64, 96)


def _tiny(**kw):
    torch.manual_seed(0)
    return randomize_batchnorm(create_model("test_solov2", num_classes=3, thing_classes=list(THING_CLASSES), **kw))


def _frame(size: ImageShape = SIZE, max_objects: int = 6, t: int = 40) -> torch.Tensor:
    image = SceneGenerator(size, seed=3, max_objects=max_objects).render(t).image
    return torch.from_numpy(InputSpec(size=size).preprocess(image)[0])


# ---- registry and contract ----------------------------------------------------------------------
def test_registered_as_instance_models():
    names = list_models("solov2*", task="instance")
    assert names == ["solov2_mobilenetv2", "solov2_mobilenetv3_small", "solov2_resnet18"]
    assert "test_solov2" in list_models(task="instance") and model_info("test_solov2").tiny
    assert {model_info(n).arch for n in names} == {"solov2"} and model_info("solov2_resnet18").encoder == "resnet18"
    m = create_model("test_solov2", num_classes=3, thing_classes=list(THING_CLASSES))
    assert m.task == "instance" and m.classes == THING_CLASSES and m.num_classes == 3
    with pytest.raises(ModelError, match="2 thing class names for 3"):
        create_model("test_solov2", num_classes=3, thing_classes=["a", "b"])
    with pytest.raises(ModelError, match="nms_kernel"):
        create_model("test_solov2", nms_kernel="soft")


def test_train_mode_outputs():
    model = _tiny().train()
    out = model(torch.randn(2, 3, *SIZE.hw))
    n = 6 * 6 + 5 * 5 + 4 * 4 + 3 * 3 + 2 * 2
    assert model.num_cells == n
    assert out["categories"].shape == (2, n, 3)
    assert out["kernels"].shape == (2, n, 8)
    assert out["mask_features"].shape == (2, 8, 16, 24)
    assert all(v.requires_grad for v in out.values())


def test_eval_mode_dense_layout():
    model = _tiny().eval()
    x = torch.cat([_frame(), _frame(t=90)])
    with torch.no_grad():
        out = model(x)
    k = model.max_detections
    assert set(out) == {"scores", "classes", "masks"}
    assert out["scores"].shape == (2, k) and out["scores"].dtype == torch.float32
    assert out["classes"].shape == (2, k) and out["classes"].dtype == torch.int64
    assert out["masks"].shape == (2, k, 16, 24) and out["masks"].dtype == torch.float32
    s = out["scores"]
    assert (s[:, :-1] >= s[:, 1:]).all() and (s >= 0).all() and (s > 0).any()
    assert ((out["classes"] >= 0) & (out["classes"] < 3)).all()
    m = out["masks"]
    assert ((m >= 0) & (m <= 1)).all()
    assert (m[s == 0] == 0).all() and (out["classes"][s == 0] == 0).all()  # padding is all zeros
    assert not torch.equal(out["scores"][0], out["scores"][1])  # no batch mixing


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) for n in ("solov2_resnet18", "solov2_mobilenetv2")])
def test_real_variants_at_320x240(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 240, 320))
    assert out["scores"].shape == (1, 100) and out["masks"].shape == (1, 100, 60, 80)
    model.train()
    assert model(torch.randn(1, 3, 240, 320))["categories"].shape == (1, 24**2 + 20**2 + 16**2 + 12**2 + 8**2, 3)


def test_checkpoint_round_trip_keeps_thing_classes(tmp_path):
    model = _tiny().eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", model_name="test_solov2", num_classes=3,
                           model_kwargs=model.model_kwargs)
    rebuilt = load_checkpoint(path)
    assert rebuilt.classes == THING_CLASSES
    x = _frame()
    with torch.no_grad():
        a, b = model(x), rebuilt(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_scale_ranges_follow_the_short_side():
    assert scale_ranges(ImageShape(800, 1333)) == ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
    lo, hi = scale_ranges(ImageShape(240, 320))[1]
    assert math.isclose(lo, 14.4) and math.isclose(hi, 57.6)


def test_points_nms_keeps_local_maxima():
    heat = torch.tensor([[[[0.1, 0.9, 0.2], [0.3, 0.4, 0.8], [0.5, 0.1, 0.7]]]])
    kept = points_nms(heat)[0, 0]
    # each value is compared with its up/left 2x2 window (the reference code's max_pool 2, stride 1, pad 1)
    assert torch.equal(kept, torch.tensor([[0.1, 0.9, 0.0], [0.3, 0.0, 0.0], [0.5, 0.0, 0.0]]))


# ---- Matrix NMS ---------------------------------------------------------------------------------
def _three_masks():
    """A (area 4), B (area 3) inside A: IoU 3/4; C (area 4) meets A in 2 pixels (IoU 1/3), B in 1 (1/6)."""
    m = torch.zeros(3, 8)
    m[0, 0:4] = 1
    m[1, 0:3] = 1
    m[2, 2:6] = 1
    return m[None], torch.tensor([[0.9, 0.8, 0.7]])


def test_matrix_nms_gaussian_hand_computed():
    masks, scores = _three_masks()
    got = matrix_nms(masks, torch.zeros(1, 3, dtype=torch.long), scores, kernel="gaussian", sigma=2.0)[0]
    # A: top, no decay. B: exp(-2 * 0.75^2) / exp(0). C: min(exp(-2/9) / exp(0), exp(-2/36) / exp(-2 * 0.75^2))
    expect = [0.9, 0.8 * math.exp(-1.125), 0.7 * min(math.exp(-2 / 9), math.exp(-2 / 36 + 1.125))]
    assert got.tolist() == pytest.approx(expect, abs=1e-6)
    assert got[2] == pytest.approx(0.7 * 0.800737, abs=1e-6)


def test_matrix_nms_linear_and_class_aware():
    masks, scores = _three_masks()
    lin = matrix_nms(masks, torch.zeros(1, 3, dtype=torch.long), scores, kernel="linear")[0]
    assert lin.tolist() == pytest.approx([0.9, 0.8 * 0.25, 0.7 * (2 / 3)], abs=1e-6)
    # C of another class is not decayed at all; B still is
    aware = matrix_nms(masks, torch.tensor([[0, 0, 1]]), scores)[0]
    assert aware.tolist() == pytest.approx([0.9, 0.8 * math.exp(-1.125), 0.7], abs=1e-6)


def test_matrix_nms_needs_no_sorting():
    masks, scores = _three_masks()
    labels = torch.zeros(1, 3, dtype=torch.long)
    ref = matrix_nms(masks, labels, scores)[0]
    perm = torch.tensor([2, 0, 1])
    got = matrix_nms(masks[:, perm], labels[:, perm], scores[:, perm])[0]
    assert torch.allclose(got, ref[perm])


def _reference_matrix_nms(masks, labels, scores, sigma=2.0):
    """The SOLOv2 authors' matrix_nms (sorted input, gaussian), transcribed."""
    n = len(labels)
    inter = masks @ masks.T
    sums = masks.sum(1).expand(n, n)
    iou = (inter / (sums + sums.T - inter)).triu(diagonal=1)
    lab = labels.expand(n, n)
    same = (lab == lab.T).float().triu(diagonal=1)
    comp = (iou * same).max(0).values.expand(n, n).T
    decay_iou = iou * same
    decay = (torch.exp(-sigma * decay_iou**2) / torch.exp(-sigma * comp**2)).min(0).values
    return scores * decay


def test_matrix_nms_matches_the_reference_code():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(30, 200, generator=g) > 0.6).float()
    masks[5] = masks[3]  # duplicates and near-duplicates
    masks[7, :100] = masks[3, :100]
    labels = torch.randint(0, 3, (30,), generator=g)
    scores = torch.sort(torch.rand(30, generator=g), descending=True).values
    ref = _reference_matrix_nms(masks, labels, scores)
    got = matrix_nms(masks[None], labels[None], scores[None])[0]
    assert torch.allclose(got, ref, atol=1e-6)


# ---- ONNX ---------------------------------------------------------------------------------------
def _export(model, path, size: ImageShape, opset: int = 19):
    import contextlib
    import io
    import warnings

    from edgeseg.export import fold_conv_bn

    folded = fold_conv_bn(model)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(folded, (torch.zeros(1, 3, *size.hw),), str(path), dynamo=True, opset_version=opset,
                          input_names=["images"], output_names=["scores", "classes", "masks"], optimize=True,
                          verbose=False, report=False)
    return folded


def _run(path, x: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    return dict(zip(("scores", "classes", "masks"), session.run(["scores", "classes", "masks"], {"images": x.numpy()})))


def _assert_equal(got: dict[str, np.ndarray], ref: dict[str, torch.Tensor], atol: float = 1e-4,
                  mask_atol: float = 1e-4):
    """Outputs equal within ``atol`` (mask probabilities within ``mask_atol``). Detections whose scores
    tie within ``atol`` may come out in either order (float summation order decides), so each one is
    matched among its near-ties in the reference."""
    r = {k: v.numpy() for k, v in ref.items()}
    for k in ("scores", "classes", "masks"):
        assert got[k].shape == r[k].shape and got[k].dtype == r[k].dtype, k
    assert np.abs(got["scores"] - r["scores"]).max() <= atol
    for b in range(r["scores"].shape[0]):
        for i, s in enumerate(got["scores"][b]):
            ties = np.flatnonzero(np.abs(r["scores"][b] - s) <= atol)
            assert any(got["classes"][b, i] == r["classes"][b, j]
                       and np.abs(got["masks"][b, i] - r["masks"][b, j]).max() <= mask_atol for j in ties), (b, i, s)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _tiny().eval()
    path = tmp_path_factory.mktemp("solov2") / "solov2.onnx"
    folded = _export(model, path, SIZE)
    return model, folded, path


def test_onnx_static_shapes_and_ops(exported):
    import onnx

    _, _, path = exported
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 19
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output}
    assert shapes == {"scores": [1, 12], "classes": [1, 12], "masks": [1, 12, 16, 24]}
    ops = {n.op_type for n in graph.graph.node}
    assert {"TopK", "MatMul"} <= ops and "BatchNormalization" not in ops  # folded


def test_onnx_matches_torch_on_a_scene(exported):
    model, folded, path = exported
    x = _frame()
    got = _run(path, x)
    with torch.no_grad():
        ref, ref_unfolded = folded(x), model(x)
    assert float(ref["scores"].max()) > 0 and float(ref["scores"].std()) > 0  # not a trivial comparison
    _assert_equal(got, ref)
    _assert_equal(got, ref_unfolded)


def test_onnx_opset17(tmp_path):
    import onnx

    model = _tiny().eval()
    folded = _export(model, tmp_path / "m17.onnx", SIZE, opset=17)
    assert onnx.load(str(tmp_path / "m17.onnx")).opset_import[0].version == 17  # TensorRT 8.5 / JetPack 5
    x = _frame()
    with torch.no_grad():
        _assert_equal(_run(tmp_path / "m17.onnx", x), folded(x))


@pytest.mark.parametrize("kind", ["scene_without_objects", "uniform_grey"])
def test_onnx_all_background(exported, kind):
    model, folded, path = exported
    if kind == "uniform_grey":
        x = torch.from_numpy(InputSpec(size=SIZE).preprocess(np.full((*SIZE.hw, 3), 128, np.uint8))[0])
    else:
        x = _frame(max_objects=0)
    got = _run(path, x)
    with torch.no_grad():
        ref = folded(x)
    _assert_equal(got, ref)
    assert np.isfinite(got["masks"]).all()
    # the untrained head sits at the focal-loss prior (0.01): nothing a decoder would keep
    assert got["scores"].max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", ["solov2_resnet18", "solov2_mobilenetv2"])
def test_onnx_matches_torch_real_variants(name, tmp_path):
    size = ImageShape(240, 320)
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(name, num_classes=3)).eval()
    folded = _export(model, tmp_path / "m.onnx", size)
    x = _frame(size)
    got = _run(tmp_path / "m.onnx", x)
    assert got["masks"].shape == (1, 100, 60, 80)
    # mask logits of these deep random nets reach +-80: float32 rounding moves them by ~1e-3, so a
    # probability near 0.5 by up to ~3e-4 (the shared tester allows 1e-3 of the logit scale likewise)
    with torch.no_grad():
        _assert_equal(got, folded(x), mask_atol=1e-3)
        _assert_equal(got, model(x), mask_atol=1e-3)
