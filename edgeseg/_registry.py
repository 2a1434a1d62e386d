"""A small name -> object registry, used for models, encoders, backends, sources, sinks, stages.

Adding an entry touches one file: the one that defines it (``@REGISTRY.register("name")``).
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import EdgesegError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Named objects of one kind. ``get`` fails with the closest names when a name is unknown; ``meanings`` maps
    words users give for what an entry means (``gpu`` for the ``tensorrt`` target) to the suggestion, before
    spelling does (``gpu`` was "did you mean cpu?")."""

    def __init__(self, kind: str, error: type[EdgesegError] = EdgesegError, meanings: dict[str, str] | None = None):
        self.kind = kind
        self._error = error
        self._entries: dict[str, Entry[T]] = {}
        self._meanings = {k.lower(): v for k, v in (meanings or {}).items()}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries and self._entries[key].obj is not obj:
                raise self._error(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = Entry(key, obj, dict(meta))
            return obj

        return deco

    def add(self, name: str, obj: T, **meta: Any) -> T:
        return self.register(name, **meta)(obj)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            by_lower = {k.lower(): k for k in self._entries}  # ONNXRuntime -> onnxruntime
            users = [k for k in by_lower if not k.startswith("test_")]  # the tiny test variants only when nothing else fits
            said = str(name).lower()
            # a family's name (fcn, deeplab, hrnet): its members; else the closest spellings
            family = sorted((c for c in users if len(said) >= 2 and (c.startswith(said) or f"_{said}" in c)),
                            key=lambda c: (not c.startswith(said), c))
            close = [by_lower[c] for c in (family or difflib.get_close_matches(said, users, n=3)
                                           or difflib.get_close_matches(said, list(by_lower), n=3))]
            more = f" (and {len(close) - 8} more)" if len(close) > 8 else ""
            hint = (f"did you mean {', '.join(close[:8])}{more}?" if close
                    else f"known: {', '.join(sorted(self._entries)) or 'none'}")
            if str(name).lower() in self._meanings:
                hint = f"did you mean {self._meanings[str(name).lower()]}?"
            raise self._error(f"unknown {self.kind} {name!r}", fix=hint) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self, pattern: str = "*", **meta: Any) -> list[str]:
        out = []
        for key, e in self._entries.items():
            if not fnmatch.fnmatch(key, pattern):
                continue
            if any(v is not None and e.meta.get(k) != v for k, v in meta.items()):
                continue
            out.append(key)
        return sorted(out)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)
