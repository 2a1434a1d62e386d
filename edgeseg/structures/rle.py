"""COCO run-length encoding of binary masks, byte-compatible with pycocotools.

A mask ``bool [H, W]`` becomes ``{"size": [H, W], "counts": str}``: run lengths of alternating
0s and 1s in column-major order (starting with 0s), compressed into pycocotools' ASCII form.
Pure numpy and vectorised (no Python loop per run), so the runtime core needs no compiled COCO API
and a JSON-lines sink keeps up with a video stream.

:func:`rle_encode_labels` encodes every class of a label map from **one** column-major pass (the
runs of the label map are the runs of every per-class mask), instead of one full-frame
``labels == c`` pass and one transpose per class.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import InputError

def _runs(mask: np.ndarray) -> np.ndarray:
    """Run lengths (int64) of a 2-D mask in column-major order, starting with a run of 0s."""
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, np.int64)  # pycocotools: one empty run of 0s
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.int64, copy=False)


def _encode_deltas(x: np.ndarray) -> tuple[str, np.ndarray]:
    """The characters of already delta-coded counts ``x`` (int32 or int64), and where each count's
    characters end (``ends``, cumulative): little-endian 5-bit groups, a continuation bit (0x20) on all
    but the last, the last one's bit 4 the sign, each plus 48. One element per output character."""
    # groups needed: the smallest n >= 1 with -2^(5n-1) <= x < 2^(5n-1), i.e. (x or ~x) >> (5n-1) == 0
    n = np.ones(x.shape, np.int64)
    rest = (x ^ (x >> (8 * x.itemsize - 1))) >> 4
    while True:
        more = rest > 0
        if not more.any():
            break
        n += more
        rest >>= 5
    ends = np.cumsum(n)
    step = np.ones(int(ends[-1]), np.int64)  # group index within its count: 0, 1, ..., n-1, 0, ...
    step[0] = 0
    step[ends[:-1]] = 1 - n[:-1]
    group = np.cumsum(step)
    chars = (np.repeat(x, n) >> (5 * group).astype(x.dtype)) & 0x1F
    chars += 48 + 0x20
    chars[ends - 1] -= 0x20  # the last group of each count has no continuation bit
    return chars.astype(np.uint8).tobytes().decode("ascii"), ends


def _counts_to_string(counts: np.ndarray | list[int]) -> str:
    """pycocotools' ``rleToString``: each count (from the fourth on, minus the count two before) as
    little-endian 5-bit groups, a continuation bit (0x20) on all but the last, the last one's bit 4
    the sign, each plus 48. Vectorised: one element per output character, no Python loop per run."""
    x = np.array(counts, dtype=np.int64)
    if x.size == 0:
        return ""
    if x.size > 3:
        x[3:] -= x[1:-2].copy()
    if -(1 << 30) <= x.min() and x.max() < (1 << 30):
        x = x.astype(np.int32)  # half the memory traffic; shifts below stay exact
    return _encode_deltas(x)[0]


def _string_to_counts(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise InputError("corrupt COCO RLE string: it ends inside a number")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_binary(mask: np.ndarray) -> None:
    """A non-bool mask must hold 0 and one value, 1 or 255 (a 0/255 PNG): a label map or probabilities
    would otherwise be encoded as "everything not 0" without a word."""
    on = mask[mask != 0]
    if on.size and not ((on == 1).all() or (on == 255).all()):
        kind = "probabilities" if mask.dtype.kind == "f" else "a label map"
        fix = "threshold it first: rle_encode(mask > 0.5)" if mask.dtype.kind == "f" else \
            "one class: rle_encode(labels == c); every class at once: rle_encode_labels(labels)"
        raise InputError(f"rle_encode takes a binary mask; this {mask.dtype} one holds values like "
                         f"{np.unique(on)[:5].tolist()} (it looks like {kind})", fix=fix)


def rle_encode(mask: np.ndarray, bounds: tuple[int, int, int, int] | None = None) -> dict:
    """``bool [H, W]`` -> COCO compressed RLE ``{"size": [H, W], "counts": str}``.

    ``bounds``: ``(x0, y0, x1, y1)`` end-exclusive pixel bounds known to contain every true pixel
    (``InstanceResult.mask_boxes``): only columns ``x0..x1`` are scanned, the columns left and right
    of them become one run of 0s each (a small object in a large frame costs its columns, not the
    frame). The result is identical to encoding the whole mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"rle_encode takes one [H, W] mask, got shape {list(mask.shape)}")
    if mask.dtype != np.bool_:
        _check_binary(mask)
    h, w = int(mask.shape[0]), int(mask.shape[1])
    if bounds is None:
        return {"size": [h, w], "counts": _counts_to_string(_runs(mask))}
    if len(bounds) != 4:
        raise InputError(f"rle_encode bounds must be (x0, y0, x1, y1), got {bounds!r}")
    x0, x1 = max(0, min(w, int(bounds[0]))), max(0, min(w, int(bounds[2])))
    if x1 <= x0:
        return {"size": [h, w], "counts": _counts_to_string([h * w])}
    runs = _runs(mask[:, x0:x1])
    runs[0] += x0 * h  # the columns before: 0s joining the first run of 0s
    tail = (w - x1) * h
    if tail:
        if len(runs) % 2:  # the last run is of 0s
            runs[-1] += tail
        else:
            runs = np.concatenate((runs, [tail]))
    return {"size": [h, w], "counts": _counts_to_string(runs)}


def label_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The maximal runs of an integer ``[H, W]`` label map in column-major order:
    ``(starts, lengths, values)``, each ``[R]``."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.size and labels.dtype.itemsize in (1, 2, 4) and labels.dtype.kind in "iu":
        import cv2  # a blocked transpose: numpy's strided copy of a 1080p map took 3-4 ms

        view = {1: np.uint8, 2: np.uint16, 4: np.int32}[labels.dtype.itemsize]
        flat = cv2.transpose(np.ascontiguousarray(labels).view(view)).view(labels.dtype).ravel()
    else:
        flat = labels.T.ravel()  # column-major order (the transpose's C order)
    if flat.size == 0:
        z = np.zeros(0, np.int64)
        return z, z, flat[:0]
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [flat.size])))
    return starts, lengths, flat[starts]


def rle_encode_labels(labels: np.ndarray, classes: np.ndarray | None = None) -> dict[int, dict]:
    """``{class id: rle_encode(labels == class id)}`` for every id present in an integer ``[H, W]``
    label map (or for ``classes``; absent ones encode as empty masks), from one column-major pass:
    the 1-runs of class ``c``'s mask are the label runs of value ``c``, its 0-runs the gaps between."""
    return rle_encode_labels_areas(labels, classes)[0]


def rle_encode_labels_areas(labels: np.ndarray, classes: np.ndarray | None = None) -> tuple[dict[int, dict], dict[int, int]]:
    """:func:`rle_encode_labels` and each id's pixel count (the sum of its runs: no sort of the map)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"rle_encode_labels takes an integer [H, W] label map, got {labels.dtype} {list(labels.shape)}")
    size = [int(labels.shape[0]), int(labels.shape[1])]
    total = labels.size
    starts, lengths, values = label_runs(labels)
    order = np.argsort(values, kind="stable")  # runs grouped by class, in position order within each
    sv = values[order]
    ids = np.unique(sv) if classes is None else np.asarray(classes)
    lo, hi = np.searchsorted(sv, ids, "left"), np.searchsorted(sv, ids, "right")
    out: dict[int, dict] = {}
    areas: dict[int, int] = {}
    for c, a, b in zip(ids.tolist(), lo.tolist(), hi.tolist()):
        if a == b:  # absent: one run of 0s
            out[int(c)] = {"size": list(size), "counts": _counts_to_string([total])}
            areas[int(c)] = 0
            continue
        areas[int(c)] = int(lengths[order[a:b]].sum())
        s, n = starts[order[a:b]], lengths[order[a:b]]
        end = int(s[-1] + n[-1])
        counts = np.empty(2 * len(s) + (end < total), np.int64)
        counts[0] = s[0]
        counts[1 : 2 * len(s) : 2] = n  # 1-runs
        counts[2 : 2 * len(s) : 2] = s[1:] - (s[:-1] + n[:-1])  # 0-runs: the gaps between this class's runs
        if end < total:  # pycocotools ends with the last run: no empty trailing run of 0s
            counts[-1] = total - end
        out[int(c)] = {"size": list(size), "counts": _counts_to_string(counts)}
    return out, areas


#: the largest mask :func:`rle_decode` builds (2 GiB as bool, a 46000 x 46000 image): a malformed ``size``
#: must not allocate tens of GiB
MAX_RLE_PIXELS = 1 << 31


def _parse_rle(rle: Any) -> tuple[int, int, list[int]]:
    """``(H, W, runs)`` of a COCO RLE dict, checked (sizes, counts' type, runs summing to H*W), or an
    :class:`InputError` saying what is wrong. Allocates nothing of the mask's size."""
    try:
        size, counts = rle["size"], rle["counts"]
    except (KeyError, TypeError, IndexError) as e:
        raise InputError(f"not a COCO RLE dict (needs 'size' [H, W] and 'counts'): {type(e).__name__} {e}") from None
    if not isinstance(size, (list, tuple, np.ndarray)) or len(size) != 2 or \
            not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in size):
        raise InputError(f"COCO RLE 'size' must be [H, W], two integers >= 0, got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h * w > MAX_RLE_PIXELS:
        raise InputError(f"COCO RLE 'size' {[h, w]} is {h * w:,} pixels; masks of more than {MAX_RLE_PIXELS:,} are refused",
                         fix="check the 'size' field: it is [height, width] of the image the mask belongs to")
    if isinstance(counts, bytes):  # pycocotools gives bytes
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            raise InputError("corrupt COCO RLE: 'counts' bytes are not ASCII") from None
    if isinstance(counts, str):
        runs = _string_to_counts(counts)
    elif isinstance(counts, (list, tuple, np.ndarray)) and all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in counts):
        runs = [int(c) for c in counts]
    else:
        raise InputError(f"COCO RLE 'counts' must be a string (compressed) or a list of integers, got {counts!r:.80}")
    if any(r < 0 for r in runs):
        raise InputError(f"corrupt COCO RLE: a negative run length ({min(runs)})")
    if sum(runs) != h * w:
        raise InputError(f"corrupt COCO RLE: runs sum to {sum(runs)}, expected {h}*{w}={h * w}",
                         fix="'size' is [height, width] of the image the mask was encoded from")
    return h, w, runs


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> ``bool [H, W]``."""
    h, w, runs = _parse_rle(rle)
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T.copy()


def rle_area(rle: dict) -> int:
    """The number of true pixels of a COCO RLE (checked as :func:`rle_decode` does, without decoding it)."""
    return int(sum(_parse_rle(rle)[2][1::2]))


def _counts_to_strings(x: np.ndarray, lengths: np.ndarray) -> list[str]:
    """:func:`_counts_to_string` of many count lists at once: ``x`` their concatenation (int64),
    ``lengths`` how many counts each has (>= 1). One vectorised pass for all of them (the same
    characters as encoding each list on its own)."""
    lengths = np.asarray(lengths, np.int64)
    if not len(lengths):
        return []
    x = np.array(x, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    local = np.arange(len(x), dtype=np.int64) - np.repeat(starts, lengths)  # index within its own list
    delta = np.flatnonzero(local >= 3)
    x[delta] -= x[delta - 2].copy()  # from the fourth count on: minus the count two before (original values)
    text, ends = _encode_deltas(x)
    cut = np.concatenate(([0], ends[np.cumsum(lengths) - 1])).tolist()  # each list's end in characters
    return [text[a:b] for a, b in zip(cut[:-1], cut[1:])]


def rle_encode_crops(crops, size: tuple[int, int]) -> tuple[list[dict], np.ndarray]:
    """COCO RLEs of masks given as crops, without building any ``[H, W]`` mask: ``crops`` yields
    ``(x0, y0, x1, y1, crop)`` with ``crop`` ``bool [y1 - y0, x1 - x0]`` the mask inside those
    end-exclusive bounds (false outside; ``InstanceResult.mask_crop``), ``size`` the image ``(H, W)``.
    Returns ``([{"size": [H, W], "counts": str}, ...], areas int64 [N])``, each RLE identical to
    :func:`rle_encode` of the full mask.

    All masks in one pass: each crop's columns, transposed and padded with a false pixel above and
    below, are laid end to end in one buffer, so every change between neighbours in it is a change
    of one mask's column-major order (at image index ``(x0 + col) * H + y0 + row``); the runs and the
    count strings of all masks come out of a few vectorised operations."""
    h, w = int(size[0]), int(size[1])
    total = h * w
    items = list(crops)
    n = len(items)
    if n == 0:
        return [], np.zeros(0, np.int64)
    geo = np.array([it[:4] for it in items], np.int64).reshape(n, 4)
    x0, y0 = geo[:, 0], geo[:, 1]
    cw, ch = np.maximum(geo[:, 2] - x0, 0), np.maximum(geo[:, 3] - y0, 0)
    hp = ch + 2
    sizes = np.where((cw > 0) & (ch > 0), cw * hp, 0)
    offs = np.concatenate(([0], np.cumsum(sizes)))
    buf = np.zeros(int(offs[-1]) + 1, bool)  # one false pixel more: no change past the end
    areas = np.zeros(n, np.int64)
    for i, (o, s, c, r) in enumerate(zip(offs[:-1].tolist(), sizes.tolist(), cw.tolist(), hp.tolist())):
        if s:
            crop = items[i][4]
            buf[o:o + s].reshape(c, r)[:, 1:-1] = crop.T
    k = np.flatnonzero(buf[1:] != buf[:-1])  # a change between buf[k] and buf[k + 1]
    inst = np.searchsorted(offs, k, side="right") - 1
    col, rp = np.divmod(k - offs[inst], hp[inst])
    pos = (x0[inst] + col) * h + y0[inst] + rp  # the image index of the first pixel after the change
    # a column ending in the last row and the next one starting in the first: no change between them
    dup = np.flatnonzero((pos[1:] == pos[:-1]) & (inst[1:] == inst[:-1]))
    if len(dup):
        keep = np.ones(len(pos), bool)
        keep[dup] = keep[dup + 1] = False
        pos, inst = pos[keep], inst[keep]
    m = np.bincount(inst, minlength=n)  # changes per mask: 0->1 and 1->0 alternate, so m is even
    # area: the 1-runs, from (rise, fall) pairs
    if len(pos):
        areas += np.bincount(inst[1::2], weights=(pos[1::2] - pos[0::2]), minlength=n).astype(np.int64)
    # counts per mask: [p0, p1 - p0, ..., total - p_last], without an empty last run (p_last == total)
    last_full = np.zeros(n, bool)
    if len(pos):
        ends = np.cumsum(m) - 1
        has = m > 0
        last_full[has] = pos[ends[has]] == total
    lengths = m + 1 - last_full
    bounds_len = m + 2
    bstart = np.cumsum(bounds_len) - bounds_len
    bnd = np.empty(int(bounds_len.sum()), np.int64)
    bnd[bstart] = 0
    bnd[bstart + bounds_len - 1] = total
    inner = np.ones(len(bnd), bool)
    inner[bstart] = inner[bstart + bounds_len - 1] = False
    bnd[inner] = pos
    counts = np.diff(bnd)
    valid = np.ones(len(counts), bool)
    valid[(bstart + bounds_len - 1)[:-1]] = False  # the differences across two masks
    valid[(bstart + bounds_len - 2)[last_full]] = False  # an empty last run
    strings = _counts_to_strings(counts[valid], lengths)
    return [{"size": [h, w], "counts": s} for s in strings], areas
