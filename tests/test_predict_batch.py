"""``edgeseg predict`` as a batch job over many images (a batch audit: no resume, ``--json`` only at the end so a
``kill -9`` lost every result, overlays that could not be turned off, nothing said under nohup): ``--jsonl`` lines
on disk as images are done, ``--resume``, ``--no-overlay``, progress lines for logs and a bounded table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.data.io import read_label, write_image
from handmade_bundles import conv_bundle

RUNTIME = ["--backend", "onnxruntime", "--precision", "fp32", "--threads", "1"]


@pytest.fixture
def job(tmp_path):
    bundle = conv_bundle(tmp_path / "b")
    rng = np.random.default_rng(0)
    images = []
    for i in range(6):
        p = tmp_path / "frames" / f"f{i}.png"
        write_image(p, rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
        images.append(str(p))
    return bundle, images


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_job_resumed_after_a_kill_does_only_the_rest_and_lists_every_image(job, tmp_path, capsys):
    bundle, images = job
    out, lines = tmp_path / "preds", tmp_path / "preds.jsonl"
    first = main(["predict", str(bundle.root), *images[:3], "--out", str(out), "--no-overlay", "--jsonl", str(lines),
                  *RUNTIME])
    assert first == 0 and [e["file"] for e in _lines(lines)] == images[:3]  # one whole line an image, as done
    assert sorted(p.name for p in out.iterdir()) == ["f0_labels.png", "f1_labels.png", "f2_labels.png"]  # no overlays
    with open(lines, "a") as f:
        f.write('{"file": "' + images[3] + '", "he')  # the line a kill cut off: that image is done again
    capsys.readouterr()
    again = main(["predict", str(bundle.root), str(tmp_path / "frames"), "--out", str(out), "--no-overlay",
                  "--jsonl", str(lines), "--json", str(tmp_path / "all.json"), "--resume", *RUNTIME])
    assert again == 0
    said = capsys.readouterr().out
    assert "3 image(s)" in said and "3 done by an earlier run skipped (--resume)" in said
    entries = _lines(lines)  # the cut line gone, the other three appended
    assert [e["file"] for e in entries] == images
    doc = json.loads((tmp_path / "all.json").read_text())
    assert [r["file"] for r in doc["images"]] == images  # --json lists the earlier run's images too
    assert entries[0]["class_pixels"] == doc["images"][0]["class_pixels"] and "top class" not in entries[0]
    assert len(list(out.glob("*_labels.png"))) == 6 and not list(out.glob("*_overlay.png"))


def test_resume_without_jsonl_takes_the_label_pngs_as_done(job, tmp_path, capsys):
    bundle, images = job
    out = tmp_path / "preds"
    assert main(["predict", str(bundle.root), *images, "--out", str(out), *RUNTIME]) == 0
    (out / "f4_labels.png").unlink()  # an image whose overlay was written but not its label PNG: not done
    stamp = (out / "f0_labels.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", str(bundle.root), *images, "--out", str(out), "--resume", *RUNTIME]) == 0
    assert "1 image(s)" in capsys.readouterr().out
    assert read_label(out / "f4_labels.png").shape == (8, 12) and (out / "f0_labels.png").stat().st_mtime_ns == stamp


def test_batch_options_that_cannot_work_are_refused_before_any_work(job, tmp_path, capsys):
    bundle, images = job
    assert main(["predict", str(bundle.root), *images, "--json", str(tmp_path / "p.json"), "--resume"]) == 2
    assert "--resume skips the images an earlier run recorded in --jsonl or wrote into --out" in capsys.readouterr().err
    assert main(["predict", str(bundle.root), *images, "--json", str(tmp_path / "p.json"), "--no-overlay"]) == 2
    assert "there is no --out" in capsys.readouterr().err
    assert main(["predict", str(bundle.root), *images, "--jsonl", images[0]]) == 2
    assert "--jsonl" in capsys.readouterr().err and Path(images[0]).stat().st_size > 100  # the image kept


def test_a_long_job_logs_its_progress_and_prints_a_bounded_table(job, tmp_path, capsys, monkeypatch):
    from edgeseg import _progress
    from edgeseg.cli import _predict_batch as predict

    bundle, images = job
    monkeypatch.setattr(predict, "TABLE_ROWS", 2)
    real = _progress.LogProgress.__init__

    def every_time(self, *a, **k):  # a line per image, as every 30 s on a long job
        real(self, *a, **{**k, "every_s": 0.0})

    monkeypatch.setattr(_progress.LogProgress, "__init__", every_time)
    assert main(["predict", str(bundle.root), *images, "--jsonl", str(tmp_path / "p.jsonl"), *RUNTIME]) == 0
    captured = capsys.readouterr()  # stderr is no terminal here, as under nohup: lines instead of a bar
    assert "edgeseg predict: 3/6 images (50%); " in captured.err and "a second, about " in captured.err
    assert "... and 4 more image(s) (every one in" in captured.out and captured.out.count("f") < 20


def test_eval_leaves_a_bad_sample_out_names_it_and_keeps_the_scores(tmp_path, capsys):
    """A batch audit: one mask of another size at 1,854 of 1,872 pairs ended an 86 s eval with no score at all. Now it
    is left out, named (exit 2), and the others' scores are printed and written, the sample listed under 'skipped';
    the scores equal those of the same folder without it."""
    from edgeseg.data.io import write_label

    rng = np.random.default_rng(1)
    for i in range(5):
        write_image(tmp_path / "img" / f"s{i}.png", rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
        write_label(tmp_path / "lab" / f"s{i}.png", rng.integers(0, 4, (8, 12)).astype(np.uint8))
    bundle = conv_bundle(tmp_path / "b")
    spec = f"folder:{tmp_path / 'img'},{tmp_path / 'lab'},num_classes=4"
    assert main(["eval", str(bundle.root), "--data", spec, "--json", str(tmp_path / "all.json"), *RUNTIME]) == 0
    write_label(tmp_path / "lab" / "s3.png", np.zeros((4, 6), np.uint8))  # a mask of another size
    capsys.readouterr()
    assert main(["eval", str(bundle.root), "--data", spec, "--json", str(tmp_path / "some.json"), *RUNTIME]) == 2
    err = capsys.readouterr().err
    assert "1 sample(s) of folder:" in err and "s3.png is [4, 6] but its image" in err and "(4 scored)" in err
    some = json.loads((tmp_path / "some.json").read_text())
    assert some["num_images"] == 4 and some["skipped"][0]["index"] == 3
    (tmp_path / "img" / "s3.png").unlink()
    (tmp_path / "lab" / "s3.png").unlink()
    assert main(["eval", str(bundle.root), "--data", spec, "--json", str(tmp_path / "four.json"), *RUNTIME]) == 0
    assert json.loads((tmp_path / "four.json").read_text())["miou"] == some["miou"]


def test_a_folders_dead_links_fail_as_images_and_its_subfolders_are_named(job, tmp_path, capsys):
    """A batch audit: a dangling link to an image in a folder was dropped without a word (exit 0), and the images of
    its subfolders too."""
    bundle, images = job
    folder = Path(images[0]).parent
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    write_image(folder / "sub" / "inner.png", np.zeros((8, 12, 3), np.uint8))
    assert main(["predict", str(bundle.root), str(folder), "--json", str(tmp_path / "p.json"), *RUNTIME]) == 2
    err = capsys.readouterr().err
    assert "1 subfolder(s) of" in err and "(sub)" in err and "gone.png" in err
    doc = json.loads((tmp_path / "p.json").read_text())
    assert len(doc["images"]) == 6 and [e["image"] for e in doc["errors"]] == [str(folder / "gone.png")]


def test_a_panoptic_job_resumed_after_a_kill_gets_every_annotation_back(tmp_path, capsys):
    """The review: killed before its end, a panoptic job left no panoptic.json; the resumed run wrote one with only the
    images it did itself. The --jsonl lines keep each image's annotation, and the resumed run writes them all."""
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.structures import ImageShape

    images = []
    for i, f in enumerate(SceneGenerator(ImageShape(120, 160), seed=3).frames(4)):
        write_image(tmp_path / "frames" / f"p{i}.png", f.image)
        images.append(str(tmp_path / "frames" / f"p{i}.png"))
    out, lines = tmp_path / "preds", tmp_path / "p.jsonl"
    assert main(["predict", "shapes-panoptic", *images[:2], "--out", str(out), "--jsonl", str(lines), *RUNTIME]) == 0
    (out / "panoptic.json").unlink()  # as a kill -9 leaves it: written only at the end
    assert main(["predict", "shapes-panoptic", *images, "--out", str(out), "--jsonl", str(lines), "--resume",
                 *RUNTIME]) == 0
    doc = json.loads((out / "panoptic.json").read_text())
    assert sorted(a["image_id"] for a in doc["annotations"]) == ["p0", "p1", "p2", "p3"]
    assert all(a["segments_info"] for a in doc["annotations"]) and doc["categories"]
    (out / "panoptic.json").unlink()  # and resumed from the PNGs alone: the missing annotations are said
    capsys.readouterr()
    assert main(["predict", "shapes-panoptic", *images, "--out", str(out), "--resume", *RUNTIME]) == 0
    assert "4 image(s) taken as done have no annotation" in capsys.readouterr().err


def test_a_job_resumed_from_another_folder_finds_what_it_did(job, tmp_path, monkeypatch, capsys):
    """The review: --jsonl recorded the paths as given, and a resume run from elsewhere (cron against an interactive
    shell) matched none and did everything again. Each line keeps the absolute path too."""
    bundle, images = job
    monkeypatch.chdir(tmp_path / "frames")
    assert main(["predict", str(bundle.root), "f0.png", "f1.png", "--jsonl", str(tmp_path / "p.jsonl"), *RUNTIME]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", str(bundle.root), *images, "--jsonl", str(tmp_path / "p.jsonl"), "--resume", *RUNTIME]) == 0
    assert "2 done by an earlier run skipped" in capsys.readouterr().out
    assert len(_lines(tmp_path / "p.jsonl")) == 6


def test_jsonl_to_standard_output_is_the_lines_alone(job, tmp_path, capsys):
    bundle, images = job
    assert main(["predict", str(bundle.root), *images[:3], "--jsonl", "-", *RUNTIME]) == 0
    out = capsys.readouterr().out
    assert [json.loads(line)["file"] for line in out.splitlines()] == images[:3]  # no table among them
    assert main(["predict", str(bundle.root), *images[:3], "--jsonl", "-", "--json", "-"]) == 2
    assert "both write to standard output" in capsys.readouterr().err


def test_eval_leaves_a_corrupt_image_out_too(tmp_path, capsys):
    """The review: only masks that did not fit were left out; a corrupt or empty image still ended the run."""
    from edgeseg.data.io import write_label

    rng = np.random.default_rng(2)
    for i in range(4):
        write_image(tmp_path / "img" / f"s{i}.png", rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
        write_label(tmp_path / "lab" / f"s{i}.png", rng.integers(0, 4, (8, 12)).astype(np.uint8))
    (tmp_path / "img" / "s1.png").write_bytes(b"")
    bundle = conv_bundle(tmp_path / "b")
    spec = f"folder:{tmp_path / 'img'},{tmp_path / 'lab'},num_classes=4"
    assert main(["eval", str(bundle.root), "--data", spec, "--json", str(tmp_path / "e.json"), *RUNTIME]) == 2
    assert "s1.png is empty (0 bytes)" in capsys.readouterr().err
    assert json.loads((tmp_path / "e.json").read_text())["num_images"] == 3


def test_a_second_job_writing_the_same_jsonl_is_refused(job, tmp_path, capsys):
    """--jsonl is the stream's JSON-lines file: claimed while written, so two jobs cannot interleave their lines."""
    import fcntl
    import os

    bundle, images = job
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"file": "x"}\n')
    fd = os.open(lines, os.O_RDWR)  # another job writing it (another open file: flock locks it against this one)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert main(["predict", str(bundle.root), *images, "--jsonl", str(lines), "--resume", *RUNTIME]) == 2
        assert f"{lines}: another run is writing it now" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert lines.read_text() == '{"file": "x"}\n'  # its lines untouched


def test_recursive_reads_the_subfolders_and_out_mirrors_the_tree(job, tmp_path, capsys):
    """A batch audit: camera folders of one name layout (cam1/000.jpg, cam2/000.jpg) could be predicted only job by
    job into separate --out folders; one --out overwrote each other's PNGs. --recursive mirrors the tree."""
    bundle, images = job
    tree = tmp_path / "tree"
    rng = np.random.default_rng(5)
    for rel in ("top.png", "a/x.png", "b/x.png", "b/deep/y.png", ".hidden/z.png"):
        write_image(tree / rel, rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    (tree / "b" / "deep" / "up").symlink_to(tree)  # a link back up the tree: walked once
    out, lines = tmp_path / "preds", tmp_path / "p.jsonl"
    assert main(["predict", str(bundle.root), str(tree / "a"), str(tree / "b"), "--out", str(out), *RUNTIME]) == 2
    err = capsys.readouterr().err
    assert "same name would write the same PNGs" in err and "--recursive" in err and not out.exists()
    assert main(["predict", str(bundle.root), str(tree), "--json", str(tmp_path / "flat.json"), *RUNTIME]) == 0
    assert "--recursive reads its subfolders too" in capsys.readouterr().err
    assert main(["predict", str(bundle.root), str(tree), "-r", "--out", str(out), "--jsonl", str(lines), *RUNTIME]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_labels.png"))
    assert written == ["a/x_labels.png", "b/deep/y_labels.png", "b/x_labels.png", "top_labels.png"]
    assert [Path(e["file"]).relative_to(tree).as_posix() for e in _lines(lines)] == \
        ["top.png", "a/x.png", "b/x.png", "b/deep/y.png"]  # each folder's images, then its subfolders'
    alone = tmp_path / "alone"
    assert main(["predict", str(bundle.root), str(tree / "b" / "x.png"), "--out", str(alone), *RUNTIME]) == 0
    np.testing.assert_array_equal(read_label(out / "b" / "x_labels.png"), read_label(alone / "x_labels.png"))
    (out / "b" / "x_labels.png").unlink()  # resumed from the mirrored PNGs: only that image again
    stamp = (out / "a" / "x_labels.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", str(bundle.root), str(tree), "--recursive", "--out", str(out), "--resume", *RUNTIME]) == 0
    assert "1 image(s)" in capsys.readouterr().out
    assert (out / "b" / "x_labels.png").is_file() and (out / "a" / "x_labels.png").stat().st_mtime_ns == stamp


def test_a_recursive_panoptic_job_names_each_image_by_its_place_in_the_tree(tmp_path):
    """panoptic.json's image ids were the stems: two cameras' 000.png would be one image. With --recursive each is its
    path in the tree and file_name is relative to --out, where panopticapi joins it."""
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.structures import ImageShape

    frames = list(SceneGenerator(ImageShape(120, 160), seed=4).frames(2))
    for cam, f in zip(("cam1", "cam2"), frames):
        write_image(tmp_path / "tree" / cam / "000.png", f.image)
    out = tmp_path / "preds"
    assert main(["predict", "shapes-panoptic", str(tmp_path / "tree"), "-r", "--out", str(out), *RUNTIME]) == 0
    doc = json.loads((out / "panoptic.json").read_text())
    assert [(a["image_id"], a["file_name"]) for a in doc["annotations"]] == \
        [("cam1/000", "cam1/000_panoptic.png"), ("cam2/000", "cam2/000_panoptic.png")]
    assert all((out / a["file_name"]).is_file() for a in doc["annotations"])


def test_a_resumed_job_given_out_for_the_first_time_does_the_images_without_pngs(job, tmp_path, capsys):
    """An option audit: a job resumed with --out added wrote the PNGs of the new images only, while --json listed
    them all. Images --jsonl records as done but without a label PNG in --out are done again, said."""
    bundle, images = job
    lines, out = tmp_path / "p.jsonl", tmp_path / "preds"
    assert main(["predict", str(bundle.root), *images[:4], "--jsonl", str(lines), *RUNTIME]) == 0
    capsys.readouterr()
    assert main(["predict", str(bundle.root), *images, "--jsonl", str(lines), "--resume", "--out", str(out),
                 "--no-overlay", "--json", str(tmp_path / "all.json"), *RUNTIME]) == 0
    said = capsys.readouterr()
    assert "4 image(s)" in said.err and "have no PNGs in" in said.err and "6 image(s)" in said.out
    assert sorted(p.name for p in out.iterdir()) == [f"f{i}_labels.png" for i in range(6)]
    assert [r["file"] for r in json.loads((tmp_path / "all.json").read_text())["images"]] == images


def test_classes_of_a_semantic_bundle_without_overlays_is_said_to_draw_nothing(job, tmp_path, capsys):
    bundle, images = job
    assert main(["predict", str(bundle.root), images[0], "--out", str(tmp_path / "o"), "--no-overlay", "--classes",
                 "1", *RUNTIME]) == 0
    assert "with --no-overlay there is none" in capsys.readouterr().err


def test_an_image_given_twice_is_done_once(job, tmp_path, capsys):
    bundle, images = job
    assert main(["predict", str(bundle.root), images[2], str(Path(images[0]).parent), "--out", str(tmp_path / "o"),
                 "--jsonl", str(tmp_path / "p.jsonl"), *RUNTIME]) == 0
    assert "1 image(s) given more than once" in capsys.readouterr().err
    assert [e["file"] for e in _lines(tmp_path / "p.jsonl")] == [images[2], images[0], images[1], *images[3:]]


def test_json_is_written_from_a_spool_and_equals_the_jsonl_lines(tmp_path, capsys):
    """A batch audit: --json held every image's entry (an instance image's RLE masks: ~8.5 KB) in memory to the end.
    The entries are spooled beside --json and streamed into it: the same entries as --jsonl, in order, with the
    failures; standard output gets the same document."""
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.structures import ImageShape

    images = []
    for i, f in enumerate(SceneGenerator(ImageShape(96, 128), seed=7).frames(5)):
        write_image(tmp_path / "frames" / f"s{i}.png", f.image)
        images.append(str(tmp_path / "frames" / f"s{i}.png"))
    (tmp_path / "frames" / "bad.png").write_bytes(b"not a png")
    out_json, lines = tmp_path / "out" / "all.json", tmp_path / "all.jsonl"
    assert main(["predict", "shapes-instance", str(tmp_path / "frames"), "--json", str(out_json), "--jsonl", str(lines),
                 *RUNTIME]) == 2
    doc = json.loads(out_json.read_text())
    entries = [{k: v for k, v in e.items() if k != "path"} for e in _lines(lines) if "error" not in e]
    assert doc["images"] == entries and [r["file"] for r in doc["images"]] == images
    assert sum(len(r["instances"]) for r in doc["images"]) > 5 and doc["task"] == "instance"
    assert [e["image"] for e in doc["errors"]] == [str(tmp_path / "frames" / "bad.png")]
    assert sorted(p.name for p in out_json.parent.iterdir()) == ["all.json"]  # the spool left nothing
    capsys.readouterr()
    assert main(["predict", "shapes-instance", *images[:2], "--json", "-", *RUNTIME]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == entries[:2]


def test_a_full_disk_under_json_lets_the_job_finish_and_names_the_file(tmp_path, small_disk, capsys):
    """The review: with the spool beside --json on a disk that filled up, the job stopped at the first entry the spool
    could not take ("No space left on device", no file named). Entries are then kept in memory, every image is done
    (the --jsonl lines and PNGs elsewhere), and writing --json at the end names it, as before the spool."""
    import contextlib
    import os

    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.structures import ImageShape

    images = []
    for i, f in enumerate(SceneGenerator(ImageShape(96, 128), seed=8).frames(12)):
        write_image(tmp_path / "frames" / f"s{i:02d}.png", f.image)
        images.append(str(tmp_path / "frames" / f"s{i:02d}.png"))
    disk = small_disk(1)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # the disk filled, then about 8 KB left: a few entries' worth
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.ftruncate(fd, os.fstat(fd).st_size - 8192)
    finally:
        os.close(fd)
    lines = tmp_path / "p.jsonl"
    code = main(["predict", "shapes-instance", *images, "--json", str(disk / "all.json"), "--jsonl", str(lines),
                 "--out", str(tmp_path / "o"), "--score-threshold", "0.01", *RUNTIME])
    err = capsys.readouterr().err
    assert code != 0 and f"{disk / 'all.json'}" in err and "No space left" in err, err
    assert len(_lines(lines)) == 12 and len(list((tmp_path / "o").glob("*_instances.png"))) == 12


def test_json_into_a_pipe_whose_folder_takes_no_file(job, tmp_path):
    """The review: `--json /proc/self/fd/N` (a pipe; /dev/stdout for a user who cannot write /dev) put the spool in
    that folder and failed before any image. The spool goes to the temporary folder; the pipe gets the document."""
    import os
    import threading

    bundle, images = job
    r, w = os.pipe()
    got = []
    reader = threading.Thread(target=lambda: got.append(os.fdopen(r, "rb").read()))
    reader.start()
    try:
        assert main(["predict", str(bundle.root), *images[:3], "--json", f"/proc/self/fd/{w}", *RUNTIME]) == 0
    finally:
        os.close(w)
        reader.join(30)
    assert [e["file"] for e in json.loads(got[0])["images"]] == images[:3]


def test_a_recursive_job_with_out_inside_its_folder_reruns_and_names_stay_first(job, tmp_path, capsys):
    """The review: `predict imgs -r --out imgs/preds --resume` was refused on its second run (the walk took preds/'s
    PNGs as images); `predict imgs imgs/a -r` named imgs/a/x.png by the later walk ("x"), a false clash with
    imgs/x.png."""
    bundle, _ = job
    tree = tmp_path / "imgs"
    rng = np.random.default_rng(6)
    for rel in ("x.png", "a/x.png"):
        write_image(tree / rel, rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    for _ in range(2):
        assert main(["predict", str(bundle.root), str(tree), "-r", "--out", str(tree / "preds"), "--resume",
                     *RUNTIME]) == 0, capsys.readouterr().err
    assert sorted(p.relative_to(tree / "preds").as_posix() for p in (tree / "preds").rglob("*_labels.png")) == \
        ["a/x_labels.png", "x_labels.png"]
    assert main(["predict", str(bundle.root), str(tree), str(tree / "a"), "-r", "--out", str(tmp_path / "o2"),
                 *RUNTIME]) == 0
    assert "given more than once" in capsys.readouterr().err
    assert (tmp_path / "o2" / "a" / "x_labels.png").is_file() and (tmp_path / "o2" / "x_labels.png").is_file()


def test_images_are_read_ahead_in_order_with_their_errors(tmp_path):
    """predict reads the next image on a thread while it segments one (a performance audit: a PNG's decode beside
    the inference); the order, the unreadable images' errors and any other error are as a plain loop gives them."""
    import threading

    from edgeseg.cli._predict_batch import read_ahead
    from edgeseg.errors import InputError

    reads, threads = [], set()

    def read(p):
        reads.append(p)
        threads.add(threading.current_thread().name)
        if p == "bad":
            raise InputError("cannot decode image bad")
        return p.upper()

    got = [(p, str(x) if isinstance(x, InputError) else x) for p, x in read_ahead(["a", "bad", "c"], read)]
    assert got == [("a", "A"), ("bad", "cannot decode image bad"), ("c", "C")] and reads == ["a", "bad", "c"]
    assert all(name.startswith("edgeseg-read") for name in threads) and list(read_ahead([], read)) == []
    with pytest.raises(MemoryError):
        list(read_ahead(["a", "b"], lambda p: (_ for _ in ()).throw(MemoryError())))


def test_a_large_image_is_read_only_after_the_one_before_is_done(tmp_path):
    """The session 54 review: `predict` reads the next image on a thread while it segments one; with the memory check
    asking for the least an image takes, two 12000x12000 photos in a 1,500 MiB container were both let through (the
    second's check ran beside the first's work) and the kernel killed the job. A file whose header says it is large
    enough to be checked is read only once the caller is done with the image before; small ones are still read ahead."""
    import struct
    import zlib

    from edgeseg.cli._predict_batch import checked, read_ahead

    def png(name: str, w: int, h: int) -> Path:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        p = tmp_path / name
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                      + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
        return p

    files = [png("a.png", 64, 48), png("b.png", 64, 48), png("big.png", 5000, 4000), png("c.png", 64, 48)]
    assert [checked(p) for p in files] == [False, False, True, False] and not checked(tmp_path / "gone.png")
    # the second review: a JPEG whose ICC / XMP segments put its size past the first 64 KiB read as not large
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4000, 4100)).save(buf, "JPEG", quality=10)
    jpeg = buf.getvalue()
    app2 = b"".join(b"\xff\xe2" + struct.pack(">H", n + 2) + bytes(n) for n in (60000, 30000))
    (tmp_path / "icc.jpg").write_bytes(jpeg[:2] + app2 + jpeg[2:])
    assert checked(tmp_path / "icc.jpg")
    import threading

    events, seen = [], {p.stem: threading.Event() for p in files}

    def read(path):
        events.append(f"read {path.stem}")
        seen[path.stem].set()
        return path.stem

    for path, image in read_ahead(files, read):
        if image == "a":
            assert seen["b"].wait(10)  # a small next image is read while the caller works on this one
        if image == "b":
            assert not seen["big"].wait(0.5)  # the large one is not, whatever the wait
        events.append(f"done {image}")
    assert events.index("read big") > events.index("done b")
    assert [e for e in events if e.startswith("done")] == ["done a", "done b", "done big", "done c"]
