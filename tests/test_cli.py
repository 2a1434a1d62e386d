"""edgeseg info / predict / bench on hand-built bundles (in-process: edgeseg.cli.main)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.data.io import read_image, read_label, write_image
from edgeseg.structures import ImageShape, InputSpec, colorize
from handmade_bundles import conv_bundle, reference_logits

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture()
def bundle(tmp_path):
    return conv_bundle(tmp_path / "b", 4, input_spec=InputSpec(size=ImageShape(8, 12)))


def test_info(bundle, tmp_path, capsys):
    assert main(["info", str(bundle.root), "--json", str(tmp_path / "info.json")]) == 0
    text = capsys.readouterr().out
    assert "task     semantic, 4 classes: c0, c1, c2, c3" in text
    assert "images: NCHW RGB float32, size 12x8" in text and "model    model.onnx: fp32" in text
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["files"]["model.onnx"]["sha256"] == bundle.manifest.files["model.onnx"]
    assert info["report"]["parity"]["argmax_agreement"] == 1.0 and info["input"]["size"] == {"height": 8, "width": 12}


def test_info_shows_the_int8_and_accuracy_entries(tmp_path, capsys):
    """`report int8:` and `report accuracy:` printed empty (their entries are mappings per target), and --json
    left their scores out."""
    assert main(["info", "road", "--json", str(tmp_path / "i.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(ln for ln in lines if ln.startswith("report   int8.openvino:"))
    assert "metric=mIoU" in line and "drop=" in line and "met_budget=True" in line
    assert any(ln.startswith("report   accuracy.fp32:") and "miou=" in ln for ln in lines)
    assert not any(ln.rstrip().endswith(":") for ln in lines if ln.startswith("report"))
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["report"]["int8"]["cpu"]["met_budget"] is True and "sensitivity" not in info["report"]["int8"]["cpu"]


def test_info_bad_bundle(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "edgeseg info: error: bundle" in capsys.readouterr().err


def test_predict_writes_labels_and_overlay(bundle, tmp_path, capsys):
    img = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    write_image(tmp_path / "street.png", img)
    out = tmp_path / "preds"
    rc = main(["predict", str(bundle.root), str(tmp_path / "street.png"), "--out", str(out), "--backend", "onnxruntime",
               "--threads", "1", "--json", str(tmp_path / "p.json")])
    assert rc == 0
    x = ((img / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    want = reference_logits(x, 4)[0].argmax(0)
    labels = read_label(out / "street_labels.png")
    assert np.array_equal(labels, want)
    blend = np.clip(0.5 * img + 0.5 * colorize(want.astype(np.uint8), bundle.manifest.palette_array) + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(read_image(out / "street_overlay.png").astype(int) - blend).max() <= 1
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rep["backend"] == "onnxruntime" and sum(rep["images"][0]["class_pixels"].values()) == 96


def test_predict_draws_the_stream_s_overlay(bundle, tmp_path):
    """An audit: predict's semantic overlay was its own blend without the class legend; the stream, the GStreamer
    element and predict's instance/panoptic overlays draw with the Renderer (a level apart on half the pixels)."""
    from edgeseg.stream.overlay import Renderer
    from edgeseg.structures import SemanticResult

    img = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    write_image(tmp_path / "street.png", img)
    assert main(["predict", str(bundle.root), str(tmp_path / "street.png"), "--out", str(tmp_path / "o"),
                 "--backend", "onnxruntime", "--threads", "1"]) == 0
    labels = read_label(tmp_path / "o" / "street_labels.png")
    want = Renderer(bundle.manifest.palette_array, bundle.manifest.classes, alpha=0.5, hud=False)(
        img, SemanticResult(labels=labels))
    assert np.array_equal(read_image(tmp_path / "o" / "street_overlay.png"), want)


def test_predict_bad_inputs(bundle, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, msg in [("missing.png", "image not found"), ("notes.png", "not an image or a corrupt file"),
                      ("empty.png", "empty")]:
        assert main(["predict", str(bundle.root), str(tmp_path / name), "--out", str(tmp_path / "o"),
                     "--backend", "onnxruntime"]) == 2
        assert msg in capsys.readouterr().err


def test_predict_skips_a_missing_image_among_others(bundle, tmp_path, capsys):
    """A missing file among good ones is reported like an unreadable one (before: nothing was segmented)."""
    rng = np.random.default_rng(2)
    for name in ("a.png", "c.png"):
        write_image(tmp_path / name, rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    paths = [str(tmp_path / n) for n in ("a.png", "gone.png", "c.png")]
    out, js = tmp_path / "o", tmp_path / "p.json"
    assert main(["predict", str(bundle.root), *paths, "--out", str(out), "--backend", "onnxruntime", "--threads", "1",
                 "--json", str(js)]) == 2
    err = capsys.readouterr().err
    assert f"image not found: {paths[1]}" in err and "1 of 3 image(s) could not be read" in err
    rep = json.loads(js.read_text())
    assert [r["image"] for r in rep["images"]] == [paths[0], paths[2]]
    assert rep["errors"] == [{"image": paths[1], "error": f"image not found: {paths[1]}"}]
    assert (out / "a_labels.png").is_file() and (out / "c_labels.png").is_file()


def test_predict_refuses_outputs_it_cannot_write_before_any_work(bundle, tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros((8, 12, 3), np.uint8))
    (tmp_path / "file").write_text("x")
    for extra, msg in [(["--json", str(tmp_path / "file" / "p.json")], "--json: cannot write"),
                       (["--json", str(tmp_path)], "--json: cannot write"),
                       (["--out", str(tmp_path / "file")], "--out: cannot write")]:
        assert main(["predict", str(bundle.root), str(tmp_path / "a.png"), *extra, "--backend", "onnxruntime"]) == 2
        err = capsys.readouterr().err
        assert msg in err and "fix:" in err
    assert (tmp_path / "file").read_text() == "x"


def test_predict_keeps_the_readable_images_results(bundle, tmp_path, capsys, monkeypatch):
    """A corrupt file among many: the others are segmented and written, the JSON lists the failure, exit 2."""
    rng = np.random.default_rng(1)
    for name in ("a.png", "c.png"):
        write_image(tmp_path / name, rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    (tmp_path / "b.png").write_text("half a download")
    paths = [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    out, js = tmp_path / "o", tmp_path / "p.json"
    assert main(["predict", str(bundle.root), *paths, "--out", str(out), "--backend", "onnxruntime", "--threads", "1",
                 "--json", str(js)]) == 2
    err = capsys.readouterr().err
    assert "cannot decode image" in err and "1 of 3 image(s) could not be read" in err and str(js) in err
    rep = json.loads(js.read_text())
    assert [r["image"] for r in rep["images"]] == [paths[0], paths[2]]
    assert sum(rep["images"][1]["class_pixels"].values()) == 96
    assert rep["errors"] == [{"image": paths[1], "error": f"cannot decode image {paths[1]}: not an image or a corrupt file"}]
    assert (out / "a_labels.png").is_file() and (out / "c_labels.png").is_file()

    # every image unreadable (session 50's fuzzing): an earlier run's --json kept, a new one lists the failures
    before = js.read_bytes()
    assert main(["predict", str(bundle.root), paths[1], "--backend", "onnxruntime", "--json", str(js)]) == 2
    assert js.read_bytes() == before and f"no image was segmented, so {js} keeps the results it held" in \
        capsys.readouterr().err
    assert main(["predict", str(bundle.root), paths[1], "--backend", "onnxruntime", "--json", str(tmp_path / "n.json")]) == 2
    assert json.loads((tmp_path / "n.json").read_text())["errors"][0]["image"] == paths[1]

    # Ctrl-C after the first image: the JSON still holds it, marked interrupted; exit 130
    from edgeseg.predictor import Predictor

    calls = []
    real = Predictor.__call__

    def stop_second(self, image):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, image)

    monkeypatch.setattr(Predictor, "__call__", stop_second)
    assert main(["predict", str(bundle.root), paths[0], paths[2], "--backend", "onnxruntime", "--threads", "1",
                 "--json", str(js)]) == 130
    rep = json.loads(js.read_text())
    assert rep["interrupted"] is True and [r["image"] for r in rep["images"]] == [paths[0]]
    assert "1 image(s) done before the interruption" in capsys.readouterr().err
    # with --out (or --jsonl): how many of how many, and how to go on (session 57: a SIGTERM said only "interrupted")
    calls.clear()
    assert main(["predict", str(bundle.root), paths[0], paths[2], "--backend", "onnxruntime", "--threads", "1",
                 "--out", str(tmp_path / "o")]) == 130
    assert ("1 of 2 image(s) done before the interruption (kept in --out " in (err := capsys.readouterr().err)
            and "run the same command with --resume to do the other 1" in err)
    # interrupted after an unreadable image only: the earlier file is kept and not called this run's results (a review)
    before = js.read_bytes()
    calls.clear()
    calls.append(1)  # the next call (a.png's, after the unreadable b.png) is the second: interrupted
    assert main(["predict", str(bundle.root), paths[1], paths[0], "--backend", "onnxruntime", "--threads", "1",
                 "--json", str(js)]) == 130
    err = capsys.readouterr().err
    assert js.read_bytes() == before and "keeps the results it held" in err and "results in" not in err


def test_predict_takes_folders_and_refuses_clashing_names(bundle, tmp_path, capsys):
    rng = np.random.default_rng(2)
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("b.png", "a.jpg", "notes.txt"):
        if name.endswith(".txt"):
            (frames / name).write_text("not an image, not listed")
        else:
            write_image(frames / name, rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    js = tmp_path / "p.json"
    assert main(["predict", str(bundle.root), str(frames), "--backend", "onnxruntime", "--threads", "1",
                 "--json", str(js)]) == 0
    assert [r["image"] for r in json.loads(js.read_text())["images"]] == [str(frames / "a.jpg"), str(frames / "b.png")]
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(bundle.root), str(tmp_path / "empty"), "--json", str(js)]) == 2
    assert "holds no images" in capsys.readouterr().err
    # frames/b.png and other/b.png would both write b_labels.png: refused before any work
    (tmp_path / "other").mkdir()
    write_image(tmp_path / "other" / "b.png", rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    assert main(["predict", str(bundle.root), str(frames), str(tmp_path / "other" / "b.png"), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "same name" in err and str(tmp_path / "other" / "b.png") in err and not (tmp_path / "o").exists()


def test_bench(bundle, tmp_path, capsys):
    rc = main(["bench", str(bundle.root), "--backend", "onnxruntime", "--runs", "5", "--warmup", "1",
               "--threads", "1", "--json", str(tmp_path / "bench.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "median_ms" in out and "onnxruntime" in out
    res = json.loads((tmp_path / "bench.json").read_text())
    row = res["results"][0]
    assert res["runs"] == 5 and row["input"] == "1x3x8x12"
    assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"] and row["fps"] == pytest.approx(1e3 / row["median_ms"])


def test_bench_helpers():
    from edgeseg.cli.bench import backends_of, stats

    assert backends_of(None) == ["auto"]
    assert backends_of(["onnxruntime,torch", "openvino", "torch"]) == ["onnxruntime", "torch", "openvino"]
    s = stats([0.001, 0.002, 0.003, 0.004, 0.010])
    assert s["median_ms"] == pytest.approx(3.0) and s["p90_ms"] == pytest.approx(7.6) and s["fps"] == pytest.approx(1e3 / 3)


def test_predict_explains_unsupported_op_and_bad_bundle(tmp_path, capsys):
    from handmade_bundles import custom_op_model, make_bundle

    bundle = make_bundle(tmp_path / "c.edgeseg", custom_op_model(tmp_path / "c.onnx"),
                         input_spec=InputSpec(size=ImageShape(4, 4)), num_classes=3)
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["predict", str(bundle.root), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "com.example:FancyOp" in err and "fix:" in err
    assert main(["predict", str(tmp_path / "nope.edgeseg"), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bench_of_several_backends_leaves_out_one_that_cannot_run_the_bundle(tmp_path, capsys):
    """An audit: `bench --backend onnxruntime --backend torch` (its help's example) stopped at torch on a bundle
    without a checkpoint, after timing onnxruntime: torch is left out, said, and listed in the JSON."""
    rc = main(["bench", "shapes", "--backend", "onnxruntime", "--backend", "torch", "--precision", "fp32", "--runs", "3",
               "--warmup", "1", "--json", str(tmp_path / "b.json")])
    out = json.loads((tmp_path / "b.json").read_text())
    assert rc == 0 and [r["backend"] for r in out["results"]] == ["onnxruntime"]
    assert out["left_out"][0]["backend"] == "torch" and "no PyTorch checkpoint" in out["left_out"][0]["why"]
    assert "torch left out" in capsys.readouterr().err


# ---- session 48: users of other tools (an audit) -------------------------------------------------------------------
def test_json_dash_makes_standard_output_the_json_alone(tmp_path, capsys):
    """`--json -` was documented as standard output, but the command's tables came first: no JSON parser read it."""
    bundle = conv_bundle(tmp_path / "b", 3).root
    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), np.uint8)
    write_image(tmp_path / "a.png", image)
    assert main(["predict", str(bundle), str(tmp_path / "a.png"), "--json", "-", "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["images"][0]["image"].endswith("a.png") and "a.png" in out.err  # the table went to stderr
    assert main(["doctor", "--json", "-"]) == 0
    assert "edgeseg" in json.loads(capsys.readouterr().out)


def test_a_video_where_the_recipe_goes_and_other_tools_options_are_named(capsys):
    """`edgeseg run --bundle B in.mp4` (jetson-inference's `segnet in.mp4 out.mp4`) was a UnicodeDecodeError traceback
    (the video read as TOML); Ultralytics' `--conf` got the top-level usage and no pointer."""
    rc = main(["run", "--bundle", "road", "/work/nowhere/in.mp4"])
    err = capsys.readouterr().err
    assert rc == 2 and "looks like a source" in err and "--source /work/nowhere/in.mp4 --sink out.mp4" in err
    for argv, said in ((["run", "in.mp4", "out.mp4"], "out.mp4: the annotated video is --sink out.mp4"),
                       (["predict", "road", "a.png", "--conf", "0.4"], "--conf: in edgeseg, --score-threshold T"),
                       (["eval", "road", "--data", "camvid:x", "--splitt", "val"], "--splitt: did you mean --split?")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and f"usage: edgeseg {argv[0]}" in err, err


def test_an_image_whose_name_starts_with_a_dash_gets_the_way_to_pass_it(tmp_path, capsys, monkeypatch):
    """`edgeseg predict road -x.png` said only "the following arguments are required: images" (and with another
    image first, "unrecognized arguments: -x.png"): argparse reads the file name as an option. Both now say how."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-x.png").write_bytes(b"")
    for argv in (["predict", "road", "-x.png"], ["predict", "road", "a.png", "-x.png"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "-x.png: a file of that name is read as an option; write ./-x.png" in err, err


def test_a_recipe_that_is_no_text_is_named(tmp_path, capsys):
    (tmp_path / "r.toml").write_bytes(bytes(range(128, 256)))
    assert main(["run", str(tmp_path / "r.toml")]) == 2
    assert "is not a text file (a recipe is TOML text)" in capsys.readouterr().err


def test_predict_on_a_video_points_to_run_and_run_without_outputs_says_so(tmp_path, capsys):
    rc = main(["predict", "road", "/work/nowhere/clip.mp4", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a video or a stream" in err and "edgeseg run --bundle road --source /work/nowhere/clip.mp4" in err
    assert not (tmp_path / "o").exists()
    rc = main(["predict", "road", "x.png", "--out", str(tmp_path / "o"), "--alpha", "150"])
    assert rc == 2 and "--alpha 0.59" in capsys.readouterr().err
    assert main(["run", "--bundle", "shapes", "--source", "synthetic://?frames=2"]) == 0
    assert "note: no output asked for" in capsys.readouterr().err


def test_logging_options_work_before_and_after_the_command_and_from_the_environment(monkeypatch):
    """Session 57 (an operator's audit): ``-v`` after the command was refused, nothing set the level (no quiet), and
    log lines carried no time, so a nohup file could not say when the stats or the errors came."""
    import logging

    from edgeseg.cli import build_parser, log_level, log_time

    parser = build_parser()
    monkeypatch.delenv("EDGESEG_LOG_LEVEL", raising=False)
    for argv, want in ((["models"], logging.INFO), (["-v", "models"], logging.DEBUG), (["models", "-v"], logging.DEBUG),
                       (["models", "-q"], logging.WARNING), (["-q", "models"], logging.WARNING),
                       (["-v", "models", "--log-level", "ERROR"], logging.ERROR)):
        args = parser.parse_args(argv)
        assert log_level(args) == want, argv
    assert parser.parse_args(["models", "-v"]).verbose is True  # (the tracebacks too)
    monkeypatch.setenv("EDGESEG_LOG_LEVEL", "warning")
    assert log_level(parser.parse_args(["models"])) == logging.WARNING
    assert log_level(parser.parse_args(["models", "-v"])) == logging.DEBUG  # an option wins over the environment
    import os

    try:
        st = os.fstat(2)
        ours = f"{st.st_dev}:{st.st_ino}"  # standard error as systemd's journal would name it
    except OSError:
        ours = "8:123"
    for env, journal, want in (("", "", True), ("", ours, False), ("", "8:999999999", True), ("0", "", False),
                               ("1", ours, True)):
        monkeypatch.setenv("EDGESEG_LOG_TIME", env)
        monkeypatch.setenv("JOURNAL_STREAM", journal)
        assert log_time(None) is want, (env, journal)  # (pytest's stderr is no terminal; another stream is not ours)
    assert log_time(True) is True and parser.parse_args(["models", "--log-time"]).log_time is True


def test_an_interrupt_while_the_commands_load_is_a_line_not_a_traceback(monkeypatch, capsys):
    """Session 57 (an operator's audit): Ctrl-C in the first fraction of a second (the commands' modules loading)
    printed a KeyboardInterrupt traceback."""
    import edgeseg.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["models"]) == 130 and capsys.readouterr().err == "edgeseg: interrupted\n"
