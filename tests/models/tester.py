"""The shared model tester: what every registered model must do (used by test_models.py)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgeseg.structures import ImageShape, InputSpec

FORWARD_SIZES = (ImageShape(64, 64), ImageShape(75, 101))
EXPORT_SIZE = ImageShape(60, 84)  # not divisible by 32: exercises odd pooling/unpooling and PSP bins
MAX_REL = 1e-3  # max |onnx - torch| / max |torch|: float32 accumulation order differs in deep nets


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Make BN non-trivial the way training would: random affine parameters, then running
    statistics measured on real-looking frames (BN layers in train mode, cumulative average).
    Folding is then really tested, and random-init outputs depend on the image (without this,
    eval-mode signals fade to nothing in deep MobileNets). All-zero parameters get small noise."""
    from edgeseg.data.synthetic import SceneGenerator

    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gen = SceneGenerator(ImageShape(64, 96), seed=seed)
    spec = InputSpec(size=ImageShape(64, 96))
    x = torch.from_numpy(np.concatenate([spec.preprocess(gen.render_semantic(t)[0])[0] for t in (0, 40)]))
    model.eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised weights (FCN's skip scores, biases) would hide paths
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None
            m.train()
        model(x)
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def preactivation_batchnorms(model: nn.Module) -> int:
    """BatchNorms that open an ``nn.Sequential`` (pre-activation: BN -> activation -> conv)."""
    return sum(isinstance(m, nn.Sequential) and len(m) > 0 and isinstance(m[0], nn.BatchNorm2d) for m in model.modules())


def check_forward(model: nn.Module) -> None:
    for size in FORWARD_SIZES:
        x = torch.randn(2, 3, size.height, size.width, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            out = model(x)
        assert set(out) == {"logits"}, f"outputs {sorted(out)}"
        logits = out["logits"]
        assert logits.shape == (2, model.num_classes, size.height, size.width)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        # the two images differ, so must their logits (no batch mixing / constant output)
        assert float((logits[0] - logits[1]).abs().max()) > 1e-3 * float(logits.abs().max())


def check_fold(model: nn.Module) -> None:
    from edgeseg.export import fold_conv_bn

    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)["logits"]
        folded = fold_conv_bn(model)
        got = folded(x)["logits"]
    n_bn = count(model, nn.BatchNorm2d)
    # a pre-activation BN (BN -> act -> conv, opening an nn.Sequential: FC-DenseNet) has no conv before it to
    # fold into (its input feeds several BNs, some through max pooling); it stays an ONNX BatchNormalization
    n_pre = preactivation_batchnorms(model)
    assert folded.folded_conv_bn == n_bn - n_pre and count(folded, nn.BatchNorm2d) == n_pre
    assert count(model, nn.BatchNorm2d) == n_bn  # the original is untouched
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) <= 1e-4 * max(scale, 1.0)


def model_is_index_routed(model: nn.Module) -> bool:
    """SegNet and DeconvNet route values by pooling switches (``index_routed``)."""
    return bool(getattr(model, "index_routed", False))


def check_export(model: nn.Module, tmp_path) -> dict:
    """Export a bundle, then check ONNX Runtime against PyTorch ourselves (not only the report)."""
    from edgeseg.bundle import Bundle
    from edgeseg.data.synthetic import SceneGenerator
    from edgeseg.export import export_bundle, fold_conv_bn

    spec = InputSpec(size=EXPORT_SIZE)
    bundle = export_bundle(model, tmp_path / "m.edgeseg", name="m", classes=model.num_classes, input_spec=spec)
    bundle = Bundle.open(tmp_path / "m.edgeseg")
    parity = bundle.report["parity"]
    routed = model_is_index_routed(model)  # SegNet, DeconvNet: near-ties move unpooled values (export.parity)
    assert parity["passed"] and parity["argmax_agreement"] >= 0.999 and (routed or parity["max_rel_logit_error"] <= MAX_REL)
    assert parity["source_argmax_agreement"] >= 0.999

    image = SceneGenerator(ImageShape(90, 120), seed=11).render_semantic(5)[0]  # resized by preprocess
    x, _ = bundle.manifest.input.preprocess(image)
    session = ort.InferenceSession(str(bundle.model_path()), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    got = session.run(["logits"], {"images": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["logits"].numpy()
        ref_folded = fold_conv_bn(model)(torch.from_numpy(x))["logits"].numpy()
    assert got.shape == ref.shape == (1, model.num_classes, *EXPORT_SIZE.hw)
    # logits must vary over the image, or the comparisons below would be trivial
    assert float(ref.std(axis=(2, 3)).max()) > 1e-3 * float(np.abs(ref).max())
    assert routed or np.abs(got - ref_folded).max() <= MAX_REL * np.abs(ref_folded).max()  # the graph is exact
    assert (got.argmax(1) == ref_folded.argmax(1)).mean() >= 0.999
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.999  # and agrees with the unfolded model
    # SegNet routes values by pooling indices: after folding, a near-tie may move one value by a
    # pixel (see edgeseg.export.parity), so only its arg-max is held to the unfolded model
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert routed or rel <= MAX_REL, rel
    return parity
