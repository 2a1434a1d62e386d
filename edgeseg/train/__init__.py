"""The trainer used for the default models and quantization-aware fine-tuning.

Losses (CE, class-weighted CE, focal, Dice, Lovász-softmax, combinable: ``"ce+0.5*lovasz"``), SGD
with momentum and weight decay (none on biases/norms), the poly schedule with linear warm-up,
numpy/OpenCV augmentation, per-epoch evaluation with :mod:`edgeseg.eval`, resumable checkpoints,
mixed precision on CUDA. torch is imported inside functions, so importing this package is cheap.
"""
from __future__ import annotations

from .augment import AugmentConfig, augment
from .class_weights import WEIGHTINGS, class_stats, class_weights
from .flops import FlopCount, count_flops
from .loop import EpochResult, evaluate_model, train_one_epoch
from .losses import LOSSES, LossConfig, LossTerm, SegmentationLoss, build_loss
from .optim import PolySchedule, build_sgd, param_groups
from .trainer import EpochRecord, TrainConfig, Trainer, TrainResult, seed_everything

__all__ = [
    "AugmentConfig", "augment", "WEIGHTINGS", "class_stats", "class_weights", "FlopCount", "count_flops",
    "EpochResult", "evaluate_model", "train_one_epoch", "LOSSES", "LossConfig", "LossTerm", "SegmentationLoss",
    "build_loss", "PolySchedule", "build_sgd", "param_groups", "EpochRecord", "TrainConfig", "Trainer",
    "TrainResult", "seed_everything",
]
