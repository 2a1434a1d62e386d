"""The batch side of ``edgeseg predict``: which images a job takes (folders, ``--recursive``), and what it writes as it
goes -- the ``--json`` spool, the ``--jsonl`` lines, ``--resume`` and the results kept on an interruption."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

#: the table printed at the end shows this many images (-v: all); the files hold every one
TABLE_ROWS = 50


def read_ahead(paths, read):
    """``(path, its image or the InputError reading it)`` in order, the next image read on a thread while the caller
    segments this one (OpenCV's decoder lets go of the GIL: a 480x360 PNG's 3.8 ms of 18 beside the inference, a
    performance audit). At most two images are held at once. An image large enough for ``read_image``'s memory check
    (:func:`checked`) is read only once the caller is done with the one before: its check, made beside that one's
    work, let both go on and the kernel killed the job (two 12000x12000 photos in a 1,500 MiB container, the session
    54 review); the caller drops its image before asking for the next."""
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import InputError

    def load(path):
        try:
            return read(path)
        except InputError as e:
            return e

    it = iter(paths)
    current = next(it, None)
    if current is None:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="edgeseg-read") as pool:
        pending = pool.submit(load, current)
        for path in it:
            image = pending.result()
            if checked(path):
                yield current, image
                image = pending = None  # the done future holds the image before too
                pending = pool.submit(load, path)
            else:
                pending = pool.submit(load, path)  # read while the caller works on the image before it
                yield current, image
            current = path
        yield current, pending.result()


def checked(path) -> bool:
    """Whether ``read_image`` checks this file against the memory left (its header says 16 megapixels or more)."""
    from .._imagefile import image_dimensions
    from .._memory import CHECKED_PIXELS

    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            size = image_dimensions(head)
            if size is None and head[:2] == b"\xff\xd8":  # a JPEG's APP segments (ICC, XMP) past 64 KiB (the review)
                size = image_dimensions(head + f.read())  # as read_image's check reads it: the whole file
    except OSError:
        return False
    return size is not None and size[0] * size[1] >= CHECKED_PIXELS


class Table:
    """The rows of the table printed at the end: the first :data:`TABLE_ROWS` kept (``verbose``: all), the rest counted."""

    def __init__(self, verbose: bool):
        self.rows: list[dict] = []
        self._verbose, self._count = verbose, 0

    def append(self, row: dict) -> None:
        self._count += 1
        if self._verbose or len(self.rows) < TABLE_ROWS:
            self.rows.append(row)

    def __len__(self) -> int:
        return self._count


class Rows:
    """``--json``'s entries, spooled to a temporary file as they come and read back once when ``--json`` is written
    (a batch audit: an instance image's entry, RLE masks and all, is ~8.5 KB: 850 MB held to the end for 100,000
    images). The spool lies beside ``--json`` (a ``/tmp`` in memory would hold it all again), or in the temporary
    folder where it cannot (``--json /dev/stdout``, a folder that takes no file); it is never visible and goes with
    the process. Entries the spool cannot take (a full disk) are kept in memory: the job goes on, and writing
    ``--json`` at the end says the disk is full, naming the file, as before the spool."""

    def __init__(self, json_path: str | None):
        self._spool: Any = None
        self._good = 0  # bytes of whole entries in the spool
        self._kept: list[str] = []  # entries the spool could not take
        self._count = 0
        self._wanted = json_path is not None
        if json_path is None:
            return
        import tempfile

        from .._io import _special_file

        folder = None if str(json_path) == "-" or _special_file(Path(json_path)) else Path(json_path).parent
        for where in ([folder] if folder is not None else []) + [None]:
            try:
                if where is not None:
                    where.mkdir(parents=True, exist_ok=True)
                self._spool = tempfile.TemporaryFile("w+b", buffering=0, dir=where, prefix=".edgeseg-rows-")
                return
            except OSError:  # (no spool at all: the entries are kept in memory)
                continue

    def append(self, row: dict) -> None:
        from .._io import json_default

        if not self._wanted:
            self._count += 1
            return
        text = json.dumps(row, default=json_default)
        if self._spool is not None and not self._kept:
            from .._io import write_whole

            with contextlib.suppress(OSError):  # a full disk: this entry and the rest are kept in memory
                self._good = write_whole(self._spool, (text + "\n").encode("utf-8"), self._good)
                self._count += 1  # counted once stored (a write a Ctrl-C cut is undone, uncounted)
                return
        self._kept.append(text)
        self._count += 1

    def extend(self, rows) -> None:
        for row in rows:
            self.append(row)

    def __len__(self) -> int:
        return self._count

    def lines(self):
        """Each entry's JSON text, in order (the spool read by position: appending can go on after)."""
        if self._spool is not None:
            fd, pos, rest = self._spool.fileno(), 0, b""
            while pos < self._good:
                chunk = os.pread(fd, min(1 << 20, self._good - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                *whole, rest = (rest + chunk).split(b"\n")
                for line in whole:
                    yield line.decode("utf-8")
        yield from self._kept

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


class JsonLines:
    """``--jsonl``: one entry a line, each on disk whole when written (the stream's JSON-lines file: a second process
    writing it is refused, a full disk keeps the lines before); a fresh file, or appended to (``--resume``) after a
    line a kill cut in half is removed. ``-``: standard output."""

    def __init__(self, path: str, append: bool):
        self._lines: Any = None
        if str(path) == "-":  # standard output itself (json_to_stdout sent everything else to standard error)
            from ._common import _JSON_STDOUT

            self._out = _JSON_STDOUT[-1] if _JSON_STDOUT else sys.stdout
            return
        from ..stream.sinks.files import _Lines

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lines = _Lines(Path(path), "--jsonl", append=append)

    def write(self, entry: dict) -> None:
        from .._io import json_default

        text = json.dumps(entry, default=json_default) + "\n"
        if self._lines is not None:
            self._lines.write(text)
        else:
            self._out.write(text)
            self._out.flush()

    def __enter__(self) -> "JsonLines":
        return self

    def __exit__(self, *exc) -> None:
        if self._lines is not None:
            self._lines.close()


def resume(args: argparse.Namespace, images: list[str], out: Path | None, task: str, coco: dict,
            names: dict[str, str]) -> tuple[list, list]:
    """(the earlier runs' entries, the images still to do) for ``--resume``. Done: the images ``--jsonl`` records
    without an error (matched by the absolute path each line keeps: a job resumed from another folder, or with the
    folder spelled otherwise, finds them), and those whose label PNG (written after the overlay) is in ``--out``. The
    ``--jsonl`` entries come back for ``--json`` (the latest per image), and a panoptic bundle's ``panoptic.json`` gets
    their annotations back (a kill left it unwritten)."""
    import os

    key = os.path.realpath
    wanted = {key(p): p for p in images}
    earlier: dict[str, dict] = {}
    if args.jsonl is not None and str(args.jsonl) != "-" and Path(args.jsonl).is_file():
        recorded = 0
        for line in Path(args.jsonl).read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line a kill cut off: its image is done again
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                continue
            recorded += 1
            k = entry.get("path") if isinstance(entry.get("path"), str) else key(entry["file"])
            if k in wanted:
                if "error" in entry:
                    earlier.pop(k, None)  # failed last time: tried again
                else:
                    earlier[k] = entry
        if recorded and not earlier:
            print(f"edgeseg predict: --resume: none of the {recorded} image(s) {args.jsonl} records is among this job's "
                  "images; all are done", file=sys.stderr)
    marker = {"instance": "_instances.png", "panoptic": "_panoptic.png"}.get(task, "_labels.png")
    pngs = {k for k, p in wanted.items() if out is not None and (out / f"{names[p]}{marker}").is_file()}
    without = [k for k in earlier if out is not None and k not in pngs]
    if without:  # an option audit: --out added on a resumed run left those images' PNGs missing, unsaid
        print(f"edgeseg predict: --resume: {len(without)} image(s) {args.jsonl} records as done have no PNGs in {out}: "
              "done again", file=sys.stderr)
        for k in without:
            del earlier[k]
    done = set(earlier) | pngs
    if out is not None and task == "panoptic":
        _resume_panoptic_json(out, coco, earlier.values(), [p for k, p in wanted.items() if k in done], names)
    rows = [{k: v for k, v in e.items() if k not in ("path", "coco")} for e in earlier.values()]
    return rows, [p for p in images if key(p) not in done]


def _resume_panoptic_json(out: Path, coco: dict, entries, done: list[str], names: dict[str, str]) -> None:
    """``coco`` seeded with ``out/panoptic.json``'s annotations and those the ``--jsonl`` entries carry; said when
    images taken as done have none (resumed from the PNGs alone after a kill: their segments are not known)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        doc = json.loads((out / "panoptic.json").read_text(encoding="utf-8"))
        coco["annotations"].extend(doc["annotations"])
        coco["categories"].update({int(c["id"]): c for c in doc["categories"]})
    for e in entries:
        if isinstance(e.get("coco"), dict):
            coco["annotations"].append(e["coco"])
            for seg in e.get("segments", ()):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    coco["categories"].setdefault(int(seg["category_id"]), {
                        "id": int(seg["category_id"]), "isthing": int(bool(seg["isthing"])), "name": seg["class"]})
    have = {str(a.get("image_id")) for a in coco["annotations"] if isinstance(a, dict)}
    missing = [p for p in done if names[p] not in have]
    if missing:
        print(f"edgeseg predict: --resume: {len(missing)} image(s) taken as done have no annotation in "
              f"{out / 'panoptic.json'} ({', '.join(Path(p).name for p in missing[:3])}{' ...' if len(missing) > 3 else ''}): "
              "give --jsonl on every run of the job (its lines keep them), or delete their PNGs to do them again",
              file=sys.stderr)


def image_paths(given: list[str], bundle: str = "BUNDLE", recursive: bool = False,
                out: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The image arguments with each folder replaced by the images in it (sorted by name; ``recursive``: its
    subfolders' too, folder by folder, except ``out``, the job's own output), and where each image's files go in
    ``--out``, without suffix: its stem, or with ``recursive`` its path below the folder given (``sub/a`` for
    ``FOLDER/sub/a.jpg``; a file given twice keeps its first)."""
    from ..data.io import IMAGE_SUFFIXES
    from ..errors import InputError

    from ..stream.sources.uri import VIDEO_SUFFIXES

    videos = [p for p in given if Path(p).suffix.lower() in VIDEO_SUFFIXES or "://" in p]
    if videos:  # Ultralytics' `predict source=video.mp4`: here a video is a stream (before: "cannot decode image")
        raise InputError(f"{videos[0]} is a video or a stream; predict segments images",
                         fix=f"edgeseg run --bundle {bundle} --source {videos[0]} --sink out.mp4 --json-out results.jsonl "
                             "(--png-dir DIR for label maps)")
    missing = [p for p in given if not Path(p).exists()]
    if len(missing) == len(given):  # nothing to segment: say so before the bundle is loaded
        raise InputError(f"image not found: {', '.join(missing)}", fix="check the paths")
    paths: list[str] = []
    names: dict[str, str] = {}
    notes: list[str] = []
    for p in map(Path, given):
        if not p.is_dir():  # a missing file among others is reported and skipped like an unreadable one
            paths.append(str(p))
            names.setdefault(str(p), p.stem)
            continue
        folders = _walk(p, os.path.realpath(out) if out is not None else None) if recursive else [p]
        subfolders: list[str] = []
        found = 0
        for folder in folders:
            files, note, below = _folder_images(folder)
            if note:
                notes.append(note)
            if not recursive:
                subfolders = below
            found += len(files)
            for f in files:
                paths.append(str(f))
                names.setdefault(str(f), f.relative_to(p).with_suffix("").as_posix() if recursive else f.stem)
        if subfolders:
            shown = ", ".join(subfolders[:5]) + (f" and {len(subfolders) - 5} more" if len(subfolders) > 5 else "")
            print(f"edgeseg predict: {len(subfolders)} subfolder(s) of {p} not read ({shown}): a folder gives the images "
                  f"directly in it; --recursive reads its subfolders too (--out mirrors the tree)", file=sys.stderr)
        if not found:
            raise InputError(f"folder {p} holds no images" + (" in it or its subfolders" if recursive else ""),
                             fix=f"give image files ({', '.join(IMAGE_SUFFIXES)}) or folders of them"
                                 + ("; its subfolders hold them? add --recursive" if subfolders else ""))
    for note in notes[:3]:
        print(f"edgeseg predict: {note} (images: {', '.join(IMAGE_SUFFIXES)})", file=sys.stderr)
    if len(notes) > 3:
        print(f"edgeseg predict: ... and files left out in {len(notes) - 3} more folder(s)", file=sys.stderr)
    seen: set[str] = set()
    unique = []  # the first of each file given
    for p in paths:
        if os.path.realpath(p) not in seen:
            seen.add(os.path.realpath(p))
            unique.append(p)
    if len(unique) < len(paths):  # an option audit: `a.jpg DIR/` with DIR/a.jpg was refused as two of one name
        print(f"edgeseg predict: {len(paths) - len(unique)} image(s) given more than once (a file and its folder?): "
              "each is done once", file=sys.stderr)
    return unique, names


def _folder_images(folder: Path) -> tuple[list[Path], str | None, list[str]]:
    """The images directly in ``folder`` (sorted; links to images that are gone too: they fail as unreadable images,
    not dropped unsaid), the note naming its other files (None: none), and its subfolders' names (hidden aside)."""
    from ..data.io import IMAGE_SUFFIXES, image_files, left_out

    files = image_files(folder)
    dangling = [q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_symlink() and not q.exists()]
    subfolders = sorted(q.name for q in folder.iterdir() if q.is_dir() and not q.name.startswith("."))
    return sorted(files + dangling), left_out(folder, files), subfolders


def _walk(root: Path, skip: str | None = None) -> list[Path]:
    """``root`` and the folders below it, each before its subfolders (sorted by name; hidden ones and the real path
    ``skip`` left out: ``--out`` inside the images' folder, whose PNGs a rerun would take as images); a linked folder
    is followed once (a link back up the tree is not walked again)."""
    seen: set[str] = set()
    order: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen or (real == skip and folder != root):
            continue
        seen.add(real)
        try:
            below = sorted((q for q in folder.iterdir() if q.is_dir() and not q.name.startswith(".")), key=lambda q: q.name)
        except OSError as e:  # a subfolder that cannot be listed: said, its images left out (the folder given: an error)
            if folder == root:
                raise
            print(f"edgeseg predict: folder {folder} cannot be read ({e.strerror or e}): its images left out", file=sys.stderr)
            continue
        order.append(folder)
        stack.extend(reversed(below))
    return order


def write_results(args, predictor, task: str, rows: list, failed: list, interrupted: bool = False) -> None:
    """``--json`` with the results (and the failures); when every image failed, an earlier file at that path is kept
    as it was (session 50's fuzzing: one unreadable image replaced an earlier run's results with none)."""
    if not args.json:
        return
    if not rows and str(args.json) != "-" and Path(args.json).is_file() and Path(args.json).stat().st_size:
        print(f"edgeseg predict: no image was segmented, so {args.json} keeps the results it held", file=sys.stderr)
        return
    head = {"bundle": args.bundle, "task": task, "backend": predictor.backend, "precision": predictor.runner.precision}
    tail = {**({"errors": failed} if failed else {}), **({"interrupted": True} if interrupted else {})}
    _write_document(args.json, head, rows, tail)


def _write_document(path: str, head: dict, rows: "Rows", tail: dict) -> None:
    """``{**head, "images": [rows...], **tail}`` written to ``path`` (atomically; ``-``: standard output), the rows
    streamed from their spool, one image a line."""
    from .._io import atomic_write_with, json_default

    def pieces():
        yield json.dumps(head, default=json_default)[:-1] + ', "images": ['
        for i, line in enumerate(rows.lines()):
            yield ("\n  " if i == 0 else ",\n  ") + line
        yield "\n]" + "".join(f", {json.dumps(k)}: {json.dumps(v, default=json_default)}" for k, v in tail.items()) + "}\n"

    if str(path) == "-":
        from ._common import _JSON_STDOUT

        out = _JSON_STDOUT[-1] if _JSON_STDOUT else sys.stdout
        for piece in pieces():
            out.write(piece)
        out.flush()
        return

    def into(f) -> None:
        for piece in pieces():
            f.write(piece.encode("utf-8"))

    atomic_write_with(path, into)


@contextlib.contextmanager
def kept_on_interrupt(args, predictor, task: str, rows: list, failed: list, also=None, table: Any = None,
                      total: int | None = None):
    """Ctrl-C (or SIGTERM) halfway through a long list still writes ``--json`` (and ``also()``: ``--out``'s
    ``panoptic.json``) for the images done, and says how many of ``total`` were (``table``: the rows done) and how to
    go on (session 57, an operator's audit: a SIGTERM said only "interrupted")."""
    try:
        yield
    except KeyboardInterrupt:
        if also is not None:
            also()
        if table is not None and total:
            places = [f"{o} {getattr(args, a)}" for o, a in (("--out", "out"), ("--jsonl", "jsonl"))
                      if getattr(args, a, None) is not None and str(getattr(args, a)) != "-"]
            print(f"edgeseg predict: {len(table)} of {total} image(s) done before the interruption"
                  + (f" (kept in {' and '.join(places)}): run the same command with --resume to do the other "
                     f"{total - len(table)}" if places and total > len(table) else ""), file=sys.stderr)
        if args.json and (rows or failed):
            kept = not rows and str(args.json) != "-" and Path(args.json).is_file() and Path(args.json).stat().st_size
            write_results(args, predictor, task, rows, failed, interrupted=True)
            if not kept:  # (an earlier run's file kept is said by write_results, not called this run's results)
                print(f"edgeseg predict: {len(rows)} image(s) done before the interruption: results in {args.json}",
                      file=sys.stderr)
        raise
