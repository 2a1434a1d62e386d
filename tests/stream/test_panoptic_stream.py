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
