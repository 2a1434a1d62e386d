"""Stream recipes (``pipelines/*.toml``) -> :class:`~edgeseg.stream.api.StreamOptions`.

Paths in a recipe do not depend on the directory ``edgeseg run`` is started from. The rules are
:mod:`edgeseg._recipes`' (shared with the calibration recipes): ``${VAR}``/``$VAR`` and ``~``
expanded (``${EDGESEG_DATA}`` falls back to :func:`edgeseg.paths.data_root`), a relative path is
relative to **the recipe file's directory**.

That applies to the source (or each of a list of sources: a plain path, a ``file://`` or ``dir://`` URI; network URIs and launch strings only
get variables expanded), ``[model] prompt`` (an id mask: propagation, alone or next to the bundle), a bundle given as a path (a bare name such as ``road`` stays a shipped
bundle name unless such a file sits next to the recipe), and the output files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import _recipes
from ..errors import InputError

# recipe section -> {key in the recipe: StreamOptions field}
RECIPE_KEYS: dict[str, dict[str, str]] = {
    "source": {"uri": "source", "realtime": "realtime", "backend": "source_backend"},
    "model": {"bundle": "bundle", "backend": "backend", "precision": "precision", "target": "target",
              "device": "device", "threads": "threads", "upsample": "upsample",
              "score_threshold": "score_threshold", "class_agnostic": "class_agnostic", "classes": "classes", "prompt": "prompt", "track": "track",
              "keyframe_interval": "keyframe_interval", "keyframe_motion": "keyframe_motion",
              "keyframe_local": "keyframe_local"},
    "sinks": {"mp4": "sink", "segment_s": "segment_s", "keep_segments": "keep_segments", "json_segments": "json_segments", "png_segments": "png_segments", "encoder": "encoder", "rtsp_port": "rtsp_port", "rtsp_address": "rtsp_address",
              "rtsp_mount": "rtsp_mount", "show": "show", "json": "json_out", "png_dir": "png_dir",
              "stats_json": "stats_json", "fps": "fps", "alpha": "alpha", "hud": "hud"},
    "pipeline": {"max_frames": "max_frames", "on_error": "on_error", "queue_size": "queue_size",
                 "log_interval_s": "log_interval_s", "max_batch": "max_batch", "batch_timeout_ms": "batch_timeout_ms",
                 "cv_threads": "cv_threads", "decoder_threads": "decoder_threads"},
}
#: StreamOptions fields holding file paths (resolved against the recipe's directory)
PATH_FIELDS = ("sink", "json_out", "png_dir", "stats_json", "prompt")


def resolve_path(text: str, recipe: Path) -> str:
    """Expand variables and ``~``; a relative path becomes relative to the recipe's directory."""
    return _recipes.expand_path(text, recipe.parent, where=recipe)


def resolve_source(text: str, recipe: Path) -> str:
    if "!" in text:  # a GStreamer launch string: variables only
        return _recipes.expand_vars(text, recipe)
    if "://" not in text:
        return resolve_path(text, recipe)
    scheme, rest = text.split("://", 1)
    if scheme.lower() not in ("file", "dir"):
        return _recipes.expand_vars(text, recipe)
    path, sep, query = rest.partition("?")
    return f"{scheme.lower()}://{resolve_path(path, recipe)}{sep}{query}"


def resolve_bundle(text: str, recipe: Path) -> str:
    """A path-like value (a separator, ``~``, ``$``, ``.edgeseg``/``.zip``, or an existing file next to
    the recipe) is resolved; a bare name stays a shipped bundle name."""
    looks_like_path = any(c in text for c in ("/", os.sep, "~", "$")) or text.endswith((".edgeseg", ".zip"))
    if looks_like_path or (recipe.parent / text).exists():
        return resolve_path(text, recipe)
    return text


#: the copies of the repository's ``pipelines/`` shipped inside the package (an installed wheel has no repository)
SHIPPED = Path(__file__).resolve().parent / "recipes"


def _recipe_dirs() -> list[Path]:
    """Where a recipe given by name is looked for: ``./pipelines``, the repository's ``pipelines/``, then the copies
    shipped in the package (:data:`SHIPPED`)."""
    from ..paths import PACKAGE_DIR

    return [d for d in (Path.cwd() / "pipelines", PACKAGE_DIR.parent / "pipelines", SHIPPED) if d.is_dir()]


def _base(recipe: Path, by_name: bool = False) -> Path:
    """The file relative paths of ``recipe`` resolve against: itself, or for a recipe given by name and found outside
    ``./pipelines`` (the package's copies, a source checkout's ``pipelines/``) ``./pipelines/NAME.toml``, as if
    copied there: its ``../out/`` outputs land in ``./out/``, never inside the installed package or another folder's
    checkout (an audit: ``edgeseg run file_semantic`` run from elsewhere wrote into the checkout's ``out/``)."""
    if recipe.parent == SHIPPED or (by_name and recipe.parent != (Path.cwd() / "pipelines").resolve()):
        return Path.cwd() / "pipelines" / recipe.name
    return recipe


def named_recipe(path: str | Path) -> Path:
    """``path``, or for a bare name that is no file (``file_semantic``) the recipe of that name in
    :func:`_recipe_dirs` (``edgeseg run file_semantic`` said 'does not exist' beside ``pipelines/file_semantic.toml``)."""
    p = Path(path)
    if p.exists() or len(p.parts) != 1:
        return p
    for d in _recipe_dirs():
        cand = d / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
        if cand.is_file():
            return cand
    return p


def load_recipe(path: str | Path) -> Any:
    """A TOML recipe -> :class:`~edgeseg.stream.api.StreamOptions`, paths resolved (module doc)."""
    from .api import StreamOptions

    p = named_recipe(path)
    known = ", ".join(sorted({f.stem for d in _recipe_dirs() for f in d.glob("*.toml")})) or "none found"
    data, _ = _recipes.load_toml_recipe(p, kind="pipeline recipe",
                                        fix=f"give a recipe file, or a name from pipelines/ ({known})")
    values: dict[str, Any] = {}
    for section, table in data.items():
        keys = RECIPE_KEYS.get(section)
        if keys is None or not isinstance(table, dict):
            raise InputError(f"{p}: unknown section [{section}]", fix=f"sections are {', '.join(RECIPE_KEYS)}")
        for key, value in table.items():
            if key not in keys:
                raise InputError(f"{p}: unknown key {key!r} in [{section}]", fix=f"known keys: {', '.join(keys)}")
            values[keys[key]] = value
    if not values.get("source"):
        raise InputError(f"{p}: the recipe needs [source] uri = \"...\"")
    recipe = _base(p.resolve(), by_name=p != Path(path))  # where its outputs resolve
    inputs = recipe if p.resolve().parent == SHIPPED else p.resolve()  # a checkout's recipe reads beside itself
    src = values["source"]
    values["source"] = [resolve_source(str(u), inputs) for u in src] if isinstance(src, list) else \
        resolve_source(str(src), inputs)  # a list: several sources batched together
    if isinstance(values.get("bundle"), str):
        values["bundle"] = resolve_bundle(values["bundle"], inputs)
    for key in PATH_FIELDS:
        if isinstance(values.get(key), str):
            values[key] = resolve_path(values[key], inputs if key == "prompt" else recipe)
            if recipe.parent != p.resolve().parent:  # a shipped copy: ./pipelines need not exist for ../out/ to work
                values[key] = os.path.normpath(values[key])
    return StreamOptions(**values)
