"""Weights from a Conv-BN-folded export (edgeseg.models.folded): the exact folded function in eval mode,
BatchNorms re-estimated so training mode starts from it, clear errors, and `edgeseg train --init BUNDLE`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeseg.errors import ModelError
from edgeseg.export import export_bundle
from edgeseg.models import create_model
from edgeseg.models.folded import is_folded_source, load_model_weights, recalibrate_unfolded
from edgeseg.structures import ImageShape, InputSpec

REPO = Path(__file__).resolve().parents[2]
SIZE = ImageShape(48, 64)


def _logits(model, x):
    out = model(x)
    return out if isinstance(out, torch.Tensor) else next(iter(out.values()))


def _trained_like(num_classes=5, seed=5):
    """A small DeepLabV3+ with BatchNorms far from the identity, as after training."""
    torch.manual_seed(seed)
    m = create_model("test_deeplabv3plus", num_classes=num_classes)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # distinct biases (the exporter merges identical constants, e.g. untrained zeros)
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            mod.weight.data.copy_(torch.rand(n, generator=g) * 2 - 0.5)  # some negative scales too
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return m.eval()


@pytest.fixture()
def folded_bundle(tmp_path):
    model = _trained_like()
    bundle = export_bundle(model, tmp_path / "b.edgeseg", name="b", classes=5, input_spec=InputSpec(size=SIZE),
                           include_checkpoint=False)
    return model, Path(bundle.root)


def _bn_train_only(model):
    """Training-mode BatchNorms, everything else (dropout) in eval mode."""
    model.eval()
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.train()


def test_folded_bundle_reproduces_the_export_and_training_mode_starts_from_it(folded_bundle):
    ort = pytest.importorskip("onnxruntime")
    model, bundle = folded_bundle
    assert is_folded_source(bundle) and is_folded_source(bundle / "model.onnx")
    x = torch.randn(1, 3, SIZE.height, SIZE.width, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"images": x.numpy()})[0]

    m = create_model("test_deeplabv3plus", num_classes=5)
    unfolded = load_model_weights(m, bundle)
    n_bn = sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert len(unfolded) == n_bn > 5
    with torch.no_grad():
        np.testing.assert_allclose(_logits(m.eval(), x).numpy(), ref, atol=2e-4)

    batch = torch.randn(4, 3, SIZE.height, SIZE.width, generator=torch.Generator().manual_seed(2))
    assert recalibrate_unfolded(m, unfolded, [batch[:2], batch[2:]]) == 4
    with torch.no_grad():
        np.testing.assert_allclose(_logits(m.eval(), x).numpy(), ref, atol=2e-4)  # eval: unchanged
        folded_on_batch = _logits(m.eval(), batch)
        _bn_train_only(m)  # batch statistics of the batch the estimates came from: the same function
        np.testing.assert_allclose(_logits(m, batch).numpy(), folded_on_batch.numpy(), atol=2e-3)
    # without the re-estimate, training-mode BatchNorms rescale every folded convolution
    m2 = create_model("test_deeplabv3plus", num_classes=5)
    load_model_weights(m2, bundle)
    _bn_train_only(m2)
    with torch.no_grad():
        assert float((_logits(m2, batch) - folded_on_batch).abs().max()) > 0.1


def test_checkpoint_bundle_loads_unfolded(tmp_path):
    model = _trained_like()
    bundle = export_bundle(model, tmp_path / "c.edgeseg", name="c", classes=5, input_spec=InputSpec(size=SIZE),
                           model_kwargs={})
    assert not is_folded_source(bundle.root)
    m = create_model("test_deeplabv3plus", num_classes=5)
    assert load_model_weights(m, bundle.root) == []
    for k, v in model.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v, rtol=0, atol=0)


def test_weights_that_do_not_fit_name_the_tensors(folded_bundle, tmp_path):
    _, bundle = folded_bundle
    with pytest.raises(ModelError, match=r"do not fit model x .*not set: .*classifier|do not fit model x"):
        load_model_weights(create_model("test_deeplabv3plus", num_classes=7), bundle, what="model x")
    with pytest.raises(ModelError, match="not found"):
        load_model_weights(create_model("test_deeplabv3plus", num_classes=5), tmp_path / "missing.edgeseg")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not weights")
    with pytest.raises(ModelError, match="not a checkpoint, ONNX file or bundle"):
        load_model_weights(create_model("test_deeplabv3plus", num_classes=5), junk)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage that is not a protobuf")
    with pytest.raises(ModelError, match="cannot read the ONNX model"):
        load_model_weights(create_model("test_deeplabv3plus", num_classes=5), broken)
    with pytest.raises(ModelError, match="no batch"):
        m = create_model("test_deeplabv3plus", num_classes=5)
        recalibrate_unfolded(m, load_model_weights(m, bundle), [])


def test_train_from_the_shipped_shapes_bundle_keeps_its_accuracy(tmp_path):
    """`edgeseg train --init BUNDLE` on a bundle that has only its folded ONNX model (as every zoo
    bundle): one epoch at a negligible learning rate scores what the bundle scores (re-estimated
    BatchNorms; the running statistics then follow training-mode batches)."""
    from edgeseg.cli import main

    bundle = REPO / "edgeseg" / "zoo" / "shapes.edgeseg"
    assert is_folded_source(bundle)
    val = "synthetic:24,size=160x120,seed=0"
    out = tmp_path / "run"
    rc = main(["train", "deeplabv3plus_mobilenetv3_small", "--data", "synthetic:32,size=160x120,seed=0",
               "--val-data", val, "--size", "160x120", "--epochs", "1", "--batch", "8", "--lr", "1e-7",
               "--warmup", "0", "--init", str(bundle), "--out", str(out), "--export", str(tmp_path / "again.edgeseg"),
               "--threads", "2"])
    assert rc == 0
    history = json.loads((out / "history.json").read_text())
    after = history[-1]["miou"] if isinstance(history, list) else history["history"][-1]["miou"]
    rc = main(["eval", str(bundle), "--data", val, "--backend", "onnxruntime", "--json", str(tmp_path / "ref.json")])
    assert rc == 0
    ref = json.loads((tmp_path / "ref.json").read_text())
    before = ref["miou"] if "miou" in ref else ref["scores"]["miou"]
    assert before > 0.8  # the shipped model, in [0, 1]
    assert after == pytest.approx(before, abs=0.02)
    report = json.loads((tmp_path / "again.edgeseg" / "report.json").read_text())
    assert report["training"]["init"] == str(bundle)


def test_group_norms_come_back_from_a_solov2_bundle():
    """SOLOv2's heads use Conv -> GroupNorm, which exports as Reshape -> InstanceNormalization -> Reshape ->
    Mul -> Add with anonymous constants: the loader finds them by that chain, and the shipped
    shapes-instance bundle's model scores what ONNX Runtime scores."""
    ort = pytest.importorskip("onnxruntime")
    bundle = REPO / "edgeseg" / "zoo" / "shapes-instance.edgeseg"
    manifest = json.loads((bundle / "manifest.json").read_text())
    m = create_model(manifest["provenance"]["model"], num_classes=len(manifest["classes"]))
    assert any(isinstance(mod, torch.nn.GroupNorm) for mod in m.modules())
    load_model_weights(m, bundle)
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.numpy()})))
    with torch.no_grad():
        got = m.eval()(x)
    top = np.sort(ref["scores"].ravel())[::-1][:10]  # kept detections, in the runtime's order of ties
    np.testing.assert_allclose(np.sort(got["scores"].numpy().ravel())[::-1][:10], top, atol=1e-5)
    assert top[0] > 0.1


def test_new_classes_keep_every_tensor_but_the_class_layers(folded_bundle, tmp_path):
    """Fine-tuning to another set of classes (`edgeseg train --init` a bundle or checkpoint trained for 5
    classes, on data with 7): every tensor but the classifier's comes from the source, the classifier
    keeps its initial values and is named; without ``new_classes`` it stays an error."""
    from edgeseg.models.checkpoint import class_layer_names, load_weights

    src, bundle = folded_bundle
    torch.manual_seed(11)
    m = create_model("test_deeplabv3plus", num_classes=7)
    init = {k: v.clone() for k, v in m.state_dict().items()}
    fresh: list[str] = []
    unfolded = load_model_weights(m, bundle, new_classes=7, fresh=fresh)
    assert sorted(fresh) == ["classifier.bias", "classifier.weight"]
    for k in fresh:
        torch.testing.assert_close(m.state_dict()[k], init[k], rtol=0, atol=0)
    assert unfolded
    seen = []  # the rest computes the source's function: the classifier's input is the source's
    for model in (src.eval(), m.eval()):
        hook = model.classifier.register_forward_pre_hook(lambda _mod, inputs: seen.append(inputs[0]))
        with torch.no_grad():
            model(torch.randn(1, 3, SIZE.height, SIZE.width, generator=torch.Generator().manual_seed(2)))
        hook.remove()
    torch.testing.assert_close(seen[1], seen[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="classifier"):
        load_model_weights(create_model("test_deeplabv3plus", num_classes=7), bundle)

    ckpt = tmp_path / "five.pt"
    torch.save(src.state_dict(), ckpt)
    m2 = create_model("test_deeplabv3plus", num_classes=7)
    assert sorted(load_weights(m2, ckpt, new_classes=7)) == ["classifier.bias", "classifier.weight"]
    for name, v in src.state_dict().items():
        if not name.startswith("classifier"):
            torch.testing.assert_close(m2.state_dict()[name], v, rtol=0, atol=0)
    with pytest.raises(ModelError, match="shape mismatch: classifier"):
        load_weights(create_model("test_deeplabv3plus", num_classes=7), ckpt)
    # only the dimensions that carry the classes may differ
    own = {"a": torch.zeros(7, 4), "b": torch.zeros(7, 3), "c": torch.zeros(2, 7, 3, 3), "d": torch.zeros(7)}
    state = {"a": torch.zeros(5, 4), "b": torch.zeros(5, 4), "c": torch.zeros(2, 5, 3, 3), "d": torch.zeros(1, 7)}
    assert class_layer_names(own, state, 7) == ["a", "c"]


def test_train_new_classes_from_a_shipped_bundle(tmp_path):
    """`edgeseg train --init shapes` (6 classes) on a 3-class folder dataset: it trains, exports a 3-class
    bundle, and the report names the class layers that started afresh."""
    from edgeseg.cli import main
    from edgeseg.data import write_image
    from edgeseg.data.io import write_label

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    for i in range(8):
        mask = np.zeros((120, 160), np.uint8)
        mask[rng.integers(20, 60):, :] = 1
        mask[:, rng.integers(60, 120):] = 2
        img = np.stack([mask * 90, 255 - mask * 60, np.full_like(mask, 40)], -1).astype(np.uint8)
        write_image(tmp_path / "img" / f"f{i}.png", img)
        write_label(tmp_path / "mask" / f"f{i}.png", mask)
    spec = f"folder:{tmp_path / 'img'},{tmp_path / 'mask'},num_classes=3"
    rc = main(["train", "deeplabv3plus_mobilenetv3_small", "--data", spec, "--val-data", spec, "--train-split", "all",
               "--val-split", "all", "--size", "160x120", "--epochs", "1", "--batch", "4", "--warmup", "0",
               "--init", "shapes", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "three.edgeseg"),
               "--threads", "2", "--no-progress"])
    assert rc == 0
    report = json.loads((tmp_path / "three.edgeseg" / "report.json").read_text())
    assert report["training"]["init_fresh"] == ["classifier.bias", "classifier.weight"]
    manifest = json.loads((tmp_path / "three.edgeseg" / "manifest.json").read_text())
    assert len(manifest["classes"]) == 3
