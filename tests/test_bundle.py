"""Bundle verification: every failure names the file and the problem."""
from __future__ import annotations

import json
import shutil
import time
import os
from pathlib import Path

import numpy as np
import pytest

from edgeseg.bundle import Bundle, ModelFile
from edgeseg.errors import BundleError, InputError
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
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
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


# ---- which model file: the untargeted ONNX graph wins over the torch checkpoint -------------------
def _reorder_models(bundle, first: str) -> Bundle:
    """Rewrite the manifest with ``first`` listed first (the manifest itself is not hashed)."""
    data = json.loads((bundle.root / "manifest.json").read_text())
    data["models"].sort(key=lambda m: m["file"] != first)
    (bundle.root / "manifest.json").write_text(json.dumps(data))
    return Bundle.open(bundle.root)


def test_fp32_model_is_the_onnx_graph_whatever_the_manifest_order(bundle):
    bundle.add_model(ModelFile("model.safetensors", "fp32", "torch"), b"not read here")
    again = _reorder_models(bundle, "model.safetensors")
    assert [m.file for m in again.manifest.models] == ["model.safetensors", "model.onnx"]
    assert again.model_entry("fp32") == ModelFile("model.onnx", "fp32", None, 19)
    assert again.model_path("fp32") == again.root / "model.onnx"
    assert again.model_path("fp32", "torch") == again.root / "model.safetensors"
    from edgeseg.backends import BACKENDS

    assert BACKENDS.get("onnxruntime").select_model(again, "fp32") == again.root / "model.onnx"


def test_without_an_untargeted_entry_the_first_of_that_precision_is_used(bundle, tmp_path):
    bundle.add_model(ModelFile("model.int8.tensorrt.onnx", "int8", "tensorrt", 19), bundle.root / "model.onnx")
    bundle.add_model(ModelFile("model.int8.cpu.onnx", "int8", "cpu", 19), bundle.root / "model.onnx")
    assert bundle.model_entry("int8").target == "tensorrt"
    assert bundle.model_entry("int8", "cpu").file == "model.int8.cpu.onnx"


# ---- manifest types and paths that escape the bundle ---------------------------------------------
def _with(bundle, **fields):
    data = json.loads((bundle.root / "manifest.json").read_text())
    data.update(fields)
    (bundle.root / "manifest.json").write_text(json.dumps(data))
    return bundle.root


@pytest.mark.parametrize("files, match", [
    (["model.onnx"], r"'files' must be an object mapping file name -> sha256, got list"),
    ("model.onnx", r"'files' must be an object .* got str"),
    ({"model.onnx": 7}, r"files entry 'model\.onnx' has a non-string sha256 7"),
])
def test_files_of_the_wrong_type_are_named(bundle, files, match):
    with pytest.raises(BundleError, match=match):
        Bundle.open(_with(bundle, files=files))


@pytest.mark.parametrize("rel", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx", "..\\x.onnx", "C:\\x.onnx",
                                 "\\\\server\\share\\x.onnx", ""])
def test_files_entries_escaping_the_bundle_are_refused(bundle, rel):
    files = dict(json.loads((bundle.root / "manifest.json").read_text())["files"])
    files[rel] = "0" * 64
    with pytest.raises(BundleError, match="files entry") as e:
        Bundle.open(_with(bundle, files=files))
    assert repr(rel) in str(e.value) and "manifest.json" in str(e.value)


@pytest.mark.parametrize("rel", ["../model.onnx", "/tmp/model.onnx"])
def test_models_entries_escaping_the_bundle_are_refused(bundle, rel):
    models = [{"file": rel, "precision": "fp32", "target": None, "opset": 19}]
    with pytest.raises(BundleError, match=r"models entry .* points outside the bundle") as e:
        Bundle.open(_with(bundle, models=models))
    assert repr(rel) in str(e.value)


def test_models_and_classes_of_the_wrong_type(bundle):
    with pytest.raises(BundleError, match="'models' must be a JSON list, got dict"):
        Bundle.open(_with(bundle, models={"file": "model.onnx"}))
    with pytest.raises(BundleError, match="each 'models' entry must be an object"):
        Bundle.open(_with(bundle, models=["model.onnx"]))
    # an audit (session 56): the same for 'outputs' raised AttributeError ('str' object has no attribute 'get')
    with pytest.raises(BundleError, match="manifest.json: invalid content: each 'outputs' entry must be an object") as e:
        Bundle.open(_with(bundle, outputs=["logits"]))
    assert e.value.fix.startswith('e.g. "outputs": [{"name": "logits"')
    with pytest.raises(BundleError, match="'classes' must be a JSON list, got str"):
        Bundle.open(_with(bundle, models=[], classes="c0c1c2c3"))


def test_add_file_refuses_paths_outside_the_bundle(bundle, tmp_path):
    with pytest.raises(BundleError, match=r"'\.\./evil\.json' points outside the bundle"):
        bundle.add_file("../evil.json", b"{}")
    assert not (bundle.root.parent / "evil.json").exists()
    assert bundle.add_file("sub/ok.json", b"{}") == bundle.root / "sub" / "ok.json"


def test_overwrite_replaces_bundles_but_never_another_file(bundle, tmp_path):
    """``--overwrite`` replaces a bundle (a folder or its .zip); a file that is not one is refused and kept."""
    notes = tmp_path / "notes.edgeseg"
    notes.write_text("my notes")
    with pytest.raises(BundleError, match="notes.edgeseg is a file that is not a bundle") as e:
        Bundle.create(notes, bundle.manifest, overwrite=True)
    assert e.value.fix and notes.read_text() == "my notes"
    z = bundle.zip(tmp_path / "b.zip")
    assert Bundle.create(z, bundle.manifest, overwrite=True).root.is_dir()
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(BundleError, match="cannot create the bundle folder") as e:
        Bundle.create(blocker / "sub" / "b.edgeseg", bundle.manifest)
    assert e.value.fix and blocker.read_text() == "x"


def test_a_corrupt_bundle_is_refused_at_once_whatever_killed_writers_left_beside_it(bundle):
    """The review of the retry above: a staged copy named after a live pid (pid 1 in a container, reused after a kill)
    or this process's own writer made every failing open of the bundle wait 5 s. Only another process holding the
    bundle's lock, or a bundle replaced under the reader, is waited for."""
    import time

    from edgeseg._bundle_write import _host

    (bundle.root / "model.onnx").write_bytes(b"not the model")
    (bundle.root.parent / f".{bundle.root.name}.1@{_host()}-abcd.partial").mkdir()  # pid 1: alive
    (bundle.root.parent / f".{bundle.root.name}.lock").touch()  # a killed writer's lock file: held by no one
    t = time.monotonic()
    with pytest.raises(BundleError, match="sha256 mismatch"):
        Bundle.open(bundle.root)
    assert time.monotonic() - t < 1.0


def test_a_bundle_another_process_made_at_the_path_meanwhile_is_kept_without_overwrite(bundle, tmp_path):
    """A cross-process audit: two `edgeseg export --out same.edgeseg` at once both said "wrote"; the later one replaced
    the first's bundle, which a second export run after it would have refused (no --overwrite)."""
    from dataclasses import replace

    target = tmp_path / "same.edgeseg"
    with pytest.raises(BundleError, match="made by another process while this one wrote it") as e:
        with Bundle.writing(target, replace(bundle.manifest, name="second"), overwrite=False) as b:
            b.add_file("model.onnx", (bundle.root / "model.onnx").read_bytes())
            Bundle.create(target, replace(bundle.manifest, name="first"))  # the other process, finishing first
    assert "--overwrite" in e.value.fix
    assert Bundle.open(target, verify=False).manifest.name == "first"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".same")] == []  # no staging folder left


def _corrupt_member(z, name: str) -> None:
    """Flip bytes in the middle of one member's stored data (its local header and the zip directory intact)."""
    import zipfile

    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo(name)
    data = bytearray(z.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + info.compress_size // 3, start + info.compress_size // 3 + 16):
        data[i] ^= 0xFF
    z.write_bytes(bytes(data))


def test_zip_with_a_corrupt_member_is_a_bundle_error_and_leaves_no_partial_extraction(bundle, tmp_path, monkeypatch):
    """Before: zipfile.BadZipFile ('Bad CRC-32 for file ...') reached the user as a traceback, and the
    half-extracted folder was left behind."""
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    z = bundle.zip(tmp_path / "b.zip")
    _corrupt_member(z, "model.onnx")
    with pytest.raises(BundleError, match=r"b\.zip: the \.zip is corrupt") as e:
        Bundle.open(z)
    assert "fix:" in str(e.value)
    cache = tmp_path / "cache" / "bundles"
    assert not cache.exists() or not list(cache.iterdir())  # no half-unpacked folder, no cache entry


def test_truncated_zip_and_manifest_say_so_with_a_fix(bundle, tmp_path):
    z = bundle.zip(tmp_path / "b.zip")
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(BundleError, match=r"not a readable \.zip .*truncated or corrupt") as e:
        Bundle.open(z)
    assert "fix:" in str(e.value)
    text = (bundle.root / "manifest.json").read_text()
    (bundle.root / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON") as e:
        Bundle.open(bundle.root)
    assert "fix: the manifest is truncated" in str(e.value)


def _tree(root):
    """Every file under ``root`` with its bytes (a folder) or the file's bytes."""
    if root.is_file():
        return root.read_bytes()
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError])
def test_overwrite_that_fails_midway_leaves_the_earlier_bundle_whole(bundle, tmp_path, fault):
    """``--overwrite`` used to delete the earlier bundle before writing the new one: a Ctrl-C or a full
    disk in between lost both. Bundles are now made beside ``--out`` and swapped in at the end."""
    for out in (bundle.root, bundle.zip(tmp_path / "b.zip")):
        before = _tree(out)
        with pytest.raises(fault):
            with Bundle.writing(out, bundle.manifest, overwrite=True) as b:
                b.add_model(ModelFile("model.onnx", "fp32"), b"half a model")
                raise fault(28, "No space left on device") if fault is OSError else fault()
        assert _tree(out) == before
        assert Bundle.open(out).manifest == bundle.manifest
        assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []  # no stage left


def test_writing_swaps_in_the_new_bundle_with_the_folder_mode_of_mkdir(bundle, tmp_path):
    onnx_bytes = (bundle.root / "model.onnx").read_bytes()
    fresh = tmp_path / "sub" / "fresh.edgeseg"
    with pytest.raises(RuntimeError):  # a failed first write leaves nothing at all
        with Bundle.writing(fresh, bundle.manifest):
            raise RuntimeError("parity")
    assert not fresh.exists() and not [p for p in fresh.parent.iterdir()]
    with Bundle.writing(fresh, bundle.manifest) as b:
        b.add_model(ModelFile("model.onnx", "fp32"), onnx_bytes)
        assert not fresh.exists() and b.root.parent == fresh.parent and b.root.name.endswith(".partial")
    assert b.root == b.source == fresh and Bundle.open(fresh).model_path() == fresh / "model.onnx"
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o777 & ~umask
    with pytest.raises(BundleError, match="already exists"):
        Bundle.writing(fresh, bundle.manifest).__enter__()
    z = bundle.zip(tmp_path / "b.zip")  # a zipped bundle is replaced by the new one, zipped
    with Bundle.writing(z, bundle.manifest, overwrite=True) as b:
        b.add_model(ModelFile("model.onnx", "fp32"), onnx_bytes)
    assert z.is_file() and [m.file for m in Bundle.open(z).manifest.models] == ["model.onnx"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_import_overwrite_on_a_full_disk_keeps_the_old_bundle_and_says_why(bundle, tmp_path, monkeypatch, capsys):
    """The CLI end to end: the copy of the new model fails with ENOSPC (injected: a real full disk needs
    a mount); the earlier bundle is intact and the error names the reason and the fix, not a traceback."""
    import edgeseg.bundle as bundle_mod
    from edgeseg.cli import main

    out = tmp_path / "m.edgeseg"
    src = bundle.root / "model.onnx"
    cmd = ["import", str(src), "--classes", str(len(bundle.manifest.classes)), "--layout", "NHWC", "--out", str(out)]
    assert main(cmd) == 0
    before = _tree(out)

    def full(*_a, **_k):
        raise OSError(28, "No space left on device", str(out) + "/model.onnx")

    monkeypatch.setattr(bundle_mod, "atomic_copy_file", full)
    rc = main([*cmd, "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "fix: free space on that disk" in err, err
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_manifest_listing_no_models_is_refused_when_opened(bundle):
    data = json.loads((bundle.root / "manifest.json").read_text())
    data["models"] = []
    (bundle.root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="lists no models") as e:
        Bundle.open(bundle.root)
    assert "edgeseg export" in e.value.fix


def _open_in_process(z: str, cache: str, start: float, out, slow_renames: bool = False) -> None:
    os.environ["EDGESEG_CACHE_DIR"] = cache
    import time

    if slow_renames:  # a slow (network) file system: every rename takes 0.2 s, which widens each race's window
        replace = os.replace

        def slow(*args, **kw):
            replace(*args, **kw)
            time.sleep(0.2)

        os.replace = slow
    time.sleep(max(0.0, start - time.time()))
    try:
        b = Bundle.open(z)
        out.put((b.root.name, sorted(b.manifest.files)))
    except BaseException as e:  # reported to the test, not lost in the child
        out.put(repr(e))


def test_processes_opening_one_zip_at_once_all_get_a_whole_bundle(bundle, tmp_path):
    """Two camera services started together with one .zip: each unpacked it and the later one removed the
    earlier one's cache folder (shutil.rmtree) while it was being read, or moved its copy inside it."""
    import multiprocessing as mp
    import time

    z = str(bundle.zip(tmp_path / "b.zip"))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 2.0
    procs = [ctx.Process(target=_open_in_process, args=(z, str(tmp_path / "cache"), start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(isinstance(g, tuple) for g in got), got
    assert len({g for g in map(str, got)}) == 1
    entries = list((tmp_path / "cache" / "bundles").iterdir())
    assert [e.name for e in entries] == [got[0][0]]  # one entry; no half-unpacked or set-aside folder left


_EDITOR = """
import os, sys
from edgeseg.bundle import Bundle
for i in range(int(sys.argv[2])):  # the commit quantize makes: a model file added, the report updated, swapped in
    with Bundle.open(sys.argv[1], verify=False).editing() as e:
        e.add_file("extra.bin", os.urandom(200_000))
        e.update_report("int8", {"cpu": {"i": i}})
"""


def test_a_bundle_another_process_edits_meanwhile_opens_whole_every_time(bundle, tmp_path):
    """A cross-process audit: a loop of Bundle.open beside a loop of edits (quantize's commit) failed 415 of 2,900
    opens ("sha256 mismatch ... corrupt", "missing", "not found", a raw FileNotFoundError): the reader read the old
    manifest, then the swap put the new folder under it. Now such an open is read again."""
    import subprocess
    import sys

    script = tmp_path / "editor.py"
    script.write_text(_EDITOR)
    editor = subprocess.Popen([sys.executable, str(script), str(bundle.root), "60"], stderr=subprocess.PIPE, text=True)
    opened, failed = 0, []
    while editor.poll() is None:
        try:
            Bundle.open(bundle.root)  # verified: every listed file there, with its sha256
            opened += 1
        except Exception as e:  # noqa: BLE001 - counted: none may fail
            failed.append(f"{type(e).__name__}: {e}")
    assert editor.wait(60) == 0, editor.stderr.read()[-2000:]
    assert opened > 20 and not failed, (opened, failed[:3])
    assert Bundle.open(bundle.root).report["int8"]["cpu"]["i"] == 59


def test_a_damaged_cache_entry_is_unpacked_anew(bundle, tmp_path, monkeypatch):
    """The old unpacking copied across file systems when the cache folder was new: a crash mid-copy left an
    entry with a manifest but no model, and every later open of the zip failed on it."""
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    z = bundle.zip(tmp_path / "b.zip")
    first = Bundle.open(z).root
    (first / "model.onnx").unlink()
    again = Bundle.open(z)
    assert again.root == first and again.model_path().is_file()
    (first / "manifest.json").unlink()  # a leftover without its manifest
    assert Bundle.open(z).root == first and sorted(p.name for p in first.parent.iterdir()) == [first.name]


def test_processes_repairing_one_damaged_cache_entry_at_once_all_open_it(bundle, tmp_path, monkeypatch):
    """Before: each process that found the entry damaged swapped its own copy in; one process's swap could
    move away the copy another had just put in and was about to open ('no manifest.json'), or find nothing
    to move (FileNotFoundError). Now one repairs it under a lock and the others use its copy."""
    import multiprocessing as mp
    import time

    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(cache))
    z = bundle.zip(tmp_path / "b.zip")
    entry = Bundle.open(z).root
    ctx = mp.get_context("spawn")
    for _ in range(3):
        (entry / "model.onnx").write_bytes(b"damaged")
        out = ctx.Queue()
        start = time.time() + 2.0
        procs = [ctx.Process(target=_open_in_process, args=(str(z), str(cache), start, out, True)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        assert all(isinstance(g, tuple) for g in got), [g for g in got if not isinstance(g, tuple)]
        assert Bundle.open(z).root == entry  # whole again, in its place
        assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]


@pytest.mark.parametrize("verify", [True, False])
def test_a_cache_entry_swapped_away_while_it_is_read_is_opened_again_under_the_lock(bundle, tmp_path, monkeypatch,
                                                                                   verify):
    """The race the test above caught once in 2,600 tests under load (session 40): a process reading the entry
    without the lock while another swapped its repaired copy in got FileNotFoundError out of Bundle.open."""
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    z = bundle.zip(tmp_path / "b.zip")
    entry = Bundle.open(z).root
    real, calls = Bundle._open_folder, []

    def swapped_once(p, source, verify=True):
        calls.append(p)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", str(p / "manifest.json"))
        return real(p, source, verify)

    monkeypatch.setattr(Bundle, "_open_folder", staticmethod(swapped_once))
    b = Bundle.open(z, verify=verify)
    assert b.root == entry and b.model_path().is_file() and len(calls) >= 2


def test_a_cache_lock_that_cannot_be_taken_is_named_with_the_fix(bundle, tmp_path, monkeypatch, caplog):
    """Review of the unpack lock: it was opened lazily, outside the code that names an unusable cache, so a
    raw OSError escaped (and a zipped --out crashed after its work). A lock file made by another user is
    opened read-only, which flock allows."""
    monkeypatch.setattr("edgeseg._bundle_cache._PRIVATE_COPIES", {})  # this process has unpacked no zip privately yet
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / ".bundles.lock").mkdir(parents=True)  # a lock that cannot be opened as a file
    with caplog.at_level("WARNING", logger="edgeseg"):  # session 46: unpacked for the process, not refused
        opened = Bundle.open(bundle.zip(tmp_path / "b.zip"))
    assert opened.model_path().is_file() and not str(opened.root).startswith(str(tmp_path / "cache"))
    assert "the bundle cache" in caplog.text and "not writable" in caplog.text and "EDGESEG_CACHE_DIR" in caplog.text
    (tmp_path / "cache" / ".bundles.lock").rmdir()
    (tmp_path / "cache" / ".bundles.lock").write_text("")
    os.chmod(tmp_path / "cache" / ".bundles.lock", 0o444)  # another user's
    assert Bundle.open(tmp_path / "b.zip").model_path().is_file()


def test_an_unwritable_bundle_cache_is_named_with_the_fix(bundle, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr("edgeseg._bundle_cache._PRIVATE_COPIES", {})  # this process has unpacked no zip privately yet
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with caplog.at_level("WARNING", logger="edgeseg"):
        opened = Bundle.open(bundle.zip(tmp_path / "b.zip"))
    assert opened.model_path().is_file() and "EDGESEG_CACHE_DIR" in caplog.text


def test_the_cache_folder_comes_from_either_variable(monkeypatch, tmp_path):
    from edgeseg.backends.choice import cache_path
    from edgeseg.paths import cache_dir

    monkeypatch.delenv("EDGESEG_CACHE_DIR", raising=False)
    monkeypatch.setenv("EDGESEG_CACHE", str(tmp_path / "old"))
    assert cache_dir() == tmp_path / "old" and cache_path() == tmp_path / "old" / "choices.json"
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "new"))
    assert cache_dir() == tmp_path / "new"
    monkeypatch.setenv("EDGESEG_CACHE_DIR", "off")  # the choice cache off; bundles still unpack somewhere
    assert cache_path() is None and cache_dir() == tmp_path / "old"
    monkeypatch.delenv("EDGESEG_CACHE_DIR")  # the older name's off too (it chose the folder but not the choice cache)
    monkeypatch.setenv("EDGESEG_CACHE", "off")
    assert cache_path() is None


def test_overwrite_on_a_disk_too_small_for_two_copies_keeps_the_old_bundle(small_disk, capsys):
    """A real full disk (a 9 MB tmpfs; the model is 6.1 MB): the new bundle cannot be made beside the old one,
    so the command fails naming the reason and the old bundle stays whole, with no staging folder left. The
    price of never losing the old bundle: for a moment the disk must hold both."""
    from edgeseg.cli import main
    from edgeseg.paths import shipped_bundle

    disk = small_disk(9)
    src, out = shipped_bundle("shapes") / "model.onnx", disk / "m.edgeseg"
    cmd = ["import", str(src), "--classes", "6", "--out", str(out)]
    assert main(cmd) == 0
    before = _tree(out)
    rc = main([*cmd, "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "fix: free space" in err, err
    assert _tree(out) == before and sorted(p.name for p in disk.iterdir()) == ["m.edgeseg"]


def test_out_named_zip_writes_a_zip_file(bundle, tmp_path, monkeypatch, capsys):
    """Before: `--out model.zip` made a folder named model.zip (copying it to a device as a file failed)."""
    import zipfile

    from edgeseg.cli import main

    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "m.zip"
    cmd = ["import", str(bundle.root / "model.onnx"), "--classes", str(len(bundle.manifest.classes)), "--layout", "NHWC",
           "--out", str(out)]
    assert main(cmd) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.is_file() and zipfile.is_zipfile(out) and "manifest.json" in zipfile.ZipFile(out).namelist()
    first = Bundle.open(out)
    assert first.model_path().is_file() and first.source == out
    out.unlink()
    (out / "x").parent.mkdir()  # a folder named like a zip (what --out m.zip made before) is replaced too
    Bundle.open(bundle.root)  # (nothing else changes)
    with Bundle.writing(out, first.manifest, overwrite=True) as b:
        b.add_model(ModelFile("model.onnx", "fp32"), bundle.root / "model.onnx")
    assert out.is_file() and Bundle.open(out).model_path().is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_zip_output_with_an_unwritable_cache_is_still_written(bundle, tmp_path, monkeypatch):
    """Review finding: the zip was written, then filing its folder in an unwritable cache failed and the command
    reported an error (with --overwrite the old zip already replaced)."""
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    out = tmp_path / "m.zip"
    with Bundle.writing(out, bundle.manifest) as b:
        b.add_model(ModelFile("model.onnx", "fp32"), bundle.root / "model.onnx")
    assert out.is_file() and b.root.is_dir() and (b.root / "model.onnx").is_file()
    shutil.rmtree(b.root.parent)


def test_editing_through_a_symlink_edits_its_target_and_keeps_the_link(bundle, tmp_path):
    """Review finding: the link current.edgeseg -> v3.edgeseg was replaced by an edited copy, v3 left unchanged."""
    link = tmp_path / "current.edgeseg"
    link.symlink_to(bundle.root)
    b = Bundle.open(link)
    with b.editing() as e:
        e.write_json("note.json", {"v": 3})
    assert link.is_symlink() and (bundle.root / "note.json").is_file()
    assert Bundle.open(link).manifest.files["note.json"] == Bundle.open(bundle.root).manifest.files["note.json"]


def test_unpacked_zips_are_readable_by_others_and_a_damaged_one_in_a_read_only_cache_is_named(bundle, small_disk,
                                                                                              monkeypatch):
    import stat
    import subprocess

    disk = small_disk(4)
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(disk / "cache"))
    z = bundle.zip(disk / "b.zip")
    root = Bundle.open(z).root
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(root.stat().st_mode) == 0o777 & ~umask  # was mkdtemp's 0700
    with open(root / "model.onnx", "ab") as f:
        f.write(b"\0")
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0
    with pytest.raises(BundleError, match="sha256 mismatch .*which cannot be replaced: .*(not writable|Read-only)") as e:
        Bundle.open(z)
    assert "EDGESEG_CACHE_DIR" in e.value.fix


def test_a_swap_killed_between_its_renames_is_undone_by_the_next_open_or_write(bundle, tmp_path, caplog):
    """kill -9 of a real process between the two renames of ``_swap_in`` (the old bundle set aside, the new one
    not yet in): the next ``Bundle.open`` puts the old bundle back, byte for byte, and so does the next write
    before it checks ``--overwrite``; a set-aside copy of a live process (a swap under way) is left alone."""
    import subprocess
    import sys

    out = tmp_path / "m.edgeseg"
    shutil.copytree(bundle.root, out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    code = (f"import os, shutil, edgeseg.bundle as b\n"
            f"def killed(stage, root):\n"
            f"    os.replace(root, stage.with_name(stage.name.removesuffix('.partial') + '.old'))\n"
            f"    os.kill(os.getpid(), 9)\n"
            f"b._swap_in = killed\n"
            f"src = b.Bundle.open({str(bundle.root)!r})\n"
            f"with b.Bundle.writing({str(out)!r}, src.manifest, overwrite=True) as new:\n"
            f"    new.add_model(b.ModelFile('model.onnx', 'fp32'), src.root / 'model.onnx')\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == -9
    assert not out.exists() and len(list(tmp_path.glob(".m.edgeseg.*.old"))) == 1
    with caplog.at_level("WARNING", logger="edgeseg.bundle"):
        reopened = Bundle.open(out)
    assert "restored the bundle that an interrupted replacement" in caplog.text
    assert {f.name: f.read_bytes() for f in reopened.root.iterdir()} == before
    assert not list(tmp_path.glob(".m.edgeseg.*.old")) and not list(tmp_path.glob(".m.edgeseg.*.partial"))
    # the same through the next write, without --overwrite: the restored bundle is refused, not silently kept aside
    dead = _dead_pid()
    os.rename(out, tmp_path / f".m.edgeseg.{dead}@{_host_name()}-beef.old")
    (tmp_path / f".m.edgeseg.{dead}@{_host_name()}-beef.partial").mkdir()  # the new bundle, never renamed in
    with pytest.raises(BundleError, match="already exists"):  # refused on entry: the block never runs
        Bundle.writing(out, bundle.manifest).__enter__()
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    # a copy left by a process killed while it removed it, after its swap was done (no staging folder): the
    # user deleted the bundle since; it is not brought back
    os.rename(out, tmp_path / f".m.edgeseg.{dead}@{_host_name()}-f00d.old")
    with pytest.raises(BundleError, match="not found"):
        Bundle.open(out)
    shutil.rmtree(tmp_path / f".m.edgeseg.{dead}@{_host_name()}-f00d.old")
    shutil.copytree(bundle.root, out)
    # a live process's copy (its swap under way): not touched, named in the error
    os.rename(out, tmp_path / f".m.edgeseg.{os.getpid()}@{_host_name()}-cafe.old")
    with pytest.raises(BundleError, match="not found") as e:
        Bundle.open(out)
    assert "try again in a moment" in e.value.fix and not out.exists()


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def _host_name() -> str:
    from edgeseg._bundle_write import _host

    return _host()


def test_what_a_killed_swap_leaves_is_named_or_cleared(bundle, tmp_path):
    """A set-aside copy that is not this machine's to restore (no pid and host in its name) is named by the
    not-found error. Staging folders of killed runs (their process gone, 10 minutes old) are removed by the
    next write of that bundle; a live process's are left alone."""
    out = tmp_path / "m.edgeseg"
    aside = tmp_path / ".m.edgeseg.999999-abcd.old"
    shutil.copytree(bundle.root, aside)
    with pytest.raises(BundleError, match="not found") as e:
        Bundle.open(out)
    assert f"set the old one aside at {aside}: try again in a moment; if no process is replacing it, rename " \
           f"that folder back to {out}" in e.value.fix
    pid, host = _dead_pid(), _host_name()
    stale = tmp_path / f".m.edgeseg.{pid}@{host}-0000.partial"
    live = tmp_path / f".m.edgeseg.{os.getpid()}@{host}-1111.partial"
    young = tmp_path / f".m.edgeseg.{pid}@{host}-2222.partial"
    elsewhere = tmp_path / f".m.edgeseg.{pid}@another-host-3333.partial"  # its pid means nothing here
    for d in (stale, live, young, elsewhere):
        d.mkdir()
    for d in (stale, live, elsewhere):
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    with Bundle.writing(out, bundle.manifest) as b:
        b.add_model(ModelFile("model.onnx", "fp32"), bundle.root / "model.onnx")
    assert not stale.exists() and live.exists() and young.exists() and elsewhere.exists()


def test_a_zip_written_where_the_cache_is_on_another_file_system(bundle, small_disk, monkeypatch, tmp_path):
    """Re-review: renaming the staged folder into a cache on another file system fails (EXDEV); it went to a
    private folder in /tmp each time, never cleaned. Now the zip is unpacked into the cache as on open."""
    disk = small_disk(8)
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    out = disk / "m.zip"
    with Bundle.writing(out, bundle.manifest) as b:
        b.add_model(ModelFile("model.onnx", "fp32"), bundle.root / "model.onnx")
    assert out.is_file() and b.root.parent == tmp_path / "cache" / "bundles" and (b.root / "model.onnx").is_file()
    assert sorted(p.name for p in disk.iterdir()) == ["m.zip"]


def test_editing_a_zip_through_a_symlink_writes_the_zip_it_points_to(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    z = bundle.zip(tmp_path / "v3.zip")
    link = tmp_path / "current.zip"
    link.symlink_to(z)
    with Bundle.open(link).editing() as e:
        e.write_json("note.json", {"v": 3})
    assert link.is_symlink() and "note.json" in Bundle.open(z).manifest.files


def test_an_unwritable_cache_with_no_copy_is_named_once(bundle, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr("edgeseg._bundle_cache._PRIVATE_COPIES", {})  # this process has unpacked no zip privately yet
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with caplog.at_level("WARNING", logger="edgeseg"):  # session 46: unpacked for this process, said once
        assert Bundle.open(bundle.zip(tmp_path / "b.zip")).model_path().is_file()
        assert Bundle.open(tmp_path / "b.zip").model_path().is_file()  # the same private copy again
    assert caplog.text.count("is not writable") == 1 and "cannot be replaced" not in caplog.text


def test_unpacked_zips_unused_for_the_kept_days_are_removed_when_another_is_unpacked(tmp_path, monkeypatch, caplog):
    """A device taking a new model version each week kept every version's unpacked copy for ever. Now an unpacked
    zip not opened for EDGESEG_BUNDLE_CACHE_DAYS (30) goes when another zip is unpacked; opening one marks it used."""
    from handmade_bundles import conv_bundle

    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    zips = [conv_bundle(tmp_path / f"v{i}", seed=i, name=f"v{i}").zip(tmp_path / f"v{i}.zip") for i in range(4)]
    from edgeseg import _bundle_cache

    old, used, kept = (Bundle.open(z).root for z in zips[:3])
    for entry in (old, used):  # as if the processes that opened them had ended (each holds its entries while it runs)
        os.close(_bundle_cache._IN_USE.pop(str(entry)))
    month_ago = time.time() - 31 * 86400
    for entry in (old, used, kept):
        os.utime(entry, (month_ago, month_ago))
    os.utime(kept, (time.time() - 29 * 86400,) * 2)  # inside the 30 days
    assert Bundle.open(zips[1]).root == used  # opened again: used now
    leftovers = [old.parent / ".abc.extract", old.parent / ".def.1234abcd.old", old.parent / ".new.extract"]
    for path in leftovers:
        path.mkdir()
    for path in leftovers[:2]:  # killed processes' unpack and removal, two days ago
        os.utime(path, (time.time() - 2 * 86400,) * 2)
    with caplog.at_level("INFO", logger="edgeseg"):
        newest = Bundle.open(zips[3]).root
    assert not old.exists() and used.is_dir() and kept.is_dir() and newest.is_dir()
    assert [p.exists() for p in leftovers] == [False, False, True]
    assert any(str(old) in r.getMessage() and "30 days" in r.getMessage() for r in caplog.records)
    again = Bundle.open(zips[0])  # its zip opens as before: unpacked anew
    assert again.root == old and (old / "manifest.json").is_file()


def test_an_unpacked_zip_a_running_process_uses_is_never_evicted(tmp_path, monkeypatch):
    """A review: a service running for longer than the kept days had its bundle's folder removed under it when
    another zip was unpacked. A process holds a shared lock on each entry it opened until it ends."""
    import subprocess
    import sys

    from handmade_bundles import conv_bundle

    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    zips = [conv_bundle(tmp_path / f"v{i}", seed=i, name=f"v{i}").zip(tmp_path / f"v{i}.zip") for i in range(3)]
    service = subprocess.Popen([sys.executable, "-c", "import sys, edgeseg; b = edgeseg.Bundle.open(sys.argv[1]); "
                                "print(b.root, flush=True); sys.stdin.read()", str(zips[0])],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        entry = Path(service.stdout.readline().strip())
        month_ago = time.time() - 31 * 86400
        os.utime(entry, (month_ago, month_ago))
        mine = Bundle.open(zips[1]).root  # this process: held too
        os.utime(mine, (month_ago, month_ago))
        Bundle.open(zips[2])  # unpacks: the aged entries are in use
        assert (entry / "manifest.json").is_file() and (mine / "manifest.json").is_file()
    finally:
        service.communicate("", timeout=60)
    from edgeseg._bundle_cache import _evict_unused

    assert _evict_unused(entry.parent, keep=entry.parent / "none") == [entry]  # the service ended: now it goes


def test_the_kept_days_setting(tmp_path, monkeypatch, caplog):
    from edgeseg import _bundle_cache
    from edgeseg._bundle_cache import _evict_unused
    from edgeseg.paths import cache_days
    from edgeseg.environment import report

    monkeypatch.setattr(_bundle_cache, "_WARNED_ONCE", set())

    (tmp_path / "a").mkdir()
    os.utime(tmp_path / "a", (0, 0))
    for off in ("0", "off"):
        monkeypatch.setenv("EDGESEG_BUNDLE_CACHE_DAYS", off)
        assert cache_days() is None and _evict_unused(tmp_path, keep=tmp_path / "b") == []
    monkeypatch.setenv("EDGESEG_BUNDLE_CACHE_DAYS", "2.5")
    assert cache_days() == 2.5
    for bad in ("abc", "-3", "inf", "nan"):
        monkeypatch.setenv("EDGESEG_BUNDLE_CACHE_DAYS", bad)
        with pytest.raises(InputError, match="EDGESEG_BUNDLE_CACHE_DAYS") as e:
            cache_days()
        assert "0 to keep them all" in e.value.fix
    with caplog.at_level("WARNING", logger="edgeseg"):
        assert _evict_unused(tmp_path, keep=tmp_path / "b") == [] and (tmp_path / "a").is_dir()  # kept, said
    assert any("no unpacked bundle is removed" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    r = report()
    assert r["cache"]["bundles"] == {"count": 0, "mb": 0.0, "kept_unused_days": None}
    assert any("EDGESEG_BUNDLE_CACHE_DAYS" in p["what"] for p in r["problems"])


def test_kept_days_zero_in_any_spelling_keeps_everything(monkeypatch):
    from edgeseg.paths import cache_days

    for zero in ("0", "0.0", "00", " 0 "):
        monkeypatch.setenv("EDGESEG_BUNDLE_CACHE_DAYS", zero)
        assert cache_days() is None


def test_default_palettes_draw_no_class_black_in_instance_and_panoptic_bundles():
    """An audit: an imported COCO detector drew person (class 0) black, masks, boxes and labels; a panoptic city model
    its road. Semantic bundles keep VOC's colours (class 0, the background, black)."""
    from edgeseg.bundle import Manifest

    def palette(task):
        return Manifest(name="m", task=task, classes=("person", "car", "bus"), input=InputSpec(size=ImageShape(8, 8)),
                        outputs=()).palette

    assert palette("semantic")[0] == (0, 0, 0)
    for task in ("instance", "panoptic"):
        assert (0, 0, 0) not in palette(task) and len(set(palette(task))) == 3
