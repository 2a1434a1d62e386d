"""Segmentation losses, combinable from a spec such as ``"ce+0.5*lovasz"``.

Every loss takes ``logits float[N, C, H, W]`` and ``target int64[N, H, W]`` and skips pixels whose
target is ``ignore_index`` (255, :data:`edgeseg.data.IGNORE`).

* ``ce``     cross-entropy.
* ``wce``    class-weighted cross-entropy; the weights come from the class frequencies of the
             training set (:func:`edgeseg.train.class_weights.class_weights`), e.g. ENet's
             ``1 / ln(1.02 + p)`` (Paszke et al., 2016) or median frequency balancing
             (Eigen & Fergus, 2015).
* ``focal``  focal loss ``-(1 - p_t)^gamma log p_t`` (Lin et al., 2017); ``gamma = 0`` is CE.
* ``dice``   soft Dice loss ``1 - mean_c (2 |P_c G_c| + s) / (|P_c| + |G_c| + s)`` (Milletari et al., 2016).
* ``lovasz`` Lovász-softmax, a convex surrogate of the Jaccard loss (Berman et al., CVPR 2018),
             over the classes present in the batch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .._registry import Registry
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LossTerm:
    """One weighted term of a loss spec: ``weight * name``."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class LossConfig:
    """A typed loss: a sum of weighted terms plus their shared options.

    class_weights: per-class weights used by ``wce`` (required for it).
    focal_gamma:   the focusing parameter of ``focal``.
    dice_smooth:   the additive smoothing ``s`` of ``dice``.
    """

    terms: tuple[LossTerm, ...]
    ignore_index: int = IGNORE_INDEX
    class_weights: tuple[float, ...] | None = None
    focal_gamma: float = 2.0
    dice_smooth: float = 1.0

    @classmethod
    def parse(cls, spec: str, **options) -> "LossConfig":
        """Parse ``"ce+0.5*lovasz"`` (terms joined by ``+``, each ``[WEIGHT*]NAME``)."""
        terms = []
        for raw in str(spec).replace(" ", "").split("+"):
            m = re.fullmatch(r"(?:(\d+(?:\.\d*)?|\.\d+)\*)?([a-z_]+)", raw)
            if not m:
                raise InputError(
                    f"cannot read loss term {raw!r} in {spec!r}",
                    fix=f"write terms like ce+0.5*lovasz; known losses: {', '.join(LOSSES.names())}",
                )
            name = m.group(2)
            LOSSES.entry(name)  # raises with close names when unknown
            terms.append(LossTerm(name, float(m.group(1)) if m.group(1) else 1.0))
        cfg = cls(tuple(terms), **options)
        if any(t.name == "wce" for t in terms) and cfg.class_weights is None:
            raise InputError(
                f"loss {spec!r} uses wce but no class weights were given",
                fix="pass class_weights (e.g. edgeseg.train.class_weights(dataset, method='enet'))",
            )
        return cfg

    @property
    def spec(self) -> str:
        return "+".join(t.name if t.weight == 1.0 else f"{t.weight:g}*{t.name}" for t in self.terms)

    def to_dict(self) -> dict:
        return {
            "spec": self.spec,
            "ignore_index": self.ignore_index,
            "class_weights": None if self.class_weights is None else list(self.class_weights),
            "focal_gamma": self.focal_gamma,
            "dice_smooth": self.dice_smooth,
        }


LossFn = Callable[["torch.Tensor", "torch.Tensor", LossConfig], "torch.Tensor"]
LOSSES: Registry[LossFn] = Registry("loss", InputError)


def _full(logits: "torch.Tensor") -> "torch.Tensor":
    """Half-precision logits (autocast) are computed in float32; float32/float64 stay as they are."""
    import torch

    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _zero(logits: "torch.Tensor") -> "torch.Tensor":
    return logits.sum() * 0.0  # keeps the graph when every pixel is ignored


@LOSSES.register("ce")
def cross_entropy(logits, target, cfg: LossConfig):
    import torch.nn.functional as F

    if not bool((target != cfg.ignore_index).any()):
        return _zero(logits)
    return F.cross_entropy(_full(logits), target, ignore_index=cfg.ignore_index)


@LOSSES.register("wce")
def weighted_cross_entropy(logits, target, cfg: LossConfig):
    import torch
    import torch.nn.functional as F

    if not bool((target != cfg.ignore_index).any()):
        return _zero(logits)
    w = torch.as_tensor(cfg.class_weights, dtype=_full(logits).dtype, device=logits.device)
    if w.numel() != logits.shape[1]:
        raise InputError(f"wce: {w.numel()} class weights for a model with {logits.shape[1]} classes")
    return F.cross_entropy(_full(logits), target, weight=w, ignore_index=cfg.ignore_index)


@LOSSES.register("focal")
def focal(logits, target, cfg: LossConfig):
    import torch

    valid = target != cfg.ignore_index
    if not bool(valid.any()):
        return _zero(logits)
    logp = torch.log_softmax(_full(logits), dim=1)
    t = torch.where(valid, target, torch.zeros_like(target))
    logp_t = logp.gather(1, t.unsqueeze(1)).squeeze(1)[valid]
    p_t = logp_t.exp()
    return (-((1.0 - p_t) ** cfg.focal_gamma) * logp_t).mean()


def _valid_probs(logits, target, ignore_index):
    """Softmax probabilities ``[P, C]`` and labels ``[P]`` of the non-ignored pixels."""
    import torch

    c = logits.shape[1]
    probs = torch.softmax(_full(logits), dim=1).permute(0, 2, 3, 1).reshape(-1, c)
    labels = target.reshape(-1)
    valid = labels != ignore_index
    return probs[valid], labels[valid]


@LOSSES.register("dice")
def dice(logits, target, cfg: LossConfig):
    import torch.nn.functional as F

    probs, labels = _valid_probs(logits, target, cfg.ignore_index)
    if labels.numel() == 0:
        return _zero(logits)
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    inter = (probs * onehot).sum(0)
    denom = probs.sum(0) + onehot.sum(0)
    s = cfg.dice_smooth
    return 1.0 - ((2.0 * inter + s) / (denom + s)).mean()


def lovasz_grad(gt_sorted: "torch.Tensor") -> "torch.Tensor":
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order."""
    import torch

    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def sort_errors_descending(errors: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(values, permutation)`` of non-negative errors sorted high to low.

    The Lovász loss sorts every pixel's error once per class: at 480x360 and batch 8 that is 1.4 M
    values 11 times a step, and a float sort took longer than the network's own forward and
    backward pass on a 2-core CPU. Non-negative float32 values order exactly as their int32 bit
    patterns, and PyTorch sorts a 1-D integer tensor stably with a radix sort where it is built with
    fbgemm (x86): about 4x faster than the float sort (50 against 226 ms here). Elsewhere the integer
    sort is an ordinary one; the result is the same either way. Ties keep their index order; the
    Lovász extension's value does not depend on the order of ties.
    """
    import torch

    if errors.dtype != torch.float32 or errors.ndim != 1:
        return torch.sort(errors, descending=True)
    keys, perm = torch.sort(errors.view(torch.int32).neg(), stable=True)
    return keys.neg_().view(torch.float32), perm


@LOSSES.register("lovasz")
def lovasz_softmax(logits, target, cfg: LossConfig):
    """Lovász-softmax over the whole batch, averaged over the classes present in it.

    Per class: ``dot(sorted errors, lovasz_grad(sorted labels))``, computed as ``dot(errors, w)`` with
    ``w`` the Lovász gradient scattered back to the pixels (the same value and the same gradient,
    without differentiating through the sort)."""
    import torch

    probs, labels = _valid_probs(logits, target, cfg.ignore_index)
    if labels.numel() == 0:
        return _zero(logits)
    classes = torch.arange(probs.shape[1], device=labels.device)
    fg = (labels[None, :] == classes[:, None]).to(probs.dtype)  # [C, P]
    errors = (fg - probs.t()).abs()  # one elementwise graph for all classes (a per-class slice would
    present = fg.sum(1) > 0          # back-propagate a zero [C, P] tensor per class)
    with torch.no_grad():
        w = torch.zeros_like(errors)
        for c in torch.nonzero(present).flatten().tolist():
            _, perm = sort_errors_descending(errors[c].detach())
            w[c].index_copy_(0, perm, lovasz_grad(fg[c].index_select(0, perm)))
    return (errors * w).sum(1)[present].mean()


class SegmentationLoss:
    """Callable ``(logits, target) -> scalar``: the weighted sum of a :class:`LossConfig`'s terms."""

    def __init__(self, config: LossConfig):
        self.config = config
        self._fns = [(LOSSES.get(t.name), t.weight) for t in config.terms]

    def __call__(self, logits: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
            raise InputError(
                f"loss: logits {list(logits.shape)} do not match target {list(target.shape)}",
                fix="logits are [N, C, H, W] and target [N, H, W] at the same resolution",
            )
        total = None
        for fn, w in self._fns:
            term = w * fn(logits, target, self.config)
            total = term if total is None else total + term
        return total

    def __repr__(self) -> str:
        return f"SegmentationLoss({self.config.spec!r})"


def build_loss(spec: str | LossConfig, **options) -> SegmentationLoss:
    """A loss from a spec string (``"ce+0.5*lovasz"``) or a :class:`LossConfig`."""
    cfg = spec if isinstance(spec, LossConfig) else LossConfig.parse(spec, **options)
    return SegmentationLoss(cfg)
