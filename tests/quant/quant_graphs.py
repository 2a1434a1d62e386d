"""Small ONNX graphs built with onnx.helper (no torch): fast fixtures for structural tests."""
from __future__ import annotations

import numpy as np


def _model(nodes, inits, x_shape, y_name, y_shape, opset=17):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, x_shape)],
                     [h.make_tensor_value_info(y_name, T.FLOAT, y_shape)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8 if opset <= 17 else 9)
    onnx.checker.check_model(m)
    return m


def conv_bn_relu(opset=17, seed=0, nhwc=False):
    """x -> [Transpose if NHWC] -> Conv(3->8) -> BN -> Relu -> ConvTranspose(8->4, stride 2) -> Conv(4->5, 1x1)."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    f = lambda *s, sc=0.3: rng.normal(0, sc, s).astype(np.float32)  # noqa: E731
    inits = [nh.from_array(f(8, 3, 3, 3), "W1"), nh.from_array(f(8), "B1"),
             nh.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "g"), nh.from_array(f(8), "beta"),
             nh.from_array(f(8), "mean"), nh.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "var"),
             nh.from_array(f(8, 4, 2, 2), "Wt"), nh.from_array(f(4), "Bt"), nh.from_array(f(5, 4, 1, 1), "W2")]
    src = "x"
    nodes = []
    if nhwc:
        nodes.append(h.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        src = "x_nchw"
    bn_kw = {"epsilon": 1e-3}
    nodes += [h.make_node("Conv", [src, "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
              h.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"], **bn_kw),
              h.make_node("Relu", ["bn"], ["r"]),
              h.make_node("ConvTranspose", ["r", "Wt", "Bt"], ["up"], strides=[2, 2]),
              h.make_node("Conv", ["up", "W2"], ["y"])]
    x_shape = [1, 16, 16, 3] if nhwc else [1, 3, 16, 16]
    return _model(nodes, inits, x_shape, "y", [1, 5, 32, 32], opset)


def with_deform_conv(seed=0):
    """Conv -> (offset Conv, DeformConv) -> Conv, opset 19."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    inits = [nh.from_array(rng.normal(0, .3, (8, 3, 3, 3)).astype(np.float32), "W1"),
             nh.from_array(rng.normal(0, .05, (18, 8, 3, 3)).astype(np.float32), "Wo"),
             nh.from_array(rng.normal(0, .3, (8, 8, 3, 3)).astype(np.float32), "Wd"),
             nh.from_array(rng.normal(0, .3, (4, 8, 1, 1)).astype(np.float32), "W3")]
    nodes = [h.make_node("Conv", ["x", "W1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             h.make_node("Conv", ["a", "Wo"], ["off"], name="offset_conv", pads=[1, 1, 1, 1]),
             h.make_node("DeformConv", ["a", "Wd", "off"], ["d"], name="dcn", pads=[1, 1, 1, 1]),
             h.make_node("Conv", ["d", "W3"], ["y"], name="head")]
    return _model(nodes, inits, [1, 3, 16, 16], "y", [1, 4, 16, 16], opset=19)


def run(model_or_path, x):
    import onnxruntime as ort

    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def load_bench_script(name: str, module: str):
    """``tools/bench/<name>`` imported as ``module`` (registered in ``sys.modules``, which dataclasses
    need), or a pytest skip when the script is not in this checkout."""
    import importlib.util
    import sys
    from pathlib import Path

    import pytest

    script = Path(__file__).resolve().parents[2] / "tools" / "bench" / name
    if not script.is_file():
        pytest.skip(f"tools/bench/{name} is not in this checkout")
    spec = importlib.util.spec_from_file_location(module, script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    spec.loader.exec_module(mod)
    return mod
