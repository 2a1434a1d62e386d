"""Instance bundles through ``edgeseg predict`` (JSON with COCO RLE masks, instance PNGs, the score
threshold) with a hand-made dense-layout bundle whose masks are known (the stream:
``tests/stream/test_instance_stream.py``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from handmade_bundles import red_instance_bundle, red_square_image



def test_predict_json_rle_and_pngs(tmp_path):
    from pycocotools import mask as coco_mask

    from edgeseg.cli import main
    from edgeseg.data.io import read_label, write_image

    bundle = red_instance_bundle(tmp_path)
    img = red_square_image()
    write_image(tmp_path / "a.png", img)
    out = tmp_path / "preds"
    assert main(["predict", str(bundle.root), str(tmp_path / "a.png"), "--out", str(out), "--json", str(tmp_path / "p.json"),
                 "--backend", "onnxruntime"]) == 0
    d = json.loads((tmp_path / "p.json").read_text())
    inst = d["images"][0]["instances"]
    assert d["task"] == "instance" and [i["class"] for i in inst] == ["red", "rest"]
    assert inst[0]["score"] == pytest.approx(0.9)
    red = coco_mask.decode({"size": inst[0]["mask"]["size"], "counts": inst[0]["mask"]["counts"].encode()}).astype(bool)
    truth = img[..., 0] > 0
    iou = (red & truth).sum() / (red | truth).sum()
    assert red.shape == (96, 128) and iou > 0.9  # a 4x-pooled map sampled back: boundary pixels may differ
    x1, y1, x2, y2 = inst[0]["box"]  # the tight box of the decoded mask
    ys, xs = np.nonzero(red)
    assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    ids = read_label(out / "a_instances.png")
    assert set(np.unique(ids).tolist()) <= {0, 1, 2} and np.array_equal(ids == 1, red & ~(ids == 2))
    assert (out / "a_overlay.png").is_file()
    # the threshold drops the 0.6 instance
    assert main(["predict", str(bundle.root), str(tmp_path / "a.png"), "--json", str(tmp_path / "q.json"),
                 "--score-threshold", "0.7", "--backend", "onnxruntime"]) == 0
    assert [i["class"] for i in json.loads((tmp_path / "q.json").read_text())["images"][0]["instances"]] == ["red"]


def test_predict_rejects_score_threshold_for_semantic_and_needs_an_output(tmp_path):
    from edgeseg.cli import main
    from edgeseg.data.io import write_image
    from handmade_bundles import conv_bundle

    b = conv_bundle(tmp_path)
    write_image(tmp_path / "a.png", red_square_image())
    assert main(["predict", str(b.root), str(tmp_path / "a.png"), "--json", str(tmp_path / "x.json"),
                 "--score-threshold", "0.5"]) != 0
    assert main(["predict", str(b.root), str(tmp_path / "a.png")]) != 0


def test_predict_never_writes_over_its_images_or_its_bundle(tmp_path, capsys):
    """`--json victim.jpg` replaced the image with JSON, `--json BUNDLE/manifest.json` destroyed the bundle, and a
    rerun with --out the images' own folder wrote a_overlay.png over an input of that name."""
    import hashlib

    from edgeseg.cli import main
    from edgeseg.data.io import write_image
    from handmade_bundles import conv_bundle

    b = conv_bundle(tmp_path / "b")
    imgs = tmp_path / "imgs"
    write_image(imgs / "a.png", red_square_image())

    def digest():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    assert main(["predict", str(b.root), str(imgs / "a.png"), "--out", str(imgs)]) == 0  # a_labels/a_overlay beside
    before = digest()
    cases = [(["--json", str(imgs / "a.png")], "is one of the images to predict"),
             (["--json", str(b.root / "manifest.json")], "is in the bundle"),
             (["--out", str(b.root)], "is in the bundle"),
             (["--out", str(imgs)], "would write over images this run predicts"),
             (["--out", str(tmp_path / "o"), "--json", str(tmp_path / "o" / "panoptic.json")], "one would replace the other")]
    for extra, words in cases:
        capsys.readouterr()
        images = [str(p) for p in sorted(imgs.glob("*.png"))]  # the earlier run's PNGs given again as images
        assert main(["predict", str(b.root), *images, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert words in err and "fix:" in err, (extra, err)
        assert digest() == before
