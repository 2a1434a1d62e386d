"""Lazy package attributes (PEP 562): a public name is imported from its module on first access.

    _LAZY = {"load": "edgeseg.predictor:load", "Bundle": "edgeseg.bundle:Bundle"}
    __getattr__, __dir__ = lazy_module(__name__, _LAZY)

Keeps ``import edgeseg`` cheap: the modules behind the names (torch, onnxruntime, ...) load only
when a name is used. The resolved value is cached in the package's globals, so ``__getattr__`` runs
once per name. Standard library only.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_module(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` resolving each of ``names`` (public name ->
    ``"module:attribute"``; a module starting with ``.`` is relative to ``package``)."""

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module, package), attr or name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
