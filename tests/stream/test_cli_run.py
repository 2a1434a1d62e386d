"""``edgeseg run``: recipes, and SIGINT/SIGTERM finalizing the MP4 with every processed frame."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeseg.cli import main
from edgeseg.errors import InputError
from edgeseg.stream import StreamOptions, load_recipe
from stream_helpers import decode_mp4_frames

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "pipelines").glob("*.toml"))


def test_every_recipe_loads():
    names = {p.name for p in RECIPES}
    assert {"camera_semantic.toml", "file_semantic.toml", "rtsp_semantic.toml", "jetson_csi.toml"} <= names
    from edgeseg.paths import data_root

    have_data = data_root() is not None  # file_semantic.toml reads ${EDGESEG_DATA}/video/...
    opts = {p.name: load_recipe(p) for p in RECIPES if have_data or p.name != "file_semantic.toml"}
    assert opts["camera_semantic.toml"].show and opts["camera_semantic.toml"].source.startswith("v4l2://")
    assert opts["rtsp_semantic.toml"].rtsp_port == 8555 and opts["rtsp_semantic.toml"].source.startswith("rtsp://")
    assert opts["jetson_csi.toml"].encoder == "nvv4l2h264enc" and opts["jetson_csi.toml"].source.startswith("csi://")
    if have_data:
        assert opts["file_semantic.toml"].sink.endswith(".mp4")


def test_recipe_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[source]\nuri = "x.mp4"\n[sinks]\nmp5 = "o.mp4"\n')
    with pytest.raises(InputError, match=r"bad.toml: unknown key 'mp5' in \[sinks\]"):
        load_recipe(bad)
    assert StreamOptions(source="a").replace(sink=None, max_frames=3).max_frames == 3



@pytest.mark.parametrize("line,words", [
    ('on_error = "ignore"', "stream option on_error must be 'skip' or 'stop', got 'ignore'\n  fix: --on-error in the CLI, "
                            "[pipeline] on_error in a recipe"),
    ("max_batch = 2.5", "stream option max_batch must be an integer >= 1, got 2.5"),
    ("log_interval_s = -1", "stream option log_interval_s must be a number of seconds >= 0 (0: no periodic log), got -1"
                            "\n  fix: --log-interval in the CLI, [pipeline] log_interval_s in a recipe"),  # (since session 57)
])
def test_recipe_pipeline_settings_are_refused_before_the_bundle_loads(tmp_path, capsys, line, words):
    # before: a bad on_error was refused by the pipeline, after the bundle had loaded and its backend been chosen
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[source]\nuri = "synthetic://?frames=2"\n[model]\nbundle = "no-such-bundle"\n'
                      f'[sinks]\njson = "{tmp_path / "r.jsonl"}"\n[pipeline]\n{line}\n')
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert words in err and "no-such-bundle" not in err  # refused before the bundle was looked for
    assert not (tmp_path / "r.jsonl").exists()

@pytest.mark.gst
def test_cli_recipe_with_overrides(gst, bundle, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[source]\nuri = "test://ball?frames=40&width=80&height=60"\n[model]\nbundle = "{bundle.root}"\n'
                      f'[sinks]\njson = "{tmp_path / "r.jsonl"}"\n')
    stats = tmp_path / "s.json"
    code = main(["run", str(recipe), "--max-frames", "9", "--stats-json", str(stats), "--backend", "onnxruntime"])
    assert code == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 9
    d = json.loads(stats.read_text())
    assert d["processed"] == d["frames"] == 9 and d["stopped_by"] == "max_frames"
    assert "end_to_end" in capsys.readouterr().out


def _interrupt_run(bundle, tmp_path, sig) -> tuple[subprocess.CompletedProcess, dict, int]:
    out, stats = tmp_path / "live.mp4", tmp_path / "stats.json"
    cmd = [sys.executable, "-c", "import sys; from edgeseg.cli import main; sys.exit(main())", "run", "--bundle", str(bundle.root), "--backend", "onnxruntime",
           "--source", "test://ball?live=1&width=160&height=120&fps=30", "--sink", str(out), "--stats-json", str(stats)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    part = out.with_name("live.part.mp4")
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.4)  # some more frames
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    assert done.returncode == 0, stderr
    return done, json.loads(stats.read_text()), len(decode_mp4_frames(out))


@pytest.mark.gst
@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signal_drains_and_finalizes_the_mp4(gst, bundle, tmp_path, sig):
    done, stats, decoded = _interrupt_run(bundle, tmp_path, sig)
    assert stats["stopped_by"] == "signal"
    assert stats["processed"] == stats["frames"] > 5
    assert decoded == stats["processed"]  # the file plays and holds every processed frame
    assert not (tmp_path / "live.part.mp4").exists()
    assert signal.Signals(sig).name in done.stderr


def test_json_out_dash_is_standard_output_alone(bundle, tmp_path):
    """Session 57 (an operator's audit): ``--json-out -`` wrote a file named ``-`` and the tables went to standard
    output, so ``edgeseg run ... --json-out - | jq`` failed. Now the JSON lines are standard output's only content (one
    per frame, in order), the tables and the summary on standard error; with ``--stats-json -`` too it is refused."""
    cmd = [sys.executable, "-c", "import sys; from edgeseg.cli import main; sys.exit(main())", "run", "--bundle",
           str(bundle.root), "--backend", "onnxruntime", "--source", "synthetic://?frames=6&size=64x48",
           "--json-out", "-"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGESEG_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["index"] for r in lines] == list(range(6)) and all(r["segments"] for r in lines)
    assert "6 frames in" in done.stderr and not (tmp_path / "-").exists()
    both = subprocess.run(cmd + ["--stats-json", "-"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert both.returncode == 2 and "--stats-json both name -" in both.stderr and both.stdout == ""
    # its reader leaves after a line (| head -n 1): the run stops, exit 0 (a review: a failure, exit 2)
    endless = [a if a != "synthetic://?frames=6&size=64x48" else "synthetic://?frames=100000&size=64x48" for a in cmd]
    proc = subprocess.Popen(endless, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    assert json.loads(proc.stdout.readline())["index"] == 0
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and b"its reader closed the pipe: stopping" in err, err[-2000:]
    from edgeseg.stream.api import check_options

    for refused in ({"stats_json": "-"}, {"json_segments": True, "segment_s": 5.0, "sink": "a.mp4"}):
        with pytest.raises(InputError, match="standard output"):  # the Python API's own check
            check_options(StreamOptions(source="x.mp4", json_out="-", **refused))


def test_log_interval_sets_the_periodic_stream_line(bundle, tmp_path, caplog):
    """Session 57: the periodic figures' interval (10 s) had no flag, only a recipe key; ``--log-interval S`` sets it."""
    import logging

    with caplog.at_level(logging.INFO, logger="edgeseg.stream"):
        assert main(["run", "--bundle", str(bundle.root), "--backend", "onnxruntime", "--source",
                     "synthetic://?frames=30&size=64x48&fps=10&live=1", "--json-out", str(tmp_path / "r.jsonl"),
                     "--log-interval", "0.5"]) == 0
    periodic = [r for r in caplog.records if r.getMessage().startswith("stream: ")]
    assert len(periodic) >= 3 and "last 0.5 s:" in periodic[0].getMessage()  # ~3 s of frames at 10 fps
