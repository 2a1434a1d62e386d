"""``edgeseg vos`` and ``edgeseg eval-vos``: frame folders and video files in, id PNGs out, J&F back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.data.io import read_label, write_image, write_label

from test_propagate import H, W, scene  # noqa: E402  (tests/video is on sys.path, as pytest runs it)


@pytest.fixture()
def clip(tmp_path):
    """A DAVIS-style root with one 12-frame sequence (a red disc on a panning texture) and its masks."""
    frames, masks = scene(12, [((220, 40, 40), (50, 60), (3.0, 0.5), 16)], pan=(2.0, 0.0))
    root = tmp_path / "davis"
    for i, (f, m) in enumerate(zip(frames, masks)):
        write_image(root / "JPEGImages" / "480p" / "disc" / f"{i:05d}.png", f)
        write_label(root / "Annotations" / "480p" / "disc" / f"{i:05d}.png", m * 255)  # DAVIS-2016 style 0/255
    return root, frames, masks


def test_vos_on_a_frame_folder_then_eval(clip, tmp_path, capsys):
    root, frames, masks = clip
    out = tmp_path / "preds" / "disc"
    stats = tmp_path / "stats.json"
    rc = main(["vos", str(root / "JPEGImages" / "480p" / "disc"), "--prompt",
               str(root / "Annotations" / "480p" / "disc" / "00000.png"), "--out", str(out), "--stats-json", str(stats)])
    assert rc == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{i:05d}.png" for i in range(12)]  # named after the frames' stems
    first, last = read_label(out / "00000.png"), read_label(out / "00011.png")
    assert first.shape == (H, W) and set(np.unique(first).tolist()) == {0, 1}  # 0/255 prompt -> object 1
    assert np.array_equal(first, masks[0])
    assert ((last == 1) & (masks[11] == 1)).sum() / ((last == 1) | (masks[11] == 1)).sum() > 0.85
    s = json.loads(stats.read_text())
    assert s["frames"] == 12 and s["objects"] == [1] and s["method"] == "propagator" and s["propagation_fps"] > 0
    assert "12 frames" in capsys.readouterr().out

    js = tmp_path / "jf.json"
    assert main(["eval-vos", str(tmp_path / "preds"), "--data", f"davis:{root}", "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "disc" in printed and "J&F-Mean" in printed
    d = json.loads(js.read_text())
    assert d["num_objects"] == 1 and d["summary"]["J&F-Mean"] > 0.85
    assert d["per_object"][0]["frames"] == 10  # first and last left out


def test_vos_on_a_video_file(clip, tmp_path):
    import cv2

    root, frames, masks = clip
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    prompt = tmp_path / "prompt.png"
    write_label(prompt, masks[0] * 3)  # object id 3
    out = tmp_path / "out"
    assert main(["vos", str(video), "--prompt", str(prompt), "--out", str(out), "--no-progress", "--method", "flow-warp"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(12)]  # zero-padded indices
    assert set(np.unique(read_label(out / "00005.png")).tolist()) == {0, 3}


def test_eval_vos_selects_sequences_and_reports_missing_frames(clip, tmp_path, capsys):
    root, frames, masks = clip
    pred = tmp_path / "p" / "disc"
    for i, m in enumerate(masks[:-1]):  # the last frame missing
        write_label(pred / f"{i:05d}.png", m)
    assert main(["eval-vos", str(tmp_path / "p"), "--data", f"davis:{root}", "--sequences", "disc"]) == 2
    assert "no prediction for 1 of 12 frames" in capsys.readouterr().err
    write_label(pred / "00011.png", masks[-1])
    assert main(["eval-vos", str(tmp_path / "p"), "--data", f"davis:{root}", "--sequences", "disc"]) == 0
    assert "100.0" in capsys.readouterr().out  # the ground truth itself scores 100
    assert main(["eval-vos", str(tmp_path / "p"), "--data", f"davis:{root}", "--sequences", "nope"]) == 2
    # `edgeseg run --png-dir` numbers frames with six digits: matched to DAVIS's five by number
    six = tmp_path / "six" / "disc"
    for i, m in enumerate(masks):
        write_label(six / f"{i:06d}.png", m)
    capsys.readouterr()
    assert main(["eval-vos", str(tmp_path / "six"), "--data", f"davis:{root}", "--sequences", "disc"]) == 0
    assert "100.0" in capsys.readouterr().out


def test_eval_vos_reads_0_255_predictions_as_object_1_only_in_single_object_sequences(clip, tmp_path, capsys):
    root, frames, masks = clip
    # single object (DAVIS-2016): 0/255 predictions are object 1, a frame all 255 (the object fills it) too
    pred = tmp_path / "p" / "disc"
    for i, m in enumerate(masks):
        write_label(pred / f"{i:05d}.png", np.full_like(m, 255) if i == 5 else m * 255)
    js = tmp_path / "jf.json"
    assert main(["eval-vos", str(tmp_path / "p"), "--data", f"davis:{root}", "--json", str(js)]) == 0
    d = json.loads(js.read_text())
    want = (masks[5] == 1).sum() / masks[5].size  # J of frame 5: the object's area over the whole frame
    assert d["per_object"][0]["J-Mean"] == pytest.approx((9 + want) / 10, abs=1e-9)
    # two objects: a 0/255 prediction names none of them; before, it was scored as object 1
    two = tmp_path / "two"
    for i, m in enumerate(masks):
        ids = m.copy()
        ids[:4, :4] = 2  # a second object in a corner
        write_label(two / "Annotations" / "480p" / "disc" / f"{i:05d}.png", ids)
        write_image(two / "JPEGImages" / "480p" / "disc" / f"{i:05d}.png", frames[i])
        write_label(tmp_path / "q" / "disc" / f"{i:05d}.png", m * 255 if i == 3 else ids)
    capsys.readouterr()
    assert main(["eval-vos", str(tmp_path / "q"), "--data", f"davis:{two}"]) == 2
    err = capsys.readouterr().err
    assert "00003.png: a 0/255 mask, but sequence disc has 2 objects" in err and "write object ids 1..2" in err


def test_vos_errors_speak(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    prompt = tmp_path / "prompt.png"
    write_label(prompt, np.zeros((8, 8), np.uint8))
    assert main(["vos", str(empty), "--prompt", str(prompt), "--out", str(tmp_path / "o")]) == 2
    assert "no frames in" in capsys.readouterr().err
    frames = tmp_path / "frames"
    write_image(frames / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["vos", str(frames), "--prompt", str(prompt), "--out", str(tmp_path / "o")]) == 2
    assert "no object pixels" in capsys.readouterr().err
    assert main(["vos", str(frames), "--prompt", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_help_has_examples(capsys):
    for cmd in ("vos", "eval-vos"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and f"edgeseg {cmd} " in text
