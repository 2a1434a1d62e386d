"""Conv-BN folding against the unfolded module (eval mode), including grouped transposed convs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeseg.export import fold_conv_bn
from edgeseg.export.fold import fuse_conv_bn


def _random_bn(bn: nn.BatchNorm2d, g: torch.Generator) -> nn.BatchNorm2d:
    with torch.no_grad():
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g))
    return bn


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, padding=1, bias=False),
    nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=True),
    nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False),
    nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, bias=True),
    nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2, bias=False),
])
def test_fuse_matches_conv_then_bn(conv):
    g = torch.Generator().manual_seed(0)
    bn = _random_bn(nn.BatchNorm2d(conv.out_channels), g).eval()
    x = torch.randn(2, conv.in_channels, 9, 11, generator=g)
    with torch.no_grad():
        ref = bn(conv(x))
        got = fuse_conv_bn(conv, bn)(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_model_replaces_pairs_and_keeps_the_original():
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), _random_bn(nn.BatchNorm2d(8), g), nn.ReLU(),
        nn.Sequential(nn.ConvTranspose2d(8, 4, 2, stride=2), _random_bn(nn.BatchNorm2d(4), g)),
        nn.BatchNorm2d(4),  # not after a conv: stays
    ).eval()
    x = torch.randn(1, 3, 10, 12, generator=g)
    folded = fold_conv_bn(model)
    assert folded.folded_conv_bn == 2
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3][1], nn.Identity) and isinstance(folded[4], nn.BatchNorm2d)
    assert isinstance(model[1], nn.BatchNorm2d)  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
