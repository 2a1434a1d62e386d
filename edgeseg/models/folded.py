"""Weights from a trained model's files: a checkpoint, an exported ONNX model, or a bundle.

An edgeseg ONNX export is Conv-BN folded: each ``Conv -> BatchNorm`` pair became one convolution
with a bias, named after the convolution (``model.<state-dict name>``). Its initialisers therefore
hold every tensor of the PyTorch model except the BatchNorms, and a folded convolution's bias sits
where the model has none. :func:`load_folded_state` puts such a state back into the module:

* a tensor whose name and shape match is copied;
* a folded bias ``<base>.<i>.bias`` goes to the BatchNorm ``<base>.<i+1>``, which becomes the
  identity (scale 1, shift the bias, running mean 0, running variance ``1 - eps``): the module then
  computes exactly the folded model in eval mode.

That is all inference needs, but a BatchNorm in training mode normalises by the batch's own
statistics, and an identity one would rescale every folded convolution's output by its batch
deviation: the first step would wreck the model. :func:`recalibrate_unfolded` re-estimates those
BatchNorms on real batches: with the per-channel mean ``m`` and variance ``v`` of the convolution's
output, it sets ``running_mean = m``, ``running_var = v``, ``weight = sqrt(v + eps)``, ``bias = b + m``.
Eval mode still reproduces the folded model exactly (``sqrt(v + eps) (z - m) / sqrt(v + eps) + b + m
= z + b``, whatever ``m`` and ``v`` are), and training mode starts from (about) the same function,
so fine-tuning a shipped bundle continues where its training stopped.
"""
from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError

_BN_STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def state_from_onnx(data: bytes) -> dict[str, torch.Tensor]:
    """Initialisers of an edgeseg ONNX export (names ``model.<state-dict name>``, Conv-BN folded), plus
    the affine parameters of GroupNorms that follow a convolution (see :func:`_group_norms`)."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load_model_from_string(data).graph
    except Exception as e:  # noqa: BLE001  (protobuf raises its own DecodeError, among others)
        raise ModelError(f"cannot read the ONNX model to take weights from: {e}",
                         fix="give an intact model.onnx or bundle (opening a bundle checks every file's "
                             "sha256), or export it again") from e
    out = {}
    for init in graph.initializer:
        name = init.name[len("model."):] if init.name.startswith("model.") else init.name
        out[name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    for name, value in _group_norms(graph).items():
        out.setdefault(name, value)
    return out


_GROUP_NORM = ("Reshape", "InstanceNormalization", "Reshape", "Mul", "Add")


def _group_norms(graph) -> dict[str, torch.Tensor]:
    """A ``GroupNorm`` exports as ``Reshape -> InstanceNormalization -> Reshape -> Mul(scale) ->
    Add(shift)``, its scale and shift as anonymous ``[C, 1, 1]`` constants. Where that chain follows the
    convolution ``<base>.<i>`` (a ``Conv -> GroupNorm`` pair of a Sequential, as SOLOv2's heads), the two
    constants are ``<base>.<i+1>.weight`` and ``.bias``."""
    from onnx import numpy_helper

    consts = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = {}
    for conv in graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2 or not conv.input[1].startswith("model."):
            continue
        stem = conv.input[1][len("model."):].rpartition(".")[0]
        base, _, index = stem.rpartition(".")
        if not index.isdigit():
            continue
        chain, tensor = [], conv.output[0]
        for op in _GROUP_NORM:
            nxt = consumers.get(tensor, [])
            if len(nxt) != 1 or nxt[0].op_type != op:
                break
            chain.append(nxt[0])
            tensor = nxt[0].output[0]
        if len(chain) != len(_GROUP_NORM):
            continue
        params = []
        for node in chain[3:]:
            const = [consts[i] for i in node.input if i in consts]
            if len(const) == 1:
                params.append(torch.from_numpy(numpy_helper.to_array(const[0]).copy()).flatten())
        if len(params) == 2:
            gn = f"{base}.{int(index) + 1}"
            out[f"{gn}.weight"], out[f"{gn}.bias"] = params
    return out


def read_weights_source(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(state, folded): a checkpoint file, an ONNX file, or a bundle (folder or zip) holding a
    ``model.safetensors`` checkpoint or, failing that, its ``model.onnx`` (Conv-BN folded)."""
    from .checkpoint import _read_state

    if path.is_file() and path.suffix in (".safetensors", ".pt", ".pth"):
        return _read_state(path), False
    if path.is_file() and path.suffix == ".onnx":
        return state_from_onnx(path.read_bytes()), True
    if path.is_dir():
        files = {p.name: p.read_bytes for p in path.iterdir() if p.is_file()}
    elif path.is_file() and zipfile.is_zipfile(path):
        z = zipfile.ZipFile(path)
        files = {Path(n).name: (lambda n=n: z.read(n)) for n in z.namelist()}
    else:
        raise ModelError(f"cannot read weights from {path}: not a checkpoint, ONNX file or bundle",
                         fix="give a .safetensors/.pt checkpoint, a model.onnx, or an .edgeseg bundle")
    if "model.safetensors" in files:
        from safetensors.torch import load as load_safetensors

        return load_safetensors(files["model.safetensors"]()), False
    if "model.onnx" in files:
        return state_from_onnx(files["model.onnx"]()), True
    raise ModelError(f"bundle {path} holds neither model.safetensors nor model.onnx",
                     fix="export the model with its checkpoint (edgeseg export ...)")


def is_folded_source(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX model or a bundle without a checkpoint (weights come Conv-BN folded)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".onnx":
        return True
    if p.is_dir():
        return not (p / "model.safetensors").is_file() and (p / "model.onnx").is_file()
    if p.is_file() and zipfile.is_zipfile(p):
        names = {Path(n).name for n in zipfile.ZipFile(p).namelist()}
        return "model.safetensors" not in names and "model.onnx" in names
    return False


def load_folded_state(model: nn.Module, state: dict[str, torch.Tensor], folded: bool,
                      prefix: str = "") -> tuple[set[str], list[str]]:
    """Copy the tensors of ``state`` whose names start with ``prefix`` into ``model`` (see the module
    docstring for folded states). Returns (the model's state names now set, the BatchNorms that
    received a folded bias)."""
    own = model.state_dict()
    done: set[str] = set()
    unfolded: list[str] = []
    with torch.no_grad():
        for name, value in state.items():
            if not name.startswith(prefix):
                continue
            if name in own and own[name].shape == value.shape:
                own[name].copy_(value)
                done.add(name)
                continue
            stem, _, leaf = name.rpartition(".")
            base, _, index = stem.rpartition(".")
            if not (folded and leaf == "bias" and index.isdigit()):
                continue
            bn = f"{base}.{int(index) + 1}"
            if f"{bn}.running_var" in own and own[f"{bn}.bias"].shape == value.shape:
                eps = _module(model, bn).eps
                own[f"{bn}.weight"].fill_(1.0)
                own[f"{bn}.bias"].copy_(value)
                own[f"{bn}.running_mean"].zero_()
                own[f"{bn}.running_var"].fill_(1.0 - eps)
                done.update(f"{bn}.{k}" for k in _BN_STATE if f"{bn}.{k}" in own)
                unfolded.append(bn)
    return done, unfolded


def load_model_weights(model: nn.Module, path: str | Path, what: str = "the model",
                       new_classes: int | None = None, fresh: list[str] | None = None) -> list[str]:
    """Load every tensor of ``model`` from a checkpoint, an ONNX export or a bundle; every one must be
    set (a folded bundle supplies the BatchNorms through its biases). With ``new_classes`` (the
    model's number of classes, when the source's differs), the class layers
    (:func:`~edgeseg.models.checkpoint.class_layer_names`) keep their initial values and their names
    are appended to ``fresh``. Returns the BatchNorms that came from folded biases (to pass to
    :func:`recalibrate_unfolded` before training in train mode)."""
    from .checkpoint import class_layer_names

    path = Path(path)
    if not path.exists():
        raise ModelError(f"weights {path} not found", fix="give a checkpoint, a model.onnx, an .edgeseg bundle or a shipped bundle's name (road, "
                                                           "street-semantic, ...)")
    state, folded = read_weights_source(path)
    left = class_layer_names(model.state_dict(), state, new_classes) if new_classes else []
    done, unfolded = load_folded_state(model, {k: v for k, v in state.items() if k not in left}, folded)
    if fresh is not None:
        fresh.extend(left)
    missing = [k for k in model.state_dict()
               if k not in done and k not in left and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"{path}: weights do not fit {what} (not set: {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}; {len(missing)} in all)",
                         fix="give the bundle or checkpoint of the same architecture (and number of classes, "
                             "unless training new classes: edgeseg train --init starts the class layers afresh)")
    return unfolded


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")


def init_model_weights(model: nn.Module, path: str | Path, batches: Callable[[], Iterable[torch.Tensor]],
                       what: str = "the model") -> int:
    """Every weight of ``model`` from a checkpoint, or from a bundle / ``model.onnx`` whose folded
    BatchNorms are then re-estimated on ``batches()`` (called only then: training inputs cost time).
    Returns the number of BatchNorms re-estimated (0 for a checkpoint)."""
    if Path(path).suffix in CHECKPOINT_SUFFIXES:
        from .checkpoint import load_weights

        load_weights(model, path, what=what)
        return 0
    unfolded = load_model_weights(model, path, what=what)
    recalibrate_unfolded(model, unfolded, batches())
    return len(unfolded)


@torch.no_grad()
def recalibrate_unfolded(model: nn.Module, bns: list[str], batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate the BatchNorms :func:`load_folded_state` made the identity from ``batches`` of
    network inputs (see the module docstring); the eval-mode function is unchanged. Returns the
    number of images seen."""
    if not bns:
        return 0
    modules = {name: _module(model, name) for name in bns}
    sums: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def fn(_mod, inputs):
            z = inputs[0].detach().float()
            dims = [d for d in range(z.dim()) if d != 1]
            s = sums.setdefault(name, [torch.zeros(z.shape[1], dtype=torch.float64, device=z.device),
                                       torch.zeros(z.shape[1], dtype=torch.float64, device=z.device), 0])
            s[0] = s[0] + z.sum(dims).double()
            s[1] = s[1] + (z * z).sum(dims).double()
            s[2] += z.numel() // z.shape[1]
        return fn

    was_training = model.training
    model.eval()
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    seen = 0
    device = next(model.parameters()).device
    try:
        for x in batches:
            model(x.to(device))
            seen += int(x.shape[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not seen:
        raise ModelError("recalibrating the unfolded BatchNorms: no batch was given", fix="pass training images")
    for name, bn in modules.items():
        total, squares, count = sums[name]
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0.0)
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.bias.add_(mean.float())
        bn.weight.copy_((var + bn.eps).sqrt().float())
    return seen


def _module(model: nn.Module, name: str) -> nn.Module:
    m = model
    for part in name.split("."):
        m = getattr(m, part)
    return m
