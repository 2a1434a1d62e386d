"""backend="auto": the pure choice and its use on this machine."""
from __future__ import annotations

import pytest

from edgeseg.backends import choose_backend
from edgeseg.errors import BackendUnavailable

ALL = {"tensorrt": (True, ""), "openvino": (True, ""), "onnxruntime": (True, ""), "torch": (True, "")}
NO_TRT = {**ALL, "tensorrt": (False, "no tensorrt module")}
ORT_ONLY = {**NO_TRT, "openvino": (False, "not installed")}


def test_tensorrt_first():
    assert choose_backend(ALL) == "tensorrt"
    assert choose_backend(ALL, device="cuda") == "tensorrt"
    assert choose_backend(ALL, device="cpu") == "openvino"


def test_openvino_on_x86_when_graph_ok():
    assert choose_backend(NO_TRT, machine="x86_64") == "openvino"
    assert choose_backend(NO_TRT, machine="AMD64") == "openvino"
    assert choose_backend(NO_TRT, machine="x86_64", openvino_graph_ok=False) == "onnxruntime"
    assert choose_backend(NO_TRT, machine="aarch64") == "onnxruntime"


def test_onnxruntime_fallback_and_torch_never_auto():
    assert choose_backend(ORT_ONLY) == "onnxruntime"
    with pytest.raises(BackendUnavailable, match=r"(?s)tensorrt: no tensorrt module.*openvino: not installed.*onnxruntime: gone"):
        choose_backend({**ORT_ONLY, "onnxruntime": (False, "gone")})


def test_explicit_preference():
    assert choose_backend(ORT_ONLY, "torch") == "torch"
    assert choose_backend(ALL, "onnxruntime") == "onnxruntime"
    with pytest.raises(BackendUnavailable, match="backend 'tensorrt' is not available: no tensorrt module"):
        choose_backend(NO_TRT, "tensorrt")
    with pytest.raises(BackendUnavailable, match="unknown backend 'onnx'"):
        choose_backend(ALL, "onnx")


def test_select_backend_here(tmp_path):
    from edgeseg.backends import select_backend
    from edgeseg.backends.auto import availability
    from edgeseg.structures import ImageShape, InputSpec
    from handmade_bundles import conv_bundle, custom_op_model, make_bundle

    avail = availability()
    bundle = conv_bundle(tmp_path, input_spec=InputSpec(size=ImageShape(8, 12)))
    got = select_backend(bundle)
    assert got == choose_backend(avail, machine=__import__("platform").machine(), openvino_graph_ok=True)
    if avail["openvino"][0] and not avail["tensorrt"][0]:
        custom = make_bundle(tmp_path / "c.edgeseg", custom_op_model(tmp_path / "c.onnx"),
                             input_spec=InputSpec(size=ImageShape(4, 4)), num_classes=3)
        assert select_backend(custom) == "onnxruntime"  # OpenVINO cannot take FancyOp
