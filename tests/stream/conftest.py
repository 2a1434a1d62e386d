"""Fixtures for the stream tests: a real bundle (hand-made 1x1-conv ONNX run by ONNX Runtime), frame
sources made of known images, and the GStreamer gate."""
from __future__ import annotations

import pytest

from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle

NUM_CLASSES = 4


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return conv_bundle(tmp_path_factory.mktemp("stream_bundle"), NUM_CLASSES,
                       input_spec=InputSpec(size=ImageShape(32, 32)), name="streamconv")


@pytest.fixture
def predictor(bundle):
    import edgeseg

    with edgeseg.load(bundle, backend="onnxruntime", threads=1) as p:
        yield p


@pytest.fixture
def gst():
    pytest.importorskip("gi")
    from edgeseg.stream.gst import available, gst as _gst

    ok, why = available()
    if not ok:
        pytest.skip(why)
    return _gst()


@pytest.fixture
def launch_env(gst, tmp_path):
    """The environment gst-launch-1.0 needs to load the edgeseg element (its own plugin registry per test)."""
    import os
    import shutil
    from pathlib import Path

    from edgeseg.stream.gst_plugin import environment

    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 is not installed")
    if not any(Path("/usr/lib").glob("*/gstreamer-1.0/libgstpython.so")):
        pytest.skip("gst-python's plugin loader (gstreamer1.0-python3-plugin-loader) is not installed")
    return {**os.environ, **environment(), "OMP_NUM_THREADS": "1", "GST_REGISTRY": str(tmp_path / "registry.bin")}
