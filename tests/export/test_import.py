"""import_onnx with ONNX made by hand (onnx.helper) and by the legacy opset-11 exporter: the
runtime path (InputSpec.preprocess + ONNX Runtime on the bundle) must equal a hand-computed
reference, conventions included; bad files fail with clear errors."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeseg.bundle import Bundle
from edgeseg.errors import ExportError, InputError, UnsupportedError
from edgeseg.export import import_onnx
from edgeseg.structures import ImageShape, InputSpec

H, W, C = 24, 32, 4
RNG = np.random.default_rng(0)
WEIGHTS = RNG.normal(size=(3, C)).astype(np.float32)
BGR_MEAN = (103.94, 116.78, 123.68)


def _model(nodes, inputs, outputs, inits=(), opset=11, ir_version=None):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hand")
    if ir_version:
        m.ir_version = ir_version
    return m


def _nhwc_logits_model(path, opset=11):
    """NHWC float input -> per-pixel linear map to C logits, NHWC output (a 1x1 conv as MatMul)."""
    m = _model([helper.make_node("MatMul", ["input_1", "w"], ["scores"])],
               [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", H, W, 3])],
               [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", H, W, C])],
               [numpy_helper.from_array(WEIGHTS, "w")], opset=opset)
    onnx.save(m, path)
    return path


def _image(seed=1):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _run(bundle: Bundle, image: np.ndarray) -> np.ndarray:
    x, _ = bundle.manifest.input.preprocess(image)
    sess = ort.InferenceSession(str(bundle.model_path()), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0]


def test_nhwc_bgr_0_255_mean_model_is_honoured_exactly(tmp_path):
    src = _nhwc_logits_model(tmp_path / "tf.onnx")
    spec = InputSpec(layout="NHWC", color="BGR", mean=BGR_MEAN, std=(1, 1, 1), scale=1.0, size=ImageShape(H, W))
    b = import_onnx(src, tmp_path / "tf.edgeseg", classes=C, input_spec=spec)
    b = Bundle.open(tmp_path / "tf.edgeseg")
    m = b.manifest
    assert (m.input.layout, m.input.color, m.input.mean, m.input.scale, m.input.dynamic_batch) == ("NHWC", "BGR", BGR_MEAN, 1.0, True)
    assert m.outputs[0].kind == "logits" and list(m.outputs[0].shape) == ["batch", C, H, W]
    assert m.models[0].opset == 13 and m.provenance["original_opset"] == 11 and m.provenance["original_input"] == "input_1"
    assert b.report["import"]["appended_nodes"] == ["Transpose"]
    img = _image()
    ref = ((img[..., ::-1].astype(np.float32) - np.float32(BGR_MEAN)) @ WEIGHTS).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(_run(b, img), ref, rtol=1e-5, atol=1e-3)


def test_opset11_torch_export_is_upgraded_and_matches_torch(tmp_path):
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("test_unet", num_classes=3).eval()
    src = tmp_path / "legacy.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, H, W),), str(src), dynamo=False, opset_version=11,
                      input_names=["input.1"], output_names=["out"])
    assert onnx.load(str(src)).opset_import[0].version == 11
    b = import_onnx(src, tmp_path / "u.edgeseg", classes=["a", "b", "c"], input_spec=InputSpec(size=ImageShape(H, W)))
    assert b.manifest.models[0].opset == 13 and b.manifest.provenance["original_output"] == "out"
    img = _image(2)
    x, _ = InputSpec(size=ImageShape(H, W)).preprocess(img)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].numpy()
    got = _run(b, img)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_label_output_int64_keepdims_becomes_uint8(tmp_path):
    """NCHW uint8 input (the model casts and normalises itself), ArgMax keepdims -> int64 [N,1,H,W]."""
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["xf", "w"], ["s"]),
             helper.make_node("ArgMax", ["s"], ["lab"], axis=1, keepdims=1)]
    w = RNG.normal(size=(C, 3, 1, 1)).astype(np.float32)
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, H, W])],
               [helper.make_tensor_value_info("lab", TensorProto.INT64, [1, 1, H, W])], [numpy_helper.from_array(w, "w")],
               opset=13, ir_version=7)
    onnx.save(m, tmp_path / "lab.onnx")
    b = import_onnx(tmp_path / "lab.onnx", tmp_path / "lab.edgeseg", classes=C,
                    input_spec=InputSpec(size=ImageShape(H, W)))  # declared float32: the graph says uint8
    assert b.manifest.input.dtype == "uint8" and not b.manifest.input.dynamic_batch
    out = b.manifest.outputs[0]
    assert (out.name, out.kind, out.dtype, list(out.shape)) == ("labels", "labels", "uint8", [1, H, W])
    img = _image(3)
    ref = np.einsum("hwc,kc->khw", img.astype(np.float32), w[:, :, 0, 0]).argmax(0)[None]
    got = _run(b, img)
    assert got.dtype == np.uint8 and np.array_equal(got, ref)


def test_corrupt_and_missing_files(tmp_path):
    spec = InputSpec(size=ImageShape(H, W))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ExportError, match="bad.onnx"):
        import_onnx(bad, tmp_path / "o", classes=2, input_spec=spec)
    with pytest.raises(InputError, match="not found"):
        import_onnx(tmp_path / "missing.onnx", tmp_path / "o", classes=2, input_spec=spec)
    assert not (tmp_path / "o").exists()


def test_opset_7_is_refused(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, H, W])], opset=7, ir_version=3)
    onnx.save(m, tmp_path / "old.onnx")
    with pytest.raises(ExportError, match="opset 7 is too old"):
        import_onnx(tmp_path / "old.onnx", tmp_path / "o", classes=3, input_spec=InputSpec(size=ImageShape(H, W)))


def test_op_onnxruntime_lacks_is_named(tmp_path):
    nodes = [helper.make_node("FancySegment", ["x"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, H, W])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "custom.onnx")
    with pytest.raises(UnsupportedError, match="FancySegment"):
        import_onnx(tmp_path / "custom.onnx", tmp_path / "o", classes=3, input_spec=InputSpec(size=ImageShape(H, W)))


def test_declared_conventions_are_checked_against_the_graph(tmp_path):
    src = _nhwc_logits_model(tmp_path / "tf.onnx")
    with pytest.raises(InputError, match="--layout NHWC"):
        import_onnx(src, tmp_path / "o", classes=C, input_spec=InputSpec(size=ImageShape(H, W)))  # declared NCHW
    with pytest.raises(InputError, match=f"--size {W}x{H}"):
        import_onnx(src, tmp_path / "o", classes=C, input_spec=InputSpec(layout="NHWC", size=ImageShape(H + 8, W)))
    with pytest.raises(ExportError, match="--classes"):
        import_onnx(src, tmp_path / "o", classes=C + 3, input_spec=InputSpec(layout="NHWC", size=ImageShape(H, W)))
    with pytest.raises(ExportError, match=r"outputs \(scores \[1, \d+, \d+, \d+\]\) are not a prototype-mask instance layout"):
        import_onnx(src, tmp_path / "o", task="instance", classes=C, input_spec=InputSpec(layout="NHWC", size=ImageShape(H, W)))


def test_opset9_upsample_model_is_converted_and_exact(tmp_path):
    """Old exporters wrote Upsample (removed in opset 10); the converter turns it into Resize."""
    w = RNG.normal(size=(3, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2]),
             helper.make_node("Upsample", ["c", "s"], ["y"], mode="nearest")]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")],
               opset=9, ir_version=4)
    onnx.save(m, tmp_path / "up9.onnx")
    spec = InputSpec(size=ImageShape(16, 16))
    b = import_onnx(tmp_path / "up9.onnx", tmp_path / "up9.edgeseg", classes=3, input_spec=spec)
    assert b.manifest.models[0].opset == 13 and b.manifest.provenance["original_opset"] == 9
    assert "Upsample" not in {n.op_type for n in onnx.load(str(b.model_path())).graph.node}
    img = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    x = spec.preprocess(img)[0][0]
    ref = np.einsum("kc,chw->khw", w[:, :, 0, 0], x[:, ::2, ::2]).repeat(2, 1).repeat(2, 2)[None]
    np.testing.assert_allclose(_run(b, img), ref, rtol=1e-5, atol=1e-5)


def test_predictor_on_imported_bundle_honours_its_conventions(tmp_path):
    import edgeseg

    src = _nhwc_logits_model(tmp_path / "tf.onnx")
    spec = InputSpec(layout="NHWC", color="BGR", mean=BGR_MEAN, std=(1, 1, 1), scale=1.0, size=ImageShape(H, W))
    import_onnx(src, tmp_path / "tf.edgeseg", classes=C, input_spec=spec)
    img = _image(7)
    ref = ((img[..., ::-1].astype(np.float32) - np.float32(BGR_MEAN)) @ WEIGHTS).argmax(-1)
    result = edgeseg.load(tmp_path / "tf.edgeseg", backend="onnxruntime")(img)
    assert result.labels.shape == (H, W) and np.array_equal(result.labels, ref)


def test_auxiliary_head_listed_first_is_not_taken(tmp_path, caplog):
    """torchvision's segmentation models export ``out`` and ``aux``; an exporter that lists ``aux`` first
    made the import take the auxiliary head's logits. The prediction is the first output not named like an
    auxiliary head, and the log names what was dropped."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.export.importer import import_onnx
    from edgeseg.structures import ImageShape, InputSpec

    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.normal(size=(5, 3, 1, 1)).astype(np.float32), n) for n in ("w_out", "w_aux")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w_aux"], ["aux"]), helper.make_node("Conv", ["input", "w_out"], ["out"])],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("aux", TensorProto.FLOAT, [1, 5, 32, 32]),
         helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5, 32, 32])], w)
    src = tmp_path / "aux.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    spec = InputSpec(size=ImageShape(32, 32))
    bundle = import_onnx(src, tmp_path / "a.edgeseg", classes=5, input_spec=spec)
    assert bundle.manifest.provenance["original_output"] == "out" and "dropping the others" in caplog.text
    rgb = rng.integers(0, 255, (32, 32, 3), np.uint8)
    x, _ = spec.preprocess(rgb)
    want = make_session(src.read_bytes()).run(["out"], {"input": x})[0][0].argmax(0)
    assert np.array_equal(edgeseg.load(bundle.root, backend="onnxruntime")(rgb).labels, want)


def test_a_model_ending_in_softmax_gives_probabilities_as_its_confidence(tmp_path):
    """Its outputs are probabilities: the confidence is the chosen class's own (before session 41 it was the
    softmax of the probabilities, about 1/C whatever the model said)."""
    import edgeseg

    m = _model([helper.make_node("MatMul", ["input_1", "w"], ["scores"]),
                helper.make_node("Softmax", ["scores"], ["probs"], axis=3)],
               [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, H, W, 3])],
               [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, H, W, C])],
               [numpy_helper.from_array(WEIGHTS * 20, "w")], opset=13)
    onnx.save(m, tmp_path / "p.onnx")
    b = import_onnx(tmp_path / "p.onnx", tmp_path / "b", classes=C, input_spec=InputSpec(layout="NHWC", size=(H, W)))
    assert b.manifest.decoder_options.scores == "probabilities"
    img = _image()
    probs = _run(b, img)[0]  # [C, H, W] after the import's transpose
    res = edgeseg.load(b.root, backend="onnxruntime").set_options(confidence=True)(img)
    np.testing.assert_allclose(res.confidence, probs.max(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(res.labels, probs.argmax(axis=0))
    plain = import_onnx(_nhwc_logits_model(tmp_path / "l.onnx", opset=13), tmp_path / "l", classes=C,
                        input_spec=InputSpec(layout="NHWC", size=(H, W)))
    assert plain.manifest.decoder_options.scores == "logits"


def test_a_half_precision_export_imports_as_it_is_and_its_weights_are_named(tmp_path):
    """A ``.half()`` export (float16 weights, input and output, as Ultralytics' ``half=True`` writes): imported
    as it is (float16 feed), its manifest entry naming the float16 weights (its precision stays the bundle's
    float model, fp32), its labels those of the float32 export, and ``--precision fp16`` on ONNX Runtime
    refused with what fp16 means here."""
    import edgeseg
    from edgeseg.errors import BundleError

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))

        def forward(self, x):
            return self.body(x)

    torch.manual_seed(0)
    net = Net().eval()
    spec = InputSpec(size=ImageShape(48, 64))
    bundles = {}
    for dtype in (torch.float32, torch.float16):
        path = tmp_path / f"{dtype}.onnx"
        torch.onnx.export(net.to(dtype), torch.zeros(1, 3, 48, 64, dtype=dtype), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"])
        bundles[dtype] = import_onnx(path, tmp_path / f"{dtype}.edgeseg", classes=4, input_spec=spec)
    half, full = bundles[torch.float16], bundles[torch.float32]
    assert half.manifest.input.dtype == "float16" and full.manifest.input.dtype == "float32"
    assert half.model_entry("fp32").weights == "float16" and full.model_entry("fp32").weights is None
    assert "weights" not in full.manifest.to_dict()["models"][0]  # float32 manifests unchanged
    assert Bundle.open(half.root).model_entry("fp32").weights == "float16"  # read back
    image = _image()
    assert np.mean(_run(half, image).argmax(1) == _run(full, image).argmax(1)) > 0.99
    with pytest.raises(BundleError, match="fp16 is TensorRT's precision") as err:
        edgeseg.load(half, backend="onnxruntime", precision="fp16")(image)
    assert "float16 weights" in str(err.value)
    from edgeseg.bundle import ModelFile

    with pytest.raises(BundleError, match="unknown weights 'int4'"):
        ModelFile.from_dict({"file": "model.onnx", "weights": "int4"})


@pytest.mark.parametrize("form", ["inner images and logits", "output named images", "input named logits",
                                  "initializer named images listed as an input"])
def test_tensors_named_like_edgesegs_io_move_aside(tmp_path, form):
    """edgeseg's bundles read ``images`` and write ``logits``; a model that already uses those names inside, for
    its output or its input, or (old IR) for an initializer listed among its inputs, was refused or broken: the
    tensor is renamed, and the bundle gives the model's own logits."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.export.importer import import_onnx
    from edgeseg.structures import ImageShape, InputSpec

    rng = np.random.default_rng(0)
    w = nh.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w")
    bias_name = "images" if form.startswith("initializer") else "b"
    b = nh.from_array(np.array([0.1, -0.2, 0.3, 0.0], np.float32), bias_name)
    x, out = ("logits", "out") if form == "input named logits" else ("x", "images" if form == "output named images" else "out")
    if form == "inner images and logits":
        nodes = [h.make_node("Relu", [x], ["images"]), h.make_node("Conv", ["images", "w", "b"], ["logits"], pads=[1] * 4),
                 h.make_node("Identity", ["logits"], [out])]
    else:
        nodes = [h.make_node("Conv", [x, "w", bias_name], [out], pads=[1] * 4)]
    inputs = [h.make_tensor_value_info(x, T.FLOAT, [1, 3, 16, 24])]
    if form.startswith("initializer"):  # IR 3: initializers are listed among the inputs
        inputs += [h.make_tensor_value_info("w", T.FLOAT, [4, 3, 3, 3]), h.make_tensor_value_info("images", T.FLOAT, [4])]
    m = h.make_model(h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info(out, T.FLOAT, [1, 4, 16, 24])], [w, b]),
                     opset_imports=[h.make_opsetid("", 11 if form.startswith("initializer") else 17)])
    m.ir_version = 3 if form.startswith("initializer") else 8
    onnx.save(m, str(tmp_path / "m.onnx"))
    spec = InputSpec(size=ImageShape(16, 24))
    import_onnx(tmp_path / "m.onnx", tmp_path / "m.edgeseg", classes=("a", "b", "c", "d"), input_spec=spec)
    rgb = rng.integers(0, 255, (16, 24, 3), np.uint8)
    ref = make_session((tmp_path / "m.onnx").read_bytes()).run(None, {x: spec.preprocess(rgb)[0]})[0]
    ours = edgeseg.load(tmp_path / "m.edgeseg", backend="onnxruntime")(rgb).labels
    assert np.array_equal(ours, ref[0].argmax(axis=0))


@pytest.mark.parametrize("elem, shape, words", [
    (1, [1, 1, 32, 32], ["takes one (grey) channel", "3-channel input"]),        # was "is it NHWC? pass --layout NHWC"
    (16, [1, 3, 32, 32], ["is bfloat16", "float32 (or float16, uint8) image input"]),  # was "onnx-type-16", no fix
])
def test_grey_and_bfloat16_inputs_are_named_for_what_they_are(tmp_path, capsys, elem, shape, words):
    import onnx
    from onnx import helper

    from edgeseg.cli import main

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", elem, shape)], [helper.make_tensor_value_info("y", elem, shape)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    assert main(["import", str(tmp_path / "m.onnx"), "--classes", "3", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_names_from_a_hugging_face_config_that_do_not_fit_are_traced_to_it(tmp_path, capsys):
    """id2label with 2 names for a 3-class model said only 'check --classes'."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.cli import main

    w = numpy_helper.from_array(np.zeros((3, 3, 1, 1), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["pixel_values", "w"], ["logits"])], "g",
                          [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 32, 32])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "model.onnx"))
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "road", "1": "sky"}}))
    assert main(["import", str(tmp_path / "model.onnx"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "class names came from" in err and "config.json" in err, err


def test_sidecar_json_with_a_bom_is_read_and_one_nested_too_deep_is_named(tmp_path):
    """Session 50's fuzzing: a preprocessor_config.json saved with a byte-order mark was refused (ImageNet's mean and
    std taken instead of the file's); one nested 100,000 deep ended in a RecursionError traceback; a graph without
    outputs in ONNX Runtime's own error."""
    import json

    from edgeseg.export.hf_config import huggingface_config
    from edgeseg.export.importer import load_onnx_checked

    model = tmp_path / "model.onnx"
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    pre = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "do_normalize": True}
    (tmp_path / "preprocessor_config.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(pre).encode())
    cfg = huggingface_config(model)
    assert cfg.input["mean"] == (0.5, 0.5, 0.5) and not cfg.problems
    (tmp_path / "preprocessor_config.json").write_text("[" * 100000 + "]" * 100000)
    cfg = huggingface_config(model)
    assert any("not a readable JSON file" in p for p in cfg.problems)
    del g.output[:]
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "none.onnx"))
    with pytest.raises(ExportError, match="declares no outputs"):
        load_onnx_checked(tmp_path / "none.onnx")


@pytest.mark.parametrize("out_name", ["logits", "labels"])
def test_an_output_already_named_as_edgeseg_names_it_survives_appended_nodes(tmp_path, out_name):
    """Session 50's fuzzing: an NHWC output named `logits` (a Transpose appended) or an int64 argmax named `labels` (a
    Cast appended) was refused: "Duplicate definition of name (logits)" from ONNX Runtime. The output moves aside."""
    if out_name == "logits":
        m = _model([helper.make_node("MatMul", ["input_1", "w"], ["logits"])],
                   [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", H, W, 3])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", H, W, C])],
                   [numpy_helper.from_array(WEIGHTS, "w")])
    else:
        m = _model([helper.make_node("MatMul", ["input_1", "w"], ["scores"]),
                    helper.make_node("ArgMax", ["scores"], ["labels"], axis=3, keepdims=0)],
                   [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", H, W, 3])],
                   [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", H, W])],
                   [numpy_helper.from_array(WEIGHTS, "w")])
    onnx.save(m, tmp_path / "m.onnx")
    spec = InputSpec(layout="NHWC", color="BGR", mean=BGR_MEAN, std=(1, 1, 1), scale=1.0, size=ImageShape(H, W))
    b = import_onnx(tmp_path / "m.onnx", tmp_path / "m.edgeseg", classes=C, input_spec=spec)
    image = _image()
    x = (image[..., ::-1].astype(np.float32) - np.array(BGR_MEAN, np.float32))[None]
    want = (x @ WEIGHTS).argmax(-1)[0]
    out = _run(b, image)
    got = out[0] if out_name == "labels" else out[0].argmax(0)
    assert (got == want).all()


def test_an_output_batch_other_than_the_inputs_swapped_axes_and_constant_scores(tmp_path, caplog):
    """Session 50's fuzzing: an output of batch 2 for one image imported (then every frame failed, "got a batch of
    2"); an output with height and width swapped, and a model whose scores are one value everywhere, imported
    without a word (labels turned; one class everywhere)."""
    spec = InputSpec(size=ImageShape(H, W))

    def model(name, nodes, out_shape, inits=()):
        m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
        onnx.save(m, tmp_path / f"{name}.onnx")
        return tmp_path / f"{name}.onnx"

    twice = model("b2", [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)], [2, 3, H, W])
    with pytest.raises(ExportError, match=r"gives 2 outputs for the 1 image it was fed \(output \[2, 3, 24, 32\]\)"):
        import_onnx(twice, tmp_path / "b2.edgeseg", classes=3, input_spec=spec)
    swapped = model("sw", [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2])], [1, 3, W, H])
    flat = model("flat", [helper.make_node("Mul", ["x", "zero"], ["y"])], [1, 3, H, W],
                 [numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    with caplog.at_level("WARNING", logger="edgeseg.export.importer"):
        import_onnx(swapped, tmp_path / "sw.edgeseg", classes=3, input_spec=spec)
        import_onnx(flat, tmp_path / "flat.edgeseg", classes=3, input_spec=spec)
    assert "the output is 32x24 (HxW) for a 24x32 input: height and width look swapped" in caplog.text
    assert "scores are the same at every pixel of the test frame" in caplog.text
    assert caplog.text.count("swapped") == 1 and caplog.text.count("same at every pixel") == 1
