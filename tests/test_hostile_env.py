"""Deployments on locked-down machines (session 46's audit): outputs that are devices or pipes, a full disk, a cache
folder without permissions, no home folder, file names a shell makes easy. Each case is made for real (a FIFO, a
tmpfs filled to the brim, a process without root's permission override) where this machine allows it."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeseg._io import atomic_write_bytes, write_json
from edgeseg.errors import StreamError
from edgeseg.structures import Frame, SemanticResult


def _read_fifo(path: Path, out: list) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(open(path, "rb").read()), daemon=True)
    t.start()
    return t


def test_a_fifo_or_device_output_is_written_into_not_replaced(tmp_path):
    """before: --json/--stats-json wrote a temporary and renamed it over the target: a FIFO (or, as root,
    /dev/null itself) became a plain file, and the process reading the FIFO waited for ever."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list = []
    reader = _read_fifo(fifo, got)
    write_json(fifo, {"frames": 3})
    reader.join(10)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and json.loads(got[0]) == {"frames": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary left


def test_the_cli_writes_json_into_a_pipe(tmp_path):
    from edgeseg.cli import main

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list = []
    reader = _read_fifo(fifo, got)
    assert main(["models", "segnet*", "--json", str(fifo)]) == 0
    reader.join(10)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and any(r["name"] == "segnet_vgg16" for r in json.loads(got[0])["models"])


def test_a_long_but_legal_file_name_is_written(tmp_path):
    """before: the temporary's name (".NAME.xxxxxxxx.tmp") of a 250-byte name passed the 255-byte limit."""
    path = tmp_path / ("x" * 245 + ".json")
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1


# ---- a full disk ----------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system up to ``leave`` bytes free."""
    free = shutil.disk_usage(folder).free
    with open(folder / "ballast", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_a_full_disk_names_the_file_being_written_not_a_temporary(full_disk):
    _fill(full_disk, 0)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(full_disk / "report.json", b"x" * 100_000)
    assert e.value.filename == str(full_disk / "report.json")
    assert sorted(p.name for p in full_disk.iterdir()) == ["ballast"]


def _frames(n: int, hw=(120, 160)):
    g = np.random.default_rng(0)
    for i in range(n):
        labels = g.integers(0, 5, hw).astype(np.uint8)  # noise: each frame's RLE is long
        yield Frame(np.zeros((*hw, 3), np.uint8), index=i, pts_ns=i * 40_000_000), \
            SemanticResult(labels=labels, classes=tuple("abcde"))


def test_json_lines_on_a_full_disk_keep_whole_lines_and_name_the_file(full_disk):
    """before: the last line was cut mid-way (not JSON) and the error was 'sink jsonl failed: [Errno 28] No space
    left on device', naming neither the file nor a fix."""
    from edgeseg.stream import JsonLinesSink

    path = full_disk / "r.jsonl"
    sink = JsonLinesSink(path)
    sink.open()
    _fill(full_disk, 60_000)
    with pytest.raises(StreamError) as e:
        for frame, result in _frames(100):
            sink.write(frame, result)
    sink.close()
    assert str(path) in str(e.value) and "free space" in str(e.value)
    lines = path.read_text().splitlines()
    assert len(lines) == sink.lines > 0 and path.read_text().endswith("\n")
    assert [json.loads(line)["index"] for line in lines] == list(range(sink.lines))


def test_png_frames_on_a_full_disk_leave_no_broken_png(full_disk):
    """before: cv2.imwrite left a 4096-byte PNG that does not decode under the frame's name, and the error named the
    next frame's file."""
    import cv2

    from edgeseg.stream import LabelPngSink

    sink = LabelPngSink(full_disk / "pngs")
    sink.open()
    _fill(full_disk, 60_000)
    with pytest.raises(StreamError) as e:
        for frame, result in _frames(100, hw=(240, 320)):
            sink.write(frame, result)
    sink.close()
    assert "free space" in str(e.value)
    written = sorted((full_disk / "pngs").iterdir())
    assert len(written) == sink.written > 0 and all(p.suffix == ".png" for p in written)  # no temporary left
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None for p in written)


def test_a_copy_onto_a_full_disk_is_reported_with_its_destination():
    """shutil names the source first: the CLI said 'No space left on device: /tmp/edgeseg-bundle-.../model.onnx', a
    disk with room."""
    import errno

    from edgeseg.cli import _os_error

    e = OSError(errno.ENOSPC, "No space left on device", "/tmp/stage/model.onnx", None, "/mnt/full/b/model.onnx")
    assert _os_error(e).startswith("No space left on device: /mnt/full/b/model.onnx")


# ---- caches without permissions, no home folder ----------------------------------------------------------------
def test_a_cache_folder_that_cannot_be_searched_is_a_warning(tmp_path):
    """before: `XDG_CACHE_HOME` in a folder of mode 000 ended every auto-backend command with 'Permission denied:
    .../choices.json' (Path.is_file raised). Run without root's permission override (setpriv), as a user would."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a process without the permission override")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "edgeseg").mkdir()
    locked.chmod(0)
    code = ("import edgeseg, numpy as np; p = edgeseg.load('shapes'); "
            "print('labels', p(np.zeros((60, 80, 3), np.uint8)).labels.shape)")
    env = {**os.environ, "XDG_CACHE_HOME": str(locked)}
    env.pop("EDGESEG_CACHE_DIR", None)
    try:
        run = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all",
                              sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    finally:
        locked.chmod(0o755)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "labels (60, 80)" in run.stdout
    assert run.stderr.count("cannot write the choice cache") <= 1  # said once, not once per gate and timing


def test_no_home_folder_and_no_passwd_entry_falls_back_to_a_temporary_cache(monkeypatch, caplog):
    """A container's arbitrary uid without $HOME: Path.home() raised RuntimeError, a traceback from any command that
    chooses a backend. The real lookup (os.path.expanduser -> pwd) is what fails here."""
    import pwd
    import tempfile

    from edgeseg.paths import cache_dir

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("EDGESEG_CACHE_DIR", raising=False)
    monkeypatch.delenv("EDGESEG_CACHE", raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises((RuntimeError, KeyError)):
        Path.home()
    assert cache_dir() == Path(tempfile.gettempdir()) / f"edgeseg-cache-{os.getuid()}"


def test_the_fallback_cache_folder_is_private_or_not_used(tmp_path, monkeypatch, caplog):
    """The no-home fallback's name in the shared temporary folder is predictable: another user could make it first and
    plant choices or unpacked bundles there. It is used only when it is this user's own and no one else can write it."""
    import pwd
    import stat
    import tempfile

    from edgeseg import paths

    for var in ("HOME", "XDG_CACHE_HOME", "EDGESEG_CACHE_DIR", "EDGESEG_CACHE"):
        monkeypatch.delenv(var, raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(paths, "_FOREIGN", {})
    mine = tmp_path / f"edgeseg-cache-{os.getuid()}"
    assert paths.cache_dir() == mine and stat.S_IMODE(mine.stat().st_mode) == 0o700  # made private
    mine.chmod(0o775)  # this user's, as an older edgeseg made it under umask 002: made private again, and used
    assert paths.cache_dir() == mine and stat.S_IMODE(mine.stat().st_mode) == 0o700
    link = tmp_path / "elsewhere"
    mine.rename(link)
    mine.symlink_to(link)  # a link (planted by anyone): not used
    with caplog.at_level("WARNING", logger="edgeseg"):
        other = paths.cache_dir()
    assert other != mine and other.parent == tmp_path and stat.S_IMODE(other.stat().st_mode) == 0o700
    assert "not this user's own private folder" in caplog.text
    assert paths.cache_dir() == other  # one per process (removed when it ends)
    if os.getuid() == 0:  # root can make it another user's: not used either
        monkeypatch.setattr(paths, "_FOREIGN", {})
        mine.unlink()
        mine.mkdir(mode=0o700)
        os.chown(mine, 12345, -1)
        assert paths.cache_dir() != mine


def test_a_zip_bundle_loads_when_the_cache_takes_no_folder(tmp_path, monkeypatch, caplog):
    """before: refused ('set EDGESEG_CACHE_DIR...'), though writing a zip in the same place fell back to a
    temporary folder. Now unpacked for the process, with a warning."""
    import edgeseg
    from edgeseg.paths import shipped_bundle

    zpath = Path(shutil.make_archive(str(tmp_path / "shapes"), "zip", shipped_bundle("shapes")))
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(blocker / "sub"))
    p = edgeseg.load(zpath, backend="onnxruntime", precision="fp32")
    assert p(np.zeros((60, 80, 3), np.uint8)).labels.shape == (60, 80)
    assert "unpacked for this process only" in caplog.text


def test_an_existing_file_whose_name_holds_a_bang_is_a_path(tmp_path):
    """before: 'a ! b.mp4' was taken for a GStreamer launch string ('no element "a"')."""
    from edgeseg.stream.sources.uri import parse_source

    clip = tmp_path / "a ! b.mp4"
    clip.write_bytes(b"")
    assert parse_source(str(clip)).scheme == "file" and parse_source(str(clip)).target == str(clip)
    assert parse_source("videotestsrc ! videoconvert").scheme == "launch"


def test_the_demo_in_a_read_only_working_folder_is_refused_before_the_model_loads(tmp_path):
    """before: refused only when its MP4 sink opened (after the model loaded), with 'e.g. ./out/demo.mp4' as the fix:
    the same read-only place, and a file where demo takes a folder. Without root's permission override (setpriv)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a process without the permission override")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    run = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all",
                          sys.executable, "-m", "edgeseg", "demo"], cwd=ro, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "--out: cannot write out/demo" in run.stderr and "e.g. --out /" in run.stderr
    assert "backend choice" not in run.stderr  # refused before the bundle was loaded


def test_the_system_s_names_for_standard_output_are_written_into(tmp_path):
    """A review: `--json /dev/stdout > out.json` (standard output a regular file) took the rename path: as root it
    would replace the /dev/stdout link itself. The process's own names for an open file are written into."""
    out = tmp_path / "out.json"
    code = ("import sys; from pathlib import Path; from edgeseg._io import _special_file, write_json; "
            "assert _special_file(Path('/dev/stdout')) and _special_file(Path('/dev/fd/1')); "
            "write_json('/dev/fd/1', {'frames': 3})")
    with open(out, "w") as f:
        run = subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.PIPE, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text()) == {"frames": 3}
    assert Path("/dev/stdout").is_symlink()


def test_json_to_standard_output_appended_to_a_log_keeps_the_log(tmp_path):
    """The second review: `edgeseg info shapes --json /dev/stdout >> log` reopened /dev/stdout, which truncated the
    log behind it (its earlier lines lost), and the table printed before came after the JSON. It is written through
    the open file descriptor, after what Python held for it."""
    log = tmp_path / "log.txt"
    log.write_text("earlier line\n")
    with open(log, "a") as f:
        run = subprocess.run([sys.executable, "-m", "edgeseg", "info", "shapes", "--json", "/dev/stdout"], stdout=f,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    text = log.read_text()
    assert text.startswith("earlier line\nbundle   shapes")
    assert json.loads(text[text.index("\n{") + 1:])["name"] == "shapes"


def test_a_long_launch_string_and_a_long_frame_name_are_not_taken_for_paths(tmp_path):
    """A review: `Path(s).exists()` raised ENAMETOOLONG for a launch string with a 255-byte run between slashes; the
    PNG sink's temporary of a 245-byte stem passed the file system's limit (and its clean-up raised again)."""
    import cv2

    from edgeseg.stream import LabelPngSink
    from edgeseg.stream.sources.uri import parse_source

    text = "videotestsrc num-buffers=1 ! " + "identity silent=true ! " * 12 + "videoconvert"
    assert parse_source(text).scheme == "launch"
    sink = LabelPngSink(tmp_path / "pngs")
    sink.open()
    frame = Frame(np.zeros((8, 8, 3), np.uint8), index=0, meta={"stem": "x" * 245})
    sink.write(frame, SemanticResult(labels=np.ones((8, 8), np.uint8), classes=("a", "b")))
    sink.close()
    (png,) = (tmp_path / "pngs").iterdir()
    assert png.name == "x" * 245 + ".png" and cv2.imread(str(png), cv2.IMREAD_UNCHANGED).max() == 1
