"""INT8 of a panoptic model with deformable convolution (LPSNet-style): the quantizer leaves every
``DeformConv`` in float (its weights are never quantized; ONNX Runtime and TensorRT have no INT8
kernel for it), for the ``cpu`` and ``tensorrt`` targets, and the gate reports PQ."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def lps(tmp_path_factory):
    from edgeseg.export.panoptic_export import export_panoptic_bundle
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape, InputSpec

    torch.manual_seed(0)
    model = create_model("test_lpsnet").eval()
    return export_panoptic_bundle(model, tmp_path_factory.mktemp("lps") / "lps.edgeseg", name="lps",
                                  input_spec=InputSpec(size=ImageShape(96, 128)))


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_deform_conv_stays_float(lps, target):
    import onnx

    from edgeseg.quant import quantize_bundle

    r = quantize_bundle(lps, "synthetic:8", target=target, progress=False, max_drop=100.0)
    q = onnx.load(str(lps.root / r.model_file))
    deform = [n for n in q.graph.node if n.op_type == "DeformConv"]
    assert len(deform) == 3  # one per FPN level of the semantic head
    quantized = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    inits = {i.name for i in q.graph.initializer}
    for n in deform:
        assert n.input[1] in inits and n.input[1] not in quantized  # float weights
    assert r.metric == "PQ against FP32 (%)" and 0.0 <= r.int8_score <= 100.0 and r.fp32_score == 100.0


def test_openvino_int8_of_onnx_deform_conv_is_refused_before_calibrating(lps):
    """OpenVINO reads no ONNX DeformConv: before, the NNCF run calibrated, then the compile check raised a
    RuntimeError traceback ("No conversion rule found for operations: DeformConv-19"). Now it is refused
    first, naming the op and the two forms that work."""
    pytest.importorskip("openvino")
    from edgeseg.errors import QuantizationError
    from edgeseg.quant import quantize_bundle

    with pytest.raises(QuantizationError, match="OpenVINO cannot convert op.*DeformConv") as e:
        quantize_bundle(lps, "synthetic:4", target="openvino", progress=False)
    assert "--deform-conv decomposed" in e.value.fix and "--target cpu or tensorrt" in e.value.fix
    # the compile every OpenVINO quantization path ends with names the op too (it raised OpenVINO's RuntimeError)
    from edgeseg.errors import UnsupportedError
    from edgeseg.quant.openvino import compile_cpu

    with pytest.raises(UnsupportedError, match="OpenVINO cannot convert op.*DeformConv"):
        compile_cpu(lps.root / "model.onnx")
