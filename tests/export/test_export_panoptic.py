"""Panoptic models -> bundles: Panoptic-DeepLab (host and in-graph grouping) and LPSNet exported
under their own output names, parity on decoded segments (torch vs ONNX Runtime), the manifest's
decoder options (layout, thing classes, dataset category ids), the CLI route and the INT8 gate's
panoptic scorers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

CLASSES = ("sky", "ground", "road", "circle", "rectangle", "triangle")
CATEGORY_IDS = (10, 11, 12, 20, 21, 22)


def _pdl(grouping: str = "host"):
    from edgeseg.models import create_model

    torch.manual_seed(0)
    m = create_model("test_panoptic_deeplab", num_classes=6, class_names=list(CLASSES), thing_classes=[3, 4, 5],
                     grouping=grouping, top_k=20)
    with torch.no_grad():  # a centre map that varies with the image: peaks to group around
        torch.nn.init.normal_(m.center_head[-1].weight, 0.0, 0.5)
        m.center_head[-1].bias.fill_(0.3)
        torch.nn.init.normal_(m.offset_head[-1].weight, 0.0, 0.5)
    return m.eval()


@pytest.mark.parametrize("grouping", ["host", "graph"])
def test_panoptic_deeplab_bundle(tmp_path, grouping):
    import edgeseg
    from edgeseg.decode import decode
    from edgeseg.export.panoptic_export import export_panoptic_bundle
    from edgeseg.export.parity import parity_images
    from edgeseg.structures import ImageShape, InputSpec

    model = _pdl(grouping)
    spec = InputSpec(size=ImageShape(64, 96))
    b = export_panoptic_bundle(model, tmp_path / "pdl.edgeseg", name="pdl", input_spec=spec, category_ids=CATEGORY_IDS)
    m = b.manifest
    want = ["semantic", "center", "offset"] + (["centers", "instance"] if grouping == "graph" else [])
    assert m.task == "panoptic" and [o.name for o in m.outputs] == want and m.classes == CLASSES
    o = m.decoder_options
    assert o.layout == "center" and o.thing_classes == (3, 4, 5) and o.category_ids == CATEGORY_IDS
    parity = b.report["parity"]
    assert parity["passed"] and parity["min_pixel_agreement"] >= 0.99 and parity["min_segment_iou"] >= 0.9
    assert any(a > 0 for a, _ in parity["segments_torch_onnx"])
    img = parity_images(ImageShape(120, 200), count=1)[0]
    got = edgeseg.load(b, backend="onnxruntime", precision="fp32")(img)
    x, meta = spec.preprocess(img)
    with torch.no_grad():
        ref = decode({k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}, meta, m)
    assert got.segment_ids.shape == (120, 200)
    assert np.mean(got.semantic(void=-1) == ref.semantic(void=-1)) > 0.99
    assert {s.category_id for s in got.segments} <= set(CATEGORY_IDS) and any(s.isthing for s in got.segments)
    assert got.class_name(20) == "circle" and got.class_index(22) == 5


def test_lpsnet_bundle_paste_layout(tmp_path):
    from edgeseg.export.panoptic_export import export_panoptic_bundle
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape, InputSpec

    torch.manual_seed(0)
    model = create_model("test_lpsnet").eval()
    b = export_panoptic_bundle(model, tmp_path / "lps.edgeseg", name="lps", input_spec=InputSpec(size=ImageShape(64, 96)))
    m = b.manifest
    assert [o.name for o in m.outputs] == ["semantic", "boxes", "scores", "classes"]
    assert m.decoder_options.layout == "paste" and m.decoder_options.thing_classes == tuple(model.thing_classes)
    assert b.report["parity"]["passed"]


def test_export_cli_routes_panoptic_checkpoints(tmp_path, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.models import save_checkpoint

    model = _pdl()
    ckpt = tmp_path / "pdl.safetensors"
    save_checkpoint(model, ckpt, model_name="test_panoptic_deeplab", num_classes=6,
                    model_kwargs={"class_names": list(CLASSES), "thing_classes": [3, 4, 5], "top_k": 20},
                    extra={"task": "panoptic", "classes": list(CLASSES), "category_ids": list(CATEGORY_IDS)})
    assert main(["export", str(ckpt), "--size", "96x64", "--out", str(tmp_path / "cli.edgeseg")]) == 0
    assert "panoptic, center layout" in capsys.readouterr().out
    m = Bundle.open(tmp_path / "cli.edgeseg").manifest
    assert m.classes == CLASSES and m.decoder_options.category_ids == CATEGORY_IDS
    assert main(["export", str(ckpt), "--size", "96x64", "--argmax-in-graph", "--out", str(tmp_path / "x")]) != 0


def test_export_refuses_models_without_things(tmp_path):
    from edgeseg.errors import ExportError
    from edgeseg.export.panoptic_export import export_panoptic_bundle
    from edgeseg.structures import ImageShape, InputSpec

    model = _pdl()
    model.thing_classes = ()
    with pytest.raises(ExportError, match="thing classes"):
        export_panoptic_bundle(model, tmp_path / "x", name="x", input_spec=InputSpec(size=ImageShape(64, 96)))
    with pytest.raises(ExportError, match="category ids"):
        export_panoptic_bundle(_pdl(), tmp_path / "y", name="y", input_spec=InputSpec(size=ImageShape(64, 96)),
                               category_ids=(1, 2))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_quant_gate_panoptic_scorers(tmp_path):
    """The INT8 gate's panoptic scorers: PQ on a dataset equals the metric run by hand, and the FP32
    model scores 100 against itself."""
    from edgeseg.data import SceneGenerator
    from edgeseg.eval import PanopticMetric
    from edgeseg.export.panoptic_export import export_panoptic_bundle
    from edgeseg.quant.accuracy import TASK_SCORERS, PanopticAgreementScorer, PanopticDatasetScorer
    from edgeseg.structures import ImageShape, InputSpec

    assert TASK_SCORERS["panoptic"] == (PanopticAgreementScorer, PanopticDatasetScorer)
    b = export_panoptic_bundle(_pdl(), tmp_path / "q.edgeseg", name="q", input_spec=InputSpec(size=ImageShape(64, 96)))
    fp32 = b.model_path("fp32")
    gen = SceneGenerator(ImageShape(72, 96), seed=3)
    frames = [gen.render(t) for t in (0, 30)]

    class Sample:
        def __init__(self, f):
            self.panoptic, self.crowd_ids, self._img = f.panoptic, frozenset(), f.image

        def image(self):
            return self._img

    agree = PanopticAgreementScorer([f.image for f in frames], b.manifest, fp32)
    assert agree(fp32) == 100.0
    scorer = PanopticDatasetScorer([Sample(f) for f in frames], b.manifest)
    import edgeseg

    metric = PanopticMetric()
    p = edgeseg.load(b, backend="onnxruntime", precision="fp32")
    for f in frames:
        metric.update(p(f.image), f.panoptic)
    assert scorer(fp32) == pytest.approx(100.0 * metric.compute().pq, abs=1e-9)
