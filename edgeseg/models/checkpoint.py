"""Checkpoints: weights plus the metadata needed to rebuild the model — never a pickle.

Format (version 1), chosen by the file suffix:

* ``*.safetensors`` (recommended): the model's ``state_dict`` as safetensors tensors; the
  header's string metadata holds ``format = "edgeseg.checkpoint"``, ``format_version = "1"``,
  ``model_name``, ``num_classes``, and JSON strings ``model_kwargs`` and ``extra``.
* anything else (``*.pt``, ``*.pth``): a plain ``state_dict`` (a dict of tensors) written with
  ``torch.save`` and read with ``torch.load(weights_only=True)``, plus a sibling JSON file
  ``<file>.json`` (``best.pt`` -> ``best.pt.json``) holding the same fields as a JSON object.

``model_kwargs`` are extra keyword arguments of :func:`~edgeseg.models.create_model` (e.g.
``output_stride``). ``extra`` is free-form JSON; keys edgeseg reads when exporting: ``classes``
(list of class names), ``palette`` (list of [r, g, b]), ``input_spec`` (``InputSpec.to_dict()``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import write_json, write_with
from ..errors import ModelError

FORMAT = "edgeseg.checkpoint"
FORMAT_VERSION = 1
TRAIN_STATE_FORMAT = "edgeseg.train/1"  # edgeseg.train.trainer.STATE_FORMAT: a run's last.pt (weights under "model")


@dataclass(frozen=True)
class CheckpointMeta:
    model_name: str
    num_classes: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT, "format_version": str(FORMAT_VERSION), "model_name": self.model_name,
            "num_classes": str(self.num_classes), "model_kwargs": json.dumps(self.model_kwargs),
            "extra": json.dumps(self.extra),
        }

    @classmethod
    def from_strings(cls, d: dict[str, Any], where: str) -> "CheckpointMeta":
        if d.get("format") != FORMAT:
            raise ModelError(f"{where}: not an edgeseg checkpoint (metadata 'format' is {d.get('format')!r})",
                             fix="write checkpoints with edgeseg.models.save_checkpoint")
        if str(d.get("format_version")) != str(FORMAT_VERSION):
            raise ModelError(f"{where}: checkpoint format version {d.get('format_version')!r}, this edgeseg reads {FORMAT_VERSION}")
        try:
            kwargs, extra = d.get("model_kwargs", {}), d.get("extra", {})
            return cls(
                model_name=str(d["model_name"]), num_classes=int(d["num_classes"]),
                model_kwargs=json.loads(kwargs) if isinstance(kwargs, str) else dict(kwargs),
                extra=json.loads(extra) if isinstance(extra, str) else dict(extra),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"{where}: bad checkpoint metadata ({type(e).__name__}: {e})") from None


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_checkpoint(model: nn.Module, path: str | Path, *, model_name: str, num_classes: int,
                    extra: dict[str, Any] | None = None, model_kwargs: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and metadata (format in the module docstring). Returns the path."""
    path = Path(path)
    meta = CheckpointMeta(model_name, int(num_classes), dict(model_kwargs or {}), dict(extra or {}))
    try:
        strings = meta.to_strings()
    except TypeError as e:
        raise ModelError(f"checkpoint {path}: extra/model_kwargs must be JSON-serialisable ({e})") from None
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    def write(tmp: Path) -> None:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata=strings)
        else:
            torch.save(state, tmp)
            write_json(sidecar_path(path), {**strings, "model_kwargs": meta.model_kwargs, "extra": meta.extra})

    return write_with(path, write)


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of a checkpoint, without loading its weights."""
    path = _existing(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ModelError(f"{path}: not a readable safetensors file ({e})",
                             fix="the file is corrupt or truncated: copy it again, or re-save it with save_checkpoint") from None
        return CheckpointMeta.from_strings(meta, str(path))
    side = sidecar_path(path)
    if not side.is_file() and _is_training_state(path):
        raise ModelError(f"{path}: a training checkpoint (edgeseg train's {path.name}: weights, optimizer and schedule), "
                         "not a model checkpoint",
                         fix=f"give the run folder's model.safetensors or best.safetensors (beside {path.name}); "
                             "an interrupted run writes them when it is resumed to its end (edgeseg train ... --resume)")
    if not side.is_file():
        raise ModelError(f"{path}: no metadata file {side.name} next to it (it names the model and its classes)",
                         fix=f"write {side} holding " + '{"model_name": "deeplabv3plus_mobilenetv3_small", '
                             '"num_classes": 11} with your model\'s registered name (edgeseg models lists them) and '
                             'class count (optional: "model_kwargs": {...}, its create_model arguments; "extra": '
                             '{"classes": [names...]}), or save with edgeseg.models.save_checkpoint')
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{side}: expected a JSON object")
    # a sidecar is edgeseg's by its name: one written by hand may leave out the format fields (were refused)
    data = {"format": FORMAT, "format_version": str(FORMAT_VERSION), **data}
    return CheckpointMeta.from_strings(data, str(side))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip/pickle, or a pickle with objects weights_only refuses
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ModelError(f"{path}: cannot read the weights ({type(e).__name__}{': ' + first if first else ''})",
                         fix="the file is corrupt or is not a plain state dict; re-save it with save_checkpoint") from None
    if isinstance(state, dict) and state.get("format") == TRAIN_STATE_FORMAT and isinstance(state.get("model"), dict):
        state = state["model"]  # a training run's last.pt: its model weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a plain state dict (name -> tensor), got {type(state).__name__}")
    return state


def load_checkpoint(path: str | Path, **build: Any) -> nn.Module:
    """Rebuild the model a checkpoint names and load its weights (eval mode, CPU). The model gets
    ``model_name`` and ``checkpoint_meta`` attributes. ``build``: arguments of its builder that change how it is
    built, not its weights (an export form: SegNet's ``unpool="switches"``), over those the checkpoint recorded."""
    from .registry import create_model

    path = _existing(path)
    meta = read_checkpoint_meta(path)
    model = create_model(meta.model_name, num_classes=meta.num_classes, **{**meta.model_kwargs, **build})
    load_weights(model, path, what=f"model {meta.model_name!r} with {meta.num_classes} classes")
    model.eval()
    model.checkpoint_meta = meta
    return model


def class_layer_names(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], num_classes: int) -> list[str]:
    """The tensors of a model with ``num_classes`` classes that a source of the same architecture
    trained for another number of classes cannot fill: those of the source with the same rank whose
    shape differs only in dimensions where the model has ``num_classes`` (the classifier's output
    channels, an FCN's score and up-sampling layers). Fine-tuning to new classes starts them afresh."""
    out = []
    for name, t in own.items():
        src = state.get(name)
        if src is None or src.shape == t.shape or src.dim() != t.dim():
            continue
        if all(a == b or b == num_classes for a, b in zip(src.shape, t.shape)):
            out.append(name)
    return out


def load_weights(model: nn.Module, path: str | Path, what: str = "the model",
                 new_classes: int | None = None) -> list[str]:
    """Load a weights file (safetensors or a plain state-dict ``.pt``) into ``model`` in place;
    every tensor must match by name and shape, except, with ``new_classes`` (the model's number of
    classes, when the file's differs), the class layers (:func:`class_layer_names`), which keep
    their initial values. Returns the names of the tensors so left."""
    path = _existing(path)
    state = _read_state(path)
    own = model.state_dict()
    fresh = class_layer_names(own, state, new_classes) if new_classes else []
    state = {k: (own[k] if k in fresh else v) for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{what}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if items]
        raise ModelError(f"{path}: weights do not fit {what} ({'; '.join(parts)})",
                         fix="check model_name/num_classes in the checkpoint metadata")
    model.load_state_dict(state)
    return fresh


def state_names(path: str | Path) -> set[str]:
    """The tensor names a weights file holds (empty when it cannot be read: loading it reports why)."""
    try:
        return set(_read_state(_existing(path)))
    except Exception:  # noqa: BLE001  (load_weights reads it again and raises the clear error)
        return set()


def _is_training_state(path: Path) -> bool:
    """Whether ``path`` is a training checkpoint (``edgeseg train``'s ``last.pt``); False when unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (not readable: the caller's own error says so)
        return False
    return isinstance(state, dict) and state.get("format") == TRAIN_STATE_FORMAT


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} not found",
                         fix="give a weights file: a run folder's model.safetensors / best.safetensors, or a state-dict .pt")
    return p
