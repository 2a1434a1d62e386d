"""Fixtures shared by the quantization tests: the tiny net trained once per session (a few seconds)."""
import pytest

import quant_tiny as qt


@pytest.fixture(scope="session")
def tiny_net():
    """The quickly trained tiny net (never random weights: the accuracy gate needs a real FP32 mIoU)."""
    pytest.importorskip("torch")
    return qt.train_tiny(steps=60, width=8)


@pytest.fixture(scope="session")
def trained(tiny_net, tmp_path_factory):
    """``tiny_net`` exported as an FP32 bundle (copy it before writing to it)."""
    return qt.export_bundle(tiny_net, tmp_path_factory.mktemp("tiny") / "tiny.edgeseg")
