"""The model registry, timm style: a model variant is a tiny registered function.

::

    @register_model(task="semantic", arch="pspnet", encoder="resnet50")
    def pspnet_resnet50(num_classes: int = 21, **kw):
        return PSPNet(create_encoder("resnet50", output_stride=8), num_classes, **kw)

    model = create_model("pspnet_resnet50", num_classes=11)
    list_models("deeplab*", task="semantic")

Variants whose names start with ``test_`` are tiny (a few channels) and exist for fast tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .._registry import Registry
from ..errors import ModelError

MODELS: Registry[Callable[..., Any]] = Registry("model", error=ModelError)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a variant without building it."""

    name: str
    task: str
    arch: str
    encoder: str
    tiny: bool
    doc: str


def register_model(fn: Callable | None = None, **meta: Any):
    """Register a model-building function under its own name (usable bare or with metadata:
    ``task`` (default "semantic"), ``arch``, ``encoder``)."""

    def deco(f: Callable) -> Callable:
        m = {"task": "semantic", "arch": "", "encoder": "", **meta}
        m["tiny"] = f.__name__.startswith("test_")
        return MODELS.register(f.__name__, **m)(f)

    return deco(fn) if fn is not None else deco


def create_model(name: str, num_classes: int | None = None, encoder: str | None = None, **kwargs: Any):
    """Build a registered model (random weights). ``num_classes`` defaults to the variant's own.

    ``encoder`` builds the variant on another registered encoder (``list_encoders()``), e.g.
    ``create_model("pspnet_resnet50", encoder="hrnetv2_w18")``: the decoder reads the new encoder's
    channels and strides; an encoder without dilation (HRNet) runs at its own output stride."""
    _import_all()
    fn = MODELS.get(name)
    if num_classes is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ModelError(f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}")
        kwargs["num_classes"] = num_classes
    try:
        if encoder is None:
            model = fn(**kwargs)
        else:
            model = _build_on_encoder(name, fn, encoder, kwargs)
    except TypeError as e:
        raise ModelError(f"model {name!r} cannot be built with {sorted(kwargs)}: {e}") from None
    model.model_name = name
    # what rebuilds it (the bundle's checkpoint records these)
    model.model_kwargs = {k: v for k, v in kwargs.items() if k != "num_classes"}
    if encoder is not None:
        model.model_kwargs["encoder"] = encoder
    return model


def _build_on_encoder(name: str, fn: Callable[..., Any], encoder: str, kwargs: dict[str, Any]):
    from .encoders import swapped_encoder

    if not isinstance(encoder, str) or not encoder:
        raise ModelError(f"model {name!r}: encoder must be a registered encoder's name, got {encoder!r}",
                         fix="see edgeseg.models.list_encoders()")
    with swapped_encoder(encoder) as swap:
        try:
            model = fn(**kwargs)
        except (ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise ModelError(f"model {name!r} cannot be built on encoder {encoder!r}: {e}",
                             fix="pick another encoder or another variant (edgeseg models)") from None
    if swap.built == 0:
        raise ModelError(f"model {name!r} has no replaceable encoder (its backbone is part of the architecture)",
                         fix=f"build it without encoder={encoder!r}, or pick a variant of an encoder-decoder architecture")
    return model


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern``, optionally of one ``task``."""
    _import_all()
    return MODELS.names(pattern, task=task)


def model_info(name: str) -> ModelInfo:
    _import_all()
    e = MODELS.entry(name)
    doc = (e.obj.__doc__ or "").strip().splitlines()
    return ModelInfo(name, e.meta["task"], e.meta["arch"], e.meta["encoder"], bool(e.meta["tiny"]), doc[0] if doc else "")


def _import_all() -> None:
    """Import every module of ``edgeseg.models`` (and its encoders) once, so each registers its
    variants: a new architecture is one new module, no list to edit."""
    global _IMPORTED
    if _IMPORTED:
        return
    import importlib
    import pkgutil

    from . import encoders

    pkg = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules(__import__(pkg, fromlist=["_"]).__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg}.{info.name}")
    for info in pkgutil.iter_modules(encoders.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{encoders.__name__}.{info.name}")
    _IMPORTED = True


_IMPORTED = False
