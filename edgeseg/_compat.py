"""What the runtime needs from Python 3.9+, for Python 3.8 (JetPack 5's system Python, which its TensorRT and
GStreamer bindings are built for). One small function per missing method; nothing else may need more than 3.8
in the runtime (tests/test_compat.py guards it)."""
from __future__ import annotations

from pathlib import PurePath


def removesuffix(text: str, suffix: str) -> str:
    """``str.removesuffix`` (3.9)."""
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text


def removeprefix(text: str, prefix: str) -> str:
    """``str.removeprefix`` (3.9)."""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def is_relative_to(path: PurePath, other: PurePath | str) -> bool:
    """``PurePath.is_relative_to`` (3.9): whether ``path`` lies under ``other``, by path parts (not a string
    prefix: ``/a/bundle-ab`` does not contain ``/a/bundle-abc``)."""
    try:
        path.relative_to(other)
        return True
    except ValueError:
        return False
