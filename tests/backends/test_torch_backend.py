"""PyTorch runner: a live module and a bundle's checkpoint, against numpy and the model itself."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.backends import BACKENDS
from edgeseg.bundle import ModelFile
from edgeseg.errors import BundleError, UnsupportedError
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle, conv_weights, reference_logits

torch = pytest.importorskip("torch")


class Conv1x1(torch.nn.Module):
    """The handmade ONNX graph's computation, in PyTorch, returning the model-family dict."""

    def __init__(self, num_classes: int):
        super().__init__()
        w, b = conv_weights(num_classes)
        self.conv = torch.nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(w.reshape(num_classes, 3, 1, 1)))
            self.conv.bias.copy_(torch.from_numpy(b))

    def forward(self, x):
        return {"logits": self.conv(x)}


def test_from_module_matches_numpy():
    runner = BACKENDS.get("torch").from_module(Conv1x1(5), InputSpec(size=ImageShape(8, 12)), threads=1)
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 12)).astype(np.float32)
    with runner:
        assert runner.input_specs[0].shape == (1, 3, 8, 12)
        out = runner.infer({"images": x})
        assert runner.output_specs[0].name == "logits" and runner.output_specs[0].shape == (1, 5, 8, 12)
    np.testing.assert_allclose(out["logits"], reference_logits(x, 5), rtol=1e-5, atol=1e-5)


def test_bundle_without_checkpoint_says_so(tmp_path):
    bundle = conv_bundle(tmp_path)
    with pytest.raises(BundleError, match="carries no PyTorch checkpoint") as e:
        BACKENDS.get("torch").load(bundle)
    assert "--backend onnxruntime" in str(e.value) and "--no-checkpoint" in str(e.value)
    with pytest.raises(UnsupportedError, match="not INT8"):
        BACKENDS.get("torch").load(bundle, precision="int8")


def test_nhwc_bundle_refused():
    with pytest.raises(UnsupportedError, match="NHWC"):
        BACKENDS.get("torch").from_module(Conv1x1(3), InputSpec(layout="NHWC", size_rule="any"))


def test_bundle_checkpoint_rebuilds_the_model(tmp_path):
    models = pytest.importorskip("edgeseg.models")
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    model = models.create_model("test_fcn8s", num_classes=4).eval()
    spec = InputSpec(size=ImageShape(32, 48))
    bundle = conv_bundle(tmp_path, 4, input_spec=spec)
    ckpt = models.save_checkpoint(model, tmp_path / "model.safetensors", model_name="test_fcn8s", num_classes=4)
    bundle.add_model(ModelFile("model.safetensors", "fp32", "torch"), ckpt)
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 48)).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))["logits"].numpy()
    runner = BACKENDS.get("torch").load(bundle)
    assert runner.model_path.name == "model.safetensors"
    with runner:
        out = runner.infer({"images": x})["logits"]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # the ONNX backends skip the checkpoint when choosing their model file
    assert BACKENDS.get("onnxruntime").load(bundle).model_path.name == "model.onnx"


def test_exported_labels_bundle_runs_on_torch(tmp_path):
    """An --argmax-in-graph bundle: the torch runner returns logits, ONNX Runtime uint8 labels; the
    predictor decodes both to the same label map."""
    models = pytest.importorskip("edgeseg.models")
    pytest.importorskip("safetensors")
    import edgeseg
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.export import export_bundle
    from models.tester import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(models.create_model("test_fcn8s", num_classes=4))
    spec = InputSpec(size=ImageShape(48, 64))
    bundle = export_bundle(model, tmp_path / "lab.edgeseg", name="lab", classes=4, input_spec=spec, argmax_in_graph=True)
    assert bundle.manifest.outputs[0].kind == "labels"
    image = SceneGenerator(ImageShape(48, 64), seed=2).render_semantic(9)[0]
    with edgeseg.load(bundle, backend="torch", device="cpu") as pt, edgeseg.load(bundle, backend="onnxruntime") as ort:
        feed, _ = pt.preprocess(image)
        logits = pt.runner.infer(feed)["logits"]
        labels = ort.runner.infer(feed)["labels"]
        a, b = pt(image), ort(image)
    with torch.no_grad():
        ref = model(torch.from_numpy(feed["images"]))["logits"].numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    assert labels.dtype == np.uint8 and (labels == ref.argmax(1)).mean() >= 0.999
    assert len(np.unique(b.labels)) > 1  # a non-trivial map
    assert (a.labels == b.labels).mean() >= 0.999


def test_pickled_checkpoint_in_a_bundle_is_refused_unread(tmp_path):
    """A bundle never unpickles anything: a .pt listed there is refused by name, before any torch.load."""
    models = pytest.importorskip("edgeseg.models")
    from edgeseg.backends.pytorch.runner import TorchRunner

    bundle = conv_bundle(tmp_path, 4)
    model = models.create_model("test_fcn8s", num_classes=4).eval()
    ckpt = models.save_checkpoint(model, tmp_path / "model.pt", model_name="test_fcn8s", num_classes=4)
    bundle.add_model(ModelFile("model.pt", "fp32", "torch"), ckpt)
    bundle.add_file("model.pt.json", tmp_path / "model.pt.json")
    loads = []
    monkey = pytest.MonkeyPatch()
    monkey.setattr(torch, "load", lambda *a, **k: loads.append(a) or pytest.fail("torch.load called on a bundle file"))
    try:
        with pytest.raises(BundleError, match=r"torch checkpoint 'model\.pt' is not a safetensors file") as e:
            BACKENDS.get("torch").load(bundle)
        assert "never unpickles" in str(e.value) and f"edgeseg export {bundle.root / 'model.pt'}" in str(e.value)
        runner = TorchRunner(bundle.root / "model.pt", bundle=bundle)  # built by hand: refused when activated
        with pytest.raises(BundleError, match=r"model\.pt: not a safetensors file"):
            runner.activate()
    finally:
        monkey.undo()
    assert loads == []
    # outside a bundle, a .pt checkpoint still loads (edgeseg export reads it and stores safetensors)
    rebuilt = models.load_checkpoint(ckpt)
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 3, 32, 48)).astype(np.float32))
    with torch.inference_mode():
        np.testing.assert_allclose(rebuilt(x)["logits"].numpy(), model(x)["logits"].numpy(), rtol=1e-5, atol=1e-5)
