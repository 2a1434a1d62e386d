"""``edgeseg quantize`` on bad or unusual input: a clear error before any work, or a result with a warning;
a failed run never changes a bundle that already holds an INT8 model of the target.

Made for real: the quickly trained tiny net's bundle, calibration frames written as PNG files, a folder
dataset with label PNGs (no mocks)."""
import hashlib
import json
import logging
import shutil

import numpy as np
import pytest

from edgeseg.errors import InputError, QuantizationError
from edgeseg.quant import quantize_bundle

import quant_tiny as qt

VAL = qt.scenes(12, seed=7)
GOOD = [s.image for s in qt.scenes(16, seed=5)]
DARK = [s.image // 16 for s in qt.scenes(16, seed=5)]  # unrepresentative: 16x too dark, misses a 0.5 budget


@pytest.fixture
def bundle(trained, tmp_path):
    dst = tmp_path / "b.edgeseg"
    shutil.copytree(trained, dst)
    return dst


def hashes(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_images(folder, images) -> None:
    import cv2

    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.ascontiguousarray(img[..., ::-1]))


def write_folder_dataset(root, samples, classes) -> str:
    import cv2

    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    for i, s in enumerate(samples):
        cv2.imwrite(str(root / "img" / f"{i:03d}.png"), np.ascontiguousarray(s.image[..., ::-1]))
        cv2.imwrite(str(root / "lab" / f"{i:03d}.png"), s.labels)
    (root / "names.txt").write_text("\n".join(classes) + "\n")
    return f"folder:{root / 'img'},{root / 'lab'},classes={root / 'names.txt'}"


def test_failed_gate_leaves_a_bundle_with_an_int8_model_of_the_target_unchanged(bundle):
    """Before: a missed --max-drop replaced the record (report int8.cpu: met_budget false, model null) of the
    INT8 model an earlier run had added and kept in the bundle, so the automatic choice refused a good model."""
    first = quantize_bundle(bundle, GOOD, target="cpu", method="minmax", eval_dataset=VAL, max_drop=1.0,
                            progress=False, latency=False)
    assert first.met_budget
    before = hashes(bundle)
    with pytest.raises(QuantizationError, match="the bundle is unchanged") as e:
        quantize_bundle(bundle, DARK, target="cpu", method="minmax", eval_dataset=VAL, max_drop=0.5, progress=False,
                        latency=False)
    assert hashes(bundle) == before
    assert e.value.report.met_budget is False and e.value.report.fp32_score - e.value.report.int8_score > 0.5
    from edgeseg.backends.gates import int8_gate
    from edgeseg.bundle import Bundle

    assert int8_gate(Bundle.open(bundle), "cpu")[0]  # the earlier model still passes its recorded gate


def test_failed_gate_from_the_cli_writes_its_numbers_to_json(bundle, tmp_path, capsys):
    from edgeseg.cli import main

    assert quantize_bundle(bundle, GOOD, target="cpu", method="minmax", progress=False, latency=False).met_budget
    before = hashes(bundle)
    write_images(tmp_path / "dark", DARK)
    spec = write_folder_dataset(tmp_path / "val", VAL, qt.CLASSES)
    out = tmp_path / "r.json"
    rc = main(["quantize", str(bundle), "--calib", str(tmp_path / "dark"), "--target", "cpu", "--method", "minmax",
               "--eval", spec, "--max-drop", "0.5", "--no-latency-guard", "--no-progress", "--threads", "1",
               "--json", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "edgeseg quantize: error: INT8 (cpu) cannot stay within 0.5 mIoU" in err and "fix:" in err
    assert hashes(bundle) == before
    data = json.loads(out.read_text())
    assert data["met_budget"] is False and data["max_drop"] == 0.5


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_negative_or_nan_max_drop_is_refused_before_any_work(bundle, tmp_path, capsys, value):
    from edgeseg.cli import main

    write_images(tmp_path / "good", GOOD[:4])
    before = hashes(bundle)
    rc = main(["quantize", str(bundle), "--calib", str(tmp_path / "good"), "--target", "cpu", "--max-drop", value,
               "--no-progress", "--threads", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--max-drop must be a number >= 0" in err and "fix:" in err
    assert hashes(bundle) == before
    with pytest.raises(InputError, match="max-drop"):
        quantize_bundle(bundle, GOOD, target="cpu", max_drop=-0.5, progress=False, latency=False)


def test_a_model_that_is_quantized_already_is_refused(bundle, tmp_path):
    """Before: --target cpu failed in ONNX Runtime on a temporary file ('two nodes with same node name'), and
    --target tensorrt wrote a doubly quantized model into the bundle."""
    from edgeseg.export import import_onnx

    quantize_bundle(bundle, GOOD, target="cpu", method="minmax", progress=False, latency=False)
    imported = import_onnx(bundle / "model.int8.cpu.onnx", tmp_path / "int8.edgeseg", classes=qt.CLASSES,
                           input_spec=qt.SPEC).root
    before = hashes(imported)
    for target in ("cpu", "tensorrt"):
        with pytest.raises(QuantizationError, match="quantized already") as e:
            quantize_bundle(imported, GOOD, target=target, progress=False, latency=False)
        assert "float model" in str(e.value) and "fix:" in str(e.value)
    # refused before the calibration frames are read: a source that does not exist is never opened
    with pytest.raises(QuantizationError, match="quantized already"):
        quantize_bundle(imported, str(tmp_path / "no-such-folder"), target="cpu", progress=False, latency=False)
    assert hashes(imported) == before
    from edgeseg.bundle import Bundle

    # and the import said so, as does edgeseg info (it listed the model as fp32)
    assert "QuantizeLinear" in Bundle.open(imported).report["import"]["quantized"]
    import contextlib
    import io

    from edgeseg.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["info", str(imported)]) == 0
    assert "model    model.onnx: fp32 slot (" in out.getvalue() and "quantized already)" in out.getvalue()


def test_eval_set_with_other_classes_warns_how_they_were_matched(bundle, caplog):
    other = qt.Dataset(VAL, classes=("sky", "road", "car", "person", "tree"))
    with caplog.at_level(logging.WARNING, logger="edgeseg.quant.accuracy"):
        r = quantize_bundle(bundle, GOOD, target="cpu", method="minmax", eval_dataset=other, progress=False,
                            latency=False)
    assert r.met_budget
    text = caplog.text
    assert "no class name is shared" in text and "scoring by class id" in text
    assert "cannot predict score 0: tree" in text


def test_fewer_calibration_frames_than_asked_warns(bundle, tmp_path, caplog):
    write_images(tmp_path / "two", GOOD[:2])
    with caplog.at_level(logging.WARNING, logger="edgeseg.quant.calibration"):
        r = quantize_bundle(bundle, str(tmp_path / "two"), target="cpu", frames=8, progress=False, latency=False)
    assert r.frames == 2
    assert "gave 2 of the 8 frames asked for" in caplog.text


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError])
def test_an_interrupted_write_leaves_the_bundle_as_it_was(bundle, monkeypatch, fault):
    """Before: the INT8 model, calibration.json, the TensorRT caches and the report were written one by one
    into the bundle: a Ctrl-C or a full disk between them left a new model with the old record (or the
    reverse). Now they are written on a hard-linked copy swapped in at the end. The fault is injected into
    the TensorRT cache writer, after the model and the ranges were written."""
    import edgeseg.quant.api as api

    before = hashes(bundle)

    def broken(*_a, **_k):
        raise fault(28, "No space left on device") if fault is OSError else fault()

    monkeypatch.setattr(api, "write_cache", broken, raising=False)
    monkeypatch.setattr("edgeseg.quant.trt_cache.write_cache", broken)
    with pytest.raises(fault):
        quantize_bundle(bundle, GOOD, target="tensorrt", method="minmax", eval_dataset=VAL, max_drop=5.0,
                        progress=False, latency=False)
    assert hashes(bundle) == before
    assert [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    quantize_bundle(bundle, GOOD, target="tensorrt", method="minmax", eval_dataset=VAL, max_drop=5.0,
                    progress=False, latency=False)
    from edgeseg.bundle import Bundle

    after = Bundle.open(bundle)  # whole: every file's sha256 checked
    assert after.model_entry("int8", "tensorrt").file == "model.int8.tensorrt.onnx"
    assert {k: v for k, v in hashes(bundle).items() if k in before and k.startswith("model.onnx")} == \
        {k: v for k, v in before.items() if k.startswith("model.onnx")}


def test_quantizing_a_zipped_bundle_writes_the_zip(bundle, tmp_path, monkeypatch):
    """Before: 'wrote model.int8.cpu.onnx ... to b.zip' while the zip was unchanged: the model went into the
    unpacked copy in the cache only, and was gone for anyone given the zip."""
    import zipfile

    from edgeseg.bundle import Bundle

    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    z = Bundle.open(bundle).zip(tmp_path / "b.zip")
    before = set(zipfile.ZipFile(z).namelist())
    quantize_bundle(z, GOOD, target="tensorrt", method="minmax", eval_dataset=VAL, max_drop=5.0, progress=False,
                    latency=False)
    after = set(zipfile.ZipFile(z).namelist())
    assert after - before >= {"model.int8.tensorrt.onnx"}
    again = Bundle.open(z)  # verified: every file's sha256
    assert again.model_entry("int8", "tensorrt").file == "model.int8.tensorrt.onnx"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert not [p for p in (tmp_path / "cache" / "bundles").iterdir() if p.name.startswith(".")]


def test_an_onnxruntime_too_old_to_quantize_is_named_before_any_calibration(bundle, monkeypatch, tmp_path, capsys):
    """before: on onnxruntime 1.19-1.26 (Python 3.8's last wheel, JetPack's builds) quantize calibrated for minutes, then
    failed with `ImportError: cannot import name 'save_tensors_data'` (added in 1.27)."""
    import onnxruntime

    from edgeseg.cli import main

    monkeypatch.setattr(onnxruntime, "__version__", "1.19.2")
    write_images(tmp_path / "good", GOOD[:4])
    before = hashes(bundle)
    rc = main(["quantize", str(bundle), "--calib", str(tmp_path / "good"), "--target", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "INT8 quantization needs onnxruntime >= 1.27" in err and "this is onnxruntime 1.19.2" in err
    assert "quantize on a desktop and copy the bundle" in err and hashes(bundle) == before
    monkeypatch.setattr(onnxruntime, "__version__", "1.27.0")
    from edgeseg.quant.quantize import require_ort_quantizer

    require_ort_quantizer()  # the first release with save_tensors_data passes
    from onnxruntime.quantization.calibrate import save_tensors_data  # noqa: F401  (and this one has it)


def test_a_range_method_with_the_nncf_engine_is_refused_and_a_missing_nncf_is_said(monkeypatch, caplog):
    """--method sets edgeseg's ranges; NNCF uses its own statistics (a review caught this refusal lost in session 45);
    target openvino without NNCF says the ort engine quantizes instead."""
    import logging

    from edgeseg.quant import openvino as qov
    from edgeseg.quant.api import _engine_profile
    from edgeseg.quant.profiles import get_profile

    pytest.importorskip("nncf")
    with pytest.raises(InputError, match="--method percentile sets edgeseg's range algorithm"):
        _engine_profile(get_profile("openvino"), "nncf", "percentile")
    with pytest.raises(InputError, match="--method percentile sets edgeseg's range algorithm"):
        _engine_profile(get_profile("openvino"), None, "percentile")  # nncf is this target's engine here
    monkeypatch.setattr(qov, "nncf_available", lambda: (False, "no module named nncf"))
    with caplog.at_level(logging.WARNING):
        assert _engine_profile(get_profile("openvino"), None, "percentile").engine == "ort"
    assert "NNCF is not usable here (no module named nncf)" in caplog.text
