"""Class names and colours lying beside a model file, as jetson-inference and DeepStream keep them.

jetson-inference's segmentation models live in folders holding ``fcn_resnet18.onnx``, ``classes.txt`` (one name
per line) and ``colors.txt`` (``R G B`` or ``R G B A`` per line, read with ``sscanf("%i %i %i %i")``); its
``segNet`` feeds them RGB frames stretched to the input size, ``pixel / 255`` normalised with ImageNet's mean and
std, edgeseg's default pre-processing. DeepStream's model folders keep ``labels.txt``. When an import is given no
names (``--classes``/``--names``) and the model carries none, ``edgeseg import`` takes them from these files (the
first of ``classes.txt``, ``labels.txt``), the colours too when ``colors.txt`` has one per class, and says so.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: the name files looked for, in order: jetson-inference's, DeepStream's
NAME_FILES = ("classes.txt", "labels.txt")
COLOR_FILE = "colors.txt"


@dataclass(frozen=True)
class LabelFiles:
    """``names`` from ``files[0]``; ``palette`` (RGB per class) from ``colors.txt`` or None; ``problems``: what was
    not used, and why."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None
    files: tuple[str, ...]
    problems: tuple[str, ...] = ()


def _lines(path: Path) -> list[str] | None:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return None


def _colors(path: Path, n: int, problems: list[str]) -> tuple[tuple[int, int, int], ...] | None:
    lines = [ln for ln in (_lines(path) or []) if ln]
    colors = []
    for k, ln in enumerate(lines):
        try:
            vals = [int(v, 0) for v in ln.replace(",", " ").split()[:3]]  # %i: decimal, 0x hex, 0 octal
        except ValueError:
            vals = []
        if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
            problems.append(f"{path}: line {k + 1} ({ln[:40]!r}) is not R G B in 0-255 (colours not used)")
            return None
        colors.append(tuple(vals))
    if len(colors) != n:
        problems.append(f"{path}: {len(colors)} colours for {n} classes (colours not used)")
        return None
    return tuple(colors)  # type: ignore[return-value]


def labels_beside(model_path: str | os.PathLike) -> LabelFiles | None:
    """The class names (and colours) in the model's folder (module doc); None when there is no name file, or it
    names nothing."""
    folder = Path(model_path).parent
    for name in NAME_FILES:
        path = folder / name
        lines = _lines(path) if path.is_file() else None
        names = tuple(ln for ln in lines or [] if ln and not ln.startswith("#"))
        if not names:
            continue
        if len(names) == 1 and ";" in names[0]:  # DeepStream's older one-line form
            names = tuple(v.strip() for v in names[0].split(";") if v.strip())
        problems: list[str] = []
        cpath = folder / COLOR_FILE
        palette = _colors(cpath, len(names), problems) if cpath.is_file() else None
        files = (str(path),) + ((str(cpath),) if palette is not None else ())
        return LabelFiles(names, palette, files, tuple(problems))
    return None


__all__ = ["COLOR_FILE", "LabelFiles", "NAME_FILES", "labels_beside"]
