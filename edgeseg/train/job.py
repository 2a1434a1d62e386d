"""A whole training job: open the data, build the model, train (resumable), export a bundle, record it.

Used by ``edgeseg train`` and ``tools/train_default.py``. The bundle's ``report.json`` gets a
``training`` section (command, data, config, epochs, time, device, history, final metrics) and an
``accuracy.fp32`` section measured on the exported ONNX model with ONNX Runtime.
"""
from __future__ import annotations

import contextlib
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..data.base import recordable_spec
from ..errors import InputError
from ..structures import InputSpec
from .trainer import LAST, TrainConfig, Trainer, TrainResult, seed_everything
from .._compat import removesuffix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """What to train on what, and where the results go.

    data:      dataset spec (``camvid:ROOT``, ``synthetic:N,size=WxH``, ``folder:...``), read with
               ``train_split``; ``val_data`` (default: the same spec) is read with ``val_split``.
    export:    a bundle path to export to after training (None: no export).
    cache:     hold the decoded datasets in memory (fast epochs for small sets and generated scenes).
    init:      weights to start from, with a fresh optimizer and schedule (fine-tuning; a second training
               stage): a safetensors or state-dict ``.pt`` file, or an exported ``model.onnx`` or
               ``.edgeseg`` bundle of the same model (Conv-BN folded: its BatchNorms are re-estimated on
               ``init_batches`` training batches, :mod:`edgeseg.models.folded`).
    command:   the command line that started the job, recorded in the report.
    overwrite: start afresh in an ``out`` that holds another run's ``last.pt`` (replacing its
               checkpoints); without it such a fresh run is refused before any work.
    """

    model: str
    data: str
    out: Path
    config: TrainConfig
    val_data: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    export: Path | None = None
    bundle_name: str | None = None
    cache: bool = False
    init: Path | None = None
    init_batches: int = 16
    command: str = ""
    overwrite: bool = False
    replace_export: bool = False  # an existing bundle at ``export`` may be replaced (also with ``overwrite``)


@dataclass(frozen=True)
class JobResult:
    train: TrainResult
    training_record: dict[str, Any]
    bundle: Path | None
    bundle_scores: dict[str, Any] | None


class InMemory(list):
    """A dataset's samples decoded once and kept (with its ``classes``, ``palette``, ``ignore_index``)."""

    def __init__(self, dataset: Sequence):
        super().__init__(dataset[i] for i in range(len(dataset)))
        self.classes = tuple(dataset.classes)
        self.palette = getattr(dataset, "palette", None)
        self.ignore_index = getattr(dataset, "ignore_index", 255)


def open_datasets(job: TrainJob):
    """(train, val) datasets of the job, cached in memory when asked."""
    from ..data.base import open_semantic_dataset

    train = open_semantic_dataset(job.data, split=job.train_split, purpose="semantic training")
    val = open_semantic_dataset(job.val_data or job.data, split=job.val_split, purpose="semantic training")
    if len(train) == 0:
        raise InputError(f"the training set {job.data!r} [{job.train_split}] is empty")
    if tuple(val.classes) != tuple(train.classes):
        raise InputError(f"validation classes {tuple(val.classes)} differ from training classes {tuple(train.classes)}",
                         fix="name the classes the same way in both specs: classes=FILE (one name per line) in each "
                             "folder: spec, or num_classes=K in both when the masks' highest ids differ")
    shared = shared_images(train, val)
    if shared:  # a folder: spec has no splits, so the same spec twice is the same images (before: unsaid)
        log.warning("%d of the %d validation images are training images (%s): the epochs' mIoU, the best weights and the "
                    "reported accuracy are measured on data the model trained on; give --val-data with held-out images "
                    "(e.g. folder:VAL_IMAGES,VAL_MASKS)", shared, len(val), job.val_data or job.data)
    if job.cache:
        from ..data.mixture import Mixture

        train, val = ((d.with_parts(InMemory) if isinstance(d, Mixture) else InMemory(d)) for d in (train, val))
    return train, val



def shared_images(train: Sequence, val: Sequence) -> int:
    """How many of ``val``'s image files are also ``train``'s (datasets that list their files as ``pairs``; 0 for
    others: their splits are folders or lists of their own)."""
    def files(d: Sequence) -> set[str]:
        return {str(Path(p[0]).resolve()) for p in getattr(d, "pairs", ()) or ()}

    return len(files(train) & files(val))


def init_target(model, path: Path):
    """The module ``--init`` weights load into: the model, or for a model that wraps another
    (CRF-as-RNN's ``backbone``) that inner model when the file holds exactly its tensors: Zheng et al.
    train the FCN first, then the CRF-RNN on top (the wrapper's own layers start from their initial
    values). Anything else goes to the whole model, where
    :func:`~edgeseg.models.checkpoint.load_weights` reports what does not fit."""
    from torch import nn

    from ..models.checkpoint import state_names

    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        return model
    names = state_names(path)
    return backbone if names == set(backbone.state_dict()) and names != set(model.state_dict()) else model


def recalibrate_from_training_data(trainer: Trainer, bns: list[str], batches: int) -> int:
    """Re-estimate the BatchNorms that came from folded biases on ``batches`` augmented training
    batches of the run (epoch 0's, the data the first steps see); see :mod:`edgeseg.models.folded`."""
    from itertools import islice

    from ..models.folded import recalibrate_unfolded
    from .data import train_loader

    loader = train_loader(trainer.train_set, trainer.loader_cfg, 0)
    images = (b[0].to(trainer.device) for b in islice(loader, max(1, batches)))
    return recalibrate_unfolded(trainer.model, bns, images)


def check_outputs(job: TrainJob, resume: bool) -> None:
    """Refuse, before any work, a fresh run whose ``out`` holds another run's checkpoint (it would be
    replaced without asking) and an ``export`` path that cannot take a bundle (found after training)."""
    from ..bundle import check_target

    last = job.out / LAST
    if job.out.exists() and not job.out.is_dir():
        raise InputError(f"--out {job.out} is a file, not a run folder", fix="give --out a folder path")
    if not resume and last.is_file() and not job.overwrite:
        raise InputError(f"--out {job.out} already holds a training run ({LAST}); a fresh run would replace its "
                         "checkpoints and history",
                         fix="add --resume to continue that run, give another --out, or add --overwrite to start afresh there")
    if job.export is not None:  # a bundle there is replaced only when asked (as edgeseg export): before, silently
        check_target(job.export, "--export", overwrite=job.overwrite or job.replace_export)
    if not resume and job.overwrite and last.is_file() and job.init is not None and \
            Path(job.init).resolve().parent == job.out.resolve() and Path(job.init).name in REPLACED_FILES:
        raise InputError(f"--init {job.init} is in --out {job.out}, whose earlier run --overwrite removes",
                         fix=f"give the new run another --out (e.g. {job.out}-2), starting from --init {job.init}")
    if resume and (job.out / "history.json").is_file():  # before the data is read (the trainer checks it too)
        from .trainer import changed_settings, settings_refusal

        try:
            import json

            then = json.loads((job.out / "history.json").read_text()).get("config") or {}
        except (OSError, ValueError):
            then = {}
        changed = changed_settings(then, job.config.to_dict())
        if changed:
            raise settings_refusal(f"--resume of {job.out}", changed)
    # a folder that cannot take the checkpoint (read-only, /proc, a file in its path): before, found when the first
    # epoch's checkpoint was written, after that epoch had trained (hours on a CPU), as "No such file or directory"
    from .._io import writable_folder

    made = [f for f in (job.out, *job.out.parents) if not f.exists()]
    writable_folder(job.out, job.out / LAST, fix="give --out a folder you can write to, e.g. --out runs/NAME")
    for folder in made:  # (left as they were: a run refused later, by its data, leaves no empty folders behind)
        with contextlib.suppress(OSError):
            folder.rmdir()


#: what --overwrite removes from a run folder: the earlier run's checkpoint, history and weights
REPLACED_FILES = frozenset({LAST, "history.json"} | {f"{w}{x}" for w in ("best", "model") for x in (".safetensors", ".pt", ".pt.json")})


def clear_replaced_run(out: Path) -> list[str]:
    """With ``--overwrite``, once the new run is about to train: remove the earlier run's checkpoint, history and
    weights (before, an interrupted new run left the old model's best/model weights beside its own last.pt, where
    ``edgeseg export`` took them for the new one's). Returns the names removed."""
    gone = sorted(p.name for p in out.iterdir() if p.is_file() and p.name in REPLACED_FILES) if out.is_dir() else []
    for name in gone:
        (out / name).unlink()
    if gone:
        log.info("--overwrite: removed the earlier run's %s from %s", ", ".join(gone), out)
    return gone


#: the trainer of each task that is not edgeseg train's (semantic) one
TASK_TRAINERS = {
    "instance": "python tools/train_instance.py --model solov2_mobilenetv3_small --data coco-instance:PATH/instances_train.json "
                "(SOLOv2; Mask R-CNN has no trainer here: docs/instance.md)",
    "panoptic": "python tools/train_panoptic.py --model panoptic_deeplab_mobilenetv3_small --data FOLDER "
                "(Panoptic-DeepLab and LPSNet on a COCO-panoptic folder: docs/panoptic.md)",
    "volumetric": "python tools/train_vnet.py (V-Net on volumes)",
}


def check_semantic_model(name: str) -> None:
    """Refuse, before any data is read, a registered model of another task (before: a traceback from the semantic
    loss, ``KeyError: 'logits'``, or Mask R-CNN's message for programmers, once the data had been read)."""
    from ..models.registry import model_info

    task = getattr(model_info(name), "task", "semantic")
    if task != "semantic":
        raise InputError(f"{name} is {'an' if task[0] in 'aeiou' else 'a'} {task} model; edgeseg train trains semantic models",
                         fix=f"train it with {TASK_TRAINERS.get(task, 'its own trainer')}; tools/ is in edgeseg's source tree "
                             "(a clone of its repository), not in the installed package")


def files_fingerprint(dataset: Any) -> str | None:
    """A short hash of the image file names a dataset reads (readers with ``pairs``: folder, CamVid), names only, so
    that a moved dataset still resumes; None for other readers. A resume on another list of as many images (Pascal
    VOC's ``list=`` files, a CamVid split file edited) went on silently, where the counts alone were compared."""
    import hashlib

    pairs = getattr(dataset, "pairs", None)
    if not isinstance(pairs, list) or not pairs:
        return None
    names = sorted(Path(p[0]).name for p in pairs)
    return f"{len(names)} files, sha1 {hashlib.sha1(chr(10).join(names).encode()).hexdigest()[:12]}"


def run_job(job: TrainJob, resume: bool = False) -> JobResult:
    """Train (resuming from ``out/last.pt`` when ``resume``), then export and record."""
    from ..models import check_runs_at, create_model

    check_outputs(job, resume)
    check_semantic_model(job.model)
    train, val = open_datasets(job)
    if job.num_classes is not None and job.num_classes < len(train.classes):
        raise InputError(f"--num-classes {job.num_classes} is fewer than the {len(train.classes)} classes of "
                         f"{job.data} ({', '.join(train.classes[:8])}{' ...' if len(train.classes) > 8 else ''}): "
                         "its labels would fall outside the model's outputs",
                         fix=f"leave --num-classes out (or give at least {len(train.classes)}); to train on fewer "
                             "classes, relabel the masks or name the classes with classes=FILE in the folder spec")
    n = job.num_classes or len(train.classes)
    if job.config.batch_size > len(train):
        log.warning("--batch %d is more than the %d training images: one batch of %d an epoch", job.config.batch_size,
                    len(train), len(train))
    seed_everything(job.config.seed)
    model = create_model(job.model, num_classes=n, **job.model_kwargs)
    unfolded: list[str] = []
    fresh: list[str] = []
    if job.init is not None and not resume:  # on resume, last.pt holds the fine-tuned weights already
        from ..models.checkpoint import load_weights
        from ..models.folded import load_model_weights

        what = f"model {job.model!r} with {n} classes"
        if Path(job.init).suffix in (".safetensors", ".pt", ".pth"):
            into = init_target(model, job.init)
            fresh = load_weights(into, job.init, what=what, new_classes=n if into is model else None)
        else:  # an exported model.onnx or a bundle
            into, unfolded = model, load_model_weights(model, job.init, what=what, new_classes=n, fresh=fresh)
        log.info("starting %s from the weights in %s", "the model" if into is model else "its backbone", job.init)
        if fresh:
            log.warning("%s was trained for another number of classes: %d class-layer tensor(s) start afresh "
                        "for the %d classes of %s (%s)", job.init, len(fresh), n, job.data, ", ".join(fresh))
    check_runs_at(model, job.config.crop or job.config.size, InputError, name=job.model)
    spec = InputSpec(size=job.config.size)
    kind = lambda spec: str(spec).split(":", 1)[0] if ":" in str(spec) else "path"  # noqa: E731
    settings = {"data": kind(job.data), "val_data": kind(job.val_data or job.data), "train_images": len(train),
                "val_images": len(val) if val is not None else 0, "data_classes": list(train.classes),
                "train_split": job.train_split, "val_split": job.val_split,
                "init": None if job.init is None else Path(job.init).name, "model_kwargs": dict(job.model_kwargs)}
    for key, ds in (("train_files", train), ("val_files", val)):  # another list of as many images (an audit)
        if files_fingerprint(ds) is not None:
            settings[key] = files_fingerprint(ds)
    trainer = Trainer(model, train, job.config, val_data=val, input_spec=spec, num_classes=n, out_dir=job.out,
                      model_name=job.model, job_settings=settings)
    if unfolded:
        seen = recalibrate_from_training_data(trainer, unfolded, job.init_batches)
        log.info("re-estimated %d folded BatchNorms on %d training crops", len(unfolded), seen)
    start = None
    if resume:
        if not (job.out / LAST).is_file():
            raise InputError(f"--resume: no {LAST} in {job.out}", fix="start without --resume, or give the run's --out")
        start = job.out
    log.info("training %s on %s (%d images) for %d epochs at %s on %s", job.model, job.data, len(train),
             job.config.epochs, job.config.size, trainer.device)
    if start is None and job.overwrite:  # the data and model are good: the earlier run goes now
        clear_replaced_run(job.out)
    result = trainer.fit(resume=start)
    record = training_record(job, trainer, result, len(train), len(val))
    if fresh:
        record["init_fresh"] = sorted(fresh)  # the class layers that did not come from --init
    bundle_path, bundle_scores = None, None
    if job.export is not None:
        bundle_path, bundle_scores = export_and_record(job, trainer.model, train, val, spec, record)
    return JobResult(result, record, bundle_path, bundle_scores)


def training_record(job: TrainJob, trainer: Trainer, result: TrainResult, n_train: int, n_val: int) -> dict[str, Any]:
    """The ``report.json["training"]`` section."""
    from .flops import count_flops

    final = result.final
    fc = count_flops(trainer.model, job.config.size)
    trainer.model.to(trainer.device)
    scores = final.scores or {}
    return {
        "command": job.command,
        "model": job.model,
        "model_kwargs": job.model_kwargs,
        "data": recordable_spec(job.data),
        "val_data": recordable_spec(job.val_data or job.data),
        "init": None if job.init is None else str(job.init),
        "splits": {"train": job.train_split, "val": job.val_split},
        "images": {"train": n_train, "val": n_val},
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "seconds_total": round(sum(r.seconds for r in result.history), 1),
        "device": str(trainer.device),
        "precision": trainer.precision,
        "host": f"{platform.machine()} {platform.processor() or platform.system()}",
        "threads": _threads(),
        "config": job.config.to_dict(),
        "params": fc.params,
        "gflops": round(fc.gflops, 4),
        "final": {"epoch": final.epoch, "loss": final.loss, "miou": final.miou, "macc": scores.get("macc"),
                  "pixel_acc": scores.get("pixel_acc"),
                  "per_class_iou": {k: v.get("iou") for k, v in (scores.get("per_class") or {}).items()}},
        "best": {"miou": result.best_miou, "epoch": result.best_epoch},
        "history": [{"epoch": r.epoch, "loss": round(r.loss, 5), "lr": r.lr, "seconds": round(r.seconds, 2),
                     "miou": r.miou} for r in result.history],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def export_and_record(job: TrainJob, model, train, val, spec: InputSpec, record: dict[str, Any]):
    """Export FP32 to ``job.export``, score the ONNX model on ``val`` and write both report sections."""
    from ..eval import evaluate
    from ..export import export_bundle
    from ..predictor import load

    model = model.eval().to("cpu")
    palette = getattr(train, "palette", None)
    bundle = export_bundle(
        model, job.export, name=job.bundle_name or removesuffix(Path(job.export).name, ".edgeseg"),
        classes=tuple(train.classes), input_spec=spec, palette=None if palette is None else list(palette),
        overwrite=True, provenance={"trained_by": "edgeseg.train", "train_data": job.data},
        include_checkpoint=False,  # shipped zoo bundles stay small (< 10 MB); the weights are in the run dir
    )
    bundle.update_report("training", record)
    with load(str(job.export), backend="onnxruntime", precision="fp32", device="cpu") as predictor:
        scores = evaluate(predictor, val, progress=False, boundary=True)
    accuracy = {"fp32": {"data": recordable_spec(job.val_data or job.data), "split": job.val_split, "backend": "onnxruntime",
                         **{k: scores.to_dict()[k] for k in ("miou", "macc", "pixel_acc", "boundary_f1", "num_images")},
                         "per_class_iou": {k: v["iou"] for k, v in scores.to_dict()["per_class"].items()}}}
    report = bundle.report
    merged = dict(report.get("accuracy") or {})
    merged.update(accuracy)
    bundle.update_report("accuracy", merged)
    return Path(job.export), accuracy["fp32"]
