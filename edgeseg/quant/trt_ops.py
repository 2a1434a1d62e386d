"""The ONNX-TensorRT operator support table, with the TensorRT version that added each op.

Every fact here was read from a source; where a source could not be found the fact is marked
*unconfirmed* and ``edgeseg check`` reports it as a warning, never as a blocker.

Sources read (``docs/operators.md`` of onnx/onnx-tensorrt unless said otherwise):

* 8.4 table: commit ``009d6541b4ee1fa3f3150cd7cbabe7e56aa54840`` ("TensorRT 8.4 supports operators
  up to Opset 13"): :data:`BASE_OPS` is exactly its ``Y`` rows.
* 8.5 table: commit ``6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc`` ("TensorRT 8.5 supports operators
  up to Opset 17").
* 9.2 table ("TensorRT 9.2 supports operators up to Opset 19"), 10.0 header ("TensorRT 10.0 supports
  operators in the inclusive range of opset 9 to opset 20") and 10.15 table ("... opset 9 to opset
  24"): stored copies of the same file whose commit the library index does not expose.
* ``docs/Changelog.md`` of onnx/onnx-tensorrt (8.4 GA ... 10.15 GA), for the release that added an op
  when the table of that release was not available (8.6, 9.2, 10.1, 10.4, 10.5, 10.12, 10.14, 10.15).
* TensorRT 11: github.com/NVIDIA/TensorRT/releases/tag/v11.0 (parser: "Added support for Swish");
  docs.nvidia.com/deeplearning/tensorrt/latest/reference/onnx-opset-guide.html (TensorRT 11.x:
  maximum opset 25, minimum 9); the 11.x migration guide (BuilderFlag::kINT8 and setInt8Calibrator
  removed: implicit INT8 calibration is gone, explicit Q/DQ only; calibrators deprecated since 10.1).
* 8.6 opset cap: NVIDIA's Orin DLA operator doc ("TensorRT 8.6 supports operators up to Opset 17").
* NMS (:data:`PLUGINS`, ``NonMaxSuppression`` in :data:`ADDED_IN`): NVIDIA/TensorRT ``CHANGELOG.md``
  "8.0.1 - 2021-07-02" ("Added ``EfficientNMS_TRT``, ``EfficientNMS_ONNX_TRT`` plugins and experimental
  support for ONNX ``NonMaxSuppression`` operator"); the 8.4 table's NonMaxSuppression row ("Y
  [EXPERIMENTAL] ... Output has fixed shape and is padded to [max_output_boxes_per_class, 3]"); the
  onnx-tensorrt Changelog "TensorRT 8.5 GA Release" ("Added native support for the
  ``NonMaxSuppression`` operator"; the 8.5 table: "Y", no restriction); NVIDIA/TensorRT
  ``plugin/efficientNMSPlugin/README.md`` (inputs, attributes, outputs) and ``CHANGELOG.md`` "10.10.0
  GA" ("Plugin fallback importer now also reads its namespace from a Node's domain field").

Not confirmed (no source found): the tables of 8.6, 9.0-9.1, 10.1-10.14 and 11.x themselves; hence
the opset cap of 9.0-9.1, 9.3 and 10.1-10.14 (only bounded by the neighbours read, see
:func:`opset_bounds`), and the first release of ``CastLike`` (between 8.6 and 9.2), ``Gelu`` and
``Mish`` (between 9.3 and 10.15): see :data:`ABSENT_AT`. TensorRT 11 is taken as 10.15's table plus
Swish (its release notes list no parser op removed). ``docs/quantization.md`` ("TensorRT operator
table: sources") lists each fact with its source.

``MAX_PRECISION``: ops whose "Supported Types" are FP32/FP16 only in every table read (no INT8 where
the 8.5/9.2 tables list INT8 for Conv, pooling, ...; no BF16 in 9.2/10.15): a Q/DQ pair around them
is not fused, they run in FP16 at most. ``RESTRICTIONS``: attribute values the tables or changelog
say the parser rejects, checked per node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

Version = Tuple[int, int]  # typing's generics in run-time aliases: Python 3.8 (JetPack 5) cannot subscript builtins

# The "Y" rows of the 8.4 table (commit 009d654): supported by every TensorRT this project targets (8.5+).
# NonMaxSuppression is one of them ("Y [EXPERIMENTAL]"), but ADDED_IN dates it to 8.5, where it became native.
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
Where Xor
""".split())

# op -> first TensorRT version a source confirms its ONNX parser supports it
ADDED_IN: dict[str, Version] = {
    # 8.4 table "N" (or absent: HardSwish), 8.5 table "Y"
    **dict.fromkeys(("GridSample", "HardSwish", "MeanVarianceNormalization", "Mod", "NonZero", "OneHot",
                     "RandomNormal", "RandomNormalLike", "Reciprocal", "RoiAlign", "Shrink", "Trilu"), (8, 5)),
    # Changelog "TensorRT 8.6 EA": GroupNormalization, LayerNormalization, IsInf (8.5 table: "N" or absent)
    **dict.fromkeys(("GroupNormalization", "LayerNormalization", "IsInf"), (8, 6)),
    # 8.4 table: "Y [EXPERIMENTAL]", its output padded to a fixed [max_output_boxes_per_class, 3] (a graph
    # that takes the box count from the output shape reads padding: PARTIAL);
    # onnx-tensorrt Changelog "TensorRT 8.5 GA": "Added native support for the NonMaxSuppression operator"
    "NonMaxSuppression": (8, 5),
    "CastLike": (9, 2),  # 9.2 table "Y"; absent from the 8.5 table (8.6 table not read: ABSENT_AT)
    "Hardmax": (9, 2),  # Changelog "TensorRT 9.2 GA": "Added support for Hardmax"; 8.5 table "N"
    "DeformConv": (10, 1),  # Changelog "TensorRT 10.1 GA": "Added support for DeformConv operation"
    **dict.fromkeys(("BlackmanWindow", "HammingWindow", "HannWindow"), (10, 4)),  # Changelog 10.4 GA
    "STFT": (10, 5),  # Changelog 10.5 GA (real-valued only)
    "Attention": (10, 14),  # Changelog 10.14 GA
    **dict.fromkeys(("RotaryEmbedding", "RMSNormalization", "TensorScatter"), (10, 15)),  # Changelog 10.15 GA
    **dict.fromkeys(("Gelu", "Mish"), (10, 15)),  # 10.15 table "Y"; absent from 9.2 (ABSENT_AT)
    "Swish": (11, 0),  # NVIDIA/TensorRT v11.0 release: "Parsers: Added support for Swish operator"
}

# TensorRT plugins that ship with TensorRT (libnvinfer_plugin) and that the ONNX parser imports for a node of
# that op_type in the default domain (an op it does not know natively falls back to the plugin registry; from
# 10.10 the node's domain is read as the plugin namespace, and the shipped plugins live in namespace "").
# plugin -> first version: NVIDIA/TensorRT CHANGELOG.md "8.0.1": "Added EfficientNMS_TRT, EfficientNMS_ONNX_TRT
# plugins" (dynamic input shapes: "21.10", TensorRT 8.0.3). The runtime must load the plugin library first
# (trtexec does; Python: trt.init_libnvinfer_plugins(logger, "")).
PLUGINS: dict[str, Version] = {"EfficientNMS_TRT": (8, 0)}

# op -> last version whose table read lacks it, where ADDED_IN is only the first table read that lists
# it: versions strictly between are unconfirmed (reported as a warning, not a blocker)
ABSENT_AT: dict[str, Version] = {"CastLike": (8, 5), "Gelu": (9, 2), "Mish": (9, 2)}

_QOP = "QOperator format; re-quantize to Q/DQ with 'edgeseg quantize --target tensorrt'"
_NO = "'N' in every operators.md read (8.4, 8.5, 9.2, 10.15)"
# ops the ONNX-TensorRT parser does not support in any table read (8.4 ... 10.15)
NEVER = {
    "ConvInteger": _QOP, "MatMulInteger": _QOP, "QLinearConv": _QOP, "QLinearMatMul": _QOP,
    "DynamicQuantizeLinear": "dynamic quantization; use static Q/DQ ('edgeseg quantize --target tensorrt')",
    "MaxUnpool": f"no TensorRT layer ({_NO}); upsample with Resize instead",
    "MaxRoiPool": f"no TensorRT layer ({_NO}); use RoiAlign",
    "Unique": _NO, "Det": _NO, "StringNormalizer": _NO, "TfIdfVectorizer": _NO, "Compress": _NO,
    "BitShift": _NO, "Multinomial": _NO, "NegativeLogLikelihoodLoss": _NO, "SoftmaxCrossEntropyLoss": _NO,
    "Optional": _NO, "OptionalGetElement": _NO, "OptionalHasElement": _NO,
    **dict.fromkeys(("SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
                     "SequenceLength", "SplitToSequence", "ConcatFromSequence"), f"sequence ops ({_NO})"),
    # "N" in the 10.15 table, the latest read (these ops are newer than some of the older tables)
    **dict.fromkeys(("AffineGrid", "CenterCropPad", "Col2Im", "DFT", "ImageDecoder", "BitwiseAnd", "BitwiseNot",
                     "BitwiseOr", "BitwiseXor", "Bernoulli", "MelWeightMatrix", "SequenceMap", "RegexFullMatch",
                     "StringConcat", "StringSplit"), "'N' in the 10.15 operators.md"),
}

# Supported Types "FP32, FP16" only in every table read (8.5, 9.2, 10.15; DeformConv: 10.15)
MAX_PRECISION = {"DeformConv": "fp16", "RoiAlign": "fp16", "GridSample": "fp16", "NonMaxSuppression": "fp16",
                 "NonZero": "fp16"}

# how to avoid an op that a TensorRT version lacks
FIXES = {
    "DeformConv": "export with deform_conv='decomposed' (GridSample + Conv), or target TensorRT >= 10.1",
    "RoiAlign": "export with roi_align='decomposed', or target TensorRT >= 8.5",
    "NonMaxSuppression": "target TensorRT >= 8.5 (a Mask R-CNN needs it in either form: --nms tensorrt swaps "
                         "NonMaxSuppression for the EfficientNMS_TRT plugin but keeps NonZero and RoiAlign, also 8.5)",
    "EfficientNMS_TRT": "export with --nms onnx (ONNX NonMaxSuppression), or target TensorRT >= 8.5 (the plugin is in "
                        ">= 8.0, the NonZero and RoiAlign around it in >= 8.5)",
    "GridSample": "target TensorRT >= 8.5",
    "LayerNormalization": "target TensorRT >= 8.6, or export at opset < 17 (LayerNorm decomposed)",
    "GroupNormalization": "target TensorRT >= 8.6, or export at opset < 18 (decomposed)",
    "Hardmax": "target TensorRT >= 9.2 (10.x), or replace Hardmax with ArgMax + OneHot",
    "Gelu": "export at opset < 20 (Gelu decomposed into Erf/Mul/Add), or target TensorRT >= 10.15",
}


# ops an older table lists with a limitation that ADDED_IN counts as unsupported: why, for the report
PARTIAL = {"NonMaxSuppression": "native from TensorRT 8.5; the 8.4 table lists it 'Y [EXPERIMENTAL]' with its output "
                                "padded to a fixed [max_output_boxes_per_class, 3], so a graph that takes the "
                                "detection count from that shape reads padding"}


def supported(op: str, version: Version) -> bool:
    """True where a source confirms that ``version``'s ONNX parser imports ``op``."""
    if op in NEVER:
        return False
    if op in PLUGINS:
        return version >= PLUGINS[op]
    if op in ADDED_IN:
        return version >= ADDED_IN[op]
    return op in BASE_OPS


def unconfirmed(op: str, version: Version) -> bool:
    """True where no source says whether ``version`` supports ``op`` (between two tables read)."""
    return op in ABSENT_AT and ABSENT_AT[op] < version < ADDED_IN[op]


def why_unsupported(op: str, version: Version) -> str:
    """The reason :func:`supported` is False, with its source."""
    if unconfirmed(op, version):
        a, b = ABSENT_AT[op], ADDED_IN[op]
        return f"unconfirmed: absent from the TensorRT {a[0]}.{a[1]} table, listed in {b[0]}.{b[1]}; tables between not read"
    if op in ABSENT_AT:
        a, b = ABSENT_AT[op], ADDED_IN[op]
        return f"absent from the TensorRT {a[0]}.{a[1]} table; first listed in the {b[0]}.{b[1]} table read"
    if op in PLUGINS:
        return f"a TensorRT plugin shipped from TensorRT {PLUGINS[op][0]}.{PLUGINS[op][1]}"
    if op in PARTIAL:
        return PARTIAL[op]
    if op in ADDED_IN:
        return f"added in TensorRT {ADDED_IN[op][0]}.{ADDED_IN[op][1]}"
    return NEVER.get(op, "not in the ONNX-TensorRT support table")


# ---- opset range -----------------------------------------------------------------------------------
# (version, highest opset) as the operators.md header (or NVIDIA doc) of exactly that version says
MAX_OPSET: list[tuple[Version, int]] = [((8, 4), 13), ((8, 5), 17), ((8, 6), 17), ((9, 2), 19), ((10, 0), 20),
                                        ((10, 15), 24), ((11, 0), 25)]
MAJOR_MAX_OPSET = {11: 25}  # onnx-opset-guide.html: "TensorRT 11.x ... Maximum opset 25"
MIN_OPSET = 9  # 10.0 and 10.15 headers: "inclusive range of opset 9 to ..."; 11.x guide: "9 and above"


def opset_bounds(version: Version) -> tuple[int, int | None]:
    """(lowest, highest) possible max opset of ``version``: equal where a source states it for that
    version; otherwise the caps of the nearest versions read below and above (None: none above)."""
    if version[0] in MAJOR_MAX_OPSET:
        return MAJOR_MAX_OPSET[version[0]], MAJOR_MAX_OPSET[version[0]]
    lo, hi = MAX_OPSET[0][1], None
    for v, cap in MAX_OPSET:
        if v == version:
            return cap, cap
        if v < version:
            lo = cap
        elif hi is None:
            hi = cap
    return lo, hi


def max_opset(version: Version) -> int:
    """The highest opset ``version`` is confirmed to parse (conservative where unconfirmed)."""
    return opset_bounds(version)[0]


# ---- per-node restrictions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Restriction:
    """A documented limit of one op's importer, checked on the node's attributes."""

    op: str
    text: str
    violated: Callable[[object], bool]
    source: str
    level: str = "error"  # "error": every source read states it; "warning": only the 10.15 table does
    until: Version | None = None  # lifted in this version (None: still in force at the latest read)
    fix: str = ""


@dataclass(frozen=True)
class RestrictionHit:
    level: str
    op: str
    message: str
    nodes: tuple[str, ...]
    fix: str = ""


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            if a.type == 3:  # STRING
                return a.s.decode()
            if a.type == 7:  # INTS
                return list(a.ints)
            if a.type == 1:  # FLOAT
                return a.f
            return a.i if a.type == 2 else default  # INT
    return default


def _einsum_unsupported(node) -> bool:
    eq = str(_attr(node, "equation", "")).replace(" ", "")
    terms = eq.split("->")[0].split(",")
    return "..." in eq or any(len(set(t)) != len(t) for t in terms)


def _pads_asymmetric(node) -> bool:
    p = _attr(node, "pads", [])
    return p[: len(p) // 2] != p[len(p) // 2:]


_ENMS_ATTRS = ("score_threshold", "iou_threshold", "max_output_boxes", "background_class", "score_activation",
               "box_coding")


def _efficient_nms_refused(node) -> bool:
    """What ``EfficientNMSPluginCreator::createPlugin`` validates (a failed check: no plugin, no engine)."""
    if any(_attr(node, k) is None for k in _ENMS_ATTRS):
        return True
    return (_attr(node, "score_threshold") < 0 or _attr(node, "iou_threshold") <= 0
            or _attr(node, "max_output_boxes") <= 0 or _attr(node, "score_activation") not in (0, 1)
            or _attr(node, "box_coding") not in (0, 1))


_RESIZE_CTM = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_TABLES = "operators.md 8.5, 9.2, 10.15"
_POOL_DIL = ("`dilations` must be empty or all ones", lambda n: any(d != 1 for d in _attr(n, "dilations", [])))

RESTRICTIONS: dict[str, tuple[Restriction, ...]] = {
    "Resize": (
        Restriction("Resize", "supported modes: nearest, linear (not cubic)",
                    lambda n: _attr(n, "mode", "nearest") not in ("nearest", "linear"), _TABLES),
        Restriction("Resize", "coordinate_transformation_mode must be one of " + ", ".join(sorted(_RESIZE_CTM)),
                    lambda n: _attr(n, "coordinate_transformation_mode", "half_pixel") not in _RESIZE_CTM, _TABLES),
        Restriction("Resize", "antialiasing is not supported", lambda n: bool(_attr(n, "antialias", 0)),
                    "operators.md 10.15", "warning"),
        Restriction("Resize", "keep_aspect_ratio_policy must be stretch",
                    lambda n: _attr(n, "keep_aspect_ratio_policy", "stretch") != "stretch", "operators.md 10.15",
                    "warning"),
    ),
    "Pad": (Restriction("Pad", "mode 'wrap' is supported from TensorRT 10.0", lambda n: _attr(n, "mode") == "wrap",
                        "Changelog 10.0 EA: Added support for wrap padding mode", until=(10, 0)),),
    "Einsum": (Restriction("Einsum", "ellipsis and diagonal operations (and broadcasting between inputs) are not "
                           "supported before TensorRT 10.12", _einsum_unsupported,
                           "operators.md 8.4/8.5 restriction; Changelog 10.12 GA added them", until=(10, 12)),),
    "MaxPool": (
        Restriction("MaxPool", "the `Indices` output is unsupported", lambda n: len(n.output) > 1 and bool(n.output[1]),
                    "operators.md 8.4, 8.5, 9.2, 10.15",
                    fix="TensorRT cannot unpool with indices: export a SegNet with --unpool switches (index-free, "
                        "the same weights), deploy this model with ONNX Runtime or OpenVINO, or choose a model that "
                        "unpools without indices (deconvnet_vgg16, or any of the family's bilinear decoders)"),
        Restriction("MaxPool", *_POOL_DIL, "operators.md 10.15", "warning"),
    ),
    "AveragePool": (Restriction("AveragePool", *_POOL_DIL, "operators.md 10.15", "warning"),),
    "LpPool": (Restriction("LpPool", *_POOL_DIL, "operators.md 10.15", "warning"),),
    "DeformConv": (Restriction("DeformConv", "pads at the beginning and end of each spatial axis must be equal",
                               _pads_asymmetric, "operators.md 10.15", "warning"),),
    "EfficientNMS_TRT": (Restriction("EfficientNMS_TRT", "the plugin takes score_threshold >= 0, iou_threshold > 0, "
                                     "max_output_boxes > 0, score_activation and box_coding 0 or 1, each of "
                                     f"{', '.join(_ENMS_ATTRS)} given; its creator refuses the node otherwise",
                                     _efficient_nms_refused, "NVIDIA/TensorRT plugin/efficientNMSPlugin/"
                                     "efficientNMSPlugin.cpp, createPlugin (PLUGIN_VALIDATE; older creators took any "
                                     "value: the release that added the checks is not known here)", "warning",
                                     fix="export the model again with this edgeseg (edgeseg export ... --nms tensorrt), "
                                         "or set the node's attributes within those bounds"),),
    "LayerNormalization": (Restriction("LayerNormalization", "only the first output `Y` is supported",
                                       lambda n: any(bool(o) for o in n.output[1:]), "operators.md 10.15", "warning"),),
}


def restriction_hits(nodes, version: Version) -> list[RestrictionHit]:
    """The restrictions in force at ``version`` that these ONNX nodes violate, one hit per restriction."""
    found: dict[Restriction, list[str]] = {}
    for n in nodes:
        for r in RESTRICTIONS.get(n.op_type, ()):
            if (r.until is None or version < r.until) and r.violated(n):
                found.setdefault(r, []).append(n.name or n.op_type)
    return [RestrictionHit(r.level, r.op, f"{r.op}: {r.text} (TensorRT {version[0]}.{version[1]}; {r.source})",
                           tuple(names), r.fix) for r, names in found.items()]
