"""An instance bundle in the stream: --score-threshold, the predictor's option override, and JSON
lines whose RLE masks decode to the decoder's masks."""
from __future__ import annotations

import json

import numpy as np

from handmade_bundles import red_instance_bundle, red_square_image



def test_stream_instance_json_lines_and_threshold(tmp_path):
    import edgeseg
    from edgeseg.structures import rle_decode
    from stream_helpers import ListSource

    bundle = red_instance_bundle(tmp_path)
    images = [red_square_image() for _ in range(3)]
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32")
    results = [r for _, r in edgeseg.stream(ListSource(images), predictor, score_threshold=0.7)]
    assert [len(r) for r in results] == [1, 1, 1]
    direct = predictor.set_options(score_threshold=0.7)(images[0])
    assert np.array_equal(direct.masks, results[0].masks)
    jl = tmp_path / "r.jsonl"
    list(edgeseg.stream(ListSource(images), edgeseg.load(bundle, backend="onnxruntime", precision="fp32"), json_out=str(jl)))
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    seg = lines[0]["segments"]
    assert len(lines) == 3 and [s["class"] for s in seg] == ["red", "rest"]
    assert np.array_equal(rle_decode(seg[0]["rle"]), results[0].masks[0]) and seg[0]["area"] == int(results[0].masks[0].sum())
