"""Training instance models with SOLO targets (Wang et al., SOLO, ECCV 2020; SOLOv2, NeurIPS 2020).

::

    trainer = InstanceTrainer(create_model("solov2_resnet18", num_classes=3, thing_classes=THINGS),
                              InstanceTrainConfig(size=ImageShape(240, 320), epochs=10), out_dir="runs/solo")
    trainer.fit(lambda start: synthetic_instances(ImageShape(240, 320), seed=0, start=start))

Data is an iterable of ``(image uint8 [H, W, 3] RGB, InstanceResult)``; classes are mapped to the
model's thing classes by name (``InstanceResult.class_names``), or taken as thing indices when the
result names none. Each sample is augmented (resize to the network size, random scale with crop or
pad, horizontal flip), normalised with the model's :class:`~edgeseg.structures.InputSpec`, and
turned into SOLO targets:

* an instance goes to every level whose scale range holds ``sqrt(box w * box h)``
  (:func:`edgeseg.models.solov2.scale_ranges`: the paper's ranges scaled to the input);
* on a level with grid S, the positive cells are those under the centre region — the box scaled by
  ``sigma`` = 0.2 around the mask's centre of mass — clipped to the 3 x 3 cells around the centre
  cell; a cell claimed by two instances goes to the smaller one;
* each positive cell's mask target is the instance mask at stride 4.

Losses: sigmoid focal loss on the categories (alpha 0.25, gamma 2, normalised by positives + 1)
plus 3 x Dice loss on the masks of the positive cells (``1 - 2 sum(pq) / (sum p^2 + sum q^2)``).
Optimiser SGD (momentum) or AdamW, poly or cosine schedule with linear warm-up; checkpoints are
resumable and the sample stream is a function of the sample index, so a resumed run sees the same
frames and augmentations as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..structures import ImageShape, InputSpec, InstanceResult
from .state import read_state, write_state
from .precision import CpuStepLevers, check_cpu_precision, check_memory_format
from .optim import CosineSchedule, PolySchedule, build_adamw, build_sgd
from .optim import build_schedule as make_schedule
from .data import permuted_indices
from .interrupt import StopRequest, stop_now
from .progress import epoch_progress
from .step_batches import check_device_and_workers, worker_batches

log = logging.getLogger(__name__)
STATE_FORMAT = "edgeseg.train.instance/1"
Sample = Tuple[np.ndarray, InstanceResult]


# ---- samples ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceSample:
    """One training sample at the network size: ``image`` uint8 ``[H, W, 3]`` RGB, ``masks`` bool
    ``[n, H, W]``, ``labels`` int64 ``[n]`` thing-class indices."""

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray


def thing_labels(result: InstanceResult, thing_classes: tuple[str, ...]) -> np.ndarray:
    """``int64 [n]`` indices into ``thing_classes`` of ``result``'s instances (matched by name)."""
    classes = np.asarray(result.classes, np.int64)
    if not result.class_names:
        if len(classes) and (classes.min() < 0 or classes.max() >= len(thing_classes)):
            raise InputError(f"instance classes {sorted(set(classes.tolist()))} are not thing indices "
                             f"0..{len(thing_classes) - 1}",
                             fix="give InstanceResult.class_names so classes can be matched by name")
        return classes
    out = []
    for c in classes.tolist():
        name = result.class_names[c]
        if name not in thing_classes:
            raise InputError(f"instance class {name!r} is not one of the model's thing classes {list(thing_classes)}",
                             fix="build the model with thing_classes naming every class in the data")
        out.append(thing_classes.index(name))
    return np.asarray(out, np.int64)


def augment_sample(image: np.ndarray, result: InstanceResult, thing_classes: tuple[str, ...], size: ImageShape,
                   rng: np.random.Generator | None, scale: tuple[float, float] = (0.8, 1.25), hflip: bool = True,
                   pad_value: int = 0, crop: ImageShape | None = None) -> InstanceSample:
    """Resize to ``size``, then (with ``rng``) scale by a random factor, crop/pad to ``crop`` (default
    ``size``: objects keep the scale they have at the network size) and flip; instances left with no
    pixel are dropped. ``rng`` None: resize only (and the top-left ``crop``)."""
    import cv2

    if not result.has_masks:
        raise InputError("instance training needs masks; the InstanceResult has none")
    labels = thing_labels(result, thing_classes)
    masks = result.masks.astype(np.uint8)
    out = crop or size
    s = float(rng.uniform(*scale)) if rng is not None else 1.0
    h, w = max(1, round(size.height * s)), max(1, round(size.width * s))
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    ms = [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST_EXACT) for m in masks]  # centre-aligned, like LINEAR
    out_img = np.full((out.height, out.width, 3), pad_value, np.uint8)
    out_ms = np.zeros((len(ms), out.height, out.width), bool)
    # crop offset when larger, paste offset when smaller
    y0 = int(rng.integers(0, h - out.height + 1)) if rng is not None and h > out.height else 0
    x0 = int(rng.integers(0, w - out.width + 1)) if rng is not None and w > out.width else 0
    ch, cw = min(h, out.height), min(w, out.width)
    out_img[:ch, :cw] = img[y0:y0 + ch, x0:x0 + cw]
    for i, m in enumerate(ms):
        out_ms[i, :ch, :cw] = m[y0:y0 + ch, x0:x0 + cw] > 0
    if hflip and rng is not None and rng.random() < 0.5:
        out_img, out_ms = out_img[:, ::-1], out_ms[:, :, ::-1]
    keep = out_ms.any(axis=(1, 2))
    return InstanceSample(np.ascontiguousarray(out_img), np.ascontiguousarray(out_ms[keep]), labels[keep])


def paste_instances(target: InstanceSample, source: InstanceSample, chosen: np.ndarray) -> InstanceSample:
    """``source``'s instances ``chosen`` (bool ``[n_source]``) pasted onto ``target`` where they lie
    (same size): their pixels replace the target's, the target's instances lose the pixels pasted over
    and are dropped when none is left; the result lists the target's instances, then the pasted ones."""
    if target.image.shape != source.image.shape:
        raise InputError(f"copy-paste needs samples of one size, got {target.image.shape} and {source.image.shape}")
    chosen = np.asarray(chosen, bool)
    if not chosen.any():
        return target
    pasted = source.masks[chosen]
    cover = pasted.any(axis=0)
    image = np.where(cover[..., None], source.image, target.image)
    kept = target.masks & ~cover
    left = kept.any(axis=(1, 2))
    masks = np.concatenate([kept[left], pasted])
    labels = np.concatenate([target.labels[left], source.labels[chosen]])
    return InstanceSample(np.ascontiguousarray(image), masks, labels)


def copy_paste(target: InstanceSample, source: InstanceSample, rng: np.random.Generator) -> InstanceSample:
    """Simple Copy-Paste (Ghiasi et al., CVPR 2021): each of ``source``'s instances is chosen with
    probability 1/2 (at least one when it has any) and pasted onto ``target`` by
    :func:`paste_instances`. Both samples come from :func:`augment_sample`, so each was scaled, cropped
    and flipped on its own (the paper's independent large-scale jitter of the two images)."""
    n = len(source.labels)
    if n == 0:
        return target
    chosen = rng.random(n) < 0.5
    if not chosen.any():
        chosen[int(rng.integers(0, n))] = True
    return paste_instances(target, source, chosen)


# ---- SOLO targets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoloTargets:
    """One image's targets: ``labels`` int64 ``[N]`` per grid cell (``num_classes`` = background),
    ``positive`` int64 ``[P]`` the positive cells, ``masks`` float32 ``[P, h, w]`` their mask targets."""

    labels: np.ndarray
    positive: np.ndarray
    masks: np.ndarray


def _grid_index(v: float, extent: int, grid: int) -> int:
    return min(grid - 1, max(0, int(math.floor(v / extent * grid))))


def solo_targets(masks: np.ndarray, labels: np.ndarray, *, num_grids: tuple[int, ...], num_classes: int,
                 ranges: tuple[tuple[float, float], ...], mask_size: tuple[int, int], sigma: float = 0.2) -> SoloTargets:
    """SOLO target assignment (module docstring) for bool ``masks [n, H, W]`` and ``labels [n]``."""
    import cv2

    n_img, height, width = masks.shape
    areas = masks.sum(axis=(1, 2))
    order = np.argsort(-areas, kind="stable")  # large first: smaller instances overwrite shared cells
    cell_labels = [np.full(s * s, num_classes, np.int64) for s in num_grids]
    cell_owner = [np.full(s * s, -1, np.int64) for s in num_grids]
    for i in order:
        if areas[i] == 0:
            continue
        ys, xs = np.nonzero(masks[i])
        bw, bh = float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())
        scale = math.sqrt(bw * bh)
        cy, cx = float(ys.mean()) + 0.5, float(xs.mean()) + 0.5  # centre of mass, pixel centres
        half_w, half_h = 0.5 * sigma * bw, 0.5 * sigma * bh
        for level, (grid, (lo, hi)) in enumerate(zip(num_grids, ranges)):
            if not lo <= scale <= hi:
                continue
            gy, gx = _grid_index(cy, height, grid), _grid_index(cx, width, grid)
            top = max(_grid_index(cy - half_h, height, grid), gy - 1)
            down = min(_grid_index(cy + half_h, height, grid), gy + 1)
            left = max(_grid_index(cx - half_w, width, grid), gx - 1)
            right = min(_grid_index(cx + half_w, width, grid), gx + 1)
            cells = (np.arange(top, down + 1)[:, None] * grid + np.arange(left, right + 1)[None, :]).ravel()
            cell_labels[level][cells] = labels[i]
            cell_owner[level][cells] = i
    owner = np.concatenate(cell_owner)
    positive = np.flatnonzero(owner >= 0)
    small = {}
    for i in np.unique(owner[positive]):
        m = cv2.resize(masks[i].astype(np.float32), (mask_size[1], mask_size[0]), interpolation=cv2.INTER_AREA)
        small[int(i)] = (m >= 0.5).astype(np.float32)
    mask_targets = np.stack([small[int(owner[c])] for c in positive]) if len(positive) else np.zeros((0, *mask_size), np.float32)
    return SoloTargets(np.concatenate(cell_labels), positive.astype(np.int64), mask_targets)


# ---- losses -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoloLossConfig:
    """Loss weights and focal-loss parameters (the paper's values)."""

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    category_weight: float = 1.0
    mask_weight: float = 3.0


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Summed sigmoid focal loss (Lin et al., 2017) of ``logits`` against 0/1 ``targets``."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (a_t * (1 - p_t) ** gamma * ce).sum()


def dice_loss(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per-mask Dice loss ``[P]`` for ``probs``/``targets`` ``[P, hw]``."""
    a = (probs * targets).sum(1)
    b = (probs * probs).sum(1) + eps
    c = (targets * targets).sum(1) + eps
    return 1.0 - 2.0 * a / (b + c)


def solo_loss(outputs: dict[str, torch.Tensor], targets: list[SoloTargets],
              cfg: SoloLossConfig = SoloLossConfig()) -> dict[str, torch.Tensor]:
    """``{"loss", "category", "mask"}`` for a training-mode model output and one target per image."""
    cates, kernels, feats = outputs["categories"], outputs["kernels"], outputs["mask_features"]
    b, n, c = cates.shape
    device = cates.device
    labels = torch.stack([torch.as_tensor(t.labels, device=device) for t in targets])
    onehot = F.one_hot(labels, c + 1)[..., :c].to(cates.dtype)
    num_pos = sum(len(t.positive) for t in targets)
    loss_cate = sigmoid_focal_loss(cates, onehot, cfg.focal_alpha, cfg.focal_gamma) / (num_pos + 1)
    dices = []
    for i, t in enumerate(targets):
        if len(t.positive) == 0:
            continue
        k = kernels[i, torch.as_tensor(t.positive, device=device)]  # [P, E]
        probs = torch.sigmoid(k @ feats[i].flatten(1))
        dices.append(dice_loss(probs, torch.as_tensor(t.masks, device=device).flatten(1)))
    loss_mask = torch.cat(dices).mean() if dices else feats.sum() * 0.0
    total = cfg.category_weight * loss_cate + cfg.mask_weight * loss_mask
    return {"loss": total, "category": loss_cate.detach(), "mask": loss_mask.detach()}


# ---- schedule and optimiser ---------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceTrainConfig:
    """Everything that decides an instance training run (recorded in checkpoints and history)."""

    size: ImageShape
    epochs: int = 10
    steps_per_epoch: int = 50
    crop: ImageShape | None = None  # training crop of the (scaled) network-size frame; None: the whole frame
    batch_size: int = 4
    optimizer: str = "sgd"  # or "adamw"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"  # or "cosine"
    warmup_steps: int = 50
    scale: tuple[float, float] = (0.8, 1.25)
    hflip: bool = True
    sigma: float = 0.2
    grad_clip: float | None = 35.0
    seed: int = 0
    cpu_precision: str = "fp32"        # fp32 | bf16 | auto: bf16 autocast on the CPU (edgeseg.train.precision)
    memory_format: str = "contiguous"  # contiguous | channels_last | auto (edgeseg.train.precision)
    copy_paste: float = 0.0  # probability that a sample gets instances pasted from another of its batch
    device: str = "cpu"  # cpu | cuda | cuda:N (CUDA: bf16 autocast where the GPU has bf16, channels-last)
    workers: int = 0  # processes preparing batches (decode, augmentation, SOLO targets) ahead of the step

    def __post_init__(self) -> None:
        check_device_and_workers(self.device, self.workers)
        check_cpu_precision(self.cpu_precision, on_cpu=self.device == "cpu")
        if not 0.0 <= self.copy_paste <= 1.0:
            raise InputError(f"copy_paste is a probability in [0, 1], got {self.copy_paste}",
                             fix="e.g. --copy-paste 0.5; 0 turns it off")
        if self.copy_paste > 0 and self.batch_size < 2:
            raise InputError("copy-paste takes its instances from another sample of the batch, and the batch is 1",
                             fix="give --batch 2 or more, or leave --copy-paste out")
        check_memory_format(self.memory_format)
        if self.optimizer not in ("sgd", "adamw") or self.schedule not in ("poly", "cosine"):
            raise InputError(f"optimizer must be sgd|adamw and schedule poly|cosine, got {self.optimizer!r}, {self.schedule!r}")
        if min(self.epochs, self.steps_per_epoch, self.batch_size) <= 0:
            raise InputError("epochs, steps_per_epoch and batch_size must be positive")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"], d["scale"] = str(self.size), list(self.scale)
        d["crop"] = None if self.crop is None else str(self.crop)
        return d


def build_optimizer(model: torch.nn.Module, cfg: InstanceTrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return build_sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    return build_adamw(model, cfg.lr, cfg.weight_decay)


def build_schedule(cfg: InstanceTrainConfig) -> PolySchedule | CosineSchedule:
    return make_schedule(cfg.schedule, cfg.total_steps, cfg.warmup_steps)


# ---- data ---------------------------------------------------------------------------------------
def synthetic_instances(size: ImageShape, seed: int = 0, start: int = 0, *, scenes: int = 256, max_t: int = 400,
                        max_objects: int = 6) -> Iterator[Sample]:
    """An endless stream of ``(image, InstanceResult)`` from :class:`edgeseg.data.synthetic.SceneGenerator`:
    sample k is frame ``t_k`` of scene ``k % scenes`` (scene seed ``(seed, scene)``); a pure function of
    ``(seed, k)``, so a resumed run continues the same stream from ``start``."""
    from functools import lru_cache

    from ..data.synthetic import SceneGenerator

    @lru_cache(maxsize=64)
    def scene(i: int) -> SceneGenerator:
        return SceneGenerator(size, (seed, 17, i), max_objects)

    k = start
    while True:
        t = int(np.random.default_rng((seed, 23, k)).integers(0, max_t + 1))
        frame = scene(k % scenes).render(t)
        yield frame.image, frame.instances
        k += 1


def dataset_instances(dataset: Sequence, seed: int = 0, start: int = 0) -> Iterator[Sample]:
    """An endless stream of ``(image, InstanceResult)`` from an instance dataset
    (:class:`edgeseg.data.CocoInstances`, YOLO-seg folders): every image once per epoch in an order
    drawn from ``(seed, epoch)``, a pure function of ``(seed, k)`` like :func:`synthetic_instances`.
    Crowd regions are left out (SOLO has no ignore label for them); class names are the dataset's."""
    if len(dataset) == 0:
        raise InputError("the instance dataset is empty", fix="check the annotation file and its images")
    names = tuple(dataset.classes)
    for i in permuted_indices(len(dataset), seed, start):
        sample = dataset[i]
        yield sample.image(), truth_instances(sample.truth, names)


def truth_instances(truth: Any, class_names: tuple[str, ...]) -> InstanceResult:
    """An :class:`edgeseg.data.InstanceTruth` as the trainer's ``InstanceResult`` (score 1, crowd
    regions left out)."""
    keep = ~np.asarray(truth.iscrowd, bool)
    return InstanceResult(boxes=truth.boxes[keep], scores=np.ones(int(keep.sum()), np.float32),
                          classes=truth.classes[keep].astype(np.int32), image_shape=truth.image_shape,
                          masks=truth.masks[keep], class_names=tuple(class_names))


# ---- the trainer --------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceEpoch:
    """One epoch of history: mean losses over its steps, the last learning rate, wall seconds."""

    epoch: int
    loss: float
    category: float
    mask: float
    lr: float
    seconds: float
    steps: int


@dataclass(frozen=True)
class BatchMaker:
    """Samples -> a training batch: augmentation, copy-paste, normalisation and SOLO targets. Everything
    it needs is here (no model), so batches can be made in worker processes (``workers``) and equal the
    ones the training process makes itself."""

    config: InstanceTrainConfig
    classes: tuple[str, ...]
    spec: InputSpec
    num_grids: tuple[int, ...]
    num_classes: int
    ranges: tuple[tuple[float, float], ...]

    def prepare(self, samples: list[Sample], first_index: int, augment: bool = True) -> tuple[torch.Tensor, list[InstanceSample]]:
        """Augmented, normalised batch ``[B, 3, H, W]`` and the samples it came from."""
        c = self.config
        out = []
        for j, (image, result) in enumerate(samples):
            rng = np.random.default_rng((c.seed, 31, first_index + j)) if augment else None
            out.append(augment_sample(image, result, self.classes, c.size, rng, c.scale, c.hflip,
                                      crop=c.crop if augment else None))
        if augment and c.copy_paste > 0 and len(out) > 1:  # a short last list may hold one sample
            out = [self.pasted(out, j, first_index + j) for j in range(len(out))]
        x = np.stack([self.spec.normalize(s.image).transpose(2, 0, 1) for s in out])
        return torch.from_numpy(np.ascontiguousarray(x)), out

    def pasted(self, batch: list[InstanceSample], j: int, index: int) -> InstanceSample:
        """Sample ``j`` of the augmented ``batch``, with probability ``copy_paste`` given instances of
        another sample of the batch (drawn from ``(seed, index)``, so resume sees the same batch)."""
        rng = np.random.default_rng((self.config.seed, 37, index))
        if rng.random() >= self.config.copy_paste:
            return batch[j]
        k = (j + 1 + int(rng.integers(0, len(batch) - 1))) % len(batch)
        return copy_paste(batch[j], batch[k], rng)

    def targets(self, samples: list[InstanceSample], mask_size: tuple[int, int]) -> list[SoloTargets]:
        return [solo_targets(s.masks, s.labels, num_grids=self.num_grids, num_classes=self.num_classes,
                             ranges=self.ranges, mask_size=mask_size, sigma=self.config.sigma) for s in samples]

    def mask_size(self, height: int, width: int) -> tuple[int, int]:
        """The stride-4 mask-feature size of a ``height x width`` input (two stride-2 stages, each
        rounding up): the size targets made ahead of the forward pass must have."""
        return -(-(-(-height // 2)) // 2), -(-(-(-width // 2)) // 2)

    def batch(self, data: Callable[[int], Iterable[Sample]], step: int) -> tuple[torch.Tensor, list[SoloTargets]]:
        """Step ``step``'s batch with its targets, from the stream ``data(start)`` (what a worker makes)."""
        import itertools

        first = step * self.config.batch_size
        samples = list(itertools.islice(data(first), self.config.batch_size))
        x, batch = self.prepare(samples, first)
        # masks as uint8 tensors: 4x smaller than float32 and, as tensors, passed through shared memory
        targets = [SoloTargets(torch.from_numpy(t.labels), torch.from_numpy(t.positive),
                               torch.from_numpy(t.masks.astype(np.uint8)))
                   for t in self.targets(batch, self.mask_size(*x.shape[-2:]))]
        return x, targets


class InstanceTrainer(CpuStepLevers):
    """Trains a SOLO-style instance model (``categories``/``kernels``/``mask_features`` in train mode).

    model:      e.g. ``create_model("solov2_resnet18", num_classes=3, thing_classes=...)``; moved to
                ``config.device``.
    input_spec: normalisation; defaults to ``InputSpec(size=config.size)`` (ImageNet mean/std, RGB).
    out_dir:    where ``last.pt`` (resume), ``history.json`` and ``model.safetensors`` go (None: nowhere).

    With ``config.workers`` > 0, batches (decode, augmentation, copy-paste, SOLO targets) are made by
    that many processes ahead of the step (a DataLoader; fork); they are the batches the training
    process would make (the stream is a pure function of the sample index), so a run's losses do not
    depend on ``workers``. On a GPU the step runs in bf16 autocast (when the GPU has bf16) and
    channels-last, the decision recorded with the run like the CPU's.
    """

    def __init__(self, model: torch.nn.Module, config: InstanceTrainConfig, *, input_spec: InputSpec | None = None,
                 out_dir: str | os.PathLike | None = None, model_name: str | None = None,
                 loss: SoloLossConfig = SoloLossConfig()):
        from ..models.solov2 import scale_ranges
        from .trainer import resolve_device

        self.device = resolve_device(config.device)
        self.model, self.config, self.loss_cfg = model.to(self.device), config, loss
        self.spec = input_spec or InputSpec(size=config.size)
        self.classes = tuple(getattr(model, "classes", ()))
        self.ranges = scale_ranges(config.size, len(model.num_grids))
        self.maker = BatchMaker(config, self.classes, self.spec, tuple(model.num_grids), int(model.num_classes),
                                tuple(self.ranges))
        self.optimizer = build_optimizer(self.model, config)
        self.schedule = build_schedule(config)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.model_name = model_name or getattr(model, "model_name", None)
        self.epoch, self.step = 0, 0
        self.sums = {"loss": 0.0, "category": 0.0, "mask": 0.0}  # the running epoch's loss sums (resumable mid-epoch)
        self.epoch_seconds = 0.0
        self.history: list[InstanceEpoch] = []
        # bf16 autocast and channels-last: decided before the first step (auto: timed on this machine), kept on resume
        self.precision: dict[str, Any] | None = None

    def prepare(self, samples: list[Sample], first_index: int, augment: bool = True) -> tuple[torch.Tensor, list[InstanceSample]]:
        """Augmented, normalised batch ``[B, 3, H, W]`` and the samples it came from (:class:`BatchMaker`)."""
        return self.maker.prepare(samples, first_index, augment)

    def targets(self, samples: list[InstanceSample], mask_size: tuple[int, int]) -> list[SoloTargets]:
        return self.maker.targets(samples, mask_size)

    def train_step(self, samples: list[Sample], first_index: int) -> dict[str, float]:
        """One optimiser step on ``samples`` (sample indices ``first_index...``)."""
        x, batch = self.prepare(samples, first_index)
        return self._step(x, lambda out: self._losses(out, batch))

    def _step(self, x: torch.Tensor, losses_of: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> dict[str, float]:
        self.model.train()
        lr = self.schedule.apply(self.optimizer, self.step) * self.config.lr
        losses = losses_of(self.forward(self.model, x.to(self.device, non_blocking=True)))
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {**{k: float(v.detach()) for k, v in losses.items()}, "lr": lr}

    def _losses(self, out: dict[str, torch.Tensor], batch: list[InstanceSample]) -> dict[str, torch.Tensor]:
        return solo_loss(out, self.targets(batch, tuple(out["mask_features"].shape[-2:])), self.loss_cfg)

    def _made_losses(self, out: dict[str, torch.Tensor], targets: list[SoloTargets]) -> dict[str, torch.Tensor]:
        """Losses against targets a worker made ahead of the forward pass (their mask size predicted)."""
        got, made = tuple(out["mask_features"].shape[-2:]), tuple(targets[0].masks.shape[-2:]) if targets else None
        if made is not None and any(len(t.positive) for t in targets) and got != made:
            raise InputError(f"the model's mask features are {list(got)}, the workers' targets {list(made)}",
                             fix="use a --size/--crop that is a multiple of 32, or --workers 0")
        return solo_loss(out, targets, self.loss_cfg)

    def choose_precision(self, samples: list[Sample], first_index: int) -> dict[str, Any]:
        """Decide how the step runs (``config.cpu_precision``, ``config.memory_format``; ``auto``:
        timed on a copy of the model with this batch; on a GPU: bf16 autocast where it has bf16)."""
        x, batch = self.prepare(samples, first_index)
        return self._decide(x, lambda out: self._losses(out, batch)["loss"])

    def _decide(self, x: torch.Tensor, loss_of: Callable[[Any], Any]) -> dict[str, Any]:
        if self.device.type == "cuda":
            choice = {"device": str(self.device), "bf16": bool(torch.cuda.is_bf16_supported()), "channels_last": True}
            self.keep_precision(choice)
            return choice
        return self.decide_precision(x, loss_of)

    def _batches(self, data: Callable[[int], Iterable[Sample]], stop_step: int) -> Iterator[tuple[torch.Tensor, Callable]]:
        """``(x, losses_of)`` for the steps from ``self.step`` to ``stop_step``: made here from one
        stream (``workers`` 0) or by worker processes."""
        c = self.config
        if c.workers == 0:
            stream = iter(data(self.step * c.batch_size))
            for step in range(self.step, stop_step):
                samples = [next(stream) for _ in range(c.batch_size)]
                x, batch = self.prepare(samples, step * c.batch_size)
                yield x, (lambda out, batch=batch: self._losses(out, batch))
            return
        from functools import partial

        for x, targets in worker_batches(partial(self.maker.batch, data), range(self.step, stop_step), c.workers,
                                         pin_memory=self.device.type == "cuda"):
            yield x, (lambda out, targets=targets: self._made_losses(out, targets))

    def fit(self, data: Callable[[int], Iterable[Sample]], resume: str | os.PathLike | None = None,
            epochs: int | None = None, on_epoch: Callable[[InstanceEpoch], None] | None = None) -> list[InstanceEpoch]:
        """Train until ``config.epochs`` (or ``epochs``) are done. ``data(start)`` is the sample stream
        from sample index ``start`` (so resume continues it; with workers, each batch opens it at its own
        first sample)."""
        if resume is not None:
            self.load(resume)
        c = self.config
        stop = min(c.epochs, epochs or c.epochs)
        batches = self._batches(data, stop * c.steps_per_epoch)
        with StopRequest() as request, contextlib.closing(batches):  # Ctrl-C / SIGTERM: the step finishes, then a save
            while self.epoch < stop:
                done = self.step - self.epoch * c.steps_per_epoch  # steps of this epoch done before a resume
                if done == 0:
                    torch.manual_seed(c.seed * 1000003 + self.epoch)  # mid-epoch, load() restored the RNG state
                t0 = time.perf_counter()
                desc = f"epoch {self.epoch + 1}/{c.epochs}" + (f" from step {done + 1}" if done else "")
                with epoch_progress(c.steps_per_epoch - done, desc) as bar:
                    for i in range(done, c.steps_per_epoch):
                        x, losses_of = next(batches)
                        if self.precision is None:
                            self._decide(x, lambda out: losses_of(out)["loss"])
                        res = self._step(x, losses_of)
                        for k in self.sums:
                            self.sums[k] += res[k]
                        bar.set_postfix(loss=f"{self.sums['loss'] / (i + 1):.4f}", lr=f"{res['lr']:.2e}", refresh=False)
                        bar.update(1)
                        if request.requested and i + 1 < c.steps_per_epoch:
                            self.epoch_seconds += time.perf_counter() - t0
                            stop_now(request, self.save_checkpoint, f"epoch {self.epoch + 1}, step {i + 1} of "
                                                                    f"{c.steps_per_epoch}")
                n = c.steps_per_epoch
                self.epoch += 1
                rec = InstanceEpoch(self.epoch, self.sums["loss"] / n, self.sums["category"] / n, self.sums["mask"] / n,
                                    res["lr"], self.epoch_seconds + time.perf_counter() - t0, n)
                self.sums, self.epoch_seconds = dict.fromkeys(self.sums, 0.0), 0.0
                self.history.append(rec)
                log.info("epoch %d/%d loss %.4f (category %.4f, mask %.4f) lr %.3g %.1fs", rec.epoch, c.epochs, rec.loss,
                         rec.category, rec.mask, rec.lr, rec.seconds)
                self.save_checkpoint()
                if on_epoch is not None:
                    on_epoch(rec)
                if request.requested:
                    stop_now(request, self.save_checkpoint, f"the end of epoch {self.epoch}")
        self.save_weights()
        return self.history

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path | None:
        """The training state (atomically) at ``path`` or ``out_dir/last.pt``, plus ``history.json``."""
        if path is None and self.out_dir is None:
            return None
        state = {"format": STATE_FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "epoch": self.epoch, "step": self.step, "history": [asdict(r) for r in self.history],
                 "config": self.config.to_dict(), "model_name": self.model_name, "precision": self.precision,
                 "sums": dict(self.sums), "epoch_seconds": self.epoch_seconds, "rng": torch.get_rng_state()}
        return write_state(state, path, self.out_dir)

    def load(self, path: str | os.PathLike) -> None:
        """Resume from :meth:`save_checkpoint`'s file (or the run folder holding ``last.pt``)."""
        state = read_state(path, STATE_FORMAT, "instance", self.model, self.optimizer)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.sums = {k: float(state.get("sums", {}).get(k, 0.0)) for k in self.sums}
        self.epoch_seconds = float(state.get("epoch_seconds", 0.0))
        if state.get("rng") is not None:  # a run stopped inside an epoch goes on with its dropout & co. as they were
            torch.set_rng_state(state["rng"])
        self.history = [InstanceEpoch(**r) for r in state.get("history", [])]
        self.keep_precision(state.get("precision"))  # the resumed run keeps the precision it was trained in

    def save_weights(self, stem: str = "model") -> Path | None:
        """The weights alone through :func:`edgeseg.models.save_checkpoint` (thing classes and input
        spec in ``extra``, so the model can be exported and decoded)."""
        if self.out_dir is None or self.model_name is None:
            return None
        from ..models.checkpoint import save_checkpoint

        kwargs = dict(getattr(self.model, "model_kwargs", None) or {})
        extra = {"task": "instance", "classes": list(self.classes), "input_spec": self.spec.to_dict(),
                 "epoch": self.epoch, "step": self.step}
        return save_checkpoint(self.model, self.out_dir / f"{stem}.safetensors", model_name=self.model_name,
                               num_classes=self.model.num_classes, extra=extra, model_kwargs=kwargs)


# ---- a quick check of what was learnt -----------------------------------------------------------
@torch.no_grad()
def mask_iou_check(model: torch.nn.Module, samples: Iterable[Sample], spec: InputSpec,
                   score_threshold: float = 0.3) -> dict[str, float]:
    """Match ground-truth instances with the model's detections (score >= ``score_threshold``, mask
    > 0.5 upsampled to the input, same class): mean best IoU per ground truth, recall and precision
    at IoU 0.5, and the highest score on frames without objects. Not an AP; a sanity check."""
    model.eval()
    size = spec.size
    ious, matched_dets, n_dets, empty_max = [], 0, 0, 0.0
    classes = tuple(getattr(model, "classes", ()))
    for image, result in samples:
        s = augment_sample(image, result, classes, size, None)
        out = model(torch.from_numpy(spec.normalize(s.image).transpose(2, 0, 1).copy())[None])
        keep = out["scores"][0] >= score_threshold
        if bool(keep.any()):
            probs = F.interpolate(out["masks"][:, keep], scale_factor=4, mode="bilinear", align_corners=False)
            det = (probs[0, :, : size.height, : size.width] > 0.5).flatten(1).float()
        else:
            det = torch.zeros(0, size.height * size.width)
        det_cls = out["classes"][0, keep]
        n_dets += int(keep.sum())
        if len(s.labels) == 0:
            empty_max = max(empty_max, float(out["scores"][0].max()))
            continue
        gt = torch.from_numpy(s.masks).flatten(1).float()
        inter = gt @ det.T
        iou = inter / (gt.sum(1, keepdim=True) + det.sum(1)[None] - inter).clamp(min=1)
        iou = iou * (torch.from_numpy(s.labels)[:, None] == det_cls[None]).float()
        best = iou.max(1).values if det.shape[0] else torch.zeros(len(gt))
        ious.extend(best.tolist())
        matched_dets += int((iou.max(0).values >= 0.5).sum()) if det.shape[0] else 0
    n_gt = len(ious)
    return {"instances": n_gt, "mean_best_iou": float(np.mean(ious)) if ious else 0.0,
            "recall@0.5": float(np.mean(np.asarray(ious) >= 0.5)) if ious else 0.0,
            "precision@0.5": matched_dets / n_dets if n_dets else 0.0, "detections": n_dets,
            "max_score_on_empty_frames": empty_max}
