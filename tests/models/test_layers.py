"""Layer-level references: static adaptive pooling, bilinear transposed-conv init, PSPNet exports
at sizes the pyramid bins do not divide."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeseg.models.fcn import Upsample2x
from edgeseg.models.layers import adaptive_avg_pool2d_static


@pytest.mark.parametrize("hw", [(45, 60), (42, 63), (7, 11), (1, 5), (6, 6), (5, 3)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_static_adaptive_pool_equals_pytorch(hw, bins):
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adaptive_avg_pool2d_static(x, bins), F.adaptive_avg_pool2d(x, bins), rtol=1e-5, atol=1e-6)


def test_static_adaptive_pool_hand_computed():
    # 1 x 5 row into 2 bins: PyTorch's bins are [0, 3) and [2, 5) (they overlap)
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0, 5.0]]]])
    assert adaptive_avg_pool2d_static(x, 2)[0, 0].tolist() == [[2.0, 4.0], [2.0, 4.0]]


def test_fcn_upsampling_is_initialised_to_bilinear():
    up = Upsample2x(3)
    x = torch.randn(1, 3, 6, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = up(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert got.shape == ref.shape == (1, 3, 12, 16)
    torch.testing.assert_close(got[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])  # equal away from the border


@pytest.mark.parametrize("size", ["480x360", "500x333"])
def test_pspnet_exports_exactly_at_sizes_bins_do_not_divide(size, tmp_path):
    import onnxruntime as ort

    from edgeseg.export import export_onnx
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape, InputSpec

    from .tester import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("test_pspnet", num_classes=4))
    shape = ImageShape.parse(size)
    feat = (-(-shape.height // 8), -(-shape.width // 8))
    assert feat in ((45, 60), (42, 63)) and any(d % b for d in feat for b in (2, 3, 6))
    path = export_onnx(model, tmp_path / "psp.onnx", InputSpec(size=shape))
    x = torch.randn(1, 3, *shape.hw, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)["logits"].numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.999
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
