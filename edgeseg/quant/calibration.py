"""Calibration data: which frames INT8 ranges are measured on, and the reader that feeds them.

Frames come from an image folder, a dataset reader (``open_dataset`` spec), a video file (uniform
or scene-change sampling) or a live source (any iterator of RGB frames). Every frame goes through
the bundle's own :meth:`InputSpec.preprocess`, so calibration sees exactly what inference sees.
A recipe (``calibration/*.toml``) names the source, the number of frames, the sampling and the
range algorithm; :func:`load_recipe` parses it into a :class:`CalibrationRecipe`.

    recipe = resolve_calibration("calibration/camvid.toml")          # or a folder / video / spec
    frames = collect_frames(recipe)                                   # list of RGB uint8 [H, W, 3]
    reader = FeedReader(frames, bundle.manifest.input)                # an ORT CalibrationDataReader
"""
from __future__ import annotations

import bisect
import collections

import logging
import math
import numbers
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .._recipes import expand_path, expand_vars, load_toml_recipe
from .._registry import Registry
from ..errors import DataError, InputError
from ..structures import ImageShape, InputSpec

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
METHODS = ("entropy", "percentile", "minmax", "mse")
SAMPLINGS = ("uniform", "scene", "first")


@dataclass(frozen=True)
class CalibrationRecipe:
    """Which frames to calibrate on and how to turn them into ranges.

    source:    a folder of images, a video file, or a dataset spec (``camvid:ROOT``, ``synthetic:64``);
               or a list of them, ``frames`` shared evenly (several sequences, cities or cameras:
               ranges measured on one clip fit that clip). Paths follow the recipe rules of :mod:`edgeseg._recipes` (the same as stream
               recipes): relative to ``base_dir`` (the recipe's folder), ``$VAR`` and ``~``
               expanded, ``${EDGESEG_DATA}`` defaulting to the real-data folder.
    split:     dataset split for dataset specs.
    frames:    how many frames to use (at most).
    sampling:  ``uniform`` (evenly spread over the source), ``scene`` (video: frames after the
               largest scene changes), ``first`` (the first N).
    method:    range algorithm: entropy | percentile | minmax | mse.
    percentile: for ``method="percentile"``.
    scene_threshold: mean absolute grey-level change (0-255) between kept frames for ``scene``.
    holdout:   fraction of frames held out from calibration for the sensitivity analysis.
    seed:      shuffling seed for datasets with ``sampling="uniform"`` (deterministic).
    """

    source: str | tuple[str, ...]
    frames: int = 200
    split: str = "train"
    sampling: str = "uniform"
    method: str = "entropy"
    percentile: float = 99.999
    scene_threshold: float = 12.0
    holdout: float = 0.0
    seed: int = 0
    name: str = ""
    base_dir: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.source, list):
            object.__setattr__(self, "source", tuple(self.source))
        self._check_types()
        if isinstance(self.source, tuple) and (not self.source or not all(isinstance(s, str) and s for s in self.source)):
            raise InputError(f"calibration recipe {self.name!r}: source must be a path or spec, or a non-empty list of them",
                             fix='e.g. source = ["camvid:${EDGESEG_DATA}/camvid,exclude=0006R0", "FOLDER_OF_FRAMES"]')
        if self.frames <= 0:
            raise InputError(f"calibration recipe {self.name or self.source!r}: frames must be > 0, got {self.frames}")
        if self.method not in METHODS:
            raise InputError(f"calibration method {self.method!r} is unknown", fix=f"use one of {', '.join(METHODS)}")
        if self.sampling not in SAMPLINGS:
            raise InputError(f"calibration sampling {self.sampling!r} is unknown", fix=f"use one of {', '.join(SAMPLINGS)}")
        if not 0.0 <= self.holdout < 1.0:
            raise InputError(f"calibration holdout must be in [0, 1), got {self.holdout}")
        if not 0.0 < self.percentile <= 100.0:
            raise InputError(f"calibration percentile must be in (0, 100], got {self.percentile}")

    def _check_types(self) -> None:
        """Each setting of its type (a recipe's ``frames = 2.5``, ``split = 0`` or ``source = 5`` reached the
        readers as a TypeError or AttributeError traceback)."""
        def refuse(key: str, want: str) -> None:
            raise InputError(f"calibration recipe {self.name or '(given)'!r}: {key} must be {want}, got "
                             f"{getattr(self, key)!r}", fix=f"give {key} as {want} in the [calibration] table")

        if not (isinstance(self.source, str) and self.source.strip() or isinstance(self.source, tuple)):
            refuse("source", 'a path or dataset spec (a string, e.g. "camvid:${EDGESEG_DATA}/camvid") or a list of them')
        for key in ("frames", "seed"):  # numpy's integers too (a program's own counts)
            if isinstance(getattr(self, key), bool) or not isinstance(getattr(self, key), numbers.Integral):
                refuse(key, "a whole number")
            object.__setattr__(self, key, int(getattr(self, key)))
        for key in ("split", "sampling", "method"):
            if not isinstance(getattr(self, key), str):
                refuse(key, "a string")
        for key in ("percentile", "scene_threshold", "holdout"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                refuse(key, "a finite number")

    @property
    def sources(self) -> tuple[str, ...]:
        return self.source if isinstance(self.source, tuple) else (self.source,)

    def resolved_sources(self) -> list[str]:
        """Every source, each resolved as :meth:`resolved_source` says."""
        return [replace(self, source=s).resolved_source() for s in self.sources]

    def resolved_source(self) -> str:
        """The (single) source with the recipe path rules of :mod:`edgeseg._recipes` applied: ``$VAR`` /
        ``${EDGESEG_DATA}`` and ``~`` expanded, a relative path made absolute against ``base_dir`` (the
        recipe's folder; a source given without a recipe stays relative to the working directory). In a
        dataset spec ``kind:PATH[,options]`` the path is resolved; ``synthetic:64`` is left as it is."""
        if isinstance(self.source, tuple):
            if len(self.source) != 1:
                raise InputError(f"calibration recipe {self.name!r} has {len(self.source)} sources",
                                 fix="use resolved_sources()")
            return replace(self, source=self.source[0]).resolved_source()
        where = self.name or None
        base = self.base_dir or None
        kind, sep, rest = self.source.partition(":")
        if sep and _KIND.fullmatch(kind):  # a dataset spec (coco-instance:, cityscapes-camvid: too)
            if not rest or rest[0].isdigit():
                return expand_vars(self.source, where)
            first, comma, tail = rest.partition(",")
            return f"{kind}:{expand_path(first, base, where=where)}{comma}{expand_vars(tail, where)}"
        return expand_path(self.source, base, where=where)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.source, tuple):
            d["source"] = list(self.source)
        return d


def load_recipe(path: str | os.PathLike) -> CalibrationRecipe:
    """Parse a ``calibration/*.toml`` recipe (a ``[calibration]`` table, or the keys at the top)."""
    p = Path(path)
    data, base_dir = load_toml_recipe(p, kind="calibration recipe", error=DataError,
                                      fix="a recipe is a TOML file with a [calibration] table (docs/quantization.md), or give a shipped "
                                          "recipe's name: camvid, street, dashcam, synthetic")
    table = data.get("calibration", data)
    if not isinstance(table, dict):
        raise DataError(f"{p}: calibration is a {type(table).__name__}, not a table",
                        fix="the settings go under a [calibration] heading (or at the top of the file)")
    known = {f.name for f in fields(CalibrationRecipe)} - {"base_dir", "name"}
    unknown = sorted(set(table) - known - {"description"})
    if unknown:
        raise DataError(f"{p}: unknown key(s) {', '.join(unknown)}", fix=f"known keys: {', '.join(sorted(known))}")
    if "source" not in table:
        raise DataError(f"{p}: missing key 'source'", fix="e.g. source = \"camvid:${EDGESEG_DATA}/camvid\"")
    kw = {k: v for k, v in table.items() if k in known}
    try:
        return CalibrationRecipe(**kw, name=p.stem, base_dir=str(base_dir))
    except TypeError as e:
        raise DataError(f"{p}: {e}") from None


def resolve_calibration(arg: str, *, frames: int | None = None, method: str | None = None) -> CalibrationRecipe:
    """A recipe from the ``--calib`` argument: a ``.toml`` recipe, a recipe name (``camvid``, looked up
    by :func:`find_recipe`), an image folder, a video file or a dataset spec. ``frames``/``method``
    override the recipe's."""
    p = Path(arg)
    named = None if arg.endswith(".toml") or p.exists() else find_recipe(arg)
    if arg.endswith(".toml"):
        recipe = load_recipe(p)
    elif named is not None:
        recipe = load_recipe(named)
    elif _NAME.fullmatch(arg) and not p.exists():  # an existing folder or file named like a recipe is a source
        known = ", ".join(recipe_names()) or "none"
        raise DataError(f"calibration recipe or source {arg!r} not found (recipes looked up in "
                        f"{', '.join(str(d) for d in recipe_dirs())})",
                        fix=f"use a recipe name ({known}), a .toml recipe, an image folder, a video or a dataset spec")
    else:
        recipe = CalibrationRecipe(source=arg, name=p.name or arg, sampling="uniform")
    over = {k: v for k, v in (("frames", frames), ("method", method)) if v is not None}
    return replace(recipe, **over) if over else recipe


_NAME = re.compile(r"[A-Za-z0-9_-]+")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_-]+")  # two characters at least: "C:" is a drive, not a spec


def recipe_dirs() -> list[Path]:
    """Where recipe names resolve, first match wins: ``./calibration`` (the working directory), the
    repository's ``calibration/`` next to the package (a source checkout), then the copies shipped
    inside the package (``edgeseg/quant/recipes/``, identical to the repository's: a test checks)."""
    from ..paths import PACKAGE_DIR

    out: list[Path] = []
    for d in (Path.cwd() / "calibration", PACKAGE_DIR.parent / "calibration", Path(__file__).resolve().parent / "recipes"):
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_recipe(name: str) -> Path | None:
    """The ``NAME.toml`` recipe for a recipe name (``camvid``, ``dashcam``, ``synthetic``), or None."""
    if not _NAME.fullmatch(name):
        return None
    for d in recipe_dirs():
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    return None


def recipe_names() -> list[str]:
    """Every recipe name that :func:`find_recipe` resolves."""
    return sorted({f.stem for d in recipe_dirs() if d.is_dir() for f in d.glob("*.toml")})


# ---- frame sources ---------------------------------------------------------------------------
FrameSourceFn = Callable[[str, CalibrationRecipe], Iterator[np.ndarray]]
FRAME_SOURCES: Registry[FrameSourceFn] = Registry("calibration source kind", DataError)


def source_kind(source: str) -> str:
    p = Path(source)
    if p.is_dir():
        return "folder"
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    kind, sep, _ = source.partition(":")
    if sep and len(kind) > 1:
        return "dataset"
    if not p.exists():
        raise DataError(
            f"calibration source {source!r} not found",
            fix="give an image folder, a video file, a dataset spec (camvid:ROOT, synthetic:64) or a calibration/*.toml recipe",
        )
    raise DataError(f"calibration source {source!r} is neither a folder, a video nor a dataset spec")


def _spread(n_total: int, n: int) -> list[int]:
    """``n`` indices evenly spread over ``range(n_total)`` (all of them when n >= n_total)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(round(i)) for i in np.linspace(0, n_total - 1, n)})


@FRAME_SOURCES.register("folder")
def _folder_frames(source: str, recipe: CalibrationRecipe) -> Iterator[np.ndarray]:
    from ..data.io import IMAGE_SUFFIXES, image_files, read_image

    files = image_files(source)
    if not files:
        raise DataError(f"calibration folder {source} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                        fix="put representative frames from the deployment in it (e.g. 100-500), or pass a video, "
                            "a dataset spec (camvid:ROOT) or a recipe name")
    pick = list(range(min(recipe.frames, len(files))) if recipe.sampling == "first" else _spread(len(files), recipe.frames))
    # an image that does not decode is skipped (said), and the nearest image not picked takes its place (the
    # sampling stays spread): one bad file among hundreds of a user's frames stopped the whole calibration
    free: list[int] | None = None  # the images not picked, in order: made at the first failure only
    bad: list[str] = []
    given, queue = 0, collections.deque(pick)
    while queue and given < recipe.frames:
        i = queue.popleft()
        try:
            img = read_image(files[i])
        except (DataError, InputError) as e:  # read_image: InputError (corrupt), DataError (unreadable file)
            bad.append(f"{files[i].name} ({str(e).splitlines()[0]})")
            if free is None:
                picked = set(pick)
                free = [k for k in range(len(files)) if k not in picked]
            replaced = bool(free)
            if free:
                at = bisect.bisect_left(free, i)
                near = min((c for c in (at - 1, at) if 0 <= c < len(free)), key=lambda c: abs(free[c] - i))
                queue.append(free.pop(near))
            if len(bad) <= 5:  # said as it happens: the reader stops this generator once it has its frames
                log.warning("calibration folder %s: skipping an image that cannot be read: %s%s", source, bad[-1],
                            "" if replaced else " (no other image to take its place)")
            continue
        given += 1
        yield img
    if bad and not given:
        raise DataError(f"calibration folder {source}: none of its images could be read ({'; '.join(bad[:3])}"
                        f"{' ...' if len(bad) > 3 else ''})", fix="give a folder of readable images (PNG, JPEG, ...)")


@FRAME_SOURCES.register("dataset")
def _dataset_frames(source: str, recipe: CalibrationRecipe) -> Iterator[np.ndarray]:
    from ..data import open_dataset

    ds = open_dataset(source, split=recipe.split)
    if len(ds) == 0:
        raise DataError(f"calibration dataset {source} ({recipe.split}) is empty")
    if recipe.sampling == "first":
        pick = list(range(min(recipe.frames, len(ds))))
    else:
        rng = np.random.default_rng(recipe.seed)
        pick = sorted(rng.permutation(len(ds))[: recipe.frames].tolist())
    for i in pick:
        sample = ds[i]  # semantic samples hold the image; instance samples read it on demand
        yield sample.image() if callable(sample.image) else sample.image


@FRAME_SOURCES.register("video")
def _video_frames(source: str, recipe: CalibrationRecipe) -> Iterator[np.ndarray]:
    if recipe.sampling == "scene":
        wanted = set(scene_change_indices(source, recipe.frames, recipe.scene_threshold))
    else:
        total = _count_frames(source)
        wanted = set(range(min(recipe.frames, total))) if recipe.sampling == "first" else set(_spread(total, recipe.frames))
    for i, rgb in _decode(source):
        if i in wanted:
            yield rgb
        if i >= max(wanted, default=-1):
            break


def _decode(path: str) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB frame)`` in decode order, from the shared OpenCV reader (:mod:`edgeseg.data.video`)."""
    from ..data.video import read_video

    for f in read_video(path, name=f"calibration video {path}"):
        yield f.index, f.image


def _count_frames(path: str) -> int:
    """Decoded frame count (the container's count can be wrong, so count by decoding)."""
    from ..data.video import count_frames

    n = count_frames(path, name=f"calibration video {path}")
    if n == 0:
        raise DataError(f"calibration video {path} has no decodable frames")
    return n


def scene_change_indices(path: str, n: int, threshold: float = 12.0) -> list[int]:
    """Frame indices that start new scenes: a frame is kept when its 64x36 grey thumbnail differs
    from the last kept one by more than ``threshold`` (mean absolute difference, 0-255). When more
    than ``n`` are kept, the ``n`` largest changes win; when fewer, the rest is filled uniformly."""
    import cv2

    kept: list[tuple[int, float]] = []
    last: np.ndarray | None = None
    total = 0
    for i, rgb in _decode(path):
        thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
        change = float("inf") if last is None else float(np.abs(thumb - last).mean())
        if change > threshold:
            kept.append((i, change))
            last = thumb
        total = i + 1
    if total == 0:
        raise DataError(f"calibration video {path} has no decodable frames")
    if len(kept) > n:
        kept = sorted(kept, key=lambda t: -t[1])[:n]
    idx = {i for i, _ in kept}
    for j in _spread(total, n):
        if len(idx) >= min(n, total):
            break
        idx.add(j)
    return sorted(idx)


def collect_frames(recipe: CalibrationRecipe, *, progress: bool = True, network: Any = None) -> list[np.ndarray]:
    """The recipe's RGB ``uint8 [H, W, 3]`` frames, read once (with a progress bar). With several
    sources each gives ``frames // k`` (the first ones one more for the remainder), sampled as the
    recipe says within that source. ``network``: the model's ``InputSpec`` (or its fixed size), to keep frames far
    larger than its input smaller (:func:`kept_frame`)."""
    sources = recipe.resolved_sources()
    out: list[np.ndarray] = []
    for i, source in enumerate(sources):
        share = recipe.frames // len(sources) + (1 if i < recipe.frames % len(sources) else 0)
        if share == 0:
            continue
        fn = FRAME_SOURCES.get(source_kind(source))
        got = take_frames(fn(source, replace(recipe, frames=share)), share, progress=progress, network=network,
                          desc=f"calibration frames ({recipe.name or source}{f' {i + 1}/{len(sources)}' if len(sources) > 1 else ''})")
        if len(got) < share:
            log.warning("calibration source %s gave %d of the %d frames asked for (--frames, or the recipe's frames; "
                        "default 200): calibrating on %d", source, len(got), share, len(got))
        out += got
    return out


#: a calibration frame is kept at no more than this many times the network's input size (each side; its aspect kept)
KEEP_SCALE = 2


def kept_size(shape: tuple[int, int], network: Any) -> tuple[int, int] | None:
    """``(height, width)`` to keep a calibration frame of ``shape`` at, or None to keep it as it is: a frame over
    :data:`KEEP_SCALE` times the network's input on both sides is shrunk, its aspect kept, until one side is that
    (the network's own resize then still shrinks it, so what it sees barely changes; 200 frames of a 4K clip held
    4.6 GiB for a 480x360 model, and a small device was killed calibrating)."""
    if network is None or not getattr(network, "height", 0) or not getattr(network, "width", 0):
        return None
    h, w = shape
    s = max(KEEP_SCALE * network.height / h, KEEP_SCALE * network.width / w)
    if s >= 1:
        return None
    return max(1, round(h * s)), max(1, round(w * s))


def kept_frame(img: np.ndarray, spec: Any) -> np.ndarray:
    """The calibration frame to keep for ``img`` (``spec``: the bundle's ``InputSpec``, or only its size): as it is,
    unless :func:`kept_size` shrinks it. A plain resize to a fixed size keeps what the network's pre-processing
    makes of it, exactly (its resize, done once now: the same tensor); other geometries keep twice the network's size
    (an area average, then the network's own resize)."""
    net = getattr(spec, "size", spec)
    size = kept_size(img.shape[:2], net)
    if size is None:
        return img
    import cv2

    if getattr(spec, "size_rule", None) == "fixed" and getattr(spec, "resize", None) == "resize":
        return cv2.resize(img, net.wh, interpolation=cv2.INTER_LINEAR)  # as InputSpec.preprocess resizes it
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def take_frames(frames: Iterable[np.ndarray], n: int, *, progress: bool = False, desc: str = "frames",
                network: Any = None) -> list[np.ndarray]:
    """Up to ``n`` RGB frames from any iterator (a live source: a camera, a stream of ``Frame``); ``network``: see
    :func:`kept_size`."""
    from .._progress import bar as progress_bar

    out: list[np.ndarray] = []
    with progress_bar(n, desc, "frame", progress) as bar:
        for f in frames:
            img = getattr(f, "image", f)
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise DataError(f"calibration frame {len(out)} is not an RGB uint8 [H, W, 3] array: {getattr(img, 'shape', type(img).__name__)}")
            out.append(kept_frame(img, network))
            bar.update(1)
            if len(out) >= n:
                break
    if not out:
        raise DataError("the calibration source gave no frames")
    return out


def split_holdout(frames: Sequence[np.ndarray], fraction: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration, held-out) frames: every k-th frame is held out so both cover the whole source."""
    if fraction <= 0 or len(frames) < 2:
        return list(frames), []
    k = max(2, int(round(1.0 / fraction)))
    held = [f for i, f in enumerate(frames) if i % k == k - 1]
    return [f for i, f in enumerate(frames) if i % k != k - 1], held


# ---- the reader --------------------------------------------------------------------------------
def one_network_shape(frames: Sequence[np.ndarray], spec: InputSpec | None) -> list[np.ndarray]:
    """``frames``, those of a size rule that feeds each frame at its own network shape (``fit``, ``multiple``,
    ``any``) resized to the most common frame size when they would give several shapes: ONNX Runtime's histogram
    calibrators stack every frame's tensors, which must share a shape (mixed sizes were a numpy traceback)."""
    frames = list(frames)
    if spec is None or spec.size_rule == "fixed" or any(np.ndim(f) != 3 for f in frames) or \
            len({spec.network_shape(ImageShape(*f.shape[:2])) for f in frames}) < 2:  # (volumes: fed as made)
        return frames
    import cv2
    from collections import Counter

    h, w = Counter(f.shape[:2] for f in frames).most_common(1)[0][0]
    changed = sum(f.shape[:2] != (h, w) for f in frames)
    log.warning(
        "calibration frames of several sizes for a %s-size model: %d of %d resized to %dx%d (the most common size) "
        "so that every frame reaches the network at one shape", spec.size_rule, changed, len(frames), w, h)
    return [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]


class FeedReader:
    """ONNX Runtime ``CalibrationDataReader`` over RGB frames: yields ``{input_name: tensor}``,
    each made by the bundle's ``InputSpec.preprocess``, all of one network shape (:func:`one_network_shape`).
    Iterate again after :meth:`rewind`."""

    def __init__(self, frames: Sequence[np.ndarray], spec: InputSpec, *, input_name: str | None = None,
                 progress: bool = False, desc: str = "calibrating"):
        self.frames = one_network_shape(frames, spec)
        self.spec = spec
        self.input_name = input_name or spec.name
        self.progress = progress
        self.desc = desc
        self._pos = 0
        self._bar = None
        self._start, self._end = 0, len(self.frames)

    def feed(self, i: int) -> dict[str, np.ndarray]:
        x, _ = self.spec.preprocess(self.frames[i])
        return {self.input_name: x}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos == 0 and self.progress and self._bar is None:
            from .._progress import bar

            self._bar = bar(self._end - self._start, self.desc, "frame")
        i = self._start + self._pos
        if i >= self._end:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return None
        self._pos += 1
        if self._bar is not None:
            self._bar.update(1)
        return self.feed(i)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self.frames))
        self._pos = 0

    def rewind(self) -> None:
        self.set_range(0, len(self.frames))

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self.frames)):
            yield self.feed(i)

