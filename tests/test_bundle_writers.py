"""Commands writing one bundle at once (an audit: two `edgeseg quantize` runs on one bundle, for two targets, both
exited 0 and left a manifest listing the old INT8 model beside the new one's file, report and calibration: a sha256
mismatch, and the bundle no longer opened), and `quantize` of a shipped bundle by its name (it rewrote the bundle inside
the installed package for every user of it)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from edgeseg.bundle import Bundle, ModelFile
from edgeseg.errors import BundleError, InputError
from edgeseg.paths import shipped_bundle


@pytest.fixture()
def copy(tmp_path):
    root = tmp_path / "b.edgeseg"
    shutil.copytree(shipped_bundle("shapes"), root)
    return root


def test_an_edit_starts_from_the_bundle_as_it_is_now_and_keeps_the_other_command_s_files(copy):
    first, second = Bundle.open(copy), Bundle.open(copy)  # both read the manifest before either writes
    with first.editing() as e:
        e.write_json("first.json", {"by": "first"})
    with second.editing() as e:
        e.write_json("second.json", {"by": "second"})
    now = Bundle.open(copy)  # verifies every hash
    assert {"first.json", "second.json"} <= set(now.manifest.files)
    assert now.read_json("first.json") == {"by": "first"} and second.manifest.files == now.manifest.files


def test_an_edit_resting_on_a_float_model_replaced_meanwhile_writes_nothing(copy, tmp_path):
    first, second = Bundle.open(copy), Bundle.open(copy)
    other = tmp_path / "other.onnx"
    other.write_bytes((copy / "model.int8.cpu.onnx").read_bytes())  # any other file will do as "a new float model"
    with first.editing() as e:
        e.add_model(ModelFile("model.onnx", "fp32", opset=19), other)
    before = (copy / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="its float model changed while this command ran") as err:
        with second.editing() as e:
            e.write_json("second.json", {})
    assert "run the command again" in err.value.fix
    assert (copy / "manifest.json").read_bytes() == before
    Bundle.open(copy)  # whole


def test_a_second_process_waits_for_the_first_s_edit_and_keeps_it(copy):
    """One process holds its edit open for 3 s; this one, opening the bundle meanwhile, edits it after that edit was
    swapped in, and both files are listed (before: each copied the bundle and swapped its copy in; one was lost)."""
    script = textwrap.dedent(f"""
        import time
        from edgeseg.bundle import Bundle
        b = Bundle.open({str(copy)!r})
        with b.editing() as e:
            print("editing", flush=True)
            time.sleep(3)
            e.write_json("slow.json", {{"by": "slow"}})
    """)
    slow = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert slow.stdout.readline().strip() == "editing"
        fast = Bundle.open(copy)
        t0 = time.monotonic()
        with fast.editing() as e:
            waited = time.monotonic() - t0
            e.write_json("fast.json", {"by": "fast"})
    finally:
        assert slow.wait(timeout=120) == 0
    assert waited > 1.0  # it waited for the lock (a lower bound: a loaded machine only lengthens it)
    now = Bundle.open(copy)
    assert now.read_json("slow.json") == {"by": "slow"} and now.read_json("fast.json") == {"by": "fast"}


def test_quantize_refuses_a_shipped_bundle_by_name_and_says_how_to_copy_it():
    from edgeseg.quant import quantize_bundle

    shipped = shipped_bundle("shapes")
    manifest = (shipped / "manifest.json").read_bytes()
    with pytest.raises(InputError, match="names the bundle shipped with edgeseg") as err:
        quantize_bundle("shapes", calib="synthetic:4", target="cpu")
    assert f"cp -rT {shipped} ./my-shapes.edgeseg" in err.value.fix and "give its path" in err.value.fix
    assert (shipped / "manifest.json").read_bytes() == manifest


def test_the_cli_refuses_it_before_reading_calibration_frames(tmp_path, capsys, monkeypatch):
    from edgeseg.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "shapes", "--calib", "no-such-folder/", "--target", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "names the bundle shipped with edgeseg" in err and "no-such-folder" not in err


def test_nested_writers_in_one_process_do_not_wait_on_themselves(copy, tmp_path):
    """A review: the first lock was a folder's, opened anew by each writer; flock locks two opens against each other
    even in one process, so an edit of one bundle inside the edit of another in the same folder hung for ever."""
    import threading

    other = tmp_path / "c.edgeseg"
    shutil.copytree(copy, other)
    done = threading.Event()

    def nested():
        with Bundle.open(copy).editing() as a:
            with Bundle.open(other).editing() as b:
                b.write_json("b.json", {})
                with Bundle.open(copy).editing() as again:  # the same bundle, re-entered by the same thread
                    again.write_json("inner.json", {})
            a.write_json("a.json", {})
        done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(60)
    assert done.is_set()
    assert "b.json" in Bundle.open(other).manifest.files and "a.json" in Bundle.open(copy).manifest.files
    assert not list(tmp_path.glob(".*.lock"))  # nothing left beside the bundles


def test_changes_made_in_memory_before_the_edit_are_kept(copy):
    """A review: the edit started from the manifest on disk and dropped a palette changed on the object first."""
    from dataclasses import replace

    b = Bundle.open(copy)
    b.manifest = replace(b.manifest, palette=((1, 2, 3),) * len(b.manifest.classes))
    with b.editing() as e:
        e.write_json("x.json", {})
    assert Bundle.open(copy).manifest.palette[0] == (1, 2, 3)
