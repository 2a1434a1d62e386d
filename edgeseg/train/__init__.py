"""The trainer used for the default models and quantization-aware fine-tuning.

Losses (CE, class-weighted CE, focal, Dice, Lovász-softmax, combinable: ``"ce+0.5*lovasz"``), SGD
with momentum and weight decay (none on biases/norms), the poly schedule with linear warm-up,
numpy/OpenCV augmentation, per-epoch evaluation with :mod:`edgeseg.eval`, resumable checkpoints,
mixed precision on CUDA. torch is imported inside functions, and the names here on first use, so importing
this package is cheap.
"""
from __future__ import annotations

from .._lazy import lazy_module
# light, and named like their modules (a lazy `augment` would resolve to the module once something imported it)
from .augment import AugmentConfig, augment
from .class_weights import WEIGHTINGS, class_stats, class_weights

_LAZY = {  # public name -> module, relative to this package (resolved on first use: session 56, an audit found
    # every `edgeseg` command importing the whole trainer, ~40 ms, for `edgeseg train`'s precision options)
    "FlopCount": ".flops", "count_flops": ".flops",
    "EpochResult": ".loop", "evaluate_model": ".loop", "train_one_epoch": ".loop",
    "LOSSES": ".losses", "LossConfig": ".losses", "LossTerm": ".losses", "SegmentationLoss": ".losses",
    "build_loss": ".losses",
    "PolySchedule": ".optim", "build_sgd": ".optim", "param_groups": ".optim",
    "EpochRecord": ".trainer", "TrainConfig": ".trainer", "Trainer": ".trainer", "TrainResult": ".trainer",
    "seed_everything": ".trainer",
}

__all__ = sorted([*_LAZY, "AugmentConfig", "augment", "WEIGHTINGS", "class_stats", "class_weights"])

__getattr__, __dir__ = lazy_module(__name__, _LAZY)
