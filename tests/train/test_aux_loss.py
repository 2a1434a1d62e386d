"""Deep supervision: auxiliary logits a model returns in training mode enter the loss, weighted."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeseg.train.loop import auxiliary_loss


def test_auxiliary_loss_is_weighted_mean_of_losses_at_target_size():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    a1, a2 = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    model = torch.nn.Identity()
    model.aux_weight = 0.25
    got = auxiliary_loss(model, {"logits": a1, "aux_logits": [a1, a2]}, F.cross_entropy, target)
    up = F.interpolate(a2, size=(8, 8), mode="bilinear", align_corners=False)
    want = 0.25 * (F.cross_entropy(a1, target) + F.cross_entropy(up, target)) / 2
    assert torch.allclose(got, want)
    # no auxiliary outputs: nothing added; the default weight is PSPNet's 0.4
    assert auxiliary_loss(model, {"logits": a1}, F.cross_entropy, target) == 0.0
    plain = torch.nn.Identity()
    got = auxiliary_loss(plain, {"logits": a1, "aux_logits": [a1]}, F.cross_entropy, target)
    assert torch.allclose(got, 0.4 * F.cross_entropy(a1, target))
