"""export_bundle: manifest, report, in-graph argmax, dynamic batch, parity failure, bad specs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeseg.bundle import Bundle
from edgeseg.errors import BundleError, ExportError
from edgeseg.export import check_parity, export_bundle, export_onnx, fold_conv_bn
from edgeseg.models import create_model
from edgeseg.structures import CAMVID_CLASSES, CAMVID_PALETTE, ImageShape, InputSpec

SIZE = ImageShape(48, 64)


@pytest.fixture(scope="module")
def model():
    from models.tester import randomize_batchnorm  # tests/ is on sys.path (rootdir-relative packages)

    torch.manual_seed(0)
    return randomize_batchnorm(create_model("test_deeplabv3plus_resnet", num_classes=11))


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _frames(n=3):
    from edgeseg.data.synthetic import SceneGenerator

    gen = SceneGenerator(SIZE, seed=5)
    return [gen.render_semantic(t * 20)[0] for t in range(n)]


def test_bundle_contents(model, tmp_path):
    b = export_bundle(model, tmp_path / "road.edgeseg", name="road", classes=CAMVID_CLASSES,
                      input_spec=InputSpec(size=SIZE), palette=CAMVID_PALETTE)
    b = Bundle.open(tmp_path / "road.edgeseg")  # verifies hashes
    m = b.manifest
    assert (m.name, m.task, m.classes) == ("road", "semantic", CAMVID_CLASSES)
    assert m.palette_array.tolist() == CAMVID_PALETTE.tolist()
    assert [o.to_dict() for o in m.outputs] == [{"name": "logits", "kind": "logits", "dtype": "float32", "shape": [1, 11, 48, 64]}]
    assert m.models[0].to_dict() == {"file": "model.onnx", "precision": "fp32", "target": None, "opset": 19}
    assert m.provenance["model"] == "test_deeplabv3plus_resnet" and m.provenance["torch"] == torch.__version__
    g = onnx.load(str(b.model_path()))
    assert [o.version for o in g.opset_import if o.domain in ("", "ai.onnx")] == [19]
    assert "BatchNormalization" not in {n.op_type for n in g.graph.node}
    assert len(g.graph.initializer) == len({n for node in g.graph.node for n in node.input} & {i.name for i in g.graph.initializer})
    assert b.report["parity"]["passed"] and b.report["parity"]["images"] == 2
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(model, tmp_path / "road.edgeseg", name="road", classes=11, input_spec=InputSpec(size=SIZE))


def test_argmax_in_graph_gives_uint8_labels_equal_to_torch_argmax(model, tmp_path):
    b = export_bundle(model, tmp_path / "lab", name="lab", classes=11, input_spec=InputSpec(size=SIZE), argmax_in_graph=True)
    out = b.manifest.outputs[0]
    assert (out.name, out.kind, out.dtype, out.shape) == ("labels", "labels", "uint8", (1, 48, 64))
    assert b.report["parity"]["max_rel_logit_error"] is None and b.report["parity"]["argmax_agreement"] >= 0.999
    x = b.manifest.input.preprocess(_frames(1)[0])[0]
    got = _session(b.model_path()).run(None, {"images": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].argmax(1).numpy()
    assert got.dtype == np.uint8 and got.shape == (1, 48, 64)
    assert (got == ref).mean() >= 0.999


def test_dynamic_batch(model, tmp_path):
    b = export_bundle(model, tmp_path / "dyn", name="dyn", classes=11, input_spec=InputSpec(size=SIZE), dynamic_batch=True)
    assert b.manifest.input.dynamic_batch and b.manifest.outputs[0].shape[0] == "batch"
    x = np.concatenate([b.manifest.input.preprocess(f)[0] for f in _frames(3)])
    got = _session(b.model_path()).run(None, {"images": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].numpy()
    assert got.shape == (3, 11, 48, 64)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()



@pytest.mark.parametrize("name", ["test_setr_naive", "test_lawin"])
def test_dynamic_batch_transformers_take_any_batch(name, tmp_path):
    """before: SETR and Lawin turned the batch into a number (int(x.shape[0])): a --dynamic-batch export took batch 2
    only (the example's, where parity was checked) and failed on one image."""
    from edgeseg.models import create_model

    torch.manual_seed(0)
    m = create_model(name, num_classes=3).eval()
    b = export_bundle(m, tmp_path / "dyn", name=name, classes=3, input_spec=InputSpec(size=SIZE), dynamic_batch=True)
    frames = _frames(3)
    session = _session(b.model_path())
    for n in (1, 3):
        x = np.concatenate([b.manifest.input.preprocess(f)[0] for f in frames[:n]])
        got = session.run(None, {"images": x})[0]
        with torch.no_grad():
            ref = m(torch.from_numpy(x))["logits"].numpy()
        assert got.shape == (n, 3, 48, 64) and np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_a_model_that_fixes_its_batch_is_refused_a_dynamic_batch_export(tmp_path):
    class FixedBatch(nn.Module):
        num_classes, model_name = 2, "fixed"

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            n = int(x.shape[0])  # the pattern SETR and Lawin had
            return {"logits": self.conv(x).reshape(n, 2, *x.shape[-2:])}

    with pytest.raises(ExportError, match=r"--dynamic-batch: model 'fixed' fixes the batch size in its code \(the "
                                          r"exported graph takes batch 2 only\)"):
        export_bundle(FixedBatch().eval(), tmp_path / "f", name="fixed", classes=2, input_spec=InputSpec(size=SIZE),
                      dynamic_batch=True, include_checkpoint=False)
    assert not (tmp_path / "f").exists()

class _ExportsSomethingElse(nn.Module):
    """A model whose exported graph differs from its eager behaviour (sign flip under export)."""

    num_classes = 3
    model_name = "liar"

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, images):
        y = self.conv(images)
        return {"logits": -y if torch.compiler.is_exporting() else y}


def test_parity_failure_raises_and_writes_nothing(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError, match="parity check failed for liar"):
        export_bundle(_ExportsSomethingElse().eval(), tmp_path / "bad", name="bad", classes=3, input_spec=InputSpec(size=SIZE))
    assert not (tmp_path / "bad").exists()


def test_check_parity_numbers_against_hand_computation(model, tmp_path):
    folded = fold_conv_bn(model)
    path = export_onnx(folded, tmp_path / "m.onnx", InputSpec(size=SIZE))
    frames = _frames(2)
    rep = check_parity(folded, path, InputSpec(size=SIZE), images=frames, source_model=model)
    spec = InputSpec(size=SIZE)
    xs = [spec.preprocess(f)[0] for f in frames]
    got = np.concatenate([_session(path).run(None, {"images": x})[0] for x in xs])
    for which, m, agreement, rel in ((folded, "folded", rep.argmax_agreement, rep.max_rel_logit_error),
                                     (model, "source", rep.source_argmax_agreement, rep.source_max_rel_logit_error)):
        with torch.no_grad():  # one image at a time, as the check does (batched kernels round differently)
            ref = np.concatenate([which(torch.from_numpy(x))["logits"].numpy() for x in xs])
        d = np.abs(got.astype(np.float64) - ref)
        assert agreement == pytest.approx((got.argmax(1) == ref.argmax(1)).mean()), m
        assert rel == pytest.approx(float(d.max() / np.abs(ref).max()), rel=1e-6, abs=1e-12), m
    assert rep.inputs == "caller" and rep.images == 2


def test_bad_export_requests(model, tmp_path):
    with pytest.raises(ExportError, match="NCHW float32"):
        export_onnx(model, tmp_path / "x.onnx", InputSpec(size=SIZE, layout="NHWC"))
    with pytest.raises(ExportError, match="fixed input size"):
        export_onnx(model, tmp_path / "x.onnx", InputSpec(size_rule="any"))
    with pytest.raises(ExportError, match="3 class names for a model with 11 outputs"):
        export_bundle(model, tmp_path / "y", name="y", classes=["a", "b", "c"], input_spec=InputSpec(size=SIZE))


def test_predictor_on_exported_bundle_matches_torch(model, tmp_path):
    import edgeseg

    export_bundle(model, tmp_path / "p", name="p", classes=11, input_spec=InputSpec(size=SIZE))
    frame = _frames(1)[0]  # already at the network size: no resize on either side
    x = InputSpec(size=SIZE).preprocess(frame)[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].argmax(1)[0].numpy()
    result = edgeseg.load(tmp_path / "p", backend="onnxruntime")(frame)
    assert (result.labels == ref).mean() >= 0.999


def test_a_one_class_semantic_export_is_refused_with_the_fix(tmp_path, capsys):
    """before: exported; every pixel came out class 0 (argmax over one channel) and the INT8 gate could not fail."""
    from edgeseg.cli import main

    assert main(["export", "test_fcn8s", "--num-classes", "1", "--size", "64x48", "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert "test_fcn8s with one class" in err and "--num-classes 2" in err and "edgeseg import --classes 2" in err
    assert not (tmp_path / "u").exists()


def test_panoptic_models_export_by_name_with_their_things(tmp_path, capsys):
    """before: `edgeseg export panoptic_deeplab_mobilenetv3_small` failed ('thing classes [] ...', its fix not doable from
    the CLI) and LPSNet exported only at its default class count; now 19 classes default to Cityscapes' things and
    --things gives others."""
    import json

    from edgeseg.cli import main
    from edgeseg.models.panoptic_deeplab import CITYSCAPES_THINGS, panoptic_deeplab_mobilenetv3_small

    assert panoptic_deeplab_mobilenetv3_small().thing_classes == CITYSCAPES_THINGS == tuple(range(11, 19))
    out = tmp_path / "pdl.edgeseg"
    assert main(["export", "test_panoptic_deeplab", "--num-classes", "5", "--things", "3,4", "--size", "64x48",
                 "--out", str(out), "--no-checkpoint"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["task"] == "panoptic" and m["decoder"]["thing_classes"] == [3, 4]
    assert main(["export", "test_panoptic_deeplab", "--things", "a,b", "--out", str(tmp_path / "x")]) == 2
    assert "--things 'a,b': give the thing classes' indices" in capsys.readouterr().err
    assert main(["export", "test_fcn8s", "--things", "1", "--out", str(tmp_path / "y")]) == 2  # not a panoptic model
    assert "--things applies to panoptic models; test_fcn8s is a semantic model" in capsys.readouterr().err
    (tmp_path / "w.safetensors").write_bytes(b"x")
    assert main(["export", str(tmp_path / "w.safetensors"), "--things", "1", "--out", str(tmp_path / "z")]) == 2
    assert "--things: a checkpoint carries its model's thing classes" in capsys.readouterr().err


def test_export_names_the_right_command_for_an_onnx_file_and_suggests_users_models(tmp_path, capsys):
    """A family audit: `edgeseg export model.onnx` asked for a checkpoint's metadata file; an unknown name logged
    'exporting with random weights' first and suggested the tiny test variants."""
    from edgeseg.cli import main

    assert main(["export", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "x")]) == 2
    assert f"edgeseg import {tmp_path / 'm.onnx'} --task" in capsys.readouterr().err
    assert main(["export", "deeplab_v3", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "random weights" not in err and "unknown model 'deeplab_v3'" in err and "test_" not in err
