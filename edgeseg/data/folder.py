"""A generic image + mask folder reader: images and single-channel class-id masks paired by stem.

``IMAGES_DIR/abc.jpg`` pairs with ``MASKS_DIR/abc.png``. Class names come from a text file (one
name per line, line order = class id), from ``num_classes``, or else from the largest id found in
the masks. An optional ``void`` id is mapped to :data:`~edgeseg.data.IGNORE`; ids at or above the
class count are void too (documented, so a stray value never becomes a class). ``reduce_zero_label=1``
reads ADE20K-style masks as MMSegmentation's option of that name does: 0 is void and id ``k`` is class
``k - 1`` (ADE20K's 150 classes are ids 1..150; a model trained on them outputs 0..149).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..structures import default_palette
from .base import DATASETS, IGNORE, Sample, SegmentationDataset, check_options
from .io import EXIF_TURNS, IMAGE_SUFFIXES, exif_orientation, mask_size_error, read_image, read_label, read_text

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, int]] = set()  # (masks folder, class count) already warned about (train and val open it twice)


#: names a class list may repeat (torchvision's COCO list repeats "N/A"): classes no one scores by name
PLACEHOLDER_NAMES = frozenset({"n/a", "__background__", "background", "unlabelled", "unlabeled", "void", "ignore"})


def class_names_from_lines(lines: list[str], p: Path) -> tuple[str, ...]:
    """The names of a class-name file's lines (``#`` starts a comment; blank lines are skipped, said when they lie
    between names, as every later class id moves up by one; a comment-only line is not blank); a name listed twice
    (case aside) is a :class:`DataError` naming its lines, as two classes of one name lose one's scores in every
    table (placeholders such as ``N/A``, :data:`PLACEHOLDER_NAMES`, may repeat)."""
    stripped = [line.split("#", 1)[0].strip() for line in lines]
    names = tuple(n for n in stripped if n)
    filled = [i for i, n in enumerate(stripped) if n]
    inner = [i + 1 for i in range(filled[0], filled[-1]) if not lines[i].strip()] if filled else []
    if inner:
        log.warning("class-name file %s: blank line(s) %s between names are skipped: class ids follow the named lines "
                    "(a class without a name needs one of its own, e.g. 'class_%d')", p,
                    ", ".join(map(str, inner[:5])), len([n for n in stripped[:inner[0]] if n]))
    seen: dict[str, int] = {}
    for i, n in enumerate(stripped):
        if not n or n.lower() in PLACEHOLDER_NAMES:
            continue
        if n.lower() in seen:
            raise DataError(f"class-name file {p} lists {n!r} twice (lines {seen[n.lower()]} and {i + 1})",
                            fix="give every class its own name, one per line (line order = class id)")
        seen[n.lower()] = i + 1
    return names


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """One class name per non-empty line; ``#`` starts a comment (:func:`class_names_from_lines`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"class-name file not found: {p}", fix="one class name per line, line order = class id")
    names = class_names_from_lines(read_text(p, "class-name file", "one class name per line").splitlines(), p)
    if not names:
        raise DataError(f"class-name file {p} lists no classes")
    if len(names) > 255:
        raise DataError(f"class-name file {p} lists {len(names)} classes; at most 255 fit uint8 labels with void 255")
    return names


def _ranges(ids: list[int]) -> str:
    """``[6, 7, 8, 12]`` -> ``"6-8, 12"``."""
    out, start = [], None
    for i, k in enumerate(ids):
        if start is None:
            start = k
        if i + 1 == len(ids) or ids[i + 1] != k + 1:
            out.append(str(start) if start == k else f"{start}-{k}")
            start = None
    return ", ".join(out)


def _mask_palette(mask: Path, n: int, first: int = 0) -> np.ndarray:
    """The class colours: an indexed mask's own (PASCAL VOC's, an annotation tool's), when its palette has a colour
    for every class and is not all grey, else :func:`default_palette` (an audit: a palette PNG's colours never
    reached the trained bundle). ``first``: the mask id of class 0 (1 with ``reduce_zero_label``)."""
    from .io import _png_palette

    try:
        with open(mask, "rb") as f:
            palette = _png_palette(f.read(1 << 20))  # PLTE precedes the pixel data
    except OSError:
        palette = None
    if palette is None or len(palette) < n + first or bool((palette == palette[:, :1]).all()):
        return default_palette(n)
    return np.ascontiguousarray(palette[first:first + n], np.uint8)


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}", fix=f"check the {what}s folder of folder:IMAGES_DIR,MASKS_DIR")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in out:
                raise DataError(f"{what} folder {folder} has two files with stem {p.stem!r}: {out[p.stem].name}, {p.name}")
            out[p.stem] = p
    return out


class FolderDataset(SegmentationDataset):
    """Image + mask pairs matched by file stem."""

    def __init__(
        self,
        images: str | Path,
        masks: str | Path,
        *,
        classes: tuple[str, ...] | None = None,
        num_classes: int | None = None,
        void: int | None = None,
        stems: list[str] | None = None,
        reduce_zero_label: bool = False,
    ):
        self.images_dir, self.masks_dir = Path(images), Path(masks)
        imgs, msks = _by_stem(self.images_dir, "image"), _by_stem(self.masks_dir, "mask")
        if stems is not None:  # a list file (Pascal VOC's ImageSets): those pairs only, the other files left alone
            missing = [s for s in stems if s not in imgs or s not in msks]
            if missing:
                raise DataError(f"{len(missing)} of the {len(stems)} listed names have no image or no mask in "
                                f"{self.images_dir} / {self.masks_dir}: {', '.join(missing[:5])}",
                                fix="list file stems (abc for abc.jpg and abc.png), one per line, of files both "
                                    "folders hold")
            imgs, msks = {s: imgs[s] for s in stems}, {s: msks[s] for s in stems}
        lonely_i, lonely_m = sorted(set(imgs) - set(msks)), sorted(set(msks) - set(imgs))
        if lonely_i or lonely_m:
            parts = []
            if lonely_i:
                parts.append(f"images without a mask: {', '.join(imgs[s].name for s in lonely_i[:5])}")
            if lonely_m:
                parts.append(f"masks without an image: {', '.join(msks[s].name for s in lonely_m[:5])}")
            raise DataError(
                f"unmatched files in {self.images_dir} / {self.masks_dir}: " + "; ".join(parts),
                fix="every image needs a mask with the same file stem (abc.jpg <-> abc.png), or list the pairs to "
                    "use, one stem per line, with list=FILE (Pascal VOC: list=ImageSets/Segmentation/{split}.txt)",
            )
        if not imgs:
            raise DataError(f"no images found in {self.images_dir}", fix=f"supported: {', '.join(IMAGE_SUFFIXES)}")
        self.pairs = [(imgs[s], msks[s]) for s in sorted(imgs)]
        self.void = void
        self.reduce_zero_label = bool(reduce_zero_label)  # ADE20K's masks: 0 void, id k is class k - 1
        if classes is None:
            k = num_classes if num_classes is not None else self._scan_num_classes()
            classes = tuple(f"class_{i}" for i in range(k))
        if not 0 < len(classes) <= 255:
            raise DataError(f"folder dataset needs 1..255 classes, got {len(classes)}")
        self.classes = tuple(classes)
        self.palette = _mask_palette(self.pairs[0][1], len(self.classes), int(self.reduce_zero_label))
        ids = np.arange(256)
        cls = ids - 1 if self.reduce_zero_label else ids  # a mask's id -> its class
        lut = np.where((cls >= 0) & (cls < len(self.classes)), cls, IGNORE).astype(np.uint8)
        lut[IGNORE] = IGNORE  # 255 stays void (MMSegmentation's reduce_zero_label too)
        if void is not None:
            lut[int(void)] = IGNORE
        self._lut = lut
        # ids made void only because they are past the class count (not 255, not the void id, not a reduced 0):
        # warned about once
        self._stray = ((lut == IGNORE) & (ids != IGNORE) & (ids != (IGNORE if void is None else int(void)))
                       & ~((ids == 0) & self.reduce_zero_label))
        self._warned_void = False
        self._exif_checks = 0  # images whose EXIF orientation was read (16 at most; 16 once one was said)

    def _scan_num_classes(self) -> int:
        """The class count as the largest id found plus one. Ids that no mask holds below it are said (a stray id,
        40 in a mask of 0..5, made a 41-class model whose classes 6..39 never appear)."""
        seen: set[int] = set()
        for _, m in self.pairs:
            lab = read_label(m)
            vals = np.unique(lab)
            vals = vals[(vals != IGNORE) & (vals != (self.void if self.void is not None else IGNORE))]
            if self.reduce_zero_label:
                vals = vals[vals != 0]
            seen.update(int(v) for v in vals)
        if not seen:
            raise DataError(f"masks in {self.masks_dir} hold no class ids", fix="pass classes=FILE or num_classes=K")
        top = max(seen)
        first = 1 if self.reduce_zero_label else 0
        unused = [k for k in range(first, top) if k not in seen]
        key = (str(self.masks_dir), -top - 1)
        if unused and key not in _WARNED:
            _WARNED.add(key)
            log.warning("masks in %s hold class ids up to %d but never %s: a %d-class model, %d of its classes with no "
                        "pixel (a stray id in a mask?); name the classes with classes=FILE, or mark the stray id void=K",
                        self.masks_dir, top, _ranges(unused), top + 1 - first, len(unused))
        return top + 1 - first

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> Sample:
        img_path, mask_path = self.pairs[index]
        image = read_image(img_path)
        raw = read_label(mask_path)
        if raw.shape != image.shape[:2]:
            raise mask_size_error(mask_path, raw.shape, img_path, image.shape[:2])
        if self._exif_checks < 16:  # a folder's first images say whether its camera tags orientation (not per sample)
            self._warn_exif(img_path)
        if not self._warned_void:
            self._warn_voided(raw, mask_path)
        return Sample(image, self._lut[raw], img_path.stem)

    def _warn_exif(self, img_path: Path) -> None:
        """Say once when an image carries an EXIF orientation: it is read turned, as shown, and its mask must be drawn
        on the picture as shown. A mirrored or upside-down photo keeps its size, so a mask drawn on the stored pixels
        trained silently against a turned picture (an audit: 2.5 % of its labels right)."""
        self._exif_checks += 1
        turn = exif_orientation(img_path)
        if turn != 1:
            self._exif_checks = 16
            log.warning("%s carries an EXIF orientation (%d: %s when shown): edgeseg reads it as shown, so its mask "
                        "%s must be drawn on the picture as shown, not on the stored pixels (re-save such images "
                        "without the tag, e.g. exiftool -Orientation= -n, if the masks follow the stored pixels); said "
                        "once for this dataset", img_path, turn, EXIF_TURNS[turn], self.pairs[0][1].parent)

    def _warn_voided(self, raw: np.ndarray, mask_path: Path) -> None:
        """Say once when a mask holds ids at or above the class count (they become void, as documented): a
        class-name file one line short, or ``num_classes`` too small, silently drops a class otherwise."""
        present = np.bincount(raw.ravel(), minlength=256)[:256] > 0
        if (present & self._stray).any():
            self._warned_void = True
            key = (str(self.masks_dir.resolve()), len(self.classes))
            if key in _WARNED:
                return
            _WARNED.add(key)
            ids = np.flatnonzero(present & self._stray).tolist()
            log.warning("folder dataset %s: mask %s holds class id(s) %s, at or above its %d classes (%s): those "
                        "pixels are void; name every class in classes=FILE (one per line) or raise num_classes if "
                        "they are classes", self.masks_dir, mask_path.name, ", ".join(map(str, ids[:8])),
                        len(self.classes), ", ".join(self.classes[:8]) + (" ..." if len(self.classes) > 8 else ""))


def _listed_stem(line: str) -> str:
    """A list file's line -> the stem it names: its first field (VOC's lines are stems; other lists give file names
    or paths), an image or mask suffix dropped, any other dot kept (``a.v1`` is the stem of ``a.v1.png``)."""
    name = Path(line.split()[0]).name
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES else name


@DATASETS.register("folder")
def _open_folder(args: list[str], options: dict[str, str], split: str) -> FolderDataset:
    check_options("folder", options, ("classes", "void", "num_classes", "list", "reduce_zero_label"))
    if len(args) != 2:
        raise DataError("folder spec takes an images folder and a masks folder", fix="write folder:IMAGES_DIR,MASKS_DIR")
    try:
        void = int(options["void"]) if "void" in options else None
        k = int(options["num_classes"]) if "num_classes" in options else None
    except ValueError as e:
        raise DataError(f"folder dataset: void and num_classes must be integers ({e})") from None
    reduce = options.get("reduce_zero_label", "0").strip().lower()
    if reduce not in ("0", "1", "true", "false", "yes", "no"):
        raise DataError(f"folder dataset: reduce_zero_label={options['reduce_zero_label']!r} is neither 1 nor 0",
                        fix="reduce_zero_label=1 for ADE20K-style masks (0 void, id k is class k - 1)")
    classes = read_class_names(options["classes"]) if "classes" in options else None
    stems = None
    if "list" in options:  # {split} becomes the split read: Pascal VOC's train.txt / val.txt
        listed = Path(options["list"].replace("{split}", split))
        if not listed.is_file():
            raise DataError(f"folder dataset: list file {listed} not found",
                            fix="one file stem per line (Pascal VOC: ImageSets/Segmentation/train.txt)")
        stems = [_listed_stem(line) for line in read_text(listed, "list file", "one file stem per line").splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        if not stems:
            raise DataError(f"folder dataset: list file {listed} names no file", fix="one file stem per line")
    return FolderDataset(args[0], args[1], classes=classes, num_classes=k, void=void, stems=stems,
                         reduce_zero_label=reduce in ("1", "true", "yes"))
