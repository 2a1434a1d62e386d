"""Result sinks: per-frame label PNGs, JSON lines (COCO RLE masks), and a callback for applications.

JSON lines, one object per frame, flushed per line (a killed process keeps every line written)::

    {"source": "...", "index": 7, "pts_ns": 280000000, "received_ns": 1796719706123456789, "task": "semantic",
     "height": 540, "width": 960, "segments": [{"class_id": 3, "class": "road", "area": 120345, "score": 1.0,
                   "rle": {"size": [540, 960], "counts": "..."}}]}

``pts_ns`` is the source's time of the frame (a file's presentation time; a live source's from its pipeline's start, and
after a reconnect on from the last frame by the time between their arrivals: it never runs backwards);
``received_ns`` the Unix time (UTC, ns) edgeseg received the frame (a live source's when its decoder handed it over,
before the source's own buffer: :data:`~edgeseg.stream.base.RECEIVED`), which lines frames up with other sensors' clocks (session 55: before, no output carried a wall-clock time); ``"discontinuity": true`` marks a
frame after which the source's time does not follow on (a reconnect, a seek, a clock that restarted).

Instances add ``"box": [x1, y1, x2, y2]`` and their score; panoptic segments add ``id`` and
``isthing``; a frame a stage failed on has ``"error"`` and no segments. A bundle run with a prompt
(:class:`~edgeseg.structures.PromptedResult`) adds ``"objects"``: the prompt's objects as
``{"object_id", "score", "area", "rle"}``.

The PNG sink writes panoptic frames as COCO-panoptic: RGB-id PNGs plus ``panoptic.json`` beside them
(``{"annotations": [{"image_id", "file_name", "segments_info"}], "categories": [...]}``, what panopticapi
and ``edgeseg eval`` read as predictions), written at the end from ``panoptic.jsonl``, the same
annotations one line per frame as they come (a killed run keeps them).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..._imagefile import swap_rb
from ..._registry import Registry
from ...errors import EdgesegError, InputError, StreamError
from ...structures import InstanceResult, PanopticResult, PromptedResult, SemanticResult, TrackResult
from ...structures.records import result_record
from ...structures.coco_panoptic import segments_info
from ...structures.frame import Frame
from ..base import DISCONTINUITY, RECEIVED, SINKS, Packet, Sink, refuse_input
from .segments import DIGITS
from ..._io import _special_file, commit_file, temp_name_prefix, writable_file, writable_folder, write_whole

log = logging.getLogger("edgeseg.stream")


def _write_fix(e: OSError, option: str) -> str:
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on that disk, or write {option} to another one"
    return f"check that the path can still be written, or write {option} elsewhere"


def claim_output(path: Path, option: str, *, probe: bool = False) -> int | None:
    """An exclusive ``flock`` on the regular file ``path`` for a writer's life (an open descriptor to close when done;
    created if missing, not truncated), so that a second process writing the same output is refused naming it (two
    ``edgeseg run --sink same.mp4`` wrote one ``.part`` file together: one run failed at its end, the other said
    "wrote" of a file with the first's frame size that did not decode; two ``--json-out`` interleaved broken lines).
    ``probe``: only whether another process holds it now (nothing created; None). A FIFO, a device, a file system
    without locks: not claimed (None)."""
    import fcntl

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
    except FileNotFoundError:
        if probe:
            return None
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY if probe else os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # the writer's own open says why
        return None
    for attempt in range(11):  # a probe of another starting run holds it for a moment: tried for 100 ms
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if probe else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt < 10:
                time.sleep(0.01)
                continue
            os.close(fd)
            raise StreamError(f"{path}: another run is writing it now", fix=f"give this run another path for {option}, "
                              "or wait for the other run to end") from None
        except OSError:  # no locks here
            os.close(fd)
            return None
    if probe:
        os.close(fd)
        return None
    return fd


class _StdoutLines:
    """``--json-out -``: the lines on standard output (file descriptor 1, a copy of it: the CLI sends Python's other
    prints to standard error meanwhile), each line written whole, at once (a reader of the pipe gets each frame's as
    it is done). Session 57: ``-`` was a file named ``-``."""

    def __init__(self) -> None:
        try:
            self._f = os.fdopen(os.dup(1), "wb", buffering=0)
        except OSError as e:
            raise InputError(f"cannot write JSON lines to standard output (--json-out -): {e.strerror or e}",
                             fix="run with standard output open (not closed with >&-), or give --json-out a file "
                                 "name") from None
        self.gone = False  # its reader went (| head): no more lines

    def write(self, text: str) -> None:
        if self.gone:
            return
        data = text.encode("utf-8")
        try:
            while data:
                data = data[self._f.write(data):]
        except BrokenPipeError:  # the reader went (| head -n 5): the run stops, as a pipeline's writer does
            self.gone = True
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()


class _Lines:
    """A file of lines (JSON lines) written line by line, each whole or not at all: a write that fails (a full
    disk) cuts the file back to its last whole line and raises a :class:`StreamError` naming the file and the fix
    (before: the file ended in half a line, and the error named neither). A regular file is claimed
    (:func:`claim_output`) before it is emptied: another process writing it refuses this one. ``append``: the lines
    already there are kept and the new ones follow them, after a last line a kill cut in half is removed."""

    def __init__(self, path: Path, option: str, append: bool = False):
        self.path, self.option = path, option
        fd = claim_output(path, option)
        if fd is None:  # a FIFO, a device, no locks here
            self._f = open(path, "ab" if append else "wb", buffering=0)  # unbuffered: on disk when write() returns
            self._end = 0
            return
        try:
            self._end = _whole_lines_end(fd) if append else 0
            os.ftruncate(fd, self._end)
            os.lseek(fd, self._end, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        self._f = os.fdopen(fd, "r+b", buffering=0)  # closing it releases the claim

    def write(self, text: str) -> None:
        try:
            self._end = write_whole(self._f, text.encode("utf-8"), self._end)
        except OSError as e:
            raise StreamError(f"cannot write {self.path}: {e.strerror or e} (the lines before are kept, each whole)",
                              fix=_write_fix(e, self.option)) from None

    def close(self) -> None:
        self._f.close()


def _whole_lines_end(fd: int, block: int = 1 << 16) -> int:
    """The offset just after the last newline of the open file ``fd`` (0 when it holds none)."""
    pos = os.lseek(fd, 0, os.SEEK_END)
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def _write_whole(path: Path, data: bytes, option: str) -> None:
    """``data`` to ``path`` through a temporary beside it renamed into place (no fsync: one per frame of a stream):
    a full disk leaves no truncated PNG under the frame's name."""
    tmp = path.with_name(f"{temp_name_prefix(path)}{os.getpid()}.tmp")  # a long stem's temporary stays under 255 bytes
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StreamError(f"cannot write {path}: {e.strerror or e} (the frames before it are kept)",
                          fix=_write_fix(e, option)) from None


def frame_record(frame: Frame, result: Any, packet: Packet | None = None) -> dict:
    """The JSON object for one frame (see the module docstring)."""
    d: dict[str, Any] = {"source": frame.source_id, "index": frame.index, "pts_ns": frame.pts_ns,
                         "height": frame.shape.height, "width": frame.shape.width}
    if isinstance(frame.meta.get(RECEIVED), int):
        d["received_ns"] = frame.meta[RECEIVED]
    if frame.meta.get(DISCONTINUITY):
        d["discontinuity"] = True
    if isinstance(frame.meta.get("path"), str):  # a folder of images: which one (the source is the folder)
        d["file"] = frame.meta["path"]
    if result is None:
        d["error"] = packet.error if packet is not None and packet.error else "no result"
        d["segments"] = []
        return d
    d.update(result_record(result))
    return d


@SINKS.register("jsonl")
class JsonLinesSink(Sink):
    """One JSON line per frame (module doc). ``segment_s``: a new file every that many seconds of frames at the
    source's rate (``fps`` when given), ``<stem>.00000.jsonl``, ... each written as ``.part`` and renamed when the
    next begins, as :class:`~edgeseg.stream.sinks.video.Mp4Sink`'s segments (for one source, the same frames in the
    same-numbered files when both start in a fresh folder; several sources' frames are counted together here, per
    source in the MP4s); ``keep_segments``: only the newest that many stay (:mod:`~edgeseg.stream.sinks.segments`).
    ``edgeseg run --json-segments`` (opt-in: ``--segment-s`` alone leaves the JSON lines one file)."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike, segment_s: float | None = None, keep_segments: int | None = None,
                 fps: float | None = None):
        from .segments import Finisher

        self.path = Path(path)
        self._name = os.fspath(path)  # as given: a trailing "/" says a folder was meant
        self._f: Any = None
        self.lines = 0
        self._source: Any = None
        self.segment_s = segment_s or None
        self.keep_segments = keep_segments if self.segment_s else None
        self.fps = fps
        self.segments: list[Any] = []  # with segment_s: every file of the run (Segment), finished or removed
        self._clock: Any = None  # segments.SegmentClock: when the segment being written is full
        self._next_index = 0
        self._finisher = Finisher(keep=self.keep_segments)
        self._opened = False  # the (single) file opened: at the first frame
        self._ready = False  # open() ran: close() then leaves an empty file when no frame came and none was there

    def bind_source(self, source: Any) -> None:
        self._source = source

    def open(self) -> None:
        from .segments import next_free_index

        self._clock = None  # a sink opened again (another run): its segments' grid starts anew
        if self._name == "-":  # standard output: the lines for a pipe (| jq), nothing claimed or replaced
            self._ready = self._opened = True
            self._f = _StdoutLines()
            return
        if self._name.endswith(("/", os.sep)):
            raise InputError(f"cannot write JSON lines to {self._name}: it names a folder; JSON lines go to one file",
                             fix=f"name the file, e.g. {self.path / 'results.jsonl'}")
        writable_file(self.path)
        refuse_input(self.path, self._source, "the JSON lines file", example=f"{self.path.stem}.jsonl")
        self._ready, self._opened = True, False
        if self.segment_s:  # numbered after an earlier run's segments: none is replaced; opened at the first frame
            self._next_index = next_free_index(self.path)
            return
        claim_output(self.path, "the JSON lines (--json-out)", probe=True)  # another run writing it now: refused before any work
        if self.path.is_file() and self.path.stat().st_size:
            log.warning("%s exists: this run replaces its lines at its first frame (an earlier run's results; give "
                        "another path to keep them)", self.path)
        # opened at the first frame: a run that gets none (a source that fails to open or holds no frame) left an
        # earlier run's file emptied; a FIFO or a device now (a reader of the pipe gets its end even without a frame)
        if _special_file(self.path):
            self._first_line()

    def _first_line(self) -> None:
        self._f = self._open(self.path)
        self._opened = True

    def _open(self, path: Path) -> "_Lines":
        try:
            return _Lines(path, "the JSON lines (--json-out)")
        except OSError as e:
            raise InputError(f"cannot write {path}: {e.strerror or e}") from None

    def _begin_segment(self) -> None:
        from .segments import Segment, claim_segment, now_iso, segment_path

        if self._clock is None:
            self._clock = _segment_clock(self.segment_s, self.fps, self._source)
        self._clock.restart()
        self._next_index = claim_segment(self.path, self._next_index)
        final = segment_path(self.path, self._next_index)
        self._next_index += 1
        self.segments.append(Segment(str(final), self.lines, now_iso()))
        self._f = self._open(_part(final))

    def _finishing(self, f: "_Lines", segment: Any) -> Callable[[], None]:
        def finish() -> None:
            f.close()
            os.replace(_part(Path(segment.file)), segment.file)

        return finish

    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        if self.segment_s:
            # a segment holds segment_s seconds of each source (its own time: with several sources interleaved, a
            # count of all frames cut 60 s segments of two cameras at 30 s)
            if self._f is not None and self._clock.full(frame):
                f, self._f = self._f, None
                self._finisher.finish_now(self._finishing(f, self.segments[-1]), self.segments[-1])
            if self._f is None:
                self._begin_segment()
        elif self._f is None:
            self._first_line()
        self._f.write(json.dumps(frame_record(frame, result, packet), separators=(",", ":")) + "\n")
        self.lines += 1
        if self.segment_s:
            self.segments[-1].frames += 1
            self._clock.add(frame)

    @property
    def paths(self) -> list[Path]:
        """The files this sink wrote (with ``segment_s``: the segments it keeps)."""
        if self.segment_s:  # one being written, or whose finish failed, is still its .part
            return [Path(s.file) if s.state == "finished" else _part(Path(s.file)) for s in self.segments
                    if s.state != "removed"]
        return [self.path]

    def segment_records(self) -> list[dict[str, Any]]:
        """With ``segment_s``: every file of the run (``stats_json``'s ``segments``)."""
        return [s.to_dict() for s in self.segments]

    def close(self) -> None:
        f, self._f = self._f, None
        if f is None:
            if self._ready and not self.segment_s and not self._opened:
                self._no_frame()
            return
        if self.segment_s and self.segments:
            self._finisher.finish_now(self._finishing(f, self.segments[-1]), self.segments[-1])
        else:
            f.close()

    def _no_frame(self) -> None:
        """Closed before any frame: an empty file where there was none, an earlier run's file left as it was."""
        self._ready = False
        if self.path.exists():
            if self.path.is_file() and self.path.stat().st_size:
                log.warning("%s: no frame came, so the file is left as it was", self.path)
            return
        with contextlib.suppress(OSError, EdgesegError):
            self._first_line()
            self._f, f = None, self._f
            f.close()


def _segment_clock(segment_s: float, fps: float | None, source: Any) -> Any:
    """The JSON lines' and PNG folders' :class:`~edgeseg.stream.sinks.segments.SegmentClock`: with several sources,
    each one's rate, as each one's own MP4 takes it (a camera that joins late: at its frame)."""
    from ..sources.mux import _name
    from .segments import SegmentClock
    from .video import output_fps

    parts = {_name(s): s for s in getattr(source, "parts", ()) or ()}
    return SegmentClock(segment_s, output_fps(fps, source, 25.0), by_time=not fps,
                        rate_of=(lambda sid: output_fps(fps, parts[sid], 25.0) if sid in parts else None)
                        if len(parts) > 1 else None)


def next_free_folder(directory: Path) -> int:
    """The first segment number after every segment folder (``NNNNN`` or ``NNNNN.part``) already in ``directory``."""
    pattern = re.compile(rf"(\d{{{DIGITS},}})(?:\.part)?")
    try:
        found = [int(m.group(1)) for e in os.scandir(directory) if e.is_dir() and (m := pattern.fullmatch(e.name))]
    except OSError:
        return 0
    return max(found) + 1 if found else 0


def claim_folder(directory: Path, index: int) -> int:
    """The first segment number from ``index`` on whose folder and ``.part`` do not exist, its ``.part`` created, so
    that no other run writes into it (as :func:`~edgeseg.stream.sinks.segments.claim_segment` claims files)."""
    while True:
        final = directory / f"{index:0{DIGITS}d}"
        if not final.exists():
            with contextlib.suppress(FileExistsError):  # (another run's: the next number)
                os.mkdir(final.with_name(f"{final.name}.part"))
                return index
        index += 1


def _remove_folder(path: str) -> None:
    """--keep-segments' removal of a PNG segment's folder."""
    import shutil

    shutil.rmtree(path)


def _part(path: Path) -> Path:
    """A segment's name while it is written (``out.00003.part.jsonl``, as the MP4 segments' ``.part``)."""
    return path.with_name(f"{path.stem}.part{path.suffix}")


LABEL_IMAGES: Registry[Callable[[Any], np.ndarray]] = Registry("label image", error=StreamError)


@LABEL_IMAGES.register("SemanticResult")
def _semantic_png(result: SemanticResult) -> np.ndarray:
    return result.labels.astype(np.uint8 if result.labels.max(initial=0) < 256 else np.uint16)


@LABEL_IMAGES.register("PanopticResult")
def _panoptic_png(result: PanopticResult) -> np.ndarray:
    from ...data.coco_panoptic import id_to_rgb

    return id_to_rgb(result.segment_ids)  # (numpy's byte arithmetic took 19 ms a 1080p frame and 18 bytes a pixel)


def _paint(shape: tuple[int, int], masks, values, bounds) -> np.ndarray:
    out = np.zeros(shape, np.uint16)
    if masks is not None:
        for i, (m, v) in enumerate(zip(masks, values)):
            x0, y0, x1, y1 = bounds(i)
            out[y0:y1, x0:x1][m[y0:y1, x0:x1]] = v
    return out


@LABEL_IMAGES.register("InstanceResult")
def _instance_png(result: InstanceResult) -> np.ndarray:
    """From the masks' crops (``InstanceResult.mask_crop``), later instances on top."""
    out = np.zeros(result.image_shape.hw, np.uint16)
    if result.has_masks:
        for v, (x0, y0, x1, y1, crop) in enumerate(result.iter_mask_crops(), start=1):
            out[y0:y1, x0:x1][crop] = v
    return out


@LABEL_IMAGES.register("TrackResult")
def _track_png(result: TrackResult) -> np.ndarray:
    full = lambda i: (0, 0, result.shape.width, result.shape.height)  # noqa: E731
    return _paint(result.shape.hw, result.masks, np.asarray(result.object_ids), full)


@LABEL_IMAGES.register("PromptedResult")
def _prompted_png(result: PromptedResult) -> np.ndarray:
    """The bundle's payload (the prompt's objects are in the JSON lines); the objects when the bundle failed."""
    return label_image(result.result) if result.result is not None else _track_png(result.objects)


def label_image(result: Any) -> np.ndarray:
    """The PNG payload of a result (:data:`LABEL_IMAGES`, by result type): semantic labels (uint8, or
    uint16 beyond 256 classes); instance index map (0 = none, i + 1 = instance i, uint16, later
    instances on top); panoptic ids as COCO-panoptic RGB (id = R + 256 G + 256^2 B); tracks as object
    ids (uint16); a bundle's result with a prompt's objects, the bundle's payload."""
    return LABEL_IMAGES.get(type(result).__name__)(result)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def source_folder(source_id: str, taken: set[str]) -> str:
    """A folder name for a source's files: ``source_id`` with anything but letters, digits, ``.``,
    ``_`` and ``-`` replaced (``rtsp://cam1/s`` -> ``rtsp_cam1_s``), made unique against ``taken``."""
    base = _UNSAFE.sub("_", source_id).strip("._")[:80] or "source"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


@SINKS.register("png")
class LabelPngSink(Sink):
    """One label PNG per frame with a result (see :func:`label_image`).

    Names: ``<index:06d>.png``, or ``<stem>.png`` for frames read from a folder of images
    (``meta["stem"]``, as ``edgeseg vos`` and DAVIS name masks, so ``edgeseg eval-vos DIR`` scores
    them; a second file of the same stem gets ``<stem>-<index>.png``). Folder: ``DIR``, or with several
    sources (a :class:`~edgeseg.stream.MultiSource`) ``DIR/<source>/`` (:func:`source_folder`), so
    cameras never overwrite each other's frames."""

    name = "png"

    def __init__(self, directory: str | os.PathLike, prefix: str = "", segment_s: float | None = None,
                 keep_segments: int | None = None, fps: float | None = None):
        from .segments import Finisher

        self.directory = Path(directory)
        self.prefix = prefix
        self.written = 0
        self.per_source = False
        self._source: Any = None
        self.folders: dict[str, Path] = {}
        self._names: dict[tuple[Path, str], int] = {}  # (folder, stem) -> the frame index that took it
        self._panoptic: dict[Path, Any] = {}  # folder -> its panoptic.jsonl, open
        self._categories: dict[Path, dict[int, dict]] = {}  # folder -> the categories its segments named
        #: segment_s: one folder a segment, DIR/00000/, DIR/00001/, ... (DIR/NNNNN.part/ while written: renamed, with
        #: its panoptic.json, when the next begins), cut on the MP4s' and JSON lines' grid; keep_segments: the newest
        #: that many folders of this run stay (a days-long run's PNGs no longer fill the disk)
        self.segment_s = segment_s or None
        self.keep_segments = keep_segments if self.segment_s else None
        self.fps = fps
        self.segments: list[Any] = []
        self._clock: Any = None
        self._next_index = 0
        self._segment_dir: Path | None = None  # the .part folder being written
        self._finisher = Finisher(keep=self.keep_segments, remove=_remove_folder)

    def bind_source(self, source: Any) -> None:
        self.per_source = len(getattr(source, "parts", ()) or ()) > 1
        self._source = source

    def open(self) -> None:
        refuse_input(self.directory, self._source, "the label PNG folder")
        writable_folder(self.directory, self.directory)
        self._clock, self._segment_dir = None, None  # a sink opened again (another run): its grid starts anew
        if self.segment_s:  # numbered after an earlier run's folders: none is written into again
            self._next_index = next_free_folder(self.directory)
            return
        earlier = sum(1 for _ in self.directory.glob(f"{self.prefix}*.png")) + \
            sum(1 for _ in self.directory.glob(f"*/{self.prefix}*.png"))
        if earlier:  # a stream replaces the PNGs of the frames it writes; an earlier, longer run's others stay
            log.warning("--png-dir %s already holds %d PNG(s): this run replaces those of the frames it writes, the "
                        "others stay beside them%s (write into an empty folder to keep runs apart)", self.directory,
                        earlier, ", unlisted in the new panoptic.json" if
                        (self.directory / f"{self.prefix}panoptic.json").is_file() else "")

    def _folder(self, source_id: str) -> Path:
        base = self._segment_dir if self._segment_dir is not None else self.directory
        if not self.per_source:
            return base
        folder = self.folders.get(source_id)
        if folder is None or folder.parent != base:  # (a new segment: each source's folder anew in it)
            taken = {f.name for sid, f in self.folders.items() if sid != source_id}
            name = folder.name if folder is not None else source_folder(source_id, taken)
            folder = self.folders[source_id] = base / name
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _cut(self, frame: Frame) -> None:
        """Before ``frame``: finish the segment being written when the grid says it is full, begin one if none is."""
        from .segments import Segment, now_iso

        if self._segment_dir is not None and self._clock.full(frame):
            self._finisher.finish_now(self._finishing(self._segment_dir, self.segments[-1]), self.segments[-1])
            self._segment_dir = None
        if self._segment_dir is not None:
            return
        if self._clock is None:
            self._clock = _segment_clock(self.segment_s, self.fps, self._source)
        self._clock.restart()
        self._next_index = claim_folder(self.directory, self._next_index)
        final = self.directory / f"{self._next_index:0{DIGITS}d}"
        self._next_index += 1
        self._segment_dir = final.with_name(f"{final.name}.part")
        self.segments.append(Segment(str(final), self.written, now_iso()))

    def _finishing(self, part: Path, segment: Any) -> Callable[[], None]:
        def finish() -> None:
            self._close_panoptic([f for f in self._panoptic if f == part or part in f.parents])
            os.replace(part, segment.file)

        return finish

    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        import cv2

        if result is None:
            return
        img = label_image(result)
        if img.ndim == 3:
            img = swap_rb(img)  # RGB -> OpenCV's BGR
        stem = frame.meta.get("stem")
        if self.segment_s:
            self._cut(frame)
        folder = self._folder(frame.source_id)
        if isinstance(stem, str) and stem:  # a folder of files (finite): remember the stems taken
            name, key = stem, (folder, stem)
            if self._names.setdefault(key, frame.index) != frame.index:  # two files, one stem (a.jpg, a.png)
                name = f"{stem}-{frame.index:06d}"
        else:  # cameras and videos: index names, nothing kept per frame
            name = f"{frame.index:06d}"
        path = folder / f"{self.prefix}{name}.png"
        ok, png = cv2.imencode(".png", np.ascontiguousarray(img))
        if not ok:
            raise StreamError(f"cannot encode {path} as PNG ({img.dtype}, {list(img.shape)})")
        _write_whole(path, png.tobytes(), "the PNGs (--png-dir)")
        self.written += 1
        if self.segment_s:
            self.segments[-1].frames += 1
            self._clock.add(frame)
        if isinstance(result, PanopticResult):  # image id: the file's stem (as Cityscapes' ids), else the index
            self._annotate(folder, name if isinstance(stem, str) and stem else frame.index, path.name, result)

    def _annotate(self, folder: Path, image_id: int | str, file_name: str, result: PanopticResult) -> None:
        """The frame's COCO-panoptic annotation, one line of ``panoptic.jsonl``, flushed."""
        f = self._panoptic.get(folder)
        if f is None:  # an earlier run's panoptic.json would describe other PNGs if this run is killed
            (folder / f"{self.prefix}panoptic.json").unlink(missing_ok=True)
            f = self._panoptic[folder] = _Lines(folder / f"{self.prefix}panoptic.jsonl", "the PNGs (--png-dir)")
        seen = self._categories.setdefault(folder, {})
        for seg in result.segments:
            if seg.category_id not in seen:
                k = result.class_index(seg.category_id)
                name = result.class_names[k] if 0 <= k < len(result.class_names) else str(seg.category_id)
                seen[seg.category_id] = {"id": int(seg.category_id), "name": name, "isthing": int(bool(seg.isthing))}
        f.write(json.dumps({"image_id": image_id, "file_name": file_name,
                            "segments_info": segments_info(result, where=f" of frame {image_id}")}) + "\n")

    def close(self) -> None:
        """Each folder's ``panoptic.json`` from its lines, streamed (a long run's lines are not held in memory)
        into a temporary file renamed into place; the lines stay beside it. Every folder is done even when one
        fails; the first failure is raised after. With ``segment_s``: the last segment's folder finished too."""
        if self.segment_s and self._segment_dir is not None:
            part, self._segment_dir = self._segment_dir, None
            self._finisher.finish_now(self._finishing(part, self.segments[-1]), self.segments[-1])
        self._close_panoptic(list(self._panoptic))

    @property
    def paths(self) -> list[Path]:
        """With ``segment_s``: the segment folders this run keeps (one still being written: its ``.part``)."""
        return [Path(s.file) if s.state == "finished" else Path(f"{s.file}.part") for s in self.segments
                if s.state != "removed"]

    def segment_records(self) -> list[dict[str, Any]]:
        """With ``segment_s``: every folder of the run (``stats_json``'s ``segments``)."""
        return [s.to_dict() for s in self.segments]

    def _close_panoptic(self, folders: list[Path]) -> None:
        files = {folder: self._panoptic.pop(folder) for folder in folders}
        failure: BaseException | None = None
        for folder, f in files.items():
            try:
                f.close()
                self._write_panoptic_json(folder)
            except Exception as e:  # noqa: BLE001 - the others are still written; raised below
                failure = failure or e
            finally:
                if self.segment_s:  # (a finished segment's folder gets no more lines: its categories go too)
                    self._categories.pop(folder, None)
        if failure is not None:
            raise StreamError(f"cannot write the COCO-panoptic JSON beside the PNGs: {failure}",
                              fix="the PNGs and panoptic.jsonl (one annotation per line) are kept") from failure

    def _write_panoptic_json(self, folder: Path) -> None:
        cats = sorted(self._categories.get(folder, {}).values(), key=lambda c: c["id"])
        out = folder / f"{self.prefix}panoptic.json"
        tmp = folder / f".{out.name}.{os.getpid()}.tmp"
        try:
            with open(folder / f"{self.prefix}panoptic.jsonl", encoding="utf-8") as lines, \
                    open(tmp, "w", encoding="utf-8") as dst:
                dst.write('{"annotations": [')
                first = True
                for line in lines:
                    try:
                        json.loads(line)
                    except ValueError:  # a line cut short (a full disk): left out
                        continue
                    dst.write(("" if first else ", ") + line.strip())
                    first = False
                dst.write('], "categories": ' + json.dumps(cats) + "}")
            commit_file(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


@SINKS.register("callback")
class CallbackSink(Sink):
    """Calls ``fn(frame, result)`` for every frame, in order, from the pipeline's sink thread."""

    name = "callback"

    def __init__(self, fn: Callable[[Frame, Any], Any]):
        if not callable(fn):
            raise InputError(f"CallbackSink needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        self.fn(frame, result)
