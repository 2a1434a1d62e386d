"""Options and helpers shared by the commands (standard library only at import time).

``write_json`` is :func:`edgeseg._io.write_json` (atomic; ``None`` writes nothing), or standard output for ``-``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .._io import write_json as _write_json


_JSON_STDOUT: list[Any] = []  # the real standard output while json_to_stdout() sends the rest to stderr


def json_to_stdout(args: argparse.Namespace) -> Any:
    """A context in which, when an option of ``args`` that :func:`write_json` writes is ``-``, everything else a
    command prints goes to standard error, so standard output is the JSON alone (``| jq``; before, the tables came
    first and no JSON parser read it)."""
    import contextlib

    if not any(str(getattr(args, name, None)) == "-" for name in ("json", "stats_json", "jsonl", "json_out")):
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    _JSON_STDOUT.append(sys.stdout)
    stack.callback(_JSON_STDOUT.pop)
    stack.enter_context(contextlib.redirect_stdout(sys.stderr))
    return stack


def write_json(path, data) -> None:
    """``--json PATH``: :func:`edgeseg._io.write_json` (atomic; None writes nothing); ``-`` prints it to standard
    output (``edgeseg doctor --json -`` for a bug report wrote a file named ``-``), the only thing there
    (:func:`json_to_stdout`)."""
    if path is not None and str(path) == "-":
        import json

        from .._io import json_default

        out = _JSON_STDOUT[-1] if _JSON_STDOUT else sys.stdout
        out.write(json.dumps(data, indent=2, default=json_default) + "\n")
        out.flush()
        return
    _write_json(path, data)


def add_runtime_options(p: argparse.ArgumentParser, multi_backend: bool = False, precision: str = "auto") -> None:
    """The options of every command that runs a bundle: backend, precision, target, threads.
    ``multi_backend``: ``--backend`` may be repeated or comma-separated (a list; None when not given).
    ``precision``: the default of ``--precision``."""
    g = p.add_argument_group("runtime")
    if multi_backend:
        g.add_argument("--backend", action="append", default=None,
                       help="backend(s): torch, onnxruntime, openvino, tensorrt, auto; repeat or comma-separate (default auto)")
    else:
        g.add_argument("--backend", default="auto", help="torch | onnxruntime | openvino | tensorrt | auto (default)")
    g.add_argument("--precision", default=precision, type=_lower, choices=["auto", "fp32", "bf16", "fp16", "int8"],
                   help=f"model precision (default {precision}); auto, like --backend auto, is chosen on this device by a short "
                        "side-by-side timing of what the bundle verifiably supports (INT8 only where its accuracy passed the gate), "
                        "cached per device; giving both --backend and --precision pins the choice")
    g.add_argument("--target", default=None, help="which INT8 model when a bundle has several (tensorrt, cpu, openvino)")
    g.add_argument("--threads", type=int, default=0, help="intra-op CPU threads (0: runtime default)")
    g.add_argument("--device", default="auto", type=_lower, choices=("auto", "cpu", "cuda"), help="cpu | cuda | auto (default)")


def _lower(text: str) -> str:
    """Choices spelt in any case (``--precision FP32``, ``--device CPU``), as ``edgeseg.load`` takes them."""
    return text.strip().lower()


def add_result_filters(g: Any, defaults_unset: bool = False) -> None:
    """``--score-threshold``, ``--class-agnostic`` and ``--classes`` of ``edgeseg predict`` and ``edgeseg run`` (``g``: a
    parser or an argument group). ``defaults_unset``: ``--class-agnostic`` defaults to None, so that a recipe's value
    stands when it is not given."""
    g.add_argument("--score-threshold", type=float, default=None, metavar="T",
                   help="instance and panoptic bundles: drop detections scoring below T (a Panoptic-DeepLab: centres "
                        "scoring at or below T, its center_threshold; default: the bundle's)")
    g.add_argument("--class-agnostic", action="store_true", default=None if defaults_unset else False,
                   help="instance bundles: NMS across classes (Ultralytics' agnostic_nms): one object no longer also "
                        "given under a second class")
    g.add_argument("--classes", default=None, metavar="NAMES|IDS",
                   help="instance and panoptic bundles: keep only these classes, e.g. person,car or 0,2 (Ultralytics' "
                        "classes=; drawn, written and tracked; the others' detections are dropped, their panoptic "
                        "pixels void; a panoptic bundle's numbers are its category ids, its records' class_id); "
                        "semantic bundles: the overlay draws only these classes (label maps and JSON keep every class)")


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", default=None, help="also write the numbers to this JSON file (- : standard output)")


def print_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A plain aligned text table."""
    if not rows:
        print("(nothing)")
        return
    cols = columns or list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):  # a value not measured (a quantize without --eval has no
        return "n/a"  # metric; a latency of no frame, NaN): not Python's None, not "nan"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def run_tool(name: str, fn, args) -> int:
    """``fn(args)`` for a script in ``tools/``: an edgeseg error (bad input, a missing file) is printed
    as ``name: error: ...`` with its fix and exit code 2, not a traceback."""
    from ..errors import EdgesegError

    try:
        return fn(args)
    except EdgesegError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2



def check_output(path: str, option: str, kind: str = "file") -> None:
    """Refuse an output ``path`` that cannot be written (a folder where a file goes, a file in the way of
    its folder, a read-only folder) before any work, naming ``option``: found at the end, the run's work
    would be lost. ``kind``: ``"file"`` or ``"folder"`` (created if missing); a bundle's path is checked by
    :func:`edgeseg.bundle.check_target`."""
    from .._io import writable_file, writable_folder
    from ..errors import InputError

    if kind == "file" and str(path) == "-":  # standard output (write_json)
        return
    try:
        if kind == "file":
            writable_file(path)
        else:
            writable_folder(path, path)
    except InputError as e:
        fix = (f"give {option} a file path in a folder you can write to" if kind == "file"
               else f"give {option} a folder you can write to (it is created if missing)")
        if not os.path.isabs(path) and not os.access(os.getcwd(), os.W_OK):  # a read-only working folder
            import tempfile

            fix += f", e.g. {option} {os.path.join(tempfile.gettempdir(), 'edgeseg-out', os.path.basename(path) or 'out')}"
        raise InputError(f"{option}: {e.args[0].splitlines()[0]}", fix=fix) from None
