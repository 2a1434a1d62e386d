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
    cfg = write_deepstream(road, tmp_path / "j5", precision="int8", trt_version="8.5.2")
    assert "network-mode=1" in cfg.read_text() and "int8-calib-file=calibration.tensorrt-8.5.2.cache" in cfg.read_text()
    shipped = read_cache(road.root / "calibration.tensorrt-8.5.cache")
    written = read_cache(tmp_path / "j5" / "calibration.tensorrt-8.5.2.cache")
    assert written.version_code == 8502
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


def test_bundles_nvinfer_cannot_take_are_refused(tmp_path):
    from edgeseg.bundle import Bundle
    from edgeseg.quant.deepstream import write_deepstream

    with pytest.raises(InputError, match="custom parser library"):
        write_deepstream(Bundle.open("shapes-instance"), tmp_path / "i")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_deepstream(Bundle.open("road"), tmp_path / "file")
    assert not (tmp_path / "i").exists()
