"""INT8 of a transformer (SETR on a tiny ViT): attention and MLP MatMuls get Q/DQ; the residual Adds that
feed a LayerNorm and GELU's ``1 + erf`` stay float; LayerNorm, Softmax and Erf are never quantized."""
from __future__ import annotations

import numpy as np
import onnx
import torch

from edgeseg.export.onnx_export import export_onnx
from edgeseg.models import create_model
from edgeseg.quant.calibration import FeedReader
from edgeseg.quant.prepare import prepare_model
from edgeseg.quant.profiles import get_profile
from edgeseg.quant.quantize import quantize_model, transformer_float_adds
from edgeseg.quant.ranges import calibrate
from edgeseg.structures import ImageShape, InputSpec

SPEC = InputSpec(size=ImageShape(32, 48))


def _dq_inputs(graph) -> dict[str, set[str]]:
    """node name -> its inputs that come out of a DequantizeLinear."""
    dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: {i for i in n.input if i in dq} for n in graph.node}


def test_setr_int8_keeps_the_residual_stream_and_gelu_in_float(tmp_path):
    torch.manual_seed(0)
    model = create_model("test_setr_naive", num_classes=4).eval()
    path = export_onnx(model, tmp_path / "m.onnx", SPEC)
    graph = onnx.load(str(path)).graph
    n_ln = sum(n.op_type == "LayerNormalization" for n in graph.node)
    n_erf = sum(n.op_type == "Erf" for n in graph.node)
    adds = transformer_float_adds(onnx.load(str(path)))
    residual = {k for k, v in adds.items() if v.startswith("residual")}
    gelu = [k for k, v in adds.items() if "erf" in v]
    assert len(gelu) == n_erf > 0  # one GELU per MLP
    # the Adds a LayerNorm reads plus the last block's second Add (the decoder reads it through a Slice
    # that drops the class token): two residual Adds per block
    producer = {o: n for n in graph.node for o in n.output}
    fed = {producer[n.input[0]].name for n in graph.node
           if n.op_type == "LayerNormalization" and getattr(producer.get(n.input[0]), "op_type", "") == "Add"}
    assert fed < residual and len(residual) == 2 * n_erf == len(fed) + 1 and n_ln > len(fed)

    prepare_model(onnx.load(str(path)), tmp_path / "p.onnx")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(4)]
    table = calibrate(tmp_path / "p.onnx", FeedReader(frames, SPEC), "minmax", symmetric=True)
    quantize_model(tmp_path / "p.onnx", tmp_path / "q.onnx", get_profile("tensorrt"), table)
    q = onnx.load(str(tmp_path / "q.onnx")).graph
    dq = _dq_inputs(q)
    by_type = {}
    for n in q.node:
        by_type.setdefault(n.op_type, []).append(n)
    assert all(dq[n.name] for n in by_type["MatMul"])  # attention and projections in INT8
    for op in ("LayerNormalization", "Softmax", "Erf"):
        assert not any(dq[n.name] for n in by_type.get(op, []))
    float_adds = set(adds)
    assert all(not dq[n.name] for n in by_type["Add"] if n.name in float_adds)
