"""Recipe paths: relative to the recipe file, ${VAR} and ~ expanded, shipped bundle names kept."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeseg.errors import InputError
from edgeseg.stream import load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_relative_paths_resolve_against_the_recipe_not_the_cwd(tmp_path, monkeypatch):
    d = tmp_path / "recipes"
    d.mkdir()
    (tmp_path / "my.edgeseg").mkdir()
    recipe = d / "r.toml"
    recipe.write_text('[source]\nuri = "clips/a.mp4"\n[model]\nbundle = "../my.edgeseg"\n'
                      '[sinks]\nmp4 = "../out/a.mp4"\njson = "/abs/a.jsonl"\npng_dir = "~/pngs"\nstats_json = "s.json"\n')
    monkeypatch.chdir(tmp_path.parent)  # somewhere else entirely
    o = load_recipe(recipe)
    assert o.source == str(d / "clips" / "a.mp4")
    assert Path(o.bundle).resolve() == (tmp_path / "my.edgeseg").resolve()
    assert Path(o.sink).resolve() == tmp_path / "out" / "a.mp4"
    assert o.json_out == "/abs/a.jsonl"
    assert o.png_dir == str(Path.home() / "pngs")
    assert o.stats_json == str(d / "s.json")


def test_variables_and_uris(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CAM_HOST", "10.0.0.7")
    r = tmp_path / "r.toml"
    r.write_text('[source]\nuri = "file://${EDGESEG_DATA}/v.mp4?x=1"\n[model]\nbundle = "road"\n')
    o = load_recipe(r)
    assert o.source == f"file://{tmp_path / 'data' / 'v.mp4'}?x=1" and o.bundle == "road"  # a shipped name stays a name
    r.write_text('[source]\nuri = "rtsp://$CAM_HOST:554/s?latency=100"\n')
    assert load_recipe(r).source == "rtsp://10.0.0.7:554/s?latency=100"
    r.write_text('[source]\nuri = "videotestsrc num-buffers=${N_FRAMES}"\n')
    with pytest.raises(InputError, match=r"r\.toml: \$\{N_FRAMES\} is not set"):
        load_recipe(r)


def test_edgeseg_data_defaults_to_the_data_folder(tmp_path, monkeypatch):
    from edgeseg.paths import data_root

    monkeypatch.delenv("EDGESEG_DATA", raising=False)
    root = data_root()
    if root is None:
        pytest.skip("no data folder: ${EDGESEG_DATA} has no default here")
    o = load_recipe(REPO / "pipelines" / "file_semantic.toml")
    assert o.source == str(root / "video" / "dashcam_960x540.mp4")
    assert o.bundle == "road"
    assert Path(o.sink).resolve() == (REPO / "out" / "dashcam_semantic.mp4").resolve()


@pytest.mark.data
def test_shipped_file_recipe_points_at_the_real_clip(data_root, monkeypatch):
    monkeypatch.setenv("EDGESEG_DATA", str(data_root))
    monkeypatch.chdir(Path("/"))
    assert Path(load_recipe(REPO / "pipelines" / "file_semantic.toml").source).is_file()


def test_a_recipe_given_by_name_is_found_in_pipelines(tmp_path, monkeypatch, capsys):
    """`edgeseg run file_semantic` said 'pipeline recipe file_semantic does not exist' beside pipelines/."""
    from edgeseg.cli import main
    from edgeseg.stream.recipe import named_recipe

    monkeypatch.chdir(tmp_path)
    assert named_recipe("file_semantic") == REPO / "pipelines" / "file_semantic.toml"
    assert named_recipe("file_semantic.toml") == REPO / "pipelines" / "file_semantic.toml"
    assert load_recipe("camera_semantic").bundle == load_recipe(REPO / "pipelines" / "camera_semantic.toml").bundle
    # found by name in the checkout from another folder: its outputs land in ./out/, not in the checkout's (an audit)
    assert Path(load_recipe("file_semantic").sink) == tmp_path / "out" / "dashcam_semantic.mp4"
    assert Path(load_recipe(REPO / "pipelines" / "file_semantic.toml").sink).resolve() == REPO / "out" / "dashcam_semantic.mp4"
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "file_semantic.toml").write_text('[source]\nuri = "test://ball?frames=2"\n')
    assert named_recipe("file_semantic") == tmp_path / "pipelines" / "file_semantic.toml"  # the user's own first
    assert main(["run", "nosuch_recipe"]) == 2
    err = capsys.readouterr().err
    assert "nosuch_recipe" in err and "file_semantic" in err and "camera_semantic" in err


def test_an_installed_package_finds_its_shipped_recipes_and_writes_outputs_in_the_working_directory(tmp_path, monkeypatch):
    """A device-install audit: `edgeseg run jetson_csi` from an installed wheel said 'does not exist' (pipelines/ is
    not in the wheel). The package ships copies; found by name there, their relative outputs land in ./out/, not in
    site-packages."""
    import edgeseg.paths
    from edgeseg.stream.recipe import SHIPPED

    repo = Path(edgeseg.paths.PACKAGE_DIR).parent / "pipelines"
    assert sorted(p.name for p in SHIPPED.glob("*.toml")) == sorted(p.name for p in repo.glob("*.toml"))
    for p in repo.glob("*.toml"):  # the copies are the repository's recipes
        assert (SHIPPED / p.name).read_text() == p.read_text(), p.name
    monkeypatch.setattr(edgeseg.paths, "PACKAGE_DIR", tmp_path / "site-packages" / "edgeseg")
    monkeypatch.chdir(tmp_path)
    opts = load_recipe("jetson_csi")
    assert opts.source.startswith("csi://") and opts.bundle == "road"
    assert Path(opts.sink) == tmp_path / "out" / "csi_semantic.mp4"


@pytest.mark.gst
def test_the_panoptic_and_vos_recipes_run_as_their_comments_say(tmp_path, monkeypatch):
    """Session 56 (an audit: DESIGN.md's example recipes rtsp_panoptic.toml and jetson_csi_vos.toml did not exist;
    every shipped recipe was semantic). Each runs here with its source (and outputs) overridden, as its comment
    shows: panoptic segments in the JSON lines; the prompted object followed in the VOS one (the Jetson encoder
    replaced by x264 here, said)."""
    import json
    import socket

    import numpy as np

    from edgeseg.cli import main

    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = "synthetic://?seed=4&size=160x96&frames=3"
    out = {k: tmp_path / f"pan.{k}" for k in ("jsonl", "stats.json")}
    assert main(["run", str(REPO / "pipelines" / "rtsp_panoptic.toml"), "--source", src, "--rtsp-port", str(port),
                 "--json-out", str(out["jsonl"]), "--stats-json", str(out["stats.json"]), "--threads", "1"]) == 0
    stats = json.loads(out["stats.json"].read_text())
    assert stats["processed"] == 3 and [s["file"] for s in stats["segments"]] == [str(tmp_path / "pan.00000.jsonl")]
    lines = [json.loads(x) for x in (tmp_path / "pan.00000.jsonl").read_text().splitlines()]  # 10-minute files
    assert len(lines) == 3 and lines[0]["task"] == "panoptic" and all("segments" in r for r in lines)
    # the VOS recipe: a prompt of one object, the size of the frames
    import cv2

    mask = np.zeros((96, 160), np.uint8)
    mask[30:60, 60:100] = 1
    cv2.imwrite(str(tmp_path / "first_mask.png"), mask)
    vos = tmp_path / "vos.jsonl"
    assert main(["run", str(REPO / "pipelines" / "jetson_csi_vos.toml"), "--prompt", "first_mask.png", "--source", src, "--sink",
                 str(tmp_path / "vos.mp4"), "--json-out", str(vos), "--stats-json", str(tmp_path / "vos.stats.json")]) == 0
    recs = [json.loads(x) for x in vos.read_text().splitlines()]
    assert len(recs) == 3 and [o["object_id"] for o in recs[0]["segments"]] == [1] and (tmp_path / "vos.mp4").is_file()
    assert recs[0]["segments"][0]["area"] == 30 * 40  # the prompt frame's mask is the prompt itself
