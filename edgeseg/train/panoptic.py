"""Training panoptic models on panoptic ground truth: Panoptic-DeepLab (Cheng et al.,
"Panoptic-DeepLab", CVPR 2020) and LPSNet (Hong et al., CVPR 2021; targets and losses in
:mod:`edgeseg.train.lpsnet`), with one loop.

::

    model = create_model("panoptic_deeplab_mobilenetv3_small", num_classes=19, thing_classes=THINGS)
    trainer = PanopticTrainer(model, PanopticTrainConfig(size=ImageShape(320, 640), crop=ImageShape(256, 512)),
                              category_ids=CATEGORY_IDS, out_dir="runs/pdl")
    trainer.fit(lambda start: coco_panoptic_stream(dataset, seed=0, start=start))
    report = quick_pq(model, val_samples, trainer.spec, CATEGORY_IDS)   # through the runtime decoder

Data is an iterable of ``(image uint8 [H, W, 3] RGB, PanopticResult, crowd segment ids)``; a
segment's class index is the position of its ``category_id`` in ``category_ids`` (the dataset's
category order). Each sample is augmented (:func:`augment_panoptic`: resize to the network size,
random scale 0.5-2 with crop/pad to the training crop, horizontal flip, colour jitter) and
normalised with the model's :class:`~edgeseg.structures.InputSpec`; what differs per architecture
is a :class:`PanopticStrategy` (targets of an augmented sample, loss of the training-mode
outputs), chosen by the model's class from :data:`STRATEGIES`: ``panoptic_deeplab``
(:class:`PanopticDeepLabTraining`, below) and ``lpsnet``
(:class:`~edgeseg.train.lpsnet.LPSNetTraining`: mask-based FCOS targets with border-ness,
focal + GIoU + BCE + cross-entropy).

Panoptic-DeepLab's targets (:func:`panoptic_targets`; as the reference ``PanopticDeepLabTargetGenerator``):

* semantic: class index per pixel, 255 on void, on unknown categories and on padding; pixel
  weights 1, and ``small_instance_weight`` (3) on the pixels of thing instances smaller than
  ``small_instance_area`` (the paper's 64^2 at 2048x1024, scaled to the network width);
* centre: a Gaussian (sigma 8 input pixels) around the centre of mass of each non-crowd thing
  instance, max over instances; loss weight 1 on labelled non-crowd pixels, 0 on void and crowd;
* offset: (dy, dx) from a pixel to its instance's centre of mass, on non-crowd thing pixels.

Centre and offset targets are computed at the model's stride 4 (cell ``(i, j)`` at input position
``(4 i + 1.5, 4 j + 1.5)``, its segment id sampled at pixel ``(4 i + 2, 4 j + 2)``); the semantic
loss is taken at the training-crop resolution (bilinearly upsampled logits), as in the paper.

Its losses (the paper's weights): bootstrapped cross-entropy (mean over the ``top_k_percent`` = 20 %
hardest pixels) + 200 x weighted MSE on the centre heatmap + 0.01 x weighted L1 on the offsets
(summed over dy, dx, divided by the weight sum). LPSNet uses FCOS's loss weights and
``semantic_weight``; the centre/offset/small-instance fields of :class:`PanopticTrainConfig` are
Panoptic-DeepLab's only.

For both: AdamW, poly or cosine schedule with linear warm-up; checkpoints are resumable (at epoch
ends and every ``checkpoint_every`` steps) and the sample stream is a function of the sample index,
so a resumed run sees the same frames and augmentations, and batches made by ``workers`` processes
(:mod:`edgeseg.train.step_batches`) equal the ones the training process makes. ``device`` cuda: the
step in bf16 autocast where the GPU has bf16, channels-last, as the instance trainer's. :func:`quick_pq` scores a model through
the runtime decoder (:func:`edgeseg.decode.decode` with the manifest an export would write), so
training, export and deployment decode alike.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TYPE_CHECKING, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .._registry import Registry
from ..errors import InputError, ModelError
from ..models.lpsnet import LPSNet
from ..models.panoptic_deeplab import PanopticDeepLab
from ..structures import ImageShape, InputSpec, PanopticOptions, PanopticResult, Segment
from .augment import IGNORE_INDEX, color_jitter
from .lpsnet import LPSNetTraining
from .precision import CpuStepLevers, check_cpu_precision, check_memory_format
from .state import read_state, write_state
from .optim import CosineSchedule, PolySchedule, build_adamw
from .optim import build_schedule as make_schedule
from .data import permuted_indices
from .interrupt import StopRequest, stop_now
from .step_batches import check_device_and_workers, worker_batches

if TYPE_CHECKING:
    from ..structures.manifest import Manifest

log = logging.getLogger(__name__)
STATE_FORMAT = "edgeseg.train.panoptic/1"
STRIDE = 4
PAPER_SMALL_AREA, PAPER_WIDTH = 64 * 64, 2048
Sample = Tuple[np.ndarray, PanopticResult, frozenset]


# ---- augmentation -------------------------------------------------------------------------------
def augment_panoptic(image: np.ndarray, ids: np.ndarray, size: ImageShape, rng: np.random.Generator | None, *,
                     crop: ImageShape | None = None, scale: tuple[float, float] = (0.5, 2.0), hflip: bool = True,
                     jitter: float = 0.2, pad_value: tuple[int, int, int] = (124, 116, 104)) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` times a random factor in ``scale``, crop (pad: image ``pad_value``, ids 0 =
    void) a random ``crop`` window (default ``size``), flip, jitter brightness/contrast/saturation.
    ``rng`` None: resize to ``size`` only. Image bilinear, ids nearest."""
    import cv2

    out = crop or size
    s = float(rng.uniform(*scale)) if rng is not None else 1.0
    h, w = max(1, round(size.height * s)), max(1, round(size.width * s))
    if (h, w) != ids.shape:
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        ids = cv2.resize(ids.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    if rng is None and (h, w) == (out.height, out.width):
        return np.ascontiguousarray(image), np.ascontiguousarray(ids, dtype=np.int32)
    top = int(rng.integers(0, h - out.height + 1)) if rng is not None and h > out.height else 0
    left = int(rng.integers(0, w - out.width + 1)) if rng is not None and w > out.width else 0
    ch, cw = min(h, out.height), min(w, out.width)
    img = np.empty((out.height, out.width, 3), np.uint8)
    img[...] = np.asarray(pad_value, np.uint8)
    img[:ch, :cw] = image[top:top + ch, left:left + cw]
    seg = np.zeros((out.height, out.width), np.int32)
    seg[:ch, :cw] = ids[top:top + ch, left:left + cw]
    if rng is not None and hflip and rng.random() < 0.5:
        img, seg = img[:, ::-1], seg[:, ::-1]
    if rng is not None and jitter > 0:
        img = color_jitter(np.ascontiguousarray(img), rng, jitter, jitter, jitter)
    return np.ascontiguousarray(img), np.ascontiguousarray(seg)


# ---- targets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanopticTargets:
    """One image's targets. Full resolution ``[H, W]``: ``semantic`` uint8 class index (255 ignore),
    ``semantic_weights`` float32. Stride 4 ``[h, w]``: ``center`` float32 heatmap, ``center_weights``,
    ``offset`` float32 ``[2, h, w]`` (dy, dx), ``offset_weights``. ``centers`` float32 ``[n, 2]``:
    the (y, x) centres of mass of the non-crowd thing instances, input pixels."""

    semantic: np.ndarray
    semantic_weights: np.ndarray
    center: np.ndarray
    center_weights: np.ndarray
    offset: np.ndarray
    offset_weights: np.ndarray
    centers: np.ndarray


def small_instance_area(size: ImageShape) -> float:
    """The paper's small-instance area (64^2 pixels at 2048 px wide) at a network ``size``."""
    return PAPER_SMALL_AREA * (size.width / PAPER_WIDTH) ** 2


def panoptic_targets(ids: np.ndarray, segments: Sequence[Segment], class_of: dict[int, int], thing_classes: Iterable[int],
                     crowd_ids: Iterable[int] = (), *, sigma: float = 8.0, small_area: float = 0.0,
                     small_weight: float = 3.0) -> PanopticTargets:
    """Targets (module docstring) for a segment-id map ``ids`` ``[H, W]`` and its ``segments``;
    ``class_of`` maps category id -> class index (other categories are ignored, like void)."""
    height, width = ids.shape
    h, w = -(-height // STRIDE), -(-width // STRIDE)
    things, crowd = set(int(t) for t in thing_classes), set(int(c) for c in crowd_ids)
    lut_size = int(max([int(ids.max(initial=0))] + [s.id for s in segments])) + 1
    cls_lut = np.full(lut_size, IGNORE_INDEX, np.int64)
    for s in segments:
        cls_lut[s.id] = class_of.get(int(s.category_id), IGNORE_INDEX)
    cls_lut[0] = IGNORE_INDEX
    semantic = cls_lut[ids]
    sem_weights = np.ones((height, width), np.float32)
    rows = np.minimum(np.arange(h) * STRIDE + STRIDE // 2, height - 1)
    cols = np.minimum(np.arange(w) * STRIDE + STRIDE // 2, width - 1)
    ids4 = ids[rows[:, None], cols[None, :]]
    labelled4 = semantic[rows[:, None], cols[None, :]] != IGNORE_INDEX
    crowd4 = np.isin(ids4, list(crowd)) if crowd else np.zeros((h, w), bool)
    center_weights = (labelled4 & ~crowd4).astype(np.float32)
    py = (np.arange(h, dtype=np.float32) * STRIDE + (STRIDE - 1) / 2)[:, None]
    px = (np.arange(w, dtype=np.float32) * STRIDE + (STRIDE - 1) / 2)[None, :]
    center = np.zeros((h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    offset_weights = np.zeros((h, w), np.float32)
    centers = []
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_ids = flat[order]
    for s in segments:
        c = int(cls_lut[s.id])
        if c not in things or s.id in crowd:
            continue
        lo, hi = np.searchsorted(sorted_ids, [s.id, s.id + 1])
        if hi == lo:
            continue
        pix = order[lo:hi]
        ys, xs = np.divmod(pix, width)
        cy, cx = float(ys.mean()), float(xs.mean())
        centers.append((cy, cx))
        if hi - lo < small_area:
            sem_weights.ravel()[pix] = small_weight
        g = np.exp(-((py - cy) ** 2 + (px - cx) ** 2) / (2.0 * sigma * sigma)).astype(np.float32)
        np.maximum(center, g, out=center)
        m = ids4 == s.id
        offset[0][m] = (cy - np.broadcast_to(py, (h, w)))[m]
        offset[1][m] = (cx - np.broadcast_to(px, (h, w)))[m]
        offset_weights[m] = 1.0
    return PanopticTargets(semantic.astype(np.uint8), sem_weights, center, center_weights, offset, offset_weights,
                           np.asarray(centers, np.float32).reshape(-1, 2))


# ---- losses -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanopticLossConfig:
    """The paper's loss weights; ``top_k_percent`` None: plain (weighted) cross-entropy mean."""

    semantic_weight: float = 1.0
    center_weight: float = 200.0
    offset_weight: float = 0.01
    top_k_percent: float | None = 0.2


def panoptic_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                  cfg: PanopticLossConfig = PanopticLossConfig()) -> dict[str, torch.Tensor]:
    """``{"loss", "semantic", "center", "offset"}`` (unweighted parts, detached) for the model's
    outputs and batched targets (``semantic`` int64 ``[B, H, W]``, ``semantic_weights``, ``center``
    ``[B, h, w]``, ``center_weights``, ``offset`` ``[B, 2, h, w]``, ``offset_weights``)."""
    sem_t = targets["semantic"]
    logits = F.interpolate(outputs["semantic"], size=sem_t.shape[-2:], mode="bilinear", align_corners=False)
    pixel = F.cross_entropy(logits, sem_t, ignore_index=IGNORE_INDEX, reduction="none") * targets["semantic_weights"]
    pixel = pixel.flatten()
    if cfg.top_k_percent is not None and cfg.top_k_percent < 1.0:
        k = max(1, int(cfg.top_k_percent * pixel.numel()))
        sem = torch.topk(pixel, k, sorted=False).values.mean()
    else:
        sem = pixel.sum() / (sem_t != IGNORE_INDEX).sum().clamp(min=1)
    cw, ow = targets["center_weights"], targets["offset_weights"]
    center = ((outputs["center"][:, 0] - targets["center"]) ** 2 * cw).sum() / cw.sum().clamp(min=1)
    offset = ((outputs["offset"] - targets["offset"]).abs() * ow.unsqueeze(1)).sum() / ow.sum().clamp(min=1)
    total = cfg.semantic_weight * sem + cfg.center_weight * center + cfg.offset_weight * offset
    return {"loss": total, "semantic": sem.detach(), "center": center.detach(), "offset": offset.detach()}


def collate_targets(targets: list[PanopticTargets]) -> dict[str, torch.Tensor]:
    stack = lambda name: torch.from_numpy(np.stack([getattr(t, name) for t in targets]))  # noqa: E731
    out = {k: stack(k) for k in ("semantic_weights", "center", "center_weights", "offset", "offset_weights")}
    out["semantic"] = stack("semantic").long()
    return out


def targets_to(targets: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Batched targets on the device of the model's outputs."""
    return {k: v.to(device, non_blocking=True) for k, v in targets.items()}


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanopticTrainConfig:
    """Everything that decides a panoptic training run (recorded in checkpoints and history).
    ``size``: the network size (frames are resized to it at scale 1); ``crop``: the training crop
    (default ``size``). ``small_area`` None: :func:`small_instance_area` of ``size``."""

    size: ImageShape
    crop: ImageShape | None = None
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "poly"  # or "cosine"
    warmup_steps: int = 100
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    jitter: float = 0.2
    sigma: float = 8.0
    small_area: float | None = None
    small_weight: float = 3.0
    semantic_weight: float = 1.0
    center_weight: float = 200.0
    offset_weight: float = 0.01
    top_k_percent: float | None = 0.2
    grad_clip: float | None = 35.0
    seed: int = 0
    cpu_precision: str = "fp32"        # fp32 | bf16 | auto: bf16 autocast on the CPU (edgeseg.train.precision)
    memory_format: str = "contiguous"  # contiguous | channels_last | auto (edgeseg.train.precision)
    device: str = "cpu"  # cpu | cuda | cuda:N (CUDA: bf16 autocast where the GPU has bf16, channels-last)
    workers: int = 0  # processes preparing batches (decode, augmentation, targets) ahead of the step

    def __post_init__(self) -> None:
        check_device_and_workers(self.device, self.workers)
        check_cpu_precision(self.cpu_precision, on_cpu=self.device == "cpu")
        check_memory_format(self.memory_format)
        if self.schedule not in ("poly", "cosine"):
            raise InputError(f"schedule must be poly|cosine, got {self.schedule!r}")
        if min(self.epochs, self.steps_per_epoch, self.batch_size) <= 0:
            raise InputError("epochs, steps_per_epoch and batch_size must be positive")
        if self.lr <= 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def loss(self) -> PanopticLossConfig:
        return PanopticLossConfig(self.semantic_weight, self.center_weight, self.offset_weight, self.top_k_percent)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"], d["crop"], d["scale"] = str(self.size), str(self.crop) if self.crop else None, list(self.scale)
        return d


def build_optimizer(model: torch.nn.Module, cfg: PanopticTrainConfig) -> torch.optim.Optimizer:
    return build_adamw(model, cfg.lr, cfg.weight_decay)


def build_schedule(cfg: PanopticTrainConfig) -> PolySchedule | CosineSchedule:
    return make_schedule(cfg.schedule, cfg.total_steps, cfg.warmup_steps)


# ---- data ---------------------------------------------------------------------------------------
def dataset_stream(dataset: Sequence, seed: int = 0, start: int = 0) -> Iterator[Sample]:
    """Endless ``(image, PanopticResult, crowd ids)`` from a :class:`edgeseg.data.CocoPanoptic`: sample k
    is frame ``perm_e[k % n]`` with ``perm_e`` a permutation drawn from ``(seed, e = k // n)``; a pure
    function of ``(seed, k)``, so a resumed run continues the same stream from ``start``."""
    if len(dataset) == 0:
        raise InputError("the panoptic dataset is empty")
    for i in permuted_indices(len(dataset), seed, start):
        s = dataset[i]
        yield s.image(), s.panoptic, s.crowd_ids



def synthetic_panoptic(size: ImageShape, seed: int = 0, start: int = 0, *, scenes: int = 256, max_t: int = 400,
                       max_objects: int = 6) -> Iterator[Sample]:
    """Endless ``(image, PanopticResult, frozenset())`` from :class:`edgeseg.data.SceneGenerator`: sample
    k is frame ``t_k`` of scene ``k % scenes``; a pure function of ``(seed, k)``. Category ids are
    the class indices of :data:`edgeseg.data.synthetic.CLASSES`."""
    from functools import lru_cache

    from ..data.synthetic import SceneGenerator

    @lru_cache(maxsize=64)
    def scene(i: int) -> SceneGenerator:
        return SceneGenerator(size, (seed, 17, i), max_objects)

    k = start
    while True:
        t = int(np.random.default_rng((seed, 23, k)).integers(0, max_t + 1))
        frame = scene(k % scenes).render(t)
        yield frame.image, frame.panoptic, frozenset()
        k += 1


# ---- one strategy per architecture --------------------------------------------------------------
class PanopticStrategy(Protocol):
    """What an architecture adds to :class:`PanopticTrainer`.

    ``targets(ids, segments, crowd)``: one augmented sample's targets (``ids`` int32 ``[h, w]``
    segment ids at the crop size, 0 = void or padding; its ``segments``; crowd segment ids).
    ``loss(outputs, targets)``: ``{"loss": total, part: detached tensor for each of parts}`` for the
    model's training-mode outputs on the batch and the batch's targets.
    ``parts``: the loss parts logged and averaged per epoch; ``epoch_type``: the history record, a
    frozen dataclass with fields ``epoch, loss, *parts, lr, seconds, steps``.
    """

    parts: tuple[str, ...]
    epoch_type: type

    def targets(self, ids: np.ndarray, segments: Sequence[Segment], crowd: frozenset) -> Any: ...

    def loss(self, outputs: dict[str, Any], targets: list[Any]) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class PanopticEpoch:
    """One epoch of Panoptic-DeepLab history: mean losses over its steps, the last learning rate, wall seconds."""

    epoch: int
    loss: float
    semantic: float
    center: float
    offset: float
    lr: float
    seconds: float
    steps: int


class PanopticDeepLabTraining:
    """Panoptic-DeepLab's targets (:func:`panoptic_targets`) and loss (:func:`panoptic_loss`)."""

    parts = ("semantic", "center", "offset")
    epoch_type = PanopticEpoch

    def __init__(self, model: torch.nn.Module, config: "PanopticTrainConfig", class_of: dict[int, int]):
        self.config, self.class_of, self.thing_classes = config, class_of, tuple(model.thing_classes)
        self.small_area = config.small_area if config.small_area is not None else small_instance_area(config.size)

    def targets(self, ids: np.ndarray, segments: Sequence[Segment], crowd: frozenset) -> PanopticTargets:
        c = self.config
        return panoptic_targets(ids, segments, self.class_of, self.thing_classes, crowd, sigma=c.sigma,
                                small_area=self.small_area, small_weight=c.small_weight)

    def loss(self, outputs: dict[str, Any], targets: list[PanopticTargets]) -> dict[str, torch.Tensor]:
        return panoptic_loss(outputs, targets_to(collate_targets(targets), outputs["semantic"].device), self.config.loss)


# architecture -> strategy(model, config, class_of); ``model``: the model class it trains
STRATEGIES: Registry[Callable[..., PanopticStrategy]] = Registry("panoptic training architecture", error=ModelError)
STRATEGIES.add("panoptic_deeplab", PanopticDeepLabTraining, model=PanopticDeepLab)
STRATEGIES.add("lpsnet", LPSNetTraining, model=LPSNet)


def model_arch(model: torch.nn.Module) -> str:
    """The :data:`STRATEGIES` name of ``model``'s architecture (by its class), or a :class:`ModelError`."""
    for arch in STRATEGIES:
        if isinstance(model, STRATEGIES.entry(arch).meta["model"]):
            return arch
    raise ModelError(f"no panoptic training for a {type(model).__name__} ({getattr(model, 'model_name', '?')})",
                     fix=f"train a model of one of these architectures: {', '.join(STRATEGIES)}")


# ---- the trainer --------------------------------------------------------------------------------
class PanopticTrainer(CpuStepLevers):
    """Trains a panoptic model of an architecture in :data:`STRATEGIES` (Panoptic-DeepLab, LPSNet).

    category_ids: the category id of each class index (default ``0..C-1``).
    input_spec:   normalisation; defaults to ``InputSpec(size=config.size)`` (ImageNet mean/std, RGB).
    out_dir:      where ``last.pt`` (resume), ``history.json`` and ``model.safetensors`` go (None: nowhere).
    checkpoint_every: also write ``last.pt`` every this many steps inside an epoch (0: epoch ends only).
    log_every:    log a progress line (samples/s, loss parts) every this many steps (0: never).
    """

    def __init__(self, model: torch.nn.Module, config: PanopticTrainConfig, *, category_ids: Sequence[int] | None = None,
                 input_spec: InputSpec | None = None, out_dir: str | os.PathLike | None = None,
                 model_name: str | None = None, checkpoint_every: int = 0, log_every: int = 0):
        from .trainer import resolve_device

        self.device = resolve_device(config.device)
        self.model, self.config = model.to(self.device), config
        self.spec = input_spec or InputSpec(size=config.size)
        self.category_ids = tuple(int(c) for c in (category_ids if category_ids is not None else range(model.num_classes)))
        if len(self.category_ids) != model.num_classes:
            raise InputError(f"{len(self.category_ids)} category ids for a model of {model.num_classes} classes",
                             fix="give one category id per class, in the model's class order")
        self.class_of = {c: i for i, c in enumerate(self.category_ids)}
        self._unknown: set[int] = set()
        self.arch = model_arch(model)
        self.strategy: PanopticStrategy = STRATEGIES.get(self.arch)(model, config, self.class_of)
        self.parts = ("loss", *self.strategy.parts)
        self.optimizer = build_optimizer(model, config)
        self.schedule = build_schedule(config)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.model_name = model_name or getattr(model, "model_name", None)
        self.checkpoint_every, self.log_every = int(checkpoint_every), int(log_every)
        self.epoch, self.step = 0, 0
        self.sums = dict.fromkeys(self.parts, 0.0)  # the running epoch's loss sums (resumable mid-epoch)
        self.epoch_seconds = 0.0
        self.history: list = []  # of strategy.epoch_type
        # bf16 autocast and channels-last: decided before the first step (auto: timed on this machine), kept on resume
        self.precision: dict[str, Any] | None = None

    def prepare(self, samples: list[Sample], first_index: int, augment: bool = True) -> tuple[torch.Tensor, list]:
        """Augmented, normalised batch ``[B, 3, h, w]`` and its targets (the strategy's, one per sample)."""
        c = self.config
        images, targets = [], []
        for j, (image, result, crowd) in enumerate(samples):
            unknown = {s.category_id for s in result.segments} - self.class_of.keys() - self._unknown
            if unknown:  # ignored like void; usually category_ids was not given
                self._unknown |= unknown
                log.warning("category ids %s are not among the model's classes %s: their pixels are ignored",
                            sorted(unknown), list(self.category_ids))
            rng = np.random.default_rng((c.seed, 31, first_index + j)) if augment else None
            img, ids = augment_panoptic(image, result.segment_ids, c.size, rng, crop=c.crop, scale=c.scale, hflip=c.hflip,
                                        jitter=c.jitter)
            images.append(self.spec.normalize(img).transpose(2, 0, 1))
            targets.append(self.strategy.targets(ids, result.segments, crowd))
        return torch.from_numpy(np.ascontiguousarray(np.stack(images))), targets

    def train_step(self, samples: list[Sample], first_index: int) -> dict[str, float]:
        """One optimiser step on ``samples`` (sample indices ``first_index...``)."""
        return self._step(*self.prepare(samples, first_index))

    def _step(self, x: torch.Tensor, targets: list) -> dict[str, float]:
        self.model.train()
        torch.manual_seed(self.config.seed * 1000003 + self.step)
        lr = self.schedule.apply(self.optimizer, self.step) * self.config.lr
        losses = self.strategy.loss(self.forward(self.model, x.to(self.device, non_blocking=True)), targets)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {**{k: float(v.detach()) for k, v in losses.items()}, "lr": lr}

    def choose_precision(self, samples: list[Sample], first_index: int) -> dict[str, Any]:
        """Decide how the step runs (``config.cpu_precision``, ``config.memory_format``; ``auto``: timed
        on a copy of the model with this batch; on a GPU: bf16 autocast where it has bf16)."""
        return self._decide(*self.prepare(samples, first_index))

    def _decide(self, x: torch.Tensor, targets: list) -> dict[str, Any]:
        if self.device.type == "cuda":
            choice = {"device": str(self.device), "bf16": bool(torch.cuda.is_bf16_supported()), "channels_last": True}
            self.keep_precision(choice)
            return choice
        return self.decide_precision(x, lambda out: self.strategy.loss(out, targets)["loss"])

    def make_batch(self, data: Callable[[int], Iterable[Sample]], step: int) -> tuple[torch.Tensor, list]:
        """Step ``step``'s batch and targets from the stream ``data(start)`` (what a worker makes)."""
        import itertools

        first = step * self.config.batch_size
        return self.prepare(list(itertools.islice(data(first), self.config.batch_size)), first)

    def _batches(self, data: Callable[[int], Iterable[Sample]], stop_step: int) -> Iterator[tuple[torch.Tensor, list]]:
        """``(x, targets)`` for the steps from ``self.step`` to ``stop_step``: made here from one stream
        (``workers`` 0) or by worker processes (the same batches)."""
        c = self.config
        if c.workers == 0:
            stream = iter(data(self.step * c.batch_size))
            for step in range(self.step, stop_step):
                yield self.prepare([next(stream) for _ in range(c.batch_size)], step * c.batch_size)
            return
        from functools import partial

        yield from worker_batches(partial(self.make_batch, data), range(self.step, stop_step), c.workers,
                                  pin_memory=self.device.type == "cuda")

    def _parts(self, values: dict[str, float]) -> str:
        return ", ".join(f"{k} {values[k]:.4g}" for k in self.strategy.parts)

    def fit(self, data: Callable[[int], Iterable[Sample]], resume: str | os.PathLike | None = None,
            epochs: int | None = None, on_epoch: Callable[[Any], None] | None = None,
            max_steps: int | None = None) -> list:
        """Train until ``config.epochs`` (or ``epochs``) are done, or ``max_steps`` more steps (for
        tests of mid-epoch resume). ``data(start)`` is the sample stream from sample index ``start``."""
        if resume is not None:
            self.load(resume)
        c = self.config
        stop = min(c.epochs, epochs or c.epochs) * c.steps_per_epoch
        if max_steps is not None:
            stop = min(stop, self.step + max_steps)
        batches = self._batches(data, stop)
        t_log, n_log = time.perf_counter(), 0
        with StopRequest() as request, contextlib.closing(batches):  # Ctrl-C / SIGTERM: the step finishes, then a save
            while self.step < stop:
                t0 = time.perf_counter()
                x, targets = next(batches)
                if self.precision is None:
                    self._decide(x, targets)
                    t0 = time.perf_counter()
                res = self._step(x, targets)
                self.epoch_seconds += time.perf_counter() - t0
                for k in self.parts:
                    self.sums[k] += res[k]
                n_log += 1
                if self.log_every and self.step % self.log_every == 0:
                    dt = time.perf_counter() - t_log
                    log.info("step %d/%d epoch %d  %.2f samples/s %.2fs/it  loss %.4f (%s) lr %.3g", self.step,
                             c.total_steps, self.epoch + 1, n_log * c.batch_size / dt, dt / n_log, res["loss"],
                             self._parts(res), res["lr"])
                    t_log, n_log = time.perf_counter(), 0
                if self.step % c.steps_per_epoch == 0:
                    self._end_epoch(res["lr"], on_epoch)
                elif self.checkpoint_every and self.step % self.checkpoint_every == 0:
                    self.save_checkpoint()
                if request.requested:
                    stop_now(request, self.save_checkpoint, f"step {self.step} (epoch {self.epoch + 1})")
        return self.history

    def _end_epoch(self, lr: float, on_epoch: Callable[[Any], None] | None) -> None:
        n = self.config.steps_per_epoch
        self.epoch += 1
        means = {k: self.sums[k] / n for k in self.parts}
        rec = self.strategy.epoch_type(epoch=self.epoch, **means, lr=lr, seconds=self.epoch_seconds, steps=n)
        self.history.append(rec)
        self.sums, self.epoch_seconds = dict.fromkeys(self.parts, 0.0), 0.0
        log.info("epoch %d/%d loss %.4f (%s) lr %.3g %.0fs", rec.epoch, self.config.epochs, rec.loss, self._parts(means),
                 rec.lr, rec.seconds)
        self.save_checkpoint()
        self.save_weights()
        if on_epoch is not None:
            on_epoch(rec)

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path | None:
        """The training state (atomically) at ``path`` or ``out_dir/last.pt``, plus ``history.json``."""
        if path is None and self.out_dir is None:
            return None
        state = {"format": STATE_FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "epoch": self.epoch, "step": self.step, "sums": dict(self.sums), "epoch_seconds": self.epoch_seconds,
                 "history": [asdict(r) for r in self.history], "config": self.config.to_dict(), "model_name": self.model_name,
                 "precision": self.precision, "rng": torch.get_rng_state()}
        return write_state(state, path, self.out_dir)

    def load(self, path: str | os.PathLike) -> None:
        """Resume from :meth:`save_checkpoint`'s file (or the run folder holding ``last.pt``)."""
        state = read_state(path, STATE_FORMAT, "panoptic", self.model, self.optimizer)
        if state.get("rng") is not None:  # dropout & co. go on as they were (older checkpoints have none)
            torch.set_rng_state(state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.sums = {k: float(state.get("sums", {}).get(k, 0.0)) for k in self.parts}
        self.epoch_seconds = float(state.get("epoch_seconds", 0.0))
        self.history = [self.strategy.epoch_type(**r) for r in state.get("history", [])]
        self.keep_precision(state.get("precision"))  # the resumed run keeps the precision it was trained in

    def save_weights(self, stem: str = "model") -> Path | None:
        """The weights alone through :func:`edgeseg.models.save_checkpoint` (classes, thing classes,
        category ids and input spec in ``extra``, so the model can be exported and decoded)."""
        if self.out_dir is None or self.model_name is None:
            return None
        from ..models.checkpoint import save_checkpoint

        m = self.model
        kwargs = dict(getattr(m, "model_kwargs", None) or {})
        kwargs.update(class_names=list(m.class_names), thing_classes=list(m.thing_classes))
        extra = {"task": "panoptic", "classes": list(m.class_names), "thing_classes": list(m.thing_classes),
                 "category_ids": list(self.category_ids), "input_spec": self.spec.to_dict(),
                 "epoch": self.epoch, "step": self.step}
        return save_checkpoint(m, self.out_dir / f"{stem}.safetensors", model_name=self.model_name,
                               num_classes=m.num_classes, extra=extra, model_kwargs=kwargs)


# ---- a quick panoptic check ---------------------------------------------------------------------
def panoptic_manifest(model: torch.nn.Module, spec: InputSpec, category_ids: Sequence[int] = (),
                      options: PanopticOptions | None = None) -> "Manifest":
    """The manifest an export of ``model`` (:func:`edgeseg.export.panoptic_export.export_panoptic_bundle`)
    would carry, for decoding its eval-mode outputs with :func:`edgeseg.decode.decode`: the output
    layout found by one forward pass (:func:`~edgeseg.export.panoptic_export.panoptic_outputs`:
    ``center`` or ``paste``), the model's classes and thing classes, the dataset's ``category_ids``
    and ``options`` (default :class:`PanopticOptions`' thresholds)."""
    from ..export.panoptic_export import panoptic_outputs
    from ..structures.manifest import Manifest, OutputSpec

    layout, names = panoptic_outputs(model, spec)
    opts = (options or PanopticOptions()).replace(layout=layout, thing_classes=tuple(model.thing_classes),
                                                  category_ids=tuple(int(c) for c in category_ids) or None)
    return Manifest(name=str(getattr(model, "model_name", type(model).__name__)), task="panoptic",
                    classes=tuple(model.class_names), input=spec, outputs=tuple(OutputSpec(n, n) for n in names),
                    decoder=opts.to_dict())


@torch.no_grad()
def quick_pq(model: torch.nn.Module, samples: Iterable[Sample], spec: InputSpec, category_ids: Sequence[int],
             categories: dict[int, bool] | None = None, **options: Any) -> dict[str, Any]:
    """PQ (:class:`edgeseg.eval.PanopticMetric`) of ``model`` on ``samples`` as deployed: each image
    through ``spec.preprocess``, the model in eval mode, the runtime decoder with
    :func:`panoptic_manifest` (``options``: :class:`PanopticOptions` fields to change, e.g.
    ``stuff_area=1``), scored at the image's own size against its ground truth and crowd regions."""
    from ..decode import decode
    from ..eval.panoptic import PanopticMetric

    manifest = panoptic_manifest(model, spec, category_ids, PanopticOptions().replace(**options))
    model.eval()
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    metric = PanopticMetric(categories)
    n = 0
    for image, result, crowd in samples:
        x, meta = spec.preprocess(image)
        out = {k: v.float().cpu().numpy() for k, v in model(torch.from_numpy(x).to(device)).items()}
        metric.update(decode(out, meta, manifest), result, crowd)
        n += 1
    return {"frames": n, **metric.compute().to_dict()}
