"""Knowledge distillation for semantic training: teacher bundles give every training frame soft targets.

``edgeseg train ... --teacher SPEC [--distill-weight W] [--distill-temperature T] [--teacher-flip]``
adds ``W * T^2 * KL(teacher || student)`` at temperature ``T`` (Hinton et al., 2015; per pixel, as
in pixel-wise distillation for segmentation) to the task loss, over the pixels the frame labels.

``SPEC`` is one teacher for every training frame, or one per part of a ``--data`` mixture
(``;``-separated in the parts' order, ``none`` or ``-`` for a part without one): with ``--data
"8*camvid:R;cityscapes-camvid:D"``, ``--teacher "none;road+street-semantic"`` distils on the Cityscapes
frames only. A teacher is a bundle (path or shipped name) or several joined with ``+``: an
ensemble, whose members' class probabilities are averaged. ``--teacher-flip`` averages each member
over the frame and its mirror image too.

Each member runs its FP32 ONNX model with ONNX Runtime on the augmented frame (the uint8 image the
student's input is normalised from) exactly as its own predictor would: its preprocessing (resize or
letterbox to its network size, its mean/std), its decoder's ``class_bias``
(:func:`edgeseg.decode.semantic.class_logits`), the logits brought back to the frame's size. Its
classes are mapped onto the student's by name, or by a known dataset mapping (Cityscapes' 19
categories onto CamVid's 11, :data:`edgeseg.data.cityscapes_camvid.CITYSCAPES_TO_CAMVID`): the
probabilities of the teacher classes that feed one student class are summed, and a teacher class
with no student counterpart (Cityscapes' terrain for a CamVid student) is dropped and the rest
renormalised. A student class that no teacher class feeds is an error naming both class lists.

The teachers run inside the training set's ``__getitem__`` (so with ``--workers`` they run in the
loader processes, beside the student's step); their ONNX Runtime sessions open lazily in whichever
process uses them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def known_class_maps() -> list[dict[str, str | None]]:
    """Dataset class mappings a teacher's classes may be read through (teacher name -> student name)."""
    from ..data.cityscapes_camvid import CITYSCAPES_TO_CAMVID

    return [CITYSCAPES_TO_CAMVID]


def class_map(teacher: Sequence[str], student: Sequence[str], what: str = "teacher") -> np.ndarray:
    """``float32 [S, T]``: 1 where teacher class ``t`` feeds student class ``s``. A teacher class feeds the
    student class of the same name, else the one a known mapping names (the first mapping that knows
    every teacher class), else none; every student class must be fed."""
    teacher, student = [str(c) for c in teacher], [str(c) for c in student]
    maps = [m for m in known_class_maps() if all(c in m for c in teacher)]
    known = maps[0] if maps else {}
    m = np.zeros((len(student), len(teacher)), np.float32)
    for t, name in enumerate(teacher):
        target = name if name in student else known.get(name)
        if target is not None and target in student:
            m[student.index(target), t] = 1.0
    unfed = [student[s] for s in range(len(student)) if not m[s].any()]
    if unfed:
        raise InputError(f"{what}: its classes ({', '.join(teacher)}) give no score for the student's "
                         f"class(es) {', '.join(unfed)} (student classes: {', '.join(student)})",
                         fix="use a teacher trained for the student's classes (the same names), or one whose "
                             "classes map onto them (Cityscapes' categories onto CamVid's)")
    return m


class TeacherMember:
    """One teacher bundle: its soft targets for a frame, in the student's classes, at temperature ``T``."""

    def __init__(self, bundle: str, student_classes: Sequence[str], temperature: float = 1.0, threads: int = 1):
        from ..bundle import Bundle

        b = Bundle.open(bundle)
        if b.manifest.task != "semantic":
            raise InputError(f"teacher {bundle!r} is a {b.manifest.task} bundle; a teacher must be a semantic one",
                             fix="give a semantic bundle (edgeseg info BUNDLE says its task)")
        self.bundle, self.name = str(b.root), b.manifest.name
        self.map = class_map(b.manifest.classes, student_classes, what=f"teacher {self.name!r}")
        self.temperature, self.threads = float(temperature), int(threads)
        self._pred: Any = None

    def __getstate__(self) -> dict:  # loader workers open their own session
        return {**self.__dict__, "_pred": None}

    def _predictor(self):
        if self._pred is None:
            from ..predictor import load

            pred = load(self.bundle, backend="onnxruntime", precision="fp32", device="cpu", threads=self.threads)
            pred.runner.activate()
            self._pred = pred
        return self._pred

    def probs(self, rgb: np.ndarray) -> np.ndarray:
        """``float32 [S, H, W]`` student-class probabilities for the RGB ``uint8 [H, W, 3]`` frame."""
        from ..decode.semantic import class_logits

        pred = self._predictor()
        feed, meta = pred.preprocess(rgb)
        x = class_logits(pred.runner.infer(feed), meta, pred.manifest, pred.options)
        p = softmax(x / self.temperature if self.temperature != 1 else x)
        c, h, w = p.shape
        q = (self.map @ p.reshape(c, -1)).reshape(-1, h, w)
        return q / np.maximum(q.sum(0, keepdims=True), 1e-12)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of ``[C, ...]``, float32."""
    e = np.exp(x - x.max(0, keepdims=True))
    return (e / e.sum(0, keepdims=True)).astype(np.float32, copy=False)


class Teacher:
    """A bundle or an ensemble of bundles (probabilities averaged), optionally over mirrored frames too."""

    def __init__(self, members: Sequence[TeacherMember], flip: bool = False):
        if not members:
            raise InputError("a teacher needs at least one bundle")
        self.members, self.flip = list(members), bool(flip)

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.members) + (" (flip)" if self.flip else "")

    def probs(self, rgb: np.ndarray) -> np.ndarray:
        total = None
        views = [(rgb, False)] + ([(np.ascontiguousarray(rgb[:, ::-1]), True)] if self.flip else [])
        for m in self.members:
            for img, mirrored in views:
                p = m.probs(img)
                p = p[:, :, ::-1] if mirrored else p
                total = p.copy() if total is None else total + p
        return np.ascontiguousarray(total / (len(self.members) * len(views)), np.float32)


@dataclass(frozen=True)
class DistillConfig:
    """What ``--teacher`` & co. ask for (recorded in the training config)."""

    teacher: str
    weight: float = 1.0
    temperature: float = 1.0
    flip: bool = False

    def __post_init__(self) -> None:
        if not self.teacher.strip():
            raise InputError("--teacher is empty", fix="name a bundle, e.g. --teacher road, or leave --teacher out")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise InputError(f"--distill-weight must be > 0, got {self.weight}", fix="e.g. --distill-weight 1")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise InputError(f"--distill-temperature must be > 0, got {self.temperature}", fix="e.g. 1 or 2")


def open_teachers(cfg: DistillConfig, parts: int, student_classes: Sequence[str], threads: int = 1) -> list[Teacher | None]:
    """One :class:`Teacher` (or None) per part of the training data, from ``cfg.teacher``."""
    specs = [s.strip() for s in cfg.teacher.split(";")]
    if len(specs) == 1:
        specs = specs * parts
    if len(specs) != parts:
        raise InputError(f"--teacher {cfg.teacher!r} names {len(specs)} teachers for {parts} parts of --data",
                         fix="give one teacher for all frames, or one per ';'-separated part of --data ('none': no teacher)")
    out: list[Teacher | None] = []
    for spec in specs:
        if spec.lower() in ("-", "", "none"):
            out.append(None)
            continue
        members = [TeacherMember(b.strip(), student_classes, cfg.temperature, threads)
                   for b in spec.split("+")]
        out.append(Teacher(members, cfg.flip))
    if all(t is None for t in out):
        raise InputError(f"--teacher {cfg.teacher!r} gives no part of --data a teacher", fix="name a bundle for a part")
    return out


def distill_loss(logits: "torch.Tensor", soft: "torch.Tensor", target: "torch.Tensor", temperature: float = 1.0,
                 ignore_index: int = 255) -> "torch.Tensor":
    """``T^2 * KL(soft || softmax(logits / T))`` per pixel, the mean over the pixels that are labelled
    (``target != ignore_index``) and have a teacher (``soft`` sums to 1 there; frames of a part
    without one carry zeros). ``logits`` ``[N, C, H, W]``, ``soft`` ``[N, C, H, W]`` probabilities."""
    import torch.nn.functional as F

    logp = F.log_softmax(logits / temperature, dim=1)
    valid = (target != ignore_index) & (soft.sum(1) > 0.5)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    kl = (soft * (soft.clamp_min(1e-8).log() - logp)).sum(1)
    return temperature * temperature * kl[valid].mean()
