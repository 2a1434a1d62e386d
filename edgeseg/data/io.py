"""Reading images and label masks with errors that name the file and the problem.

``cv2.imread`` returns ``None`` for a missing, unreadable or non-image file; these helpers turn
that into an :class:`~edgeseg.errors.InputError` (images) or :class:`~edgeseg.errors.DataError`
(label masks). Files are read through ``np.fromfile`` + ``cv2.imdecode`` so non-ASCII paths work.
"""
from __future__ import annotations

import functools

import struct
from pathlib import Path

import numpy as np

from .. import _memory
from .._io import atomic_write_bytes
from ..errors import DataError, EdgesegError, InputError
from .._imagefile import image_dimensions, swap_rb

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _read_bytes(path: Path, error: type[EdgesegError], what: str) -> np.ndarray:
    if not path.exists():
        raise error(f"{what} not found: {path}", fix="check the path")
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    if data.size == 0:
        raise error(f"{what} {path} is empty (0 bytes)", fix="the copy or download was cut short: fetch the file again")
    return data


def read_text(path: Path, what: str, fix: str | None = None) -> str:
    """A text file the data readers take (label lists, YOLO labels, class names, data.yaml) as ``str``; a file that
    cannot be read or is not UTF-8 text a :class:`DataError` naming it (``UnicodeDecodeError`` escaped as a
    traceback). A leading BOM is dropped (Windows' Notepad writes one)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path} is not text (the byte at offset {e.start} is not UTF-8)", fix=fix) from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror or e}", fix=fix) from None


def _png_palette(data: bytes) -> np.ndarray | None:
    """``uint8 [N, 3]`` palette of an indexed-colour PNG (colour type 3), else None."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 33 or data[12:16] != b"IHDR" or data[25] != 3:
        return None
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"PLTE":
            return np.frombuffer(data[pos + 8 : pos + 8 + length], np.uint8).reshape(-1, 3)
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def png_palette_indices(data: bytes, path: Path, what: str = "mask") -> np.ndarray:
    """``uint8 [H, W]`` palette indices of an indexed PNG, exactly as Pillow's 'P' mode reads them (a palette
    with repeated colours too): the PNG is decoded with its PLTE chunk swapped for a grey ramp (entry i =
    (i, i, i), CRC recomputed), so the decoded grey level is the index."""
    import struct
    import zlib

    import cv2

    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"PLTE":  # 256 entries whatever the file's count: an index past its
            chunk = b"PLTE" + bytes(v for i in range(256) for v in (i, i, i))  # end (void 255) stays 255, not black
            data = (data[:pos] + struct.pack(">I", 768) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
                    + data[pos + 12 + length:])
            break
        pos += 12 + length
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot decode {what} {path}: not an image or a corrupt file", fix=f"{what}s are PNGs")
    return np.ascontiguousarray(bgr[..., 0])


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (by suffix, any case), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def natural_key(path: Path) -> tuple:
    """Sort key of a frame file: digit runs compare as numbers (``2.png`` before ``10.png``); for
    zero-padded names (DAVIS, CamVid) it is the plain name order."""
    import re

    return tuple((0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name))


def frame_suffixes() -> tuple[str, ...]:
    """The suffixes of a frame folder's files (a stream's, a video's for VOS): :data:`IMAGE_SUFFIXES`, and ``.gif``
    (its first frame) where this OpenCV decodes GIFs (4.12 on; label masks and datasets stay without: a palette
    GIF mask would read as colours, not class ids)."""
    return IMAGE_SUFFIXES + ((".gif",) if _opencv_reads_gif() else ())


@functools.lru_cache(maxsize=None)
def _opencv_reads_gif() -> bool:
    """Whether this OpenCV decodes GIFs (a one-pixel GIF, decoded once per process)."""
    import cv2

    one_pixel = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
    try:
        return cv2.imdecode(np.frombuffer(one_pixel, np.uint8), cv2.IMREAD_COLOR) is not None
    except cv2.error:
        return False


def left_out(folder: str | Path, taken: list[Path]) -> str | None:
    """A note naming the files of ``folder`` that are not in ``taken`` (suffixes that are not images': an AVIF, a
    GIF where frames are stills, a sidecar), hidden files aside; None when there are none. A folder's other images
    were skipped without a word."""
    keep = {p.name for p in taken}
    other = sorted((p.name for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.name not in keep), key=lambda n: natural_key(Path(n)))
    if not other:
        return None
    shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
    return f"{len(other)} file(s) of {folder} left out, not read as images by their suffix: {shown}"


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frame folder in playing order (:func:`natural_key`: frames named ``1.png``,
    ``2.png``, ..., ``10.png`` by a camera or ffmpeg without zero padding play in number order); GIFs too
    (:func:`frame_suffixes`)."""
    suffixes = frame_suffixes()
    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes and p.is_file()), key=natural_key)


def read_image(path: str | Path, *, bytes_per_pixel: float = 0.0) -> np.ndarray:
    """Read a colour image as RGB ``uint8 [H, W, 3]`` (grey and 16-bit images are converted). A large image (16
    megapixels or more) is refused before decoding when the memory left cannot hold its decoding
    (:data:`IMAGE_BYTES_PER_PIXEL`) or ``bytes_per_pixel``, what the caller's work on it takes at least."""
    import cv2

    p = Path(path)
    data = _read_bytes(p, InputError, "image")
    _check_room(p, data, max(IMAGE_BYTES_PER_PIXEL, bytes_per_pixel))
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is not None and data[:8].tobytes() == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[24] == 16:
        _warn_narrow_16bit(p, data)
    if img is None:
        raise InputError(
            f"cannot decode image {p}: not an image or a corrupt file",
            fix=f"give a PNG/JPEG/BMP/TIFF/WebP image ({', '.join(IMAGE_SUFFIXES)})",
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: a copy doubled a large photo's memory


#: memory decoding an image takes at least, a pixel (a 12000x12000 JPEG or PNG: 6.1-6.4 bytes, the file's bytes and
#: OpenCV's BGR image beside the RGB one; peak RSS, session 54). What is done with it takes more: ``read_image``'s
#: ``bytes_per_pixel`` (``edgeseg predict``: the task's and its outputs' least)
IMAGE_BYTES_PER_PIXEL = 6
#: OpenCV's decoders refuse images above this many pixels (its ``CV_IO_MAX_IMAGE_PIXELS`` default) and say nothing
OPENCV_MAX_PIXELS = 1 << 30
#: ... and above this many pixels a side (``CV_IO_MAX_IMAGE_WIDTH``, ``_HEIGHT``); libpng refuses PNGs wider than this
OPENCV_MAX_SIDE = 1 << 20
LIBPNG_MAX_WIDTH = 1_000_000


def _check_room(path: Path, data: np.ndarray, bytes_per_pixel: float) -> None:
    """An :class:`InputError` before decoding an image too large for the memory left (a 12000x12000 photo in a batch
    took 2.46 GB; in a container the kernel killed the whole job) or for OpenCV's decoders (whose refusal read as a
    corrupt file). ``bytes_per_pixel``: the least the image will take, so that nothing that would fit is refused.
    Images whose header this does not read (TIFF) are decoded as they are."""
    import os

    size = image_dimensions(memoryview(data))  # the header only is read (a JPEG's APP segments may run long: ICC)
    if size is None:
        return
    w, h = size
    mpx = w * h / 1e6
    fix = (f"downscale it first (e.g. cv2.resize, or ImageMagick: convert {path.name} -resize 25% small{path.suffix}), "
           "or cut it into tiles")

    def limit(name: str, default: int) -> int:  # OpenCV's own settings of its limits
        env = os.environ.get(name, "").strip()
        return int(env) if env.isdigit() else default

    pixels, side = limit("OPENCV_IO_MAX_IMAGE_PIXELS", OPENCV_MAX_PIXELS), \
        min(limit("OPENCV_IO_MAX_IMAGE_WIDTH", OPENCV_MAX_SIDE), limit("OPENCV_IO_MAX_IMAGE_HEIGHT", OPENCV_MAX_SIDE))
    if w * h > pixels:
        raise InputError(f"image {path} is {w}x{h} ({mpx:,.0f} megapixels): above the {pixels / 1e6:,.0f} megapixels "
                         "OpenCV decodes (OPENCV_IO_MAX_IMAGE_PIXELS)", fix=fix)
    if max(w, h) > side or (bytes(data[:4]) == b"\x89PNG" and w > LIBPNG_MAX_WIDTH):
        raise InputError(f"image {path} is {w}x{h}: wider or taller than OpenCV decodes ({side:,} pixels a side; "
                         f"{LIBPNG_MAX_WIDTH:,} wide for a PNG)", fix=fix)
    short = _memory.shortfall(w * h, bytes_per_pixel)
    if short is not None:
        need, free = short
        raise InputError(f"image {path} is {w}x{h} ({mpx:,.0f} megapixels): it takes at least "
                         f"{_memory.mib(need)} and {_memory.mib(free)} is free (a container's limit included)",
                         fix=fix + "; or run where more memory is free")


#: what each EXIF orientation other than 1 does to the stored pixels when the picture is shown (and read)
EXIF_TURNS = {2: "mirrored", 3: "turned 180 degrees", 4: "flipped upside down", 5: "mirrored and turned",
              6: "turned 90 degrees clockwise", 7: "mirrored and turned", 8: "turned 90 degrees anticlockwise"}


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation of a JPEG (APP1) or PNG (``eXIf``) file, 1 when it has none or cannot be read: the turn
    :func:`read_image` (OpenCV) applies. Reads the file's first 128 KB; standard library only."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(1 << 17)  # JPEG's APP1 is at most 64 KB; PNG's eXIf precedes the pixel data
    except OSError:
        return 1
    tiff = None
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(head) and head[i] == 0xFF:
            marker, size = head[i + 1], struct.unpack(">H", head[i + 2:i + 4])[0]
            if marker == 0xE1 and head[i + 4:i + 10] == b"Exif\x00\x00":
                tiff = head[i + 10:i + 2 + size]
                break
            if marker in (0xDA, 0xD9):  # the picture's data: no metadata after it
                break
            i += 2 + size
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while i + 8 <= len(head):
            size, kind = struct.unpack(">I", head[i:i + 4])[0], head[i + 4:i + 8]
            if kind == b"eXIf":
                tiff = head[i + 8:i + 8 + size]
                break
            if kind in (b"IDAT", b"IEND"):
                break
            i += 12 + size
    if not tiff or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        ifd = struct.unpack(order + "I", tiff[4:8])[0]
        for k in range(struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]):
            entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
            if struct.unpack(order + "H", entry[:2])[0] == 0x0112:
                value = struct.unpack(order + "H", entry[8:10])[0]
                return value if value in EXIF_TURNS else 1
    except struct.error:  # a cut or malformed header: no orientation to apply
        return 1
    return 1


_NARROW_WARNED: set[str] = set()  # folders whose first 16-bit PNG was looked at


def _warn_narrow_16bit(path: Path, data: np.ndarray) -> None:
    """Say once per folder when a 16-bit PNG holds only 12 (or fewer) bits: read as 8 bits by its top byte (OpenCV's
    conversion, as every reader here), a 12-bit camera's picture comes out nearly black (values 0..15)."""
    import cv2

    if str(path.parent) in _NARROW_WARNED:  # looked at once per folder: a second decode of every frame otherwise
        return
    _NARROW_WARNED.add(str(path.parent))
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is not None and raw.dtype == np.uint16 and 0 < int(raw.max()) < 4096:
        import logging

        logging.getLogger(__name__).warning(
            "%s is a 16-bit PNG whose values stop at %d (12-bit data?): it is read as 8 bits from its top byte, nearly "
            "black; scale such images to the 16-bit range (x16) or to 8 bits before (said once for %s)",
            path, int(raw.max()), path.parent)


def mask_size_error(mask_path: Path, mask_hw: tuple[int, ...], img_path: Path, image_hw: tuple[int, ...]) -> DataError:
    """A mask whose size is not its image's; a transposed one names EXIF orientation (OpenCV turns a photo its file
    says is rotated; the mask, a label image, stays as stored)."""
    turned = tuple(mask_hw) == tuple(image_hw)[::-1] and mask_hw[0] != mask_hw[1]
    return DataError(f"mask {mask_path} is {list(mask_hw)} but its image {img_path} is {list(image_hw)}",
                     fix="masks must have the image's height and width" + (
                         "; height and width swapped: the image's file most likely carries an EXIF orientation, which "
                         "the reader applies: re-save the images without it (e.g. exiftool -Orientation= or any "
                         "editor's export), so image and mask agree" if turned else ""))


def read_label(path: str | Path, kind: str = "class") -> np.ndarray:
    """Read a single-channel label mask as ``uint8 [H, W]`` class ids (``kind="object"``: object ids, as a VOS
    mask holds them; the messages say so).

    A 3-channel mask whose channels are equal (grey saved as RGB) is accepted; a colour-coded mask
    is refused (convert it to class ids first). Values above 255 (16-bit masks) are refused. An
    indexed (palette) PNG with colours gives its palette indices, as Pillow, mmseg and torchvision read
    PASCAL VOC's masks (:func:`png_palette_indices`); one whose palette is all grey (what PNG optimisers
    make of a grey mask) gives its grey levels; a JPEG is refused (its compression changes the ids along
    every edge).
    """
    import cv2

    p = Path(path)
    data = _read_bytes(p, DataError, "label mask")
    if data[:3].tobytes() == b"\xff\xd8\xff":  # whatever its suffix: JPEG's lossy compression blurs every edge
        raise DataError(f"label mask {p} is a JPEG: its lossy compression changes the class ids along every edge "
                        "(the scores would be wrong)", fix="save label masks as PNGs of class ids (lossless)")
    palette = _png_palette(data[:1 << 20].tobytes())  # PLTE precedes the pixel data
    grey = palette is not None and bool((palette == palette[:, :1]).all())
    if palette is not None and not grey:  # PASCAL VOC, mmseg, Pillow 'P' mode: the indices are the class ids
        return png_palette_indices(data.tobytes(), p, "label mask")
    lab = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise DataError(f"cannot decode label mask {p}: not an image or a corrupt file", fix="masks are PNGs of class ids")
    if lab.ndim == 3:
        if lab.shape[2] == 4:
            lab = lab[..., :3]
        if not (np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])):
            raise DataError(
                f"{'label' if kind == 'class' else kind} mask {p} is a colour image; masks must hold one {kind} id per "
                "pixel", fix=f"convert colour-coded masks to single-channel (or palette) PNGs of {kind} ids",
            )
        lab = lab[..., 0]
    if lab.dtype != np.uint8:
        if lab.size and (lab.min() < 0 or lab.max() > 255):
            noun = "label" if kind == "class" else kind
            raise DataError(f"{noun} mask {p} has {kind} ids outside 0..255 (max {lab.max()})",
                            fix=f"{noun} masks hold one {kind} id per pixel in 0..254 (255: ignored), saved as 8-bit PNGs"
                            + ("; objects are 1..254, 0 is the background" if kind == "object" else ""))
        lab = lab.astype(np.uint8)
    return np.ascontiguousarray(lab)


def write_label(path: str | Path, labels: np.ndarray, *, sync: bool = True) -> None:
    """Write ``[H, W]`` ids as a single-channel PNG (lossless): 8-bit, or 16-bit for a ``uint16`` map (instance ids)
    or ids above 255 (before, every map was cast to 8 bits: instance 256 became 0, the background). ``sync``: see
    :func:`edgeseg._io.atomic_write_bytes`."""
    import cv2

    p = Path(path)
    arr = np.asarray(labels)
    top = int(arr.max()) if arr.size else 0
    if arr.size and (int(arr.min()) < 0 or top > 65535):
        raise DataError(f"cannot write {p}: ids from {int(arr.min())} to {top} do not fit a PNG of ids (0..65535)")
    wide = arr.dtype == np.uint16 or top > 255
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr, np.uint16 if wide else np.uint8))
    if not ok:  # pragma: no cover - cv2 only fails here on absurd input
        raise DataError(f"cannot encode label mask for {p}")
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, memoryview(buf), sync=sync)  # an interrupted writer leaves the old file or none, never half a PNG


def write_image(path: str | Path, rgb: np.ndarray, *, sync: bool = True) -> None:
    """Write an RGB ``uint8 [H, W, 3]`` image; the format follows the suffix (``sync``: as :func:`write_label`)."""
    import cv2

    p = Path(path)
    if np.ndim(rgb) != 3 or np.shape(rgb)[2] != 3:  # reversing a label map's last axis would mirror it
        raise InputError(f"write_image writes RGB images [H, W, 3]; got shape {list(np.shape(rgb))} for {p}",
                         fix="write a label map with edgeseg.data.io.write_label")
    ok, buf = cv2.imencode(p.suffix or ".png", swap_rb(rgb))
    if not ok:
        raise InputError(f"cannot encode image {p}", fix=f"use one of {', '.join(IMAGE_SUFFIXES)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, memoryview(buf), sync=sync)  # (not a copy of the encoded bytes: a large photo's)
