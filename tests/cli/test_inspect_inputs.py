"""What users give ``edgeseg check``, ``info``, ``bench`` and ``models``: each case ends in the right answer or
an ``edgeseg CMD: error:`` line naming the thing and the fix (exit 2), never a traceback or a silent
wrong result. In-process (``edgeseg.cli.main``) on the shipped ``shapes`` bundle or hand-built ones."""
from __future__ import annotations

import importlib.util
import json
import zipfile

import pytest

from edgeseg.cli import main
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle


@pytest.fixture()
def fp32_only(tmp_path):
    """A bundle with one FP32 model and no INT8 model (as 'edgeseg export' writes before 'quantize')."""
    return conv_bundle(tmp_path / "b", 4, input_spec=InputSpec(size=ImageShape(8, 12)))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---- edgeseg check --target -------------------------------------------------------------------------
@pytest.mark.parametrize("target, hint", [
    ("tensorrt-10.x", "did you mean tensorrt-10.3"),  # a version written with a wildcard
    ("abc", "known: onnxruntime, openvino, tensorrt-10.3"),
    ("tensorrt-0.1", "did you mean"),  # there is no TensorRT 0.x: was read as a version older than any table
])
def test_check_refuses_an_unknown_target(fp32_only, capsys, target, hint):
    rc, out, err = _run(capsys, "check", str(fp32_only.root), "--target", target)
    assert rc == 2 and out == ""
    assert f"edgeseg check: error: unknown deployment target '{target}'" in err and hint in err


def test_check_target_in_any_case_is_the_same_target(fp32_only, tmp_path, capsys):
    # before: 'TensorRT-10.3' (as NVIDIA writes it) was an unknown target
    assert main(["check", str(fp32_only.root), "--target", "tensorrt-10.3", "--json", str(tmp_path / "a.json")]) == 0
    assert main(["check", str(fp32_only.root), "--target", " TensorRT-10.3", "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a == b and a["target"] == "tensorrt-10.3" and a["ok"] is True


@pytest.mark.parametrize("target, words", [
    ("tensorrt-99", "TensorRT 99.0 is newer than any TensorRT this check knows (11.x): it is checked as 11.x"),
    ("tensorrt-7.1", "TensorRT 7.1 is older than the oldest ONNX-TensorRT support table read (8.4)"),
])
def test_check_warns_when_the_version_is_outside_the_tables_read(fp32_only, tmp_path, capsys, target, words):
    # before: tensorrt-99 said "OK" with no word that nothing about it is known
    rc = main(["check", str(fp32_only.root), "--target", target, "--json", str(tmp_path / "c.json")])
    report = json.loads((tmp_path / "c.json").read_text())
    warning = [f for f in report["findings"] if f["code"] == "version-unconfirmed"]
    assert len(warning) == 1 and warning[0]["level"] == "warning" and words in warning[0]["message"]
    assert "trtexec" in warning[0]["fix"]
    assert rc == (0 if report["ok"] else 1) and words in capsys.readouterr().out
    assert main(["check", str(fp32_only.root), "--target", "tensorrt-10.3", "--json", str(tmp_path / "d.json")]) == 0
    assert "version-unconfirmed" not in (tmp_path / "d.json").read_text()  # a version a table covers: no warning


def test_check_model_target_names_that_model_or_fails(capsys):
    # before: an unknown --model-target was ignored and the first INT8 model checked instead ("OK")
    rc, out, err = _run(capsys, "check", "shapes", "--target", "tensorrt-10.3", "--precision", "int8",
                        "--model-target", "nope")
    assert rc == 2 and out == ""
    assert "bundle shapes has no INT8 model for target 'nope' (it has: cpu, tensorrt)" in err
    assert "fix: use --model-target cpu" in err
    rc, out, err = _run(capsys, "check", "shapes", "--target", "tensorrt-10.3", "--model-target", "cpu")
    assert rc == 2 and "--model-target 'cpu': bundle shapes has no fp32 model for a target (--precision is fp32" in err
    assert "add --precision int8" in err
    rc, out, _ = _run(capsys, "check", "shapes", "--target", "tensorrt-10.3", "--precision", "int8", "--model-target", "cpu")
    assert rc == 1 and out.startswith("model.int8.cpu.onnx on tensorrt-10.3 (int8): BLOCKED")  # the model asked for
    assert "qdq-zero-point" in out  # the CPU model is asymmetric: TensorRT cannot take it


# ---- edgeseg info ------------------------------------------------------------------------------------
def test_info_on_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.txt").write_text("x")
    rc, out, err = _run(capsys, "info", str(tmp_path / "photos"))
    assert rc == 2 and out == ""
    assert "photos: no manifest.json; this is not an edgeseg bundle" in err and "fix: create one with 'edgeseg export'" in err


def test_info_on_a_truncated_manifest(fp32_only, capsys):
    manifest = fp32_only.root / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:200])
    rc, _, err = _run(capsys, "info", str(fp32_only.root))
    assert rc == 2 and "manifest.json: not valid JSON" in err and "the manifest is truncated or was edited" in err


def test_info_on_a_zip_bundle_equals_its_folder(fp32_only, tmp_path, capsys):
    zipped = tmp_path / "b.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in fp32_only.root.iterdir():
            z.write(f, f.name)
    assert main(["info", str(fp32_only.root), "--json", str(tmp_path / "dir.json")]) == 0
    assert main(["info", str(zipped), "--json", str(tmp_path / "zip.json")]) == 0
    d, z = (json.loads((tmp_path / f).read_text()) for f in ("dir.json", "zip.json"))
    assert z["path"] == str(zipped) and {k: v for k, v in z.items() if k != "path"} == {k: v for k, v in d.items() if k != "path"}
    (tmp_path / "cut.zip").write_bytes(zipped.read_bytes()[:-30])  # the zip directory cut off
    rc, _, err = _run(capsys, "info", str(tmp_path / "cut.zip"))
    assert rc == 2 and "cut.zip: not a readable .zip" in err and "copy or download the bundle again" in err


def test_info_of_a_bundle_listing_no_model_says_so(fp32_only, capsys):
    # before: no 'model' line at all, as if the list had been cut off
    manifest = fp32_only.root / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["models"] = []
    manifest.write_text(json.dumps(doc))
    rc, out, err = _run(capsys, "info", str(fp32_only.root))  # since session 36 refused at open, as by every command
    assert rc == 2 and "lists no models ('models' is empty), so there is nothing to run" in err and "fix:" in err


# ---- edgeseg bench -----------------------------------------------------------------------------------
def test_bench_refuses_a_backend_list_with_no_name(fp32_only, capsys):
    # before: '--backend ,,' benchmarked the automatic choice as if no backend had been given
    rc, out, err = _run(capsys, "bench", str(fp32_only.root), "--backend", ",,", "--runs", "1")
    assert rc == 2 and out == ""
    assert "--backend ',,' names no backend" in err and "onnxruntime" in err


def test_bench_refuses_a_size_no_camera_has_before_allocating_it(fp32_only, capsys):
    # before: 'np.random...integers(..., (50000, 50000, 3))' asked for 7.5 GB (MemoryError, or the OOM killer)
    rc, out, err = _run(capsys, "bench", str(fp32_only.root), "--size", "50000x50000", "--runs", "1")
    assert rc == 2 and out == ""
    assert "--size 50000x50000 is 2,500,000,000 pixels; bench feeds at most 100,000,000" in err and "1920x1080" in err


def test_bench_all_refuses_negative_threads(fp32_only, capsys):
    # before: --all timed every candidate with threads=-1 (the other path refused it)
    rc, out, err = _run(capsys, "bench", str(fp32_only.root), "--all", "--threads", "-1", "--runs", "1")
    assert rc == 2 and out == "" and "--threads must be >= 0 (0: the runtime's default), got -1" in err


def test_bench_all_int8_of_a_bundle_without_int8_is_an_error(fp32_only, capsys):
    # before: "0 candidates ... (nothing)", exit 0, no reason
    rc, out, err = _run(capsys, "bench", str(fp32_only.root), "--all", "--precision", "int8", "--threads", "1", "--runs", "1")
    assert rc == 2 and "0 candidates" in out
    assert "nothing of handmade can be timed here with --precision int8" in err
    assert "the bundle has: fp32" in err and "fix: add an INT8 model first (edgeseg quantize" in err


def test_bench_all_where_every_candidate_is_left_out_is_an_error(fp32_only, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: its candidates are not left out")
    rc, out, err = _run(capsys, "bench", str(fp32_only.root), "--all", "--backend", "tensorrt", "--threads", "1", "--runs", "1")
    assert rc == 2 and "left out tensorrt/fp32: no tensorrt module" in out
    assert "nothing of handmade can be timed here with --backend tensorrt: every candidate was left out (above)" in err


def test_bench_all_of_a_bundle_without_int8_times_its_fp32_model(fp32_only, tmp_path, capsys):
    rc, out, _ = _run(capsys, "bench", str(fp32_only.root), "--all", "--backend", "onnxruntime", "--threads", "1",
                      "--runs", "2", "--warmup", "0", "--json", str(tmp_path / "m.json"))
    assert rc == 0
    rows = json.loads((tmp_path / "m.json").read_text())["results"]
    assert [(r["backend"], r["precision"], r["target"]) for r in rows] == [("onnxruntime", "fp32", None)]
    table = [line.split() for line in out.splitlines() if line.startswith("onnxruntime")]
    assert table[0][:3] == ["onnxruntime", "fp32", "-"]  # before: the column read "None"
    assert "automatic choice: onnxruntime/fp32" in out


def test_bench_of_a_corrupt_bundle_names_the_file(fp32_only, capsys):
    model = fp32_only.root / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    for extra in ([], ["--all"]):
        rc, out, err = _run(capsys, "bench", str(fp32_only.root), *extra, "--threads", "1", "--runs", "1")
        assert rc == 2 and out == "" and "model.onnx: sha256 mismatch" in err and "re-create the bundle" in err


# ---- edgeseg models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, words, fix", [
    (["--task", "semantc"], "unknown task 'semantc'", "use one of instance, panoptic, semantic, volumetric"),
    (["deeplabv3_mobilnet*"], "no registered model matches 'deeplabv3_mobilnet*'", "did you mean"),
    (["--task", "instance", "segnet*"], "no registered model of task instance matches 'segnet*'", "lists them all"),
    (["--encoder", "resnet1"], "no registered encoder matches 'resnet1'", "did you mean resnet18"),
    (["--encoders", "mobilnet*"], "no registered encoder matches 'mobilnet*'", "did you mean"),
    (["--encoders", "--task", "semantic"], "--encoders lists the encoders; --task filters models", "drop --task"),
])
def test_models_filters_that_match_nothing_say_so(capsys, argv, words, fix):
    # before: '(nothing)' and exit 0 for each, or every model 'not buildable on resnet1'
    rc, out, err = _run(capsys, "models", *argv)
    assert rc == 2 and out == ""
    assert f"edgeseg models: error: {words}" in err and fix in err


def test_models_bundles_lists_the_shipped_bundles(capsys, tmp_path):
    """No command listed the bundles usable by name (edgeseg models lists architectures)."""
    from edgeseg.paths import shipped_bundle_names

    rc, out, _ = _run(capsys, "models", "--bundles", "--json", str(tmp_path / "b.json"))
    rows = json.loads((tmp_path / "b.json").read_text())["bundles"]
    assert rc == 0 and [r["name"] for r in rows] == shipped_bundle_names() and "road" in out
    road = next(r for r in rows if r["name"] == "road")
    assert (road["task"], road["classes"], road["input"]) == ("semantic", 11, "480x360") and "int8/cpu" in road["models"]
    rc, _, _ = _run(capsys, "models", "--bundles", "street*", "--task", "instance", "--json", str(tmp_path / "i.json"))
    assert rc == 0 and [r["name"] for r in json.loads((tmp_path / "i.json").read_text())["bundles"]] == ["street-instance"]
    rc, _, err = _run(capsys, "models", "--bundles", "rood")
    assert rc == 2 and "no shipped bundle matches 'rood'" in err and "did you mean road" in err
    rc, _, err = _run(capsys, "models", "--bundles", "road*", "--task", "instance")
    assert rc == 2 and "(road, road-camvid are not instance)" in err and "models --bundles' lists them" in err
    for argv, words in ((["--task", "bogus"], "unknown task 'bogus'"), (["--encoders"], "--encoders describe"),
                        (["--tiny"], "drop --tiny")):
        rc, _, err = _run(capsys, "models", "--bundles", *argv)
        assert rc == 2 and words in err, err


def test_models_with_a_known_task_and_encoder_still_lists(capsys, tmp_path):
    rc, _, _ = _run(capsys, "models", "segnet*", "--task", "semantic", "--json", str(tmp_path / "m.json"))
    rows = json.loads((tmp_path / "m.json").read_text())["models"]
    assert rc == 0 and rows and all(r["task"] == "semantic" and r["name"].startswith("segnet") for r in rows)



# ---- --json that cannot be written -------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["info", "{b}"], ["check", "{b}", "--target", "onnxruntime"],
    ["bench", "{b}", "--backend", "onnxruntime", "--threads", "1", "--runs", "1", "--warmup", "0"],
    ["models", "segnet*"], ["models", "--encoders", "vgg*"],
], ids=["info", "check", "bench", "models", "encoders"])
def test_an_unwritable_json_path_is_refused_before_any_work(fp32_only, tmp_path, capsys, argv):
    # before: FileExistsError traceback from write_json, after the work (bench: after every timed run)
    (tmp_path / "afile").write_text("x")
    rc, out, err = _run(capsys, *[a.replace("{b}", str(fp32_only.root)) for a in argv], "--json",
                        str(tmp_path / "afile" / "x.json"))
    assert rc == 2 and out == ""
    assert "--json: cannot write" in err and "afile is a file, not a folder" in err
    assert "fix: give --json a file path in a folder you can write to" in err


def test_check_int8_without_a_model_for_the_target_checks_what_that_runtime_loads(capsys):
    # before: shapes has INT8 models for cpu and tensorrt; `--target openvino --precision int8` checked the TensorRT
    # model (the first INT8 one listed), which OpenVINO never runs, and said nothing of the substitution
    rc, out, _ = _run(capsys, "check", "shapes", "--target", "openvino", "--precision", "int8")
    assert rc == 0 and out.startswith("model.int8.cpu.onnx on openvino (int8): OK")  # the OpenVINO backend's stand-in
    assert "stand-in-model: bundle has no INT8 model made for openvino; checked the one made for cpu" in out
    assert "--target openvino --calib RECIPE' for a model made for it" in out
    rc, out, _ = _run(capsys, "check", "shapes", "--target", "openvino", "--precision", "int8", "--model-target", "cpu")
    assert "stand-in-model" not in out  # asked for by name: no substitution to speak of


def test_check_takes_quantizes_target_names(capsys, tmp_path):
    """before: `check --target cpu` was an unknown target and `--target tensorrt` a 'did you mean' list; and with no
    TensorRT INT8 model the cpu one (asymmetric UINT8, which TensorRT never runs) was checked in its place."""
    import shutil

    rc, out, _ = _run(capsys, "check", "shapes", "--target", "cpu", "--precision", "int8")
    assert rc == 0 and out.startswith("model.int8.cpu.onnx on onnxruntime (int8): OK")
    rc, out, err = _run(capsys, "check", "shapes", "--target", "tensorrt")
    assert rc == 2 and "--target tensorrt: which TensorRT version?" in err and "tensorrt-8.5 (JetPack 5)" in err
    from edgeseg.bundle import Bundle

    b = Bundle.open("shapes")
    cpu_only = tmp_path / "s.edgeseg"
    shutil.copytree(b.root, cpu_only)
    import json

    m = json.loads((cpu_only / "manifest.json").read_text())
    m["models"] = [x for x in m["models"] if x.get("target") != "tensorrt"]
    (cpu_only / "manifest.json").write_text(json.dumps(m))
    rc, out, _ = _run(capsys, "check", str(cpu_only), "--target", "tensorrt-10.3", "--precision", "int8")
    assert rc == 1 and "no-model: bundle has no INT8 model for tensorrt" in out and "--target tensorrt --calib RECIPE'" in out


def test_check_for_a_tensorrt_older_than_export_can_serve_says_what_can_be_done(capsys):
    """A family audit: for TensorRT 8.4 the fix said 'edgeseg export --opset 13', which export refuses (17-19)."""
    rc, out, _ = _run(capsys, "check", "shapes", "--target", "tensorrt-8.4")
    assert rc == 1 and "opset 19 is newer than TensorRT 8.4 parses (<= 13)" in out
    assert "TensorRT 8.5 or newer (edgeseg export writes opset 17 at the oldest" in out and "--opset 13" not in out
    rc, out, _ = _run(capsys, "check", "shapes", "--target", "tensorrt-8.5")
    assert "edgeseg export --opset 17" in out
