"""Resumable training state shared by the task trainers (instance, panoptic): ``last.pt`` written
atomically (tmp + rename) with ``history.json`` beside it, and read back with clear errors for a
missing, unreadable, foreign or mismatched checkpoint."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._io import write_json, write_with
from ..errors import InputError, ModelError

LAST = "last.pt"


def write_state(state: dict[str, Any], path: str | os.PathLike | None, out_dir: Path | None) -> Path | None:
    """``state`` (with ``config`` and ``history`` entries) at ``path`` or ``out_dir/last.pt``, atomically,
    plus ``out_dir/history.json``; None when there is nowhere to write."""
    if path is None and out_dir is None:
        return None
    p = Path(path) if path is not None else out_dir / LAST
    write_with(p, lambda tmp: torch.save(state, tmp))
    if out_dir is not None:
        write_json(out_dir / "history.json", {"config": state["config"], "history": state["history"]})
    return p


def read_state(path: str | os.PathLike, fmt: str, what: str, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a :func:`write_state` file (or the run folder holding ``last.pt``) of format ``fmt`` into
    ``model`` and ``optimizer``; the whole state dict is returned for the trainer's own fields."""
    p = Path(path)
    p = p / LAST if p.is_dir() else p
    if not p.is_file():
        raise InputError(f"cannot resume: no checkpoint at {p}", fix="give the run's --out folder or its last.pt")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ModelError(f"cannot read checkpoint {p}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise ModelError(f"{p}: not an edgeseg {what}-training checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ModelError(f"{p}: weights do not fit this model: {str(e).splitlines()[0]}",
                         fix="resume with the same --model and classes as the run that wrote it") from None
    optimizer.load_state_dict(state["optimizer"])
    return state
