"""Class names and colours lying beside a model file, as jetson-inference and DeepStream keep them.

jetson-inference's segmentation models live in folders holding ``fcn_resnet18.onnx``, ``classes.txt`` (one name
per line) and ``colors.txt`` (``R G B`` or ``R G B A`` per line, read with ``sscanf("%i %i %i %i")``); its
``segNet`` feeds them RGB frames stretched to the input size, ``pixel / 255`` normalised with ImageNet's mean and
std, edgeseg's default pre-processing. DeepStream's model folders keep ``labels.txt``. When an import is given no
names (``--classes``/``--names``) and the model carries none, ``edgeseg import`` takes them from these files (the
first of ``classes.txt``, ``labels.txt``), the colours from ``colors.txt``, as jetson-inference's ``segNet.cpp``
reads both, and says so; a model whose class count the names do not fit is refused naming the file.
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
    """The file's lines as jetson-inference's ``fgets`` loop reads them: every line, blank ones too, up to the
    last non-blank one (a file's closing newlines make no class)."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig", errors="replace").splitlines()]
    except OSError:
        return None
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _c_int(text: str) -> int:
    """An integer as C's ``%i`` reads it: ``0x`` hex, a leading ``0`` octal, else decimal."""
    t = text.strip().lower()
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if t.startswith("0x"):
        return sign * int(t[2:], 16)
    if len(t) > 1 and t.startswith("0"):
        return sign * int(t[1:], 8)
    return sign * int(t)


#: segNet's colour for a class its colour file does not reach (its class colours start red)
MISSING_COLOR = (255, 0, 0)


def _colors(path: Path, n: int, problems: list[str]) -> tuple[tuple[int, int, int], ...] | None:
    """One colour per class as segNet's ``loadClassColors`` reads them: ``R G B [A]`` per line (a value it cannot
    read is 255: a blank line is white), classes past the file's end keep segNet's red, lines past the classes are
    ignored. Alpha is dropped (edgeseg's overlay has one opacity): named when a class was transparent."""
    lines = _lines(path) or []
    colors, clear = [], []
    for k, ln in enumerate(lines[:n]):
        vals = []
        for v in ln.replace(",", " ").split()[:4]:
            try:
                vals.append(_c_int(v))
            except ValueError:
                break
        vals += [255] * (4 - len(vals))
        r, g, b, a = (min(255, max(0, v)) for v in vals[:4])
        colors.append((r, g, b))
        if a < 255:
            clear.append(k)
    if not colors:
        return None
    if len(colors) < n:
        problems.append(f"{path}: {len(colors)} colours for {n} classes: the others red, as segNet draws them")
        colors += [MISSING_COLOR] * (n - len(colors))
    if clear:
        problems.append(f"{path}: classes {', '.join(map(str, clear))} are transparent there; edgeseg's overlay draws "
                        "every class with one opacity (--alpha)")
    return tuple(colors)  # type: ignore[return-value]


def labels_beside(model_path: str | os.PathLike) -> LabelFiles | None:
    """The class names (and colours) in the model's folder (module doc); None when there is no name file, or it
    names nothing. Names are read as segNet reads them: one per line, a blank line a class too (named
    ``class_K`` here, edgeseg's names being non-empty)."""
    folder = Path(model_path).parent
    for name in NAME_FILES:
        path = folder / name
        lines = _lines(path) if path.is_file() else None
        if not lines:
            continue
        if len(lines) == 1 and ";" in lines[0]:  # DeepStream's older one-line form
            lines = [v.strip() for v in lines[0].split(";") if v.strip()]
        names = tuple(ln or f"class_{k}" for k, ln in enumerate(lines))
        problems: list[str] = []
        cpath = folder / COLOR_FILE
        palette = _colors(cpath, len(names), problems) if cpath.is_file() else None
        files = (str(path),) + ((str(cpath),) if palette is not None else ())
        return LabelFiles(names, palette, files, tuple(problems))
    return None


__all__ = ["COLOR_FILE", "LabelFiles", "MISSING_COLOR", "NAME_FILES", "labels_beside"]
