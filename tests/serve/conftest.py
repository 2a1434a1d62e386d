"""Shared fixtures of the serve tests."""
from __future__ import annotations

import pytest

import edgeseg


@pytest.fixture(scope="module")
def local():
    """The shapes bundle run here (ONNX Runtime FP32, one thread): what a served answer must equal."""
    with edgeseg.load("shapes", backend="onnxruntime", precision="fp32", threads=1) as p:
        yield p
