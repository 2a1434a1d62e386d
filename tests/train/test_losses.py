"""Each loss against a hand computation or a straightforward reference on tiny tensors."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeseg.errors import InputError  # noqa: E402
from edgeseg.train.class_weights import class_stats, enet_weights, median_frequency_weights  # noqa: E402
from edgeseg.train.losses import LOSSES, LossConfig, build_loss  # noqa: E402

IGN = 255


def _case(seed=0, n=2, c=4, h=3, w=5, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, c, (n, h, w), generator=g)
    mask = torch.rand(n, h, w, generator=g) < ignore_frac
    target[mask] = IGN
    return logits, target


def _softmax_np(logits):
    x = logits.detach().numpy()
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _valid(logits, target):
    """probabilities [P, C] and labels [P] of valid pixels, by plain loops."""
    p = _softmax_np(logits)
    t = target.numpy()
    probs, labels = [], []
    for n in range(t.shape[0]):
        for y in range(t.shape[1]):
            for x in range(t.shape[2]):
                if t[n, y, x] != IGN:
                    probs.append(p[n, :, y, x])
                    labels.append(t[n, y, x])
    return np.array(probs), np.array(labels)


def test_ce_matches_mean_negative_log_likelihood():
    logits, target = _case()
    probs, labels = _valid(logits, target)
    ref = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    got = build_loss("ce")(logits, target).item()
    assert got == pytest.approx(ref, rel=1e-6)


def test_weighted_ce_matches_weighted_mean():
    logits, target = _case(1)
    w = np.array([0.5, 2.0, 1.0, 3.0])
    probs, labels = _valid(logits, target)
    nll = -np.log(probs[np.arange(len(labels)), labels])
    ref = np.sum(w[labels] * nll) / np.sum(w[labels])
    got = build_loss("wce", class_weights=tuple(w))(logits, target).item()
    assert got == pytest.approx(ref, rel=1e-6)


def test_focal_gamma0_is_ce_and_gamma2_matches_formula():
    logits, target = _case(2)
    ce = build_loss("ce")(logits, target).item()
    assert build_loss("focal", focal_gamma=0.0)(logits, target).item() == pytest.approx(ce, rel=1e-6)
    probs, labels = _valid(logits, target)
    pt = probs[np.arange(len(labels)), labels]
    ref = np.mean(-((1 - pt) ** 2) * np.log(pt))
    assert build_loss("focal", focal_gamma=2.0)(logits, target).item() == pytest.approx(ref, rel=1e-6)


def test_dice_matches_formula():
    logits, target = _case(3)
    probs, labels = _valid(logits, target)
    s, terms = 1.0, []
    for c in range(probs.shape[1]):
        g = (labels == c).astype(float)
        terms.append((2 * np.sum(probs[:, c] * g) + s) / (np.sum(probs[:, c]) + np.sum(g) + s))
    ref = 1 - np.mean(terms)
    assert build_loss("dice")(logits, target).item() == pytest.approx(ref, rel=1e-6)


def _lovasz_reference(probs, labels):
    """Lovász extension of the Jaccard loss by its definition: sum_i e_(i) [D(S_i) - D(S_{i-1})],
    with S_i the i largest errors and D(S) = |S| / |fg u S| the Jaccard loss of mispredicting S."""
    losses = []
    for c in range(probs.shape[1]):
        fg = set(np.flatnonzero(labels == c).tolist())
        if not fg:
            continue
        err = np.abs((labels == c).astype(float) - probs[:, c])
        order = sorted(range(len(err)), key=lambda i: -err[i])
        total, prev, chosen = 0.0, 0.0, set()
        for i in order:
            chosen.add(i)
            d = len(chosen) / len(fg | chosen)
            total += err[i] * (d - prev)
            prev = d
        losses.append(total)
    return float(np.mean(losses))


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_lovasz_softmax_matches_definition(seed):
    logits, target = _case(seed, c=3, h=4, w=4)
    probs, labels = _valid(logits, target)
    ref = _lovasz_reference(probs, labels)
    assert build_loss("lovasz")(logits, target).item() == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_lovasz_skips_absent_classes():
    logits, target = _case(7, c=5)
    target[target == 4] = 0  # class 4 absent
    probs, labels = _valid(logits, target)
    assert build_loss("lovasz")(logits, target).item() == pytest.approx(_lovasz_reference(probs, labels), rel=1e-6)


def _lovasz_autograd(logits, target):
    """The textbook form: per class, errors sorted by torch's float sort, differentiated through it."""
    from edgeseg.train.losses import lovasz_grad

    probs, labels = _valid_torch(logits, target)
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if fg.sum() == 0:
            continue
        errors_sorted, perm = torch.sort((fg - probs[:, c]).abs(), descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def _valid_torch(logits, target):
    probs = torch.softmax(logits, 1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    keep = target.reshape(-1) != IGN
    return probs[keep], target.reshape(-1)[keep]


def test_error_sort_is_the_float_sort():
    from edgeseg.train.losses import sort_errors_descending

    g = torch.Generator().manual_seed(3)
    errors = torch.rand(10_000, generator=g)
    errors[::7] = 0.0  # zeros and many ties
    errors[1::5] = torch.round(errors[1::5] * 8) / 8
    values, perm = sort_errors_descending(errors)
    assert torch.equal(values, torch.sort(errors, descending=True).values)
    assert torch.equal(errors[perm], values)
    assert sorted(perm.tolist()) == list(range(len(errors)))


@pytest.mark.parametrize("seed", [11, 12])
def test_lovasz_float32_value_and_gradient_match_the_textbook_form(seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(2, 5, 16, 20, generator=g) * 2).requires_grad_()
    target = torch.randint(0, 5, (2, 16, 20), generator=g)
    target[:, :3] = IGN
    ours = build_loss("lovasz")(logits, target)
    (grad,) = torch.autograd.grad(ours, logits)
    ref = _lovasz_autograd(logits, target)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-9)
    probs, labels = _valid(logits.detach().double(), target)
    assert ours.item() == pytest.approx(_lovasz_reference(probs, labels), rel=1e-5)


def test_lovasz_value_does_not_depend_on_the_order_of_ties():
    # saturated logits: many probabilities exactly 0 or 1, so many equal errors
    logits = torch.zeros(1, 3, 6, 6)
    logits[0, 0, :3] = 200.0
    logits[0, 1, 3:, :2] = 200.0
    target = torch.zeros(1, 6, 6, dtype=torch.int64)
    target[0, 3:] = 1
    target[0, 5, 5] = 2
    probs, labels = _valid(logits.double(), target)
    assert build_loss("lovasz")(logits, target).item() == pytest.approx(_lovasz_reference(probs, labels), rel=1e-6)


def test_combined_spec_is_weighted_sum_and_differentiable():
    logits, target = _case(8)
    logits.requires_grad_(True)
    total = build_loss("ce+0.5*lovasz + 0.25*dice")(logits, target)
    parts = [build_loss(n)(logits, target).item() for n in ("ce", "lovasz", "dice")]
    assert total.item() == pytest.approx(parts[0] + 0.5 * parts[1] + 0.25 * parts[2], rel=1e-9)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    ignored = (target == IGN).unsqueeze(1).expand_as(logits)
    # ignored pixels get no gradient from any term
    assert torch.count_nonzero(logits.grad[ignored]) == 0


def test_all_ignored_gives_zero_loss_for_every_term():
    logits, target = _case(9)
    target[:] = IGN
    for name in LOSSES.names():
        kw = {"class_weights": (1.0,) * 4} if name == "wce" else {}
        assert build_loss(name, **kw)(logits, target).item() == 0.0


def test_spec_parsing_and_errors():
    cfg = LossConfig.parse("ce+0.5*lovasz")
    assert [(t.name, t.weight) for t in cfg.terms] == [("ce", 1.0), ("lovasz", 0.5)]
    assert cfg.spec == "ce+0.5*lovasz"
    with pytest.raises(InputError, match="unknown loss 'lovaz'"):
        LossConfig.parse("ce+lovaz")
    with pytest.raises(InputError, match="cannot read loss term"):
        LossConfig.parse("ce+-1*dice")
    with pytest.raises(InputError, match="no class weights"):
        LossConfig.parse("wce")
    with pytest.raises(InputError, match="do not match target"):
        build_loss("ce")(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 4, dtype=torch.long))


def test_class_weights_by_hand():
    labels = [np.array([[0, 0, 1, 255]], np.uint8), np.array([[0, 2, 2, 2]], np.uint8)]
    st = class_stats(labels, 4)
    assert st.pixels.tolist() == [3, 1, 3, 0]
    assert st.image_pixels.tolist() == [7, 3, 4, 0]
    p = np.array([3, 1, 3]) / 7
    np.testing.assert_allclose(enet_weights(st)[:3], 1 / np.log(1.02 + p))
    assert enet_weights(st)[3] == 0
    f = np.array([3 / 7, 1 / 3, 3 / 4])  # median 3/7
    np.testing.assert_allclose(median_frequency_weights(st)[:3], (3 / 7) / f)
    assert median_frequency_weights(st)[3] == 0
