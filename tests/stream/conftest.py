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


