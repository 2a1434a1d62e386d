"""Target profiles: how a model is quantized for the runtime that will run it.

Each profile is a frozen :class:`QuantProfile` registered in :data:`PROFILES`; adding a target touches
this file only. ``float_ops`` lists op types that stay in float on that target, with the reason that
goes into the report.

* ``tensorrt`` - explicit Q/DQ as TensorRT 10/11 consumes it: INT8 activations and weights, both
  symmetric (zero-point 0), per-channel weight scales (Conv axis 0, ConvTranspose axis 1), Q/DQ on
  the *inputs* of Conv/ConvTranspose/MatMul/Gemm and residual Add (not on their outputs: TensorRT
  fuses the following Q into the producer), biases left in float (TensorRT folds them), DeformConv
  and RoiAlign left in float (TensorRT runs them in FP16 at most).
* ``cpu`` - what measured fastest *and* accurate with ONNX Runtime on the host CPU (see
  docs/quantization.md for the numbers): U8 activations (asymmetric), S8 per-channel weights
  in 7 bits (``reduce_range``: no int16 saturation on CPUs without VNNI, so results are the same on
  every x86 CPU). PRelu (with the BatchNormalization before it) is rewritten into ops ORT runs
  in INT8 (``int8_prelu``); ConvTranspose stays float (no INT8 kernel in ORT's CPU provider).
* ``openvino`` - Q/DQ ONNX that OpenVINO imports (its ONNX frontend turns Q/DQ into FakeQuantize).
  Engine ``nncf`` (default when NNCF is installed, :mod:`edgeseg.quant.openvino`): NNCF places the
  quantizers for OpenVINO's CPU plugin (options measured, docs/quantization.md). Engine ``ort``
  (fallback, ``--engine ort``): ONNX Runtime's quantizer with the fields below: symmetric INT8
  per-channel weights, U8 activations, Q/DQ on the ops OpenVINO's CPU plugin runs in INT8.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._registry import Registry
from ..errors import UnsupportedError

TRT_FLOAT_OPS = {
    "DeformConv": "TensorRT runs DeformConv in FP16 at most (no INT8 kernel)",
    "RoiAlign": "TensorRT runs RoiAlign in FP16 at most (no INT8 kernel)",
}


@dataclass(frozen=True)
class QuantProfile:
    """A target's quantization recipe (maps onto ONNX Runtime's ``quantize_static`` options)."""

    name: str
    description: str
    activation_type: str = "int8"  # int8 | uint8
    weight_type: str = "int8"
    activation_symmetric: bool = True
    weight_symmetric: bool = True
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None  # None: every op ONNX Runtime can quantize
    inputs_only: tuple[str, ...] = ()  # op types whose outputs get no Q/DQ
    quantize_bias: bool = True
    float_ops: dict[str, str] = field(default_factory=dict)  # op type -> why it stays in float
    min_conv_macs_per_pixel: int = 0  # convs cheaper than this per output pixel stay in float
    engine: str = "ort"  # who places Q/DQ: ort (ONNX Runtime's quantize_static) | nncf (edgeseg.quant.openvino)
    optimize_graph: bool = True  # run ONNX Runtime's basic optimiser while preparing the graph
    int8_prelu: bool = False  # rewrite PRelu into ops ORT runs in INT8 before quantizing (prepare.int8_prelu)
    extra_options: dict[str, Any] = field(default_factory=dict)

    def ort_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``onnxruntime.quantization.quantize_static`` (without the model paths)."""
        from onnxruntime.quantization import QuantFormat, QuantType

        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        extra = {
            "ActivationSymmetric": self.activation_symmetric,
            "WeightSymmetric": self.weight_symmetric,
            "QuantizeBias": self.quantize_bias,
            "OpTypesToExcludeOutputQuantization": list(self.inputs_only),
            **self.extra_options,
        }
        return {
            "quant_format": QuantFormat.QDQ,
            "activation_type": types[self.activation_type],
            "weight_type": types[self.weight_type],
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "op_types_to_quantize": list(self.op_types) if self.op_types else None,
            "extra_options": extra,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "activation_type": self.activation_type, "weight_type": self.weight_type,
            "activation_symmetric": self.activation_symmetric, "weight_symmetric": self.weight_symmetric,
            "per_channel": self.per_channel, "reduce_range": self.reduce_range,
            "op_types": list(self.op_types) if self.op_types else "all",
            "inputs_only": list(self.inputs_only), "quantize_bias": self.quantize_bias, "engine": self.engine,
        }


PROFILES: Registry[QuantProfile] = Registry("quantization target", UnsupportedError, meanings={
    **dict.fromkeys(("gpu", "cuda", "nvidia", "jetson", "trt"), "tensorrt (NVIDIA GPUs and Jetson)"),
    **dict.fromkeys(("onnxruntime", "ort", "x86", "arm"), "cpu (ONNX Runtime on the CPU)"),
    **dict.fromkeys(("ov", "intel"), "openvino")})

_TRT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add")
PROFILES.add("tensorrt", QuantProfile(
    name="tensorrt",
    description="explicit Q/DQ for TensorRT 10/11: symmetric INT8, zero-point 0, per-channel weights",
    activation_type="int8",
    activation_symmetric=True,
    op_types=_TRT_OPS,
    inputs_only=_TRT_OPS,
    quantize_bias=False,
    float_ops=dict(TRT_FLOAT_OPS),
    extra_options={"DedicatedQDQPair": False, "QDQKeepRemovableActivations": True},
))

PROFILES.add("cpu", QuantProfile(
    name="cpu",
    description="ONNX Runtime CPU: U8 activations (asymmetric), S8 per-channel 7-bit weights (measured fastest; "
                "the same sums on CPUs with and without VNNI; docs/quantization.md)",
    activation_type="uint8",
    activation_symmetric=False,
    # 7-bit weights: on x86 without VNNI ORT adds pairs of u8*s8 products in int16 (vpmaddubsw), which
    # saturates with full-range weights; with |w| <= 64 no pair can, so every CPU computes the same sums
    # and a gate measured on one holds on all. road on an AVX2-only EPYC: 55.44 -> 55.70 mIoU, same speed
    # (38.0 vs 37.3 ms); on VNNI CPUs the sums are exact either way
    reduce_range=True,
    op_types=("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
              "GlobalAveragePool", "Resize", "Relu", "Clip", "LeakyRelu", "Sigmoid"),
    float_ops={
        **TRT_FLOAT_OPS,
        # PRelu that int8_prelu cannot rewrite (slope > 1, computed slope, not per channel)
        "PRelu": "ONNX Runtime CPU has no INT8 PRelu kernel: Q/DQ around it only adds conversions",
        # ORT 1.32's CPU provider does not fuse DQ -> ConvTranspose -> Q (QLinearConvTranspose is not
        # registered there); Conv 1x1 + DepthToSpace (for kernel == stride) measured slower (docs/quantization.md)
        "ConvTranspose": "ONNX Runtime CPU has no INT8 ConvTranspose kernel: it would run DQ -> float -> Q",
    },
    min_conv_macs_per_pixel=0,
    # PRelu -> LeakyRelu, or depthwise 1x1 Conv + Relu + Add (the BatchNormalization before it absorbed):
    # ESPNet-like 480x360, ORT, 1 thread, AVX2: INT8 86.4 -> 76.2 ms (FP32 90.9), same argmax agreement
    # (docs/quantization.md, "Why INT8 can be slower, per layer")
    int8_prelu=True,
))

PROFILES.add("openvino", QuantProfile(
    name="openvino",
    description="OpenVINO CPU plugin: INT8 symmetric per-channel weights, U8 activations",
    activation_type="uint8",
    activation_symmetric=False,
    op_types=("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
              "GlobalAveragePool", "Resize"),
    float_ops=dict(TRT_FLOAT_OPS),
    engine="nncf",
    # ORT's optimiser splits HardSwish into HardSigmoid + Mul, which OpenVINO's CPU plugin runs with a
    # reference kernel and extra reorders: measured 2.09 -> 1.67 ms (shapes bundle) without it
    optimize_graph=False,
))

ENGINES = ("ort", "nncf")


def get_profile(name: str) -> QuantProfile:
    return PROFILES.get(name)
