"""Panoptic-DeepLab: output contract, the in-graph grouping against a numpy reference, ONNX export
parity in ONNX Runtime, and encoder weights taken from a semantic DeepLabV3+ (checkpoint or folded ONNX)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeseg.errors import ModelError
from edgeseg.models import create_model, list_models, model_info, save_checkpoint
from edgeseg.models.panoptic_deeplab import group_centers, load_encoder_weights

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("semantic", "center", "offset", "centers", "instance")


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model("test_panoptic_deeplab", num_classes=6, class_names=list("abcdef"), thing_classes=[3, 4, 5], **kw)


def test_registered_variants():
    names = list_models("*panoptic_deeplab*", task="panoptic")
    assert set(names) == {"panoptic_deeplab_mobilenetv3_small", "panoptic_deeplab_mobilenetv2", "panoptic_deeplab_resnet18",
                          "test_panoptic_deeplab"}
    assert model_info("panoptic_deeplab_mobilenetv3_small").arch == "panoptic_deeplab"


def test_output_shapes_and_dtypes():
    m = _tiny().eval()
    assert (m.task, m.num_classes, m.class_names, m.thing_classes) == ("panoptic", 6, tuple("abcdef"), (3, 4, 5))
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 96))
    assert set(out) == {"semantic", "center", "offset"}
    assert out["semantic"].shape == (2, 6, 16, 24) and out["center"].shape == (2, 1, 16, 24)
    assert out["offset"].shape == (2, 2, 16, 24) and all(v.dtype == torch.float32 for v in out.values())
    g = _tiny(grouping="graph", top_k=7).eval()
    with torch.no_grad():
        out = g(torch.randn(1, 3, 64, 96))
    assert out["centers"].shape == (1, 7, 3) and out["centers"].dtype == torch.float32
    assert out["instance"].shape == (1, 16, 24) and out["instance"].dtype == torch.int64
    g.train()
    assert "instance" not in g(torch.randn(2, 3, 64, 96))  # grouping only in eval mode


def test_bad_arguments():
    with pytest.raises(ModelError, match="grouping"):
        _tiny(grouping="gpu")
    with pytest.raises(ModelError, match="thing_classes"):
        create_model("test_panoptic_deeplab", num_classes=4, thing_classes=[4])
    with pytest.raises(ModelError, match="class names"):
        create_model("test_panoptic_deeplab", num_classes=4, class_names=["a"])


def _reference_grouping(center, offset, top_k, threshold, kernel=7):
    """numpy: max-pool NMS (-inf padding), peaks by descending score, nearest valid centre per cell."""
    h, w = center.shape
    r = kernel // 2
    padded = np.pad(center, r, constant_values=-np.inf)
    pooled = np.max([padded[dy:dy + h, dx:dx + w] for dy in range(kernel) for dx in range(kernel)], axis=0)
    peaks = np.where(center == pooled, center, 0.0)
    flat = peaks.ravel()
    order = np.argsort(-flat, kind="stable")[:top_k]
    scores = flat[order]
    cy, cx = (order // w) * 4 + 1.5, (order % w) * 4 + 1.5
    ys, xs = np.arange(h)[:, None] * 4 + 1.5, np.arange(w)[None, :] * 4 + 1.5
    ty, tx = ys + offset[0], xs + offset[1]
    d = (ty[None] - cy[:, None, None]) ** 2 + (tx[None] - cx[:, None, None]) ** 2
    d[scores <= threshold] = np.inf
    return scores, cy, cx, d.argmin(0)


def test_graph_grouping_equals_numpy_reference():
    h, w = 12, 16
    center = np.zeros((h, w), np.float32)
    center[2, 3], center[3, 4] = 0.9, 0.5      # 0.5 lies in 0.9's 7x7 window: suppressed
    center[9, 12], center[10, 2] = 0.7, 0.05   # 0.05 is a peak below the threshold
    center[6, 8] = 0.3                         # outside every other peak's window
    rng = np.random.default_rng(0)
    offset = rng.normal(0, 6, (2, h, w)).astype(np.float32)
    offset[:, 0, 0] = (9 * 4 + 1.5 - 1.5, 12 * 4 + 1.5 - 1.5)  # cell (0, 0) points exactly at the (9, 12) peak
    centers, inst = group_centers(torch.from_numpy(center)[None, None], torch.from_numpy(offset)[None], top_k=5,
                                  threshold=0.1)
    scores, cy, cx, ref = _reference_grouping(center, offset, 5, 0.1)
    assert centers.shape == (1, 5, 3) and inst.dtype == torch.int64
    np.testing.assert_allclose(centers[0, :4, 0].numpy(), [0.9, 0.7, 0.3, 0.05], rtol=1e-6)  # 0.5 suppressed
    valid = scores > 0
    np.testing.assert_allclose(centers[0, valid, 1].numpy(), cy[valid])
    np.testing.assert_allclose(centers[0, valid, 2].numpy(), cx[valid])
    np.testing.assert_array_equal(inst[0].numpy(), ref)
    assert int(inst[0, 0, 0]) == 1 and set(np.unique(ref).tolist()) <= {0, 1, 2}  # never the sub-threshold peak
    # K larger than the number of cells: padded with empty centres
    c2, _ = group_centers(torch.from_numpy(center[:2, :3])[None, None], torch.zeros(1, 2, 2, 3), top_k=10)
    assert c2.shape == (1, 10, 3) and float(c2[0, 6:, 0].abs().sum()) == 0.0


def _graph_model():
    m = _tiny(grouping="graph", top_k=20).eval()
    with torch.no_grad():  # distinct peaks above the threshold and offsets of several pixels
        m.center_head[-1].bias.fill_(0.5)
        m.center_head[-1].weight.normal_(0, 0.3)
        m.offset_head[-1].weight.normal_(0, 2.0)
    return m


def test_onnx_export_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.structures import ImageShape, InputSpec

    m = _graph_model()
    path = export_onnx(m, tmp_path / "pdl.onnx", InputSpec(size=ImageShape(64, 96)), opset=17, outputs=OUTPUTS)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.numpy()})))
    for k in ("semantic", "center", "offset"):
        np.testing.assert_allclose(got[k], ref[k].numpy(), atol=1e-4, err_msg=k)
    peaks = ref["centers"][0, :, 0].numpy() > 0  # the order of tied zero-score entries is the runtime's choice
    np.testing.assert_allclose(got["centers"][0, peaks], ref["centers"][0, peaks].numpy(), atol=1e-4)
    assert np.all(got["centers"][0, ~peaks, 0] == 0)
    assert int((ref["centers"][0, :, 0] > 0.1).sum()) >= 3  # a real grouping, not one centre
    assert got["instance"].dtype == np.int64
    np.testing.assert_array_equal(got["instance"], ref["instance"].numpy())


def _randomise_bn(model):
    g = torch.Generator().manual_seed(3)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _encoder_features(model, x):
    with torch.no_grad():
        return model.eval().encoder(x)


def test_encoder_weights_from_checkpoint_and_folded_onnx(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    from edgeseg.export.fold import fold_conv_bn

    torch.manual_seed(5)
    sem = create_model("test_deeplabv3plus", num_classes=5)
    _randomise_bn(sem)
    sem.eval()
    x = torch.randn(1, 3, 64, 96)
    ref = _encoder_features(sem, x)
    ckpt = save_checkpoint(sem, tmp_path / "sem.safetensors", model_name="test_deeplabv3plus", num_classes=5)
    enc_tensors = [k for k in sem.state_dict() if k.startswith("encoder.")]
    m = _tiny()
    assert load_encoder_weights(m, ckpt) == len(enc_tensors)
    for a, b in zip(_encoder_features(m, x), ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a bundle that only has the Conv-BN-folded ONNX graph (as edgeseg/zoo/road.edgeseg): weights as initialisers
    folded = fold_conv_bn(sem)
    inits = [numpy_helper.from_array(v.numpy(), "model." + k) for k, v in folded.state_dict().items() if v.is_floating_point()]
    graph = helper.make_graph([], "g", [], [], initializer=inits)
    bundle = tmp_path / "sem.edgeseg"
    bundle.mkdir()
    onnx.save(helper.make_model(graph), str(bundle / "model.onnx"))
    m2 = _tiny()
    n = load_encoder_weights(m2, bundle)
    assert n == sum(1 for i in inits if i.name.startswith("model.encoder."))
    for a, b in zip(_encoder_features(m2, x), ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_encoder_weights_from_the_shipped_road_bundle():
    import onnx

    road = REPO / "edgeseg" / "zoo" / "road.edgeseg"
    if not (road / "model.onnx").is_file():
        pytest.skip("edgeseg/zoo/road.edgeseg/model.onnx not present")
    inits = onnx.load(str(road / "model.onnx")).graph.initializer
    expected = sum(1 for i in inits if i.name.startswith("model.encoder."))
    m = create_model("panoptic_deeplab_mobilenetv3_small", num_classes=19, thing_classes=list(range(11, 19)))
    before = m.encoder.features[0][0].weight.clone()
    assert load_encoder_weights(m, road) == expected > 100
    assert not torch.equal(before, m.encoder.features[0][0].weight)
    with pytest.raises(ModelError, match="not found"):
        load_encoder_weights(m, road / "nothing.safetensors")
