"""A panoptic bundle through the stream and ``edgeseg predict``: JSON lines with segments and COCO
RLE masks, COCO-panoptic PNGs, and the overlay. The bundle is ``shapes`` + ``shapes-instance``
fused (``edgeseg fuse``); frames are the generator's, written as a folder of PNGs."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from edgeseg.data import SceneGenerator
    from edgeseg.data.io import write_image
    from edgeseg.export.fuse import fuse_bundles
    from edgeseg.structures import ImageShape

    root = tmp_path_factory.mktemp("panoptic_stream")
    gen = SceneGenerator(ImageShape(120, 160), seed=4)
    frames = root / "frames"
    frames.mkdir()
    for t in range(4):
        write_image(frames / f"f{t:03d}.png", gen.render(8 * t).image)
    return {"bundle": fuse_bundles("shapes", "shapes-instance", root / "fused.edgeseg"), "frames": frames, "root": root}


def test_run_writes_panoptic_jsonl_and_pngs(scene, tmp_path):
    import edgeseg
    from pycocotools import mask as mask_utils

    from edgeseg.cli import main
    from edgeseg.data.coco_panoptic import read_panoptic_png
    from edgeseg.data.io import read_image

    jsonl, pngs = tmp_path / "r.jsonl", tmp_path / "ids"
    assert main(["run", "--bundle", str(scene["bundle"].root), "--source", f"dir://{scene['frames']}", "--backend",
                 "onnxruntime", "--threads", "1", "--json-out", str(jsonl), "--png-dir", str(pngs)]) == 0
    lines = [json.loads(s) for s in jsonl.read_text().splitlines()]
    assert len(lines) == 4 and all(r["task"] == "panoptic" for r in lines)
    files = sorted(pngs.glob("*.png"))
    assert len(files) == 4
    predictor = edgeseg.load(scene["bundle"], backend="onnxruntime", precision="fp32")
    for rec, png, frame in zip(lines, files, sorted(scene["frames"].glob("*.png"))):
        ids = read_panoptic_png(png)
        want = predictor(read_image(frame))
        np.testing.assert_array_equal(ids, want.segment_ids)  # the PNG is the decoded id map, exactly
        assert {s["id"] for s in rec["segments"]} == {s.id for s in want.segments}
        for s in rec["segments"]:
            m = mask_utils.decode(s["rle"]).astype(bool)
            np.testing.assert_array_equal(m, ids == s["id"])
            assert s["area"] == int(m.sum()) and s["class"] == want.class_name(s["class_id"])
        assert any(s["isthing"] for s in rec["segments"]) and any(not s["isthing"] for s in rec["segments"])


def test_predict_panoptic_json_and_pngs(scene, tmp_path, capsys):
    from edgeseg.cli import main
    from edgeseg.data.coco_panoptic import read_panoptic_png
    from edgeseg.data.io import read_image

    frame = sorted(scene["frames"].glob("*.png"))[1]
    out = tmp_path / "preds"
    assert main(["predict", str(scene["bundle"].root), str(frame), "--out", str(out), "--json", str(tmp_path / "p.json"),
                 "--backend", "onnxruntime"]) == 0
    row = json.loads((tmp_path / "p.json").read_text())["images"][0]
    ids = read_panoptic_png(out / "f001_panoptic.png")
    assert ids.shape == (120, 160) and {s["id"] for s in row["segments"]} == set(np.unique(ids)) - {0}
    overlay = read_image(out / "f001_overlay.png")
    assert overlay.shape == (120, 160, 3) and not np.array_equal(overlay, read_image(frame))
    assert "segments" in capsys.readouterr().out
    # panoptic.json beside the PNGs, as the stream's PNG sink writes it (the docs said so; predict wrote none)
    doc = json.loads((out / "panoptic.json").read_text())
    (ann,) = doc["annotations"]
    assert (ann["image_id"], ann["file_name"]) == ("f001", "f001_panoptic.png")
    assert {s["id"] for s in ann["segments_info"]} == set(np.unique(ids)) - {0}
    by_id = {s["id"]: s for s in row["segments"]}
    for s in ann["segments_info"]:
        assert s["category_id"] == by_id[s["id"]]["class_id"] and s["area"] == int((ids == s["id"]).sum())
    assert {c["id"] for c in doc["categories"]} == {s["category_id"] for s in ann["segments_info"]}


def test_png_sink_writes_coco_panoptic_that_scores_like_edgeseg_eval(tmp_path, capsys):
    """Issue 12's COCO-panoptic PNG sink: before, the PNG folder held the RGB-id PNGs only (their categories
    were nowhere). Now panoptic.json beside them (from panoptic.jsonl, one line per frame) is a predictions
    file: scored against the truth it gives the PQ that `edgeseg eval` gives on the same images."""
    import json

    from edgeseg.cli import main
    from edgeseg.data import open_dataset, write_image
    from edgeseg.data.coco_panoptic import CocoPanoptic
    from edgeseg.eval.panoptic_io import PanopticWriter, score_saved

    ds = open_dataset("synthetic-panoptic:4,size=160x120")
    with PanopticWriter(tmp_path / "panoptic_val.json", tmp_path / "panoptic_val", categories=ds.categories) as w:
        for s in ds:
            write_image(tmp_path / "val" / f"{s.name}.png", s.image())
            w.add(s.name, f"{s.name}.png", s.panoptic)  # image ids are the file stems, as Cityscapes' are
    out = tmp_path / "out"
    rc = main(["run", "--bundle", "shapes-panoptic", "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1",
               "--source", str(tmp_path / "val"), "--png-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((out / "panoptic.json").read_text())
    assert [a["file_name"] for a in saved["annotations"]] == [f"{s.name}.png" for s in ds]
    assert len((out / "panoptic.jsonl").read_text().splitlines()) == 4
    assert {c["name"] for c in saved["categories"]} <= set(ds.classes)
    streamed = score_saved(CocoPanoptic(tmp_path / "panoptic_val.json"), out / "panoptic.json", out)
    rc = main(["eval", "shapes-panoptic", "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1",
               "--no-progress", "--data", f"coco-panoptic:{tmp_path / 'panoptic_val.json'}", "--json",
               str(tmp_path / "pq.json")])
    assert rc == 0
    evaluated = json.loads((tmp_path / "pq.json").read_text())
    assert 0.5 < streamed.pq == pytest.approx(evaluated["all"]["pq"], abs=1e-12)


def test_png_sink_panoptic_json_is_never_stale_and_survives_a_cut_line(tmp_path):
    """Review of the COCO-panoptic sink: an earlier run's panoptic.json stayed beside the new PNGs until close
    (after a kill it described other files); a line cut short (a full disk) made close() fail and write
    nothing. Now the old JSON goes at the first frame, and a cut line is left out."""
    import json

    import numpy as np

    from edgeseg.stream.sinks.files import LabelPngSink
    from edgeseg.structures import Frame, PanopticResult, Segment

    out = tmp_path / "out"
    out.mkdir()
    (out / "panoptic.json").write_text('{"annotations": [{"image_id": 99}]}')
    ids = np.zeros((6, 8), np.int32)
    ids[:3] = 1
    ids[4:, 2:5] = 7
    result = PanopticResult(ids, (Segment(1, 0, False), Segment(7, 1, True)), class_names=("sky", "car"))
    sink = LabelPngSink(out)
    sink.open()
    sink.write(Frame(np.zeros((6, 8, 3), np.uint8), 0, 0, "cam"), result)
    assert not (out / "panoptic.json").exists()  # the earlier run's, gone before this run's PNGs land
    sink.write(Frame(np.zeros((6, 8, 3), np.uint8), 1, 1, "cam"), result)
    with open(out / "panoptic.jsonl", "a") as f:
        f.write('{"image_id": 2, "file_na')  # a line cut short
    sink.close()
    saved = json.loads((out / "panoptic.json").read_text())
    assert [a["image_id"] for a in saved["annotations"]] == [0, 1]
    assert saved["annotations"][0]["segments_info"] == [
        {"id": 1, "category_id": 0, "iscrowd": 0, "area": 24, "bbox": [0, 0, 8, 3]},
        {"id": 7, "category_id": 1, "iscrowd": 0, "area": 6, "bbox": [2, 4, 3, 2]}]
    assert saved["categories"] == [{"id": 0, "name": "sky", "isthing": 0}, {"id": 1, "name": "car", "isthing": 1}]


def test_png_sink_into_an_earlier_runs_folder_says_its_other_pngs_stay(tmp_path, caplog):
    """A rerun into an earlier, longer run's --png-dir left that run's other PNGs beside the new ones without a word
    (the new panoptic.json does not list them)."""
    import logging

    import numpy as np

    from edgeseg.stream.sinks.files import LabelPngSink

    out = tmp_path / "out"
    out.mkdir()
    for i in range(3):
        (out / f"{i:06d}.png").write_bytes(b"x")
    (out / "panoptic.json").write_text('{"annotations": []}')
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        LabelPngSink(out).open()
    assert "already holds 3 PNG(s)" in caplog.text and "unlisted in the new panoptic.json" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        LabelPngSink(tmp_path / "fresh").open()
    assert "already holds" not in caplog.text
    assert np.array_equal(sorted(p.name for p in out.iterdir()), ["000000.png", "000001.png", "000002.png",
                                                                  "panoptic.json"])  # nothing removed
