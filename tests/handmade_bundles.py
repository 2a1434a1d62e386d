"""Tiny ONNX graphs and bundles built by hand (onnx.helper), with numpy references.

They let backend, decode, predictor and CLI tests run without the model family: a 1x1 Conv that
produces logits (optionally with stride 2, an NHWC uint8 input, a BGR convention), and the same
graph ending in ArgMax + Cast(uint8) (labels in the graph).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.bundle import Bundle, Manifest, ModelFile, OutputSpec
from edgeseg.structures import ImageShape, InputSpec

IR_VERSION = 9  # what onnxruntime 1.x reads for opset 19


def conv_weights(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_classes, 3)).astype(np.float32), rng.normal(size=num_classes).astype(np.float32)


def conv_model(path: Path, num_classes: int = 4, *, layout: str = "NCHW", dtype: str = "float32",
               size: ImageShape | None = None, stride: int = 1, argmax: bool = False, seed: int = 0,
               input_name: str = "images", dynamic: bool = True) -> Path:
    """``images`` -> 1x1 Conv (weights from :func:`conv_weights`) -> ``logits`` [N, C, h, w]
    (or -> ArgMax(axis 1) -> Cast uint8 -> ``labels`` [N, h, w]). NHWC inputs are transposed in the
    graph; uint8 inputs are cast to float in the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = conv_weights(num_classes, seed)
    h_, w_ = (size.height, size.width) if size is not None else ("H", "W")
    batch = "N" if dynamic else 1
    in_shape = [batch, 3, h_, w_] if layout == "NCHW" else [batch, h_, w_, 3]
    elem = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8}[dtype]
    nodes, x = [], input_name
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT))
        x = "xf"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    out = "labels" if argmax else "logits"
    nodes.append(helper.make_node("Conv", [x, "W", "B"], ["logits_raw" if argmax else "logits"], kernel_shape=[1, 1],
                                  strides=[stride, stride]))
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["logits_raw"], ["idx"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.UINT8))
        out_vi = helper.make_tensor_value_info(out, TensorProto.UINT8, [batch, "h", "w"])
    else:
        out_vi = helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, num_classes, "h", "w"])
    graph = helper.make_graph(
        nodes, "handmade", [helper.make_tensor_value_info(input_name, elem, in_shape)], [out_vi],
        initializer=[numpy_helper.from_array(w.reshape(num_classes, 3, 1, 1), "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def custom_op_model(path: Path) -> Path:
    """A graph whose only node is ``com.example:FancyOp`` (no runtime has it)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])
    node = helper.make_node("FancyOp", ["images"], ["logits"], domain="com.example", name="fancy_1")
    model = helper.make_model(helper.make_graph([node], "custom", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.example", 1)])
    model.ir_version = IR_VERSION
    onnx.save(model, str(path))
    return path


def make_bundle(root: Path, onnx_path: Path, *, input_spec: InputSpec, num_classes: int = 4, argmax: bool = False,
                name: str = "handmade") -> Bundle:
    classes = tuple(f"c{i}" for i in range(num_classes))
    out = OutputSpec("labels", "labels", "uint8", ("N", "H", "W")) if argmax else \
        OutputSpec("logits", "logits", "float32", ("N", num_classes, "H", "W"))
    b = Bundle.create(root, Manifest(name=name, task="semantic", classes=classes, input=input_spec, outputs=(out,)))
    b.add_model(ModelFile("model.onnx", "fp32", None, 19), onnx_path)
    b.update_report("parity", {"argmax_agreement": 1.0, "max_rel_error": 0.0})
    return b


def conv_bundle(tmp: Path, num_classes: int = 4, *, input_spec: InputSpec | None = None, stride: int = 1,
                argmax: bool = False, seed: int = 0, name: str = "handmade") -> Bundle:
    """A bundle around :func:`conv_model` whose graph matches ``input_spec`` (layout, dtype)."""
    spec = input_spec or InputSpec(size=ImageShape(8, 12))
    tmp.mkdir(parents=True, exist_ok=True)
    onnx_path = conv_model(tmp / f"{name}.onnx", num_classes, layout=spec.layout, dtype=spec.dtype, stride=stride,
                           argmax=argmax, seed=seed, size=spec.size if spec.size_rule == "fixed" else None)
    return make_bundle(tmp / f"{name}.edgeseg", onnx_path, input_spec=spec, num_classes=num_classes, argmax=argmax,
                       name=name)


def reference_logits(x_nchw: np.ndarray, num_classes: int = 4, seed: int = 0, stride: int = 1) -> np.ndarray:
    """numpy 1x1 conv: ``[N, 3, H, W]`` float -> ``[N, C, H', W']``."""
    w, b = conv_weights(num_classes, seed)
    x = x_nchw[:, :, ::stride, ::stride].astype(np.float64)
    return (np.einsum("ck,nkhw->nchw", w.astype(np.float64), x) + b[None, :, None, None]).astype(np.float32)


def red_instance_bundle(tmp: Path, size: int = 64) -> Bundle:
    """A dense-layout (SOLO-like) instance bundle: instance 0 ("red", score 0.9) is where the image is
    red (the red channel average-pooled by 4, a probability), instance 1 ("rest", score 0.6) is
    everywhere else. Plain resize, pixels / 255."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    s = size
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["red"]),
        helper.make_node("AveragePool", ["red"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["p", "q"], ["masks"], axis=1),
        helper.make_node("Identity", ["score_values"], ["scores"]),
        helper.make_node("Identity", ["class_values"], ["classes"]),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("starts", [0]), ("ends", [1]), ("axes", [1]))]
    inits += [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "one"),
              numpy_helper.from_array(np.array([[0.9, 0.6]], np.float32), "score_values"),
              numpy_helper.from_array(np.array([[0, 1]], np.int64), "class_values")]
    graph = helper.make_graph(nodes, "red_instances", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, s, s])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2]),
                               helper.make_tensor_value_info("classes", TensorProto.INT64, [1, 2]),
                               helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, 2, s // 4, s // 4])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = tmp / "red_instances.onnx"
    onnx.save(model, str(path))
    spec = InputSpec(size=ImageShape(s, s), mean=(0, 0, 0), std=(1, 1, 1))
    outs = (OutputSpec("scores", "scores", "float32", (1, 2)), OutputSpec("classes", "classes", "int64", (1, 2)),
            OutputSpec("masks", "masks", "float32", (1, 2, s // 4, s // 4)))
    b = Bundle.create(tmp / "red.edgeseg", Manifest(name="red", task="instance", classes=("red", "rest"), input=spec,
                                                    outputs=outs, decoder={"layout": "dense", "score_threshold": 0.3}))
    b.add_model(ModelFile("model.onnx", "fp32", None, 19), path)
    return b


def red_square_image(h: int = 96, w: int = 128) -> np.ndarray:
    """Black with a pure-red rectangle (rows 24..72, columns 32..96): :func:`red_instance_bundle`'s
    instance 0."""
    img = np.zeros((h, w, 3), np.uint8)
    img[24:72, 32:96, 0] = 255
    return img


def made_elsewhere(name: str, dst: Path, *, data: str | None = None, int8_isa: tuple[str, ...] | None = None) -> Bundle:
    """A copy of the shipped bundle ``name`` whose report says it was made on another machine: its FP32
    accuracy recorded on ``data`` (a dataset spec, e.g. a folder that is not here) and/or every INT8
    gate run on a CPU with ``int8_isa`` flags (hashes rewritten by :meth:`Bundle.update_report`)."""
    import shutil

    shutil.copytree(Bundle.open(name).root, dst)
    b = Bundle.open(dst)
    report = b.report
    if data is not None:
        b.update_report("accuracy", {**report["accuracy"], "fp32": {**report["accuracy"]["fp32"], "data": data}})
    if int8_isa is not None:
        b.update_report("int8", {t: {**e, "device": {**e.get("device", {}), "cpu": "another CPU", "isa": list(int8_isa)}}
                                 for t, e in report["int8"].items()})
    return Bundle.open(dst)
