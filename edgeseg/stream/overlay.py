"""Overlay rendering: results drawn onto the frame (RGB ``uint8 [H, W, 3]``), a copy each time.

* semantic: the class colour alpha-blended over every pixel (``out = (1 - a) * image + a * colour``), or over the
  pixels of some classes only (``Renderer(only=...)``: ``--classes`` of a semantic bundle, jetson-inference's
  ``--ignore-class`` the other way round);
* instance: each mask blended in its class colour, its contour, box and ``class score`` label;
* panoptic: stuff segments in their class colour, thing segments in a shade of it, contours between;
* a prompt's propagated objects: each in its object colour (a palette of its own), outlined; with a
  bundle's result (``PromptedResult``) drawn on top of it;
* a heads-up line (fps, latency) and a legend of the classes present.

One renderer per result type in :data:`RENDERERS`; :class:`Renderer` dispatches on the type.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from .._registry import Registry
from ..errors import InputError, StreamError
from ..structures import ImageShape, InstanceResult, PanopticResult, PromptedResult, SemanticResult, TrackResult
from ..structures.palette import check_palette, colorize, default_palette, lookup_colours
from ..structures.results import label_counts

RENDERERS: Registry[Callable[..., np.ndarray]] = Registry("overlay renderer", error=StreamError)
_FONT_SCALE = 0.45


def _lut(palette: np.ndarray, void=(0, 0, 0)) -> np.ndarray:
    """``uint8 [256, 3]``: the colour of every uint8 label (``void`` beyond the palette). Built once per
    palette by :class:`Renderer`, not per frame."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = void
    lut[: min(256, len(palette))] = palette[:256]
    lut.setflags(write=False)
    return lut


def blend(image: np.ndarray, colour: np.ndarray, alpha: float, where: np.ndarray | None = None,
          into_colour: bool = False) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colour`` (rounded), everywhere or only where ``where`` is true. ``into_colour``:
    ``colour`` is the caller's own scratch, mixed in place (one frame's worth of memory less: a large photo's)."""
    import cv2

    mixed = cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0, **({"dst": colour} if into_colour else {}))
    if where is None:
        return mixed
    # cv2.copyTo with a uint8 mask: ~100x faster than boolean indexing of [H, W, 3] arrays
    return cv2.copyTo(mixed, np.ascontiguousarray(where, dtype=bool).view(np.uint8), image.copy())


@RENDERERS.register("SemanticResult")
def render_semantic(image: np.ndarray, result: SemanticResult, palette: np.ndarray, alpha: float,
                    lut: np.ndarray | None = None, only: tuple[int, ...] | None = None, **_: Any) -> np.ndarray:
    """``lut``: :func:`_lut` of ``palette``, when the caller keeps one (the :class:`Renderer` does); ``only``: the
    classes drawn (the other pixels keep the image), ``None`` every class."""
    labels = result.labels
    if labels.shape != image.shape[:2]:
        raise StreamError(f"semantic labels {list(labels.shape)} do not match the frame {list(image.shape[:2])}")
    if labels.dtype == np.uint8:
        colour = lookup_colours(_lut(palette) if lut is None else lut, labels)
    else:  # void beyond the palette, as uint8 labels (an ignore index of 255 or -1 drew in a class's colour)
        colour = colorize(labels, palette)
    return blend(image, colour, alpha, None if only is None else drawn_pixels(labels, only), into_colour=True)


def drawn_pixels(labels: np.ndarray, only: tuple[int, ...]) -> np.ndarray:
    """``bool [H, W]``: the pixels whose class is in ``only`` (a table lookup for uint8 labels)."""
    if labels.dtype == np.uint8:
        table = np.zeros(256, bool)
        table[[c for c in only if 0 <= c < 256]] = True
        return table[labels]
    return np.isin(labels, only)


def _text(img: np.ndarray, text: str, org: tuple[int, int], colour=(255, 255, 255)) -> None:
    import cv2

    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, 1)
    x, y = org
    cv2.rectangle(img, (x, y - h - 3), (x + w + 4, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x + 2, y - 1), cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, colour, 1, cv2.LINE_AA)


def _mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _draw_masks(out: np.ndarray, masks: np.ndarray, colours: np.ndarray, alpha: float,
                bounds=None) -> np.ndarray:
    """Blend each mask's colour and outline it, touching only the mask's bounds (``bounds(i)``
    -> ``(x0, y0, x1, y1)``, e.g. ``InstanceResult.mask_bounds``; else computed): a frame with 100
    small instances costs what they cover, not 100 full-frame blends."""
    def crops():
        for i, mask in enumerate(masks):
            c0, r0, c1, r1 = bounds(i) if bounds is not None else _mask_bounds(mask)
            yield c0, r0, c1, r1, mask[r0:r1, c0:c1]

    return _draw_crops(out, crops(), colours, alpha)


def _draw_crops(out: np.ndarray, crops, colours: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`_draw_masks` from masks given as crops: ``(x0, y0, x1, y1, crop)`` per mask, ``crop``
    the mask inside those bounds (``InstanceResult.iter_mask_crops``), in order (later on top)."""
    import cv2

    out = out.copy() if not out.flags.writeable else out
    for (c0, r0, c1, r1, m), c in zip(crops, colours):
        if r1 <= r0 or c1 <= c0:
            continue
        if not m.any():
            continue
        roi = out[r0:r1, c0:c1]
        bgr = tuple(int(v) for v in c)
        colour = np.empty_like(roi)  # filled by cv2 (4x faster than np.tile, the same pixels)
        cv2.rectangle(colour, (0, 0), (roi.shape[1], roi.shape[0]), bgr, -1)
        mixed = cv2.addWeighted(roi, 1.0 - alpha, colour, alpha, 0.0)
        m8 = np.ascontiguousarray(m).view(np.uint8)
        done = cv2.copyTo(mixed, m8, roi)  # in place where the mask is: as np.copyto(where=...), several times faster
        if done is not roi:
            roi[...] = done
        contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(int(c0), int(r0)))
        cv2.drawContours(out, contours, -1, bgr, 2)
    return out


def instance_colours(palette: np.ndarray, classes: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """The class colour of each instance, shaded per instance (by track id when there is one) so that
    neighbours of one class stay apart, deterministically."""
    if not len(classes):
        return np.zeros((0, 3), np.uint8)
    base = np.asarray(palette, np.int32)[np.clip(classes, 0, len(palette) - 1)]
    k = np.arange(len(classes)) if ids is None else np.asarray(ids, np.int64)
    return np.clip(base + ((k * 37 + 30) % 61 - 30)[:, None], 0, 255).astype(np.uint8)  # instance 0: the class colour


@RENDERERS.register("InstanceResult")
def render_instance(image: np.ndarray, result: InstanceResult, palette: np.ndarray, alpha: float,
                    classes: tuple[str, ...] = (), **_: Any) -> np.ndarray:
    import cv2

    colours = instance_colours(palette, result.classes, result.track_ids)
    out = image.copy()
    if result.has_masks:  # from the masks' crops: never N x H x W
        out = _draw_crops(out, result.iter_mask_crops(), colours, alpha)
    names = result.class_names or classes
    for i, (box, cls, score, c) in enumerate(zip(result.boxes, result.classes, result.scores, colours)):
        if not np.isfinite(box).all():  # a user's NaN box: nothing to draw (int(nan) raised)
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in np.clip(box, -(1 << 15), 1 << 15))  # OpenCV's coordinates are int
        cv2.rectangle(out, (x1, y1), (x2, y2), tuple(int(v) for v in c), 1)
        name = names[int(cls)] if 0 <= int(cls) < len(names) else str(int(cls))
        tid = f"#{int(result.track_ids[i])} " if result.track_ids is not None and result.track_ids[i] >= 0 else ""
        _text(out, f"{tid}{name} {float(score):.2f}", (x1, max(12, y1)))
    return out


@RENDERERS.register("PanopticResult")
def render_panoptic(image: np.ndarray, result: PanopticResult, palette: np.ndarray, alpha: float, **_: Any) -> np.ndarray:
    import cv2

    ids = result.segment_ids
    shown: dict[int, int] = {}  # a renumbered segment's own id, for its label
    if int(ids.min(initial=0)) < 0 or int(ids.max(initial=0)) >= 1 << 20:  # void below 0; ids up to 2**40 (a table
        segments = {s.id: s for s in result.segments}  # of every id up to the largest asked for terabytes): renumbered
        present = np.unique(ids)
        keep = [int(v) for v in present if int(v) in segments]
        table = np.zeros(len(present), np.int64)
        table[np.searchsorted(present, keep)] = np.arange(1, len(keep) + 1)
        ids = table[np.searchsorted(present, ids)]
        result = replace(result, segment_ids=ids, segments=tuple(replace(segments[v], id=k)
                                                                 for k, v in enumerate(keep, start=1)))
        shown = dict(enumerate(keep, start=1))
    lut = np.zeros((int(ids.max(initial=0)) + 1, 3), np.uint8)
    pal = np.asarray(palette, np.int32)
    things = []
    for s in result.segments:
        if s.id >= len(lut):
            continue
        c = pal[min(max(result.class_index(s.category_id), 0), len(pal) - 1)]
        if s.isthing:  # shade instances of one class apart by id: stable across frames with --track
            c = np.clip(c + ((s.id * 37) % 61 - 30), 0, 255)
            things.append(s)
        lut[s.id] = c
    out = blend(image, lookup_colours(lut, ids), alpha, ids > 0, into_colour=True)
    edges = np.zeros(ids.shape, np.uint8)  # both sides of every change between 4-neighbours
    dx, dy = ids[:, 1:] != ids[:, :-1], ids[1:, :] != ids[:-1, :]
    edges[:, :-1] |= dx
    edges[:, 1:] |= dx
    edges[:-1, :] |= dy
    edges[1:, :] |= dy
    cv2.add(out, (255, 255, 255, 0), dst=out, mask=edges)  # saturates: white outlines
    if things:  # class and id near each thing segment's first pixel (raster order, on a 4x coarser grid:
        coarse = ids[::4, ::4]  # a label needs no exact pixel)
        where = first_pixels(coarse)
        w = coarse.shape[1]
        for s in things:
            if s.id in where:
                y, x = divmod(where[s.id], w)
                _text(out, f"{result.class_name(s.category_id)} {shown.get(s.id, s.id)}", (4 * x, max(12, 4 * y + 12)))
    return out


def first_pixels(ids: np.ndarray) -> dict[int, int]:
    """Each id's first flat index in raster order: the starts of runs of equal ids, then the first run of each
    (a sort of the run starts only, not of every pixel: 0.94 -> 0.12 ms for a 1080p map's 4x coarser grid; an
    outline by OpenCV's dilate and erode instead of the shifted compares was tried: equal at 1080p, 1.8x slower at
    4K, session 54)."""
    from ..structures.coco_panoptic import map_runs

    flat = np.ascontiguousarray(ids).ravel()
    starts, _ = map_runs(flat)
    if not starts.size:
        return {}
    present, first = np.unique(flat[starts], return_index=True)
    return dict(zip(present.tolist(), starts[first].tolist()))


@RENDERERS.register("TrackResult")
def render_track(image: np.ndarray, result: TrackResult, palette: np.ndarray, alpha: float, **_: Any) -> np.ndarray:
    colours = np.asarray(palette, np.uint8)[np.asarray(result.object_ids) % max(1, len(palette))] \
        if len(result.object_ids) else np.zeros((0, 3), np.uint8)
    return _draw_masks(image.copy(), result.masks, colours, alpha)


OBJECT_PALETTE = default_palette(256)  # a prompt's objects over a bundle's result: not the class colours


@RENDERERS.register("PromptedResult")
def render_prompted(image: np.ndarray, result: PromptedResult, palette: np.ndarray, alpha: float, **kw: Any) -> np.ndarray:
    out = image if result.result is None else \
        RENDERERS.get(type(result.result).__name__)(image, result.result, palette=palette, alpha=alpha, **kw)
    return render_track(out, result.objects, OBJECT_PALETTE, alpha)


def present_classes(result: Any, only: tuple[int, ...] | None = None) -> list[int]:
    """The classes a result shows, for the legend; ``only`` limits a semantic result's (as it is drawn)."""
    if isinstance(result, PromptedResult):
        return [] if result.result is None else present_classes(result.result, only)
    if isinstance(result, SemanticResult):
        labels = result.labels
        if labels.dtype == np.uint8 or int(labels.max(initial=0)) < 1 << 16:  # every frame of a stream's legend
            present = np.flatnonzero(label_counts(labels, minlength=1))
        else:  # wider labels: bincount made a table up to the largest (2**31 - 1: 8 GB)
            present = np.unique(labels)
        return [int(i) for i in present if only is None or int(i) in only]
    if isinstance(result, InstanceResult):
        return sorted({int(c) for c in result.classes})
    if isinstance(result, PanopticResult):  # class indices, as the legend's names and colours (not category ids)
        return sorted({result.class_index(s.category_id) for s in result.segments} - {-1})
    return []


def _check_size(result: Any, image: np.ndarray) -> None:
    """A :class:`StreamError` when ``result`` describes another image size than ``image`` has (an instance result
    drew in a corner of a larger frame, a panoptic one raised OpenCV's 'inputs not broadcast-compatible')."""
    for part in (result.result, result.objects) if isinstance(result, PromptedResult) else (result,):
        shape = part.image_shape if isinstance(part, InstanceResult) else getattr(part, "shape", None)
        if part is None or not isinstance(shape, ImageShape):
            continue
        if (shape.height, shape.width) != image.shape[:2]:
            raise StreamError(f"{type(part).__name__} of an image {shape.height}x{shape.width} (HxW) does not match the "
                              f"frame it is drawn on, {image.shape[0]}x{image.shape[1]}",
                              fix="draw a result on the image it was predicted from (results are at the input's size)")


@dataclass
class Renderer:
    """Draws any result type on a frame. ``alpha`` is the overlay opacity; ``legend``/``hud`` toggle the
    class legend and the fps/latency line; ``only``: a semantic result's classes drawn (and in the legend), the
    other pixels left as the image (``None``: every class)."""

    palette: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    alpha: float = 0.5
    legend: bool = True
    hud: bool = True
    only: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.palette is None:
            self.palette = default_palette(max(1, len(self.classes) or 256))
        a = self.alpha
        if not (isinstance(a, numbers.Real) and not isinstance(a, bool) and math.isfinite(a) and 0 <= a <= 1):
            raise InputError(f"Renderer alpha must be a number from 0 (no overlay) to 1 (opaque), got {a!r}",
                             fix="e.g. Renderer(alpha=0.5)")  # nan drew a white frame, 2 inverted colours
        self._lut = _lut(self.palette)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "palette" and value is not None:  # checked, and a new palette: a new table
            if not np.size(value):  # a manifest without colours: the default ones, as for None
                value = default_palette(max(1, len(self.__dict__.get("classes", ())) or 256))
            value = check_palette(value, "Renderer palette")
            if "_lut" in self.__dict__:
                super().__setattr__("_lut", _lut(value))
        super().__setattr__(name, value)

    def __call__(self, image: np.ndarray, result: Any, hud_text: str | None = None) -> np.ndarray:
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
            from ..predictor import check_image  # the predictor's message and fix (before: OpenCV's putText error)

            check_image(image)
        if result is None:
            out = image.copy()
        else:
            _check_size(result, image)
            fn = RENDERERS.get(type(result).__name__)
            out = fn(image, result, palette=self.palette, alpha=self.alpha, classes=self.classes, lut=self._lut,
                     only=self.only)
        if self.legend and result is not None:
            self._legend(out, present_classes(result, self.only))
        if self.hud and hud_text:
            _text(out, hud_text, (4, 16), (255, 255, 0))
        return out

    def _legend(self, out: np.ndarray, ids: list[int]) -> None:
        import cv2

        y = 36
        for i in ids[:24]:
            if y > out.shape[0] - 4:
                break
            c = tuple(int(v) for v in self.palette[min(i, len(self.palette) - 1)])
            cv2.rectangle(out, (4, y - 10), (16, y + 1), c, -1)
            name = self.classes[i] if i < len(self.classes) else str(i)
            _text(out, name, (18, y + 1))
            y += 15
