"""``edgeseg vos`` / ``edgeseg eval-vos`` on what users give them: their own prompt masks (other sizes,
colour drawings, smoothed edges, JPEG, gaps in the ids, void), frame folders and video files that are
short, broken or mixed, output paths that cannot be written or already hold results, an interrupted
run, and predictions that do not fit the annotations. Every input is made for real (OpenCV writes
the PNGs, JPEGs and AVIs); each case ends in a correct result or an edgeseg error naming the thing and
the fix, never a traceback or a silent wrong number."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.data.io import read_label, write_image, write_label

H, W = 48, 64


def _interactive() -> None:
    """In the child: SIGINT as a terminal delivers it (a test run in the background, e.g. under nohup, starts its
    children with SIGINT ignored, which they would keep)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _frames(n: int, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    """A red disc and a green box on a panning random texture, RGB."""
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur((rng.random((h, w + 2 * n, 3)) * 255).astype(np.uint8), (5, 5), 0)
    out = []
    for i in range(n):
        f = np.ascontiguousarray(bg[:, 2 * i : 2 * i + w])
        cv2.circle(f, (w // 3 + i, h // 2), max(3, h // 6), (220, 40, 40), -1)
        cv2.rectangle(f, (w * 5 // 8, h // 5), (w * 13 // 16, h * 2 // 5), (40, 220, 40), -1)
        out.append(f)
    return out


def _ids(h: int = H, w: int = W) -> np.ndarray:
    """Frame 0's object ids: 1 the disc, 2 the box."""
    import cv2

    ids = np.zeros((h, w), np.uint8)
    cv2.circle(ids, (w // 3, h // 2), max(3, h // 6), 1, -1)
    ids[h // 5 : h * 2 // 5 + 1, w * 5 // 8 : w * 13 // 16 + 1] = 2
    return ids


@pytest.fixture()
def frames_dir(tmp_path) -> Path:
    d = tmp_path / "frames"
    for i, f in enumerate(_frames(6)):
        write_image(d / f"{i:05d}.png", f)
    return d


def _vos(source, prompt, out, *extra) -> int:
    return main(["vos", str(source), "--prompt", str(prompt), "--out", str(out), "--threads", "1", "--no-progress",
                 *map(str, extra)])


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _all_valid(folder: Path, shape=(H, W)) -> bool:
    import cv2

    return all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None
               and cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == shape for p in folder.iterdir())


# -- prompts ------------------------------------------------------------------------------------------------------
def test_prompt_of_another_size_is_rescaled_when_the_aspect_matches_and_refused_otherwise(frames_dir, tmp_path, capsys):
    import cv2

    big = cv2.resize(_ids(), (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
    big[2 * H - 3, 2 * W - 3] = 3  # a one-pixel object that nearest-neighbour downscaling would drop
    write_label(tmp_path / "big.png", big)
    assert _vos(frames_dir, tmp_path / "big.png", tmp_path / "o1", "--method", "copy-first") == 0
    got = read_label(tmp_path / "o1" / "00005.png")
    want = _ids()
    want[H - 2, W - 2] = 3  # kept as one pixel at its centre
    assert np.array_equal(got, want)

    write_label(tmp_path / "square.png", cv2.resize(_ids(), (W, W), interpolation=cv2.INTER_NEAREST))
    assert _vos(frames_dir, tmp_path / "square.png", tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "is 64x64 but the frames are 64x48 (another aspect ratio)" in err and "fix: draw the prompt on a frame" in err


def test_colour_prompt_and_non_contiguous_ids_and_void_give_the_right_ids(frames_dir, tmp_path):
    import cv2

    ids = _ids()
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[ids == 1], rgb[ids == 2] = (255, 0, 0), (0, 0, 255)
    write_image(tmp_path / "colour.png", rgb)  # a drawing: flat colours on black
    assert _vos(frames_dir, tmp_path / "colour.png", tmp_path / "oc", "--method", "copy-first") == 0
    # free colours are numbered by first appearance, row by row: the box (rows from H/5) before the disc
    assert np.array_equal(read_label(tmp_path / "oc" / "00000.png"), np.choose(ids, [0, 2, 1]).astype(np.uint8))

    shade = np.zeros((H, W, 3), np.uint8)
    shade[ids == 1], shade[0:3, 0:3] = (255, 0, 0), (128, 0, 0)  # half the red, but apart from it: an object, not an edge
    write_image(tmp_path / "shade.png", shade)
    assert _vos(frames_dir, tmp_path / "shade.png", tmp_path / "oh", "--method", "copy-first") == 0
    assert set(np.unique(read_label(tmp_path / "oh" / "00000.png")).tolist()) == {0, 1, 2}

    sparse = np.choose(ids, [0, 5, 200]).astype(np.uint8)
    sparse[0:2, 0:2] = 1
    write_label(tmp_path / "sparse.png", sparse)
    assert _vos(frames_dir, tmp_path / "sparse.png", tmp_path / "os", "--method", "copy-first") == 0
    for name in ("00000.png", "00005.png"):
        assert np.array_equal(read_label(tmp_path / "os" / name), sparse)  # ids kept as given

    void = ids.copy()
    ring = (cv2.dilate((ids == 1).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & (ids == 0)
    void[ring] = 255  # DAVIS void band around object 1
    write_label(tmp_path / "void.png", void)
    assert _vos(frames_dir, tmp_path / "void.png", tmp_path / "ov", "--method", "copy-first") == 0
    assert np.array_equal(read_label(tmp_path / "ov" / "00000.png"), ids)  # void is background, never an object


def test_an_inverted_prompt_is_questioned(frames_dir, tmp_path, caplog):
    """White background, black object: one object over 3/4 of the frame, without a word."""
    write_label(tmp_path / "inv.png", np.where(_ids() > 0, 0, 255).astype(np.uint8))
    assert _vos(frames_dir, tmp_path / "inv.png", tmp_path / "o", "--method", "copy-first") == 0
    assert "is the mask inverted (white background, black object)?" in caplog.text
    caplog.clear()
    write_label(tmp_path / "ok.png", _ids())
    assert _vos(frames_dir, tmp_path / "ok.png", tmp_path / "o2", "--method", "copy-first") == 0
    assert "inverted" not in caplog.text


def test_an_object_drawn_in_255_is_said_to_be_void_and_ids_over_255_are_object_ids(frames_dir, tmp_path, capsys,
                                                                                   caplog):
    """An object of id 255 beside others vanished without a word (255 is DAVIS's void); a 16-bit prompt with id
    300 was refused in terms of 'class ids' of a 'label mask'."""
    import cv2

    ids = _ids()
    ids[ids == 2] = 255
    write_label(tmp_path / "v.png", ids)
    assert _vos(frames_dir, tmp_path / "v.png", tmp_path / "o", "--method", "copy-first") == 0
    assert f"{int((ids == 255).sum())} pixels of value 255 read as DAVIS's void" in caplog.text
    wide = _ids().astype(np.uint16) * 150  # ids 150 and 300
    cv2.imwrite(str(tmp_path / "w.png"), wide)
    capsys.readouterr()
    assert _vos(frames_dir, tmp_path / "w.png", tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "object mask" in err and "object ids outside 0..255" in err and "objects are 1..254" in err, err


def test_smoothed_jpeg_corrupt_and_empty_prompts_are_refused_naming_the_file(frames_dir, tmp_path, capsys):
    import cv2

    aa = np.zeros((H, W, 3), np.uint8)
    cv2.circle(aa, (20, 24), 8, (0, 0, 255), -1, cv2.LINE_AA)
    cv2.circle(aa, (46, 15), 6, (0, 255, 0), -1, cv2.LINE_AA)
    cv2.imwrite(str(tmp_path / "aa_colour.png"), aa)  # before: 46 objects, most of them edge pixels
    grey = np.zeros((H, W), np.uint8)
    cv2.circle(grey, (20, 24), 8, 255, -1, cv2.LINE_AA)
    cv2.imwrite(str(tmp_path / "aa_grey.png"), grey)  # before: the object became void, its edge 20 objects
    cv2.imwrite(str(tmp_path / "mask.jpg"), _ids() * 127)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(cv2.imencode(".png", _ids())[1].tobytes()[:60])
    (tmp_path / "zero.png").write_bytes(cv2.imencode(".png", np.zeros((H, W), np.uint8))[1].tobytes())
    cases = {
        "aa_colour.png": ["looks drawn with smoothed (anti-aliased) edges", "#aa0000 between #000000 and #ff0000",
                          "anti-aliasing (smoothing) off"],
        "aa_grey.png": ["looks like a 0/255 mask with smoothed (anti-aliased) edges", "without smoothing"],
        "mask.jpg": ["is a JPEG", "save the mask as a PNG"],
        "empty.png": ["is empty (0 bytes)"],
        "cut.png": ["cannot decode prompt", "give a PNG of object ids"],
        "zero.png": ["has no object pixels", "draw at least one object"],
    }
    for name, words in cases.items():
        out = tmp_path / f"o_{name}"
        assert _vos(frames_dir, tmp_path / name, out) == 2, name
        err = capsys.readouterr().err
        assert name in err and all(w in err for w in words), (name, err)
        assert "Traceback" not in err
        assert not out.exists() or not any(out.iterdir())


# -- sources ------------------------------------------------------------------------------------------------------
def _avi(path: Path, frames: list[np.ndarray]) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (frames[0].shape[1], frames[0].shape[0]))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI")
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    return path


def test_one_frame_folder_and_video_give_the_prompt_and_valid_stats(tmp_path, capsys):
    write_label(tmp_path / "p.png", _ids())
    write_image(tmp_path / "one" / "00000.png", _frames(1)[0])
    stats = tmp_path / "s.json"
    assert _vos(tmp_path / "one", tmp_path / "p.png", tmp_path / "o1", "--stats-json", stats) == 0
    assert _pngs(tmp_path / "o1") == ["00000.png"]
    assert np.array_equal(read_label(tmp_path / "o1" / "00000.png"), _ids())
    text = stats.read_text()
    assert "NaN" not in text and json.loads(text)["propagation_fps"] is None  # before: NaN, which is not JSON
    assert "propagation n/a fps" in capsys.readouterr().out

    video = _avi(tmp_path / "one.avi", _frames(1))
    assert _vos(video, tmp_path / "p.png", tmp_path / "o2") == 0
    assert _pngs(tmp_path / "o2") == ["00000.png"]


def test_missing_empty_corrupt_and_truncated_videos(tmp_path, capsys):
    write_label(tmp_path / "p.png", _ids())
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    for name, words in {"missing.mp4": ["source not found", "give a video file or a folder"],
                        "empty.mp4": ["video file", "is empty (0 bytes)", "re-copy"],
                        "junk.mp4": ["OpenCV cannot open video", "junk.mp4"]}.items():
        assert _vos(tmp_path / name, tmp_path / "p.png", tmp_path / "o") == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words), err

    data = _avi(tmp_path / "six.avi", _frames(6)).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 6 // 10])
    assert _vos(tmp_path / "cut.avi", tmp_path / "p.png", tmp_path / "oc") == 0
    err = capsys.readouterr().err
    written = _pngs(tmp_path / "oc")
    assert 1 <= len(written) < 6 and _all_valid(tmp_path / "oc")
    assert f"decoded {len(written)} of the 6 frames its container announces" in err


def test_frame_folder_order_gaps_duplicates_and_mixed_sizes(tmp_path, capsys, caplog):
    from edgeseg.cli.vos import _frame_files

    write_label(tmp_path / "p.png", _ids())
    frames = _frames(12)
    plain = tmp_path / "plain"
    for i in (1, 2, 10, 11, 9):
        write_image(plain / f"{i}.png", frames[i])
    assert [p.name for p in _frame_files(plain)] == ["1.png", "2.png", "9.png", "10.png", "11.png"]  # not 1, 10, 11, 2

    caplog.clear()
    assert _vos(plain, tmp_path / "p.png", tmp_path / "og") == 0  # 2 -> 9 is a gap: logged, the masks still right
    assert "1 gap(s) in the frame numbers (first: 2 is followed by 9)" in caplog.text
    assert _pngs(tmp_path / "og") == ["1.png", "10.png", "11.png", "2.png", "9.png"]

    mixed = tmp_path / "mixed"
    for i, f in enumerate(_frames(3) + _frames(2, 60, 80)):
        write_image(mixed / f"{i:05d}.png", f)
    assert _vos(mixed, tmp_path / "p.png", tmp_path / "om") == 2
    err = capsys.readouterr().err
    assert "frame 00003 of" in err and "is 80x60, the first frame 64x48" in err and "fix: resize the frames" in err
    assert "stopped after 3 frame(s)" in err
    assert _pngs(tmp_path / "om") == ["00000.png", "00001.png", "00002.png"] and _all_valid(tmp_path / "om")

    (mixed / "00003.png").write_bytes(b"garbage")  # a corrupt frame mid-folder: gone over (its mask the last
    assert _vos(mixed, tmp_path / "p.png", tmp_path / "ob") == 2  # frame's), then the next frame's size stops it
    err = capsys.readouterr().err
    assert "frame 00003 cannot be read" in caplog.text and "stopped after 4 frame(s)" in err
    assert _all_valid(tmp_path / "ob")


def test_duplicate_frame_names_are_refused(tmp_path, capsys):
    write_label(tmp_path / "p.png", _ids())
    f = _frames(2)
    write_image(tmp_path / "d" / "a.png", f[0])
    write_image(tmp_path / "d" / "a.jpg", f[1])
    assert _vos(tmp_path / "d", tmp_path / "p.png", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "frames a.jpg and a.png" in err and "share the name 'a'" in err


# -- outputs ------------------------------------------------------------------------------------------------------
def test_outputs_that_cannot_be_written_are_refused_before_any_work(frames_dir, tmp_path, capsys):
    write_label(tmp_path / "p.png", _ids())
    (tmp_path / "afile").write_text("keep me")
    cases = {
        ("--out", str(tmp_path / "afile")): "afile is a file, not a folder",
        ("--out", str(tmp_path / "afile" / "sub")): "afile is a file, not a folder",
        ("--out", "/proc/edgeseg-vos-test"): "cannot create the folder /proc/edgeseg-vos-test",
    }
    for (opt, path), words in cases.items():
        assert _vos(frames_dir, tmp_path / "p.png", path) == 2
        err = capsys.readouterr().err
        assert f"{opt}: cannot write" in err and words in err and "fix: give --out a folder you can write to" in err, err
    assert (tmp_path / "afile").read_text() == "keep me"

    (tmp_path / "adir").mkdir()
    assert _vos(frames_dir, tmp_path / "p.png", tmp_path / "o", "--stats-json", tmp_path / "adir") == 2
    err = capsys.readouterr().err
    assert "--stats-json: cannot write" in err and "it is a folder" in err  # before: a traceback after all the work
    assert not (tmp_path / "o").exists()


def test_an_earlier_runs_masks_are_kept_unless_overwrite_and_inputs_never_replaced(frames_dir, tmp_path, capsys):
    write_label(tmp_path / "p.png", _ids())
    out = tmp_path / "o"
    assert _vos(frames_dir, tmp_path / "p.png", out) == 0
    before = {n: (out / n).read_bytes() for n in _pngs(out)}
    write_label(tmp_path / "p1.png", (_ids() == 1).astype(np.uint8))
    capsys.readouterr()
    assert _vos(frames_dir, tmp_path / "p1.png", out) == 2
    err = capsys.readouterr().err
    assert "already holds 6 PNG(s)" in err and "add --overwrite" in err
    assert {n: (out / n).read_bytes() for n in _pngs(out)} == before

    write_image(tmp_path / "short" / "00000.png", _frames(1)[0])
    assert _vos(tmp_path / "short", tmp_path / "p1.png", out, "--overwrite") == 0
    assert "5 PNG(s) in" in capsys.readouterr().err  # the earlier run's 00001..00005 are named, not mixed in silently
    assert np.array_equal(read_label(out / "00000.png"), (_ids() == 1).astype(np.uint8))

    inputs = {n: (frames_dir / n).read_bytes() for n in _pngs(frames_dir)}
    assert _vos(frames_dir, tmp_path / "p.png", frames_dir, "--overwrite") == 2
    assert "is the frames' folder" in capsys.readouterr().err
    write_label(out / "prompt.png", _ids())
    assert _vos(frames_dir, out / "prompt.png", out, "--overwrite") == 2
    assert "is the prompt's folder" in capsys.readouterr().err
    assert {n: (frames_dir / n).read_bytes() for n in _pngs(frames_dir)} == inputs


def test_sigint_mid_run_leaves_only_complete_masks(tmp_path):
    n = 2000  # about 8 s of propagation at this size here: the signal must land inside the run on a fast CPU too
    video = _avi(tmp_path / "long.avi", _frames(n, 96, 128))
    prompt = tmp_path / "p.png"
    write_label(prompt, _ids(96, 128))
    out = tmp_path / "o"
    stats = tmp_path / "stats.json"
    proc = subprocess.Popen([sys.executable, "-m", "edgeseg", "vos", str(video), "--prompt", str(prompt), "--out", str(out),
                             "--threads", "1", "--no-progress", "--stats-json", str(stats)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_interactive)
    t0 = time.monotonic()
    while (not out.is_dir() or len(list(out.glob("*.png"))) < 5) and time.monotonic() - t0 < 60 and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal could be sent"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT)" in err and "their masks in" in err and "Traceback" not in err
    names = _pngs(out)
    assert 5 <= len(names) < n
    assert names == [f"{i:05d}.png" for i in range(len(names))]  # no hidden temporary file left, no gap
    assert _all_valid(out, (96, 128))
    s = json.loads(stats.read_text())  # was never written for an interrupted run
    assert s["stopped_by"] == "SIGINT" and s["frames"] == len(names)


def test_unreadable_frames_urls_and_patterns(frames_dir, tmp_path, capsys, caplog):
    """A corrupt image in the middle of a folder stopped vos (exit 2, later frames lost); file:// URLs and
    patterns were 'source not found'; a live source is named."""
    write_label(tmp_path / "p.png", _ids())
    (frames_dir / "00003.png").write_bytes(b"broken")
    assert _vos(frames_dir, tmp_path / "p.png", tmp_path / "o", "--method", "copy-first",
                "--stats-json", tmp_path / "s.json") == 0
    assert _pngs(tmp_path / "o") == [f"{i:05d}.png" for i in range(6)]
    assert np.array_equal(read_label(tmp_path / "o" / "00003.png"), read_label(tmp_path / "o" / "00002.png"))
    assert "frame 00003 cannot be read" in caplog.text
    assert any(e.get("unreadable") for e in json.loads((tmp_path / "s.json").read_text())["events"])
    (frames_dir / "00000.png").write_bytes(b"broken")
    assert _vos(frames_dir, tmp_path / "p.png", tmp_path / "o2") == 2
    assert "the first frame 00000" in capsys.readouterr().err
    write_image(frames_dir / "00000.png", _frames(1)[0])
    assert _vos(f"file://{frames_dir}", tmp_path / "p.png", tmp_path / "o3", "--method", "copy-first") == 0
    assert _pngs(tmp_path / "o3") == [f"{i:05d}.png" for i in range(6)]
    capsys.readouterr()
    assert _vos(f"{frames_dir}/*.png", tmp_path / "p.png", tmp_path / "o4") == 2
    assert "file patterns are not sources" in capsys.readouterr().err
    assert _vos("rtsp://127.0.0.1:9/cam", tmp_path / "p.png", tmp_path / "o5") == 2
    err = capsys.readouterr().err
    assert "not a rtsp source" in err and "edgeseg run --source rtsp://127.0.0.1:9/cam --prompt" in err


# -- eval-vos -----------------------------------------------------------------------------------------------------
def _davis(root: Path, masks: list[np.ndarray], name: str = "seq", names=None) -> Path:
    frames = _frames(len(masks))
    names = names or [f"{i:05d}" for i in range(len(masks))]
    for stem, f, m in zip(names, frames, masks):
        write_image(root / "JPEGImages" / "480p" / name / f"{stem}.jpg", f)
        write_label(root / "Annotations" / "480p" / name / f"{stem}.png", m)
    return root


def _preds(folder: Path, masks: list[np.ndarray]) -> Path:
    for i, m in enumerate(masks):
        write_label(folder / f"{i:05d}.png", m)
    return folder


def _eval(pred, root, *extra) -> int:
    return main(["eval-vos", str(pred), "--data", f"davis:{root}", *map(str, extra)])


def test_eval_vos_refuses_predictions_that_do_not_fit(tmp_path, capsys):
    import cv2

    masks = [_ids() for _ in range(6)]
    root = _davis(tmp_path / "davis", masks)
    _preds(tmp_path / "ok" / "seq", masks)
    js = tmp_path / "jf.json"
    assert _eval(tmp_path / "ok", root, "--json", js) == 0
    assert json.loads(js.read_text())["summary"]["J&F-Mean"] == 1.0
    capsys.readouterr()

    big = list(masks)
    big[2] = cv2.resize(masks[2], (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
    _preds(tmp_path / "big" / "seq", big)
    extra = [m.copy() for m in masks]
    extra[3][0:2, 0:2] = 7
    _preds(tmp_path / "extra" / "seq", extra)
    (tmp_path / "empty").mkdir()
    _preds(tmp_path / "flat", masks)  # `vos --out flat` instead of flat/seq
    cases = {
        "big": ["sequence seq, frame 00002: the prediction is 128x96 but the annotation 64x48", "at its annotation's size"],
        "extra": ["the prediction holds object id 7 but the first annotation has 2 object(s)"],
        "empty": ["no predictions folder for 1 of 1 sequence(s) (seq)", "SEQUENCE/FRAME.png"],
        "flat": ["no predictions folder for 1 of 1 sequence(s) (seq)", "sit in", "--out", "flat/seq"],
    }
    for name, words in cases.items():
        assert _eval(tmp_path / name, root) == 2, name
        err = capsys.readouterr().err
        assert all(w in err for w in words) and "Traceback" not in err, (name, err)

    assert _eval(tmp_path / "ok", root, "--sequences", "nope") == 2
    err = capsys.readouterr().err
    assert "no sequence 'nope'" in err and "known: seq" in err
    assert _eval(tmp_path / "ok", root, "--sequences", ",") == 2
    assert "names no sequence" in capsys.readouterr().err
    assert _eval(tmp_path / "ok", root, "--json", tmp_path / "ok") == 2  # before: a traceback after the scoring
    assert "--json: cannot write" in capsys.readouterr().err
    rgb = tmp_path / "rgb" / "seq"
    _preds(rgb, masks)
    write_image(rgb / "00002.png", np.stack([masks[2] * 100, masks[2] * 50, masks[2]], -1).astype(np.uint8))
    assert _eval(tmp_path / "rgb", root) == 2
    err = capsys.readouterr().err
    assert "object mask" in err and "one object id per pixel" in err and "label mask" not in err, err


def test_eval_vos_with_two_sequences_one_predicted_points_at_sequences(tmp_path, capsys):
    masks = [_ids() for _ in range(4)]
    root = _davis(tmp_path / "davis", masks, "a")
    _davis(root, masks, "b")
    _preds(tmp_path / "p" / "a", masks)
    assert _eval(tmp_path / "p", root) == 2
    assert "(b)" in (err := capsys.readouterr().err) and "--sequences a" in err
    assert _eval(tmp_path / "p", root, "--sequences", "a") == 0


def test_eval_vos_refuses_gaps_in_the_annotated_ids_instead_of_scoring_phantom_objects(tmp_path, capsys):
    # ids 1 and 5: DAVIS's J&F would add objects 2, 3, 4 with J = F = 1 on every frame (before: 87.9 here)
    masks = [np.where(_ids() == 2, 5, _ids()).astype(np.uint8) for _ in range(6)]
    root = _davis(tmp_path / "davis", masks)
    pred = [masks[0]] + [np.zeros_like(m) for m in masks[1:]]
    _preds(tmp_path / "p" / "seq", pred)
    assert _eval(tmp_path / "p", root) == 2
    err = capsys.readouterr().err
    assert "largest object id is 5, but no annotation holds 3 of the ids below it (2, 3, 4)" in err
    assert "number the objects 1..K without gaps" in err

    from edgeseg.eval.vos import evaluate_sequence

    renumbered = [np.where(m == 5, 2, m) for m in masks]  # the same data numbered 1..K: the DAVIS numbers
    got = evaluate_sequence("seq", renumbered, [np.where(m == 5, 2, m) for m in pred])
    assert [(o.object_id, o.jf) for o in got] == [(1, 0.0), (2, 0.0)]


def test_eval_vos_void_band_counts_as_background(tmp_path):
    import cv2

    ids = _ids()
    ring = (cv2.dilate((ids > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & (ids == 0)
    annotated = np.where(ring, 255, ids).astype(np.uint8)
    root = _davis(tmp_path / "davis", [annotated] * 5)
    _preds(tmp_path / "p" / "seq", [ids] * 5)
    js = tmp_path / "jf.json"
    assert _eval(tmp_path / "p", root, "--json", js) == 0
    d = json.loads(js.read_text())
    assert d["num_objects"] == 2 and d["summary"]["J&F-Mean"] == 1.0


def test_eval_vos_refuses_frame_names_whose_order_is_not_the_videos(tmp_path, capsys):
    masks = [_ids() for _ in range(11)]
    root = _davis(tmp_path / "davis", masks, names=[str(i) for i in range(11)])  # 0, 1, 10, 2 ... by name
    _preds(tmp_path / "p" / "seq", masks)
    assert _eval(tmp_path / "p", root) == 2
    err = capsys.readouterr().err
    assert "frame names are not zero-padded" in err and "10.jpg sorts before 2.jpg" in err and "zero-pad" in err


def test_eval_vos_names_a_sequence_whose_first_annotation_is_empty(tmp_path, capsys):
    empty = [np.zeros((H, W), np.uint8)] * 4
    root = _davis(tmp_path / "davis", empty)
    _preds(tmp_path / "p" / "seq", empty)
    assert _eval(tmp_path / "p", root) == 0  # DAVIS scores no object there: n/a, not a number
    cap = capsys.readouterr()
    assert "0 object(s)" in cap.out and "n/a" in cap.out
    assert "sequence seq: its first annotation holds no object" in cap.err


@pytest.mark.parametrize("method", ["propagator", "flow-warp"])
@pytest.mark.parametrize("h, w", [(2, 2), (6, 14)])
def test_frames_smaller_than_the_flow_takes_are_propagated(tmp_path, method, h, w):
    """before: OpenCV's DIS flow refuses frames under 12 pixels a side: `edgeseg vos` on a 2x2 video ended in a cv2
    traceback (and `edgeseg run --prompt` failed every frame after the first, exit 0). A still scene keeps its object."""
    d = tmp_path / "frames"
    rng = np.random.default_rng(0)
    still = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    for i in range(4):
        write_image(d / f"{i:05d}.png", still)
    ids = np.zeros((h, w), np.uint8)
    ids[: max(1, h // 2), : max(1, w // 2)] = 1
    write_label(tmp_path / "p.png", ids)
    assert _vos(d, tmp_path / "p.png", tmp_path / "out", "--method", method) == 0
    masks = [read_label(p) for p in sorted((tmp_path / "out").glob("*.png"))]
    assert len(masks) == 4 and all(m.shape == (h, w) for m in masks)
    assert np.array_equal(masks[0], ids)  # the prompt itself
    if h * w >= 64:  # a still scene keeps its object (a one-pixel object of a 2x2 frame may be called lost)
        assert all((m == 1).sum() > 0 for m in masks)


def test_a_prompt_of_scattered_pixels_is_followed_without_a_crash(tmp_path, capsys):
    """An object of scattered single pixels (a noisy mask): the flow was sampled on a grid over its box that missed
    every pixel, their mean was NaN and `edgeseg vos` ended in 'cannot convert float NaN to integer' with one mask
    written. Now every pixel is sampled when the grid misses them: a mask per frame."""
    h, w = 480, 854  # worked at 240x427: 200 pixels over the frame, the grid every 14 px (1 in 196) misses them
    d = tmp_path / "frames"
    for i, f in enumerate(_frames(5, h, w)):
        write_image(d / f"{i:05d}.png", f)
    ids = np.zeros((h, w), np.uint8)
    ids.flat[np.random.default_rng(1).integers(0, h * w, 200)] = 1
    write_label(tmp_path / "p.png", ids)
    assert _vos(d, tmp_path / "p.png", tmp_path / "out") == 0, capsys.readouterr().err
    assert _pngs(tmp_path / "out") == [f"{i:05d}.png" for i in range(5)] and _all_valid(tmp_path / "out", (h, w))
