"""Exported bundles carry their PyTorch weights (model.safetensors) so ``--backend torch`` runs them:
torch and ONNX Runtime agree, bench runs both, tampering is caught, --no-checkpoint says so."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import edgeseg
from edgeseg.backends import BACKENDS
from edgeseg.bundle import Bundle
from edgeseg.cli import main
from edgeseg.errors import BundleError, ExportError
from edgeseg.export.bundle_export import write_checkpoint
from edgeseg.models import create_model, read_checkpoint_meta, save_checkpoint
from edgeseg.structures import ImageShape, InputSpec

pytest.importorskip("safetensors")

SIZE = ImageShape(48, 64)
CLASSES = ["road", "car", "tree", "sky", "person"]
PALETTE = [[128, 64, 128], [64, 0, 128], [128, 128, 0], [128, 128, 128], [64, 64, 0]]


@pytest.fixture(scope="module")
def source():
    from models.tester import randomize_batchnorm  # tests/ is on sys.path

    torch.manual_seed(0)
    return randomize_batchnorm(create_model("test_deeplabv3plus_resnet", num_classes=len(CLASSES)))


@pytest.fixture(scope="module")
def bundle(source, tmp_path_factory):
    """``edgeseg export CHECKPOINT`` with the default (checkpoint included)."""
    root = tmp_path_factory.mktemp("ckpt")
    src = save_checkpoint(source, root / "trained.safetensors", model_name="test_deeplabv3plus_resnet",
                          num_classes=len(CLASSES), extra={"classes": CLASSES, "palette": PALETTE, "epoch": 7})
    out = root / "road.edgeseg"
    assert main(["export", str(src), "--size", f"{SIZE.width}x{SIZE.height}", "--out", str(out)]) == 0
    return Bundle.open(out)


def test_checkpoint_is_listed_hashed_and_holds_the_source_weights(bundle, source):
    models = [m.to_dict() for m in bundle.manifest.models]
    assert models == [{"file": "model.onnx", "precision": "fp32", "target": None, "opset": 19},
                      {"file": "model.safetensors", "precision": "fp32", "target": "torch", "opset": None}]
    assert set(bundle.manifest.files) >= {"model.onnx", "model.safetensors"}
    path = bundle.root / "model.safetensors"
    raw = path.read_bytes()
    # safetensors (no pickle): u64 little-endian header length, a JSON header, then raw tensor bytes
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"]["format"] == "edgeseg.checkpoint"
    assert 8 + n + max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__") == len(raw)
    meta = read_checkpoint_meta(path)
    assert (meta.model_name, meta.num_classes, meta.model_kwargs) == ("test_deeplabv3plus_resnet", 5, {})
    assert meta.extra["classes"] == CLASSES and meta.extra["palette"] == PALETTE and meta.extra["epoch"] == 7
    assert InputSpec.from_dict(meta.extra["input_spec"]).size == SIZE
    from safetensors.torch import load_file

    stored, own = load_file(str(path)), source.state_dict()
    assert sorted(stored) == sorted(own)  # unfolded: BatchNorm buffers are there
    assert any(k.endswith("running_var") for k in stored)
    for k, v in own.items():
        assert torch.equal(stored[k], v), k
    report = bundle.report["checkpoint"]
    assert report["rebuild_max_rel_logit_diff"] == 0.0 and report["bytes"] == path.stat().st_size
    # ONNX backends never pick the checkpoint; the bundle's plain fp32 model is still the ONNX file
    for name in ("onnxruntime", "openvino", "tensorrt"):
        assert BACKENDS.get(name).select_model(bundle).name == "model.onnx"
    assert bundle.model_path("fp32").name == "model.onnx"
    assert BACKENDS.get("torch").load(bundle).model_path.name == "model.safetensors"


def test_torch_backend_matches_onnxruntime_and_the_source(bundle, source):
    from edgeseg.data.synthetic import SceneGenerator

    image = SceneGenerator(ImageShape(90, 120), seed=3).render_semantic(11)[0]  # resized by preprocess
    with edgeseg.load(bundle, backend="torch", device="cpu", threads=1) as pt, \
            edgeseg.load(bundle, backend="onnxruntime", device="cpu", threads=1) as ort:
        assert (pt.backend, ort.backend) == ("torch", "onnxruntime")
        feed, _ = pt.preprocess(image)
        lt, lo = pt.runner.infer(feed)["logits"], ort.runner.infer(feed)["logits"]
        rt, ro = pt(image), ort(image)
    with torch.no_grad():
        ref = source(torch.from_numpy(feed["images"]))["logits"].numpy()
    assert lt.shape == lo.shape == (1, 5, *SIZE.hw)
    assert float(ref.std(axis=(2, 3)).max()) > 1e-3 * float(np.abs(ref).max())  # non-trivial logits
    np.testing.assert_allclose(lt, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    assert float(np.abs(lt - lo).max()) <= 1e-3 * float(np.abs(lt).max())  # the export's MAX_REL_ERROR
    assert (lt.argmax(1) == lo.argmax(1)).mean() >= 0.999
    assert rt.labels.shape == ro.labels.shape == (90, 120)
    assert (rt.labels == ro.labels).mean() >= 0.999


def test_bench_runs_torch_and_onnxruntime(bundle, tmp_path, capsys):
    js = tmp_path / "bench.json"
    rc = main(["bench", str(bundle.root), "--backend", "torch,onnxruntime", "--runs", "3", "--warmup", "1",
               "--threads", "1", "--device", "cpu", "--json", str(js)])
    assert rc == 0
    rows = {r["backend"]: r for r in json.loads(js.read_text())["results"]}
    assert set(rows) == {"torch", "onnxruntime"}
    for row in rows.values():
        assert row["input"] == f"1x3x{SIZE.height}x{SIZE.width}"
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"] and row["e2e_median_ms"] > 0
        assert row["fps"] == pytest.approx(1e3 / row["median_ms"])
    assert "torch" in capsys.readouterr().out


def test_tampered_checkpoint_fails_open(bundle, tmp_path):
    copy = tmp_path / "t.edgeseg"
    shutil.copytree(bundle.root, copy)
    f = copy / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.safetensors: sha256 mismatch"):
        Bundle.open(copy)
    with pytest.raises(BundleError, match=r"model\.safetensors"):
        edgeseg.load(copy, backend="torch")


def test_no_checkpoint_bundle_refuses_torch_clearly(tmp_path, capsys):
    out = tmp_path / "small.edgeseg"
    assert main(["export", "test_fcn32s", "--num-classes", "3", "--size", "64x48", "--no-checkpoint",
                 "--out", str(out)]) == 0
    b = Bundle.open(out)
    assert [m.file for m in b.manifest.models] == ["model.onnx"] and "checkpoint" not in b.report
    assert not (out / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["bench", str(out), "--backend", "torch", "--runs", "1"]) == 2
    err = capsys.readouterr().err
    assert "carries no PyTorch checkpoint" in err and "--no-checkpoint" in err and "--backend onnxruntime" in err
    with pytest.raises(BundleError, match="carries no PyTorch checkpoint"):
        edgeseg.load(out, backend="torch")


def test_write_checkpoint_needs_the_model_kwargs(tmp_path):
    """Kwargs that change the weights fail the rebuild; kwargs that only change the computation
    (dilation rates) are caught by comparing logits. create_model records its kwargs, so a model it
    built rebuilds exactly; one whose record is wrong (here: emptied) fails with the fix."""
    torch.manual_seed(0)
    spec, extra = InputSpec(size=ImageShape(32, 48)), {"classes": ["a", "b", "c"]}
    for i, (kwargs, error) in enumerate([({"output_stride": 8}, "weights do not fit"),
                                         ({"multi_grid": [1, 1, 1]}, "computes other logits")]):
        model = create_model("test_deeplabv3", num_classes=3, **kwargs).eval()
        assert model.model_kwargs == kwargs
        auto = write_checkpoint(model, tmp_path / f"auto{i}.safetensors", spec, extra=extra)
        assert auto["rebuild_max_rel_logit_diff"] == 0.0 and auto["model_kwargs"] == kwargs
        model.model_kwargs = {}
        with pytest.raises(ExportError, match=error) as e:
            write_checkpoint(model, tmp_path / f"bad{i}.safetensors", spec, extra=extra)
        assert "model_kwargs=" in str(e.value) and "--no-checkpoint" in str(e.value)
        report = write_checkpoint(model, tmp_path / f"ok{i}.safetensors", spec, extra=extra, model_kwargs=kwargs)
        assert report["rebuild_max_rel_logit_diff"] == 0.0 and report["model_kwargs"] == kwargs
        assert read_checkpoint_meta(tmp_path / f"ok{i}.safetensors").model_kwargs == kwargs


def test_write_checkpoint_refuses_unregistered_modules(tmp_path):
    class Mine(nn.Module):
        num_classes = 2

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return {"logits": self.conv(x)}

    with pytest.raises(ExportError, match="Mine: it is not a registered edgeseg model") as e:
        write_checkpoint(Mine().eval(), tmp_path / "m.safetensors", InputSpec(size=ImageShape(8, 8)),
                         extra={"classes": ["a", "b"]})
    assert "include_checkpoint=False" in str(e.value)
    assert not (tmp_path / "m.safetensors").exists()
