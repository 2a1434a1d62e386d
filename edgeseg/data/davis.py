"""DAVIS video object segmentation data (Perazzi et al., CVPR 2016; Pont-Tuset et al., arXiv 2017).

::

    ROOT/JPEGImages/480p/SEQ/00000.jpg ...     frames, sorted by name
    ROOT/Annotations/480p/SEQ/00000.png ...    object-id masks (every frame for train/val, the
                                               first only for test-dev)
    ROOT/ImageSets/2017/val.txt                optional: one sequence name per line (DAVIS-2017)
    ROOT/ImageSets/480p/val.txt                optional: "/JPEGImages/480p/SEQ/x.jpg /Annotations/..." (DAVIS-2016)

Masks are read as ``uint8 [H, W]`` object ids, 0 = background, by :func:`read_id_mask`:

* DAVIS-2016: single-object greyscale PNGs holding 0/255. A mask whose values are all in {0, 255}
  becomes 0/1 (the object is id 1).
* DAVIS-2017: palette PNGs whose *palette indices* are the object ids (1..K, 255 = void). OpenCV
  decodes palette PNGs to colours, so the colours are mapped back to indices through the file's
  own ``PLTE`` chunk (no Pillow needed).

Prompts (the first frame's masks a user gives ``edgeseg vos`` / ``edgeseg run --prompt``) are read by
:func:`read_prompt_mask`, which also takes a *colour* PNG, as an image editor saves a drawing: black
(or transparent) is the background and each other flat colour one object (:func:`colour_ids`).

Frames are RGB ``uint8 [H, W, 3]``. ``Davis(root)`` lists the sequences; ``davis["blackswan"]`` is
a :class:`DavisSequence`, iterated as :class:`DavisFrame` (index, name, image, mask or None).
``Davis.from_spec("davis:ROOT[,resolution=480p][,subset=val][,sequences=a+b]")`` opens it from the
one-line spec the CLI takes. DAVIS is frame-sequence data, so it is not a :data:`DATASETS` kind
(that contract is one labelled image per sample).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..structures import ImageShape
from ..structures.palette import default_palette
from .base import DatasetSpec, check_options
from .io import _png_palette, _read_bytes, natural_key, png_palette_indices, read_image, read_label, read_text

MAX_PROMPT_COLOURS = 255
log = logging.getLogger(__name__)


def read_id_mask(path: str | Path, *, binary: bool = True) -> np.ndarray:
    """Read a DAVIS annotation (or a prediction) as ``uint8 [H, W]`` object ids (see the module docstring).
    ``binary=False`` keeps a greyscale 0/255 mask's values as they are (the caller decides what 255 means)."""
    p = Path(path)
    data = _read_bytes(p, DataError, "mask")
    palette = _png_palette(data.tobytes())
    if palette is None:
        ids = read_label(p, kind="object")
        if binary and is_binary_255(ids):
            ids = (ids == 255).astype(np.uint8)  # DAVIS-2016: binary 0/255
        return ids
    return png_palette_indices(data.tobytes(), p)  # the indices themselves (a palette may repeat colours)


def is_binary_255(ids: np.ndarray) -> bool:
    """A DAVIS-2016 mask: only 0 and 255, and some 255."""
    return bool(ids.size) and int(ids.max()) == 255 and not np.any((ids != 0) & (ids != 255))


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]


def _blends(colours: np.ndarray, labels: np.ndarray, tolerance: float = 3.0, candidates: int = 16) -> list[tuple[int, int, int]]:
    """The colours that are a mix of two more frequent ones (black included) and lie where those two meet:
    the smoothed edges an image editor draws (anti-aliasing), as ``(colour, a, b)`` keys, the most
    frequent first. ``colours``: sorted keys, 0 = black; ``labels``: ``[H, W]`` indices into them. A
    colour c is a mix of a and b when ``c = b + t (a - b)`` for ``0.04 < t < 0.96``, each channel within
    ``tolerance``, and at least half its pixels have both a and b within 2 pixels; a and b are black or
    one of the ``candidates`` most frequent colours."""
    import cv2

    counts = np.bincount(labels.ravel(), minlength=len(colours))
    rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], 1).astype(np.float64)
    by_count = [int(i) for i in np.argsort(-counts, kind="stable") if colours[i] != 0][:candidates]
    pool = ([int(np.flatnonzero(colours == 0)[0])] if (colours == 0).any() else []) + by_count
    near: dict[int, np.ndarray] = {}

    def close_to(k: int) -> np.ndarray:
        if k not in near:
            near[k] = cv2.dilate((labels == k).view(np.uint8), np.ones((5, 5), np.uint8)) > 0
        return near[k]

    found = []
    for i in range(len(colours)):
        pairs = [(a, b) for ai, a in enumerate(pool) for b in pool[ai + 1:]
                 if colours[i] != 0 and i not in (a, b) and min(counts[a], counts[b]) > counts[i]]
        for a, b in pairs:
            d = rgb[a] - rgb[b]
            t = float(np.dot(rgb[i] - rgb[b], d) / np.dot(d, d))
            if not (0.04 < t < 0.96 and np.abs(rgb[b] + t * d - rgb[i]).max() <= tolerance):
                continue
            where = labels == i
            if np.count_nonzero(where & close_to(a) & close_to(b)) * 2 >= counts[i]:
                found.append((int(counts[i]), int(colours[i]), int(colours[a]), int(colours[b])))
                break
    return [f[1:] for f in sorted(found, reverse=True)]


def colour_ids(rgb: np.ndarray, what: str = "prompt") -> np.ndarray:
    """A colour-coded mask ``uint8 [H, W, 3]`` RGB -> ``uint8 [H, W]`` object ids, 0 = black.

    When every other colour is one of DAVIS's palette (the PASCAL VOC colours: a DAVIS annotation
    saved as RGB), an object's id is its colour's palette index; otherwise ids 1..K follow the order
    in which the colours first appear (row by row). The mapping is logged. More than 255 colours
    (a photo) is a :class:`DataError`, and so are free colours of which some are mixes of two others
    (black included): a drawing with smoothed (anti-aliased) edges, whose edge colours would each
    become a small object.
    """
    keys = _colour_keys(rgb).ravel()
    colours, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    objects = colours != 0
    if int(objects.sum()) > MAX_PROMPT_COLOURS:
        raise DataError(f"{what} holds {int(objects.sum())} colours, more than {MAX_PROMPT_COLOURS} objects",
                        fix="draw each object in one flat colour without smoothed (anti-aliased) edges, on black, "
                            "or save object ids (0 = background, 1..K) as a single-channel PNG")
    davis = _colour_keys(default_palette(256))
    index = np.searchsorted(np.sort(davis), colours)
    order = np.argsort(davis)
    in_palette = np.isin(colours, davis)
    ids = np.zeros(len(colours), np.uint8)
    if in_palette[objects].all():
        ids[objects] = order[index[objects]]
        how = "DAVIS palette"
    else:
        mixed = _blends(colours, inverse.reshape(rgb.shape[:2]))
        if mixed:
            c, a, b = mixed[0]
            raise DataError(
                f"{what} looks drawn with smoothed (anti-aliased) edges: {len(mixed)} of its {int(objects.sum())} colours "
                f"are mixes of two others (e.g. #{c:06x} between #{a:06x} and #{b:06x}), and each would become an object",
                fix="draw each object in one flat colour with anti-aliasing (smoothing) off, on black, or save object ids "
                    "(0 = background, 1..K) as a single-channel PNG")
        rank = np.argsort(np.argsort(first[objects], kind="stable"), kind="stable")
        ids[objects] = rank + 1
        how = "order of first appearance"
    log.info("%s: colours -> object ids (%s): %s", what, how, ", ".join(
        f"{int(i)} = #{int(c):06x}" for i, c in sorted(zip(ids[objects], colours[objects]))))
    return ids[inverse].reshape(rgb.shape[:2])


def read_prompt_mask(path: str | Path) -> np.ndarray:
    """A prompt PNG -> ``uint8 [H, W]`` object ids: what :func:`read_id_mask` reads (id maps, DAVIS
    palette PNGs, 0/255 masks) and colour-coded masks (:func:`colour_ids`; fully transparent pixels
    of an RGBA image are background)."""
    import cv2

    p = Path(path)
    data = _read_bytes(p, DataError, "prompt")
    if data[:3].tobytes() == b"\xff\xd8\xff":
        raise DataError(f"prompt {p} is a JPEG: its lossy compression changes pixel values, so the object ids are lost",
                        fix="save the mask as a PNG (0 background, 1..K objects, or 0/255 for one object)")
    if _png_palette(data.tobytes()) is not None:
        return read_id_mask(p)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"cannot decode prompt {p}: not an image or a corrupt file",
                        fix="give a PNG of object ids (0 background, 1..K objects, or 0/255 for one object)")
    if img.ndim == 3 and img.shape[2] in (3, 4) and img.dtype == np.uint8:
        rgb = np.ascontiguousarray(img[..., 2::-1])
        if img.shape[2] == 4:
            rgb[img[..., 3] == 0] = 0
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            return colour_ids(rgb, f"prompt {p}")
    ids = read_id_mask(p)
    _refuse_soft_edges(ids, p)
    return ids


def _refuse_soft_edges(ids: np.ndarray, path: Path) -> None:
    """A grey prompt mostly white (255) with grey levels in 128..254 beside it is a 0/255 mask with smoothed
    edges, not an id map whose 255 is DAVIS's void (void is a thin band around objects): read as ids, the
    object would vanish as void and its edge pixels would become objects."""
    counts = np.bincount(ids.ravel(), minlength=256)
    white, grey = int(counts[255]), int(counts[1:255].sum())
    if white and counts[128:255].any() and white >= grey:
        levels = int(np.count_nonzero(counts[1:255]))
        raise DataError(f"prompt {path} looks like a 0/255 mask with smoothed (anti-aliased) edges: {levels} grey "
                        "level(s) beside white, where an id map holds object ids 1..K and 255 only as a thin void band",
                        fix="save the mask without smoothing (only 0 and 255, or object ids 0..K)")


@dataclass(frozen=True)
class DavisFrame:
    """One frame of a sequence: ``image`` RGB ``uint8 [H, W, 3]``; ``mask`` ``uint8 [H, W]`` ids or None."""

    index: int
    name: str
    image: np.ndarray
    mask: np.ndarray | None


class DavisSequence:
    """The frames and annotations of one sequence (paths only; files are read when iterated)."""

    def __init__(self, name: str, frames: list[Path], masks: dict[str, Path]):
        self.name = name
        self.frame_paths = frames
        self.mask_paths = masks  # frame stem -> annotation path
        if not frames:
            raise DataError(f"DAVIS sequence {name!r} has no frames", fix="check JPEGImages/<resolution>/<sequence>/")

    def __len__(self) -> int:
        return len(self.frame_paths)

    def __repr__(self) -> str:
        return f"DavisSequence({self.name!r}, frames={len(self)}, annotated={len(self.mask_paths)})"

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frame_paths]

    def read_mask(self, index: int) -> np.ndarray | None:
        """Object ids of frame ``index``, or None when that frame has no annotation."""
        path = self.mask_paths.get(self.frame_paths[index].stem)
        return None if path is None else read_id_mask(path)

    def prompt(self) -> np.ndarray:
        """The first frame's annotation (the semi-supervised prompt)."""
        m = self.read_mask(0)
        if m is None:
            raise DataError(f"DAVIS sequence {self.name!r}: the first frame {self.frame_paths[0].name} has no annotation")
        return m

    @property
    def num_objects(self) -> int:
        """Objects of the sequence: the largest id of the first annotation (255, void, excluded)."""
        m = self.prompt()
        return int(np.where(m == 255, 0, m).max())

    def masks(self) -> list[np.ndarray]:
        """Every frame's annotation (a DataError when one is missing)."""
        out = []
        for i in range(len(self)):
            m = self.read_mask(i)
            if m is None:
                raise DataError(f"DAVIS sequence {self.name!r}: frame {self.frame_paths[i].name} has no annotation",
                                fix="score only sequences annotated on every frame (train/val)")
            out.append(m)
        return out

    def frames(self) -> Iterator[DavisFrame]:
        """Frames in order with their annotations; a mask whose size differs from its frame is a DataError."""
        shape = None
        for i, path in enumerate(self.frame_paths):
            img = read_image(path)
            mask = self.read_mask(i)
            if mask is not None and mask.shape != img.shape[:2]:
                raise DataError(
                    f"DAVIS sequence {self.name!r}: mask {self.mask_paths[path.stem].name} is {_wxh(mask.shape)} "
                    f"but frame {path.name} is {_wxh(img.shape)}", fix="use annotations of the same resolution as the frames")
            if shape is not None and img.shape != shape:
                raise DataError(f"DAVIS sequence {self.name!r}: frame {path.name} is {_wxh(img.shape)}, "
                                f"earlier ones {_wxh(shape)}")
            shape = img.shape
            yield DavisFrame(i, path.stem, img, mask)

    def __iter__(self) -> Iterator[DavisFrame]:
        return self.frames()

    @property
    def shape(self) -> ImageShape:
        return ImageShape.of(read_image(self.frame_paths[0]))


def _wxh(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


class Davis:
    """A DAVIS root: ``Davis(root, resolution="480p", subset=None, sequences=None)``.

    subset: read the sequence names from ``ImageSets/2017/{subset}.txt`` (or the DAVIS-2016
    ``ImageSets/{resolution}/{subset}.txt``); without it, every folder under ``JPEGImages/{resolution}``.
    sequences: keep only these names (in this order).
    """

    def __init__(self, root: str | Path, resolution: str = "480p", subset: str | None = None,
                 sequences: list[str] | tuple[str, ...] | None = None):
        self.root = Path(root)
        self.resolution = resolution
        if not self.root.is_dir():
            raise DataError(f"DAVIS root {self.root} is not a directory",
                            fix="pass davis:PATH/TO/DAVIS (it holds JPEGImages/ and Annotations/)")
        self.image_dir = self.root / "JPEGImages" / resolution
        self.mask_dir = self.root / "Annotations" / resolution
        if not self.image_dir.is_dir():
            have = sorted(p.name for p in (self.root / "JPEGImages").iterdir()) if (self.root / "JPEGImages").is_dir() else []
            raise DataError(f"DAVIS root {self.root} has no JPEGImages/{resolution}/",
                            fix=f"resolutions found: {', '.join(have)}" if have else "is this a DAVIS root?")
        names = self._subset_names(subset) if subset else sorted(p.name for p in self.image_dir.iterdir() if p.is_dir())
        if sequences:
            unknown = [s for s in sequences if not (self.image_dir / s).is_dir()]
            if unknown:
                raise DataError(f"DAVIS root {self.root}: no sequence {', '.join(map(repr, unknown))}",
                                fix=f"known: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
            names = list(sequences)
        if not names:
            raise DataError(f"DAVIS root {self.root} holds no sequences under JPEGImages/{resolution}/")
        self.sequence_names = names

    def _subset_names(self, subset: str) -> list[str]:
        list17 = self.root / "ImageSets" / "2017" / f"{subset}.txt"
        list16 = self.root / "ImageSets" / self.resolution / f"{subset}.txt"
        if list17.is_file():
            return [ln.strip() for ln in read_text(list17, "DAVIS subset list").splitlines() if ln.strip()]
        if list16.is_file():
            names: list[str] = []
            for ln in read_text(list16, "DAVIS subset list").splitlines():
                parts = Path(ln.split()[0]).parts if ln.strip() else ()
                if len(parts) >= 2 and parts[-2] not in names:
                    names.append(parts[-2])
            return names
        raise DataError(f"DAVIS subset {subset!r} not found: neither {list17} nor {list16}")

    def __len__(self) -> int:
        return len(self.sequence_names)

    def __iter__(self) -> Iterator[DavisSequence]:
        return (self[n] for n in self.sequence_names)

    def __repr__(self) -> str:
        return f"Davis({str(self.root)!r}, sequences={len(self)})"

    def __getitem__(self, name: str) -> DavisSequence:
        folder = self.image_dir / name
        if not folder.is_dir():
            raise DataError(f"DAVIS root {self.root}: no sequence {name!r}", fix=f"known: {', '.join(self.sequence_names[:20])}")
        frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        mask_folder = self.mask_dir / name
        masks = {p.stem: p for p in sorted(mask_folder.glob("*.png"))} if mask_folder.is_dir() else {}
        if not frames:
            raise DataError(f"DAVIS sequence {name!r} is empty: no frames in {folder}")
        playing = sorted(frames, key=natural_key)
        if playing != frames:  # DAVIS orders frames by name; 1, 10, 2 ... is not the video's order
            i = next(k for k, (a, b) in enumerate(zip(frames, playing)) if a != b)
            raise DataError(f"DAVIS sequence {name!r}: frame names are not zero-padded, so name order is not playing "
                            f"order ({frames[i].name} sorts before {playing[i].name})",
                            fix="zero-pad the frame and annotation names (00000.jpg, 00001.jpg, ...), as DAVIS does")
        return DavisSequence(name, frames, masks)

    @classmethod
    def from_spec(cls, spec: str) -> "Davis":
        """``davis:ROOT[,resolution=480p][,subset=val][,sequences=a+b+c]``; ``davis:`` alone opens the data
        folder's ``davis2016/``."""
        parsed = DatasetSpec.parse(spec)
        if parsed.kind != "davis":
            raise DataError(f"{spec!r} is not a DAVIS spec", fix="write davis:PATH/TO/DAVIS")
        opts = dict(parsed.options)
        check_options("davis", opts, ("resolution", "subset", "sequences"))
        if len(parsed.args) > 1:
            raise DataError(f"davis spec {spec!r}: one root expected, got {len(parsed.args)}")
        root = parsed.args[0] if parsed.args else _default_root()
        seqs = [s for s in opts.get("sequences", "").split("+") if s] or None
        return cls(root, resolution=opts.get("resolution", "480p"), subset=opts.get("subset"), sequences=seqs)


def _default_root() -> Path:
    from ..paths import data_root

    root = data_root()
    if root is None or not (root / "davis2016").is_dir():
        raise DataError("davis: without a root needs the data folder's davis2016/", fix="write davis:PATH/TO/DAVIS")
    return root / "davis2016"
