"""``edgeseg deepstream``: a semantic bundle written for DeepStream's nvinfer. Checked without DeepStream: the
written model fed plain pixels gives the bundle's logits, the configuration file states the bundle's
pre-processing in nvinfer's terms (read back by edgeseg's own nvinfer reader, tested against the specification),
and the calibration cache is the bundle's for the TensorRT version asked."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import InputError


def test_road_for_deepstream_reads_back_as_the_same_model(tmp_path, caplog):
    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.export.nvinfer_config import read_nvinfer_config

    assert main(["deepstream", "road", "--out", str(tmp_path / "ds")]) == 0
    cfg_path = tmp_path / "ds" / "config_infer_primary_road.txt"
    text = cfg_path.read_text()
    for line in ("net-scale-factor=1.0", "offsets=0;0;0", "model-color-format=0", "infer-dims=3;360;480",
                 "network-mode=0", "network-type=2", "output-blob-names=logits", "num-detected-classes=11",
                 "scaling-filter=1", "onnx-file=model.onnx", "labelfile-path=labels.txt"):
        assert line in text.splitlines(), line
    road = Bundle.open("road")
    cfg = read_nvinfer_config(cfg_path)
    assert cfg.names == road.manifest.classes and cfg.size == road.manifest.input.size and cfg.problems == ()
    # the YAML form beside it says the same (read as nvinfer picks its parser: by the .yml suffix)
    yml = read_nvinfer_config(cfg_path.with_suffix(".yml"))
    assert (yml.onnx, yml.task, yml.names, yml.input, yml.size, yml.layout, yml.problems) == \
        (cfg.onnx, cfg.task, cfg.names, cfg.input, cfg.size, cfg.layout, cfg.problems)
    # imported back from the configuration file: the same labels as the bundle, frame for frame
    assert main(["import", str(cfg_path), "--out", str(tmp_path / "back.edgeseg")]) == 0
    back = edgeseg.load(tmp_path / "back.edgeseg", backend="onnxruntime")
    orig = edgeseg.load("road", backend="onnxruntime", precision="fp32")
    for seed in (3, 4):
        frame = SceneGenerator(road.manifest.input.size, seed=seed).render_semantic(0)[0]
        a, b = orig(frame).labels, back(frame).labels
        assert np.mean(a == b) > 0.999, np.mean(a == b)
    # the files are replaced only when asked
    with pytest.raises(InputError, match="already holds files"):
        from edgeseg.quant.deepstream import write_deepstream

        write_deepstream(road, tmp_path / "ds")


def test_int8_takes_the_bundles_calibration_cache_for_the_trt_version(tmp_path):
    from edgeseg.bundle import Bundle
    from edgeseg.quant.deepstream import write_deepstream
    from edgeseg.quant.trt_cache import read_cache

    road = Bundle.open("road")
    cfg = write_deepstream(road, tmp_path / "j61", precision="int8", trt_version="10.3")
    assert "network-mode=1" in cfg.read_text() and "int8-calib-file=calibration.tensorrt-10.3.cache" in cfg.read_text()
    shipped = read_cache(road.root / "calibration.tensorrt-10.3.cache")
    written = read_cache(tmp_path / "j61" / "calibration.tensorrt-10.3.cache")
    assert written.version_code == 100300
    # the raw logits keep their scale under their new name; the class bias is added after them
    assert written.scales == {("edgeseg_ds_raw_logits" if k == "logits" else k): v for k, v in shipped.scales.items()}
    # a version the bundle has no cache for: retargeted, the scales unchanged
    cfg = write_deepstream(road, tmp_path / "t10", precision="int8", trt_version="10.7")
    assert read_cache(tmp_path / "t10" / "calibration.tensorrt-10.7.cache").version_code == 100700
    # the cache's scales name tensors of the written model (its input is the normalised tensor)
    import onnx

    g = onnx.load(str(tmp_path / "t10" / "model.onnx")).graph
    tensors = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    assert set(read_cache(tmp_path / "t10" / "calibration.tensorrt-10.7.cache").scales) <= tensors
    with pytest.raises(Exception, match="TensorRT 11"):
        write_deepstream(road, tmp_path / "t11", precision="int8", trt_version="11.0")
    assert not (tmp_path / "t11").exists()


def test_a_cache_from_a_failed_gate_is_said_and_trt_version_is_not_called_ignored(tmp_path, caplog):
    """A reviewer: a TensorRT quantize that failed its gate (no earlier INT8 model) still wrote its calibration caches,
    and `edgeseg deepstream --precision int8` used them without a word; `--trt-version 8.5.2 --precision fp16` said
    'ignored' and then refused the opset for that very version."""
    import json
    import shutil

    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.quant.deepstream import write_deepstream

    shutil.copytree(Bundle.open("road").root, tmp_path / "road.edgeseg")
    report = json.loads((tmp_path / "road.edgeseg" / "report.json").read_text())
    report["int8"]["tensorrt"].update(met_budget=False, drop=1.7, max_drop=1.0)
    (tmp_path / "road.edgeseg" / "report.json").write_text(json.dumps(report))
    manifest = json.loads((tmp_path / "road.edgeseg" / "manifest.json").read_text())
    manifest["files"].pop("report.json", None)  # edited by hand: its checksum no longer listed
    (tmp_path / "road.edgeseg" / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="edgeseg.quant.deepstream"):
        write_deepstream(Bundle.open(tmp_path / "road.edgeseg"), tmp_path / "ds", precision="int8")
    assert "failed its accuracy gate (mIoU drop 1.7 > 1.0)" in caplog.text
    caplog.clear()
    assert main(["deepstream", "road", "--out", str(tmp_path / "j5"), "--precision", "fp16", "--trt-version",
                 "8.5.2"]) == 2
    assert "ignored" not in caplog.text


def test_a_model_newer_than_the_trt_version_parses_is_refused_before_anything_is_written(tmp_path):
    """An audit: `--trt-version 8.5.2` (JetPack 5.1, its own help example) wrote the shipped opset-19 model, which
    TensorRT 8.5's parser (opsets up to 17; ReduceMean's axes became an input in 18) refuses on the device."""
    from edgeseg.bundle import Bundle
    from edgeseg.quant.deepstream import write_deepstream

    with pytest.raises(InputError, match="is ONNX opset 19; TensorRT 8.5.2 parses opsets up to 17") as e:
        write_deepstream(Bundle.open("road"), tmp_path / "j5", precision="int8", trt_version="8.5.2")
    assert "--opset 17" in e.value.fix and not (tmp_path / "j5").exists()


def test_bundles_nvinfer_cannot_take_are_refused(tmp_path):
    from edgeseg.bundle import Bundle
    from edgeseg.quant.deepstream import write_deepstream

    with pytest.raises(InputError, match="custom parser library"):
        write_deepstream(Bundle.open("shapes-instance"), tmp_path / "i")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_deepstream(Bundle.open("road"), tmp_path / "file")
    assert not (tmp_path / "i").exists()


def _graph(path, kind: str):
    """Small models of the forms users import: probabilities out, channels-last in and out, uint8 in, float16."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    b = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    if kind == "ties":  # classes 0 and 1 a rounding apart, as an untrained model's near-uniform scores are
        w[1], b[1] = w[0] * np.float32(1 + 1e-6), b[0]
    half = kind == "float16"
    inits = [nh.from_array(w.astype(np.float16) if half else w, "w"), nh.from_array(b.astype(np.float16) if half else b, "b")]
    conv = h.make_node("Conv", ["x", "w", "b"], ["out"], pads=[1, 1, 1, 1])
    f, shape_in, shape_out = (T.FLOAT16 if half else T.FLOAT), [1, 3, 32, 48], [1, 4, 32, 48]
    nodes, in_type = [conv], f
    if kind == "probabilities":
        nodes = [h.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]), h.make_node("Softmax", ["z"], ["out"], axis=1)]
    elif kind == "nhwc":
        shape_in, shape_out = [1, 32, 48, 3], [1, 32, 48, 4]
        nodes = [h.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
                 h.make_node("Conv", ["xt", "w", "b"], ["z"], pads=[1, 1, 1, 1]),
                 h.make_node("Transpose", ["z"], ["out"], perm=[0, 2, 3, 1])]
    elif kind == "uint8":
        in_type = T.UINT8
        inits.append(nh.from_array(np.array(1 / 255, np.float32), "s"))
        nodes = [h.make_node("Cast", ["x"], ["xf"], to=T.FLOAT), h.make_node("Mul", ["xf", "s"], ["xs"]),
                 h.make_node("Conv", ["xs", "w", "b"], ["out"], pads=[1, 1, 1, 1])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", in_type, shape_in)],
                     [h.make_tensor_value_info("out", f, shape_out)], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("kind, bias", [("probabilities", False), ("probabilities", True), ("nhwc", True),
                                        ("uint8", False), ("float16", False), ("float16", True), ("logits", True)])
def test_what_nvinfer_shows_is_the_bundles_labels(tmp_path, kind, bias):
    """nvinfer labels a pixel with its best class only where that score is above segmentation-threshold (0 at
    least; its fillSegmentationOutput starts each pixel at -1): raw logits or log-probabilities below 0 were left
    unlabelled. Every written model ends in probabilities, float32, channels first, with no uint8 tensor inside
    (TensorRT takes none), and nvinfer's rule applied to its scores gives the bundle's labels."""
    import onnx

    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.quant.deepstream import nvinfer_labels, write_deepstream
    from edgeseg.structures import ImageShape
    from edgeseg._ort import make_session

    _graph(tmp_path / "m.onnx", kind)
    args = ["--layout", "NHWC"] if kind == "nhwc" else []
    assert main(["import", str(tmp_path / "m.onnx"), "--names", "a,b,c,d", *args, "--out", str(tmp_path / "m.edgeseg")]) == 0
    bundle = Bundle.open(tmp_path / "m.edgeseg")
    if bias:
        with bundle.editing() as edit:  # (a review: bundle.update here wrote the original, then the swap undid it)
            edit.update(decoder={**(bundle.manifest.decoder or {}), "class_bias": [1.5, -0.5, 0.0, 0.25]})
        assert bundle.manifest.decoder["class_bias"] == [1.5, -0.5, 0.0, 0.25]
    write_deepstream(bundle, tmp_path / "ds")
    model = onnx.load(str(tmp_path / "ds" / "model.onnx"))
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    assert not [v.name for v in inferred if v.type.tensor_type.elem_type == onnx.TensorProto.UINT8]
    session = make_session(model.SerializeToString())
    predictor = edgeseg.load(tmp_path / "m.edgeseg", backend="onnxruntime")
    rng = np.random.default_rng(2)
    for _ in range(2):
        rgb = rng.integers(0, 255, (32, 48, 3), np.uint8)
        x = rgb.astype(np.float32)
        x = x[None] if kind == "nhwc" else x.transpose(2, 0, 1)[None]
        scores = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0][0]
        assert scores.shape == (4, 32, 48)
        np.testing.assert_allclose(scores.sum(axis=0), 1.0, atol=1e-3)  # probabilities: every pixel labelled
        labels = nvinfer_labels(scores)
        assert (labels >= 0).all()
        assert np.mean(labels == predictor(rgb).labels) > 0.995
    assert bundle.manifest.input.size == ImageShape(32, 48)


def test_scores_a_rounding_apart_are_not_taken_for_a_broken_graph(tmp_path):
    """A docs audit: `edgeseg deepstream` of a freshly exported (untrained) PSPNet failed with "nvinfer would label
    0.0% of pixels as no class and differ from the bundle's argmax elsewhere; fix: report this": near-uniform scores,
    whose best class flips on the baked graph's rounding. Pixels whose two best scores are closer than that rounding
    are not counted now; the others still must agree."""
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.quant.deepstream import write_deepstream

    _graph(tmp_path / "m.onnx", "ties")
    assert main(["import", str(tmp_path / "m.onnx"), "--names", "a,b,c,d", "--out", str(tmp_path / "m.edgeseg")]) == 0
    assert write_deepstream(Bundle.open(tmp_path / "m.edgeseg"), tmp_path / "ds").is_file()


def test_overwrite_replaces_only_its_own_files_and_out_dot_works(tmp_path, monkeypatch):
    from edgeseg.bundle import Bundle
    from edgeseg.quant.deepstream import write_deepstream

    road = Bundle.open("road")
    out = tmp_path / "app"
    out.mkdir()
    (out / "deepstream_app.txt").write_text("[application]\n")
    (out / "model.onnx_b1_gpu0_fp32.engine").write_bytes(b"old engine")
    with pytest.raises(InputError, match="already holds files"):
        write_deepstream(road, out)
    write_deepstream(road, out, overwrite=True)
    assert (out / "deepstream_app.txt").read_text() == "[application]\n"  # the user's file stays
    assert not (out / "model.onnx_b1_gpu0_fp32.engine").exists()  # an engine of the old model goes
    assert (out / "model.onnx").is_file() and not list(tmp_path.glob(".*partial"))
    empty = tmp_path / "here"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert write_deepstream(road, ".") == empty / "config_infer_primary_road.txt"


def test_an_imported_model_goes_to_deepstream_and_back(tmp_path):
    """The round trip of an imported bundle: the written model holds edgeseg's import nodes, and importing it again
    repeated their names (ONNX Runtime refused: 13 of 15 users' imports); an Ultralytics model's metadata stayed in
    the written file and overrode the nvinfer file's pre-processing on the way back (4 % of labels right)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgeseg
    from edgeseg.cli import main

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["input.1", "w"], ["out"], pads=[1, 1, 1, 1])], "seg",
                          [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64, 64])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in {"author": "Ultralytics", "task": "semantic", "imgsz": "[64, 64]", "stride": "32",
                 "names": "{0: 'road', 1: 'car', 2: 'sky'}"}.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(tmp_path / "sem.onnx"))
    assert main(["import", str(tmp_path / "sem.onnx"), "--out", str(tmp_path / "a.edgeseg")]) == 0
    assert main(["deepstream", str(tmp_path / "a.edgeseg"), "--out", str(tmp_path / "ds")]) == 0
    written = onnx.load(str(tmp_path / "ds" / "model.onnx"))
    assert not any(p.key in ("author", "task", "names") for p in written.metadata_props)
    for suffix in ("txt", "yml"):
        assert main(["import", str(tmp_path / "ds" / f"config_infer_primary_a.{suffix}"),
                     "--out", str(tmp_path / f"back_{suffix}.edgeseg")]) == 0
        a = edgeseg.load(tmp_path / "a.edgeseg", backend="onnxruntime", precision="fp32")
        b = edgeseg.load(tmp_path / f"back_{suffix}.edgeseg", backend="onnxruntime")
        rgb = np.random.default_rng(1).integers(0, 255, (48, 80, 3), np.uint8)
        la, lb = a(rgb).labels, b(rgb).labels
        assert np.mean(la == lb) > 0.99, (suffix, np.mean(la == lb))
