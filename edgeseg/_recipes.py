"""TOML recipes (``pipelines/*.toml``, ``calibration/*.toml``): reading them, and the one rule for the
paths they hold.

A path in a recipe does not depend on the directory a command is started from:

* ``${VAR}`` / ``$VAR`` are expanded from the environment; ``${EDGESEG_DATA}`` falls back to the
  data folder :func:`edgeseg.paths.data_root` finds (``../shared/data`` next to the checkout);
* ``~`` is the home directory;
* a relative path is relative to **the recipe file's directory** (``base_dir``).

Each package keeps its own typed recipe (``StreamOptions``, ``CalibrationRecipe``); this module only
reads TOML and resolves paths. Standard library only.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10 (JetPack 6's): the same parser, as the tomli package
    import tomli as tomllib

from .errors import EdgesegError, InputError

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def load_toml_recipe(path: str | os.PathLike, *, kind: str = "recipe", error: type[EdgesegError] = InputError,
                     fix: str | None = None) -> tuple[dict[str, Any], Path]:
    """``(the parsed TOML table, the recipe's directory, absolute)``.

    A missing file or invalid TOML raises ``error`` naming the file (``kind`` says what it is, e.g.
    "pipeline recipe"; ``fix`` is offered for a missing file)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise error(f"{kind} {p} does not exist", fix=fix) from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{kind} {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:  # a video or an image given where the recipe goes
        raise error(f"{kind} {p} is not a text file (a recipe is TOML text)", fix=fix) from None
    except IsADirectoryError:
        raise error(f"{kind} {p} is a folder, not a TOML file", fix=fix) from None
    return data, p.resolve().parent


def expand_vars(text: str, where: str | os.PathLike | None = None) -> str:
    """``${VAR}``/``$VAR`` from the environment (``EDGESEG_DATA`` defaults to the data folder found).
    An unset variable raises :class:`InputError` naming ``where`` (the recipe) and the variable."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        value = os.environ.get(name)
        if value is None and name == "EDGESEG_DATA":
            from .paths import data_root

            root = data_root()
            value = None if root is None else str(root)
        if value is None:
            prefix = f"{where}: " if where is not None else ""
            raise InputError(f"{prefix}${{{name}}} is not set (in {text!r})",
                             fix=f"export {name}=... before running the recipe" +
                                 (" (the folder of the real data, e.g. ../shared/data)" if name == "EDGESEG_DATA" else ""))
        return value

    return _VAR.sub(sub, text)


def expand_path(value: str, base_dir: str | os.PathLike | None, *, where: str | os.PathLike | None = None) -> str:
    """Expand variables and ``~``; a relative path becomes relative to ``base_dir`` (None: left
    relative, i.e. to the working directory). ``where`` names the recipe in errors."""
    p = Path(expand_vars(value, where)).expanduser()
    return str(p if p.is_absolute() or base_dir is None else Path(base_dir) / p)
