"""edgeseg._io: the one atomic writer (bundle manifest, --json files, checkpoint sidecars, histories)."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgeseg._io import atomic_copy_file, atomic_write_bytes, atomic_write_text, dumps_json, write_json


def test_write_json_converts_numpy_and_paths(tmp_path):
    obj = {"f": np.float32(0.5), "i": np.int64(3), "a": np.arange(3, dtype=np.uint8), "p": Path("/x/y"),
           "nested": [{"m": np.array([[1.5]])}]}
    out = write_json(tmp_path / "deep" / "r.json", obj)
    assert out == tmp_path / "deep" / "r.json"
    assert json.loads(out.read_text()) == {"f": 0.5, "i": 3, "a": [0, 1, 2], "p": "/x/y", "nested": [{"m": [[1.5]]}]}
    assert out.read_text().endswith("}\n") and out.read_text().startswith("{\n  ")
    assert write_json(None, obj) is None and write_json("", obj) is None  # --json not given


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    dst = tmp_path / "stats.json"
    write_json(dst, {"ok": 1})
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(dst, {"bad": object()})
    assert json.loads(dst.read_text()) == {"ok": 1}
    assert sorted(os.listdir(tmp_path)) == ["stats.json"]


def test_bytes_text_and_copy_replace_whole_files(tmp_path):
    dst = tmp_path / "f.bin"
    atomic_write_bytes(dst, b"\x00" * 1000)
    atomic_write_bytes(dst, b"short")
    assert dst.read_bytes() == b"short"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_bytes() == "héllo".encode()
    atomic_copy_file(dst, tmp_path / "sub" / "copy.bin")
    assert (tmp_path / "sub" / "copy.bin").read_bytes() == b"short"
    with pytest.raises(FileNotFoundError):
        atomic_copy_file(tmp_path / "missing", tmp_path / "sub" / "copy.bin")
    assert (tmp_path / "sub" / "copy.bin").read_bytes() == b"short" and os.listdir(tmp_path / "sub") == ["copy.bin"]
    assert dumps_json({"a": (1, 2)}) == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_library_modules_write_json_without_the_cli():
    """A library module must not import the CLI: demo, bundle, checkpoint and trainer use edgeseg._io."""
    import ast

    root = Path(__file__).resolve().parents[1] / "edgeseg"
    for rel in ("demo.py", "bundle.py", "models/checkpoint.py", "train/trainer.py"):
        tree = ast.parse((root / rel).read_text())
        mods = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any("cli" in m.split(".") for m in mods), rel
        assert "_io" in {m.rsplit(".", 1)[-1] for m in mods}, rel
    from edgeseg.cli import _common

    assert _common._write_json is write_json  # the CLI's --json goes through it (its wrapper adds '-': stdout)


def test_pt_checkpoint_sidecar_is_written_atomically(tmp_path):
    torch = pytest.importorskip("torch")
    from edgeseg.models.checkpoint import read_checkpoint_meta, save_checkpoint, sidecar_path

    path = save_checkpoint(torch.nn.Conv2d(3, 2, 1), tmp_path / "best.pt", model_name="test_unet", num_classes=2,
                           extra={"classes": ["a", "b"]}, model_kwargs={"width": 8})
    meta = read_checkpoint_meta(path)
    assert (meta.model_name, meta.num_classes, meta.model_kwargs, meta.extra) == ("test_unet", 2, {"width": 8},
                                                                                  {"classes": ["a", "b"]})
    assert json.loads(sidecar_path(path).read_text())["model_kwargs"] == {"width": 8}
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "best.pt.json"]


def test_files_written_atomically_are_readable_as_open_makes_them(tmp_path, monkeypatch):
    """mkstemp makes 0600 files: every bundle, result JSON and label PNG was unreadable by another user (a
    service account, a container's user). Now: a new file gets 0666 less the umask; a replaced one keeps
    its mode. Read for real by another user when the suite runs as root."""
    import os
    import stat
    import subprocess
    import tempfile

    from edgeseg import _io

    monkeypatch.setattr(_io, "_UMASK", None)
    old = os.umask(0o022)
    try:
        assert _io._umask() == 0o022
    finally:
        os.umask(old)
    new = _io.atomic_write_bytes(tmp_path / "a.json", b"{}")
    copy = _io.atomic_copy_file(new, tmp_path / "b.json")
    assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(copy.stat().st_mode) == 0o644
    os.chmod(new, 0o640)
    _io.atomic_write_text(new, "{}")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    # a file another library wrote through a 0600 temporary file (safetensors' save_file): committed as written here
    fd, tmp = tempfile.mkstemp(dir=tmp_path)
    os.close(fd)
    assert stat.S_IMODE(_io.commit_file(tmp, tmp_path / "w.safetensors").stat().st_mode) == 0o644
    if os.geteuid() == 0:
        shared = Path(tempfile.mkdtemp())
        try:
            os.chmod(shared, 0o755)
            f = _io.atomic_write_bytes(shared / "model.onnx", b"weights")
            read = subprocess.run(["cat", str(f)], preexec_fn=lambda: os.setuid(65534), capture_output=True)
            assert read.returncode == 0 and read.stdout == b"weights", read.stderr
        finally:
            import shutil

            shutil.rmtree(shared)


def test_commit_file_replaces_the_target_or_leaves_it_and_removes_the_temporary(tmp_path):
    from edgeseg._io import commit_file

    dst = tmp_path / "last.pt"
    dst.write_bytes(b"old")
    (tmp_path / "last.pt.tmp").write_bytes(b"new")
    assert commit_file(tmp_path / "last.pt.tmp", dst).read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    (tmp_path / "x.tmp").write_bytes(b"newer")
    with pytest.raises(OSError):  # the target's folder is gone: the rename fails
        commit_file(tmp_path / "x.tmp", tmp_path / "no-such-folder" / "last.pt")
    assert dst.read_bytes() == b"new" and not (tmp_path / "x.tmp").exists()


def test_label_pngs_keep_ids_above_255(tmp_path):
    """An audit: predict's instance PNG (documented uint16) was cast to 8 bits: instance 256 became 0, the background."""
    import cv2

    from edgeseg.data.io import write_label
    from edgeseg.errors import DataError

    ids = np.zeros((3, 5), np.uint16)
    ids[1, 2], ids[2, 4] = 256, 3
    write_label(tmp_path / "i.png", ids)
    back = cv2.imread(str(tmp_path / "i.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, ids)
    write_label(tmp_path / "s.png", np.full((2, 2), 300, np.int64))  # a semantic map of more than 256 classes
    assert cv2.imread(str(tmp_path / "s.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    write_label(tmp_path / "c.png", np.full((2, 2), 7, np.int64))
    assert cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    with pytest.raises(DataError, match="do not fit"):
        write_label(tmp_path / "x.png", np.full((2, 2), -1))


def test_a_checkpoint_that_fills_the_disk_is_named_and_the_previous_one_kept(small_disk):
    """torch.save on a full disk raised ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``: `edgeseg
    train` ended in a traceback at the epoch's end with ``last.pt.tmp`` left filling the disk. Now ``write_with`` names
    the checkpoint and the full disk (the CLI's OSError path: one line and the fix), removes the temporary, and the
    previous checkpoint is the one on disk."""
    import errno
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    from edgeseg._io import write_with

    disk = small_disk(3)
    last = write_with(disk / "last.pt", lambda tmp: torch.save({"w": torch.ones(1000)}, tmp))
    before = last.read_bytes()
    with pytest.raises(OSError) as e:
        write_with(last, lambda tmp: torch.save({"w": torch.zeros(2_000_000)}, tmp))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(last)
    assert sorted(p.name for p in disk.iterdir()) == ["last.pt"] and last.read_bytes() == before
    with pytest.raises(ZeroDivisionError):  # not a full disk: the writer's own error, the temporary removed
        write_with(disk / "b.pt", lambda tmp: (tmp.write_bytes(b"x"), 1 / 0))
    assert sorted(p.name for p in disk.iterdir()) == ["last.pt"]
    filler = disk / "filler"
    with contextlib.suppress(OSError):
        with open(filler, "wb") as f:
            f.write(b"\0" * (4 << 20))
    with pytest.raises(ValueError, match="a bug of the writer"):  # a full disk, but not the write's failure (a review)
        write_with(disk / "c.pt", lambda tmp: (_ for _ in ()).throw(ValueError("a bug of the writer")))
    filler.unlink()
    last.unlink()
    r = subprocess.run([sys.executable, "-m", "edgeseg", "train", "deeplabv3plus_mobilenetv3_small", "--data",
                        "synthetic:16,size=64x48", "--size", "64x48", "--epochs", "1", "--batch", "4", "--out",
                        str(disk / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert f"No space left on device: {disk / 'run' / 'last.pt'}" in r.stderr
    assert not list((disk / "run").glob("*.tmp"))
