"""Bundle verification: every failure names the file and the problem."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.bundle import Bundle, ModelFile
from edgeseg.errors import BundleError
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle


@pytest.fixture()
def bundle(tmp_path):
    return conv_bundle(tmp_path, input_spec=InputSpec(layout="NHWC", color="BGR", size=ImageShape(8, 12)))


def test_round_trip_manifest(bundle):
    again = Bundle.open(bundle.root)
    assert again.manifest == bundle.manifest
    assert again.manifest.input.layout == "NHWC" and again.manifest.input.color == "BGR"
    assert again.model_path("fp32") == bundle.root / "model.onnx"
    assert again.report["parity"]["argmax_agreement"] == 1.0


def test_tampered_file_names_it(bundle):
    with open(bundle.root / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 mismatch") as e:
        Bundle.open(bundle.root)
    assert "fix:" in str(e.value)


def test_missing_file_names_it(bundle):
    (bundle.root / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"file 'model\.onnx' listed in the manifest is missing"):
        Bundle.open(bundle.root)


def test_bad_json(bundle):
    (bundle.root / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON"):
        Bundle.open(bundle.root)


def test_unknown_schema(bundle):
    data = json.loads((bundle.root / "manifest.json").read_text())
    data["schema_version"] = 99
    (bundle.root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="unknown schema_version 99"):
        Bundle.open(bundle.root)


def test_missing_field(bundle):
    data = json.loads((bundle.root / "manifest.json").read_text())
    del data["classes"]
    (bundle.root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="missing field 'classes'"):
        Bundle.open(bundle.root)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Bundle.open(tmp_path / "nowhere.edgeseg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle.open(tmp_path / "file.txt")


def test_zip_round_trip(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_CACHE", str(tmp_path / "cache"))
    (bundle.root / "engines").mkdir()
    (bundle.root / "engines" / "x.engine").write_bytes(b"not shipped")
    z = bundle.zip(tmp_path / "b.zip")
    opened = Bundle.open(z)
    assert opened.manifest == bundle.manifest
    assert opened.source == z and not (opened.root / "engines").exists()
    for rel in bundle.manifest.files:
        assert (opened.root / rel).read_bytes() == (bundle.root / rel).read_bytes()


def test_unknown_precision_names_what_exists(bundle):
    with pytest.raises(BundleError, match=r"no int8 model \(it has: fp32\)") as e:
        bundle.model_path("int8")
    assert "edgeseg quantize" in str(e.value)


def test_add_model_replaces_same_precision_and_target(bundle, tmp_path):
    src = tmp_path / "other.onnx"
    src.write_bytes((bundle.root / "model.onnx").read_bytes())
    bundle.add_model(ModelFile("model.int8.cpu.onnx", "int8", "cpu", 19), src)
    bundle.add_model(ModelFile("model.int8.cpu2.onnx", "int8", "cpu", 19), src)
    assert [m.file for m in bundle.manifest.models] == ["model.onnx", "model.int8.cpu2.onnx"]
    assert Bundle.open(bundle.root).model_path("int8", "cpu").name == "model.int8.cpu2.onnx"
    assert np.array_equal(Bundle.open(bundle.root).manifest.palette_array, bundle.manifest.palette_array)
