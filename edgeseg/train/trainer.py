"""The trainer: epochs of :func:`~edgeseg.train.loop.train_one_epoch`, evaluation, checkpoints, resume.

::

    trainer = Trainer(model, train_set, TrainConfig(epochs=30, size=ImageShape(360, 480)),
                      val_data=val_set, out_dir="runs/road", model_name="road_net")
    result = trainer.fit()                  # or fit(resume="runs/road/last.pt")

Reproducibility: the model is built after :func:`seed_everything`; each epoch's shuffle order,
augmentation and dropout depend only on ``(seed, epoch)``; the learning rate is a pure function of
the global step. So stopping after epoch k and resuming from ``last.pt`` gives the same epoch k+1
as an uninterrupted run. Inside an epoch ``last.pt`` is also written every ``checkpoint_minutes`` and
when a SIGINT/SIGTERM stops the run (:mod:`edgeseg.train.interrupt`: the step in progress finishes
first); it then holds the steps done, their loss sum and the RNG state, and resuming skips the epoch's
first batches without reading them, so the rest of the epoch is the one an uninterrupted run trains.
``last.pt`` is a plain dict of tensors and numbers (``torch.load(...,
weights_only=True)``); the model weights are also written with :mod:`edgeseg.models.checkpoint`.
"""
from __future__ import annotations

import logging
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .._io import write_json, write_with
from ..errors import InputError, ModelError
from ..structures import ImageShape, InputSpec
from .augment import AugmentConfig
from .class_weights import frame_class_pixels
from .data import EvalSet, LoaderConfig, TrainSet, eval_loader, train_loader
from .interrupt import StopRequest, stop_now
from .loop import EpochResult, evaluate_model, train_one_epoch
from .optim import PolySchedule, build_sgd
from .progress import epoch_progress
from .precision import CpuStepLevers, check_cpu_precision, check_memory_format, choose_cpu_step

log = logging.getLogger(__name__)
STATE_FORMAT = "edgeseg.train/1"
LAST = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (recorded in checkpoints and reports)."""

    epochs: int
    size: ImageShape
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    poly_power: float = 0.9
    warmup_epochs: float = 1.0
    warmup_start: float = 0.1
    loss: str = "ce"
    class_weighting: str = "enet"
    focal_gamma: float = 2.0
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    jitter: float = 0.25
    aspect: float = 0.0  # random aspect change (edgeseg.train.augment.AugmentConfig.aspect)
    rare_sampling: float = 0.0  # rare-class sampling temperature (edgeseg.train.sampling); 0: uniform shuffle
    copy_paste: float = 0.0  # probability of rare-class copy-paste per sample (edgeseg.train.copy_paste); 0: off
    paste_classes: tuple[str, ...] | None = None  # the classes copy-paste pastes (None: those below a uniform share)
    teacher: str | None = None  # distillation teachers (edgeseg.train.distill): bundle[+bundle...][;...]; None: off
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    teacher_flip: bool = False
    eval_every: int = 1
    eval_size: ImageShape | None = None
    crop: ImageShape | None = None
    seed: int = 0
    workers: int = 0
    device: str = "cpu"
    amp: bool = True
    cpu_precision: str = "fp32"        # fp32 | bf16 | auto: bf16 autocast on the CPU (edgeseg.train.precision)
    memory_format: str = "contiguous"  # contiguous | channels_last | auto (edgeseg.train.precision)
    grad_clip: float | None = None
    threads: int = 0
    progress: bool = True
    weights_format: str = "safetensors"
    checkpoint_minutes: float = 10.0  # also write last.pt inside an epoch this often (0: at epoch ends only)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0:
            raise InputError(f"epochs and batch size must be positive, got {self.epochs} and {self.batch_size}",
                             fix="give --epochs and --batch of at least 1")
        if not math.isfinite(self.lr) or self.lr <= 0:  # before the data is read, not at the optimizer
            raise InputError(f"learning rate must be a positive number, got {self.lr}", fix="e.g. --lr 0.01")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):  # an audit: 2 trained without a word
            raise InputError(f"momentum must be in [0, 1), got {self.momentum}", fix="e.g. --momentum 0.9")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"weight decay must be >= 0, got {self.weight_decay}", fix="e.g. --weight-decay 1e-4")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise InputError(f"warm-up must be a number of epochs >= 0, got {self.warmup_epochs}",
                             fix="e.g. --warmup 1; 0 starts at the full learning rate")
        if self.warmup_epochs > self.epochs:
            log.warning("the warm-up (%g epochs) is longer than the run (%d): the learning rate never reaches --lr %g",
                        self.warmup_epochs, self.epochs, self.lr)
        if not isinstance(self.size, ImageShape):
            raise InputError(f"TrainConfig.size must be an ImageShape, got {self.size!r}")
        if self.crop is not None and (self.crop.height > self.size.height or self.crop.width > self.size.width):
            raise InputError(f"training crop {self.crop} is larger than the network size {self.size}",
                             fix="give a --crop no larger than --size (or leave --crop out)")
        if not (math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0):
            raise InputError(f"checkpoint interval must be a number of minutes >= 0, got {self.checkpoint_minutes}",
                             fix="e.g. --checkpoint-minutes 10; 0 writes checkpoints at epoch ends only")
        if self.weights_format not in ("safetensors", "pt"):
            raise InputError(f"weights_format must be safetensors or pt, got {self.weights_format!r}")
        if self.rare_sampling < 0:
            raise InputError(f"rare-class sampling temperature must be >= 0, got {self.rare_sampling}",
                             fix="give --rare-sampling T with T > 0 (DAFormer uses 0.01), or 0 for a uniform shuffle")
        if not 0.0 <= self.copy_paste <= 1.0:
            raise InputError(f"copy-paste probability must be in [0, 1], got {self.copy_paste}",
                             fix="e.g. --copy-paste 0.5; 0 turns it off")
        if self.paste_classes and not self.copy_paste:
            raise InputError("--paste-classes names the classes copy-paste pastes, but copy-paste is off",
                             fix="add --copy-paste P (e.g. 0.5), or leave --paste-classes out")
        if self.teacher is not None:
            self.distill_config()  # its checks now
        elif self.teacher_flip:
            raise InputError("--teacher-flip averages a teacher over mirrored frames, but no --teacher is given",
                             fix="add --teacher BUNDLE, or leave --teacher-flip out")
        check_device_name(self.device)
        check_cpu_precision(self.cpu_precision, on_cpu=self.device == "cpu")
        check_memory_format(self.memory_format)
        self.augment_config()  # its checks (scale range, aspect change) now, not after the datasets are cached

    def distill_config(self):
        """The distillation this configuration asks for (None: none)."""
        from .distill import DistillConfig

        if self.teacher is None:
            return None
        return DistillConfig(self.teacher, self.distill_weight, self.distill_temperature, self.teacher_flip)

    def augment_config(self) -> AugmentConfig:
        """The training augmentation this configuration asks for."""
        return AugmentConfig(self.size, self.scale, self.hflip, self.jitter, self.jitter, self.jitter, crop=self.crop,
                             aspect=self.aspect)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = str(self.size)
        d["eval_size"] = None if self.eval_size is None else str(self.eval_size)
        d["crop"] = None if self.crop is None else str(self.crop)
        d["scale"] = list(self.scale)
        return d


#: TrainConfig fields a resumed run may change: the schedule's length and how this machine runs it
RESUMABLE_CHANGES = frozenset({"epochs", "workers", "device", "amp", "threads", "progress", "weights_format",
                               "checkpoint_minutes", "eval_every", "eval_size", "cpu_precision", "memory_format"})


def changed_settings(then: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(field, then, now)`` for every training setting a resumed run gives otherwise than the run it resumes
    (fields one side lacks, from another edgeseg version, are not compared)."""
    import json

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    return [(k, then[k], now[k]) for k in sorted(set(then) & set(now))
            if k not in RESUMABLE_CHANGES and not same(then[k], now[k])]


def settings_refusal(where: str, changed: list[tuple[str, Any, Any]]) -> ModelError:
    """The error for resuming a run with other training settings than it was started with."""
    return ModelError(f"{where}: this run was started with other settings than this command gives: "
                      + "; ".join(f"{k} {a!r} then, {b!r} now" for k, a, b in changed),
                      fix="resume with the run's own settings (only --epochs and the machine's settings, such as "
                          "--threads or --workers, may change), or train anew with them in another --out, starting "
                          "from this run's weights: --init RUN/model.safetensors --out NEW_RUN")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of history. ``miou`` (0..1) and ``scores`` are set on evaluated epochs."""

    epoch: int
    loss: float
    lr: float
    seconds: float
    steps: int
    miou: float | None = None
    scores: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`Trainer.fit` did."""

    history: tuple[EpochRecord, ...]
    best_miou: float | None
    best_epoch: int | None
    seconds: float
    last_checkpoint: Path | None
    weights: Path | None

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": [asdict(r) for r in self.history],
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "seconds": self.seconds,
            "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
            "weights": None if self.weights is None else str(self.weights),
        }


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (CPU and CUDA); make cuDNN deterministic when asked."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def check_device_name(name: str) -> str:
    """``name`` lower-cased if it is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (Apple GPUs; checked
    before any data is read)."""
    text = str(name).strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", text):
        raise InputError(f"--device {name!r} is not a training device", fix="use cpu, cuda, cuda:N, mps or auto")
    return text


def resolve_device(name: str):
    """``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against the GPUs torch sees."""
    import torch

    text = check_device_name(name)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps asked but torch finds no Apple GPU (MPS)", fix="use --device cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name} asked but torch finds no CUDA GPU", fix="use --device cpu")
        index, count = int(text.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise InputError(f"--device {name}: torch sees {count} CUDA GPU(s), numbered from 0",
                             fix=f"use cuda:0 .. cuda:{count - 1}")
    return torch.device(text)


class Trainer(CpuStepLevers):
    """Trains a segmentation model on a dataset of :class:`edgeseg.data.Sample`.

    model:       an ``nn.Module``; ``forward(images) -> {"logits": ...}`` (or a tensor).
    train_data:  a sequence of samples with ``classes`` (or pass ``num_classes``).
    val_data:    evaluated every ``eval_every`` epochs and after the last one.
    input_spec:  normalisation (mean/std/scale, colour order); defaults to ImageNet mean/std, RGB.
    loss:        a callable ``(logits, target) -> scalar`` overriding ``config.loss``.
    out_dir:     where ``last.pt``, the model weights and ``history.json`` go (None: nowhere).
    model_name:  the registered model name, stored with the weights so they can be rebuilt.
    """

    def __init__(
        self,
        model,
        train_data: Sequence,
        config: TrainConfig,
        *,
        val_data: Sequence | None = None,
        input_spec: InputSpec | None = None,
        num_classes: int | None = None,
        loss: Callable | None = None,
        out_dir: str | os.PathLike | None = None,
        model_name: str | None = None,
        job_settings: dict[str, Any] | None = None,
    ):
        import torch

        self.job_settings = dict(job_settings or {})  # what a resume must find unchanged beside the config

        self.config = config
        self.device = resolve_device(config.device)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.model = model.to(self.device)
        self.num_classes = int(num_classes or len(getattr(train_data, "classes", ())))
        if self.num_classes <= 0:
            raise InputError("Trainer: cannot tell the number of classes", fix="pass num_classes=")
        names = tuple(str(c) for c in getattr(train_data, "classes", ()))
        palette = getattr(train_data, "palette", None)
        if names and len(names) < self.num_classes:  # --num-classes above the data's: its names kept, the rest named
            log.warning("%d model outputs for the %d classes of the data: outputs %d..%d are named class_%d.. and no "
                        "label teaches them", self.num_classes, len(names), len(names), self.num_classes - 1, len(names))
            names += tuple(f"class_{k}" for k in range(len(names), self.num_classes))
            if palette is not None and len(palette) < self.num_classes:
                from ..structures.palette import default_palette

                palette = [*palette, *default_palette(self.num_classes)[len(palette):]]
        self.classes = names if len(names) == self.num_classes else ()
        self.palette = None if palette is None or len(palette) != self.num_classes else \
            [[int(v) for v in c] for c in palette]
        self.spec = input_spec or InputSpec(size=config.size)
        self.val_data = val_data
        # one pass over the training labels, for the class weights, the rare-class sampler and copy-paste alike
        wce = loss is None and "wce" in config.loss
        need = wce or config.rare_sampling or config.copy_paste
        pixels = frame_class_pixels(train_data, self.num_classes) if need else None
        self.sampler = self._build_sampler(pixels)
        self.train_set = TrainSet(train_data, self.config.augment_config(), self.spec, seed=config.seed,
                                  paste=self._build_paste(pixels), teachers=self._build_teachers(train_data))
        self.loss_fn = loss or self._build_loss(pixels)
        self.optimizer = build_sgd(self.model, config.lr, config.momentum, config.weight_decay, config.nesterov)
        self.amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        # bf16 autocast and channels-last on the CPU: decided before the first step (auto: timed on this
        # machine), kept on resume
        self.precision: dict[str, Any] | None = None
        self.loader_cfg = LoaderConfig(config.batch_size, config.workers, config.seed)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.model_name = model_name
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps done
        self.history: list[EpochRecord] = []
        self.best: tuple[float, int] | None = None
        # the epoch in progress: steps done, their loss sum, seconds (all 0 at an epoch's start)
        self.partial: tuple[int, float, float] = (0, 0.0, 0.0)
        self.eval_pending = False  # the last finished epoch's evaluation is still to do (stopped during it)
        self._rng_state = None  # the torch RNG state to continue a resumed epoch with
        self._stop: StopRequest | None = None
        self._saved_at = time.monotonic()

    # ---- construction helpers -----------------------------------------------------------------
    def _build_loss(self, pixels) -> Callable:
        from .class_weights import ClassStats, weights_of
        from .losses import LossConfig, build_loss

        weights = None
        if "wce" in self.config.loss:
            weights = weights_of(ClassStats.from_frame_pixels(pixels), self.config.class_weighting)
        cfg = LossConfig.parse(self.config.loss, class_weights=weights, focal_gamma=self.config.focal_gamma)
        return build_loss(cfg)

    def _build_sampler(self, pixels):
        """The rare-class sampler (``config.rare_sampling > 0``), or None for a uniform shuffle."""
        if not self.config.rare_sampling:
            return None
        from .sampling import RareClassSampler

        sampler = RareClassSampler.from_pixels(pixels, self.config.rare_sampling)
        probs = sampler.class_probs
        top = sorted(range(len(probs)), key=lambda c: -probs[c])[:5]
        log.info("rare-class sampling (T=%g): class draw probabilities %s", self.config.rare_sampling,
                 ", ".join(f"{self.classes[c] if self.classes else c} {probs[c]:.2f}" for c in top))
        return sampler

    def _build_paste(self, pixels):
        """Rare-class copy-paste (``config.copy_paste > 0``), or None."""
        if not self.config.copy_paste:
            return None
        from .copy_paste import RareClassPaste

        classes = None
        if self.config.paste_classes:
            unknown = [c for c in self.config.paste_classes if c not in self.classes]
            if unknown:
                raise InputError(f"--paste-classes {', '.join(unknown)}: not classes of the training data",
                                 fix=f"name some of: {', '.join(self.classes) or '(the data names no classes)'}")
            classes = [self.classes.index(c) for c in self.config.paste_classes]
        paste = RareClassPaste.from_pixels(pixels, self.config.copy_paste, classes)
        log.info("copy-paste (p=%g): classes %s from %d donor frames", self.config.copy_paste,
                 ", ".join(self.classes[c] if self.classes else str(c) for c in paste.classes), paste.donors.size)
        return paste

    def _build_teachers(self, train_data):
        """The distillation teachers per part of the training data (``config.teacher``), or None."""
        cfg = self.config.distill_config()
        if cfg is None:
            return None
        from .distill import open_teachers

        if not self.classes:
            raise InputError("--teacher: the training data names no classes, so a teacher's cannot be mapped onto them")
        parts = len(getattr(train_data, "parts", ())) or 1
        threads = 1 if self.config.workers > 0 else self.config.threads
        teachers = open_teachers(cfg, parts, self.classes, threads=threads)
        log.info("distillation (weight %g, T %g): %s", cfg.weight, cfg.temperature,
                 "; ".join(t.name if t is not None else "-" for t in teachers))
        return teachers

    @property
    def steps_per_epoch(self) -> int:
        n, b = len(self.train_set), self.config.batch_size
        return n // b if n >= b else 1

    @property
    def schedule(self) -> PolySchedule:
        total = self.config.epochs * self.steps_per_epoch
        warm = min(total, round(self.config.warmup_epochs * self.steps_per_epoch))
        return PolySchedule(total, self.config.poly_power, warm, self.config.warmup_start)

    # ---- one epoch, one evaluation ----------------------------------------------------------
    def train_epoch(self) -> EpochResult:
        """Train epoch ``self.epoch`` (0-based), or the rest of it after a mid-epoch resume, and advance the
        counters. A stop asked for by a signal (:class:`~edgeseg.train.interrupt.StopRequest`) ends it
        after the step in progress: the state is saved and :class:`TrainingStopped` raised."""
        import torch

        if self.precision is None:
            self.keep_precision(self._choose_precision())
        torch.manual_seed(self.config.seed * 1000003 + self.epoch)  # dropout & co. depend on (seed, epoch)
        if self._rng_state is not None:  # resumed inside this epoch: go on where it was
            torch.set_rng_state(self._rng_state)
            self._rng_state = None
        done, loss_sum, seconds = self.partial
        loader = train_loader(self.train_set, self.loader_cfg, self.epoch, self._epoch_indices(), skip_batches=done)
        first, left = self.step, len(loader)
        minutes = self.config.checkpoint_minutes
        t0 = time.perf_counter()

        def after_step(n: int, total: float) -> bool:
            self.step = first + n
            self.partial = (done + n, loss_sum + total, seconds + time.perf_counter() - t0)
            if self._stop is not None and self._stop.requested:
                return True
            if (minutes and n < left and self.out_dir is not None  # the epoch's end is saved by fit
                    and time.monotonic() - self._saved_at >= 60 * minutes):
                self.save_checkpoint()
            return False

        desc = f"epoch {self.epoch + 1}/{self.config.epochs}" + (f" from step {done + 1}" if done else "")
        with self._bar(left, desc) as bar:
            res = train_one_epoch(
                self.model, loader, self.loss_fn, self.optimizer, device=self.device, schedule=self.schedule,
                step=first, scaler=self.scaler, amp=self.amp, grad_clip=self.config.grad_clip, progress=bar,
                cpu_bf16=bool(self.precision["bf16"]), channels_last=bool(self.precision.get("channels_last")),
                distill=None if self.config.teacher is None else
                (self.config.distill_weight, self.config.distill_temperature),
                after_step=after_step,
            )
        steps, loss_sum, seconds = self.partial
        if res.steps < left:  # stopped inside the epoch
            self._stopped(f"epoch {self.epoch + 1}, step {steps} of {steps + left - res.steps}")
        self.partial = (0, 0.0, 0.0)
        self.epoch += 1
        return EpochResult(loss_sum / steps, steps, seconds, res.lr)

    def _stopped(self, where: str) -> None:
        """Save the run and raise :class:`TrainingStopped` (a signal asked for a stop)."""
        stop_now(self._stop, self.save_checkpoint, where)

    def _epoch_indices(self) -> list[int] | None:
        """This epoch's frame order under rare-class sampling (None: the loader's seeded shuffle)."""
        return None if self.sampler is None else self.sampler.indices(self.config.seed, self.epoch)

    def _choose_precision(self) -> dict[str, Any]:
        """How the CPU runs a step (``config.cpu_precision``, ``config.memory_format``); an ``auto`` one is
        decided by timing the candidates on the first batch."""
        c = self.config
        if "auto" not in (c.cpu_precision, c.memory_format) or self.device.type != "cpu":
            return choose_cpu_step(c.cpu_precision, c.memory_format, self.device, self.model)
        images, target, *_ = next(iter(train_loader(self.train_set, self.loader_cfg, self.epoch, self._epoch_indices())))
        batch = (images.to(self.device), target.to(self.device))
        return choose_cpu_step(c.cpu_precision, c.memory_format, self.device, self.model, batch, self.loss_fn)

    def evaluate(self, data: Sequence | None = None):
        """Scores (:class:`edgeseg.eval.SemanticScores`) on ``data`` (default: the validation set); None
        when a stop was asked for during it (inside :meth:`fit`)."""
        data = self.val_data if data is None else data
        if data is None:
            raise InputError("Trainer.evaluate: no validation data", fix="pass val_data=")
        ev = EvalSet(data, self.config.eval_size or self.config.size, self.spec)
        loader = eval_loader(ev, self.config.batch_size, self.config.workers)
        stop = None if self._stop is None else (lambda: self._stop.requested)
        with self._bar(len(loader), "eval") as bar:
            return evaluate_model(self.model, loader, self.num_classes, device=self.device, amp=self.amp,
                                  classes=self.classes, progress=bar, should_stop=stop)

    def _bar(self, total: int, desc: str):
        return epoch_progress(total, desc, enabled=self.config.progress)

    # ---- the run --------------------------------------------------------------------------------
    def fit(self, resume: str | os.PathLike | None = None, epochs: int | None = None) -> TrainResult:
        """Train until ``config.epochs`` (or ``epochs``, to stop early) epochs are done. In the main thread
        the first SIGINT/SIGTERM stops it after the step in progress, saved (:class:`TrainingStopped`)."""
        if resume is not None:
            self.load(resume)
            done = self.partial[0] if self.partial else 0
            log.info("resuming %s at epoch %d%s (of %d)", resume, self.epoch + 1,
                     f", after its step {done}" if done else "", self.config.epochs)
        stop = min(self.config.epochs, epochs or self.config.epochs)
        t0 = time.perf_counter()
        with StopRequest() as request:
            self._stop = request
            try:
                if self.eval_pending:  # stopped while evaluating its last epoch: that evaluation first
                    self._evaluate_epoch()
                while self.epoch < stop:
                    res = self.train_epoch()
                    self.history.append(EpochRecord(self.epoch, res.loss, res.lr, res.seconds, res.steps))
                    c = self.config
                    self.eval_pending = self.val_data is not None and (
                        self.epoch % max(1, c.eval_every) == 0 or self.epoch == c.epochs)
                    self.save_checkpoint()  # the finished epoch is kept whatever happens while it is evaluated
                    if self.eval_pending and not request.requested:
                        self._evaluate_epoch()
                    rec = self.history[-1]
                    log.info("epoch %d/%d loss %.4f lr %.3g %.1fs%s", rec.epoch, c.epochs, rec.loss, rec.lr,
                             rec.seconds, "" if rec.miou is None else f" mIoU {100 * rec.miou:.2f}")
                    if request.requested:
                        self._stopped(f"the end of epoch {self.epoch}")
            finally:
                self._stop = None
        weights = self._save_weights("model")
        return TrainResult(
            tuple(self.history), None if self.best is None else self.best[0], None if self.best is None else self.best[1],
            time.perf_counter() - t0, None if self.out_dir is None else self.out_dir / LAST, weights,
        )

    def _evaluate_epoch(self) -> None:
        """Score the last finished epoch on the validation set, record it (best weights too), save."""
        scores = self.evaluate()
        if scores is None:
            self._stopped(f"the evaluation after epoch {self.epoch} (done again on --resume)")
        rec = replace(self.history[-1], miou=float(scores.miou), scores=_scores_dict(scores))
        self.history[-1] = rec
        if self.best is None or rec.miou > self.best[0]:
            self.best = (rec.miou, self.epoch)
            self._save_weights("best", rec.miou)
        self.eval_pending = False
        self.save_checkpoint()

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything resume needs, as tensors, numbers, strings, lists and dicts only."""
        import torch

        return {
            "format": STATE_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": [asdict(r) for r in self.history],
            "best": None if self.best is None else list(self.best),
            "config": self.config.to_dict(),
            "job": dict(self.job_settings),
            "model_name": self.model_name,
            "num_classes": self.num_classes,
            "precision": self.precision,
            "partial": list(self.partial),
            "rng": torch.get_rng_state() if self.partial[0] else None,
            "eval_pending": self.eval_pending,
        }

    def load_state_dict(self, state: dict[str, Any], where: str = "state") -> None:
        if state.get("format") != STATE_FORMAT:
            raise ModelError(f"{where}: not an edgeseg training checkpoint (format {state.get('format')!r})")
        theirs = (state.get("model_name"), state.get("num_classes"))
        ours = (self.model_name, self.num_classes)
        if theirs[0] is not None and ours[0] is not None and theirs != ours:
            raise ModelError(f"{where}: written by a run of model {theirs[0]!r} with {theirs[1]} classes; this run "
                             f"trains {ours[0]!r} with {ours[1]} classes",
                             fix=f"resume with model {theirs[0]} and its data/--num-classes, or give a new --out "
                                 "to start this run")
        changed = changed_settings(state.get("config") or {}, self.config.to_dict())
        # the data as the job read it (kind, image counts, classes, splits, init), not its path: a dataset moved to
        # another folder or machine resumes; another dataset does not (an audit: a resume on an 8-image set went on
        # from a 101-image run's best, comparing mIoU across two validation sets)
        changed += changed_settings(state.get("job") or {}, dict(self.job_settings))
        if changed:  # before: the restored optimizer kept the run's lr while the records showed the new one
            raise settings_refusal(where, changed)
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise ModelError(f"{where}: weights do not fit this model: {str(e).splitlines()[0]}",
                             fix="resume with the same MODEL and --num-classes as the run that wrote it") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = [EpochRecord(**r) for r in state.get("history", [])]
        self.best = None if state.get("best") is None else (float(state["best"][0]), int(state["best"][1]))
        self.keep_precision(state.get("precision"))  # the resumed run keeps the precision it was trained in
        partial = state.get("partial") or (0, 0.0, 0.0)
        self.partial = (int(partial[0]), float(partial[1]), float(partial[2]))
        self._rng_state = state.get("rng") if self.partial[0] else None
        self.eval_pending = bool(state.get("eval_pending", False))
        if self.partial[0] >= self.steps_per_epoch:
            raise ModelError(f"{where}: {self.partial[0]} steps done inside epoch {self.epoch + 1}, which has "
                             f"{self.steps_per_epoch} with this data and batch size",
                             fix="resume with the same --data and --batch as the run that wrote it")

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the training state (atomically) to ``path`` or ``out_dir/last.pt``; also ``history.json``."""
        import torch

        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / LAST
        path = write_with(path, lambda tmp: torch.save(self.state_dict(), tmp))
        self._saved_at = time.monotonic()
        if self.out_dir is not None:
            hist = {"config": self.config.to_dict(), "history": [asdict(r) for r in self.history]}
            write_json(self.out_dir / "history.json", hist)
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a checkpoint written by :meth:`save_checkpoint` (a file, or a run folder)."""
        import torch

        p = Path(path)
        if p.is_dir():
            p = p / LAST
        if not p.is_file():
            raise InputError(f"cannot resume: no checkpoint at {p}", fix="give the run's --out folder or its last.pt")
        try:
            state = torch.load(p, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            # torch's own first line can be advice about weights_only=False, which is not the fix here
            why = type(e).__name__ + (f": {first}" if first and len(first) <= 120 and "weights_only" not in first else "")
            raise ModelError(f"cannot resume: {p} is not a readable training checkpoint: it is corrupt or "
                             f"truncated ({why})",
                             fix=f"restore {p.name} from a copy, or start the run afresh without --resume in a new --out "
                                 "(the run folder's best/model weights can be its --init)") from None
        if not isinstance(state, dict):
            raise ModelError(f"cannot resume: {p} is not an edgeseg training checkpoint ({type(state).__name__})",
                             fix="give the --out folder of an edgeseg train run")
        self.load_state_dict(state, where=str(p))

    def _save_weights(self, stem: str, miou: float | None = None) -> Path | None:
        """The model weights alone, through :func:`edgeseg.models.checkpoint.save_checkpoint`."""
        if self.out_dir is None or self.model_name is None:
            return None
        from ..models.checkpoint import save_checkpoint

        path = self.out_dir / f"{stem}.{self.config.weights_format}"
        # the class names, palette and input spec: `edgeseg export` of these weights makes the bundle `--export`
        # makes (it gave class_0.. at 480x360 without them)
        extra = {"epoch": self.epoch, "step": self.step, "loss_spec": self.config.loss, "task": "semantic",
                 "input_spec": self.spec.to_dict()}
        if self.classes:
            extra["classes"] = list(self.classes)
        if self.palette is not None:
            extra["palette"] = self.palette
        if miou is None and self.history:
            miou = self.history[-1].miou
        if miou is not None:
            extra["miou"] = miou
        # the create_model arguments (encoder=..., output_stride=...) rebuild it for export, resume and --init
        kwargs = dict(getattr(self.model, "model_kwargs", None) or {})
        save_checkpoint(self.model, path, model_name=self.model_name, num_classes=self.num_classes, extra=extra,
                        model_kwargs=kwargs)
        return path


def _scores_dict(scores) -> dict[str, Any]:
    d = scores.to_dict() if hasattr(scores, "to_dict") else dict(vars(scores))
    out = {}
    for k, v in d.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        out[k] = v
    return out
