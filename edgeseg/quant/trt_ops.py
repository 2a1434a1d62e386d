"""The ONNX-TensorRT operator support table, with the TensorRT version that added each op.

Source: onnx/onnx-tensorrt ``docs/operators.md`` across its release branches (8.4 is the base: the
ops it lists as supported are taken as available in every TensorRT this project targets, 8.5+),
plus the ops added later. ``MAX_PRECISION`` caps ops that TensorRT runs without INT8 kernels
(a Q/DQ pair around them is not fused: they run in FP16/FP32 between a DQ and a Q).
"""
from __future__ import annotations

# Supported by the ONNX parser of TensorRT 8.4 (docs/operators.md, release/8.4), hence by 8.5 and later.
BASE_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GRU HardSigmoid Identity If ImageScaler
InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean Min Mul Neg NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomUniform RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample
Where Xor HardSwish
""".split())

# op -> first TensorRT version whose ONNX parser supports it
ADDED_IN: dict[str, tuple[int, int]] = {
    "RoiAlign": (8, 5),
    "GridSample": (8, 5),
    "NonZero": (8, 5),
    "OneHot": (8, 5),
    "Mod": (8, 5),
    "Reciprocal": (8, 5),
    "Trilu": (8, 5),
    "Hardmax": (8, 5),
    "LayerNormalization": (8, 6),
    "GroupNormalization": (10, 0),
    "DeformConv": (10, 1),
}

# ops the ONNX-TensorRT parser never supports (integer-op quantization formats, sequences, ...)
NEVER = {
    "ConvInteger": "QOperator format; re-quantize to Q/DQ with 'edgeseg quantize --target tensorrt'",
    "MatMulInteger": "QOperator format; re-quantize to Q/DQ with 'edgeseg quantize --target tensorrt'",
    "QLinearConv": "QOperator format; re-quantize to Q/DQ with 'edgeseg quantize --target tensorrt'",
    "QLinearMatMul": "QOperator format; re-quantize to Q/DQ with 'edgeseg quantize --target tensorrt'",
    "DynamicQuantizeLinear": "dynamic quantization; use static Q/DQ ('edgeseg quantize --target tensorrt')",
    "Unique": "no TensorRT layer", "StringNormalizer": "no TensorRT layer", "TfIdfVectorizer": "no TensorRT layer",
    "MaxRoiPool": "no TensorRT layer; use RoiAlign", "MaxUnpool": "no TensorRT layer", "Det": "no TensorRT layer",
    "SequenceAt": "sequence ops", "SequenceConstruct": "sequence ops", "SequenceEmpty": "sequence ops",
    "SequenceErase": "sequence ops", "SequenceInsert": "sequence ops", "SequenceLength": "sequence ops",
    "SplitToSequence": "sequence ops", "ConcatFromSequence": "sequence ops",
}

# ops without INT8 kernels: the highest precision TensorRT runs them in
MAX_PRECISION = {"DeformConv": "fp16", "RoiAlign": "fp16", "GridSample": "fp16", "NonMaxSuppression": "fp16"}

# how to avoid an op that a TensorRT version lacks
FIXES = {
    "DeformConv": "export with deform_conv='decomposed' (GridSample + Conv), or target TensorRT >= 10.1",
    "RoiAlign": "export with roi_align='decomposed', or target TensorRT >= 8.5",
    "GridSample": "target TensorRT >= 8.5",
    "LayerNormalization": "target TensorRT >= 8.6, or export at opset < 17 (LayerNorm decomposed)",
    "GroupNormalization": "target TensorRT >= 10.0, or export at opset < 18 (decomposed)",
}

# highest ONNX opset each TensorRT line's parser accepts (from the same docs pages)
MAX_OPSET = [((8, 5), 17), ((8, 6), 17), ((9, 0), 18), ((10, 0), 20), ((10, 8), 22), ((11, 0), 22)]
MIN_OPSET = 9


def max_opset(version: tuple[int, int]) -> int:
    best = MAX_OPSET[0][1]
    for v, op in MAX_OPSET:
        if version >= v:
            best = op
    return best


def supported(op: str, version: tuple[int, int]) -> bool:
    if op in NEVER:
        return False
    if op in ADDED_IN:
        return version >= ADDED_IN[op]
    return op in BASE_OPS
