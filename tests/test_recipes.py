"""edgeseg._recipes: one TOML reader and one path rule for stream and calibration recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg._recipes import expand_path, expand_vars, load_toml_recipe
from edgeseg.errors import DataError, InputError


def test_load_toml_recipe_returns_table_and_its_folder(tmp_path, monkeypatch):
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "r.toml").write_text('[source]\nuri = "a.mp4"\nframes = 12\n')
    monkeypatch.chdir(d)
    data, base = load_toml_recipe("r.toml")  # relative name: the folder comes back absolute
    assert data == {"source": {"uri": "a.mp4", "frames": 12}} and base == d.resolve()


def test_load_toml_recipe_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"pipeline recipe .*nope\.toml does not exist"):
        load_toml_recipe(tmp_path / "nope.toml", kind="pipeline recipe")
    bad = tmp_path / "bad.toml"
    bad.write_text("source = \n")
    with pytest.raises(DataError, match=r"calibration recipe .*bad\.toml is not valid TOML"):
        load_toml_recipe(bad, kind="calibration recipe", error=DataError)


def test_expand_path_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPS", "/media/clips")
    monkeypatch.setenv("EDGESEG_DATA", "/data/shared")
    base = tmp_path / "pipelines"
    assert expand_path("a.mp4", base) == str(base / "a.mp4")  # relative to the recipe folder
    assert expand_path("../out/a.mp4", base) == str(base / ".." / "out" / "a.mp4")
    assert expand_path("/abs/a.mp4", base) == "/abs/a.mp4"
    assert expand_path("~/a.mp4", base) == str(Path.home() / "a.mp4")
    assert expand_path("${CLIPS}/a.mp4", base) == "/media/clips/a.mp4"
    assert expand_path("$CLIPS/b.mp4", base) == "/media/clips/b.mp4"
    assert expand_path("${EDGESEG_DATA}/camvid", base) == "/data/shared/camvid"
    assert expand_path("a.mp4", None) == "a.mp4"  # no recipe: the working directory's
    assert expand_vars("rtsp://$CLIPS:554") == "rtsp:///media/clips:554"


def test_unset_variable_names_the_recipe(monkeypatch):
    monkeypatch.delenv("NOPE_VAR", raising=False)
    with pytest.raises(InputError, match=r"r\.toml: \$\{NOPE_VAR\} is not set \(in '\$NOPE_VAR/x'\)"):
        expand_path("$NOPE_VAR/x", "/tmp", where="r.toml")


def test_edgeseg_data_falls_back_to_the_data_folder(monkeypatch):
    from edgeseg.paths import data_root

    monkeypatch.delenv("EDGESEG_DATA", raising=False)
    root = data_root()
    if root is None:
        with pytest.raises(InputError, match="EDGESEG_DATA"):
            expand_vars("${EDGESEG_DATA}/camvid")
    else:
        assert expand_vars("${EDGESEG_DATA}/camvid") == f"{root}/camvid"


def test_stream_and_calibration_recipes_resolve_alike(tmp_path, monkeypatch):
    from edgeseg.quant.calibration import load_recipe as load_calibration
    from edgeseg.stream import load_recipe as load_stream

    d = tmp_path / "recipes"
    d.mkdir()
    (d / "s.toml").write_text('[source]\nuri = "../frames"\n')
    (d / "c.toml").write_text('source = "../frames"\nframes = 3\n')
    (d / "cam.toml").write_text('source = "camvid:${ROOT}/camvid,split=x"\n')
    monkeypatch.setenv("ROOT", "/r")
    monkeypatch.chdir("/")
    want = str(d.resolve() / ".." / "frames")
    assert load_stream(d / "s.toml").source == want
    assert load_calibration(d / "c.toml").resolved_source() == want
    assert load_calibration(d / "cam.toml").resolved_source() == "camvid:/r/camvid,split=x"
